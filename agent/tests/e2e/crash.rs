//! Crash safety: kill -9 the agent at random moments of updates (download,
//! slot write, swap, health check); after every restart a model loads and
//! serves. EDGEFLEET_CRASH_CYCLES sets the number of kills (default 200).

use std::time::{Duration, Instant};

use edgefleet_protocol::Event;

use crate::support::*;

fn wait_serving(agent: &AgentProc) -> String {
    let api = agent.api();
    let t = Instant::now();
    loop {
        if http(&api, "GET", "/healthz", None).0 == 200 {
            return api;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no model serves after restart; log:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The live version, or `None` if the agent does not answer (not up yet, or gone).
fn try_live_version(agent: &AgentProc) -> Option<String> {
    use std::io::{Read, Write};
    let addr = std::fs::read_to_string(agent.dir.join("state/api.addr")).ok()?;
    let mut s = std::net::TcpStream::connect(addr.trim()).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let body = resp.split_once("\r\n\r\n")?.1;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["live"]["version"].as_str().map(String::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_never_leaves_the_device_without_a_model() {
    let cycles: u64 = std::env::var("EDGEFLEET_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let broker = embedded();
    let keys = keys();
    let (v1, v2) = kws_packages();
    let server = Server::start(broker.port).await;
    server.add(v1);
    server.add(v2);
    let dir = tempdir("crash");
    let dev = "board-crash";
    // Kills this frequent land in health checks again and again; giving up
    // after interrupted health checks is tested on its own below.
    let mut agent = AgentProc::spawn_with(
        &dir,
        dev,
        broker.port,
        &keys.root_signed,
        60_000,
        "max_interrupted_health_checks = 1000000",
    );
    server.publish_manifest(dev, sign(&manifest(v1, "1", 1), &keys.release)).await;
    server.wait_event(dev, 0, 30, |e| matches!(e, Event::Installed { .. })).await;

    // How long one full update takes here (download, write, swap, health check).
    let t = Instant::now();
    server.publish_manifest(dev, sign(&manifest(v2, "2", 2), &keys.release)).await;
    server.wait_event(dev, 0, 30, |e| matches!(e, Event::Installed { model, .. } if model.version == "2")).await;
    let update = t.elapsed();

    let mut rng = 0x5eed_u64;
    for i in 0..cycles {
        let counter = i + 3;
        let version = counter.to_string();
        let pkg = if counter % 2 == 0 { v2 } else { v1 };
        // Every fourth kill aims at the install phase (slot write, swap,
        // health check): a few milliseconds of the update that kills spread
        // over all of it can miss altogether as the runtime gets faster.
        let aimed = i % 4 == 3;
        let installs = |log: &str| log.lines().filter(|l| l.contains("installing")).count();
        let seen = if aimed { installs(&agent.log()) } else { 0 };
        server.publish_manifest(dev, sign(&manifest(pkg, &version, counter), &keys.release)).await;
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        if aimed {
            // Right after the agent logs that it is installing (or after 10 s).
            let t = Instant::now();
            while installs(&agent.log()) == seen && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_micros(100));
            }
            std::thread::sleep(Duration::from_micros(rng % 500));
        } else {
            // Anywhere from the manifest's arrival to the end of a whole update.
            tokio::time::sleep(Duration::from_micros(rng % (update.as_micros() as u64).max(1))).await;
        }
        agent.kill9();
        agent.start();
        let api = wait_serving(&agent);
        let p = infer(&api, &kws_real_input());
        assert!(p["label"] == "on" || p["label"] == "ON", "cycle {i}: {p}");
        // Let this update finish (resumed after the restart) before the next.
        let t = Instant::now();
        while live_version(&api).as_deref() != Some(version.as_str()) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "cycle {i}: update {version} did not complete; log:\n{}",
                agent.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // Where the kills landed, from the agent's own log: each run's last line.
    let log = agent.log();
    let mut runs: Vec<Vec<&str>> = Vec::new();
    for line in log.lines() {
        if line.contains("agent starting") {
            runs.push(Vec::new());
        }
        if let Some(r) = runs.last_mut() {
            r.push(line);
        }
    }
    // Last line "downloading"/"resuming": in the download; "installing": in the
    // slot write, swap or health check; "installed": after the commit;
    // anything else: before the manifest was handled.
    let (mut download, mut install, mut after, mut idle) = (0, 0, 0, 0);
    // Run k was killed by kill k; the last run is still alive.
    for run in runs.iter().take(cycles as usize) {
        match run.iter().rev().find(|l| !l.trim().is_empty()) {
            Some(l) if l.contains("installing") => install += 1,
            Some(l) if l.contains("installed version") => after += 1,
            Some(l) if l.contains("downloading") || l.contains("resuming") => download += 1,
            _ => idle += 1,
        }
    }
    let rolled_back = log.lines().filter(|l| l.contains("agent stopped during a health check")).count();
    let resumed = log.lines().filter(|l| l.contains("resuming a download") && !l.contains("bytes=0")).count();
    println!(
        "{cycles} kills (update takes {update:?}; kill at 0..{:?}, or just after \"installing\" for every fourth): before or during the download {download} \
         ({resumed} restarts resumed a partial download), during slot write / swap / health check {install} \
         ({rolled_back} health checks interrupted and rolled back at boot), after the commit {after}, before the manifest was handled {idle}; \
         every restart served a model",
        update
    );
    assert_eq!(download + install + after + idle, cycles as usize, "one classified run per kill");
    assert!(download > 0 && install > 0 && after > 0, "kills must cover every phase");
}

/// A package that takes the agent down during its health check (a crash
/// loop) is rolled back at each restart and given up after three attempts;
/// the previous model serves throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_that_crashes_the_agent_is_given_up_after_three_attempts() {
    let broker = embedded();
    let keys = keys();
    let (v1, v2) = kws_packages();
    let server = Server::start(broker.port).await;
    server.add(v1);
    server.add(v2);
    let dir = tempdir("crashloop");
    let dev = "board-loop";
    let mut agent = AgentProc::spawn(&dir, dev, broker.port, &keys.root_signed, 60_000);
    server.publish_manifest(dev, sign(&manifest(v1, "1", 1), &keys.release)).await;
    server.wait_event(dev, 0, 30, |e| matches!(e, Event::Installed { .. })).await;
    agent.kill9();
    agent.env.push(("EDGEFLEET_TEST_ABORT_IN_HEALTH_CHECK".into(), "1".into()));
    agent.start();
    server.publish_manifest(dev, sign(&manifest(v2, "2", 2), &keys.release)).await;
    let mut rollbacks = 0;
    for _ in 0..3 {
        // The agent aborts in the health check; a supervisor restarts it.
        let t = Instant::now();
        while agent.running() {
            assert!(t.elapsed() < Duration::from_secs(30), "agent did not reach the health check");
            std::thread::sleep(Duration::from_millis(20));
        }
        agent.start();
        // The agent boots, rolls the interrupted health check back and serves
        // v1, until the retained manifest sends it into the next (aborting)
        // health check, which may come before this asks: then the rollback
        // shows in the events checked below.
        let t = Instant::now();
        loop {
            if let Some(v) = try_live_version(&agent) {
                assert_eq!(v, "1", "rolled back to v1");
                break;
            }
            if !agent.running() {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "no model serves after restart; log:\n{}", agent.log());
            std::thread::sleep(Duration::from_millis(10));
        }
        rollbacks += 1;
    }
    let e = server
        .wait_event(
            dev,
            0,
            30,
            |e| matches!(e, Event::UpdateRejected { reason, .. } if reason.contains("health check")),
        )
        .await;
    let rolled = server.events(dev).iter().filter(|e| matches!(e, Event::RolledBack { .. })).count();
    assert!(rolled >= rollbacks, "{rolled} rollbacks reported: {e:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.running(), "after giving up, the agent no longer tries the package");
    assert_eq!(live_version(&agent.api()).as_deref(), Some("1"));
}
