//! WebSocket plumbing shared by the Engine.IO transport and the plain WebSocket endpoint:
//! answering the HTTP upgrade (RFC 6455 handshake) and taking the connection back from hyper
//! (a [`Socket`], in the clear or inside TLS, `socket.rs`), and [`MessageReader`], which turns the bytes a client sends (masked, possibly
//! fragmented frames) into messages. Frame headers are parsed by tungstenite's `FrameHeader` and
//! the accept key is derived by tungstenite; the reader itself does no I/O.
//!
//! Why not a whole WebSocket stream from a crate: an idle connection must cost almost nothing,
//! and every crate's stream keeps a read buffer per connection from the start (8 KiB in
//! fastwebsockets, 128 KiB by default in tungstenite). Here the owner reads what the socket has
//! into a scratch buffer on its own stack and the reader keeps only an incomplete frame, so an
//! idle connection holds no buffer at all. Outbound frames are `engine::Frame`s: ready-made
//! bytes that their owners write straight to the stream.

pub mod deflate;
mod socket;

use std::io::{Cursor, IoSlice};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

pub use deflate::Deflate;
pub use socket::Socket;

use crate::http::HttpResponse;
use crate::tls::TlsStream;

/// True when `headers` list `token` (case-insensitively) in a comma-separated header.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|part| part.trim().eq_ignore_ascii_case(token))
}

/// Whether a request asks for a WebSocket upgrade at all.
pub fn is_upgrade_request<B>(request: &Request<B>) -> bool {
    let headers = request.headers();
    has_token(headers, header::CONNECTION, "upgrade")
        && has_token(headers, header::UPGRADE, "websocket")
}

/// Why an upgrade request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("not a WebSocket upgrade request")]
    NotUpgrade,
    #[error("only WebSocket version 13 is supported")]
    UnsupportedVersion,
    #[error("the Sec-WebSocket-Key header is missing")]
    MissingKey,
}

/// An accepted upgrade: send `response`, then await [`PendingUpgrade::stream`].
pub struct Accepted {
    pub response: HttpResponse,
    pub upgrade: PendingUpgrade,
    /// permessage-deflate, when it was offered and taken (see [`accept_with`]).
    pub deflate: Option<Deflate>,
}

/// The connection hyper hands back once the 101 response has been written.
pub struct PendingUpgrade(hyper::upgrade::OnUpgrade);

impl PendingUpgrade {
    /// The connection, and any bytes hyper read past the HTTP request (they belong to the
    /// WebSocket). `None` if the connection went away or is neither TCP nor TLS over TCP.
    pub async fn stream(self) -> Option<(Socket, Bytes)> {
        let upgraded = self.0.await.ok()?;
        let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => return Some((Socket::plain(parts.io.into_inner()), parts.read_buf)),
            Err(upgraded) => upgraded,
        };
        match upgraded.downcast::<TokioIo<TlsStream>>() {
            Ok(parts) => {
                let TlsStream { tcp, session } = parts.io.into_inner();
                Some((Socket::tls(tcp, session), parts.read_buf))
            }
            Err(_) => {
                tracing::error!("a WebSocket upgrade did not come from a TCP or TLS stream");
                None
            }
        }
    }
}

/// Checks an upgrade request and builds the 101 answer (RFC 6455 section 4.2.2), with no
/// extension.
pub fn accept<B>(request: &mut Request<B>) -> Result<Accepted, HandshakeError> {
    accept_with(request, false)
}

/// As [`accept`]; with `compression`, takes the client's first permessage-deflate offer this
/// server can honour (`deflate.rs`).
pub fn accept_with<B>(
    request: &mut Request<B>,
    compression: bool,
) -> Result<Accepted, HandshakeError> {
    if !is_upgrade_request(request) {
        return Err(HandshakeError::NotUpgrade);
    }
    let headers = request.headers();
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|version| version.as_bytes() != b"13")
    {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(HandshakeError::MissingKey)?;
    let accept_key = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let accept_value =
        HeaderValue::from_str(&accept_key).map_err(|_| HandshakeError::MissingKey)?;
    let mut response = HttpResponse::new(Full::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let response_headers = response.headers_mut();
    response_headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    response_headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    response_headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept_value);
    let deflate = compression
        .then(|| {
            let offers = request.headers().get_all(header::SEC_WEBSOCKET_EXTENSIONS);
            deflate::choose_offer(offers.iter().filter_map(|v| v.to_str().ok()))
        })
        .flatten();
    let deflate = deflate.filter(|chosen| {
        HeaderValue::from_str(&chosen.response())
            .map(|value| {
                (response.headers_mut()).insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
            })
            .is_ok()
    });
    Ok(Accepted {
        response,
        upgrade: PendingUpgrade(hyper::upgrade::on(request)),
        deflate,
    })
}

