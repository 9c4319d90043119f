//! The WebSocket transport: a session opened directly on WebSocket, or the upgrade of a polling
//! session (`2probe` / `3probe`, noop to the pending GET, `5`).
//!
//! An open connection has no task. Its [`Connection`] is the waker it leaves with the socket
//! (readable, or writable while frames wait) and with its session's outbox (more to write, or
//! closed). A wake-up runs one short task that reads what the socket has (into a scratch buffer on
//! the stack), handles the client's messages in order, writes what is queued (everything but a
//! large broadcast's frames, which the broadcast writes itself, see `conn.rs`) and leaves the
//! waker again; an idle connection costs its state and nothing else. One run at a time, by a
//! small state machine; wake-ups during a run make it go round once more. Once the session
//! closes, the run becomes the teardown: the close frame, then the socket's graceful close. The
//! heartbeat runs on the engine's timer (`heartbeat.rs`). Frames are parsed by `crate::websocket`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use crate::websocket::Socket;
use parking_lot::Mutex;
use tokio::time::{Duration, Instant};

use super::conn::Flushed;
use super::session::{Session, UpgradeStage, report_closed};
use super::traffic::OpenWriter;
use super::{
    CloseReason, Engine, EngineConn, EngineError, EngineHandler, Frame, HttpResponse,
    TransportKind, request_info,
};
use crate::protocol::engine::{EnginePacket, decode_utf8_packet};
use crate::websocket::{
    Incoming, MessageReader, ReadError, ReadOutcome, close_gracefully, next_message,
    read_available, write_all,
};

/// How long a closing connection may take to write its last frames and the close frame.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a closed connection waits for the client to close its side (see `close_gracefully`).
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// Socket reads one run takes at most before it lets other tasks have a turn.
const READS_PER_RUN: usize = 32;

/// A WebSocket request: accept it, then run the session (new, or an upgrade) in its own task.
pub(super) async fn handle<H: EngineHandler, B>(
    engine: &Arc<Engine<H>>,
    mut request: http::Request<B>,
    sid: Option<&str>,
    query: Vec<(String, String)>,
    protocol: super::Protocol,
) -> HttpResponse {
    if !crate::websocket::is_upgrade_request(&request) {
        return EngineError::BadRequest.response();
    }
    let existing = match sid {
        Some(sid) => match engine.session(sid) {
            Some(session) => Some(session),
            None => return EngineError::UnknownSid.response(),
        },
        None if engine.at_capacity() => {
            return super::response(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                bytes::Bytes::from_static(b"{\"code\":4,\"message\":\"Server at capacity\"}"),
            );
        }
        None => None,
    };
    // Boxed: what the task holds until the upgrade completes stays small (see below).
    let info = Box::new(request_info(&request, query, engine.config()));
    let Ok(accepted) = crate::websocket::accept_with(&mut request, engine.config().compression)
    else {
        return EngineError::BadRequest.response();
    };
    let deflate = accepted.deflate.map(|chosen| chosen.window_bits);
    if deflate.is_some() {
        engine.traffic().deflate_connections.inc();
    }
    if existing.is_none()
        && let Some(refusal) = engine.refuse_address(&info)
    {
        return refusal;
    }
    let engine = engine.clone();
    let upgrade = accepted.upgrade;
    tokio::spawn(async move {
        let Some((stream, received)) = upgrade.stream().await else {
            if existing.is_none() {
                engine.addresses.release(&info);
            }
            return;
        };
        let socket = Arc::new(stream);
        // The frame carries the Engine.IO type byte on top of the message.
        let mut reader =
            MessageReader::new(engine.config().max_payload + 2).with_deflate(deflate.is_some());
        reader.push(&received);
        // It is a view into hyper's whole read buffer: keeping it would keep that buffer.
        drop(received);
        match existing {
            Some(session) => upgrade_session(engine, session, socket, reader, deflate).await,
            None => {
                let session = engine.open_session(unbox(info), TransportKind::WebSocket, protocol);
                let conn = &session.conn;
                let _ = conn.send(engine.open_packet(conn.sid(), &[]));
                engine.handler.on_ready(&session.state, conn);
                Connection::attach(engine, session, socket, reader, deflate)
                    .run()
                    .await;
            }
        }
    });
    accepted.response
}

