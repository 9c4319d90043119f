//! Socket.IO packets as ready-made engine frames, in the form the client's parser reads: with
//! the default parser, the packet's text in one frame, then one frame per binary attachment;
//! with socket.io-msgpack-parser, one binary frame holding everything. A broadcast calls these
//! once per form and shares the result with every recipient of that form.

use bytes::Bytes;
use serde_json::Value;

use crate::engine::Frame;
use crate::protocol::{msgpack, socket};

/// The parser a client speaks, told by its first packet: text is the default (JSON) parser's,
/// binary is socket.io-msgpack-parser's (a JSON client's first packet is never binary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Parser {
    #[default]
    Json,
    MsgPack,
    /// A socket.io v2 client (Socket.IO protocol v4 over Engine.IO v3): the default parser's
    /// text, but binary attachments carry the Engine.IO v3 type byte, and a CONNECT is answered
    /// with no payload.
    Legacy,
}

impl Parser {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::MsgPack => "msgpack",
            Self::Legacy => "socket.io-v2",
        }
    }
}

/// The frames of one outbound packet: a text frame, then its attachments.
pub type PacketFrames = Vec<Frame>;

fn with_attachments(parser: Parser, text: Frame, attachments: &[Bytes]) -> PacketFrames {
    let mut frames = Vec::with_capacity(1 + attachments.len());
    frames.push(text);
    frames.extend(attachments.iter().map(|data| match parser {
        // Engine.IO v3: a binary message starts with its type byte (4).
        Parser::Legacy => Frame::binary_message(|out| {
            out.push(4);
            out.extend_from_slice(data);
        }),
        _ => Frame::binary(data),
    }));
    frames
}

pub fn event(
    parser: Parser,
    namespace: &str,
    ack_id: Option<u64>,
    event: &str,
    args: &[Value],
    attachments: &[Bytes],
) -> PacketFrames {
    event_with_offset(parser, namespace, ack_id, event, args, attachments, None)
}

/// An event whose last argument is its recovery offset (when it has one).
pub fn event_with_offset(
    parser: Parser,
    namespace: &str,
    ack_id: Option<u64>,
    event: &str,
    args: &[Value],
    attachments: &[Bytes],
    offset: Option<&str>,
) -> PacketFrames {
    if parser == Parser::MsgPack {
        return vec![Frame::binary_message(|out| {
            msgpack::encode_event(out, namespace, ack_id, event, args, attachments, offset);
        })];
    }
    let text = Frame::message(|out| {
        socket::encode_event(out, namespace, ack_id, attachments.len(), event, args);
        if let Some(offset) = offset {
            // Replace the closing bracket: `[..., "offset"]`.
            out.pop();
            out.push(b',');
            let _ = serde_json::to_writer(&mut *out, offset);
            out.push(b']');
        }
    });
    with_attachments(parser, text, attachments)
}

pub fn ack(
    parser: Parser,
    namespace: &str,
    ack_id: u64,
    args: &[Value],
    attachments: &[Bytes],
) -> PacketFrames {
    if parser == Parser::MsgPack {
        return vec![Frame::binary_message(|out| {
            msgpack::encode_ack(out, namespace, ack_id, args, attachments);
        })];
    }
    let text =
        Frame::message(|out| socket::encode_ack(out, namespace, ack_id, attachments.len(), args));
    with_attachments(parser, text, attachments)
}

pub fn connect(parser: Parser, namespace: &str, sid: &str, pid: Option<&str>) -> Frame {
    match parser {
        Parser::Json => Frame::message(|out| socket::encode_connect(out, namespace, sid, pid)),
        // Protocol v4: `0` and the namespace, nothing else (the client derives the socket id).
        Parser::Legacy => Frame::message(|out| {
            out.push(b'0');
            if namespace != "/" {
                out.extend_from_slice(namespace.as_bytes());
                out.push(b',');
            }
        }),
        Parser::MsgPack => {
            Frame::binary_message(|out| msgpack::encode_connect(out, namespace, sid, pid))
        }
    }
}

pub fn connect_error(
    parser: Parser,
    namespace: &str,
    message: &str,
    data: Option<&Value>,
) -> Frame {
    match parser {
        Parser::Json | Parser::Legacy => {
            Frame::message(|out| socket::encode_connect_error(out, namespace, message, data))
        }
        Parser::MsgPack => Frame::binary_message(|out| {
            msgpack::encode_connect_error(out, namespace, message, data)
        }),
    }
}

pub fn disconnect(parser: Parser, namespace: &str) -> Frame {
    match parser {
        Parser::Json | Parser::Legacy => {
            Frame::message(|out| socket::encode_disconnect(out, namespace))
        }
        Parser::MsgPack => Frame::binary_message(|out| msgpack::encode_disconnect(out, namespace)),
    }
}

/// A stored event's JSON frames (text, then attachments) for a MessagePack client; `None` for
/// frames that are not such an event.
pub fn json_frames_as_msgpack(frames: &[Frame]) -> Option<PacketFrames> {
    let (text, attachments) = frames.split_first()?;
    // The payload is `4` + the Socket.IO packet.
    let packet = std::str::from_utf8(text.payload().get(1..)?).ok()?;
    let attachments: Vec<Bytes> = attachments
        .iter()
        .map(|frame| Bytes::copy_from_slice(frame.payload()))
        .collect();
    let mut converted = None;
    let frame = Frame::binary_message(|out| {
        converted = msgpack::from_json_packet(out, packet, &attachments);
    });
    converted.map(|()| vec![frame])
}
