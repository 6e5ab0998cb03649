//! `/api/v1/rollouts`: start, watch, pause, resume, abort.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiResult, JsonBody, Page, Paged, Q};
use crate::rollout::{self, Action, Gates, RolloutSpec, Status};
use crate::server::App;
use crate::store::RolloutRow;

/// Member counts by status.
#[derive(Serialize, ToSchema, Default)]
pub struct MemberCounts {
    /// Sent the manifest.
    pub pending: usize,
    /// Running the version.
    pub installed: usize,
    /// Refused it or rolled it back on the device.
    pub failed: usize,
    /// Did not install in time.
    pub timeout: usize,
    /// Sent the previous version.
    pub reverting: usize,
    /// Back on the previous version.
    pub reverted: usize,
}

/// A member.
#[derive(Serialize, ToSchema)]
pub struct MemberView {
    /// Device.
    pub device: String,
    /// Wave it joined in (1-based).
    pub wave: i64,
    /// Status.
    pub status: String,
    /// Release counter of its manifest.
    pub release_counter: i64,
}

/// A decision.
#[derive(Serialize, ToSchema)]
pub struct DecisionView {
    /// When, unix milliseconds.
    pub time_ms: i64,
    /// `created`, `wave_started`, `wave_passed`, `gate_failed`, `rolled_back`, `paused`, `resumed`, `aborted`, `completed`, ...
    pub kind: String,
    /// Why.
    pub reason: String,
    /// Figures it was made on.
    #[schema(value_type = Object)]
    pub metrics: serde_json::Value,
}

/// A rollout.
#[derive(Serialize, ToSchema)]
pub struct RolloutView {
    /// Id.
    pub id: String,
    /// Model.
    pub model: String,
    /// Version rolled out.
    pub version: String,
    /// Control and rollback version.
    pub previous_version: Option<String>,
    /// `group` or `hardware`.
    pub target_kind: String,
    /// Group or hardware id.
    pub target: String,
    /// Cumulative wave percentages.
    pub waves: Vec<f64>,
    /// Gates.
    pub gates: Gates,
    /// `pause` or `rollback`.
    pub on_failure: String,
    /// `live` or `shadow`.
    pub mode: String,
    /// `running`, `paused`, `completed`, `rolled_back`, `aborted`.
    pub state: String,
    /// Current wave (1-based; 0 before the first starts).
    pub wave: i64,
    /// Latest gate evaluation.
    pub status: Status,
    /// Members by status.
    pub members: MemberCounts,
    /// Created, unix milliseconds.
    pub created_ms: i64,
    /// Last change, unix milliseconds.
    pub updated_ms: i64,
    /// Members (only on `GET /rollouts/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_list: Option<Vec<MemberView>>,
    /// Decisions, oldest first (only on `GET /rollouts/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decisions: Option<Vec<DecisionView>>,
}

async fn view(app: &App, r: RolloutRow, full: bool, with_members: bool) -> ApiResult<RolloutView> {
    let version = app.store.version_by_id(r.version_id).await?.version;
    let previous = match r.previous_version_id {
        Some(p) => Some(app.store.version_by_id(p).await?.version),
        None => None,
    };
    let mut counts = MemberCounts::default();
    for (status, n) in app.store.member_counts(&r.id).await? {
        let n = n as usize;
        match status.as_str() {
            rollout::member::PENDING => counts.pending += n,
            rollout::member::INSTALLED => counts.installed += n,
            rollout::member::FAILED => counts.failed += n,
            rollout::member::TIMEOUT => counts.timeout += n,
            rollout::member::REVERTING => counts.reverting += n,
            _ => counts.reverted += n,
        }
    }
    let members = if with_members { app.store.members(&r.id).await? } else { Vec::new() };
    let (member_list, decisions) = if full {
        let d = app.store.decisions(&r.id).await?;
        (
            with_members.then(|| {
                members
                    .into_iter()
                    .map(|m| MemberView {
                        device: m.device_id,
                        wave: m.wave + 1,
                        status: m.status,
                        release_counter: m.counter,
                    })
                    .collect()
            }),
            Some(
                d.into_iter()
                    .map(|d| DecisionView {
                        time_ms: d.time_ms,
                        kind: d.kind,
                        reason: d.reason,
                        metrics: serde_json::from_str(&d.metrics).unwrap_or(serde_json::Value::Null),
                    })
                    .collect(),
            ),
        )
    } else {
        (None, None)
    };
    Ok(RolloutView {
        id: r.id,
        model: r.model_id,
        version,
        previous_version: previous,
        target_kind: r.target_kind,
        target: r.target_value,
        waves: serde_json::from_str(&r.waves).unwrap_or_default(),
        gates: serde_json::from_str(&r.gates).unwrap_or_default(),
        on_failure: r.on_failure,
        mode: r.mode,
        state: r.state,
        wave: if r.wave_started_ms == 0 { 0 } else { r.wave + 1 },
        status: serde_json::from_str(&r.status).unwrap_or_default(),
        members: counts,
        created_ms: r.created_ms,
        updated_ms: r.updated_ms,
        member_list,
        decisions,
    })
}

