//! Shape inference and constant folding on the imported graph, and the
//! supported-operator check that reports every unsupported node at once.
//!
//! Folding evaluates every node whose inputs are all constant (shape
//! arithmetic such as `Shape → Gather → Concat → Reshape`, constant casts,
//! `Constant` nodes) and removes it. `DequantizeLinear` of a constant is kept:
//! [`crate::qdq`] needs the exact integers and scales it carries.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail, ensure};

use crate::onnx::{Attr, Elem, Graph, Node};
use crate::tensor::{Data, Tensor};

/// Operators that lower to int8 kernels (possibly as views or fused clamps).
pub const RUNTIME_OPS: &[&str] = &[
    "Conv",
    "MatMul",
    "Gemm",
    "Add",
    "Relu",
    "Clip",
    "AveragePool",
    "GlobalAveragePool",
    "MaxPool",
    "Softmax",
    "Reshape",
    "Flatten",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "BatchNormalization",
    "QuantizeLinear",
    "DequantizeLinear",
    "Identity",
    "Dropout",
];

/// Operators evaluated at compile time when all their inputs are constant.
pub const CONSTANT_OPS: &[&str] = &[
    "Constant",
    "Shape",
    "Gather",
    "Concat",
    "Cast",
    "Mul",
    "Sub",
    "Div",
    "Add",
    "Unsqueeze",
    "Squeeze",
    "Reshape",
    "Flatten",
    "Transpose",
    "Identity",
    "ConstantOfShape",
    "Relu",
];

/// Fails, listing every node whose operator the compiler cannot handle in any
/// case (neither a runtime op nor constant-foldable), with node names.
///
/// # Errors
/// One error naming all unsupported operators.
pub fn check_supported(g: &Graph) -> Result<()> {
    let mut bad: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for n in &g.nodes {
        let known = n.domain.is_empty() || n.domain == "ai.onnx";
        if !known || !(RUNTIME_OPS.contains(&n.op.as_str()) || CONSTANT_OPS.contains(&n.op.as_str())) {
            let key = if known { n.op.clone() } else { format!("{}::{}", n.domain, n.op) };
            bad.entry(key).or_default().push(&n.name);
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    Err(anyhow::anyhow!(unsupported_report(&bad)))
}

fn unsupported_report(bad: &BTreeMap<String, Vec<&str>>) -> String {
    let count: usize = bad.values().map(Vec::len).sum();
    let mut msg = format!("the model uses {count} node(s) with operators edgefleet cannot compile:\n");
    for (op, nodes) in bad {
        let names: Vec<String> = nodes.iter().map(|n| format!("'{n}'")).collect();
        msg.push_str(&format!("  {op:<20} {}\n", names.join(", ")));
    }
    msg.push_str(&format!(
        "supported operators: {}; and, on constant inputs only: {}",
        RUNTIME_OPS.join(", "),
        CONSTANT_OPS.iter().filter(|o| !RUNTIME_OPS.contains(o)).copied().collect::<Vec<_>>().join(", ")
    ));
    msg
}

/// Infers every value's static shape and folds constant nodes away.
///
/// # Errors
/// A shape that cannot be inferred, an inconsistent graph, or a node that is
/// only supported on constants but has a runtime input (all such nodes are
/// listed together).
pub fn infer_and_fold(g: &mut Graph) -> Result<()> {
    let mut keep = Vec::with_capacity(g.nodes.len());
    let mut needs_runtime: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let nodes = std::mem::take(&mut g.nodes);
    for node in nodes {
        let ctx = || format!("node '{}' ({})", node.name, node.op);
        let all_const = node.inputs.iter().flatten().all(|&v| g.values[v].konst.is_some());
        let foldable = CONSTANT_OPS.contains(&node.op.as_str()) && node.op != "DequantizeLinear";
        if all_const && foldable {
            let outs = eval_const(g, &node).with_context(ctx)?;
            for (&o, t) in node.outputs.iter().zip(outs) {
                g.values[o].shape = Some(t.shape.clone());
                g.values[o].elem = Some(elem_of(&t));
                g.values[o].konst = Some(t);
            }
            continue;
        }
        if !RUNTIME_OPS.contains(&node.op.as_str()) {
            needs_runtime.entry(node.op.clone()).or_default().push(node.name.clone());
            continue;
        }
        let shapes = infer(g, &node).with_context(ctx)?;
        // Inferred shapes replace declared ones: symbolic dimensions were set to 1.
        for (&o, s) in node.outputs.iter().zip(shapes) {
            g.values[o].shape = Some(s);
        }
        keep.push(node);
    }
    g.nodes = keep;
    if !needs_runtime.is_empty() {
        let mut msg = String::from(
            "these nodes compute at run time, but edgefleet only supports their operators on constant inputs:\n",
        );
        for (op, names) in &needs_runtime {
            msg.push_str(&format!(
                "  {op:<20} {}\n",
                names.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ")
            ));
        }
        bail!(msg.trim_end().to_string());
    }
    Ok(())
}

fn elem_of(t: &Tensor) -> Elem {
    match t.data {
        Data::F32(_) => Elem::F32,
        Data::I64(_) => Elem::I64,
        Data::I32(_) => Elem::I32,
        Data::I8(_) => Elem::I8,
        Data::U8(_) => Elem::U8,
    }
}

fn norm_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    ensure!((0..r.max(1)).contains(&a), "axis {axis} out of range for rank {rank}");
    Ok(a as usize)
}

/// Target shape of a Reshape (ONNX rules: 0 copies, -1 infers).
pub fn reshape_target(input: &[usize], spec: &[i64], allowzero: bool) -> Result<Vec<usize>> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 => {
                ensure!(infer.is_none(), "reshape has two -1 dimensions");
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*input.get(i).context("reshape copies a dimension the input lacks")?),
            d if d >= 0 => out.push(d as usize),
            d => bail!("invalid reshape dimension {d}"),
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer {
        ensure!(known > 0 && total.is_multiple_of(known), "cannot infer -1 reshaping {input:?} to {spec:?}");
        out[i] = total / known;
    }
    ensure!(out.iter().product::<usize>() == total, "cannot reshape {input:?} to {spec:?}");
    Ok(out)
}

