//! Portable reference kernels: the definition of correct. Every fast path
//! must be bit-identical to these. Semantics follow TFLite Micro's reference
//! integer kernels (`tensorflow/lite/kernels/internal/reference/integer_ops/`
//! and `reference/{softmax,requantize,quantize,dequantize,transpose}.h`),
//! double-rounding build; each function names the TFLM function it mirrors
//! and keeps its loop order.
//!
//! Every kernel checks, once per call, that each slice matches its shape and
//! each parameter is in range, and returns [`KernelError`](crate::KernelError) otherwise; after
//! that its loops cannot panic (no out-of-bounds index, no arithmetic
//! overflow: the int32 accumulators wrap exactly where TFLite's would).
//!
//! Ranges enforced on parameters, beyond the shapes:
//! - stride, dilation, pooling window, depth multiplier ≥ 1;
//! - `input_offset` in `-127..=128` and `output_offset` / zero points in
//!   `-128..=127` (offsets of int8 zero points; this is what lets
//!   `input + input_offset` fit in 9 bits);
//! - requantization multipliers ≥ 0, shifts in `-31..=30`;
//! - `clamp.min <= clamp.max` (applied as TFLite does: `max` then `min`).

use crate::Clamp;

mod add;
mod average_pool;
pub(crate) mod common;
mod conv;
mod depthwise_conv;
mod dequantize;
mod fully_connected;
mod max_pool;
mod quantize;
mod requantize;
mod softmax;
#[cfg(test)]
pub(crate) mod test_util;
mod transpose;

pub use add::add_i8;
pub use average_pool::{MAX_AVERAGE_POOL_WINDOW, average_pool_i8};
pub use conv::conv2d_i8;
pub use depthwise_conv::depthwise_conv2d_i8;
pub use dequantize::dequantize_i8;
pub use fully_connected::fully_connected_i8;
pub use max_pool::max_pool_i8;
pub use quantize::quantize_f32;
pub use requantize::requantize_i8;
pub use softmax::softmax_i8;
pub use transpose::transpose_i8;

/// Convolution parameters (NHWC, filter OHWI).
#[derive(Clone, Copy, Debug)]
pub struct ConvParams {
    /// Stride (height, width), ≥ 1.
    pub stride: (usize, usize),
    /// Dilation (height, width), ≥ 1.
    pub dilation: (usize, usize),
    /// Padding before the first row and column (top, left); bottom/right
    /// padding is implied by the output size.
    pub padding: (usize, usize),
    /// `-input_zero_point`.
    pub input_offset: i32,
    /// `output_zero_point`.
    pub output_offset: i32,
    /// Fused activation.
    pub clamp: Clamp,
}

/// Depthwise convolution parameters.
#[derive(Clone, Copy, Debug)]
pub struct DepthwiseParams {
    /// As for [`ConvParams`].
    pub conv: ConvParams,
    /// Output channels per input channel, ≥ 1.
    pub depth_multiplier: usize,
}

/// Fully connected parameters.
#[derive(Clone, Copy, Debug)]
pub struct FullyConnectedParams {
    /// `-input_zero_point`.
    pub input_offset: i32,
    /// `output_zero_point`.
    pub output_offset: i32,
    /// Fused activation.
    pub clamp: Clamp,
}

/// Elementwise add with rescaling (TFLite's int8 ADD).
#[derive(Clone, Copy, Debug)]
pub struct AddParams {
    /// `-input1_zero_point`.
    pub input1_offset: i32,
    /// `-input2_zero_point`.
    pub input2_offset: i32,
    /// `output_zero_point`.
    pub output_offset: i32,
    /// 20 for int8.
    pub left_shift: i32,
    /// Input 1 multiplier.
    pub input1_multiplier: i32,
    /// Input 1 shift (≤ 0).
    pub input1_shift: i32,
    /// Input 2 multiplier.
    pub input2_multiplier: i32,
    /// Input 2 shift (≤ 0).
    pub input2_shift: i32,
    /// Output multiplier.
    pub output_multiplier: i32,
    /// Output shift (≤ 0).
    pub output_shift: i32,
    /// Fused activation.
    pub clamp: Clamp,
}

/// Pooling parameters (same quantization in and out).
#[derive(Clone, Copy, Debug)]
pub struct PoolParams {
    /// Window (height, width), ≥ 1.
    pub filter: (usize, usize),
    /// Stride (height, width), ≥ 1.
    pub stride: (usize, usize),
    /// Padding (top, left).
    pub padding: (usize, usize),
    /// Fused activation.
    pub clamp: Clamp,
}

/// How softmax writes its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoftmaxOutput {
    /// TFLite's only int8 case: scale 1/256, zero point -128. Bit-exact with TFLM.
    Tflite256,
    /// Any other output quantization: the Q0.31 probability is requantized
    /// with `multiplier`/`shift` (≈ 1 / (scale · 2^31)) and `zero_point` added.
    Requantized {
        /// Multiplier.
        multiplier: i32,
        /// Shift.
        shift: i32,
        /// Output zero point.
        zero_point: i32,
    },
}

/// Softmax parameters (beta and input scale folded in, TFLite's `SoftmaxParams`).
#[derive(Clone, Copy, Debug)]
pub struct SoftmaxParams {
    /// From `PreprocessSoftmaxScaling`.
    pub input_multiplier: i32,
    /// From `PreprocessSoftmaxScaling`.
    pub input_left_shift: i32,
    /// From `CalculateInputRadius`, negative.
    pub diff_min: i32,
    /// Output quantization.
    pub output: SoftmaxOutput,
}

/// int8 → int8 rescale (TFLite's int8 QUANTIZE / requantize).
#[derive(Clone, Copy, Debug)]
pub struct RequantizeParams {
    /// `-input_zero_point`.
    pub input_offset: i32,
    /// Multiplier for `input_scale / output_scale`.
    pub multiplier: i32,
    /// Shift for the same.
    pub shift: i32,
    /// `output_zero_point`.
    pub output_offset: i32,
    /// Fused activation (e.g. a ReLU that could not be fused elsewhere).
    pub clamp: Clamp,
}
