//! The MessagePack format of `socket.io-msgpack-parser`: one Socket.IO packet is one binary
//! Engine.IO message, a map `{type, data, nsp, id}` (no separate attachments: binary values are
//! MessagePack `bin` inside `data`). Read with rmpv, written with rmp.
//!
//! The hub keeps one model of a packet for every parser: JSON values, with binary values as
//! `{"_placeholder":true,"num":i}` and the bytes beside them as attachments. This module turns a
//! MessagePack packet into that model and back, so nothing above it knows which parser a
//! client uses. Pure functions, no I/O; bad input is an error, never a panic.

use bytes::Bytes;
use rmpv::Value as Msg;
use serde_json::{Map, Number, Value};

use super::socket::{
    MAX_ATTACHMENTS, PacketKind, SocketDecodeError, SocketPacket, check_payload, is_placeholder,
};

/// How deep a client's MessagePack may nest (arrays and maps); deeper is refused.
const MAX_DEPTH: usize = 128;

/// Decodes a client's packet: the packet as the JSON parser would give it, and its binary values
/// as attachments (in the order they appear).
pub fn decode(bytes: &[u8]) -> Result<(SocketPacket, Vec<Bytes>), SocketDecodeError> {
    let mut reader = bytes;
    let value = rmpv::decode::read_value_with_max_depth(&mut reader, MAX_DEPTH)
        .map_err(|_| SocketDecodeError::InvalidJson)?;
    if !reader.is_empty() {
        return Err(SocketDecodeError::InvalidJson);
    }
    let Msg::Map(fields) = value else {
        return Err(SocketDecodeError::InvalidPayload);
    };
    let (mut kind, mut namespace, mut ack_id, mut data) = (None, None, None, None);
    let mut attachments = Vec::new();
    let mut seen: Vec<&'static str> = Vec::with_capacity(4);
    for (key, value) in fields {
        // A field twice is malformed, as in a nested map: a first `data` with a binary value
        // would leave its attachment orphaned behind the second.
        let field = match key.as_str() {
            Some("type") => Some("type"),
            Some("nsp") => Some("nsp"),
            Some("id") => Some("id"),
            Some("data") => Some("data"),
            _ => None,
        };
        if let Some(name) = field {
            if seen.contains(&name) {
                return Err(SocketDecodeError::InvalidPayload);
            }
            seen.push(name);
        }
        match field {
            Some("type") => {
                kind = Some(match value.as_u64() {
                    Some(0) => PacketKind::Connect,
                    Some(1) => PacketKind::Disconnect,
                    Some(2) => PacketKind::Event,
                    Some(3) => PacketKind::Ack,
                    Some(4) => PacketKind::ConnectError,
                    _ => return Err(SocketDecodeError::UnknownType),
                });
            }
            Some("nsp") => match value {
                Msg::String(nsp) => {
                    namespace = Some(nsp.into_str().ok_or(SocketDecodeError::InvalidPayload)?);
                }
                _ => return Err(SocketDecodeError::InvalidPayload),
            },
            Some("id") => match value {
                Msg::Nil => {}
                value => {
                    ack_id = Some(value.as_u64().ok_or(SocketDecodeError::InvalidAckId)?);
                }
            },
            Some("data") => data = Some(to_json(value, &mut attachments)?),
            // `options` (the client's compress flag) and anything else: not ours to read.
            _ => {}
        }
    }
    let kind = kind.ok_or(SocketDecodeError::UnknownType)?;
    let namespace = namespace.ok_or(SocketDecodeError::InvalidPayload)?;
    // `data: null` is how some encoders write an absent payload.
    let data = data.filter(|data| !data.is_null());
    check_payload(kind, ack_id, data.as_ref())?;
    let kind = match (kind, attachments.is_empty()) {
        (PacketKind::Event, false) => PacketKind::BinaryEvent,
        (PacketKind::Ack, false) => PacketKind::BinaryAck,
        (kind, _) => kind,
    };
    Ok((
        SocketPacket {
            kind,
            namespace: if namespace.is_empty() {
                "/".to_owned()
            } else {
                namespace
            },
            ack_id,
            attachments: attachments.len(),
            data,
        },
        attachments,
    ))
}

