//! Quantization: assigns every activation a scale and zero point, quantizes
//! weights and biases, and computes the fixed-point parameters of each op,
//! producing a [`QNet`] whose arithmetic is exactly what the runtime runs.
//!
//! - Activations are asymmetric int8. A value the model quantized itself
//!   (QDQ) keeps its parameters; otherwise its calibrated range `[lo, hi]`
//!   (widened to include 0) gives `scale = (hi - lo) / 255` and
//!   `zero_point = round(-128 - lo / scale)`.
//! - Ops that cannot rescale (reshape, transpose, pooling) share one
//!   quantization between input and output; where a QDQ model gives the two
//!   sides different parameters a requantize op is inserted.
//! - Softmax outputs use TFLite's 1/256, -128 unless the model says otherwise.
//! - Weights are symmetric int8 in `[-127, 127]`, per output channel, unless
//!   the model stored them quantized; biases are int32 at
//!   `input_scale * weight_scale[c]`.
//! - Multipliers follow TFLite Micro exactly: conv and depthwise use
//!   `(double)s_in * (double)s_w / (double)s_out`, fully connected
//!   `(double)(s_in * s_w) / (double)s_out` (a float product), both through
//!   `QuantizeMultiplier`.

use std::collections::HashMap;

use anyhow::{Context, Result, bail, ensure};
use edgefleet_kernels::quant::quantize_multiplier;
use edgefleet_kernels::reference::{AddParams, RequantizeParams, SoftmaxParams};
use edgefleet_kernels::{Activation, Clamp};

use crate::calibrate::Ranges;
use crate::net::{Act, Bias, NOp, Net, Weights, Window};
use crate::qdq::Qdq;

/// A quantized activation value.
#[derive(Clone, Debug, PartialEq)]
pub struct QValue {
    /// Name.
    pub name: String,
    /// Physical shape.
    pub shape: Vec<usize>,
    /// Scale.
    pub scale: f32,
    /// Zero point.
    pub zero_point: i32,
}

/// Quantized weights in physical layout.
#[derive(Clone, Debug, PartialEq)]
pub struct QWeights {
    /// Shape.
    pub shape: Vec<usize>,
    /// int8 values.
    pub q: Vec<i8>,
    /// One scale, or one per output channel.
    pub scales: Vec<f32>,
    /// Output-channel axis.
    pub channel_axis: usize,
}

/// Per-channel (or per-tensor) multipliers and shifts.
#[derive(Clone, Debug, PartialEq)]
pub struct Requant {
    /// Multipliers.
    pub multiplier: Vec<i32>,
    /// Shifts.
    pub shift: Vec<i32>,
}

/// A quantized op.
#[derive(Clone, Debug)]
pub enum QOp {
    /// Conv2D.
    Conv {
        /// Input.
        x: usize,
        /// Output.
        y: usize,
        /// Filter.
        w: QWeights,
        /// Bias.
        b: Option<Vec<i32>>,
        /// Requantization.
        rq: Requant,
        /// Geometry.
        win: Window,
        /// Groups.
        groups: usize,
        /// Clamp.
        clamp: Clamp,
    },
    /// DepthwiseConv2D.
    Depthwise {
        /// Input.
        x: usize,
        /// Output.
        y: usize,
        /// Filter.
        w: QWeights,
        /// Bias.
        b: Option<Vec<i32>>,
        /// Requantization.
        rq: Requant,
        /// Geometry.
        win: Window,
        /// Multiplier.
        mult: usize,
        /// Clamp.
        clamp: Clamp,
    },
    /// FullyConnected.
    Fc {
        /// Input.
        x: usize,
        /// Output.
        y: usize,
        /// Filter.
        w: QWeights,
        /// Bias.
        b: Option<Vec<i32>>,
        /// Requantization.
        rq: Requant,
        /// Clamp.
        clamp: Clamp,
    },
    /// Add.
    Add {
        /// Input 1.
        a: usize,
        /// Input 2.
        b: usize,
        /// Output.
        y: usize,
        /// Parameters.
        p: AddParams,
    },
    /// AveragePool2D.
    AvgPool {
        /// Input.
        x: usize,
        /// Output.
        y: usize,
        /// Geometry.
        win: Window,
        /// Clamp.
        clamp: Clamp,
    },
    /// MaxPool2D.
    MaxPool {
        /// Input.
        x: usize,
        /// Output.
        y: usize,
        /// Geometry.
        win: Window,
        /// Clamp.
        clamp: Clamp,
    },
    /// Softmax.
    Softmax {
        /// Input.
        x: usize,
        /// Output.
        y: usize,
        /// Parameters.
        p: SoftmaxParams,
    },
    /// Requantize.
    Requantize {
        /// Input.
        x: usize,
        /// Output.
        y: usize,
        /// Parameters.
        p: RequantizeParams,
    },
    /// Transpose (rank 4).
    Transpose {
        /// Input.
        x: usize,
        /// Output.
        y: usize,
        /// Permutation.
        perm: [usize; 4],
    },
    /// View: same bytes, new shape.
    Reshape {
        /// Input.
        x: usize,
        /// Output.
        y: usize,
    },
}