/// Numpy broadcasting of two shapes.
pub fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => bail!("shapes {a:?} and {b:?} do not broadcast"),
        };
    }
    Ok(out)
}

/// Spatial output size of a sliding window along one axis.
pub fn window_out(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad_begin: usize,
    pad_end: usize,
    ceil: bool,
) -> Result<usize> {
    ensure!(
        kernel >= 1 && stride >= 1 && dilation >= 1,
        "kernel {kernel}, stride {stride} and dilation {dilation} must all be at least 1"
    );
    let eff = dilation.checked_mul(kernel - 1).and_then(|e| e.checked_add(1)).context("window too large")?;
    let padded = input.checked_add(pad_begin).and_then(|p| p.checked_add(pad_end)).context("padding too large")?;
    ensure!(padded >= eff, "window {kernel} (dilation {dilation}) larger than padded input {padded}");
    let span = padded - eff;
    Ok(if ceil { span.div_ceil(stride) + 1 } else { span / stride + 1 })
}

/// Kernel, stride, dilation and explicit pads (top, left, bottom, right) of a
/// Conv or pooling node over an NCHW input of spatial size `(h, w)`.
pub fn window_params(n: &Node, kernel: [usize; 2], hw: [usize; 2]) -> Result<([usize; 2], [usize; 2], [usize; 4])> {
    let two = |name: &str, default: usize| -> Result<[usize; 2]> {
        match n.ints(name) {
            None => Ok([default, default]),
            Some([a, b]) if *a > 0 && *b > 0 => Ok([*a as usize, *b as usize]),
            Some(v) => bail!("attribute {name} = {v:?}: only 2-D windows are supported"),
        }
    };
    let strides = two("strides", 1)?;
    let dilations = two("dilations", 1)?;
    let auto = n.string("auto_pad").unwrap_or("NOTSET");
    let pads = match auto {
        "NOTSET" => match n.ints("pads") {
            None => [0; 4],
            Some([t, l, b, r]) if [t, l, b, r].iter().all(|&&p| p >= 0) => {
                [*t as usize, *l as usize, *b as usize, *r as usize]
            }
            Some(v) => bail!("pads {v:?}: only 2-D, non-negative pads are supported"),
        },
        "VALID" => [0; 4],
        "SAME_UPPER" | "SAME_LOWER" => {
            let mut p = [0; 4];
            for ax in 0..2 {
                let out = hw[ax].div_ceil(strides[ax]);
                let eff = dilations[ax] * (kernel[ax] - 1) + 1;
                let total = ((out - 1) * strides[ax] + eff).saturating_sub(hw[ax]);
                let (small, big) = (total / 2, total - total / 2);
                let (begin, end) = if auto == "SAME_UPPER" { (small, big) } else { (big, small) };
                p[ax] = begin;
                p[ax + 2] = end;
            }
            p
        }
        other => bail!("auto_pad {other} is not supported"),
    };
    Ok((strides, dilations, pads))
}

