//! `edgefleet bench`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use edgefleet_runtime::{Interpreter, PackedWeights, ThreadPool};
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
    /// Also time every op on its own (median over the runs) and print where
    /// the time goes, with each op's MACs per second.
    #[arg(long)]
    pub per_op: bool,
    /// Threads per inference (the calling one included): convolutions,
    /// depthwise convolutions, pooling and adds are split by output rows
    /// among them, with bit-identical results. 1 is the default mode;
    /// small models gain little (each split costs a thread wake-up).
    #[arg(short = 't', long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,
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
    let packed = PackedWeights::for_model(&model);
    let pool = ThreadPool::new(usize::from(a.threads))?;
    let mut it = Interpreter::new(&model, &mut arena)?.with_packed(&packed);
    if a.threads > 1 {
        it = it.with_parallel(&pool);
    }
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
    let ops = model.op_count();
    let mut op_times: Vec<Vec<f64>> = vec![Vec::with_capacity(if a.per_op { a.runs } else { 0 }); ops];
    for _ in 0..a.runs {
        fill(&mut it)?;
        let t = Instant::now();
        it.invoke()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        if a.per_op {
            fill(&mut it)?;
            for (i, samples) in op_times.iter_mut().enumerate() {
                let t = Instant::now();
                it.invoke_op(i)?;
                samples.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let kernels = it.kernels();
    let per_op: Vec<(usize, String, u64, f64)> = op_times
        .iter_mut()
        .enumerate()
        .filter(|(_, s)| !s.is_empty())
        .map(|(i, s)| {
            s.sort_by(f64::total_cmp);
            let op = model.op(i);
            let name = op.as_ref().map_or_else(|| "?".to_string(), |op| format!("{:?}", op.code()));
            let macs = op.as_ref().map_or(0, |op| super::inspect::op_macs(&model, op));
            (i, name, macs, percentile(s, 50.0))
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let (median, p90, p99) = (percentile(&times, 50.0), percentile(&times, 90.0), percentile(&times, 99.0));
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "package": a.package, "runs": a.runs, "warmup": a.warmup,
                "median_ms": median, "p90_ms": p90, "p99_ms": p99, "min_ms": times[0], "mean_ms": mean,
                "arena_bytes": model.arena_size(), "kernels": kernels.name(), "threads": a.threads,
                "per_op": per_op.iter().map(|(i, name, macs, ms)| json!({"op": i, "kind": name, "macs": macs, "median_ms": ms})).collect::<Vec<_>>(),
            }))?
        );
        return Ok(());
    }
    let threads = if a.threads == 1 { "1 thread".to_string() } else { format!("{} threads", a.threads) };
    outln!("{}: {} runs after {} warm-up, {kernels} kernels, {threads}", a.package.display(), a.runs, a.warmup);
    outln!("  median {median:.4} ms   p90 {p90:.4} ms   p99 {p99:.4} ms   min {:.4} ms   mean {mean:.4} ms", times[0]);
    outln!("  arena {} bytes", thousands(model.arena_size() as u64));
    if !per_op.is_empty() {
        let total: f64 = per_op.iter().map(|p| p.3).sum();
        outln!("  {:>3}  {:<16} {:>11} {:>10} {:>6} {:>9}", "op", "kind", "MACs", "ms", "share", "GMAC/s");
        for (i, name, macs, ms) in &per_op {
            let rate = if *macs > 0 && *ms > 0.0 { format!("{:.1}", *macs as f64 / (ms * 1e6)) } else { String::new() };
            outln!(
                "  {i:>3}  {name:<16} {:>11} {ms:>10.4} {:>5.1}% {rate:>9}",
                thousands(*macs),
                100.0 * ms / total.max(f64::MIN_POSITIVE)
            );
        }
        outln!("  sum of per-op medians {total:.4} ms");
    }
    Ok(())
}
