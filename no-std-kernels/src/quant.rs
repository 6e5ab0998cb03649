//! Fixed-point arithmetic and prepare-time quantization helpers, ported
//! operation for operation from gemmlowp (`fixedpoint/fixedpoint.h`) and
//! TensorFlow Lite (`tensorflow/lite/kernels/internal/{common.h,common.cc,
//! quantization_util.cc,kernel_util.cc}`, TFLM `micro/kernels/*_common.cc`).
//!
//! Semantics are those of the **double-rounding** build (TFLite without
//! `TFLITE_SINGLE_ROUNDING`), which is what TFLite Micro ships by default:
//! `MultiplyByQuantizedMultiplier` = `RoundingDivideByPOT(SRDHM(x << l, m), r)`.
//!
//! # Fixed-point numbers
//!
//! gemmlowp's `FixedPoint<int32_t, N>` (a Q`N`.`31-N` number) is represented
//! here by its raw `i32`; each function says which format it takes and returns.
//! Where the C++ uses plain (overflow-is-UB) `int32_t` arithmetic, the port
//! uses `wrapping_*`: bit-identical whenever the C++ is defined, and never a
//! panic when it is not.
//!
//! # Floating point without `libm`
//!
//! `core` has no `f64::round`/`floor`/`frexp` on stable, so the few float
//! operations the prepare-time helpers need are written with `to_bits`.

use crate::reference::{AddParams, RequantizeParams, SoftmaxOutput, SoftmaxParams};
use crate::{Activation, Clamp};

// ---------------------------------------------------------------------------
// gemmlowp primitives
// ---------------------------------------------------------------------------

/// gemmlowp `SaturatingRoundingDoublingHighMul<int32_t>`
/// (`fixedpoint/fixedpoint.h`), i.e. ARM `VQRDMULH`: `a * b / 2^31` rounded
/// to nearest with ties **up** (toward +∞: `0.5 → 1`, `-0.5 → 0`; the
/// nudge `1 - 2^30` plus C++'s truncating division), saturating the single
/// overflow case `i32::MIN * i32::MIN` to `i32::MAX`.
#[inline]
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    let overflow = a == b && a == i32::MIN;
    let ab_64 = i64::from(a) * i64::from(b);
    let nudge: i64 = if ab_64 >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    // C++ `/` truncates toward zero, as does Rust's.
    let ab_x2_high32 = ((ab_64 + nudge) / (1i64 << 31)) as i32;
    if overflow { i32::MAX } else { ab_x2_high32 }
}

/// gemmlowp `RoundingDivideByPOT<int32_t>` (`fixedpoint/fixedpoint.h`): a
/// rounding arithmetic right shift, `round(x / 2^exponent)` with ties away
/// from zero.
///
/// gemmlowp asserts `0 <= exponent <= 31`; inside that range this is the exact
/// port. Outside it this never panics: `exponent > 31` keeps rounding
/// correctly (the result is 0, or -1 for `i32::MIN >> 32`), and a negative
/// exponent is treated as 0.
#[inline]
pub fn rounding_divide_by_pot(x: i32, exponent: i32) -> i32 {
    if (0..=31).contains(&exponent) {
        let mask = ((1i64 << exponent) - 1) as i32;
        let remainder = x & mask;
        let threshold = (mask >> 1) + i32::from(x < 0);
        (x >> exponent) + i32::from(remainder > threshold)
    } else if exponent > 31 {
        // Same formula in 64 bits (2^62 already exceeds any i32).
        let e = exponent.min(62);
        let x = i64::from(x);
        let mask = (1i64 << e) - 1;
        let remainder = x & mask;
        let threshold = (mask >> 1) + i64::from(x < 0);
        ((x >> e) + i64::from(remainder > threshold)) as i32
    } else {
        x
    }
}

/// gemmlowp `SaturatingRoundingMultiplyByPOT<Exponent>` with a run-time
/// exponent (TFLite's `SaturatingRoundingMultiplyByPOTParam`, `common.h`):
/// a saturating left shift for `exponent > 0`, a rounding right shift
/// ([`rounding_divide_by_pot`]) for `exponent < 0`.
#[inline]
pub fn saturating_rounding_multiply_by_pot(x: i32, exponent: i32) -> i32 {
    if exponent == 0 {
        x
    } else if exponent > 0 {
        if exponent >= 31 {
            // threshold = (1 << 0) - 1 = 0 for 31; everything nonzero saturates.
            return match x {
                0 => 0,
                x if x > 0 => i32::MAX,
                _ => i32::MIN,
            };
        }
        let threshold = (1i32 << (31 - exponent)) - 1;
        if x > threshold {
            i32::MAX
        } else if x < -threshold {
            i32::MIN
        } else {
            x.wrapping_shl(exponent as u32)
        }
    } else {
        rounding_divide_by_pot(x, exponent.saturating_neg())
    }
}

/// gemmlowp `Rescale<DST>(FixedPoint<int32_t, SRC>)` (`fixedpoint/fixedpoint.h`):
/// changes the number of integer bits of a raw fixed-point value,
/// `SaturatingRoundingMultiplyByPOT<SRC - DST>`.
#[inline]
pub fn rescale(x: i32, src_integer_bits: i32, dst_integer_bits: i32) -> i32 {
    saturating_rounding_multiply_by_pot(x, src_integer_bits.wrapping_sub(dst_integer_bits))
}

/// gemmlowp `RoundingHalfSum<int32_t>` (`fixedpoint/fixedpoint.h`):
/// `(a + b) / 2` rounded half away from zero.
#[inline]
pub fn rounding_half_sum(a: i32, b: i32) -> i32 {
    let sum = i64::from(a) + i64::from(b);
    let sign = if sum >= 0 { 1 } else { -1 };
    ((sum + sign) / 2) as i32
}

/// Raw value of gemmlowp `FixedPoint<int32_t, INTEGER_BITS>::One()`
/// (`i32::MAX` for Q0.31, which cannot represent 1 exactly).
#[inline]
pub const fn fixed_point_one(integer_bits: i32) -> i32 {
    if integer_bits == 0 { i32::MAX } else { 1 << (31 - integer_bits) }
}

