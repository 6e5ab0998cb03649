//! The REST API (`/api/v1`), its OpenAPI document (`/openapi.json`),
//! `/metrics`, `/healthz` and the dashboard (`/`).
//!
//! Every `/api/v1` call needs `Authorization: Bearer <token>` (the server
//! writes an admin token to `{data_dir}/admin.token` on first start; more
//! can be given with `--api-token`). Lists are paginated: `?limit=` (1 to
//! 1000, default 100) and the `next_cursor` of the previous page as
//! `?cursor=`. Every error, including the framework's own (unknown route,
//! malformed JSON, oversize upload), is JSON: `{"error": "<message>"}`.

mod devices;
mod fleet;
mod models;
mod rollouts;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use crate::metrics::labels;
use crate::server::App;
use crate::store::StoreError;

/// An API error: a status and a message, sent as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

/// The body of every error response.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

impl ApiError {
    /// 400.
    pub fn bad(msg: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(m) => ApiError(StatusCode::NOT_FOUND, format!("{m} not found")),
            StoreError::Conflict(m) => ApiError(StatusCode::CONFLICT, m),
            other => {
                tracing::error!("{other}");
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("internal error: {other}"))
            }
        }
    }
}

impl From<crate::rollout::RolloutError> for ApiError {
    fn from(e: crate::rollout::RolloutError) -> ApiError {
        use crate::rollout::RolloutError as E;
        match e {
            E::Invalid(m) => ApiError(StatusCode::UNPROCESSABLE_ENTITY, m),
            E::Conflict(m) => ApiError(StatusCode::CONFLICT, m),
            E::Store(s) => s.into(),
            E::Registry(r) => ApiError(StatusCode::UNPROCESSABLE_ENTITY, r.to_string()),
        }
    }
}

/// Result of handlers.
pub type ApiResult<T> = Result<T, ApiError>;

/// Pagination parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Items per page, 1 to 1000 (default 100).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl Page {
    fn limit(&self) -> ApiResult<i64> {
        match self.limit {
            None => Ok(100),
            Some(n) if (1..=1000).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::bad(format!("limit must be 1 to 1000, got {n}"))),
        }
    }
}

/// A page of items.
#[derive(Serialize, ToSchema)]
pub struct Paged<T: ToSchema> {
    /// Items.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// JSON body extractor whose rejections are clear 400/415s in our error format.
pub struct JsonBody<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !is_json {
            return Err(ApiError(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send JSON with Content-Type: application/json".into(),
            ));
        }
        let bytes =
            axum::body::Bytes::from_request(req, state).await.map_err(|e| ApiError(e.status(), e.body_text()))?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| ApiError::bad(format!("invalid JSON body: {e}")))
    }
}

/// Query extractor with errors in our format.
pub struct Q<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded_like(q).map(Q)
    }
}

fn serde_urlencoded_like<T: serde::de::DeserializeOwned>(q: &str) -> ApiResult<T> {
    axum::extract::Query::<T>::try_from_uri(&format!("/?{q}").parse().map_err(|_| ApiError::bad("bad query string"))?)
        .map(|axum::extract::Query(t)| t)
        .map_err(|e| ApiError::bad(format!("invalid query: {}", e.body_text())))
}

struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        if let Some(c) = api.components.as_mut() {
            c.add_security_scheme(
                "token",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("opaque").build()),
            );
        }
    }
}

/// The OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(title = "edgefleet fleet server", description = "Model registry, devices, staged rollouts gated on model health, telemetry."),
    paths(
        models::list_models, models::publish, models::list_versions, models::get_version, models::get_package,
        models::get_manifest, models::set_stage,
        devices::enroll, devices::list, devices::get_one, devices::set_groups,
        rollouts::create, rollouts::list, rollouts::get_one, rollouts::pause, rollouts::resume, rollouts::abort,
        fleet::summary, fleet::health, fleet::series, fleet::events,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Security),
    tags((name = "models"), (name = "devices"), (name = "rollouts"), (name = "fleet"))
)]
pub struct ApiDoc;

async fn openapi() -> impl IntoResponse {
    axum::Json(ApiDoc::openapi())
}