impl QOp {
    /// Output value.
    pub fn output(&self) -> usize {
        match self {
            QOp::Conv { y, .. }
            | QOp::Depthwise { y, .. }
            | QOp::Fc { y, .. }
            | QOp::Add { y, .. }
            | QOp::AvgPool { y, .. }
            | QOp::MaxPool { y, .. }
            | QOp::Softmax { y, .. }
            | QOp::Requantize { y, .. }
            | QOp::Transpose { y, .. }
            | QOp::Reshape { y, .. } => *y,
        }
    }
    /// Activation inputs.
    pub fn inputs(&self) -> Vec<usize> {
        match self {
            QOp::Add { a, b, .. } => vec![*a, *b],
            QOp::Conv { x, .. }
            | QOp::Depthwise { x, .. }
            | QOp::Fc { x, .. }
            | QOp::AvgPool { x, .. }
            | QOp::MaxPool { x, .. }
            | QOp::Softmax { x, .. }
            | QOp::Requantize { x, .. }
            | QOp::Transpose { x, .. }
            | QOp::Reshape { x, .. } => vec![*x],
        }
    }
}

/// The quantized network.
#[derive(Clone, Debug, Default)]
pub struct QNet {
    /// Values.
    pub values: Vec<QValue>,
    /// Ops in order (views included).
    pub ops: Vec<QOp>,
    /// Graph inputs.
    pub inputs: Vec<usize>,
    /// Graph outputs.
    pub outputs: Vec<usize>,
    /// Things worth telling the user (bias rescaled, weights requantized...).
    pub notes: Vec<String>,
}

/// Scale and zero point for a float range, TFLite-style asymmetric int8.
pub fn quant_from_range(lo: f32, hi: f32) -> (f32, i32) {
    let lo = lo.min(0.0);
    let mut hi = hi.max(0.0);
    if hi - lo < 1e-6 {
        hi = lo + 1e-6;
    }
    let scale = (hi - lo) / 255.0;
    let zp = (-128.0 - lo / scale).round().clamp(-128.0, 127.0) as i32;
    (scale, zp)
}

struct Dsu(Vec<usize>);
impl Dsu {
    fn find(&mut self, mut x: usize) -> usize {
        while self.0[x] != x {
            self.0[x] = self.0[self.0[x]];
            x = self.0[x];
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.0[rb] = ra;
        }
    }
}

fn clamp_for(act: Act, (scale, zp): (f32, i32)) -> Clamp {
    match act {
        Act::None => Clamp::NONE,
        Act::Relu => Clamp::for_activation(Activation::Relu, scale, zp),
        Act::Clip(lo, hi) if lo == 0.0 && hi == 6.0 => Clamp::for_activation(Activation::Relu6, scale, zp),
        Act::Clip(lo, hi) => Clamp::from_range(lo, hi, scale, zp),
    }
}

fn multiplier(real: f64, what: &str) -> Result<(i32, i32)> {
    quantize_multiplier(real).with_context(|| format!("{what}: effective scale {real} cannot be represented"))
}

