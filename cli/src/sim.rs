//! The fleet simulator: many devices in one process. Each device is the
//! real agent ([`edgefleet_agent::run_embedded`]): its own key, enrollment,
//! MQTT connection and credentials, state directory (A/B slots, spool),
//! update state machine, runtime and telemetry. Only the app that feeds it
//! is simulated: a task per device calls the agent's engine (as the local
//! API would) with inputs drawn from a model's calibration data, optionally
//! shifted to inject drift.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// A device class in the simulated fleet.
#[derive(Clone, Debug, PartialEq)]
pub struct Class {
    /// `android`, `ios`, `linux-arm`, `linux` or `mcu`.
    pub platform: String,
    /// Hardware id.
    pub hardware: String,
    /// Static group.
    pub group: String,
    /// Relative share of the fleet.
    pub share: f64,
}

/// Parses `platform:hardware:group=share,...`.
///
/// # Errors
/// A malformed entry, with what was expected.
pub fn parse_mix(s: &str) -> Result<Vec<Class>> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (spec, share) = part.split_once('=').unwrap_or((part, "1"));
        let f: Vec<&str> = spec.trim().split(':').collect();
        let [platform, hardware, group] = f[..] else {
            bail!("--mix entry {part:?}: expected platform:hardware:group=share, e.g. linux-arm:rpi4:field=40");
        };
        let share: f64 = share
            .trim()
            .parse()
            .ok()
            .filter(|x: &f64| *x > 0.0)
            .with_context(|| format!("--mix entry {part:?}: share must be a positive number"))?;
        out.push(Class { platform: platform.into(), hardware: hardware.into(), group: group.into(), share });
    }
    if out.is_empty() {
        bail!("--mix is empty");
    }
    Ok(out)
}

