//! The engines `compare` knows: ours, tract, and the ones the Python worker
//! runs (onnxruntime, LiteRT, TFLite Micro), each in one precision, and which
//! model file and input each one is given.

use std::fmt;

use anyhow::{Result, bail};

use crate::models::ModelKey;

/// One engine in one precision: a column of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Engine {
    /// Ours: the int8 package compiled from `*_int8_from_tflite.onnx`.
    Edgefleet,
    /// tract on the fp32 ONNX graph.
    TractFp32,
    /// tract on onnxruntime's int8 QDQ graph.
    TractInt8,
    /// onnxruntime on the fp32 ONNX graph.
    OrtFp32,
    /// onnxruntime on its own int8 QDQ graph.
    OrtInt8,
    /// LiteRT (XNNPACK by default) on the fp32 `.tflite`.
    LitertFp32,
    /// LiteRT (XNNPACK by default) on the int8 `.tflite`.
    LitertInt8,
    /// TFLite Micro on the int8 `.tflite`.
    TflmInt8,
    /// burn's ndarray backend on the fp32 ONNX graph, imported at build time.
    BurnNdarray,
    /// burn's flex backend (its default CPU backend since 0.22) on the same.
    BurnFlex,
}

impl Engine {
    /// Every engine, in column order.
    pub const ALL: [Engine; 10] = [
        Engine::Edgefleet,
        Engine::TractFp32,
        Engine::TractInt8,
        Engine::OrtFp32,
        Engine::OrtInt8,
        Engine::LitertFp32,
        Engine::LitertInt8,
        Engine::TflmInt8,
        Engine::BurnNdarray,
        Engine::BurnFlex,
    ];

    /// The id used on the command line and in the JSON.
    pub fn id(self) -> &'static str {
        match self {
            Engine::Edgefleet => "edgefleet",
            Engine::TractFp32 => "tract-fp32",
            Engine::TractInt8 => "tract-int8",
            Engine::OrtFp32 => "ort-fp32",
            Engine::OrtInt8 => "ort-int8",
            Engine::LitertFp32 => "litert-fp32",
            Engine::LitertInt8 => "litert-int8",
            Engine::TflmInt8 => "tflm-int8",
            Engine::BurnNdarray => "burn-ndarray",
            Engine::BurnFlex => "burn-flex",
        }
    }

    /// The engine family (`--engines ort` selects both precisions).
    pub fn family(self) -> &'static str {
        match self {
            Engine::Edgefleet => "edgefleet",
            Engine::TractFp32 | Engine::TractInt8 => "tract",
            Engine::OrtFp32 | Engine::OrtInt8 => "ort",
            Engine::LitertFp32 | Engine::LitertInt8 => "litert",
            Engine::TflmInt8 => "tflm",
            Engine::BurnNdarray | Engine::BurnFlex => "burn",
        }
    }

    /// `fp32` or `int8`.
    pub fn precision(self) -> &'static str {
        match self {
            Engine::TractFp32 | Engine::OrtFp32 | Engine::LitertFp32 | Engine::BurnNdarray | Engine::BurnFlex => "fp32",
            _ => "int8",
        }
    }

    /// Whether this is our runtime (the others are peers).
    pub fn is_ours(self) -> bool {
        self == Engine::Edgefleet
    }

    /// The engine name the Python worker knows, for worker engines.
    pub fn worker_engine(self) -> Option<&'static str> {
        match self {
            Engine::OrtFp32 | Engine::OrtInt8 => Some("ort"),
            Engine::LitertFp32 | Engine::LitertInt8 => Some("litert"),
            Engine::TflmInt8 => Some("tflm"),
            _ => None,
        }
    }

    /// Whether the engine is in this build (burn needs the `burn` feature).
    pub fn available_in_build(self) -> bool {
        self.family() != "burn" || cfg!(feature = "burn")
    }

    /// The model file, relative to a data folder.
    pub fn model_file(self, m: ModelKey) -> String {
        match self {
            Engine::Edgefleet => m.onnx_int8_from_tflite(),
            Engine::TractFp32 | Engine::OrtFp32 | Engine::BurnNdarray | Engine::BurnFlex => m.onnx_fp32(),
            Engine::TractInt8 | Engine::OrtInt8 => m.onnx_int8_qdq_ort(),
            Engine::LitertFp32 => m.tflite_fp32().into(),
            Engine::LitertInt8 | Engine::TflmInt8 => m.tflite_int8().into(),
        }
    }

    /// The input file (relative to a data folder): int8 for the int8
    /// `.tflite` and our package, fp32 for the rest (the QDQ graphs of
    /// onnxruntime take fp32).
    pub fn input_file(self, m: ModelKey) -> String {
        match self {
            Engine::Edgefleet | Engine::LitertInt8 | Engine::TflmInt8 => m.input_i8(),
            _ => m.input_f32(),
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// Parses `--engines`: ids (`ort-int8`) or families (`ort`), comma-separated.
/// Ours is always included: the table is about it.
///
/// # Errors
/// An unknown name.
pub fn parse_engines(list: &str) -> Result<Vec<Engine>> {
    let mut out = vec![Engine::Edgefleet];
    for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let s = s.to_ascii_lowercase();
        let matched: Vec<Engine> = Engine::ALL.into_iter().filter(|e| e.id() == s || e.family() == s).collect();
        if matched.is_empty() {
            let ids: Vec<&str> = Engine::ALL.iter().map(|e| e.id()).collect();
            bail!("unknown engine '{s}': use {} or a family (tract, ort, litert, tflm, burn)", ids.join(", "));
        }
        out.extend(matched);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_lists() {
        assert_eq!(parse_engines("ort").unwrap(), vec![Engine::Edgefleet, Engine::OrtFp32, Engine::OrtInt8]);
        assert_eq!(
            parse_engines("litert-int8, tflm").unwrap(),
            vec![Engine::Edgefleet, Engine::LitertInt8, Engine::TflmInt8]
        );
        assert!(parse_engines("tensorrt").is_err());
    }

    #[test]
    fn files() {
        assert_eq!(Engine::LitertFp32.model_file(ModelKey::Kws), "tflite/derived/kws_fp32_from_savedmodel.tflite");
        assert_eq!(Engine::OrtInt8.model_file(ModelKey::Ic), "onnx/ic_int8_qdq_ort.onnx");
        assert_eq!(Engine::OrtInt8.input_file(ModelKey::Ic), "ref/ic/real.input_f32.npy");
        assert_eq!(Engine::TflmInt8.input_file(ModelKey::Ad), "ref/ad/real.input_i8.npy");
    }
}
