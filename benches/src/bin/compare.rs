//! `compare`: runs the MLPerf Tiny models on our runtime and on its peers
//! (tract in-process; onnxruntime, LiteRT and TFLite Micro in one persistent
//! Python worker), single-threaded, in interleaved trials, and prints one
//! table of medians and ratios. See `benches/README.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use edgefleet_benches::engine::{Engine, parse_engines};
use edgefleet_benches::machine::Machine;
use edgefleet_benches::models::{DataDirs, ModelKey, parse_models};
use edgefleet_benches::ours::{Ours, kernels_in_use, ours_session};
use edgefleet_benches::report::{EngineInfo, RunInfo, format_ms, group_notes, render_table, to_json};
use edgefleet_benches::stats::{Measurements, median, schedule, table};
use edgefleet_benches::tract_peer::TractSession;
use edgefleet_benches::worker::{Hello, Worker};

/// Side-by-side latency of the MLPerf Tiny models: edgefleet (int8) against
/// tract, onnxruntime, LiteRT (XNNPACK) and TFLite Micro, single-threaded.
#[derive(Parser, Debug)]
#[command(
    name = "compare",
    args_override_self = true,
    after_help = "Examples:\n  benches/compare/run --quick\n  benches/compare/run --models kws,ic --engines litert,ort --json out.json"
)]
struct Args {
    /// Models, comma-separated: kws, vww, ic, ad.
    #[arg(long, default_value = "kws,vww,ic,ad")]
    models: String,
    /// Engines, comma-separated ids or families (tract, ort, litert, tflm, burn) [default: all in this build]; ours always runs.
    #[arg(long)]
    engines: Option<String>,
    /// Trials; each runs every (model, engine) pair once, interleaved.
    #[arg(long, default_value_t = 10)]
    trials: usize,
    /// Timed runs per pair per trial.
    #[arg(long, default_value_t = 300)]
    runs: usize,
    /// Untimed runs per pair after loading.
    #[arg(long, default_value_t = 30)]
    warmup: usize,
    /// Smoke run: 3 trials of 100 runs (overrides --trials and --runs).
    #[arg(long)]
    quick: bool,
    /// Python interpreter with numpy, onnxruntime, ai-edge-litert and tflite-micro.
    #[arg(long, default_value = "python3", value_name = "PATH")]
    python: PathBuf,
    /// The Python worker script.
    #[arg(long, value_name = "PATH", default_value_os_t = default_worker())]
    worker: PathBuf,
    /// MLPerf Tiny data folder(s), searched in order [default: testdata/mlperf-tiny, ../shared/models/mlperf-tiny].
    #[arg(long = "data", value_name = "DIR")]
    data: Vec<PathBuf>,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

fn default_worker() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("compare/worker.py")
}

/// A measured (model, engine) pair.
enum Session {
    Ours(Box<Ours>),
    Tract(Box<TractSession>),
    #[cfg(feature = "burn")]
    Burn(edgefleet_benches::burn_peer::BurnSession),
    Worker(String),
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=,:@%+".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn git_rev() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn progress(msg: &str) {
    eprintln!("compare: {msg}");
}

/// Times `runs` invokes of a pair after `warmup` untimed ones, in ms.
fn measure(session: &mut Session, worker: Option<&mut Worker>, runs: usize, warmup: usize) -> Result<Vec<f64>> {
    match session {
        Session::Ours(o) => ours_session(&o.owned, &o.input, |s| {
            for _ in 0..warmup {
                s.timed_run()?;
            }
            (0..runs).map(|_| Ok(s.timed_run()?.as_secs_f64() * 1e3)).collect()
        }),
        Session::Tract(t) => {
            for _ in 0..warmup {
                t.timed_run()?;
            }
            (0..runs).map(|_| Ok(t.timed_run()?.as_secs_f64() * 1e3)).collect()
        }
        #[cfg(feature = "burn")]
        Session::Burn(b) => {
            for _ in 0..warmup {
                b.timed_run();
            }
            Ok((0..runs).map(|_| b.timed_run().as_secs_f64() * 1e3).collect())
        }
        Session::Worker(id) => worker.context("no Python worker")?.run(id, runs, warmup),
    }
}

