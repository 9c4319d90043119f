//! [`EngineConn`]: what the layers above see of one Engine.IO session: its id, the request that
//! opened it, a bounded outbound queue of ready-made [`Frame`]s, and a way to close it.
//!
//! The queue is drained by whichever transport currently carries the session (the pending polling
//! GET or the WebSocket writer), so switching transports on upgrade never loses or reorders a
//! packet. It is bounded: a client that does not read fast enough is closed (`SlowConsumer`)
//! instead of growing the server's memory or slowing anyone else down.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use http::HeaderMap;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::frame::Frame;

/// Why a session ended. The Socket.IO layer reports these as disconnect reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent an Engine.IO close packet.
    ClientClose,
    /// The connection went away (WebSocket closed, polling request aborted).
    TransportClose,
    /// The transport failed (I/O or WebSocket protocol error).
    TransportError,
    /// No pong within pingTimeout.
    PingTimeout,
    /// The client sent something that is not a valid packet.
    ParseError,
    /// A WebSocket message over maxPayload (close code 1009).
    MessageTooLarge,
    /// The client's outbound queue overflowed.
    SlowConsumer,
    /// The server decided to close it (disconnect, connect timeout, protocol misuse).
    ForcedClose,
    /// The server is shutting down.
    ServerShutdown,
}

impl CloseReason {
    /// The reason string the reference server uses for the same case.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientClose | Self::TransportClose => "transport close",
            Self::TransportError | Self::MessageTooLarge => "transport error",
            Self::PingTimeout => "ping timeout",
            Self::ParseError => "parse error",
            Self::SlowConsumer => "slow consumer",
            Self::ForcedClose => "forced close",
            Self::ServerShutdown => "server shutting down",
        }
    }

    /// Closes the server decides on deliver what is already queued first (so a client sees the
    /// DISCONNECT it was sent); when the client is gone or broke the protocol there is no point.
    pub(crate) fn flushes_queue(self) -> bool {
        matches!(self, Self::ForcedClose | Self::ServerShutdown)
    }

    /// The WebSocket close code the server sends for this reason.
    pub(crate) fn websocket_code(self) -> u16 {
        match self {
            Self::MessageTooLarge => 1009,
            Self::ParseError => 1002,
            Self::ServerShutdown => 1001,
            Self::SlowConsumer => 1008,
            _ => 1000,
        }
    }
}

/// The transport currently carrying a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Polling = 0,
    WebSocket = 1,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Polling => "polling",
            Self::WebSocket => "websocket",
        }
    }
}

/// The parts of the opening HTTP request that the layers above may need (auth, templates).
#[derive(Debug, Default)]
pub struct RequestInfo {
    pub query: Vec<(String, String)>,
    /// Only the headers worth keeping for the session's life (see [`KEPT_HEADERS`]).
    pub headers: HeaderMap,
    pub remote_addr: Option<SocketAddr>,
}

/// Headers kept from the opening request; the rest are dropped to keep sessions small.
pub const KEPT_HEADERS: [&str; 6] = [
    "authorization",
    "cookie",
    "origin",
    "user-agent",
    "x-forwarded-for",
    "x-real-ip",
];

impl RequestInfo {
    pub fn query_value(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the session is closed")]
    Closed,
    #[error("the session's outbound queue is full; it was closed")]
    Full,
}

struct Outbox {
    frames: VecDeque<Frame>,
    closed: Option<CloseReason>,
}

/// One Engine.IO session as the layers above see it.
pub struct EngineConn {
    sid: Arc<str>,
    request: RequestInfo,
    outbox: Mutex<Outbox>,
    max_queued_frames: usize,
    transport: AtomicU8,
    /// Wakes the single consumer of the outbox (a polling GET or the WebSocket writer).
    pub(crate) consumer_wake: Notify,
    /// Wakes the session's supervisor when a pong arrives.
    pub(crate) pong_wake: Notify,
    /// Wakes everyone waiting in [`EngineConn::closed`].
    closed_signal: Notify,
    pub(crate) pong_received: AtomicBool,
}

impl EngineConn {
    pub(crate) fn new(
        sid: Arc<str>,
        request: RequestInfo,
        transport: TransportKind,
        max_queued_frames: usize,
    ) -> Self {
        Self {
            sid,
            request,
            outbox: Mutex::new(Outbox {
                frames: VecDeque::new(),
                closed: None,
            }),
            max_queued_frames,
            transport: AtomicU8::new(transport as u8),
            consumer_wake: Notify::new(),
            pong_wake: Notify::new(),
            closed_signal: Notify::new(),
            pong_received: AtomicBool::new(false),
        }
    }

