//! Monitoring overhead per inference: the same KWS inference through the
//! bare model (`Loaded::run`) and through the engine that also records
//! latency, the input sketch, the prediction and the label memory
//! (`Engine::infer`). Run: `cargo bench -p edgefleet-agent --bench monitoring`.

use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use edgefleet_agent::engine::{Engine, InferInput, Loaded};
use edgefleet_compiler::{CalibrationSet, Options};
use edgefleet_protocol::ModelRef;

fn kws() -> (Vec<u8>, Vec<Vec<f32>>) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/mlperf-tiny");
    let onnx = std::fs::read(root.join("onnx/kws_int8_from_tflite.onnx")).expect("model");
    let calib = edgefleet_compiler::npy::read(&root.join("calib/kws_calib_f32.npy")).expect("calibration");
    let samples: Vec<Vec<f32>> = calib.to_f32().chunks_exact(490).map(<[f32]>::to_vec).collect();
    let set = CalibrationSet { samples: samples.iter().map(|s| vec![s.clone()]).collect() };
    let opts = Options { calibration: Some(set), ..Options::default() };
    (edgefleet_compiler::compile(&onnx, &opts, &mut |_| {}).expect("compiles").package, samples)
}

fn info() -> ModelRef {
    ModelRef {
        model_id: "kws".into(),
        version: "1".into(),
        release_counter: 1,
        package_sha256: [0; 32],
        rollout_id: String::new(),
    }
}

fn bench(c: &mut Criterion) {
    let (pkg, samples) = kws();
    let inputs: Vec<InferInput> = samples.into_iter().map(InferInput::F32).collect();
    let mut bare = Loaded::open(&pkg, info()).expect("loads");
    let mut engine = Engine::new(20, 0);
    engine.set_live(Loaded::open(&pkg, info()).expect("loads"), 0);
    let mut g = c.benchmark_group("kws_inference");
    let mut i = 0;
    g.bench_function("bare_model", |b| {
        b.iter(|| {
            i = (i + 1) % inputs.len();
            bare.run(&inputs[i]).expect("runs")
        })
    });
    let mut j = 0;
    g.bench_function("engine_with_monitoring", |b| {
        b.iter(|| {
            j = (j + 1) % inputs.len();
            engine.infer(&inputs[j]).expect("runs")
        })
    });
    // The monitor alone, on the same inputs: latency, sketch, prediction, label memory.
    let profile = edgefleet_protocol::profile::ReferenceProfile::from_bytes(
        edgefleet_runtime::OwnedModel::load(&pkg)
            .expect("loads")
            .model()
            .section(edgefleet_runtime::SectionKind::ReferenceProfile as u16)
            .expect("profile"),
    )
    .expect("parses");
    let quantized: Vec<Vec<i8>> = inputs.iter().map(|x| bare.run(x).expect("runs").input).collect();
    let probs = vec![0.05f32; 12];
    let mut monitor = edgefleet_agent::monitor::Monitor::new(Some(profile), 12, 20, 0);
    let (mut k, mut id) = (0, 0u64);
    g.bench_function("monitor_record_only", |b| {
        b.iter(|| {
            k = (k + 1) % quantized.len();
            id += 1;
            monitor.record(id, &[&quantized[k]], Some(&probs), 3000 + k as u64);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
