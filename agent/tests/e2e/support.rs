//! Test rig: brokers, keys and packages, an update server (manifests and
//! chunks over MQTT, the fleet server's part), agent processes, HTTP.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use edgefleet_compiler::{CalibrationSet, Options};
use edgefleet_protocol::{
    ChunkRequest, Event, Kind, Manifest, Mode, Payload, RoleKeys, Root, SecretKey, Signed, Telemetry, Uplink,
    UplinkAck, chunks, sha256, topics,
};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};

pub const NOW_SLACK: u64 = 86_400;

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A running broker.
pub struct Broker {
    pub port: u16,
    child: Option<Child>,
    #[allow(dead_code)] // held: dropping it stops the broker
    embedded: Option<edgefleet_broker::Broker>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_port(port: u16) {
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(10), "broker did not start on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The fleet server's embedded broker (`edgefleet-broker`), in this process
/// on a thread of its own, everyone allowed everything.
pub fn embedded() -> Broker {
    let config = edgefleet_broker::Config { listen: ([127, 0, 0, 1], 0).into(), ..Default::default() };
    let broker = edgefleet_broker::Broker::start_thread(config, edgefleet_broker::allow_all()).expect("broker starts");
    Broker { port: broker.local_addr().port(), child: None, embedded: Some(broker) }
}

/// Debian's mosquitto as a child process (CI installs the package).
pub fn mosquitto() -> Broker {
    mosquitto_on(free_port())
}

/// mosquitto on a given port (to bring a broker back at the same address).
pub fn mosquitto_on(port: u16) -> Broker {
    mosquitto_with(port, &format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"))
}

/// mosquitto with a configuration (listeners and all); `port` is waited for.
pub fn mosquitto_with(port: u16, config: &str) -> Broker {
    let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"].into_iter().find(|p| Path::new(p).exists()).unwrap_or_else(
        || panic!("mosquitto is not installed: `apt-get install mosquitto` (scripts/test-all and .ci/run install it)"),
    );
    let dir = tempdir("mosquitto");
    let conf = dir.join("mosquitto.conf");
    std::fs::write(&conf, format!("message_size_limit 1048576\n{config}")).expect("conf");
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto starts");
    wait_port(port);
    Broker { port, child: Some(child), embedded: None }
}

pub fn tempdir(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("edgefleet-e2e-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Root, release and rogue keys, and the signed root.
pub struct Keys {
    pub release: SecretKey,
    pub rogue: SecretKey,
    pub root_signed: Vec<u8>,
}

pub fn keys() -> Keys {
    let root = SecretKey::from_bytes(&[11; 32]);
    let release = SecretKey::from_bytes(&[22; 32]);
    let rogue = SecretKey::from_bytes(&[66; 32]);
    let r = Root {
        version: 1,
        expires: unix_now() + 365 * 86_400,
        keys: vec![root.public(), release.public()],
        root: RoleKeys { keys: vec![root.public().id()], threshold: 1 },
        targets: RoleKeys { keys: vec![release.public().id()], threshold: 1 },
        revoked: vec![],
    };
    let root_signed = Signed::sign(Kind::Root, &r, &[&root]).expect("sign").to_bytes().expect("bytes");
    Keys { release, rogue, root_signed }
}

fn data(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/mlperf-tiny").join(p)
}

/// KWS calibration inputs (float).
pub fn kws_calibration() -> Vec<Vec<f32>> {
    let t = edgefleet_compiler::npy::read(&data("calib/kws_calib_f32.npy")).expect("calib");
    t.to_f32().chunks_exact(490).map(<[f32]>::to_vec).collect()
}

pub const KWS_LABELS: [&str; 12] =
    ["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes", "silence", "unknown"];

/// Two different KWS packages (TFLite-exact int8 model, reference profile
/// from the calibration set); they differ in their labels only.
pub fn kws_packages() -> &'static (Vec<u8>, Vec<u8>) {
    static P: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    P.get_or_init(|| {
        let onnx = std::fs::read(data("onnx/kws_int8_from_tflite.onnx")).expect("model");
        let calib = CalibrationSet { samples: kws_calibration().into_iter().map(|s| vec![s]).collect() };
        let mk = |labels: Vec<String>| {
            let opts = Options { calibration: Some(calib.clone()), labels: vec![labels], ..Options::default() };
            edgefleet_compiler::compile(&onnx, &opts, &mut |_| {}).expect("compiles").package
        };
        let v1 = mk(KWS_LABELS.iter().map(|s| s.to_string()).collect());
        let v2 = mk(KWS_LABELS.iter().map(|s| s.to_uppercase()).collect());
        (v1, v2)
    })
}

/// The real KWS utterance (class 5, "on").
pub fn kws_real_input() -> Vec<f32> {
    edgefleet_compiler::npy::read(&data("ref/kws/real.input_f32.npy")).expect("input").to_f32()
}

pub fn manifest(pkg: &[u8], version: &str, counter: u64) -> Manifest {
    Manifest {
        model_id: "kws".into(),
        version: version.into(),
        release_counter: counter,
        package_len: pkg.len() as u64,
        package_sha256: sha256(pkg),
        hardware_ids: vec!["test-board".into()],
        expires: unix_now() + NOW_SLACK,
        rollout_id: "r1".into(),
        reference_profile_sha256: [0; 32],
        mode: Mode::Live,
    }
}

pub fn sign(m: &Manifest, key: &SecretKey) -> Vec<u8> {
    Signed::sign(Kind::Manifest, m, &[key]).expect("sign").to_bytes().expect("bytes")
}

/// The fleet server's part: retained manifests, chunk answers, uplink intake.
pub struct Server {
    client: AsyncClient,
    packages: Arc<Mutex<HashMap<[u8; 32], Vec<u8>>>>,
    pub uplinks: Arc<Mutex<Vec<Uplink>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start(port: u16) -> Server {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut opts = MqttOptions::new(format!("server-{}-{n}", std::process::id()), "127.0.0.1", port);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(opts, 256);
        let packages: Arc<Mutex<HashMap<[u8; 32], Vec<u8>>>> = Arc::default();
        let uplinks: Arc<Mutex<Vec<Uplink>>> = Arc::default();
        let (p, u, c) = (packages.clone(), uplinks.clone(), client.clone());
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready = Some(ready_tx);
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        let _ = c.subscribe(topics::ALL_CHUNK_REQUESTS, QoS::AtMostOnce).await;
                        let _ = c.subscribe(topics::ALL_UPLINKS, QoS::AtLeastOnce).await;
                    }
                    Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(msg))) => match topics::parse(&msg.topic) {
                        Some(topics::Topic::ChunkRequest(dev)) => {
                            let Ok(req) = postcard::from_bytes::<ChunkRequest>(&msg.payload) else { continue };
                            let pkg = p.lock().expect("lock").get(&req.package_sha256).cloned();
                            let resp = match pkg {
                                Some(bytes) => {
                                    // Serve whatever is registered under that hash (tests register wrong bytes on purpose).
                                    let own = sha256(&bytes);
                                    let mut r =
                                        chunks::serve(&bytes, &own, &ChunkRequest { package_sha256: own, ..req });
                                    r.package_sha256 = req.package_sha256;
                                    r
                                }
                                None => chunks::serve(&[], &[0; 32], &req),
                            };
                            let bytes = postcard::to_allocvec(&resp).expect("encode");
                            let _ = c.publish(topics::chunk_response(dev), QoS::AtMostOnce, false, bytes).await;
                        }
                        Some(topics::Topic::Uplink(dev)) => {
                            if let Ok(s) = Signed::from_bytes(&msg.payload)
                                && let Ok(up) = s.decode::<Uplink>(Kind::Uplink)
                            {
                                let ack = UplinkAck { seqs: vec![up.seq] };
                                // At-least-once delivery: keep the first copy of each (device, seq).
                                {
                                    let mut ups = u.lock().expect("lock");
                                    if !ups.iter().any(|x| x.device_id == up.device_id && x.seq == up.seq) {
                                        ups.push(up);
                                    }
                                }
                                let bytes = postcard::to_allocvec(&ack).expect("encode");
                                let _ = c.publish(topics::uplink_ack(dev), QoS::AtLeastOnce, false, bytes).await;
                            }
                        }
                        _ => {}
                    },
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx).await.expect("server subscribed").expect("ready");
        Server { client, packages, uplinks, _task: task }
    }

    /// Stops the server (its connection goes with it).
    pub fn stop(self) {}

    /// Serves `bytes` for chunk requests naming `sha`.
    pub fn serve(&self, sha: [u8; 32], bytes: &[u8]) {
        self.packages.lock().expect("lock").insert(sha, bytes.to_vec());
    }

    pub fn add(&self, pkg: &[u8]) {
        self.serve(sha256(pkg), pkg);
    }

    pub async fn publish_manifest(&self, device: &str, signed: Vec<u8>) {
        self.client.publish(topics::device_manifest(device), QoS::AtLeastOnce, true, signed).await.expect("publish");
    }

    pub fn events(&self, device: &str) -> Vec<Event> {
        self.uplinks
            .lock()
            .expect("lock")
            .iter()
            .filter(|u| u.device_id == device)
            .filter_map(|u| if let Payload::Event(e) = &u.payload { Some(e.clone()) } else { None })
            .collect()
    }

    pub fn telemetry(&self, device: &str) -> Vec<Telemetry> {
        self.uplinks
            .lock()
            .expect("lock")
            .iter()
            .filter(|u| u.device_id == device)
            .filter_map(|u| if let Payload::Telemetry(t) = &u.payload { Some((**t).clone()) } else { None })
            .collect()
    }

    /// Waits until an event matching `f` arrives (after the first `skip` events).
    pub async fn wait_event(&self, device: &str, skip: usize, secs: u64, f: impl Fn(&Event) -> bool) -> Event {
        let t = Instant::now();
        loop {
            if let Some(e) = self.events(device).into_iter().skip(skip).find(|e| f(e)) {
                return e;
            }
            assert!(t.elapsed() < Duration::from_secs(secs), "timed out; events so far: {:#?}", self.events(device));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self._task.abort();
    }
}

