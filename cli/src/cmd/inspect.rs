//! `edgefleet inspect`.

use std::path::PathBuf;

use anyhow::Result;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use edgefleet_runtime::{Model, Op, Quantization, SectionKind, Storage, TensorInfo};
use serde_json::json;

use super::{load, read_package, shape_str, thousands};

/// Arguments of `edgefleet inspect`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The package (.efm).
    pub package: PathBuf,
    /// Print everything as JSON.
    #[arg(long)]
    pub json: bool,
}

fn quant_str(q: &Quantization) -> String {
    match q {
        Quantization::None => "-".into(),
        Quantization::PerTensor { scale, zero_point } => format!("s={scale:.6} zp={zero_point}"),
        Quantization::PerChannel { axis, scales } => format!("per-channel axis {axis} ({} scales)", scales.len()),
    }
}

fn quant_json(q: &Quantization) -> serde_json::Value {
    match q {
        Quantization::None => json!(null),
        Quantization::PerTensor { scale, zero_point } => json!({"scale": scale, "zero_point": zero_point}),
        Quantization::PerChannel { axis, scales } => json!({"axis": axis, "scales": scales}),
    }
}

fn tensor_json(t: &TensorInfo) -> serde_json::Value {
    json!({
        "index": t.index,
        "name": t.name,
        "dtype": t.dtype.name(),
        "shape": t.shape.dims(),
        "storage": match t.storage { Storage::Arena => "arena", Storage::Const => "const" },
        "offset": t.offset,
        "bytes": t.size,
        "quantization": quant_json(&t.quant),
        "view_of": t.view_of,
    })
}

fn op_detail(op: &Op) -> String {
    match op {
        Op::Conv2d { geometry: g, clamp, .. } => format!(
            "stride {}x{} dilation {}x{} pad {},{} clamp [{}, {}]",
            g.stride.0, g.stride.1, g.window.0, g.window.1, g.padding.0, g.padding.1, clamp.min, clamp.max
        ),
        Op::DepthwiseConv2d { geometry: g, depth_multiplier, clamp, .. } => format!(
            "stride {}x{} dilation {}x{} pad {},{} x{depth_multiplier} clamp [{}, {}]",
            g.stride.0, g.stride.1, g.window.0, g.window.1, g.padding.0, g.padding.1, clamp.min, clamp.max
        ),
        Op::AveragePool2d { geometry: g, .. } | Op::MaxPool2d { geometry: g, .. } => {
            format!(
                "window {}x{} stride {}x{} pad {},{}",
                g.window.0, g.window.1, g.stride.0, g.stride.1, g.padding.0, g.padding.1
            )
        }
        Op::FullyConnected { clamp, .. } => format!("clamp [{}, {}]", clamp.min, clamp.max),
        Op::Add { clamp, .. } => format!("clamp [{}, {}]", clamp.min, clamp.max),
        Op::Softmax { requant, .. } => {
            if requant.is_some() {
                "requantized output".into()
            } else {
                "output 1/256".into()
            }
        }
        Op::Requantize { clamp, .. } => format!("clamp [{}, {}]", clamp.min, clamp.max),
        Op::Transpose { perm, .. } => format!("perm {perm:?}"),
    }
}

