//! TRANSPOSE of a 4-D int8 tensor: TFLite `reference_ops::Transpose`
//! (`tensorflow/lite/kernels/internal/reference/transpose.h`).

use crate::KernelError;

/// Permutes the axes of a row-major 4-D tensor: output dimension `i` is
/// input dimension `perm[i]`.
///
/// Walks the output in order and gathers from the input, as TFLite's
/// `reference_ops::TransposeImpl` does (a pure data movement: bit-exact by
/// construction).
///
/// # Errors
/// [`KernelError::InvalidParameter`] if `perm` is not a permutation of
/// `0..4`; [`KernelError::ShapeMismatch`] if a slice length is not the
/// product of `input_dims`.
pub fn transpose_i8(
    input_dims: [usize; 4],
    perm: [usize; 4],
    input: &[i8],
    output: &mut [i8],
) -> Result<(), KernelError> {
    let mut seen = [false; 4];
    for &axis in &perm {
        if axis >= 4 || seen[axis] {
            return Err(KernelError::InvalidParameter);
        }
        seen[axis] = true;
    }
    let len = input_dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or(KernelError::ShapeMismatch)?;
    if input.len() != len || output.len() != len {
        return Err(KernelError::ShapeMismatch);
    }
    // Row-major input strides.
    let input_strides =
        [input_dims[1] * input_dims[2] * input_dims[3], input_dims[2] * input_dims[3], input_dims[3], 1];
    let output_dims = perm.map(|axis| input_dims[axis]);
    let strides = perm.map(|axis| input_strides[axis]);

    let mut o = 0;
    for i0 in 0..output_dims[0] {
        for i1 in 0..output_dims[1] {
            for i2 in 0..output_dims[2] {
                for i3 in 0..output_dims[3] {
                    output[o] = input[i0 * strides[0] + i1 * strides[1] + i2 * strides[2] + i3 * strides[3]];
                    o += 1;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    #[test]
    fn nhwc_to_nchw() {
        // 1x2x2x3 NHWC -> NCHW.
        let input: Vec<i8> = (0..12).collect();
        let mut out = [0i8; 12];
        transpose_i8([1, 2, 2, 3], [0, 3, 1, 2], &input, &mut out).unwrap();
        assert_eq!(out, [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11]);
    }

    proptest! {
        /// Every element lands where the index permutation says.
        #[test]
        fn matches_index_permutation(
            dims in [1usize..=4, 1usize..=4, 1usize..=4, 1usize..=4],
            perm in Just([0usize, 1, 2, 3]).prop_shuffle(),
        ) {
            let len = dims.iter().product::<usize>();
            let input: Vec<i8> = (0..len).map(|i| (i * 37 % 251) as u8 as i8).collect();
            let mut out = vec![0i8; len];
            transpose_i8(dims, perm, &input, &mut out).unwrap();
            let od = perm.map(|a| dims[a]);
            for a in 0..od[0] { for b in 0..od[1] { for c in 0..od[2] { for d in 0..od[3] {
                let oi = [a, b, c, d];
                let mut ii = [0usize; 4];
                for k in 0..4 { ii[perm[k]] = oi[k]; }
                let src = ((ii[0] * dims[1] + ii[1]) * dims[2] + ii[2]) * dims[3] + ii[3];
                let dst = ((a * od[1] + b) * od[2] + c) * od[3] + d;
                prop_assert_eq!(out[dst], input[src]);
            }}}}
        }
    }
}
