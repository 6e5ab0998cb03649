//! The daemon: wires the store, the update machine, the engine, MQTT and the
//! local API together. Tasks only move bytes: every decision is made by
//! [`crate::update::Machine`] (updates) or [`crate::engine::Engine`] (models).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use edgefleet_protocol::{
    ChunkResponse, DeviceInfo, Event, Health, Kind, Manifest, Mode, Payload, SecretKey, Signed, TrustStore, Uplink,
    UplinkAck, topics,
};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::api::{ApiState, Status, router};
use crate::config::Config;
use crate::engine::{Engine, Loaded};
use crate::store::{BootState, DownloadRecord, Installed as SlotRecord, Store};
use crate::update::{Action, Input, Installed, Machine, model_ref, unix_now};

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn hex(b: &[u8; 32]) -> String {
    edgefleet_protocol::hex32(b)
}

/// Messages from the MQTT task to the main loop.
enum Net {
    Connected,
    Disconnected,
    Publish(String, Vec<u8>),
}

/// Spooled uplinks resent per round (see [`Uplinker::resend`]).
const RESEND_WINDOW: usize = 32;

/// Signs, spools and publishes uplinks; forgets them when the server
/// acknowledges them ([`UplinkAck`]), resends them otherwise.
struct Uplinker {
    device_id: String,
    key: SecretKey,
    store: Store,
    client: AsyncClient,
    limit: usize,
    connected: bool,
    /// When each spooled uplink was last handed to the client.
    sent: HashMap<u64, Instant>,
    /// How long an uplink waits for the server's acknowledgement before it
    /// is sent again (the server deduplicates by sequence number).
    resend_after: Duration,
    /// What the spool directory holds, kept in memory (read from disk once
    /// at start): listing the directory per uplink cost more than the rest
    /// of sending once thousands of agents share a machine.
    spooled: std::collections::BTreeSet<u64>,
    /// The last sequence number reserved.
    last_seq: u64,
}

impl Uplinker {
    async fn send(&mut self, payload: Payload) -> Result<()> {
        let seq = self.last_seq + 1;
        self.store.set_seq(seq)?;
        self.last_seq = seq;
        let up = Uplink { device_id: self.device_id.clone(), seq, time_ms: now_ms(), payload };
        let bytes = Signed::sign(Kind::Uplink, &up, &[&self.key])?.to_bytes()?;
        if self.spooled.len() >= self.limit
            && let Some(oldest) = self.spooled.pop_first()
        {
            warn!(dropped = oldest, "telemetry spool full: dropping the oldest uplink");
            self.store.unspool(oldest);
            self.sent.remove(&oldest);
        }
        self.store.spool(seq, &bytes)?;
        self.spooled.insert(seq);
        if self.connected {
            self.publish(seq, bytes);
        }
        Ok(())
    }

    /// Hands an uplink to the MQTT client without waiting: if its queue is
    /// full the uplink stays spooled and goes out with the next resend.
    fn publish(&mut self, seq: u64, bytes: Vec<u8>) {
        if self.client.try_publish(topics::uplink(&self.device_id), QoS::AtLeastOnce, false, bytes).is_ok() {
            self.sent.insert(seq, Instant::now());
        }
    }

    /// Sends spooled uplinks not acknowledged yet, oldest first and at most
    /// [`RESEND_WINDOW`] per round: all of those on (re)connect (`all`),
    /// else those waiting longer than `resend_after`. The window keeps a
    /// device that was offline for hours (or a server that fell behind)
    /// from being flooded with its whole spool at once; the rest follows
    /// as acknowledgements come back.
    fn resend(&mut self, all: bool) -> Result<()> {
        if !self.connected {
            return Ok(());
        }
        let window: Vec<u64> = self.spooled.iter().take(RESEND_WINDOW).copied().collect();
        for seq in window {
            if !all && self.sent.get(&seq).is_some_and(|t| t.elapsed() < self.resend_after) {
                continue;
            }
            match self.store.spooled(seq) {
                Ok(bytes) => self.publish(seq, bytes),
                Err(e) => {
                    // Gone from disk (removed by hand?): nothing left to send.
                    warn!(seq, "spooled uplink unreadable, forgotten: {e:#}");
                    self.spooled.remove(&seq);
                }
            }
        }
        Ok(())
    }

