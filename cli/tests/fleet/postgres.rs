//! Scale-out for real: two server replicas on one PostgreSQL (a cluster
//! this test creates with Debian's initdb) and Debian's Mosquitto. Each
//! rollout is driven by one replica at a time (a lease row); killing a
//! replica mid-rollout hands it to the other, and no wave is started or
//! judged twice.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

const TOKEN: &str = "replica-test-token-0123456789abcdef";

#[test]
fn two_replicas_share_postgres_and_never_drive_a_rollout_twice() {
    let pg = Postgres::start();
    let broker = Mosquitto::start();
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
    let mut a = replica("a");
    let b = replica("b");
    a.publish("kws", "1.0", &pkgs.v1);
    b.publish("kws", "2.0", &pkgs.v2);
    // Both see the same registry.
    let versions = a.ok("GET", "/api/v1/models/kws/versions", None);
    assert_eq!(versions["items"].as_array().map(Vec::len), Some(2), "{versions}");

    let mut agents: Vec<AgentProc> = (0..6)
        .map(|i| {
            let via = if i % 2 == 0 { &a } else { &b };
            AgentProc::enroll_and_start(via, &keys, &format!("pg-{i}"), "linux-arm", "rpi4", &["pg"])
        })
        .collect();
    let apis: Vec<String> = agents.iter_mut().map(AgentProc::api).collect();
    let traffic = Traffic::start(apis, 3);
    // No latency or drift gate: this test is about replicas. Under CI load
    // (other fleet tests in parallel on 2 cores) p95s of a few devices vary
    // by 3x, and a 3-device canary's PSI over ~20 inferences of undrifted
    // traffic once came out at 0.251 against the 0.25 default (the drift gate
    // has tests of its own in drift.rs and rollouts.rs).
    let gates = json!({ "soak_s": 2, "min_inferences": 20, "install_timeout_s": 120, "max_wave_s": 180,
        "max_p95_latency_ratio": null, "max_drift_psi": null });

    let r1 = a.ok(
        "POST",
        "/api/v1/rollouts",
        Some(&json!({"model": "kws", "version": "1.0", "target": {"group": "pg"}, "waves": [100], "gates": gates})),
    );
    let id1 = r1["id"].as_str().expect("id").to_string();
    let r1 = b.wait_rollout(&id1, 240, "finished", |r| r["state"] != "running");
    assert_eq!(r1["state"], "completed", "{r1:#}");

    // Started through replica a, which takes the rollout's lease at once.
    let r2 = a.ok(
        "POST",
        "/api/v1/rollouts",
        Some(&json!({"model": "kws", "version": "2.0", "target": {"group": "pg"}, "waves": [34, 67, 100], "gates": gates})),
    );
    let id2 = r2["id"].as_str().expect("id").to_string();
    // Mid-rollout, replica a dies without a word; b takes over the lease when it lapses.
    b.wait_rollout(&id2, 240, "in wave 2", |r| r["wave"].as_i64() >= Some(2) || r["state"] != "running");
    let lease = format!("SELECT lease_owner FROM rollouts WHERE id = '{id2}'");
    assert_eq!(pg.query(&lease), "a", "replica a drives the rollout it started");
    a.kill9();
    let t = Instant::now();
    let r2 = b.wait_rollout(&id2, 300, "finished", |r| r["state"] != "running");
    eprintln!("2.0 finished {:.1} s after replica a died", t.elapsed().as_secs_f64());
    assert_eq!(r2["state"], "completed", "{r2:#}");
    let kinds: Vec<&str> =
        r2["decisions"].as_array().expect("decisions").iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "created",
            "wave_started",
            "wave_passed",
            "wave_started",
            "wave_passed",
            "wave_started",
            "wave_passed",
            "completed"
        ],
        "every step exactly once"
    );
    assert_eq!(r2["members"]["installed"], 6, "{r2:#}");
    assert_eq!(pg.query(&lease), "b", "replica b took the rollout over");
    assert!(traffic.stop() > 0);
    for ag in agents.iter_mut() {
        let t = Instant::now();
        while ag.live_version().as_deref() != Some("2.0") {
            assert!(t.elapsed() < Duration::from_secs(30), "{} not on 2.0; log:\n{}", ag.id, ag.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // Telemetry reached the database through the surviving replica too.
    let summary = b.ok("GET", "/api/v1/fleet", None);
    assert!(summary["uplinks"].as_i64().unwrap_or(0) > 6 * 3, "{summary}");
}
