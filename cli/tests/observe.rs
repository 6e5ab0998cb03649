//! Observability end to end: a real `edgefleet server` process, populated
//! through its real interfaces, looked at the way operators look at it:
//!
//! - the dashboard (`/`) rendered by headless Chromium, with the right, a
//!   wrong and no API token;
//! - `/metrics` linted by `promtool` and scraped by a real Prometheus;
//! - the Grafana dashboard (`fleet-server/grafana/edgefleet.json`) checked
//!   against the metric names the server really exposes.
//!
//! The fleet: two versions of the MLPerf Tiny anomaly-detection model
//! (published with `edgefleet publish`), devices of several platforms and
//! groups (`edgefleet devices enroll`), one real device agent (`edgefleet
//! agent`) that a rollout moves to the first version and that then runs
//! inferences (first on the reference data, then on shifted data, so fleet
//! drift rises and the retraining webhook fires), a second rollout that stops
//! on its install gate, and one forged uplink the server refuses. Every
//! metric family the server has then holds a sample.
//!
//! Needs Debian's `chromium` and `prometheus` packages (`scripts/test-all`
//! installs them). The three tests share one fleet while they run
//! concurrently.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_edgefleet");
const CHROMIUM: &str = "/usr/bin/chromium";
const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";

// ---- plumbing ---------------------------------------------------------------

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let p = std::env::temp_dir().join(format!(
            "edgefleet-observe-{what}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("creating a temp dir");
        TempDir(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A command without any `EDGEFLEET_*` variables of the caller's environment.
fn command(bin: &str) -> Command {
    let mut c = Command::new(bin);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("EDGEFLEET_") {
            c.env_remove(k);
        }
    }
    c
}

/// A child process killed (and reaped) on drop; its output goes to a log file.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child =
            cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn().unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc { name, child, log }
    }

    /// Panics (with its log) if the process has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, self.log_tail());
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut from = text.len().saturating_sub(8000);
        while !text.is_char_boundary(from) {
            from += 1;
        }
        text[from..].to_string()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- {} log (tail) ----\n{}", self.name, self.log_tail());
        }
    }
}

/// A port free right now on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("binding 127.0.0.1:0").port()
}

/// Polls `f` every 200 ms until it succeeds; panics after `secs` with `what` and the last error.
fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f() {
            Ok(t) => return t,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {secs} s waiting for {what}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// A minimal HTTP/1.1 client: one request per connection.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<(u16, String), String> {
    http_with_head(addr, method, path, headers, body).map(|(status, _, body)| (status, body))
}

/// [`http`], also returning the response head (status line and headers).
fn http_with_head(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, String, String), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).and_then(|()| s.write_all(body)).map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").ok_or_else(|| format!("no HTTP response: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line: {head}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    Ok((status, head.to_string(), if chunked { dechunk(rest) } else { rest.to_string() }))
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].strip_prefix("\r\n").unwrap_or(&tail[n..]);
    }
    out
}

/// Runs the CLI with extra environment; returns stdout, panics with stderr on failure.
fn cli_env(args: &[&str], env: &[(&str, String)]) -> String {
    let out = command(BIN).args(args).envs(env.iter().map(|(k, v)| (k, v))).output().expect("running edgefleet");
    assert!(
        out.status.success(),
        "edgefleet {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cli(args: &[&str]) -> String {
    cli_env(args, &[])
}

/// Runs `cmd` with a deadline; kills it when the deadline passes.
fn run_with_timeout(cmd: &mut Command, secs: u64) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawning");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Output { status, stdout: out_reader.join().unwrap_or_default(), stderr: err_reader.join().unwrap_or_default() }
}

fn need(bin: &str, package: &str) {
    assert!(
        Path::new(bin).exists(),
        "{bin} not found: this test needs Debian's {package} package (apt-get install {package}; scripts/test-all installs it)"
    );
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Publishes one message (QoS 1) over a bare MQTT 3.1.1 connection.
fn mqtt_publish(addr: &str, client: &str, password: &str, topic: &str, payload: &[u8]) -> Result<(), String> {
    fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend((s.len() as u16).to_be_bytes());
        out.extend(s);
    }
    fn packet(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        let mut n = body.len();
        loop {
            let b = (n % 128) as u8;
            n /= 128;
            out.push(if n > 0 { b | 0x80 } else { b });
            if n == 0 {
                break;
            }
        }
        out.extend(body);
        out
    }
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let mut connect = Vec::new();
    string(&mut connect, b"MQTT");
    connect.extend([4, 0xC2, 0, 30]); // v3.1.1; user name, password, clean session; keep-alive 30 s
    string(&mut connect, client.as_bytes());
    string(&mut connect, client.as_bytes());
    string(&mut connect, password.as_bytes());
    s.write_all(&packet(0x10, &connect)).map_err(|e| e.to_string())?;
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).map_err(|e| format!("CONNACK: {e}"))?;
    if connack[0] != 0x20 || connack[3] != 0 {
        return Err(format!("connection refused: {connack:?}"));
    }
    let mut publish = Vec::new();
    string(&mut publish, topic.as_bytes());
    publish.extend([0, 1]);
    publish.extend(payload);
    s.write_all(&packet(0x32, &publish)).map_err(|e| e.to_string())?;
    let mut puback = [0u8; 4];
    s.read_exact(&mut puback).map_err(|e| format!("PUBACK: {e}"))?;
    if puback != [0x40, 2, 0, 1] {
        return Err(format!("expected PUBACK, got {puback:?}"));
    }
    s.write_all(&[0xE0, 0]).map_err(|e| e.to_string())
}

/// An HTTP endpoint that answers 200 to everything and hands over request bodies.
fn webhook_receiver() -> (String, Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the webhook receiver");
    let url = format!("http://{}/retrain", listener.local_addr().expect("address"));
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let body = loop {
                let Ok(n) = conn.read(&mut chunk) else { break None };
                if n == 0 {
                    break None;
                }
                buf.extend(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= len {
                        break Some(body[..len].to_string());
                    }
                }
            };
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if let Some(b) = body
                && tx.send(b).is_err()
            {
                return;
            }
        }
    });
    (url, rx)
}

// ---- the model --------------------------------------------------------------