/// A MessagePack value as JSON, its `bin` values moved to `attachments` (placeholders left).
fn to_json(value: Msg, attachments: &mut Vec<Bytes>) -> Result<Value, SocketDecodeError> {
    Ok(match value {
        Msg::Nil => Value::Null,
        Msg::Boolean(b) => Value::Bool(b),
        Msg::Integer(n) => match (n.as_u64(), n.as_i64()) {
            (Some(n), _) => Value::from(n),
            (None, Some(n)) => Value::from(n),
            (None, None) => Value::Null,
        },
        Msg::F32(f) => Number::from_f64(f64::from(f)).map_or(Value::Null, Value::Number),
        Msg::F64(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        Msg::String(s) => Value::String(s.into_str().ok_or(SocketDecodeError::InvalidPayload)?),
        Msg::Binary(bytes) => {
            let num = attachments.len();
            // At most as many as the JSON parser's attachments.
            if num >= MAX_ATTACHMENTS {
                return Err(SocketDecodeError::TooManyAttachments);
            }
            attachments.push(Bytes::from(bytes));
            serde_json::json!({ "_placeholder": true, "num": num })
        }
        Msg::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| to_json(item, attachments))
                .collect::<Result<_, _>>()?,
        ),
        Msg::Map(entries) => {
            let mut object = Map::with_capacity(entries.len());
            for (key, value) in entries {
                let key = match key {
                    Msg::String(key) => key.into_str().ok_or(SocketDecodeError::InvalidPayload)?,
                    Msg::Integer(n) => n.to_string(),
                    _ => return Err(SocketDecodeError::InvalidPayload),
                };
                // A key twice is malformed (and the first value, binary perhaps, would vanish).
                if object.insert(key, to_json(value, attachments)?).is_some() {
                    return Err(SocketDecodeError::InvalidPayload);
                }
            }
            Value::Object(object)
        }
        // An extension (notepack writes `undefined` and dates as such): no JSON meaning.
        Msg::Ext(..) => Value::Null,
    })
}

/// EVENT: `data` is `[event, ...args]`, placeholders in `args` written as the attachments' bytes.
pub fn encode_event(
    out: &mut Vec<u8>,
    namespace: &str,
    ack_id: Option<u64>,
    event: &str,
    args: &[Value],
    attachments: &[Bytes],
    offset: Option<&str>,
) {
    let fields = 3 + u32::from(ack_id.is_some());
    let _ = rmp::encode::write_map_len(out, fields);
    write_kind(out, PacketKind::Event);
    write_str(out, "data");
    let len = 1 + args.len() + usize::from(offset.is_some());
    let _ = rmp::encode::write_array_len(out, u32::try_from(len).unwrap_or(u32::MAX));
    write_str(out, event);
    for arg in args {
        write_value(out, arg, attachments);
    }
    if let Some(offset) = offset {
        write_str(out, offset);
    }
    write_nsp(out, namespace);
    if let Some(id) = ack_id {
        write_str(out, "id");
        let _ = rmp::encode::write_uint(out, id);
    }
}

/// ACK: `data` is the answer's arguments.
pub fn encode_ack(
    out: &mut Vec<u8>,
    namespace: &str,
    ack_id: u64,
    args: &[Value],
    attachments: &[Bytes],
) {
    let _ = rmp::encode::write_map_len(out, 4);
    write_kind(out, PacketKind::Ack);
    write_str(out, "data");
    let _ = rmp::encode::write_array_len(out, u32::try_from(args.len()).unwrap_or(u32::MAX));
    for arg in args {
        write_value(out, arg, attachments);
    }
    write_nsp(out, namespace);
    write_str(out, "id");
    let _ = rmp::encode::write_uint(out, ack_id);
}

/// CONNECT answered: `{sid, pid?}`.
pub fn encode_connect(out: &mut Vec<u8>, namespace: &str, sid: &str, pid: Option<&str>) {
    let _ = rmp::encode::write_map_len(out, 3);
    write_kind(out, PacketKind::Connect);
    write_str(out, "data");
    let _ = rmp::encode::write_map_len(out, 1 + u32::from(pid.is_some()));
    write_str(out, "sid");
    write_str(out, sid);
    if let Some(pid) = pid {
        write_str(out, "pid");
        write_str(out, pid);
    }
    write_nsp(out, namespace);
}

/// CONNECT_ERROR: `{message, data?}`.
pub fn encode_connect_error(
    out: &mut Vec<u8>,
    namespace: &str,
    message: &str,
    data: Option<&Value>,
) {
    let _ = rmp::encode::write_map_len(out, 3);
    write_kind(out, PacketKind::ConnectError);
    write_str(out, "data");
    let _ = rmp::encode::write_map_len(out, 1 + u32::from(data.is_some()));
    write_str(out, "message");
    write_str(out, message);
    if let Some(data) = data {
        write_str(out, "data");
        write_value(out, data, &[]);
    }
    write_nsp(out, namespace);
}

/// DISCONNECT sent by the server: no `data` at all (the client's parser refuses a `nil` one).
pub fn encode_disconnect(out: &mut Vec<u8>, namespace: &str) {
    let _ = rmp::encode::write_map_len(out, 2);
    write_kind(out, PacketKind::Disconnect);
    write_nsp(out, namespace);
}

