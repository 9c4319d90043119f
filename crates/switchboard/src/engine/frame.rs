//! Ready-made outbound frames.
//!
//! A [`Frame`] is one Engine.IO packet already encoded as a complete server-to-client WebSocket
//! frame (server frames are unmasked, so the bytes are the same for every recipient). The polling
//! transport reads the same bytes minus the header. A broadcast builds its frames once and every
//! recipient's queue holds a cheap clone (a reference count), never a copy.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;

use crate::protocol::engine::encode_polling_binary;

/// The longest WebSocket header a server frame needs (2 + 8 bytes of extended length).
const MAX_HEADER: usize = 10;

const OPCODE_TEXT: u8 = 0x1;
const OPCODE_BINARY: u8 = 0x2;
const OPCODE_CLOSE: u8 = 0x8;
const OPCODE_PING: u8 = 0x9;
const OPCODE_PONG: u8 = 0xA;
/// The first header bit an extension may use: permessage-deflate's "compressed".
const RSV1: u8 = 0x40;

/// Messages shorter than this are not compressed (`[engine] compression_threshold`; one value
/// for the process, set when the engine starts).
static COMPRESSION_THRESHOLD: AtomicUsize = AtomicUsize::new(512);

/// Whether any connection of this process may have negotiated compression (an engine with
/// `[engine] compression` started): when not, a broadcast does not look.
static COMPRESSION_ON: AtomicBool = AtomicBool::new(false);

/// Sets the size under which messages are not compressed, and says compression is in use.
pub fn set_compression_threshold(bytes: usize) {
    COMPRESSION_THRESHOLD.store(bytes, Ordering::Relaxed);
    COMPRESSION_ON.store(true, Ordering::Relaxed);
}

/// Whether compression may be in use by some connection (see [`set_compression_threshold`]).
pub fn compression_on() -> bool {
    COMPRESSION_ON.load(Ordering::Relaxed)
}

/// The size under which messages are not compressed.
pub fn compression_threshold() -> usize {
    COMPRESSION_THRESHOLD.load(Ordering::Relaxed)
}

/// One outbound packet, encoded once, shareable between recipients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The buffer it was encoded in, room reserved for the longest header included: slicing the
    /// room off would cost an extra allocation per frame.
    bytes: Bytes,
    /// Where the WebSocket header starts in `bytes`.
    start: u8,
}

impl Frame {
    /// An Engine.IO message (`4` + text) whose text `write` appends to the buffer it is given.
    pub fn message(write: impl FnOnce(&mut Vec<u8>)) -> Self {
        let mut buf = Vec::with_capacity(MAX_HEADER + 64);
        buf.resize(MAX_HEADER, 0);
        buf.push(b'4');
        write(&mut buf);
        Self::seal(buf, OPCODE_TEXT)
    }

    /// Any Engine.IO text packet, type character included (`2`, `3probe`, `6`, `0{...}`).
    pub fn text_packet(packet: &[u8]) -> Self {
        Self::with_payload(packet, OPCODE_TEXT)
    }

    /// A binary Engine.IO message whose bytes `write` appends (a MessagePack packet).
    pub fn binary_message(write: impl FnOnce(&mut Vec<u8>)) -> Self {
        let mut buf = Vec::with_capacity(MAX_HEADER + 64);
        buf.resize(MAX_HEADER, 0);
        write(&mut buf);
        Self::seal(buf, OPCODE_BINARY)
    }

    /// A binary Engine.IO message (a binary attachment of a Socket.IO packet).
    pub fn binary(data: &[u8]) -> Self {
        Self::with_payload(data, OPCODE_BINARY)
    }

    /// A WebSocket close frame with a status code (only ever written on a WebSocket).
    pub fn close(code: u16) -> Self {
        Self::with_payload(&code.to_be_bytes(), OPCODE_CLOSE)
    }

    /// A WebSocket-level ping (the plain endpoint's heartbeat).
    pub fn ping() -> Self {
        Self::with_payload(b"", OPCODE_PING)
    }

    /// A WebSocket pong answering a client's WebSocket-level ping.
    pub fn pong(payload: &[u8]) -> Self {
        Self::with_payload(payload, OPCODE_PONG)
    }

