//! What devices send: a hello with their inventory, periodic telemetry
//! (latency, drift, predictions, shadow agreement, accuracy, health) and
//! events (update rejected, installed, rolled back, drift detected).
//! Every uplink carries a per-device sequence number (the server
//! deduplicates QoS-1 redeliveries and spooled resends on it) and is signed
//! by the device key ([`crate::Kind::Uplink`]), so identity does not rest
//! on the broker. A device keeps each uplink on disk until the *server*
//! acknowledges it ([`UplinkAck`]): a broker's acknowledgement only says the
//! broker has it, and a broker restart or a server outage would lose what it
//! had not delivered yet. Raw inputs are never sent.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::drift::{Drift, Sketch};
use crate::manifest::Mode;

/// Device class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Platform {
    /// Android phone or tablet.
    Android,
    /// iPhone or iPad.
    Ios,
    /// Linux on ARM (boards, gateways).
    LinuxArm,
    /// Linux on x86 or anything else.
    Linux,
    /// A microcontroller.
    Mcu,
}

/// A model as installed on a device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRef {
    /// Model id.
    pub model_id: String,
    /// Version.
    pub version: String,
    /// Release counter.
    pub release_counter: u64,
    /// Package SHA-256.
    pub package_sha256: [u8; 32],
    /// Rollout it came with (empty if none).
    pub rollout_id: String,
}

/// Device inventory, sent on connect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Device class.
    pub platform: Platform,
    /// Hardware id (what manifests target).
    pub hardware_id: String,
    /// Agent version.
    pub agent_version: String,
    /// Runtime (package format) version `major.minor`.
    pub runtime_version: String,
    /// Memory available to the agent, bytes.
    pub memory_bytes: u64,
    /// Static groups the device belongs to.
    pub groups: Vec<String>,
    /// The live model.
    pub live: Option<ModelRef>,
    /// The shadow candidate, if one runs.
    pub shadow: Option<ModelRef>,
}

/// Latency distribution, mergeable: counts in log buckets with four
/// sub-buckets per power of two (≤ 19 % wide), plus exact device-side
/// quantiles.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    /// Inferences measured.
    pub count: u64,
    /// Median, microseconds.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Maximum.
    pub max_us: u64,
    /// Mean.
    pub mean_us: u64,
    /// Sparse `(bucket, count)` pairs, see [`latency_bucket`].
    pub buckets: Vec<(u16, u64)>,
}

/// Bucket of a latency in microseconds: exact below 4, then 4 per octave.
pub fn latency_bucket(us: u64) -> u16 {
    if us < 4 {
        return us as u16;
    }
    let log = 63 - us.leading_zeros() as u64; // floor(log2), >= 2
    let sub = (us >> (log - 2)) & 3;
    (4 * (log - 1) + sub) as u16
}

/// Upper bound (exclusive) of a bucket, microseconds.
pub fn latency_bucket_upper(b: u16) -> u64 {
    let b = b as u64;
    if b < 4 {
        return b + 1;
    }
    let log = b / 4 + 1;
    let sub = b % 4;
    (4 + sub + 1) << (log - 2)
}

impl LatencyStats {
    /// Adds another window's buckets (quantiles are recomputed from buckets).
    pub fn merge(&mut self, other: &LatencyStats) {
        let mut all: Vec<(u16, u64)> = self.buckets.clone();
        for &(b, c) in &other.buckets {
            match all.iter_mut().find(|(x, _)| *x == b) {
                Some(e) => e.1 += c,
                None => all.push((b, c)),
            }
        }
        all.sort_unstable();
        let total = self.count + other.count;
        let mean = (self.mean_us * self.count + other.mean_us * other.count).checked_div(total).unwrap_or(0);
        *self = LatencyStats {
            count: total,
            max_us: self.max_us.max(other.max_us),
            mean_us: mean,
            buckets: all,
            ..Default::default()
        };
        self.p50_us = self.quantile(0.50);
        self.p90_us = self.quantile(0.90);
        self.p95_us = self.quantile(0.95);
        self.p99_us = self.quantile(0.99);
    }

    /// Quantile estimated from the buckets (upper bucket bound).
    pub fn quantile(&self, q: f64) -> u64 {
        let total: u64 = self.buckets.iter().map(|(_, c)| c).sum();
        if total == 0 {
            return 0;
        }
        let target = libm::ceil(q * total as f64) as u64;
        let mut cum = 0;
        for &(b, c) in &self.buckets {
            cum += c;
            if cum >= target.max(1) {
                return latency_bucket_upper(b).min(self.max_us.max(1));
            }
        }
        self.max_us
    }
}

