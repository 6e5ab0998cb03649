//! The acceptance scenario: 20 agents of four device classes in one group.
//! KWS 1.0 goes to all of them; 2.0 is healthy and reaches 100 % in three
//! waves, each gated against the control cohort still on 1.0; 3.0 drifts
//! against its own reference profile on the canaries and is rolled back by
//! the server by itself. Every device ends on 2.0 and answers inferences.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

const FLEET: [(&str, &str, usize); 4] =
    [("linux-arm", "rpi4", 8), ("android", "pixel7", 6), ("ios", "iphone14", 4), ("linux", "nuc", 2)];

/// Short soaks for a test. The p95 latency limit is 4x rather than the
/// default 1.5x: on this 2-core machine 20 agents, the server, the traffic
/// and the other fleet tests share the cores, and two cohorts' p95 over a
/// few dozen inferences differ by up to 3.3x on the same package. The gate's arithmetic
/// is unit-tested (`rollout::tests::latency_regression_fails`).
fn gates() -> Value {
    json!({ "soak_s": 2, "min_inferences": 40, "install_timeout_s": 120, "max_wave_s": 120, "max_p95_latency_ratio": 4.0 })
}

fn decisions(r: &Value) -> Vec<(String, String)> {
    r["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .map(|d| (d["kind"].as_str().unwrap_or("").to_string(), d["reason"].as_str().unwrap_or("").to_string()))
        .collect()
}

fn check<'a>(r: &'a Value, gate: &str) -> &'a Value {
    r["status"]["checks"].as_array().and_then(|c| c.iter().find(|c| c["gate"] == gate)).unwrap_or(&Value::Null)
}

