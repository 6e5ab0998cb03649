//! Wiring: the shared [`App`] state, [`start`] (database, keys, broker,
//! MQTT session, rollout engine, housekeeping, HTTP), and what several parts
//! need: republishing what a device should hold, package and profile caches,
//! fleet health per model version, the drift webhook.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use edgefleet_protocol::profile::ReferenceProfile;
use edgefleet_protocol::{Signed, TrustStore, keyfile, topics};
use rumqttc::{AsyncClient, QoS};
use serde::Serialize;
use tokio::sync::oneshot;
use tracing::{info, warn};
use utoipa::ToSchema;

use crate::config::{Mqtt, ServerConfig};
use crate::metrics::{Metrics, labels};
use crate::registry::Signer;
use crate::store::Store;
use crate::util::{now_ms, random_hex, sha_hex};

/// Fleet health of one model version over the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, ToSchema)]
pub struct VersionHealth {
    /// Model.
    pub model: String,
    /// Version.
    pub version: String,
    /// Package SHA-256.
    pub package_sha256: String,
    /// Figures over the window (all devices running it).
    pub fleet: crate::rollout::Cohort,
    /// Since when fleet drift has been over the threshold (0: it is not).
    pub drift_over_since_ms: i64,
    /// When the retraining webhook fired for this episode (0: not yet).
    pub webhook_fired_ms: i64,
}

/// Shared server state.
pub struct App {
    /// Configuration.
    pub cfg: ServerConfig,
    /// Database (API, rollout engine, housekeeping).
    pub store: Store,
    /// The same database through a pool of its own for device traffic
    /// (uplinks, chunk requests, the broker's logins), so API calls never
    /// queue behind ingest for a connection.
    pub ingest: Store,
    /// Manifest signing and checking.
    pub signer: Signer,
    /// Metrics.
    pub metrics: Metrics,
    /// The server's MQTT session.
    pub mqtt: AsyncClient,
    /// Where devices connect (`host:port`).
    pub mqtt_addr: String,
    packages: Mutex<VecDeque<(String, Arc<Vec<u8>>)>>,
    profiles: Mutex<HashMap<String, Option<Arc<ReferenceProfile>>>>,
    /// Latest fleet health per version.
    pub health: RwLock<Vec<VersionHealth>>,
    /// Held while rollouts are evaluated: the engine loop and API calls that
    /// evaluate at once must not step the same rollout twice (the lease
    /// only keeps other replicas out).
    pub tick_lock: tokio::sync::Mutex<()>,
    /// Model and version of packages seen in telemetry (from the registry).
    pub known: Mutex<HashMap<String, Option<(String, String)>>>,
    /// Uplinks stored, counted in the background every [`COUNT_EVERY`]
    /// (-1: not yet): counting every stored uplink on each `GET /fleet` made
    /// it the slowest call with thousands of devices.
    pub uplinks_stored: std::sync::atomic::AtomicI64,
    /// The embedded broker, if the server runs one (stops with the app).
    pub broker: Option<edgefleet_broker::Broker>,
}

/// How often the background task counts stored uplinks.
pub const COUNT_EVERY: Duration = Duration::from_secs(2);

const PACKAGE_CACHE: usize = 8;

impl App {
    /// Model id and version of a package in the registry (cached), for
    /// metric labels: what devices report is not trusted for those.
    pub async fn registered(&self, sha: &str) -> Option<(String, String)> {
        if let Some(v) = self.known.lock().ok().and_then(|k| k.get(sha).cloned()) {
            return v;
        }
        let found = match self.store.version_by_sha(sha).await {
            Ok(v) => v.map(|v| (v.model_id, v.version)),
            Err(_) => return None,
        };
        if let Ok(mut k) = self.known.lock() {
            if k.len() > 10_000 {
                k.clear();
            }
            k.insert(sha.to_string(), found.clone());
        }
        found
    }

