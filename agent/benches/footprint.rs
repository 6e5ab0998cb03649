//! Agent footprint: resident memory of the real `edgefleet-agent` process
//! with the KWS model installed (`edgefleet-agent --install`), telemetry on
//! (1 s interval) to a real MQTT broker (the fleet server's embedded broker), after serving a
//! burst of inferences over its local API. Run: `cargo bench -p edgefleet-agent --bench footprint`
//! (builds the agent in release). Prints VmRSS and VmHWM from /proc.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgefleet_compiler::{CalibrationSet, Options};
use edgefleet_protocol::{Kind, Manifest, Mode, RoleKeys, Root, SecretKey, Signed};

fn http(addr: &str, body: &str) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connect");
    let req = format!(
        "POST /v1/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut r = String::new();
    let _ = s.read_to_string(&mut r);
    r.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benches; nothing to list here
    }
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/mlperf-tiny");
    let onnx = std::fs::read(data.join("onnx/kws_int8_from_tflite.onnx")).expect("model");
    let calib = edgefleet_compiler::npy::read(&data.join("calib/kws_calib_f32.npy")).expect("calibration");
    let samples: Vec<Vec<f32>> = calib.to_f32().chunks_exact(490).map(<[f32]>::to_vec).collect();
    let set = CalibrationSet { samples: samples.iter().map(|s| vec![s.clone()]).collect() };
    let pkg =
        edgefleet_compiler::compile(&onnx, &Options { calibration: Some(set), ..Options::default() }, &mut |_| {})
            .expect("compiles")
            .package;

    let broker =
        edgefleet_broker::Broker::start_thread(edgefleet_broker::Config::default(), edgefleet_broker::allow_all())
            .expect("broker");
    let port = broker.local_addr().port();

    let (root_key, release) = (SecretKey::from_bytes(&[1; 32]), SecretKey::from_bytes(&[2; 32]));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let root = Root {
        version: 1,
        expires: now + 86_400,
        keys: vec![root_key.public(), release.public()],
        root: RoleKeys { keys: vec![root_key.public().id()], threshold: 1 },
        targets: RoleKeys { keys: vec![release.public().id()], threshold: 1 },
        revoked: vec![],
    };
    let dir = std::env::temp_dir().join(format!("edgefleet-footprint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("root.signed"),
        Signed::sign(Kind::Root, &root, &[&root_key]).expect("sign").to_bytes().expect("bytes"),
    )
    .expect("root");
    std::fs::write(
        dir.join("agent.toml"),
        format!(
            "device_id = \"bench\"\nhardware_id = \"hw\"\nstate_dir = \"{}\"\nroot_of_trust = \"{}\"\n[mqtt]\nport = {port}\n[api]\nlisten = \"127.0.0.1:0\"\n[telemetry]\ninterval_ms = 1000\n",
            dir.join("state").display(),
            dir.join("root.signed").display()
        ),
    )
    .expect("config");
    // Provision the model from files, through the same checks as an update.
    let m = Manifest {
        model_id: "kws".into(),
        version: "1".into(),
        release_counter: 1,
        package_len: pkg.len() as u64,
        package_sha256: edgefleet_protocol::sha256(&pkg),
        hardware_ids: vec!["hw".into()],
        expires: now + 3600,
        rollout_id: String::new(),
        reference_profile_sha256: [0; 32],
        mode: Mode::Live,
    };
    std::fs::write(dir.join("kws.efm"), &pkg).expect("package");
    std::fs::write(
        dir.join("kws.manifest"),
        Signed::sign(Kind::Manifest, &m, &[&release]).expect("sign").to_bytes().expect("bytes"),
    )
    .expect("manifest");
    let status = Command::new(env!("CARGO_BIN_EXE_edgefleet-agent"))
        .arg("--config")
        .arg(dir.join("agent.toml"))
        .arg("--install")
        .arg(dir.join("kws.efm"))
        .arg("--manifest")
        .arg(dir.join("kws.manifest"))
        .stdout(Stdio::null())
        .status()
        .expect("install");
    assert!(status.success(), "provisioning failed");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_edgefleet-agent"))
        .arg("--config")
        .arg(dir.join("agent.toml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("agent");
    let addr = loop {
        if let Ok(a) = std::fs::read_to_string(dir.join("state/api.addr")) {
            break a;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let t = Instant::now();
    let n = 2000;
    for i in 0..n {
        let body = serde_json::json!({ "input": samples[i % samples.len()] }).to_string();
        assert_eq!(http(&addr, &body), 200, "inference {i}");
    }
    let per = t.elapsed() / n as u32;
    std::thread::sleep(Duration::from_millis(1500)); // a telemetry window closes
    let pid = agent.id();
    println!(
        "edgefleet-agent, KWS live, telemetry every 1 s, after {n} inferences over HTTP ({per:?} each, HTTP included): \
         VmRSS {} KiB, VmHWM {} KiB; binary {} bytes",
        status_kb(pid, "VmRSS:"),
        status_kb(pid, "VmHWM:"),
        std::fs::metadata(env!("CARGO_BIN_EXE_edgefleet-agent")).map(|m| m.len()).unwrap_or(0)
    );
    let _ = agent.kill();
    let _ = agent.wait();
}
