//! The fleet server's embedded MQTT broker.
//!
//! `edgefleet server` runs on its embedded defaults with no broker to
//! install: this crate is that broker. It speaks MQTT 3.1.1 (what the agent
//! and the server's session use), QoS 0 and 1 (QoS 2 is accepted from
//! publishers and delivered at QoS 1 at most), retained messages, last wills
//! and keep-alive, on plain TCP. It is built for one shape of traffic: tens
//! of thousands of devices, each on its own topics, and one server session
//! subscribed to all of them with a wildcard.
//!
//! - **Routing is a hash lookup.** Exact subscriptions live in a map keyed
//!   by topic; only wildcard filters (the server's handful) are matched one
//!   by one. Connecting, subscribing and publishing cost the same with 10
//!   devices or 10,000 (rumqttd 0.20, which this replaced, matched every new
//!   filter against every known topic: 490 s to connect 10,000 devices).
//! - **Per-client access.** The [`Authenticator`] decides at CONNECT what a
//!   client may do: [`Access::Full`] (the server: any topic, wildcards) or
//!   [`Access::Limited`] (a device: publish and subscribe under the topic
//!   prefixes it is given, exact topics only). A client that publishes or
//!   subscribes outside its prefixes is disconnected.
//! - **Bounded memory, nothing silently lost.** Each connection has a queue
//!   of [`Config::queue`] packets. Delivery to a full client waits (the
//!   publisher's socket is not read meanwhile: TCP backpressure, no loss).
//!   A limited client whose queue is full is disconnected instead, so a slow
//!   or stuck device cannot stall the server's downlinks to everyone else;
//!   it reconnects and gets its retained state again, and the fleet protocol
//!   resends what was not acknowledged.
//! - Sessions are clean: a CONNECT asking to keep a session is accepted and
//!   answered with `session present = 0`, as the standard allows a server
//!   that kept nothing. `$share/…` subscriptions are refused (one server
//!   per embedded broker; replicas use an external broker).
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! use edgefleet_broker::{Access, Broker, Config};
//! let broker = Broker::start(Config::default(), edgefleet_broker::allow_all()).await?;
//! println!("MQTT on {}", broker.local_addr());
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::{self, QoS, has_wildcards, matches, valid_filter};
use rumqttc::{
    ConnAck, ConnectReturnCode, LastWill, Packet, PubAck, PubComp, PubRec, Publish, SubAck, SubscribeReasonCode,
    UnsubAck,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Broker settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen (port 0: any free port, see [`Broker::local_addr`]).
    pub listen: SocketAddr,
    /// Largest packet accepted or sent, in bytes; a client sending a larger one is disconnected.
    pub max_packet: usize,
    /// Connections accepted at once; beyond it CONNECT is refused with "server unavailable".
    pub max_connections: usize,
    /// Packets queued per connection before backpressure (full access) or disconnection (limited).
    pub queue: usize,
    /// Time a new connection has to send CONNECT.
    pub connect_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            max_packet: 1 << 20,
            max_connections: 100_000,
            queue: 1024,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// What a connected client may do, decided by the [`Authenticator`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Any topic, wildcard subscriptions, retained messages; deliveries to it
    /// wait for room in its queue rather than drop anything.
    Full,
    /// Publish only to topics starting with one of `publish`, subscribe only
    /// to exact topics (no wildcards) starting with one of `subscribe`. Its
    /// retained flag is ignored (a device cannot leave state in the broker);
    /// a full queue disconnects it.
    Limited {
        /// Topic prefixes it may publish to.
        publish: Vec<String>,
        /// Topic prefixes it may subscribe to.
        subscribe: Vec<String>,
    },
}

impl Access {
    fn may_publish(&self, topic: &str) -> bool {
        match self {
            Access::Full => true,
            Access::Limited { publish, .. } => publish.iter().any(|p| topic.starts_with(p.as_str())),
        }
    }