/// Shift left that wraps like C++ `x * (1 << s)` does on two's-complement
/// hardware; never panics (shifts ≥ 32 give 0, negative shifts are no-ops).
#[inline]
fn shl_wrapping(x: i32, shift: i32) -> i32 {
    if shift <= 0 {
        x
    } else if shift >= 32 {
        0
    } else {
        x.wrapping_shl(shift as u32)
    }
}

// ---------------------------------------------------------------------------
// TFLite multipliers (common.h / common.cc, double-rounding build)
// ---------------------------------------------------------------------------

/// TFLite `MultiplyByQuantizedMultiplier(int32_t, int32_t, int)`
/// (`tensorflow/lite/kernels/internal/common.cc`, non-`TFLITE_SINGLE_ROUNDING`):
///
/// ```text
/// left_shift  = max(shift, 0); right_shift = max(-shift, 0)
/// RoundingDivideByPOT(SRDHM(x * (1 << left_shift), multiplier), right_shift)
/// ```
///
/// Valid for `multiplier >= 0`, `shift` in `-31..=30` (the kernels check
/// this); `x * (1 << left_shift)` wraps exactly as the C++ does in practice.
#[inline]
pub fn multiply_by_quantized_multiplier(x: i32, quantized_multiplier: i32, shift: i32) -> i32 {
    let left_shift = shift.max(0);
    let right_shift = shift.saturating_neg().max(0);
    rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(shl_wrapping(x, left_shift), quantized_multiplier),
        right_shift,
    )
}

/// TFLite `MultiplyByQuantizedMultiplierSmallerThanOneExp` (`common.h`,
/// double-rounding): `RoundingDivideByPOT(SRDHM(x, m), -left_shift)`, for
/// `left_shift <= 0`.
#[inline]
pub fn multiply_by_quantized_multiplier_smaller_than_one_exp(
    x: i32,
    quantized_multiplier: i32,
    left_shift: i32,
) -> i32 {
    rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, quantized_multiplier), left_shift.saturating_neg())
}

/// TFLite `MultiplyByQuantizedMultiplierGreaterThanOne` (`common.h`,
/// double-rounding): `SRDHM(x * (1 << left_shift), m)`, for `left_shift >= 0`.
#[inline]
pub fn multiply_by_quantized_multiplier_greater_than_one(x: i32, quantized_multiplier: i32, left_shift: i32) -> i32 {
    saturating_rounding_doubling_high_mul(shl_wrapping(x, left_shift), quantized_multiplier)
}

/// TFLite `CountLeadingZeros<uint32_t>` (`common.h`): 32 for 0.
#[inline]
pub fn count_leading_zeros(x: u32) -> i32 {
    x.leading_zeros() as i32
}

// ---------------------------------------------------------------------------
// gemmlowp transcendental functions used by softmax
// ---------------------------------------------------------------------------

/// gemmlowp `exp_on_interval_between_negative_one_quarter_and_0_excl`
/// (`fixedpoint/fixedpoint.h`): `exp(a)` for a Q0.31 `a` in `[-1/4, 0)`,
/// returned as Q0.31. A 4th-order Taylor expansion around -1/8.
pub fn exp_on_interval_between_negative_one_quarter_and_0_excl(a: i32) -> i32 {
    let mul = saturating_rounding_doubling_high_mul;
    // exp(-1/8) and 1/3 in Q0.31.
    const CONSTANT_TERM: i32 = 1_895_147_668;
    const CONSTANT_1_OVER_3: i32 = 715_827_883;
    // x = a + 1/8 (ConstantPOT<-3> in Q0.31 is 1 << 28).
    let x = a.wrapping_add(1 << 28);
    let x2 = mul(x, x);
    let x3 = mul(x2, x);
    let x4 = mul(x2, x2);
    let x4_over_4 = rounding_divide_by_pot(x4, 2);
    let x4_over_24_plus_x3_over_6_plus_x2_over_2 =
        rounding_divide_by_pot(mul(x4_over_4.wrapping_add(x3), CONSTANT_1_OVER_3).wrapping_add(x2), 1);
    CONSTANT_TERM.wrapping_add(mul(CONSTANT_TERM, x.wrapping_add(x4_over_24_plus_x3_over_6_plus_x2_over_2)))
}

/// gemmlowp `exp_on_negative_values<int32_t, INTEGER_BITS>`
/// (`fixedpoint/fixedpoint.h`): `exp(a)` for `a <= 0` given as a
/// Q`INTEGER_BITS`.`31-INTEGER_BITS` raw value, returned as Q0.31.
/// Softmax uses `INTEGER_BITS = 5` (Q5.26).
pub fn exp_on_negative_values<const INTEGER_BITS: i32>(a: i32) -> i32 {
    const { assert!(INTEGER_BITS >= 0 && INTEGER_BITS <= 29) };
    let fractional_bits = 31 - INTEGER_BITS;
    let mul = saturating_rounding_doubling_high_mul;

    // kOneQuarter = ConstantPOT<-2>.
    let one_quarter = 1i32 << (fractional_bits - 2);
    let mask = one_quarter - 1;
    let a_mod_quarter_minus_one_quarter = (a & mask).wrapping_sub(one_quarter);
    let mut result = exp_on_interval_between_negative_one_quarter_and_0_excl(rescale(
        a_mod_quarter_minus_one_quarter,
        INTEGER_BITS,
        0,
    ));
    let remainder = a_mod_quarter_minus_one_quarter.wrapping_sub(a);

    // GEMMLOWP_EXP_BARREL_SHIFTER(Exponent, multiplier = exp(-2^Exponent) in Q0.31).
    const BARREL: [(i32, i32); 7] = [
        (-2, 1_672_461_947),
        (-1, 1_302_514_674),
        (0, 790_015_084),
        (1, 290_630_308),
        (2, 39_332_535),
        (3, 720_401),
        (4, 242),
    ];
    for (exponent, multiplier) in BARREL {
        if INTEGER_BITS > exponent {
            let shift_amount = fractional_bits + exponent;
            if remainder & (1i32 << shift_amount) != 0 {
                result = mul(result, multiplier);
            }
        }
    }

    if INTEGER_BITS > 5 {
        // Inputs below -32 give 0.
        let clamp = -(1i32 << (36 - INTEGER_BITS));
        if a < clamp {
            result = 0;
        }
    }

    if a == 0 { fixed_point_one(0) } else { result }
}

