//! HTTP long-polling: the handshake GET, the long GET that carries the server's packets and the
//! POST that carries the client's, each payload joined by `\x1e`.
//!
//! At most one GET and one POST per session may be in flight; a second concurrent GET or POST is
//! a protocol error that ends the session, as does a GET the client aborts.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Request, StatusCode};

use super::conn::PollingState;
use super::session::{Session, UpgradeStage};
use super::{
    CloseReason, EngineError, EngineHandler, HttpResponse, RECORD_SEPARATOR_BYTE, TransportKind,
    request_info, response,
};
use super::{Engine, EngineConn, Frame};
use crate::http::{BodyReadError, read_body};
use crate::protocol::engine::{
    V3Packet, decode_polling_payload, decode_v3_payload, encode_v3_payload,
};

const TEXT_PLAIN: &str = "text/plain; charset=UTF-8";

/// A polling GET without a sid: opens a session and answers the open packet.
pub(super) fn handshake<H: EngineHandler, B>(
    engine: &Arc<Engine<H>>,
    request: Request<B>,
    query: Vec<(String, String)>,
    protocol: super::Protocol,
) -> HttpResponse {
    if engine.at_capacity() {
        return response(
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            Bytes::from_static(b"{\"code\":4,\"message\":\"Server at capacity\"}"),
        );
    }
    let info = request_info(&request, query, engine.config());
    if let Some(refusal) = engine.refuse_address(&info) {
        return refusal;
    }
    let session = engine.open_session(info, TransportKind::Polling, protocol);
    let upgrades: &[&str] = if engine.config().allow_websocket {
        &["websocket"]
    } else {
        &[]
    };
    let open = engine.open_packet(session.conn.sid(), upgrades);
    // What the server says first (v3: the implicit connect) waits for the first poll.
    engine.handler.on_ready(&session.state, &session.conn);
    let body = match protocol {
        super::Protocol::V4 => open.payload().to_vec(),
        // A v3 handshake answers with a payload holding the open packet.
        super::Protocol::V3 { b64 } => encode_v3_payload(&[V3Packet::Text(open.payload())], b64).0,
    };
    response(StatusCode::OK, TEXT_PLAIN, Bytes::from(body))
}

/// Ends the session if the GET it guards is dropped before it answered (the client went away).
struct PollGuard<'a> {
    conn: &'a EngineConn,
    polling: &'a PollingState,
    answered: bool,
}

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        self.polling.poll_in_flight.store(false, Ordering::Release);
        if !self.answered {
            self.conn.close(CloseReason::TransportClose);
        }
    }
}

/// The long GET: waits until there is something to send, then sends everything queued.
pub(super) async fn poll<H: EngineHandler>(
    engine: &Arc<Engine<H>>,
    session: Arc<Session<H>>,
) -> HttpResponse {
    let conn = &session.conn;
    if conn
        .close_reason()
        .is_some_and(|reason| !reason.answers_final_poll())
    {
        return EngineError::UnknownSid.response();
    }
    let Some(polling) = conn.polling() else {
        return EngineError::BadRequest.response();
    };
    if conn.transport() != TransportKind::Polling {
        return EngineError::BadRequest.response();
    }
    if polling.poll_in_flight.swap(true, Ordering::AcqRel) {
        tracing::debug!(sid = %conn.sid(), "duplicate polling GET; closing the session");
        conn.close(CloseReason::ForcedClose);
        return EngineError::BadRequest.response();
    }
    let mut guard = PollGuard {
        conn,
        polling,
        answered: false,
    };
    let mut frames = Vec::new();
    let body = loop {
        let woken = polling.consumer_wake.notified();
        if let Some(reason) = conn.close_reason() {
            // What was queued goes first, in its own answer: socket.io-client handles a close
            // at once but decoded packets on the next tick, so an event sharing a payload with
            // the close would reach a socket already closed. The close comes with the next GET.
            conn.drain_into(&mut frames);
            if !frames.is_empty() {
                break encode_payload(conn, &frames);
            }
            // A client's own close is acknowledged with a noop; any other close is announced.
            let packet = Frame::text_packet(if reason == CloseReason::ClientClose {
                b"6"
            } else {
                b"1"
            });
            engine.remove_session(conn.sid());
            polling.final_poll_done.notify_one();
            break encode_payload(conn, &[packet]);
        }
        if session.upgrade_stage() == UpgradeStage::Probed
            || conn.transport() != TransportKind::Polling
        {
            break encode_payload(conn, &[Frame::text_packet(b"6")]);
        }
        conn.drain_into(&mut frames);
        if !frames.is_empty() {
            break encode_payload(conn, &frames);
        }
        woken.await;
    };
    guard.answered = true;
    drop(guard);
    engine.traffic().count_sent(&frames);
    let (body, binary) = body;
    let content_type = if binary {
        "application/octet-stream"
    } else {
        TEXT_PLAIN
    };
    response(StatusCode::OK, content_type, Bytes::from(body))
}