/// One complete message or control frame from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A text message, checked to be UTF-8.
    Text(Bytes),
    Binary(Bytes),
    /// A WebSocket ping: answer with a pong carrying the same bytes.
    Ping(Bytes),
    Pong,
    /// The client's close frame, with its status code when it gave one (checked: a code a peer
    /// may send, and a UTF-8 reason). Answer with [`MessageReader::close_code`].
    Close(Option<u16>),
}

/// The client broke the WebSocket protocol or a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("message larger than the limit")]
    TooLarge,
    #[error("text that is not UTF-8")]
    InvalidUtf8,
    #[error("{0}")]
    Protocol(&'static str),
}

impl ReadError {
    /// The status code the connection is closed with (RFC 6455 section 7.4.1): 1009 for a
    /// message over the limit, 1007 for text that is not UTF-8, 1002 for a protocol error.
    pub fn close_code(self) -> u16 {
        match self {
            Self::TooLarge => 1009,
            Self::InvalidUtf8 => 1007,
            Self::Protocol(_) => 1002,
        }
    }
}

/// Whether a peer may send `code` in a close frame (RFC 6455 section 7.4): the codes defined
/// for use (1000-1003, 1007-1011, and 1012-1014 registered since), and 3000-4999 for libraries
/// and applications. 1004-1006 and 1015 are reserved and never sent; the rest is undefined.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Turns the bytes a client sends into messages; see the module comment.
#[derive(Debug)]
pub struct MessageReader {
    /// Bytes received and not yet turned into a message (an incomplete frame).
    pending: BytesMut,
    /// A fragmented message in progress (boxed: rare, and every connection holds a reader).
    fragmented: Option<Box<Fragmented>>,
    /// At most 4 GiB: a `u32` leaves room for `close_code` in what a `usize` took.
    max_message: u32,
    /// The status code to close with once the reader returned an error or the client's close
    /// (0 before: no close frame carries 0).
    close_code: u16,
    /// permessage-deflate was negotiated: a message whose first frame has RSV1 is compressed.
    deflate: bool,
}

/// A message whose fragments are still arriving.
#[derive(Debug)]
struct Fragmented {
    is_text: bool,
    /// Its bytes are compressed (inflated, and checked as UTF-8, once complete).
    compressed: bool,
    data: BytesMut,
    /// How much of a text message's `data` is known to be UTF-8: each fragment is checked as it
    /// arrives (a character may straddle two), so bad text fails before the message ends.
    utf8_checked: usize,
}

/// How much [`read_available`] takes off the socket at once.
pub const READ_CHUNK: usize = 16 * 1024;

/// The outcome of one [`read_available`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Bytes were read into the reader.
    Data,
    /// Nothing to read right now.
    WouldBlock,
    /// The peer closed its side.
    Eof,
}

/// Reads what the socket has right now into `reader`, without waiting. The scratch buffer lives
/// on this (synchronous) function's stack, so no connection keeps one while idle.
pub fn read_available(stream: &Socket, reader: &mut MessageReader) -> std::io::Result<ReadOutcome> {
    let mut chunk = [0u8; READ_CHUNK];
    match stream.try_read(&mut chunk) {
        Ok(0) => Ok(ReadOutcome::Eof),
        Ok(read) => {
            reader.push(&chunk[..read]);
            Ok(ReadOutcome::Data)
        }
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => Ok(ReadOutcome::WouldBlock),
        Err(error) => Err(error),
    }
}

