//! Float execution of a lowered [`Net`] and activation-range calibration.
//!
//! The float kernels here are the compiler's fp32 reference: calibration runs
//! every calibration sample through them and records, per value, the range
//! that the quantizer turns into a scale and zero point: min/max (the
//! default) or a percentile of a histogram (robust to outliers).

use anyhow::{Result, bail, ensure};

use crate::net::{Act, NOp, Net, Window};

/// How activation ranges are chosen from calibration data.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RangeMethod {
    /// The smallest and largest value seen.
    MinMax,
    /// The given percentile (e.g. 99.99) of the values on each side.
    Percentile(f64),
}

/// Runs the net in float on one sample per graph input; returns every value.
///
/// # Errors
/// An input of the wrong length.
pub fn run(net: &Net, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
    ensure!(inputs.len() == net.inputs.len(), "{} inputs given, the model has {}", inputs.len(), net.inputs.len());
    let mut vals: Vec<Vec<f32>> = vec![Vec::new(); net.values.len()];
    for (&id, data) in net.inputs.iter().zip(inputs) {
        ensure!(
            data.len() == net.elements(id),
            "input '{}' needs {} values, got {}",
            net.values[id].name,
            net.elements(id),
            data.len()
        );
        vals[id] = data.to_vec();
    }
    for op in &net.ops {
        let y = op.output();
        let out = eval(net, op, &vals);
        vals[y] = out;
    }
    Ok(vals)
}

fn eval(net: &Net, op: &NOp, v: &[Vec<f32>]) -> Vec<f32> {
    let shape = |id: usize| net.values[id].shape.as_slice();
    match op {
        NOp::Conv { x, y, w, b, win, groups, act } => {
            let (xs, ys) = (shape(*x), shape(*y));
            conv(&v[*x], xs, &w.data, &w.shape, b.as_ref().map(|b| b.data.as_slice()), win, *groups, 0, ys, *act)
        }
        NOp::Depthwise { x, y, w, b, win, mult, act } => {
            let (xs, ys) = (shape(*x), shape(*y));
            conv(&v[*x], xs, &w.data, &w.shape, b.as_ref().map(|b| b.data.as_slice()), win, 0, *mult, ys, *act)
        }
        NOp::Fc { x, w, b, act, .. } => {
            let (o, k) = (w.shape[0], w.shape[1]);
            let xv = &v[*x];
            let mut out = Vec::with_capacity(xv.len() / k * o);
            for row in xv.chunks_exact(k) {
                for oc in 0..o {
                    let wr = &w.data[oc * k..(oc + 1) * k];
                    let mut acc: f32 = row.iter().zip(wr).map(|(a, b)| a * b).sum();
                    if let Some(b) = b {
                        acc += b.data[oc];
                    }
                    out.push(act.apply(acc));
                }
            }
            out
        }
        NOp::Add { a, b, act, .. } => v[*a].iter().zip(&v[*b]).map(|(p, q)| act.apply(p + q)).collect(),
        NOp::AvgPool { x, y, win, act } => pool(&v[*x], shape(*x), shape(*y), win, *act, false),
        NOp::MaxPool { x, y, win, act } => pool(&v[*x], shape(*x), shape(*y), win, *act, true),
        NOp::Softmax { x, .. } => {
            let depth = *shape(*x).last().unwrap_or(&1);
            let mut out = v[*x].clone();
            for row in out.chunks_exact_mut(depth.max(1)) {
                let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut s = 0.0;
                for e in row.iter_mut() {
                    *e = (*e - m).exp();
                    s += *e;
                }
                row.iter_mut().for_each(|e| *e /= s);
            }
            out
        }
        NOp::Reshape { x, .. } => v[*x].clone(),
        NOp::Transpose { x, perm, .. } => {
            let t = crate::tensor::Tensor::f32(shape(*x).to_vec(), v[*x].clone());
            t.transposed(perm).map(|t| t.to_f32()).unwrap_or_default()
        }
        NOp::Act { x, act, .. } => v[*x].iter().map(|&e| act.apply(e)).collect(),
    }
}

/// NHWC convolution. `groups > 0`: filter OHWI with `groups` groups;
/// `groups == 0`: depthwise with multiplier `mult`, filter `[1, kh, kw, c*m]`.
#[allow(clippy::too_many_arguments)]
fn conv(
    x: &[f32],
    xs: &[usize],
    w: &[f32],
    ws: &[usize],
    b: Option<&[f32]>,
    win: &Window,
    groups: usize,
    mult: usize,
    ys: &[usize],
    act: Act,
) -> Vec<f32> {
    let (n, ih, iw, ic) = (xs[0], xs[1], xs[2], xs[3]);
    let (oh, ow, oc) = (ys[1], ys[2], ys[3]);
    let (kh, kw) = (win.kernel[0], win.kernel[1]);
    let mut out = vec![0f32; n * oh * ow * oc];
    let depthwise = groups == 0;
    let (cin_g, cout_g) = if depthwise { (1, mult) } else { (ws[3], oc / groups) };
    for b_ in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                let base = ((b_ * oh + oy) * ow + ox) * oc;
                for o in 0..oc {
                    let mut acc = b.map_or(0.0, |b| b[o]);
                    let g = o / cout_g;
                    for fy in 0..kh {
                        let iy = (oy * win.stride[0] + fy * win.dilation[0]) as isize - win.pads[0] as isize;
                        if iy < 0 || iy >= ih as isize {
                            continue;
                        }
                        for fx in 0..kw {
                            let ix = (ox * win.stride[1] + fx * win.dilation[1]) as isize - win.pads[1] as isize;
                            if ix < 0 || ix >= iw as isize {
                                continue;
                            }
                            let xrow = ((b_ * ih + iy as usize) * iw + ix as usize) * ic;
                            if depthwise {
                                acc += x[xrow + o / mult] * w[(fy * kw + fx) * oc + o];
                            } else {
                                let wrow = ((o * kh + fy) * kw + fx) * cin_g;
                                let xs_ = &x[xrow + g * cin_g..xrow + (g + 1) * cin_g];
                                acc += xs_.iter().zip(&w[wrow..wrow + cin_g]).map(|(a, c)| a * c).sum::<f32>();
                            }
                        }
                    }
                    out[base + o] = act.apply(acc);
                }
            }
        }
    }
    out
}