    fn may_subscribe(&self, filter: &str) -> bool {
        match self {
            Access::Full => true,
            Access::Limited { subscribe, .. } => {
                !has_wildcards(filter) && subscribe.iter().any(|p| filter.starts_with(p.as_str()))
            }
        }
    }

    fn lossless(&self) -> bool {
        matches!(self, Access::Full)
    }
}

/// What a client presented in CONNECT.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The client id (never empty: an empty one is replaced by a generated id).
    pub client_id: String,
    /// User name, if given.
    pub username: Option<String>,
    /// Password, if given.
    pub password: Option<String>,
    /// The client's address.
    pub peer: SocketAddr,
}

/// The future an [`Authenticator`] returns: `None` refuses the connection.
pub type AuthFuture = Pin<Box<dyn Future<Output = Option<Access>> + Send>>;

/// Decides, at CONNECT, whether a client is let in and with what [`Access`].
/// Implemented for any `Fn(Credentials) -> AuthFuture`.
pub trait Authenticator: Send + Sync + 'static {
    /// `None` refuses the connection ("bad user name or password").
    fn authenticate(&self, credentials: Credentials) -> AuthFuture;
}

impl<F> Authenticator for F
where
    F: Fn(Credentials) -> AuthFuture + Send + Sync + 'static,
{
    fn authenticate(&self, credentials: Credentials) -> AuthFuture {
        self(credentials)
    }
}

/// Lets every client in with [`Access::Full`] (tests, local tools).
pub fn allow_all() -> impl Authenticator {
    |_: Credentials| -> AuthFuture { Box::pin(async { Some(Access::Full) }) }
}

/// Counters since start.
#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    received: AtomicU64,
    delivered: AtomicU64,
    overflows: AtomicU64,
    denied: AtomicU64,
}

/// A snapshot of the broker's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Clients connected now.
    pub connections: u64,
    /// CONNECTs accepted since start.
    pub accepted: u64,
    /// CONNECTs refused (authentication, protocol version, limits).
    pub refused: u64,
    /// PUBLISH packets received from clients.
    pub received: u64,
    /// PUBLISH packets queued to subscribers.
    pub delivered: u64,
    /// Limited clients disconnected because their queue was full.
    pub overflows: u64,
    /// Clients disconnected for publishing or subscribing outside their access.
    pub denied: u64,
}

type ConnId = u64;

/// What the writer task of a connection sends.
type Out = Packet;

struct Conn {
    client_id: String,
    tx: mpsc::Sender<Out>,
    cancel: CancellationToken,
    lossless: bool,
    filters: HashSet<String>,
}

#[derive(Default)]
struct Router {
    next_id: ConnId,
    conns: HashMap<ConnId, Conn>,
    clients: HashMap<String, ConnId>,
    /// Exact-topic subscriptions: topic → subscribers and their granted QoS.
    exact: HashMap<String, HashMap<ConnId, QoS>>,
    /// Wildcard subscriptions, matched one by one (only full-access clients have them).
    wild: HashMap<String, HashMap<ConnId, QoS>>,
    /// Retained messages by topic.
    retained: HashMap<String, (Bytes, QoS)>,
}

/// One delivery: where, and at which QoS.
struct Target {
    id: ConnId,
    tx: mpsc::Sender<Out>,
    qos: QoS,
    lossless: bool,
    cancel: CancellationToken,
}

impl Router {
    fn targets(&self, topic: &str, qos: QoS) -> Vec<Target> {
        let mut out: Vec<Target> = Vec::new();
        let add = |subs: &HashMap<ConnId, QoS>, out: &mut Vec<Target>| {
            for (&id, &granted) in subs {
                let q = min_qos(qos, granted);
                if let Some(t) = out.iter_mut().find(|t| t.id == id) {
                    t.qos = max_qos(t.qos, q);
                } else if let Some(c) = self.conns.get(&id) {
                    out.push(Target { id, tx: c.tx.clone(), qos: q, lossless: c.lossless, cancel: c.cancel.clone() });
                }
            }
        };
        if let Some(subs) = self.exact.get(topic) {
            add(subs, &mut out);
        }
        for (filter, subs) in &self.wild {
            if matches(topic, filter) {
                add(subs, &mut out);
            }
        }
        out
    }

