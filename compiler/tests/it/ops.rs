//! Op-level checks on generated ONNX models: the lowering (layouts, folding,
//! fusion) against tract as the float reference, the int8 package against
//! the float result within a stated number of output LSBs, and the errors a
//! user gets for models the compiler cannot take.

use edgefleet_compiler::{CalibrationSet, Options, compile};
use edgefleet_runtime::OpCode;

use crate::support::{A, OnnxBuilder, Runner, rand_f32, tract_run};

fn float_net_output(onnx: &[u8], x: &[f32]) -> Vec<f32> {
    let (net, _, _) = edgefleet_compiler::lower_onnx(onnx).expect("lowers");
    let vals = edgefleet_compiler::calibrate::run(&net, &[x]).expect("runs");
    vals[net.outputs[0]].clone()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Compiles with `n` random calibration samples in [-1, 1) and returns the runner.
fn compile_calibrated(onnx: &[u8], input_len: usize, n: usize) -> (Runner, edgefleet_compiler::Compiled) {
    let samples = (0..n).map(|i| vec![rand_f32(100 + i as u64, input_len, -1.0, 1.0)]).collect();
    let opts = Options { calibration: Some(CalibrationSet { samples }), ..Options::default() };
    let c = compile(onnx, &opts, &mut |_| {}).unwrap_or_else(|e| panic!("{e:#}"));
    (Runner::new(&c.package), c)
}

fn op_codes(r: &Runner) -> Vec<OpCode> {
    let m = r.model();
    (0..m.op_count()).filter_map(|i| m.op(i)).map(|o| o.code()).collect()
}

/// Checks float lowering against tract and the int8 result against the float
/// one within `lsb` output quantization steps on a fresh input.
fn check(onnx: &[u8], shape: &[usize], lsb: f32) -> Runner {
    let n: usize = shape.iter().product();
    let x = rand_f32(7, n, -1.0, 1.0);
    let reference = tract_run(onnx, shape, &x);
    let ours = float_net_output(onnx, &x);
    let mag = reference.iter().fold(1f32, |a, v| a.max(v.abs()));
    assert!(max_diff(&ours, &reference) <= 1e-5 * mag, "float lowering differs from tract: {ours:?} vs {reference:?}");
    let (mut r, _) = compile_calibrated(onnx, n, 32);
    let (scale, _) = r.model().output(0).expect("output").quantization();
    let q = r.run_f32(&x);
    let d = max_diff(&q, &reference);
    assert!(d <= lsb * scale, "int8 output {d} from float ({} LSB allowed, scale {scale})", lsb);
    r
}

#[test]
fn conv_batchnorm_relu_gemm_softmax() {
    let mut b = OnnxBuilder::default();
    let x = b.input("x", &[1, 3, 8, 8]);
    let w = b.constant(&[4, 3, 3, 3], &rand_f32(1, 108, -0.5, 0.5));
    let bias = b.constant(&[4], &[0.1, -0.2, 0.3, 0.0]);
    let c = b.node("Conv", "conv", &[&x, &w, &bias], &[("pads", A::Is(vec![1, 1, 1, 1]))]);
    let g = b.constant(&[4], &[1.5, 0.5, 1.0, 2.0]);
    let be = b.constant(&[4], &[0.1, 0.2, -0.1, 0.0]);
    let mean = b.constant(&[4], &[0.05, -0.1, 0.2, 0.0]);
    let var = b.constant(&[4], &[0.9, 1.1, 0.5, 2.0]);
    let bn = b.node("BatchNormalization", "bn", &[&c, &g, &be, &mean, &var], &[("epsilon", A::F(1e-3))]);
    let r = b.node("Relu", "relu", &[&bn], &[]);
    let p = b.node("GlobalAveragePool", "gap", &[&r], &[]);
    let f = b.node("Flatten", "flat", &[&p], &[]);
    let wf = b.constant(&[5, 4], &rand_f32(2, 20, -1.0, 1.0));
    let bf = b.constant(&[5], &[0.0, 0.1, 0.2, 0.3, 0.4]);
    let gm = b.node("Gemm", "fc", &[&f, &wf, &bf], &[("transB", A::I(1)), ("alpha", A::F(0.5)), ("beta", A::F(2.0))]);
    b.node("Softmax", "sm", &[&gm], &[]);
    b.rename_last_output("y");
    b.output("y", &[1, 5]);
    let onnx = b.finish();
    let r = check(&onnx, &[1, 3, 8, 8], 3.0);
    // The NCHW graph input is transposed once to NHWC; BN is folded into the
    // conv and ReLU fused: no separate op for either.
    assert_eq!(
        op_codes(&r),
        vec![OpCode::Transpose, OpCode::Conv2d, OpCode::AveragePool2d, OpCode::FullyConnected, OpCode::Softmax]
    );
}

#[test]
fn standalone_batchnorm_clip_maxpool_and_nchw_flatten() {
    // BN on the graph input has no conv to fold into: it becomes a 1x1
    // depthwise conv. Flattening an NCHW tensor with spatial extent forces a
    // real NHWC -> NCHW transpose.
    let mut b = OnnxBuilder::default();
    let x = b.input("x", &[1, 2, 6, 6]);
    let g = b.constant(&[2], &[2.0, 0.5]);
    let be = b.constant(&[2], &[0.5, -0.25]);
    let mean = b.constant(&[2], &[0.1, 0.0]);
    let var = b.constant(&[2], &[1.0, 0.25]);
    let bn = b.node("BatchNormalization", "bn", &[&x, &g, &be, &mean, &var], &[]);
    let lo = b.constant(&[], &[0.0]);
    let hi = b.constant(&[], &[1.5]);
    let cl = b.node("Clip", "clip", &[&bn, &lo, &hi], &[]);
    let mp = b.node("MaxPool", "pool", &[&cl], &[("kernel_shape", A::Is(vec![2, 2])), ("strides", A::Is(vec![2, 2]))]);
    let shape = b.int64s(&[1, -1]);
    let fl = b.node("Reshape", "flat", &[&mp, &shape], &[]);
    let w = b.constant(&[18, 3], &rand_f32(3, 54, -1.0, 1.0));
    let mm = b.node("MatMul", "mm", &[&fl, &w], &[]);
    let c = b.constant(&[3], &[0.5, -0.5, 0.0]);
    b.node("Add", "bias", &[&mm, &c], &[]);
    b.rename_last_output("y");
    b.output("y", &[1, 3]);
    let onnx = b.finish();
    let r = check(&onnx, &[1, 2, 6, 6], 3.0);
    let ops = op_codes(&r);
    // NCHW input -> NHWC, BN as depthwise, clip fused, pool, NHWC -> NCHW for the flatten.
    assert_eq!(ops[..4], [OpCode::Transpose, OpCode::DepthwiseConv2d, OpCode::MaxPool2d, OpCode::Transpose], "{ops:?}");
    assert_eq!(*ops.last().expect("ops"), OpCode::FullyConnected, "bias add folded into the FC: {ops:?}");
}

#[test]
fn residual_add_depthwise_multiplier_dilation_avgpool_padding() {
    let mut b = OnnxBuilder::default();
    let x = b.input("x", &[1, 2, 9, 9]);
    // Depthwise, multiplier 2, dilation 2.
    let wd = b.constant(&[4, 1, 3, 3], &rand_f32(4, 36, -0.5, 0.5));
    let d = b.node(
        "Conv",
        "dw",
        &[&x, &wd],
        &[("group", A::I(2)), ("dilations", A::Is(vec![2, 2])), ("pads", A::Is(vec![2, 2, 2, 2]))],
    );
    let r1 = b.node("Relu", "r1", &[&d], &[]);
    let w2 = b.constant(&[4, 4, 1, 1], &rand_f32(5, 16, -0.5, 0.5));
    let c2 = b.node("Conv", "pw", &[&r1, &w2], &[]);
    let add = b.node("Add", "res", &[&c2, &r1], &[]);
    let r2 = b.node("Relu", "r2", &[&add], &[]);
    b.node(
        "AveragePool",
        "avg",
        &[&r2],
        &[("kernel_shape", A::Is(vec![3, 3])), ("strides", A::Is(vec![2, 2])), ("pads", A::Is(vec![1, 1, 1, 1]))],
    );
    b.rename_last_output("y");
    b.output("y", &[1, 4, 5, 5]);
    let onnx = b.finish();
    let r = check(&onnx, &[1, 2, 9, 9], 2.0);
    let ops = op_codes(&r);
    assert!(ops.contains(&OpCode::DepthwiseConv2d) && ops.contains(&OpCode::Add), "{ops:?}");
}

fn expect_err(onnx: &[u8], opts: &Options) -> String {
    match compile(onnx, opts, &mut |_| {}) {
        Ok(_) => panic!("compiled, but should have failed"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn every_unsupported_op_is_listed_with_its_node() {
    let mut b = OnnxBuilder::default();
    let x = b.input("x", &[1, 2, 4, 4]);
    let l = b.node("LeakyRelu", "act1", &[&x], &[]);
    let s = b.node("Sigmoid", "gate", &[&l], &[]);
    let t = b.node("LeakyRelu", "act2", &[&s], &[]);
    b.node("Relu", "ok", &[&t], &[]);
    b.rename_last_output("y");
    b.output("y", &[1, 2, 4, 4]);
    let msg = expect_err(&b.finish(), &Options::default());
    for needle in ["LeakyRelu", "'act1'", "'act2'", "Sigmoid", "'gate'", "3 node(s)"] {
        assert!(msg.contains(needle), "missing {needle} in: {msg}");
    }
    assert!(!msg.contains("'ok'"), "a supported node was listed: {msg}");
}

#[test]
fn runtime_only_use_of_a_constant_op_is_reported() {
    // Mul is folded when its inputs are constant, but there is no int8 Mul kernel.
    let mut b = OnnxBuilder::default();
    let x = b.input("x", &[1, 4]);
    let k = b.constant(&[1, 4], &[1.0, 2.0, 3.0, 4.0]);
    b.node("Mul", "scale", &[&x, &k], &[]);
    b.rename_last_output("y");
    b.output("y", &[1, 4]);
    let msg = expect_err(&b.finish(), &Options::default());
    assert!(msg.contains("Mul") && msg.contains("'scale'") && msg.contains("constant inputs"), "{msg}");
}

#[test]
fn malformed_models_are_errors_not_panics() {
    let mut b = OnnxBuilder::default();
    let x = b.input("x", &[1, 4]);
    let w = b.constant(&[4, 2], &[0.5; 8]);
    b.node("MatMul", "mm", &[&x, &w], &[]);
    b.rename_last_output("y");
    b.output("y", &[1, 2]);
    let good = b.finish();
    for cut in [0, 1, good.len() / 3, good.len() / 2, good.len() - 1] {
        assert!(compile(&good[..cut], &Options::default(), &mut |_| {}).is_err(), "truncated at {cut}");
    }
    assert!(compile(b"definitely not onnx", &Options::default(), &mut |_| {}).is_err());
    // Flipping bytes must never panic (errors or, rarely, a different valid model).
    for i in (0..good.len()).step_by(7) {
        let mut bad = good.clone();
        bad[i] ^= 0xA5;
        let _ = compile(&bad, &Options::default(), &mut |_| {});
    }
}

#[test]
fn fp32_model_without_calibration_says_what_to_do() {
    let mut b = OnnxBuilder::default();
    let x = b.input("x", &[1, 4]);
    let w = b.constant(&[4, 2], &[0.5; 8]);
    b.node("MatMul", "mm", &[&x, &w], &[]);
    b.rename_last_output("y");
    b.output("y", &[1, 2]);
    let onnx = b.finish();
    let msg = expect_err(&onnx, &Options::default());
    assert!(msg.contains("--calibration") && msg.contains("'x'"), "{msg}");
    // A calibration sample of the wrong size is named.
    let opts =
        Options { calibration: Some(CalibrationSet { samples: vec![vec![vec![0.0; 5]]] }), ..Options::default() };
    let msg = expect_err(&onnx, &opts);
    assert!(msg.contains("sample 0") && msg.contains("[4]"), "{msg}");
}

#[test]
fn weights_computed_at_run_time_are_rejected() {
    let mut b = OnnxBuilder::default();
    let x = b.input("x", &[1, 1, 4, 4]);
    let w = b.input("w", &[1, 1, 3, 3]);
    b.node("Conv", "conv", &[&x, &w], &[]);
    b.rename_last_output("y");
    b.output("y", &[1, 1, 2, 2]);
    let msg = expect_err(&b.finish(), &Options::default());
    assert!(msg.contains("'conv'") && msg.contains("constant"), "{msg}");
}
