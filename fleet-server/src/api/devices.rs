//! `/api/v1/devices`: enrollment and inventory.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiResult, JsonBody, Page, Paged, Q, check_id};
use crate::server::App;
use crate::store::DeviceRow;
use crate::util::{now_ms, random_hex, sha_hex};

/// Platforms a device can be.
pub const PLATFORMS: [&str; 5] = ["android", "ios", "linux-arm", "linux", "mcu"];

/// An enrollment request.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Enroll {
    /// Device id (1–64 of A-Z a-z 0-9 . _ -); also its MQTT client id and user name.
    pub id: String,
    /// `android`, `ios`, `linux-arm`, `linux` or `mcu`.
    pub platform: String,
    /// Hardware id (what manifests target).
    pub hardware_id: String,
    /// The device's ed25519 public key, 64 hex digits (`edgefleet-agent --print-device-key`).
    pub public_key: String,
    /// Static groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Credentials for a new device: shown once, stored only hashed (the
/// password) or for sealing (the downlink key).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Enrolled {
    /// Device id.
    pub id: String,
    /// MQTT broker devices connect to (`host:port`).
    pub mqtt: String,
    /// MQTT user name (the device id).
    pub mqtt_username: String,
    /// MQTT password (`EDGEFLEET_MQTT_PASSWORD`).
    pub mqtt_password: String,
    /// Downlink sealing key (`EDGEFLEET_DOWNLINK_KEY`).
    pub downlink_key: String,
}

/// A device.
#[derive(Serialize, ToSchema)]
pub struct DeviceView {
    /// Id.
    pub id: String,
    /// Platform.
    pub platform: String,
    /// Hardware id.
    pub hardware_id: String,
    /// Agent version.
    pub agent_version: String,
    /// Runtime (package format) version.
    pub runtime_version: String,
    /// Memory available to the agent, bytes.
    pub memory_bytes: i64,
    /// Live model, if any.
    pub live_model: Option<String>,
    /// Live version.
    pub live_version: Option<String>,
    /// Live package SHA-256.
    pub live_sha256: Option<String>,
    /// Live release counter.
    pub live_counter: i64,
    /// Last uplink, unix milliseconds.
    pub last_seen_ms: i64,
    /// Enrolled, unix milliseconds.
    pub created_ms: i64,
    /// Groups.
    pub groups: Vec<String>,
}

impl From<DeviceRow> for DeviceView {
    fn from(d: DeviceRow) -> DeviceView {
        DeviceView {
            id: d.id,
            platform: d.platform,
            hardware_id: d.hardware_id,
            agent_version: d.agent_version,
            runtime_version: d.runtime_version,
            memory_bytes: d.memory_bytes,
            live_model: d.live_model,
            live_version: d.live_version,
            live_sha256: d.live_sha256,
            live_counter: d.live_counter,
            last_seen_ms: d.last_seen_ms,
            created_ms: d.created_ms,
            groups: d.groups,
        }
    }
}

fn check_groups(groups: &[String]) -> ApiResult<()> {
    if groups.len() > 32 {
        return Err(ApiError::bad("at most 32 groups per device"));
    }
    groups.iter().try_for_each(|g| check_id("group", g))
}

/// Enrolls a device and issues its credentials.
#[utoipa::path(post, path = "/api/v1/devices", tag = "devices", security(("token" = [])), request_body = Enroll,
    responses((status = 201, body = Enrolled), (status = 400, body = super::ErrorBody), (status = 409, body = super::ErrorBody)))]
pub async fn enroll(State(app): State<Arc<App>>, JsonBody(e): JsonBody<Enroll>) -> ApiResult<Response> {
    check_id("device id", &e.id)?;
    if e.id.starts_with(crate::mqtt::SERVER_USER) {
        return Err(ApiError::bad(format!("device ids starting with {:?} are reserved", crate::mqtt::SERVER_USER)));
    }
    if !PLATFORMS.contains(&e.platform.as_str()) {
        return Err(ApiError::bad(format!("platform {:?}: use one of {PLATFORMS:?}", e.platform)));
    }
    check_id("hardware id", &e.hardware_id)?;
    if edgefleet_protocol::parse_hex32(&e.public_key).is_none() {
        return Err(ApiError::bad("public_key must be 64 hex digits (edgefleet-agent --print-device-key)"));
    }
    check_groups(&e.groups)?;
    let password = random_hex(24).map_err(|err| ApiError(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))?;
    let downlink = random_hex(32).map_err(|err| ApiError(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))?;
    app.store
        .insert_device(
            &e.id,
            &e.platform,
            &e.hardware_id,
            &e.public_key.to_ascii_lowercase(),
            &sha_hex(password.as_bytes()),
            &downlink,
            &e.groups,
            now_ms(),
        )
        .await?;
    tracing::info!(device = e.id, platform = e.platform, "enrolled");
    let out = Enrolled {
        id: e.id.clone(),
        mqtt: app.mqtt_addr.clone(),
        mqtt_username: e.id,
        mqtt_password: password,
        downlink_key: downlink,
    };
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

/// Device filters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeviceQuery {
    /// Only this group.
    pub group: Option<String>,
    /// Only this platform.
    pub platform: Option<String>,
    /// Items per page, 1 to 1000 (default 100).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Lists devices by id.
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", security(("token" = [])), params(DeviceQuery),
    responses((status = 200, body = Paged<DeviceView>), (status = 400, body = super::ErrorBody)))]
pub async fn list(State(app): State<Arc<App>>, Q(q): Q<DeviceQuery>) -> ApiResult<axum::Json<Paged<DeviceView>>> {
    let page = Page { limit: q.limit, cursor: q.cursor };
    let limit = page.limit()?;
    let rows = app
        .store
        .devices(page.cursor.as_deref().unwrap_or(""), limit, q.group.as_deref(), q.platform.as_deref())
        .await?;
    let next = (rows.len() as i64 == limit).then(|| rows.last().map(|d| d.id.clone())).flatten();
    Ok(axum::Json(Paged { items: rows.into_iter().map(DeviceView::from).collect(), next_cursor: next }))
}

/// One device.
#[utoipa::path(get, path = "/api/v1/devices/{id}", tag = "devices", security(("token" = [])), params(("id" = String, Path)),
    responses((status = 200, body = DeviceView), (status = 404, body = super::ErrorBody)))]
pub async fn get_one(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult<axum::Json<DeviceView>> {
    Ok(axum::Json(app.store.device(&id).await?.into()))
}

/// New groups of a device.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Groups {
    /// The groups (replacing the old ones).
    pub groups: Vec<String>,
}

/// Replaces a device's groups.
#[utoipa::path(put, path = "/api/v1/devices/{id}/groups", tag = "devices", security(("token" = [])),
    params(("id" = String, Path)), request_body = Groups,
    responses((status = 200, body = DeviceView), (status = 400, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
pub async fn set_groups(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    JsonBody(g): JsonBody<Groups>,
) -> ApiResult<axum::Json<DeviceView>> {
    check_groups(&g.groups)?;
    app.store.set_groups(&id, &g.groups).await?;
    Ok(axum::Json(app.store.device(&id).await?.into()))
}