    /// The subscription map a filter belongs in.
    fn subs(&mut self, filter: &str) -> &mut HashMap<String, HashMap<ConnId, QoS>> {
        if has_wildcards(filter) { &mut self.wild } else { &mut self.exact }
    }

    /// Drops connection `id` from `filter`'s subscribers.
    fn forget(&mut self, id: ConnId, filter: &str) {
        let map = self.subs(filter);
        if let Some(subs) = map.get_mut(filter) {
            subs.remove(&id);
            if subs.is_empty() {
                map.remove(filter);
            }
        }
    }

    fn subscribe(&mut self, id: ConnId, filter: &str, qos: QoS) {
        self.subs(filter).entry(filter.to_string()).or_default().insert(id, qos);
        if let Some(c) = self.conns.get_mut(&id) {
            c.filters.insert(filter.to_string());
        }
    }

    fn unsubscribe(&mut self, id: ConnId, filter: &str) {
        self.forget(id, filter);
        if let Some(c) = self.conns.get_mut(&id) {
            c.filters.remove(filter);
        }
    }

    fn remove(&mut self, id: ConnId) {
        let Some(conn) = self.conns.remove(&id) else { return };
        for f in &conn.filters {
            self.forget(id, f);
        }
        if self.clients.get(&conn.client_id) == Some(&id) {
            self.clients.remove(&conn.client_id);
        }
    }

    fn retained_for(&self, filter: &str) -> Vec<(String, Bytes, QoS)> {
        if has_wildcards(filter) {
            self.retained
                .iter()
                .filter(|(t, _)| matches(t, filter))
                .map(|(t, (p, q))| (t.clone(), p.clone(), *q))
                .collect()
        } else {
            self.retained.get(filter).map(|(p, q)| (filter.to_string(), p.clone(), *q)).into_iter().collect()
        }
    }
}

fn min_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) { a } else { b }
}

fn max_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) >= (b as u8) { a } else { b }
}

struct Shared {
    config: Config,
    auth: Box<dyn Authenticator>,
    router: Mutex<Router>,
    counters: Counters,
}

impl Shared {
    fn router(&self) -> MutexGuard<'_, Router> {
        // A panic while the lock was held cannot leave the maps half-updated
        // in a way that matters more than stopping the broker would.
        self.router.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `publish` to every subscriber of its topic; stores it if retained.
    async fn route(&self, mut publish: Publish, retain: bool) {
        let targets = {
            let mut r = self.router();
            if retain {
                if publish.payload.is_empty() {
                    r.retained.remove(&publish.topic);
                } else {
                    r.retained.insert(
                        publish.topic.clone(),
                        (publish.payload.clone(), min_qos(publish.qos, QoS::AtLeastOnce)),
                    );
                }
            }
            r.targets(&publish.topic, min_qos(publish.qos, QoS::AtLeastOnce))
        };
        publish.retain = false;
        publish.dup = false;
        for t in targets {
            let mut p = publish.clone();
            p.qos = t.qos;
            p.pkid = 0;
            self.deliver(&t.tx, t.lossless, &t.cancel, Packet::Publish(p)).await;
        }
    }

