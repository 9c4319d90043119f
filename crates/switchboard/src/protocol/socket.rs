//! Socket.IO v5 packets: `<type>[<attachments>-][<nsp>,][<ack id>][<json>]`.
//!
//! [`decode_packet`] checks a packet's shape the way the reference parser does (an EVENT payload is
//! an array led by a non-reserved name, an ACK payload is an array, a CONNECT payload is an
//! object) so the hub only ever sees well-formed packets. The `encode_*` functions append a
//! packet's text to a buffer the caller owns, so a broadcast is encoded once, straight into the
//! bytes of its WebSocket frame.

use serde_json::Value;

/// At most this many binary attachments per packet, as in the reference decoder.
pub const MAX_ATTACHMENTS: usize = 10;

/// Event names a client may not send: the reference reserves them for the library itself.
pub const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// The Socket.IO packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    Connect = 0,
    Disconnect = 1,
    Event = 2,
    Ack = 3,
    ConnectError = 4,
    BinaryEvent = 5,
    BinaryAck = 6,
}

impl PacketKind {
    fn from_digit(digit: u8) -> Option<Self> {
        Some(match digit {
            b'0' => Self::Connect,
            b'1' => Self::Disconnect,
            b'2' => Self::Event,
            b'3' => Self::Ack,
            b'4' => Self::ConnectError,
            b'5' => Self::BinaryEvent,
            b'6' => Self::BinaryAck,
            _ => return None,
        })
    }

    fn digit(self) -> u8 {
        b'0' + self as u8
    }
}

/// A decoded packet from a client. For binary kinds, `attachments` binary messages follow it.
#[derive(Debug, Clone, PartialEq)]
pub struct SocketPacket {
    pub kind: PacketKind,
    pub namespace: String,
    pub ack_id: Option<u64>,
    pub attachments: usize,
    pub data: Option<Value>,
}

/// Why a client's packet was refused. Any of these closes that client's session.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SocketDecodeError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type")]
    UnknownType,
    #[error("invalid attachment count")]
    InvalidAttachments,
    #[error("too many attachments (at most {MAX_ATTACHMENTS})")]
    TooManyAttachments,
    #[error("invalid ack id")]
    InvalidAckId,
    #[error("payload is not valid JSON")]
    InvalidJson,
    #[error("invalid payload for this packet type")]
    InvalidPayload,
    #[error("reserved event name {0:?}")]
    ReservedEvent(String),
    #[error("a client may not send this packet type")]
    NotFromClient,
}

/// Decodes one Socket.IO packet (the text of an Engine.IO message).
/// How deep a packet's JSON may nest, its own array or object counted (`["e", [[1]]]` is three
/// deep): serde_json's recursion limit, past which the packet is invalid and closes its session.
pub const MAX_JSON_DEPTH: usize = 127;

pub fn decode_packet(text: &str) -> Result<SocketPacket, SocketDecodeError> {
    let bytes = text.as_bytes();
    let kind = PacketKind::from_digit(*bytes.first().ok_or(SocketDecodeError::Empty)?)
        .ok_or(SocketDecodeError::UnknownType)?;
    let mut at = 1;

    let mut attachments = 0;
    if matches!(kind, PacketKind::BinaryEvent | PacketKind::BinaryAck) {
        let dash = text[at..]
            .find('-')
            .ok_or(SocketDecodeError::InvalidAttachments)?;
        let count = &text[at..at + dash];
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SocketDecodeError::InvalidAttachments);
        }
        attachments = count
            .parse::<usize>()
            .map_err(|_| SocketDecodeError::TooManyAttachments)?;
        if attachments > MAX_ATTACHMENTS {
            return Err(SocketDecodeError::TooManyAttachments);
        }
        at += dash + 1;
    }

    let namespace = if bytes.get(at) == Some(&b'/') {
        match text[at..].find(',') {
            Some(comma) => {
                let nsp = &text[at..at + comma];
                at += comma + 1;
                nsp.to_owned()
            }
            None => {
                let nsp = &text[at..];
                at = text.len();
                nsp.to_owned()
            }
        }
    } else {
        "/".to_owned()
    };

    let digits = bytes[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let ack_id = if digits > 0 {
        let id = text[at..at + digits]
            .parse::<u64>()
            .map_err(|_| SocketDecodeError::InvalidAckId)?;
        at += digits;
        Some(id)
    } else {
        None
    };

    let rest = &text[at..];
    let data = if rest.is_empty() {
        None
    } else {
        Some(serde_json::from_str::<Value>(rest).map_err(|_| SocketDecodeError::InvalidJson)?)
    };

    check_payload(kind, ack_id, data.as_ref())?;
    Ok(SocketPacket {
        kind,
        namespace,
        ack_id,
        attachments,
        data,
    })
}