fn pool(x: &[f32], xs: &[usize], ys: &[usize], win: &Window, act: Act, max: bool) -> Vec<f32> {
    let (n, ih, iw, c) = (xs[0], xs[1], xs[2], xs[3]);
    let (oh, ow) = (ys[1], ys[2]);
    let mut out = Vec::with_capacity(n * oh * ow * c);
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let mut acc = if max { f32::NEG_INFINITY } else { 0.0 };
                    let mut count = 0;
                    for fy in 0..win.kernel[0] {
                        let iy = (oy * win.stride[0] + fy) as isize - win.pads[0] as isize;
                        if iy < 0 || iy >= ih as isize {
                            continue;
                        }
                        for fx in 0..win.kernel[1] {
                            let ix = (ox * win.stride[1] + fx) as isize - win.pads[1] as isize;
                            if ix < 0 || ix >= iw as isize {
                                continue;
                            }
                            let e = x[((b * ih + iy as usize) * iw + ix as usize) * c + ch];
                            acc = if max { acc.max(e) } else { acc + e };
                            count += 1;
                        }
                    }
                    let r = if max { acc } else { acc / count.max(1) as f32 };
                    out.push(act.apply(r));
                }
            }
        }
    }
    out
}

/// Per-value ranges gathered over a calibration set.
#[derive(Clone, Debug)]
pub struct Ranges {
    /// `(min, max)` per net value.
    pub range: Vec<(f32, f32)>,
    /// Samples seen.
    pub samples: usize,
}

const BINS: usize = 2048;

/// Calibrates: runs every sample (`samples[i]` holds one slice per graph
/// input) and returns per-value ranges. `progress` is called after each
/// sample (and each pass for percentiles).
///
/// # Errors
/// No samples, or a sample of the wrong size.
pub fn calibrate(
    net: &Net,
    samples: &[Vec<Vec<f32>>],
    method: RangeMethod,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Ranges> {
    if samples.is_empty() {
        bail!("the calibration set is empty");
    }
    let nv = net.values.len();
    let passes = if matches!(method, RangeMethod::Percentile(_)) { 2 } else { 1 };
    let total = samples.len() * passes;
    let mut mm = vec![(f32::INFINITY, f32::NEG_INFINITY); nv];
    for (i, s) in samples.iter().enumerate() {
        let refs: Vec<&[f32]> = s.iter().map(Vec::as_slice).collect();
        let vals = run(net, &refs)?;
        for (r, v) in mm.iter_mut().zip(&vals) {
            for &e in v {
                if e.is_finite() {
                    r.0 = r.0.min(e);
                    r.1 = r.1.max(e);
                }
            }
        }
        progress(i + 1, total);
    }
    for r in mm.iter_mut() {
        if r.0 > r.1 {
            *r = (0.0, 0.0);
        }
    }
    let RangeMethod::Percentile(p) = method else {
        return Ok(Ranges { range: mm, samples: samples.len() });
    };
    ensure!((50.0..=100.0).contains(&p), "percentile {p} must be within 50..=100");
    let mut hist = vec![[0u64; BINS]; nv];
    for (i, s) in samples.iter().enumerate() {
        let refs: Vec<&[f32]> = s.iter().map(Vec::as_slice).collect();
        let vals = run(net, &refs)?;
        for ((h, v), &(lo, hi)) in hist.iter_mut().zip(&vals).zip(&mm) {
            let width = (hi - lo).max(f32::MIN_POSITIVE);
            for &e in v {
                if e.is_finite() {
                    let bin = (((e - lo) / width) * BINS as f32) as usize;
                    h[bin.min(BINS - 1)] += 1;
                }
            }
        }
        progress(samples.len() + i + 1, total);
    }
    let range = hist
        .iter()
        .zip(&mm)
        .map(|(h, &(lo, hi))| {
            let total: u64 = h.iter().sum();
            if total == 0 || hi <= lo {
                return (lo, hi);
            }
            let tail = ((1.0 - p / 100.0) * total as f64).floor() as u64;
            let width = (hi - lo) / BINS as f32;
            let (mut acc, mut lo_bin) = (0u64, 0);
            for (i, &c) in h.iter().enumerate() {
                acc += c;
                if acc > tail {
                    lo_bin = i;
                    break;
                }
            }
            let (mut acc, mut hi_bin) = (0u64, BINS - 1);
            for (i, &c) in h.iter().enumerate().rev() {
                acc += c;
                if acc > tail {
                    hi_bin = i;
                    break;
                }
            }
            (lo + lo_bin as f32 * width, lo + (hi_bin + 1) as f32 * width)
        })
        .collect();
    Ok(Ranges { range, samples: samples.len() })
}
