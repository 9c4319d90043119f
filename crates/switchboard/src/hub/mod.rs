//! The Socket.IO v5 layer: namespaces, sockets, rooms, broadcast and acks, on top of the engine.
//!
//! [`Hub`] is the engine's handler: each Engine.IO session gets a `Client` that decodes its
//! packets (reassembling binary attachments), connects it to namespaces and routes its events to
//! the namespace handlers, in order and on the calling thread, never a task per message.
//! The HTTP API and configured rules call the same operations ([`Namespace`], [`Broadcast`]);
//! callers outside a socket go through `operations.rs` (writes checked whole) and `reads.rs`
//! (cluster-wide reads). The cluster's [`adapter::Adapter`] is a trait defined here and
//! implemented above the hub (`crate::cluster`).

pub mod access;
pub mod adapter;
mod broadcast;
mod event;
pub mod last_state;
pub mod limits;
mod namespace;
mod online;
pub mod operations;
mod packets;
mod presence;
pub mod reads;
mod recovery;
mod socket;

use crate::error_code::ErrorCode;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use serde_json::Value;

pub use broadcast::{Broadcast, Published, Target};
pub use event::{
    Ack, AckError, AckReply, Admission, ConnectError, ConnectGate, DisconnectReason, Event,
    GateFuture, GateRequest, Handshake,
};
pub use namespace::Namespace;
pub use presence::{Announced, Presence, PresenceListener, UserHere, user_id};
pub use recovery::{
    HistoryLimit, HistoryPage, RecoveryConfig, StoredEvent, log_seq, offset_text, parse_offset,
    worth_saving,
};
pub use socket::{Room, Socket};

use crate::engine::{CloseReason, Engine, EngineConn, EngineHandler, Message};
use crate::protocol::socket::{PacketKind, SocketPacket, decode_packet};
use adapter::{Adapter, ClusterSlot, NotTaken};
use packets::Parser;

/// The Engine.IO server with the hub as its handler: the server's Socket.IO endpoint.
pub type SocketEngine = Engine<Arc<Hub>>;

/// The Socket.IO layer's settings.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// A session that joins no namespace within this time is closed.
    pub connect_timeout: Duration,
    /// The socket-data key that holds a user id.
    pub user_key: String,
    /// How long a user stays online after their last connection closes.
    pub presence_grace: Duration,
    /// What a client may do through its sockets.
    pub limits: limits::HubLimits,
    /// Whether socket.io-msgpack-parser clients are served (a client's first binary packet).
    pub msgpack: bool,
    /// The server's one shutdown signal: the hub's background tasks end on it.
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(45),
            user_key: "userId".into(),
            presence_grace: Duration::from_secs(5),
            limits: limits::HubLimits::default(),
            msgpack: true,
            shutdown: tokio_util::sync::CancellationToken::new(),
        }
    }
}

/// Told of socket and room changes in every namespace (the Admin UI instrumentation listens).
/// Called with no lock held.
pub trait HubObserver: Send + Sync {
    fn socket_connected(&self, _socket: &Arc<Socket>) {}
    fn socket_disconnected(&self, _socket: &Arc<Socket>, _reason: DisconnectReason) {}
    /// A socket joined a room (not its own): from a client event, the API, a rule or a connect
    /// gate.
    fn room_joined(&self, _namespace: &str, _room: &str, _socket: &str) {}
    /// A socket left a room, by leaving it or by disconnecting (then before
    /// `socket_disconnected`).
    fn room_left(&self, _namespace: &str, _room: &str, _socket: &str) {}
    /// A room got its first member on this node (before that member's `room_joined`).
    fn room_created(&self, _namespace: &str, _room: &str) {}
    /// A room's last member on this node left it (after that member's `room_left`).
    fn room_deleted(&self, _namespace: &str, _room: &str) {}
    /// A connected socket's data changed (a rule, the connect proxy, a token refresh).
    fn data_changed(&self, _namespace: &str, _socket: &str) {}
}

/// The registered observers, shared by the hub and its namespaces.
#[derive(Default)]
pub struct Observers(RwLock<Vec<Arc<dyn HubObserver>>>);

impl Observers {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.read().is_empty()
    }

    pub(crate) fn each(&self, call: impl Fn(&dyn HubObserver)) {
        let observers = self.0.read().clone();
        for observer in observers {
            call(&*observer);
        }
    }
}

