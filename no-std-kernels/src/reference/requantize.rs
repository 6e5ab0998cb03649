//! QUANTIZE int8 → int8 (requantize): TFLite `reference_ops::Requantize`
//! (`tensorflow/lite/kernels/internal/reference/requantize.h`), as called by
//! TFLM `EvalQuantizeReference` (`micro/kernels/quantize_common.cc`).

use super::RequantizeParams;
use super::common::{check_clamp, check_input_offset, check_multipliers, check_zero_point, clamp_to_i8};
use crate::KernelError;
use crate::quant::multiply_by_quantized_multiplier;

/// `output = clamp(MBQM(input - input_zero_point, multiplier, shift) +
/// output_zero_point)` elementwise.
///
/// Mirrors TFLite `reference_ops::Requantize<int8_t, int8_t>` (its int8↔uint8
/// XOR fast path does not apply to int8 → int8), followed by the optional
/// extra `clamp` of [`RequantizeParams`] (a no-op with [`Clamp::NONE`](crate::Clamp::NONE)).
///
/// # Errors
/// [`KernelError::ShapeMismatch`] if the lengths differ;
/// [`KernelError::InvalidParameter`] for offsets outside the int8 zero-point
/// range, a negative multiplier, a shift outside `-31..=30` or
/// `clamp.min > clamp.max`.
pub fn requantize_i8(p: &RequantizeParams, input: &[i8], output: &mut [i8]) -> Result<(), KernelError> {
    if input.len() != output.len() {
        return Err(KernelError::ShapeMismatch);
    }
    check_input_offset(p.input_offset)?;
    check_zero_point(p.output_offset)?;
    check_multipliers(&[p.multiplier], &[p.shift])?;
    check_clamp(p.clamp)?;
    for (o, &x) in output.iter_mut().zip(input) {
        let input = i32::from(x) + p.input_offset;
        let out = multiply_by_quantized_multiplier(input, p.multiplier, p.shift).wrapping_add(p.output_offset);
        *o = clamp_to_i8(out, p.clamp);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Clamp;
    use crate::reference::test_util::{activation_clamp, to_output};
    use proptest::prelude::*;
    use std::vec;

    #[test]
    fn hand_computed() {
        // Scale 0.5 -> 0.25 (x2), zero point 3 -> -7.
        let p = RequantizeParams::from_quant((0.5, 3), (0.25, -7), Clamp::NONE).unwrap();
        let mut out = [0i8; 4];
        requantize_i8(&p, &[3, 4, -10, 127], &mut out).unwrap();
        assert_eq!(out, [-7, -5, -33, 127]);
    }

    proptest! {
        /// Within 1 LSB of `(q - z_in) * s_in / s_out + z_out`.
        #[test]
        fn close_to_float_reference(
            input in prop::collection::vec(any::<i8>(), 1..300),
            s_in in 0.001f64..1.0, ratio in 0.05f64..20.0,
            z_in in -128i32..=127, z_out in -128i32..=127, act in 0u8..4,
        ) {
            let s_out = s_in / ratio;
            let clamp = activation_clamp(act, s_out, z_out);
            let p = RequantizeParams::from_quant((s_in as f32, z_in), (s_out as f32, z_out), clamp).unwrap();
            let mut out = vec![0i8; input.len()];
            requantize_i8(&p, &input, &mut out).unwrap();
            for (&q, &o) in input.iter().zip(&out) {
                let real = f64::from(s_in as f32) * f64::from(i32::from(q) - z_in);
                let want = to_output(real, f64::from(s_out as f32), z_out, clamp);
                prop_assert!((f64::from(o) - want).abs() <= 1.0, "{} -> {} vs {}", q, o, want);
            }
        }
    }
}
