//! MAX_POOL_2D, int8: TFLM `reference_integer_ops::MaxPool`
//! (`tensorflow/lite/kernels/internal/reference/integer_ops/pooling.h`).

use super::PoolParams;
use super::common::{check_pool, clamp_to_i8, offset, pool_window};
use crate::{Dims4, KernelError};

/// Max pooling, NHWC, same quantization in and out.
///
/// Mirrors TFLM `reference_integer_ops::MaxPool` (int8): the maximum of the
/// in-image taps (starting from -128, so a window lying entirely in the
/// padding yields -128), then clamped.
///
/// # Errors
/// [`KernelError::ShapeMismatch`] for slice/shape mismatches (batch and
/// channels must match); [`KernelError::InvalidParameter`] for a zero window
/// or stride or `clamp.min > clamp.max`.
pub fn max_pool_i8(
    p: &PoolParams,
    input_dims: Dims4,
    input: &[i8],
    output_dims: Dims4,
    output: &mut [i8],
) -> Result<(), KernelError> {
    check_pool(p, input_dims, input.len(), output_dims, output.len())?;
    let (filter_height, filter_width) = p.filter;
    let (stride_height, stride_width) = p.stride;
    let (pad_height, pad_width) = p.padding;
    let (input_height, input_width) = (input_dims.h, input_dims.w);

    for batch in 0..input_dims.n {
        for out_y in 0..output_dims.h {
            for out_x in 0..output_dims.w {
                for channel in 0..input_dims.c {
                    // Window origin in the padded frame (input coordinate + padding).
                    let in_x_origin = out_x * stride_width;
                    let in_y_origin = out_y * stride_height;
                    let (filter_x_start, filter_x_end) =
                        pool_window(out_x, stride_width, pad_width, filter_width, input_width);
                    let (filter_y_start, filter_y_end) =
                        pool_window(out_y, stride_height, pad_height, filter_height, input_height);
                    let mut max = i8::MIN;
                    for filter_y in filter_y_start..filter_y_end {
                        for filter_x in filter_x_start..filter_x_end {
                            let in_x = in_x_origin + filter_x - pad_width;
                            let in_y = in_y_origin + filter_y - pad_height;
                            max = max.max(input[offset(input_dims, batch, in_y, in_x, channel)]);
                        }
                    }
                    output[offset(output_dims, batch, out_y, out_x, channel)] = clamp_to_i8(i32::from(max), p.clamp);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Clamp;
    use crate::reference::test_util::out_extent;
    use proptest::prelude::*;
    use std::vec;

    #[test]
    fn hand_computed() {
        let input = [1i8, -2, 3, 4, 5, -6, 7, 8, 9];
        let mut out = [0i8; 4];
        let p = PoolParams { filter: (2, 2), stride: (2, 2), padding: (1, 1), clamp: Clamp { min: 2, max: 8 } };
        max_pool_i8(&p, Dims4::new(1, 3, 3, 1), &input, Dims4::new(1, 2, 2, 1), &mut out).unwrap();
        // max(1) -> clamp 2; max(-2, 3) = 3; max(4, 7) = 7; max(5, -6, 8, 9) = 9 -> 8.
        assert_eq!(out, [2, 3, 7, 8]);
        // A window entirely in the padding gives -128 (then clamp).
        let p = PoolParams { filter: (1, 1), stride: (1, 1), padding: (1, 1), clamp: Clamp::NONE };
        let mut out = [0i8; 4];
        max_pool_i8(&p, Dims4::new(1, 2, 2, 1), &[5, 6, 7, 8], Dims4::new(1, 2, 2, 1), &mut out).unwrap();
        assert_eq!(out, [-128, -128, -128, 5]);
    }

    proptest! {
        /// Exactly the maximum of the in-image taps.
        #[test]
        fn equals_float_max(
            (n, h, w, c) in (1usize..=2, 1usize..=9, 1usize..=9, 1usize..=3),
            (fh, fw, sh, sw) in (1usize..=4, 1usize..=4, 1usize..=3, 1usize..=3),
            (pt, pl) in (0usize..=3, 0usize..=3),
            seed in prop::collection::vec(any::<i8>(), 9 * 9 * 2 * 3),
        ) {
            let (pt, pl) = (pt.min(fh - 1), pl.min(fw - 1));
            let od = Dims4::new(n, out_extent(h, pt, 0, fh, sh, 1), out_extent(w, pl, 0, fw, sw, 1), c);
            let id = Dims4::new(n, h, w, c);
            let input = &seed[..id.elements().unwrap()];
            let p = PoolParams { filter: (fh, fw), stride: (sh, sw), padding: (pt, pl), clamp: Clamp::NONE };
            let mut out = vec![0i8; od.elements().unwrap()];
            max_pool_i8(&p, id, input, od, &mut out).unwrap();
            for b in 0..n { for oy in 0..od.h { for ox in 0..od.w { for ch in 0..c {
                let mut want = f64::NEG_INFINITY;
                for fy in 0..fh { for fx in 0..fw {
                    let (y, x) = ((oy * sh + fy) as isize - pt as isize, (ox * sw + fx) as isize - pl as isize);
                    if y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < w {
                        want = want.max(f64::from(input[((b * h + y as usize) * w + x as usize) * c + ch]));
                    }
                }}
                prop_assert_eq!(f64::from(out[((b * od.h + oy) * od.w + ox) * c + ch]), want);
            }}}}
        }
    }
}
