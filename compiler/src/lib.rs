//! Compiles ONNX models into edgefleet `.efm` int8 packages.
//!
//! Two kinds of input:
//! - **QDQ-quantized ONNX** (`QuantizeLinear`/`DequantizeLinear` around float
//!   ops, as tf2onnx writes for TFLite int8 models and onnxruntime's
//!   `quantize_static` produces): the stored integers, scales and zero points
//!   are kept exactly, so a model converted from TFLite runs bit-exactly as
//!   TFLite Micro runs it;
//! - **fp32 ONNX plus calibration data**: weights are quantized per output
//!   channel (symmetric int8), activations per tensor (asymmetric int8) from
//!   ranges measured on the calibration set (min/max, or a percentile).
//!
//! The pipeline: [`onnx`] import (the protobuf is parsed by `tract-onnx`) →
//! [`fold`] (shape inference, constant folding, supported-op check) → [`qdq`]
//! (Q/DQ absorption) → [`lower`] (NHWC ops, batch-norm folding, fusion) →
//! [`calibrate`] → [`quantize`] → [`plan`] (arena) → [`emit`] → validation of
//! the result with the runtime's own loader.
//!
//! ```no_run
//! use edgefleet_compiler::{compile, CalibrationSet, Options};
//! # fn main() -> anyhow::Result<()> {
//! let onnx = std::fs::read("kws_fp32.onnx")?;
//! let calib = edgefleet_compiler::npy::read("kws_calib_f32.npy".as_ref())?;
//! let opts = Options { calibration: Some(CalibrationSet::from_tensor(&calib, 490, 1.0, 0.0)?), ..Options::default() };
//! let out = compile(&onnx, &opts, &mut |_| {})?;
//! std::fs::write("kws.efm", &out.package)?;
//! println!("arena: {} bytes", out.report.arena_bytes);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod calibrate;
pub mod emit;
pub mod fold;
pub mod lower;
pub mod net;
pub mod npy;
pub mod onnx;
pub mod plan;
pub mod profile;
pub mod qdq;
pub mod quantize;
pub mod tensor;

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use edgefleet_runtime::{AlignedBytes, Model};
use serde::Serialize;

pub use calibrate::RangeMethod;
use net::Net;
use tensor::Tensor;

/// Calibration samples: `samples[i][k]` is sample `i` for graph input `k`.
#[derive(Clone, Debug, Default)]
pub struct CalibrationSet {
    /// The samples.
    pub samples: Vec<Vec<Vec<f32>>>,
}