/// All namespaces of a server.
pub struct Hub {
    config: HubConfig,
    namespaces: RwLock<HashMap<Arc<str>, Arc<Namespace>>>,
    fanout: Histogram,
    presence: Arc<Presence>,
    observers: Arc<Observers>,
    cluster: Arc<ClusterSlot>,
    limits: Arc<limits::HubLimits>,
    /// Blocked users and revoked tokens.
    access: Arc<access::AccessList>,
    /// Engine.IO sessions by the parser their first packet showed.
    parsers: Family<ParserLabel, Counter>,
}

/// The label of `switchboard_sessions_by_parser_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ParserLabel {
    pub parser: &'static str,
}

/// Seconds one broadcast takes to reach every recipient's queue: 10 µs to 3 s.
fn fanout_histogram() -> Histogram {
    Histogram::new([
        0.000_01, 0.000_03, 0.000_1, 0.000_3, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0,
    ])
}

impl Hub {
    pub fn new(config: HubConfig) -> Arc<Self> {
        Arc::new(Self {
            limits: Arc::new(config.limits.clone()),
            namespaces: RwLock::new(HashMap::new()),
            fanout: fanout_histogram(),
            presence: Presence::new(config.user_key.clone(), config.presence_grace),
            observers: Arc::new(Observers::default()),
            cluster: Arc::default(),
            access: Arc::default(),
            parsers: Family::default(),
            config,
        })
    }

    /// The server's one shutdown signal (from [`HubConfig::shutdown`]).
    pub fn shutdown_signal(&self) -> &tokio_util::sync::CancellationToken {
        &self.config.shutdown
    }

    /// Joins this hub to a cluster: its broadcasts and room operations reach the other nodes'
    /// sockets too. Set once, before clients connect; a second adapter is refused.
    pub fn join_cluster(&self, adapter: Arc<dyn Adapter>) -> Result<(), Arc<dyn Adapter>> {
        self.cluster.set(adapter)
    }

    /// The cluster adapter, when this node is part of a cluster.
    pub fn cluster(&self) -> Option<&Arc<dyn Adapter>> {
        self.cluster.get()
    }

    /// Registers an observer of socket and room changes.
    pub fn observe(&self, observer: Arc<dyn HubObserver>) {
        self.observers.0.write().push(observer);
    }

    /// Users and who is online.
    pub fn presence(&self) -> &Arc<Presence> {
        &self.presence
    }

    /// How long broadcasts take to reach their recipients' queues.
    /// The limits on clients, with their refusal counts.
    pub fn limits(&self) -> &Arc<limits::HubLimits> {
        &self.limits
    }

    /// Blocked users and revoked tokens, as this node knows them.
    pub fn access(&self) -> &Arc<access::AccessList> {
        &self.access
    }

    /// Blocks a user or revokes tokens (or lifts either), on every node: the sockets the change
    /// refuses here are disconnected at once, and the cluster, when there is one, carries it to
    /// the others and keeps it; answers once the cluster's engine has taken it (or could not).
    pub async fn change_access(&self, change: access::AccessChange) -> Result<(), NotTaken> {
        self.change_access_here(&change);
        if let Some(cluster) = self.cluster() {
            adapter::until_taken(&**cluster, |taken| {
                cluster.access_changed(&change, Some(taken))
            })
            .await?;
        }
        Ok(())
    }

    /// Applies an access change on this node alone (one the cluster brought from another node
    /// included), disconnecting the sockets a new entry refuses.
    pub fn change_access_here(&self, change: &access::AccessChange) {
        if self.access.apply(change)
            && let access::AccessChange::Add { entry } = change
        {
            self.enforce_access(entry);
        }
    }