    /// The server stored these.
    fn acked(&mut self, ack: &UplinkAck) {
        debug!(seqs = ?ack.seqs, "server acknowledged uplinks");
        for seq in &ack.seqs {
            if self.spooled.remove(seq) {
                self.store.unspool(*seq);
            }
            self.sent.remove(seq);
        }
    }
}

/// Runs the agent until `shutdown` resolves. An update in flight completes
/// (or rolls back) before it returns.
///
/// # Errors
/// Start-up failures (unreadable state, no root of trust, API address in use).
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<()> {
    run_inner(cfg, shutdown, None).await
}

/// A running agent's models and status, for hosts that embed the agent in
/// their own process (an app, the fleet simulator) and call it directly
/// instead of over the local HTTP API: the same engine, monitoring and
/// telemetry as API calls.
#[derive(Clone)]
pub struct Handle {
    state: ApiState,
}

impl Handle {
    /// One inference on the live model (and the shadow candidate, if any),
    /// measured like an API call. Blocking: call it off the async threads.
    ///
    /// # Errors
    /// No model live yet, or an input the model does not take.
    pub fn infer(&self, input: &crate::engine::InferInput) -> Result<crate::engine::Prediction> {
        self.state.engine.lock().map_err(|_| anyhow!("engine poisoned"))?.infer(input)
    }

    /// The live model, if any.
    pub fn live(&self) -> Option<edgefleet_protocol::ModelRef> {
        self.state.engine.lock().ok().and_then(|e| e.live().cloned())
    }

