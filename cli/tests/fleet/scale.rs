//! The fleet at (CI) scale: `edgefleet simulate` runs 60 devices in one
//! process (each the real agent) against two server replicas on PostgreSQL
//! and Mosquitto. A staged rollout reaches all of them although the broker
//! is killed and restarted in its middle: devices reconnect, downloads
//! resume, and no telemetry is lost (every device's sequence numbers arrive
//! without gaps).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

const TOKEN: &str = "scale-test-token-0123456789abcdef";
const DEVICES: usize = 60;

#[test]
fn simulated_fleet_survives_a_broker_restart_mid_rollout() {
    let pg = Postgres::start();
    let mut broker = Mosquitto::start();
    let keys = keys();
    let pkgs = kws_packages();
    let db = pg.url();
    let mqtt = format!("mqtt://127.0.0.1:{}", broker.port);
    let replica = |name: &str| {
        ServerProc::start(
            name,
            &keys,
            &["--database", &db, "--mqtt-url", &mqtt, "--api-token", TOKEN, "--replica", name],
        )
    };
    let a = replica("a");
    let b = replica("b");
    a.publish("kws", "1.0", &pkgs.v1);
    a.publish("kws", "2.0", &pkgs.v2);

    let sim_dir = tempdir("sim");
    let summary_file = sim_dir.join("summary.json");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut sim = Command::new(bin())
        .args(["simulate", "--devices", &DEVICES.to_string(), "--mix", "linux-arm:rpi4:field=2,android:pixel7:field=1"])
        .args(["--telemetry-interval", "1s", "--infer-interval", "150ms", "--report-every", "2s"])
        .args(["--server", &format!("http://{}", a.http), "--token", TOKEN])
        .arg("--root")
        .arg(a.dir.join("root.signed"))
        .arg("--state-dir")
        .arg(sim_dir.join("devices"))
        .arg("--summary")
        .arg(&summary_file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(sim_dir.join("sim.log")).expect("log"))
        .spawn()
        .map(Kill)
        .expect("simulator starts");
    let sim_log = || std::fs::read_to_string(sim_dir.join("sim.log")).unwrap_or_default();
    let t = Instant::now();
    loop {
        let d = b.ok("GET", "/api/v1/fleet", None);
        if d["online"].as_i64() == Some(DEVICES as i64) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "{d}\nsimulator:\n{}", sim_log());
        std::thread::sleep(Duration::from_millis(300));
    }
    let gates = json!({ "soak_s": 2, "min_inferences": 40, "install_timeout_s": 120, "max_wave_s": 240, "max_p95_latency_ratio": null });
    let r1 = a.ok(
        "POST",
        "/api/v1/rollouts",
        Some(&json!({"model": "kws", "version": "1.0", "target": {"group": "field"}, "waves": [100], "gates": gates})),
    );
    let r1 = b.wait_rollout(r1["id"].as_str().expect("id"), 240, "finished", |r| r["state"] != "running");
    assert_eq!(r1["state"], "completed", "{r1:#}");

    let r2 = b.ok(
        "POST",
        "/api/v1/rollouts",
        Some(&json!({"model": "kws", "version": "2.0", "target": {"group": "field"}, "waves": [10, 50, 100], "gates": gates})),
    );
    let id2 = r2["id"].as_str().expect("id").to_string();
    // Wave 2 has just sent 24 devices the manifest: restart the broker while they download.
    a.wait_rollout(&id2, 240, "in wave 2", |r| r["wave"].as_i64() >= Some(2) || r["state"] != "running");
    std::thread::sleep(Duration::from_millis(300));
    broker.restart(Duration::from_secs(2));
    let r2 = a.wait_rollout(&id2, 300, "finished", |r| r["state"] != "running");
    assert_eq!(r2["state"], "completed", "{r2:#}\nsimulator:\n{}", sim_log());
    assert_eq!(r2["members"]["installed"], DEVICES as i64);
    let kinds: Vec<&str> =
        r2["decisions"].as_array().expect("decisions").iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "wave_started").count(), 3, "{kinds:?}");

    // Every device on 2.0, as the registry sees it.
    let devices = a.ok("GET", "/api/v1/devices?limit=1000", None);
    let items = devices["items"].as_array().expect("items");
    assert_eq!(items.len(), DEVICES);
    for d in items {
        assert_eq!(d["live_version"], "2.0", "{d}");
    }
    // Downloads resumed rather than restarted: package bytes served by both
    // replicas stay close to one copy per device and version.
    let served = metric(&a.metrics(), "edgefleet_package_chunk_bytes_total", &[])
        + metric(&b.metrics(), "edgefleet_package_chunk_bytes_total", &[]);
    let one_each = (DEVICES * (pkgs.v1.len() + pkgs.v2.len())) as f64;
    assert!(served >= one_each, "served {served} < {one_each}");
    assert!(served <= one_each * 1.3, "served {served} bytes for {one_each}: downloads restarted");

    // Stop the simulator (devices flush their spools first), then count gaps.
    let _ = Command::new("kill").args(["-INT", &sim.0.id().to_string()]).status();
    let t = Instant::now();
    while sim.0.try_wait().expect("wait").is_none() {
        assert!(t.elapsed() < Duration::from_secs(60), "simulator did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&summary_file).expect("summary")).expect("json");
    assert_eq!(summary["devices"], DEVICES as i64);
    assert!(summary["inferences"].as_u64().unwrap_or(0) > 1000, "{summary}");
    let t = Instant::now();
    let fleet = loop {
        let f = a.ok("GET", "/api/v1/fleet?gaps=true", None);
        if f["uplinks_missing"] == 0 || t.elapsed() > Duration::from_secs(20) {
            break f;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(fleet["uplinks_missing"], 0, "telemetry lost: {fleet}\nsimulator:\n{}", sim_log());
    // Uplinks still spooled at shutdown are on the devices' disks, sent on their next start: not lost.
    assert!(fleet["uplinks"].as_i64().unwrap_or(0) > (DEVICES * 10) as i64, "{fleet}");
    drop(pg);
}
