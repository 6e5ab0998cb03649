//! MLPerf Tiny conformance: the four reference models, compiled three ways,
//! against TensorFlow Lite Micro and ONNX Runtime.

use edgefleet_compiler::{CalibrationSet, Options, RangeMethod, compile};

use crate::support::{Runner, argmax, data, i8s, read};

const MODELS: [&str; 4] = ["kws", "vww", "ic", "ad"];

fn compile_file(file: &str, opts: &Options) -> edgefleet_compiler::Compiled {
    let onnx = std::fs::read(data(file)).expect("model file");
    compile(&onnx, opts, &mut |_| {}).unwrap_or_else(|e| panic!("{file}: {e:#}"))
}

/// Calibration samples as the tests (and tools/gen_calib_refs.py) feed them.
fn calibration(model: &str) -> Vec<Vec<f32>> {
    let (t, scale) = match model {
        "kws" => (read("calib/kws_calib_f32.npy"), 1.0),
        "vww" => (read("calib/vww_calib_u8.npy"), 1.0 / 255.0),
        "ic" => (read("calib/ic_calib_u8.npy"), 1.0),
        _ => {
            let raw = std::fs::read(data("inputs/ad01_normal_id_01_00000000_hist_librosa.bin")).expect("ad frames");
            let f: Vec<f32> = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            // 200 frames x 128 mels; window i = frames i..i+4, frame-major.
            return (0..196).map(|i| f[i * 128..(i + 5) * 128].to_vec()).collect();
        }
    };
    let v = t.to_f32();
    let per = v.len() / t.shape[0];
    v.chunks_exact(per).map(|c| c.iter().map(|x| x * scale).collect()).collect()
}

fn anomaly_score(x: &[f32], y: &[f32]) -> f32 {
    x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / x.len() as f32
}

/// `*_int8_from_tflite.onnx` carries TFLite's exact scales: the compiled
/// package must reproduce TensorFlow Lite Micro bit for bit.
#[test]
fn tflite_int8_models_match_tflite_micro_exactly() {
    for m in MODELS {
        let c = compile_file(&format!("onnx/{m}_int8_from_tflite.onnx"), &Options::default());
        assert_eq!(c.report.quantization, "qdq", "{m}");
        let mut r = Runner::new(&c.package);
        for input in ["seeded", "real"] {
            let x = i8s(&read(&format!("ref/{m}/{input}.input_i8.npy")));
            let want = i8s(&read(&format!("ref/{m}/{input}.tflm_int8.npy")));
            let got = r.run_i8(&x);
            assert_eq!(got, want, "{m} {input}: edgefleet (left) vs TFLite Micro (right)");
        }
    }
}

/// Parts run serially, last first, claiming 16 threads: every operator
/// worth splitting is split into as many parts as its size allows, and a
/// part that read or wrote its neighbour's rows would show.
struct Scrambled;

// SAFETY: calls each part exactly once and returns after all of them.
unsafe impl edgefleet_runtime::Parallel for Scrambled {
    fn threads(&self) -> usize {
        16
    }
    fn run(&self, parts: usize, f: &(dyn Fn(usize) + Sync)) {
        (0..parts).rev().for_each(f);
    }
}

/// The multi-threaded mode is bit-identical to TensorFlow Lite Micro too,
/// with real threads and with the most parts.
#[test]
fn multi_threaded_runs_match_tflite_micro_exactly() {
    let pools = [
        edgefleet_runtime::ThreadPool::new(2).expect("threads"),
        edgefleet_runtime::ThreadPool::new(3).expect("threads"),
    ];
    for m in MODELS {
        let c = compile_file(&format!("onnx/{m}_int8_from_tflite.onnx"), &Options::default());
        let mut r = Runner::new(&c.package);
        for input in ["seeded", "real"] {
            let x = i8s(&read(&format!("ref/{m}/{input}.input_i8.npy")));
            let want = i8s(&read(&format!("ref/{m}/{input}.tflm_int8.npy")));
            assert_eq!(r.run_i8_parallel(&x, &Scrambled), want, "{m} {input}: scrambled parts");
            for p in &pools {
                assert_eq!(r.run_i8_parallel(&x, p), want, "{m} {input}: {p:?}");
            }
        }
    }
}