pub(crate) fn check_payload(
    kind: PacketKind,
    ack_id: Option<u64>,
    data: Option<&Value>,
) -> Result<(), SocketDecodeError> {
    match kind {
        PacketKind::Connect => match data {
            None | Some(Value::Object(_)) => Ok(()),
            Some(_) => Err(SocketDecodeError::InvalidPayload),
        },
        PacketKind::Disconnect => match data {
            None => Ok(()),
            Some(_) => Err(SocketDecodeError::InvalidPayload),
        },
        PacketKind::Event | PacketKind::BinaryEvent => {
            match data.and_then(Value::as_array).and_then(|a| a.first()) {
                Some(Value::String(name)) if RESERVED_EVENTS.contains(&name.as_str()) => {
                    Err(SocketDecodeError::ReservedEvent(name.clone()))
                }
                Some(Value::String(_)) | Some(Value::Number(_)) => Ok(()),
                _ => Err(SocketDecodeError::InvalidPayload),
            }
        }
        PacketKind::Ack | PacketKind::BinaryAck => match (ack_id, data) {
            (Some(_), Some(Value::Array(_))) => Ok(()),
            _ => Err(SocketDecodeError::InvalidPayload),
        },
        PacketKind::ConnectError => Err(SocketDecodeError::NotFromClient),
    }
}

/// Appends `<type>[<attachments>-][<nsp>,][<ack id>]`.
fn encode_header(
    out: &mut Vec<u8>,
    kind: PacketKind,
    namespace: &str,
    attachments: usize,
    ack_id: Option<u64>,
) {
    out.push(kind.digit());
    if matches!(kind, PacketKind::BinaryEvent | PacketKind::BinaryAck) {
        out.extend_from_slice(itoa::Buffer::new().format(attachments).as_bytes());
        out.push(b'-');
    }
    if namespace != "/" {
        out.extend_from_slice(namespace.as_bytes());
        out.push(b',');
    }
    if let Some(id) = ack_id {
        out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
    }
}

fn write_json(out: &mut Vec<u8>, value: &Value) {
    // Writing a `Value` into a Vec cannot fail: its keys are strings and the writer is memory.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// EVENT (or BINARY_EVENT when `attachments > 0`): `["event", ...args]`.
pub fn encode_event(
    out: &mut Vec<u8>,
    namespace: &str,
    ack_id: Option<u64>,
    attachments: usize,
    event: &str,
    args: &[Value],
) {
    let kind = if attachments > 0 {
        PacketKind::BinaryEvent
    } else {
        PacketKind::Event
    };
    encode_header(out, kind, namespace, attachments, ack_id);
    out.push(b'[');
    let _ = serde_json::to_writer(&mut *out, event);
    for arg in args {
        out.push(b',');
        write_json(out, arg);
    }
    out.push(b']');
}

/// ACK (or BINARY_ACK when `attachments > 0`): `[...args]`.
pub fn encode_ack(
    out: &mut Vec<u8>,
    namespace: &str,
    ack_id: u64,
    attachments: usize,
    args: &[Value],
) {
    let kind = if attachments > 0 {
        PacketKind::BinaryAck
    } else {
        PacketKind::Ack
    };
    encode_header(out, kind, namespace, attachments, Some(ack_id));
    out.push(b'[');
    for (index, arg) in args.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_json(out, arg);
    }
    out.push(b']');
}

