//! `edgefleet demo`: the whole story on one machine. A fleet server on its
//! embedded defaults, simulated devices of four classes (each the real
//! agent, runtime and MQTT client), two real models compiled from the
//! MLPerf Tiny reference models, and three rollouts: the baseline, a
//! healthy version that reaches 100 % in gated waves, and a candidate whose
//! canaries drift, rolled back by the server by itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use edgefleet_protocol::{Kind, RoleKeys, Root, SecretKey, Signed, keyfile};
use serde_json::{Value, json};

use crate::sim;

/// Arguments of `edgefleet demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Simulated devices (linux-arm boards, Android and iOS phones, microcontroller-class sensors).
    #[arg(long, short = 'n', default_value_t = 24)]
    pub devices: usize,
    /// Directory for the server's database, keys and the devices' state (recreated on each run).
    #[arg(long, default_value = "edgefleet-demo", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// HTTP address of the API and dashboard (another free port if taken).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Address of the embedded MQTT broker (another free port if taken).
    #[arg(long, default_value = "127.0.0.1:1883", value_name = "ADDR")]
    pub mqtt_listen: SocketAddr,
    /// Keep the server and devices running after the story, until Ctrl-C.
    #[arg(long)]
    pub serve: bool,
    /// Write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
}

const MARKER: &str = ".edgefleet-demo";

struct Clock(Instant);

impl Clock {
    fn say(&self, msg: impl std::fmt::Display) {
        eprintln!("[{:>6.1} s] {msg}", self.0.elapsed().as_secs_f64());
    }
}

fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        if !dir.join(MARKER).exists() {
            bail!("{} exists and was not made by `edgefleet demo`: choose another --data-dir", dir.display());
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("removing the previous demo in {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join(MARKER), "made by edgefleet demo; removed by the next run\n")?;
    Ok(())
}

/// Root of trust (its key kept only in memory: the demo never rotates it)
/// and the server's online release key.
fn keys(dir: &Path) -> Result<()> {
    let root = SecretKey::generate().map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    let release = SecretKey::generate().map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let r = Root {
        version: 1,
        expires: now + 365 * 86_400,
        keys: vec![root.public(), release.public()],
        root: RoleKeys { keys: vec![root.public().id()], threshold: 1 },
        targets: RoleKeys { keys: vec![release.public().id()], threshold: 1 },
        revoked: vec![],
    };
    let signed = Signed::sign(Kind::Root, &r, &[&root]).map_err(|e| anyhow::anyhow!("signing the root: {e}"))?;
    std::fs::write(dir.join("root.signed"), signed.to_bytes().map_err(|e| anyhow::anyhow!("{e}"))?)?;
    keyfile::write_new(&dir.join("release.key"), &keyfile::secret_text(&release), true).map_err(anyhow::Error::msg)?;
    Ok(())
}

struct Package {
    model: &'static str,
    version: &'static str,
    bytes: Vec<u8>,
}

fn compile(testdata: &Path, clock: &Clock) -> Result<Vec<Package>> {
    use edgefleet_compiler::{CalibrationSet, Options};
    let labels: Vec<String> =
        ["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes", "silence", "unknown"]
            .map(String::from)
            .to_vec();
    let kws_calib = crate::npy::read(&testdata.join("calib/kws_calib_f32.npy"))?.to_f32();
    let kws_calib = CalibrationSet { samples: kws_calib.chunks_exact(490).map(|s| vec![s.to_vec()]).collect() };
    let ad_base: Vec<Vec<f32>> = ["real", "seeded"]
        .iter()
        .map(|n| crate::npy::read(&testdata.join(format!("ref/ad/{n}.input_f32.npy"))).map(|t| t.to_f32()))
        .collect::<Result<_>>()?;
    let ad_calib = CalibrationSet { samples: sim::ad_samples(&ad_base, 64).into_iter().map(|s| vec![s]).collect() };
    let build = |file: &str, calib: &CalibrationSet, labels: Vec<Vec<String>>, card: Value| -> Result<Vec<u8>> {
        let path = testdata.join("onnx").join(file);
        let opts = Options {
            calibration: Some(calib.clone()),
            labels,
            model_card: Some(card),
            source: file.into(),
            ..Options::default()
        };
        Ok(edgefleet_compiler::compile_path(&path, &opts, &mut |_| {})?.package)
    };
    let mut out = Vec::new();
    for (model, version, note, file, calib, labels, card) in [
        (
            "kws",
            "1.0",
            "TFLite's int8 DS-CNN",
            "kws_int8_from_tflite.onnx",
            &kws_calib,
            vec![labels.clone()],
            json!({"name": "keyword spotting", "release": "baseline"}),
        ),
        (
            "kws",
            "2.0",
            "quantized by edgefleet from fp32",
            "kws_fp32.onnx",
            &kws_calib,
            vec![labels.clone()],
            json!({"name": "keyword spotting", "release": "own quantization"}),
        ),
        (
            "kws",
            "3.0",
            "ships a new audio front end (drifts on some devices)",
            "kws_int8_from_tflite.onnx",
            &kws_calib,
            vec![labels.clone()],
            json!({"name": "keyword spotting", "release": "new front end"}),
        ),
        (
            "ad",
            "1.0",
            "anomaly detection autoencoder",
            "ad_int8_from_tflite.onnx",
            &ad_calib,
            vec![],
            json!({"name": "machine anomaly detection"}),
        ),
    ] {
        let bytes = build(file, calib, labels, card)?;
        clock.say(format!("compiled {model} {version} from {file}: {} bytes ({note})", bytes.len()));
        out.push(Package { model, version, bytes });
    }
    Ok(out)
}

/// Blocking API calls, run off the async threads.
#[derive(Clone)]
struct Api {
    base: String,
    auth: String,
    agent: ureq::Agent,
}

impl Api {
    fn call(&self, method: &str, path: &str, body: Option<&Value>, raw: Option<&[u8]>) -> Result<Value> {
        let url = format!("{}/api/v1{path}", self.base);
        let r = match (method, body, raw) {
            ("GET", _, _) => self.agent.get(&url).header("authorization", &self.auth).call(),
            (_, _, Some(b)) => self
                .agent
                .post(&url)
                .header("authorization", &self.auth)
                .header("content-type", "application/octet-stream")
                .send(b),
            (_, b, None) => {
                self.agent.post(&url).header("authorization", &self.auth).send_json(b.unwrap_or(&json!({})))
            }
        };
        let mut r = r.with_context(|| format!("{method} {path}"))?;
        let status = r.status();
        let v: Value = r.body_mut().read_json().unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{method} {path}: {status}: {}", v["error"].as_str().unwrap_or("?"));
        }
        Ok(v)
    }

    async fn run(
        &self,
        method: &'static str,
        path: String,
        body: Option<Value>,
        raw: Option<Vec<u8>>,
    ) -> Result<Value> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.call(method, &path, body.as_ref(), raw.as_deref())).await?
    }
}

