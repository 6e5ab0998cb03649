//! The method, as numbers: the median of each trial, the best (lowest) of
//! the trial medians per (model, engine), the fastest peer per model and
//! our ratio to it; and the interleaved order of each trial.
//!
//! Kept free of I/O so a test can check it on synthetic numbers.

use std::collections::BTreeMap;

use crate::engine::Engine;
use crate::models::ModelKey;

/// The goal: per model, our int8 latency at most this times the fastest peer's.
pub const GOAL_RATIO: f64 = 0.8;

/// The median of `xs` (the mean of the middle two for an even count), or
/// `None` for no values. NaNs sort last.
pub fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 })
}

/// The order of trial `trial`: `pairs` rotated left by `trial` places, so
/// each pair takes every position in turn across trials (what runs first
/// after a pause, or right after a cache-hungry neighbour, changes).
pub fn schedule<T: Clone>(pairs: &[T], trial: usize) -> Vec<T> {
    if pairs.is_empty() {
        return Vec::new();
    }
    let k = trial % pairs.len();
    pairs[k..].iter().chain(&pairs[..k]).cloned().collect()
}

/// Trial medians (milliseconds) per (model, engine).
#[derive(Clone, Debug, Default)]
pub struct Measurements {
    trials: BTreeMap<(ModelKey, Engine), Vec<f64>>,
}

impl Measurements {
    /// Records the median of one trial.
    pub fn record(&mut self, model: ModelKey, engine: Engine, median_ms: f64) {
        self.trials.entry((model, engine)).or_default().push(median_ms);
    }

    /// The trial medians recorded for a pair, in trial order.
    pub fn trials(&self, model: ModelKey, engine: Engine) -> &[f64] {
        self.trials.get(&(model, engine)).map_or(&[], Vec::as_slice)
    }

    /// The best (lowest) trial median of a pair.
    pub fn best(&self, model: ModelKey, engine: Engine) -> Option<f64> {
        self.trials(model, engine).iter().copied().filter(|x| x.is_finite()).min_by(f64::total_cmp)
    }
}

/// One row of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The model.
    pub model: ModelKey,
    /// Best trial median per engine that produced numbers (ms).
    pub best: BTreeMap<Engine, f64>,
    /// Ours (ms).
    pub ours: Option<f64>,
    /// The fastest peer and its figure (ms).
    pub fastest_peer: Option<(Engine, f64)>,
    /// Ours divided by the fastest peer.
    pub ratio: Option<f64>,
}

impl Row {
    /// Whether the row meets [`GOAL_RATIO`] (`None` without a ratio).
    pub fn meets_goal(&self) -> Option<bool> {
        self.ratio.map(|r| r <= GOAL_RATIO)
    }
}

/// The table: one row per model, over `engines`.
pub fn table(models: &[ModelKey], engines: &[Engine], m: &Measurements) -> Vec<Row> {
    models
        .iter()
        .map(|&model| {
            let best: BTreeMap<Engine, f64> =
                engines.iter().filter_map(|&e| m.best(model, e).map(|b| (e, b))).collect();
            let ours = best.get(&Engine::Edgefleet).copied();
            let fastest_peer =
                best.iter().filter(|(e, _)| !e.is_ours()).map(|(&e, &v)| (e, v)).min_by(|a, b| a.1.total_cmp(&b.1));
            let ratio = match (ours, fastest_peer) {
                (Some(o), Some((_, p))) if p > 0.0 => Some(o / p),
                _ => None,
            };
            Row { model, best, ours, fastest_peer, ratio }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn schedule_rotates_through_every_position() {
        let pairs = ["a", "b", "c"];
        assert_eq!(schedule(&pairs, 0), ["a", "b", "c"]);
        assert_eq!(schedule(&pairs, 1), ["b", "c", "a"]);
        assert_eq!(schedule(&pairs, 2), ["c", "a", "b"]);
        assert_eq!(schedule(&pairs, 3), ["a", "b", "c"]);
        for t in 0..3 {
            let mut s = schedule(&pairs, t);
            s.sort();
            assert_eq!(s, pairs, "every pair runs once per trial");
        }
        assert!(schedule::<u8>(&[], 4).is_empty());
    }

    /// The table on synthetic numbers: best of trial medians, fastest peer
    /// over every precision, ratio, goal, and rows without peers or ours.
    #[test]
    fn table_picks_best_trials_and_fastest_peer() {
        let mut m = Measurements::default();
        for (model, engine, trials) in [
            (ModelKey::Kws, Engine::Edgefleet, &[0.30, 0.20, 0.25][..]),
            (ModelKey::Kws, Engine::LitertInt8, &[0.10, 0.08, 0.12]),
            (ModelKey::Kws, Engine::OrtFp32, &[0.09, 0.50, 0.11]),
            (ModelKey::Kws, Engine::TflmInt8, &[3.0, 2.9, 3.1]),
            (ModelKey::Ic, Engine::Edgefleet, &[0.05, 0.04]),
            (ModelKey::Ic, Engine::LitertFp32, &[0.06, 0.055]),
            (ModelKey::Ad, Engine::Edgefleet, &[0.01]),
            (ModelKey::Vww, Engine::OrtInt8, &[0.2]),
        ] {
            for &t in trials {
                m.record(model, engine, t);
            }
        }
        let engines = [Engine::Edgefleet, Engine::OrtFp32, Engine::LitertFp32, Engine::LitertInt8, Engine::TflmInt8];
        let rows = table(&ModelKey::ALL, &engines, &m);
        assert_eq!(rows.iter().map(|r| r.model).collect::<Vec<_>>(), ModelKey::ALL);

        let kws = &rows[0];
        assert_eq!(kws.ours, Some(0.20));
        assert_eq!(kws.best[&Engine::OrtFp32], 0.09);
        assert_eq!(kws.best[&Engine::TflmInt8], 2.9);
        assert_eq!(kws.fastest_peer, Some((Engine::LitertInt8, 0.08)));
        assert!((kws.ratio.unwrap() - 2.5).abs() < 1e-12);
        assert_eq!(kws.meets_goal(), Some(false));

        // vww: ort-int8 was measured but is not a selected column.
        let vww = &rows[1];
        assert_eq!((vww.ours, vww.fastest_peer, vww.ratio), (None, None, None));
        assert!(vww.best.is_empty());

        let ic = &rows[2];
        assert_eq!(ic.fastest_peer, Some((Engine::LitertFp32, 0.055)));
        assert!((ic.ratio.unwrap() - 0.04 / 0.055).abs() < 1e-12);
        assert_eq!(ic.meets_goal(), Some(true));

        let ad = &rows[3];
        assert_eq!((ad.ours, ad.fastest_peer, ad.ratio, ad.meets_goal()), (Some(0.01), None, None, None));
    }
}
