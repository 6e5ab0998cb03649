//! Test rig: a real `edgefleet server` process, real `edgefleet agent`
//! processes enrolled through the API, real KWS packages, HTTP over loopback.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use edgefleet_compiler::{CalibrationSet, Options};
use edgefleet_protocol::{Kind, RoleKeys, Root, SecretKey, Signed, keyfile};
use serde_json::Value;

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

pub fn tempdir(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("edgefleet-fleet-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_edgefleet")
}

/// Root and release keys and the signed root.
pub struct Keys {
    pub release: SecretKey,
    pub root_signed: Vec<u8>,
}

pub fn keys() -> Keys {
    let root = SecretKey::from_bytes(&[31; 32]);
    let release = SecretKey::from_bytes(&[42; 32]);
    let r = Root {
        version: 1,
        expires: unix_now() + 365 * 86_400,
        keys: vec![root.public(), release.public()],
        root: RoleKeys { keys: vec![root.public().id()], threshold: 1 },
        targets: RoleKeys { keys: vec![release.public().id()], threshold: 1 },
        revoked: vec![],
    };
    let root_signed = Signed::sign(Kind::Root, &r, &[&root]).expect("sign").to_bytes().expect("bytes");
    Keys { release, root_signed }
}

fn data(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/mlperf-tiny").join(p)
}

/// KWS calibration inputs (float).
pub fn kws_calibration() -> Vec<Vec<f32>> {
    let t = edgefleet_compiler::npy::read(&data("calib/kws_calib_f32.npy")).expect("calib");
    t.to_f32().chunks_exact(490).map(<[f32]>::to_vec).collect()
}

/// +6 dB on the power spectrum: every log-mel bin rises by ln 4, which the
/// orthonormal DCT puts in MFCC 0 as ln 4 · √40.
pub fn louder(x: &[f32]) -> Vec<f32> {
    let shift = 4f32.ln() * 40f32.sqrt();
    x.iter().enumerate().map(|(i, &v)| if i % 10 == 0 { v + shift } else { v }).collect()
}

pub const KWS_LABELS: [&str; 12] =
    ["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes", "silence", "unknown"];

/// KWS packages: v1 and v2 healthy (they differ in their labels), v3 the
/// same network whose reference profile was taken on +6 dB audio (as if
/// calibrated on a differently gained microphone): field inputs drift
/// against it.
pub struct Packages {
    pub v1: Vec<u8>,
    pub v2: Vec<u8>,
    pub v3: Vec<u8>,
}

pub fn kws_packages() -> &'static Packages {
    static P: OnceLock<Packages> = OnceLock::new();
    P.get_or_init(|| {
        let onnx = std::fs::read(data("onnx/kws_int8_from_tflite.onnx")).expect("model");
        let calib = kws_calibration();
        let mk = |labels: Vec<String>, samples: &[Vec<f32>]| {
            let calib = CalibrationSet { samples: samples.iter().map(|s| vec![s.clone()]).collect() };
            let opts = Options { calibration: Some(calib), labels: vec![labels], ..Options::default() };
            edgefleet_compiler::compile(&onnx, &opts, &mut |_| {}).expect("compiles").package
        };
        let lower: Vec<String> = KWS_LABELS.iter().map(|s| s.to_string()).collect();
        let upper: Vec<String> = KWS_LABELS.iter().map(|s| s.to_uppercase()).collect();
        let shifted: Vec<Vec<f32>> = calib.iter().map(|x| louder(x)).collect();
        let mut v3_labels = upper.clone();
        v3_labels[0] = "Down".into();
        Packages { v1: mk(lower, &calib), v2: mk(upper, &calib), v3: mk(v3_labels, &shifted) }
    })
}

/// One HTTP/1.1 request; returns status and body bytes.
pub fn http_raw(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let _ = s.write_all(req.as_bytes());
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n").map_or(resp.len(), |p| p + 4);
    let head = String::from_utf8_lossy(&resp[..split]).to_string();
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut body = resp[split..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else { return out };
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 || b.len() < eol + 2 + n {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[(eol + 4 + n).min(b.len())..];
    }
}

/// JSON request to an agent's local API.
pub fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let (s, b) = http_raw(addr, method, path, &[("Content-Type", "application/json")], body.unwrap_or("").as_bytes());
    (s, String::from_utf8_lossy(&b).to_string())
}

