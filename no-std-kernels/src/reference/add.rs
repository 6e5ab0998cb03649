//! ADD, int8, same shapes: TFLM `reference_integer_ops::Add` /
//! `AddElementwise` / `AddFunc`
//! (`tensorflow/lite/kernels/internal/reference/integer_ops/add.h`).

use super::AddParams;
use super::common::{check_clamp, check_input_offset, check_multipliers, check_zero_point, clamp_to_i8};
use crate::KernelError;
use crate::quant::multiply_by_quantized_multiplier_smaller_than_one_exp;

/// TFLM `AddFunc` for one element.
#[inline]
fn add_func(x: i8, y: i8, p: &AddParams) -> i8 {
    let input1_val = p.input1_offset + i32::from(x);
    let input2_val = p.input2_offset + i32::from(y);
    let shifted_input1_val = input1_val.wrapping_shl(p.left_shift as u32);
    let shifted_input2_val = input2_val.wrapping_shl(p.left_shift as u32);
    let scaled_input1_val =
        multiply_by_quantized_multiplier_smaller_than_one_exp(shifted_input1_val, p.input1_multiplier, p.input1_shift);
    let scaled_input2_val =
        multiply_by_quantized_multiplier_smaller_than_one_exp(shifted_input2_val, p.input2_multiplier, p.input2_shift);
    let raw_sum = scaled_input1_val.wrapping_add(scaled_input2_val);
    let raw_output =
        multiply_by_quantized_multiplier_smaller_than_one_exp(raw_sum, p.output_multiplier, p.output_shift)
            .wrapping_add(p.output_offset);
    clamp_to_i8(raw_output, p.clamp)
}

/// Elementwise `output = input1 + input2` with rescaling, all three slices
/// of the same length (no broadcasting).
///
/// Mirrors TFLM `reference_integer_ops::Add` → `AddElementwise` →
/// `AddFunc`: each input gets its offset, is shifted left by `left_shift`
/// and scaled by `MultiplyByQuantizedMultiplierSmallerThanOneExp`; the sum is
/// scaled to the output the same way, offset and clamped.
///
/// # Errors
/// [`KernelError::ShapeMismatch`] if the lengths differ;
/// [`KernelError::InvalidParameter`] for offsets outside the int8 zero-point
/// range (TFLite's `CheckArithmeticParams`), `left_shift` outside `0..=22`
/// (so that `(q - zp) << left_shift` cannot overflow), a negative multiplier,
/// a shift outside `-31..=0`, or `clamp.min > clamp.max`.
pub fn add_i8(p: &AddParams, input1: &[i8], input2: &[i8], output: &mut [i8]) -> Result<(), KernelError> {
    if input1.len() != output.len() || input2.len() != output.len() {
        return Err(KernelError::ShapeMismatch);
    }
    check_input_offset(p.input1_offset)?;
    check_input_offset(p.input2_offset)?;
    check_zero_point(p.output_offset)?;
    check_clamp(p.clamp)?;
    if !(0..=22).contains(&p.left_shift) {
        return Err(KernelError::InvalidParameter);
    }
    let shifts = [p.input1_shift, p.input2_shift, p.output_shift];
    check_multipliers(&[p.input1_multiplier, p.input2_multiplier, p.output_multiplier], &shifts)?;
    if shifts.iter().any(|&s| s > 0) {
        return Err(KernelError::InvalidParameter);
    }

    for ((o, &x), &y) in output.iter_mut().zip(input1).zip(input2) {
        *o = add_func(x, y, p);
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
    use std::vec::Vec;

    #[test]
    fn hand_computed() {
        // Same scales in and out (0.5), zero points 0: plain integer add.
        let p = AddParams::from_quant((0.5, 0), (0.5, 0), (0.5, 0), Clamp::NONE).unwrap();
        let mut out = [0i8; 4];
        add_i8(&p, &[1, -2, 100, -100], &[2, -3, 100, -100], &mut out).unwrap();
        assert_eq!(out, [3, -5, 127, -128]);
        // Input 2 at twice the scale, output zero point 10.
        let p = AddParams::from_quant((0.5, 1), (1.0, -1), (0.5, 10), Clamp::NONE).unwrap();
        let mut out = [0i8; 2];
        add_i8(&p, &[3, 5], &[-1, 2], &mut out).unwrap();
        // (3-1)*0.5 + 0 = 1.0 -> 2 + 10; (5-1)*0.5 + 3*1.0 = 5.0 -> 10 + 10.
        assert_eq!(out, [12, 20]);
    }

    proptest! {
        /// Within 1 LSB of `(s1 (q1 - z1) + s2 (q2 - z2)) / s_out + z_out`.
        #[test]
        fn close_to_float_reference(
            data in prop::collection::vec((any::<i8>(), any::<i8>()), 1..200),
            s1 in 0.001f64..1.0, s2 in 0.001f64..1.0, ratio in 0.5f64..3.0,
            z1 in -128i32..=127, z2 in -128i32..=127, zo in -128i32..=127, act in 0u8..4,
        ) {
            let so = (s1 + s2) * ratio;
            let clamp = activation_clamp(act, so, zo);
            let p = AddParams::from_quant((s1 as f32, z1), (s2 as f32, z2), (so as f32, zo), clamp).unwrap();
            let (a, b): (Vec<i8>, Vec<i8>) = data.into_iter().unzip();
            let mut out = vec![0i8; a.len()];
            add_i8(&p, &a, &b, &mut out).unwrap();
            let (s1, s2, so) = (f64::from(s1 as f32), f64::from(s2 as f32), f64::from(so as f32));
            for i in 0..a.len() {
                let real = s1 * f64::from(i32::from(a[i]) - z1) + s2 * f64::from(i32::from(b[i]) - z2);
                let want = to_output(real, so, zo, clamp);
                prop_assert!((f64::from(out[i]) - want).abs() <= 1.0, "{} + {}: {} vs {}", a[i], b[i], out[i], want);
            }
        }
    }
}
