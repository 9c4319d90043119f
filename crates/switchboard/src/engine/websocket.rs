//! The WebSocket transport: a session opened directly on WebSocket, or the upgrade of a polling
//! session (`2probe` / `3probe`, noop to the pending GET, `5`).
//!
//! Crate choice: `fastwebsockets` reads the client's frames (masked, possibly fragmented) from the
//! read half and gives us the obligated replies instead of writing them itself, so the write half
//! stays ours: the writer task sends our ready-made [`Frame`] bytes as they are, the same
//! allocation for every recipient of a broadcast, batching whatever is queued into one write.
//! With tokio-tungstenite every recipient re-frames (and copies) each message in its sink, and its
//! default 128 KiB read buffer per connection is what made idle connections expensive elsewhere;
//! fastwebsockets starts each connection with an 8 KiB read buffer. What was measured here is
//! the result with this choice (BENCHMARKS.md: 11.3 KB per idle connection, 10-13 µs of CPU per
//! delivery); a side-by-side run of the three crates was not made. The 8 KiB buffer, allocated
//! up front and not configurable, is now the largest part of an idle connection's cost.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use fastwebsockets::{OpCode, Role, WebSocketError, WebSocketRead};
use http::Request;
use http_body_util::Full;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};

use super::session::{Session, UpgradeStage};
use super::{
    CloseReason, Engine, EngineConn, EngineError, EngineHandler, Frame, HttpResponse,
    TransportKind, request_info,
};
use crate::protocol::engine::{EnginePacket, decode_text_packet};

type Io = TokioIo<Upgraded>;

/// A WebSocket request: accept it, then run the session (new, or an upgrade) in its own task.
pub(super) async fn handle<H: EngineHandler, B>(
    engine: &Arc<Engine<H>>,
    mut request: Request<B>,
    sid: Option<&str>,
    query: Vec<(String, String)>,
) -> HttpResponse {
    if !fastwebsockets::upgrade::is_upgrade_request(&request) {
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
                Bytes::from_static(b"{\"code\":4,\"message\":\"Server at capacity\"}"),
            );
        }
        None => None,
    };
    let info = request_info(&request, query);
    let (response, upgrade) = match fastwebsockets::upgrade::upgrade(&mut request) {
        Ok(pair) => pair,
        Err(_) => return EngineError::BadRequest.response(),
    };
    let engine = engine.clone();
    tokio::spawn(async move {
        let Ok(websocket) = upgrade.await else {
            return;
        };
        let (read, write) = tokio::io::split(websocket.into_inner());
        let (mut reader, _) =
            fastwebsockets::after_handshake_split(read, tokio::io::sink(), Role::Server);
        reader.set_auto_close(false);
        reader.set_auto_pong(true);
        // The frame carries the Engine.IO type byte on top of the message.
        reader.set_max_message_size(engine.config().max_payload + 2);
        match existing {
            Some(session) => upgrade_session(engine, session, reader, write).await,
            None => {
                let session = engine.open_session(info, TransportKind::WebSocket);
                let conn = session.conn.clone();
                let _ = conn.send(engine.open_packet(conn.sid(), &[]));
                tokio::spawn(write_loop(conn, write, engine.traffic().clone()));
                read_loop(&engine, &session, reader).await;
            }
        }
    });
    let (parts, _) = response.into_parts();
    HttpResponse::from_parts(parts, Full::default())
}

