//! Staged rollouts. A rollout sends one model version to a target (a static
//! group or a hardware class) in waves (e.g. 1 % → 10 % → 50 % → 100 %).
//! Each wave's membership is chosen when the wave starts and then frozen;
//! the wave passes only when its gates pass:
//!
//! 1. **install success**: the share of the wave's devices that installed
//!    the version (an `Installed` event, or the device reporting it live)
//!    before `install_timeout_s`; rejections and health-check rollbacks on
//!    the device count as failures;
//! 2. after a soak time, **model health** of the canaries (every device
//!    already on the new version) against the **control cohort** (target
//!    devices still on the previous version, same time window; for the last
//!    wave, when no control is left, the previous version's own telemetry
//!    from before the wave): p95 latency ratio from merged device
//!    histograms, input drift (worst-feature PSI of the canaries' merged
//!    sketches against the new version's reference profile), shadow
//!    agreement, error rate.
//!
//! A failed gate pauses the rollout or rolls it back by itself
//! (`on_failure`): rolling back signs a manifest for the previous version
//! with a new release counter (devices refuse lower counters) and sends it
//! to every member. Every decision is stored with its reason and the
//! figures it was made on. A rollout is driven by one replica at a time:
//! the one holding its lease in the database.

use std::collections::{BTreeSet, HashMap, HashSet};

use edgefleet_protocol::drift::Sketch;
use edgefleet_protocol::profile::ReferenceProfile;
use edgefleet_protocol::{Event, LatencyStats, Mode, Telemetry, hex32};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use utoipa::ToSchema;

use crate::metrics::labels;
use crate::registry::{PackageInfo, Release};
use crate::server::App;
use crate::store::{MemberRow, RolloutRow, StoreError, VersionRow};
use crate::util::now_ms;

/// Rollout states.
pub mod state {
    /// Waves in progress.
    pub const RUNNING: &str = "running";
    /// Stopped by a gate or by hand; members stay as they are.
    pub const PAUSED: &str = "paused";
    /// Every wave passed.
    pub const COMPLETED: &str = "completed";
    /// A gate failed and members were sent the previous version.
    pub const ROLLED_BACK: &str = "rolled_back";
    /// Stopped by hand; members were sent the previous version if possible.
    pub const ABORTED: &str = "aborted";
}

/// Member states.
pub mod member {
    /// Sent the manifest, not installed yet.
    pub const PENDING: &str = "pending";
    /// Runs the version (or its shadow).
    pub const INSTALLED: &str = "installed";
    /// Refused it or rolled it back on its own.
    pub const FAILED: &str = "failed";
    /// Did not install within the timeout.
    pub const TIMEOUT: &str = "timeout";
    /// Sent the previous version.
    pub const REVERTING: &str = "reverting";
    /// Runs the previous version again.
    pub const REVERTED: &str = "reverted";
}

/// What a rollout targets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Devices in a static group.
    Group(String),
    /// Devices of a hardware id.
    Hardware(String),
}

/// What to do when a gate fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Stop and wait for a person.
    Pause,
    /// Send every member the previous version.
    #[default]
    Rollback,
}

/// How members run the version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutMode {
    /// Replace the live model.
    #[default]
    Live,
    /// Run beside the live model and report agreement (never rolled back:
    /// a failing shadow rollout pauses).
    Shadow,
}

/// Health gates of every wave. `null` turns a gate off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Gates {
    /// Least share of a wave that must install.
    pub min_install_success: f64,
    /// Largest canary/control p95 latency ratio.
    pub max_p95_latency_ratio: Option<f64>,
    /// Largest canary input drift (PSI) ...
    pub max_drift_psi: Option<f64>,
    /// ... unless the control cohort drifts as much, within this margin
    /// (then the data moved, not the model).
    pub drift_margin: f64,
    /// Least shadow agreement (when canaries report shadow runs).
    pub min_shadow_agreement: Option<f64>,
    /// Largest share of failed inferences.
    pub max_error_rate: Option<f64>,
    /// Seconds of telemetry after the last install before health is judged.
    pub soak_s: u64,
    /// Canary inferences needed to judge health.
    pub min_inferences: u64,
    /// Seconds a wave's devices have to install.
    pub install_timeout_s: u64,
    /// Seconds a wave may wait for enough telemetry before it fails.
    pub max_wave_s: u64,
}

impl Default for Gates {
    fn default() -> Gates {
        Gates {
            min_install_success: 0.95,
            max_p95_latency_ratio: Some(1.5),
            max_drift_psi: Some(0.25),
            drift_margin: 0.1,
            min_shadow_agreement: Some(0.9),
            max_error_rate: Some(0.01),
            soak_s: 60,
            min_inferences: 200,
            install_timeout_s: 600,
            max_wave_s: 3600,
        }
    }
}

/// A rollout request.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// Model id.
    pub model: String,
    /// Version to roll out.
    pub version: String,
    /// Who gets it.
    pub target: Target,
    /// Cumulative wave sizes in percent of the target, ending at 100.
    #[serde(default = "default_waves")]
    pub waves: Vec<f64>,
    /// Gates (defaults for what is left out).
    #[serde(default)]
    pub gates: Gates,
    /// On a failed gate.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Live or shadow.
    #[serde(default)]
    pub mode: RolloutMode,
}

fn default_waves() -> Vec<f64> {
    vec![1.0, 10.0, 50.0, 100.0]
}

/// Why a request was refused (4xx) or failed.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// Bad request.
    #[error("{0}")]
    Invalid(String),
    /// The state does not allow it.
    #[error("{0}")]
    Conflict(String),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Signing.
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
}

