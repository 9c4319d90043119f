//! Socket.IO packets as ready-made engine frames: the packet's text in one frame, then one frame
//! per binary attachment. A broadcast calls these once and shares the result with every recipient.

use bytes::Bytes;
use serde_json::Value;

use crate::engine::Frame;
use crate::protocol::socket;

/// The frames of one outbound packet: a text frame, then its attachments.
pub type PacketFrames = Vec<Frame>;

fn with_attachments(text: Frame, attachments: &[Bytes]) -> PacketFrames {
    let mut frames = Vec::with_capacity(1 + attachments.len());
    frames.push(text);
    frames.extend(attachments.iter().map(|data| Frame::binary(data)));
    frames
}

pub fn event(
    namespace: &str,
    ack_id: Option<u64>,
    event: &str,
    args: &[Value],
    attachments: &[Bytes],
) -> PacketFrames {
    event_with_offset(namespace, ack_id, event, args, attachments, None)
}

/// An event whose last argument is its recovery offset (when it has one).
pub fn event_with_offset(
    namespace: &str,
    ack_id: Option<u64>,
    event: &str,
    args: &[Value],
    attachments: &[Bytes],
    offset: Option<&str>,
) -> PacketFrames {
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
    with_attachments(text, attachments)
}

pub fn ack(namespace: &str, ack_id: u64, args: &[Value], attachments: &[Bytes]) -> PacketFrames {
    let text =
        Frame::message(|out| socket::encode_ack(out, namespace, ack_id, attachments.len(), args));
    with_attachments(text, attachments)
}

pub fn connect(namespace: &str, sid: &str, pid: Option<&str>) -> Frame {
    Frame::message(|out| socket::encode_connect(out, namespace, sid, pid))
}

pub fn connect_error(namespace: &str, message: &str, data: Option<&Value>) -> Frame {
    Frame::message(|out| socket::encode_connect_error(out, namespace, message, data))
}

pub fn disconnect(namespace: &str) -> Frame {
    Frame::message(|out| socket::encode_disconnect(out, namespace))
}