/// Splits `n` devices over the classes by share (largest remainders).
pub fn allocate(n: usize, classes: &[Class]) -> Vec<usize> {
    let total: f64 = classes.iter().map(|c| c.share).sum();
    let exact: Vec<f64> = classes.iter().map(|c| n as f64 * c.share / total).collect();
    let mut counts: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let mut order: Vec<usize> = (0..classes.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
    let mut left = n - counts.iter().sum::<usize>();
    for i in order.into_iter().cycle() {
        if left == 0 {
            break;
        }
        counts[i] += 1;
        left -= 1;
    }
    counts
}

/// Inputs per model id, and how to shift them.
#[derive(Default)]
pub struct Inputs {
    pools: HashMap<String, Vec<Vec<f32>>>,
}

impl Inputs {
    /// Adds samples (rows of `.npy` data) for a model id.
    pub fn add(&mut self, model: &str, samples: Vec<Vec<f32>>) {
        self.pools.insert(model.to_string(), samples);
    }

    /// Reads an `.npy` file of samples (first dimension) for a model id.
    ///
    /// # Errors
    /// Unreadable or empty file.
    pub fn add_npy(&mut self, model: &str, path: &Path) -> Result<()> {
        let t = crate::npy::read(path)?;
        let n = t.shape.first().copied().unwrap_or(1).max(1);
        let data = t.to_f32();
        let per = data.len() / n;
        if per == 0 {
            bail!("{}: no samples", path.display());
        }
        self.add(model, data.chunks_exact(per).map(<[f32]>::to_vec).collect());
        Ok(())
    }

    /// Built-in samples from the repository's MLPerf Tiny test data, under
    /// the model ids `kws` and `ad`, if `testdata` is found.
    pub fn builtin(testdata: &Path) -> Inputs {
        let mut i = Inputs::default();
        let _ = i.add_npy("kws", &testdata.join("calib/kws_calib_f32.npy"));
        let ad: Vec<Vec<f32>> = ["real", "seeded"]
            .iter()
            .filter_map(|n| crate::npy::read(&testdata.join(format!("ref/ad/{n}.input_f32.npy"))).ok())
            .map(|t| t.to_f32())
            .collect();
        if !ad.is_empty() {
            i.add("ad", ad_samples(&ad, 64));
        }
        i
    }

    fn sample(&self, model: &str, r: u64) -> Option<&[f32]> {
        let p = self.pools.get(model)?;
        (!p.is_empty()).then(|| p[(r >> 33) as usize % p.len()].as_slice())
    }

    /// Models with samples.
    pub fn models(&self) -> Vec<String> {
        let mut m: Vec<String> = self.pools.keys().cloned().collect();
        m.sort();
        m
    }
}

/// Deterministic variations of the anomaly-detection reference inputs
/// (log-mel frames): each sample is one reference input with small noise.
pub fn ad_samples(base: &[Vec<f32>], n: usize) -> Vec<Vec<f32>> {
    let mut r = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|i| {
            base[i % base.len()]
                .iter()
                .map(|&x| {
                    r = r.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    x + ((r >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
                })
                .collect()
        })
        .collect()
}

/// +6 dB on the power spectrum of a KWS input: every log-mel bin rises by
/// ln 4, which the orthonormal DCT puts in MFCC 0 as ln 4 · √40.
pub fn louder_kws(x: &[f32]) -> Vec<f32> {
    let shift = 4f32.ln() * 40f32.sqrt();
    x.iter().enumerate().map(|(i, &v)| if i % 10 == 0 { v + shift } else { v }).collect()
}

/// A drift to inject: devices running `version` see shifted inputs (as if
/// a broken audio front end shipped with it): the devices named, or else
/// those whose id hashes below `fraction`.
#[derive(Clone, Debug, Default)]
pub struct Drift {
    /// Model version that brings the drift.
    pub version: String,
    /// Share of its devices affected, 0..=1.
    pub fraction: f64,
    /// Exactly these devices instead.
    pub devices: Option<std::collections::HashSet<String>>,
}

impl Drift {
    fn hits(&self, device: &str, version: &str) -> bool {
        version == self.version
            && match &self.devices {
                Some(d) => d.contains(device),
                None => hash01(device) < self.fraction,
            }
    }
}

/// The drift in effect, changeable while the fleet runs.
pub type SharedDrift = Arc<std::sync::RwLock<Option<Drift>>>;

/// What to simulate.
#[derive(Clone)]
pub struct Options {
    /// Fleet server base URL.
    pub server: String,
    /// API token.
    pub token: String,
    /// Signed root of trust devices pin.
    pub root: PathBuf,
    /// Broker `host:port` to use instead of the one enrollment names.
    pub mqtt: Option<String>,
    /// Devices.
    pub devices: usize,
    /// Classes.
    pub classes: Vec<Class>,
    /// Where device state lives (one directory per device).
    pub state_dir: PathBuf,
    /// Device id prefix.
    pub prefix: String,
    /// Telemetry interval.
    pub telemetry: Duration,
    /// Mean time between inferences per device (0: no traffic).
    pub infer_every: Duration,
    /// Package chunk size.
    pub chunk_size: u32,
    /// Drift to inject.
    pub drift: SharedDrift,
}

/// Credentials of an enrolled simulated device (kept in its state directory
/// so a simulator restarted on the same directory resumes the same fleet).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct DeviceSpec {
    /// Id.
    pub id: String,
    /// Platform.
    pub platform: String,
    /// Hardware id.
    pub hardware: String,
    /// Group.
    pub group: String,
    /// Broker `host:port`.
    pub mqtt: String,
    /// MQTT password.
    pub password: String,
    /// Downlink sealing key.
    pub downlink_key: String,
}

fn agent(server: &str, token: &str) -> (ureq::Agent, String, String) {
    let a: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    (a, server.trim_end_matches('/').to_string(), format!("Bearer {token}"))
}

/// Enrolls the fleet (or reads what an earlier run enrolled), eight
/// devices at a time, calling `progress` with the number done.
///
/// # Errors
/// The server refuses (e.g. an id enrolled by someone else), or state cannot be written.
pub fn enroll(o: &Options, progress: &mut dyn FnMut(usize)) -> Result<Vec<DeviceSpec>> {
    let counts = allocate(o.devices, &o.classes);
    let mut todo: Vec<(String, &Class)> = Vec::with_capacity(o.devices);
    for (class, &n) in o.classes.iter().zip(&counts) {
        for i in 0..n {
            todo.push((format!("{}{}-{i:05}", o.prefix, class.platform), class));
        }
    }
    let done = AtomicU64::new(0);
    let per = todo.len().div_ceil(8).max(1);
    let results: Vec<Result<Vec<DeviceSpec>>> = std::thread::scope(|s| {
        let handles: Vec<_> = todo
            .chunks(per)
            .map(|chunk| {
                let done = &done;
                s.spawn(move || {
                    let (http, base, auth) = agent(&o.server, &o.token);
                    chunk
                        .iter()
                        .map(|(id, class)| {
                            let r = enroll_one(o, &http, &base, &auth, id, class);
                            done.fetch_add(1, Ordering::Relaxed);
                            r
                        })
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        while !handles.iter().all(|h| h.is_finished()) {
            progress(done.load(Ordering::Relaxed) as usize);
            std::thread::sleep(Duration::from_millis(100));
        }
        progress(done.load(Ordering::Relaxed) as usize);
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("enrollment thread panicked"))))
            .collect()
    });
    let mut out = Vec::with_capacity(o.devices);
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

fn enroll_one(o: &Options, http: &ureq::Agent, base: &str, auth: &str, id: &str, class: &Class) -> Result<DeviceSpec> {
    let dir = o.state_dir.join(id);
    let saved = dir.join("enrolled.json");
    if let Ok(text) = std::fs::read_to_string(&saved)
        && let Ok(spec) = serde_json::from_str::<DeviceSpec>(&text)
    {
        return Ok(spec);
    }
    let store = edgefleet_agent::store::Store::open(&dir.join("state"))?;
    let key = store.device_key()?;
    let body = json!({"id": id, "platform": class.platform, "hardware_id": class.hardware,
        "public_key": edgefleet_protocol::hex32(&key.public().0), "groups": [class.group]});
    let mut r = http
        .post(format!("{base}/api/v1/devices"))
        .header("authorization", auth)
        .send_json(&body)
        .with_context(|| format!("enrolling {id}: cannot reach {base}"))?;
    let status = r.status();
    let v: Value = r.body_mut().read_json().unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("enrolling {id}: {status}: {}", v["error"].as_str().unwrap_or("?"));
    }
    let spec = DeviceSpec {
        id: id.to_string(),
        platform: class.platform.clone(),
        hardware: class.hardware.clone(),
        group: class.group.clone(),
        mqtt: o.mqtt.clone().unwrap_or_else(|| v["mqtt"].as_str().unwrap_or("127.0.0.1:1883").to_string()),
        password: v["mqtt_password"].as_str().unwrap_or_default().to_string(),
        downlink_key: v["downlink_key"].as_str().unwrap_or_default().to_string(),
    };
    crate::cmd::write_atomic(&saved, serde_json::to_string(&spec)?.as_bytes())?;
    Ok(spec)
}

/// Counters over the whole simulated fleet.
#[derive(Default)]
pub struct Stats {
    /// Inferences answered.
    pub inferences: AtomicU64,
    /// Inferences refused (no model yet, swapping).
    pub refused: AtomicU64,
    /// Inferences with injected drift.
    pub drifted: AtomicU64,
}

/// A running simulated fleet.
pub struct Fleet {
    /// Devices and their agents' handles (once up).
    pub devices: Vec<(DeviceSpec, Arc<std::sync::OnceLock<edgefleet_agent::Handle>>)>,
    /// Counters.
    pub stats: Arc<Stats>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
}

fn hash01(s: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Starts every device's agent and traffic on the current tokio runtime.
///
/// # Errors
/// A device's configuration is invalid.
pub fn start(o: &Options, specs: Vec<DeviceSpec>, inputs: Arc<Inputs>) -> Result<Fleet> {
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let stats = Arc::new(Stats::default());
    let mut tasks = tokio::task::JoinSet::new();
    let mut devices = Vec::with_capacity(specs.len());
    for spec in specs {
        let (host, port) = spec.mqtt.rsplit_once(':').context("broker address host:port")?;
        let mut cfg = edgefleet_agent::Config {
            device_id: spec.id.clone(),
            hardware_id: spec.hardware.clone(),
            platform: spec.platform.clone(),
            groups: vec![spec.group.clone()],
            state_dir: o.state_dir.join(&spec.id).join("state"),
            root_of_trust: o.root.clone(),
            ..Default::default()
        };
        cfg.mqtt.host = host.to_string();
        cfg.mqtt.port = port.parse().context("broker port")?;
        cfg.mqtt.password = Some(edgefleet_agent::config::Secret(spec.password.clone()));
        cfg.mqtt.downlink_key = Some(edgefleet_agent::config::Secret(spec.downlink_key.clone()));
        cfg.api.listen = String::new();
        cfg.telemetry.interval_ms = o.telemetry.as_millis() as u64;
        cfg.telemetry.resend_after_ms = (o.telemetry.as_millis() as u64 * 3).max(2_000);
        cfg.update.chunk_size = o.chunk_size;
        cfg.validate().with_context(|| format!("device {}", spec.id))?;
        let handle = Arc::new(std::sync::OnceLock::new());
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut rx = stop_rx.clone();
        let id = spec.id.clone();
        tasks.spawn(async move {
            let shutdown = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = edgefleet_agent::run_embedded(cfg, shutdown, ready_tx).await {
                tracing::error!(device = %id, "agent stopped: {e:#}");
            }
        });
        if !o.infer_every.is_zero() {
            let h = handle.clone();
            let inputs = inputs.clone();
            let stats = stats.clone();
            let mut rx = stop_rx.clone();
            let every = o.infer_every;
            let drift = o.drift.clone();
            let id = spec.id.clone();
            tasks.spawn(async move {
                let Ok(handle) = ready_rx.await else { return };
                let _ = h.set(handle.clone());
                traffic(&id, handle, inputs, stats, every, drift, &mut rx).await;
            });
        } else {
            let h = handle.clone();
            tasks.spawn(async move {
                if let Ok(handle) = ready_rx.await {
                    let _ = h.set(handle);
                }
            });
        }
        devices.push((spec, handle));
    }
    Ok(Fleet { devices, stats, stop, tasks })
}

async fn traffic(
    id: &str,
    handle: edgefleet_agent::Handle,
    inputs: Arc<Inputs>,
    stats: Arc<Stats>,
    every: Duration,
    drift: SharedDrift,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) {
    let mut r = hash01(id).to_bits() | 1;
    loop {
        r = r.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        // Exponential gaps around the mean: devices do not march in step.
        let u = ((r >> 11) as f64 / (1u64 << 53) as f64).max(1e-9);
        let gap = every.mul_f64((-u.ln()).min(5.0));
        tokio::select! {
            _ = tokio::time::sleep(gap) => {}
            _ = stop.changed() => return,
        }
        let Some(live) = handle.live() else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let Some(x) = inputs.sample(&live.model_id, r) else { continue };
        let shifted = drift.read().ok().is_some_and(|d| d.as_ref().is_some_and(|d| d.hits(id, &live.version)));
        let x = if shifted {
            stats.drifted.fetch_add(1, Ordering::Relaxed);
            if live.model_id == "kws" { louder_kws(x) } else { x.iter().map(|v| v * 1.5 + 1.0).collect() }
        } else {
            x.to_vec()
        };
        let h = handle.clone();
        let ok = tokio::task::spawn_blocking(move || h.infer(&edgefleet_agent::engine::InferInput::F32(x)).is_ok())
            .await
            .unwrap_or(false);
        if ok {
            stats.inferences.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Fleet {
    /// Live versions by device class: `(platform, model version or "-") -> devices`.
    pub fn versions(&self) -> std::collections::BTreeMap<(String, String), usize> {
        let mut m = std::collections::BTreeMap::new();
        for (spec, h) in &self.devices {
            let v = h.get().and_then(|h| h.live()).map_or("-".to_string(), |l| format!("{} {}", l.model_id, l.version));
            *m.entry((spec.platform.clone(), v)).or_default() += 1;
        }
        m
    }

    /// Devices connected to the broker, and uplinks waiting in spools.
    pub fn connectivity(&self) -> (usize, usize) {
        let mut connected = 0;
        let mut spooled = 0;
        for (_, h) in &self.devices {
            if let Some(h) = h.get() {
                let s = h.status();
                connected += usize::from(s.connected);
                spooled += s.spooled;
            }
        }
        (connected, spooled)
    }

    /// Stops every agent (updates in flight finish) and waits.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// The repository's `testdata/mlperf-tiny`, looked for from the current
/// directory up, then next to the sources this binary was built from.
pub fn find_testdata() -> Option<PathBuf> {
    let rel = Path::new("testdata/mlperf-tiny");
    let mut d = std::env::current_dir().ok();
    while let Some(dir) = d {
        if dir.join(rel).is_dir() {
            return Some(dir.join(rel));
        }
        d = dir.parent().map(Path::to_path_buf);
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    built.is_dir().then_some(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_allocate_exactly() {
        let m = parse_mix("linux-arm:rpi4:field=40,android:pixel7:field=30,ios:iphone14:field=20,mcu:stm32:sensors=10")
            .unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(
            m[3],
            Class { platform: "mcu".into(), hardware: "stm32".into(), group: "sensors".into(), share: 10.0 }
        );
        assert_eq!(allocate(10_000, &m), vec![4000, 3000, 2000, 1000]);
        let a = allocate(7, &m);
        assert_eq!(a.iter().sum::<usize>(), 7);
        assert!(parse_mix("linux-arm:rpi4=3").is_err());
        assert!(parse_mix("a:b:c=-1").is_err());
    }

    #[test]
    fn louder_shifts_only_mfcc0() {
        let x = vec![0.0; 490];
        let y = louder_kws(&x);
        assert!((y[0] - 4f32.ln() * 40f32.sqrt()).abs() < 1e-6);
        assert_eq!(y[1], 0.0);
        assert_eq!(y.iter().filter(|v| **v != 0.0).count(), 49);
    }
}