/// Takes a polling session over: probe, then `5`, then this WebSocket carries the session.
async fn upgrade_session<H: EngineHandler>(
    engine: Arc<Engine<H>>,
    session: Arc<Session<H>>,
    mut reader: WebSocketRead<ReadHalf<Io>>,
    mut write: WriteHalf<Io>,
) {
    if !session.begin_upgrade() {
        // Already upgraded or upgrading: this second WebSocket is refused, the session untouched.
        let _ = write.write_all(Frame::close(1008).websocket_bytes()).await;
        let _ = write.shutdown().await;
        return;
    }
    let conn = session.conn.clone();
    let deadline = tokio::time::Instant::now() + engine.config().upgrade_timeout;
    // Until the probe, a session that closes abandons the upgrade (polling delivers the close).
    let probe = async {
        loop {
            let frame = reader.read_frame(&mut ignore_obligations).await.ok()?;
            match frame.opcode {
                OpCode::Close => return None,
                OpCode::Text if &frame.payload[..] == b"2probe" => break,
                _ => {}
            }
        }
        write
            .write_all(Frame::text_packet(b"3probe").websocket_bytes())
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
                    let frame = reader.read_frame(&mut ignore_obligations).await.ok()?;
                    match frame.opcode {
                        OpCode::Close => return None,
                        OpCode::Text if &frame.payload[..] == b"5" => return Some(()),
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
        let _ = write.shutdown().await;
        return;
    }
    conn.set_transport(TransportKind::WebSocket);
    session.set_upgrade_stage(UpgradeStage::None);
    // A session that closed during the upgrade stops waiting for a final poll: this WebSocket
    // delivers its last packets and the close instead.
    session.final_poll_done.notify_one();
    tracing::debug!(sid = %conn.sid(), "upgraded to websocket");
    tokio::spawn(write_loop(conn, write, engine.traffic().clone()));
    read_loop(&engine, &session, reader).await;
}

async fn ignore_obligations(_: fastwebsockets::Frame<'_>) -> Result<(), std::convert::Infallible> {
    Ok(())
}

/// Reads the client's frames until the connection or the session ends.
async fn read_loop<H: EngineHandler>(
    engine: &Engine<H>,
    session: &Session<H>,
    mut reader: WebSocketRead<ReadHalf<Io>>,
) {
    let conn = session.conn.clone();
    let max_message = engine.config().max_payload + 2;
    let obligation_conn = conn.clone();
    let mut obligations = move |frame: fastwebsockets::Frame<'_>| {
        if frame.opcode == OpCode::Pong {
            let _ = obligation_conn.send(Frame::pong(&frame.payload));
        }
        std::future::ready(Ok::<(), std::convert::Infallible>(()))
    };
    // A message split into fragments: its opcode and what arrived so far.
    let mut fragmented: Option<(OpCode, BytesMut)> = None;
    loop {
        let frame = tokio::select! {
            _ = conn.closed() => return,
            frame = reader.read_frame(&mut obligations) => frame,
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => {
                conn.close(close_reason_for(&error));
                return;
            }
        };
        let complete = match frame.opcode {
            OpCode::Close => {
                conn.close(CloseReason::TransportClose);
                return;
            }
            OpCode::Ping | OpCode::Pong => continue,
            OpCode::Text | OpCode::Binary if frame.fin => {
                Some((frame.opcode, payload_bytes(frame.payload)))
            }
            OpCode::Text | OpCode::Binary => {
                fragmented = Some((frame.opcode, BytesMut::from(&frame.payload[..])));
                None
            }
            OpCode::Continuation => {
                let Some((opcode, mut buffer)) = fragmented.take() else {
                    conn.close(CloseReason::ParseError);
                    return;
                };
                if buffer.len() + frame.payload.len() > max_message {
                    conn.close(CloseReason::MessageTooLarge);
                    return;
                }
                buffer.extend_from_slice(&frame.payload);
                if frame.fin {
                    Some((opcode, buffer.freeze()))
                } else {
                    fragmented = Some((opcode, buffer));
                    None
                }
            }
        };
        let Some((opcode, payload)) = complete else {
            continue;
        };
        engine.traffic().bytes_in.inc_by(payload.len() as u64);
        let packet = if opcode == OpCode::Binary {
            EnginePacket::Binary(payload)
        } else {
            match decode_text_packet(payload) {
                Ok(packet) => packet,
                Err(error) => {
                    tracing::debug!(sid = %conn.sid(), %error, "invalid packet; closing the session");
                    conn.close(CloseReason::ParseError);
                    return;
                }
            }
        };
        engine.on_packet(session, packet);
    }
}

fn payload_bytes(payload: fastwebsockets::Payload<'_>) -> Bytes {
    match payload {
        fastwebsockets::Payload::Bytes(bytes) => bytes.freeze(),
        other => Bytes::copy_from_slice(&other),
    }
}

fn close_reason_for(error: &WebSocketError) -> CloseReason {
    match error {
        WebSocketError::FrameTooLarge => CloseReason::MessageTooLarge,
        WebSocketError::UnexpectedEOF | WebSocketError::ConnectionClosed => {
            CloseReason::TransportClose
        }
        WebSocketError::IoError(_) => CloseReason::TransportClose,
        _ => CloseReason::TransportError,
    }
}

/// Frames and batch bytes a writer keeps room for between writes; more is given back.
const KEPT_FRAMES: usize = 16;
const KEPT_BATCH_BYTES: usize = 16 * 1024;

/// Writes whatever the session queues, batching frames into one write, until it closes.
async fn write_loop(conn: Arc<EngineConn>, mut write: WriteHalf<Io>, traffic: Arc<super::Traffic>) {
    let _open = traffic.writer_opened();
    let mut frames = Vec::new();
    let mut batch = Vec::new();
    loop {
        let woken = conn.consumer_wake.notified();
        conn.drain_into(&mut frames);
        if !frames.is_empty() {
            let written = tokio::select! {
                result = write_frames(&mut write, &frames, &mut batch) => result.is_ok(),
                // A client that stopped reading must not hold this task once the session ends.
                reason = conn.closed(), if !conn.is_closed() => reason.flushes_queue(),
            };
            traffic.count_sent(&frames);
            frames.clear();
            // A burst must not leave every connection holding its peak buffers.
            frames.shrink_to(KEPT_FRAMES);
            if batch.capacity() > KEPT_BATCH_BYTES {
                batch = Vec::new();
            }
            if !written {
                conn.close(CloseReason::TransportError);
                return;
            }
            continue;
        }
        if let Some(reason) = conn.close_reason() {
            let close = Frame::close(reason.websocket_code());
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                let _ = write.write_all(close.websocket_bytes()).await;
                let _ = write.shutdown().await;
            })
            .await;
            return;
        }
        woken.await;
    }
}

/// Frames are small and many under fan-out: copy them into one buffer and write once, except a
/// large frame, which goes out as it is.
async fn write_frames(
    write: &mut WriteHalf<Io>,
    frames: &[Frame],
    batch: &mut Vec<u8>,
) -> std::io::Result<()> {
    const BATCH_LIMIT: usize = 64 * 1024;
    if let [frame] = frames {
        return write.write_all(frame.websocket_bytes()).await;
    }
    batch.clear();
    for frame in frames {
        let bytes = frame.websocket_bytes();
        if batch.len() + bytes.len() > BATCH_LIMIT && !batch.is_empty() {
            write.write_all(batch).await?;
            batch.clear();
        }
        if bytes.len() > BATCH_LIMIT {
            write.write_all(bytes).await?;
        } else {
            batch.extend_from_slice(bytes);
        }
    }
    if !batch.is_empty() {
        write.write_all(batch).await?;
    }
    Ok(())
}
