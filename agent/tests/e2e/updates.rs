//! Signed updates end to end: install v1, update to v2, then every attack
//! rejected with its reason while v2 stays live; run on the embedded broker and on
//! Debian's mosquitto.

use edgefleet_protocol::{Event, sha256};

use crate::support::*;

async fn scenario(broker: Broker) {
    let keys = keys();
    let (v1, v2) = kws_packages();
    let server = Server::start(broker.port).await;
    server.add(v1);
    server.add(v2);
    let dir = tempdir("updates");
    let dev = "board-1";
    let agent = AgentProc::spawn(&dir, dev, broker.port, &keys.root_signed, 60_000);
    let api = agent.api();
    assert_eq!(http(&api, "GET", "/healthz", None).0, 503, "no model yet");

    // v1 then v2, over the real broker.
    server.publish_manifest(dev, sign(&manifest(v1, "1.0", 1), &keys.release)).await;
    server.wait_event(dev, 0, 30, |e| matches!(e, Event::Installed { model, .. } if model.version == "1.0")).await;
    let p = infer(&api, &kws_real_input());
    assert_eq!((p["label"].as_str(), p["model"]["version"].as_str()), (Some("on"), Some("1.0")), "{p}");

    server.publish_manifest(dev, sign(&manifest(v2, "2.0", 2), &keys.release)).await;
    let e =
        server.wait_event(dev, 0, 30, |e| matches!(e, Event::Installed { model, .. } if model.version == "2.0")).await;
    let Event::Installed { previous, .. } = e else { unreachable!() };
    assert_eq!(previous.map(|p| p.version).as_deref(), Some("1.0"));
    assert_eq!(infer(&api, &kws_real_input())["label"], "ON", "v2's labels");

    // Attacks: each rejected with its reason, v2 stays live.
    let mut other = v1.clone();
    other.truncate(v1.len() - 16); // some other package (its bytes are never served correctly)
    let attacks: Vec<(&str, Vec<u8>, &str)> = vec![
        ("wrong key", sign(&manifest(v1, "3.0", 3), &keys.rogue), "does not authorize"),
        ("old counter", sign(&manifest(v1, "1.0-replay", 1), &keys.release), "rollback"),
        (
            "expired",
            {
                let mut m = manifest(v1, "3.1", 3);
                m.expires = unix_now() - 10;
                sign(&m, &keys.release)
            },
            "freeze",
        ),
        (
            "other hardware",
            {
                let mut m = manifest(v1, "3.2", 3);
                m.hardware_ids = vec!["stm32f746".into()];
                sign(&m, &keys.release)
            },
            "hardware",
        ),
        (
            "endless data",
            {
                // Declares fewer bytes than the server sends.
                let mut m = manifest(v1, "3.3", 3);
                m.package_len -= 100;
                m.package_sha256 = sha256(&v1[..v1.len() - 100]);
                server.serve(m.package_sha256, v1);
                sign(&m, &keys.release)
            },
            "endless data",
        ),
        (
            "hash mismatch",
            {
                let mut m = manifest(&other, "3.4", 3);
                m.package_len = v1.len() as u64;
                server.serve(m.package_sha256, v1);
                sign(&m, &keys.release)
            },
            "SHA-256",
        ),
    ];
    for (name, bytes, reason) in attacks {
        let before = server.events(dev).len();
        server.publish_manifest(dev, bytes).await;
        let e = server.wait_event(dev, before, 30, |e| matches!(e, Event::UpdateRejected { .. })).await;
        let Event::UpdateRejected { reason: got, .. } = e else { unreachable!() };
        assert!(got.contains(reason), "{name}: rejected for {got:?}, expected {reason:?}");
        assert_eq!(live_version(&api).as_deref(), Some("2.0"), "{name}: v2 must stay live");
        assert_eq!(infer(&api, &kws_real_input())["label"], "ON", "{name}: still serving v2");
    }
    let log = agent.log();
    assert!(log.contains("update rejected"), "rejections are logged:\n{log}");
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_update_and_attacks_over_the_embedded_broker() {
    scenario(embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_update_and_attacks_over_mosquitto() {
    scenario(mosquitto()).await;
}

/// SIGTERM during normal operation: a clean exit, and the next start serves
/// the same model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_and_restart() {
    let broker = embedded();
    let keys = keys();
    let (v1, _) = kws_packages();
    let server = Server::start(broker.port).await;
    server.add(v1);
    let dir = tempdir("shutdown");
    let mut agent = AgentProc::spawn(&dir, "board-2", broker.port, &keys.root_signed, 60_000);
    server.publish_manifest("board-2", sign(&manifest(v1, "1.0", 1), &keys.release)).await;
    server.wait_event("board-2", 0, 30, |e| matches!(e, Event::Installed { .. })).await;
    assert!(agent.terminate().success());
    agent.start();
    let api = agent.api();
    assert_eq!(live_version(&api).as_deref(), Some("1.0"));
    assert_eq!(infer(&api, &kws_real_input())["label"], "on");
}

/// Shadow mode: a candidate runs beside the live model on the same inputs;
/// telemetry carries agreement and both latencies. Delayed labels give a
/// windowed accuracy next to the label-free estimate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_candidate_and_delayed_labels() {
    let broker = embedded();
    let keys = keys();
    let (v1, v2) = kws_packages();
    let server = Server::start(broker.port).await;
    server.add(v1);
    server.add(v2);
    let dir = tempdir("shadow");
    let dev = "board-shadow";
    let agent = AgentProc::spawn(&dir, dev, broker.port, &keys.root_signed, 500);
    let api = agent.api();
    server.publish_manifest(dev, sign(&manifest(v1, "1.0", 1), &keys.release)).await;
    server.wait_event(dev, 0, 30, |e| matches!(e, Event::Installed { .. })).await;
    // The shadow manifest goes to the group topic in real fleets; the device topic works the same.
    let mut m = manifest(v2, "2.0-candidate", 2);
    m.mode = edgefleet_protocol::Mode::Shadow;
    server.publish_manifest(dev, sign(&m, &keys.release)).await;
    server.wait_event(dev, 0, 30, |e| matches!(e, Event::ShadowStarted { .. })).await;
    assert_eq!(live_version(&api).as_deref(), Some("1.0"), "shadow does not replace the live model");

    let calib = kws_calibration();
    let mut ids = Vec::new();
    for x in calib.iter().take(30) {
        let p = infer(&api, x);
        assert_eq!(p["model"]["version"], "1.0");
        ids.push((p["prediction_id"].as_u64().expect("id"), p["class"].as_u64().expect("class")));
    }
    // Labels: the first 20 say the prediction was right, the next 10 wrong.
    for (i, (id, class)) in ids.iter().enumerate() {
        let label = if i < 20 { *class } else { (*class + 1) % 12 };
        let (code, body) = http(
            &api,
            "POST",
            "/v1/labels",
            Some(&serde_json::json!({"prediction_id": id, "label": label}).to_string()),
        );
        assert_eq!(code, 204, "{body}");
    }
    let (code, _) = http(&api, "POST", "/v1/labels", Some(r#"{"prediction_id": 999999, "label": 1}"#));
    assert_eq!(code, 404);
    // The 30 inferences and labels may span several telemetry windows.
    let t = tokio::time::Instant::now();
    let windows = loop {
        let w = server.telemetry(dev);
        let shadowed: u64 = w.iter().filter_map(|w| w.shadow.as_ref()).map(|s| s.inferences).sum();
        let labeled: u64 = w.iter().filter_map(|w| w.accuracy).map(|a| a.labeled).sum();
        if shadowed >= 30 && labeled >= 30 {
            break w;
        }
        assert!(t.elapsed().as_secs() < 15, "shadow {shadowed}/30, labels {labeled}/30");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let shadows: Vec<_> = windows.iter().filter_map(|w| w.shadow.clone()).collect();
    assert_eq!(shadows.iter().map(|s| s.inferences).sum::<u64>(), 30);
    for s in &shadows {
        assert_eq!(s.candidate.version, "2.0-candidate");
        assert_eq!(s.agreement, 1.0, "same weights, different labels: identical predictions");
        assert!(s.live_latency.count == s.inferences && s.candidate_latency.p50_us > 0);
    }
    let correct: u64 = windows.iter().filter_map(|w| w.accuracy).map(|a| a.correct).sum();
    assert_eq!(correct, 20);
    assert!(windows.iter().filter_map(|w| w.estimated_accuracy).all(|e| (0.0..=1.0).contains(&e)));
    // Bad input is a clear 4xx, and nothing changes.
    let (code, body) = http(&api, "POST", "/v1/infer", Some(r#"{"input": [1.0, 2.0]}"#));
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("490"), "{body}");
    let (code, _) = http(&api, "POST", "/v1/infer", Some("not json"));
    assert_eq!(code, 400);
}

/// Telemetry made while the broker is away is kept on disk and delivered,
/// in sequence, once it is back: nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_is_spooled_while_offline_and_delivered_later() {
    let keys = keys();
    let (v1, _) = kws_packages();
    let broker = mosquitto();
    let port = broker.port;
    let server = Server::start(port).await;
    server.add(v1);
    let dir = tempdir("offline");
    let dev = "board-offline";
    let agent = AgentProc::spawn(&dir, dev, port, &keys.root_signed, 200);
    let api = agent.api();
    server.publish_manifest(dev, sign(&manifest(v1, "1.0", 1), &keys.release)).await;
    server.wait_event(dev, 0, 30, |e| matches!(e, Event::Installed { .. })).await;
    server.stop();

    drop(broker); // the broker goes away
    for x in kws_calibration().iter().take(10) {
        infer(&api, x); // inference keeps working offline
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await; // several telemetry windows
    let spooled = std::fs::read_dir(dir.join("state/spool")).expect("spool").count();
    assert!(spooled >= 3, "only {spooled} uplinks spooled while offline");

    let _broker = mosquitto_on(port); // back, same address
    let server = Server::start(port).await;
    let t = tokio::time::Instant::now();
    loop {
        let left = std::fs::read_dir(dir.join("state/spool")).expect("spool").count();
        let windows = server.telemetry(dev).iter().map(|w| w.inferences).sum::<u64>();
        if left == 0 && windows >= 10 {
            break;
        }
        assert!(t.elapsed().as_secs() < 30, "{left} still spooled, {windows} inferences reported");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let seqs: Vec<u64> =
        server.uplinks.lock().expect("lock").iter().filter(|u| u.device_id == dev).map(|u| u.seq).collect();
    let mut uniq = seqs.clone();
    uniq.sort_unstable();
    uniq.dedup();
    // Everything from the offline period arrived: sequence numbers have no gaps after the first seen.
    assert!(uniq.windows(2).all(|w| w[1] == w[0] + 1), "gap in sequence numbers: {uniq:?}");
}

/// Factory provisioning from files: `edgefleet-agent --install` takes the same
/// verified path as an update; a manifest it would reject over the air is
/// rejected here too, with the same reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_from_files() {
    let broker = embedded();
    let keys = keys();
    let (v1, _) = kws_packages();
    let dir = tempdir("install");
    let mut agent = AgentProc::spawn(&dir, "board-factory", broker.port, &keys.root_signed, 60_000);
    agent.kill9();
    std::fs::write(dir.join("kws.efm"), v1).expect("package");
    let install = |manifest: Vec<u8>| {
        std::fs::write(dir.join("kws.manifest"), manifest).expect("manifest");
        std::process::Command::new(env!("CARGO_BIN_EXE_edgefleet-agent"))
            .arg("--config")
            .arg(dir.join("agent.toml"))
            .arg("--install")
            .arg(dir.join("kws.efm"))
            .arg("--manifest")
            .arg(dir.join("kws.manifest"))
            .output()
            .expect("runs")
    };
    let rogue = install(sign(&manifest(v1, "1.0", 1), &keys.rogue));
    assert!(!rogue.status.success());
    assert!(
        String::from_utf8_lossy(&rogue.stderr).contains("does not authorize"),
        "{}",
        String::from_utf8_lossy(&rogue.stderr)
    );
    let ok = install(sign(&manifest(v1, "1.0", 1), &keys.release));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("Installed"));
    agent.start();
    let api = agent.api();
    assert_eq!(live_version(&api).as_deref(), Some("1.0"));
    assert_eq!(infer(&api, &kws_real_input())["label"], "on");
}