/// Appends to `out` a JSON packet of the hub's model (`2["event",...]`, placeholders, and its
/// attachments) in MessagePack: for events stored as JSON frames and replayed to a MessagePack
/// client. `None` (nothing written) for what is not such an event.
pub fn from_json_packet(out: &mut Vec<u8>, text: &str, attachments: &[Bytes]) -> Option<()> {
    let packet = super::socket::decode_packet(text).ok()?;
    match packet.kind {
        PacketKind::Event | PacketKind::BinaryEvent => {
            let Some(Value::Array(items)) = packet.data else {
                return None;
            };
            let (event, args) = items.split_first()?;
            encode_event(
                out,
                &packet.namespace,
                packet.ack_id,
                event.as_str()?,
                args,
                attachments,
                None,
            );
        }
        _ => return None,
    }
    Some(())
}

fn write_kind(out: &mut Vec<u8>, kind: PacketKind) {
    write_str(out, "type");
    let _ = rmp::encode::write_uint(out, kind as u64);
}

fn write_nsp(out: &mut Vec<u8>, namespace: &str) {
    write_str(out, "nsp");
    write_str(out, namespace);
}

fn write_str(out: &mut Vec<u8>, text: &str) {
    // Writing into a Vec cannot fail.
    let _ = rmp::encode::write_str(out, text);
}