    /// Queues one packet to a connection: waits for room if it is lossless,
    /// disconnects it if its queue is full otherwise.
    async fn deliver(&self, tx: &mpsc::Sender<Out>, lossless: bool, cancel: &CancellationToken, packet: Packet) {
        let is_publish = matches!(packet, Packet::Publish(_));
        let sent = if lossless {
            tokio::select! {
                r = tx.send(packet) => r.is_ok(),
                () = cancel.cancelled() => false,
            }
        } else {
            match tx.try_send(packet) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    if !cancel.is_cancelled() {
                        self.counters.overflows.fetch_add(1, Ordering::Relaxed);
                        warn!("MQTT client's queue is full ({} packets): disconnecting it", self.config.queue);
                        cancel.cancel();
                    }
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        };
        if sent && is_publish {
            self.counters.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A running broker. Dropping it (or [`Broker::shutdown`]) closes the
/// listener and every connection.
pub struct Broker {
    addr: SocketAddr,
    cancel: CancellationToken,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Broker {
    /// Binds `config.listen` and serves on the current tokio runtime.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn start(config: Config, auth: impl Authenticator) -> io::Result<Broker> {
        let listener = TcpListener::bind(config.listen).await?;
        Ok(Self::serve(listener, config, Box::new(auth), None))
    }

    /// Like [`Broker::start`], on a runtime of its own in a new thread (for
    /// callers without a tokio runtime, such as synchronous tests).
    ///
    /// # Errors
    /// The address cannot be bound or the thread cannot start.
    pub fn start_thread(config: Config, auth: impl Authenticator) -> io::Result<Broker> {
        let std_listener = std::net::TcpListener::bind(config.listen)?;
        std_listener.set_nonblocking(true)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name("mqtt-broker".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let broker = Self::serve(listener, config, Box::new(auth), None);
                let cancel = broker.cancel.clone();
                let _ = tx.send(Ok((broker.addr, broker.cancel.clone(), broker.shared.clone())));
                std::mem::forget(broker); // the caller's handle owns shutdown
                cancel.cancelled().await;
            });
        })?;
        let (addr, cancel, shared) =
            rx.recv().map_err(|_| io::Error::other("broker thread exited before starting"))??;
        Ok(Broker { addr, cancel, shared, thread: Some(thread) })
    }

    fn serve(
        listener: TcpListener,
        config: Config,
        auth: Box<dyn Authenticator>,
        thread: Option<std::thread::JoinHandle<()>>,
    ) -> Broker {
        let addr = listener.local_addr().unwrap_or(config.listen);
        let cancel = CancellationToken::new();
        let shared =
            Arc::new(Shared { config, auth, router: Mutex::new(Router::default()), counters: Counters::default() });
        let (c, s) = (cancel.clone(), shared.clone());
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    () = c.cancelled() => break,
                    r = listener.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            // Out of file descriptors and the like: back off, keep serving.
                            warn!("MQTT accept: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let (s, c) = (s.clone(), c.child_token());
                tokio::spawn(async move {
                    if let Err(e) = connection(&s, stream, peer, c).await {
                        debug!("MQTT client {peer}: {e}");
                    }
                });
            }
        });
        info!("MQTT broker listening on {addr}");
        Broker { addr, cancel, shared, thread }
    }

    /// Where the broker listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The broker's counters now.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            connections: get(&c.connections),
            accepted: get(&c.accepted),
            refused: get(&c.refused),
            received: get(&c.received),
            delivered: get(&c.delivered),
            overflows: get(&c.overflows),
            denied: get(&c.denied),
        }
    }

    /// Stops listening and closes every connection.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Why a connection ended other than by the client's DISCONNECT.
#[derive(Debug)]
enum End {
    Io(io::Error),
    Codec(mqttbytes::Error),
    Protocol(String),
    Denied(String),
    Timeout,
    Closed,
    Cancelled,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Io(e) => write!(f, "{e}"),
            End::Codec(e) => write!(f, "malformed packet: {e}"),
            End::Protocol(m) => write!(f, "protocol error: {m}"),
            End::Denied(m) => write!(f, "denied: {m}"),
            End::Timeout => write!(f, "keep-alive timeout"),
            End::Closed => write!(f, "connection closed without DISCONNECT"),
            End::Cancelled => write!(f, "disconnected by the broker"),
        }
    }
}

