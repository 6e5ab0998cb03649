//! `edgefleet compile`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use edgefleet_compiler::{CalibrationSet, Event, Options, RangeMethod};
use indicatif::{ProgressBar, ProgressStyle};

use super::{shape_str, thousands, write_atomic};

/// Arguments of `edgefleet compile`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The ONNX model to compile.
    pub model: PathBuf,
    /// Where to write the package [default: the model path with extension .efm].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Calibration inputs for fp32 models: an .npy array [N, ...] of N samples, each the size
    /// of the model input (float, int or uint8 values).
    #[arg(long, value_name = "NPY")]
    pub calibration: Option<PathBuf>,
    /// Multiply calibration values by this before use (e.g. 0.00392156862745098 = 1/255 for uint8
    /// images and a model that expects [0, 1]).
    #[arg(long, default_value_t = 1.0, value_name = "S")]
    pub calibration_scale: f32,
    /// Add this to calibration values after scaling.
    #[arg(long, default_value_t = 0.0, value_name = "O", allow_negative_numbers = true)]
    pub calibration_offset: f32,
    /// How activation ranges are chosen from calibration data: `minmax`, or `percentile:P`
    /// (e.g. percentile:99.99) to clip outliers.
    #[arg(long, default_value = "minmax", value_parser = parse_range, value_name = "METHOD")]
    pub range: RangeMethod,
    /// Class labels of the first output: comma-separated, or @FILE with one label per line.
    #[arg(long, value_name = "LABELS")]
    pub labels: Option<String>,
    /// A model card (JSON file) to embed in the package.
    #[arg(long, value_name = "JSON")]
    pub model_card: Option<PathBuf>,
    /// Print the compile report as JSON on stdout instead of a summary.
    #[arg(long)]
    pub json: bool,
}

fn parse_range(s: &str) -> Result<RangeMethod, String> {
    if s == "minmax" {
        return Ok(RangeMethod::MinMax);
    }
    if let Some(p) = s.strip_prefix("percentile:") {
        let p: f64 = p.parse().map_err(|_| format!("'{p}' is not a number"))?;
        if !(50.0..=100.0).contains(&p) {
            return Err(format!("percentile {p} must be within 50..=100"));
        }
        return Ok(RangeMethod::Percentile(p));
    }
    Err(format!("unknown range method '{s}': use minmax or percentile:P"))
}

fn read_labels(spec: &str) -> Result<Vec<String>> {
    let labels: Vec<String> = if let Some(file) = spec.strip_prefix('@') {
        std::fs::read_to_string(file)
            .with_context(|| format!("reading labels from {file}"))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    } else {
        spec.split(',').map(|l| l.trim().to_string()).collect()
    };
    if labels.iter().any(String::is_empty) || labels.is_empty() {
        bail!("labels must be non-empty");
    }
    Ok(labels)
}

/// Runs `edgefleet compile`.
pub fn run(a: Args) -> Result<()> {
    let output = a.output.clone().unwrap_or_else(|| crate::with_extension(&a.model, "efm"));
    let onnx = std::fs::read(&a.model).with_context(|| format!("reading {}", a.model.display()))?;
    let labels = a.labels.as_deref().map(read_labels).transpose()?;
    let model_card = match &a.model_card {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Some(serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", p.display()))?)
        }
        None => None,
    };
    let calibration = match &a.calibration {
        Some(p) => {
            let t = edgefleet_compiler::npy::read(p)?;
            // The input size is known only after lowering; compile() checks each sample.
            let (net, _, _) =
                edgefleet_compiler::lower_onnx(&onnx).with_context(|| format!("compiling {}", a.model.display()))?;
            let first = *net.inputs.first().context("the model has no inputs")?;
            if net.inputs.len() != 1 {
                bail!("--calibration supports single-input models; this one has {} inputs", net.inputs.len());
            }
            let set = CalibrationSet::from_tensor(&t, net.elements(first), a.calibration_scale, a.calibration_offset)
                .with_context(|| format!("calibration data {}", p.display()))?;
            Some(set)
        }
        None => None,
    };
    let source = a.model.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let opts = Options { calibration, range: a.range, labels: labels.into_iter().collect(), model_card, source };

    let bar = ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix:>10} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_prefix("compile");
    let mut calibrating = false;
    let compiled = edgefleet_compiler::compile(&onnx, &opts, &mut |e| match e {
        Event::Stage(s) => {
            if calibrating && s != "calibrate" {
                calibrating = false;
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:>10} {wide_msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
            }
            bar.set_message(s.to_string());
        }
        Event::Step { done, total } => {
            if !calibrating {
                calibrating = true;
                bar.set_length(total as u64);
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:>10} [{bar:30}] {pos}/{len} samples {eta}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                bar.set_message("calibrate");
            }
            bar.set_position(done as u64);
        }
    });
    bar.finish_and_clear();
    let compiled = compiled.with_context(|| format!("compiling {}", a.model.display()))?;
    write_atomic(&output, &compiled.package)?;

    let r = &compiled.report;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&serde_json::json!({ "output": output, "report": r }))?);
        return Ok(());
    }
    let kinds: Vec<String> = r.op_kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let quant = match r.quantization.as_str() {
        "qdq" => "QDQ: the model's own scales and zero points".to_string(),
        "calibrated" => format!("calibrated on {} samples ({})", r.calibration_samples, range_name(a.range)),
        _ => format!("QDQ plus calibration on {} samples", r.calibration_samples),
    };
    outln!("compiled {} -> {}", a.model.display(), output.display());
    outln!("  quantization  {quant}");
    outln!("  ops           {} ({})", r.ops, kinds.join(", "));
    outln!("  parameters    {}   MACs {}", thousands(r.parameters as u64), thousands(r.macs));
    outln!(
        "  arena         {} bytes (lower bound {})",
        thousands(r.arena_bytes as u64),
        thousands(r.arena_lower_bound as u64)
    );
    outln!(
        "  size          {} bytes ({} of constants)",
        thousands(r.package_bytes as u64),
        thousands(r.const_bytes as u64)
    );
    for (kind, list) in [("input", &r.inputs), ("output", &r.outputs)] {
        for io in list {
            outln!(
                "  {kind:<13} {} {} int8, scale {} zero point {}",
                io.name,
                shape_str(&io.shape),
                io.scale,
                io.zero_point
            );
        }
    }
    for n in &r.notes {
        outln!("  note          {n}");
    }
    Ok(())
}

fn range_name(r: RangeMethod) -> String {
    match r {
        RangeMethod::MinMax => "min/max".into(),
        RangeMethod::Percentile(p) => format!("percentile {p}"),
    }
}