    /// Disconnects this node's sockets that `entry` refuses (the client sees "io server
    /// disconnect" and does not reconnect by itself), and has the access list's listeners end
    /// their connections it refuses; answers how many sockets.
    pub fn enforce_access(&self, entry: &access::AccessEntry) -> usize {
        self.access.tell_added(entry);
        let mut disconnected = 0;
        for namespace in self.namespaces() {
            let candidates = match entry {
                access::AccessEntry::Block { user, .. }
                | access::AccessEntry::UserTokens { user, .. } => {
                    let ids = self.presence.sockets_of(user, namespace.name());
                    ids.iter().filter_map(|id| namespace.socket(id)).collect()
                }
                access::AccessEntry::Token { .. } => namespace.sockets(),
            };
            for socket in candidates {
                let data = socket.data();
                let user = data.get(self.presence.user_key()).and_then(user_id);
                let token = access::TokenMark::from_data(&data);
                if let Some(refusal) = entry.refuses(user.as_deref(), token.as_ref()) {
                    self.access.count(&refusal);
                    socket.disconnect();
                    disconnected += 1;
                }
            }
        }
        disconnected
    }

    pub fn fanout_histogram(&self) -> &Histogram {
        &self.fanout
    }

    /// Sessions by the parser they speak (counted at their first packet).
    pub fn parser_counts(&self) -> &Family<ParserLabel, Counter> {
        &self.parsers
    }

    /// The namespace `name`, created (and open to clients) on first use.
    pub fn namespace(&self, name: &str) -> Arc<Namespace> {
        if let Some(namespace) = self.of(name) {
            return namespace;
        }
        let namespace = self
            .namespaces
            .write()
            .entry(Arc::from(name))
            .or_insert_with_key(|key| {
                Arc::new(Namespace::new(
                    key.clone(),
                    namespace::HubParts {
                        fanout: self.fanout.clone(),
                        presence: self.presence.clone(),
                        observers: self.observers.clone(),
                        cluster: self.cluster.clone(),
                        limits: self.limits.clone(),
                        access: self.access.clone(),
                        shutdown: self.config.shutdown.clone(),
                    },
                ))
            })
            .clone();
        if let Some(cluster) = self.cluster() {
            cluster.namespace_added(name);
        }
        namespace
    }

    /// The namespace `name` if it exists.
    pub fn of(&self, name: &str) -> Option<Arc<Namespace>> {
        self.namespaces.read().get(name).cloned()
    }

    pub fn namespaces(&self) -> Vec<Arc<Namespace>> {
        self.namespaces.read().values().cloned().collect()
    }
}

/// A binary packet waiting for its attachments.
struct PartialPacket {
    packet: SocketPacket,
    attachments: Vec<Bytes>,
}

#[derive(Default)]
struct ClientState {
    sockets: Vec<Arc<Socket>>,
    /// A packet waiting for its binary attachments (boxed: rare, and every client has the field).
    partial: Option<Box<PartialPacket>>,
    closed: bool,
    /// The parser the client speaks, once its first packet told.
    parser: Option<Parser>,
}

/// The Socket.IO side of one Engine.IO session.
pub struct Client {
    state: Mutex<ClientState>,
}

impl Client {
    fn socket(&self, namespace: &str) -> Option<Arc<Socket>> {
        self.state
            .lock()
            .sockets
            .iter()
            .find(|s| s.namespace().name() == namespace && s.is_connected())
            .cloned()
    }
}

impl EngineHandler for Arc<Hub> {
    type State = Arc<Client>;

    fn on_open(&self, _conn: &Arc<EngineConn>) -> Arc<Client> {
        Arc::new(Client {
            state: Mutex::new(ClientState::default()),
        })
    }

    /// The connect timeout: a session that joined no namespace in time is closed.
    fn deadline(&self) -> Option<Duration> {
        Some(self.config.connect_timeout)
    }

    fn on_deadline(&self, client: &Arc<Client>, conn: &Arc<EngineConn>) {
        let never_connected = client.state.lock().sockets.is_empty();
        if never_connected && !conn.is_closed() {
            tracing::debug!(sid = %conn.sid(), "no namespace joined in time; closing");
            conn.close(CloseReason::ForcedClose);
        }
    }