/// Reads one packet, with a deadline.
async fn read_packet(
    stream: &mut (impl AsyncReadExt + Unpin),
    buf: &mut BytesMut,
    max: usize,
    deadline: Option<Duration>,
    cancel: &CancellationToken,
) -> Result<Packet, End> {
    loop {
        match Packet::read(buf, max) {
            Ok(p) => return Ok(p),
            Err(mqttbytes::Error::InsufficientBytes(n)) => buf.reserve(n.max(4096)),
            Err(e) => return Err(End::Codec(e)),
        }
        let read = stream.read_buf(buf);
        let n = tokio::select! {
            () = cancel.cancelled() => return Err(End::Cancelled),
            r = async {
                match deadline {
                    Some(d) => tokio::time::timeout(d, read).await.map_err(|_| End::Timeout)?.map_err(End::Io),
                    None => read.await.map_err(End::Io),
                }
            } => r?,
        };
        if n == 0 {
            return Err(End::Closed);
        }
    }
}

/// Answers CONNECT with a refusal.
async fn refuse(shared: &Shared, wr: &mut tokio::net::tcp::OwnedWriteHalf, code: ConnectReturnCode) {
    shared.counters.refused.fetch_add(1, Ordering::Relaxed);
    let mut out = BytesMut::new();
    let _ = Packet::ConnAck(ConnAck::new(code, false)).write(&mut out, shared.config.max_packet);
    let _ = wr.write_all(&out).await;
}

async fn connection(
    shared: &Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    cancel: CancellationToken,
) -> Result<(), End> {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let max = shared.config.max_packet;
    let mut buf = BytesMut::with_capacity(1024);
    let connect = match read_packet(&mut rd, &mut buf, max, Some(shared.config.connect_timeout), &cancel).await {
        Ok(Packet::Connect(c)) => c,
        Ok(p) => return Err(End::Protocol(format!("expected CONNECT, got {:?}", packet_kind(&p)))),
        Err(End::Codec(e @ (mqttbytes::Error::InvalidProtocol | mqttbytes::Error::InvalidProtocolLevel(_)))) => {
            refuse(shared, &mut wr, ConnectReturnCode::RefusedProtocolVersion).await;
            return Err(End::Protocol(format!("{e:?} (this broker speaks MQTT 3.1.1)")));
        }
        Err(e) => return Err(e),
    };
    if connect.protocol != rumqttc::mqttbytes::Protocol::V4 {
        refuse(shared, &mut wr, ConnectReturnCode::RefusedProtocolVersion).await;
        return Err(End::Protocol("MQTT 5 CONNECT (this broker speaks MQTT 3.1.1)".into()));
    }
    let client_id = if connect.client_id.is_empty() {
        if !connect.clean_session {
            refuse(shared, &mut wr, ConnectReturnCode::BadClientId).await;
            return Err(End::Protocol("empty client id without clean session".into()));
        }
        format!("auto-{}", peer)
    } else {
        connect.client_id.clone()
    };
    let (username, password) = match &connect.login {
        Some(l) => (Some(l.username.clone()), Some(l.password.clone())),
        None => (None, None),
    };
    let Some(access) =
        shared.auth.authenticate(Credentials { client_id: client_id.clone(), username, password, peer }).await
    else {
        refuse(shared, &mut wr, ConnectReturnCode::BadUserNamePassword).await;
        return Err(End::Denied("authentication failed".into()));
    };
    if let Some(will) = &connect.last_will
        && (!access.may_publish(&will.topic) || will.topic.is_empty() || has_wildcards(&will.topic))
    {
        refuse(shared, &mut wr, ConnectReturnCode::NotAuthorized).await;
        return Err(End::Denied(format!("last will on {:?}", will.topic)));
    }

    let (tx, rx) = mpsc::channel::<Out>(shared.config.queue.max(4));
    let id = {
        let mut r = shared.router();
        if r.conns.len() >= shared.config.max_connections {
            None
        } else {
            r.next_id += 1;
            let id = r.next_id;
            // A second connection with the same client id takes over (MQTT 3.1.4-2).
            if let Some(old) = r.clients.insert(client_id.clone(), id)
                && let Some(c) = r.conns.get(&old)
            {
                c.cancel.cancel();
            }
            r.conns.insert(
                id,
                Conn {
                    client_id: client_id.clone(),
                    tx: tx.clone(),
                    cancel: cancel.clone(),
                    lossless: access.lossless(),
                    filters: HashSet::new(),
                },
            );
            Some(id)
        }
    };
    let Some(id) = id else {
        refuse(shared, &mut wr, ConnectReturnCode::ServiceUnavailable).await;
        return Err(End::Denied("connection limit reached".into()));
    };
    shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
    shared.counters.connections.fetch_add(1, Ordering::Relaxed);
    let _ = tx.try_send(Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)));
    let writer = tokio::spawn(write_loop(wr, rx, cancel.clone(), max));

    let keep_alive = (connect.keep_alive > 0).then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    let mut session = Session { shared, id, access, tx, cancel: cancel.clone(), qos2: HashSet::new() };
    let result = loop {
        let packet = match read_packet(&mut rd, &mut buf, max, keep_alive, &cancel).await {
            Ok(p) => p,
            Err(e) => break Err(e),
        };
        if buf.is_empty() && buf.capacity() > 64 * 1024 {
            buf = BytesMut::with_capacity(1024); // a large packet has passed: give its buffer back
        }
        match session.handle(packet).await {
            Ok(true) => {}
            Ok(false) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    // Let the writer send what is queued (a SUBACK, the last acks) unless the
    // broker cut the connection; it stops once every sender is gone.
    shared.router().remove(id);
    shared.counters.connections.fetch_sub(1, Ordering::Relaxed);
    let Session { access, .. } = session;
    let mut writer = writer;
    if tokio::time::timeout(Duration::from_secs(2), &mut writer).await.is_err() {
        cancel.cancel();
        let _ = writer.await;
    }
    if result.is_err()
        && let Some(LastWill { topic, message, qos, retain }) = connect.last_will
    {
        let retain = retain && access.lossless();
        shared.route(Publish::from_bytes(topic, qos, message), retain).await;
    }
    result
}

struct Session<'a> {
    shared: &'a Arc<Shared>,
    id: ConnId,
    access: Access,
    tx: mpsc::Sender<Out>,
    cancel: CancellationToken,
    /// QoS 2 packet ids received and not yet released (exactly-once).
    qos2: HashSet<u16>,
}