fn infer(g: &Graph, n: &Node) -> Result<Vec<Vec<usize>>> {
    let shape = |i: usize| -> Result<Vec<usize>> { Ok(g.shape(n.input(i)?)?.to_vec()) };
    let konst = |i: usize| -> Result<&Tensor> {
        let v = n.input(i)?;
        g.values[v].konst.as_ref().with_context(|| format!("input {i} ('{}') must be a constant", g.values[v].name))
    };
    let out = match n.op.as_str() {
        "Relu" | "Clip" | "QuantizeLinear" | "DequantizeLinear" | "Identity" | "Softmax" | "BatchNormalization" => {
            vec![shape(0)?]
        }
        "Dropout" => {
            let s = shape(0)?;
            vec![s.clone(), s]
        }
        "Add" => vec![broadcast(&shape(0)?, &shape(1)?)?],
        "Conv" => {
            let x = shape(0)?;
            let w = shape(1)?;
            ensure!(
                x.len() == 4 && w.len() == 4,
                "only 2-D convolution (NCHW input, OIHW weights) is supported, got input {x:?} weights {w:?}"
            );
            let (s, d, p) = window_params(n, [w[2], w[3]], [x[2], x[3]])?;
            let group = n.int("group", 1) as usize;
            ensure!(
                group >= 1 && x[1] == w[1] * group,
                "input channels {} != weight in-channels {} x group {group}",
                x[1],
                w[1]
            );
            let oh = window_out(x[2], w[2], s[0], d[0], p[0], p[2], false)?;
            let ow = window_out(x[3], w[3], s[1], d[1], p[1], p[3], false)?;
            vec![vec![x[0], w[0], oh, ow]]
        }
        "AveragePool" | "MaxPool" => {
            let x = shape(0)?;
            ensure!(x.len() == 4, "only 2-D pooling on NCHW is supported, got {x:?}");
            let k = n.ints("kernel_shape").context("kernel_shape missing")?;
            ensure!(k.len() == 2 && k.iter().all(|&v| v > 0), "kernel_shape {k:?} must be 2-D");
            let k = [k[0] as usize, k[1] as usize];
            let (s, d, p) = window_params(n, k, [x[2], x[3]])?;
            ensure!(d == [1, 1], "dilated pooling is not supported");
            let ceil = n.int("ceil_mode", 0) != 0;
            vec![vec![
                x[0],
                x[1],
                window_out(x[2], k[0], s[0], 1, p[0], p[2], ceil)?,
                window_out(x[3], k[1], s[1], 1, p[1], p[3], ceil)?,
            ]]
        }
        "GlobalAveragePool" => {
            let x = shape(0)?;
            ensure!(x.len() == 4, "GlobalAveragePool needs an NCHW input, got {x:?}");
            vec![vec![x[0], x[1], 1, 1]]
        }
        "MatMul" => {
            let a = shape(0)?;
            let b = shape(1)?;
            ensure!(
                b.len() == 2 && !a.is_empty() && a[a.len() - 1] == b[0],
                "MatMul {a:?} x {b:?}: only [.., K] x [K, N] with a constant right side is supported"
            );
            let mut o = a.clone();
            *o.last_mut().context("empty shape")? = b[1];
            vec![o]
        }
        "Gemm" => {
            let a = shape(0)?;
            let b = shape(1)?;
            ensure!(n.int("transA", 0) == 0, "Gemm with transA=1 is not supported");
            ensure!(a.len() == 2 && b.len() == 2, "Gemm needs 2-D operands");
            let (k, nn) = if n.int("transB", 0) != 0 { (b[1], b[0]) } else { (b[0], b[1]) };
            ensure!(a[1] == k, "Gemm inner dimensions differ: {a:?} x {b:?}");
            vec![vec![a[0], nn]]
        }
        "Reshape" => {
            let spec = konst(1)?.to_i64()?;
            vec![reshape_target(&shape(0)?, &spec, n.int("allowzero", 0) != 0)?]
        }
        "Flatten" => {
            let x = shape(0)?;
            let axis = norm_axis(n.int("axis", 1), x.len() + 1)?;
            vec![vec![x[..axis].iter().product(), x[axis..].iter().product()]]
        }
        "Transpose" => {
            let x = shape(0)?;
            let perm = transpose_perm(n, x.len())?;
            vec![perm.iter().map(|&p| x[p]).collect()]
        }
        "Squeeze" | "Unsqueeze" => vec![squeeze_shape(g, n, &shape(0)?)?],
        other => bail!("no shape rule for {other}"),
    };
    Ok(out)
}