    fn on_message(&self, client: &Arc<Client>, conn: &Arc<EngineConn>, message: Message) {
        let (parser, complete) = {
            let mut state = client.state.lock();
            if state.closed {
                return;
            }
            let parser = match (state.parser, &message) {
                (Some(parser), _) => parser,
                (None, message) => {
                    let parser = match message {
                        _ if conn.eio3() => Parser::Legacy,
                        Message::Text(_) => Parser::Json,
                        Message::Binary(_) if self.config.msgpack => Parser::MsgPack,
                        Message::Binary(_) => {
                            drop(state);
                            return protocol_error(conn, "binary first packet (msgpack is off)");
                        }
                    };
                    self.settle_parser(&mut state, parser);
                    parser
                }
            };
            let complete = match message {
                Message::Text(_) if parser == Parser::MsgPack => {
                    drop(state);
                    return protocol_error(conn, "a text packet from a msgpack client");
                }
                Message::Binary(data) if parser == Parser::MsgPack => {
                    match crate::protocol::msgpack::decode(&data) {
                        Ok(decoded) => Some(decoded),
                        Err(error) => {
                            drop(state);
                            return protocol_error(conn, &error.to_string());
                        }
                    }
                }
                Message::Text(text) => {
                    if state.partial.is_some() {
                        drop(state);
                        return protocol_error(conn, "text packet while awaiting attachments");
                    }
                    let decoded = std::str::from_utf8(&text)
                        .map_err(|_| "not UTF-8".to_owned())
                        .and_then(|text| decode_packet(text).map_err(|e| e.to_string()));
                    match decoded {
                        Ok(packet) if packet.attachments > 0 => {
                            state.partial = Some(Box::new(PartialPacket {
                                attachments: Vec::with_capacity(packet.attachments),
                                packet,
                            }));
                            None
                        }
                        Ok(packet) => Some((packet, Vec::new())),
                        Err(error) => {
                            drop(state);
                            return protocol_error(conn, &error);
                        }
                    }
                }
                Message::Binary(data) => {
                    let Some(partial) = state.partial.as_mut() else {
                        drop(state);
                        return protocol_error(conn, "unexpected binary message");
                    };
                    partial.attachments.push(data);
                    if partial.attachments.len() < partial.packet.attachments {
                        None
                    } else {
                        state.partial.take().map(|p| (p.packet, p.attachments))
                    }
                }
            };
            (parser, complete)
        };
        if let Some((packet, attachments)) = complete {
            self.dispatch(client, conn, parser, packet, attachments);
        }
    }

    /// A socket.io v2 client is connected to `/` by the server, unasked (Socket.IO protocol v4).
    fn on_ready(&self, client: &Arc<Client>, conn: &Arc<EngineConn>) {
        if !conn.eio3() {
            return;
        }
        self.settle_parser(&mut client.state.lock(), Parser::Legacy);
        let connect = SocketPacket {
            kind: PacketKind::Connect,
            namespace: "/".into(),
            ack_id: None,
            attachments: 0,
            data: None,
        };
        self.connect(client, conn, Parser::Legacy, connect);
    }

    fn on_close(&self, client: &Arc<Client>, _conn: &Arc<EngineConn>, reason: CloseReason) {
        let sockets = {
            let mut state = client.state.lock();
            state.closed = true;
            state.partial = None;
            std::mem::take(&mut state.sockets)
        };
        for socket in sockets {
            socket
                .namespace()
                .clone()
                .remove_socket(&socket, DisconnectReason::Engine(reason));
        }
    }
}

impl Hub {
    /// The parser a client speaks from now on, counted once per session.
    fn settle_parser(&self, state: &mut ClientState, parser: Parser) {
        state.parser = Some(parser);
        self.parsers
            .get_or_create(&ParserLabel {
                parser: parser.as_str(),
            })
            .inc();
    }
}

fn protocol_error(conn: &EngineConn, error: &str) {
    tracing::debug!(sid = %conn.sid(), error, "invalid Socket.IO packet; closing the session");
    conn.close(CloseReason::ParseError);
}

