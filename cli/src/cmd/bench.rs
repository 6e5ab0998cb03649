//! `edgefleet bench`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use edgefleet_runtime::Interpreter;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::{load, read_package, thousands};
use crate::npy::{self, Values};

/// Arguments of `edgefleet bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The package (.efm).
    pub package: PathBuf,
    /// Timed runs.
    #[arg(short = 'n', long, default_value_t = 300)]
    pub runs: usize,
    /// Untimed warm-up runs.
    #[arg(long, default_value_t = 30)]
    pub warmup: usize,
    /// Input (.npy, int8 or float) [default: pseudo-random int8, fixed seed].
    #[arg(short, long, value_name = "NPY")]
    pub input: Option<PathBuf>,
    /// Print the statistics as JSON.
    #[arg(long)]
    pub json: bool,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Runs `edgefleet bench`.
pub fn run(a: Args) -> Result<()> {
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let bytes = read_package(&a.package)?;
    let model = load(&a.package, &bytes)?;
    let mut arena = vec![0u8; model.arena_size()];
    let inputs: Vec<Vec<i8>> = (0..model.input_count())
        .map(|i| {
            let n = model.input(i).map_or(0, |x| x.tensor.shape.elements());
            let mut state = 0x2545_F491_4F6C_DD1Du64 ^ i as u64;
            (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 56) as u8 as i8
                })
                .collect()
        })
        .collect();
    let mut it = Interpreter::new(&model, &mut arena)?;
    let given = match &a.input {
        Some(p) => Some(npy::read(p)?),
        None => None,
    };
    let fill = |it: &mut Interpreter| -> Result<()> {
        match &given {
            Some(t) => match &t.values {
                Values::I8(v) => {
                    let buf = it.input_mut(0)?;
                    let n = buf.len();
                    buf.copy_from_slice(
                        v.get(..n)
                            .ok_or_else(|| anyhow::anyhow!("the input has {} values, the model needs {n}", v.len()))?,
                    )
                }
                Values::F32(f) => {
                    let n = it.input_mut(0)?.len();
                    it.set_input_f32(
                        0,
                        f.get(..n)
                            .ok_or_else(|| anyhow::anyhow!("the input has {} values, the model needs {n}", f.len()))?,
                    )?
                }
            },
            None => {
                for (i, v) in inputs.iter().enumerate() {
                    it.input_mut(i)?.copy_from_slice(v);
                }
            }
        }
        Ok(())
    };
    let bar = ProgressBar::new((a.warmup + a.runs) as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix("bench");
    for _ in 0..a.warmup {
        fill(&mut it)?;
        it.invoke()?;
        bar.inc(1);
    }
    let mut times = Vec::with_capacity(a.runs);
    for _ in 0..a.runs {
        fill(&mut it)?;
        let t = Instant::now();
        it.invoke()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        bar.inc(1);
    }
    bar.finish_and_clear();
    times.sort_by(f64::total_cmp);
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let (median, p90, p99) = (percentile(&times, 50.0), percentile(&times, 90.0), percentile(&times, 99.0));
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "package": a.package, "runs": a.runs, "warmup": a.warmup,
                "median_ms": median, "p90_ms": p90, "p99_ms": p99, "min_ms": times[0], "mean_ms": mean,
                "arena_bytes": model.arena_size(), "kernels": "reference",
            }))?
        );
        return Ok(());
    }
    outln!("{}: {} runs after {} warm-up, reference kernels, 1 thread", a.package.display(), a.runs, a.warmup);
    outln!("  median {median:.4} ms   p90 {p90:.4} ms   p99 {p99:.4} ms   min {:.4} ms   mean {mean:.4} ms", times[0]);
    outln!("  arena {} bytes", thousands(model.arena_size() as u64));
    Ok(())
}
