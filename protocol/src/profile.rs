//! The reference data profile a compiled package carries (section
//! `REFERENCE_PROFILE`), made by the compiler from the calibration data:
//! per input, histograms of the int8 input values per feature on quantile
//! bin edges; for classifiers, the class distribution and mean confidence;
//! and a self-test sample with its recorded output for the device's health
//! check. Devices sketch what they see on the same bins, so drift is
//! computed and merged (fleet-wide) without ever sending raw inputs.
//!
//! A *feature* is a slice of the input along one axis (the innermost axis
//! longer than 1: MFCC coefficients, colour channels), with at most
//! [`MAX_FEATURES`] features (longer axes are grouped evenly).

use alloc::vec;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

/// Profile format version.
pub const PROFILE_VERSION: u32 = 1;
/// Most features per input.
pub const MAX_FEATURES: usize = 64;
/// Default bins per feature.
pub const DEFAULT_BINS: usize = 10;

/// Per-feature bins of one model input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureProfile {
    /// Physical (stored) shape of the int8 input.
    pub shape: Vec<u32>,
    /// The axis whose index selects the feature.
    pub axis: u32,
    /// Number of features.
    pub features: u32,
    /// Per feature, ascending int8 thresholds: `bin(v)` is the number of
    /// thresholds `t` with `v >= t`.
    pub thresholds: Vec<Vec<i16>>,
    /// Per feature, the reference proportion of each bin (`thresholds + 1` bins).
    pub reference: Vec<Vec<f32>>,
}

/// What a classifier's outputs looked like on the calibration data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputProfile {
    /// Number of classes.
    pub classes: u32,
    /// Share of calibration samples predicted as each class.
    pub class_freq: Vec<f32>,
    /// Mean top-1 probability.
    pub mean_confidence: f32,
}

/// A reference input and the output the package must produce for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfTest {
    /// int8 inputs, one per model input.
    pub inputs: Vec<Vec<i8>>,
    /// Expected int8 outputs, one per model output.
    pub outputs: Vec<Vec<i8>>,
}

/// The whole profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReferenceProfile {
    /// [`PROFILE_VERSION`].
    pub version: u32,
    /// Calibration samples it was made from.
    pub samples: u32,
    /// One per model input.
    pub inputs: Vec<FeatureProfile>,
    /// For classifiers.
    pub output: Option<OutputProfile>,
    /// For the device's health check.
    pub selftest: Option<SelfTest>,
}

impl ReferenceProfile {
    /// postcard bytes (what the package section holds).
    ///
    /// # Errors
    /// Never in practice.
    pub fn to_bytes(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_allocvec(self)
    }

    /// Parses a package section.
    ///
    /// # Errors
    /// Malformed bytes or another version.
    pub fn from_bytes(bytes: &[u8]) -> Result<ReferenceProfile, postcard::Error> {
        let p: ReferenceProfile = postcard::from_bytes(bytes)?;
        if p.version != PROFILE_VERSION || p.inputs.iter().any(|f| !f.is_consistent()) {
            return Err(postcard::Error::DeserializeBadEncoding);
        }
        Ok(p)
    }
}

/// The feature axis of a shape: the innermost axis longer than 1.
pub fn feature_axis(shape: &[u32]) -> u32 {
    shape.iter().rposition(|&d| d > 1).unwrap_or(0) as u32
}

impl FeatureProfile {
    fn is_consistent(&self) -> bool {
        let f = self.features as usize;
        let axis_len = self.shape.get(self.axis as usize).copied().unwrap_or(0) as usize;
        (1..=MAX_FEATURES).contains(&f)
            && f <= axis_len.max(1)
            && self.thresholds.len() == f
            && self.reference.len() == f
            && self.thresholds.iter().zip(&self.reference).all(|(t, r)| {
                r.len() == t.len() + 1
                    && t.windows(2).all(|w| w[0] < w[1])
                    && r.iter().all(|p| p.is_finite() && *p >= 0.0)
            })
    }

    /// Elements of the input.
    pub fn elements(&self) -> usize {
        self.shape.iter().map(|&d| d as usize).product()
    }

    /// Feature of every flat element index (precomputed once per model).
    pub fn feature_map(&self) -> Vec<u8> {
        let axis = self.axis as usize;
        let len = self.shape.get(axis).copied().unwrap_or(1).max(1) as usize;
        let stride: usize = self.shape.iter().skip(axis + 1).map(|&d| d as usize).product();
        let f = self.features.max(1) as usize;
        (0..self.elements()).map(|k| (((k / stride.max(1)) % len) * f / len) as u8).collect()
    }

    /// Bin of every int8 value, per feature: `lut[feature][v as u8]`.
    pub fn bin_lut(&self) -> Vec<[u8; 256]> {
        self.thresholds
            .iter()
            .map(|t| {
                let mut lut = [0u8; 256];
                for v in -128i16..=127 {
                    lut[v as i8 as u8 as usize] = t.iter().filter(|&&th| v >= th).count() as u8;
                }
                lut
            })
            .collect()
    }

    /// Builds the profile of one input from int8 samples: `bins` quantile
    /// bins per feature (fewer where values repeat).
    pub fn build(shape: &[u32], samples: &[&[i8]], bins: usize) -> FeatureProfile {
        let axis = feature_axis(shape);
        let axis_len = shape.get(axis as usize).copied().unwrap_or(1).max(1) as usize;
        let features = axis_len.min(MAX_FEATURES);
        let mut p = FeatureProfile {
            shape: shape.to_vec(),
            axis,
            features: features as u32,
            thresholds: vec![Vec::new(); features],
            reference: vec![vec![1.0]; features],
        };
        let map = p.feature_map();
        let mut hist = vec![[0u64; 256]; features];
        for s in samples {
            for (k, &v) in s.iter().enumerate().take(map.len()) {
                hist[map[k] as usize][(v as i16 + 128) as usize] += 1;
            }
        }
        for (f, h) in hist.iter().enumerate() {
            let total: u64 = h.iter().sum();
            if total == 0 {
                continue;
            }
            let mut thresholds: Vec<i16> = Vec::new();
            let mut cum = 0u64;
            let mut q = 1;
            for (i, &c) in h.iter().enumerate() {
                cum += c;
                while q < bins && cum * bins as u64 >= q as u64 * total {
                    // Values up to this one fall below the threshold.
                    let t = i as i16 - 128 + 1;
                    if t <= 127 && thresholds.last() != Some(&t) && cum < total {
                        thresholds.push(t);
                    }
                    q += 1;
                }
            }
            let mut counts = vec![0u64; thresholds.len() + 1];
            for (i, &c) in h.iter().enumerate() {
                let v = i as i16 - 128;
                counts[thresholds.iter().filter(|&&t| v >= t).count()] += c;
            }
            p.reference[f] = counts.iter().map(|&c| c as f32 / total as f32).collect();
            p.thresholds[f] = thresholds;
        }
        p
    }
}
