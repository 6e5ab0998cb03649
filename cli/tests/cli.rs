//! The `edgefleet` binary end to end: real model files in, packages and .npy
//! files out, errors as a user sees them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgefleet"))
}

fn data(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/mlperf-tiny").join(p)
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgefleet-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn read_i8(p: &Path) -> Vec<i8> {
    let f = std::fs::File::open(p).expect("npy");
    npyz::NpyFile::new(std::io::BufReader::new(f)).expect("npy header").into_vec::<i8>().expect("int8 data")
}

#[test]
fn compile_inspect_run_bench_kws() {
    let pkg = tmp("kws.efm");
    let labels = "down,go,left,no,off,on,right,stop,up,yes,silence,unknown";
    let summary = ok(&["compile", s(&data("onnx/kws_int8_from_tflite.onnx")), "-o", s(&pkg), "--labels", labels]);
    assert!(summary.contains("arena         16,000 bytes"), "{summary}");

    let json: serde_json::Value = serde_json::from_str(&ok(&["inspect", s(&pkg), "--json"])).expect("inspect --json");
    assert_eq!(json["arena_bytes"], 16_000);
    assert_eq!(json["ops"].as_array().map(Vec::len), Some(12));
    assert_eq!(json["outputs"][0]["labels"][5], "on");
    assert_eq!(json["producer"]["quantization"], "qdq");
    let table = ok(&["inspect", s(&pkg)]);
    assert!(table.contains("DepthwiseConv2D") && table.contains("silence"), "{table}");

    // int8 in, int8 out: TFLite Micro's exact output.
    let out = tmp("kws_out.npy");
    let printed = ok(&["run", s(&pkg), "--input", s(&data("ref/kws/real.input_i8.npy")), "-o", s(&out)]);
    assert!(printed.starts_with("sample 0: on "), "{printed}");
    assert_eq!(read_i8(&out), read_i8(&data("ref/kws/real.tflm_int8.npy")));

    // float in: 32 calibration samples, each quantized at the boundary.
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["run", s(&pkg), "--input", s(&data("calib/kws_calib_f32.npy")), "--json"]))
            .expect("run --json");
    assert_eq!(json["samples"], 32);

    let bench: serde_json::Value =
        serde_json::from_str(&ok(&["bench", s(&pkg), "-n", "5", "--warmup", "1", "--json"])).expect("bench --json");
    assert_eq!(bench["runs"], 5);
    assert!(bench["median_ms"].as_f64().is_some_and(|m| m > 0.0));
    assert!(bench["p99_ms"].as_f64() >= bench["median_ms"].as_f64());
}

#[test]
fn compile_fp32_with_calibration() {
    let pkg = tmp("vww.efm");
    let json: serde_json::Value = serde_json::from_str(&ok(&[
        "compile",
        s(&data("onnx/vww_fp32.onnx")),
        "--calibration",
        s(&data("calib/vww_calib_u8.npy")),
        "--calibration-scale",
        "0.00392156862745098",
        "-o",
        s(&pkg),
        "--json",
    ]))
    .expect("compile --json");
    assert_eq!(json["report"]["quantization"], "calibrated");
    assert_eq!(json["report"]["calibration_samples"], 64);
    assert_eq!(json["report"]["arena_bytes"], 55_296);
    assert!(pkg.exists());
}

