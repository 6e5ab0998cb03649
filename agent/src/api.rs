//! The local API apps on the device call (HTTP on localhost):
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | POST | `/v1/infer` | `{"input": [f32...]}` or `{"input_i8": [i8...]}` | prediction: id, output, class, label, confidence, latency, model |
//! | POST | `/v1/labels` | `{"prediction_id": n, "label": class}` | 204, or 404 if the prediction is unknown |
//! | GET | `/v1/status` | | device id, live and shadow models, download progress |
//! | GET | `/healthz` | | 200 when a model serves, else 503 |
//!
//! Errors are JSON `{"error": "..."}` with a 4xx status for bad input.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use edgefleet_protocol::ModelRef;
use serde::{Deserialize, Serialize};

use crate::engine::{Engine, InferInput};

/// What `/v1/status` shows besides the engine's models.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    /// Device id.
    pub device_id: String,
    /// Download in progress: model, bytes received, total bytes.
    pub downloading: Option<(ModelRef, u64, u64)>,
    /// Connected to the broker.
    pub connected: bool,
    /// Uplinks waiting for the broker's acknowledgement.
    pub spooled: usize,
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct ApiState {
    /// The models.
    pub engine: Arc<Mutex<Engine>>,
    /// Status.
    pub status: Arc<Mutex<Status>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InferRequest {
    input: Option<Vec<f32>>,
    input_i8: Option<Vec<i8>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelRequest {
    prediction_id: u64,
    label: usize,
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

/// The router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/infer", post(infer))
        .route("/v1/labels", post(label))
        .route("/v1/status", get(status))
        .route("/healthz", get(healthz))
        .with_state(state)
}

async fn infer(State(s): State<ApiState>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let req: InferRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad request body: {e}")))?;
    let input = match (req.input, req.input_i8) {
        (Some(x), None) => InferInput::F32(x),
        (None, Some(x)) => InferInput::I8(x),
        _ => return Err(ApiError(StatusCode::BAD_REQUEST, "give exactly one of `input` (float) or `input_i8`".into())),
    };
    let engine = s.engine.clone();
    let result = tokio::task::spawn_blocking(move || {
        engine.lock().map_err(|_| anyhow::anyhow!("engine poisoned"))?.infer(&input)
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match result {
        Ok(p) => Ok(Json(p).into_response()),
        Err(e) if e.to_string().contains("no model") => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        Err(e) => Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}"))),
    }
}

async fn label(State(s): State<ApiState>, Json(req): Json<LabelRequest>) -> Result<StatusCode, ApiError> {
    let known = s
        .engine
        .lock()
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "engine poisoned".into()))?
        .label(req.prediction_id, req.label);
    if known {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError(StatusCode::NOT_FOUND, format!("prediction {} is unknown or too old", req.prediction_id)))
    }
}

async fn status(State(s): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    let (live, shadow) = {
        let e = s.engine.lock().map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "engine poisoned".into()))?;
        (e.live().cloned(), e.shadow().cloned())
    };
    let st =
        s.status.lock().map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "status poisoned".into()))?.clone();
    Ok(Json(serde_json::json!({
        "device_id": st.device_id,
        "live": live,
        "shadow": shadow,
        "downloading": st.downloading.map(|(m, got, total)| serde_json::json!({"model": m, "received": got, "total": total})),
        "connected": st.connected,
        "spooled": st.spooled,
    })))
}

async fn healthz(State(s): State<ApiState>) -> StatusCode {
    match s.engine.lock() {
        Ok(e) if e.live().is_some() => StatusCode::OK,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}