/// Takes a polling session over: probe, then `5`, then this WebSocket carries the session.
async fn upgrade_session<H: EngineHandler>(
    engine: Arc<Engine<H>>,
    session: Arc<Session<H>>,
    socket: Arc<Socket>,
    mut reader: MessageReader,
    deflate: Option<u8>,
) {
    if !session.begin_upgrade() {
        // Already upgraded or upgrading: this second WebSocket is refused, the session untouched.
        let _ = write_all(&socket, Frame::close(1008).websocket_bytes()).await;
        return;
    }
    let conn = &session.conn;
    let deadline = Instant::now() + engine.config().upgrade_timeout;
    // Until the probe, a session that closes abandons the upgrade (polling delivers the close).
    let probe = async {
        loop {
            match next_message(&socket, &mut reader).await.ok()?? {
                Incoming::Close(_) => return None,
                Incoming::Text(text) if &text[..] == b"2probe" => break,
                _ => {}
            }
        }
        write_all(&socket, Frame::text_packet(b"3probe").websocket_bytes())
            .await
            .ok()?;
        session.set_upgrade_stage(UpgradeStage::Probed);
        Some(())
    };
    let probed = tokio::select! {
        result = tokio::time::timeout_at(deadline, probe) => matches!(result, Ok(Some(()))),
        _ = conn.closed() => false,
    };
    // Once probed, the client has paused polling and commits to this WebSocket: finish the
    // upgrade even if the session closed meanwhile, so its last packets and the close reach it.
    let upgraded = probed
        && matches!(
            tokio::time::timeout_at(deadline, async {
                loop {
                    match next_message(&socket, &mut reader).await.ok()?? {
                        Incoming::Close(_) => return None,
                        Incoming::Text(text) if &text[..] == b"5" => return Some(()),
                        _ => {}
                    }
                }
            })
            .await,
            Ok(Some(()))
        );
    if !upgraded {
        tracing::debug!(sid = %conn.sid(), "upgrade abandoned; the session stays on polling");
        session.set_upgrade_stage(UpgradeStage::None);
        return;
    }
    tracing::debug!(sid = %conn.sid(), "upgraded to websocket");
    // The polling session's supervisor keeps its teardown.
    let connection = Connection::attach(engine, session.clone(), socket, reader, deflate);
    session.set_upgrade_stage(UpgradeStage::None);
    // A session that closed during the upgrade stops waiting for a final poll: this WebSocket
    // delivers its last packets and the close instead.
    if let Some(polling) = conn.polling() {
        polling.final_poll_done.notify_one();
    }
    connection.run().await;
}

/// One WebSocket connection carrying a session; see the module comment.
struct Connection<H: EngineHandler> {
    engine: Arc<Engine<H>>,
    session: Arc<Session<H>>,
    /// Only the one run at a time touches it: the lock is never contended.
    inner: Mutex<Inner>,
    /// [`IDLE`], [`SCHEDULED`], [`RUNNING`], [`WOKEN_WHILE_RUNNING`] or [`DONE`].
    state: AtomicU8,
}

struct Inner {
    reader: MessageReader,
    /// Counts the connection as a writer still open until its close frame is written.
    open: Option<OpenWriter>,
}

/// Waiting for a wake-up; no task.
const IDLE: u8 = 0;
/// Woken: a task is on its way to run it.
const SCHEDULED: u8 = 1;
const RUNNING: u8 = 2;
/// Woken during a run: the run goes round again.
const WOKEN_WHILE_RUNNING: u8 = 3;
/// Closed: wake-ups do nothing any more.
const DONE: u8 = 4;

impl<H: EngineHandler> Wake for Connection<H> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // The runtime is known: this connection's session was opened on it.
        if self.mark_woken()
            && let Some(runtime) = self.engine.runtime.get()
        {
            runtime.spawn(self.clone().run());
        }
    }
}

impl<H: EngineHandler> Connection<H> {
    /// From now on this socket carries the session; [`Connection::run`] then takes its first
    /// turn (in the caller's task, which ends with it).
    fn attach(
        engine: Arc<Engine<H>>,
        session: Arc<Session<H>>,
        socket: Arc<Socket>,
        reader: MessageReader,
        deflate: Option<u8>,
    ) -> Arc<Self> {
        let open = engine.traffic().writer_opened();
        let connection = Arc::new(Self {
            engine,
            session,
            inner: Mutex::new(Inner {
                reader,
                open: Some(open),
            }),
            state: AtomicU8::new(SCHEDULED),
        });
        let waker = Waker::from(connection.clone());
        connection
            .session
            .conn
            .attach_socket(socket, waker, deflate);
        connection
    }