impl Hub {
    fn dispatch(
        &self,
        client: &Arc<Client>,
        conn: &Arc<EngineConn>,
        parser: Parser,
        packet: SocketPacket,
        attachments: Vec<Bytes>,
    ) {
        match packet.kind {
            PacketKind::Connect => self.connect(client, conn, parser, packet),
            PacketKind::Disconnect => {
                if let Some(socket) = client.socket(&packet.namespace) {
                    client
                        .state
                        .lock()
                        .sockets
                        .retain(|s| !Arc::ptr_eq(s, &socket));
                    socket
                        .namespace()
                        .clone()
                        .remove_socket(&socket, DisconnectReason::ClientNamespaceDisconnect);
                }
            }
            PacketKind::Event | PacketKind::BinaryEvent => {
                // Events for a namespace the client is not connected to are dropped, as in the
                // reference server.
                let Some(socket) = client.socket(&packet.namespace) else {
                    return;
                };
                let mut args = match packet.data {
                    Some(Value::Array(args)) => args,
                    _ => return,
                };
                let name = match args.first() {
                    Some(Value::String(name)) => name.clone(),
                    Some(other) => other.to_string(),
                    None => return,
                };
                args.remove(0);
                let ack = packet.ack_id.map(|id| Ack {
                    conn: conn.clone(),
                    namespace: Arc::from(packet.namespace.as_str()),
                    id,
                    parser,
                });
                if let Err(refusal) = self.check_event(&socket, &name) {
                    if let Some(ack) = ack {
                        ack.send(&[refusal]);
                    }
                    return;
                }
                let namespace = socket.namespace().clone();
                namespace.dispatch(&socket, Event::new(name, args, attachments, ack));
            }
            PacketKind::Ack | PacketKind::BinaryAck => {
                if let (Some(socket), Some(id), Some(Value::Array(args))) =
                    (client.socket(&packet.namespace), packet.ack_id, packet.data)
                {
                    socket.on_ack(id, AckReply { args, attachments });
                }
            }
            PacketKind::ConnectError => {}
        }
    }

    /// An event's name and rate against the limits: an error for its callback when refused
    /// (a socket over its rate with `on_excess = "disconnect"` is disconnected as well).
    fn check_event(&self, socket: &Arc<Socket>, name: &str) -> Result<(), Value> {
        let limits = &self.limits;
        if name.len() > limits.event_name_max {
            limits.hit("event_name");
            return Err(
                serde_json::json!({ "error": { "code": ErrorCode::InvalidEvent.as_str(), "message": format!("event names are at most {} bytes", limits.event_name_max) } }),
            );
        }
        if !limits.rates_events() {
            return Ok(());
        }
        let verdict = socket.check_event_rate(limits, name);
        match verdict {
            limits::Verdict::Handle => Ok(()),
            limits::Verdict::Drop => Err(
                serde_json::json!({ "error": { "code": ErrorCode::RateLimited.as_str(), "message": "too many events; slow down" } }),
            ),
            limits::Verdict::Disconnect => {
                socket.disconnect();
                Err(
                    serde_json::json!({ "error": { "code": ErrorCode::RateLimited.as_str(), "message": "too many events" } }),
                )
            }
        }
    }

    fn connect(
        &self,
        client: &Arc<Client>,
        conn: &Arc<EngineConn>,
        parser: Parser,
        packet: SocketPacket,
    ) {
        let mut name = packet.namespace;
        // A v2 client's CONNECT may carry a query (`/admin?token=x`): not part of the name.
        if parser == Parser::Legacy
            && let Some(at) = name.find('?')
        {
            name.truncate(at);
        }
        if client.socket(&name).is_some() {
            tracing::debug!(sid = %conn.sid(), nsp = %name, "already connected to this namespace");
            return;
        }
        let joined = client
            .state
            .lock()
            .sockets
            .iter()
            .filter(|s| s.is_connected())
            .count();
        if joined >= self.limits.max_namespaces_per_connection {
            self.limits.hit("namespaces_per_connection");
            let _ = conn.send(packets::connect_error(
                parser,
                &name,
                "Too many namespaces",
                Some(&serde_json::json!({ "code": ErrorCode::TooManyNamespaces.as_str() })),
            ));
            return;
        }
        let Some(namespace) = self.of(&name) else {
            let _ = conn.send(packets::connect_error(
                parser,
                &name,
                "Invalid namespace",
                None,
            ));
            return;
        };
        if namespace.is_waiting(conn.sid()) {
            tracing::debug!(sid = %conn.sid(), nsp = %name, "a CONNECT to this namespace is being decided");
            return;
        }
        let mut auth = match packet.data {
            Some(Value::Object(auth)) => auth,
            _ => serde_json::Map::new(),
        };
        // A returning client presents its private session id and the offset it got to.
        let recovery = namespace.recovery_config();
        let returning = match (auth.remove("pid"), auth.remove("offset")) {
            (Some(Value::String(pid)), offset) if recovery.is_some() => {
                Some((pid, offset.and_then(|o| o.as_str().map(str::to_owned))))
            }
            _ => None,
        };
        let recovery_requested = auth.remove("recover") == Some(Value::Bool(true));
        let mut handshake = Handshake::new(auth);
        handshake.parser = parser;
        // A returning client asked when it first connected (it has a session id).
        handshake.recovery_requested = recovery_requested || returning.is_some();
        let refuse = |error: ConnectError| {
            let _ = conn.send(packets::connect_error(
                parser,
                &name,
                &error.message,
                error.data.as_ref(),
            ));
        };
        let mut restored = None;
        if let (Some((pid, offset)), Some(recovery)) = (&returning, &recovery) {
            if recovery.rerun_middleware
                && let Err(error) = namespace.check_middleware(conn, &handshake)
            {
                return refuse(error);
            }
            restored = namespace.restore(conn, handshake.clone(), pid, offset.as_deref());
            if restored.is_none() && namespace.shares_sessions() {
                let returning = (pid.clone(), offset.clone());
                let rerun_on_connect = recovery.rerun_on_connect;
                return restore_shared(
                    client,
                    conn,
                    &namespace,
                    handshake,
                    returning,
                    rerun_on_connect,
                );
            }
        }
        if returning.is_some() && recovery.is_some() {
            namespace.count_recovery(restored.is_some());
        }
        if let Some(socket) = &restored
            && namespace.shares_sessions()
        {
            tell_session_taken(&namespace, socket);
        }
        let rerun_on_connect = recovery.is_some_and(|r| r.rerun_on_connect);
        match restored {
            Some(socket) => finish_connect(client, conn, &namespace, socket, rerun_on_connect),
            None => connect_fresh(client, conn, &namespace, handshake),
        }
    }
}

