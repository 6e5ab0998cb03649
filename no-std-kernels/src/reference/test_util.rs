//! Test-only generators of *realistic* quantized problems (real scales, the
//! multipliers TFLite would derive from them) and their real-valued
//! references, for the "within 1 LSB of float" tests of each kernel.

use super::{ConvParams, DepthwiseParams, FullyConnectedParams};
use crate::quant::quantize_multiplier;
use crate::{Activation, Clamp, Dims4};
use proptest::prelude::*;
use std::vec::Vec;

/// An activation-derived clamp for output `(scale, zero_point)`.
pub(crate) fn activation_clamp(activation: u8, scale: f64, zero_point: i32) -> Clamp {
    let act = match activation % 4 {
        0 | 3 => Activation::None,
        1 => Activation::Relu,
        _ => Activation::Relu6,
    };
    Clamp::for_activation(act, scale as f32, zero_point)
}

/// `(multiplier, shift)` for a real multiplier, as TFLite's prepare computes.
pub(crate) fn multiplier_for(real: f64) -> (i32, i32) {
    let (m, s) = quantize_multiplier(real).expect("representable multiplier");
    assert!((-31..=30).contains(&s), "shift {s} for {real}");
    (m, s)
}

/// Quantizes a real value to the output, clamped, *without* rounding: the
/// kernels must land within 1 of this.
pub(crate) fn to_output(real: f64, scale: f64, zero_point: i32, clamp: Clamp) -> f64 {
    (real / scale + f64::from(zero_point)).clamp(f64::from(clamp.min), f64::from(clamp.max))
}

/// A convolution (regular, grouped or depthwise) with real scales.
#[derive(Clone, Debug)]
pub(crate) struct ConvFloatCase {
    pub params: ConvParams,
    pub depth_multiplier: usize,
    pub input_dims: Dims4,
    pub input: Vec<i8>,
    pub filter_dims: Dims4,
    pub filter: Vec<i8>,
    pub bias: Option<Vec<i32>>,
    pub multiplier: Vec<i32>,
    pub shift: Vec<i32>,
    pub output_dims: Dims4,
    pub input_scale: f64,
    pub filter_scales: Vec<f64>,
    pub output_scale: f64,
    pub output_zero_point: i32,
}

impl ConvFloatCase {
    pub fn depthwise_params(&self) -> DepthwiseParams {
        DepthwiseParams { conv: self.params, depth_multiplier: self.depth_multiplier }
    }

    fn filter_scale(&self, c: usize) -> f64 {
        if self.filter_scales.len() == 1 { self.filter_scales[0] } else { self.filter_scales[c] }
    }

    /// `(float reference, exact reference)` for one accumulator (without
    /// bias): the real value in output units, and the TFLite integer result
    /// computed from the independently computed accumulator.
    fn outputs_for(&self, acc: i64, out_c: usize) -> (f64, i8) {
        let b = self.bias.as_ref().map_or(0, |b| i64::from(b[out_c]));
        let real = (acc + b) as f64 * self.input_scale * self.filter_scale(out_c);
        let float = to_output(real, self.output_scale, self.output_zero_point, self.params.clamp);
        let i = if self.multiplier.len() == 1 { 0 } else { out_c };
        let exact = exact_output(acc + b, self.multiplier[i], self.shift[i], self.output_zero_point, self.params.clamp);
        (float, exact)
    }

    fn input_at(&self, b: usize, padded_y: usize, padded_x: usize, c: usize) -> i64 {
        let (pt, pl) = self.params.padding;
        let d = self.input_dims;
        if padded_y < pt || padded_x < pl || padded_y - pt >= d.h || padded_x - pl >= d.w {
            return 0; // the zero point: real 0
        }
        let (y, x) = (padded_y - pt, padded_x - pl);
        i64::from(self.input[((b * d.h + y) * d.w + x) * d.c + c]) + i64::from(self.params.input_offset)
    }

    /// Real-valued (regular or grouped) convolution, in output units, and
    /// the exact TFLite result from a naive re-implementation of the
    /// geometry.
    pub fn float_conv(&self) -> Vec<(f64, i8)> {
        let (o, f) = (self.output_dims, self.filter_dims);
        let groups = self.input_dims.c / f.c;
        let per_group = o.c / groups;
        let mut out = Vec::new();
        for b in 0..o.n {
            for y in 0..o.h {
                for x in 0..o.w {
                    for oc in 0..o.c {
                        let g = oc / per_group;
                        let mut acc = 0i64;
                        for fy in 0..f.h {
                            for fx in 0..f.w {
                                for ic in 0..f.c {
                                    let py = y * self.params.stride.0 + fy * self.params.dilation.0;
                                    let px = x * self.params.stride.1 + fx * self.params.dilation.1;
                                    let w = i64::from(self.filter[((oc * f.h + fy) * f.w + fx) * f.c + ic]);
                                    acc += w * self.input_at(b, py, px, g * f.c + ic);
                                }
                            }
                        }
                        out.push(self.outputs_for(acc, oc));
                    }
                }
            }
        }
        out
    }

