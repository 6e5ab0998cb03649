//! `/api/v1/models`: the registry.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use edgefleet_protocol::Mode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiResult, JsonBody, Page, Paged, Q, bytes_response, check_id};
use crate::registry::{RegistryError, Release, inspect};
use crate::server::App;
use crate::store::VersionRow;
use crate::util::now_ms;

/// Stages a version moves through.
pub const STAGES: [&str; 3] = ["staging", "production", "archived"];

/// A model and how many versions it has.
#[derive(Serialize, ToSchema)]
pub struct ModelSummary {
    /// Model id.
    pub id: String,
    /// Versions.
    pub versions: i64,
}

/// A model version.
#[derive(Serialize, ToSchema)]
pub struct VersionView {
    /// Model id.
    pub model: String,
    /// Version.
    pub version: String,
    /// `staging`, `production` or `archived`.
    pub stage: String,
    /// Package SHA-256 (hex).
    pub package_sha256: String,
    /// Package size, bytes.
    pub package_bytes: i64,
    /// Arena the model needs, bytes.
    pub arena_bytes: i64,
    /// The package's model card.
    #[schema(value_type = Object)]
    pub model_card: serde_json::Value,
    /// Reference profile SHA-256 (zeros: none; drift gates need one).
    pub profile_sha256: String,
    /// Who signed the stored manifest: `offline`, `server`, or null (rollouts sign their own).
    pub manifest: Option<String>,
    /// Uploaded, unix milliseconds.
    pub created_ms: i64,
}

fn view(v: VersionRow, signed_by: Option<&str>) -> VersionView {
    VersionView {
        model: v.model_id,
        version: v.version,
        stage: v.stage,
        package_sha256: v.package_sha256,
        package_bytes: v.package_len,
        arena_bytes: v.arena_bytes,
        model_card: serde_json::from_str(&v.model_card).unwrap_or(serde_json::Value::Null),
        profile_sha256: v.profile_sha256,
        manifest: v.offline_manifest.map(|_| signed_by.unwrap_or("stored").to_string()),
        created_ms: v.created_ms,
    }
}

/// Lists models.
#[utoipa::path(get, path = "/api/v1/models", tag = "models", security(("token" = [])),
    responses((status = 200, body = [ModelSummary]), (status = 401, body = super::ErrorBody)))]
pub async fn list_models(State(app): State<Arc<App>>) -> ApiResult<axum::Json<Vec<ModelSummary>>> {
    let rows = app.store.models().await?;
    Ok(axum::Json(rows.into_iter().map(|(id, versions)| ModelSummary { id, versions }).collect()))
}

/// Upload parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PublishQuery {
    /// Version name (1–64 of A-Z a-z 0-9 . _ + -).
    pub version: String,
    /// Initial stage (default `staging`).
    pub stage: Option<String>,
    /// Hardware ids (comma-separated) to sign a manifest for now with the
    /// server's key, for installs outside rollouts.
    pub hardware: Option<String>,
}

/// The raw package bytes.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct PackageBody(
    #[expect(dead_code, reason = "only describes the request body in the OpenAPI document")] pub Vec<u8>,
);

/// Uploads a package (the `.efm` bytes as the body) as a new version. A
/// manifest signed offline may come along, hex-encoded in the
/// `X-Edgefleet-Manifest` header: it is checked against the root as a
/// device would check it and must describe exactly this package.
#[utoipa::path(post, path = "/api/v1/models/{model}/versions", tag = "models", security(("token" = [])),
    params(("model" = String, Path, description = "Model id"), PublishQuery,
        ("X-Edgefleet-Manifest" = Option<String>, Header, description = "Offline-signed manifest, hex")),
    request_body(content = PackageBody, content_type = "application/octet-stream"),
    responses((status = 201, body = VersionView), (status = 400, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody), (status = 413, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody)))]
pub async fn publish(
    State(app): State<Arc<App>>,
    Path(model): Path<String>,
    Q(q): Q<PublishQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    check_id("model id", &model)?;
    if q.version.is_empty()
        || q.version.len() > 64
        || !q.version.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
    {
        return Err(ApiError::bad(format!("version {:?}: use 1 to 64 characters of A-Z a-z 0-9 . _ + -", q.version)));
    }
    let stage = q.stage.as_deref().unwrap_or("staging");
    if !STAGES.contains(&stage) {
        return Err(ApiError::bad(format!("stage {stage:?}: use one of {STAGES:?}")));
    }
    let info = inspect(&body).map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let now = now_ms();
    let mut signed_by = None;
    let manifest = match headers.get("x-edgefleet-manifest") {
        Some(h) => {
            let text = h.to_str().map_err(|_| ApiError::bad("X-Edgefleet-Manifest must be hex"))?;
            let bytes =
                hex::decode(text.trim()).map_err(|e| ApiError::bad(format!("X-Edgefleet-Manifest is not hex: {e}")))?;
            let m = app
                .signer
                .check_offline(&bytes, &info, (now / 1000) as u64)
                .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
            if m.model_id != model || m.version != q.version {
                return Err(ApiError(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("the manifest is for {} {}, the upload for {model} {}", m.model_id, m.version, q.version),
                ));
            }
            signed_by = Some("offline");
            Some(bytes)
        }
        None => match q.hardware.as_deref().filter(|h| !h.is_empty()) {
            Some(hw) => {
                let hardware_ids: Vec<String> = hw.split(',').map(|s| s.trim().to_string()).collect();
                let counter = app.store.next_counter().await? as u64;
                let bytes = app
                    .signer
                    .sign(&Release {
                        model_id: &model,
                        version: &q.version,
                        package: &info,
                        counter,
                        hardware_ids,
                        rollout_id: "",
                        mode: Mode::Live,
                        expires: (now / 1000) as u64 + app.cfg.manifest_ttl.as_secs(),
                    })
                    .map_err(|e| match e {
                        RegistryError::NoSigningKey => ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
                        other => ApiError::bad(other.to_string()),
                    })?;
                signed_by = Some("server");
                Some(bytes)
            }
            None => None,
        },
    };
    if let Some(same) = app.store.version_by_sha(&edgefleet_protocol::hex32(&info.sha256)).await? {
        // Telemetry is keyed by package hash: two versions of one package could not be told apart.
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("this package is already {} {} (publish each package once)", same.model_id, same.version),
        ));
    }
    app.store.ensure_model(&model, now).await?;
    let row = app
        .store
        .insert_version(
            &model,
            &q.version,
            stage,
            &body,
            &edgefleet_protocol::hex32(&info.sha256),
            info.arena_bytes as i64,
            &info.model_card,
            &edgefleet_protocol::hex32(&info.profile_sha256),
            manifest.as_deref(),
            now,
        )
        .await?;
    tracing::info!(model, version = q.version, bytes = body.len(), "published");
    Ok((StatusCode::CREATED, axum::Json(view(row, signed_by))).into_response())
}