async fn healthz(State(app): State<Arc<App>>) -> impl IntoResponse {
    if app.store.ping().await {
        (StatusCode::OK, axum::Json(serde_json::json!({"status": "ok"})))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"status": "database unreachable"})))
    }
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    crate::server::broker_metrics(&app);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], app.metrics.encode())
}

async fn dashboard() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], crate::DASHBOARD_HTML)
}

async fn auth(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = token else {
        return ApiError(StatusCode::UNAUTHORIZED, "missing API token: send Authorization: Bearer <token>".into())
            .into_response();
    };
    match app.store.token_ok(&crate::util::sha_hex(token.as_bytes())).await {
        Ok(true) => next.run(req).await,
        Ok(false) => ApiError(StatusCode::UNAUTHORIZED, "unknown API token".into()).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Counts requests and wraps every non-JSON error body as `{"error": ...}`.
async fn observe(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched".to_string(), |m| m.as_str().to_string());
    let resp = next.run(req).await;
    let status = resp.status();
    app.metrics
        .http_requests
        .get_or_create(&labels(&[("method", &method), ("route", &route), ("status", status.as_str())]))
        .inc();
    app.metrics.http_seconds.get_or_create(&labels(&[("route", &route)])).observe(start.elapsed().as_secs_f64());
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = body.collect().await.map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned()).unwrap_or_default();
    let msg = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("request body larger than this server accepts ({} bytes for packages)", app.cfg.max_upload_bytes)
        }
        StatusCode::NOT_FOUND if text.is_empty() => "no such route (see /openapi.json)".to_string(),
        StatusCode::METHOD_NOT_ALLOWED if text.is_empty() => "method not allowed on this route".to_string(),
        _ if text.is_empty() => status.canonical_reason().unwrap_or("error").to_string(),
        _ => text,
    };
    let mut out = ApiError(status, msg).into_response();
    for (k, v) in parts.headers.iter().filter(|(k, _)| *k == header::ALLOW) {
        out.headers_mut().insert(k, v.clone());
    }
    out
}

/// The whole HTTP surface.
pub fn router(app: Arc<App>) -> Router {
    let max_upload = app.cfg.max_upload_bytes;
    let api = Router::new()
        .route("/models", get(models::list_models))
        .route(
            "/models/{model}/versions",
            get(models::list_versions).post(models::publish).layer(DefaultBodyLimit::max(max_upload)),
        )
        .route("/models/{model}/versions/{version}", get(models::get_version))
        .route("/models/{model}/versions/{version}/package", get(models::get_package))
        .route("/models/{model}/versions/{version}/manifest", get(models::get_manifest))
        .route("/models/{model}/versions/{version}/stage", put(models::set_stage))
        .route("/devices", get(devices::list).post(devices::enroll))
        .route("/devices/{id}", get(devices::get_one))
        .route("/devices/{id}/groups", put(devices::set_groups))
        .route("/rollouts", get(rollouts::list).post(rollouts::create))
        .route("/rollouts/{id}", get(rollouts::get_one))
        .route("/rollouts/{id}/pause", post(rollouts::pause))
        .route("/rollouts/{id}/resume", post(rollouts::resume))
        .route("/rollouts/{id}/abort", post(rollouts::abort))
        .route("/fleet", get(fleet::summary))
        .route("/fleet/health", get(fleet::health))
        .route("/fleet/series", get(fleet::series))
        .route("/events", get(fleet::events))
        .layer(middleware::from_fn_with_state(app.clone(), auth));
    Router::new()
        .route("/", get(dashboard))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .nest("/api/v1", api)
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such route (see /openapi.json)".into()) })
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app)
}

/// Checks a model or device id (the topic-safe id rule).
pub fn check_id(what: &str, id: &str) -> ApiResult<()> {
    if edgefleet_protocol::topics::valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad(format!("{what} {id:?}: use 1 to 64 characters of A-Z a-z 0-9 . _ -")))
    }
}

/// A response with raw bytes.
pub fn bytes_response(bytes: Vec<u8>, name: &str) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\""))
        .body(Body::from(bytes))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