/// Health figures of a cohort over a window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Cohort {
    /// Devices that reported.
    pub devices: usize,
    /// Telemetry windows.
    pub windows: usize,
    /// Inferences.
    pub inferences: u64,
    /// Failed inferences.
    pub errors: u64,
    /// p95 latency from the merged histograms, microseconds.
    pub p95_us: Option<u64>,
    /// Worst-feature PSI of the merged input sketches.
    pub drift_psi: Option<f64>,
    /// Shadow agreement, weighted by inferences.
    pub shadow_agreement: Option<f64>,
    /// Shadow inferences.
    pub shadow_inferences: u64,
    /// Shadow candidate / live p95 on the same inputs.
    pub shadow_p95_ratio: Option<f64>,
    /// Where the figures come from.
    pub source: String,
}

/// One gate's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Check {
    /// Gate.
    pub gate: String,
    /// Measured value (if any).
    pub value: Option<f64>,
    /// Limit.
    pub limit: Option<f64>,
    /// `pass`, `fail` or `skipped`.
    pub outcome: String,
    /// Explanation.
    pub note: String,
}

/// The latest evaluation of a rollout (stored, shown by the API and the dashboard).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Status {
    /// `installing`, `soaking`, `waiting_for_data`, `passed`, `failed`, or the state.
    pub phase: String,
    /// Human summary.
    pub message: String,
    /// Members of the current wave that installed.
    pub installed: usize,
    /// ... that failed or timed out.
    pub failed: usize,
    /// ... still pending.
    pub pending: usize,
    /// Canaries.
    pub canary: Cohort,
    /// Control.
    pub control: Cohort,
    /// Gate outcomes.
    pub checks: Vec<Check>,
    /// When evaluated.
    pub time_ms: i64,
}

fn check(gate: &str, value: Option<f64>, limit: Option<f64>, ok: Option<bool>, note: String) -> Check {
    Check {
        gate: gate.into(),
        value,
        limit,
        outcome: match ok {
            Some(true) => "pass",
            Some(false) => "fail",
            None => "skipped",
        }
        .into(),
        note,
    }
}

/// Judges model health: every enabled gate on the canaries against the control.
pub fn evaluate(g: &Gates, canary: &Cohort, control: &Cohort) -> Vec<Check> {
    let mut out = Vec::new();
    if let Some(max) = g.max_error_rate {
        let rate = canary.errors as f64 / canary.inferences.max(1) as f64;
        out.push(check(
            "error_rate",
            Some(rate),
            Some(max),
            Some(rate <= max),
            format!("{} of {} inferences failed", canary.errors, canary.inferences),
        ));
    }
    if let Some(max) = g.max_p95_latency_ratio {
        if let Some(r) = canary.shadow_p95_ratio {
            out.push(check(
                "p95_latency_ratio",
                Some(r),
                Some(max),
                Some(r <= max),
                "shadow candidate vs live model on the same inputs".into(),
            ));
        } else {
            match (canary.p95_us, control.p95_us) {
                (Some(c), Some(b)) if control.inferences >= g.min_inferences && b > 0 => {
                    let r = c as f64 / b as f64;
                    out.push(check(
                        "p95_latency_ratio",
                        Some(r),
                        Some(max),
                        Some(r <= max),
                        format!("canary p95 {c} µs vs {} p95 {b} µs", control.source),
                    ));
                }
                _ => out.push(check(
                    "p95_latency_ratio",
                    None,
                    Some(max),
                    None,
                    "no baseline with enough inferences".into(),
                )),
            }
        }
    }
    if let Some(max) = g.max_drift_psi {
        match canary.drift_psi {
            Some(p) => {
                let excused = control.drift_psi.is_some_and(|c| p <= c + g.drift_margin);
                let note = match control.drift_psi {
                    Some(c) => format!("canary PSI {p:.3} vs control {c:.3} (margin {})", g.drift_margin),
                    None => format!("canary PSI {p:.3}, no control drift figure"),
                };
                out.push(check("drift_psi", Some(p), Some(max), Some(p <= max || excused), note));
            }
            None => out.push(check(
                "drift_psi",
                None,
                Some(max),
                None,
                "no drift sketches (package without a reference profile?)".into(),
            )),
        }
    }
    if let Some(min) = g.min_shadow_agreement {
        match canary.shadow_agreement {
            Some(a) if canary.shadow_inferences > 0 => out.push(check(
                "shadow_agreement",
                Some(a),
                Some(min),
                Some(a >= min),
                format!("{} shadow inferences", canary.shadow_inferences),
            )),
            _ => out.push(check("shadow_agreement", None, Some(min), None, "no shadow runs reported".into())),
        }
    }
    out
}