    /// Whether this connection opened the session, and so tears it down: a session opened on
    /// polling has a supervisor of its own, which keeps that duty after an upgrade.
    fn owns_session(&self) -> bool {
        self.session.conn.polling().is_none()
    }

    /// Records a wake-up; true when the caller must start a run.
    fn mark_woken(&self) -> bool {
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            let next = match current {
                IDLE => SCHEDULED,
                RUNNING => WOKEN_WHILE_RUNNING,
                _ => return false,
            };
            match self.state.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return next == SCHEDULED,
                Err(actual) => current = actual,
            }
        }
    }

    /// Runs turns until nothing is left to do (back to idle) or the session closed (teardown).
    async fn run(self: Arc<Self>) {
        loop {
            self.state.store(RUNNING, Ordering::Release);
            if let Some(reason) = self.turn() {
                self.state.store(DONE, Ordering::Release);
                // Boxed: a run's task stays small; only a closing connection needs this.
                Box::pin(self.close(reason)).await;
                return;
            }
            if self
                .state
                .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return;
            }
            // Woken meanwhile (or out of reads for this run): again, after others had a turn.
            tokio::task::yield_now().await;
        }
    }

    /// Reads, handles and writes what it can without waiting, then leaves its waker with the
    /// socket. Returns the reason once the session is closed.
    fn turn(self: &Arc<Self>) -> Option<CloseReason> {
        let engine = &*self.engine;
        let session = &self.session;
        let conn = &session.conn;
        let Some(socket) = conn.socket() else {
            return Some(conn.close_reason().unwrap_or(CloseReason::TransportClose));
        };
        let waker = Waker::from(self.clone());
        let mut cx = Context::from_waker(&waker);
        let mut inner = self.inner.lock();
        let mut reads = 0;
        loop {
            handle_messages(engine, session, &mut inner.reader);
            let backlog = match conn.write_queued() {
                // Another thread writing wakes this connection if it leaves anything.
                Ok(flushed) => flushed == Flushed::Blocked,
                Err(_) => {
                    conn.close(CloseReason::TransportError);
                    false
                }
            };
            if let Some(reason) = conn.close_reason() {
                return Some(reason);
            }
            if reads == READS_PER_RUN {
                // A client that sends without pause does not keep this thread to itself.
                self.state.store(WOKEN_WHILE_RUNNING, Ordering::Release);
                return None;
            }
            match socket.poll_read_ready(&mut cx) {
                Poll::Ready(Ok(())) => {
                    reads += 1;
                    match read_available(&socket, &mut inner.reader) {
                        Ok(ReadOutcome::Data | ReadOutcome::WouldBlock) => {}
                        Ok(ReadOutcome::Eof) | Err(_) => conn.close(CloseReason::TransportClose),
                    }
                    continue;
                }
                Poll::Ready(Err(_)) => {
                    conn.close(CloseReason::TransportError);
                    continue;
                }
                Poll::Pending => {}
            }
            if backlog {
                match socket.poll_write_ready(&mut cx) {
                    // Writable: the queue is written on the next round.
                    Poll::Ready(Ok(())) => continue,
                    Poll::Ready(Err(_)) => {
                        conn.close(CloseReason::TransportError);
                        continue;
                    }
                    Poll::Pending => {}
                }
            }
            return None;
        }
    }

    /// The teardown: reports and removes the session (if this connection owns it), writes what
    /// is still queued (when the reason keeps it) and the close frame, then closes the socket.
    async fn close(self: Arc<Self>, reason: CloseReason) {
        let engine = &*self.engine;
        let session = &*self.session;
        let conn = &session.conn;
        if self.owns_session() {
            report_closed(engine, session, reason);
            engine.remove_session(conn.sid());
        }
        if let Some(socket) = conn.socket() {
            // The WebSocket layer's own code when it ended the session (the client's close
            // echoed, 1002 for a protocol error, 1007 for text that is not UTF-8, 1009).
            let code = self.inner.lock().reader.close_code();
            finish(conn, &socket, websocket_close_code(reason, code)).await;
        }
        let socket = conn.detach_socket();
        // Flushed: a server shutdown need not wait for the peer's side of the close.
        let open = self.inner.lock().open.take();
        drop(open);
        if let Some(socket) = socket {
            close_gracefully(socket, CLOSE_LINGER).await;
        }
    }
}

