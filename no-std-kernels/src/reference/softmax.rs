//! SOFTMAX, int8 in, int8 out: TFLite `reference_ops::Softmax<int8_t,
//! int8_t>` (`tensorflow/lite/kernels/internal/reference/softmax.h`), the
//! kernel TFLM's `SoftmaxQuantized` calls, with parameters from TFLM
//! `CalculateSoftmaxParams` (`micro/kernels/softmax_common.cc`, see
//! [`SoftmaxParams::from_quant`]).

use super::common::check_zero_point;
use super::{SoftmaxOutput, SoftmaxParams};
use crate::KernelError;
use crate::quant::{
    SOFTMAX_SCALED_DIFF_INTEGER_BITS, exp_on_negative_values, get_reciprocal, multiply_by_quantized_multiplier,
    multiply_by_quantized_multiplier_greater_than_one, rescale, rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
};

/// `kAccumulationIntegerBits`: the sum of exponentials is Q12.19.
const ACCUMULATION_INTEGER_BITS: i32 = 12;

/// Softmax over the last axis: `input.len() / depth` rows of `depth` values.
///
/// [`SoftmaxOutput::Tflite256`] is TFLite's `reference_ops::Softmax`
/// quantized template for int8 → int8, exactly:
/// - `diff = x - max_in_row`; entries with `diff < diff_min` get -128;
/// - `exp(diff * input_multiplier << input_left_shift)` in Q5.26 → Q0.31
///   (gemmlowp `exp_on_negative_values`), summed in Q12.19 (wrapping, as the
///   C++ does);
/// - `GetReciprocal` of the sum, then
///   `RoundingDivideByPOT(SRDHM(shifted_scale, exp), num_bits_over_unit + 23)
///   - 128`, clamped.
///
/// [`SoftmaxOutput::Requantized`] computes the same Q0.31 probability
/// `RoundingDivideByPOT(SRDHM(shifted_scale, exp), num_bits_over_unit)` and
/// requantizes it with `multiply_by_quantized_multiplier(p, multiplier,
/// shift) + zero_point`, clamped; entries below `diff_min` have probability
/// 0 and get the zero point.
///
/// Where TFLite would abort (`TFLITE_CHECK(0 <= exponent <= 31)`: the sum
/// of exponentials reaches 512, e.g. more than 512 logits tied at the row
/// maximum), the rounding shift is carried out exactly instead (those
/// probabilities, all below 1/512, round to 0 → -128). Rows whose Q12.19 sum
/// overflows (≥ 4096 logits near the maximum) wrap as the C++ does.
///
/// # Errors
/// [`KernelError::InvalidParameter`] for `depth == 0`, a negative
/// `input_multiplier`, `input_left_shift` outside `0..=31`, a positive
/// `diff_min`, or an invalid requantized output (negative multiplier, shift
/// outside `-31..=30`, zero point outside int8);
/// [`KernelError::ShapeMismatch`] if `input.len()` is not a multiple of
/// `depth` or `output.len() != input.len()`.
pub fn softmax_i8(p: &SoftmaxParams, depth: usize, input: &[i8], output: &mut [i8]) -> Result<(), KernelError> {
    if depth == 0 || p.input_multiplier < 0 || !(0..=31).contains(&p.input_left_shift) || p.diff_min > 0 {
        return Err(KernelError::InvalidParameter);
    }
    if let SoftmaxOutput::Requantized { multiplier, shift, zero_point } = p.output {
        if multiplier < 0 || !(-31..=30).contains(&shift) {
            return Err(KernelError::InvalidParameter);
        }
        check_zero_point(zero_point)?;
    }
    if !input.len().is_multiple_of(depth) || output.len() != input.len() {
        return Err(KernelError::ShapeMismatch);
    }

    // exp(scaled diff) in Q0.31, or None below diff_min.
    let exp_of = |x: i8, max_in_row: i8| -> Option<i32> {
        let input_diff = i32::from(x) - i32::from(max_in_row);
        (input_diff >= p.diff_min).then(|| {
            let input_diff_rescaled =
                multiply_by_quantized_multiplier_greater_than_one(input_diff, p.input_multiplier, p.input_left_shift);
            // FixedPointScaledDiff (Q5.26) -> Q0.31.
            exp_on_negative_values::<SOFTMAX_SCALED_DIFF_INTEGER_BITS>(input_diff_rescaled)
        })
    };

    for (in_row, out_row) in input.chunks_exact(depth).zip(output.chunks_exact_mut(depth)) {
        let max_in_row = in_row.iter().copied().fold(i8::MIN, i8::max);

        // FixedPointAccum (Q12.19), plain (wrapping) additions as in the C++.
        let mut sum_of_exps: i32 = 0;
        for &x in in_row {
            if let Some(exp) = exp_of(x, max_in_row) {
                sum_of_exps = sum_of_exps.wrapping_add(rescale(exp, 0, ACCUMULATION_INTEGER_BITS));
            }
        }

        let (shifted_scale, num_bits_over_unit) = get_reciprocal(sum_of_exps, ACCUMULATION_INTEGER_BITS);

        match p.output {
            SoftmaxOutput::Tflite256 => {
                // exponent = num_bits_over_unit + 31 - sizeof(int8_t) * 8.
                let exponent = num_bits_over_unit + 31 - 8;
                for (o, &x) in out_row.iter_mut().zip(in_row) {
                    *o = match exp_of(x, max_in_row) {
                        Some(exp_in_0) => {
                            let unsat_output = rounding_divide_by_pot(
                                saturating_rounding_doubling_high_mul(shifted_scale, exp_in_0),
                                exponent,
                            );
                            let shifted_output = unsat_output.wrapping_add(i32::from(i8::MIN));
                            shifted_output.clamp(i32::from(i8::MIN), i32::from(i8::MAX)) as i8
                        }
                        None => i8::MIN,
                    };
                }
            }
            SoftmaxOutput::Requantized { multiplier, shift, zero_point } => {
                for (o, &x) in out_row.iter_mut().zip(in_row) {
                    let probability = exp_of(x, max_in_row).map_or(0, |exp_in_0| {
                        rounding_divide_by_pot(
                            saturating_rounding_doubling_high_mul(shifted_scale, exp_in_0),
                            num_bits_over_unit,
                        )
                    });
                    let q = multiply_by_quantized_multiplier(probability, multiplier, shift).wrapping_add(zero_point);
                    *o = q.clamp(i32::from(i8::MIN), i32::from(i8::MAX)) as i8;
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

    fn float_softmax(input: &[i8], scale: f64, beta: f64) -> Vec<f64> {
        let max = input.iter().copied().max().unwrap();
        let e: Vec<f64> = input.iter().map(|&x| ((f64::from(x) - f64::from(max)) * scale * beta).exp()).collect();
        let sum: f64 = e.iter().sum();
        e.into_iter().map(|v| v / sum).collect()
    }

    #[test]
    fn uniform_row() {
        // Four equal logits: 0.25 -> 64 / 256 -> -64.
        let p = SoftmaxParams::from_quant(1.0, 0.1, 1.0 / 256.0, -128).unwrap();
        let mut out = [0i8; 4];
        softmax_i8(&p, 4, &[7, 7, 7, 7], &mut out).unwrap();
        assert_eq!(out, [-64; 4]);
        // One dominant logit saturates at 127 (probability ~1).
        let p = SoftmaxParams::from_quant(1.0, 1.0, 1.0 / 256.0, -128).unwrap();
        let mut out = [0i8; 3];
        softmax_i8(&p, 3, &[100, -100, -100], &mut out).unwrap();
        assert_eq!(out, [127, -128, -128]);
    }

    #[test]
    fn many_ties_do_not_abort() {
        // 1000 equal logits: TFLite's exponent check would fail; we give the
        // correctly rounded 1/1000 * 256 = 0.256 -> 0 -> -128.
        let p = SoftmaxParams::from_quant(1.0, 0.1, 1.0 / 256.0, -128).unwrap();
        let input = vec![3i8; 1000];
        let mut out = vec![0i8; 1000];
        softmax_i8(&p, 1000, &input, &mut out).unwrap();
        assert!(out.iter().all(|&o| o == -128));
        // And 5000 (the Q12.19 sum wraps): no panic.
        let input = vec![3i8; 5000];
        let mut out = vec![0i8; 5000];
        softmax_i8(&p, 5000, &input, &mut out).unwrap();
    }

    proptest! {
        /// The TFLite path is within 1 LSB of float softmax.
        #[test]
        fn tflite256_close_to_float(
            rows in prop::collection::vec(prop::collection::vec(any::<i8>(), 1..40), 1..4),
            scale in 0.01f64..0.5,
        ) {
            let depth = rows[0].len();
            let input: Vec<i8> = rows.iter().flat_map(|r| { let mut r = r.clone(); r.resize(depth, 0); r }).collect();
            let p = SoftmaxParams::from_quant(1.0, scale as f32, 1.0 / 256.0, -128).unwrap();
            let mut out = vec![0i8; input.len()];
            softmax_i8(&p, depth, &input, &mut out).unwrap();
            for (row, out_row) in input.chunks(depth).zip(out.chunks(depth)) {
                let want = float_softmax(row, f64::from(scale as f32), 1.0);
                for (&o, &w) in out_row.iter().zip(&want) {
                    let w = (w * 256.0 - 128.0).clamp(-128.0, 127.0);
                    prop_assert!((f64::from(o) - w).abs() <= 1.0, "{} vs {}", o, w);
                }
            }
        }

        /// Other output quantizations: within 1 LSB of float softmax.
        #[test]
        fn requantized_close_to_float(
            row in prop::collection::vec(any::<i8>(), 1..40),
            scale in 0.01f64..0.5,
            out_scale in 0.002f64..0.02,
            zero_point in -128i32..=0,
        ) {
            let p = SoftmaxParams::from_quant(1.0, scale as f32, out_scale as f32, zero_point).unwrap();
            prop_assume!(matches!(p.output, SoftmaxOutput::Requantized { .. }));
            let mut out = vec![0i8; row.len()];
            softmax_i8(&p, row.len(), &row, &mut out).unwrap();
            let want = float_softmax(&row, f64::from(scale as f32), 1.0);
            for (&o, &w) in out.iter().zip(&want) {
                let w = (w / f64::from(out_scale as f32) + f64::from(zero_point)).clamp(-128.0, 127.0);
                prop_assert!((f64::from(o) - w).abs() <= 1.0, "{} vs {}", o, w);
            }
        }
    }
}