impl CalibrationSet {
    /// Splits an array of samples for a single-input model. The array is
    /// `[N, ...]` with `N` samples of `input_elements` values each (a batch
    /// dimension of the input, if any, is absorbed). Each value `v` becomes
    /// `v * scale + offset` (e.g. `scale = 1/255` for uint8 images fed to a
    /// model that expects `[0, 1]`).
    ///
    /// # Errors
    /// The array does not split into samples of the input's size.
    pub fn from_tensor(t: &Tensor, input_elements: usize, scale: f32, offset: f32) -> Result<CalibrationSet> {
        let all = t.to_f32();
        if input_elements == 0 || all.is_empty() || !all.len().is_multiple_of(input_elements) {
            bail!(
                "calibration array of shape {:?} ({} values) does not split into samples of {input_elements} values (the model input's size)",
                t.shape,
                all.len()
            );
        }
        Ok(CalibrationSet {
            samples: all
                .chunks_exact(input_elements)
                .map(|c| vec![c.iter().map(|&v| v * scale + offset).collect()])
                .collect(),
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True if there are no samples.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// Compiler options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Calibration data (needed unless the model is fully QDQ-quantized).
    pub calibration: Option<CalibrationSet>,
    /// How ranges are chosen from calibration data.
    pub range: RangeMethod,
    /// Class labels per graph output.
    pub labels: Vec<Vec<String>>,
    /// Model card (merged into the package's model card section).
    pub model_card: Option<serde_json::Value>,
    /// Name of the source, for the report and model card.
    pub source: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            calibration: None,
            range: RangeMethod::MinMax,
            labels: Vec::new(),
            model_card: None,
            source: String::new(),
        }
    }
}

/// Progress events, for a progress bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A stage begins.
    Stage(&'static str),
    /// Calibration progress: `done` of `total` sample passes.
    Step {
        /// Done.
        done: usize,
        /// Total.
        total: usize,
    },
}

/// A graph input or output as compiled.
#[derive(Clone, Debug, Serialize)]
pub struct IoSummary {
    /// Name.
    pub name: String,
    /// Shape (physical, as stored).
    pub shape: Vec<usize>,
    /// Scale.
    pub scale: f32,
    /// Zero point.
    pub zero_point: i32,
}

/// What the compiler did, for the summary line and `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Source file name.
    pub source: String,
    /// ONNX producer.
    pub producer: String,
    /// `qdq`, `calibrated` or `mixed`.
    pub quantization: String,
    /// Calibration samples used.
    pub calibration_samples: usize,
    /// Runtime ops.
    pub ops: usize,
    /// Ops by kind.
    pub op_kinds: BTreeMap<String, usize>,
    /// Multiply-accumulates per inference.
    pub macs: u64,
    /// Weight and bias elements.
    pub parameters: usize,
    /// Arena bytes the plan needs.
    pub arena_bytes: usize,
    /// Largest sum of simultaneously live activations (no plan can beat it).
    pub arena_lower_bound: usize,
    /// Constant bytes in the package.
    pub const_bytes: usize,
    /// Package size in bytes.
    pub package_bytes: usize,
    /// Inputs.
    pub inputs: Vec<IoSummary>,
    /// Outputs.
    pub outputs: Vec<IoSummary>,
    /// Notes (bias re-quantized, ...).
    pub notes: Vec<String>,
}

/// A compiled package and its report.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The `.efm` bytes.
    pub package: Vec<u8>,
    /// The report.
    pub report: Report,
    /// The lowered float network (for float reference runs).
    pub net: Net,
}

/// Imports, folds and lowers an ONNX model without quantizing it: the float
/// network calibration runs on.
///
/// # Errors
/// Unsupported or malformed models.
pub fn lower_onnx(onnx_bytes: &[u8]) -> Result<(Net, qdq::Qdq, onnx::Graph)> {
    let mut graph = onnx::load_bytes(onnx_bytes)?;
    fold::check_supported(&graph)?;
    fold::infer_and_fold(&mut graph)?;
    let q = qdq::absorb(&mut graph)?;
    let net = lower::lower(&graph, &q)?;
    Ok((net, q, graph))
}

/// Compiles ONNX bytes into a package.
///
/// # Errors
/// Unsupported operators (all listed at once), malformed models, missing
/// calibration data, or (a compiler bug) a package the loader rejects.
pub fn compile(onnx_bytes: &[u8], opts: &Options, progress: &mut dyn FnMut(Event)) -> Result<Compiled> {
    // Models are untrusted input: a panic anywhere below (a missed check here,
    // or in a dependency) becomes an error instead of taking the caller down.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| compile_unguarded(onnx_bytes, opts, progress)))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(anyhow::anyhow!("internal compiler error on this model (please report it with the model): {what}"))
        })
}