/// The AD model's input size (1x640 log-mel frames).
const AD_INPUT: usize = 640;
/// Reference samples (calibration data, and what the agent first sees).
const REFERENCE_SAMPLES: usize = 64;
/// How often the agent runs each reference sample.
const REPEAT: usize = 6;
/// How far the drifted inputs are shifted.
const SHIFT: f32 = 12.0;

/// Deterministic pseudo-normal samples (xorshift64*, sum of uniforms).
fn gaussian_samples(seed: u64, n: usize, mean: f32, sd: f32) -> Vec<Vec<f32>> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..n)
        .map(|_| (0..AD_INPUT).map(|_| mean + sd * ((0..12).map(|_| uniform()).sum::<f32>() - 6.0)).collect())
        .collect()
}

/// An .npy file of float32 samples [n, 640].
fn write_npy(path: &Path, samples: &[Vec<f32>]) {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {AD_INPUT}), }}", samples.len());
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    for x in samples.iter().flatten() {
        out.extend(x.to_le_bytes());
    }
    std::fs::write(path, out).expect("writing .npy");
}

struct Packages {
    /// The reference data of version 1.0.
    reference: Vec<Vec<f32>>,
    /// Version 1.0 and 1.1: the same network, different reference profiles.
    v1: Vec<u8>,
    v2: Vec<u8>,
}

/// The AD packages, compiled once per test process.
fn packages() -> &'static Packages {
    static PKG: OnceLock<Packages> = OnceLock::new();
    PKG.get_or_init(|| {
        let onnx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/mlperf-tiny/onnx/ad_int8_from_tflite.onnx");
        let dir = TempDir::new("pkg");
        let compile = |calibration: &[Vec<f32>], name: &str| {
            let npy = dir.join(&format!("{name}.npy"));
            write_npy(&npy, calibration);
            let out = dir.join(&format!("{name}.efm"));
            cli(&["compile", s(&onnx), "--calibration", s(&npy), "-o", s(&out)]);
            std::fs::read(&out).expect("reading the compiled package")
        };
        let reference = gaussian_samples(1, REFERENCE_SAMPLES, 0.0, 5.0);
        let v1 = compile(&reference, "v1");
        let v2 = compile(&gaussian_samples(2, REFERENCE_SAMPLES, 2.0, 6.0), "v2");
        Packages { reference, v1, v2 }
    })
}

// ---- the fleet --------------------------------------------------------------

/// A device the tests enroll.
struct Device {
    id: &'static str,
    platform: &'static str,
    hardware: &'static str,
    groups: &'static [&'static str],
}

/// Enrolled only: no agent runs for them.
const DEVICES: &[Device] = &[
    Device { id: "cam-01", platform: "linux-arm", hardware: "rpi4", groups: &["field"] },
    Device { id: "cam-02", platform: "linux-arm", hardware: "rpi4", groups: &["field", "lab"] },
    Device { id: "cam-03", platform: "linux-arm", hardware: "rpi4", groups: &["lab"] },
    Device { id: "phone-01", platform: "android", hardware: "pixel8", groups: &["field"] },
    Device { id: "phone-02", platform: "ios", hardware: "iphone15", groups: &["field"] },
    Device { id: "sensor-01", platform: "mcu", hardware: "stm32h7", groups: &[] },
];

/// The device a real `edgefleet agent` runs.
const AGENT: Device = Device { id: "edge-01", platform: "linux", hardware: "x86-dev", groups: &["edge"] };

const MODEL: &str = "ad";
const VERSIONS: [&str; 2] = ["1.0", "1.1"];

fn all_devices() -> impl Iterator<Item = &'static Device> {
    DEVICES.iter().chain(std::iter::once(&AGENT))
}

/// Enrolled devices per platform.
fn expected_devices() -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for d in all_devices() {
        *m.entry(d.platform.to_string()).or_insert(0) += 1;
    }
    m
}

/// Online devices per platform: the agent's only.
fn expected_online() -> BTreeMap<String, i64> {
    expected_devices().into_keys().map(|p| (p.clone(), i64::from(p == AGENT.platform))).collect()
}

/// A running, populated server (see the module docs).
struct Fleet {
    addr: String,
    token: String,
    /// `publish --json` answers, in publishing order.
    versions: Vec<Value>,
    /// The rollout that moved the agent to 1.0 (`GET /rollouts/{id}` once completed).
    completed: Value,
    /// The rollout stopped by its install gate (once paused).
    paused: Value,
    /// Inferences the agent ran.
    inferences: u64,
    /// The retraining webhook's body.
    webhook: Value,
    _agent: Proc,
    _server: Proc,
    _dir: TempDir,
}

/// The fleet the tests running right now share; a new one once they are all done.
fn fleet() -> Arc<Fleet> {
    static SHARED: Mutex<Weak<Fleet>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(f) = shared.upgrade() {
        return f;
    }
    let f = Arc::new(Fleet::start());
    *shared = Arc::downgrade(&f);
    f
}

