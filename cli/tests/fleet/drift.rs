//! Fleet drift and the retraining webhook; a shadow rollout gated on
//! agreement.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

/// A plain HTTP endpoint that records every POSTed JSON body.
fn webhook_receiver() -> (u16, mpsc::Receiver<(String, Value)>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            let mut first = String::new();
            let _ = r.read_line(&mut first);
            let mut len = 0;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if tx.send((first.trim().to_string(), v)).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

fn install(server: &ServerProc, version: &str, group: &str, mode: &str, waves: &[f64]) -> Value {
    // Latency: this 2-core machine runs the test's agents, server and
    // traffic at once, so the p95 of a few dozen inferences moves by up to 2x
    // between two runs of the same model; the latency gate itself is
    // unit-tested (`rollout::tests::latency_regression_fails`).
    let r = server.ok(
        "POST",
        "/api/v1/rollouts",
        Some(&json!({"model": "kws", "version": version, "target": {"group": group}, "waves": waves, "mode": mode,
            "gates": {"soak_s": 1, "min_inferences": 60, "install_timeout_s": 120, "max_wave_s": 120,
                "max_p95_latency_ratio": 4.0}})),
    );
    let id = r["id"].as_str().expect("id").to_string();
    server.wait_rollout(&id, 240, "finished", |r| r["state"] != "running")
}

#[test]
fn sustained_fleet_drift_fires_the_retraining_webhook_once() {
    let (hook_port, hooks) = webhook_receiver();
    let keys = keys();
    let pkgs = kws_packages();
    let hook = format!("http://127.0.0.1:{hook_port}/retrain");
    let server = ServerProc::start("webhook", &keys, &["--webhook", &hook, "--drift-for", "3s", "--window", "8s"]);
    server.publish("kws", "1.0", &pkgs.v1);
    let mut agents: Vec<AgentProc> = (0..4)
        .map(|i| AgentProc::enroll_and_start(&server, &keys, &format!("mic-{i}"), "android", "pixel7", &["mics"]))
        .collect();
    let apis: Vec<String> = agents.iter_mut().map(AgentProc::api).collect();
    let traffic = Traffic::start(apis.clone(), 3);
    let r = install(&server, "1.0", "mics", "live", &[100.0]);
    assert_eq!(r["state"], "completed", "{r:#}");

    // Field inputs like the calibration set: no alert.
    std::thread::sleep(Duration::from_secs(6));
    let health = server.ok("GET", "/api/v1/fleet/health", None);
    let v1 = health.as_array().and_then(|h| h.iter().find(|v| v["version"] == "1.0")).cloned().expect("1.0 health");
    assert!(v1["fleet"]["drift_psi"].as_f64().expect("fleet PSI") < 0.1, "{v1}");
    assert_eq!(v1["drift_over_since_ms"], 0);
    assert!(hooks.try_recv().is_err(), "webhook fired without drift");
    traffic.stop();

    // Every microphone gets 6 dB louder.
    let loud = Traffic::start_with(apis, 3, louder);
    let started = Instant::now();
    let (line, body) = hooks.recv_timeout(Duration::from_secs(90)).expect("the retraining webhook");
    let after = started.elapsed();
    assert!(line.starts_with("POST /retrain "), "{line}");
    assert_eq!(body["event"], "drift");
    assert_eq!(body["model"], "kws");
    assert_eq!(body["version"], "1.0");
    assert_eq!(body["package_sha256"], edgefleet_protocol::hex32(&edgefleet_protocol::sha256(&pkgs.v1)));
    assert!(body["psi"].as_f64().expect("psi") > 0.25, "{body}");
    assert!(body["over_for_s"].as_i64().expect("over_for_s") >= 3, "{body}");
    assert!(after >= Duration::from_secs(3), "fired after {after:?}, before drift lasted 3 s");
    // Once per episode, however long it lasts.
    assert!(hooks.recv_timeout(Duration::from_secs(5)).is_err(), "fired twice");
    let health = server.ok("GET", "/api/v1/fleet/health", None);
    let v1 = health.as_array().and_then(|h| h.iter().find(|v| v["version"] == "1.0")).cloned().expect("1.0 health");
    assert!(v1["webhook_fired_ms"].as_i64().unwrap_or(0) > 0, "{v1}");
    assert_eq!(metric(&server.metrics(), "edgefleet_webhooks_total", &["outcome=\"sent\""]), 1.0);
    loud.stop();
}

#[test]
fn shadow_rollout_is_gated_on_agreement_and_leaves_the_live_model() {
    let keys = keys();
    let pkgs = kws_packages();
    let server = ServerProc::start("shadow", &keys, &[]);
    server.publish("kws", "1.0", &pkgs.v1);
    server.publish("kws", "2.0", &pkgs.v2);
    let mut agents: Vec<AgentProc> = (0..4)
        .map(|i| AgentProc::enroll_and_start(&server, &keys, &format!("sh-{i}"), "ios", "iphone14", &["shadow"]))
        .collect();
    let apis: Vec<String> = agents.iter_mut().map(AgentProc::api).collect();
    let traffic = Traffic::start(apis, 3);
    assert_eq!(install(&server, "1.0", "shadow", "live", &[100.0])["state"], "completed");
    let r = install(&server, "2.0", "shadow", "shadow", &[50.0, 100.0]);
    assert_eq!(r["state"], "completed", "{:#}", r["decisions"]);
    let agreement =
        r["status"]["checks"].as_array().and_then(|c| c.iter().find(|c| c["gate"] == "shadow_agreement")).cloned();
    let agreement = agreement.expect("shadow agreement gate");
    assert_eq!(agreement["outcome"], "pass", "{agreement}");
    // Same network, other labels: the candidate agrees on every input.
    assert_eq!(agreement["value"].as_f64(), Some(1.0), "{agreement}");
    traffic.stop();
    for a in agents.iter_mut() {
        let s = a.status();
        assert_eq!(s["live"]["version"], "1.0", "{s}");
        assert_eq!(s["shadow"]["version"], "2.0", "{s}");
    }
}