/// Quantizes a lowered net. `ranges` comes from calibration and may be absent
/// for fully QDQ-quantized models.
///
/// # Errors
/// A value with neither a QDQ annotation nor a calibrated range (all such
/// values are listed), or parameters no fixed-point multiplier can express.
pub fn quantize(net: &Net, qdq: &Qdq, ranges: Option<&Ranges>) -> Result<QNet> {
    let nv = net.values.len();
    let ann: Vec<Option<(f32, i32)>> =
        net.values.iter().map(|v| v.onnx.and_then(|o| qdq.quant.get(&o).copied())).collect();
    let mut dsu = Dsu((0..nv).collect());
    for op in &net.ops {
        if let NOp::Reshape { x, y }
        | NOp::Transpose { x, y, .. }
        | NOp::AvgPool { x, y, .. }
        | NOp::MaxPool { x, y, .. } = op
        {
            let conflict = matches!((ann[*x], ann[*y]), (Some(a), Some(b)) if a != b);
            if !conflict {
                dsu.union(*x, *y);
            }
        }
    }
    let mut group_q: HashMap<usize, (f32, i32)> = HashMap::new();
    for (v, q) in ann.iter().enumerate() {
        if let Some(q) = q {
            group_q.entry(dsu.find(v)).or_insert(*q);
        }
    }
    // Softmax outputs default to TFLite's 1/256, -128.
    for op in &net.ops {
        if let NOp::Softmax { y, .. } = op {
            group_q.entry(dsu.find(*y)).or_insert((1.0 / 256.0, -128));
        }
    }
    if let Some(r) = ranges {
        let mut span: HashMap<usize, (f32, f32)> = HashMap::new();
        for v in 0..nv {
            let g = dsu.find(v);
            if group_q.contains_key(&g) {
                continue;
            }
            let (lo, hi) = r.range[v];
            let e = span.entry(g).or_insert((lo, hi));
            e.0 = e.0.min(lo);
            e.1 = e.1.max(hi);
        }
        for (g, (lo, hi)) in span {
            group_q.insert(g, quant_from_range(lo, hi));
        }
    }
    let missing: Vec<&str> =
        (0..nv).filter(|&v| !group_q.contains_key(&dsu.find(v))).map(|v| net.values[v].name.as_str()).collect();
    if !missing.is_empty() {
        bail!(
            "{} value(s) have no quantization parameters (the model is not fully QDQ-quantized): {}{}; pass calibration data (--calibration) to quantize them",
            missing.len(),
            missing.iter().take(8).map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", "),
            if missing.len() > 8 { ", ..." } else { "" }
        );
    }

    let mut q = QNet {
        values: net
            .values
            .iter()
            .enumerate()
            .map(|(v, nvl)| {
                let (scale, zero_point) = ann[v].unwrap_or(group_q[&dsu.find(v)]);
                QValue { name: nvl.name.clone(), shape: nvl.shape.clone(), scale, zero_point }
            })
            .collect(),
        inputs: net.inputs.clone(),
        outputs: net.outputs.clone(),
        ..QNet::default()
    };
    let qp = |q: &QNet, v: usize| (q.values[v].scale, q.values[v].zero_point);

    for op in &net.ops {
        match op {
            NOp::Conv { x, y, w, b, win, groups, act } => {
                let (s_in, s_out) = (qp(&q, *x).0, qp(&q, *y).0);
                let (qw, bias, rq) =
                    quantize_linear(w, b.as_ref(), s_in, s_out, false, &mut q.notes, &net.values[*y].name)?;
                q.ops.push(QOp::Conv {
                    x: *x,
                    y: *y,
                    w: qw,
                    b: bias,
                    rq,
                    win: *win,
                    groups: *groups,
                    clamp: clamp_for(*act, qp(&q, *y)),
                });
            }
            NOp::Depthwise { x, y, w, b, win, mult, act } => {
                let (s_in, s_out) = (qp(&q, *x).0, qp(&q, *y).0);
                let (qw, bias, rq) =
                    quantize_linear(w, b.as_ref(), s_in, s_out, false, &mut q.notes, &net.values[*y].name)?;
                q.ops.push(QOp::Depthwise {
                    x: *x,
                    y: *y,
                    w: qw,
                    b: bias,
                    rq,
                    win: *win,
                    mult: *mult,
                    clamp: clamp_for(*act, qp(&q, *y)),
                });
            }
            NOp::Fc { x, y, w, b, act } => {
                let (s_in, s_out) = (qp(&q, *x).0, qp(&q, *y).0);
                let (qw, bias, rq) =
                    quantize_linear(w, b.as_ref(), s_in, s_out, true, &mut q.notes, &net.values[*y].name)?;
                q.ops.push(QOp::Fc { x: *x, y: *y, w: qw, b: bias, rq, clamp: clamp_for(*act, qp(&q, *y)) });
            }
            NOp::Add { a, b, y, act } => {
                let clamp = clamp_for(*act, qp(&q, *y));
                let p = AddParams::from_quant(qp(&q, *a), qp(&q, *b), qp(&q, *y), clamp)
                    .with_context(|| format!("add '{}': scales cannot be expressed", net.values[*y].name))?;
                q.ops.push(QOp::Add { a: *a, b: *b, y: *y, p });
            }
            NOp::AvgPool { x, y, win, act } | NOp::MaxPool { x, y, win, act } => {
                let is_max = matches!(op, NOp::MaxPool { .. });
                let target = if qp(&q, *x) == qp(&q, *y) {
                    *y
                } else {
                    let t = q.values.len();
                    q.values.push(QValue {
                        name: format!("{}_pooled", net.values[*y].name),
                        scale: q.values[*x].scale,
                        zero_point: q.values[*x].zero_point,
                        shape: net.values[*y].shape.clone(),
                    });
                    t
                };
                let clamp = clamp_for(*act, qp(&q, *x));
                q.ops.push(if is_max {
                    QOp::MaxPool { x: *x, y: target, win: *win, clamp }
                } else {
                    QOp::AvgPool { x: *x, y: target, win: *win, clamp }
                });
                if target != *y {
                    push_requant(&mut q, target, *y, Act::None)?;
                }
            }
            NOp::Softmax { x, y } => {
                let (s_out, zp_out) = qp(&q, *y);
                let p = SoftmaxParams::from_quant(1.0, qp(&q, *x).0, s_out, zp_out).with_context(|| {
                    format!("softmax '{}': output quantization cannot be expressed", net.values[*y].name)
                })?;
                q.ops.push(QOp::Softmax { x: *x, y: *y, p });
            }
            NOp::Reshape { x, y } => {
                if qp(&q, *x) == qp(&q, *y) {
                    q.ops.push(QOp::Reshape { x: *x, y: *y });
                } else {
                    push_requant(&mut q, *x, *y, Act::None)?;
                }
            }
            NOp::Transpose { x, y, perm } => {
                let r = perm.len();
                ensure!(r <= 4, "transpose of rank {r}");
                let off = 4 - r;
                let mut p4 = [0, 1, 2, 3];
                for (i, &p) in perm.iter().enumerate() {
                    p4[off + i] = p + off;
                }
                if qp(&q, *x) == qp(&q, *y) {
                    q.ops.push(QOp::Transpose { x: *x, y: *y, perm: p4 });
                } else {
                    let t = q.values.len();
                    q.values.push(QValue {
                        name: format!("{}_transposed", net.values[*y].name),
                        scale: q.values[*x].scale,
                        zero_point: q.values[*x].zero_point,
                        shape: net.values[*y].shape.clone(),
                    });
                    q.ops.push(QOp::Transpose { x: *x, y: t, perm: p4 });
                    push_requant(&mut q, t, *y, Act::None)?;
                }
            }
            NOp::Act { x, y, act } => push_requant(&mut q, *x, *y, *act)?,
        }
    }
    Ok(q)
}