/// The permutation of a Transpose node (default: reverse).
pub fn transpose_perm(n: &Node, rank: usize) -> Result<Vec<usize>> {
    let perm: Vec<usize> = match n.ints("perm") {
        Some(p) => p.iter().map(|&v| norm_axis(v, rank)).collect::<Result<_>>()?,
        None => (0..rank).rev().collect(),
    };
    let mut seen = vec![false; rank];
    ensure!(perm.len() == rank, "perm {perm:?} does not fit rank {rank}");
    for &p in &perm {
        ensure!(!seen[p], "perm {perm:?} is not a permutation");
        seen[p] = true;
    }
    Ok(perm)
}

fn squeeze_shape(g: &Graph, n: &Node, x: &[usize]) -> Result<Vec<usize>> {
    let axes: Option<Vec<i64>> = match (n.ints("axes"), n.opt_input(1)) {
        (Some(a), _) => Some(a.to_vec()),
        (None, Some(v)) => Some(g.values[v].konst.as_ref().context("axes must be constant")?.to_i64()?),
        (None, None) => None,
    };
    if n.op == "Squeeze" {
        match axes {
            None => Ok(x.iter().copied().filter(|&d| d != 1).collect()),
            Some(a) => {
                let a: Vec<usize> = a.iter().map(|&v| norm_axis(v, x.len())).collect::<Result<_>>()?;
                for &i in &a {
                    ensure!(x[i] == 1, "cannot squeeze axis {i} of {x:?}");
                }
                Ok(x.iter().enumerate().filter(|(i, _)| !a.contains(i)).map(|(_, &d)| d).collect())
            }
        }
    } else {
        let a = axes.context("Unsqueeze needs axes")?;
        let r = x.len() + a.len();
        let mut a: Vec<usize> = a.iter().map(|&v| norm_axis(v, r)).collect::<Result<_>>()?;
        a.sort_unstable();
        let mut out = Vec::with_capacity(r);
        let mut it = x.iter();
        for i in 0..r {
            if a.contains(&i) {
                out.push(1);
            } else {
                out.push(*it.next().context("bad unsqueeze axes")?);
            }
        }
        Ok(out)
    }
}