/// Lists a model's versions, newest first.
#[utoipa::path(get, path = "/api/v1/models/{model}/versions", tag = "models", security(("token" = [])),
    params(("model" = String, Path, description = "Model id"), Page),
    responses((status = 200, body = Paged<VersionView>), (status = 404, body = super::ErrorBody)))]
pub async fn list_versions(
    State(app): State<Arc<App>>,
    Path(model): Path<String>,
    Q(page): Q<Page>,
) -> ApiResult<axum::Json<Paged<VersionView>>> {
    if !app.store.models().await?.iter().any(|(m, _)| *m == model) {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("model {model} not found")));
    }
    let limit = page.limit()?;
    let before = match &page.cursor {
        None => i64::MAX,
        Some(c) => c.parse().map_err(|_| ApiError::bad(format!("cursor {c:?} is not one this API returned")))?,
    };
    let rows = app.store.versions(&model, before, limit).await?;
    let next = (rows.len() as i64 == limit).then(|| rows.last().map(|r| r.id.to_string())).flatten();
    Ok(axum::Json(Paged { items: rows.into_iter().map(|r| view(r, None)).collect(), next_cursor: next }))
}

/// One version.
#[utoipa::path(get, path = "/api/v1/models/{model}/versions/{version}", tag = "models", security(("token" = [])),
    params(("model" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = VersionView), (status = 404, body = super::ErrorBody)))]
pub async fn get_version(
    State(app): State<Arc<App>>,
    Path((model, version)): Path<(String, String)>,
) -> ApiResult<axum::Json<VersionView>> {
    Ok(axum::Json(view(app.store.version(&model, &version).await?, None)))
}

/// Downloads a version's package.
#[utoipa::path(get, path = "/api/v1/models/{model}/versions/{version}/package", tag = "models", security(("token" = [])),
    params(("model" = String, Path), ("version" = String, Path)),
    responses((status = 200, content_type = "application/octet-stream", body = PackageBody), (status = 404, body = super::ErrorBody)))]
pub async fn get_package(
    State(app): State<Arc<App>>,
    Path((model, version)): Path<(String, String)>,
) -> ApiResult<Response> {
    let v = app.store.version(&model, &version).await?;
    let bytes = app
        .store
        .package(&v.package_sha256)
        .await?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "package not found".into()))?;
    Ok(bytes_response(bytes, &format!("{model}-{version}.efm")))
}

/// Downloads the manifest stored with a version (offline-signed, or signed
/// by the server at upload).
#[utoipa::path(get, path = "/api/v1/models/{model}/versions/{version}/manifest", tag = "models", security(("token" = [])),
    params(("model" = String, Path), ("version" = String, Path)),
    responses((status = 200, content_type = "application/octet-stream", body = PackageBody), (status = 404, body = super::ErrorBody)))]
pub async fn get_manifest(
    State(app): State<Arc<App>>,
    Path((model, version)): Path<(String, String)>,
) -> ApiResult<Response> {
    let v = app.store.version(&model, &version).await?;
    let m = v.offline_manifest.ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("{model} {version} has no stored manifest (upload with ?hardware= or a signed manifest)"),
        )
    })?;
    Ok(bytes_response(m, &format!("{model}-{version}.manifest")))
}

/// A stage change.
#[derive(Deserialize, ToSchema)]
pub struct StageChange {
    /// `staging`, `production` or `archived`.
    pub stage: String,
}

/// Moves a version to a stage.
#[utoipa::path(put, path = "/api/v1/models/{model}/versions/{version}/stage", tag = "models", security(("token" = [])),
    params(("model" = String, Path), ("version" = String, Path)), request_body = StageChange,
    responses((status = 200, body = VersionView), (status = 400, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
pub async fn set_stage(
    State(app): State<Arc<App>>,
    Path((model, version)): Path<(String, String)>,
    JsonBody(s): JsonBody<StageChange>,
) -> ApiResult<axum::Json<VersionView>> {
    if !STAGES.contains(&s.stage.as_str()) {
        return Err(ApiError::bad(format!("stage {:?}: use one of {STAGES:?}", s.stage)));
    }
    app.store.set_stage(&model, &version, &s.stage).await?;
    Ok(axum::Json(view(app.store.version(&model, &version).await?, None)))
}