/// Runs `edgefleet inspect`.
pub fn run(a: Args) -> Result<()> {
    let bytes = read_package(&a.package)?;
    let m = load(&a.package, &bytes)?;
    let text_section = |k: SectionKind| m.section(k as u16).map(|b| String::from_utf8_lossy(b).into_owned());
    let json_section =
        |k: SectionKind| text_section(k).and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    let io = |i: usize, out: bool| if out { m.output(i) } else { m.input(i) };
    let ios = |out: bool| -> Vec<serde_json::Value> {
        let n = if out { m.output_count() } else { m.input_count() };
        (0..n)
            .filter_map(|i| io(i, out))
            .map(|x| {
                let labels: Vec<&str> = (0..x.label_count()).filter_map(|l| x.label(l)).collect();
                json!({ "tensor": tensor_json(&x.tensor), "labels": labels })
            })
            .collect()
    };
    let ops: Vec<(usize, Op)> = (0..m.op_count()).filter_map(|i| m.op(i).map(|o| (i, o))).collect();
    let macs: u64 = ops.iter().map(|(_, op)| op_macs(&m, op)).sum();
    if a.json {
        let v = json!({
            "path": a.package,
            "format_version": format!("{}.{}", m.version().0, m.version().1),
            "bytes": m.as_bytes().len(),
            "arena_bytes": m.arena_size(),
            "const_bytes": m.const_size(),
            "macs": macs,
            "inputs": ios(false),
            "outputs": ios(true),
            "ops": ops.iter().map(|(i, op)| json!({
                "index": i,
                "op": op.code().name(),
                "inputs": op.inputs().iter().flatten().collect::<Vec<_>>(),
                "output": op.output(),
                "detail": op_detail(op),
                "macs": op_macs(&m, op),
            })).collect::<Vec<_>>(),
            "tensors": (0..m.tensor_count()).filter_map(|i| m.tensor(i as u16)).map(|t| tensor_json(&t)).collect::<Vec<_>>(),
            "model_card": json_section(SectionKind::ModelCard),
            "producer": json_section(SectionKind::Producer),
            "reference_profile_bytes": m.section(SectionKind::ReferenceProfile as u16).map(<[u8]>::len),
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    outln!(
        "{}  format {}.{}  {} bytes",
        a.package.display(),
        m.version().0,
        m.version().1,
        thousands(m.as_bytes().len() as u64)
    );
    outln!(
        "arena {} bytes   constants {} bytes   {} ops   {} tensors   {} MACs",
        thousands(m.arena_size() as u64),
        thousands(m.const_size() as u64),
        m.op_count(),
        m.tensor_count(),
        thousands(macs)
    );
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED).set_header(vec!["", "name", "shape", "type", "quantization", "labels"]);
    for out in [false, true] {
        let n = if out { m.output_count() } else { m.input_count() };
        for i in 0..n {
            if let Some(x) = io(i, out) {
                let labels: Vec<&str> = (0..x.label_count()).filter_map(|l| x.label(l)).collect();
                t.add_row(vec![
                    format!("{} {i}", if out { "output" } else { "input" }),
                    x.name().to_string(),
                    shape_str(x.tensor.shape.dims()),
                    x.tensor.dtype.name().to_string(),
                    quant_str(&x.tensor.quant),
                    labels.join(", "),
                ]);
            }
        }
    }
    outln!("{t}");
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED).set_header(vec!["#", "op", "output", "shape", "arena offset", "MACs", "detail"]);
    for (i, op) in &ops {
        let out = m.tensor(op.output());
        t.add_row(vec![
            i.to_string(),
            op.code().name().to_string(),
            out.map(|o| o.name.to_string()).unwrap_or_default(),
            out.map(|o| shape_str(o.shape.dims())).unwrap_or_default(),
            out.map(|o| o.offset.to_string()).unwrap_or_default(),
            thousands(op_macs(&m, op)),
            op_detail(op),
        ]);
    }
    outln!("{t}");
    if let Some(p) = text_section(SectionKind::Producer) {
        outln!("producer: {p}");
    }
    if let Some(c) = text_section(SectionKind::ModelCard) {
        outln!("model card: {c}");
    }
    Ok(())
}

pub(crate) fn op_macs(m: &Model, op: &Op) -> u64 {
    let el = |t: u16| m.tensor(t).map_or(0, |t| t.shape.elements() as u64);
    let dims = |t: u16| m.tensor(t).map(|t| t.shape.dims().to_vec()).unwrap_or_default();
    match *op {
        Op::Conv2d { filter, output, .. } => {
            let d = dims(filter);
            el(output) * d.iter().skip(1).product::<usize>() as u64
        }
        Op::DepthwiseConv2d { filter, output, .. } => {
            let d = dims(filter);
            el(output) * d.get(1..3).map_or(0, |s| s.iter().product::<usize>()) as u64
        }
        Op::FullyConnected { filter, output, .. } => el(output) * dims(filter).get(1).copied().unwrap_or(0) as u64,
        _ => 0,
    }
}