/// Builds cohort figures from telemetry windows. In shadow mode only the
/// shadow comparisons of `candidate` count.
pub fn cohort(
    rows: &[(String, Telemetry)],
    profile: Option<&ReferenceProfile>,
    candidate: Option<&[u8; 32]>,
    source: &str,
) -> Cohort {
    let mut c = Cohort { source: source.into(), ..Cohort::default() };
    let mut devices = HashSet::new();
    let mut latency = LatencyStats::default();
    let (mut live_l, mut cand_l) = (LatencyStats::default(), LatencyStats::default());
    let mut sketches: Vec<Sketch> = Vec::new();
    let mut agree = 0f64;
    for (dev, t) in rows {
        if let Some(cand) = candidate {
            let Some(s) = t.shadow.as_ref().filter(|s| &s.candidate.package_sha256 == cand) else { continue };
            c.shadow_inferences += s.inferences;
            agree += s.agreement as f64 * s.inferences as f64;
            live_l.merge(&s.live_latency);
            cand_l.merge(&s.candidate_latency);
        } else if let Some(s) = &t.shadow {
            c.shadow_inferences += s.inferences;
            agree += s.agreement as f64 * s.inferences as f64;
        }
        devices.insert(dev.as_str());
        c.windows += 1;
        c.inferences += t.inferences;
        c.errors += t.errors;
        latency.merge(&t.latency);
        for (i, s) in t.sketches.iter().enumerate() {
            match sketches.get_mut(i) {
                Some(m) => {
                    let _ = m.merge(s);
                }
                None => sketches.push(s.clone()),
            }
        }
    }
    c.devices = devices.len();
    if latency.count > 0 {
        c.p95_us = Some(latency.p95_us);
    }
    if c.shadow_inferences > 0 {
        c.shadow_agreement = Some(agree / c.shadow_inferences as f64);
        if live_l.count > 0 && cand_l.count > 0 && live_l.p95_us > 0 {
            c.shadow_p95_ratio = Some(cand_l.p95_us as f64 / live_l.p95_us as f64);
        }
    }
    if candidate.is_none()
        && let Some(p) = profile
    {
        c.drift_psi = p
            .inputs
            .iter()
            .zip(&sketches)
            .filter_map(|(f, s)| edgefleet_protocol::drift::drift(f, s))
            .map(|d| d.psi as f64)
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    }
    c
}

/// [`cohort`] over stored telemetry rows of `devices` (`None`: all),
/// decoded and merged on the blocking pool: thousands of windows take long
/// enough to stall the API's async threads.
pub async fn cohort_off_thread(
    rows: Vec<(String, String, Vec<u8>)>,
    devices: impl Into<Option<HashSet<String>>>,
    profile: Option<std::sync::Arc<ReferenceProfile>>,
    candidate: Option<[u8; 32]>,
    source: &'static str,
) -> Cohort {
    let devices = devices.into();
    tokio::task::spawn_blocking(move || {
        let decoded: Vec<(String, Telemetry)> = match &devices {
            Some(d) => decode(rows, d),
            None => rows.into_iter().filter_map(|(d, _, b)| postcard::from_bytes(&b).ok().map(|t| (d, t))).collect(),
        };
        cohort(&decoded, profile.as_deref(), candidate.as_ref(), source)
    })
    .await
    .unwrap_or_default()
}

fn decode(rows: Vec<(String, String, Vec<u8>)>, devices: &HashSet<String>) -> Vec<(String, Telemetry)> {
    rows.into_iter()
        .filter(|(d, _, _)| devices.contains(d))
        .filter_map(|(d, _, b)| postcard::from_bytes::<Telemetry>(&b).ok().map(|t| (d, t)))
        .collect()
}

fn package_info(v: &VersionRow) -> PackageInfo {
    PackageInfo {
        sha256: edgefleet_protocol::parse_hex32(&v.package_sha256).unwrap_or([0; 32]),
        len: v.package_len as u64,
        arena_bytes: v.arena_bytes as u64,
        model_card: v.model_card.clone(),
        profile_sha256: edgefleet_protocol::parse_hex32(&v.profile_sha256).unwrap_or([0; 32]),
    }
}

/// Checks and stores a new rollout; its first wave starts on the next tick.
///
/// # Errors
/// Unknown model or version, bad waves or gates, no devices, a rollout of
/// the same model already active on the target, nothing to sign with.
pub async fn create(app: &App, spec: RolloutSpec) -> Result<RolloutRow, RolloutError> {
    let inv = RolloutError::Invalid;
    let v = app.store.version(&spec.model, &spec.version).await?;
    if v.stage == "archived" {
        return Err(inv(format!("{} {} is archived", spec.model, spec.version)));
    }
    if spec.waves.is_empty() || spec.waves.len() > 20 {
        return Err(inv("waves: give 1 to 20 cumulative percentages, e.g. [1, 10, 50, 100]".into()));
    }
    let mut last = 0.0;
    for &w in &spec.waves {
        if !(w > last && w <= 100.0) {
            return Err(inv(format!("waves must increase strictly within (0, 100]: {:?}", spec.waves)));
        }
        last = w;
    }
    if last != 100.0 {
        return Err(inv(format!("the last wave must be 100 (got {last})")));
    }
    let g = &spec.gates;
    if !(0.0..=1.0).contains(&g.min_install_success)
        || g.max_p95_latency_ratio.is_some_and(|x| x <= 0.0 || x.is_nan())
        || g.max_drift_psi.is_some_and(|x| x < 0.0 || x.is_nan())
        || g.min_shadow_agreement.is_some_and(|x| !(0.0..=1.0).contains(&x))
        || g.max_error_rate.is_some_and(|x| !(0.0..=1.0).contains(&x))
        || g.install_timeout_s == 0
    {
        return Err(inv(
            "gates out of range: shares and agreement within [0, 1], ratios above 0, install_timeout_s above 0".into(),
        ));
    }
    let (kind, value) = match &spec.target {
        Target::Group(g) => ("group", g.as_str()),
        Target::Hardware(h) => ("hardware", h.as_str()),
    };
    let targets = app.store.target_devices(kind, value).await?;
    if targets.is_empty() {
        return Err(inv(format!("no enrolled devices in {kind} {value:?}")));
    }
    if !app.signer.can_sign() && (v.offline_manifest.is_none() || spec.mode == RolloutMode::Shadow) {
        return Err(RolloutError::Registry(crate::registry::RegistryError::NoSigningKey));
    }
    for id in app
        .store
        .rollouts_in_state(state::RUNNING)
        .await?
        .into_iter()
        .chain(app.store.rollouts_in_state(state::PAUSED).await?)
    {
        let r = app.store.rollout(&id).await?;
        if r.model_id == spec.model && r.target_kind == kind && r.target_value == value {
            return Err(RolloutError::Conflict(format!(
                "rollout {} of {} to {kind} {value} is {}: abort it first",
                r.id, r.model_id, r.state
            )));
        }
    }
    // The control version: what most of the target runs now, if it is a version of this model.
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (_, live, _) in &targets {
        if let Some(l) = live.as_deref().filter(|l| *l != v.package_sha256) {
            *counts.entry(l).or_default() += 1;
        }
    }
    let mut previous = None;
    let mut ranked: Vec<_> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    for (sha, _) in ranked {
        if let Some(p) = app.store.version_by_sha(sha).await?
            && p.model_id == spec.model
        {
            previous = Some(p.id);
            break;
        }
    }
    let now = now_ms();
    let id = format!("ro-{}", crate::util::random_hex(4).map_err(|e| inv(format!("no randomness: {e}")))?);
    let row = RolloutRow {
        id: id.clone(),
        model_id: spec.model.clone(),
        version_id: v.id,
        previous_version_id: previous,
        target_kind: kind.into(),
        target_value: value.into(),
        waves: serde_json::to_string(&spec.waves).unwrap_or_default(),
        gates: serde_json::to_string(&spec.gates).unwrap_or_default(),
        on_failure: serde_json::to_value(spec.on_failure)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        mode: serde_json::to_value(spec.mode).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
        state: state::RUNNING.into(),
        status: "{}".into(),
        wave: 0,
        wave_started_ms: 0,
        created_ms: now,
        updated_ms: now,
    };
    app.store.insert_rollout(&row).await?;
    let prev_note = match previous {
        Some(p) => format!("control and rollback version {}", app.store.version_by_id(p).await?.version),
        None => "no previous version of this model on the target: nothing to roll back to".into(),
    };
    decide(
        app,
        &id,
        "created",
        &format!(
            "{} {} to {kind} {value} ({} devices), waves {:?}; {prev_note}",
            spec.model,
            spec.version,
            targets.len(),
            spec.waves
        ),
        &serde_json::json!({}),
    )
    .await?;
    Ok(row)
}

