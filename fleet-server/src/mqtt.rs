//! The server's MQTT side. With the embedded broker (`edgefleet-broker`)
//! the server authenticates every connection itself: a device must connect
//! with its own id as client id and user name and the password issued at
//! enrollment, and may then use only its own topics; the server's own
//! session uses a secret made at start-up. External brokers may have no
//! topic ACLs, so nothing else rests on the broker:
//! uplinks are verified against the device's enrolled ed25519 key and must
//! name the device whose topic they arrive on, and everything sent to one
//! device is sealed with its downlink key (see `edgefleet_protocol::seal`),
//! so a device can neither publish as another nor read another's updates.
//!
//! Messages are handled by a few workers, sharded by device id: one
//! device's uplinks stay in order, many devices proceed in parallel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use edgefleet_protocol::{
    ChunkRequest, ChunkResponse, ChunkStatus, UplinkAck, chunks, hex32, parse_hex32, seal, topics,
};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::{Mqtt, parse_mqtt_url};
use crate::server::App;

/// User name of the server's own MQTT session on the embedded broker.
pub const SERVER_USER: &str = "edgefleet-server";
/// Shared-subscription group on external brokers: replicas split the uplinks.
const SHARE: &str = "$share/edgefleet/";
const WORKERS: usize = 4;
/// Messages a worker takes at once (telemetry among them is stored in one
/// transaction).
const BATCH: usize = 64;
/// Largest MQTT packet either side sends (a 16 KiB chunk, sealed, fits easily).
pub const MAX_PACKET: usize = 1 << 20;

/// Starts the embedded broker (`edgefleet-broker`) on `listen` (port 0: a
/// free port) with the server's authentication: the server's own session
/// (user [`SERVER_USER`], the start-up secret) gets full access; a device,
/// with its id as client id and user name and the password issued at
/// enrollment, may publish only its uplinks and chunk requests and
/// subscribe only to its own topics, the root and group manifests.
///
/// # Errors
/// The address is taken.
pub async fn start_embedded(
    listen: SocketAddr,
    app_store: crate::store::Store,
    server_secret: String,
) -> anyhow::Result<edgefleet_broker::Broker> {
    use edgefleet_broker::{Access, AuthFuture, Credentials};
    let config = edgefleet_broker::Config { listen, max_packet: MAX_PACKET, ..edgefleet_broker::Config::default() };
    let auth = move |c: Credentials| -> AuthFuture {
        let store = app_store.clone();
        let secret = server_secret.clone();
        Box::pin(async move {
            let (user, pass) = (c.username?, c.password?);
            if user == SERVER_USER {
                return (c.client_id.starts_with(SERVER_USER) && pass == secret).then_some(Access::Full);
            }
            if c.client_id != user || !topics::valid_id(&user) {
                return None;
            }
            match store.device_keys(&user).await {
                Ok(Some(k)) if k.secret_sha256 == crate::util::sha_hex(pass.as_bytes()) => Some(Access::Limited {
                    publish: vec![topics::uplink(&user), topics::chunk_request(&user)],
                    subscribe: vec![
                        format!("{}/d/{user}/", topics::PREFIX),
                        format!("{}/g/", topics::PREFIX),
                        topics::root(),
                    ],
                }),
                _ => None,
            }
        })
    };
    edgefleet_broker::Broker::start(config, auth)
        .await
        .map_err(|e| anyhow::anyhow!("MQTT listen address {listen}: {e}"))
}

/// Options for the server's own session.
pub fn client_options(mqtt: &Mqtt, broker: SocketAddr, replica: &str, secret: &str) -> anyhow::Result<MqttOptions> {
    let id = format!("{SERVER_USER}-{replica}");
    let mut opts = match mqtt {
        Mqtt::Embedded { .. } => {
            let host = if broker.ip().is_unspecified() { "127.0.0.1".to_string() } else { broker.ip().to_string() };
            let mut o = MqttOptions::new(id, host, broker.port());
            o.set_credentials(SERVER_USER, secret);
            o
        }
        Mqtt::External { url } => {
            let (host, port, creds) = parse_mqtt_url(url).map_err(anyhow::Error::msg)?;
            let mut o = MqttOptions::new(id, host, port);
            if let Some((u, p)) = creds {
                o.set_credentials(u, p);
            }
            o
        }
    };
    opts.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_clean_session(true);
    Ok(opts)
}