#[test]
fn errors_are_clear_and_nothing_is_left_behind() {
    let missing = fails(&["compile", "/nonexistent/model.onnx"]);
    assert!(missing.contains("reading /nonexistent/model.onnx"), "{missing}");

    let out = tmp("never.efm");
    let bad_calib = fails(&[
        "compile",
        s(&data("onnx/kws_fp32.onnx")),
        "--calibration",
        s(&data("calib/ic_calib_u8.npy")),
        "-o",
        s(&out),
    ]);
    assert!(bad_calib.contains("does not split into samples of 490 values"), "{bad_calib}");
    assert!(!out.exists(), "a failed compile wrote {}", out.display());

    let no_calib = fails(&["compile", s(&data("onnx/kws_fp32.onnx")), "-o", s(&out)]);
    assert!(no_calib.contains("--calibration"), "{no_calib}");

    // A corrupted package: the CRC catches it, inspect/run/bench say so.
    let pkg = tmp("corrupt.efm");
    ok(&["compile", s(&data("onnx/ad_int8_from_tflite.onnx")), "-o", s(&pkg)]);
    let mut bytes = std::fs::read(&pkg).expect("package");
    let i = bytes.len() / 2;
    bytes[i] ^= 0x40;
    std::fs::write(&pkg, &bytes).expect("write");
    for cmd in ["inspect", "bench"] {
        let e = fails(&[cmd, s(&pkg)]);
        assert!(e.contains("invalid package") && e.contains("CRC-32"), "{cmd}: {e}");
    }
    let e = fails(&["run", s(&pkg), "--input", s(&data("ref/ad/real.input_i8.npy"))]);
    assert!(e.contains("invalid package"), "{e}");

    let bad_range = run(&["compile", "x.onnx", "--range", "median"]);
    assert_eq!(bad_range.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_range.stderr).contains("unknown range method"));
}

#[test]
fn help_teaches() {
    let help = ok(&["compile", "--help"]);
    for needle in ["--calibration", "--calibration-scale", "percentile:", "Examples"] {
        assert!(help.contains(needle), "compile --help lacks {needle}");
    }
    let top = ok(&["--help"]);
    for cmd in ["compile", "inspect", "run", "bench"] {
        assert!(top.contains(cmd), "--help lacks {cmd}");
    }
}

#[test]
fn keys_sign_verify() {
    let dir = tmp("keys");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let d = |f: &str| dir.join(f);
    for name in ["root", "release", "other"] {
        let out = ok(&["keys", "generate", name, "--dir", s(&dir)]);
        assert!(out.contains(&format!("{name}.key")), "{out}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(d("root.key")).expect("key").permissions().mode() & 0o777, 0o600);
    }
    let again = fails(&["keys", "generate", "root", "--dir", s(&dir)]);
    assert!(again.contains("refusing to overwrite"), "{again}");
    ok(&[
        "keys",
        "root",
        "--root-key",
        s(&d("root.key")),
        "--release-key",
        s(&d("release.pub")),
        "-o",
        s(&d("root.signed")),
    ]);

    let pkg = d("kws.efm");
    ok(&["compile", s(&data("onnx/kws_int8_from_tflite.onnx")), "-o", s(&pkg)]);
    let out = ok(&[
        "sign",
        s(&pkg),
        "--key",
        s(&d("release.key")),
        "--hardware",
        "rpi4",
        "--counter",
        "2",
        "--version",
        "2.0",
    ]);
    assert!(out.contains("kws 2.0 (counter 2"), "{out}");
    let manifest = d("kws.manifest");
    let json: serde_json::Value = serde_json::from_str(&ok(&[
        "verify",
        s(&manifest),
        "--root",
        s(&d("root.signed")),
        "--package",
        s(&pkg),
        "--json",
    ]))
    .expect("verify --json");
    assert_eq!((json["verified"].as_bool(), json["package_ok"].as_bool()), (Some(true), Some(true)));

    // What a device would refuse, the tool refuses with the device's reason.
    let e = fails(&["verify", s(&manifest), "--root", s(&d("root.signed")), "--installed-counter", "2"]);
    assert!(e.contains("rollback"), "{e}");
    let e = fails(&["verify", s(&manifest), "--root", s(&d("root.signed")), "--hardware", "stm32"]);
    assert!(e.contains("hardware"), "{e}");
    ok(&[
        "sign",
        s(&pkg),
        "--key",
        s(&d("other.key")),
        "--hardware",
        "rpi4",
        "--counter",
        "3",
        "-o",
        s(&d("rogue.manifest")),
    ]);
    let e = fails(&["verify", s(&d("rogue.manifest")), "--root", s(&d("root.signed"))]);
    assert!(e.contains("does not authorize"), "{e}");
    let mut bytes = std::fs::read(&pkg).expect("pkg");
    bytes[100] ^= 1;
    std::fs::write(d("tampered.efm"), &bytes).expect("write");
    let e = fails(&["verify", s(&manifest), "--root", s(&d("root.signed")), "--package", s(&d("tampered.efm"))]);
    assert!(e.contains("SHA-256"), "{e}");
}