async fn decide(app: &App, id: &str, kind: &str, reason: &str, metrics: &serde_json::Value) -> Result<(), StoreError> {
    info!(rollout = id, kind, "{reason}");
    app.metrics.decisions.get_or_create(&labels(&[("kind", kind)])).inc();
    app.store.add_decision(id, now_ms(), kind, reason, &metrics.to_string()).await
}

/// Evaluates every running rollout this replica holds the lease of, and
/// settles members of rolled-back ones.
pub async fn tick(app: &App) {
    let _one_at_a_time = app.tick_lock.lock().await;
    let now = now_ms();
    let ttl = (app.cfg.tick.as_millis() as i64 * 5).max(10_000);
    for st in [state::RUNNING, state::ROLLED_BACK, state::ABORTED] {
        let ids = match app.store.rollouts_in_state(st).await {
            Ok(ids) => ids,
            Err(e) => {
                warn!("listing rollouts: {e}");
                return;
            }
        };
        for id in ids {
            match app.store.take_lease(&id, &app.cfg.replica, now, ttl).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    warn!("lease on {id}: {e}");
                    continue;
                }
            }
            if let Err(e) = step(app, &id).await {
                warn!("rollout {id}: {e}");
            }
        }
    }
}

struct Ctx {
    r: RolloutRow,
    waves: Vec<f64>,
    gates: Gates,
    target: VersionRow,
    previous: Option<VersionRow>,
}

async fn load(app: &App, id: &str) -> Result<Ctx, RolloutError> {
    let r = app.store.rollout(id).await?;
    let waves: Vec<f64> = serde_json::from_str(&r.waves).map_err(|e| StoreError::Corrupt(format!("waves: {e}")))?;
    let gates: Gates = serde_json::from_str(&r.gates).map_err(|e| StoreError::Corrupt(format!("gates: {e}")))?;
    let target = app.store.version_by_id(r.version_id).await?;
    let previous = match r.previous_version_id {
        Some(p) => Some(app.store.version_by_id(p).await?),
        None => None,
    };
    Ok(Ctx { r, waves, gates, target, previous })
}

