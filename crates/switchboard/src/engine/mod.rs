//! The Engine.IO v4 server: sessions and their transports (HTTP long-polling, WebSocket and the
//! upgrade between them), heartbeats and limits. It knows nothing of namespaces, rooms or auth:
//! it hands each session's messages, in order, to an [`EngineHandler`] (the Socket.IO hub, or
//! anything else: the conformance example mounts a plain echo handler).
//!
//! One request enters through [`Engine::handle`]; the query decides the transport. Every
//! session's heartbeat runs on the engine's one timer (`heartbeat.rs`); a closed session is torn
//! down by a task of its own when it polls (`session.rs`), by its connection when it was opened
//! on WebSocket (`websocket.rs`, which has no task while the connection is idle). A broadcast
//! to many sessions is written by the flusher threads (`flush.rs`).

mod admission;
mod conn;
mod flush;
mod frame;
mod heartbeat;
mod polling;
mod session;
mod traffic;
#[cfg(target_os = "linux")]
mod uring;
mod websocket;
pub use websocket::{read_error_reason, websocket_close_code};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use parking_lot::RwLock;

use crate::config::{EngineSettings, LimitsConfig};
use crate::http::{HttpResponse, KeptHeaders, RemoteAddr, RequestInfo, response};

pub use admission::{AddressLimitSettings, AddressLimits, Refusal};
pub use conn::{CloseReason, EngineConn, Protocol, SendError, TransportKind};
pub use flush::{SendBatch, flushers_on_io_uring, io_uring_sends, write_deferred};
pub use frame::{Frame, compression_on, compression_threshold, set_compression_threshold};
use session::Session;
pub use traffic::Traffic;

pub(crate) const RECORD_SEPARATOR_BYTE: u8 = crate::protocol::engine::RECORD_SEPARATOR;

/// The engine's settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The server's one shutdown signal: the engine's background tasks end on it.
    pub shutdown: tokio_util::sync::CancellationToken,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// The largest message (WebSocket) or POST body (polling) a client may send, in bytes.
    pub max_payload: usize,
    pub allow_polling: bool,
    pub allow_websocket: bool,
    /// How long a client has to finish an upgrade after opening its WebSocket.
    pub upgrade_timeout: Duration,
    /// Frames a session may have queued before it is closed as a slow consumer.
    pub max_queued_frames: usize,
    /// Sessions at once; further handshakes get 503. `None`: no limit.
    pub max_sessions: Option<usize>,
    /// Headers a session keeps from its opening request besides the usual few (for a backend
    /// proxy to pass on).
    pub extra_kept_headers: Vec<http::HeaderName>,
    /// Sessions and new sessions per second per client address.
    pub address_limits: AddressLimitSettings,
    /// Engine.IO v3 clients (socket.io v2) are served too.
    pub allow_eio3: bool,
    /// What every session id starts with (in a cluster, the node's id: another node that is
    /// sent a request for the session knows where to pass it on). Followed by [`ID_LEN`]
    /// random characters.
    pub sid_prefix: Option<Arc<str>>,
    /// How long a polling POST's body may take to arrive.
    pub body_read_timeout: Duration,
    /// permessage-deflate is offered to WebSocket clients that ask for it.
    pub compression: bool,
    /// Messages shorter than this go uncompressed.
    pub compression_threshold: usize,
    /// The flushers may write through io_uring (see `flush.rs`).
    pub io_uring: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            shutdown: tokio_util::sync::CancellationToken::new(),
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            max_payload: 1_000_000,
            allow_polling: true,
            allow_websocket: true,
            upgrade_timeout: Duration::from_secs(10),
            max_queued_frames: 4096,
            max_sessions: None,
            extra_kept_headers: Vec::new(),
            address_limits: AddressLimitSettings::default(),
            allow_eio3: false,
            sid_prefix: None,
            body_read_timeout: Duration::from_secs(10),
            compression: false,
            compression_threshold: 512,
            io_uring: true,
        }
    }
}