    /// The Engine.IO session id.
    pub fn sid(&self) -> &Arc<str> {
        &self.sid
    }

    pub fn request(&self) -> &RequestInfo {
        &self.request
    }

    pub fn transport(&self) -> TransportKind {
        if self.transport.load(Ordering::Acquire) == TransportKind::WebSocket as u8 {
            TransportKind::WebSocket
        } else {
            TransportKind::Polling
        }
    }

    pub(crate) fn set_transport(&self, transport: TransportKind) {
        self.transport.store(transport as u8, Ordering::Release);
        self.consumer_wake.notify_one();
    }

    /// Queues one frame.
    pub fn send(&self, frame: Frame) -> Result<(), SendError> {
        self.send_all(std::slice::from_ref(&frame))
    }

    /// Queues several frames together (a packet and its binary attachments): all or none.
    pub fn send_all(&self, frames: &[Frame]) -> Result<(), SendError> {
        {
            let mut outbox = self.outbox.lock();
            if outbox.closed.is_some() {
                return Err(SendError::Closed);
            }
            if outbox.frames.len() + frames.len() <= self.max_queued_frames {
                outbox.frames.extend(frames.iter().cloned());
                drop(outbox);
                self.consumer_wake.notify_one();
                return Ok(());
            }
        }
        tracing::warn!(
            sid = %self.sid,
            limit = self.max_queued_frames,
            "closing a session whose outbound queue is full (the client does not read fast enough)"
        );
        self.close(CloseReason::SlowConsumer);
        Err(SendError::Full)
    }

    /// Queues frames past the queue limit: a recovered session's missed events, which the
    /// client asked for and which must all arrive.
    pub fn send_all_unbounded(&self, frames: &[Frame]) -> Result<(), SendError> {
        let mut outbox = self.outbox.lock();
        if outbox.closed.is_some() {
            return Err(SendError::Closed);
        }
        outbox.frames.extend(frames.iter().cloned());
        drop(outbox);
        self.consumer_wake.notify_one();
        Ok(())
    }

    /// Moves every queued frame into `into`, in order.
    pub(crate) fn drain_into(&self, into: &mut Vec<Frame>) {
        into.extend(self.outbox.lock().frames.drain(..));
    }

    /// Closes the session. The first reason wins; later calls do nothing.
    pub fn close(&self, reason: CloseReason) {
        {
            let mut outbox = self.outbox.lock();
            if outbox.closed.is_some() {
                return;
            }
            outbox.closed = Some(reason);
            if !reason.flushes_queue() {
                outbox.frames.clear();
            }
        }
        self.consumer_wake.notify_one();
        self.closed_signal.notify_waiters();
    }

    /// Resolves once the session is closed, with the reason.
    pub async fn closed(&self) -> CloseReason {
        loop {
            let notified = self.closed_signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(reason) = self.close_reason() {
                return reason;
            }
            notified.await;
        }
    }

    /// Why the session was closed, if it was.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.outbox.lock().closed
    }

    pub fn is_closed(&self) -> bool {
        self.close_reason().is_some()
    }

    pub(crate) fn on_pong(&self) {
        self.pong_received.store(true, Ordering::Release);
        self.pong_wake.notify_one();
    }
}

impl std::fmt::Debug for EngineConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConn")
            .field("sid", &self.sid)
            .field("transport", &self.transport())
            .finish()
    }
}