async fn step(app: &App, id: &str) -> Result<(), RolloutError> {
    let c = load(app, id).await?;
    let now = now_ms();
    let members = app.store.members(id).await?;
    let (kind, value) = (c.r.target_kind.clone(), c.r.target_value.clone());
    let live: HashMap<String, Option<String>> =
        app.store.target_devices(&kind, &value).await?.into_iter().map(|(d, l, _)| (d, l)).collect();
    // Reconcile with what devices report live (covers events lost or never sent).
    for m in &members {
        let reported: Option<String> = match live.get(&m.device_id) {
            Some(l) => l.clone(),
            None => app.store.device(&m.device_id).await.ok().and_then(|d| d.live_sha256),
        };
        let reported = reported.as_deref();
        if c.r.mode == "live"
            && matches!(m.status.as_str(), member::PENDING | member::TIMEOUT)
            && reported == Some(c.target.package_sha256.as_str())
        {
            app.store.set_member(id, &m.device_id, member::INSTALLED, None, now).await?;
        }
        if m.status == member::REVERTING
            && c.previous.as_ref().is_some_and(|p| reported == Some(p.package_sha256.as_str()))
        {
            app.store.set_member(id, &m.device_id, member::REVERTED, None, now).await?;
        }
    }
    if c.r.state != state::RUNNING {
        return Ok(());
    }
    if c.r.wave_started_ms == 0 {
        return start_wave(app, &c, 0).await;
    }
    let members = app.store.members(id).await?;
    let wave: Vec<&MemberRow> = members.iter().filter(|m| m.wave == c.r.wave).collect();
    let elapsed = now - c.r.wave_started_ms;
    let g = &c.gates;
    if elapsed > g.install_timeout_s as i64 * 1000 {
        for m in wave.iter().filter(|m| m.status == member::PENDING) {
            app.store.set_member(id, &m.device_id, member::TIMEOUT, None, now).await?;
        }
    }
    let members = app.store.members(id).await?;
    let wave: Vec<&MemberRow> = members.iter().filter(|m| m.wave == c.r.wave).collect();
    let n = wave.len();
    let installed = wave.iter().filter(|m| m.status == member::INSTALLED).count();
    let failed = wave.iter().filter(|m| matches!(m.status.as_str(), member::FAILED | member::TIMEOUT)).count();
    let pending = n - installed - failed;
    let mut status = Status { installed, failed, pending, time_ms: now, ..Status::default() };
    let allowed = ((n as f64) * (1.0 - g.min_install_success) + 1e-9).floor() as usize;
    if failed > allowed {
        let reason = format!(
            "wave {} install success {installed}/{n} ({failed} failed or timed out) is below {:.0} %",
            c.r.wave + 1,
            g.min_install_success * 100.0
        );
        status.phase = "failed".into();
        status.message = reason.clone();
        return fail(app, &c, &reason, status).await;
    }
    if pending > 0 {
        status.phase = "installing".into();
        status.message =
            format!("wave {}/{}: {installed}/{n} installed, {pending} pending", c.r.wave + 1, c.waves.len());
        return save_status(app, id, &status).await;
    }
    // Health: canaries since the last install of this wave, against the control.
    let installed_at = wave.iter().map(|m| m.updated_ms).max().unwrap_or(c.r.wave_started_ms).max(c.r.wave_started_ms);
    if now - installed_at < g.soak_s as i64 * 1000 {
        // Nothing is judged while soaking: skip decoding telemetry until then.
        status.phase = "soaking".into();
        status.message =
            format!("wave {}/{}: all {n} installed; soaking for {} s", c.r.wave + 1, c.waves.len(), g.soak_s);
        return save_status(app, id, &status).await;
    }
    let canaries: HashSet<String> =
        members.iter().filter(|m| m.status == member::INSTALLED).map(|m| m.device_id.clone()).collect();
    let member_ids: HashSet<String> = members.iter().map(|m| m.device_id.clone()).collect();
    let target_sha = edgefleet_protocol::parse_hex32(&c.target.package_sha256).unwrap_or([0; 32]);
    let shadow = c.r.mode == "shadow";
    let canary_rows = if shadow {
        app.store.telemetry_between(None, installed_at, now).await?
    } else {
        app.store.telemetry_between(Some(&c.target.package_sha256), installed_at, now).await?
    };
    let target_profile = app.profile(&c.target.package_sha256).await;
    status.canary =
        cohort_off_thread(canary_rows, canaries, target_profile, shadow.then_some(target_sha), "canaries").await;
    if let Some(p) = &c.previous {
        let prev_profile = app.profile(&p.package_sha256).await;
        let control: HashSet<String> = live.keys().filter(|d| !member_ids.contains(*d)).cloned().collect();
        let rows = app.store.telemetry_between(Some(&p.package_sha256), installed_at, now).await?;
        status.control = cohort_off_thread(rows, control, prev_profile.clone(), None, "control cohort").await;
        if status.control.inferences < g.min_inferences {
            // No control left (last wave): the previous version on the same target, before this wave.
            let all: HashSet<String> = live.keys().cloned().collect();
            let from = c.r.wave_started_ms - app.cfg.window.as_millis() as i64;
            let rows = app.store.telemetry_between(Some(&p.package_sha256), from, c.r.wave_started_ms).await?;
            status.control =
                cohort_off_thread(rows, all, prev_profile, None, "previous version before this wave").await;
        }
    }
    let enough = if shadow { status.canary.shadow_inferences } else { status.canary.inferences } >= g.min_inferences;
    if !enough {
        if elapsed > g.max_wave_s as i64 * 1000 {
            let reason = format!(
                "wave {}: only {} canary inferences reported in {} s (need {})",
                c.r.wave + 1,
                status.canary.inferences,
                g.max_wave_s,
                g.min_inferences
            );
            status.phase = "failed".into();
            status.message = reason.clone();
            return fail(app, &c, &reason, status).await;
        }
        status.phase = "waiting_for_data".into();
        status.message = format!(
            "wave {}: {} of {} canary inferences needed",
            c.r.wave + 1,
            status.canary.inferences,
            g.min_inferences
        );
        return save_status(app, id, &status).await;
    }
    status.checks = evaluate(g, &status.canary, &status.control);
    let failing: Vec<String> = status
        .checks
        .iter()
        .filter(|k| k.outcome == "fail")
        .map(|k| format!("{} {} (limit {}): {}", k.gate, fmt_opt(k.value), fmt_opt(k.limit), k.note))
        .collect();
    if !failing.is_empty() {
        let reason = format!("wave {} gate failed: {}", c.r.wave + 1, failing.join("; "));
        status.phase = "failed".into();
        status.message = reason.clone();
        return fail(app, &c, &reason, status).await;
    }
    status.phase = "passed".into();
    status.message = format!("wave {}/{} passed", c.r.wave + 1, c.waves.len());
    let metrics = serde_json::to_value(&status).unwrap_or_default();
    save_status(app, id, &status).await?;
    let summary = status.checks.iter().map(|k| format!("{} {}", k.gate, k.outcome)).collect::<Vec<_>>().join(", ");
    decide(
        app,
        id,
        "wave_passed",
        &format!(
            "wave {} ({} %) passed: {installed}/{n} installed; {summary}",
            c.r.wave + 1,
            c.waves[c.r.wave as usize]
        ),
        &metrics,
    )
    .await?;
    if c.r.wave as usize + 1 >= c.waves.len() {
        if app.store.update_rollout(id, state::RUNNING, state::COMPLETED, c.r.wave, c.r.wave_started_ms, now).await? {
            decide(
                app,
                id,
                "completed",
                &format!("{} {} reached 100 % of {kind} {value}", c.r.model_id, c.target.version),
                &metrics,
            )
            .await?;
        }
        return Ok(());
    }
    start_wave(app, &c, c.r.wave + 1).await
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.3}"))
}