impl Fleet {
    fn start() -> Fleet {
        let pkgs = packages();
        let dir = TempDir::new("fleet");
        let (data, keys, state) = (dir.join("data"), dir.join("keys"), dir.join("agent"));
        // Release key on the server (it signs rollout manifests), root of trust for server and agent.
        cli(&["keys", "generate", "release", "--dir", s(&data)]);
        cli(&["keys", "generate", "root", "--dir", s(&keys)]);
        let root = data.join("root.signed");
        cli(&[
            "keys",
            "root",
            "--root-key",
            s(&keys.join("root.key")),
            "--release-key",
            s(&data.join("release.pub")),
            "-o",
            s(&root),
        ]);
        let (hook_url, hooks) = webhook_receiver();
        let addr = format!("127.0.0.1:{}", free_port());
        let mqtt = format!("127.0.0.1:{}", free_port());
        let mut server =
            Proc::spawn(
                "edgefleet server",
                command(BIN)
                    .args(["server", "--data-dir", s(&data), "--listen", &addr, "--mqtt-listen", &mqtt])
                    .args(["--tick", "300ms", "--webhook", &hook_url, "--drift-for", "1s"]),
                dir.join("server.log"),
            );
        wait_for(60, "the server's /healthz", || {
            server.assert_running();
            match http(&addr, "GET", "/healthz", &[], b"") {
                Ok((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
        let token = std::fs::read_to_string(data.join("admin.token")).expect("admin.token").trim().to_string();
        let api = Api { addr: addr.clone(), token: token.clone() };

        // Two versions.
        let mut versions = Vec::new();
        for (v, bytes) in VERSIONS.iter().zip([&pkgs.v1, &pkgs.v2]) {
            let file = dir.join(&format!("ad-{v}.efm"));
            std::fs::write(&file, bytes).expect("writing the package");
            let out = api.cli(&["publish", s(&file), "--model", MODEL, "--version", v]);
            assert_eq!(out["version"], *v, "publish answer: {out}");
            versions.push(out);
        }

        // Devices; the agent's with the key its state directory holds.
        let agent_env = |extra: &[(&'static str, String)]| {
            let mut env = vec![
                ("EDGEFLEET_DEVICE_ID", AGENT.id.to_string()),
                ("EDGEFLEET_HARDWARE_ID", AGENT.hardware.to_string()),
                ("EDGEFLEET_PLATFORM", AGENT.platform.to_string()),
                ("EDGEFLEET_GROUPS", AGENT.groups.join(",")),
                ("EDGEFLEET_STATE_DIR", s(&state).to_string()),
                ("EDGEFLEET_ROOT_OF_TRUST", s(&root).to_string()),
                ("EDGEFLEET_API_LISTEN", "127.0.0.1:0".to_string()),
                ("EDGEFLEET_TELEMETRY_INTERVAL_MS", "1000".to_string()),
            ];
            env.extend(extra.iter().cloned());
            env
        };
        let agent_key = cli_env(&["agent", "--print-device-key"], &agent_env(&[])).trim().to_string();
        let mut credentials = BTreeMap::new();
        for d in all_devices() {
            let public = if d.id == AGENT.id {
                agent_key.clone()
            } else {
                cli(&["keys", "generate", d.id, "--dir", s(&keys)]);
                let text = std::fs::read_to_string(keys.join(format!("{}.pub", d.id))).expect("public key file");
                text.lines().nth(1).expect("key line").trim().to_string()
            };
            let groups = d.groups.join(",");
            let mut args = vec![
                "devices",
                "enroll",
                d.id,
                "--platform",
                d.platform,
                "--hardware",
                d.hardware,
                "--public-key",
                public.as_str(),
            ];
            if !groups.is_empty() {
                args.extend(["--groups", groups.as_str()]);
            }
            let out = api.cli(&args);
            assert_eq!(out["id"], d.id, "enroll answer: {out}");
            credentials.insert(d.id, out);
        }
        let c = &credentials[AGENT.id];
        let (host, port) = c["mqtt"].as_str().and_then(|m| m.rsplit_once(':')).expect("MQTT address");
        let agent_env = agent_env(&[
            ("EDGEFLEET_MQTT_HOST", host.to_string()),
            ("EDGEFLEET_MQTT_PORT", port.to_string()),
            ("EDGEFLEET_MQTT_USERNAME", c["mqtt_username"].as_str().expect("user").to_string()),
            ("EDGEFLEET_MQTT_PASSWORD", c["mqtt_password"].as_str().expect("password").to_string()),
            ("EDGEFLEET_DOWNLINK_KEY", c["downlink_key"].as_str().expect("downlink key").to_string()),
        ]);
        let mut agent = Proc::spawn(
            "edgefleet agent",
            command(BIN).arg("agent").envs(agent_env.iter().map(|(k, v)| (k, v))),
            dir.join("agent.log"),
        );

        // A rollout that cannot finish: nobody in the field group runs an
        // agent, so its first wave times out on the install gate and it pauses.
        let started = api.cli(&[
            "rollout",
            "start",
            "--model",
            MODEL,
            "--version",
            VERSIONS[1],
            "--group",
            "field",
            "--waves",
            "50,100",
            "--on-failure",
            "pause",
            "--gate",
            "install_timeout_s=1",
        ]);
        let stalled = started["id"].as_str().unwrap_or_else(|| panic!("rollout start: {started}")).to_string();
        let paused = api.wait_rollout(&stalled, "paused");

        // The agent's rollout: it passes once the agent ran the reference data.
        let phase1 = (REFERENCE_SAMPLES * REPEAT) as u64;
        let started = api.cli(&[
            "rollout",
            "start",
            "--model",
            MODEL,
            "--version",
            VERSIONS[0],
            "--group",
            AGENT.groups[0],
            "--waves",
            "100",
            "--gate",
            "soak_s=0",
            "--gate",
            &format!("min_inferences={phase1}"),
        ]);
        let canary = started["id"].as_str().unwrap_or_else(|| panic!("rollout start: {started}")).to_string();
        let agent_api = wait_for(60, "the agent to install 1.0", || {
            agent.assert_running();
            let a = std::fs::read_to_string(state.join("api.addr")).map_err(|e| e.to_string())?;
            let (_, body) = http(a.trim(), "GET", "/v1/status", &[], b"")?;
            let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
            if v["live"]["version"] == VERSIONS[0] { Ok(a.trim().to_string()) } else { Err(body) }
        });
        let infer = |x: &[f32]| {
            let body = json!({ "input": x }).to_string();
            let (status, out) =
                http(&agent_api, "POST", "/v1/infer", &[("Content-Type", "application/json")], body.as_bytes())
                    .expect("infer");
            assert_eq!(status, 200, "infer: {out}");
        };
        for _ in 0..REPEAT {
            pkgs.reference.iter().for_each(|x| infer(x));
        }
        let completed = api.wait_rollout(&canary, "completed");

        // Then the data moves: fleet drift rises and the retraining webhook fires.
        for _ in 0..REPEAT {
            pkgs.reference.iter().for_each(|x| infer(&x.iter().map(|v| v + SHIFT).collect::<Vec<_>>()));
        }
        let inferences = 2 * phase1;
        let body = hooks.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
            panic!("the retraining webhook did not fire; fleet health: {}", api.get("/fleet/health"))
        });
        let webhook: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("webhook body ({e}): {body}"));
        wait_for(30, "fleet health to count every inference", || {
            let h = api.get("/fleet/health");
            let v = h.as_array().and_then(|a| a.iter().find(|v| v["version"] == VERSIONS[0])).cloned();
            match v {
                Some(v) if v["fleet"]["inferences"] == inferences && v["webhook_fired_ms"].as_i64() > Some(0) => Ok(()),
                _ => Err(h.to_string()),
            }
        });

        // A forged uplink (not signed at all) from an enrolled device: refused.
        let c = &credentials[DEVICES[0].id];
        mqtt_publish(
            &mqtt,
            DEVICES[0].id,
            c["mqtt_password"].as_str().expect("password"),
            &format!("ef/v1/d/{}/up", DEVICES[0].id),
            b"not a signed uplink",
        )
        .expect("publishing the forged uplink");

        // Requests whose paths hold device ids: their route labels must not.
        for d in all_devices() {
            api.get(&format!("/devices/{}", d.id));
        }
        let _ = http(&addr, "GET", &format!("/api/v1/devices/{}/nothing", DEVICES[0].id), &[], b"");
        let _ = http(&addr, "GET", &format!("/{}", DEVICES[0].id), &[], b"");

        // The gauges come from the housekeeping tick.
        wait_for(30, "the device gauges and the refused uplink in /metrics", || {
            let m = api.metrics();
            let devices = samples(&m, "edgefleet_devices", "platform");
            let online = samples(&m, "edgefleet_devices_online", "platform");
            let rejected = samples(&m, "edgefleet_uplinks_rejected_total", "reason");
            if devices == expected_devices() && online == expected_online() && rejected.get("malformed") == Some(&1) {
                Ok(())
            } else {
                Err(format!("devices {devices:?}, online {online:?}, rejected {rejected:?}"))
            }
        });
        Fleet {
            addr,
            token,
            versions,
            completed,
            paused,
            inferences,
            webhook,
            _agent: agent,
            _server: server,
            _dir: dir,
        }
    }

    fn api(&self) -> Api {
        Api { addr: self.addr.clone(), token: self.token.clone() }
    }
}

/// The server's REST API and /metrics.
struct Api {
    addr: String,
    token: String,
}

impl Api {
    /// Runs a CLI client command against the server; its `--json` output.
    fn cli(&self, args: &[&str]) -> Value {
        let server = format!("http://{}", self.addr);
        let mut all = args.to_vec();
        all.extend(["--server", &server, "--token", &self.token, "--json"]);
        let out = cli(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("edgefleet {args:?}: not JSON ({e}): {out}"))
    }

    /// GET under `/api/v1`; panics unless 200.
    fn get(&self, path: &str) -> Value {
        let auth = format!("Bearer {}", self.token);
        let (status, body) = http(&self.addr, "GET", &format!("/api/v1{path}"), &[("Authorization", &auth)], b"")
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
    }

    fn metrics(&self) -> String {
        let (status, body) = http(&self.addr, "GET", "/metrics", &[], b"").expect("GET /metrics");
        assert_eq!(status, 200, "/metrics: {body}");
        body
    }

    fn wait_rollout(&self, id: &str, state: &str) -> Value {
        wait_for(60, &format!("rollout {id} to be {state}"), || {
            let r = self.get(&format!("/rollouts/{id}"));
            if r["state"] == state { Ok(r) } else { Err(r.to_string()) }
        })
    }
}

// ---- the exposition format ------------------------------------------------------

/// A sample line: name, labels, value.
type Sample = (String, Vec<(String, String)>, String);

/// The samples of an exposition (text format or OpenMetrics).
fn parse_samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let Some(i) = line.find(['{', ' ']) else { continue };
        let (name, rest) = line.split_at(i);
        let mut labels = Vec::new();
        let value_part = match rest.strip_prefix('{') {
            Some(body) => {
                let mut chars = body.char_indices();
                let mut end = body.len();
                let mut key = String::new();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '}' => {
                            end = i + 1;
                            break;
                        }
                        ',' | ' ' => {}
                        '=' => {
                            assert_eq!(chars.next().map(|x| x.1), Some('"'), "label value not quoted: {line}");
                            let mut value = String::new();
                            while let Some((_, c)) = chars.next() {
                                match c {
                                    '\\' => value.push(chars.next().map_or('\\', |x| x.1)),
                                    '"' => break,
                                    c => value.push(c),
                                }
                            }
                            labels.push((std::mem::take(&mut key), value));
                        }
                        c => key.push(c),
                    }
                }
                &body[end..]
            }
            None => rest,
        };
        let value = value_part.split_whitespace().next().unwrap_or("").to_string();
        out.push((name.to_string(), labels, value));
    }
    out
}

