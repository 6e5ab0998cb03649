//! `edgefleet simulate`: N devices in one process against a fleet server
//! (see [`crate::sim`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::sim;

/// Arguments of `edgefleet simulate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Devices to simulate.
    #[arg(long, short = 'n', default_value_t = 100)]
    pub devices: usize,
    /// Signed root of trust the devices pin (the server's root.signed).
    #[arg(long, value_name = "FILE")]
    pub root: Option<PathBuf>,
    /// Device classes and their shares: platform:hardware:group=share,...
    #[arg(
        long,
        default_value = "linux-arm:rpi4:field=40,android:pixel7:field=30,ios:iphone14:field=20,mcu:stm32h7:sensors=10"
    )]
    pub mix: String,
    /// Where device state lives (one directory per device; reused on the next run).
    #[arg(long, default_value = "edgefleet-sim", value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Device id prefix.
    #[arg(long, default_value = "sim-")]
    pub prefix: String,
    /// Telemetry interval per device.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub telemetry_interval: Duration,
    /// Mean time between inferences per device (0s: none).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub infer_interval: Duration,
    /// Package chunk size, bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    pub chunk_size: u32,
    /// Broker host:port, instead of the one the server names at enrollment.
    #[arg(long, value_name = "HOST:PORT")]
    pub mqtt: Option<String>,
    /// Inputs for a model id: MODEL=FILE.npy (samples along the first axis). kws and ad come
    /// from the repository's testdata when found.
    #[arg(long = "inputs", value_name = "MODEL=FILE")]
    pub inputs: Vec<String>,
    /// Inject input drift on devices running a version: VERSION=FRACTION (e.g. 3.0=0.5).
    #[arg(long, value_name = "VERSION=FRACTION")]
    pub drift: Option<String>,
    /// Stop after this long [default: run until Ctrl-C].
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,
    /// Status line interval.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub report_every: Duration,
    /// Write the final summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
    #[command(flatten)]
    pub conn: crate::cmd::fleet::Conn,
}

/// Raises the open-file limit to the hard limit (every device holds an MQTT socket).
pub fn raise_fd_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0)
}

/// `edgefleet simulate`.
pub fn run(a: Args) -> Result<()> {
    edgefleet_agent::logging::init_with(false, "warn");
    if a.devices == 0 {
        bail!("--devices must be at least 1");
    }
    let fds = raise_fd_limit();
    if fds != 0 && (fds as usize) < a.devices + 256 {
        eprintln!("warning: {fds} open files allowed; {} devices need about one each", a.devices);
    }
    let token = crate::cmd::fleet::token(&a.conn)?;
    let root = match &a.root {
        Some(r) => r.clone(),
        None => {
            let p = a.conn.data_dir.join("root.signed");
            if !p.exists() {
                bail!("give --root (the signed root of trust devices pin; a local server keeps it in {})", p.display());
            }
            p
        }
    };
    let mut inputs = sim::find_testdata().map(|t| sim::Inputs::builtin(&t)).unwrap_or_default();
    for spec in &a.inputs {
        let (model, file) =
            spec.split_once('=').with_context(|| format!("--inputs {spec:?}: expected MODEL=FILE.npy"))?;
        inputs.add_npy(model, file.as_ref())?;
    }
    let drift = match &a.drift {
        Some(d) => {
            let (v, f) = d.split_once('=').with_context(|| format!("--drift {d:?}: expected VERSION=FRACTION"))?;
            let fraction: f64 = f
                .parse()
                .ok()
                .filter(|x| (0.0..=1.0).contains(x))
                .with_context(|| format!("--drift {d:?}: fraction in 0..1"))?;
            Some(sim::Drift { version: v.into(), fraction, devices: None })
        }
        None => None,
    };
    let o = sim::Options {
        server: a.conn.server.clone(),
        token,
        root: std::fs::canonicalize(&root).with_context(|| format!("root of trust {}", root.display()))?,
        mqtt: a.mqtt.clone(),
        devices: a.devices,
        classes: sim::parse_mix(&a.mix)?,
        state_dir: a.state_dir.clone(),
        prefix: a.prefix.clone(),
        telemetry: a.telemetry_interval,
        infer_every: a.infer_interval,
        chunk_size: a.chunk_size,
        drift: Arc::new(std::sync::RwLock::new(drift)),
    };
    std::fs::create_dir_all(&o.state_dir).with_context(|| format!("creating {}", o.state_dir.display()))?;
    let bar = indicatif::ProgressBar::new(a.devices as u64).with_style(
        indicatif::ProgressStyle::with_template("enrolling {bar:30} {pos}/{len} devices {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let specs = sim::enroll(&o, &mut |n| bar.set_position(n as u64))?;
    bar.finish_and_clear();
    eprintln!("{} devices enrolled ({}); models with inputs: {}", specs.len(), a.mix, inputs.models().join(", "));

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let summary = rt.block_on(async {
        let fleet = sim::start(&o, specs, Arc::new(inputs))?;
        let started = Instant::now();
        let stop = async {
            match a.duration {
                Some(d) => tokio::time::sleep(d).await,
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        tokio::pin!(stop);
        let mut every = tokio::time::interval(a.report_every);
        every.tick().await;
        let mut last = 0u64;
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = every.tick() => {
                    let (connected, spooled) = fleet.connectivity();
                    let n = fleet.stats.inferences.load(Ordering::Relaxed);
                    let rate = (n - last) as f64 / a.report_every.as_secs_f64();
                    last = n;
                    let versions: Vec<String> = fleet.versions().into_iter().map(|((p, v), c)| format!("{p} {v}: {c}")).collect();
                    eprintln!("[{:>5.0} s] {connected}/{} connected, {rate:.0} inferences/s, {spooled} uplinks spooled | {}",
                        started.elapsed().as_secs_f64(), fleet.devices.len(), versions.join(", "));
                }
            }
        }
        let (connected, spooled) = fleet.connectivity();
        let summary = serde_json::json!({
            "devices": fleet.devices.len(),
            "connected": connected,
            "spooled_uplinks": spooled,
            "inferences": fleet.stats.inferences.load(Ordering::Relaxed),
            "refused": fleet.stats.refused.load(Ordering::Relaxed),
            "drifted": fleet.stats.drifted.load(Ordering::Relaxed),
            "versions": fleet.versions().into_iter().map(|((p, v), c)| serde_json::json!({"platform": p, "live": v, "devices": c})).collect::<Vec<_>>(),
            "seconds": started.elapsed().as_secs_f64(),
        });
        fleet.shutdown().await;
        anyhow::Ok(summary)
    })?;
    outln!("{}", serde_json::to_string_pretty(&summary)?);
    if let Some(p) = &a.summary {
        crate::cmd::write_atomic(p, serde_json::to_string_pretty(&summary)?.as_bytes())?;
    }
    Ok(())
}