async fn save_status(app: &App, id: &str, s: &Status) -> Result<(), RolloutError> {
    app.store.set_rollout_status(id, &serde_json::to_string(s).unwrap_or_default()).await?;
    Ok(())
}

/// Signs (or takes the offline) manifest of the target version for the
/// hardware ids of the target, keeping the rollout's release counter.
async fn target_manifest(app: &App, c: &Ctx, hardware: Vec<String>) -> Result<Vec<u8>, RolloutError> {
    if !app.signer.can_sign() {
        // Signed offline: distributed exactly as it was uploaded.
        return c
            .target
            .offline_manifest
            .clone()
            .ok_or(RolloutError::Registry(crate::registry::RegistryError::NoSigningKey));
    }
    let counter = match app.store.rollout_manifest(&c.r.id, false).await? {
        Some(old) => edgefleet_protocol::Signed::from_bytes(&old)
            .ok()
            .and_then(|s| s.decode::<edgefleet_protocol::Manifest>(edgefleet_protocol::Kind::Manifest).ok())
            .map(|m| m.release_counter),
        None => None,
    };
    let counter = match counter {
        Some(c) => c,
        None => app.store.next_counter().await? as u64,
    };
    let info = package_info(&c.target);
    let bytes = app.signer.sign(&Release {
        model_id: &c.r.model_id,
        version: &c.target.version,
        package: &info,
        counter,
        hardware_ids: hardware,
        rollout_id: &c.r.id,
        mode: if c.r.mode == "shadow" { Mode::Shadow } else { Mode::Live },
        expires: (now_ms() as u64 / 1000) + app.cfg.manifest_ttl.as_secs(),
    })?;
    app.store.set_rollout_manifest(&c.r.id, false, &bytes).await?;
    Ok(bytes)
}

