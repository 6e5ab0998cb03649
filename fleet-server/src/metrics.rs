//! `/metrics` in the Prometheus text format (`prometheus-client`). Base
//! units (seconds, bytes), counters end in `_total`, and no label ever
//! holds a device id: label sets stay bounded however large the fleet.
//! Fleet gauges (devices, rollouts, per-version latency and drift) are
//! refreshed from the database by [`crate::server`]'s housekeeping loop.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set: `(name, value)` pairs.
pub type Labels = Vec<(String, String)>;

fn histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    /// Uplinks stored, by kind (`hello`, `telemetry`, `event`).
    pub uplinks: Family<Labels, Counter>,
    /// Uplinks received again (QoS-1 redeliveries, spooled resends).
    pub uplinks_duplicate: Counter,
    /// Uplinks refused, by reason.
    pub uplinks_rejected: Family<Labels, Counter>,
    /// Package chunks served.
    pub chunks: Counter,
    /// Package bytes served.
    pub chunk_bytes: Counter,
    /// HTTP requests, by method, route and status.
    pub http_requests: Family<Labels, Counter>,
    /// HTTP latency, by route.
    pub http_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    /// Enrolled devices, by platform.
    pub devices: Family<Labels, Gauge>,
    /// Devices heard from within the window, by platform.
    pub devices_online: Family<Labels, Gauge>,
    /// Rollouts, by state.
    pub rollouts: Family<Labels, Gauge>,
    /// Rollout decisions, by kind.
    pub decisions: Family<Labels, Counter>,
    /// Inferences reported, by model and version.
    pub inferences: Family<Labels, Counter>,
    /// Failed inferences reported, by model and version.
    pub inference_errors: Family<Labels, Counter>,
    /// Fleet p95 inference latency over the window, by model and version.
    pub latency_p95_seconds: Family<Labels, Gauge<f64, AtomicU64>>,
    /// Fleet input drift (worst-feature PSI of merged sketches), by model and version.
    pub drift_psi: Family<Labels, Gauge<f64, AtomicU64>>,
    /// Retraining webhooks, by outcome.
    pub webhooks: Family<Labels, Counter>,
    /// 1 while the server's MQTT session is up.
    pub mqtt_connected: Gauge,
    /// Clients connected to the embedded broker.
    pub broker_clients: Gauge,
    /// Devices the embedded broker disconnected because their queue was full.
    pub broker_overflows: Counter,
    /// Clients the embedded broker disconnected for using topics outside their access.
    pub broker_denied: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("edgefleet");
        let m = Metrics {
            registry: Registry::default(),
            uplinks: Family::default(),
            uplinks_duplicate: Counter::default(),
            uplinks_rejected: Family::default(),
            chunks: Counter::default(),
            chunk_bytes: Counter::default(),
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(histogram),
            devices: Family::default(),
            devices_online: Family::default(),
            rollouts: Family::default(),
            decisions: Family::default(),
            inferences: Family::default(),
            inference_errors: Family::default(),
            latency_p95_seconds: Family::default(),
            drift_psi: Family::default(),
            webhooks: Family::default(),
            mqtt_connected: Gauge::default(),
            broker_clients: Gauge::default(),
            broker_overflows: Counter::default(),
            broker_denied: Counter::default(),
        };
        registry.register("uplinks", "Device uplinks stored, by kind", m.uplinks.clone());
        registry.register("uplinks_duplicate", "Uplinks received again and ignored", m.uplinks_duplicate.clone());
        registry.register("uplinks_rejected", "Uplinks refused, by reason", m.uplinks_rejected.clone());
        registry.register("package_chunks", "Package chunks served to devices", m.chunks.clone());
        registry.register("package_chunk_bytes", "Package bytes served to devices", m.chunk_bytes.clone());
        registry.register("http_requests", "HTTP requests, by method, route and status", m.http_requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency, by route", m.http_seconds.clone());
        registry.register("devices", "Enrolled devices, by platform", m.devices.clone());
        registry.register(
            "devices_online",
            "Devices heard from within the window, by platform",
            m.devices_online.clone(),
        );
        registry.register("rollouts", "Rollouts, by state", m.rollouts.clone());
        registry.register("rollout_decisions", "Rollout decisions, by kind", m.decisions.clone());
        registry.register(
            "model_inferences",
            "Inferences reported by devices, by model and version",
            m.inferences.clone(),
        );
        registry.register(
            "model_inference_errors",
            "Failed inferences reported by devices, by model and version",
            m.inference_errors.clone(),
        );
        registry.register(
            "model_latency_p95_seconds",
            "Fleet p95 inference latency over the window (merged device histograms), by model and version",
            m.latency_p95_seconds.clone(),
        );
        registry.register(
            "model_drift_psi",
            "Fleet input drift over the window: worst-feature PSI of merged device sketches, by model and version",
            m.drift_psi.clone(),
        );
        registry.register("webhooks", "Retraining webhooks, by outcome", m.webhooks.clone());
        registry.register("broker_clients", "Clients connected to the embedded MQTT broker", m.broker_clients.clone());
        registry.register(
            "broker_queue_overflows",
            "Devices the embedded broker disconnected because their queue was full",
            m.broker_overflows.clone(),
        );
        registry.register(
            "broker_denied",
            "Clients the embedded broker disconnected for topics outside their access",
            m.broker_denied.clone(),
        );
        registry.register("mqtt_connected", "1 while the server's MQTT session is up", m.mqtt_connected.clone());
        // Known label values start at 0, so dashboards show 0 rather than no data.
        for kind in ["hello", "telemetry", "event"] {
            drop(m.uplinks.get_or_create(&labels(&[("kind", kind)])));
        }
        for reason in [
            "bad_signature",
            "corrupt_key",
            "malformed",
            "malformed_chunk_request",
            "overloaded",
            "topic_mismatch",
            "unknown_device",
        ] {
            drop(m.uplinks_rejected.get_or_create(&labels(&[("reason", reason)])));
        }
        for outcome in ["sent", "failed"] {
            drop(m.webhooks.get_or_create(&labels(&[("outcome", outcome)])));
        }
        Metrics { registry, ..m }
    }
}

/// A label set from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

impl Metrics {
    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
