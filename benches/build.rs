//! With the `burn` feature: imports the four fp32 MLPerf Tiny ONNX graphs
//! with burn-onnx (generated Rust code and `.bpk` weights in `OUT_DIR`) and
//! sets `burn_<model>` for each import that succeeds; a failed import is
//! recorded in `OUT_DIR/burn-import.txt` instead of failing the build, so
//! `compare` can say why.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    for m in ["kws", "vww", "ic", "ad"] {
        println!("cargo::rustc-check-cfg=cfg(burn_{m})");
    }
    #[cfg(feature = "burn")]
    burn_import();
}

#[cfg(feature = "burn")]
fn burn_import() {
    use std::fmt::Write as _;

    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut report = String::new();
    for m in ["kws", "vww", "ic", "ad"] {
        let path = format!("../testdata/mlperf-tiny/onnx/{m}_fp32.onnx");
        println!("cargo::rerun-if-changed={path}");
        let result = std::panic::catch_unwind(|| {
            burn_onnx::ModelGen::new().input(&path).out_dir("burn/").run_from_script();
        });
        match result {
            Ok(()) => {
                println!("cargo::rustc-cfg=burn_{m}");
                let _ = writeln!(report, "{m}\tok");
            }
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "import panicked".into());
                println!("cargo::warning=burn-onnx could not import {path}: {why}");
                let _ = writeln!(report, "{m}\t{}", why.replace(['\n', '\t'], " "));
            }
        }
    }
    std::fs::write(out.join("burn-import.txt"), report).expect("writing burn-import.txt");
}