/// Deterministic, well-mixed order of devices for a rollout (FNV-1a of id + device).
fn rank(rollout: &str, device: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in rollout.bytes().chain([0]).chain(device.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

async fn start_wave(app: &App, c: &Ctx, wave: i64) -> Result<(), RolloutError> {
    let id = &c.r.id;
    let now = now_ms();
    let targets = app.store.target_devices(&c.r.target_kind, &c.r.target_value).await?;
    let members: HashSet<String> = app.store.members(id).await?.into_iter().map(|m| m.device_id).collect();
    let pct = c.waves.get(wave as usize).copied().unwrap_or(100.0);
    let want = ((targets.len() as f64 * pct / 100.0).ceil() as usize).clamp(1, targets.len());
    let mut fresh: Vec<&(String, Option<String>, String)> =
        targets.iter().filter(|(d, _, _)| !members.contains(d)).collect();
    fresh.sort_by_key(|(d, _, _)| rank(id, d));
    fresh.truncate(want.saturating_sub(members.len()));
    let hardware: Vec<String> =
        targets.iter().map(|(_, _, h)| h.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let manifest = target_manifest(app, c, hardware).await?;
    let counter = edgefleet_protocol::Signed::from_bytes(&manifest)
        .ok()
        .and_then(|s| s.decode::<edgefleet_protocol::Manifest>(edgefleet_protocol::Kind::Manifest).ok())
        .map_or(0, |m| m.release_counter as i64);
    if !app.store.update_rollout(id, state::RUNNING, state::RUNNING, wave, now, now).await? {
        return Ok(()); // paused or aborted meanwhile
    }
    let ids: Vec<&str> = fresh.iter().map(|(d, _, _)| d.as_str()).collect();
    for batch in ids.chunks(500) {
        app.store.add_members(id, batch, wave, counter, &manifest, now).await?;
    }
    for dev in &ids {
        crate::server::republish(app, dev).await;
    }
    let status = Status {
        phase: "installing".into(),
        message: format!("wave {}/{} started", wave + 1, c.waves.len()),
        pending: fresh.len(),
        time_ms: now,
        ..Status::default()
    };
    save_status(app, id, &status).await?;
    decide(
        app,
        id,
        "wave_started",
        &format!(
            "wave {}/{}: {pct} % of {} devices = {want}, {} new member(s), release counter {counter}",
            wave + 1,
            c.waves.len(),
            targets.len(),
            fresh.len()
        ),
        &serde_json::json!({ "devices": fresh.iter().map(|(d, _, _)| d).collect::<Vec<_>>() }),
    )
    .await?;
    Ok(())
}

async fn fail(app: &App, c: &Ctx, reason: &str, status: Status) -> Result<(), RolloutError> {
    let metrics = serde_json::to_value(&status).unwrap_or_default();
    save_status(app, &c.r.id, &status).await?;
    decide(app, &c.r.id, "gate_failed", reason, &metrics).await?;
    if c.r.on_failure == "rollback" {
        match revert(app, c, state::RUNNING, state::ROLLED_BACK).await {
            Ok(n) => {
                decide(
                    app,
                    &c.r.id,
                    "rolled_back",
                    &format!("sent {} to {n} member(s): {reason}", version_name(c)),
                    &metrics,
                )
                .await?;
                return Ok(());
            }
            Err(why) => {
                decide(
                    app,
                    &c.r.id,
                    "rollback_impossible",
                    &format!("cannot roll back ({why}); pausing instead"),
                    &metrics,
                )
                .await?;
            }
        }
    }
    if app.store.update_rollout(&c.r.id, state::RUNNING, state::PAUSED, c.r.wave, c.r.wave_started_ms, now_ms()).await?
    {
        decide(app, &c.r.id, "paused", &format!("paused: {reason}"), &metrics).await?;
    }
    Ok(())
}

fn version_name(c: &Ctx) -> String {
    c.previous.as_ref().map_or("-".into(), |p| format!("{} {}", p.model_id, p.version))
}

/// Sends every member the previous version under a new release counter
/// and moves the rollout from `from` to `to`; returns how many members.
async fn revert(app: &App, c: &Ctx, from: &str, to: &str) -> Result<usize, String> {
    if c.r.mode == "shadow" {
        return Err("a shadow rollout never replaced the live model".into());
    }
    let Some(prev) = &c.previous else { return Err("no previous version of this model ran on the target".into()) };
    if !app.signer.can_sign() {
        return Err("no online release key to sign a rollback manifest".into());
    }
    let members = app.store.members(&c.r.id).await.map_err(|e| e.to_string())?;
    let mut hardware = BTreeSet::new();
    for m in &members {
        if let Ok(Some(k)) = app.store.device_keys(&m.device_id).await {
            hardware.insert(k.hardware_id);
        }
    }
    let counter = app.store.next_counter().await.map_err(|e| e.to_string())? as u64;
    let info = package_info(prev);
    let bytes = app
        .signer
        .sign(&Release {
            model_id: &prev.model_id,
            version: &prev.version,
            package: &info,
            counter,
            hardware_ids: hardware.into_iter().collect(),
            rollout_id: &c.r.id,
            mode: Mode::Live,
            expires: (now_ms() as u64 / 1000) + app.cfg.manifest_ttl.as_secs(),
        })
        .map_err(|e| e.to_string())?;
    app.store.set_rollout_manifest(&c.r.id, true, &bytes).await.map_err(|e| e.to_string())?;
    let now = now_ms();
    if !app
        .store
        .update_rollout(&c.r.id, from, to, c.r.wave, c.r.wave_started_ms, now)
        .await
        .map_err(|e| e.to_string())?
    {
        return Err(format!("the rollout is no longer {from}"));
    }
    for m in &members {
        app.store
            .set_member(&c.r.id, &m.device_id, member::REVERTING, Some(counter as i64), now)
            .await
            .map_err(|e| e.to_string())?;
        app.store.set_desired(&m.device_id, &bytes).await.map_err(|e| e.to_string())?;
        crate::server::republish(app, &m.device_id).await;
    }
    Ok(members.len())
}

/// A manual action on a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stop advancing.
    Pause,
    /// Continue the current wave (its install and soak timers restart).
    Resume,
    /// Stop for good and send members the previous version.
    Abort,
}

/// Applies a manual action.
///
/// # Errors
/// Unknown rollout, or the state does not allow it (409).
pub async fn act(app: &App, id: &str, action: Action, who: &str) -> Result<RolloutRow, RolloutError> {
    let c = load(app, id).await?;
    let now = now_ms();
    let conflict = |what: &str| RolloutError::Conflict(format!("rollout {id} is {}: cannot {what} it", c.r.state));
    match action {
        Action::Pause => {
            if !app.store.update_rollout(id, state::RUNNING, state::PAUSED, c.r.wave, c.r.wave_started_ms, now).await? {
                return Err(conflict("pause"));
            }
            decide(app, id, "paused", &format!("paused by {who}"), &serde_json::json!({})).await?;
        }
        Action::Resume => {
            let started = if c.r.wave_started_ms == 0 { 0 } else { now };
            if !app.store.update_rollout(id, state::PAUSED, state::RUNNING, c.r.wave, started, now).await? {
                return Err(conflict("resume"));
            }
            decide(
                app,
                id,
                "resumed",
                &format!("resumed by {who}: wave {} timers restart", c.r.wave + 1),
                &serde_json::json!({}),
            )
            .await?;
        }
        Action::Abort => {
            let from = c.r.state.clone();
            if from != state::RUNNING && from != state::PAUSED {
                return Err(conflict("abort"));
            }
            match revert(app, &c, &from, state::ABORTED).await {
                Ok(n) => {
                    decide(
                        app,
                        id,
                        "aborted",
                        &format!("aborted by {who}; sent {} to {n} member(s)", version_name(&c)),
                        &serde_json::json!({}),
                    )
                    .await?;
                }
                Err(why) => {
                    if !app.store.update_rollout(id, &from, state::ABORTED, c.r.wave, c.r.wave_started_ms, now).await? {
                        return Err(conflict("abort"));
                    }
                    decide(
                        app,
                        id,
                        "aborted",
                        &format!("aborted by {who}; members left as they are ({why})"),
                        &serde_json::json!({}),
                    )
                    .await?;
                }
            }
        }
    }
    Ok(app.store.rollout(id).await?)
}

/// Settles rollout memberships from a device event.
///
/// # Errors
/// Storage.
pub async fn on_event(app: &App, dev: &str, e: &Event) -> Result<(), StoreError> {
    let memberships = app.store.memberships(dev).await?;
    if memberships.is_empty() {
        return Ok(());
    }
    let now = now_ms();
    for (rid, status) in memberships {
        let r = app.store.rollout(&rid).await?;
        let target = app.store.version_by_id(r.version_id).await?;
        let previous = match r.previous_version_id {
            Some(p) => Some(app.store.version_by_id(p).await?),
            None => None,
        };
        let is_target = |m: &edgefleet_protocol::ModelRef| hex32(&m.package_sha256) == target.package_sha256;
        let active = r.state == state::RUNNING || r.state == state::PAUSED;
        let new = match e {
            Event::Installed { model, .. }
                if active && r.mode == "live" && is_target(model) && status != member::INSTALLED =>
            {
                Some(member::INSTALLED)
            }
            Event::Installed { model, .. }
                if status == member::REVERTING
                    && previous.as_ref().is_some_and(|p| hex32(&model.package_sha256) == p.package_sha256) =>
            {
                Some(member::REVERTED)
            }
            Event::ShadowStarted { candidate } if active && r.mode == "shadow" && is_target(candidate) => {
                Some(member::INSTALLED)
            }
            Event::RolledBack { model, .. } if active && is_target(model) => Some(member::FAILED),
            Event::UpdateRejected { model_id, version, rollout_id, .. }
                if active
                    && status == member::PENDING
                    && (*rollout_id == r.id || (*model_id == r.model_id && *version == target.version)) =>
            {
                Some(member::FAILED)
            }
            _ => None,
        };
        if let Some(s) = new {
            app.store.set_member(&rid, dev, s, None, now).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cohort_of(p95: u64, inferences: u64, errors: u64, psi: Option<f64>) -> Cohort {
        Cohort {
            devices: 3,
            windows: 9,
            inferences,
            errors,
            p95_us: Some(p95),
            drift_psi: psi,
            source: "t".into(),
            ..Cohort::default()
        }
    }

    fn outcome<'a>(checks: &'a [Check], gate: &str) -> &'a str {
        &checks.iter().find(|c| c.gate == gate).unwrap().outcome
    }

    #[test]
    fn healthy_canaries_pass() {
        let g = Gates::default();
        let checks = evaluate(&g, &cohort_of(3300, 1000, 0, Some(0.05)), &cohort_of(3100, 5000, 0, Some(0.04)));
        assert_eq!(outcome(&checks, "p95_latency_ratio"), "pass");
        assert_eq!(outcome(&checks, "drift_psi"), "pass");
        assert_eq!(outcome(&checks, "error_rate"), "pass");
        assert_eq!(outcome(&checks, "shadow_agreement"), "skipped");
    }

    #[test]
    fn latency_regression_fails() {
        let checks =
            evaluate(&Gates::default(), &cohort_of(6400, 1000, 0, Some(0.05)), &cohort_of(3100, 5000, 0, Some(0.04)));
        assert_eq!(outcome(&checks, "p95_latency_ratio"), "fail");
    }

    #[test]
    fn drift_fails_unless_the_control_drifts_too() {
        let g = Gates::default();
        let checks = evaluate(&g, &cohort_of(3000, 1000, 0, Some(0.6)), &cohort_of(3000, 5000, 0, Some(0.05)));
        assert_eq!(outcome(&checks, "drift_psi"), "fail");
        let checks = evaluate(&g, &cohort_of(3000, 1000, 0, Some(0.6)), &cohort_of(3000, 5000, 0, Some(0.55)));
        assert_eq!(outcome(&checks, "drift_psi"), "pass", "the data moved for everyone");
    }

    #[test]
    fn errors_and_missing_baselines() {
        let g = Gates::default();
        let checks = evaluate(&g, &cohort_of(3000, 1000, 50, None), &Cohort::default());
        assert_eq!(outcome(&checks, "error_rate"), "fail");
        assert_eq!(outcome(&checks, "p95_latency_ratio"), "skipped");
        assert_eq!(outcome(&checks, "drift_psi"), "skipped");
        let off = Gates {
            max_error_rate: None,
            max_p95_latency_ratio: None,
            max_drift_psi: None,
            min_shadow_agreement: None,
            ..g
        };
        assert!(evaluate(&off, &cohort_of(3000, 1000, 50, None), &Cohort::default()).is_empty());
    }

    #[test]
    fn shadow_agreement_gate() {
        let c = Cohort {
            shadow_inferences: 500,
            shadow_agreement: Some(0.7),
            shadow_p95_ratio: Some(1.1),
            ..cohort_of(3000, 500, 0, None)
        };
        let checks = evaluate(&Gates::default(), &c, &Cohort::default());
        assert_eq!(outcome(&checks, "shadow_agreement"), "fail");
        assert_eq!(outcome(&checks, "p95_latency_ratio"), "pass");
    }

    #[test]
    fn cohort_merges_latency_histograms_and_sketches() {
        let mut lat = LatencyStats::default();
        for us in [100u64, 110, 120, 4000] {
            lat.merge(&LatencyStats {
                count: 1,
                max_us: us,
                mean_us: us,
                buckets: vec![(edgefleet_protocol::latency_bucket(us), 1)],
                ..LatencyStats::default()
            });
        }
        let t = Telemetry { inferences: 4, errors: 1, latency: lat, ..Telemetry::default() };
        let c = cohort(&[("a".into(), t.clone()), ("b".into(), t)], None, None, "x");
        assert_eq!((c.devices, c.windows, c.inferences, c.errors), (2, 2, 8, 2));
        assert!(c.p95_us.unwrap() >= 4000, "{c:?}");
    }

    #[test]
    fn ranking_is_stable_and_spreads() {
        let mut ids: Vec<String> = (0..100).map(|i| format!("dev-{i:03}")).collect();
        ids.sort_by_key(|d| rank("ro-1", d));
        let first: Vec<_> = ids[..10].to_vec();
        ids.sort_by_key(|d| rank("ro-1", d));
        assert_eq!(first, ids[..10].to_vec());
        ids.sort_by_key(|d| rank("ro-2", d));
        assert_ne!(first, ids[..10].to_vec(), "another rollout picks other canaries");
    }
}