fn push_requant(q: &mut QNet, x: usize, y: usize, act: Act) -> Result<()> {
    let (sx, zx) = (q.values[x].scale, q.values[x].zero_point);
    let (sy, zy) = (q.values[y].scale, q.values[y].zero_point);
    let clamp = clamp_for(act, (sy, zy));
    let p = RequantizeParams::from_quant((sx, zx), (sy, zy), clamp)
        .with_context(|| format!("requantizing '{}'", q.values[y].name))?;
    q.ops.push(QOp::Requantize { x, y, p });
    Ok(())
}

/// Quantizes the weights, bias and multipliers of a conv, depthwise or fully
/// connected op.
fn quantize_linear(
    w: &Weights,
    b: Option<&Bias>,
    s_in: f32,
    s_out: f32,
    float_product: bool,
    notes: &mut Vec<String>,
    name: &str,
) -> Result<(QWeights, Option<Vec<i32>>, Requant)> {
    let channels = w.shape[w.channel_axis];
    let inner: usize = w.shape[w.channel_axis + 1..].iter().product();
    let channel_of = |i: usize| (i / inner.max(1)) % channels;
    let (q, scales) = match &w.exact {
        Some(e) => {
            ensure!(e.ints.iter().all(|&v| (-128..=127).contains(&v)), "'{name}': stored weights exceed int8");
            ensure!(
                e.scales.len() == 1 || e.scales.len() == channels,
                "'{name}': {} weight scales for {channels} channels",
                e.scales.len()
            );
            (e.ints.iter().map(|&v| v as i8).collect::<Vec<i8>>(), e.scales.clone())
        }
        None => {
            let mut maxabs = vec![0f32; channels];
            for (i, &v) in w.data.iter().enumerate() {
                let c = channel_of(i);
                maxabs[c] = maxabs[c].max(v.abs());
            }
            let scales: Vec<f32> = maxabs.iter().map(|&m| if m > 0.0 { m / 127.0 } else { 1.0 }).collect();
            let q = w
                .data
                .iter()
                .enumerate()
                .map(|(i, &v)| (v / scales[channel_of(i)]).round().clamp(-127.0, 127.0) as i8)
                .collect();
            (q, scales)
        }
    };
    let scale_of = |c: usize| if scales.len() == 1 { scales[0] } else { scales[c] };
    let bias = match b {
        None => None,
        Some(b) => {
            let want: Vec<f64> = (0..channels).map(|c| s_in as f64 * scale_of(c) as f64).collect();
            let exact_ok = b.exact.as_ref().is_some_and(|e| {
                (e.scales.len() == 1 || e.scales.len() == channels)
                    && (0..channels).all(|c| {
                        let s = if e.scales.len() == 1 { e.scales[0] } else { e.scales[c] } as f64;
                        ((s - want[c]) / want[c]).abs() < 1e-4
                    })
            });
            if exact_ok {
                b.exact.as_ref().map(|e| e.ints.clone())
            } else {
                if b.exact.is_some() {
                    notes.push(format!(
                        "'{name}': stored bias scale differs from input × weight scale; bias re-quantized from floats"
                    ));
                }
                Some(
                    b.data
                        .iter()
                        .zip(&want)
                        .map(|(&v, &s)| (v as f64 / s).round().clamp(i32::MIN as f64, i32::MAX as f64) as i32)
                        .collect(),
                )
            }
        }
    };
    let n = scales.len();
    let mut rq = Requant { multiplier: Vec::with_capacity(n), shift: Vec::with_capacity(n) };
    for &s_w in &scales {
        let real =
            if float_product { (s_in * s_w) as f64 / s_out as f64 } else { s_in as f64 * s_w as f64 / s_out as f64 };
        let (m, s) = multiplier(real, name)?;
        rq.multiplier.push(m);
        rq.shift.push(s);
    }
    Ok((QWeights { shape: w.shape.clone(), q, scales, channel_axis: w.channel_axis }, bias, rq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_to_quant_covers_zero_and_relu() {
        let (s, zp) = quant_from_range(0.0, 2.55);
        assert!((s - 0.01).abs() < 1e-7);
        assert_eq!(zp, -128);
        let (s, zp) = quant_from_range(-0.5, 2.0);
        assert!((s - 2.5 / 255.0).abs() < 1e-7);
        assert_eq!(zp, -77);
        // The int8 range covers the float range to within half a step.
        for (lo, hi) in [(-1.0f32, 1.0f32), (-3.7, 0.2), (0.0, 6.0), (-10.0, 0.0)] {
            let (s, zp) = quant_from_range(lo, hi);
            assert!(s * (-128 - zp) as f32 <= lo + s / 2.0 && s * (127 - zp) as f32 >= hi - s / 2.0, "{lo}..{hi}");
        }
        // positive-only range still contains 0
        let (_, zp) = quant_from_range(1.0, 2.0);
        assert_eq!(zp, -128);
    }
}