/// A JSON value as MessagePack; a placeholder naming one of `attachments` becomes its bytes.
fn write_value(out: &mut Vec<u8>, value: &Value, attachments: &[Bytes]) {
    match value {
        Value::Null => {
            let _ = rmp::encode::write_nil(out);
        }
        Value::Bool(b) => {
            let _ = rmp::encode::write_bool(out, *b);
        }
        Value::Number(n) => {
            if let Some(n) = n.as_u64() {
                let _ = rmp::encode::write_uint(out, n);
            } else if let Some(n) = n.as_i64() {
                let _ = rmp::encode::write_sint(out, n);
            } else {
                let _ = rmp::encode::write_f64(out, n.as_f64().unwrap_or(0.0));
            }
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            let _ = rmp::encode::write_array_len(out, u32::try_from(items.len()).unwrap_or(0));
            for item in items {
                write_value(out, item, attachments);
            }
        }
        Value::Object(object) => {
            if is_placeholder(value, attachments.len())
                && let Some(bytes) = object
                    .get("num")
                    .and_then(Value::as_u64)
                    .and_then(|num| attachments.get(num as usize))
            {
                let _ = rmp::encode::write_bin(out, bytes);
                return;
            }
            let _ = rmp::encode::write_map_len(out, u32::try_from(object.len()).unwrap_or(0));
            for (key, item) in object {
                write_str(out, key);
                write_value(out, item, attachments);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What notepack.io (the client parser's encoder) writes for `emit("chat", "hi", <bin>)`
    /// with an ack: a map with type, data, options, id, nsp.
    fn client_event() -> Vec<u8> {
        let mut out = Vec::new();
        rmp::encode::write_map_len(&mut out, 5).unwrap();
        rmp::encode::write_str(&mut out, "type").unwrap();
        rmp::encode::write_uint(&mut out, 2).unwrap();
        rmp::encode::write_str(&mut out, "data").unwrap();
        rmp::encode::write_array_len(&mut out, 3).unwrap();
        rmp::encode::write_str(&mut out, "chat").unwrap();
        rmp::encode::write_str(&mut out, "hi").unwrap();
        rmp::encode::write_bin(&mut out, &[1, 2, 3]).unwrap();
        rmp::encode::write_str(&mut out, "options").unwrap();
        rmp::encode::write_map_len(&mut out, 1).unwrap();
        rmp::encode::write_str(&mut out, "compress").unwrap();
        rmp::encode::write_bool(&mut out, true).unwrap();
        rmp::encode::write_str(&mut out, "id").unwrap();
        rmp::encode::write_uint(&mut out, 7).unwrap();
        rmp::encode::write_str(&mut out, "nsp").unwrap();
        rmp::encode::write_str(&mut out, "/chat").unwrap();
        out
    }

    #[test]
    fn a_client_event_becomes_the_json_model_with_attachments() {
        let (packet, attachments) = decode(&client_event()).unwrap();
        assert_eq!(packet.kind, PacketKind::BinaryEvent);
        assert_eq!(packet.namespace, "/chat");
        assert_eq!(packet.ack_id, Some(7));
        assert_eq!(packet.attachments, 1);
        assert_eq!(
            packet.data,
            Some(json!(["chat", "hi", { "_placeholder": true, "num": 0 }]))
        );
        assert_eq!(attachments, vec![Bytes::from_static(&[1, 2, 3])]);
    }

    #[test]
    fn an_event_encoded_for_a_client_reads_back_with_its_binary_inline() {
        let mut out = Vec::new();
        let args = [json!({ "file": { "_placeholder": true, "num": 0 }, "n": -3 })];
        encode_event(
            &mut out,
            "/",
            None,
            "upload",
            &args,
            &[Bytes::from_static(b"xyz")],
            Some("12"),
        );
        let value = rmpv::decode::read_value(&mut out.as_slice()).unwrap();
        let map: Vec<(String, Msg)> = value
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str().unwrap().to_owned(), v.clone()))
            .collect();
        assert_eq!(map[0], ("type".into(), Msg::from(2)));
        let data = map[1].1.as_array().unwrap();
        assert_eq!(data[0], Msg::from("upload"));
        let file = &data[1].as_map().unwrap()[0];
        assert_eq!(file.1, Msg::Binary(b"xyz".to_vec()));
        assert_eq!(data[2], Msg::from("12"), "the offset is the last argument");
        assert_eq!(map[2], ("nsp".into(), Msg::from("/")));
    }

    #[test]
    fn a_disconnect_carries_no_data_key() {
        let mut out = Vec::new();
        encode_disconnect(&mut out, "/x");
        let value = rmpv::decode::read_value(&mut out.as_slice()).unwrap();
        let keys: Vec<&str> = value
            .as_map()
            .unwrap()
            .iter()
            .filter_map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["type", "nsp"]);
    }

    #[test]
    fn bad_packets_are_errors_not_panics() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[0xc1]).is_err(), "a reserved byte");
        assert!(decode(&[0x93, 1, 2, 3]).is_err(), "an array, not a map");
        let mut deep = vec![0x91; 10_000];
        deep.push(0xc0);
        assert!(decode(&deep).is_err(), "nesting past the limit");
        // A CONNECT_ERROR may not come from a client; an EVENT needs a name.
        let mut out = Vec::new();
        rmp::encode::write_map_len(&mut out, 3).unwrap();
        rmp::encode::write_str(&mut out, "type").unwrap();
        rmp::encode::write_uint(&mut out, 2).unwrap();
        rmp::encode::write_str(&mut out, "data").unwrap();
        rmp::encode::write_array_len(&mut out, 0).unwrap();
        rmp::encode::write_str(&mut out, "nsp").unwrap();
        rmp::encode::write_str(&mut out, "/").unwrap();
        assert_eq!(decode(&out), Err(SocketDecodeError::InvalidPayload));
        // Too many binary values.
        let mut out = Vec::new();
        rmp::encode::write_map_len(&mut out, 3).unwrap();
        rmp::encode::write_str(&mut out, "type").unwrap();
        rmp::encode::write_uint(&mut out, 2).unwrap();
        rmp::encode::write_str(&mut out, "nsp").unwrap();
        rmp::encode::write_str(&mut out, "/").unwrap();
        rmp::encode::write_str(&mut out, "data").unwrap();
        rmp::encode::write_array_len(&mut out, 12).unwrap();
        rmp::encode::write_str(&mut out, "e").unwrap();
        for _ in 0..11 {
            rmp::encode::write_bin(&mut out, b"b").unwrap();
        }
        assert_eq!(decode(&out), Err(SocketDecodeError::TooManyAttachments));
    }

    #[test]
    fn a_packet_field_twice_is_malformed() {
        // A first `data` holding a binary value, then a second one: found by the fuzz target.
        let mut out = Vec::new();
        rmp::encode::write_map_len(&mut out, 4).unwrap();
        rmp::encode::write_str(&mut out, "type").unwrap();
        rmp::encode::write_uint(&mut out, 2).unwrap();
        rmp::encode::write_str(&mut out, "data").unwrap();
        rmp::encode::write_array_len(&mut out, 2).unwrap();
        rmp::encode::write_str(&mut out, "e").unwrap();
        rmp::encode::write_bin(&mut out, b"").unwrap();
        rmp::encode::write_str(&mut out, "data").unwrap();
        rmp::encode::write_array_len(&mut out, 1).unwrap();
        rmp::encode::write_str(&mut out, "e").unwrap();
        rmp::encode::write_str(&mut out, "nsp").unwrap();
        rmp::encode::write_str(&mut out, "/").unwrap();
        assert_eq!(decode(&out), Err(SocketDecodeError::InvalidPayload));
    }

    #[test]
    fn a_stored_json_event_converts_for_a_msgpack_client() {
        let text = "51-/n,[\"e\",{\"_placeholder\":true,\"num\":0},\"9\"]";
        let mut out = Vec::new();
        from_json_packet(&mut out, text, &[Bytes::from_static(b"b")]).unwrap();
        let (packet, attachments) = decode(&out).unwrap();
        assert_eq!(packet.namespace, "/n");
        assert_eq!(packet.data.unwrap()[2], json!("9"));
        assert_eq!(attachments, vec![Bytes::from_static(b"b")]);
    }
}