/// Writes all of `bytes`, waiting for the socket as needed (for a writer that owns the socket's
/// write side; the Engine.IO transport writes through its session's outbox instead).
pub async fn write_all(socket: &Socket, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        socket.writable().await?;
        match socket.try_write_vectored(&[IoSlice::new(bytes)]) {
            Ok(written) => bytes = &bytes[written..],
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    // Inside TLS, the last bytes may still be in the session.
    while !socket.flush_pending()? {
        socket.writable().await?;
    }
    Ok(())
}

/// Ends a connection whose close frame was written: no more writes (FIN), then whatever the
/// client still sends is read and dropped until it closes its side too or `linger` passes.
/// Closing a socket with unread data resets the connection, and a reset can destroy the close
/// frame before the client reads it (the client then sees 1006 instead of the code).
pub async fn close_gracefully(socket: Arc<Socket>, linger: std::time::Duration) {
    let Ok(mut stream) = Arc::try_unwrap(socket) else {
        return;
    };
    stream.shutdown(linger).await;
    let _ = tokio::time::timeout(linger, async {
        while stream.readable().await.is_ok() {
            if !matches!(stream.discard_available(), Ok(true)) {
                break;
            }
        }
    })
    .await;
}

/// Waits for the client's next message.
pub async fn next_message(
    socket: &Socket,
    reader: &mut MessageReader,
) -> Result<Option<Incoming>, ReadError> {
    loop {
        if let Some(message) = reader.next_message()? {
            return Ok(Some(message));
        }
        if socket.readable().await.is_err() {
            return Ok(None);
        }
        if matches!(
            read_available(socket, reader),
            Ok(ReadOutcome::Eof) | Err(_)
        ) {
            return Ok(None);
        }
    }
}

impl MessageReader {
    /// `max_message`: the largest message (all fragments together) accepted, in bytes.
    pub fn new(max_message: usize) -> Self {
        Self {
            pending: BytesMut::new(),
            fragmented: None,
            max_message: u32::try_from(max_message).unwrap_or(u32::MAX),
            close_code: 0,
            deflate: false,
        }
    }

    /// Reads compressed messages too (permessage-deflate was negotiated); each is inflated to
    /// at most the message limit (past it: [`ReadError::TooLarge`], close 1009).
    pub fn with_deflate(mut self, deflate: bool) -> Self {
        self.deflate = deflate;
        self
    }

    /// The status code this connection's close frame carries, once the reader has returned an
    /// error (its [`ReadError::close_code`]) or the client's close (its code echoed, 1000 when it
    /// gave none, as RFC 6455 section 5.5.1 asks). `None` before either.
    pub fn close_code(&self) -> Option<u16> {
        (self.close_code != 0).then_some(self.close_code)
    }

    /// Adds bytes received from the client.
    pub fn push(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
    }

    /// True when no partial frame or message is held.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.fragmented.is_none()
    }

    /// The next complete message, if the bytes pushed so far hold one.
    pub fn next_message(&mut self) -> Result<Option<Incoming>, ReadError> {
        let read = self.read_message();
        match &read {
            Err(error) => self.close_code = error.close_code(),
            Ok(Some(Incoming::Close(code))) => self.close_code = code.unwrap_or(1000),
            Ok(_) => {}
        }
        read
    }

    fn read_message(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            let mut cursor = Cursor::new(&self.pending[..]);
            let parsed = FrameHeader::parse(&mut cursor)
                .map_err(|_| ReadError::Protocol("invalid frame header"))?;
            let Some((header, length)) = parsed else {
                self.release_if_empty();
                return Ok(None);
            };
            let header_len = cursor.position() as usize;
            if header.rsv2 || header.rsv3 || (header.rsv1 && !self.deflate) {
                return Err(ReadError::Protocol(
                    "reserved bits set without an extension",
                ));
            }
            let compressed = header.rsv1;
            if compressed && !matches!(header.opcode, OpCode::Data(Data::Text | Data::Binary)) {
                return Err(ReadError::Protocol(
                    "RSV1 on a control frame or a continuation",
                ));
            }
            let Some(mask) = header.mask else {
                return Err(ReadError::Protocol("client frames must be masked"));
            };
            let is_control = matches!(header.opcode, OpCode::Control(_));
            if is_control && (length > 125 || !header.is_final) {
                return Err(ReadError::Protocol("invalid control frame"));
            }
            let so_far = self
                .fragmented
                .as_ref()
                .map_or(0, |fragment| fragment.data.len());
            let length = usize::try_from(length).map_err(|_| ReadError::TooLarge)?;
            if !is_control && so_far.saturating_add(length) > self.max_message as usize {
                return Err(ReadError::TooLarge);
            }
            if self.pending.len() < header_len + length {
                // Room for the whole frame once, rather than growing step by step.
                self.pending
                    .reserve(header_len + length - self.pending.len());
                return Ok(None);
            }
            self.pending.advance(header_len);
            let mut payload = self.pending.split_to(length);
            unmask(&mut payload, mask);
            match header.opcode {
                OpCode::Control(Control::Close) => {
                    return Ok(Some(Incoming::Close(close_status(&payload)?)));
                }
                OpCode::Control(Control::Ping) => {
                    return Ok(Some(Incoming::Ping(payload.freeze())));
                }
                OpCode::Control(Control::Pong) => return Ok(Some(Incoming::Pong)),
                OpCode::Data(data @ (Data::Text | Data::Binary)) => {
                    if self.fragmented.is_some() {
                        return Err(ReadError::Protocol("a new message inside a fragmented one"));
                    }
                    let is_text = data == Data::Text;
                    let utf8_checked = if is_text && !compressed {
                        checked_utf8_prefix(&payload, header.is_final)?
                    } else {
                        0
                    };
                    if header.is_final {
                        return self.complete(is_text, compressed, payload).map(Some);
                    }
                    self.fragmented = Some(Box::new(Fragmented {
                        is_text,
                        compressed,
                        data: payload,
                        utf8_checked,
                    }));
                }
                OpCode::Data(Data::Continue) => {
                    let Some(mut fragment) = self.fragmented.take() else {
                        return Err(ReadError::Protocol("a continuation without a message"));
                    };
                    fragment.data.extend_from_slice(&payload);
                    if fragment.is_text && !fragment.compressed {
                        let from = fragment.utf8_checked;
                        fragment.utf8_checked +=
                            checked_utf8_prefix(&fragment.data[from..], header.is_final)?;
                    }
                    if header.is_final {
                        let Fragmented {
                            is_text,
                            compressed,
                            data,
                            ..
                        } = *fragment;
                        return self.complete(is_text, compressed, data).map(Some);
                    }
                    self.fragmented = Some(fragment);
                }
                OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                    return Err(ReadError::Protocol("unknown opcode"));
                }
            }
        }
    }

    /// A whole message: inflated when compressed (at most the message limit), its text
    /// checked as UTF-8.
    fn complete(
        &self,
        is_text: bool,
        compressed: bool,
        data: BytesMut,
    ) -> Result<Incoming, ReadError> {
        if !compressed {
            return Ok(message(is_text, data.freeze()));
        }
        let inflated =
            deflate::inflate(&data, self.max_message as usize).map_err(|error| match error {
                deflate::InflateError::TooLarge => ReadError::TooLarge,
                deflate::InflateError::Corrupt => {
                    ReadError::Protocol("a compressed message that does not inflate")
                }
            })?;
        if is_text {
            checked_utf8_prefix(&inflated, true)?;
        }
        Ok(message(is_text, Bytes::from(inflated)))
    }

    /// An idle connection keeps no buffer.
    /// (Even with no capacity left, an empty buffer split off a message may still share that
    /// message's allocation.)
    fn release_if_empty(&mut self) {
        if self.pending.is_empty() {
            self.pending = BytesMut::new();
        }
    }
}