impl EngineConfig {
    /// The engine's part of the config: `[engine]`, and the queue and connection caps of
    /// `[limits]`.
    pub fn from_settings(engine: &EngineSettings, limits: &LimitsConfig) -> Self {
        Self {
            ping_interval: engine.ping_interval.0,
            ping_timeout: engine.ping_timeout.0,
            max_payload: engine.max_payload.0,
            allow_polling: engine.transports.iter().any(|t| t == "polling"),
            allow_websocket: engine.transports.iter().any(|t| t == "websocket"),
            upgrade_timeout: engine.upgrade_timeout.0,
            max_queued_frames: limits.socket_queue,
            max_sessions: (limits.max_connections > 0).then_some(limits.max_connections),
            extra_kept_headers: Vec::new(),
            allow_eio3: engine.allow_eio3,
            sid_prefix: None,
            body_read_timeout: Duration::from_secs(10),
            compression: engine.compression,
            compression_threshold: engine.compression_threshold.0,
            io_uring: engine.io_uring,
            shutdown: tokio_util::sync::CancellationToken::new(),
            address_limits: AddressLimitSettings {
                max_per_address: limits.max_connections_per_ip,
                rate: limits.connect_rate_per_ip,
                burst: f64::from(limits.connect_burst_per_ip),
                trusted_proxies: limits
                    .trusted_proxies
                    .iter()
                    .filter_map(|p| crate::pattern::parse_cidr(p))
                    .collect(),
            },
        }
    }
}

/// One message from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Text, already checked to be UTF-8.
    Text(Bytes),
    Binary(Bytes),
}

/// What the engine calls as sessions open, speak and close. Calls for one session never overlap
/// and arrive in the order the client sent its packets.
pub trait EngineHandler: Send + Sync + 'static {
    /// Per-session state the handler keeps (the Socket.IO hub keeps its client there).
    type State: Send + Sync + 'static;
    fn on_open(&self, conn: &Arc<EngineConn>) -> Self::State;
    fn on_message(&self, state: &Self::State, conn: &Arc<EngineConn>, message: Message);
    fn on_close(&self, state: &Self::State, conn: &Arc<EngineConn>, reason: CloseReason);

    /// A deadline after the session opens at which `on_deadline` runs (once), from the session's
    /// supervisor: no task or timer of the handler's own per session.
    fn deadline(&self) -> Option<Duration> {
        None
    }

    fn on_deadline(&self, _state: &Self::State, _conn: &Arc<EngineConn>) {}

    /// The session's open packet is on its way: what the server says first goes now (an
    /// Engine.IO v3 session's implicit connect to `/`).
    fn on_ready(&self, _state: &Self::State, _conn: &Arc<EngineConn>) {}
}

/// An Engine.IO handler that sends every message back as it came: the `/engine.io/` server the
/// official test suite expects, and a handy peer for transport tests.
pub struct Echo;

impl EngineHandler for Echo {
    type State = ();

    fn on_open(&self, _: &Arc<EngineConn>) {}

    fn on_message(&self, _: &(), conn: &Arc<EngineConn>, message: Message) {
        let frame = match message {
            Message::Text(text) => Frame::message(|out| out.extend_from_slice(&text)),
            Message::Binary(data) => Frame::binary(&data),
        };
        let _ = conn.send(frame);
    }

    fn on_close(&self, _: &(), _: &Arc<EngineConn>, _: CloseReason) {}
}

/// The Engine.IO error codes, as the reference server numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EngineError {
    UnknownTransport = 0,
    UnknownSid = 1,
    BadHandshakeMethod = 2,
    BadRequest = 3,
    Forbidden = 4,
    UnsupportedProtocolVersion = 5,
}

impl EngineError {
    fn message(self) -> &'static str {
        match self {
            Self::UnknownTransport => "Transport unknown",
            Self::UnknownSid => "Session ID unknown",
            Self::BadHandshakeMethod => "Bad handshake method",
            Self::BadRequest => "Bad request",
            Self::Forbidden => "Forbidden",
            Self::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }

    pub(crate) fn response(self) -> HttpResponse {
        let status = if self == Self::Forbidden {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::BAD_REQUEST
        };
        let body = format!(
            "{{\"code\":{},\"message\":\"{}\"}}",
            self as u8,
            self.message()
        );
        response(status, "application/json", Bytes::from(body))
    }
}

/// How often a staged drain closes its next batch of sessions.
pub const DRAIN_TICK: Duration = Duration::from_millis(100);
/// A staged drain closes at least this many sessions a tick: a node with few clients is done
/// sooner than the period (a few hundred reconnects a second are no storm).
pub const DRAIN_BATCH_MIN: usize = 20;

