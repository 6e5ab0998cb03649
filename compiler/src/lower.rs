//! Lowering: ONNX nodes (NCHW, float semantics) to edgefleet ops on NHWC
//! tensors ([`Net`]), with batch-norm folding, bias and activation fusion.
//!
//! Layout is tracked per value, not fixed per op: each ONNX value maps to a
//! net value plus a permutation `perm` such that the physical (stored) shape
//! is the logical ONNX shape permuted by it. `Transpose` nodes then cost
//! nothing (they only change `perm`); convolutions ask for NHWC, reshapes for
//! the logical order, and a physical transpose is emitted only when the
//! permutation actually moves data (permutations that only move size-1
//! dimensions become free reshapes). This is how tf2onnx's NHWC↔NCHW
//! transposes around MLPerf Tiny's convolutions disappear.

use std::collections::HashMap;

use anyhow::{Context, Result, bail, ensure};

use crate::fold::{transpose_perm, window_params};
use crate::net::{Act, Bias, ExactInts, NOp, Net, Weights, Window};
use crate::onnx::{Graph, Node};
use crate::qdq::{Exact, Qdq};
use crate::tensor::Tensor;

const NHWC: [usize; 4] = [0, 2, 3, 1];

struct Lower<'g> {
    g: &'g Graph,
    qdq: &'g Qdq,
    net: Net,
    map: HashMap<usize, (usize, Vec<usize>)>,
}

/// Lowers an imported, folded, QDQ-absorbed graph.
///
/// # Errors
/// Shapes or constants the op set cannot express (named per node).
pub fn lower(g: &Graph, qdq: &Qdq) -> Result<Net> {
    let mut l = Lower { g, qdq, net: Net::default(), map: HashMap::new() };
    for &v in &g.inputs {
        let shape = g.shape(v)?.to_vec();
        let id = l.net.value(g.values[v].name.clone(), shape.clone(), Some(v));
        l.net.inputs.push(id);
        l.map.insert(v, (id, (0..shape.len()).collect()));
    }
    for n in &g.nodes {
        l.node(n).with_context(|| format!("lowering node '{}' ({})", n.name, n.op))?;
    }
    for (k, &v) in g.outputs.iter().enumerate() {
        let rank = g.shape(v)?.len();
        let id = l
            .ensure(v, &(0..rank).collect::<Vec<_>>())
            .with_context(|| format!("graph output '{}'", g.values[v].name))?;
        if !l.net.inputs.contains(&id)
            && let Some(name) = g.output_names.get(k)
        {
            l.net.values[id].name = name.clone();
        }
        l.net.outputs.push(id);
    }
    Ok(l.net)
}

fn invert(p: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; p.len()];
    for (i, &v) in p.iter().enumerate() {
        inv[v] = i;
    }
    inv
}

fn permute(shape: &[usize], perm: &[usize]) -> Vec<usize> {
    perm.iter().map(|&p| shape[p]).collect()
}

/// Whether two layouts of a logical shape store elements in the same order.
fn same_order(logical: &[usize], a: &[usize], b: &[usize]) -> bool {
    let strip = |p: &[usize]| p.iter().copied().filter(|&ax| logical[ax] != 1).collect::<Vec<_>>();
    strip(a) == strip(b)
}

fn padded_shape(s: &[usize], rank: usize) -> Vec<usize> {
    let mut p = vec![1; rank.saturating_sub(s.len())];
    p.extend_from_slice(s);
    p
}