    /// Real-valued depthwise convolution, in output units, and the exact
    /// TFLite result (naive geometry).
    pub fn float_depthwise(&self) -> Vec<(f64, i8)> {
        let (o, f) = (self.output_dims, self.filter_dims);
        let mut out = Vec::new();
        for b in 0..o.n {
            for y in 0..o.h {
                for x in 0..o.w {
                    for oc in 0..o.c {
                        let ic = oc / self.depth_multiplier;
                        let mut acc = 0i64;
                        for fy in 0..f.h {
                            for fx in 0..f.w {
                                let py = y * self.params.stride.0 + fy * self.params.dilation.0;
                                let px = x * self.params.stride.1 + fx * self.params.dilation.1;
                                let w = i64::from(self.filter[(fy * f.w + fx) * f.c + oc]);
                                acc += w * self.input_at(b, py, px, ic);
                            }
                        }
                        out.push(self.outputs_for(acc, oc));
                    }
                }
            }
        }
        out
    }
}

/// `clamp(MBQM(acc) + zero_point)`: TFLite's output stage, applied to an
/// accumulator computed independently of the kernel under test.
pub(crate) fn exact_output(acc: i64, multiplier: i32, shift: i32, zero_point: i32, clamp: Clamp) -> i8 {
    let acc = i32::try_from(acc).expect("test accumulators fit in i32");
    let v = crate::quant::multiply_by_quantized_multiplier(acc, multiplier, shift) + zero_point;
    v.clamp(i32::from(clamp.min), i32::from(clamp.max)) as i8
}

/// Output extent of a padded, strided, dilated window (at least 1: the
/// bottom/right padding is grown if needed).
pub(crate) fn out_extent(
    input: usize,
    pad_before: usize,
    pad_after: usize,
    k: usize,
    stride: usize,
    dilation: usize,
) -> usize {
    let effective = dilation * (k - 1) + 1;
    let padded = (input + pad_before + pad_after).max(effective);
    (padded - effective) / stride + 1
}

/// Random convolution problems: regular/grouped (`depthwise == false`) or
/// depthwise.
pub(crate) fn conv_float_case(depthwise: bool) -> impl Strategy<Value = ConvFloatCase> {
    let geometry = (
        (1usize..=2, 1usize..=7, 1usize..=7),
        (1usize..=3, 1usize..=4, 1usize..=3),
        (1usize..=3, 1usize..=3, 1usize..=2, 1usize..=2, 1usize..=2, 1usize..=2),
        (0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2),
    );
    let quant = ((0.002f64..0.1, -128i32..=127, -128i32..=127, 0u8..4), (any::<bool>(), any::<bool>(), 10.0f64..200.0));
    (geometry, quant).prop_flat_map(move |(g, q)| {
        let ((n, ih, iw), (a, b, c), (kh, kw, sh, sw, dh, dw), (pt, pl, pb, pr)) = g;
        let ((input_scale, input_zp, output_zp, act), (per_channel, has_bias, spread)) = q;
        // Regular: groups a, filter_in_c b, filters per group c.
        // Depthwise: input_c b, depth multiplier c.
        let (in_c, filter_dims, out_c, depth_multiplier) = if depthwise {
            (b, Dims4::new(1, kh, kw, b * c), b * c, c)
        } else {
            (a * b, Dims4::new(a * c, kh, kw, b), a * c, 1)
        };
        let input_dims = Dims4::new(n, ih, iw, in_c);
        let output_dims = Dims4::new(n, out_extent(ih, pt, pb, kh, sh, dh), out_extent(iw, pl, pr, kw, sw, dw), out_c);
        let channels = if per_channel { out_c } else { 1 };
        let taps = (kh * kw * if depthwise { 1 } else { b }) as f64;
        (
            prop::collection::vec(any::<i8>(), input_dims.elements().unwrap()),
            prop::collection::vec(-127i8..=127, filter_dims.elements().unwrap()),
            prop::collection::vec(-20_000i32..=20_000, out_c),
            prop::collection::vec(0.002f64..0.05, channels),
        )
            .prop_map(move |(input, filter, bias, filter_scales)| {
                let max_fs = filter_scales.iter().cloned().fold(0.0, f64::max);
                let output_scale = input_scale * max_fs * taps.sqrt() * spread;
                let clamp = activation_clamp(act, output_scale, output_zp);
                let (multiplier, shift): (Vec<i32>, Vec<i32>) =
                    filter_scales.iter().map(|fs| multiplier_for(input_scale * fs / output_scale)).unzip();
                ConvFloatCase {
                    params: ConvParams {
                        stride: (sh, sw),
                        dilation: (dh, dw),
                        padding: (pt, pl),
                        input_offset: -input_zp,
                        output_offset: output_zp,
                        clamp,
                    },
                    depth_multiplier,
                    input_dims,
                    input,
                    filter_dims,
                    filter,
                    bias: has_bias.then_some(bias),
                    multiplier,
                    shift,
                    output_dims,
                    input_scale,
                    filter_scales,
                    output_scale,
                    output_zero_point: output_zp,
                }
            })
    })
}

