//! CONV_2D, int8 × int8 → int8, per-channel or per-tensor requantization,
//! grouped: TFLM `reference_integer_ops::ConvPerChannel`
//! (`tensorflow/lite/kernels/internal/reference/integer_ops/conv.h`).

use super::ConvParams;
use super::common::{
    check_bias, check_clamp, check_input_offset, check_len, check_positive, check_requant, check_window,
    check_zero_point, clamp_to_i8, offset, requant_for, unpad,
};
use crate::quant::multiply_by_quantized_multiplier;
use crate::{Dims4, KernelError, Requant};

/// 2-D convolution, NHWC input and output, OHWI filter
/// `(out_c, kh, kw, in_c / groups)`, with `groups = input_c / filter_in_c`.
///
/// Mirrors TFLM `reference_integer_ops::ConvPerChannel` (int8): same loop
/// order, taps outside the image are skipped (equivalent to padding with the
/// input zero point), `acc += filter * (input + input_offset)` in wrapping
/// int32, `+ bias`, [`multiply_by_quantized_multiplier`],
/// `+ output_offset`, clamp.
///
/// `requant` has 1 or `out_c` entries; `bias`, if present, `out_c`.
///
/// # Errors
/// [`KernelError::ShapeMismatch`] if a slice does not match its shape or the
/// shapes disagree (batch, `out_c`, groups); [`KernelError::InvalidParameter`]
/// for a stride/dilation of 0, an out-of-range offset, multiplier, shift or
/// clamp, or a geometry whose coordinates overflow.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_i8(
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
    check_len(input.len(), input_dims)?;
    check_len(filter.len(), filter_dims)?;
    check_len(output.len(), output_dims)?;
    let batches = input_dims.n;
    let output_depth = output_dims.c;
    let filter_input_depth = filter_dims.c;
    if output_dims.n != batches || filter_dims.n != output_depth || filter_input_depth == 0 {
        return Err(KernelError::ShapeMismatch);
    }
    if !input_dims.c.is_multiple_of(filter_input_depth) {
        return Err(KernelError::ShapeMismatch);
    }
    let groups = input_dims.c / filter_input_depth;
    if groups == 0 || !output_depth.is_multiple_of(groups) {
        return Err(KernelError::ShapeMismatch);
    }
    let filters_per_group = output_depth / groups;
    check_bias(bias, output_depth)?;
    check_requant(&requant, output_depth)?;
    let (stride_height, stride_width) = p.stride;
    let (dilation_height, dilation_width) = p.dilation;
    let (pad_height, pad_width) = p.padding;
    check_positive(&[stride_height, stride_width, dilation_height, dilation_width])?;
    check_input_offset(p.input_offset)?;
    check_zero_point(p.output_offset)?;
    check_clamp(p.clamp)?;
    let (input_height, input_width) = (input_dims.h, input_dims.w);
    let (filter_height, filter_width) = (filter_dims.h, filter_dims.w);
    let (output_height, output_width) = (output_dims.h, output_dims.w);
    check_window(output_height, stride_height, filter_height, dilation_height, pad_height, input_height)?;
    check_window(output_width, stride_width, filter_width, dilation_width, pad_width, input_width)?;

    for batch in 0..batches {
        for out_y in 0..output_height {
            // In the padded frame: in_y + pad_height.
            let in_y_origin = out_y * stride_height;
            for out_x in 0..output_width {
                let in_x_origin = out_x * stride_width;
                for out_channel in 0..output_depth {
                    let group = out_channel / filters_per_group;
                    let mut acc: i32 = 0;
                    for filter_y in 0..filter_height {
                        let padded_y = in_y_origin + dilation_height * filter_y;
                        let Some(in_y) = unpad(padded_y, pad_height, input_height) else {
                            continue;
                        };
                        for filter_x in 0..filter_width {
                            let padded_x = in_x_origin + dilation_width * filter_x;
                            let Some(in_x) = unpad(padded_x, pad_width, input_width) else {
                                continue;
                            };
                            for in_channel in 0..filter_input_depth {
                                let input_val = i32::from(
                                    input[offset(
                                        input_dims,
                                        batch,
                                        in_y,
                                        in_x,
                                        in_channel + group * filter_input_depth,
                                    )],
                                );
                                let filter_val =
                                    i32::from(filter[offset(filter_dims, out_channel, filter_y, filter_x, in_channel)]);
                                acc = acc.wrapping_add(filter_val * (input_val + p.input_offset));
                            }
                        }
                    }
                    if let Some(bias) = bias {
                        acc = acc.wrapping_add(bias[out_channel]);
                    }
                    let (multiplier, shift) = requant_for(&requant, out_channel);
                    acc = multiply_by_quantized_multiplier(acc, multiplier, shift);
                    acc = acc.wrapping_add(p.output_offset);
                    output[offset(output_dims, batch, out_y, out_x, out_channel)] = clamp_to_i8(acc, p.clamp);
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
    use crate::reference::test_util::{ConvFloatCase, conv_float_case};
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    fn params(stride: usize, dilation: usize, padding: usize) -> ConvParams {
        ConvParams {
            stride: (stride, stride),
            dilation: (dilation, dilation),
            padding: (padding, padding),
            input_offset: 0,
            output_offset: 0,
            clamp: Clamp::NONE,
        }
    }

    #[test]
    fn hand_computed_3x3_same_padding() {
        // 1x3x3x1 input 1..9, 3x3 filter of ones, pad 1: each output is the
        // sum of its in-image neighbourhood; multiplier 0.5 (2^30, shift 0).
        let input: Vec<i8> = (1..=9).collect();
        let filter = [1i8; 9];
        let mut out = [0i8; 9];
        let d = Dims4::new(1, 3, 3, 1);
        conv2d_i8(
            &params(1, 1, 1),
            d,
            &input,
            Dims4::new(1, 3, 3, 1),
            &filter,
            Some(&[1]),
            Requant { multiplier: &[1 << 30], shift: &[0] },
            d,
            &mut out,
        )
        .unwrap();
        // Sums: 12 21 16 / 27 45 33 / 24 39 28; (+1 bias) / 2 rounded half away.
        assert_eq!(out, [7, 11, 9, 14, 23, 17, 13, 20, 15]);
    }

    #[test]
    fn zero_point_padding_and_clamp() {
        // Input zero point 5 (offset -5): padded taps contribute exactly 0.
        let mut p = params(2, 1, 1);
        p.input_offset = -5;
        p.output_offset = -3;
        p.clamp = Clamp { min: -3, max: 10 };
        let input = [5i8, 7, 9, 11];
        let mut out = [0i8; 1];
        conv2d_i8(
            &p,
            Dims4::new(1, 2, 2, 1),
            &input,
            Dims4::new(1, 3, 3, 1),
            &[1, 1, 1, 1, 2, 1, 1, 1, 1],
            None,
            Requant { multiplier: &[1 << 30], shift: &[1] },
            Dims4::new(1, 1, 1, 1),
            &mut out,
        )
        .unwrap();
        // Window centred on (0,0): (5-5)*2 + (7-5) + (9-5) + (11-5) = 12; -3 -> 9.
        assert_eq!(out, [9]);
    }

    #[test]
    fn grouped_conv_uses_its_group_channels() {
        // 2 groups of 1 input channel each, 2 output channels.
        let input = [3i8, -4];
        let mut out = [0i8; 2];
        conv2d_i8(
            &params(1, 1, 0),
            Dims4::new(1, 1, 1, 2),
            &input,
            Dims4::new(2, 1, 1, 1),
            &[2, 5],
            None,
            Requant { multiplier: &[1 << 30, 1 << 30], shift: &[1, 1] },
            Dims4::new(1, 1, 1, 2),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, [6, -20]);
    }

    proptest! {
        /// Within 1 LSB of the real-valued convolution on random shapes, and
        /// exactly the TFLite output stage applied to a naively computed
        /// accumulator (an independent check of the geometry).
        #[test]
        fn close_to_float_reference(case in conv_float_case(false)) {
            check_against_float(&case)?;
        }
    }

    pub(crate) fn check_against_float(case: &ConvFloatCase) -> Result<(), TestCaseError> {
        let mut out = vec![0i8; case.output_dims.elements().unwrap()];
        conv2d_i8(
            &case.params,
            case.input_dims,
            &case.input,
            case.filter_dims,
            &case.filter,
            case.bias.as_deref(),
            Requant { multiplier: &case.multiplier, shift: &case.shift },
            case.output_dims,
            &mut out,
        )
        .map_err(|e| TestCaseError::fail(std::format!("{e}")))?;
        let want = case.float_conv();
        for (i, (&got, &(want, exact))) in out.iter().zip(&want).enumerate() {
            prop_assert!((f64::from(got) - want).abs() <= 1.0, "output {} = {}, float reference {}", i, got, want);
            prop_assert_eq!(got, exact, "output {}: naive accumulator + TFLite output stage", i);
        }
        Ok(())
    }
}
