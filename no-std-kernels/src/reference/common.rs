//! Argument checks shared by the reference kernels, and the few index and
//! clamp helpers their loops use. Every kernel validates its arguments once,
//! up front, with these; after that its loops cannot index out of bounds or
//! overflow (accumulators wrap where TFLite's `int32_t` arithmetic would).

use crate::{Clamp, Dims4, KernelError, Requant};

/// `slice.len() == dims.n * dims.h * dims.w * dims.c` (without overflow).
pub(crate) fn check_len(len: usize, dims: Dims4) -> Result<(), KernelError> {
    match dims.elements() {
        Some(n) if n == len => Ok(()),
        _ => Err(KernelError::ShapeMismatch),
    }
}

/// `len == a * b` (without overflow).
pub(crate) fn check_len2(len: usize, a: usize, b: usize) -> Result<(), KernelError> {
    match a.checked_mul(b) {
        Some(n) if n == len => Ok(()),
        _ => Err(KernelError::ShapeMismatch),
    }
}

/// Requantization slices: same length, 1 (per tensor) or `channels`;
/// multipliers ≥ 0 and shifts in `-31..=30`.
pub(crate) fn check_requant(requant: &Requant<'_>, channels: usize) -> Result<(), KernelError> {
    let n = requant.multiplier.len();
    if n != requant.shift.len() || (n != 1 && n != channels) {
        return Err(KernelError::ShapeMismatch);
    }
    check_multipliers(requant.multiplier, requant.shift)
}

/// Every multiplier ≥ 0 and every shift in `-31..=30`.
pub(crate) fn check_multipliers(multiplier: &[i32], shift: &[i32]) -> Result<(), KernelError> {
    // Folds without early exit, which the compiler vectorises: the fast
    // kernels run this check on every call, over up to 1,024 channels.
    let negative = multiplier.iter().fold(0i32, |acc, &m| acc | m) < 0;
    let bad_shift = shift.iter().fold(false, |acc, s| acc | !(-31..=30).contains(s));
    let ok = !negative && !bad_shift;
    if ok { Ok(()) } else { Err(KernelError::InvalidParameter) }
}

/// A bias, if present, has one entry per output channel.
pub(crate) fn check_bias(bias: Option<&[i32]>, channels: usize) -> Result<(), KernelError> {
    match bias {
        Some(b) if b.len() != channels => Err(KernelError::ShapeMismatch),
        _ => Ok(()),
    }
}

/// `input_offset = -zero_point` for an int8 zero point: `-127..=128`.
pub(crate) fn check_input_offset(offset: i32) -> Result<(), KernelError> {
    if (-127..=128).contains(&offset) { Ok(()) } else { Err(KernelError::InvalidParameter) }
}

/// `output_offset = zero_point` of an int8 tensor: `-128..=127`.
pub(crate) fn check_zero_point(zero_point: i32) -> Result<(), KernelError> {
    if (-128..=127).contains(&zero_point) { Ok(()) } else { Err(KernelError::InvalidParameter) }
}

/// `clamp.min <= clamp.max` (TFLite DCHECKs the same).
pub(crate) fn check_clamp(clamp: Clamp) -> Result<(), KernelError> {
    if clamp.min <= clamp.max { Ok(()) } else { Err(KernelError::InvalidParameter) }
}

/// Strides, dilations and window sizes are at least 1.
pub(crate) fn check_positive(values: &[usize]) -> Result<(), KernelError> {
    if values.iter().all(|&v| v >= 1) { Ok(()) } else { Err(KernelError::InvalidParameter) }
}

/// The last padded input coordinate a sliding window touches,
/// `(out - 1) * stride + (window - 1) * dilation`, and the padded input
/// extent `padding + input`, both fit in `usize`, so the kernels can compute
/// coordinates in the padded frame with plain arithmetic.
pub(crate) fn check_window(
    output: usize,
    stride: usize,
    window: usize,
    dilation: usize,
    padding: usize,
    input: usize,
) -> Result<(), KernelError> {
    let last = output
        .saturating_sub(1)
        .checked_mul(stride)
        .and_then(|o| window.saturating_sub(1).checked_mul(dilation)?.checked_add(o))
        .and_then(|last| last.checked_add(1));
    match (last, padding.checked_add(input)) {
        (Some(_), Some(_)) => Ok(()),
        _ => Err(KernelError::InvalidParameter),
    }
}

/// Maps a coordinate in the padded frame to the input, or `None` if it falls
/// in the padding ("zero padding by omitting the areas outside the image").
#[inline]
pub(crate) fn unpad(padded: usize, padding: usize, extent: usize) -> Option<usize> {
    let i = padded.checked_sub(padding)?;
    (i < extent).then_some(i)
}

/// NHWC (or OHWI) flat offset, TFLite `Offset(shape, i0, i1, i2, i3)`.
#[inline]
pub(crate) fn offset(dims: Dims4, i0: usize, i1: usize, i2: usize, i3: usize) -> usize {
    ((i0 * dims.h + i1) * dims.w + i2) * dims.c + i3
}

/// The (multiplier, shift) of `channel`, per tensor or per channel.
#[inline]
pub(crate) fn requant_for(requant: &Requant<'_>, channel: usize) -> (i32, i32) {
    let i = if requant.multiplier.len() == 1 { 0 } else { channel };
    (requant.multiplier[i], requant.shift[i])
}

/// TFLite's `max(acc, act_min)` then `min(acc, act_max)`, then the cast.
#[inline]
pub(crate) fn clamp_to_i8(acc: i32, clamp: Clamp) -> i8 {
    acc.max(i32::from(clamp.min)).min(i32::from(clamp.max)) as i8
}

/// Shared checks of the pooling kernels: shapes (batch and channels match),
/// window and stride ≥ 1, clamp, coordinate overflow.
pub(crate) fn check_pool(
    p: &super::PoolParams,
    input_dims: Dims4,
    input_len: usize,
    output_dims: Dims4,
    output_len: usize,
) -> Result<(), KernelError> {
    check_len(input_len, input_dims)?;
    check_len(output_len, output_dims)?;
    if input_dims.n != output_dims.n || input_dims.c != output_dims.c {
        return Err(KernelError::ShapeMismatch);
    }
    let (filter_height, filter_width) = p.filter;
    let (stride_height, stride_width) = p.stride;
    check_positive(&[filter_height, filter_width, stride_height, stride_width])?;
    check_clamp(p.clamp)?;
    check_window(output_dims.h, stride_height, filter_height, 1, p.padding.0, input_dims.h)?;
    check_window(output_dims.w, stride_width, filter_width, 1, p.padding.1, input_dims.w)?;
    Ok(())
}

/// TFLite's pooling window clamped to the image, in window coordinates:
/// `filter_start = max(0, -origin)`, `filter_end = min(filter, input - origin)`
/// with `origin = out * stride - padding`, here computed in the padded frame.
/// Empty (`start >= end`) when the window lies entirely in the padding.
#[inline]
pub(crate) fn pool_window(out: usize, stride: usize, padding: usize, filter: usize, input: usize) -> (usize, usize) {
    let origin = out * stride; // padded frame
    let start = padding.saturating_sub(origin);
    let end = filter.min((padding + input).saturating_sub(origin));
    (start, end)
}