/// Runs our model once and compares its output with TFLite Micro's.
fn check_ours(key: ModelKey, o: &Ours) -> Result<String> {
    let out = ours_session(&o.owned, &o.input, |s| {
        s.set_input()?;
        s.invoke()?;
        Ok(s.output()?.to_vec())
    })?;
    Ok(match &o.reference_output {
        None => format!("{key}: no TFLite Micro reference output to check against"),
        Some(r) => {
            let diffs: Vec<i32> =
                out.iter().zip(r).map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs()).filter(|&d| d > 0).collect();
            if diffs.is_empty() {
                format!("{key}: output bit-exact with TFLite Micro")
            } else {
                format!(
                    "{key}: output DIFFERS from TFLite Micro in {} of {} values (max {} LSB)",
                    diffs.len(),
                    out.len(),
                    diffs.iter().max().unwrap_or(&0)
                )
            }
        }
    })
}

fn run(a: Args) -> Result<()> {
    let (trials, runs) = if a.quick { (3, 100) } else { (a.trials, a.runs) };
    if trials == 0 || runs == 0 {
        bail!("--trials and --runs must be at least 1");
    }
    let models = parse_models(&a.models)?;
    let engines: Vec<Engine> = match &a.engines {
        Some(list) => parse_engines(list)?,
        None => Engine::ALL.into_iter().filter(|e| e.available_in_build()).collect(),
    };
    let dirs = DataDirs::new(&a.data);
    let trial_warmup = (runs / 10).clamp(1, 30);
    let machine = Machine::probe();
    let command = std::env::args().map(|s| shell_quote(&s)).collect::<Vec<_>>().join(" ");

    println!("machine:  {}", machine.describe());
    println!("command:  {command}");
    println!(
        "method:   {trials} trials x {runs} runs per (model, engine), interleaved (order rotated each trial), \
         {} warm-up runs at load and {trial_warmup} per trial; figure = best of the trial medians; 1 thread everywhere",
        a.warmup
    );

    let mut failures: BTreeMap<(ModelKey, Engine), String> = BTreeMap::new();
    let mut notes: Vec<String> = Vec::new();
    let mut infos: BTreeMap<Engine, EngineInfo> = BTreeMap::new();
    let mut model_notes: BTreeMap<Engine, Vec<(ModelKey, String)>> = BTreeMap::new();
    let info = |infos: &mut BTreeMap<Engine, EngineInfo>, e: Engine, version: String| {
        infos.entry(e).or_insert(EngineInfo { engine: e, version, notes: Vec::new() });
    };

    // Ours.
    let forced =
        std::env::var("EDGEFLEET_KERNELS").ok().map(|v| format!(" (EDGEFLEET_KERNELS={v})")).unwrap_or_default();
    let git = git_rev().map(|r| format!(" (git {r})")).unwrap_or_default();
    info(&mut infos, Engine::Edgefleet, format!("edgefleet-runtime {}{git}", env!("CARGO_PKG_VERSION")));

    let mut sessions: Vec<((ModelKey, Engine), Session)> = Vec::new();
    for &m in &models {
        progress(&format!("{m}: compiling {} for edgefleet", m.onnx_int8_from_tflite()));
        match Ours::load(&dirs, m) {
            Ok(o) => {
                match check_ours(m, &o).and_then(|line| Ok((line, kernels_in_use(&o.owned, &o.input)?))) {
                    Ok((line, kernels)) => {
                        progress(&line);
                        notes.push(line);
                        model_notes
                            .entry(Engine::Edgefleet)
                            .or_default()
                            .push((m, format!("{kernels} kernels{forced}")));
                    }
                    Err(e) => {
                        failures.insert((m, Engine::Edgefleet), format!("{e:#}"));
                        continue;
                    }
                }
                if o.input_source.starts_with("pseudo-random") {
                    notes.push(format!("{m}: edgefleet input {}", o.input_source));
                }
                sessions.push(((m, Engine::Edgefleet), Session::Ours(Box::new(o))));
            }
            Err(e) => {
                progress(&format!("{m}: edgefleet FAILED: {e:#}"));
                failures.insert((m, Engine::Edgefleet), format!("{e:#}"));
            }
        }
    }

    if let Some(list) = model_notes.get(&Engine::Edgefleet) {
        println!("kernels:  edgefleet runs {}", group_notes(list, &models).join("; "));
    }

    // tract.
    for e in [Engine::TractFp32, Engine::TractInt8].into_iter().filter(|e| engines.contains(e)) {
        info(&mut infos, e, format!("tract-onnx {}", edgefleet_benches::TRACT_VERSION));
        for &m in &models {
            progress(&format!("{m}: loading {} in tract", e.model_file(m)));
            let loaded = dirs.find(&e.model_file(m)).and_then(|p| {
                let values = dirs
                    .find_optional(&e.input_file(m))
                    .map(|p| edgefleet_compiler::npy::read(&p).map(|t| t.to_f32()))
                    .transpose()?;
                TractSession::load(&p, values.as_deref())
            });
            match loaded {
                Ok(s) => sessions.push(((m, e), Session::Tract(Box::new(s)))),
                Err(err) => {
                    progress(&format!("{m}: {e} FAILED: {err:#}"));
                    failures.insert((m, e), format!("{err:#}"));
                }
            }
        }
    }

    // The Python worker.
    let worker_engines: Vec<Engine> = engines.iter().copied().filter(|e| e.worker_engine().is_some()).collect();
    let mut worker: Option<Worker> = None;
    let started = if worker_engines.is_empty() {
        None
    } else {
        match Worker::spawn(&a.python, &a.worker).and_then(|mut w| Ok((w.hello()?, w))) {
            Ok(x) => Some(x),
            Err(err) => {
                let msg = format!("{err:#}");
                progress(&format!("the Python engines are SKIPPED: {msg}"));
                for &e in &worker_engines {
                    for &m in &models {
                        failures.insert((m, e), msg.clone());
                    }
                }
                None
            }
        }
    };
    if let Some((hello, mut w)) = started {
        let py = format!("Python {} ({}), numpy {}", hello.python, hello.executable, ver(&hello, "numpy"));
        println!("worker:   {py}");
        notes.push(format!("worker: {py}"));
        for &e in &worker_engines {
            let (dist, name) = match e.worker_engine() {
                Some("ort") => ("onnxruntime", "ort"),
                Some("litert") => ("ai-edge-litert", "litert"),
                _ => ("tflite-micro", "tflm"),
            };
            info(&mut infos, e, format!("{dist} {}", ver(&hello, dist)));
            if let Some(err) = hello.errors.get(name) {
                let msg = format!("{err} (install it in that Python, or use benches/compare/run)");
                progress(&format!("{e}: SKIPPED: {msg}"));
                for &m in &models {
                    failures.insert((m, e), msg.clone());
                }
                continue;
            }
            for &m in &models {
                let id = format!("{m}/{e}");
                progress(&format!("{m}: loading {} in {e}", e.model_file(m)));
                let loaded = dirs.find(&e.model_file(m)).and_then(|p| {
                    let input = dirs.find_optional(&e.input_file(m));
                    w.load(&id, name, &p, input.as_deref(), a.warmup)
                });
                match loaded {
                    Ok(l) => {
                        let input = if l.input == "pseudo-random" { " (pseudo-random input)" } else { "" };
                        model_notes.entry(e).or_default().push((m, format!("{}{input}", l.info)));
                        sessions.push(((m, e), Session::Worker(id)));
                    }
                    Err(err) => {
                        progress(&format!("{m}: {e} FAILED: {err:#}"));
                        failures.insert((m, e), format!("{err:#}"));
                    }
                }
            }
        }
        worker = Some(w);
    }
    // burn.
    for e in [Engine::BurnNdarray, Engine::BurnFlex].into_iter().filter(|e| engines.contains(e)) {
        if !e.available_in_build() {
            for &m in &models {
                failures.insert((m, e), "built without the `burn` feature (cargo build --features burn)".into());
            }
            continue;
        }
        #[cfg(feature = "burn")]
        {
            use edgefleet_benches::burn_peer::{BURN_VERSION, Backend, BurnSession};
            info(&mut infos, e, format!("burn {BURN_VERSION} (burn-onnx import)"));
            let backend = if e == Engine::BurnFlex { Backend::Flex } else { Backend::Ndarray };
            for &m in &models {
                progress(&format!("{m}: loading the burn import of {} on {e}", e.model_file(m)));
                let loaded = dirs
                    .find_optional(&e.input_file(m))
                    .map(|p| edgefleet_compiler::npy::read(&p).map(|t| t.to_f32()))
                    .transpose()
                    .and_then(|values| BurnSession::load(m, backend, values.as_deref()));
                match loaded {
                    Ok(s) => sessions.push(((m, e), Session::Burn(s))),
                    Err(err) => {
                        progress(&format!("{m}: {e} FAILED: {err:#}"));
                        failures.insert((m, e), format!("{err:#}"));
                    }
                }
            }
        }
    }
    if sessions.is_empty() {
        bail!("nothing to measure: every (model, engine) pair failed to load (see above)");
    }

    // Load-time warm-up of in-process engines (the worker warmed up at load).
    for (_, s) in sessions.iter_mut() {
        if !matches!(s, Session::Worker(_)) {
            measure(s, None, 0, a.warmup)?;
        }
    }

    // Trials.
    let mut m = Measurements::default();
    let order: Vec<usize> = (0..sessions.len()).collect();
    for t in 0..trials {
        let started = Instant::now();
        for i in schedule(&order, t) {
            let ((model, engine), session) = &mut sessions[i];
            match measure(session, worker.as_mut(), runs, trial_warmup) {
                Ok(times) => {
                    if let Some(med) = median(&times) {
                        m.record(*model, *engine, med);
                    }
                }
                Err(err) => {
                    let err = format!("{err:#}");
                    progress(&format!("trial {}: {model} {engine} FAILED: {err}", t + 1));
                    if matches!(session, Session::Worker(_)) && err.contains("Python worker") {
                        bail!("{err}");
                    }
                    failures.entry((*model, *engine)).or_insert(err);
                }
            }
        }
        let ours: Vec<String> = models
            .iter()
            .filter_map(|&k| m.trials(k, Engine::Edgefleet).last().map(|v| format!("{k} {}", format_ms(*v))))
            .collect();
        progress(&format!(
            "trial {}/{trials} done in {:.1} s (edgefleet medians, ms: {})",
            t + 1,
            started.elapsed().as_secs_f64(),
            ours.join(", ")
        ));
    }
    drop(worker);

    // Report.
    let shown: Vec<Engine> =
        engines.iter().copied().filter(|e| e.available_in_build() || failures.keys().any(|k| k.1 == *e)).collect();
    let rows = table(&models, &shown, &m);
    println!();
    println!("median latency, ms (best of {trials} trial medians of {runs} runs; 1 thread)");
    println!();
    println!("{}", render_table(&rows, &shown, &failures));
    println!();
    for (e, list) in &model_notes {
        if let Some(i) = infos.get_mut(e) {
            i.notes = group_notes(list, &models);
        }
    }
    let engine_infos: Vec<EngineInfo> = shown.iter().filter_map(|e| infos.get(e).cloned()).collect();
    for i in &engine_infos {
        println!("{:<12} {}", i.engine.id(), i.version);
        for n in &i.notes {
            println!("{:<12}   {n}", "");
        }
    }
    if !failures.is_empty() {
        println!();
        println!("not measured:");
        for ((model, engine), why) in &failures {
            println!("  {model} {engine}: {why}");
        }
    }
    for n in notes.iter().filter(|n| n.contains("DIFFERS")) {
        println!("WARNING: {n}");
    }
    let run_info = RunInfo {
        machine,
        command,
        trials,
        runs,
        warmup: a.warmup,
        trial_warmup,
        engines: engine_infos,
        failures,
        notes,
    };
    if let Some(path) = &a.json {
        let doc = to_json(&run_info, &rows, &m);
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        progress(&format!("wrote {}", path.display()));
    }
    if rows.iter().all(|r| r.ours.is_none()) {
        bail!("edgefleet produced no numbers (see 'not measured' above)");
    }
    Ok(())
}

fn ver(h: &Hello, dist: &str) -> String {
    h.versions.get(dist).cloned().flatten().unwrap_or_else(|| "not installed".into())
}

fn main() {
    // One thread for every pool an engine might start (burn's rayon and
    // matrixmultiply); the Python worker gets the same through its environment.
    for (k, v) in [("RAYON_NUM_THREADS", "1"), ("MATMUL_NUM_THREADS", "1"), ("OMP_NUM_THREADS", "1")] {
        if std::env::var_os(k).is_none() {
            // SAFETY: first thing in main, before any other thread exists.
            unsafe { std::env::set_var(k, v) };
        }
    }
    if let Err(e) = run(Args::parse()) {
        eprintln!("compare: error: {e:#}");
        std::process::exit(1);
    }
}