#[test]
fn healthy_version_reaches_everyone_drifting_one_is_rolled_back() {
    let keys = keys();
    let pkgs = kws_packages();
    let server = ServerProc::start("rollouts", &keys, &[]);
    for (v, p) in [("1.0", &pkgs.v1), ("2.0", &pkgs.v2), ("3.0", &pkgs.v3)] {
        server.publish("kws", v, p);
    }

    let mut agents = Vec::new();
    for (platform, hw, n) in FLEET {
        for i in 0..n {
            let id = format!("{platform}-{i:02}");
            agents.push(AgentProc::enroll_and_start(&server, &keys, &id, platform, hw, &["field"]));
        }
    }
    assert_eq!(agents.len(), 20);
    let apis: Vec<String> = agents.iter_mut().map(AgentProc::api).collect();
    // Every device said hello over MQTT (inventory in the registry).
    let t = Instant::now();
    loop {
        let d = server.ok("GET", "/api/v1/devices?group=field&limit=100", None);
        let seen = d["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|d| d["last_seen_ms"].as_i64().unwrap_or(0) > 0)
            .count();
        if seen == 20 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{seen}/20 devices heard from; server log:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let summary = server.ok("GET", "/api/v1/fleet", None);
    assert_eq!(summary["devices"], 20, "{summary}");
    let traffic = Traffic::start(apis, 2);

    // 1.0 to everyone: the baseline.
    let started = Instant::now();
    let r1 = server.ok(
        "POST",
        "/api/v1/rollouts",
        Some(
            &json!({"model": "kws", "version": "1.0", "target": {"group": "field"}, "waves": [100], "gates": gates()}),
        ),
    );
    let id1 = r1["id"].as_str().expect("id").to_string();
    let r1 = server.wait_rollout(&id1, 240, "completed", |r| r["state"] != "running");
    assert_eq!(r1["state"], "completed", "{r1:#}");
    eprintln!("1.0 on 20 devices in {:.1} s", started.elapsed().as_secs_f64());

    // 2.0 in three waves, gated on the control cohort.
    let started = Instant::now();
    let r2 = server.ok(
        "POST",
        "/api/v1/rollouts",
        Some(&json!({"model": "kws", "version": "2.0", "target": {"group": "field"}, "waves": [10, 50, 100], "gates": gates()})),
    );
    let id2 = r2["id"].as_str().expect("id").to_string();
    assert_eq!(r2["previous_version"], "1.0");
    // Wave 1 is 10 % of 20 = 2 devices, frozen at its start.
    assert_eq!(r2["member_list"].as_array().expect("members").len(), 2, "{r2:#}");
    let mid = server.wait_rollout(&id2, 240, "in wave 2", |r| r["wave"].as_i64() >= Some(2) || r["state"] != "running");
    assert_eq!(mid["state"], "running", "{mid:#}");
    let passed1 = decisions(&mid).into_iter().find(|(k, _)| k == "wave_passed").expect("wave 1 passed");
    assert!(passed1.1.contains("p95_latency_ratio pass") && passed1.1.contains("drift_psi pass"), "{passed1:?}");
    let r2 = server.wait_rollout(&id2, 300, "finished", |r| r["state"] != "running");
    assert_eq!(r2["state"], "completed", "{r2:#}");
    assert_eq!(r2["members"]["installed"], 20, "{r2:#}");
    let kinds: Vec<String> = decisions(&r2).into_iter().map(|d| d.0).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "wave_started").count(), 3, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "wave_passed").count(), 3, "{kinds:?}");
    assert_eq!(kinds.last().map(String::as_str), Some("completed"));
    assert_eq!(check(&r2, "drift_psi")["outcome"], "pass", "{r2:#}");
    eprintln!("2.0 through 3 waves in {:.1} s", started.elapsed().as_secs_f64());
    for a in agents.iter_mut() {
        assert_eq!(a.live_version().as_deref(), Some("2.0"), "{} after 2.0 completed; log:\n{}", a.id, a.log());
    }

    // 3.0: its canaries drift against its reference profile; rolled back by itself.
    let started = Instant::now();
    let r3 = server.ok(
        "POST",
        "/api/v1/rollouts",
        Some(&json!({"model": "kws", "version": "3.0", "target": {"group": "field"}, "waves": [10, 50, 100], "gates": gates()})),
    );
    let id3 = r3["id"].as_str().expect("id").to_string();
    let created3 = r3.clone();
    let canaries: Vec<String> = r3["member_list"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["device"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(canaries.len(), 2);
    let r3 = server.wait_rollout(&id3, 240, "finished", |r| r["state"] != "running");
    assert_eq!(r3["state"], "rolled_back", "{r3:#}");
    let drift = check(&r3, "drift_psi");
    assert_eq!(drift["outcome"], "fail", "{r3:#}");
    assert!(drift["value"].as_f64().expect("canary PSI") > 0.25, "{drift}");
    let control_psi = r3["status"]["control"]["drift_psi"].as_f64().expect("control PSI");
    assert!(control_psi < 0.1, "control cohort on 2.0 should not drift: {control_psi}");
    let failed = decisions(&r3).into_iter().find(|(k, _)| k == "gate_failed").expect("gate_failed decision");
    assert!(failed.1.contains("wave 1") && failed.1.contains("drift_psi"), "{failed:?}");
    assert!(decisions(&r3).iter().any(|(k, _)| k == "rolled_back"), "{:?}", decisions(&r3));
    // Never past the canary wave.
    assert_eq!(r3["member_list"].as_array().expect("members").len(), 2);
    let r3 = server.wait_rollout(&id3, 180, "reverted", |r| r["members"]["reverted"] == 2);
    eprintln!("3.0 rolled back in {:.1} s: {}", started.elapsed().as_secs_f64(), failed.1);
    assert_eq!(r3["members"]["installed"], 0, "{r3:#}");

    let answered = traffic.stop();
    assert!(answered > 0);
    // Every device on the working model, answering.
    let calib = kws_calibration();
    for a in agents.iter_mut() {
        let t = Instant::now();
        while a.live_version().as_deref() != Some("2.0") {
            assert!(t.elapsed() < Duration::from_secs(60), "{} not back on 2.0; log:\n{}", a.id, a.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        let y = a.infer(&calib[0]).unwrap_or_else(|| panic!("{} does not answer", a.id));
        let label = y["label"].as_str().unwrap_or_default();
        assert!(KWS_LABELS.iter().any(|l| l.to_uppercase() == label), "{}: 2.0 labels are upper case: {y}", a.id);
        assert_eq!(y["model"]["version"], "2.0", "{y}");
    }
    // The registry agrees: every device reports 2.0 live.
    let d = server.ok("GET", "/api/v1/devices?group=field&limit=100", None);
    for dev in d["items"].as_array().expect("items") {
        assert_eq!(dev["live_version"], "2.0", "{dev}");
    }
    // A canary that ran 3.0 now holds 2.0 under a newer release counter: the
    // server re-signs the old package rather than asking devices to accept an
    // older counter (which they refuse as a rollback attack).
    for c in &canaries {
        let dev = server.ok("GET", &format!("/api/v1/devices/{c}"), None);
        let member = created3["member_list"]
            .as_array()
            .expect("members")
            .iter()
            .find(|m| m["device"] == c.as_str())
            .expect("member");
        assert!(dev["live_counter"].as_i64() > member["release_counter"].as_i64(), "{dev} vs {member}");
    }
    let metrics = server.metrics();
    assert_eq!(metric(&metrics, "edgefleet_rollout_decisions_total", &["kind=\"rolled_back\""]), 1.0);
    assert!(metric(&metrics, "edgefleet_uplinks_total", &[]) > 0.0);
}