/// A GET's body for this session's protocol, and whether it is binary (v3 only).
fn encode_payload(conn: &EngineConn, frames: &[Frame]) -> (Vec<u8>, bool) {
    match conn.protocol() {
        super::Protocol::V4 => (encode_v4_payload(frames), false),
        super::Protocol::V3 { b64 } => {
            let packets: Vec<V3Packet> = frames
                .iter()
                .filter(|f| !f.is_websocket_control())
                .map(|f| {
                    if f.is_binary() {
                        V3Packet::Binary(f.payload())
                    } else {
                        V3Packet::Text(f.payload())
                    }
                })
                .collect();
            encode_v3_payload(&packets, b64)
        }
    }
}

fn encode_v4_payload(frames: &[Frame]) -> Vec<u8> {
    let mut body = Vec::with_capacity(frames.iter().map(|f| f.payload().len() + 1).sum());
    for frame in frames.iter().filter(|f| !f.is_websocket_control()) {
        if !body.is_empty() {
            body.push(RECORD_SEPARATOR_BYTE);
        }
        frame.append_polling(&mut body);
    }
    body
}

/// Clears the session's POST flag however the POST ends.
struct PostGuard<'a>(&'a PollingState);

impl Drop for PostGuard<'_> {
    fn drop(&mut self) {
        self.0.post_in_flight.store(false, Ordering::Release);
    }
}

/// A POST: the client's packets, handed to the handler in order.
pub(super) async fn post<H: EngineHandler, B>(
    engine: &Arc<Engine<H>>,
    session: Arc<Session<H>>,
    request: Request<B>,
) -> HttpResponse
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = &session.conn;
    if conn.is_closed() {
        return EngineError::UnknownSid.response();
    }
    let Some(polling) = conn.polling() else {
        return EngineError::BadRequest.response();
    };
    if conn.transport() != TransportKind::Polling {
        return EngineError::BadRequest.response();
    }
    if polling.post_in_flight.swap(true, Ordering::AcqRel) {
        tracing::debug!(sid = %conn.sid(), "overlapping polling POST; closing the session");
        conn.close(CloseReason::TransportError);
        return EngineError::BadRequest.response();
    }
    let _guard = PostGuard(polling);
    let max_payload = engine.config().max_payload;
    let (parts, body) = request.into_parts();
    let read = read_body(
        &parts.headers,
        body,
        max_payload,
        engine.config().body_read_timeout,
    );
    let body = match read.await {
        Ok(body) => body,
        Err(BodyReadError::Aborted) => {
            conn.close(CloseReason::TransportClose);
            return EngineError::BadRequest.response();
        }
        Err(error) => {
            tracing::debug!(sid = %conn.sid(), max_payload, %error, "polling POST refused; closing the session");
            conn.close(CloseReason::TransportError);
            let (status, body): (_, &'static [u8]) = match error {
                BodyReadError::TimedOut => (
                    StatusCode::REQUEST_TIMEOUT,
                    b"{\"code\":3,\"message\":\"Request body not sent in time\"}",
                ),
                _ => (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    b"{\"code\":3,\"message\":\"Payload too large\"}",
                ),
            };
            return response(status, "application/json", Bytes::from_static(body));
        }
    };
    engine.traffic().bytes_in.inc_by(body.len() as u64);
    let decoded = if conn.eio3() {
        decode_v3_payload(body)
    } else {
        decode_polling_payload(body)
    };
    match decoded {
        Ok(packets) => {
            for packet in packets {
                engine.on_packet(&session, packet);
            }
            response(StatusCode::OK, "text/html", Bytes::from_static(b"ok"))
        }
        Err(error) => {
            tracing::debug!(sid = %conn.sid(), %error, "invalid polling payload; closing the session");
            conn.close(CloseReason::ParseError);
            EngineError::BadRequest.response()
        }
    }
}
