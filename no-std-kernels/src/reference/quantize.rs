//! QUANTIZE f32 → int8: TFLite `reference_ops::AffineQuantize`
//! (`tensorflow/lite/kernels/internal/reference/quantize.h`).

use super::common::check_zero_point;
use crate::KernelError;
use crate::quant::round_half_away_from_zero_f32;

/// `output = saturate_i8(zero_point + round(x / scale))`, the division and
/// `TfLiteRound` (ties away from zero) in f32, the sum and clamp as in the
/// current TFLite (in double, so huge values saturate instead of overflowing
/// int32). NaN maps to the zero point.
///
/// # Errors
/// [`KernelError::ShapeMismatch`] if the lengths differ;
/// [`KernelError::InvalidParameter`] for a scale that is not finite and
/// positive or a zero point outside int8.
pub fn quantize_f32(scale: f32, zero_point: i32, input: &[f32], output: &mut [i8]) -> Result<(), KernelError> {
    if input.len() != output.len() {
        return Err(KernelError::ShapeMismatch);
    }
    check_zero_point(zero_point)?;
    if !(scale > 0.0 && scale < f32::INFINITY) {
        return Err(KernelError::InvalidParameter);
    }
    for (o, &x) in output.iter_mut().zip(input) {
        let rounded = round_half_away_from_zero_f32(x / scale);
        *o = if rounded.is_nan() {
            zero_point as i8
        } else {
            // In [-128, 127] after the clamp, so the cast is exact.
            (f64::from(rounded) + f64::from(zero_point)).clamp(-128.0, 127.0) as i8
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hand_computed() {
        let mut out = [0i8; 9];
        let input = [0.0, 0.25, 0.75, -0.25, -0.75, 1000.0, -1000.0, f32::NAN, f32::INFINITY];
        quantize_f32(0.5, 3, &input, &mut out).unwrap();
        // 0.5 -> 1 and -0.5 -> -1 (ties away from zero); 1.5 -> 2, -1.5 -> -2.
        assert_eq!(out, [3, 4, 5, 2, 1, 127, -128, 3, 127]);
        // 0.49999997 / 1.0 must not round up.
        let mut out = [0i8; 1];
        quantize_f32(1.0, 0, &[0.49999997], &mut out).unwrap();
        assert_eq!(out, [0]);
    }

    proptest! {
        /// Round-trip: dequantize(quantize(x)) is within half a step of x
        /// (when in range).
        #[test]
        fn round_trip(x in -10.0f32..10.0, scale in 0.1f32..1.0, zp in -20i32..=20) {
            let mut q = [0i8; 1];
            quantize_f32(scale, zp, &[x], &mut q).unwrap();
            let mut back = [0f32; 1];
            crate::reference::dequantize_i8(scale, zp, &q, &mut back).unwrap();
            prop_assert!((back[0] - x).abs() <= scale * 0.5 + 1e-5);
        }
    }
}
