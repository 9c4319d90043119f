//! The WebSocket transport: a session opened directly on WebSocket, or the upgrade of a polling
//! session (`2probe` / `3probe`, noop to the pending GET, `5`).
//!
//! One task per connection. It reads what the socket has (into a scratch buffer on the stack:
//! an idle connection holds no read buffer), handles the client's messages in order, writes what
//! is queued for it (everything but a large broadcast's frames, which the broadcast writes
//! itself so that it wakes no task per recipient, see `conn.rs`), and, for a session it opened,
//! runs the heartbeat and the teardown. Frames are parsed by `crate::websocket`.

use std::sync::Arc;
use std::task::Poll;

use tokio::net::TcpStream;
use tokio::time::{Duration, Instant, sleep_until};

use super::session::{Heartbeat, Session, UpgradeStage, report_closed};
use super::{
    CloseReason, Engine, EngineConn, EngineError, EngineHandler, Frame, HttpResponse,
    TransportKind, request_info,
};
use crate::protocol::engine::{EnginePacket, decode_text_packet};
use crate::websocket::{
    Incoming, MessageReader, ReadError, ReadOutcome, close_gracefully, next_message,
    read_available, write_all,
};

/// How long a closing connection may take to write its last frames and the close frame.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a closed connection waits for the client to close its side (see `close_gracefully`).
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// A WebSocket request: accept it, then run the session (new, or an upgrade) in its own task.
pub(super) async fn handle<H: EngineHandler, B>(
    engine: &Arc<Engine<H>>,
    mut request: http::Request<B>,
    sid: Option<&str>,
    query: Vec<(String, String)>,
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
    let info = Box::new(request_info(&request, query));
    let Ok(accepted) = crate::websocket::accept(&mut request) else {
        return EngineError::BadRequest.response();
    };
    let engine = engine.clone();
    let upgrade = accepted.upgrade;
    tokio::spawn(async move {
        let Some((stream, received)) = upgrade.stream().await else {
            return;
        };
        let socket = Arc::new(stream);
        // The frame carries the Engine.IO type byte on top of the message.
        let mut reader = MessageReader::new(engine.config().max_payload + 2);
        reader.push(&received);
        // It is a view into hyper's whole read buffer: keeping it would keep that buffer.
        drop(received);
        match existing {
            // Boxed, so that the upgrade's extra state is not part of every connection's task.
            Some(session) => {
                Box::pin(upgrade_session(&engine, &session, socket, &mut reader)).await;
            }
            None => {
                let session = engine.open_session(unbox(info), TransportKind::WebSocket);
                let conn = &session.conn;
                let _ = conn.send(engine.open_packet(conn.sid(), &[]));
                conn.attach_socket(socket.clone());
                run_connection(&engine, &session, socket, &mut reader, true).await;
            }
        }
    });
    accepted.response
}