/// Starts a rollout. Defaults: waves `[1, 10, 50, 100]`, the default
/// gates, `on_failure: rollback`, `mode: live`.
#[utoipa::path(post, path = "/api/v1/rollouts", tag = "rollouts", security(("token" = [])),
    request_body(content = Object, description = "RolloutSpec: {model, version, target: {group|hardware: name}, waves?, gates?, on_failure?, mode?}"),
    responses((status = 201, body = RolloutView), (status = 400, body = super::ErrorBody), (status = 404, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
pub async fn create(State(app): State<Arc<App>>, JsonBody(spec): JsonBody<RolloutSpec>) -> ApiResult<Response> {
    let row = rollout::create(&app, spec).await?;
    let id = row.id.clone();
    // Start the first wave now rather than on the next tick.
    rollout::tick(&app).await;
    let r = app.store.rollout(&id).await?;
    Ok((StatusCode::CREATED, axum::Json(view(&app, r, true, true).await?)).into_response())
}

/// Lists rollouts, newest first.
#[utoipa::path(get, path = "/api/v1/rollouts", tag = "rollouts", security(("token" = [])), params(Page),
    responses((status = 200, body = Paged<RolloutView>), (status = 400, body = super::ErrorBody)))]
pub async fn list(State(app): State<Arc<App>>, Q(page): Q<Page>) -> ApiResult<axum::Json<Paged<RolloutView>>> {
    let limit = page.limit()?;
    // Cursor: `created_ms.id` of the last item (ids break ties within a millisecond).
    let before = match &page.cursor {
        None => (i64::MAX, String::new()),
        Some(c) => c
            .split_once('.')
            .and_then(|(ms, id)| Some((ms.parse::<i64>().ok()?, id.to_string())))
            .ok_or_else(|| ApiError::bad(format!("cursor {c:?} is not one this API returned")))?,
    };
    let rows = app.store.rollouts((before.0, &before.1), limit).await?;
    let next =
        (rows.len() as i64 == limit).then(|| rows.last().map(|r| format!("{}.{}", r.created_ms, r.id))).flatten();
    let mut items = Vec::with_capacity(rows.len());
    for r in rows {
        items.push(view(&app, r, false, false).await?);
    }
    Ok(axum::Json(Paged { items, next_cursor: next }))
}

/// Options of `GET /rollouts/{id}`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OneQuery {
    /// Include every member with its status (large for big targets).
    pub members: Option<bool>,
}

/// One rollout with its decisions (and members with `?members=true`).
#[utoipa::path(get, path = "/api/v1/rollouts/{id}", tag = "rollouts", security(("token" = [])), params(("id" = String, Path), OneQuery),
    responses((status = 200, body = RolloutView), (status = 404, body = super::ErrorBody)))]
pub async fn get_one(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Q(q): Q<OneQuery>,
) -> ApiResult<axum::Json<RolloutView>> {
    let r = app.store.rollout(&id).await?;
    Ok(axum::Json(view(&app, r, true, q.members.unwrap_or(false)).await?))
}

async fn act(app: Arc<App>, id: String, a: Action) -> ApiResult<axum::Json<RolloutView>> {
    let r = rollout::act(&app, &id, a, "API").await?;
    Ok(axum::Json(view(&app, r, true, false).await?))
}

/// Pauses a running rollout.
#[utoipa::path(post, path = "/api/v1/rollouts/{id}/pause", tag = "rollouts", security(("token" = [])), params(("id" = String, Path)),
    responses((status = 200, body = RolloutView), (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody)))]
pub async fn pause(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult<axum::Json<RolloutView>> {
    act(app, id, Action::Pause).await
}

/// Resumes a paused rollout (the current wave's timers restart).
#[utoipa::path(post, path = "/api/v1/rollouts/{id}/resume", tag = "rollouts", security(("token" = [])), params(("id" = String, Path)),
    responses((status = 200, body = RolloutView), (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody)))]
pub async fn resume(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult<axum::Json<RolloutView>> {
    act(app, id, Action::Resume).await
}

/// Aborts a rollout and sends its members the previous version.
#[utoipa::path(post, path = "/api/v1/rollouts/{id}/abort", tag = "rollouts", security(("token" = [])), params(("id" = String, Path)),
    responses((status = 200, body = RolloutView), (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody)))]
pub async fn abort(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult<axum::Json<RolloutView>> {
    act(app, id, Action::Abort).await
}
