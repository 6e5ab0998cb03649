//! The four MLPerf Tiny reference models, where their files are and the
//! inputs every engine is fed.
//!
//! The ONNX files are in the repo (`testdata/mlperf-tiny`); the `.tflite`
//! files are only in the full collection (`../shared/models/mlperf-tiny`
//! next to the work tree), so files are looked up in a list of data folders,
//! first match wins.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// One MLPerf Tiny model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModelKey {
    /// Keyword spotting, DS-CNN.
    Kws,
    /// Visual wake words, MobileNetV1 0.25 at 96x96.
    Vww,
    /// Image classification (CIFAR-10), ResNet-8.
    Ic,
    /// Anomaly detection (ToyCar), fully-connected autoencoder.
    Ad,
}

impl ModelKey {
    /// All four, in the table's row order.
    pub const ALL: [ModelKey; 4] = [ModelKey::Kws, ModelKey::Vww, ModelKey::Ic, ModelKey::Ad];

    /// The short name used in file names and on the command line.
    pub fn key(self) -> &'static str {
        match self {
            ModelKey::Kws => "kws",
            ModelKey::Vww => "vww",
            ModelKey::Ic => "ic",
            ModelKey::Ad => "ad",
        }
    }

    /// What the model is.
    pub fn description(self) -> &'static str {
        match self {
            ModelKey::Kws => "keyword spotting, DS-CNN",
            ModelKey::Vww => "visual wake words, MobileNetV1 0.25 96x96",
            ModelKey::Ic => "image classification, ResNet-8",
            ModelKey::Ad => "anomaly detection, FC autoencoder",
        }
    }

    /// Parses a short name (`kws`, `vww`, `ic`, `ad`).
    ///
    /// # Errors
    /// An unknown name.
    pub fn parse(s: &str) -> Result<ModelKey> {
        match s.trim().to_ascii_lowercase().as_str() {
            "kws" => Ok(ModelKey::Kws),
            "vww" => Ok(ModelKey::Vww),
            "ic" => Ok(ModelKey::Ic),
            "ad" => Ok(ModelKey::Ad),
            other => bail!("unknown model '{other}': use kws, vww, ic or ad"),
        }
    }

    /// The fp32 ONNX graph (tract, onnxruntime fp32, burn).
    pub fn onnx_fp32(self) -> String {
        format!("onnx/{}_fp32.onnx", self.key())
    }

    /// The int8 QDQ ONNX graph with TFLite's exact scales (what we compile).
    pub fn onnx_int8_from_tflite(self) -> String {
        format!("onnx/{}_int8_from_tflite.onnx", self.key())
    }

    /// The int8 QDQ ONNX graph made by onnxruntime's `quantize_static`
    /// (onnxruntime int8, tract int8); fp32 in and out.
    pub fn onnx_int8_qdq_ort(self) -> String {
        format!("onnx/{}_int8_qdq_ort.onnx", self.key())
    }

    /// The int8 `.tflite` reference model (LiteRT int8, TFLite Micro).
    pub fn tflite_int8(self) -> &'static str {
        match self {
            ModelKey::Kws => "tflite/kws_ref_model.tflite",
            ModelKey::Vww => "tflite/vww_96_int8.tflite",
            ModelKey::Ic => "tflite/pretrainedResnet_quant.tflite",
            ModelKey::Ad => "tflite/ad01_int8.tflite",
        }
    }

    /// The fp32 `.tflite` model (LiteRT fp32). For KWS the repo's
    /// `kws_ref_model_float32.tflite` has int8 weights (dynamic-range
    /// quantization), so this is the pure-fp32 conversion of the repo's
    /// SavedModel: same graph, other weights, fine for timing.
    pub fn tflite_fp32(self) -> &'static str {
        match self {
            ModelKey::Kws => "tflite/derived/kws_fp32_from_savedmodel.tflite",
            ModelKey::Vww => "tflite/vww_96_float.tflite",
            ModelKey::Ic => "tflite/pretrainedResnet.tflite",
            ModelKey::Ad => "tflite/ad01_fp32.tflite",
        }
    }

    /// The realistic int8 input (`ref/<key>/real.input_i8.npy`).
    pub fn input_i8(self) -> String {
        format!("ref/{}/real.input_i8.npy", self.key())
    }

    /// The same input in the fp32 models' domain (`ref/<key>/real.input_f32.npy`).
    pub fn input_f32(self) -> String {
        format!("ref/{}/real.input_f32.npy", self.key())
    }
}