/// Takes a polling session over: probe, then `5`, then this WebSocket carries the session.
async fn upgrade_session<H: EngineHandler>(
    engine: &Engine<H>,
    session: &Session<H>,
    socket: Arc<TcpStream>,
    reader: &mut MessageReader,
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
            match next_message(&socket, reader).await.ok()?? {
                Incoming::Close => return None,
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
                    match next_message(&socket, reader).await.ok()?? {
                        Incoming::Close => return None,
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
    conn.attach_socket(socket.clone());
    session.set_upgrade_stage(UpgradeStage::None);
    // A session that closed during the upgrade stops waiting for a final poll: this WebSocket
    // delivers its last packets and the close instead.
    session.final_poll_done.notify_one();
    tracing::debug!(sid = %conn.sid(), "upgraded to websocket");
    // The polling session's supervisor keeps its heartbeat and teardown.
    run_connection(engine, session, socket, reader, false).await;
}

/// The connection's one task; see the module comment. A connection that opened its session
/// supervises it (heartbeat, teardown); after an upgrade, the polling session's supervisor does.
///
/// Its arguments are references where they can be: an async function keeps every argument for
/// its whole life, and this one lives as long as the connection.
async fn run_connection<H: EngineHandler>(
    engine: &Engine<H>,
    session: &Session<H>,
    socket: Arc<TcpStream>,
    reader: &mut MessageReader,
    owns_session: bool,
) {
    let conn = &session.conn;
    let _open = engine.traffic().writer_opened();
    // Separate steps, so that the task's size is the larger of the two, not their sum.
    let reason = serve(engine, session, &socket, reader, owns_session).await;
    if owns_session {
        report_closed(engine, session, reason);
        engine.remove_session(conn.sid());
    }
    finish(conn, &socket, reason).await;
    // Flushed: a server shutdown need not wait for the peer's side of the close.
    drop(_open);
    close_gracefully(socket, CLOSE_LINGER).await;
}

/// Reads, handles, writes and keeps the heartbeat until the session closes; returns why.
async fn serve<H: EngineHandler>(
    engine: &Engine<H>,
    session: &Session<H>,
    socket: &TcpStream,
    reader: &mut MessageReader,
    owns_session: bool,
) -> CloseReason {
    let conn = &session.conn;
    let mut heartbeat = owns_session.then(|| Heartbeat::new(engine, Instant::now()));
    let mut backlog = true;
    let timer = sleep_until(
        heartbeat
            .as_ref()
            .map_or_else(far_future, Heartbeat::next_wake),
    );
    tokio::pin!(timer);
    loop {
        handle_messages(engine, session, reader);
        match conn.write_queued() {
            Ok(done) => backlog = !done,
            Err(_) => conn.close(CloseReason::TransportError),
        }
        if let Some(heartbeat) = heartbeat.as_mut() {
            heartbeat.check_pong(engine, conn);
            let wake = heartbeat.next_wake();
            if wake != timer.deadline() {
                timer.as_mut().reset(wake);
            }
        }
        if let Some(reason) = conn.close_reason() {
            return reason;
        }
        // Poll-style readiness: the waker waits in the socket's own slots, not in a future
        // stored in this task (an idle connection's task is mostly what it waits on).
        let io = std::future::poll_fn(|cx| {
            match socket.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Ok(true)),
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => {}
            }
            if backlog {
                socket.poll_write_ready(cx).map_ok(|()| false)
            } else {
                Poll::Pending
            }
        });
        tokio::select! {
            biased;
            () = conn.consumer_wake.notified() => {}
            readable = io => match readable {
                Ok(true) => match read_available(socket, reader) {
                    Ok(ReadOutcome::Data | ReadOutcome::WouldBlock) => {}
                    Ok(ReadOutcome::Eof) | Err(_) => conn.close(CloseReason::TransportClose),
                },
                // Writable: the queue is written above, on the next turn.
                Ok(false) => {}
                Err(_) => conn.close(CloseReason::TransportError),
            },
            () = &mut timer, if heartbeat.is_some() => {
                if let Some(heartbeat) = heartbeat.as_mut() {
                    heartbeat.on_timer(engine, session);
                }
            }
        }
    }
}

/// Writes what is still queued (when the reason keeps it) and the close frame.
async fn finish(conn: &EngineConn, socket: &TcpStream, reason: CloseReason) {
    conn.queue_final(Frame::close(reason.websocket_code()));
    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, async {
        while let Ok(false) = conn.write_queued() {
            if std::future::poll_fn(|cx| socket.poll_write_ready(cx))
                .await
                .is_err()
            {
                break;
            }
        }
    })
    .await;
    conn.detach_socket();
}

/// Moves a value out of its box and frees the box now (a box moved out of inside an async block
/// is freed only when the block ends).
#[allow(clippy::boxed_local)] // the point: the box is freed when this returns
fn unbox<T>(boxed: Box<T>) -> T {
    *boxed
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// Handles every complete message the reader holds, in order.
fn handle_messages<H: EngineHandler>(
    engine: &Engine<H>,
    session: &Session<H>,
    reader: &mut MessageReader,
) {
    let conn = &session.conn;
    while !conn.is_closed() {
        let message = match reader.next_message() {
            Ok(Some(message)) => message,
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(sid = %conn.sid(), %error, "WebSocket protocol error; closing the session");
                conn.close(match error {
                    ReadError::TooLarge => CloseReason::MessageTooLarge,
                    ReadError::Protocol(_) => CloseReason::TransportError,
                });
                return;
            }
        };
        let packet = match message {
            Incoming::Close => {
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
                EnginePacket::Binary(payload)
            }
            Incoming::Text(payload) => {
                engine.traffic().bytes_in.inc_by(payload.len() as u64);
                match decode_text_packet(payload) {
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