/// The server's CONNECT reply: `{"sid": ...}` plus `"pid"` when recovery is on.
pub fn encode_connect(out: &mut Vec<u8>, namespace: &str, sid: &str, pid: Option<&str>) {
    encode_header(out, PacketKind::Connect, namespace, 0, None);
    out.extend_from_slice(b"{\"sid\":");
    let _ = serde_json::to_writer(&mut *out, sid);
    if let Some(pid) = pid {
        out.extend_from_slice(b",\"pid\":");
        let _ = serde_json::to_writer(&mut *out, pid);
    }
    out.push(b'}');
}

/// CONNECT_ERROR: `{"message": ..., "data"?: ...}`.
pub fn encode_connect_error(
    out: &mut Vec<u8>,
    namespace: &str,
    message: &str,
    data: Option<&Value>,
) {
    encode_header(out, PacketKind::ConnectError, namespace, 0, None);
    out.extend_from_slice(b"{\"message\":");
    let _ = serde_json::to_writer(&mut *out, message);
    if let Some(data) = data {
        out.extend_from_slice(b",\"data\":");
        write_json(out, data);
    }
    out.push(b'}');
}

/// DISCONNECT sent by the server.
pub fn encode_disconnect(out: &mut Vec<u8>, namespace: &str) {
    encode_header(out, PacketKind::Disconnect, namespace, 0, None);
}