fn gates() -> Value {
    // Short soaks for a demo. p95 limit 4x: on a shared 2-core machine the
    // whole fleet and the server (and in CI other tests) compete for the cores.
    json!({"soak_s": 3, "min_inferences": 60, "install_timeout_s": 180, "max_wave_s": 300, "max_p95_latency_ratio": 4.0})
}

/// From a rollout's creation to its last change.
fn took(r: &Value) -> Duration {
    let ms = r["updated_ms"].as_i64().unwrap_or(0) - r["created_ms"].as_i64().unwrap_or(0);
    Duration::from_millis(ms.max(0) as u64)
}

/// Follows a rollout, printing each decision, until it leaves `running`.
async fn follow(api: &Api, clock: &Clock, id: &str) -> Result<Value> {
    let mut seen = 0;
    loop {
        let r = api.run("GET", format!("/rollouts/{id}"), None, None).await?;
        let d = r["decisions"].as_array().cloned().unwrap_or_default();
        for x in &d[seen.min(d.len())..] {
            clock.say(format!(
                "  {} {:<13} {}",
                id,
                x["kind"].as_str().unwrap_or(""),
                x["reason"].as_str().unwrap_or("")
            ));
        }
        seen = d.len();
        if r["state"] != "running" {
            return Ok(r);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `edgefleet demo`.
pub fn run(a: Args) -> Result<()> {
    edgefleet_agent::logging::init_with(false, "warn");
    crate::cmd::simulate::raise_fd_limit();
    if a.devices < 4 {
        bail!("--devices: at least 4 (one per device class)");
    }
    let clock = Clock(Instant::now());
    let testdata = sim::find_testdata().context(
        "the demo compiles the MLPerf Tiny models in testdata/mlperf-tiny: run it from a clone of the repository",
    )?;
    eprintln!("edgefleet demo: a fleet server and {} simulated devices on this machine\n", a.devices);
    fresh_dir(&a.data_dir)?;
    let data = std::fs::canonicalize(&a.data_dir)?;
    let server_dir = data.join("server");
    std::fs::create_dir_all(&server_dir)?;
    keys(&server_dir)?;
    clock.say(format!("root of trust and release key in {}", server_dir.display()));
    let packages = compile(&testdata, &clock)?;
    let inputs = Arc::new(sim::Inputs::builtin(&testdata));

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let free = |addr: SocketAddr| {
            if std::net::TcpListener::bind(addr).is_ok() { addr } else { SocketAddr::new(addr.ip(), 0) }
        };
        let cfg = edgefleet_fleet_server::config::ServerConfig {
            data_dir: server_dir.clone(),
            http_listen: free(a.listen),
            mqtt: edgefleet_fleet_server::config::Mqtt::Embedded { listen: free(a.mqtt_listen) },
            tick: Duration::from_millis(500),
            window: Duration::from_secs(60),
            drift_for: Duration::from_secs(30),
            ..Default::default()
        };
        let running = edgefleet_fleet_server::server::start(cfg).await?;
        let token = std::fs::read_to_string(server_dir.join("admin.token"))?.trim().to_string();
        let http = running.http;
        let dashboard = format!("http://{http}/#token={token}");
        clock.say(format!("fleet server up (SQLite, embedded MQTT on {}); dashboard: {dashboard}", running.mqtt));
        let api = Api {
            base: format!("http://{http}"),
            auth: format!("Bearer {token}"),
            agent: ureq::Agent::config_builder().http_status_as_error(false).build().into(),
        };
        for p in &packages {
            let path = format!("/models/{}/versions?version={}&stage=production", p.model, p.version);
            api.run("POST", path, None, Some(p.bytes.clone())).await?;
        }
        clock.say(format!("published {} versions to the registry", packages.len()));

        let per = a.devices;
        let mix = vec![
            sim::Class { platform: "linux-arm".into(), hardware: "rpi4".into(), group: "field".into(), share: 3.0 },
            sim::Class { platform: "android".into(), hardware: "pixel7".into(), group: "field".into(), share: 2.5 },
            sim::Class { platform: "ios".into(), hardware: "iphone14".into(), group: "field".into(), share: 2.5 },
            sim::Class { platform: "mcu".into(), hardware: "stm32h7".into(), group: "sensors".into(), share: 2.0 },
        ];
        let drift: sim::SharedDrift = Arc::default();
        let o = sim::Options {
            server: api.base.clone(),
            token: token.clone(),
            root: server_dir.join("root.signed"),
            mqtt: Some(running.mqtt.clone()),
            devices: per,
            classes: mix,
            state_dir: data.join("devices"),
            prefix: String::new(),
            telemetry: Duration::from_secs(1),
            infer_every: Duration::from_millis(250),
            chunk_size: 16 * 1024,
            drift: drift.clone(),
        };
        let o2 = o.clone();
        let specs = tokio::task::spawn_blocking(move || sim::enroll(&o2, &mut |_| {})).await??;
        let fleet = sim::start(&o, specs, inputs)?;
        let t = Instant::now();
        loop {
            let (connected, _) = fleet.connectivity();
            if connected == per {
                break;
            }
            if t.elapsed() > Duration::from_secs(60) {
                bail!("only {connected} of {per} simulated devices connected within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let classes: Vec<String> = fleet.versions().into_iter().map(|((p, _), n)| format!("{n} {p}")).collect();
        clock.say(format!("{per} devices enrolled and connected: {}", classes.join(", ")));

        let mut outcomes = Vec::new();
        let start = |model: &str, version: &str, group: &str, waves: Value| {
            let api = api.clone();
            let body = json!({"model": model, "version": version, "target": {"group": group}, "waves": waves, "gates": gates()});
            async move { api.run("POST", "/rollouts".into(), Some(body), None).await }
        };
        clock.say("rollout 1: the baseline, kws 1.0 to the field group and ad 1.0 to the sensors, one wave each");
        let r_ad = start("ad", "1.0", "sensors", json!([100])).await?;
        let r_kws = start("kws", "1.0", "field", json!([100])).await?;
        for r in [r_ad, r_kws] {
            let id = r["id"].as_str().unwrap_or_default().to_string();
            let end = follow(&api, &clock, &id).await?;
            outcomes.push((id, format!("{} {}", end["model"].as_str().unwrap_or(""), end["version"].as_str().unwrap_or("")), end["state"].as_str().unwrap_or("").to_string(), took(&end)));
        }

        clock.say("rollout 2: kws 2.0, waves 10 % -> 50 % -> 100 %, each gated against the devices still on 1.0");
        let r = start("kws", "2.0", "field", json!([10, 50, 100])).await?;
        let id = r["id"].as_str().unwrap_or_default().to_string();
        let end2 = follow(&api, &clock, &id).await?;
        outcomes.push((id, "kws 2.0".into(), end2["state"].as_str().unwrap_or("").to_string(), took(&end2)));

        clock.say("rollout 3: kws 3.0, whose new front end shifts the audio features on part of its canary wave");
        let r = start("kws", "3.0", "field", json!([10, 50, 100])).await?;
        let id = r["id"].as_str().unwrap_or_default().to_string();
        let canaries: Vec<String> =
            r["member_list"].as_array().into_iter().flatten().filter_map(|m| m["device"].as_str().map(String::from)).collect();
        let hit: std::collections::HashSet<String> = canaries.iter().take(canaries.len().div_ceil(2)).cloned().collect();
        clock.say(format!("  drift injected on {} of {} canaries: {}", hit.len(), canaries.len(), hit.iter().cloned().collect::<Vec<_>>().join(", ")));
        if let Ok(mut d) = drift.write() {
            *d = Some(sim::Drift { version: "3.0".into(), fraction: 0.0, devices: Some(hit) });
        }
        let end3 = follow(&api, &clock, &id).await?;
        outcomes.push((id.clone(), "kws 3.0".into(), end3["state"].as_str().unwrap_or("").to_string(), took(&end3)));
        // Wait for the canaries to be back on 2.0.
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(120) {
            let r = api.run("GET", format!("/rollouts/{id}"), None, None).await?;
            if r["members"]["reverting"] == 0 && r["members"]["pending"] == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }

        let versions = fleet.versions();
        eprintln!();
        eprintln!("summary");
        for (id, what, state, took) in &outcomes {
            eprintln!("  rollout {id} {what:<8} {state:<12} in {:.1} s", took.as_secs_f64());
        }
        eprintln!("  devices by class and live model:");
        for ((p, v), n) in &versions {
            eprintln!("    {p:<10} {v:<10} {n}");
        }
        let s = fleet.stats.inferences.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!("  {s} inferences served by the simulated devices");
        eprintln!("  dashboard: {dashboard}");
        let ok = end2["state"] == "completed"
            && end3["state"] == "rolled_back"
            && versions.iter().all(|((p, v), _)| if p == "mcu" { v == "ad 1.0" } else { v == "kws 2.0" });
        let summary = json!({
            "dashboard": dashboard,
            "rollouts": outcomes.iter().map(|(id, what, state, took)| json!({"id": id, "version": what, "state": state, "seconds": took.as_secs_f64()})).collect::<Vec<_>>(),
            "devices": versions.iter().map(|((p, v), n)| json!({"platform": p, "live": v, "devices": n})).collect::<Vec<_>>(),
            "inferences": s,
            "story_ok": ok,
        });
        if let Some(p) = &a.summary {
            crate::cmd::write_atomic(p, serde_json::to_string_pretty(&summary)?.as_bytes())?;
        }
        if a.serve {
            eprintln!("\nserving until Ctrl-C: {dashboard}");
            let _ = tokio::signal::ctrl_c().await;
        }
        fleet.shutdown().await;
        running.shutdown().await;
        if !ok {
            bail!("the story did not go as expected (see above): kws 2.0 should complete, kws 3.0 roll back, every device end on its working model");
        }
        eprintln!("\nok: kws 2.0 reached every field device; kws 3.0 was rolled back by its drift gate; every device runs a working model");
        Ok(())
    })
}