/// Runs the namespace's middleware and connect gate for a socket that starts afresh.
fn connect_fresh(
    client: &Arc<Client>,
    conn: &Arc<EngineConn>,
    namespace: &Arc<Namespace>,
    handshake: Handshake,
) {
    let parser = handshake.parser;
    let refuse = |error: ConnectError| {
        let _ = conn.send(packets::connect_error(
            parser,
            namespace.name(),
            &error.message,
            error.data.as_ref(),
        ));
    };
    match namespace.connect_gate() {
        None => match namespace.admit(conn, handshake) {
            Ok(socket) => finish_connect(client, conn, namespace, socket, false),
            Err(error) => refuse(error),
        },
        Some(gate) => {
            let data = match namespace.check_middleware(conn, &handshake) {
                Ok(data) => data,
                Err(error) => return refuse(error),
            };
            admit_through_gate(client, conn, namespace, handshake, data, gate);
        }
    }
}

/// A session was restored here: the other nodes drop what they still hold of it (a connected
/// copy, a saved one).
fn tell_session_taken(namespace: &Namespace, socket: &Socket) {
    if let (Some(cluster), Some(pid)) = (namespace.cluster.get(), socket.pid()) {
        cluster.session_taken(namespace.name(), socket.id(), pid);
    }
}

/// Restores, on a task of its own, a session another node saved (the shared store and log are
/// asked); a client whose session is not found there connects afresh. A second CONNECT to this
/// namespace while it is restored is dropped.
fn restore_shared(
    client: &Arc<Client>,
    conn: &Arc<EngineConn>,
    namespace: &Arc<Namespace>,
    handshake: Handshake,
    (pid, offset): (String, Option<String>),
    rerun_on_connect: bool,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return connect_fresh(client, conn, namespace, handshake);
    };
    let sid: Arc<str> = conn.sid().clone();
    if !namespace.begin_waiting(&sid) {
        return;
    }
    let (client, conn, namespace) = (client.clone(), conn.clone(), namespace.clone());
    runtime.spawn(async move {
        let restored = namespace
            .clone()
            .restore_shared(conn.clone(), handshake.clone(), pid, offset)
            .await;
        namespace.count_recovery(restored.is_some());
        let Some(socket) = restored else {
            // A fresh connect's own wait, if the namespace has a connect gate, begins after.
            namespace.end_waiting(&sid);
            if !client.state.lock().closed {
                connect_fresh(&client, &conn, &namespace, handshake);
            }
            return;
        };
        // A node that still has this socket (it never saw the old transport end) drops it.
        tell_session_taken(&namespace, &socket);
        finish_connect(&client, &conn, &namespace, socket, rerun_on_connect);
        namespace.end_waiting(&sid);
    });
}