/// Arena per model, exactly, and never above TFLite Micro's (totals /
/// activations: KWS 24,272/16,000 B; VWW 103,680/73,728; IC 55,984/49,152;
/// AD 3,984/768). Our arena holds only activations (weights, requantization
/// tables and op data are read from the package), and the planner reaches the
/// lower bound (peak of simultaneously live bytes) on all four.
#[test]
fn arena_is_at_most_tflite_micros() {
    let tflm = [("kws", 24_272, 16_000), ("vww", 103_680, 73_728), ("ic", 55_984, 49_152), ("ad", 3_984, 768)];
    let ours = [("kws", 16_000), ("vww", 55_296), ("ic", 49_152), ("ad", 768)];
    for ((m, total, activations), (_, expected)) in tflm.into_iter().zip(ours) {
        let c = compile_file(&format!("onnx/{m}_int8_from_tflite.onnx"), &Options::default());
        let r = Runner::new(&c.package);
        let arena = r.model().arena_size();
        assert_eq!(arena, expected, "{m}: arena changed");
        assert_eq!(arena, c.report.arena_lower_bound, "{m}: plan above the live-bytes lower bound");
        assert!(arena <= activations && arena <= total, "{m}: {arena} B above TFLM's {activations}/{total} B");
    }
}

fn calibrated(m: &str, range: RangeMethod) -> edgefleet_compiler::Compiled {
    let set = CalibrationSet { samples: calibration(m).into_iter().map(|s| vec![s]).collect() };
    compile_file(&format!("onnx/{m}_fp32.onnx"), &Options { calibration: Some(set), range, ..Options::default() })
}

/// fp32 models quantized by edgefleet itself from their calibration sets:
/// top-1 (AD: anomaly score within 5 %) agrees with ONNX Runtime fp32 on the
/// real input and on at least 95 % of the calibration inputs.
#[test]
fn own_quantization_agrees_with_onnxruntime_fp32() {
    // Agreement measured with min/max ranges: KWS 32/32, VWW 62/64, IC 62/64,
    // AD 194/196; asserted as at least these counts (and at least 95 %).
    let floor = [("kws", 32), ("vww", 62), ("ic", 62), ("ad", 194)];
    for (m, min_agree) in floor {
        let c = calibrated(m, RangeMethod::MinMax);
        assert_eq!(c.report.quantization, "calibrated");
        let mut r = Runner::new(&c.package);
        let samples = calibration(m);
        // Real input.
        let x = read(&format!("ref/{m}/real.input_f32.npy")).to_f32();
        let want = read(&format!("ref/{m}/real.ort_fp32.npy")).to_f32();
        let got = r.run_f32(&x);
        if m == "ad" {
            let (s_ours, s_ref) = (anomaly_score(&x, &got), anomaly_score(&x, &want));
            assert!((s_ours - s_ref).abs() <= 0.05 * s_ref, "ad real: score {s_ours} vs {s_ref}");
        } else {
            assert_eq!(argmax(&got), argmax(&want), "{m} real input: top-1 differs from onnxruntime fp32");
        }
        // Calibration inputs.
        let agree = if m == "ad" {
            let scores = read("ref/ad/calib.ort_fp32_score.npy").to_f32();
            samples
                .iter()
                .zip(&scores)
                .filter(|&(s, &want)| (anomaly_score(s, &r.run_f32(s)) - want).abs() <= 0.05 * want)
                .count()
        } else {
            let refs = read(&format!("ref/{m}/calib.ort_fp32.npy"));
            let n = refs.shape[1];
            let refs = refs.to_f32();
            samples
                .iter()
                .enumerate()
                .filter(|(i, s)| argmax(&r.run_f32(s)) == argmax(&refs[i * n..(i + 1) * n]))
                .count()
        };
        let total = samples.len();
        println!("{m}: {agree}/{total} agree with onnxruntime fp32");
        assert!(agree * 100 >= 95 * total, "{m}: only {agree}/{total} agree");
        assert!(agree >= min_agree, "{m}: {agree}/{total} agree, was {min_agree}");
    }
}

/// Percentile ranges compile and stay usable (they trade outliers for resolution).
#[test]
fn percentile_calibration_compiles() {
    let c = calibrated("kws", RangeMethod::Percentile(99.99));
    let mut r = Runner::new(&c.package);
    let x = read("ref/kws/real.input_f32.npy").to_f32();
    let want = read("ref/kws/real.ort_fp32.npy").to_f32();
    assert_eq!(argmax(&r.run_f32(&x)), argmax(&want));
}