    /// Connection, download and spool status.
    pub fn status(&self) -> Status {
        self.state.status.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// As [`run`], for an agent embedded in another process: `ready` receives
/// the [`Handle`] once the models are loaded. With an empty
/// `cfg.api.listen` no local HTTP API is opened.
///
/// # Errors
/// As [`run`].
pub async fn run_embedded(
    cfg: Config,
    shutdown: impl Future<Output = ()>,
    ready: tokio::sync::oneshot::Sender<Handle>,
) -> Result<()> {
    run_inner(cfg, shutdown, Some(ready)).await
}

async fn run_inner(
    cfg: Config,
    shutdown: impl Future<Output = ()>,
    ready: Option<tokio::sync::oneshot::Sender<Handle>>,
) -> Result<()> {
    let started = Instant::now();
    let store = Store::open(&cfg.state_dir)?;
    let trust = load_trust(&store, &cfg)?;
    let key = store.device_key()?;
    info!(device = %cfg.device_id, key = %key.public().id(), root_version = trust.root().version, "agent starting");

    // Boot: recover from an interrupted health check, load what is live.
    let mut boot = store.boot()?;
    let mut startup_events = Vec::new();
    let recovered = boot.trial;
    if boot.trial {
        let failed = boot.active.take();
        boot.active = boot.previous.take();
        boot.trial = false;
        if let Some(f) = &failed {
            let sha = hex(&f.model.package_sha256);
            let attempts = match boot.trial_attempts.iter_mut().find(|(s, _)| *s == sha) {
                Some(e) => {
                    e.1 += 1;
                    e.1
                }
                None => {
                    boot.trial_attempts.push((sha.clone(), 1));
                    1
                }
            };
            if attempts >= cfg.update.max_interrupted_health_checks {
                boot.failed.push(sha);
            }
            warn!(model = %f.model.version, attempts, "agent stopped during a health check: rolled back");
            startup_events.push(Event::RolledBack {
                model: f.model.clone(),
                reason: format!("the agent stopped during the health check (attempt {attempts})"),
            });
        }
        store.write_boot(&boot)?;
    }
    let engine = Arc::new(Mutex::new(Engine::new(cfg.telemetry.min_drift_inferences, now_ms())));
    let open_slot =
        |rec: &SlotRecord| -> Result<Loaded> { Loaded::open(&store.read_slot(&rec.slot)?, rec.model.clone()) };
    for rec in [boot.active.clone(), boot.previous.clone()].into_iter().flatten() {
        match open_slot(&rec) {
            Ok(m) => {
                info!(model = %m.info.model_id, version = %m.info.version, "serving");
                lock(&engine)?.set_live(m, now_ms());
                break;
            }
            Err(e) => error!(slot = %rec.slot, "cannot load: {e:#}"),
        }
    }
    if let Some(rec) = &boot.shadow
        && let Ok(m) = open_slot(rec)
    {
        lock(&engine)?.set_shadow(Some(m));
    }
    startup_events.push(Event::Started { live: lock(&engine)?.live().cloned(), recovered });

    let installed = installed_from(&boot);
    let mut machine = Machine::new(trust, cfg.hardware_id.clone(), installed, cfg.update.chunk_size);

    // Local API.
    let status = Arc::new(Mutex::new(Status { device_id: cfg.device_id.clone(), ..Status::default() }));
    let state = ApiState { engine: engine.clone(), status: status.clone() };
    if let Some(r) = ready {
        let _ = r.send(Handle { state: state.clone() });
    }
    let (api_stop_tx, api_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let api = if cfg.api.listen.is_empty() {
        None
    } else {
        let listener = tokio::net::TcpListener::bind(&cfg.api.listen)
            .await
            .with_context(|| format!("binding the local API to {}", cfg.api.listen))?;
        let addr = listener.local_addr()?;
        store.write_api_addr(&addr.to_string())?;
        info!(%addr, "local API listening");
        let app = router(state);
        Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = api_stop_rx.await;
                })
                .await;
        }))
    };

    // MQTT.
    let mut opts = MqttOptions::new(cfg.device_id.clone(), cfg.mqtt.host.clone(), cfg.mqtt.port);
    opts.set_keep_alive(Duration::from_secs(cfg.mqtt.keep_alive_s.max(5)));
    opts.set_max_packet_size(cfg.mqtt.max_packet_bytes, cfg.mqtt.max_packet_bytes);
    if let Some(pw) = &cfg.mqtt.password {
        opts.set_credentials(cfg.mqtt.username.clone().unwrap_or_else(|| cfg.device_id.clone()), pw.0.clone());
    }
    #[cfg(feature = "tls")]
    if cfg.mqtt.tls {
        opts.set_transport(crate::tls::transport(cfg.mqtt.ca_file.as_deref())?);
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let (net_tx, mut net_rx) = mpsc::channel::<Net>(256);
    let subscriptions: Vec<String> = [
        topics::device_manifest(&cfg.device_id),
        topics::chunk_response(&cfg.device_id),
        topics::uplink_ack(&cfg.device_id),
        topics::root(),
    ]
    .into_iter()
    .chain(cfg.groups.iter().map(|g| topics::group_manifest(g)))
    .collect();
    let sub_client = client.clone();
    let mqtt = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            match eventloop.poll().await {
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(200);
                    for t in &subscriptions {
                        let _ = sub_client.subscribe(t.clone(), QoS::AtLeastOnce).await;
                    }
                    if net_tx.send(Net::Connected).await.is_err() {
                        break;
                    }
                }
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    if net_tx.send(Net::Publish(p.topic.clone(), p.payload.to_vec())).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    debug!("mqtt: {e}");
                    if net_tx.send(Net::Disconnected).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    });

    let mut up = Uplinker {
        device_id: cfg.device_id.clone(),
        key,
        store: store.clone(),
        client: client.clone(),
        limit: cfg.telemetry.spool_limit,
        connected: false,
        sent: HashMap::new(),
        resend_after: Duration::from_millis(cfg.telemetry.resend_after_ms),
        spooled: store.spooled_seqs()?.into_iter().collect(),
        last_seq: store.last_seq()?,
    };
    for e in startup_events {
        up.send(Payload::Event(e)).await?;
    }

    let downlink_key = cfg.downlink_key();
    let (install_tx, mut install_rx) = mpsc::channel::<Result<u64, String>>(1);
    let mut chunk_deadline: Option<tokio::time::Instant> = None;
    let mut telemetry = tokio::time::interval(Duration::from_millis(cfg.telemetry.interval_ms));
    telemetry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    telemetry.tick().await;
    let ctx =
        Ctx { cfg: &cfg, store: &store, engine: &engine, status: &status, client: &client, install_tx: &install_tx };

    // Resume a download recorded by an earlier run.
    if let Some((rec, data)) = store.download()? {
        info!(bytes = data.len(), "resuming a download");
        let actions =
            machine.handle(Input::Resume { manifest: rec.manifest, chunk_size: rec.chunk_size, data, now: unix_now() });
        ctx.execute(actions, &mut machine, &mut up, &mut chunk_deadline).await?;
    }

    tokio::pin!(shutdown);
    let mut stopping = false;
    loop {
        let deadline = chunk_deadline;
        tokio::select! {
            _ = &mut shutdown, if !stopping => {
                info!("shutting down");
                stopping = true;
                if !machine.installing() {
                    break;
                }
                info!("waiting for the update in flight to finish");
            }
            Some(result) = install_rx.recv() => {
                let actions = machine.handle(Input::Installed { result, now: unix_now() });
                ctx.execute(actions, &mut machine, &mut up, &mut chunk_deadline).await?;
                if stopping && !machine.installing() {
                    break;
                }
            }
            Some(msg) = net_rx.recv() => {
                let actions = match msg {
                    Net::Connected => {
                        info!("connected to the broker");
                        lock(&status)?.connected = true;
                        up.connected = true;
                        up.resend(true)?;
                        let info = device_info(&cfg, &engine)?;
                        up.send(Payload::Hello(info)).await?;
                        machine.handle(Input::Connected)
                    }
                    Net::Disconnected => {
                        if up.connected {
                            warn!("lost the broker; uplinks are spooled until it is back");
                        }
                        lock(&status)?.connected = false;
                        up.connected = false;
                        Vec::new()
                    }
                    Net::Publish(topic, payload) => {
                        // Device topics are sealed with the downlink key when one is set.
                        let own = matches!(
                            topics::parse(&topic),
                            Some(topics::Topic::DeviceManifest(_) | topics::Topic::ChunkResponse(_) | topics::Topic::UplinkAck(_))
                        );
                        let payload = match (downlink_key, own) {
                            (Some(k), true) => match edgefleet_protocol::seal::open(&k, &topic, &payload) {
                                Ok(p) => Some(p),
                                Err(e) => { warn!(%topic, "ignored a downlink: {e}"); None }
                            },
                            _ => Some(payload),
                        };
                        match payload.map(|payload| (topics::parse(&topic), payload)) {
                        None => Vec::new(),
                        Some((parsed, payload)) => match parsed {
                        Some(topics::Topic::DeviceManifest(_) | topics::Topic::GroupManifest(_)) if !stopping => {
                            machine.handle(Input::Manifest { bytes: payload, now: unix_now() })
                        }
                        Some(topics::Topic::Root) => machine.handle(Input::Root { bytes: payload, now: unix_now() }),
                        Some(topics::Topic::UplinkAck(_)) => {
                            if let Ok(ack) = postcard::from_bytes::<UplinkAck>(&payload) {
                                up.acked(&ack);
                            }
                            Vec::new()
                        }
                        Some(topics::Topic::ChunkResponse(_)) => match postcard::from_bytes::<ChunkResponse>(&payload) {
                            Ok(resp) => machine.handle(Input::Chunk(resp)),
                            Err(_) => { warn!("malformed chunk response ignored"); Vec::new() }
                        },
                        _ => Vec::new(),
                    },
                        }
                    }
                };
                ctx.execute(actions, &mut machine, &mut up, &mut chunk_deadline).await?;
            }
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() => {
                chunk_deadline = None;
                let actions = machine.handle(Input::Timeout);
                ctx.execute(actions, &mut machine, &mut up, &mut chunk_deadline).await?;
            }
            _ = telemetry.tick() => {
                let health = Health {
                    uptime_s: started.elapsed().as_secs(),
                    rss_bytes: rss_bytes(),
                    downloading: machine.progress().is_some() as u8,
                };
                let t = lock(&engine)?.telemetry(now_ms(), health);
                let drift = t.drift.map(|d| d.psi);
                up.send(Payload::Telemetry(Box::new(t))).await?;
                if let Some(psi) = drift.filter(|&p| p > cfg.telemetry.drift_threshold) {
                    warn!(psi, "input drift");
                    up.send(Payload::Event(Event::DriftDetected { psi, threshold: cfg.telemetry.drift_threshold })).await?;
                }
                up.resend(false)?;
                lock(&status)?.spooled = up.spooled.len();
            }
        }
    }
    let _ = client.disconnect().await;
    mqtt.abort();
    let _ = api_stop_tx.send(());
    if let Some(api) = api {
        let _ = api.await;
    }
    info!("stopped");
    Ok(())
}