/// `label value -> sample value` of one metric.
fn samples(text: &str, name: &str, label: &str) -> BTreeMap<String, i64> {
    parse_samples(text)
        .into_iter()
        .filter(|(n, _, _)| n == name)
        .filter_map(|(_, labels, v)| {
            let l = labels.into_iter().find(|(k, _)| k == label)?.1;
            Some((l, v.parse::<f64>().ok()? as i64))
        })
        .collect()
}

/// Declared metric families: name -> type.
fn families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            if it.next() != Some("#") || it.next() != Some("TYPE") {
                return None;
            }
            Some((it.next()?.to_string(), it.next()?.to_string()))
        })
        .collect()
}

/// OpenMetrics as the classic text format (0.0.4): a counter family `x`
/// (samples `x_total`) is declared as `x_total`; `_created` samples,
/// `# UNIT`, `# EOF` and exemplars go.
fn openmetrics_to_classic(text: &str) -> String {
    let fams = families(text);
    let counter = |name: &str| fams.get(name).is_some_and(|k| k == "counter");
    let mut out = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut it = rest.splitn(3, ' ');
            let (kw, name, tail) = (it.next().unwrap_or(""), it.next().unwrap_or(""), it.next().unwrap_or(""));
            match kw {
                "HELP" | "TYPE" if counter(name) => out.push_str(&format!("# {kw} {name}_total {tail}\n")),
                "HELP" | "TYPE" => out.push_str(&format!("{line}\n")),
                _ => {}
            }
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap_or("");
        if name.strip_suffix("_created").is_some_and(|f| fams.contains_key(f)) {
            continue;
        }
        out.push_str(line.split(" # ").next().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The series names a family of a type produces.
fn series_of(family: &str, kind: &str) -> Vec<String> {
    let suffixes: &[&str] = match kind {
        "counter" => &["_total", "_created"],
        "histogram" => &["_bucket", "_sum", "_count", "_created"],
        "summary" => &["", "_sum", "_count", "_created"],
        "info" => &["_info"],
        _ => &[""],
    };
    suffixes.iter().map(|s| format!("{family}{s}")).collect()
}

// ---- a tiny DOM reader --------------------------------------------------------------

/// The markup of the element whose start tag holds `marker`, through `close`.
fn element<'a>(dom: &'a str, marker: &str, close: &str) -> &'a str {
    let at = dom.find(marker).unwrap_or_else(|| panic!("no {marker} in:\n{dom}"));
    let start = dom[..at].rfind('<').expect("start tag");
    let end = dom[at..].find(close).map_or(dom.len(), |i| at + i + close.len());
    &dom[start..end]
}

