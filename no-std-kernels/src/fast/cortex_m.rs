//! 32-bit Arm DSP-extension fast paths (`smlad`, `sxtb16`): Cortex-M4/M7/M33
//! firmware and ARMv7-A. Microcontrollers have no allocator, so these read
//! the package's OHWI weights directly (CMSIS-NN style), no packing.
//!
//! Not written yet: every entry point runs the reference kernel.

use crate::reference::{self, ConvParams, DepthwiseParams, FullyConnectedParams};
use crate::{Dims4, KernelError, Requant};

/// The DSP extension is in the build (chosen at compile time).
pub(super) fn has_dsp() -> bool {
    cfg!(any(target_feature = "dsp", target_feature = "v6"))
}

/// As [`reference::conv2d_i8`].
#[allow(clippy::too_many_arguments)]
pub(super) fn conv2d_i8(
    p: &ConvParams,
    input_dims: Dims4,
    input: &[i8],
    filter_dims: Dims4,
    filter: &[i8],
    bias: Option<&[i32]>,
    requant: Requant<'_>,
    output_dims: Dims4,
    output: &mut [i8],
) -> Result<(), KernelError> {
    reference::conv2d_i8(p, input_dims, input, filter_dims, filter, bias, requant, output_dims, output)
}

/// As [`reference::depthwise_conv2d_i8`].
#[allow(clippy::too_many_arguments)]
pub(super) fn depthwise_conv2d_i8(
    p: &DepthwiseParams,
    input_dims: Dims4,
    input: &[i8],
    filter_dims: Dims4,
    filter: &[i8],
    bias: Option<&[i32]>,
    requant: Requant<'_>,
    output_dims: Dims4,
    output: &mut [i8],
) -> Result<(), KernelError> {
    reference::depthwise_conv2d_i8(p, input_dims, input, filter_dims, filter, bias, requant, output_dims, output)
}

/// As [`reference::fully_connected_i8`].
#[allow(clippy::too_many_arguments)]
pub(super) fn fully_connected_i8(
    p: &FullyConnectedParams,
    batches: usize,
    input: &[i8],
    filter_dims: (usize, usize),
    filter: &[i8],
    bias: Option<&[i32]>,
    requant: Requant<'_>,
    output: &mut [i8],
) -> Result<(), KernelError> {
    reference::fully_connected_i8(p, batches, input, filter_dims, filter, bias, requant, output)
}