/// The saved (rotated) root, else the pinned one from the configuration.
fn load_trust(store: &Store, cfg: &Config) -> Result<TrustStore> {
    let pinned = match store.trusted_root() {
        Some(b) => b,
        None => std::fs::read(&cfg.root_of_trust)
            .with_context(|| format!("reading the root of trust {}", cfg.root_of_trust.display()))?,
    };
    TrustStore::from_pinned(Signed::from_bytes(&pinned)?).map_err(|e| anyhow!("root of trust: {e}"))
}

fn installed_from(boot: &BootState) -> Installed {
    Installed {
        counter: boot.installed_counter,
        live: boot.active.as_ref().map(|a| a.model.package_sha256),
        shadow: boot.shadow.as_ref().map(|a| a.model.package_sha256),
        failed: boot.failed.iter().filter_map(|h| edgefleet_protocol::parse_hex32(h)).collect(),
    }
}

/// Installs a package from local files (factory provisioning, or an update
/// carried on a USB stick) through exactly the path an over-the-air update
/// takes: the manifest is verified against the root of trust, the package
/// streamed through the same checks, written to the inactive slot, swapped,
/// health-checked, committed or rolled back. Returns what happened.
///
/// # Errors
/// The update is rejected (the reason is the device's), or the state
/// directory needs a normal start first (an interrupted health check).
pub fn install_local(cfg: &Config, package: &[u8], manifest: &[u8]) -> Result<Event> {
    let store = Store::open(&cfg.state_dir)?;
    let trust = load_trust(&store, cfg)?;
    let boot = store.boot()?;
    if boot.trial {
        anyhow::bail!("an earlier health check was interrupted: start the agent once to roll back first");
    }
    let engine = Mutex::new(Engine::new(cfg.telemetry.min_drift_inferences, now_ms()));
    let mut machine = Machine::new(trust, cfg.hardware_id.clone(), installed_from(&boot), cfg.update.chunk_size);
    let mut queue: std::collections::VecDeque<Action> =
        machine.handle(Input::Manifest { bytes: manifest.to_vec(), now: unix_now() }).into();
    let mut outcome = None;
    while let Some(a) = queue.pop_front() {
        let next = match a {
            Action::StartDownload { manifest, chunk_size } => {
                store.start_download(&DownloadRecord { manifest, chunk_size })?;
                Vec::new()
            }
            Action::RequestChunk(req) => {
                // The bytes of the file, whatever the manifest says: the machine checks them.
                let start = (req.index as usize).saturating_mul(req.chunk_size as usize).min(package.len());
                let end = start.saturating_add(req.chunk_size as usize).min(package.len());
                let data = package[start..end].to_vec();
                let status = if data.is_empty() {
                    edgefleet_protocol::ChunkStatus::BadRequest
                } else {
                    edgefleet_protocol::ChunkStatus::Ok
                };
                machine.handle(Input::Chunk(ChunkResponse {
                    package_sha256: req.package_sha256,
                    index: req.index,
                    status,
                    data,
                }))
            }
            Action::AppendChunk(bytes) => {
                store.append_chunk(&bytes)?;
                Vec::new()
            }
            Action::Install { manifest, signed } => {
                let budget = cfg.update.latency_budget_ms * 1000;
                let (events, result) = install(&store, &engine, &manifest, signed, budget)?;
                outcome = events.into_iter().next();
                machine.handle(Input::Installed { result, now: unix_now() })
            }
            Action::DiscardDownload => {
                store.clear_download()?;
                Vec::new()
            }
            Action::Report(e @ Event::UpdateRejected { .. }) => {
                let Event::UpdateRejected { reason, .. } = &e else { unreachable!() };
                anyhow::bail!("update rejected: {reason}");
            }
            Action::Report(_) | Action::SaveRoot(_) => Vec::new(),
            Action::Adopt { manifest, signed } => {
                let mut boot = store.boot()?;
                let previous = boot.active.as_ref().map(|a| a.model.clone());
                if let Some(active) = boot.active.as_mut() {
                    active.model = model_ref(&manifest);
                    active.manifest = signed;
                }
                boot.installed_counter = manifest.release_counter;
                store.write_boot(&boot)?;
                outcome = Some(Event::Installed { model: model_ref(&manifest), previous, selftest_us: 0 });
                Vec::new()
            }
        };
        queue.extend(next);
    }
    outcome.context("nothing to install: this package is already live")
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    m.lock().map_err(|_| anyhow!("a task panicked while holding a lock"))
}

