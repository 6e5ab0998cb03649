//! QDQ absorption: turns `QuantizeLinear`/`DequantizeLinear` nodes into
//! quantization annotations on float values, and constant `DequantizeLinear`s
//! into exact quantized constants.
//!
//! After this pass the graph has float semantics again, but
//! - an activation value that passed through `Q → DQ` carries the `(scale,
//!   zero point)` it was quantized with ([`Qdq::quant`]); an int8 graph input
//!   followed by `DequantizeLinear` carries that DQ's parameters;
//! - a weight or bias that was `DequantizeLinear(int8 / int32 initializer)`
//!   keeps its integers and per-axis scales ([`Qdq::exact`]), checked here:
//!   the scale vector must have one positive finite entry per slice along the
//!   axis (ONNX's default axis is 1, not 0), and int8 weight zero points must
//!   be 0 (TFLite's symmetric weights). Reading them from the initializers
//!   ourselves is deliberate: tract's per-axis Q/DQ was wrong until late 2026.

use std::collections::HashMap;

use anyhow::{Context, Result, bail, ensure};

use crate::onnx::{Elem, Graph};
use crate::tensor::{Data, Tensor};

/// A constant that the model stores quantized.
#[derive(Clone, Debug, PartialEq)]
pub struct Exact {
    /// The stored integers (int8 weights or int32 biases), as i32.
    pub ints: Vec<i32>,
    /// The shape.
    pub shape: Vec<usize>,
    /// Scales: one (per tensor) or one per slice along `axis`.
    pub scales: Vec<f32>,
    /// The axis the scales run along (meaningful when `scales.len() > 1`).
    pub axis: usize,
    /// int8 or int32.
    pub elem: Elem,
}

/// Result of QDQ absorption.
#[derive(Clone, Debug, Default)]
pub struct Qdq {
    /// Activation quantization annotations by value id.
    pub quant: HashMap<usize, (f32, i32)>,
    /// Exact quantized constants by value id (their `konst` is the dequantized float).
    pub exact: HashMap<usize, Exact>,
    /// Identity nodes inserted where one value was quantized twice with
    /// different parameters: (input, output) pairs lowered to requantize ops.
    pub requantized: Vec<(usize, usize)>,
}

fn scalar_param(g: &Graph, v: Option<usize>, what: &str) -> Result<Option<Tensor>> {
    match v {
        None => Ok(None),
        Some(v) => Ok(Some(
            g.values[v].konst.clone().with_context(|| format!("{what} '{}' must be a constant", g.values[v].name))?,
        )),
    }
}

/// Converts a uint8 (scale, zero point) into the int8 one with the same real values.
fn to_int8_zp(zp: i64, elem: Elem) -> Result<i32> {
    Ok(match elem {
        Elem::I8 => zp as i32,
        Elem::U8 => zp as i32 - 128,
        e => bail!("zero point type {e:?} is not supported (int8 or uint8 are)"),
    })
}

fn per_tensor(scale: &Tensor, zp: Option<&Tensor>, who: &str) -> Result<(f32, i32)> {
    ensure!(
        scale.len() == 1,
        "{who}: per-axis quantization of activations is not supported (scale has {} entries)",
        scale.len()
    );
    let s = scale.to_f32()[0];
    ensure!(s.is_finite() && s > 0.0, "{who}: scale {s} is not a positive finite number");
    let z = match zp {
        None => 0,
        Some(z) => {
            ensure!(z.len() == 1, "{who}: zero point must be a scalar");
            let elem = match z.data {
                Data::U8(_) => Elem::U8,
                Data::I8(_) => Elem::I8,
                _ => bail!("{who}: zero point must be int8 or uint8, found {}", z.type_name()),
            };
            to_int8_zp(z.to_i64()?[0], elem)?
        }
    };
    Ok((s, z))
}

