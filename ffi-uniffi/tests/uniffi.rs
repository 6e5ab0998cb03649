//! The object the bindings wrap, called from Rust: KWS end to end on both
//! paths against TensorFlow Lite Micro, metadata, and the errors a Kotlin,
//! Swift or Python caller would see as exceptions.

use std::path::{Path, PathBuf};

use edgefleet_compiler::tensor::Data;
use edgefleet_uniffi::{EdgefleetError, EdgefleetModel};

fn data(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/mlperf-tiny").join(p)
}

fn i8s(p: &str) -> Vec<i8> {
    match edgefleet_compiler::npy::read(&data(p)).expect("npy").data {
        Data::I8(v) => v,
        other => panic!("{p}: not int8: {other:?}"),
    }
}

fn kws() -> Vec<u8> {
    let onnx = std::fs::read(data("onnx/kws_int8_from_tflite.onnx")).expect("model");
    let labels = ["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes", "silence", "unknown"];
    let opts = edgefleet_compiler::Options {
        labels: vec![labels.iter().map(|s| s.to_string()).collect()],
        ..Default::default()
    };
    edgefleet_compiler::compile(&onnx, &opts, &mut |_| {}).expect("compiles").package
}

#[test]
fn kws_through_the_bindings_object() {
    let model = EdgefleetModel::new(kws()).expect("loads");
    assert_eq!(model.arena_size(), 16_000);
    let inputs = model.inputs();
    let outputs = model.outputs();
    assert_eq!((inputs.len(), outputs.len()), (1, 1));
    assert_eq!(inputs[0].shape, [1, 49, 10, 1]);
    assert_eq!((inputs[0].scale, inputs[0].zero_point), (0.584_702_9, 83));
    assert_eq!(outputs[0].shape, [1, 12]);
    assert_eq!(outputs[0].labels[5], "on");

    let x = i8s("ref/kws/real.input_i8.npy");
    let want = i8s("ref/kws/real.tflm_int8.npy");
    let got = model.run_i8(vec![x.clone()]).expect("runs");
    assert_eq!(got, vec![want.clone()], "edgefleet (left) vs TFLite Micro (right)");
    model.set_threads(2).expect("two threads");
    assert_eq!(model.run_i8(vec![x.clone()]).expect("runs"), vec![want.clone()], "two threads");
    assert!(matches!(model.set_threads(0), Err(EdgefleetError::InvalidArgument { .. })));

    let (s, z) = (inputs[0].scale, inputs[0].zero_point);
    let floats: Vec<f32> = x.iter().map(|&q| s * (q as i32 - z) as f32).collect();
    let scores = model.run_f32(vec![floats]).expect("runs");
    let expected: Vec<f32> = want.iter().map(|&q| (q as i32 + 128) as f32 / 256.0).collect();
    assert_eq!(scores, vec![expected]);
}

#[test]
fn errors_become_typed_exceptions() {
    let e = EdgefleetModel::new(vec![0; 100]).expect_err("not a package");
    assert!(matches!(&e, EdgefleetError::InvalidPackage { reason } if reason.contains("magic")), "{e}");

    let model = EdgefleetModel::new(kws()).expect("loads");
    let e = model.run_i8(vec![]).expect_err("no inputs");
    assert_eq!(e, EdgefleetError::InvalidArgument { reason: "the model has 1 inputs, got 0".into() });
    let e = model.run_i8(vec![vec![0; 3]]).expect_err("short input");
    assert_eq!(e, EdgefleetError::InvalidArgument { reason: "input 0 has 490 elements, got 3".into() });
    let e = model.run_f32(vec![vec![0.0; 491]]).expect_err("long input");
    assert_eq!(e.to_string(), "input 0 has 490 elements, got 491");
}