/// Shadow-mode comparison of a candidate with the live model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShadowStats {
    /// The candidate.
    pub candidate: ModelRef,
    /// Inputs both ran on.
    pub inferences: u64,
    /// Share where both predicted the same class (or, for non-classifiers,
    /// outputs within 1 LSB).
    pub agreement: f32,
    /// Live model latency on those inputs.
    pub live_latency: LatencyStats,
    /// Candidate latency on those inputs.
    pub candidate_latency: LatencyStats,
}

/// Accuracy against delayed ground-truth labels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AccuracyStats {
    /// Labels received in the window.
    pub labeled: u64,
    /// Of which the prediction was right.
    pub correct: u64,
}

/// Device health.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// Seconds since the agent started.
    pub uptime_s: u64,
    /// Resident memory of the agent, bytes (0 if unknown).
    pub rss_bytes: u64,
    /// Downloads in progress (0 or 1).
    pub downloading: u8,
}

/// One telemetry window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Telemetry {
    /// Window start, unix milliseconds.
    pub window_start_ms: u64,
    /// Window end, unix milliseconds.
    pub window_end_ms: u64,
    /// The live model.
    pub model: Option<ModelRef>,
    /// Inferences in the window.
    pub inferences: u64,
    /// Failed inferences (bad input, runtime errors).
    pub errors: u64,
    /// Inference latency (live model).
    pub latency: LatencyStats,
    /// Input sketch on the reference bins, per model input.
    pub sketches: Vec<Sketch>,
    /// Drift of the window's inputs against the reference, worst input.
    pub drift: Option<Drift>,
    /// Predictions per class.
    pub class_counts: Vec<u64>,
    /// PSI of the predicted-class distribution against the reference one.
    pub prediction_psi: Option<f32>,
    /// Mean top-1 probability.
    pub mean_confidence: Option<f32>,
    /// Accuracy estimated without labels from confidences (CBPE-style).
    pub estimated_accuracy: Option<f32>,
    /// Accuracy on delayed labels.
    pub accuracy: Option<AccuracyStats>,
    /// Shadow candidate comparison.
    pub shadow: Option<ShadowStats>,
    /// Health.
    pub health: Health,
}

/// Something that happened on a device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// The agent started; `live` is what it serves.
    Started {
        /// Live model.
        live: Option<ModelRef>,
        /// Whether the last update was rolled back at boot.
        recovered: bool,
    },
    /// A manifest or package was refused; the live model stays.
    UpdateRejected {
        /// Model id in the manifest, if it could be read.
        model_id: String,
        /// Version in the manifest.
        version: String,
        /// Counter in the manifest.
        release_counter: u64,
        /// Rollout.
        rollout_id: String,
        /// Why.
        reason: String,
    },
    /// A download began.
    DownloadStarted {
        /// The model.
        model: ModelRef,
        /// Mode.
        mode: Mode,
    },
    /// A new model passed its health check and serves.
    Installed {
        /// The new model.
        model: ModelRef,
        /// The one it replaced.
        previous: Option<ModelRef>,
        /// Health-check latency of the self-test, microseconds.
        selftest_us: u64,
    },
    /// An update failed after download and the previous model serves again.
    RolledBack {
        /// The model that failed.
        model: ModelRef,
        /// Why.
        reason: String,
    },
    /// A shadow candidate started running.
    ShadowStarted {
        /// The candidate.
        candidate: ModelRef,
    },
    /// Input drift crossed the threshold.
    DriftDetected {
        /// PSI of the window.
        psi: f32,
        /// Threshold.
        threshold: f32,
    },
    /// The root of trust was rotated.
    RootUpdated {
        /// New root version.
        version: u32,
    },
}

/// The payload of an uplink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Payload {
    /// Inventory.
    Hello(DeviceInfo),
    /// Telemetry window (boxed: much larger than the other payloads).
    Telemetry(Box<Telemetry>),
    /// Event.
    Event(Event),
}

/// One uplink message (signed as [`crate::Kind::Uplink`] by the device key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Uplink {
    /// Device id.
    pub device_id: String,
    /// Per-device sequence number, strictly increasing, never reused.
    pub seq: u64,
    /// When it was created, unix milliseconds.
    pub time_ms: u64,
    /// What it says.
    pub payload: Payload,
}

/// The server stored these uplinks: the device may forget them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkAck {
    /// Sequence numbers received (duplicates included).
    pub seqs: Vec<u64>,
}