/// Absorbs Q/DQ nodes. Values that are aliases of others afterwards are
/// rewritten everywhere (node inputs, graph outputs).
///
/// # Errors
/// Malformed quantization parameters, per-axis activations, asymmetric int8
/// weights, or one value dequantized with two different sets of parameters.
pub fn absorb(g: &mut Graph) -> Result<Qdq> {
    let mut out = Qdq::default();
    let mut alias: HashMap<usize, usize> = HashMap::new();
    let resolve = |alias: &HashMap<usize, usize>, mut v: usize| {
        while let Some(&n) = alias.get(&v) {
            v = n;
        }
        v
    };
    let nodes = std::mem::take(&mut g.nodes);
    let mut keep = Vec::with_capacity(nodes.len());
    for mut node in nodes {
        for i in node.inputs.iter_mut().flatten() {
            *i = resolve(&alias, *i);
        }
        let who = format!("node '{}' ({})", node.name, node.op);
        match node.op.as_str() {
            "DequantizeLinear" => {
                let x = node.input(0)?;
                let scale = scalar_param(g, node.opt_input(1), "scale")?.with_context(|| format!("{who}: no scale"))?;
                let zp = scalar_param(g, node.opt_input(2), "zero point")?;
                let y = node.outputs[0];
                if let Some(data) = g.values[x].konst.clone() {
                    let ex =
                        exact_constant(&data, &scale, zp.as_ref(), node.int("axis", 1)).with_context(|| who.clone())?;
                    let deq = dequantize(&ex);
                    g.values[y].shape = Some(data.shape.clone());
                    g.values[y].elem = Some(Elem::F32);
                    g.values[y].konst = Some(deq);
                    out.exact.insert(y, ex);
                    continue;
                }
                let q = per_tensor(&scale, zp.as_ref(), &who)?;
                match out.quant.get(&x) {
                    Some(&prev) if prev != q => bail!(
                        "{who}: '{}' is dequantized with (scale {}, zero point {}) but was quantized with (scale {}, zero point {})",
                        g.values[x].name,
                        q.0,
                        q.1,
                        prev.0,
                        prev.1
                    ),
                    _ => {
                        out.quant.insert(x, q);
                    }
                }
                alias.insert(y, x);
            }
            "QuantizeLinear" => {
                let x = node.input(0)?;
                let scale = scalar_param(g, node.opt_input(1), "scale")?.with_context(|| format!("{who}: no scale"))?;
                let zp = scalar_param(g, node.opt_input(2), "zero point")?;
                let y = node.outputs[0];
                if g.values[x].konst.is_some() {
                    bail!(
                        "{who}: quantizing a constant at run time is not supported; store it quantized with DequantizeLinear"
                    );
                }
                let q = per_tensor(&scale, zp.as_ref(), &who)?;
                match out.quant.get(&x) {
                    Some(&prev) if prev != q => {
                        // Quantized twice differently: keep a requantize step.
                        let nid = g.add_value(
                            format!("{}_requantized", g.values[y].name),
                            Some(Elem::F32),
                            g.values[x].shape.clone(),
                            None,
                        );
                        out.quant.insert(nid, q);
                        out.requantized.push((x, nid));
                        node.op = "Identity".into();
                        node.inputs = vec![Some(x)];
                        node.outputs = vec![nid];
                        node.attrs.clear();
                        alias.insert(y, nid);
                        keep.push(node);
                    }
                    _ => {
                        out.quant.insert(x, q);
                        alias.insert(y, x);
                    }
                }
            }
            _ => keep.push(node),
        }
    }
    g.nodes = keep;
    for o in g.outputs.iter_mut() {
        *o = resolve(&alias, *o);
    }
    propagate_through_layout(g, &mut out.quant);
    Ok(out)
}

/// Ops that move bytes without changing values: a quantization annotation on
/// one side holds on the other (an int8 graph input that is transposed or
/// reshaped before its `DequantizeLinear` is quantized like that DQ says).
const LAYOUT_OPS: &[&str] = &["Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"];

fn propagate_through_layout(g: &Graph, quant: &mut HashMap<usize, (f32, i32)>) {
    loop {
        let mut changed = false;
        for n in g.nodes.iter().filter(|n| LAYOUT_OPS.contains(&n.op.as_str())) {
            let (Some(Some(x)), Some(&y)) = (n.inputs.first(), n.outputs.first()) else { continue };
            match (quant.get(x).copied(), quant.get(&y).copied()) {
                (Some(q), None) => {
                    quant.insert(y, q);
                    changed = true;
                }
                (None, Some(q)) => {
                    quant.insert(*x, q);
                    changed = true;
                }
                _ => {}
            }
        }
        if !changed {
            break;
        }
    }
}