    /// A registered package's bytes (cached: chunk requests come in bursts).
    pub async fn package(&self, sha: &str) -> Option<Arc<Vec<u8>>> {
        if let Ok(c) = self.packages.lock()
            && let Some((_, p)) = c.iter().find(|(s, _)| s == sha)
        {
            return Some(p.clone());
        }
        let bytes = Arc::new(self.store.package(sha).await.ok().flatten()?);
        if let Ok(mut c) = self.packages.lock() {
            c.push_front((sha.to_string(), bytes.clone()));
            c.truncate(PACKAGE_CACHE);
        }
        Some(bytes)
    }

    /// A registered package's reference profile.
    pub async fn profile(&self, sha: &str) -> Option<Arc<ReferenceProfile>> {
        if let Ok(c) = self.profiles.lock()
            && let Some(p) = c.get(sha)
        {
            return p.clone();
        }
        let bytes = self.package(sha).await?;
        let p = crate::registry::profile(&bytes).map(Arc::new);
        if let Ok(mut c) = self.profiles.lock() {
            c.insert(sha.to_string(), p.clone());
        }
        p
    }
}

/// Sends a device the manifest it should hold (sealed, retained).
pub async fn republish(app: &App, dev: &str) {
    match app.store.desired(dev).await {
        Ok(Some(m)) => {
            if let Err(e) =
                crate::mqtt::send_sealed(app, dev, &topics::device_manifest(dev), &m, QoS::AtLeastOnce, true).await
            {
                warn!("manifest to {dev}: {e}");
            }
        }
        Ok(None) => {}
        Err(e) => warn!("manifest for {dev}: {e}"),
    }
}

/// Publishes the root and every device's manifest (after a (re)connect).
pub async fn republish_all(app: &App) {
    if let Some(root) = app.signer.root().and_then(|r| r.to_bytes().ok()) {
        let _ = app.mqtt.publish(topics::root(), QoS::AtLeastOnce, true, root).await;
    }
    match app.store.device_ids().await {
        Ok(ids) => {
            for d in ids {
                republish(app, &d).await;
            }
        }
        Err(e) => warn!("listing devices: {e}"),
    }
}

/// A running server.
pub struct Running {
    /// HTTP address.
    pub http: SocketAddr,
    /// MQTT `host:port` devices connect to.
    pub mqtt: String,
    /// State (for embedding and tests).
    pub app: Arc<App>,
    /// The API token created on first start, if this start created one.
    pub new_admin_token: Option<PathBuf>,
    stop: Option<oneshot::Sender<()>>,
    http_task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops serving HTTP (in-flight requests finish) and returns.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.http_task).await;
    }

    /// Serves until `signal` completes, then shuts down.
    pub async fn serve_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        info!("shutting down");
        self.shutdown().await;
    }
}

fn existing(explicit: &Option<PathBuf>, dir: &Path, name: &str) -> Option<PathBuf> {
    explicit.clone().or_else(|| Some(dir.join(name)).filter(|p| p.exists()))
}