/// Asks the namespace's connect gate on a task of its own (the session's other packets go on
/// meanwhile), then connects or refuses the socket. A second CONNECT to this namespace while
/// it waits is dropped.
fn admit_through_gate(
    client: &Arc<Client>,
    conn: &Arc<EngineConn>,
    namespace: &Arc<Namespace>,
    handshake: Handshake,
    data: serde_json::Map<String, Value>,
    gate: ConnectGate,
) {
    let sid: Arc<str> = conn.sid().clone();
    if !namespace.begin_waiting(&sid) {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        namespace.end_waiting(&sid);
        let _ = conn.send(packets::connect_error(
            handshake.parser,
            namespace.name(),
            "Server error",
            None,
        ));
        return;
    };
    let request = GateRequest {
        namespace: Arc::from(namespace.name()),
        conn: conn.clone(),
        auth: handshake.auth.clone(),
        data,
    };
    let parser = handshake.parser;
    let decision = gate(request);
    let (client, conn, namespace) = (client.clone(), conn.clone(), namespace.clone());
    runtime.spawn(async move {
        let decided = decision.await;
        namespace.end_waiting(&sid);
        if client.state.lock().closed {
            return;
        }
        match decided.and_then(|admission| {
            namespace.check_admission(&admission.data)?;
            Ok(admission)
        }) {
            Ok(admission) => {
                let socket =
                    namespace.admit_with(&conn, handshake, admission.data, admission.rooms);
                finish_connect(&client, &conn, &namespace, socket, false);
            }
            Err(error) => {
                let _ = conn.send(packets::connect_error(
                    parser,
                    namespace.name(),
                    &error.message,
                    error.data.as_ref(),
                ));
            }
        }
    });
}

/// A socket is admitted (or restored): it joins its client, its user is registered, the
/// observers hear of it and, unless it was recovered, the connect handlers run.
fn finish_connect(
    client: &Arc<Client>,
    conn: &Arc<EngineConn>,
    namespace: &Arc<Namespace>,
    socket: Arc<Socket>,
    rerun_on_connect: bool,
) {
    let name = namespace.name();
    {
        let mut state = client.state.lock();
        if state.closed {
            drop(state);
            namespace.remove_socket(
                &socket,
                DisconnectReason::Engine(CloseReason::TransportClose),
            );
            return;
        }
        state.sockets.retain(|s| s.is_connected());
        if state.sockets.capacity() == 0 {
            // Most clients use one namespace: room for one, not four.
            state.sockets.reserve_exact(1);
        }
        state.sockets.push(socket.clone());
    }
    // After every lock is released: presence listeners may emit into this namespace.
    socket.register_user();
    namespace
        .observers
        .each(|observer| observer.socket_connected(&socket));
    if socket.recovered() && !rerun_on_connect {
        tracing::debug!(sid = %conn.sid(), nsp = %name, socket = %socket.id(), "socket recovered");
        return;
    }
    tracing::debug!(sid = %conn.sid(), nsp = %name, socket = %socket.id(), "socket connected");
    namespace.run_connect_handlers(&socket);
}

/// Sizes of what the hub keeps per client connected to one namespace, each a separate
/// allocation (`Arc` counts included), as `(what, bytes, how many)`; for the budget in
/// `connection_budget.rs`.
#[cfg(test)]
pub(crate) fn client_state_sizes() -> Vec<(&'static str, usize, usize)> {
    // An `Arc`'s two counts.
    const ARC_COUNTS: usize = 2 * size_of::<usize>();
    vec![
        ("hub::Client", ARC_COUNTS + size_of::<Client>(), 1),
        ("hub::Socket", ARC_COUNTS + size_of::<Socket>(), 1),
        // Its id and its private id (connection state recovery), 20 characters each.
        ("socket ids", ARC_COUNTS + 20, 2),
        // Its own room (its id) is kept without a list (`RoomSet::One`).
        ("client's socket list", size_of::<Arc<Socket>>(), 1),
        (
            "namespace socket map entry",
            size_of::<(Arc<str>, Arc<Socket>)>(),
            1,
        ),
    ]
}
