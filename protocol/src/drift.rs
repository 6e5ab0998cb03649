//! Mergeable input sketches and drift scores against a reference profile.
//!
//! A [`Sketch`] counts int8 input values per feature on the profile's bins;
//! sketches add (device windows, or devices across a fleet). Scores compare
//! the sketch's bin proportions with the reference ones:
//! - PSI, population stability index `Σ (p − q) ln(p / q)` (ε-smoothed):
//!   below 0.1 stable, above 0.25 a significant shift;
//! - Jensen–Shannon divergence (base 2, in [0, 1]);
//! - a Kolmogorov–Smirnov estimate: the largest CDF gap at the bin edges.
//!
//! Each is computed per feature; the reported score is the worst feature's
//! (a shift in one MFCC coefficient or one colour channel is drift even if
//! the others are stable), with the mean PSI alongside.

use alloc::vec;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::profile::FeatureProfile;

const EPS: f64 = 1e-4;

/// Counts per feature per bin.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sketch {
    /// `counts[feature][bin]`.
    pub counts: Vec<Vec<u64>>,
}

/// Drift of a sketch against a profile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    /// Largest per-feature PSI.
    pub psi: f32,
    /// Mean PSI over features.
    pub psi_mean: f32,
    /// Largest per-feature Jensen–Shannon divergence.
    pub js: f32,
    /// Largest per-feature KS estimate.
    pub ks: f32,
    /// Feature with the largest PSI.
    pub worst_feature: u32,
    /// Input values counted (per feature, summed).
    pub values: u64,
}

impl Sketch {
    /// An empty sketch on `profile`'s bins.
    pub fn new(profile: &FeatureProfile) -> Sketch {
        Sketch { counts: profile.thresholds.iter().map(|t| vec![0; t.len() + 1]).collect() }
    }

    /// Counts one input, given the profile's `feature_map` and `bin_lut`.
    pub fn add(&mut self, feature_map: &[u8], lut: &[[u8; 256]], input: &[i8]) {
        for (&f, &v) in feature_map.iter().zip(input) {
            let f = f as usize;
            if let (Some(row), Some(l)) = (self.counts.get_mut(f), lut.get(f))
                && let Some(c) = row.get_mut(l[v as u8 as usize] as usize)
            {
                *c += 1;
            }
        }
    }

    /// Adds another sketch on the same bins.
    ///
    /// # Errors
    /// The bins differ (another profile).
    pub fn merge(&mut self, other: &Sketch) -> Result<(), &'static str> {
        if self.counts.len() != other.counts.len()
            || self.counts.iter().zip(&other.counts).any(|(a, b)| a.len() != b.len())
        {
            return Err("sketches on different bins");
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        Ok(())
    }

    /// Values counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Clears the counts, keeping the bins.
    pub fn clear(&mut self) {
        self.counts.iter_mut().flatten().for_each(|c| *c = 0);
    }
}

fn proportions(counts: &[u64]) -> Option<Vec<f64>> {
    let n: u64 = counts.iter().sum();
    (n > 0).then(|| counts.iter().map(|&c| c as f64 / n as f64).collect())
}

/// Population stability index of `counts` against `reference` proportions.
pub fn psi(reference: &[f32], counts: &[u64]) -> Option<f32> {
    let p = proportions(counts)?;
    if p.len() != reference.len() {
        return None;
    }
    let s: f64 = p
        .iter()
        .zip(reference)
        .map(|(&a, &b)| {
            let (a, b) = (a.max(EPS), (b as f64).max(EPS));
            (a - b) * libm::log(a / b)
        })
        .sum();
    Some(s as f32)
}

/// Jensen–Shannon divergence (base 2).
pub fn js_divergence(reference: &[f32], counts: &[u64]) -> Option<f32> {
    let p = proportions(counts)?;
    if p.len() != reference.len() {
        return None;
    }
    let kl = |x: f64, m: f64| if x > 0.0 { x * libm::log2(x / m) } else { 0.0 };
    let s: f64 = p
        .iter()
        .zip(reference)
        .map(|(&a, &b)| {
            let b = b as f64;
            let m = (a + b) / 2.0;
            0.5 * kl(a, m) + 0.5 * kl(b, m)
        })
        .sum();
    Some(s.clamp(0.0, 1.0) as f32)
}

/// Largest gap between the cumulative distributions at the bin edges.
pub fn ks_estimate(reference: &[f32], counts: &[u64]) -> Option<f32> {
    let p = proportions(counts)?;
    if p.len() != reference.len() {
        return None;
    }
    let (mut cp, mut cq, mut d) = (0f64, 0f64, 0f64);
    for (&a, &b) in p.iter().zip(reference) {
        cp += a;
        cq += b as f64;
        d = d.max((cp - cq).abs());
    }
    Some(d as f32)
}

/// Drift of `sketch` against `profile` (`None` if nothing was counted or the
/// bins differ).
pub fn drift(profile: &FeatureProfile, sketch: &Sketch) -> Option<Drift> {
    if sketch.counts.len() != profile.reference.len() {
        return None;
    }
    let mut d = Drift::default();
    let mut psi_sum = 0f32;
    let mut n = 0u32;
    for (f, (reference, counts)) in profile.reference.iter().zip(&sketch.counts).enumerate() {
        let Some(p) = psi(reference, counts) else { continue };
        if p > d.psi || n == 0 {
            d.worst_feature = f as u32;
        }
        d.psi = d.psi.max(p);
        psi_sum += p;
        n += 1;
        d.js = d.js.max(js_divergence(reference, counts).unwrap_or(0.0));
        d.ks = d.ks.max(ks_estimate(reference, counts).unwrap_or(0.0));
    }
    if n == 0 {
        return None;
    }
    d.psi_mean = psi_sum / n as f32;
    d.values = sketch.total();
    Some(d)
}
