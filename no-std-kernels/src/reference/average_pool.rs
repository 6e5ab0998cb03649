//! AVERAGE_POOL_2D, int8: TFLM `reference_integer_ops::AveragePool`
//! (`tensorflow/lite/kernels/internal/reference/integer_ops/pooling.h`).

use super::PoolParams;
use super::common::{check_pool, clamp_to_i8, offset, pool_window};
use crate::{Dims4, KernelError};

/// Largest window (`filter.0 * filter.1`) accepted, so that the int32 sum of
/// int8 taps and its rounding cannot overflow.
pub const MAX_AVERAGE_POOL_WINDOW: usize = 1 << 23;

/// Average pooling, NHWC, same quantization in and out.
///
/// Mirrors TFLM `reference_integer_ops::AveragePool` (int8): only taps inside
/// the image are summed and counted (padding is not averaged in), and the mean
/// is rounded half away from zero as
/// `acc > 0 ? (acc + n/2) / n : (acc - n/2) / n`, then clamped.
///
/// # Errors
/// [`KernelError::ShapeMismatch`] for slice/shape mismatches (batch and
/// channels must match); [`KernelError::InvalidParameter`] for a zero window
/// or stride, a window larger than [`MAX_AVERAGE_POOL_WINDOW`],
/// `clamp.min > clamp.max`, or a geometry with an output window lying
/// entirely in the padding (TFLM's `AveragePool` returns `false` there).
pub fn average_pool_i8(
    p: &PoolParams,
    input_dims: Dims4,
    input: &[i8],
    output_dims: Dims4,
    output: &mut [i8],
) -> Result<(), KernelError> {
    check_pool(p, input_dims, input.len(), output_dims, output.len())?;
    let (filter_height, filter_width) = p.filter;
    let (stride_height, stride_width) = p.stride;
    let (pad_height, pad_width) = p.padding;
    if filter_height.saturating_mul(filter_width) > MAX_AVERAGE_POOL_WINDOW {
        return Err(KernelError::InvalidParameter);
    }
    let batches = input_dims.n;
    let depth = input_dims.c;
    let (input_height, input_width) = (input_dims.h, input_dims.w);
    let (output_height, output_width) = (output_dims.h, output_dims.w);

    // Every window that will be evaluated must see at least one pixel. The
    // window bounds move monotonically, so the first and last suffice.
    if batches > 0 && depth > 0 && output_height > 0 && output_width > 0 {
        let rows =
            [0, output_height - 1].map(|o| pool_window(o, stride_height, pad_height, filter_height, input_height));
        let cols = [0, output_width - 1].map(|o| pool_window(o, stride_width, pad_width, filter_width, input_width));
        if rows.iter().chain(&cols).any(|&(start, end)| start >= end) {
            return Err(KernelError::InvalidParameter);
        }
    }

    for batch in 0..batches {
        for out_y in 0..output_height {
            for out_x in 0..output_width {
                for channel in 0..depth {
                    // Window origin in the padded frame (input coordinate + padding).
                    let in_x_origin = out_x * stride_width;
                    let in_y_origin = out_y * stride_height;
                    let (filter_x_start, filter_x_end) =
                        pool_window(out_x, stride_width, pad_width, filter_width, input_width);
                    let (filter_y_start, filter_y_end) =
                        pool_window(out_y, stride_height, pad_height, filter_height, input_height);
                    let mut acc: i32 = 0;
                    let mut filter_count: i32 = 0;
                    for filter_y in filter_y_start..filter_y_end {
                        for filter_x in filter_x_start..filter_x_end {
                            let in_x = in_x_origin + filter_x - pad_width;
                            let in_y = in_y_origin + filter_y - pad_height;
                            acc += i32::from(input[offset(input_dims, batch, in_y, in_x, channel)]);
                            filter_count += 1;
                        }
                    }
                    // Checked above: filter_count > 0. Round to the closest integer value.
                    let n = filter_count.max(1);
                    acc = if acc > 0 { (acc + n / 2) / n } else { (acc - n / 2) / n };
                    output[offset(output_dims, batch, out_y, out_x, channel)] = clamp_to_i8(acc, p.clamp);
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
    use crate::quant::round_half_away_from_zero_f64;
    use crate::reference::test_util::out_extent;
    use proptest::prelude::*;
    use std::vec;

    fn params(filter: usize, stride: usize, padding: usize) -> PoolParams {
        PoolParams {
            filter: (filter, filter),
            stride: (stride, stride),
            padding: (padding, padding),
            clamp: Clamp::NONE,
        }
    }

    #[test]
    fn hand_computed_with_padding() {
        // 3x3 input, 2x2 window, stride 2, pad 1 -> 2x2 output; corners only
        // average the in-image taps.
        let input = [1i8, 2, 3, 4, 5, 6, 7, 8, 9];
        let mut out = [0i8; 4];
        average_pool_i8(&params(2, 2, 1), Dims4::new(1, 3, 3, 1), &input, Dims4::new(1, 2, 2, 1), &mut out).unwrap();
        // (1) / 1; (2+3)/2 = 2.5 -> 3; (4+7)/2 = 5.5 -> 6; (5+6+8+9)/4 = 7.
        assert_eq!(out, [1, 3, 6, 7]);
        // Negative ties round away from zero: (-1 + -2) / 2 = -1.5 -> -2.
        let mut out = [0i8; 1];
        average_pool_i8(
            &PoolParams { filter: (1, 2), stride: (1, 1), padding: (0, 0), clamp: Clamp::NONE },
            Dims4::new(1, 1, 2, 1),
            &[-1, -2],
            Dims4::new(1, 1, 1, 1),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, [-2]);
    }

    #[test]
    fn window_entirely_in_padding_is_an_error() {
        let mut out = [0i8; 4];
        let r = average_pool_i8(&params(1, 1, 1), Dims4::new(1, 2, 2, 1), &[0; 4], Dims4::new(1, 2, 2, 1), &mut out);
        assert_eq!(r, Err(KernelError::InvalidParameter));
    }

    proptest! {
        /// Exactly the real mean of the in-image taps, rounded half away from
        /// zero (0 LSB: the integer rounding is exact), then clamped.
        #[test]
        fn equals_rounded_float_mean(
            (n, h, w, c) in (1usize..=2, 1usize..=9, 1usize..=9, 1usize..=3),
            (fh, fw, sh, sw) in (1usize..=4, 1usize..=4, 1usize..=3, 1usize..=3),
            (pt, pl) in (0usize..=3, 0usize..=3),
            clamp in (any::<i8>(), any::<i8>()).prop_map(|(a, b)| Clamp { min: a.min(b), max: a.max(b) }),
            seed in prop::collection::vec(any::<i8>(), 9 * 9 * 2 * 3),
        ) {
            // Padding smaller than the window keeps every window non-empty.
            let (pt, pl) = (pt.min(fh - 1), pl.min(fw - 1));
            let od = Dims4::new(n, out_extent(h, pt, 0, fh, sh, 1), out_extent(w, pl, 0, fw, sw, 1), c);
            let id = Dims4::new(n, h, w, c);
            let input = &seed[..id.elements().unwrap()];
            let p = PoolParams { filter: (fh, fw), stride: (sh, sw), padding: (pt, pl), clamp };
            let mut out = vec![0i8; od.elements().unwrap()];
            average_pool_i8(&p, id, input, od, &mut out).unwrap();
            for b in 0..n { for oy in 0..od.h { for ox in 0..od.w { for ch in 0..c {
                let (mut sum, mut count) = (0.0f64, 0.0f64);
                for fy in 0..fh { for fx in 0..fw {
                    let (y, x) = ((oy * sh + fy) as isize - pt as isize, (ox * sw + fx) as isize - pl as isize);
                    if y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < w {
                        sum += f64::from(input[((b * h + y as usize) * w + x as usize) * c + ch]);
                        count += 1.0;
                    }
                }}
                let want = round_half_away_from_zero_f64(sum / count)
                    .clamp(f64::from(clamp.min), f64::from(clamp.max));
                let got = out[((b * od.h + oy) * od.w + ox) * c + ch];
                prop_assert_eq!(f64::from(got), want);
            }}}}
        }
    }
}