fn device_info(cfg: &Config, engine: &Mutex<Engine>) -> Result<DeviceInfo> {
    let e = lock(engine)?;
    Ok(DeviceInfo {
        platform: cfg.platform()?,
        hardware_id: cfg.hardware_id.clone(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        runtime_version: format!(
            "{}.{}",
            edgefleet_runtime::format::VERSION_MAJOR,
            edgefleet_runtime::format::VERSION_MINOR
        ),
        memory_bytes: total_memory(),
        groups: cfg.groups.clone(),
        live: e.live().cloned(),
        shadow: e.shadow().cloned(),
    })
}

struct Ctx<'a> {
    cfg: &'a Config,
    store: &'a Store,
    engine: &'a Arc<Mutex<Engine>>,
    status: &'a Arc<Mutex<Status>>,
    client: &'a AsyncClient,
    install_tx: &'a mpsc::Sender<Result<u64, String>>,
}

impl Ctx<'_> {
    async fn execute(
        &self,
        actions: Vec<Action>,
        machine: &mut Machine,
        up: &mut Uplinker,
        chunk_deadline: &mut Option<tokio::time::Instant>,
    ) -> Result<()> {
        for a in actions {
            match a {
                Action::SaveRoot(bytes) => self.store.save_root(&bytes)?,
                Action::StartDownload { manifest, chunk_size } => {
                    if let Some((model, _, total)) = machine.progress() {
                        info!(model = %model.model_id, version = %model.version, bytes = total, "downloading");
                    }
                    if let Err(e) = self.store.start_download(&DownloadRecord { manifest, chunk_size }) {
                        error!("cannot record the download: {e:#}");
                    }
                }
                Action::RequestChunk(req) => {
                    let bytes = postcard::to_allocvec(&req)?;
                    self.client
                        .publish(topics::chunk_request(&self.cfg.device_id), QoS::AtMostOnce, false, bytes)
                        .await
                        .context("queueing a chunk request")?;
                    *chunk_deadline =
                        Some(tokio::time::Instant::now() + Duration::from_millis(self.cfg.update.chunk_timeout_ms));
                }
                Action::AppendChunk(bytes) => {
                    if let Err(e) = self.store.append_chunk(&bytes) {
                        // A full disk: stop here; the next restart resumes from what is stored.
                        error!("cannot store a chunk, download paused: {e:#}");
                        *chunk_deadline = None;
                    }
                }
                Action::DiscardDownload => self.store.clear_download()?,
                Action::Adopt { manifest, signed } => {
                    let mut boot = self.store.boot()?;
                    let previous = boot.active.as_ref().map(|a| a.model.clone());
                    if let Some(active) = boot.active.as_mut() {
                        active.model = model_ref(&manifest);
                        active.manifest = signed;
                    }
                    boot.installed_counter = manifest.release_counter;
                    self.store.write_boot(&boot)?;
                    lock(self.engine)?.relabel_live(model_ref(&manifest));
                    info!(version = %manifest.version, "live package re-released: adopted its new manifest");
                    up.send(Payload::Event(Event::Installed { model: model_ref(&manifest), previous, selftest_us: 0 }))
                        .await?;
                }
                Action::Install { manifest, signed } => {
                    *chunk_deadline = None;
                    info!(model = %manifest.model_id, version = %manifest.version, "installing");
                    let (store, engine, budget, tx) = (
                        self.store.clone(),
                        self.engine.clone(),
                        self.cfg.update.latency_budget_ms * 1000,
                        self.install_tx.clone(),
                    );
                    let events =
                        tokio::task::spawn_blocking(move || install(&store, &engine, &manifest, signed, budget))
                            .await
                            .map_err(|e| anyhow!("install task: {e}"))?;
                    let result = match events {
                        Ok((ev, r)) => {
                            for e in ev {
                                up.send(Payload::Event(e)).await?;
                            }
                            r
                        }
                        Err(e) => {
                            error!("install failed: {e:#}");
                            Err(format!("{e:#}"))
                        }
                    };
                    let _ = tx.send(result).await;
                }
                Action::Report(e) => {
                    if let Event::UpdateRejected { reason, version, .. } = &e {
                        warn!(%version, "update rejected: {reason}");
                    }
                    up.send(Payload::Event(e)).await?;
                }
            }
        }
        if !machine.awaiting_chunk() {
            *chunk_deadline = None;
        }
        lock(self.status)?.downloading = machine.progress();
        Ok(())
    }
}