/// A fully connected problem with real scales.
#[derive(Clone, Debug)]
pub(crate) struct FcFloatCase {
    pub params: FullyConnectedParams,
    pub batches: usize,
    pub input: Vec<i8>,
    pub filter_dims: (usize, usize),
    pub filter: Vec<i8>,
    pub bias: Option<Vec<i32>>,
    pub multiplier: Vec<i32>,
    pub shift: Vec<i32>,
    pub input_scale: f64,
    pub filter_scales: Vec<f64>,
    pub output_scale: f64,
    pub output_zero_point: i32,
}

impl FcFloatCase {
    /// `(float reference, exact TFLite result)` per output.
    pub fn float_fc(&self) -> Vec<(f64, i8)> {
        let (out_d, in_d) = self.filter_dims;
        let mut out = Vec::new();
        for b in 0..self.batches {
            for o in 0..out_d {
                let mut acc = 0i64;
                for i in 0..in_d {
                    acc += i64::from(self.filter[o * in_d + i])
                        * (i64::from(self.input[b * in_d + i]) + i64::from(self.params.input_offset));
                }
                acc += self.bias.as_ref().map_or(0, |b| i64::from(b[o]));
                let ch = if self.filter_scales.len() == 1 { 0 } else { o };
                let real = acc as f64 * self.input_scale * self.filter_scales[ch];
                out.push((
                    to_output(real, self.output_scale, self.output_zero_point, self.params.clamp),
                    exact_output(acc, self.multiplier[ch], self.shift[ch], self.output_zero_point, self.params.clamp),
                ));
            }
        }
        out
    }
}

/// Random fully connected problems.
pub(crate) fn fc_float_case() -> impl Strategy<Value = FcFloatCase> {
    (
        (1usize..=3, 1usize..=40, 1usize..=12),
        (0.002f64..0.1, -128i32..=127, -128i32..=127, 0u8..4),
        (any::<bool>(), any::<bool>(), 10.0f64..200.0),
    )
        .prop_flat_map(
            |((batches, in_d, out_d), (input_scale, input_zp, output_zp, act), (per_channel, has_bias, spread))| {
                let channels = if per_channel { out_d } else { 1 };
                (
                    prop::collection::vec(any::<i8>(), batches * in_d),
                    prop::collection::vec(-127i8..=127, out_d * in_d),
                    prop::collection::vec(-20_000i32..=20_000, out_d),
                    prop::collection::vec(0.002f64..0.05, channels),
                )
                    .prop_map(move |(input, filter, bias, filter_scales)| {
                        let max_fs = filter_scales.iter().cloned().fold(0.0, f64::max);
                        let output_scale = input_scale * max_fs * (in_d as f64).sqrt() * spread;
                        let clamp = activation_clamp(act, output_scale, output_zp);
                        let (multiplier, shift): (Vec<i32>, Vec<i32>) =
                            filter_scales.iter().map(|fs| multiplier_for(input_scale * fs / output_scale)).unzip();
                        FcFloatCase {
                            params: FullyConnectedParams { input_offset: -input_zp, output_offset: output_zp, clamp },
                            batches,
                            input,
                            filter_dims: (out_d, in_d),
                            filter,
                            bias: has_bias.then_some(bias),
                            multiplier,
                            shift,
                            input_scale,
                            filter_scales,
                            output_scale,
                            output_zero_point: output_zp,
                        }
                    })
            },
        )
}