/// Is `value` a binary placeholder `{"_placeholder":true,"num":N}` with `N < attachments`?
pub fn is_placeholder(value: &Value, attachments: usize) -> bool {
    value.as_object().is_some_and(|object| {
        object.get("_placeholder") == Some(&Value::Bool(true))
            && object
                .get("num")
                .and_then(Value::as_u64)
                .is_some_and(|num| (num as usize) < attachments)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn encoded(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_number_a_client_sends_goes_out_as_it_came() {
        // Found by fuzzing: without exact float parsing, 99999999999949999992 came back as
        // 9.999999999995001e19 in the broadcast built from it.
        let p =
            decode_packet(r#"2["n",99999999999949999992,0.1,1e-7,123456789.123456789]"#).unwrap();
        let Some(Value::Array(items)) = p.data else {
            panic!("an event");
        };
        let out = encoded(|out| encode_event(out, "/", None, 0, "n", &items[1..]));
        assert_eq!(
            out,
            r#"2["n",9.999999999995e+19,0.1,1e-7,123456789.12345679]"#
        );
    }

    #[test]
    fn decodes_connect_with_and_without_namespace_comma() {
        let p = decode_packet("0").unwrap();
        assert_eq!(
            (p.kind, p.namespace.as_str(), p.data),
            (PacketKind::Connect, "/", None)
        );
        let p = decode_packet("0/custom,{\"token\":\"abc\"}").unwrap();
        assert_eq!(p.namespace, "/custom");
        assert_eq!(p.data, Some(json!({"token": "abc"})));
        assert_eq!(decode_packet("0/custom").unwrap().namespace, "/custom");
        assert_eq!(
            decode_packet("1/custom").unwrap().kind,
            PacketKind::Disconnect
        );
        assert_eq!(
            decode_packet("0[1]"),
            Err(SocketDecodeError::InvalidPayload)
        );
    }

    #[test]
    fn json_nests_at_most_max_json_depth() {
        // The packet's array is one level; the argument brings the rest.
        let nested = |depth: usize| {
            let inner = depth - 1;
            format!("2[\"e\",{}{}]", "[".repeat(inner), "]".repeat(inner))
        };
        assert!(decode_packet(&nested(MAX_JSON_DEPTH)).is_ok());
        assert_eq!(
            decode_packet(&nested(MAX_JSON_DEPTH + 1)),
            Err(SocketDecodeError::InvalidJson)
        );
    }

    #[test]
    fn decodes_events_with_ack_ids_and_attachments() {
        let p = decode_packet("2456[\"message-with-ack\",1,\"2\"]").unwrap();
        assert_eq!(p.ack_id, Some(456));
        assert_eq!(p.data, Some(json!(["message-with-ack", 1, "2"])));
        let p = decode_packet("52-789[\"m\",{\"_placeholder\":true,\"num\":0}]").unwrap();
        assert_eq!(
            (p.kind, p.attachments, p.ack_id),
            (PacketKind::BinaryEvent, 2, Some(789))
        );
        let p = decode_packet("3/admin,12[]").unwrap();
        assert_eq!(
            (p.kind, p.namespace.as_str(), p.ack_id),
            (PacketKind::Ack, "/admin", Some(12))
        );
    }

    #[test]
    fn refuses_malformed_packets() {
        assert_eq!(decode_packet(""), Err(SocketDecodeError::Empty));
        assert_eq!(decode_packet("abc"), Err(SocketDecodeError::UnknownType));
        assert_eq!(decode_packet("2{}"), Err(SocketDecodeError::InvalidPayload));
        assert_eq!(decode_packet("2[]"), Err(SocketDecodeError::InvalidPayload));
        assert_eq!(
            decode_packet("2abc[\"m\"]"),
            Err(SocketDecodeError::InvalidJson)
        );
        assert_eq!(
            decode_packet("2[\"disconnect\"]"),
            Err(SocketDecodeError::ReservedEvent("disconnect".into()))
        );
        assert_eq!(
            decode_packet("3[1]"),
            Err(SocketDecodeError::InvalidPayload)
        );
        assert_eq!(
            decode_packet("511-[\"m\"]"),
            Err(SocketDecodeError::TooManyAttachments)
        );
        assert_eq!(
            decode_packet("5[\"m\"]"),
            Err(SocketDecodeError::InvalidAttachments)
        );
        assert_eq!(decode_packet("4{}"), Err(SocketDecodeError::NotFromClient));
        assert_eq!(
            decode_packet("299999999999999999999999[\"m\"]"),
            Err(SocketDecodeError::InvalidAckId)
        );
    }

    #[test]
    fn encodes_compactly_keeping_key_order() {
        let args = [json!(1), json!("2"), json!({"3": [true], "a": null})];
        assert_eq!(
            encoded(|o| encode_event(o, "/", None, 0, "message-back", &args)),
            r#"2["message-back",1,"2",{"3":[true],"a":null}]"#
        );
        assert_eq!(
            encoded(|o| encode_event(o, "/custom", Some(7), 2, "m", &[])),
            r#"52-/custom,7["m"]"#
        );
        assert_eq!(
            encoded(|o| encode_ack(o, "/", 456, 0, &args[..1])),
            "3456[1]"
        );
        assert_eq!(encoded(|o| encode_ack(o, "/x", 1, 1, &[])), "61-/x,1[]");
        assert_eq!(
            encoded(|o| encode_connect(o, "/custom", "abc", None)),
            r#"0/custom,{"sid":"abc"}"#
        );
        assert_eq!(
            encoded(|o| encode_connect_error(o, "/random", "Invalid namespace", None)),
            r#"4/random,{"message":"Invalid namespace"}"#
        );
        assert_eq!(encoded(|o| encode_disconnect(o, "/")), "1");
    }

    #[test]
    fn recognises_placeholders() {
        assert!(is_placeholder(&json!({"_placeholder": true, "num": 1}), 2));
        assert!(!is_placeholder(&json!({"_placeholder": true, "num": 2}), 2));
        assert!(!is_placeholder(&json!({"num": 0}), 2));
    }
}