fn eval_const(g: &Graph, n: &Node) -> Result<Vec<Tensor>> {
    let k = |i: usize| -> Result<&Tensor> {
        let v = n.input(i)?;
        g.values[v].konst.as_ref().context("constant input expected")
    };
    let one = |t: Tensor| Ok(vec![t]);
    match n.op.as_str() {
        "Constant" => {
            if let Some(Attr::Tensor(t)) = n.attrs.get("value") {
                return one(t.clone());
            }
            if let Some(Attr::Float(f)) = n.attrs.get("value_float") {
                return one(Tensor::f32(vec![], vec![*f]));
            }
            if let Some(Attr::Floats(f)) = n.attrs.get("value_floats") {
                return one(Tensor::f32(vec![f.len()], f.clone()));
            }
            if let Some(Attr::Int(i)) = n.attrs.get("value_int") {
                return one(Tensor { shape: vec![], data: Data::I64(vec![*i]) });
            }
            if let Some(Attr::Ints(i)) = n.attrs.get("value_ints") {
                return one(Tensor::i64_vec(i.clone()));
            }
            bail!("Constant without a supported value attribute")
        }
        "Identity" | "Dropout" => one(k(0)?.clone()),
        "Shape" => {
            let s = g.shape(n.input(0)?)?;
            let r = s.len() as i64;
            let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let start = clampi(n.int("start", 0));
            let end = clampi(n.int("end", r));
            one(Tensor::i64_vec(s[start..end.max(start)].iter().map(|&d| d as i64).collect()))
        }
        "Cast" => {
            let t = k(0)?;
            let data = match n.int("to", 1) {
                1 => Data::F32(t.to_f32()),
                7 => Data::I64(
                    t.to_i64().or_else(|_| Ok::<_, anyhow::Error>(t.to_f32().iter().map(|&f| f as i64).collect()))?,
                ),
                6 => Data::I32(
                    t.to_i64()
                        .or_else(|_| Ok::<_, anyhow::Error>(t.to_f32().iter().map(|&f| f as i64).collect()))?
                        .iter()
                        .map(|&v| v as i32)
                        .collect(),
                ),
                to => bail!("Cast to ONNX type {to} is not supported"),
            };
            one(Tensor { shape: t.shape.clone(), data })
        }
        "Reshape" => {
            let t = k(0)?;
            let s = reshape_target(&t.shape, &k(1)?.to_i64()?, n.int("allowzero", 0) != 0)?;
            one(t.reshaped(s)?)
        }
        "Flatten" => {
            let t = k(0)?;
            let axis = norm_axis(n.int("axis", 1), t.shape.len() + 1)?;
            one(t.reshaped(vec![t.shape[..axis].iter().product(), t.shape[axis..].iter().product()])?)
        }
        "Squeeze" | "Unsqueeze" => {
            let t = k(0)?;
            one(t.reshaped(squeeze_shape(g, n, &t.shape)?)?)
        }
        "Transpose" => {
            let t = k(0)?;
            one(t.transposed(&transpose_perm(n, t.shape.len())?)?)
        }
        "Concat" => {
            let parts: Vec<&Tensor> = (0..n.inputs.len()).map(k).collect::<Result<_>>()?;
            ensure!(parts.iter().all(|p| p.shape.len() == 1), "only 1-D constant Concat is folded");
            if parts.iter().all(|p| matches!(p.data, Data::I64(_))) {
                one(Tensor::i64_vec(parts.iter().map(|p| p.to_i64()).collect::<Result<Vec<_>>>()?.concat()))
            } else {
                let v: Vec<f32> = parts.iter().flat_map(|p| p.to_f32()).collect();
                one(Tensor::f32(vec![v.len()], v))
            }
        }
        "Gather" => {
            let t = k(0)?;
            let idx = k(1)?.to_i64()?;
            ensure!(t.shape.len() == 1 && norm_axis(n.int("axis", 0), 1)? == 0, "only 1-D constant Gather is folded");
            let len = t.shape[0] as i64;
            let pick = |i: i64| -> Result<usize> {
                let j = if i < 0 { i + len } else { i };
                ensure!((0..len).contains(&j), "gather index {i} out of range");
                Ok(j as usize)
            };
            let ix: Vec<usize> = idx.iter().map(|&i| pick(i)).collect::<Result<_>>()?;
            let shape = k(1)?.shape.clone();
            let data = match &t.data {
                Data::I64(v) => Data::I64(ix.iter().map(|&i| v[i]).collect()),
                Data::F32(v) => Data::F32(ix.iter().map(|&i| v[i]).collect()),
                _ => bail!("Gather on {} is not folded", t.type_name()),
            };
            one(Tensor { shape, data })
        }
        "ConstantOfShape" => {
            let s: Vec<usize> = k(0)?.to_i64()?.iter().map(|&d| d.max(0) as usize).collect();
            let n_el = s.iter().product();
            let v = match n.attrs.get("value") {
                Some(Attr::Tensor(t)) => t.to_f32().first().copied().unwrap_or(0.0),
                _ => 0.0,
            };
            one(Tensor::f32(s, vec![v; n_el]))
        }
        "Add" | "Sub" | "Mul" | "Div" => {
            let (a, b) = (k(0)?, k(1)?);
            let shape = broadcast(&a.shape, &b.shape)?;
            let op = n.op.as_str();
            if matches!((&a.data, &b.data), (Data::I64(_), Data::I64(_))) {
                let (x, y) = (a.to_i64()?, b.to_i64()?);
                let v = broadcast_zip(&a.shape, &x, &b.shape, &y, &shape, |p, q| match op {
                    "Add" => p.wrapping_add(q),
                    "Sub" => p.wrapping_sub(q),
                    "Mul" => p.wrapping_mul(q),
                    _ => p.checked_div(q).unwrap_or(0),
                });
                one(Tensor { shape, data: Data::I64(v) })
            } else {
                let (x, y) = (a.to_f32(), b.to_f32());
                let v = broadcast_zip(&a.shape, &x, &b.shape, &y, &shape, |p, q| match op {
                    "Add" => p + q,
                    "Sub" => p - q,
                    "Mul" => p * q,
                    _ => p / q,
                });
                one(Tensor::f32(shape, v))
            }
        }
        "Relu" => {
            let t = k(0)?;
            one(Tensor::f32(t.shape.clone(), t.to_f32().iter().map(|&v| v.max(0.0)).collect()))
        }
        other => bail!("{other} is not folded"),
    }
}

