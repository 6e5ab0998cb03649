//! Per-inference measurement, aggregated into telemetry windows: latency
//! (an HDR histogram for exact device-side quantiles plus mergeable log
//! buckets), input sketches on the package's reference bins (drift), the
//! predicted-class distribution and mean confidence, shadow-mode agreement,
//! accuracy on delayed labels and a label-free estimate from confidences
//! (CBPE-style: with calibrated probabilities, the expected accuracy is the
//! mean top-1 probability). Raw inputs never leave this module.

use std::collections::VecDeque;

use edgefleet_protocol::drift::{Sketch, drift, psi};
use edgefleet_protocol::profile::ReferenceProfile;
use edgefleet_protocol::{AccuracyStats, Health, LatencyStats, ModelRef, ShadowStats, Telemetry, latency_bucket};
use hdrhistogram::Histogram;

/// Predictions remembered for delayed labels.
pub const LABEL_MEMORY: usize = 4096;

/// Latency accumulator.
#[derive(Clone, Debug)]
pub struct Latency {
    hist: Histogram<u64>,
    buckets: Vec<u64>,
    sum_us: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            // 1 us .. 1 h, 3 significant digits.
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid"),
            buckets: Vec::new(),
            sum_us: 0,
        }
    }
}

impl Latency {
    /// Records one latency.
    pub fn record(&mut self, us: u64) {
        let _ = self.hist.record(us.clamp(1, 3_600_000_000));
        let b = latency_bucket(us) as usize;
        if self.buckets.len() <= b {
            self.buckets.resize(b + 1, 0);
        }
        self.buckets[b] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// Summary and reset.
    pub fn take(&mut self) -> LatencyStats {
        let n = self.hist.len();
        let s = LatencyStats {
            count: n,
            p50_us: self.hist.value_at_quantile(0.50),
            p90_us: self.hist.value_at_quantile(0.90),
            p95_us: self.hist.value_at_quantile(0.95),
            p99_us: self.hist.value_at_quantile(0.99),
            max_us: self.hist.max(),
            mean_us: self.sum_us.checked_div(n).unwrap_or(0),
            buckets: self.buckets.iter().enumerate().filter(|(_, c)| **c > 0).map(|(b, c)| (b as u16, *c)).collect(),
        };
        *self = Latency::default();
        s
    }
}

#[derive(Clone, Debug)]
struct ShadowAcc {
    candidate: ModelRef,
    n: u64,
    agree: u64,
    live: Latency,
    cand: Latency,
}

struct InputBins {
    map: Vec<u8>,
    lut: Vec<[u8; 256]>,
    sketch: Sketch,
}

/// One model's monitor.
pub struct Monitor {
    profile: Option<ReferenceProfile>,
    bins: Vec<InputBins>,
    classes: usize,
    window_start_ms: u64,
    inferences: u64,
    errors: u64,
    latency: Latency,
    class_counts: Vec<u64>,
    confidence_sum: f64,
    shadow: Option<ShadowAcc>,
    recent: VecDeque<(u64, usize)>,
    labels: AccuracyStats,
    min_drift_inferences: u64,
}

impl Monitor {
    /// A monitor for a model with `classes` output classes (0: not a
    /// classifier) and the package's reference profile, if it has one.
    pub fn new(profile: Option<ReferenceProfile>, classes: usize, min_drift_inferences: u64, now_ms: u64) -> Monitor {
        let bins = profile
            .as_ref()
            .map(|p| {
                p.inputs
                    .iter()
                    .map(|f| InputBins { map: f.feature_map(), lut: f.bin_lut(), sketch: Sketch::new(f) })
                    .collect()
            })
            .unwrap_or_default();
        Monitor {
            profile,
            bins,
            classes,
            window_start_ms: now_ms,
            inferences: 0,
            errors: 0,
            latency: Latency::default(),
            class_counts: vec![0; classes],
            confidence_sum: 0.0,
            shadow: None,
            recent: VecDeque::with_capacity(LABEL_MEMORY),
            labels: AccuracyStats::default(),
            min_drift_inferences,
        }
    }

    /// Starts (or replaces) shadow comparison against `candidate`.
    pub fn set_shadow(&mut self, candidate: Option<ModelRef>) {
        self.shadow = candidate.map(|c| ShadowAcc {
            candidate: c,
            n: 0,
            agree: 0,
            live: Latency::default(),
            cand: Latency::default(),
        });
    }

    /// Records one inference: its int8 inputs, the output-0 probabilities for
    /// a classifier, and the latency.
    pub fn record(&mut self, id: u64, inputs: &[&[i8]], probs: Option<&[f32]>, latency_us: u64) {
        self.inferences += 1;
        self.latency.record(latency_us);
        for (b, x) in self.bins.iter_mut().zip(inputs) {
            b.sketch.add(&b.map, &b.lut, x);
        }
        if let Some(p) = probs.filter(|p| p.len() == self.classes && self.classes > 0) {
            let top = (0..p.len()).fold(0, |b, i| if p[i] > p[b] { i } else { b });
            self.class_counts[top] += 1;
            self.confidence_sum += p[top] as f64;
            if self.recent.len() == LABEL_MEMORY {
                self.recent.pop_front();
            }
            self.recent.push_back((id, top));
        }
    }

    /// Records a failed inference.
    pub fn record_error(&mut self) {
        self.errors += 1;
    }

    /// Records a shadow comparison on the same input.
    pub fn record_shadow(&mut self, agree: bool, live_us: u64, candidate_us: u64) {
        if let Some(s) = &mut self.shadow {
            s.n += 1;
            s.agree += agree as u64;
            s.live.record(live_us);
            s.cand.record(candidate_us);
        }
    }

