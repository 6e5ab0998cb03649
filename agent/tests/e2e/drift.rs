//! Drift through the running agent: inputs drawn from the calibration set
//! give PSI < 0.1; the same inputs 6 dB louder give PSI > 0.25 and a drift
//! event. Telemetry arrives signed, sequence-numbered, without raw inputs.

use edgefleet_protocol::Event;

use crate::support::*;

/// +6 dB on the power spectrum multiplies every mel energy by 4: every
/// log-mel bin rises by ln 4, which the DCT puts in MFCC 0 (orthonormal
/// DCT-II over 40 bins: ln 4 · √40).
fn louder(x: &[f32]) -> Vec<f32> {
    let shift = 4f32.ln() * 40f32.sqrt();
    x.iter().enumerate().map(|(i, &v)| if i % 10 == 0 { v + shift } else { v }).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calibration_inputs_are_stable_louder_inputs_drift() {
    let broker = embedded();
    let keys = keys();
    let (v1, _) = kws_packages();
    let server = Server::start(broker.port).await;
    server.add(v1);
    let dir = tempdir("drift");
    let dev = "board-drift";
    let _agent = AgentProc::spawn(&dir, dev, broker.port, &keys.root_signed, 1_000);
    let api = _agent.api();
    server.publish_manifest(dev, sign(&manifest(v1, "1.0", 1), &keys.release)).await;
    server.wait_event(dev, 0, 30, |e| matches!(e, Event::Installed { .. })).await;

    let calib = kws_calibration();
    let mut state = 12345u64;
    let mut draw = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        &calib[(state >> 33) as usize % calib.len()]
    };
    let window = |server: &Server| server.telemetry(dev).into_iter().filter(|t| t.inferences > 0).collect::<Vec<_>>();

    for _ in 0..200 {
        infer(&api, draw());
    }
    let t = tokio::time::Instant::now();
    let stable = loop {
        if let Some(w) = window(&server).last().cloned() {
            break w;
        }
        assert!(t.elapsed().as_secs() < 15, "no telemetry");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let seen = window(&server).len();
    let d = stable.drift.expect("drift scored");
    assert!(d.psi < 0.1, "calibration inputs: PSI {}", d.psi);
    assert!(stable.latency.count > 0 && stable.latency.p50_us > 0);
    assert!(stable.mean_confidence.is_some() && stable.class_counts.iter().sum::<u64>() > 0);
    assert!(server.events(dev).iter().all(|e| !matches!(e, Event::DriftDetected { .. })));

    let before = server.events(dev).len();
    for _ in 0..200 {
        infer(&api, &louder(draw()));
    }
    let e = server.wait_event(dev, before, 15, |e| matches!(e, Event::DriftDetected { .. })).await;
    let Event::DriftDetected { psi, .. } = e else { unreachable!() };
    assert!(psi > 0.25, "louder inputs: PSI {psi}");
    let shifted =
        window(&server).into_iter().skip(seen).find(|w| w.drift.is_some_and(|d| d.psi > 0.25)).expect("window");
    assert_eq!(shifted.drift.expect("drift").worst_feature, 0, "MFCC 0 moved");

    // Every uplink arrived once, numbered without gaps.
    let mut seqs =
        server.uplinks.lock().expect("lock").iter().filter(|u| u.device_id == dev).map(|u| u.seq).collect::<Vec<_>>();
    seqs.sort_unstable();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

/// VWW, through the engine the agent uses: photos from the calibration set
/// are stable; the same photos brightened by 20 % of full scale drift.
#[test]
fn vww_brightness_shift_is_drift() {
    use edgefleet_agent::engine::{Engine, InferInput, Loaded};
    use edgefleet_compiler::{CalibrationSet, Options};

    let data = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/mlperf-tiny");
    let onnx = std::fs::read(data.join("onnx/vww_int8_from_tflite.onnx")).expect("model");
    let calib = edgefleet_compiler::npy::read(&data.join("calib/vww_calib_u8.npy")).expect("calibration");
    let images: Vec<Vec<f32>> =
        calib.to_f32().chunks_exact(96 * 96 * 3).map(|c| c.iter().map(|v| v / 255.0).collect()).collect();
    let set = CalibrationSet { samples: images.iter().map(|s| vec![s.clone()]).collect() };
    let pkg =
        edgefleet_compiler::compile(&onnx, &Options { calibration: Some(set), ..Options::default() }, &mut |_| {})
            .expect("compiles")
            .package;
    let info = edgefleet_protocol::ModelRef {
        model_id: "vww".into(),
        version: "1".into(),
        release_counter: 1,
        package_sha256: [0; 32],
        rollout_id: String::new(),
    };
    let mut engine = Engine::new(20, 0);
    engine.set_live(Loaded::open(&pkg, info).expect("loads"), 0);
    let mut state = 99u64;
    let mut pick = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as usize % images.len()
    };
    for _ in 0..100 {
        engine.infer(&InferInput::F32(images[pick()].clone())).expect("infer");
    }
    let stable = engine.telemetry(1, edgefleet_protocol::Health::default()).drift.expect("scored");
    assert!(stable.psi < 0.1, "calibration photos: PSI {}", stable.psi);
    for _ in 0..100 {
        let brighter: Vec<f32> = images[pick()].iter().map(|v| (v + 0.2).min(1.0)).collect();
        engine.infer(&InferInput::F32(brighter)).expect("infer");
    }
    let shifted = engine.telemetry(2, edgefleet_protocol::Health::default()).drift.expect("scored");
    assert!(shifted.psi > 0.25, "brighter photos: PSI {}", shifted.psi);
    println!("vww PSI: calibration draws {:.4}, +0.2 brightness {:.4}", stable.psi, shifted.psi);
}