/// Starts everything; returns once the server listens.
///
/// # Errors
/// Unusable data directory, database, key or root file; a taken port.
pub async fn start(mut cfg: ServerConfig) -> Result<Running> {
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    if cfg.replica.is_empty() {
        cfg.replica = random_hex(4)?;
    }
    let store =
        Store::connect(&cfg.database_url()).await.with_context(|| format!("database {}", cfg.database_url()))?;

    let key = match existing(&cfg.release_key, &cfg.data_dir, "release.key") {
        Some(p) => Some(keyfile::read_secret(&p).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let trust = match existing(&cfg.root, &cfg.data_dir, "root.signed") {
        Some(p) => {
            let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
            let signed = Signed::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            Some(
                TrustStore::from_pinned(signed)
                    .map_err(|e| anyhow::anyhow!("{}: not a valid root: {e}", p.display()))?,
            )
        }
        None => None,
    };
    if key.is_none() {
        warn!("no release key: only versions uploaded with an offline-signed manifest can be rolled out");
    }
    let signer = Signer::new(key, trust).map_err(anyhow::Error::msg)?;

    let now = now_ms();
    if let Some(t) = &cfg.api_token {
        store.insert_token(&sha_hex(t.as_bytes()), "configured", now).await?;
    }
    let mut new_admin_token = None;
    if store.token_count().await? == 0 {
        let token = random_hex(32)?;
        let path = cfg.data_dir.join("admin.token");
        keyfile::write_new(&path, &format!("{token}\n"), true)
            .map_err(|e| anyhow::anyhow!("{e}: remove it or pass --api-token"))?;
        store.insert_token(&sha_hex(token.as_bytes()), "admin", now).await?;
        info!("API token written to {}", path.display());
        new_admin_token = Some(path);
    }

    let ingest = store.second_pool(if store.backend() == crate::store::Backend::Sqlite { 4 } else { 8 }).await?;
    let secret = random_hex(32)?;
    let (embedded, broker, mqtt_addr) = match &cfg.mqtt {
        Mqtt::Embedded { listen } => {
            let b = crate::mqtt::start_embedded(*listen, ingest.clone(), secret.clone()).await?;
            let addr = b.local_addr();
            (Some(b), addr, addr.to_string())
        }
        Mqtt::External { url } => {
            let (h, p, _) = crate::config::parse_mqtt_url(url).map_err(anyhow::Error::msg)?;
            (None, ([0, 0, 0, 0], p).into(), format!("{h}:{p}"))
        }
    };
    let opts = crate::mqtt::client_options(&cfg.mqtt, broker, &cfg.replica, &secret)?;
    let (client, eventloop) = crate::mqtt::client(opts);
    let external = matches!(cfg.mqtt, Mqtt::External { .. });
    let listener = tokio::net::TcpListener::bind(cfg.http_listen)
        .await
        .with_context(|| format!("HTTP listen address {}", cfg.http_listen))?;
    let http = listener.local_addr()?;
    let app = Arc::new(App {
        cfg,
        store,
        ingest,
        signer,
        metrics: Metrics::default(),
        mqtt: client,
        mqtt_addr: mqtt_addr.clone(),
        packages: Mutex::default(),
        profiles: Mutex::default(),
        health: RwLock::default(),
        tick_lock: tokio::sync::Mutex::new(()),
        known: Mutex::default(),
        uplinks_stored: std::sync::atomic::AtomicI64::new(-1),
        broker: embedded,
    });
    tokio::spawn(crate::mqtt::run(app.clone(), eventloop, external));
    let counter = app.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(COUNT_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Ok(n) = counter.store.uplink_count().await {
                counter.uplinks_stored.store(n, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let engine = app.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(engine.cfg.tick);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Fleet health decodes every telemetry window of the last `window`:
        // six times per window, at most every 10 s, at least every tick.
        let house_every = (engine.cfg.window / 6).min(Duration::from_secs(10)).max(engine.cfg.tick);
        let mut last_house: Option<std::time::Instant> = None;
        loop {
            every.tick().await;
            crate::rollout::tick(&engine).await;
            if last_house.is_none_or(|t| t.elapsed() >= house_every) {
                housekeeping(&engine).await;
                last_house = Some(std::time::Instant::now());
            }
        }
    });
    let router = crate::api::router(app.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let http_task = tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = stopped.await;
        });
        if let Err(e) = serve.await {
            warn!("HTTP server: {e}");
        }
    });
    info!(%http, mqtt = %mqtt_addr, replica = %app.cfg.replica, database = ?app.store.backend(), "edgefleet server up");
    Ok(Running { http, mqtt: mqtt_addr, app, new_admin_token, stop: Some(stop), http_task })
}

/// Copies the embedded broker's counters into the metrics (before each scrape).
pub fn broker_metrics(app: &App) {
    let (Some(b), m) = (&app.broker, &app.metrics) else { return };
    let s = b.stats();
    m.broker_clients.set(i64::try_from(s.connections).unwrap_or(i64::MAX));
    m.broker_overflows.inc_by(s.overflows.saturating_sub(m.broker_overflows.get()));
    m.broker_denied.inc_by(s.denied.saturating_sub(m.broker_denied.get()));
}