/// A running `edgefleet server`.
pub struct ServerProc {
    child: Option<Child>,
    pub dir: PathBuf,
    pub http: String,
    pub mqtt_port: u16,
    pub token: String,
    pub args: Vec<String>,
}

impl ServerProc {
    /// Starts a server with the release key and root in its data directory,
    /// on embedded defaults (SQLite, the embedded broker), with `extra` flags.
    pub fn start(name: &str, keys: &Keys, extra: &[&str]) -> ServerProc {
        let dir = tempdir(name);
        std::fs::write(dir.join("release.key"), keyfile::secret_text(&keys.release)).expect("key");
        std::fs::write(dir.join("root.signed"), &keys.root_signed).expect("root");
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        for (flag, default) in [("--tick", "300ms"), ("--window", "60s")] {
            if !extra.contains(&flag) {
                args.extend([flag.to_string(), default.to_string()]);
            }
        }
        let mut s =
            ServerProc { child: None, dir, http: String::new(), mqtt_port: free_port(), token: String::new(), args };
        s.http = format!("127.0.0.1:{}", free_port());
        let flag =
            |name: &str| extra.iter().position(|a| *a == name).and_then(|i| extra.get(i + 1)).map(|v| v.to_string());
        if let Some(port) = flag("--mqtt-url").and_then(|u| u.rsplit(':').next().and_then(|p| p.parse().ok())) {
            s.mqtt_port = port;
        }
        s.spawn();
        s.token = match flag("--api-token") {
            Some(t) => t,
            None => std::fs::read_to_string(s.dir.join("admin.token")).expect("admin token").trim().to_string(),
        };
        s
    }