/// gemmlowp `one_over_one_plus_x_for_x_in_0_1<int32_t>`
/// (`fixedpoint/fixedpoint.h`): `1 / (1 + a)` for a Q0.31 `a` in `[0, 1)`,
/// returned as Q0.31, by three Newton–Raphson steps in Q2.29.
pub fn one_over_one_plus_x_for_x_in_0_1(a: i32) -> i32 {
    let mul = saturating_rounding_doubling_high_mul;
    // F0: Q0.31; F2: Q2.29.
    let half_denominator = rounding_half_sum(a, fixed_point_one(0));
    const CONSTANT_48_OVER_17: i32 = 1_515_870_810;
    const CONSTANT_NEG_32_OVER_17: i32 = -1_010_580_540;
    let f2_one = fixed_point_one(2);
    // F0 * F2 -> F2.
    let mut x = CONSTANT_48_OVER_17.wrapping_add(mul(half_denominator, CONSTANT_NEG_32_OVER_17));
    for _ in 0..3 {
        let half_denominator_times_x = mul(half_denominator, x); // F2
        let one_minus_half_denominator_times_x = f2_one.wrapping_sub(half_denominator_times_x);
        // F2 * F2 -> F4, Rescale<2>.
        x = x.wrapping_add(rescale(mul(x, one_minus_half_denominator_times_x), 4, 2));
    }
    // Rescale<0>(ExactMulByPot<-1>(x)): reinterpret F2 as F1, then F1 -> F0.
    rescale(x, 1, 0)
}

/// TFLite `GetReciprocal` (`common.h`): for a positive Q`x_integer_digits`
/// value `x`, returns `(shifted_scale, num_bits_over_unit)` where
/// `shifted_scale` (Q0.31) = `2^num_bits_over_unit / x`, in `(1/2, 1]`.
pub fn get_reciprocal(x: i32, x_integer_digits: i32) -> (i32, i32) {
    let headroom_plus_one = count_leading_zeros(x as u32);
    // Number of bits to the left of the binary point above 1.0.
    let num_bits_over_unit = x_integer_digits - headroom_plus_one;
    // `x << 32` (x == 0) is UB in C++; give 0 rather than panic.
    let shifted = (x as u32).checked_shl(headroom_plus_one as u32).unwrap_or(0);
    let shifted_sum_minus_one = shifted.wrapping_sub(1u32 << 31) as i32;
    let shifted_scale = one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one);
    (shifted_scale, num_bits_over_unit)
}

// ---------------------------------------------------------------------------
// Float helpers (no libm)
// ---------------------------------------------------------------------------

const F64_SIGN: u64 = 1 << 63;
const F64_MANTISSA_BITS: i32 = 52;
const F64_EXP_BIAS: i32 = 1023;

const F32_SIGN: u32 = 1 << 31;
const F32_MANTISSA_BITS: i32 = 23;
const F32_EXP_BIAS: i32 = 127;

/// `TfLiteRound(double)` = `std::round`: nearest integer, ties away from
/// zero, exact for every finite input (NaN and ±∞ are returned unchanged,
/// the sign of zero is kept: `round(-0.4) == -0.0`).
pub fn round_half_away_from_zero_f64(x: f64) -> f64 {
    let bits = x.to_bits();
    let exp = ((bits >> F64_MANTISSA_BITS) & 0x7ff) as i32 - F64_EXP_BIAS;
    if exp >= F64_MANTISSA_BITS {
        // Already an integer (or NaN / infinity).
        x
    } else if exp < -1 {
        // |x| < 0.5.
        f64::from_bits(bits & F64_SIGN)
    } else if exp == -1 {
        // 0.5 <= |x| < 1.
        f64::from_bits((bits & F64_SIGN) | 1.0f64.to_bits())
    } else {
        // 1 <= |x| < 2^52: add half an integer ulp to the magnitude and
        // truncate; a mantissa carry correctly bumps the exponent.
        let frac_bits = (F64_MANTISSA_BITS - exp) as u32;
        let frac_mask = (1u64 << frac_bits) - 1;
        let half = 1u64 << (frac_bits - 1);
        f64::from_bits((bits + half) & !frac_mask)
    }
}

/// `TfLiteRound(float)` = `std::round`, in `f32`: ties away from zero, exact
/// for every finite input (unlike `(x + 0.5).floor()`, which rounds
/// `0.49999997` up).
pub fn round_half_away_from_zero_f32(x: f32) -> f32 {
    let bits = x.to_bits();
    let exp = ((bits >> F32_MANTISSA_BITS) & 0xff) as i32 - F32_EXP_BIAS;
    if exp >= F32_MANTISSA_BITS {
        x
    } else if exp < -1 {
        f32::from_bits(bits & F32_SIGN)
    } else if exp == -1 {
        f32::from_bits((bits & F32_SIGN) | 1.0f32.to_bits())
    } else {
        let frac_bits = (F32_MANTISSA_BITS - exp) as u32;
        let frac_mask = (1u32 << frac_bits) - 1;
        let half = 1u32 << (frac_bits - 1);
        f32::from_bits((bits + half) & !frac_mask)
    }
}

/// C `frexp` for a finite, strictly positive `x`: `x = m * 2^e`, `m` in
/// `[0.5, 1)`.
fn frexp_positive(x: f64) -> (f64, i32) {
    let bits = x.to_bits();
    let biased = ((bits >> F64_MANTISSA_BITS) & 0x7ff) as i32;
    if biased == 0 {
        // Subnormal: scale into the normal range first (exact).
        let two_pow_64 = f64::from_bits(((F64_EXP_BIAS + 64) as u64) << F64_MANTISSA_BITS);
        let (m, e) = frexp_positive(x * two_pow_64);
        return (m, e - 64);
    }
    let m =
        f64::from_bits((bits & !(0x7ffu64 << F64_MANTISSA_BITS)) | (((F64_EXP_BIAS - 1) as u64) << F64_MANTISSA_BITS));
    (m, biased - (F64_EXP_BIAS - 1))
}