/// Refreshes fleet gauges and health, and runs the drift alerts.
pub async fn housekeeping(app: &App) {
    if let Err(e) = refresh(app).await {
        warn!("housekeeping: {e}");
    }
}

async fn refresh(app: &App) -> Result<()> {
    let now = now_ms();
    let window = app.cfg.window.as_millis() as i64;
    let m = &app.metrics;
    m.devices.clear();
    m.devices_online.clear();
    for (platform, n, online) in app.store.fleet_by_platform(now - window).await? {
        m.devices.get_or_create(&labels(&[("platform", &platform)])).set(n);
        m.devices_online.get_or_create(&labels(&[("platform", &platform)])).set(online);
    }
    m.rollouts.clear();
    for (state, n) in app.store.rollout_states().await? {
        m.rollouts.get_or_create(&labels(&[("state", &state)])).set(n);
    }
    let mut health = Vec::new();
    m.latency_p95_seconds.clear();
    m.drift_psi.clear();
    for (model, version, sha) in app.store.versions_with_telemetry(now - window).await? {
        let rows = app.store.telemetry_between(Some(&sha), now - window, now).await?;
        let profile = app.profile(&sha).await;
        let fleet = crate::rollout::cohort_off_thread(rows, None, profile, None, "fleet").await;
        let l = labels(&[("model", &model), ("version", &version)]);
        if let Some(p95) = fleet.p95_us {
            m.latency_p95_seconds.get_or_create(&l).set(p95 as f64 / 1e6);
        }
        if let Some(psi) = fleet.drift_psi {
            m.drift_psi.get_or_create(&l).set(psi);
        }
        let (since, fired) = drift_alert(app, &model, &version, &sha, &fleet, now).await?;
        health.push(VersionHealth {
            model,
            version,
            package_sha256: sha,
            fleet,
            drift_over_since_ms: since,
            webhook_fired_ms: fired,
        });
    }
    if let Ok(mut h) = app.health.write() {
        *h = health;
    }
    Ok(())
}

async fn drift_alert(
    app: &App,
    model: &str,
    version: &str,
    sha: &str,
    fleet: &crate::rollout::Cohort,
    now: i64,
) -> Result<(i64, i64)> {
    let over = fleet.drift_psi.is_some_and(|p| p > app.cfg.drift_threshold);
    let current = app.store.drift_alert(model, version).await?;
    if !over {
        if current.is_some() {
            app.store.set_drift_alert(model, version, None).await?;
        }
        return Ok((0, 0));
    }
    let (since, fired) = match current {
        Some(s) => s,
        None => {
            app.store.set_drift_alert(model, version, Some((now, 0))).await?;
            (now, 0)
        }
    };
    if fired != 0 || now - since < app.cfg.drift_for.as_millis() as i64 {
        return Ok((since, fired));
    }
    let Some(url) = app.cfg.webhook.clone() else { return Ok((since, 0)) };
    if !app.store.claim_drift_fire(model, version, now).await? {
        return Ok((since, fired));
    }
    let body = serde_json::json!({
        "event": "drift",
        "model": model,
        "version": version,
        "package_sha256": sha,
        "psi": fleet.drift_psi,
        "threshold": app.cfg.drift_threshold,
        "over_since_ms": since,
        "over_for_s": (now - since) / 1000,
        "devices": fleet.devices,
        "inferences": fleet.inferences,
    });
    match crate::webhook::post_json(&url, &body).await {
        Ok(()) => {
            info!(model, version, "retraining webhook fired");
            app.metrics.webhooks.get_or_create(&labels(&[("outcome", "sent")])).inc();
            Ok((since, now))
        }
        Err(e) => {
            warn!(model, version, "retraining webhook failed (retried next time): {e}");
            app.metrics.webhooks.get_or_create(&labels(&[("outcome", "failed")])).inc();
            app.store.set_drift_alert(model, version, Some((since, 0))).await?;
            Ok((since, 0))
        }
    }
}
