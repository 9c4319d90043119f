//! A WebSocket client that negotiates permessage-deflate (RFC 7692), for the fan-out scenario's
//! `--deflate-share`: the WebSocket crate the other clients use has no deflate, so this one
//! speaks the few parts it needs itself. It offers `permessage-deflate; client_max_window_bits`
//! as browsers do, refuses to go on if the server does not take it, inflates the server's
//! compressed messages and sends its own uncompressed (masked, as a client must).

use anyhow::{Context, bail};
use flate2::{Decompress, FlushDecompress, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::stream::Stream;

pub struct DeflateWs {
    stream: Stream,
    /// Bytes read and not yet a whole frame.
    pending: Vec<u8>,
    /// A fragmented message so far: its opcode, whether compressed, its bytes.
    partial: Option<(u8, bool, Vec<u8>)>,
}

impl DeflateWs {
    /// Opens `path` (with its query) on `stream` as a WebSocket that must negotiate deflate.
    pub async fn connect(mut stream: Stream, host: &str, path: &str) -> anyhow::Result<Self> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let (head, pending) = crate::client::read_head(&mut stream)
            .await
            .context("closed during the handshake")?;
        if !head.starts_with("http/1.1 101") {
            bail!(
                "upgrade refused: {}",
                head.lines().next().unwrap_or_default()
            );
        }
        if !head.contains("permessage-deflate") {
            bail!("the server did not negotiate permessage-deflate (is [engine] compression on?)");
        }
        Ok(Self {
            stream,
            pending,
            partial: None,
        })
    }

    /// The next message (pings are answered and skipped); None once the connection ends.
    pub async fn next(&mut self) -> Option<anyhow::Result<Message>> {
        loop {
            match self.take_frame() {
                Ok(Some(message)) => return Some(Ok(message)),
                Ok(None) => {}
                Err(error) => return Some(Err(error)),
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk).await {
                Ok(0) => return None,
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(error) => return Some(Err(error.into())),
            }
        }
    }

    /// A whole message from what was read, if there is one.
    fn take_frame(&mut self) -> anyhow::Result<Option<Message>> {
        loop {
            let Some((header, length)) = frame_header(&self.pending) else {
                return Ok(None);
            };
            if self.pending.len() < header + length {
                return Ok(None);
            }
            let first = self.pending[0];
            let payload: Vec<u8> = self.pending[header..header + length].to_vec();
            self.pending.drain(..header + length);
            let (fin, compressed, opcode) = (first & 0x80 != 0, first & 0x40 != 0, first & 0x0f);
            let (opcode, compressed, data) = match opcode {
                0x0 => {
                    let Some((opcode, compressed, mut data)) = self.partial.take() else {
                        bail!("a continuation without a message");
                    };
                    data.extend_from_slice(&payload);
                    (opcode, compressed, data)
                }
                0x8 => return Ok(Some(Message::Close(None))),
                0x9 | 0xA => continue,
                opcode => (opcode, compressed, payload),
            };
            if !fin {
                self.partial = Some((opcode, compressed, data));
                continue;
            }
            let data = if compressed { inflate(&data)? } else { data };
            return Ok(Some(match opcode {
                0x1 => Message::text(String::from_utf8(data).context("text that is not UTF-8")?),
                _ => Message::binary(data),
            }));
        }
    }

    /// Sends a text message, uncompressed.
    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        let payload = text.as_bytes();
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x81);
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x5a, 0x1c, 0x93, 0x07];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    /// Sends a close frame.
    pub async fn close(&mut self) {
        let _ = self
            .stream
            .write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8])
            .await;
    }
}

/// A server frame's header length and payload length, once the header is all there.
fn frame_header(bytes: &[u8]) -> Option<(usize, usize)> {
    let second = *bytes.get(1)?;
    let masked = second & 0x80 != 0;
    let (header, length) = match second & 0x7f {
        126 => (
            4,
            usize::from(u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?])),
        ),
        127 => {
            let raw: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
            (10, usize::try_from(u64::from_be_bytes(raw)).ok()?)
        }
        n => (2, usize::from(n)),
    };
    Some((header + if masked { 4 } else { 0 }, length))
}

/// A compressed message inflated (RFC 7692 7.2.2: the stream ends with `00 00 ff ff`).
fn inflate(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut input = data.to_vec();
    input.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
    let mut inflater = Decompress::new(false);
    let mut out = Vec::with_capacity(data.len() * 4 + 64);
    loop {
        let consumed = inflater.total_in() as usize;
        let status = inflater
            .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
            .context("a compressed message that does not inflate")?;
        let done = inflater.total_in() as usize >= input.len() && out.len() < out.capacity();
        if done || status == Status::StreamEnd {
            return Ok(out);
        }
        out.reserve(out.capacity().max(1024));
    }
}