fn is_finite_f64(x: f64) -> bool {
    ((x.to_bits() >> F64_MANTISSA_BITS) & 0x7ff) != 0x7ff
}

fn is_finite_f32(x: f32) -> bool {
    ((x.to_bits() >> F32_MANTISSA_BITS) & 0xff) != 0xff
}

/// A usable quantization scale: finite and strictly positive.
fn valid_scale(scale: f32) -> bool {
    is_finite_f32(scale) && scale > 0.0
}

/// A zero point an int8 tensor can have.
fn valid_zero_point(zero_point: i32) -> bool {
    (-128..=127).contains(&zero_point)
}

/// TFLite `QuantizeMultiplier` (`quantization_util.cc`, double-rounding
/// build): `real = multiplier * 2^(shift - 31)` with `multiplier` in
/// `[2^30, 2^31)`.
///
/// `q, shift = frexp(real)`; `multiplier = round(q * 2^31)` (ties away from
/// zero); if that rounds up to `2^31` it is halved and `shift` incremented;
/// `shift < -31` flushes to `(0, 0)`; `0.0` gives `(0, 0)`.
///
/// Returns `None` where TFLite would abort or overflow: negative, NaN or
/// infinite input, or a resulting `shift > 31` (`real` ≳ 2^31). Callers that
/// feed [`multiply_by_quantized_multiplier`] must still check that the shift
/// is in `-31..=30`.
pub fn quantize_multiplier(real: f64) -> Option<(i32, i32)> {
    if real.is_nan() || !is_finite_f64(real) || real < 0.0 {
        return None;
    }
    if real == 0.0 {
        return Some((0, 0));
    }
    let (q, mut shift) = frexp_positive(real);
    // q * 2^31 is exact (an exponent change); q_fixed is in [2^30, 2^31].
    let mut q_fixed = round_half_away_from_zero_f64(q * (1i64 << 31) as f64) as i64;
    if q_fixed == 1i64 << 31 {
        q_fixed /= 2;
        shift += 1;
    }
    if shift < -31 {
        return Some((0, 0));
    }
    if shift > 31 {
        return None;
    }
    Some((q_fixed as i32, shift))
}

/// TFLite `QuantizeMultiplierSmallerThanOneExp` (`quantization_util.cc`):
/// [`quantize_multiplier`] for `0 < real < 1`, returning a shift ≤ 0.
pub fn quantize_multiplier_smaller_than_one_exp(real: f64) -> Option<(i32, i32)> {
    if real.is_nan() || real <= 0.0 || real >= 1.0 {
        return None;
    }
    let (m, shift) = quantize_multiplier(real)?;
    (shift <= 0).then_some((m, shift))
}

/// TFLite `QuantizeMultiplierGreaterThanOne` (`quantization_util.cc`):
/// [`quantize_multiplier`] for `real > 1`, returning a shift ≥ 0.
pub fn quantize_multiplier_greater_than_one(real: f64) -> Option<(i32, i32)> {
    if real.is_nan() || real <= 1.0 {
        return None;
    }
    let (m, shift) = quantize_multiplier(real)?;
    (shift >= 0).then_some((m, shift))
}

/// A (multiplier, shift) pair [`multiply_by_quantized_multiplier`] accepts.
fn usable_multiplier((multiplier, shift): (i32, i32)) -> Option<(i32, i32)> {
    (multiplier >= 0 && (-31..=30).contains(&shift)).then_some((multiplier, shift))
}

/// TFLite `CalculateInputRadius` (`quantization_util.cc`):
/// `floor((2^input_integer_bits - 1) * 2^(total_signed_bits -
/// input_integer_bits) / 2^input_left_shift)`, computed exactly in integers
/// (the C++ double expression is exact for these operands). Meant for
/// small non-negative arguments (TFLite uses `(5, shift, 31)`); others give
/// an unspecified value, never a panic.
pub fn calculate_input_radius(input_integer_bits: i32, input_left_shift: i32, total_signed_bits: i32) -> i32 {
    let shl = |x: i64, s: i32| u32::try_from(s).ok().and_then(|s| x.checked_shl(s)).unwrap_or(0);
    let numerator = shl(shl(1, input_integer_bits) - 1, total_signed_bits - input_integer_bits);
    (numerator >> input_left_shift.clamp(0, 63)) as i32
}

// ---------------------------------------------------------------------------
// Prepare-time parameter builders
// ---------------------------------------------------------------------------

/// TFLite `CalculateActivationRangeQuantizedImpl`'s `quantize`
/// (`kernel_util.cc`): `zero_point + (int32_t)TfLiteRound(f / scale)`, in f32.
fn quantize_activation_bound(f: f32, scale: f32, zero_point: i32) -> i32 {
    // `as` saturates (and maps NaN to 0) where the C++ cast is UB.
    zero_point.saturating_add(round_half_away_from_zero_f32(f / scale) as i32)
}

fn to_i8_saturating(x: i32) -> i8 {
    x.clamp(i32::from(i8::MIN), i32::from(i8::MAX)) as i8
}

impl Clamp {
    /// TFLite `CalculateActivationRangeQuantized` (`kernel_util.cc`) for an
    /// int8 output with `scale` and `zero_point`:
    /// `quantize(f) = zero_point + round(f / scale)` in f32, then
    /// ReLU → `[max(-128, q(0)), 127]`, ReLU6 → `[max(-128, q(0)), min(127, q(6))]`,
    /// ReLU_N1_TO_1 → `[max(-128, q(-1)), min(127, q(1))]`, none → `[-128, 127]`.
    pub fn for_activation(activation: Activation, scale: f32, zero_point: i32) -> Clamp {
        let q = |f: f32| quantize_activation_bound(f, scale, zero_point);
        let (min, max) = match activation {
            Activation::None => (i32::from(i8::MIN), i32::from(i8::MAX)),
            Activation::Relu => (q(0.0), i32::from(i8::MAX)),
            Activation::Relu6 => (q(0.0), q(6.0)),
            Activation::ReluN1To1 => (q(-1.0), q(1.0)),
        };
        Clamp { min: to_i8_saturating(min), max: to_i8_saturating(max) }
    }