/// Elementwise binary op with numpy broadcasting.
pub fn broadcast_zip<T: Copy>(
    sa: &[usize],
    a: &[T],
    sb: &[usize],
    b: &[T],
    out: &[usize],
    f: impl Fn(T, T) -> T,
) -> Vec<T> {
    let r = out.len();
    let pad = |s: &[usize]| -> Vec<usize> {
        let mut p = vec![1; r - s.len()];
        p.extend_from_slice(s);
        p
    };
    let (pa, pb) = (pad(sa), pad(sb));
    let (st_a, st_b) = (crate::tensor::strides(&pa), crate::tensor::strides(&pb));
    let n: usize = out.iter().product();
    let mut res = Vec::with_capacity(n);
    let mut idx = vec![0usize; r];
    for _ in 0..n {
        let ia: usize = (0..r).map(|d| if pa[d] == 1 { 0 } else { idx[d] * st_a[d] }).sum();
        let ib: usize = (0..r).map(|d| if pb[d] == 1 { 0 } else { idx[d] * st_b[d] }).sum();
        res.push(f(a[ia], b[ib]));
        for d in (0..r).rev() {
            idx[d] += 1;
            if idx[d] < out[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_rules() {
        assert_eq!(reshape_target(&[1, 49, 10, 1], &[-1, 1, 49, 10], false).unwrap(), vec![1, 1, 49, 10]);
        assert_eq!(reshape_target(&[1, 64, 1, 1], &[0, -1], false).unwrap(), vec![1, 64]);
        assert!(reshape_target(&[1, 64], &[-1, -1], false).is_err());
        assert!(reshape_target(&[1, 64], &[3, -1], false).is_err());
    }

    #[test]
    fn window_sizes_match_tf_same() {
        // KWS first conv: 49x10, kernel 10x4, stride 2, pads [4,1,5,1] -> 25x5
        assert_eq!(window_out(49, 10, 2, 1, 4, 5, false).unwrap(), 25);
        assert_eq!(window_out(10, 4, 2, 1, 1, 1, false).unwrap(), 5);
        assert_eq!(window_out(7, 3, 2, 1, 0, 0, true).unwrap(), 3);
    }

    #[test]
    fn broadcasting() {
        assert_eq!(broadcast(&[1, 64, 8, 8], &[64, 1, 1]).unwrap(), vec![1, 64, 8, 8]);
        assert!(broadcast(&[2, 3], &[4]).is_err());
        let v = broadcast_zip(&[2, 1], &[1, 2], &[3], &[10, 20, 30], &[2, 3], |a, b| a + b);
        assert_eq!(v, vec![11, 21, 31, 12, 22, 32]);
    }
}