/// The Engine.IO server. Share it in an `Arc`; mount [`Engine::handle`] at a path.
pub struct Engine<H: EngineHandler> {
    config: EngineConfig,
    handler: H,
    sessions: RwLock<HashMap<Arc<str>, Arc<Session<H>>>>,
    traffic: Arc<Traffic>,
    heartbeats: Arc<heartbeat::Heartbeats<H>>,
    /// The runtime serving the engine (known from the first session on): a WebSocket connection
    /// woken by a send from any thread starts its run there.
    runtime: std::sync::OnceLock<tokio::runtime::Handle>,
    /// Set while the server shuts down: no new sessions.
    draining: std::sync::atomic::AtomicBool,
    /// Sessions a staged drain has still to close.
    drain_left: std::sync::atomic::AtomicUsize,
    /// Sessions counted by client address.
    addresses: admission::AddressLimits,
}

/// The query parameters the engine reads.
struct EngineQuery {
    eio: Option<String>,
    transport: Option<String>,
    sid: Option<String>,
    /// Engine.IO v3: binary as base64 on polling.
    b64: bool,
}

impl EngineQuery {
    /// The engine's own parameters, and the others (the application's: a token, a room), which
    /// are kept with the session. The engine's are not kept: every session would pay for them.
    fn parse(query: Option<&str>) -> (Self, Vec<(String, String)>) {
        let mut parsed = Self {
            eio: None,
            transport: None,
            sid: None,
            b64: false,
        };
        let mut kept = Vec::new();
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*key {
                "EIO" => parsed.eio = Some(value.into_owned()),
                "transport" => parsed.transport = Some(value.into_owned()),
                "sid" => parsed.sid = Some(value.into_owned()),
                "b64" => parsed.b64 = value == "1" || value == "true",
                // The client's cache buster on polling requests.
                "t" => {}
                _ => kept.push((key.into_owned(), value.into_owned())),
            }
        }
        (parsed, kept)
    }
}

