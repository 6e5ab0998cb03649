//! int8 kernels with TFLite / TFLite Micro semantics, `#![no_std]`, no allocation.
//!
//! - [`quant`]: gemmlowp / TFLite fixed-point helpers and the prepare-time
//!   builders of kernel parameters (`AddParams::from_quant`, ...).
//! - [`reference`](mod@reference): portable reference kernels, bit-identical to TFLite
//!   Micro's reference integer kernels (double-rounding build). They are the
//!   definition of correct for every faster implementation.
//! - [`fast`]: the same kernels with SIMD (x86-64 AVX2 / AVX-512 VNNI),
//!   chosen once per process, over weights packed at load time; bit-identical
//!   to the reference.
//! - `testing` (feature `testing`): a property-test battery that checks a
//!   candidate kernel set bit-for-bit against [`reference`](mod@reference).
//!
//! Layouts:
//! - activations NHWC, int8, asymmetric (scale, zero point);
//! - conv filters OHWI (`[out_c, kh, kw, in_c / groups]`), depthwise filters
//!   `[1, kh, kw, in_c * depth_multiplier]`, fully-connected filters `[out, in]`;
//!   weights symmetric int8 (zero point 0), per output channel or per tensor;
//! - bias int32 with scale `input_scale * filter_scale[c]`, zero point 0.
#![no_std]
#![warn(missing_docs)]
#![deny(unsafe_code)]

#[cfg(any(test, feature = "testing", feature = "std"))]
extern crate std;

pub mod fast;
pub mod quant;
pub mod reference;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use core::fmt;

/// An NHWC shape (batch, height, width, channels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Dims4 {
    /// Batch.
    pub n: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// Channels.
    pub c: usize,
}

impl Dims4 {
    /// A shape from its four dimensions.
    pub const fn new(n: usize, h: usize, w: usize, c: usize) -> Self {
        Dims4 { n, h, w, c }
    }

    /// Number of elements, or `None` on overflow.
    pub fn elements(&self) -> Option<usize> {
        self.n.checked_mul(self.h)?.checked_mul(self.w)?.checked_mul(self.c)
    }
}

/// The fused activation as a clamp on the quantized output (ReLU is
/// `[zero_point, 127]`, ReLU6 `[zero_point, zero_point + round(6 / scale)]`,
/// none `[-128, 127]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clamp {
    /// Lowest output value.
    pub min: i8,
    /// Highest output value.
    pub max: i8,
}

impl Clamp {
    /// No clamping beyond the int8 range.
    pub const NONE: Clamp = Clamp { min: i8::MIN, max: i8::MAX };
}

/// A TFLite fused activation function, turned into a [`Clamp`] by
/// [`Clamp::for_activation`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `kTfLiteActNone`.
    None,
    /// `kTfLiteActRelu`: `[0, +inf)`.
    Relu,
    /// `kTfLiteActRelu6`: `[0, 6]`.
    Relu6,
    /// `kTfLiteActReluN1To1`: `[-1, 1]`.
    ReluN1To1,
}

/// Fixed-point requantization of int32 accumulators to the output scale,
/// one (multiplier, shift) pair per output channel, or a single pair for
/// the whole tensor (slices of length 1).
///
/// `shift` follows TFLite: positive is a left shift, negative a right shift.
#[derive(Clone, Copy, Debug)]
pub struct Requant<'a> {
    /// Q31 multipliers in `[2^30, 2^31)` (or 0).
    pub multiplier: &'a [i32],
    /// Shifts, one per multiplier, in `-31..=30`.
    pub shift: &'a [i32],
}

/// Why a kernel refused to run: its slices do not match its shapes or its
/// parameters are out of range. The runtime validates packages so that this
/// never happens on a loaded model; the kernels still check, cheaply, once per
/// call, so that no input can make them index out of bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum KernelError {
    /// A slice length does not match the shape it is described by.
    ShapeMismatch,
    /// A parameter (stride, dilation, multiplier, shift, ...) is out of range.
    InvalidParameter,
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelError::ShapeMismatch => f.write_str("tensor length does not match its shape"),
            KernelError::InvalidParameter => f.write_str("kernel parameter out of range"),
        }
    }
}

impl core::error::Error for KernelError {}