impl Session<'_> {
    async fn reply(&self, packet: Packet) -> Result<(), End> {
        self.shared.deliver(&self.tx, self.access.lossless(), &self.cancel, packet).await;
        if self.cancel.is_cancelled() { Err(End::Cancelled) } else { Ok(()) }
    }

    fn deny(&self, what: String) -> End {
        self.shared.counters.denied.fetch_add(1, Ordering::Relaxed);
        End::Denied(what)
    }

    /// Handles one packet; `Ok(false)` is a clean DISCONNECT.
    async fn handle(&mut self, packet: Packet) -> Result<bool, End> {
        match packet {
            Packet::Publish(p) => {
                self.shared.counters.received.fetch_add(1, Ordering::Relaxed);
                if p.topic.is_empty() || has_wildcards(&p.topic) || p.topic.contains('\0') {
                    return Err(End::Protocol(format!("PUBLISH to invalid topic {:?}", p.topic)));
                }
                if !self.access.may_publish(&p.topic) {
                    warn!(topic = %p.topic, "MQTT client published outside its topics: disconnecting it");
                    return Err(self.deny(format!("publish to {:?}", p.topic)));
                }
                let (qos, pkid) = (p.qos, p.pkid);
                let retain = p.retain && self.access.lossless();
                match qos {
                    QoS::AtMostOnce => self.shared.route(p, retain).await,
                    QoS::AtLeastOnce => {
                        self.shared.route(p, retain).await;
                        self.reply(Packet::PubAck(PubAck::new(pkid))).await?;
                    }
                    QoS::ExactlyOnce => {
                        if self.qos2.insert(pkid) {
                            self.shared.route(p, retain).await;
                        }
                        self.reply(Packet::PubRec(PubRec::new(pkid))).await?;
                    }
                }
            }
            Packet::PubRel(r) => {
                self.qos2.remove(&r.pkid);
                self.reply(Packet::PubComp(PubComp::new(r.pkid))).await?;
            }
            // Acknowledgements of what the broker sent: sessions are clean, nothing is kept to resend.
            Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => {}
            Packet::Subscribe(s) => {
                let mut codes = Vec::with_capacity(s.filters.len());
                let mut retained = Vec::new();
                for f in &s.filters {
                    if !valid_filter(&f.path) || f.path.starts_with("$share/") {
                        codes.push(SubscribeReasonCode::Failure);
                        continue;
                    }
                    if !self.access.may_subscribe(&f.path) {
                        warn!(filter = %f.path, "MQTT client subscribed outside its topics: disconnecting it");
                        return Err(self.deny(format!("subscribe to {:?}", f.path)));
                    }
                    let qos = min_qos(f.qos, QoS::AtLeastOnce);
                    let mut r = self.shared.router();
                    r.subscribe(self.id, &f.path, qos);
                    retained.extend(r.retained_for(&f.path).into_iter().map(|(t, p, q)| (t, p, min_qos(q, qos))));
                    codes.push(SubscribeReasonCode::Success(qos));
                }
                self.reply(Packet::SubAck(SubAck::new(s.pkid, codes))).await?;
                for (topic, payload, qos) in retained {
                    let mut p = Publish::from_bytes(topic, qos, payload);
                    p.retain = true;
                    self.reply(Packet::Publish(p)).await?;
                }
            }
            Packet::Unsubscribe(u) => {
                {
                    let mut r = self.shared.router();
                    for t in &u.topics {
                        r.unsubscribe(self.id, t);
                    }
                }
                self.reply(Packet::UnsubAck(UnsubAck::new(u.pkid))).await?;
            }
            Packet::PingReq => self.reply(Packet::PingResp).await?,
            Packet::Disconnect => return Ok(false),
            other => return Err(End::Protocol(format!("unexpected {} from a client", packet_kind(&other)))),
        }
        Ok(true)
    }
}