    /// A delayed ground-truth label for prediction `id`. `false` if the
    /// prediction is unknown (too old, or not a classifier).
    pub fn label(&mut self, id: u64, label: usize) -> bool {
        match self.recent.iter().find(|(i, _)| *i == id) {
            Some(&(_, predicted)) => {
                self.labels.labeled += 1;
                self.labels.correct += (predicted == label) as u64;
                true
            }
            None => false,
        }
    }

    /// Closes the window: telemetry for it, counters reset.
    pub fn window(&mut self, now_ms: u64, model: Option<ModelRef>, health: Health) -> Telemetry {
        let classifier_n: u64 = self.class_counts.iter().sum();
        let mut sketches = Vec::with_capacity(self.bins.len());
        let mut worst = None;
        for (i, b) in self.bins.iter_mut().enumerate() {
            if self.inferences >= self.min_drift_inferences
                && let Some(p) = self.profile.as_ref().and_then(|p| p.inputs.get(i))
                && let Some(d) = drift(p, &b.sketch)
                && worst.is_none_or(|w: edgefleet_protocol::drift::Drift| d.psi > w.psi)
            {
                worst = Some(d);
            }
            sketches.push(b.sketch.clone());
            b.sketch.clear();
        }
        let prediction_psi = self
            .profile
            .as_ref()
            .and_then(|p| p.output.as_ref())
            .filter(|_| classifier_n >= self.min_drift_inferences)
            .and_then(|o| psi(&o.class_freq, &self.class_counts));
        let mean_confidence = (classifier_n > 0).then(|| (self.confidence_sum / classifier_n as f64) as f32);
        let shadow = self.shadow.as_mut().filter(|s| s.n > 0).map(|s| {
            let out = ShadowStats {
                candidate: s.candidate.clone(),
                inferences: s.n,
                agreement: s.agree as f32 / s.n as f32,
                live_latency: s.live.take(),
                candidate_latency: s.cand.take(),
            };
            s.n = 0;
            s.agree = 0;
            out
        });
        let t = Telemetry {
            window_start_ms: self.window_start_ms,
            window_end_ms: now_ms,
            model,
            inferences: self.inferences,
            errors: self.errors,
            latency: self.latency.take(),
            sketches,
            drift: worst,
            class_counts: self.class_counts.clone(),
            prediction_psi,
            mean_confidence,
            estimated_accuracy: mean_confidence,
            accuracy: (self.labels.labeled > 0).then_some(self.labels),
            shadow,
            health,
        };
        self.window_start_ms = now_ms;
        self.inferences = 0;
        self.errors = 0;
        self.class_counts.iter_mut().for_each(|c| *c = 0);
        self.confidence_sum = 0.0;
        self.labels = AccuracyStats::default();
        t
    }
}

#[cfg(test)]
mod tests {
    use edgefleet_protocol::profile::{FeatureProfile, OutputProfile};

    use super::*;

    fn profile() -> ReferenceProfile {
        let samples: Vec<Vec<i8>> =
            (0..40).map(|i| (0..8).map(|k| ((i * 7 + k * 13) % 100 - 50) as i8).collect()).collect();
        let refs: Vec<&[i8]> = samples.iter().map(Vec::as_slice).collect();
        ReferenceProfile {
            version: 1,
            samples: 40,
            inputs: vec![FeatureProfile::build(&[1, 4, 2], &refs, 10)],
            output: Some(OutputProfile { classes: 2, class_freq: vec![0.5, 0.5], mean_confidence: 0.8 }),
            selftest: None,
        }
    }

    #[test]
    fn a_window_reports_what_happened_then_resets() {
        let mut m = Monitor::new(Some(profile()), 2, 5, 0);
        for i in 0..10u64 {
            let x: Vec<i8> = (0..8).map(|k| ((i as i32 * 7 + k * 13) % 100 - 50) as i8).collect();
            m.record(i, &[&x], Some(&[0.9, 0.1]), 100 + i);
        }
        m.record_error();
        assert!(m.label(3, 0) && m.label(4, 1) && !m.label(999, 0));
        let t = m.window(1000, None, Health::default());
        assert_eq!((t.inferences, t.errors, t.latency.count), (10, 1, 10));
        assert_eq!(t.class_counts, vec![10, 0]);
        assert!((t.mean_confidence.unwrap() - 0.9).abs() < 1e-6);
        assert_eq!(t.accuracy, Some(AccuracyStats { labeled: 2, correct: 1 }));
        assert!(t.drift.is_some() && t.prediction_psi.unwrap() > 0.25, "all predictions one class vs 50/50");
        assert_eq!(t.sketches[0].total(), 80);
        assert!(t.latency.p50_us >= 100 && t.latency.max_us == 109);
        let t2 = m.window(2000, None, Health::default());
        assert_eq!((t2.inferences, t2.window_start_ms, t2.accuracy), (0, 1000, None));
        assert!(t2.drift.is_none(), "too few inferences to score drift");
    }

    #[test]
    fn shadow_agreement() {
        let mut m = Monitor::new(None, 0, 5, 0);
        m.set_shadow(Some(ModelRef {
            model_id: "kws".into(),
            version: "3".into(),
            release_counter: 3,
            package_sha256: [0; 32],
            rollout_id: String::new(),
        }));
        for i in 0..4 {
            m.record_shadow(i != 0, 100, 150);
        }
        let s = m.window(1, None, Health::default()).shadow.unwrap();
        assert_eq!((s.inferences, s.agreement), (4, 0.75));
        assert!(s.candidate_latency.p50_us >= 150);
    }
}