/// The status code of an Engine.IO WebSocket's close frame: the one the WebSocket reader chose
/// when it ended the session (`from_reader`: the client's close echoed, or its
/// [`ReadError::close_code`]), else the session's reason's.
pub fn websocket_close_code(reason: CloseReason, from_reader: Option<u16>) -> u16 {
    match reason {
        CloseReason::TransportClose
        | CloseReason::TransportError
        | CloseReason::MessageTooLarge => from_reader.unwrap_or(reason.websocket_code()),
        _ => reason.websocket_code(),
    }
}

/// Why a session ends when its WebSocket reader failed.
pub fn read_error_reason(error: ReadError) -> CloseReason {
    match error {
        ReadError::TooLarge => CloseReason::MessageTooLarge,
        ReadError::InvalidUtf8 | ReadError::Protocol(_) => CloseReason::TransportError,
    }
}

/// Writes what is still queued (when the reason keeps it) and the close frame.
async fn finish(conn: &EngineConn, socket: &Socket, code: u16) {
    conn.queue_final(Frame::close(code));
    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, async {
        loop {
            match conn.write_queued() {
                Ok(Flushed::Blocked) => {
                    if std::future::poll_fn(|cx| socket.poll_write_ready(cx))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                // A flusher thread is in the middle of a write (a moment): then the rest.
                Ok(Flushed::ByAnother) => tokio::time::sleep(Duration::from_millis(1)).await,
                Ok(Flushed::All) | Err(_) => break,
            }
        }
    })
    .await;
}

/// Moves a value out of its box and frees the box now (a box moved out of inside an async block
/// is freed only when the block ends).
#[allow(clippy::boxed_local)] // the point: the box is freed when this returns
fn unbox<T>(boxed: Box<T>) -> T {
    *boxed
}

/// Handles every complete message the reader holds, in order.
fn handle_messages<H: EngineHandler>(
    engine: &Engine<H>,
    session: &Arc<Session<H>>,
    reader: &mut MessageReader,
) {
    let conn = &session.conn;
    while !conn.is_closed() {
        let message = match reader.next_message() {
            Ok(Some(message)) => message,
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(sid = %conn.sid(), %error, "WebSocket protocol error; closing the session");
                conn.close(read_error_reason(error));
                return;
            }
        };
        let packet = match message {
            Incoming::Close(_) => {
                conn.close(CloseReason::TransportClose);
                return;
            }
            Incoming::Ping(payload) => {
                let _ = conn.send(Frame::pong(&payload));
                continue;
            }
            Incoming::Pong => continue,
            Incoming::Binary(payload) => {
                engine.traffic().bytes_in.inc_by(payload.len() as u64);
                // v3 binary messages start with their type byte (4, a message).
                match (conn.eio3(), payload.first()) {
                    (false, _) => EnginePacket::Binary(payload),
                    (true, Some(4)) => EnginePacket::Binary(payload.slice(1..)),
                    (true, _) => {
                        conn.close(CloseReason::ParseError);
                        return;
                    }
                }
            }
            Incoming::Text(payload) => {
                engine.traffic().bytes_in.inc_by(payload.len() as u64);
                // The reader checked it is UTF-8.
                match decode_utf8_packet(payload) {
                    Ok(packet) => packet,
                    Err(error) => {
                        tracing::debug!(sid = %conn.sid(), %error, "invalid packet; closing the session");
                        conn.close(CloseReason::ParseError);
                        return;
                    }
                }
            }
        };
        engine.on_packet(session, packet);
    }
}

/// Sizes of what an open WebSocket connection keeps (for the budget in `connection_budget.rs`).
#[cfg(test)]
pub(crate) fn state_sizes<H: EngineHandler>() -> [(&'static str, usize); 2] {
    [
        ("engine::websocket::Connection", size_of::<Connection<H>>()),
        ("websocket::Socket", size_of::<Socket>()),
    ]
}