/// How many leading bytes of `text` are known to be UTF-8. Unless `complete`, a character cut
/// at the end is left to be checked with the bytes that follow; anything else that is not UTF-8
/// fails (a text message is checked as it arrives, RFC 6455 section 8.1).
fn checked_utf8_prefix(text: &[u8], complete: bool) -> Result<usize, ReadError> {
    match std::str::from_utf8(text) {
        Ok(_) => Ok(text.len()),
        Err(error) if error.error_len().is_none() && !complete => Ok(error.valid_up_to()),
        Err(_) => Err(ReadError::InvalidUtf8),
    }
}

/// The status code of a close frame's payload: none, or two bytes (a code a peer may send)
/// followed by a UTF-8 reason (RFC 6455 section 5.5.1).
fn close_status(payload: &[u8]) -> Result<Option<u16>, ReadError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ReadError::Protocol("a close frame with a one-byte payload")),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !is_valid_close_code(code) {
                return Err(ReadError::Protocol("a close code a peer may not send"));
            }
            std::str::from_utf8(reason).map_err(|_| ReadError::InvalidUtf8)?;
            Ok(Some(code))
        }
    }
}

fn message(is_text: bool, payload: Bytes) -> Incoming {
    if is_text {
        Incoming::Text(payload)
    } else {
        Incoming::Binary(payload)
    }
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask) {
        *byte ^= key;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame as a browser sends it: masked, with the given first byte.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![first];
        match payload.len() {
            len if len < 126 => out.push(0x80 | len as u8),
            len if len <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        out
    }

    #[test]
    fn an_idle_reader_stays_small() {
        // Every WebSocket connection holds one: the limit as a u32 leaves room for the close
        // code in what a usize took (48 bytes before the close code was kept).
        let size = std::mem::size_of::<MessageReader>();
        println!("MessageReader: {size} bytes");
        assert!(size <= 48, "MessageReader grew to {size} bytes");
    }

    #[test]
    fn compressed_messages_are_read_only_when_negotiated_and_within_the_limit() {
        let text = b"4{\"order\":42,\"items\":[1,2,3]}".repeat(20);
        let compressed = deflate::compress(&text, 15);
        // Whole, and in two fragments (RSV1 on the first only).
        let mut reader = MessageReader::new(10_000).with_deflate(true);
        reader.push(&client_frame(0xC1, &compressed));
        let (head, tail) = compressed.split_at(compressed.len() / 2);
        reader.push(&client_frame(0x41, head));
        reader.push(&client_frame(0x80, tail));
        for _ in 0..2 {
            assert_eq!(
                reader.next_message(),
                Ok(Some(Incoming::Text(Bytes::from(text.clone()))))
            );
        }
        // Not negotiated: RSV1 is a protocol error.
        let mut plain = MessageReader::new(10_000);
        plain.push(&client_frame(0xC1, &compressed));
        assert!(matches!(plain.next_message(), Err(ReadError::Protocol(_))));
        // RSV1 on a continuation, or on a control frame.
        let mut reader = MessageReader::new(10_000).with_deflate(true);
        reader.push(&client_frame(0x01, b"4a"));
        reader.push(&client_frame(0xC0, b"b"));
        assert!(matches!(reader.next_message(), Err(ReadError::Protocol(_))));
        let mut reader = MessageReader::new(10_000).with_deflate(true);
        reader.push(&client_frame(0xC9, b""));
        assert!(matches!(reader.next_message(), Err(ReadError::Protocol(_))));
        // A small message that inflates past the limit: 1009.
        let mut reader = MessageReader::new(10_000).with_deflate(true);
        reader.push(&client_frame(0xC1, &deflate::compress(&[b'a'; 50_000], 15)));
        assert_eq!(reader.next_message(), Err(ReadError::TooLarge));
        assert_eq!(reader.close_code(), Some(1009));
        // Compressed text that is not UTF-8 once inflated: 1007.
        let mut reader = MessageReader::new(10_000).with_deflate(true);
        reader.push(&client_frame(0xC1, &deflate::compress(&[0xff, 0xfe], 15)));
        assert_eq!(reader.next_message(), Err(ReadError::InvalidUtf8));
    }

    #[test]
    fn reads_a_message_split_across_reads() {
        let frame = client_frame(0x81, b"4hello world");
        let mut reader = MessageReader::new(1000);
        reader.push(&frame[..3]);
        assert_eq!(reader.next_message(), Ok(None));
        reader.push(&frame[3..]);
        assert_eq!(
            reader.next_message(),
            Ok(Some(Incoming::Text(Bytes::from_static(b"4hello world"))))
        );
        assert_eq!(reader.next_message(), Ok(None));
        assert!(reader.is_idle());
        assert_eq!(
            reader.pending.capacity(),
            0,
            "an idle reader holds no buffer"
        );
    }

    #[test]
    fn joins_fragments_and_answers_control_frames_between_them() {
        let mut bytes = client_frame(0x02, &[1, 2]);
        bytes.extend(client_frame(0x89, b"hi"));
        bytes.extend(client_frame(0x80, &[3]));
        bytes.extend(client_frame(0x88, &1000u16.to_be_bytes()));
        let mut reader = MessageReader::new(1000);
        reader.push(&bytes);
        assert_eq!(
            reader.next_message(),
            Ok(Some(Incoming::Ping(Bytes::from_static(b"hi"))))
        );
        assert_eq!(
            reader.next_message(),
            Ok(Some(Incoming::Binary(Bytes::from_static(&[1, 2, 3]))))
        );
        assert_eq!(reader.next_message(), Ok(Some(Incoming::Close(Some(1000)))));
        assert_eq!(reader.close_code(), Some(1000));
    }

    #[test]
    fn text_must_be_utf8_and_fails_at_the_fragment_that_breaks_it() {
        let mut reader = MessageReader::new(1000);
        reader.push(&client_frame(0x81, &[b'a', 0xff]));
        assert_eq!(reader.next_message(), Err(ReadError::InvalidUtf8));
        assert_eq!(reader.close_code(), Some(1007));
        // A character split across fragments is fine ("é" is C3 A9).
        let mut reader = MessageReader::new(1000);
        reader.push(&client_frame(0x01, &[b'a', 0xc3]));
        reader.push(&client_frame(0x80, &[0xa9]));
        assert_eq!(
            reader.next_message(),
            Ok(Some(Incoming::Text(Bytes::from("aé"))))
        );
        // Fail fast: the first fragment is already invalid, before the message ends.
        let mut reader = MessageReader::new(1000);
        reader.push(&client_frame(
            0x01,
            &[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xf4, 0x90],
        ));
        assert_eq!(reader.next_message(), Err(ReadError::InvalidUtf8));
        // A cut character at the end of the message is invalid.
        let mut reader = MessageReader::new(1000);
        reader.push(&client_frame(0x01, b"ok"));
        reader.push(&client_frame(0x80, &[0xc3]));
        assert_eq!(reader.next_message(), Err(ReadError::InvalidUtf8));
        // Binary messages are not text.
        let mut reader = MessageReader::new(1000);
        reader.push(&client_frame(0x82, &[0xff]));
        assert_eq!(
            reader.next_message(),
            Ok(Some(Incoming::Binary(Bytes::from_static(&[0xff]))))
        );
    }

    #[test]
    fn close_frames_are_checked_and_their_code_echoed() {
        let close = |payload: &[u8]| {
            let mut reader = MessageReader::new(1000);
            reader.push(&client_frame(0x88, payload));
            (reader.next_message(), reader.close_code())
        };
        assert_eq!(close(&[]), (Ok(Some(Incoming::Close(None))), Some(1000)));
        let mut with_reason = 4000u16.to_be_bytes().to_vec();
        with_reason.extend_from_slice("bye ✓".as_bytes());
        assert_eq!(
            close(&with_reason),
            (Ok(Some(Incoming::Close(Some(4000)))), Some(4000))
        );
        for code in [1000u16, 1001, 1003, 1007, 1011, 1014, 3000, 4999] {
            assert_eq!(close(&code.to_be_bytes()).1, Some(code), "{code}");
        }
        assert_eq!(close(&[0x03]).1, Some(1002), "a one-byte payload");
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000,
        ] {
            assert_eq!(close(&code.to_be_bytes()).1, Some(1002), "{code}");
        }
        let mut bad_reason = 1000u16.to_be_bytes().to_vec();
        bad_reason.extend_from_slice(&[0xce, 0xba, 0xff]);
        assert_eq!(
            close(&bad_reason),
            (Err(ReadError::InvalidUtf8), Some(1007))
        );
    }

    #[test]
    fn long_lengths_and_the_size_limit() {
        let payload = vec![b'x'; 70_000];
        let mut reader = MessageReader::new(100_000);
        reader.push(&client_frame(0x81, &payload));
        assert_eq!(
            reader.next_message(),
            Ok(Some(Incoming::Text(Bytes::from(payload.clone()))))
        );
        let mut small = MessageReader::new(1000);
        // Refused from the header alone, before the payload arrives.
        small.push(&client_frame(0x81, &payload)[..14]);
        assert_eq!(small.next_message(), Err(ReadError::TooLarge));
        let mut fragments = MessageReader::new(1000);
        fragments.push(&client_frame(0x01, &[b'a'; 600]));
        fragments.push(&client_frame(0x80, &[b'a'; 600]));
        assert_eq!(fragments.next_message(), Err(ReadError::TooLarge));
    }

    #[test]
    fn protocol_errors() {
        let unmasked = [0x81, 0x01, b'a'];
        let mut reader = MessageReader::new(1000);
        reader.push(&unmasked);
        assert!(matches!(reader.next_message(), Err(ReadError::Protocol(_))));
        let mut reader = MessageReader::new(1000);
        reader.push(&client_frame(0x80, b"a"));
        assert!(matches!(reader.next_message(), Err(ReadError::Protocol(_))));
        let mut reader = MessageReader::new(1000);
        reader.push(&client_frame(0xC1, b"a"));
        assert!(matches!(reader.next_message(), Err(ReadError::Protocol(_))));
        let mut reader = MessageReader::new(1000);
        reader.push(&client_frame(0x83, b"a"));
        assert!(matches!(reader.next_message(), Err(ReadError::Protocol(_))));
        let mut reader = MessageReader::new(1000);
        reader.push(&client_frame(0x09, b"a"));
        assert!(matches!(reader.next_message(), Err(ReadError::Protocol(_))));
    }
}