impl Lower<'_> {
    fn logical(&self, v: usize) -> Result<Vec<usize>> {
        Ok(self.g.shape(v)?.to_vec())
    }

    fn get(&self, v: usize) -> Result<(usize, Vec<usize>)> {
        if self.g.values[v].konst.is_some() {
            bail!(
                "'{}' is a constant where an activation is expected (constant activations are not supported)",
                self.g.values[v].name
            );
        }
        self.map.get(&v).cloned().with_context(|| format!("'{}' was not lowered", self.g.values[v].name))
    }

    /// The net value holding `v` with physical layout `want`.
    fn ensure(&mut self, v: usize, want: &[usize]) -> Result<usize> {
        let (id, perm) = self.get(v)?;
        if perm == want {
            return Ok(id);
        }
        let logical = self.logical(v)?;
        ensure!(perm.len() == want.len(), "rank mismatch");
        let target = permute(&logical, want);
        let name = format!("{}_{}", self.g.values[v].name, want.iter().map(|d| d.to_string()).collect::<String>());
        let y = self.net.value(name, target, Some(v));
        if same_order(&logical, &perm, want) {
            self.net.ops.push(NOp::Reshape { x: id, y });
        } else {
            ensure!(want.len() <= 4, "transposing a rank-{} tensor is not supported", want.len());
            let inv = invert(&perm);
            let phys: Vec<usize> = want.iter().map(|&ax| inv[ax]).collect();
            self.net.ops.push(NOp::Transpose { x: id, y, perm: phys });
        }
        self.map.insert(v, (y, want.to_vec()));
        Ok(y)
    }

    fn set(&mut self, v: usize, id: usize, perm: Vec<usize>) {
        self.map.insert(v, (id, perm));
    }

    fn konst(&self, v: usize) -> Result<&Tensor> {
        self.g.values[v].konst.as_ref().with_context(|| {
            format!("'{}' must be a constant (weights computed at run time are not supported)", self.g.values[v].name)
        })
    }

    fn exact(&self, v: usize) -> Option<&Exact> {
        self.qdq.exact.get(&v)
    }

    /// The op producing net value `id`, if it can absorb an activation or a
    /// bias: it is the only reader of ONNX value `v`.
    fn fusable(&self, v: usize, id: usize) -> Option<usize> {
        if self.g.consumers(v).len() != 1 || self.g.outputs.contains(&v) {
            return None;
        }
        let p = self.net.producer(id)?;
        matches!(
            self.net.ops[p],
            NOp::Conv { .. }
                | NOp::Depthwise { .. }
                | NOp::Fc { .. }
                | NOp::Add { .. }
                | NOp::AvgPool { .. }
                | NOp::MaxPool { .. }
        )
        .then_some(p)
    }

    /// Re-points a net value at a downstream ONNX value after a fusion.
    fn rename(&mut self, id: usize, v: usize) {
        let keep_old = !self.qdq.quant.contains_key(&v)
            && self.net.values[id].onnx.is_some_and(|o| self.qdq.quant.contains_key(&o));
        self.net.values[id].name = self.g.values[v].name.clone();
        if !keep_old {
            self.net.values[id].onnx = Some(v);
        }
    }

    fn node(&mut self, n: &Node) -> Result<()> {
        let out = n.outputs[0];
        match n.op.as_str() {
            "Identity" | "Dropout" => {
                let x = n.input(0)?;
                if self.qdq.requantized.iter().any(|&(_, o)| o == out) {
                    let (id, perm) = self.get(x)?;
                    let y =
                        self.net.value(self.g.values[out].name.clone(), self.net.values[id].shape.clone(), Some(out));
                    self.net.ops.push(NOp::Act { x: id, y, act: Act::None });
                    self.set(out, y, perm);
                } else {
                    let e = self.get(x)?;
                    self.map.insert(out, e);
                }
            }
            "Transpose" => {
                let x = n.input(0)?;
                let (id, perm_in) = self.get(x)?;
                let p = transpose_perm(n, perm_in.len())?;
                let pinv = invert(&p);
                let q: Vec<usize> = perm_in.iter().map(|&k| pinv[k]).collect();
                self.set(out, id, q);
            }
            "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => {
                let x = n.input(0)?;
                let rank = self.logical(x)?.len();
                let id = self.ensure(x, &(0..rank).collect::<Vec<_>>())?;
                let shape = self.logical(out)?;
                if shape == self.net.values[id].shape {
                    self.set(out, id, (0..shape.len()).collect());
                } else {
                    let y = self.net.value(self.g.values[out].name.clone(), shape.clone(), Some(out));
                    self.net.ops.push(NOp::Reshape { x: id, y });
                    self.set(out, y, (0..shape.len()).collect());
                }
            }
            "Conv" => self.conv(n)?,
            "MatMul" | "Gemm" => self.fc(n)?,
            "Add" => self.add(n)?,
            "Relu" | "Clip" => {
                let act = if n.op == "Relu" { Act::Relu } else { self.clip(n)? };
                let x = n.input(0)?;
                let (id, perm) = self.get(x)?;
                if let Some(p) = self.fusable(x, id) {
                    match &mut self.net.ops[p] {
                        NOp::Conv { act: a, .. }
                        | NOp::Depthwise { act: a, .. }
                        | NOp::Fc { act: a, .. }
                        | NOp::Add { act: a, .. }
                        | NOp::AvgPool { act: a, .. }
                        | NOp::MaxPool { act: a, .. } => *a = a.then(act),
                        _ => unreachable!("fusable() only returns ops with an activation"),
                    }
                    self.rename(id, out);
                    self.set(out, id, perm);
                } else {
                    let y =
                        self.net.value(self.g.values[out].name.clone(), self.net.values[id].shape.clone(), Some(out));
                    self.net.ops.push(NOp::Act { x: id, y, act });
                    self.set(out, y, perm);
                }
            }
            "AveragePool" | "MaxPool" | "GlobalAveragePool" => self.pool(n)?,
            "Softmax" => {
                let x = n.input(0)?;
                let shape = self.logical(x)?;
                let rank = shape.len();
                let default_axis = if self.g.opset >= 13 { -1 } else { 1 };
                let mut axis = n.int("axis", default_axis);
                if axis < 0 {
                    axis += rank as i64;
                }
                let trailing_ones = shape.iter().skip(axis as usize + 1).all(|&d| d == 1);
                ensure!(
                    axis as usize == rank - 1 || (self.g.opset < 13 && trailing_ones),
                    "softmax over axis {axis} of {shape:?}: only the last axis is supported"
                );
                let id = self.ensure(x, &(0..rank).collect::<Vec<_>>())?;
                let y = self.net.value(self.g.values[out].name.clone(), shape.clone(), Some(out));
                let x_id = if axis as usize == rank - 1 {
                    id
                } else {
                    // opset < 13 coerces to 2-D: softmax over [axis..]; trailing 1s make that the axis itself.
                    let mut s2 = shape[..=axis as usize].to_vec();
                    s2.truncate(axis as usize + 1);
                    let v = self.net.value(format!("{}_2d", self.g.values[x].name), s2, Some(x));
                    self.net.ops.push(NOp::Reshape { x: id, y: v });
                    v
                };
                if x_id != id {
                    let y2 = self.net.value(
                        format!("{}_2d", self.g.values[out].name),
                        self.net.values[x_id].shape.clone(),
                        Some(out),
                    );
                    self.net.ops.push(NOp::Softmax { x: x_id, y: y2 });
                    self.net.ops.push(NOp::Reshape { x: y2, y });
                } else {
                    self.net.ops.push(NOp::Softmax { x: x_id, y });
                }
                self.set(out, y, (0..rank).collect());
            }
            "BatchNormalization" => self.batchnorm(n)?,
            other => bail!("{other} cannot be lowered (all its inputs must be constants)"),
        }
        Ok(())
    }

    fn clip(&self, n: &Node) -> Result<Act> {
        let bound = |i: usize, attr: &str, default: f32| -> Result<f32> {
            if let Some(v) = n.opt_input(i) {
                let t = self.konst(v)?;
                ensure!(t.len() == 1, "Clip bounds must be scalars");
                Ok(t.to_f32()[0])
            } else {
                Ok(n.float(attr, default))
            }
        };
        let lo = bound(1, "min", f32::NEG_INFINITY)?;
        let hi = bound(2, "max", f32::INFINITY)?;
        ensure!(lo <= hi, "Clip min {lo} above max {hi}");
        Ok(Act::None.then(if lo == 0.0 && hi == f32::INFINITY { Act::Relu } else { Act::Clip(lo, hi) }))
    }

    /// Weights from a constant in ONNX layout, transposed to the physical one.
    fn weights(&self, v: usize, perm: &[usize], channel_axis_onnx: usize, channel_axis_phys: usize) -> Result<Weights> {
        let t = self.konst(v)?;
        ensure!(t.shape.len() == perm.len(), "weights of rank {} expected, got {:?}", perm.len(), t.shape);
        let data = t.transposed(perm)?.to_f32();
        let exact = self.exact(v).and_then(|e| {
            if e.scales.len() > 1 && e.axis != channel_axis_onnx {
                return None; // per-axis along a non-output axis: requantize from floats
            }
            let ints = Tensor {
                shape: e.shape.clone(),
                data: crate::tensor::Data::I64(e.ints.iter().map(|&x| x as i64).collect()),
            };
            let ints = ints.transposed(perm).ok()?.to_i64().ok()?;
            Some(ExactInts { ints: ints.into_iter().map(|x| x as i32).collect(), scales: e.scales.clone() })
        });
        Ok(Weights { shape: permute(&t.shape, perm), data, exact, channel_axis: channel_axis_phys })
    }

    fn bias(&self, v: Option<usize>, channels: usize) -> Result<Option<Bias>> {
        let Some(v) = v else { return Ok(None) };
        let t = self.konst(v)?;
        ensure!(t.len() == channels, "bias has {} values for {channels} output channels", t.len());
        let exact = self.exact(v).map(|e| ExactInts { ints: e.ints.clone(), scales: e.scales.clone() });
        Ok(Some(Bias { data: t.to_f32(), exact }))
    }

    fn conv(&mut self, n: &Node) -> Result<()> {
        let (x, wv, out) = (n.input(0)?, n.input(1)?, n.outputs[0]);
        let xs = self.logical(x)?;
        let ws = self.konst(wv)?.shape.clone();
        ensure!(ws.len() == 4, "only 2-D convolution is supported (weights {ws:?})");
        let (stride, dilation, pads) = window_params(n, [ws[2], ws[3]], [xs[2], xs[3]])?;
        let win = Window { kernel: [ws[2], ws[3]], stride, dilation, pads };
        let groups = n.int("group", 1) as usize;
        let (o, cin) = (ws[0], xs[1]);
        let b = self.bias(n.opt_input(2), o)?;
        let id = self.ensure(x, &NHWC)?;
        let ys = permute(&self.logical(out)?, &NHWC);
        let y = self.net.value(self.g.values[out].name.clone(), ys, Some(out));
        let op = if groups == cin && ws[1] == 1 && groups > 1 {
            ensure!(o % cin == 0, "depthwise output channels {o} not a multiple of {cin}");
            let w = self.weights(wv, &[1, 2, 3, 0], 0, 3)?;
            NOp::Depthwise { x: id, y, w, b, win, mult: o / cin, act: Act::None }
        } else {
            let w = self.weights(wv, &NHWC, 0, 0)?;
            NOp::Conv { x: id, y, w, b, win, groups, act: Act::None }
        };
        self.net.ops.push(op);
        self.set(out, y, NHWC.to_vec());
        Ok(())
    }

    fn fc(&mut self, n: &Node) -> Result<()> {
        let (x, wv, out) = (n.input(0)?, n.input(1)?, n.outputs[0]);
        let xs = self.logical(x)?;
        let t = self.konst(wv)?;
        ensure!(t.shape.len() == 2, "MatMul/Gemm right-hand side must be a 2-D constant");
        let trans_b = n.op == "Gemm" && n.int("transB", 0) != 0;
        // Physical filter is [out, in]: ONNX B is [in, out] unless transB.
        let mut w = if trans_b { self.weights(wv, &[0, 1], 0, 0)? } else { self.weights(wv, &[1, 0], 1, 0)? };
        let (o, k) = (w.shape[0], w.shape[1]);
        ensure!(xs.last() == Some(&k), "input {xs:?} does not end in {k}");
        let mut b = None;
        if n.op == "Gemm" {
            let alpha = n.float("alpha", 1.0);
            let beta = n.float("beta", 1.0);
            if alpha != 1.0 {
                w.data.iter_mut().for_each(|v| *v *= alpha);
                w.exact = None;
            }
            if let Some(c) = n.opt_input(2) {
                let t = self.konst(c)?;
                ensure!(t.len() == o || t.len() == 1, "Gemm C of shape {:?} is not a per-output bias", t.shape);
                let mut bias = if t.len() == o {
                    self.bias(Some(c), o)?.context("bias")?
                } else {
                    Bias { data: vec![t.to_f32()[0]; o], exact: None }
                };
                if beta != 1.0 {
                    bias.data.iter_mut().for_each(|v| *v *= beta);
                    bias.exact = None;
                }
                b = Some(bias);
            }
        }
        let id = self.ensure(x, &(0..xs.len()).collect::<Vec<_>>())?;
        let ys = self.logical(out)?;
        let y = self.net.value(self.g.values[out].name.clone(), ys.clone(), Some(out));
        self.net.ops.push(NOp::Fc { x: id, y, w, b, act: Act::None });
        self.set(out, y, (0..ys.len()).collect());
        Ok(())
    }

    fn add(&mut self, n: &Node) -> Result<()> {
        let (a, bv, out) = (n.input(0)?, n.input(1)?, n.outputs[0]);
        let (ac, bc) = (self.g.values[a].konst.is_some(), self.g.values[bv].konst.is_some());
        if ac || bc {
            let (x, c) = if bc { (a, bv) } else { (bv, a) };
            return self.add_const(x, c, out);
        }
        let (sa, sb) = (self.logical(a)?, self.logical(bv)?);
        ensure!(sa == sb, "adding {sa:?} and {sb:?}: broadcasting between activations is not supported");
        let (ida, perm) = self.get(a)?;
        let idb = self.ensure(bv, &perm)?;
        let y = self.net.value(self.g.values[out].name.clone(), self.net.values[ida].shape.clone(), Some(out));
        self.net.ops.push(NOp::Add { a: ida, b: idb, y, act: Act::None });
        self.set(out, y, perm);
        Ok(())
    }

    /// `x + c` with a constant: folded into the producer's bias when it is a
    /// conv or fully-connected op, else a 1x1 depthwise conv with unit weights.
    fn add_const(&mut self, x: usize, c: usize, out: usize) -> Result<()> {
        let xs = self.logical(x)?;
        let t = self.konst(c)?.clone();
        let rank = xs.len();
        let channel_axis = if rank == 4 { 1 } else { rank - 1 };
        let channels = xs[channel_axis];
        let cs = padded_shape(&t.shape, rank);
        ensure!(cs.len() == rank, "constant {:?} has more dimensions than {xs:?}", t.shape);
        let per_channel = cs.iter().enumerate().all(|(i, &d)| d == 1 || (i == channel_axis && d == channels));
        ensure!(
            per_channel,
            "adding a constant of shape {:?} to {xs:?}: only per-channel constants are supported",
            t.shape
        );
        let vals = t.to_f32();
        let data: Vec<f32> = if vals.len() == 1 { vec![vals[0]; channels] } else { vals };
        let exact = if data.len() == t.len() {
            self.exact(c).map(|e| ExactInts { ints: e.ints.clone(), scales: e.scales.clone() })
        } else {
            None
        };
        let (id, perm) = self.get(x)?;
        if let Some(p) = self.fusable(x, id)
            && match &self.net.ops[p] {
                NOp::Conv { .. } | NOp::Depthwise { .. } => rank == 4,
                NOp::Fc { .. } => true,
                _ => false,
            }
            && let NOp::Conv { b, act: Act::None, .. }
            | NOp::Depthwise { b, act: Act::None, .. }
            | NOp::Fc { b, act: Act::None, .. } = &mut self.net.ops[p]
        {
            *b = Some(match b.take() {
                None => Bias { data, exact },
                Some(old) => Bias { data: old.data.iter().zip(&data).map(|(a, b)| a + b).collect(), exact: None },
            });
            self.rename(id, out);
            self.set(out, id, perm);
            return Ok(());
        }
        ensure!(
            rank == 4,
            "adding a per-channel constant to a rank-{rank} activation that no op can absorb is not supported"
        );
        let idx = self.ensure(x, &NHWC)?;
        let y = self.net.value(self.g.values[out].name.clone(), self.net.values[idx].shape.clone(), Some(out));
        let w = Weights { shape: vec![1, 1, 1, channels], data: vec![1.0; channels], exact: None, channel_axis: 3 };
        let win = Window { kernel: [1, 1], stride: [1, 1], dilation: [1, 1], pads: [0; 4] };
        self.net.ops.push(NOp::Depthwise { x: idx, y, w, b: Some(Bias { data, exact }), win, mult: 1, act: Act::None });
        self.set(out, y, NHWC.to_vec());
        Ok(())
    }

    fn pool(&mut self, n: &Node) -> Result<()> {
        let (x, out) = (n.input(0)?, n.outputs[0]);
        let xs = self.logical(x)?;
        ensure!(xs.len() == 4, "pooling needs an NCHW input, got {xs:?}");
        let win = if n.op == "GlobalAveragePool" {
            Window { kernel: [xs[2], xs[3]], stride: [1, 1], dilation: [1, 1], pads: [0; 4] }
        } else {
            let k = n.ints("kernel_shape").context("kernel_shape missing")?;
            let kernel = [k[0] as usize, k[1] as usize];
            let (stride, dilation, pads) = window_params(n, kernel, [xs[2], xs[3]])?;
            if n.op == "AveragePool" && n.int("count_include_pad", 0) != 0 && pads.iter().any(|&p| p > 0) {
                bail!(
                    "AveragePool with count_include_pad=1 and padding is not supported (int8 pooling averages only in-image values)"
                );
            }
            Window { kernel, stride, dilation, pads }
        };
        let id = self.ensure(x, &NHWC)?;
        let ys = permute(&self.logical(out)?, &NHWC);
        let y = self.net.value(self.g.values[out].name.clone(), ys, Some(out));
        self.net.ops.push(if n.op == "MaxPool" {
            NOp::MaxPool { x: id, y, win, act: Act::None }
        } else {
            NOp::AvgPool { x: id, y, win, act: Act::None }
        });
        self.set(out, y, NHWC.to_vec());
        Ok(())
    }

    fn batchnorm(&mut self, n: &Node) -> Result<()> {
        let (x, out) = (n.input(0)?, n.outputs[0]);
        let get = |i: usize| -> Result<Vec<f32>> { Ok(self.konst(n.input(i)?)?.to_f32()) };
        let (gamma, beta, mean, var) = (get(1)?, get(2)?, get(3)?, get(4)?);
        let eps = n.float("epsilon", 1e-5);
        let c = gamma.len();
        ensure!([beta.len(), mean.len(), var.len()].iter().all(|&l| l == c), "batch-norm parameters differ in length");
        let scale: Vec<f32> = gamma.iter().zip(&var).map(|(g, v)| g / (v + eps).sqrt()).collect();
        let shift: Vec<f32> = beta.iter().zip(&mean).zip(&scale).map(|((b, m), s)| b - m * s).collect();
        let (id, perm) = self.get(x)?;
        if let Some(p) = self.fusable(x, id)
            && let NOp::Conv { w, b, act: Act::None, .. } | NOp::Depthwise { w, b, act: Act::None, .. } =
                &mut self.net.ops[p]
            && w.exact.is_none()
            && w.shape[w.channel_axis] == c
        {
            let axis = w.channel_axis;
            let inner: usize = w.shape[axis + 1..].iter().product();
            for (i, v) in w.data.iter_mut().enumerate() {
                *v *= scale[(i / inner) % c];
            }
            let old = b.take().map(|b| b.data).unwrap_or_else(|| vec![0.0; c]);
            *b = Some(Bias {
                data: old.iter().zip(&scale).zip(&shift).map(|((o, s), t)| o * s + t).collect(),
                exact: None,
            });
            self.rename(id, out);
            self.set(out, id, perm);
            return Ok(());
        }
        let xs = self.logical(x)?;
        ensure!(xs.len() == 4 && xs[1] == c, "standalone batch-norm needs an NCHW input with {c} channels, got {xs:?}");
        let idx = self.ensure(x, &NHWC)?;
        let y = self.net.value(self.g.values[out].name.clone(), self.net.values[idx].shape.clone(), Some(out));
        let w = Weights { shape: vec![1, 1, 1, c], data: scale, exact: None, channel_axis: 3 };
        let win = Window { kernel: [1, 1], stride: [1, 1], dilation: [1, 1], pads: [0; 4] };
        self.net.ops.push(NOp::Depthwise {
            x: idx,
            y,
            w,
            b: Some(Bias { data: shift, exact: None }),
            win,
            mult: 1,
            act: Act::None,
        });
        self.set(out, y, NHWC.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_that_only_move_unit_dims_are_free() {
        // [1, 1, 49, 10] NCHW stored identity vs NHWC: same element order.
        assert!(same_order(&[1, 1, 49, 10], &[0, 1, 2, 3], &NHWC));
        // [1, 64, 1, 1] stored NHWC vs identity: same order.
        assert!(same_order(&[1, 64, 1, 1], &NHWC, &[0, 1, 2, 3]));
        // [1, 3, 8, 8]: real transpose.
        assert!(!same_order(&[1, 3, 8, 8], &NHWC, &[0, 1, 2, 3]));
    }

    #[test]
    fn act_composition() {
        assert_eq!(Act::None.then(Act::Relu), Act::Relu);
        assert_eq!(Act::Relu.then(Act::Clip(0.0, 6.0)), Act::Clip(0.0, 6.0));
        assert_eq!(Act::Clip(-1.0, 1.0).then(Act::Relu), Act::Clip(0.0, 1.0));
    }
}