fn compile_unguarded(onnx_bytes: &[u8], opts: &Options, progress: &mut dyn FnMut(Event)) -> Result<Compiled> {
    progress(Event::Stage("import"));
    let mut graph = onnx::load_bytes(onnx_bytes)?;
    fold::check_supported(&graph)?;
    progress(Event::Stage("fold"));
    fold::infer_and_fold(&mut graph)?;
    let q = qdq::absorb(&mut graph)?;
    progress(Event::Stage("lower"));
    let net = lower::lower(&graph, &q)?;
    let annotated = net.values.iter().filter(|v| v.onnx.is_some_and(|o| q.quant.contains_key(&o))).count();
    let ranges = match &opts.calibration {
        Some(c) => {
            progress(Event::Stage("calibrate"));
            let expected: Vec<usize> = net.inputs.iter().map(|&i| net.elements(i)).collect();
            for (i, s) in c.samples.iter().enumerate() {
                let got: Vec<usize> = s.iter().map(Vec::len).collect();
                if got != expected {
                    bail!("calibration sample {i} has input sizes {got:?}, the model needs {expected:?}");
                }
            }
            Some(calibrate::calibrate(&net, &c.samples, opts.range, &mut |done, total| {
                progress(Event::Step { done, total })
            })?)
        }
        None => None,
    };
    progress(Event::Stage("quantize"));
    let qnet = quantize::quantize(&net, &q, ranges.as_ref())?;
    progress(Event::Stage("plan"));
    let plan = plan::plan(&qnet);
    progress(Event::Stage("emit"));
    let quantization = match (annotated, &opts.calibration) {
        (0, _) => "calibrated",
        (_, None) => "qdq",
        (n, Some(_)) if n == net.values.len() => "qdq",
        _ => "mixed",
    }
    .to_string();
    let producer = serde_json::json!({
        "tool": "edgefleet-compiler",
        "version": env!("CARGO_PKG_VERSION"),
        "source": opts.source,
        "onnx_producer": graph.producer,
        "quantization": quantization,
        "calibration_samples": opts.calibration.as_ref().map_or(0, CalibrationSet::len),
        "range_method": match opts.range { RangeMethod::MinMax => "minmax".to_string(), RangeMethod::Percentile(p) => format!("percentile {p}") },
    });
    let meta = emit::Metadata {
        labels: opts.labels.clone(),
        model_card: opts.model_card.as_ref().map(|c| c.to_string()),
        producer: Some(producer.to_string()),
        reference_profile: None,
    };
    let package = emit::emit(&qnet, &plan, &meta)?;
    progress(Event::Stage("profile"));
    let reference = profile::build(&package, opts.calibration.as_ref())?;
    let meta = emit::Metadata { reference_profile: Some(reference.to_bytes()?), ..meta };
    let package = emit::emit(&qnet, &plan, &meta)?;
    progress(Event::Stage("verify"));
    let aligned = AlignedBytes::from_slice(&package);
    let model = Model::load(&aligned)
        .map_err(|e| anyhow::anyhow!("internal compiler error: the package fails validation: {e}"))?;

    let mut op_kinds = BTreeMap::new();
    for i in 0..model.op_count() {
        if let Some(op) = model.op(i) {
            *op_kinds.entry(op.code().name().to_string()).or_insert(0) += 1;
        }
    }
    let parameters = qnet
        .ops
        .iter()
        .map(|op| match op {
            quantize::QOp::Conv { w, b, .. }
            | quantize::QOp::Depthwise { w, b, .. }
            | quantize::QOp::Fc { w, b, .. } => w.q.len() + b.as_ref().map_or(0, Vec::len),
            _ => 0,
        })
        .sum();
    let io = |v: usize| IoSummary {
        name: qnet.values[v].name.clone(),
        shape: qnet.values[v].shape.clone(),
        scale: qnet.values[v].scale,
        zero_point: qnet.values[v].zero_point,
    };
    let report = Report {
        source: opts.source.clone(),
        producer: graph.producer.clone(),
        quantization,
        calibration_samples: opts.calibration.as_ref().map_or(0, CalibrationSet::len),
        ops: model.op_count(),
        op_kinds,
        macs: net.ops.iter().map(|o| o.macs(&net.values)).sum(),
        parameters,
        arena_bytes: model.arena_size(),
        arena_lower_bound: plan.peak_live,
        const_bytes: model.const_size(),
        package_bytes: package.len(),
        inputs: qnet.inputs.iter().map(|&v| io(v)).collect(),
        outputs: qnet.outputs.iter().map(|&v| io(v)).collect(),
        notes: qnet.notes.clone(),
    };
    Ok(Compiled { package, report, net })
}

/// Reads an ONNX file and compiles it (see [`compile`]).
///
/// # Errors
/// As [`compile`], plus I/O.
pub fn compile_path(path: &std::path::Path, opts: &Options, progress: &mut dyn FnMut(Event)) -> Result<Compiled> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    compile(&bytes, opts, progress).with_context(|| format!("compiling {}", path.display()))
}