/// Writes the downloaded package to a slot, swaps, health-checks, commits
/// or rolls back. Returns the events to report and the result for the
/// machine.
fn install(
    store: &Store,
    engine: &Mutex<Engine>,
    manifest: &Manifest,
    signed: Vec<u8>,
    budget_us: u64,
) -> Result<(Vec<Event>, Result<u64, String>)> {
    let (_, bytes) = store.download()?.context("the downloaded package is gone")?;
    let model = model_ref(manifest);
    let mut boot: BootState = store.boot()?;
    let sha = hex(&manifest.package_sha256);
    let fail = |boot: &mut BootState, reason: String| -> Result<(Vec<Event>, Result<u64, String>)> {
        boot.failed.push(sha.clone());
        store.write_boot(boot)?;
        Ok((vec![Event::RolledBack { model: model_ref(manifest), reason: reason.clone() }], Err(reason)))
    };
    if manifest.mode == Mode::Shadow {
        store.write_slot("shadow", &bytes)?;
        let mut loaded = match Loaded::open(&bytes, model.clone()) {
            Ok(l) => l,
            Err(e) => return fail(&mut boot, format!("{e:#}")),
        };
        let us = match loaded.health_check(budget_us) {
            Ok(us) => us,
            Err(e) => return fail(&mut boot, e),
        };
        boot.shadow = Some(SlotRecord { slot: "shadow".into(), model: model.clone(), manifest: signed });
        store.write_boot(&boot)?;
        lock(engine)?.set_shadow(Some(loaded));
        return Ok((vec![Event::ShadowStarted { candidate: model }], Ok(us)));
    }
    // 1. The new package goes to the inactive slot.
    let slot = Store::inactive_slot(&boot).to_string();
    store.write_slot(&slot, &bytes)?;
    // 2. Swap, on trial.
    let previous = boot.active.clone();
    boot.previous = previous.clone();
    boot.active = Some(SlotRecord { slot, model: model.clone(), manifest: signed });
    boot.trial = true;
    store.write_boot(&boot)?;
    // 3. Health check.
    if std::env::var_os("EDGEFLEET_TEST_ABORT_IN_HEALTH_CHECK").is_some() {
        // Test failpoint: a package that takes the whole agent down (a runtime
        // bug, an OOM kill) during its health check.
        std::process::abort();
    }
    let checked = Loaded::open(&bytes, model.clone()).map_err(|e| format!("{e:#}")).and_then(|mut l| {
        let us = l.health_check(budget_us)?;
        Ok((l, us))
    });
    match checked {
        Ok((loaded, us)) => {
            // 4. Commit.
            boot.trial = false;
            boot.installed_counter = manifest.release_counter;
            boot.trial_attempts.retain(|(s, _)| *s != sha);
            store.write_boot(&boot)?;
            lock(engine)?.set_live(loaded, now_ms());
            info!(version = %manifest.version, selftest_us = us, "installed");
            Ok((vec![Event::Installed { model, previous: previous.map(|p| p.model), selftest_us: us }], Ok(us)))
        }
        Err(reason) => {
            // 4'. Roll back.
            boot.active = boot.previous.take();
            boot.trial = false;
            warn!(version = %manifest.version, "health check failed, rolled back: {reason}");
            fail(&mut boot, reason)
        }
    }
}

/// Resident memory of this process, bytes (Linux; 0 elsewhere).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

fn total_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse::<u64>().ok()))
        })
        .map_or(0, |kb| kb * 1024)
}