/// Runs the session: subscribes on every (re)connect and hands messages to
/// the workers. Never returns.
pub async fn run(app: Arc<App>, mut eventloop: rumqttc::EventLoop, external: bool) {
    let mut shards = Vec::with_capacity(WORKERS);
    for _ in 0..WORKERS {
        let (tx, mut rx) = mpsc::channel::<(String, Vec<u8>)>(1024);
        let app = app.clone();
        tokio::spawn(async move {
            // Whatever queued up while the last batch was stored goes in
            // the next one: one transaction for a run of telemetry.
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                handle_batch(&app, std::mem::take(&mut batch)).await;
            }
        });
        shards.push(tx);
    }
    let share = if external { SHARE } else { "" };
    loop {
        match eventloop.poll().await {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                info!("MQTT session up");
                app.metrics.mqtt_connected.set(1);
                let c = app.mqtt.clone();
                let subs = [(topics::ALL_UPLINKS, QoS::AtLeastOnce), (topics::ALL_CHUNK_REQUESTS, QoS::AtMostOnce)];
                for (filter, qos) in subs {
                    // try_: waiting on the request queue from inside the event loop could deadlock.
                    if let Err(e) = c.try_subscribe(format!("{share}{filter}"), qos) {
                        warn!("subscribe {filter}: {e}");
                    }
                }
                let app = app.clone();
                tokio::spawn(async move { crate::server::republish_all(&app).await });
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                let Some(device) = device_of(&p.topic) else { continue };
                let shard = device.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize)) % WORKERS;
                // Never wait here: this loop also sends what the workers publish
                // and answers the broker's pings. A full shard drops the message;
                // devices resend unacknowledged uplinks and re-request chunks.
                match shards[shard].try_send((p.topic.clone(), p.payload.to_vec())) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => crate::ingest::reject(&app, "overloaded"),
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            Ok(_) => {}
            Err(e) => {
                app.metrics.mqtt_connected.set(0);
                warn!("MQTT: {e}; reconnecting in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn device_of(topic: &str) -> Option<String> {
    match topics::parse(topic)? {
        topics::Topic::Uplink(d) | topics::Topic::ChunkRequest(d) => Some(d.to_string()),
        _ => None,
    }
}

/// Handles messages in their order, except that consecutive telemetry
/// uplinks are stored together (a device's uplinks stay in order: each
/// other uplink first flushes the telemetry before it).
async fn handle_batch(app: &App, batch: Vec<(String, Vec<u8>)>) {
    let mut run: Vec<(crate::ingest::Verified, Vec<u8>)> = Vec::new();
    for (topic, payload) in batch {
        match topics::parse(&topic) {
            Some(topics::Topic::Uplink(dev)) => {
                let Some(v) = crate::ingest::verify(app, dev, &payload).await else { continue };
                if v.is_telemetry() {
                    run.push((v, payload));
                    continue;
                }
                flush_telemetry(app, &mut run).await;
                let seqs = crate::ingest::store(app, &v, &payload).await;
                ack(app, &v.dev, seqs).await;
            }
            Some(topics::Topic::ChunkRequest(dev)) => serve_chunk(app, dev, &payload).await,
            _ => {}
        }
    }
    flush_telemetry(app, &mut run).await;
}

async fn flush_telemetry(app: &App, run: &mut Vec<(crate::ingest::Verified, Vec<u8>)>) {
    if run.is_empty() {
        return;
    }
    let items: Vec<(&crate::ingest::Verified, &[u8])> = run.iter().map(|(v, p)| (v, p.as_slice())).collect();
    for (dev, seqs) in crate::ingest::telemetry_batch(app, &items).await {
        ack(app, &dev, seqs).await;
    }
    run.clear();
}

/// Acknowledges stored uplinks (nothing when `seqs` is `None`: the device
/// sends them again).
async fn ack(app: &App, dev: &str, seqs: Option<Vec<u64>>) {
    let Some(seqs) = seqs else { return };
    match postcard::to_allocvec(&UplinkAck { seqs }) {
        Ok(bytes) => {
            let _ = send_sealed(app, dev, &topics::uplink_ack(dev), &bytes, QoS::AtLeastOnce, false).await;
        }
        Err(e) => warn!("encode ack: {e}"),
    }
}

async fn serve_chunk(app: &App, dev: &str, payload: &[u8]) {
    let Ok(req) = postcard::from_bytes::<ChunkRequest>(payload) else {
        crate::ingest::reject(app, "malformed_chunk_request");
        return;
    };
    let sha = hex32(&req.package_sha256);
    let resp = match app.package(&sha).await {
        Some(bytes) => chunks::serve(&bytes, &req.package_sha256, &req),
        None => ChunkResponse {
            package_sha256: req.package_sha256,
            index: req.index,
            status: ChunkStatus::NotFound,
            data: vec![],
        },
    };
    if resp.status == ChunkStatus::Ok {
        app.metrics.chunks.inc();
        app.metrics.chunk_bytes.inc_by(resp.data.len() as u64);
    }
    match postcard::to_allocvec(&resp) {
        Ok(bytes) => {
            let _ = send_sealed(app, dev, &topics::chunk_response(dev), &bytes, QoS::AtMostOnce, false).await;
        }
        Err(e) => warn!("encode chunk: {e}"),
    }
}

/// Seals `plaintext` for `device` (with its downlink key) and publishes it.
///
/// # Errors
/// Unknown device, no randomness, or the session's queue is closed.
pub async fn send_sealed(
    app: &App,
    device: &str,
    topic: &str,
    plaintext: &[u8],
    qos: QoS,
    retain: bool,
) -> anyhow::Result<()> {
    let keys =
        app.ingest.device_keys(device).await?.ok_or_else(|| anyhow::anyhow!("device {device} is not enrolled"))?;
    let key =
        parse_hex32(&keys.downlink_key).ok_or_else(|| anyhow::anyhow!("device {device}: corrupt downlink key"))?;
    let sealed = seal::seal(&key, topic, plaintext).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    app.mqtt.publish(topic, qos, retain, sealed).await?;
    debug!(%topic, bytes = plaintext.len(), "sent");
    Ok(())
}

/// Publishes a client with an event loop for `opts`.
pub fn client(opts: MqttOptions) -> (AsyncClient, rumqttc::EventLoop) {
    AsyncClient::new(opts, 4096)
}
