//! `edgefleet run`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use edgefleet_runtime::{Interpreter, PackedWeights};
use serde_json::json;

use super::{load, read_package, shape_str};
use crate::npy::{self, Values};

/// Output element type.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputType {
    /// The raw int8 output.
    Int8,
    /// Dequantized float32.
    Float,
}

/// Arguments of `edgefleet run`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The package (.efm).
    pub package: PathBuf,
    /// Input samples (.npy): int8 values are used as they are; float (or other integer) values
    /// are quantized with the input's scale and zero point. Shape: the input's, or [N, ...] for
    /// N samples.
    #[arg(short, long, value_name = "NPY")]
    pub input: PathBuf,
    /// Save the outputs of all samples as .npy, shape [N, ...output shape].
    #[arg(short, long, value_name = "NPY")]
    pub output: Option<PathBuf>,
    /// Element type of the saved output [default: int8 for int8 input, else float].
    #[arg(long, value_enum)]
    pub output_type: Option<OutputType>,
    /// Classes to print per sample for classifier outputs.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
    /// Print results as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `edgefleet run`.
pub fn run(a: Args) -> Result<()> {
    let bytes = read_package(&a.package)?;
    let model = load(&a.package, &bytes)?;
    if model.input_count() != 1 || model.output_count() != 1 {
        bail!(
            "`run` supports single-input, single-output models; this one has {} inputs and {} outputs",
            model.input_count(),
            model.output_count()
        );
    }
    let input = model.input(0).context("input 0")?;
    let output = model.output(0).context("output 0")?;
    let n_in = input.tensor.shape.elements();
    let n_out = output.tensor.shape.elements();
    let x = npy::read(&a.input)?;
    if x.is_empty() || x.len() % n_in != 0 {
        bail!(
            "{}: {} values of shape {:?} do not split into samples of {n_in} values (input {} is {})",
            a.input.display(),
            x.len(),
            x.shape,
            input.name(),
            shape_str(input.tensor.shape.dims())
        );
    }
    let samples = x.len() / n_in;
    let int8_in = matches!(x.values, Values::I8(_));
    let out_type = a.output_type.unwrap_or(if int8_in { OutputType::Int8 } else { OutputType::Float });

    let mut arena = vec![0u8; model.arena_size()];
    let mut out_i8: Vec<i8> = Vec::with_capacity(samples * n_out);
    let mut out_f32: Vec<f32> = Vec::with_capacity(samples * n_out);
    let packed = PackedWeights::for_model(&model);
    for s in 0..samples {
        let mut it = Interpreter::new(&model, &mut arena)?.with_packed(&packed);
        match &x.values {
            Values::I8(v) => it.input_mut(0)?.copy_from_slice(&v[s * n_in..(s + 1) * n_in]),
            Values::F32(v) => it.set_input_f32(0, &v[s * n_in..(s + 1) * n_in])?,
        }
        it.invoke()?;
        out_i8.extend_from_slice(it.output(0)?);
        let mut f = vec![0f32; n_out];
        it.output_f32(0, &mut f)?;
        out_f32.extend_from_slice(&f);
    }

    let labels: Vec<String> = (0..output.label_count()).filter_map(|i| output.label(i).map(String::from)).collect();
    let classes = output.tensor.shape.last();
    let mut results = Vec::with_capacity(samples);
    for s in 0..samples {
        let f = &out_f32[s * n_out..(s + 1) * n_out];
        let mut order: Vec<usize> = (0..classes.min(f.len())).collect();
        order.sort_by(|&i, &j| f[j].total_cmp(&f[i]));
        let top: Vec<serde_json::Value> = order
            .iter()
            .take(a.top)
            .map(|&c| json!({"class": c, "label": labels.get(c), "score": f[c], "int8": out_i8[s * n_out + c]}))
            .collect();
        results.push(json!({"sample": s, "top": top}));
    }
    if let Some(path) = &a.output {
        let mut shape = vec![samples];
        shape.extend_from_slice(output.tensor.shape.dims());
        match out_type {
            OutputType::Int8 => npy::write_i8(path, &shape, &out_i8)?,
            OutputType::Float => npy::write_f32(path, &shape, &out_f32)?,
        }
    }
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({"samples": samples, "results": results, "output_file": a.output}))?
        );
        return Ok(());
    }
    for r in &results {
        let top: Vec<String> = r["top"]
            .as_array()
            .map(|v| {
                v.iter()
                    .map(|t| {
                        let name =
                            t["label"].as_str().map(String::from).unwrap_or_else(|| format!("class {}", t["class"]));
                        format!("{name} {:.4}", t["score"].as_f64().unwrap_or(0.0))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if classes > 1 && n_out == classes {
            outln!("sample {}: {}", r["sample"], top.join("  "));
        }
    }
    if !(classes > 1 && n_out == classes) {
        outln!("{samples} sample(s), {n_out} output values each");
    }
    if let Some(p) = &a.output {
        let kind = if out_type == OutputType::Int8 { "int8" } else { "float32" };
        outln!("wrote {} ({kind}, shape {samples}x{})", p.display(), shape_str(output.tensor.shape.dims()));
    }
    Ok(())
}