fn exact_constant(data: &Tensor, scale: &Tensor, zp: Option<&Tensor>, axis_attr: i64) -> Result<Exact> {
    let elem = match data.data {
        Data::I8(_) => Elem::I8,
        Data::I32(_) => Elem::I32,
        Data::U8(_) => bail!("uint8 weights are not supported: re-quantize the model with int8 (symmetric) weights"),
        _ => bail!("DequantizeLinear of a {} constant is not supported", data.type_name()),
    };
    let scales = scale.to_f32();
    let rank = data.shape.len();
    let axis = if scales.len() > 1 {
        let a = if axis_attr < 0 { axis_attr + rank as i64 } else { axis_attr };
        ensure!((0..rank as i64).contains(&a), "axis {axis_attr} out of range for a rank-{rank} constant");
        let a = a as usize;
        ensure!(
            scale.shape.len() == 1 && scales.len() == data.shape[a],
            "per-axis scale has {} entries but axis {a} of the constant {:?} has {}",
            scales.len(),
            data.shape,
            data.shape[a]
        );
        a
    } else {
        0
    };
    for &s in &scales {
        ensure!(s.is_finite() && s > 0.0, "scale {s} is not a positive finite number");
    }
    if let Some(z) = zp {
        ensure!(z.len() == scales.len(), "zero point has {} entries, scale has {}", z.len(), scales.len());
        let zs = z.to_i64()?;
        if zs.iter().any(|&v| v != 0) {
            bail!(
                "non-zero zero points on a quantized constant: edgefleet needs symmetric int8 weights and int32 biases with zero point 0"
            );
        }
    }
    let ints: Vec<i32> = match &data.data {
        Data::I8(v) => v.iter().map(|&x| x as i32).collect(),
        Data::I32(v) => v.clone(),
        _ => unreachable!("checked above"),
    };
    Ok(Exact { ints, shape: data.shape.clone(), scales, axis, elem })
}

/// The float values of an exact constant.
pub fn dequantize(e: &Exact) -> Tensor {
    let inner: usize = e.shape.iter().skip(e.axis + 1).product();
    let dim = e.shape.get(e.axis).copied().unwrap_or(1);
    let v = e
        .ints
        .iter()
        .enumerate()
        .map(|(i, &q)| {
            let s = if e.scales.len() == 1 { e.scales[0] } else { e.scales[(i / inner.max(1)) % dim.max(1)] };
            q as f32 * s
        })
        .collect();
    Tensor::f32(e.shape.clone(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_axis_scales_follow_the_axis() {
        // [2, 3] int8, scales along axis 0 (one per row)
        let data = Tensor { shape: vec![2, 3], data: Data::I8(vec![1, 2, 3, 4, 5, 6]) };
        let scale = Tensor::f32(vec![2], vec![0.5, 2.0]);
        let e = exact_constant(&data, &scale, None, 0).unwrap();
        assert_eq!(dequantize(&e).to_f32(), vec![0.5, 1.0, 1.5, 8.0, 10.0, 12.0]);
        // along axis 1 (ONNX's default) the scale count must match dim 1
        assert!(exact_constant(&data, &scale, None, 1).is_err());
        let scale3 = Tensor::f32(vec![3], vec![1.0, 10.0, 100.0]);
        let e = exact_constant(&data, &scale3, None, 1).unwrap();
        assert_eq!(dequantize(&e).to_f32(), vec![1.0, 20.0, 300.0, 4.0, 50.0, 600.0]);
    }

    #[test]
    fn asymmetric_weights_are_rejected() {
        let data = Tensor { shape: vec![2], data: Data::I8(vec![1, 2]) };
        let scale = Tensor::f32(vec![], vec![0.5]);
        let zp = Tensor { shape: vec![], data: Data::I8(vec![3]) };
        assert!(exact_constant(&data, &scale, Some(&zp), 1).is_err());
    }

    #[test]
    fn uint8_zero_point_maps_to_int8() {
        let scale = Tensor::f32(vec![], vec![0.1]);
        let zp = Tensor { shape: vec![], data: Data::U8(vec![128]) };
        assert_eq!(per_tensor(&scale, Some(&zp), "t").unwrap(), (0.1, 0));
    }
}