    /// This message compressed for a WebSocket that negotiated permessage-deflate with a
    /// `window_bits` window (RSV1 set), when it is a data frame, not compressed already, and
    /// at least [`compression_threshold`] long; None otherwise (it goes as it is). Compressed
    /// once, the frame is shared like any other: every recipient writes the same bytes.
    pub fn deflated(&self, window_bits: u8) -> Option<Self> {
        let first = *self.bytes.get(usize::from(self.start))?;
        let data_frame = matches!(first & 0x0f, OPCODE_TEXT | OPCODE_BINARY);
        if !data_frame || first & RSV1 != 0 {
            return None;
        }
        let payload = self.payload();
        if payload.len() < compression_threshold() {
            return None;
        }
        let compressed = crate::websocket::deflate::compress(payload, window_bits);
        let mut buf = Vec::with_capacity(MAX_HEADER + compressed.len());
        buf.resize(MAX_HEADER, 0);
        buf.extend_from_slice(&compressed);
        Some(Self::seal(buf, (first & 0x0f) | RSV1))
    }

    /// Whether it is a compressed message (written as it is to a WebSocket that negotiated
    /// permessage-deflate, never to another).
    pub fn is_deflated(&self) -> bool {
        self.bytes
            .get(usize::from(self.start))
            .is_some_and(|b| b & RSV1 != 0)
    }

    fn with_payload(payload: &[u8], opcode: u8) -> Self {
        let mut buf = Vec::with_capacity(MAX_HEADER + payload.len());
        buf.resize(MAX_HEADER, 0);
        buf.extend_from_slice(payload);
        Self::seal(buf, opcode)
    }

    /// Writes the WebSocket header right before the payload, in the room reserved for it.
    fn seal(mut buf: Vec<u8>, opcode: u8) -> Self {
        let payload_len = buf.len() - MAX_HEADER;
        let mut header = [0u8; MAX_HEADER];
        header[0] = 0x80 | opcode;
        let header_len = if payload_len < 126 {
            header[1] = payload_len as u8;
            2
        } else if let Ok(len) = u16::try_from(payload_len) {
            header[1] = 126;
            header[2..4].copy_from_slice(&len.to_be_bytes());
            4
        } else {
            header[1] = 127;
            header[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            10
        };
        let start = MAX_HEADER - header_len;
        buf[start..MAX_HEADER].copy_from_slice(&header[..header_len]);
        // Frames may be kept a while (history, slow clients): no room left over.
        if buf.capacity() - buf.len() > 16 {
            buf.shrink_to_fit();
        }
        Self {
            bytes: Bytes::from(buf),
            start: start as u8,
        }
    }

    /// The complete WebSocket frame.
    pub fn websocket_bytes(&self) -> &[u8] {
        &self.bytes[usize::from(self.start)..]
    }

    /// The Engine.IO packet without the WebSocket header.
    pub fn payload(&self) -> &[u8] {
        &self.bytes[MAX_HEADER..]
    }

    pub(crate) fn opcode(&self) -> u8 {
        self.bytes
            .get(usize::from(self.start))
            .map_or(0, |b| b & 0x0f)
    }

    pub fn is_binary(&self) -> bool {
        self.opcode() == OPCODE_BINARY
    }

    /// Frames that only exist on a WebSocket (close, pong) have no polling form.
    pub fn is_websocket_control(&self) -> bool {
        self.opcode() >= OPCODE_CLOSE
    }

    /// Appends this packet's polling form: the text packet, or `b` + base64 for binary.
    pub fn append_polling(&self, out: &mut Vec<u8>) {
        if self.is_binary() {
            encode_polling_binary(self.payload(), out);
        } else {
            out.extend_from_slice(self.payload());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_text_frame_has_a_two_byte_header() {
        let frame = Frame::message(|out| out.extend_from_slice(b"hello"));
        assert_eq!(frame.websocket_bytes(), b"\x81\x064hello");
        assert_eq!(frame.payload(), b"4hello");
    }

    #[test]
    fn lengths_over_125_and_65535_use_extended_headers() {
        let medium = Frame::text_packet(&[b'4'; 300]);
        assert_eq!(&medium.websocket_bytes()[..4], &[0x81, 126, 1, 44]);
        assert_eq!(medium.payload().len(), 300);
        let large = Frame::binary(&vec![7u8; 70_000]);
        assert_eq!(&large.websocket_bytes()[..2], &[0x82, 127]);
        assert_eq!(&large.websocket_bytes()[2..10], &70_000u64.to_be_bytes());
        assert_eq!(large.payload().len(), 70_000);
    }

    #[test]
    fn polling_form_of_binary_is_base64() {
        let mut out = Vec::new();
        Frame::binary(&[1, 2, 3, 4]).append_polling(&mut out);
        assert_eq!(out, b"bAQIDBA==");
    }
}
