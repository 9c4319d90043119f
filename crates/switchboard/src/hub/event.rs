//! What handlers receive and return: the handshake of a connecting socket, a client's event with
//! its optional ack, a refusal to connect, and the disconnect reasons.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::packets;
use crate::engine::EngineConn;

/// What a client presented when it connected to a namespace.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// The CONNECT packet's payload (`auth` in the client); `{}` when it sent none (one shared
    /// empty map: most clients send none, and every socket keeps its handshake).
    pub auth: Arc<Map<String, Value>>,
    /// When the handshake was made, in milliseconds since the Unix epoch.
    pub issued_ms: u64,
    /// The client asked for connection state recovery (`recover: true` in its auth, taken out
    /// of `auth`), which `[recovery] clients = "on_request"` waits for.
    pub recovery_requested: bool,
    /// The parser the client speaks: every packet to this socket is encoded for it.
    pub parser: super::packets::Parser,
}

impl Handshake {
    pub fn new(auth: Map<String, Value>) -> Self {
        static EMPTY: std::sync::OnceLock<Arc<Map<String, Value>>> = std::sync::OnceLock::new();
        let auth = if auth.is_empty() {
            EMPTY.get_or_init(Arc::default).clone()
        } else {
            Arc::new(auth)
        };
        Self {
            auth,
            issued_ms: SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_millis() as u64),
            recovery_requested: false,
            parser: super::packets::Parser::Json,
        }
    }
}

/// A client's event, in the order the client sent it.
#[derive(Debug)]
pub struct Event {
    pub name: String,
    pub args: Vec<Value>,
    /// Binary attachments; `args` refer to them with `{"_placeholder":true,"num":i}`.
    pub attachments: Vec<Bytes>,
    ack: Option<Ack>,
}

impl Event {
    pub(crate) fn new(
        name: String,
        args: Vec<Value>,
        attachments: Vec<Bytes>,
        ack: Option<Ack>,
    ) -> Self {
        Self {
            name,
            args,
            attachments,
            ack,
        }
    }

    /// The client's callback, if it passed one. Answer it at most once, now or later.
    pub fn take_ack(&mut self) -> Option<Ack> {
        self.ack.take()
    }

    pub fn wants_ack(&self) -> bool {
        self.ack.is_some()
    }
}

/// The answer to a client's callback.
#[derive(Debug)]
pub struct Ack {
    pub(crate) conn: Arc<EngineConn>,
    pub(crate) namespace: Arc<str>,
    pub(crate) id: u64,
    pub(crate) parser: super::packets::Parser,
}

impl Ack {
    pub fn send(self, args: &[Value]) {
        self.send_binary(args, &[]);
    }

    pub fn send_binary(self, args: &[Value], attachments: &[Bytes]) {
        let frames = packets::ack(self.parser, &self.namespace, self.id, args, attachments);
        let _ = self.conn.send_all(&frames);
    }
}

/// A client's answer to an event the server emitted with an ack.
#[derive(Debug, Clone, PartialEq)]
pub struct AckReply {
    pub args: Vec<Value>,
    pub attachments: Vec<Bytes>,
}

/// Why an emit with ack got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("the client did not acknowledge in time")]
    Timeout,
    #[error("the socket disconnected before acknowledging")]
    Disconnected,
}

/// What a connect gate is asked: a socket that passed the middleware wants to connect.
pub struct GateRequest {
    pub namespace: Arc<str>,
    /// The Engine.IO session (its opening request: query, kept headers, remote address).
    pub conn: Arc<EngineConn>,
    /// The CONNECT packet's payload.
    pub auth: Arc<Map<String, Value>>,
    /// The socket data the middleware set (verified token claims, say).
    pub data: Map<String, Value>,
}

/// What a connect gate admits a socket with: its data (replacing what the middleware set) and
/// rooms it is in from the start.
#[derive(Debug, Default)]
pub struct Admission {
    pub data: Map<String, Value>,
    pub rooms: Vec<String>,
}

/// The future a connect gate answers with.
pub type GateFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Admission, ConnectError>> + Send>>;

/// Decides, asynchronously, whether a socket may connect and what it starts with (the
/// application's backend asked over HTTP, say). It runs after the middleware.
pub type ConnectGate = Arc<dyn Fn(GateRequest) -> GateFuture + Send + Sync>;

/// A refusal sent to the client as CONNECT_ERROR; it sees `message` and `data` in `connect_error`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectError {
    pub message: String,
    pub data: Option<Value>,
}

impl ConnectError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            data: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

/// Why a socket left its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client called `socket.disconnect()`.
    ClientNamespaceDisconnect,
    /// The server disconnected the socket from its namespace.
    ServerNamespaceDisconnect,
    /// The whole session ended.
    Engine(crate::engine::CloseReason),
    /// Its client resumed the session on another node of the cluster (this copy was left
    /// behind by a transport this node had not seen end): it is dropped, not saved.
    TakenOver,
}

impl DisconnectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientNamespaceDisconnect => "client namespace disconnect",
            Self::ServerNamespaceDisconnect => "server namespace disconnect",
            Self::Engine(reason) => reason.as_str(),
            Self::TakenOver => "session taken over",
        }
    }
}