    /// ONNX `Clip(min, max)` as a quantized clamp: each bound is quantized as
    /// in [`Clamp::for_activation`] and saturated to int8. A NaN bound means
    /// "no bound". If `min > max` ONNX/numpy clip gives `max` everywhere, so
    /// the clamp collapses to `[q(max), q(max)]`.
    pub fn from_range(min: f32, max: f32, scale: f32, zero_point: i32) -> Clamp {
        let lo =
            if min.is_nan() { i8::MIN } else { to_i8_saturating(quantize_activation_bound(min, scale, zero_point)) };
        let hi =
            if max.is_nan() { i8::MAX } else { to_i8_saturating(quantize_activation_bound(max, scale, zero_point)) };
        if lo > hi { Clamp { min: hi, max: hi } } else { Clamp { min: lo, max: hi } }
    }
}

impl AddParams {
    /// TFLite int8 ADD prepare, general path (TFLM `CalculateOpDataAdd`,
    /// `micro/kernels/add_common.cc`): `left_shift = 20`,
    /// `twice_max_input_scale = 2 * max(s1, s2)`, input multipliers
    /// `s_i / twice_max_input_scale`, output multiplier
    /// `twice_max_input_scale / (2^20 * s_out)`, each through
    /// `QuantizeMultiplierSmallerThanOneExp`.
    ///
    /// Arguments are `(scale, zero_point)` pairs. `None` if a scale is not
    /// finite and positive, a zero point is outside int8, or a multiplier is
    /// not in `(0, 1)` (where TFLite would abort).
    pub fn from_quant(input1: (f32, i32), input2: (f32, i32), output: (f32, i32), clamp: Clamp) -> Option<AddParams> {
        for (scale, zero_point) in [input1, input2, output] {
            if !valid_scale(scale) || !valid_zero_point(zero_point) {
                return None;
            }
        }
        const LEFT_SHIFT: i32 = 20;
        let twice_max_input_scale = 2.0 * f64::from(if input1.0 > input2.0 { input1.0 } else { input2.0 });
        let real_input1_multiplier = f64::from(input1.0) / twice_max_input_scale;
        let real_input2_multiplier = f64::from(input2.0) / twice_max_input_scale;
        let real_output_multiplier = twice_max_input_scale / (f64::from(1i32 << LEFT_SHIFT) * f64::from(output.0));
        let (input1_multiplier, input1_shift) = quantize_multiplier_smaller_than_one_exp(real_input1_multiplier)?;
        let (input2_multiplier, input2_shift) = quantize_multiplier_smaller_than_one_exp(real_input2_multiplier)?;
        let (output_multiplier, output_shift) = quantize_multiplier_smaller_than_one_exp(real_output_multiplier)?;
        Some(AddParams {
            input1_offset: -input1.1,
            input2_offset: -input2.1,
            output_offset: output.1,
            left_shift: LEFT_SHIFT,
            input1_multiplier,
            input1_shift,
            input2_multiplier,
            input2_shift,
            output_multiplier,
            output_shift,
            clamp,
        })
    }
}

/// `kScaledDiffIntegerBits` of TFLite's int8 softmax: exp() input is Q5.26.
pub const SOFTMAX_SCALED_DIFF_INTEGER_BITS: i32 = 5;

impl SoftmaxParams {
    /// TFLM `CalculateSoftmaxParams` (`micro/kernels/softmax_common.cc`) for
    /// int8 input: `PreprocessSoftmaxScaling(beta, input_scale, 5)`
    /// (`quantization_util.cc`: `min(beta * input_scale * 2^26, 2^31 - 1)`
    /// through `QuantizeMultiplierGreaterThanOne`) and
    /// `diff_min = -CalculateInputRadius(5, input_left_shift, 31)`.
    ///
    /// The output is [`SoftmaxOutput::Tflite256`] iff `output_scale == 1/256`
    /// exactly and `output_zero_point == -128` (TFLite's only int8 case);
    /// otherwise [`SoftmaxOutput::Requantized`] with the multiplier of
    /// `1 / (output_scale * 2^31)` (the Q0.31 probability to the output).
    ///
    /// `None` if beta or a scale is not finite and positive, the zero point is
    /// outside int8, `beta * input_scale * 2^26 <= 1` (TFLite aborts) or the
    /// output multiplier's shift is outside `-31..=30`.
    pub fn from_quant(beta: f64, input_scale: f32, output_scale: f32, output_zero_point: i32) -> Option<SoftmaxParams> {
        let valid = is_finite_f64(beta)
            && beta > 0.0
            && valid_scale(input_scale)
            && valid_scale(output_scale)
            && valid_zero_point(output_zero_point);
        if !valid {
            return None;
        }
        // PreprocessSoftmaxScaling (double-rounding build).
        let max_real_multiplier = ((1i64 << 31) - 1) as f64;
        let scaled = beta * f64::from(input_scale) * f64::from(1i32 << (31 - SOFTMAX_SCALED_DIFF_INTEGER_BITS));
        let input_beta_real_multiplier = if max_real_multiplier < scaled { max_real_multiplier } else { scaled };
        let (input_multiplier, input_left_shift) = quantize_multiplier_greater_than_one(input_beta_real_multiplier)?;
        let diff_min = -calculate_input_radius(SOFTMAX_SCALED_DIFF_INTEGER_BITS, input_left_shift, 31);

        let output = if output_scale == 1.0 / 256.0 && output_zero_point == -128 {
            SoftmaxOutput::Tflite256
        } else {
            let real = 1.0 / (f64::from(output_scale) * (1i64 << 31) as f64);
            let (multiplier, shift) = usable_multiplier(quantize_multiplier(real)?)?;
            SoftmaxOutput::Requantized { multiplier, shift, zero_point: output_zero_point }
        };
        Some(SoftmaxParams { input_multiplier, input_left_shift, diff_min, output })
    }
}

