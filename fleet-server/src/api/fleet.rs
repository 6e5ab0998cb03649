//! `/api/v1/fleet` and `/api/v1/events`: what the dashboard shows.

use std::sync::Arc;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiResult, Q};
use crate::server::{App, VersionHealth};
use crate::util::now_ms;

/// Devices of one platform.
#[derive(Serialize, ToSchema)]
pub struct PlatformCount {
    /// Platform.
    pub platform: String,
    /// Enrolled.
    pub devices: i64,
    /// Heard from within the window.
    pub online: i64,
}

/// Devices on one model version.
#[derive(Serialize, ToSchema)]
pub struct VersionCount {
    /// Model (empty: none).
    pub model: String,
    /// Version.
    pub version: String,
    /// Devices.
    pub devices: i64,
}

/// Fleet summary.
#[derive(Serialize, ToSchema)]
pub struct Summary {
    /// Enrolled devices.
    pub devices: i64,
    /// Devices heard from within the window.
    pub online: i64,
    /// By platform.
    pub platforms: Vec<PlatformCount>,
    /// By live model version.
    pub versions: Vec<VersionCount>,
    /// Uplinks stored (counted every 2 s; exact with `?gaps=true`).
    pub uplinks: i64,
    /// With `?gaps=true`: uplinks missing from devices' sequences (lost in
    /// transit, or still spooled on a device after a later one arrived).
    /// A scan of every stored uplink, so only on request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uplinks_missing: Option<i64>,
    /// Online window, seconds.
    pub window_s: u64,
    /// MQTT address devices connect to.
    pub mqtt: String,
}

/// Options of `GET /fleet`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SummaryQuery {
    /// Also count uplinks missing from devices' sequence numbers.
    pub gaps: Option<bool>,
}

/// The fleet by platform and by model version.
#[utoipa::path(get, path = "/api/v1/fleet", tag = "fleet", security(("token" = [])), params(SummaryQuery), responses((status = 200, body = Summary)))]
pub async fn summary(State(app): State<Arc<App>>, Q(q): Q<SummaryQuery>) -> ApiResult<axum::Json<Summary>> {
    let since = now_ms() - app.cfg.window.as_millis() as i64;
    let platforms = app
        .store
        .fleet_by_platform(since)
        .await?
        .into_iter()
        .map(|(platform, devices, online)| PlatformCount { platform, devices, online })
        .collect::<Vec<_>>();
    let versions = app
        .store
        .fleet_by_version()
        .await?
        .into_iter()
        .map(|(model, version, devices)| VersionCount { model, version, devices })
        .collect();
    Ok(axum::Json(Summary {
        devices: platforms.iter().map(|p| p.devices).sum(),
        online: platforms.iter().map(|p| p.online).sum(),
        platforms,
        versions,
        uplinks: match app.uplinks_stored.load(std::sync::atomic::Ordering::Relaxed) {
            // Exact with `gaps` (a full scan anyway), else at most COUNT_EVERY old.
            n if n >= 0 && !q.gaps.unwrap_or(false) => n,
            _ => app.store.uplink_count().await?,
        },
        uplinks_missing: if q.gaps.unwrap_or(false) { Some(app.store.uplink_gaps().await?) } else { None },
        window_s: app.cfg.window.as_secs(),
        mqtt: app.mqtt_addr.clone(),
    }))
}

/// Fleet health per model version over the window (latency, drift, errors, alerts).
#[utoipa::path(get, path = "/api/v1/fleet/health", tag = "fleet", security(("token" = [])), responses((status = 200, body = [VersionHealth])))]
pub async fn health(State(app): State<Arc<App>>) -> ApiResult<axum::Json<Vec<VersionHealth>>> {
    Ok(axum::Json(app.health.read().map(|h| h.clone()).unwrap_or_default()))
}

/// Series parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// Model.
    pub model: String,
    /// Version.
    pub version: String,
    /// Minutes back (default 60, at most 10080).
    pub minutes: Option<i64>,
}

/// One minute of a version's telemetry.
#[derive(Serialize, ToSchema)]
pub struct Point {
    /// Minute start, unix milliseconds.
    pub minute_ms: i64,
    /// Inferences.
    pub inferences: i64,
    /// Worst device p95 latency, microseconds.
    pub p95_us: i64,
    /// Mean device drift PSI.
    pub drift_psi: Option<f64>,
}

/// Per-minute latency and drift of a version (charts).
#[utoipa::path(get, path = "/api/v1/fleet/series", tag = "fleet", security(("token" = [])), params(SeriesQuery),
    responses((status = 200, body = [Point]), (status = 400, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
pub async fn series(State(app): State<Arc<App>>, Q(q): Q<SeriesQuery>) -> ApiResult<axum::Json<Vec<Point>>> {
    let minutes = q.minutes.unwrap_or(60);
    if !(1..=10_080).contains(&minutes) {
        return Err(ApiError::bad(format!("minutes must be 1 to 10080, got {minutes}")));
    }
    let v = app.store.version(&q.model, &q.version).await?;
    let rows = app.store.telemetry_series(&v.package_sha256, now_ms() - minutes * 60_000).await?;
    Ok(axum::Json(
        rows.into_iter()
            .map(|(minute_ms, inferences, p95_us, drift_psi)| Point { minute_ms, inferences, p95_us, drift_psi })
            .collect(),
    ))
}

/// Events parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// How many (1 to 1000, default 100).
    pub limit: Option<i64>,
}

/// A device event.
#[derive(Serialize, ToSchema)]
pub struct EventView {
    /// Device.
    pub device: String,
    /// Its sequence number.
    pub seq: i64,
    /// When (device clock), unix milliseconds.
    pub time_ms: i64,
    /// `started`, `installed`, `rolled_back`, `update_rejected`, `download_started`, `shadow_started`, `drift_detected`, `root_updated`.
    pub kind: String,
    /// Package involved.
    pub package_sha256: Option<String>,
    /// Details.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// Recent device events, newest first.
#[utoipa::path(get, path = "/api/v1/events", tag = "fleet", security(("token" = [])), params(EventsQuery),
    responses((status = 200, body = [EventView]), (status = 400, body = super::ErrorBody)))]
pub async fn events(State(app): State<Arc<App>>, Q(q): Q<EventsQuery>) -> ApiResult<axum::Json<Vec<EventView>>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad(format!("limit must be 1 to 1000, got {limit}")));
    }
    let rows = app.store.recent_events(limit).await?;
    Ok(axum::Json(
        rows.into_iter()
            .map(|e| EventView {
                device: e.device_id,
                seq: e.seq,
                time_ms: e.time_ms,
                kind: e.kind,
                package_sha256: e.package_sha256,
                detail: serde_json::from_str(&e.detail).unwrap_or(serde_json::Value::Null),
            })
            .collect(),
    ))
}