impl fmt::Display for ModelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// Parses a comma-separated model list (`kws,ic`); duplicates are dropped,
/// the table keeps its usual order.
///
/// # Errors
/// An unknown name, or an empty list.
pub fn parse_models(list: &str) -> Result<Vec<ModelKey>> {
    let mut out = Vec::new();
    for s in list.split(',').filter(|s| !s.trim().is_empty()) {
        let m = ModelKey::parse(s)?;
        if !out.contains(&m) {
            out.push(m);
        }
    }
    if out.is_empty() {
        bail!("no models selected: use some of kws,vww,ic,ad");
    }
    out.sort();
    Ok(out)
}

/// The data folders searched for model files, in order.
#[derive(Clone, Debug)]
pub struct DataDirs {
    /// The folders (each laid out like `testdata/mlperf-tiny`).
    pub roots: Vec<PathBuf>,
}

impl DataDirs {
    /// The given folders; without any, those in `EDGEFLEET_MLPERF_TINY`
    /// (a `PATH`-like list), else the repo's `testdata/mlperf-tiny` then the
    /// full collection `../shared/models/mlperf-tiny` (the only one with the
    /// `.tflite` files).
    pub fn new(given: &[PathBuf]) -> DataDirs {
        if !given.is_empty() {
            return DataDirs { roots: given.to_vec() };
        }
        if let Some(list) = std::env::var_os("EDGEFLEET_MLPERF_TINY").filter(|v| !v.is_empty()) {
            return DataDirs { roots: std::env::split_paths(&list).collect() };
        }
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new("."));
        DataDirs { roots: vec![workspace.join("testdata/mlperf-tiny"), workspace.join("../shared/models/mlperf-tiny")] }
    }

    /// The first existing `root/rel`.
    ///
    /// # Errors
    /// The file is in none of the folders.
    pub fn find(&self, rel: &str) -> Result<PathBuf> {
        if let Some(p) = self.roots.iter().map(|r| r.join(rel)).find(|p| p.is_file()) {
            return Ok(p);
        }
        let searched: Vec<String> = self.roots.iter().map(|r| r.display().to_string()).collect();
        bail!(
            "model file {rel} not found in {} (pass --data DIR: a copy of the MLPerf Tiny collection; \
             the .tflite files are only in ../shared/models/mlperf-tiny, not in testdata/)",
            searched.join(", ")
        )
    }

    /// `find` as an option, for optional files such as inputs.
    pub fn find_optional(&self, rel: &str) -> Option<PathBuf> {
        self.find(rel).ok()
    }
}

/// `n` pseudo-random int8 values (xorshift, fixed seed): the fallback input
/// when the reference input is missing. Latency does not depend on values.
pub fn pseudo_random_i8(n: usize, seed: u64) -> Vec<i8> {
    let mut state = 0x2545_F491_4F6C_DD1D_u64 ^ seed;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8 as i8
        })
        .collect()
}

/// Reads an int8 input of `n` values from `path`, or `None` when it has
/// another type or size.
///
/// # Errors
/// The file is not a readable `.npy`.
pub fn read_i8(path: &Path, n: usize) -> Result<Option<Vec<i8>>> {
    let t = edgefleet_compiler::npy::read(path)?;
    Ok(match t.data {
        edgefleet_compiler::tensor::Data::I8(v) if v.len() == n => Some(v),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_lists() {
        assert_eq!(parse_models("ic, kws,ic").unwrap(), vec![ModelKey::Kws, ModelKey::Ic]);
        assert!(parse_models("kws,resnet50").is_err());
        assert!(parse_models(" , ").is_err());
    }

    #[test]
    fn missing_file_names_the_folders() {
        let d = DataDirs::new(&[PathBuf::from("/nonexistent-a"), PathBuf::from("/nonexistent-b")]);
        let e = d.find("onnx/kws_fp32.onnx").unwrap_err().to_string();
        assert!(e.contains("/nonexistent-a") && e.contains("/nonexistent-b") && e.contains("--data"), "{e}");
    }
}