impl<H: EngineHandler> Engine<H> {
    pub fn new(config: EngineConfig, handler: H) -> Arc<Self> {
        if config.compression {
            frame::set_compression_threshold(config.compression_threshold);
        }
        flush::set_io_uring(config.io_uring);
        Arc::new(Self {
            addresses: admission::AddressLimits::new(config.address_limits.clone()),
            config,
            handler,
            sessions: RwLock::new(HashMap::new()),
            traffic: Arc::new(Traffic::default()),
            heartbeats: Arc::default(),
            runtime: std::sync::OnceLock::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
            drain_left: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Packets and bytes in and out, and the transports open right now.
    pub fn traffic(&self) -> &Arc<Traffic> {
        &self.traffic
    }

    /// Sessions by transport: (polling, websocket).
    pub fn sessions_by_transport(&self) -> (usize, usize) {
        let sessions = self.sessions.read();
        let websocket = sessions
            .values()
            .filter(|s| s.conn.transport() == TransportKind::WebSocket)
            .count();
        (sessions.len() - websocket, websocket)
    }

    /// Refuses new sessions from now on (503), as the server shuts down.
    pub fn begin_drain(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// True once no session is left and every WebSocket writer has flushed and finished.
    pub fn is_drained(&self) -> bool {
        self.sessions.read().is_empty() && self.traffic.open_writers() == 0
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// Sessions open right now.
    pub fn session_count(&self) -> usize {
        self.sessions.read().len()
    }

    /// Closes every session (server shutdown). Their supervisors tear them down.
    pub fn close_all(&self, reason: CloseReason) {
        let sessions: Vec<_> = self.sessions.read().values().cloned().collect();
        for session in sessions {
            session.conn.close(reason);
        }
    }

    /// Closes every session in batches spread over `period` (a staged drain): the sessions in
    /// a random order, a batch every [`DRAIN_TICK`] or so (each wait jittered by ±50%; at least
    /// [`DRAIN_BATCH_MIN`] a batch, so few sessions take less), so that their clients reconnect
    /// elsewhere a few at a time rather than all in the same second.
    /// Each close flushes what the session has queued first. Sessions left at the end (there
    /// should be none: new ones are refused while draining) are closed at once.
    pub async fn close_all_over(&self, reason: CloseReason, period: Duration) {
        use rand::seq::SliceRandom;
        let mut sessions: Vec<_> = self.sessions.read().values().cloned().collect();
        sessions.shuffle(&mut rand::rng());
        let ticks = (period.as_millis() / DRAIN_TICK.as_millis()).max(1) as usize;
        let per_tick = sessions.len().div_ceil(ticks).max(DRAIN_BATCH_MIN);
        let mut remaining = sessions.len();
        for batch in sessions.chunks(per_tick) {
            self.drain_left
                .store(remaining, std::sync::atomic::Ordering::Relaxed);
            for session in batch {
                session.conn.close(reason);
            }
            remaining -= batch.len();
            if remaining > 0 && !period.is_zero() {
                let jitter: f64 = rand::Rng::random_range(&mut rand::rng(), 0.5..1.5);
                tokio::time::sleep(DRAIN_TICK.mul_f64(jitter)).await;
            }
        }
        self.drain_left
            .store(0, std::sync::atomic::Ordering::Relaxed);
        self.close_all(reason);
    }

    /// Sessions a staged drain has still to close.
    pub fn drain_left(&self) -> usize {
        self.drain_left.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the server is shutting down (new sessions refused).
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Answers one HTTP request addressed to the engine's path.
    pub async fn handle<B>(self: &Arc<Self>, request: Request<B>) -> HttpResponse
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (query, pairs) = EngineQuery::parse(request.uri().query());
        let transport = match query.transport.as_deref() {
            Some("polling") if self.config.allow_polling => TransportKind::Polling,
            Some("websocket") if self.config.allow_websocket => TransportKind::WebSocket,
            _ => return EngineError::UnknownTransport.response(),
        };
        let protocol = match query.eio.as_deref() {
            Some("4") => Protocol::V4,
            Some("3") if self.config.allow_eio3 => Protocol::V3 { b64: query.b64 },
            _ => return EngineError::UnsupportedProtocolVersion.response(),
        };
        match (transport, query.sid) {
            (TransportKind::WebSocket, sid) => {
                websocket::handle(self, request, sid.as_deref(), pairs, protocol).await
            }
            (TransportKind::Polling, None) => {
                if request.method() != Method::GET {
                    return EngineError::BadHandshakeMethod.response();
                }
                polling::handshake(self, request, pairs, protocol)
            }
            (TransportKind::Polling, Some(sid)) => {
                let Some(session) = self.session(&sid) else {
                    return EngineError::UnknownSid.response();
                };
                match *request.method() {
                    Method::GET => polling::poll(self, session).await,
                    Method::POST => polling::post(self, session, request).await,
                    _ => EngineError::BadRequest.response(),
                }
            }
        }
    }

    fn session(&self, sid: &str) -> Option<Arc<Session<H>>> {
        self.sessions.read().get(sid).cloned()
    }

    fn at_capacity(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Acquire)
            || self
                .config
                .max_sessions
                .is_some_and(|max| self.sessions.read().len() >= max)
    }

    /// Creates and registers a session. A polling session gets its supervisor task; a WebSocket
    /// session's connection task supervises it itself (one task per connection).
    fn open_session(
        self: &Arc<Self>,
        request: RequestInfo,
        transport: TransportKind,
        protocol: Protocol,
    ) -> Arc<Session<H>> {
        let opened = tokio::time::Instant::now();
        self.runtime.get_or_init(tokio::runtime::Handle::current);
        let sid = match &self.config.sid_prefix {
            Some(prefix) => Arc::from(format!("{prefix}{}", new_id())),
            None => new_id(),
        };
        let conn = Arc::new(EngineConn::new(
            sid.clone(),
            request,
            transport,
            self.config.max_queued_frames,
            self.traffic.clone(),
            protocol,
        ));
        let state = self.handler.on_open(&conn);
        let session = Arc::new(Session::new(conn, state));
        self.sessions.write().insert(sid.clone(), session.clone());
        heartbeat::Heartbeats::session_opened(self, &session, opened);
        if transport == TransportKind::Polling {
            tokio::spawn(session::supervise(self.clone(), session.clone()));
        }
        session
    }

    fn remove_session(&self, sid: &str) {
        let removed = self.sessions.write().remove(sid);
        if let Some(session) = removed {
            self.addresses.release(session.conn.request());
        }
    }

    /// Counts a new session by its client address; when it is refused, the answer (429, with
    /// the Engine.IO error body).
    fn refuse_address(&self, request: &RequestInfo) -> Option<HttpResponse> {
        self.addresses.admit(request).err().map(|refusal| {
            match refusal {
                Refusal::TooManyConnections => self.traffic.refused_connections_per_ip.inc(),
                Refusal::TooFast => self.traffic.refused_connect_rate_per_ip.inc(),
            };
            let body = serde_json::json!({ "code": 4, "message": refusal.message() }).to_string();
            response(
                StatusCode::TOO_MANY_REQUESTS,
                "application/json",
                Bytes::from(body),
            )
        })
    }

    fn open_packet(&self, sid: &str, upgrades: &[&str]) -> Frame {
        Frame::text_packet(
            crate::protocol::engine::encode_open_packet(
                sid,
                upgrades,
                self.config.ping_interval.as_millis() as u64,
                self.config.ping_timeout.as_millis() as u64,
                self.config.max_payload,
            )
            .as_bytes(),
        )
    }

    /// Routes one decoded packet of a session. Returns false when the packet ends the session.
    fn on_packet(&self, session: &Arc<Session<H>>, packet: crate::protocol::engine::EnginePacket) {
        use crate::protocol::engine::EnginePacket;
        let conn = &session.conn;
        if conn.is_closed() {
            return;
        }
        self.traffic.packets_in.inc();
        match packet {
            EnginePacket::Message(text) => {
                self.handler
                    .on_message(&session.state, conn, Message::Text(text))
            }
            EnginePacket::Binary(data) => {
                self.handler
                    .on_message(&session.state, conn, Message::Binary(data))
            }
            EnginePacket::Pong(_) => {
                heartbeat::Heartbeats::pong(self, session);
            }
            EnginePacket::Close => conn.close(CloseReason::ClientClose),
            // In v3 the client pings: the answer, and a sign of life.
            EnginePacket::Ping(data) if conn.eio3() && &data[..] != b"probe" => {
                let mut pong = Vec::with_capacity(1 + data.len());
                pong.push(b'3');
                pong.extend_from_slice(&data);
                let _ = conn.send(Frame::text_packet(&pong));
                heartbeat::Heartbeats::client_ping(self, session);
            }
            // Pings come from the server in v4; probes are handled by the upgrade.
            EnginePacket::Ping(_) | EnginePacket::Noop | EnginePacket::Upgrade => {}
            EnginePacket::Open => conn.close(CloseReason::ParseError),
        }
    }
}

/// How long a [`new_id`] is.
pub const ID_LEN: usize = 20;

/// What a request for a session that is not (or no longer) here is answered.
pub fn unknown_session_response() -> HttpResponse {
    EngineError::UnknownSid.response()
}

/// A random, URL-safe identifier (120 bits, [`ID_LEN`] characters), used for Engine.IO and
/// Socket.IO ids.
pub fn new_id() -> Arc<str> {
    use base64::Engine as _;
    let bytes: [u8; 15] = rand::random();
    Arc::from(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn request_info<B>(
    request: &Request<B>,
    query: Vec<(String, String)>,
    config: &EngineConfig,
) -> RequestInfo {
    RequestInfo {
        query: query.into_boxed_slice(),
        headers: KeptHeaders::from_request_with(request.headers(), &config.extra_kept_headers),
        remote_addr: (request.extensions().get::<RemoteAddr>()).map(|addr| addr.0.into()),
    }
}

/// Sizes of what the engine keeps per WebSocket session, each a separate allocation (`Arc`
/// counts included), as `(what, bytes, how many)`; for the budget in `connection_budget.rs`.
#[cfg(test)]
pub(crate) fn session_state_sizes<H: EngineHandler>() -> Vec<(&'static str, usize, usize)> {
    // An `Arc`'s two counts.
    const ARC_COUNTS: usize = 2 * size_of::<usize>();
    let [connection, socket] = websocket::state_sizes::<H>();
    vec![
        (
            "engine::EngineConn",
            ARC_COUNTS + size_of::<EngineConn>(),
            1,
        ),
        (
            "engine::Session",
            ARC_COUNTS + size_of::<session::Session<H>>(),
            1,
        ),
        ("session id (20 characters)", ARC_COUNTS + 20, 1),
        (connection.0, ARC_COUNTS + connection.1, 1),
        (socket.0, ARC_COUNTS + socket.1, 1),
        // The next ping (and, until it connects, the connect deadline).
        ("heartbeat deadline", heartbeat::due_size::<H>(), 1),
        (
            "engine session map entry",
            size_of::<(Arc<str>, Arc<session::Session<H>>)>(),
            1,
        ),
    ]
}