    /// (Re)starts the process with the same data, ports and flags.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("server.log")).expect("log");
        let mut cmd = Command::new(bin());
        cmd.arg("server")
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--listen")
            .arg(&self.http)
            .args(&self.args)
            .env("RUST_LOG", std::env::var("EDGEFLEET_TEST_SERVER_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(log);
        if !self.args.iter().any(|a| a == "--mqtt-url") {
            cmd.arg("--mqtt-listen").arg(format!("127.0.0.1:{}", self.mqtt_port));
        }
        self.child = Some(cmd.spawn().expect("server starts"));
        let t = Instant::now();
        loop {
            if TcpStream::connect(&self.http).is_ok() && http(&self.http, "GET", "/healthz", None).0 == 200 {
                break;
            }
            if let Some(c) = &mut self.child
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!("server exited with {st}; log:\n{}", self.log());
            }
            assert!(t.elapsed() < Duration::from_secs(30), "server did not come up; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// An API call with the admin token: status and JSON (or the raw text as a JSON string).
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let b = body.map(|v| v.to_string()).unwrap_or_default();
        self.api_raw(method, path, &[("Content-Type", "application/json")], b.as_bytes())
    }

    pub fn api_raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
        let auth = format!("Bearer {}", self.token);
        let mut h = vec![("Authorization", auth.as_str())];
        h.extend_from_slice(headers);
        let (s, b) = http_raw(&self.http, method, path, &h, body);
        let text = String::from_utf8_lossy(&b).to_string();
        (s, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// An API call that must succeed.
    pub fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (s, v) = self.api(method, path, body);
        assert!((200..300).contains(&s), "{method} {path}: {s} {v}");
        v
    }

    /// Publishes a package as a model version.
    pub fn publish(&self, model: &str, version: &str, pkg: &[u8]) -> Value {
        let (s, v) = self.api_raw(
            "POST",
            &format!("/api/v1/models/{model}/versions?version={version}&stage=production"),
            &[("Content-Type", "application/octet-stream")],
            pkg,
        );
        assert_eq!(s, 201, "publish {model} {version}: {v}");
        v
    }

    /// The rollout, waiting until `done` says so.
    pub fn wait_rollout(&self, id: &str, secs: u64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let t = Instant::now();
        loop {
            let v = self.ok("GET", &format!("/api/v1/rollouts/{id}?members=true"), None);
            if done(&v) {
                return v;
            }
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "rollout {id}: not {what} after {secs} s: {}",
                serde_json::to_string_pretty(&v).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `/metrics` as text.
    pub fn metrics(&self) -> String {
        let (s, b) = http_raw(&self.http, "GET", "/metrics", &[], b"");
        assert_eq!(s, 200);
        String::from_utf8_lossy(&b).to_string()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Sum of a metric's samples whose line contains every one of `filters`.
pub fn metric(text: &str, name: &str, filters: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Credentials the server issued at enrollment.
#[derive(Clone, Debug)]
pub struct Enrolled {
    pub password: String,
    pub downlink_key: String,
}

/// An `edgefleet agent` process enrolled with the server.
pub struct AgentProc {
    child: Option<Child>,
    pub id: String,
    pub dir: PathBuf,
    pub creds: Enrolled,
    api: Option<String>,
}

impl AgentProc {
    /// Writes the agent's configuration, makes its device key, enrolls it
    /// through the API, and starts it with the issued credentials.
    pub fn enroll_and_start(
        server: &ServerProc,
        keys: &Keys,
        id: &str,
        platform: &str,
        hardware: &str,
        groups: &[&str],
    ) -> AgentProc {
        let a = Self::prepare(server, keys, id, platform, hardware, groups);
        let mut a = a;
        a.start();
        a
    }

    /// As [`Self::enroll_and_start`] without starting.
    pub fn prepare(
        server: &ServerProc,
        keys: &Keys,
        id: &str,
        platform: &str,
        hardware: &str,
        groups: &[&str],
    ) -> AgentProc {
        let dir = server.dir.join("devices").join(id);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("root.signed"), &keys.root_signed).expect("root");
        let conf = format!(
            "device_id = \"{id}\"\nhardware_id = \"{hardware}\"\nplatform = \"{platform}\"\ngroups = {groups:?}\nstate_dir = \"{}\"\n\
             root_of_trust = \"{}\"\n[mqtt]\nhost = \"127.0.0.1\"\nport = {}\n[api]\nlisten = \"127.0.0.1:0\"\n\
             [telemetry]\ninterval_ms = 1000\nmin_drift_inferences = 20\nresend_after_ms = 1000\n\
             [update]\nchunk_size = 16384\nchunk_timeout_ms = 1000\n",
            dir.join("state").display(),
            dir.join("root.signed").display(),
            server.mqtt_port
        );
        std::fs::write(dir.join("agent.toml"), conf).expect("config");
        let out = Command::new(bin())
            .args(["agent", "--print-device-key", "--config"])
            .arg(dir.join("agent.toml"))
            .output()
            .expect("agent runs");
        assert!(out.status.success(), "print-device-key: {}", String::from_utf8_lossy(&out.stderr));
        let public_key = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let v = server.ok(
            "POST",
            "/api/v1/devices",
            Some(&serde_json::json!({"id": id, "platform": platform, "hardware_id": hardware, "public_key": public_key, "groups": groups})),
        );
        let creds = Enrolled {
            password: v["mqtt_password"].as_str().expect("password").into(),
            downlink_key: v["downlink_key"].as_str().expect("downlink key").into(),
        };
        AgentProc { child: None, id: id.into(), dir, creds, api: None }
    }

    pub fn start(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("state/api.addr"));
        self.api = None;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("agent.log")).expect("log");
        let child = Command::new(bin())
            .args(["agent", "--config"])
            .arg(self.dir.join("agent.toml"))
            .env("RUST_LOG", std::env::var("EDGEFLEET_TEST_AGENT_LOG").unwrap_or_else(|_| "info".into()))
            .env("EDGEFLEET_MQTT_PASSWORD", &self.creds.password)
            .env("EDGEFLEET_DOWNLINK_KEY", &self.creds.downlink_key)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("agent starts");
        self.child = Some(child);
    }

    /// The local API address, once the agent is up.
    pub fn api(&mut self) -> String {
        if let Some(a) = &self.api {
            return a.clone();
        }
        let t = Instant::now();
        loop {
            if let Ok(a) = std::fs::read_to_string(self.dir.join("state/api.addr")) {
                self.api = Some(a.clone());
                return a;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "agent {} API did not come up; log:\n{}",
                self.id,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// The agent's status (live and shadow models).
    pub fn status(&mut self) -> Value {
        let api = self.api();
        let (_, body) = http(&api, "GET", "/v1/status", None);
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }

    /// The live version, if a model is live.
    pub fn live_version(&mut self) -> Option<String> {
        self.status()["live"]["version"].as_str().map(String::from)
    }

    /// One inference; `None` when no model is live (or the agent is busy swapping).
    pub fn infer(&mut self, x: &[f32]) -> Option<Value> {
        let api = self.api();
        let (code, body) = http(&api, "POST", "/v1/infer", Some(&serde_json::json!({ "input": x }).to_string()));
        (code == 200).then(|| serde_json::from_str(&body).ok()).flatten()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Sends inference traffic to every agent from a background thread until dropped.
pub struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<u64>>,
}

impl Traffic {
    /// `per_round` inferences per agent and round, inputs drawn from the calibration set.
    pub fn start(apis: Vec<String>, per_round: usize) -> Traffic {
        Self::start_with(apis, per_round, |x| x.to_vec())
    }

    /// As [`Self::start`], each input passed through `transform` first.
    pub fn start_with(apis: Vec<String>, per_round: usize, transform: fn(&[f32]) -> Vec<f32>) -> Traffic {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let calib = kws_calibration();
            let mut state = 0x2545_f491_4f6c_dd1du64;
            let mut n = 0u64;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                for api in &apis {
                    for _ in 0..per_round {
                        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        let x = transform(&calib[(state >> 33) as usize % calib.len()]);
                        let body = serde_json::json!({ "input": x }).to_string();
                        if TcpStream::connect(api).is_ok() && http(api, "POST", "/v1/infer", Some(&body)).0 == 200 {
                            n += 1;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            n
        });
        Traffic { stop, handle: Some(handle) }
    }

    /// Stops and returns the number of answered inferences.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.take().map_or(0, |h| h.join().unwrap_or(0))
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A throwaway PostgreSQL cluster (Debian's `postgresql` package: initdb,
/// pg_ctl), trust authentication on 127.0.0.1, stopped on drop.
pub struct Postgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    as_root: bool,
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|d| {
                d.filter_map(Result::ok).map(|e| e.path().join("bin")).filter(|p| p.join("initdb").exists()).max()
            })
            .unwrap_or_else(|| {
                panic!("PostgreSQL is not installed: `apt-get install postgresql` (scripts/test-all installs it)")
            });
        let dir = tempdir("pg");
        let as_root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false);
        if as_root {
            // initdb refuses to run as root: the cluster belongs to the postgres user.
            let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().map(|s| s.success());
            assert_eq!(ok.ok(), Some(true), "chown {}", dir.display());
        }
        let port = free_port();
        let pg = Postgres { port, dir, bin, as_root };
        let data = pg.dir.join("data");
        pg.run(
            "initdb",
            &["-D", data.to_str().expect("utf8"), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"],
        );
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            pg.dir.display()
        );
        pg.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().expect("utf8"),
                "-o",
                &opts,
                "-l",
                pg.dir.join("pg.log").to_str().expect("utf8"),
                "-w",
                "start",
            ],
        );
        pg.run("createdb", &["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "edgefleet"]);
        pg
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let out = if self.as_root {
            Command::new("runuser").args(["-u", "postgres", "--"]).arg(&exe).args(args).output()
        } else {
            Command::new(&exe).args(args).output()
        }
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// One SQL statement through psql; its rows as `a|b` lines.
    pub fn query(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-At",
                "-d",
                "edgefleet",
                "-c",
                sql,
            ])
            .output()
            .expect("psql runs");
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/edgefleet", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let exe = self.bin.join("pg_ctl");
        let args = ["-D", data.to_str().unwrap_or_default(), "-m", "immediate", "stop"];
        let _ = if self.as_root {
            Command::new("runuser").args(["-u", "postgres", "--"]).arg(&exe).args(args).output()
        } else {
            Command::new(&exe).args(args).output()
        };
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Debian's mosquitto on a free port (anonymous: identity rests on
/// signatures and sealing, not on the broker), killed on drop.
pub struct Mosquitto {
    pub port: u16,
    child: Child,
    conf: PathBuf,
}

impl Mosquitto {
    /// Kills the broker (everything in flight is lost, retained messages
    /// too: no persistence) and starts a new one on the same port.
    pub fn restart(&mut self, down_for: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down_for);
        self.child = Self::spawn(&self.conf, self.port);
    }

    fn spawn(conf: &std::path::Path, port: u16) -> Child {
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or_else(|| panic!("mosquitto is not installed: `apt-get install mosquitto`"));
        let child = Command::new(bin)
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto");
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(10), "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    pub fn start() -> Mosquitto {
        let port = free_port();
        let dir = tempdir("mosquitto");
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmessage_size_limit 1048576\nmax_queued_messages 10000\n\
                 log_dest file {}\nlog_type error\nlog_type warning\nlog_type notice\n",
                dir.join("mosquitto.log").display()
            ),
        )
        .expect("conf");
        let child = Self::spawn(&conf, port);
        Mosquitto { port, child, conf }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