fn packet_kind(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

/// Writes queued packets, coalescing whatever is queued into one write.
async fn write_loop(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Out>,
    cancel: CancellationToken,
    max: usize,
) {
    const COALESCE: usize = 64 * 1024;
    let mut buf = BytesMut::with_capacity(1024);
    let mut pkid: u16 = 0;
    let mut encode = |p: Packet, buf: &mut BytesMut| {
        let p = match p {
            Packet::Publish(mut p) if p.qos != QoS::AtMostOnce => {
                pkid = if pkid == u16::MAX { 1 } else { pkid + 1 };
                p.pkid = pkid;
                Packet::Publish(p)
            }
            p => p,
        };
        if let Err(e) = p.write(buf, max) {
            warn!("MQTT: dropping an outgoing {} packet: {e}", packet_kind(&p));
        }
    };
    loop {
        let first = tokio::select! {
            () = cancel.cancelled() => break,
            p = rx.recv() => match p { Some(p) => p, None => break },
        };
        encode(first, &mut buf);
        while buf.len() < COALESCE {
            match rx.try_recv() {
                Ok(p) => encode(p, &mut buf),
                Err(_) => break,
            }
        }
        let ok = tokio::select! {
            () = cancel.cancelled() => false,
            r = wr.write_all(&buf) => r.is_ok(),
        };
        if !ok {
            break;
        }
        buf.clear();
        if buf.capacity() > COALESCE * 2 {
            buf = BytesMut::with_capacity(1024);
        }
    }
    cancel.cancel();
    let _ = wr.shutdown().await;
}
