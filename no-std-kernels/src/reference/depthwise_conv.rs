//! DEPTHWISE_CONV_2D, int8: TFLM
//! `reference_integer_ops::DepthwiseConvPerChannel`
//! (`tensorflow/lite/kernels/internal/reference/integer_ops/depthwise_conv.h`).

use super::DepthwiseParams;
use super::common::{
    check_bias, check_clamp, check_input_offset, check_len, check_positive, check_requant, check_window,
    check_zero_point, clamp_to_i8, offset, requant_for, unpad,
};
use crate::quant::multiply_by_quantized_multiplier;
use crate::{Dims4, KernelError, Requant};

/// Depthwise 2-D convolution, NHWC input and output, filter
/// `(1, kh, kw, in_c * depth_multiplier)`; output channel
/// `m + in_channel * depth_multiplier` reads input channel `in_channel`.
///
/// Mirrors TFLM `reference_integer_ops::DepthwiseConvPerChannel` (int8):
/// same loop order (batch, y, x, in_channel, m, filter_y, filter_x), skipped
/// out-of-image taps, wrapping int32 `acc += filter * (input + input_offset)`,
/// `+ bias`, [`multiply_by_quantized_multiplier`], `+ output_offset`, clamp.
///
/// # Errors
/// As for [`conv2d_i8`](super::conv2d_i8); also
/// [`KernelError::InvalidParameter`] for `depth_multiplier == 0` and
/// [`KernelError::ShapeMismatch`] unless
/// `output_c == filter_c == input_c * depth_multiplier` and `filter_n == 1`.
#[allow(clippy::too_many_arguments)]
pub fn depthwise_conv2d_i8(
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
    let conv = &p.conv;
    let depth_multiplier = p.depth_multiplier;
    check_len(input.len(), input_dims)?;
    check_len(filter.len(), filter_dims)?;
    check_len(output.len(), output_dims)?;
    check_positive(&[depth_multiplier])?;
    let batches = input_dims.n;
    let input_depth = input_dims.c;
    let output_depth = output_dims.c;
    if output_dims.n != batches
        || filter_dims.n != 1
        || filter_dims.c != output_depth
        || input_depth.checked_mul(depth_multiplier) != Some(output_depth)
    {
        return Err(KernelError::ShapeMismatch);
    }
    check_bias(bias, output_depth)?;
    check_requant(&requant, output_depth)?;
    let (stride_height, stride_width) = conv.stride;
    let (dilation_height, dilation_width) = conv.dilation;
    let (pad_height, pad_width) = conv.padding;
    check_positive(&[stride_height, stride_width, dilation_height, dilation_width])?;
    check_input_offset(conv.input_offset)?;
    check_zero_point(conv.output_offset)?;
    check_clamp(conv.clamp)?;
    let (input_height, input_width) = (input_dims.h, input_dims.w);
    let (filter_height, filter_width) = (filter_dims.h, filter_dims.w);
    let (output_height, output_width) = (output_dims.h, output_dims.w);
    check_window(output_height, stride_height, filter_height, dilation_height, pad_height, input_height)?;
    check_window(output_width, stride_width, filter_width, dilation_width, pad_width, input_width)?;

    for batch in 0..batches {
        for out_y in 0..output_height {
            for out_x in 0..output_width {
                for in_channel in 0..input_depth {
                    for m in 0..depth_multiplier {
                        let output_channel = m + in_channel * depth_multiplier;
                        // In the padded frame (input coordinate + padding).
                        let in_x_origin = out_x * stride_width;
                        let in_y_origin = out_y * stride_height;
                        let mut acc: i32 = 0;
                        for filter_y in 0..filter_height {
                            for filter_x in 0..filter_width {
                                let padded_x = in_x_origin + dilation_width * filter_x;
                                let padded_y = in_y_origin + dilation_height * filter_y;
                                if let (Some(in_x), Some(in_y)) =
                                    (unpad(padded_x, pad_width, input_width), unpad(padded_y, pad_height, input_height))
                                {
                                    let input_val = i32::from(input[offset(input_dims, batch, in_y, in_x, in_channel)]);
                                    let filter_val =
                                        i32::from(filter[offset(filter_dims, 0, filter_y, filter_x, output_channel)]);
                                    acc = acc.wrapping_add(filter_val * (input_val + conv.input_offset));
                                }
                            }
                        }
                        if let Some(bias) = bias {
                            acc = acc.wrapping_add(bias[output_channel]);
                        }
                        let (multiplier, shift) = requant_for(&requant, output_channel);
                        acc = multiply_by_quantized_multiplier(acc, multiplier, shift);
                        acc = acc.wrapping_add(conv.output_offset);
                        output[offset(output_dims, batch, out_y, out_x, output_channel)] = clamp_to_i8(acc, conv.clamp);
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Clamp;
    use crate::reference::ConvParams;
    use crate::reference::test_util::conv_float_case;
    use proptest::prelude::*;
    use std::vec;

    #[test]
    fn hand_computed_multiplier_2() {
        // 1x2x2x1 input, depth multiplier 2, 2x2 filter, valid: one pixel,
        // two channels.
        let p = DepthwiseParams {
            conv: ConvParams {
                stride: (1, 1),
                dilation: (1, 1),
                padding: (0, 0),
                input_offset: 1,
                output_offset: 2,
                clamp: Clamp::NONE,
            },
            depth_multiplier: 2,
        };
        let input = [1i8, 2, 3, 4];
        // filter (1, 2, 2, 2): channel 0 = [1, 1, 1, 1], channel 1 = [1, -1, 0, 2].
        let filter = [1i8, 1, 1, -1, 1, 0, 1, 2];
        let mut out = [0i8; 2];
        depthwise_conv2d_i8(
            &p,
            Dims4::new(1, 2, 2, 1),
            &input,
            Dims4::new(1, 2, 2, 2),
            &filter,
            Some(&[10, -10]),
            Requant { multiplier: &[1 << 30], shift: &[1] },
            Dims4::new(1, 1, 1, 2),
            &mut out,
        )
        .unwrap();
        // ch0: (2+3+4+5) + 10 + 2 = 26; ch1: 2 - 3 + 0 + 10 - 10 + 2 = 1.
        assert_eq!(out, [26, 1]);
    }

    proptest! {
        /// Within 1 LSB of the real-valued depthwise convolution, and exactly
        /// the TFLite output stage applied to a naively computed accumulator.
        #[test]
        fn close_to_float_reference(case in conv_float_case(true)) {
            let mut out = vec![0i8; case.output_dims.elements().unwrap()];
            depthwise_conv2d_i8(
                &case.depthwise_params(),
                case.input_dims,
                &case.input,
                case.filter_dims,
                &case.filter,
                case.bias.as_deref(),
                Requant { multiplier: &case.multiplier, shift: &case.shift },
                case.output_dims,
                &mut out,
            ).unwrap();
            for (i, (&got, &(want, exact))) in out.iter().zip(&case.float_depthwise()).enumerate() {
                prop_assert!((f64::from(got) - want).abs() <= 1.0, "output {} = {}, float {}", i, got, want);
                prop_assert_eq!(got, exact, "output {}: naive accumulator + TFLite output stage", i);
            }
        }
    }
}
