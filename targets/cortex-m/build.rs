//! Build script: embeds the model package and its reference data, and links
//! with cortex-m-rt's `link.x` on Cortex-M targets.
//!
//! The package comes from `EDGEFLEET_FIRMWARE_PACKAGE` (a path), made on the
//! host by `edgefleet compile` (`run.sh` does it). It is validated here with
//! the same runtime, so a bad package fails the build instead of the board,
//! and the arena is sized from its memory plan. The reference input and the
//! expected output are int8 `.npy` files, by default TensorFlow Lite Micro's
//! KWS reference pair from `testdata/` (override with
//! `EDGEFLEET_FIRMWARE_INPUT` and `EDGEFLEET_FIRMWARE_EXPECTED`).
//!
//! The update's signed documents are embedded as they are, unchecked (the
//! board is the verifier, and `run.sh` embeds bad ones on purpose):
//! `EDGEFLEET_FIRMWARE_ROOT`, the pinned root of trust (`edgefleet keys
//! root`), and `EDGEFLEET_FIRMWARE_MANIFEST`, the package's signed manifest
//! (`edgefleet sign`). `EDGEFLEET_FIRMWARE_NOW` (unix seconds) is the time
//! the board checks expiry against, fixed at build time so that the
//! verification is deterministic (the board has no clock).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs};

use edgefleet_runtime::{AlignedBytes, Model};

fn fail(msg: String) -> ! {
    panic!("\n\nedgefleet-firmware: {msg}\n\n")
}

/// A path from `var`, else `default`; `what` says how to make the file when neither is given.
fn path_from_env(var: &str, default: Option<PathBuf>, what: &str) -> PathBuf {
    println!("cargo:rerun-if-env-changed={var}");
    let p = env::var_os(var)
        .map(PathBuf::from)
        .or(default)
        .unwrap_or_else(|| fail(format!("set {var} to {what}; targets/cortex-m/run.sh does this (see the README)")));
    println!("cargo:rerun-if-changed={}", p.display());
    p
}

/// The payload of a C-order int8 `.npy` file (format 1.0 to 3.0).
fn read_npy_i8(path: &Path) -> Vec<i8> {
    let b = fs::read(path).unwrap_or_else(|e| fail(format!("reading {}: {e}", path.display())));
    let bad = || -> ! { fail(format!("{}: not a C-order int8 .npy file", path.display())) };
    if b.len() < 12 || &b[..6] != b"\x93NUMPY" {
        bad();
    }
    let (start, len) = match b[6] {
        1 => (10, u16::from_le_bytes([b[8], b[9]]) as usize),
        2 | 3 => (12, u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize),
        _ => bad(),
    };
    let Some(header) = b.get(start..start + len).map(String::from_utf8_lossy) else { bad() };
    if !header.contains("i1'") || !header.contains("'fortran_order': False") {
        bad();
    }
    b[start + len..].iter().map(|&x| x as i8).collect()
}

fn array(name: &str, v: &[i8]) -> String {
    let mut s = format!("pub static {name}: [i8; {}] = [", v.len());
    for x in v {
        write!(s, "{x},").expect("writing to a String");
    }
    s + "];\n"
}

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let target = env::var("TARGET").expect("TARGET");

    if target.starts_with("thumb") {
        fs::copy(manifest.join("memory.x"), out.join("memory.x")).expect("copying memory.x");
        println!("cargo:rustc-link-search={}", out.display());
        println!("cargo:rustc-link-arg-bins=-Tlink.x");
        println!("cargo:rerun-if-changed=memory.x");
    }

    let refs = manifest.join("../../testdata/mlperf-tiny/ref/kws");
    let package = path_from_env(
        "EDGEFLEET_FIRMWARE_PACKAGE",
        None,
        "a package made by `edgefleet compile testdata/mlperf-tiny/onnx/kws_int8_from_tflite.onnx`",
    );
    let input = read_npy_i8(&path_from_env("EDGEFLEET_FIRMWARE_INPUT", Some(refs.join("real.input_i8.npy")), ""));
    let expected =
        read_npy_i8(&path_from_env("EDGEFLEET_FIRMWARE_EXPECTED", Some(refs.join("real.tflm_int8.npy")), ""));

    let root = path_from_env("EDGEFLEET_FIRMWARE_ROOT", None, "the pinned root of trust (`edgefleet keys root`)");
    let signed_manifest =
        path_from_env("EDGEFLEET_FIRMWARE_MANIFEST", None, "the package's signed manifest (`edgefleet sign`)");
    println!("cargo:rerun-if-env-changed=EDGEFLEET_FIRMWARE_NOW");
    let now: u64 = env::var("EDGEFLEET_FIRMWARE_NOW").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        fail("set EDGEFLEET_FIRMWARE_NOW to the board's notion of now, unix seconds (e.g. `date +%s`)".into())
    });
    for (from, to) in [(&root, "root.signed"), (&signed_manifest, "kws.manifest")] {
        fs::copy(from, out.join(to)).unwrap_or_else(|e| fail(format!("reading {}: {e}", from.display())));
    }

    let bytes = fs::read(&package).unwrap_or_else(|e| fail(format!("reading {}: {e}", package.display())));
    let aligned = AlignedBytes::from_slice(&bytes);
    let model = Model::load(&aligned).unwrap_or_else(|e| fail(format!("{}: invalid package: {e}", package.display())));
    if model.input_count() != 1 || model.output_count() != 1 {
        fail(format!("{}: the firmware runs single-input, single-output models", package.display()));
    }
    let n_in = model.input(0).map_or(0, |i| i.tensor.shape.elements());
    let n_out = model.output(0).map_or(0, |o| o.tensor.shape.elements());
    if input.len() != n_in || expected.len() != n_out {
        fail(format!(
            "the reference input/output have {}/{} values, the model {n_in}/{n_out}",
            input.len(),
            expected.len()
        ));
    }

    fs::write(out.join("model.efm"), &bytes).expect("writing model.efm");
    let mut rs = String::from("// Generated by build.rs from the package and reference .npy files.\n");
    writeln!(rs, "/// Bytes of the arena: the package's memory plan, exactly.").expect("write");
    writeln!(rs, "pub const ARENA_SIZE: usize = {};", model.arena_size()).expect("write");
    writeln!(rs, "/// Now for the update's expiry checks (unix seconds), fixed at build time.").expect("write");
    writeln!(rs, "pub const NOW: u64 = {now};").expect("write");
    rs += "/// The reference input (int8, the model's input layout).\n";
    rs += &array("REFERENCE_INPUT", &input);
    rs += "/// The expected output for it (TensorFlow Lite Micro's).\n";
    rs += &array("EXPECTED_OUTPUT", &expected);
    fs::write(out.join("model.rs"), rs).expect("writing model.rs");
}