/// The start tag of the element holding `marker`.
fn start_tag<'a>(dom: &'a str, marker: &str) -> &'a str {
    let at = dom.find(marker).unwrap_or_else(|| panic!("no {marker} in:\n{dom}"));
    let start = dom[..at].rfind('<').expect("start tag");
    let end = dom[at..].find('>').map_or(dom.len(), |i| at + i + 1);
    &dom[start..end]
}

/// The value of `attr` in a start tag.
fn attr(tag: &str, attr: &str) -> Option<String> {
    let key = format!(" {attr}=\"");
    let i = tag.find(&key)? + key.len();
    Some(unescape(&tag[i..i + tag[i..].find('"')?]))
}

/// `<tr>` elements of `table` that carry `key`, by its value.
fn rows<'a>(table: &'a str, key: &str) -> BTreeMap<String, &'a str> {
    let mut out = BTreeMap::new();
    let mut rest = table;
    while let Some(i) = rest.find("<tr") {
        let end = rest[i..].find("</tr>").map_or(rest.len(), |j| i + j + 5);
        let row = &rest[i..end];
        if let Some(v) = attr(&row[..row.find('>').unwrap_or(row.len())], key) {
            out.insert(v, row);
        }
        rest = &rest[end..];
    }
    out
}

/// The `<td data-col="col">` of a row.
fn td<'a>(row: &'a str, col: &str) -> &'a str {
    element(row, &format!("data-col=\"{col}\""), "</td>")
}

/// Its text.
fn cell(row: &str, col: &str) -> String {
    text(td(row, col))
}

/// Its `data-value` as a number.
fn cell_value(row: &str, col: &str) -> Option<f64> {
    attr(start_tag(row, &format!("data-col=\"{col}\"")), "data-value").map(|v| v.parse().expect("numeric data-value"))
}

/// Text content of markup.
fn text(markup: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in markup.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    unescape(out.trim())
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&nbsp;", " ").replace("&amp;", "&")
}

fn count(text: &str) -> i64 {
    text.replace(',', "").parse().unwrap_or_else(|_| panic!("not a count: {text:?}"))
}

/// The page at `url` once its scripts ran, as headless Chromium serializes it.
fn dump_dom(url: &str) -> String {
    need(CHROMIUM, "chromium");
    let profile = TempDir::new("chromium");
    let out = run_with_timeout(
        command(CHROMIUM)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
            .arg(format!("--user-data-dir={}", s(profile.path())))
            .args(["--virtual-time-budget=10000", "--dump-dom", url]),
        120,
    );
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && dom.contains("</html>"),
        "chromium failed ({}):\n{dom}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    dom
}