impl RequantizeParams {
    /// TFLM `PrepareQuantizeReference` (`micro/kernels/quantize_common.cc`)
    /// for int8 → int8: `QuantizeMultiplier(input_scale / output_scale)`.
    ///
    /// Arguments are `(scale, zero_point)` pairs. `None` if a scale is not
    /// finite and positive, a zero point is outside int8 or the shift is
    /// outside `-31..=30`.
    pub fn from_quant(input: (f32, i32), output: (f32, i32), clamp: Clamp) -> Option<Self> {
        for (scale, zero_point) in [input, output] {
            if !valid_scale(scale) || !valid_zero_point(zero_point) {
                return None;
            }
        }
        let effective_scale = f64::from(input.0) / f64::from(output.0);
        let (multiplier, shift) = usable_multiplier(quantize_multiplier(effective_scale)?)?;
        Some(RequantizeParams { input_offset: -input.1, multiplier, shift, output_offset: output.1, clamp })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srdhm_edges() {
        let f = saturating_rounding_doubling_high_mul;
        assert_eq!(f(i32::MIN, i32::MIN), i32::MAX);
        assert_eq!(f(i32::MAX, i32::MAX), i32::MAX - 1);
        assert_eq!(f(i32::MIN, i32::MAX), -i32::MAX);
        assert_eq!(f(0, i32::MIN), 0);
        // 0.5 * 0.5 = 0.25.
        assert_eq!(f(1 << 30, 1 << 30), 1 << 29);
        // Ties round up (toward +inf), as ARM VQRDMULH: 0.5 -> 1, -0.5 -> 0
        // (unlike RoundingDivideByPOT, which rounds ties away from zero).
        assert_eq!(f(1, 1 << 30), 1);
        assert_eq!(f(-1, 1 << 30), 0);
        assert_eq!(f(-3, 1 << 30), -1); // -1.5 -> -1
        // 3 * 2^29 / 2^31 = 0.75 -> 1; -0.75 -> -1; 2^29/2^31 = 0.25 -> 0.
        assert_eq!(f(3, 1 << 29), 1);
        assert_eq!(f(-3, 1 << 29), -1);
        assert_eq!(f(1, 1 << 29), 0);
        assert_eq!(f(-1, 1 << 29), 0);
        assert_eq!(f(i32::MIN, 1 << 30), -(1 << 30));
    }

    #[test]
    fn rounding_divide_by_pot_cases() {
        let f = rounding_divide_by_pot;
        assert_eq!(f(5, 1), 3); // 2.5 -> 3
        assert_eq!(f(-5, 1), -3); // -2.5 -> -3
        assert_eq!(f(-6, 2), -2); // -1.5 -> -2
        assert_eq!(f(-5, 2), -1); // -1.25 -> -1
        assert_eq!(f(7, 2), 2); // 1.75 -> 2
        assert_eq!(f(6, 2), 2); // 1.5 -> 2
        assert_eq!(f(i32::MAX, 0), i32::MAX);
        assert_eq!(f(i32::MIN, 0), i32::MIN);
        assert_eq!(f(i32::MAX, 31), 1);
        assert_eq!(f(i32::MIN, 31), -1);
        assert_eq!(f(1 << 30, 31), 1); // 0.5 -> 1
        assert_eq!(f(-(1 << 30), 31), -1); // -0.5 -> -1
        assert_eq!(f((1 << 30) - 1, 31), 0);
        // Beyond gemmlowp's range: still rounding, never a panic.
        assert_eq!(f(i32::MAX, 32), 0);
        assert_eq!(f(i32::MIN, 32), -1);
        assert_eq!(f(i32::MIN + 1, 32), 0);
        assert_eq!(f(i32::MIN, 33), 0);
        assert_eq!(f(12345, 1000), 0);
        assert_eq!(f(12345, -3), 12345);
    }

    #[test]
    fn rounding_divide_by_pot_matches_float_rounding() {
        for x in (-70_000i32..70_000).step_by(7) {
            for e in 0..20 {
                let exact = f64::from(x) / f64::from(1u32 << e);
                let expected = round_half_away_from_zero_f64(exact) as i32;
                assert_eq!(rounding_divide_by_pot(x, e), expected, "{x} >> {e}");
            }
        }
    }

    #[test]
    fn multiply_by_quantized_multiplier_cases() {
        // 1.0 = 2^30 * 2^(1-31).
        assert_eq!(multiply_by_quantized_multiplier(1000, 1 << 30, 1), 1000);
        // 0.5.
        assert_eq!(multiply_by_quantized_multiplier(1000, 1 << 30, 0), 500);
        assert_eq!(multiply_by_quantized_multiplier(1001, 1 << 30, 0), 501);
        // SRDHM rounds the tie -500.5 up, to -500.
        assert_eq!(multiply_by_quantized_multiplier(-1001, 1 << 30, 0), -500);
        // 0.25 with a right shift.
        assert_eq!(multiply_by_quantized_multiplier(-6, 1 << 30, -1), -2);
        // Double rounding: SRDHM rounds 3 * 0.5 = 1.5 to 2, then /2 gives 1.
        assert_eq!(multiply_by_quantized_multiplier(3, 1 << 30, -1), 1);
        // Left shifts (x * 2^shift), e.g. scale 4.0 = 2^30 * 2^(3-31).
        assert_eq!(multiply_by_quantized_multiplier(-7, 1 << 30, 3), -28);
        // Saturating SRDHM inside.
        assert_eq!(multiply_by_quantized_multiplier(i32::MIN, i32::MIN, 0), i32::MAX);
        // No panics at the extremes.
        let _ = multiply_by_quantized_multiplier(i32::MAX, i32::MAX, 30);
        let _ = multiply_by_quantized_multiplier(i32::MIN, i32::MAX, -31);
        let _ = multiply_by_quantized_multiplier(i32::MIN, i32::MAX, i32::MIN);
        let _ = multiply_by_quantized_multiplier(i32::MIN, i32::MAX, i32::MAX);
        assert_eq!(multiply_by_quantized_multiplier_greater_than_one(-3, 1 << 30, 2), -6);
        assert_eq!(multiply_by_quantized_multiplier_smaller_than_one_exp(100, 1 << 30, -2), 13);
    }

    #[test]
    fn quantize_multiplier_cases() {
        assert_eq!(quantize_multiplier(1.0), Some((1 << 30, 1)));
        assert_eq!(quantize_multiplier(0.5), Some((1 << 30, 0)));
        assert_eq!(quantize_multiplier(0.75), Some((3 << 29, 0)));
        assert_eq!(quantize_multiplier(2.0), Some((1 << 30, 2)));
        assert_eq!(quantize_multiplier(1.0 / 256.0), Some((1 << 30, -7)));
        assert_eq!(quantize_multiplier(0.0), Some((0, 0)));
        assert_eq!(quantize_multiplier(-0.0), Some((0, 0)));
        // Tiny values flush to zero (shift < -31) ...
        assert_eq!(quantize_multiplier(2f64.powi(-33)), Some((0, 0)));
        assert_eq!(quantize_multiplier(f64::MIN_POSITIVE / 4.0), Some((0, 0)));
        // ... but 2^-32 = 0.5 * 2^-31 still fits.
        assert_eq!(quantize_multiplier(2f64.powi(-32)), Some((1 << 30, -31)));
        // q * 2^31 rounds up to 2^31: halved, shift bumped.
        let just_below_one = 1.0 - 2f64.powi(-40);
        assert_eq!(quantize_multiplier(just_below_one), Some((1 << 30, 1)));
        let just_below_half = 0.5 - 2f64.powi(-40);
        assert_eq!(quantize_multiplier(just_below_half), Some((1 << 30, 0)));
        // Ties away from zero: q * 2^31 = 2^30 + 0.5.
        let tie = (f64::from(1 << 30) + 0.5) / 2f64.powi(31);
        assert_eq!(quantize_multiplier(tie), Some(((1 << 30) + 1, 0)));
        // Largest representable, and the refusals.
        assert_eq!(quantize_multiplier(((1i64 << 31) - 1) as f64), Some((i32::MAX, 31)));
        assert_eq!(quantize_multiplier(2f64.powi(31)), None);
        assert_eq!(quantize_multiplier(-1.0), None);
        assert_eq!(quantize_multiplier(f64::NAN), None);
        assert_eq!(quantize_multiplier(f64::INFINITY), None);
        // A typical conv scale.
        let (m, s) = quantize_multiplier(0.0123).unwrap();
        let back = f64::from(m) * 2f64.powi(s - 31);
        assert!((back - 0.0123).abs() < 1e-11, "{back}");
        assert!((1 << 30..=i32::MAX).contains(&m));
    }

    #[test]
    fn quantize_multiplier_round_trips() {
        let mut x = 1.0e-9f64;
        while x < 1.0e9 {
            let (m, s) = quantize_multiplier(x).unwrap();
            assert!(m >= 1 << 30, "{x}");
            let back = f64::from(m) * 2f64.powi(s - 31);
            assert!(((back - x) / x).abs() <= 2f64.powi(-31), "{x} {back}");
            x *= 1.37;
        }
    }

    #[test]
    fn round_half_away_from_zero() {
        let r = round_half_away_from_zero_f32;
        assert_eq!(r(0.49999997), 0.0);
        assert_eq!(r(-0.49999997), 0.0);
        assert!(r(-0.4).is_sign_negative());
        assert_eq!(r(0.5), 1.0);
        assert_eq!(r(-0.5), -1.0);
        assert_eq!(r(1.5), 2.0);
        assert_eq!(r(2.5), 3.0);
        assert_eq!(r(-2.5), -3.0);
        assert_eq!(r(2.4999998), 2.0);
        assert_eq!(r(8388607.5), 8388608.0);
        assert_eq!(r(16777215.0), 16777215.0);
        assert_eq!(r(1.0e30), 1.0e30);
        assert_eq!(r(f32::INFINITY), f32::INFINITY);
        assert!(r(f32::NAN).is_nan());
        let r = round_half_away_from_zero_f64;
        assert_eq!(r(0.49999999999999994), 0.0);
        assert_eq!(r(0.5), 1.0);
        assert_eq!(r(-1.5), -2.0);
        assert_eq!(r(4503599627370495.5), 4503599627370496.0);
        assert_eq!(r(-4503599627370495.5), -4503599627370496.0);
        assert_eq!(r(2147483647.5), 2147483648.0);
        assert_eq!(r(1234.4999999), 1234.0);
        // Against std on a sweep.
        extern crate std;
        let mut x = -1000.0f32;
        while x < 1000.0 {
            assert_eq!(round_half_away_from_zero_f32(x), std::primitive::f32::round(x), "{x}");
            assert_eq!(round_half_away_from_zero_f64(f64::from(x)), std::primitive::f64::round(f64::from(x)));
            x += 0.0625 + 1.0e-3;
        }
    }

    #[test]
    fn saturating_multiply_by_pot() {
        assert_eq!(saturating_rounding_multiply_by_pot(1 << 25, 5), 1 << 30);
        assert_eq!(saturating_rounding_multiply_by_pot(1 << 26, 5), i32::MAX);
        assert_eq!(saturating_rounding_multiply_by_pot(-(1 << 26), 5), i32::MIN);
        assert_eq!(saturating_rounding_multiply_by_pot(-(1 << 26) + 1, 5), i32::MIN + 32);
        assert_eq!(saturating_rounding_multiply_by_pot(3, -1), 2);
        assert_eq!(saturating_rounding_multiply_by_pot(5, 40), i32::MAX);
        assert_eq!(rescale(i32::MAX, 0, 12), 1 << 19);
    }

    fn q(x: f64, integer_bits: i32) -> i32 {
        round_half_away_from_zero_f64(x * 2f64.powi(31 - integer_bits)) as i32
    }
    fn unq(raw: i32, integer_bits: i32) -> f64 {
        f64::from(raw) / 2f64.powi(31 - integer_bits)
    }

    #[test]
    fn exp_on_negative_values_is_exp() {
        extern crate std;
        assert_eq!(exp_on_negative_values::<5>(0), i32::MAX);
        let mut x = 0.0f64;
        while x > -32.0 {
            let got = unq(exp_on_negative_values::<5>(q(x, 5)), 0);
            let want = std::primitive::f64::exp(x);
            // 4th-order Taylor on [-1/4, 0): |error| <= (1/8)^5 / 120 ~ 2.5e-7.
            assert!((got - want).abs() < 5.0e-7, "exp({x}) = {got}, want {want}");
            x -= 0.013;
        }
        // Q0.31 input straight into the interval kernel.
        let got = unq(exp_on_interval_between_negative_one_quarter_and_0_excl(q(-0.125, 0)), 0);
        assert!((got - std::primitive::f64::exp(-0.125)).abs() < 5.0e-8);
        // Other integer-bit widths (the clamp path for > 5 integer bits).
        assert_eq!(exp_on_negative_values::<8>(q(-40.0, 8)), 0);
        let got = unq(exp_on_negative_values::<0>(q(-0.7, 0)), 0);
        assert!((got - std::primitive::f64::exp(-0.7)).abs() < 5.0e-7);
    }

    #[test]
    fn one_over_one_plus_x_and_reciprocal() {
        let mut x = 0.0f64;
        while x < 1.0 {
            let got = unq(one_over_one_plus_x_for_x_in_0_1(q(x, 0)), 0);
            assert!((got - 1.0 / (1.0 + x)).abs() < 1.0e-8, "{x} {got}");
            x += 0.0173;
        }
        // 3.0 in Q12.19: 1/3 = (2/3) / 2^1.
        let (scale, bits) = get_reciprocal(3 << 19, 12);
        assert_eq!(bits, 1);
        assert!((unq(scale, 0) - 2.0 / 3.0).abs() < 1.0e-8);
        let (scale, bits) = get_reciprocal(1 << 19, 12);
        assert_eq!(bits, 0);
        assert!(unq(scale, 0) > 0.999_999_99);
        // Degenerate inputs never panic.
        let _ = get_reciprocal(0, 12);
        let _ = get_reciprocal(-5, 12);
        assert_eq!(count_leading_zeros(0), 32);
        assert_eq!(count_leading_zeros(1), 31);
        assert_eq!(count_leading_zeros(u32::MAX), 0);
    }

    #[test]
    fn activation_ranges() {
        use crate::Activation::*;
        assert_eq!(Clamp::for_activation(None, 0.1, 3), Clamp::NONE);
        assert_eq!(Clamp::for_activation(Relu, 0.1, -10), Clamp { min: -10, max: 127 });
        // 6 / 0.05 = 120 -> -128 + 120.
        assert_eq!(Clamp::for_activation(Relu6, 0.05, -128), Clamp { min: -128, max: -8 });
        // 6 / 0.01 = 600 saturates.
        assert_eq!(Clamp::for_activation(Relu6, 0.01, 0), Clamp { min: 0, max: 127 });
        // 1 / 0.4 = 2.5 -> 3 (ties away from zero).
        assert_eq!(Clamp::for_activation(ReluN1To1, 0.4, 0), Clamp { min: -3, max: 3 });
        assert_eq!(Clamp::from_range(0.0, 6.0, 0.05, -128), Clamp { min: -128, max: -8 });
        assert_eq!(Clamp::from_range(f32::NAN, f32::NAN, 0.05, 0), Clamp::NONE);
        assert_eq!(Clamp::from_range(-1.0e30, 1.0e30, 0.05, 0), Clamp::NONE);
        assert_eq!(Clamp::from_range(1.0, -1.0, 0.5, 0), Clamp { min: -2, max: -2 });
    }

    #[test]
    fn softmax_params_from_quant() {
        // kws logits: scale 0.14469251, zp 14, beta 1.
        let p = SoftmaxParams::from_quant(1.0, 0.144_692_51, 1.0 / 256.0, -128).unwrap();
        assert_eq!(p.output, SoftmaxOutput::Tflite256);
        let real = f64::from(0.144_692_51f32) * f64::from(1 << 26);
        let back = f64::from(p.input_multiplier) * 2f64.powi(p.input_left_shift - 31);
        assert!((back - real).abs() / real < 1e-9);
        assert_eq!(p.input_left_shift, 24);
        assert_eq!(p.diff_min, -((31i64 << 26) >> 24) as i32);
        // Huge scale hits the (2^31 - 1) cap: shift 31, diff_min 0.
        let p = SoftmaxParams::from_quant(1.0, 1000.0, 1.0 / 256.0, -128).unwrap();
        assert_eq!((p.input_multiplier, p.input_left_shift, p.diff_min), (i32::MAX, 31, 0));
        // Other output quantizations are requantized.
        let p = SoftmaxParams::from_quant(1.0, 0.1, 1.0 / 255.0, -128).unwrap();
        assert!(matches!(p.output, SoftmaxOutput::Requantized { zero_point: -128, .. }));
        assert!(SoftmaxParams::from_quant(1.0, 1.0e-9, 1.0 / 256.0, -128).is_none());
        assert!(SoftmaxParams::from_quant(f64::NAN, 0.1, 1.0 / 256.0, -128).is_none());
        assert!(SoftmaxParams::from_quant(1.0, 0.1, 0.0, -128).is_none());
        assert!(SoftmaxParams::from_quant(1.0, 0.1, 1.0 / 256.0, 200).is_none());
    }

    #[test]
    fn add_and_requantize_params() {
        let p = AddParams::from_quant((0.5, 1), (0.25, -2), (1.0, 3), Clamp::NONE).unwrap();
        assert_eq!((p.input1_offset, p.input2_offset, p.output_offset), (-1, 2, 3));
        assert_eq!(p.left_shift, 20);
        // 0.5 / 1.0 = 0.5 and 0.25 / 1.0 = 0.25.
        assert_eq!((p.input1_multiplier, p.input1_shift), (1 << 30, 0));
        assert_eq!((p.input2_multiplier, p.input2_shift), (1 << 30, -1));
        // 1.0 / (2^20 * 1.0) = 2^-20.
        assert_eq!((p.output_multiplier, p.output_shift), (1 << 30, -19));
        assert!(AddParams::from_quant((0.5, 1), (0.25, -2), (1.0e-9, 3), Clamp::NONE).is_none());
        assert!(AddParams::from_quant((-0.5, 1), (0.25, -2), (1.0, 3), Clamp::NONE).is_none());

        let r = RequantizeParams::from_quant((0.5, 3), (0.25, -7), Clamp::NONE).unwrap();
        assert_eq!((r.input_offset, r.output_offset), (-3, -7));
        assert_eq!((r.multiplier, r.shift), (1 << 30, 2));
        assert!(RequantizeParams::from_quant((1.0e10, 0), (1.0e-10, 0), Clamp::NONE).is_none());
    }
}