/// onnxruntime-quantized QDQ models compile with their own parameters and
/// agree with onnxruntime's int8 execution within 3 LSB of the output (ORT
/// requantizes in float; edgefleet in TFLite's fixed point; the softmax
/// amplifies last-layer differences).
#[test]
fn onnxruntime_qdq_models_agree_within_3_lsb() {
    for m in MODELS {
        let c = compile_file(&format!("onnx/{m}_int8_qdq_ort.onnx"), &Options::default());
        assert_eq!(c.report.quantization, "qdq", "{m}");
        let mut r = Runner::new(&c.package);
        let (scale, _) = r.model().output(0).expect("output").quantization();
        for input in ["seeded", "real"] {
            let x = read(&format!("ref/{m}/{input}.input_f32.npy")).to_f32();
            let want = read(&format!("ref/{m}/{input}.ort_int8_qdq_ort.npy")).to_f32();
            let got = r.run_f32(&x);
            let lsb = got.iter().zip(&want).map(|(a, b)| ((a - b) / scale).abs().round() as i32).max().unwrap_or(0);
            assert!(lsb <= 3, "{m} {input}: {lsb} LSB from onnxruntime");
        }
    }
}

/// The lowered float network (NHWC layouts, fused ops) computes what the
/// ONNX model computes: checked against onnxruntime's fp32 reference output
/// and against tract on the real input.
#[test]
fn lowering_preserves_fp32_semantics() {
    for m in MODELS {
        let onnx = std::fs::read(data(&format!("onnx/{m}_fp32.onnx"))).expect("model");
        let (net, _, _) = edgefleet_compiler::lower_onnx(&onnx).expect("lowers");
        let x = read(&format!("ref/{m}/real.input_f32.npy"));
        let vals = edgefleet_compiler::calibrate::run(&net, &[&x.to_f32()]).expect("runs");
        let ours = &vals[net.outputs[0]];
        let ort = read(&format!("ref/{m}/real.ort_fp32.npy")).to_f32();
        let tract = crate::support::tract_run(&onnx, &x.shape, &x.to_f32());
        let scale = ort.iter().fold(0f32, |a, v| a.max(v.abs())).max(1.0);
        for (name, reference) in [("onnxruntime", &ort), ("tract", &tract)] {
            let diff = ours.iter().zip(reference.iter()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff <= 1e-4 * scale, "{m}: max |ours - {name}| = {diff}");
        }
    }
}

/// The package carries its reference data profile: per-feature bins of the
/// quantized calibration inputs (MFCC coefficients for KWS, colour channels
/// for VWW), the class distribution, and a self-test the package passes.
#[test]
fn packages_carry_a_reference_profile() {
    use edgefleet_protocol::profile::ReferenceProfile;
    for (m, features) in [("kws", 10), ("vww", 3)] {
        let c = calibrated(m, RangeMethod::MinMax);
        let mut r = Runner::new(&c.package);
        let section = r.model().section(edgefleet_runtime::SectionKind::ReferenceProfile as u16).map(<[u8]>::to_vec);
        let p = ReferenceProfile::from_bytes(&section.expect("profile section")).expect("profile parses");
        assert_eq!(p.samples as usize, calibration(m).len());
        assert_eq!(p.inputs[0].features, features, "{m}");
        for reference in &p.inputs[0].reference {
            assert!((reference.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        }
        let out = p.output.as_ref().expect("classifier profile");
        assert!((out.class_freq.iter().sum::<f32>() - 1.0).abs() < 1e-4 && out.mean_confidence > 0.3);
        let st = p.selftest.as_ref().expect("self-test");
        assert_eq!(r.run_i8(&st.inputs[0]), st.outputs[0], "{m}: self-test output");
    }
    // Without calibration data: a self-test, no input bins.
    let c = compile_file("onnx/ad_int8_from_tflite.onnx", &Options::default());
    let r = Runner::new(&c.package);
    let section = r.model().section(edgefleet_runtime::SectionKind::ReferenceProfile as u16).map(<[u8]>::to_vec);
    let p = ReferenceProfile::from_bytes(&section.expect("profile section")).expect("parses");
    assert!(p.inputs.is_empty() && p.output.is_none() && p.selftest.is_some());
}