/// An agent process.
pub struct AgentProc {
    child: Option<Child>,
    pub dir: PathBuf,
    /// Extra environment for the process.
    pub env: Vec<(String, String)>,
}

impl AgentProc {
    pub fn spawn(dir: &Path, device: &str, port: u16, root: &[u8], telemetry_ms: u64) -> AgentProc {
        Self::spawn_with(dir, device, port, root, telemetry_ms, "")
    }

    /// As `spawn`, with extra `[update]` settings.
    pub fn spawn_with(dir: &Path, device: &str, port: u16, root: &[u8], telemetry_ms: u64, update: &str) -> AgentProc {
        Self::spawn_full(dir, device, port, root, telemetry_ms, update, "host = \"127.0.0.1\"")
    }

    /// As `spawn_with`, with the `[mqtt]` settings besides the port (host, tls...).
    pub fn spawn_full(
        dir: &Path,
        device: &str,
        port: u16,
        root: &[u8],
        telemetry_ms: u64,
        update: &str,
        mqtt: &str,
    ) -> AgentProc {
        std::fs::create_dir_all(dir).expect("dir");
        std::fs::write(dir.join("root.signed"), root).expect("root");
        let conf = format!(
            "device_id = \"{device}\"\nhardware_id = \"test-board\"\nplatform = \"linux\"\nstate_dir = \"{}\"\nroot_of_trust = \"{}\"\n\
             [mqtt]\n{mqtt}\nport = {port}\n[api]\nlisten = \"127.0.0.1:0\"\n\
             [telemetry]\ninterval_ms = {telemetry_ms}\nmin_drift_inferences = 20\nresend_after_ms = 1000\n[update]\nchunk_size = 8192\nchunk_timeout_ms = 500\n{update}\n",
            dir.join("state").display(),
            dir.join("root.signed").display()
        );
        std::fs::write(dir.join("agent.toml"), conf).expect("config");
        let mut a = AgentProc { child: None, dir: dir.to_path_buf(), env: Vec::new() };
        a.start();
        a
    }

