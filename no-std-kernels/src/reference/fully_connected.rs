//! FULLY_CONNECTED, int8: TFLM `reference_integer_ops::FullyConnected` (per
//! tensor, weights offset 0) and `FullyConnectedPerChannel`
//! (`tensorflow/lite/kernels/internal/reference/integer_ops/fully_connected.h`).

use super::FullyConnectedParams;
use super::common::{
    check_bias, check_clamp, check_input_offset, check_len2, check_requant, check_zero_point, clamp_to_i8, requant_for,
};
use crate::quant::multiply_by_quantized_multiplier;
use crate::{KernelError, Requant};

/// Fully connected layer: input `[batches, in]`, filter
/// `filter_dims = (out, in)`, output `[batches, out]`,
///
/// ```text
/// output[b][o] = clamp(MBQM(Σ_d filter[o][d] * (input[b][d] + input_offset) + bias[o])
///                      + output_offset)
/// ```
///
/// Mirrors TFLM `reference_integer_ops::FullyConnectedPerChannel` (and the
/// per-tensor `FullyConnected`, which is the same arithmetic with the
/// symmetric weights' offset of 0): loop order batch, out channel, depth;
/// wrapping int32 accumulation.
///
/// # Errors
/// [`KernelError::ShapeMismatch`] if a slice length does not match
/// `batches`/`filter_dims`, or the bias/requant slices do not have
/// 1 (requant only) or `out` entries; [`KernelError::InvalidParameter`] for
/// out-of-range offsets, multipliers, shifts or clamp.
#[allow(clippy::too_many_arguments)]
pub fn fully_connected_i8(
    p: &FullyConnectedParams,
    batches: usize,
    input: &[i8],
    filter_dims: (usize, usize),
    filter: &[i8],
    bias: Option<&[i32]>,
    requant: Requant<'_>,
    output: &mut [i8],
) -> Result<(), KernelError> {
    let (output_depth, accum_depth) = filter_dims;
    check_len2(input.len(), batches, accum_depth)?;
    check_len2(filter.len(), output_depth, accum_depth)?;
    check_len2(output.len(), batches, output_depth)?;
    check_bias(bias, output_depth)?;
    check_requant(&requant, output_depth)?;
    check_input_offset(p.input_offset)?;
    check_zero_point(p.output_offset)?;
    check_clamp(p.clamp)?;

    for b in 0..batches {
        for out_c in 0..output_depth {
            let mut acc: i32 = 0;
            for d in 0..accum_depth {
                let input_val = i32::from(input[b * accum_depth + d]);
                let filter_val = i32::from(filter[out_c * accum_depth + d]);
                acc = acc.wrapping_add(filter_val * (input_val + p.input_offset));
            }
            if let Some(bias) = bias {
                acc = acc.wrapping_add(bias[out_c]);
            }
            let (multiplier, shift) = requant_for(&requant, out_c);
            acc = multiply_by_quantized_multiplier(acc, multiplier, shift);
            acc = acc.wrapping_add(p.output_offset);
            output[out_c + output_depth * b] = clamp_to_i8(acc, p.clamp);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Clamp;
    use crate::reference::test_util::fc_float_case;
    use proptest::prelude::*;
    use std::vec;

    #[test]
    fn hand_computed() {
        let p = FullyConnectedParams { input_offset: -1, output_offset: -5, clamp: Clamp::NONE };
        // 2 batches x 3 inputs, 2 outputs.
        let input = [1i8, 2, 3, 4, 5, 6];
        let filter = [1i8, 0, -1, 2, 2, 2];
        let mut out = [0i8; 4];
        fully_connected_i8(
            &p,
            2,
            &input,
            (2, 3),
            &filter,
            Some(&[100, -1]),
            // 0.5 and 0.25, per channel.
            Requant { multiplier: &[1 << 30, 1 << 30], shift: &[0, -1] },
            &mut out,
        )
        .unwrap();
        // b0: o0 = 0 - 2 + 100 = 98 -> 49 - 5 = 44.
        //     o1 = 2*(0+1+2) - 1 = 5; 5 * 0.25 = 1.25, but TFLite's double
        //     rounding gives SRDHM: 2.5 -> 3, then 3 / 2 = 1.5 -> 2; 2 - 5 = -3.
        // b1: o0 = 3 - 5 + 100 = 98 -> 44; o1 = 2*(3+4+5) - 1 = 23 -> 11.5 -> 12 -> 6; 6 - 5 = 1.
        assert_eq!(out, [44, -3, 44, 1]);
    }

    proptest! {
        /// Within 1 LSB of the real-valued product, and exactly the TFLite
        /// output stage applied to a naively computed accumulator.
        #[test]
        fn close_to_float_reference(case in fc_float_case()) {
            let (out_d, _) = case.filter_dims;
            let mut out = vec![0i8; case.batches * out_d];
            fully_connected_i8(
                &case.params,
                case.batches,
                &case.input,
                case.filter_dims,
                &case.filter,
                case.bias.as_deref(),
                Requant { multiplier: &case.multiplier, shift: &case.shift },
                &mut out,
            ).unwrap();
            for (i, (&got, &(want, exact))) in out.iter().zip(&case.float_fc()).enumerate() {
                prop_assert!((f64::from(got) - want).abs() <= 1.0, "output {} = {}, float {}", i, got, want);
                prop_assert_eq!(got, exact, "output {}: naive accumulator + TFLite output stage", i);
            }
        }
    }
}