fn i(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

// ---- tests ------------------------------------------------------------------------------

#[test]
fn dashboard_in_headless_chromium() {
    need(CHROMIUM, "chromium");
    let fleet = fleet();
    let api = fleet.api();
    let url = format!("http://{}/", fleet.addr);
    let dom = dump_dom(&format!("{url}#token={}", fleet.token));

    // Loaded, no error banner, no token prompt, the token nowhere in the page.
    assert_eq!(attr(start_tag(&dom, "<body"), "data-state").as_deref(), Some("ok"), "{}", start_tag(&dom, "<body"));
    assert!(
        start_tag(&dom, "id=\"error\"").contains("hidden"),
        "error banner: {}",
        element(&dom, "id=\"error\"", "</div>")
    );
    assert!(start_tag(&dom, "id=\"auth\"").contains("hidden"), "token prompt shown with a good token");
    assert!(!dom.contains(&fleet.token), "the API token is in the page");
    let status = text(element(&dom, "id=\"status\"", "</div>"));
    assert!(status.starts_with("Updated"), "status: {status}");

    // (a) Fleet by class: each enrolled platform with its devices and online counts.
    let fleet_rows = rows(element(&dom, "id=\"fleet-table\"", "</table>"), "data-platform");
    let (devices, online) = (expected_devices(), expected_online());
    for (platform, row) in &fleet_rows {
        if platform == "total" {
            continue;
        }
        assert_eq!(count(&cell(row, "devices")), devices.get(platform).copied().unwrap_or(0), "{platform} devices");
        assert_eq!(count(&cell(row, "online")), online.get(platform).copied().unwrap_or(0), "{platform} online");
    }
    for platform in devices.keys() {
        assert!(fleet_rows.contains_key(platform), "no {platform} row in the fleet table");
    }
    assert_eq!(count(&cell(fleet_rows["total"], "devices")), all_devices().count() as i64, "total devices");
    assert_eq!(count(&cell(fleet_rows["total"], "online")), online.values().sum::<i64>(), "total online");

    // (b) Model versions: both, with stage, size, devices, and fleet health from the API.
    let health = api.get("/fleet/health");
    let version_rows = rows(element(&dom, "id=\"versions-table\"", "</table>"), "data-version");
    assert_eq!(version_rows.len(), fleet.versions.len(), "versions table rows: {version_rows:?}");
    for v in &fleet.versions {
        let name = v["version"].as_str().expect("version");
        let row = version_rows.get(name).unwrap_or_else(|| panic!("version {name} not in the versions table"));
        assert_eq!(attr(row, "data-model").as_deref(), v["model"].as_str(), "{row}");
        assert!(text(row).contains(v["stage"].as_str().expect("stage")), "stage of {name}: {row}");
        assert_eq!(cell_value(row, "size"), v["package_bytes"].as_f64(), "size of {name}");
        assert_eq!(cell_value(row, "arena"), v["arena_bytes"].as_f64(), "arena of {name}");
        let running = i64::from(name == VERSIONS[0]);
        assert_eq!(count(&cell(row, "devices")), running, "devices running {name}");
        let h = health.as_array().expect("health").iter().find(|h| h["version"] == name);
        match h {
            Some(h) => {
                let f = &h["fleet"];
                assert_eq!(cell_value(row, "inferences"), f["inferences"].as_f64(), "inferences of {name}");
                assert_eq!(cell_value(row, "p95"), f["p95_us"].as_f64(), "p95 of {name}");
                let psi = f["drift_psi"].as_f64().expect("fleet drift");
                assert!(cell_value(row, "drift_psi").is_some_and(|x| close(x, psi)), "drift of {name}: {row}");
                assert_eq!(
                    td(row, "drift_psi").contains("drifting"),
                    h["drift_over_since_ms"].as_i64() > Some(0),
                    "{row}"
                );
            }
            None => {
                assert_eq!(cell(row, "p95"), "—", "{name} has no telemetry");
                assert_eq!(cell_value(row, "p95"), None);
            }
        }
    }
    assert!(td(version_rows[VERSIONS[0]], "drift_psi").contains("drifting"), "the drifting version is flagged");
    assert!(
        cell(version_rows[VERSIONS[0]], "p95").ends_with("µs")
            || cell(version_rows[VERSIONS[0]], "p95").ends_with("ms")
    );

    // (c) Rollouts: both, with state, wave and member counts.
    let rollout_rows = rows(element(&dom, "id=\"rollouts-table\"", "</table>"), "data-rollout");
    assert_eq!(rollout_rows.len(), 2, "rollouts table: {rollout_rows:?}");
    for r in [&fleet.completed, &fleet.paused] {
        let id = r["id"].as_str().expect("id");
        let row = rollout_rows.get(id).unwrap_or_else(|| panic!("rollout {id} not in the table"));
        assert!(text(row).contains(r["state"].as_str().expect("state")), "state: {row}");
        assert_eq!(cell(row, "wave"), format!("{}/{}", r["wave"], r["waves"].as_array().expect("waves").len()));
        let m = &r["members"];
        assert_eq!(count(&cell(row, "installed")), i(&m["installed"]), "{row}");
        assert_eq!(count(&cell(row, "pending")), i(&m["pending"]), "{row}");
        assert_eq!(count(&cell(row, "failed")), i(&m["failed"]) + i(&m["timeout"]), "{row}");
    }
    assert!(i(&fleet.paused["members"]["timeout"]) > 0, "the stalled wave timed out: {}", fleet.paused);
    assert_eq!(i(&fleet.completed["members"]["installed"]), 1, "the agent installed: {}", fleet.completed);

    // The most recent rollout is selected: its gate checks and decision log.
    let r = &fleet.completed;
    assert!(rollout_rows[r["id"].as_str().expect("id")].contains("selected"), "the newest rollout is selected");
    let gates = element(&dom, "id=\"gates-table\"", "</table>");
    let gate_rows = rows(gates, "data-gate");
    let checks = r["status"]["checks"].as_array().expect("checks");
    assert!(!checks.is_empty(), "the rollout was judged on its gates: {r}");
    assert_eq!(gate_rows.len(), checks.len(), "gate rows: {gates}");
    for c in checks {
        let gate = c["gate"].as_str().expect("gate");
        let row = gate_rows.get(gate).unwrap_or_else(|| panic!("gate {gate} not shown: {gates}"));
        assert_eq!(attr(row, "data-outcome").as_deref(), c["outcome"].as_str(), "{row}");
        assert!(row.contains(&format!("class=\"badge {}\"", c["outcome"].as_str().expect("outcome"))), "colour: {row}");
        assert_eq!(cell_value(row, "limit"), c["limit"].as_f64(), "{row}");
        match c["value"].as_f64() {
            Some(v) => assert!(cell_value(row, "value").is_some_and(|x| close(x, v)), "{row}"),
            None => assert_eq!(cell(row, "value"), "—", "{row}"),
        }
        assert!(text(row).contains(c["note"].as_str().expect("note")), "note: {row}");
    }
    assert!(checks.iter().any(|c| c["outcome"] == "pass") && checks.iter().any(|c| c["outcome"] == "skipped"));
    let phase = text(element(&dom, "id=\"gates-phase\"", "</p>"));
    assert!(phase.contains(r["status"]["message"].as_str().expect("message")), "gate phase: {phase}");

    let log = element(&dom, "id=\"decisions\"", "</ol>");
    let decisions = r["decisions"].as_array().expect("decisions");
    assert!(decisions.iter().any(|d| d["kind"] == "completed"), "{decisions:?}");
    assert_eq!(log.matches("<li data-kind=").count(), decisions.len(), "decision log: {log}");
    let log_text = text(log);
    for d in decisions {
        assert!(log.contains(&format!("data-kind=\"{}\"", d["kind"].as_str().expect("kind"))), "{log}");
        assert!(log_text.contains(d["reason"].as_str().expect("reason")), "reason {} not in {log_text}", d["reason"]);
    }

    // (d) Charts: one series for the version with telemetry, one point per minute with data.
    let series = api.get(&format!("/fleet/series?model={MODEL}&version={}&minutes=60", VERSIONS[0]));
    let points = series.as_array().expect("series");
    let name = format!("{MODEL} {}", VERSIONS[0]);
    for (chart, field) in [("id=\"drift-chart\"", "drift_psi"), ("id=\"latency-chart\"", "p95_us")] {
        let svg = element(&dom, chart, "</svg>");
        let group = element(svg, &format!("<g data-series=\"{name}\""), "</g>");
        let with_data = points
            .iter()
            .filter(|p| !p[field].is_null() && (field != "p95_us" || p["inferences"].as_i64() > Some(0)))
            .count();
        assert!(with_data > 0, "no {field} points: {points:?}");
        assert_eq!(group.matches("<circle").count(), with_data, "{chart}: {group}");
        assert_eq!(group.contains("<polyline"), group.matches("<circle").count() > 1, "{chart}: {group}");
    }

    // (e) Recent events: the agent's, newest first.
    let events = api.get("/events?limit=25");
    let events = events.as_array().expect("events");
    let table = element(&dom, "id=\"events-table\"", "</table>");
    let shown: Vec<String> = {
        let mut v = Vec::new();
        let mut rest = table;
        while let Some(i) = rest.find("<tr data-kind=\"") {
            let tag = start_tag(&rest[i..], "data-kind");
            v.push(attr(tag, "data-kind").expect("kind"));
            rest = &rest[i + tag.len()..];
        }
        v
    };
    let kinds: Vec<String> = events.iter().map(|e| e["kind"].as_str().expect("kind").to_string()).collect();
    assert!(kinds.iter().any(|k| k == "installed"), "events: {kinds:?}");
    assert_eq!(shown, kinds, "events shown, newest first");
    assert!(text(table).contains(AGENT.id), "events name the device");

    // A wrong token: the page asks for one and shows nothing else.
    let wrong = format!("{}0", fleet.token);
    let dom = dump_dom(&format!("{url}#token={wrong}"));
    assert_eq!(attr(start_tag(&dom, "<body"), "data-state").as_deref(), Some("auth"), "{}", start_tag(&dom, "<body"));
    assert!(!start_tag(&dom, "id=\"auth\"").contains("hidden"), "token prompt hidden");
    let msg = text(element(&dom, "id=\"auth-message\"", "</p>"));
    assert!(msg.contains("refused") && msg.contains("unknown API token"), "auth message: {msg}");
    assert!(start_tag(&dom, "id=\"dashboard\"").contains("hidden"), "dashboard shown without a valid token");
    assert!(start_tag(&dom, "id=\"token-input\"").starts_with("<input"), "no token input");
    assert!(!dom.contains(&wrong), "the token is in the page");

    // No token at all.
    let dom = dump_dom(&url);
    assert_eq!(attr(start_tag(&dom, "<body"), "data-state").as_deref(), Some("auth"));
    assert!(text(element(&dom, "id=\"auth-message\"", "</p>")).contains("No API token"));
}

#[test]
fn prometheus_scrapes_metrics() {
    need(PROMETHEUS, "prometheus");
    need(PROMTOOL, "prometheus");
    let fleet = fleet();
    let body = fleet.api().metrics();

    // promtool's linter is happy with the exposition. promtool (2.x) lints
    // the classic text format only: ask for it, and if the server answers in
    // OpenMetrics all the same, lint its classic-format equivalent (counter
    // families named with `_total`, no `# EOF`), which is what the naming
    // rules (base units, `_total` on counters, help texts) are about.
    let (status, head, classic) =
        http_with_head(&fleet.addr, "GET", "/metrics", &[("Accept", "text/plain;version=0.0.4")], b"")
            .expect("/metrics");
    assert_eq!(status, 200, "{head}");
    let openmetrics = head.to_ascii_lowercase().contains("content-type: application/openmetrics-text");
    if openmetrics {
        assert!(classic.ends_with("# EOF\n"), "OpenMetrics without # EOF: {classic}");
    }
    let linted = if openmetrics { openmetrics_to_classic(&classic) } else { classic };
    let mut lint = command(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool");
    lint.stdin.take().expect("stdin").write_all(linted.as_bytes()).expect("feeding promtool");
    let lint = lint.wait_with_output().expect("promtool");
    assert!(
        lint.status.success(),
        "promtool check metrics failed:\n{}{}\n--- linted ---\n{linted}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    // Bounded label sets: no device id in any label value.
    let all = parse_samples(&body);
    assert!(all.iter().any(|(_, l, _)| l.iter().any(|(k, _)| k == "route")), "no labelled series: {body}");
    for (name, labels, _) in &all {
        for (k, v) in labels {
            assert!(!all_devices().any(|d| v.contains(d.id)), "{name} label {k}={v:?} holds a device id");
        }
    }
    assert!(
        all.iter().any(|(n, l, _)| n == "edgefleet_http_requests_total"
            && l.iter().any(|(k, v)| k == "route" && v == "/api/v1/devices/{id}")),
        "device requests are counted under their route template: {body}"
    );

    // A real Prometheus scrapes it every second.
    let dir = TempDir::new("prometheus");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: edgefleet\n    \
             scrape_interval: 1s\n    scrape_timeout: 1s\n    metrics_path: /metrics\n    static_configs:\n      - targets: ['{}']\n",
            fleet.addr
        ),
    )
    .expect("writing prometheus.yml");
    let prom_addr = format!("127.0.0.1:{}", free_port());
    let mut prom = Proc::spawn(
        "prometheus",
        command(PROMETHEUS)
            .arg(format!("--config.file={}", s(&config)))
            .arg(format!("--storage.tsdb.path={}", s(&dir.join("tsdb"))))
            .arg(format!("--web.listen-address={prom_addr}"))
            .arg("--log.level=warn"),
        dir.join("prometheus.log"),
    );
    let mut query = |q: &str| -> Result<Vec<Value>, String> {
        prom.assert_running();
        let (status, body) = http(&prom_addr, "GET", &format!("/api/v1/query?query={}", enc(q)), &[], b"")?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{status} {e}: {body}"))?;
        if status != 200 || v["status"] != "success" {
            return Err(format!("{status}: {body}"));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    };
    let value = |r: &Value| -> f64 { r["value"][1].as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN) };
    let by = |r: &[Value], label: &str| -> BTreeMap<String, i64> {
        r.iter().filter_map(|s| Some((s["metric"][label].as_str()?.to_string(), value(s) as i64))).collect()
    };

    wait_for(60, "Prometheus to scrape the server (up == 1)", || {
        let r = query("up{job=\"edgefleet\"}")?;
        if r.len() == 1 && value(&r[0]) == 1.0 { Ok(()) } else { Err(format!("{r:?}")) }
    });
    let (devices, online) = (expected_devices(), expected_online());
    wait_for(30, "devices by platform in Prometheus", || {
        let d = by(&query("edgefleet_devices{job=\"edgefleet\"}")?, "platform");
        let o = by(&query("edgefleet_devices_online{job=\"edgefleet\"}")?, "platform");
        if d == devices && o == online { Ok(()) } else { Err(format!("devices {d:?}, online {o:?}")) }
    });
    // Counters arrive as counters, histograms as buckets, per-version figures with their labels.
    let r = query(&format!("edgefleet_model_inferences_total{{model=\"{MODEL}\",version=\"{}\"}}", VERSIONS[0]))
        .expect("query");
    assert!(r.len() == 1 && value(&r[0]) == fleet.inferences as f64, "inferences: {r:?}, sent {}", fleet.inferences);
    let r = query("sum(edgefleet_http_requests_total{route=\"/api/v1/devices/{id}\"})").expect("query");
    assert!(r.len() == 1 && value(&r[0]) >= all_devices().count() as f64, "device requests: {r:?}");
    let r =
        query("histogram_quantile(0.99, sum by (le) (edgefleet_http_request_duration_seconds_bucket))").expect("query");
    assert!(r.len() == 1 && value(&r[0]) > 0.0, "p99 from the buckets: {r:?}");
    let states = by(&query("edgefleet_rollouts").expect("query"), "state");
    let mut want = BTreeMap::new();
    for r in [&fleet.completed, &fleet.paused] {
        *want.entry(r["state"].as_str().expect("state").to_string()).or_insert(0) += 1;
    }
    assert_eq!(states, want, "rollouts by state");
    // The drift that fired the retraining webhook is in Prometheus too.
    let w = &fleet.webhook;
    assert_eq!(
        (w["event"].as_str(), w["model"].as_str(), w["version"].as_str()),
        (Some("drift"), Some(MODEL), Some(VERSIONS[0]))
    );
    let threshold = w["threshold"].as_f64().expect("webhook threshold");
    assert!(w["psi"].as_f64().is_some_and(|p| p > threshold), "webhook: {w}");
    let r =
        query(&format!("edgefleet_model_drift_psi{{model=\"{MODEL}\",version=\"{}\"}}", VERSIONS[0])).expect("query");
    assert!(r.len() == 1 && value(&r[0]) > threshold, "fleet drift {r:?}, threshold {threshold}");
    let r = query("edgefleet_webhooks_total{outcome=\"sent\"}").expect("query");
    assert!(r.len() == 1 && value(&r[0]) >= 1.0, "webhooks: {r:?}");
    let r = query("edgefleet_mqtt_connected").expect("query");
    assert!(r.len() == 1 && value(&r[0]) == 1.0, "mqtt: {r:?}");

    // Every Grafana panel query is valid PromQL and finds data here (with
    // Grafana's variables as Grafana would fill them in).
    for (title, expr) in grafana_queries().into_iter().filter(|(t, _)| !t.starts_with("variable ")) {
        let q = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s").replace("$instance", ".*");
        wait_for(30, &format!("data for the Grafana panel {title:?}"), || match query(&q) {
            Ok(r) if !r.is_empty() => Ok(()),
            Ok(r) => Err(format!("no series for {q}: {r:?}")),
            Err(e) => Err(format!("{q}: {e}")),
        });
    }
}

#[test]
fn grafana_dashboard_uses_real_metrics() {
    let exprs = grafana_queries();

    // Every metric a query names is one the live server exposes, and every
    // family the server exposes has a panel.
    let fleet = fleet();
    let body = fleet.api().metrics();
    let fams = families(&body);
    let exposed: BTreeSet<String> = parse_samples(&body).into_iter().map(|s| s.0).collect();
    let mut used = BTreeSet::new();
    for (title, e) in &exprs {
        let names = metric_names(e);
        assert!(!names.is_empty(), "{title}: no edgefleet metric in {e}");
        for n in names {
            assert!(exposed.contains(&n), "{title} queries {n}, which /metrics does not expose (expr: {e})");
            used.insert(n);
        }
    }
    assert!(fams.len() >= 10, "families: {fams:?}");
    for (family, kind) in &fams {
        assert!(
            series_of(family, kind).iter().any(|n| used.contains(n)),
            "no Grafana panel shows {family} ({kind}); series: {:?}",
            series_of(family, kind)
        );
    }
}

/// The queries of the Grafana dashboard, `(panel or variable, expr)`, after
/// checking it is importable: a Prometheus datasource input that every panel
/// and variable uses, unique panel ids, panels within the 24-column grid.
fn grafana_queries() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fleet-server/grafana/edgefleet.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dash: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));

    // Importable: a Prometheus datasource input that every panel and variable uses.
    let inputs = dash["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "no DS_PROMETHEUS input: {inputs:?}"
    );
    assert!(dash["schemaVersion"].as_i64().is_some_and(|v| v >= 36), "schemaVersion {}", dash["schemaVersion"]);
    assert!(dash["uid"].is_string() && dash["title"].is_string());
    fn collect<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        for p in v.as_array().into_iter().flatten() {
            out.push(p);
            collect(&p["panels"], out);
        }
    }
    let mut panels = Vec::new();
    collect(&dash["panels"], &mut panels);
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("?").to_string();
        assert!(ids.insert(i(&p["id"])), "duplicate panel id {}", p["id"]);
        let g = &p["gridPos"];
        assert!(i(&g["x"]) + i(&g["w"]) <= 24 && i(&g["h"]) > 0, "panel {title}: gridPos {g}");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "panel {title} datasource");
        let targets = p["targets"].as_array().filter(|t| !t.is_empty());
        for t in targets.unwrap_or_else(|| panic!("panel {title} has no queries")) {
            let e = t["expr"].as_str().unwrap_or_else(|| panic!("panel {title}: a query without expr"));
            exprs.push((title.clone(), e.to_string()));
        }
    }
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            assert_eq!(v["datasource"]["uid"], "${DS_PROMETHEUS}", "variable {}", v["name"]);
            exprs.push((format!("variable {}", v["name"]), v["definition"].as_str().expect("definition").to_string()));
        }
    }
    assert!(exprs.len() >= 10, "only {} queries", exprs.len());
    exprs
}

/// `edgefleet_*` identifiers in a PromQL expression (outside string literals).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            quoted = !quoted;
        }
        if !quoted && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            word.push(c);
        } else {
            if word.starts_with("edgefleet_") {
                out.insert(std::mem::take(&mut word));
            }
            word.clear();
        }
    }
    out
}