    pub fn start(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("state/api.addr"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("agent.log")).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_edgefleet-agent"))
            .arg("--config")
            .arg(self.dir.join("agent.toml"))
            .env("RUST_LOG", std::env::var("EDGEFLEET_TEST_AGENT_LOG").unwrap_or_else(|_| "info".into()))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("agent starts");
        self.child = Some(child);
    }

    /// The API address, once the agent is up.
    pub fn api(&self) -> String {
        let t = Instant::now();
        loop {
            if let Ok(a) = std::fs::read_to_string(self.dir.join("state/api.addr")) {
                return a;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "agent API did not come up; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().map(|s| s.is_none()).unwrap_or(false),
            None => false,
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let t = Instant::now();
        loop {
            if let Some(s) = c.try_wait().expect("wait") {
                return s;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "agent did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One HTTP/1.1 request; returns status and body.
pub fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

pub fn infer(addr: &str, x: &[f32]) -> serde_json::Value {
    let (code, body) = http(addr, "POST", "/v1/infer", Some(&serde_json::json!({ "input": x }).to_string()));
    assert_eq!(code, 200, "infer: {body}");
    serde_json::from_str(&body).expect("json")
}

pub fn live_version(addr: &str) -> Option<String> {
    let (_, body) = http(addr, "GET", "/v1/status", None);
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["live"]["version"].as_str().map(String::from)
}
