//! What nodes say to each other through Redis, encoded and decoded with no I/O.
//!
//! Broadcasts and the room/disconnect requests use the shapes of the Socket.IO Redis adapter
//! (`@socket.io/redis-adapter`, classic pub/sub) and its emitter (`@socket.io/redis-emitter`), so a
//! backend that already publishes with the emitter, or a Node.js socket.io server with that
//! adapter, shares rooms with Switchboard nodes:
//! - a broadcast is MessagePack `[uid, packet, opts]` on `<key>#<nsp>#` (or `<key>#<nsp>#<room>#`
//!   for a single room), `packet` being `{type: 2, data: [event, ...args], nsp}` with binary
//!   arguments inline and `opts` `{rooms, except, flags}`;
//! - requests are JSON (or MessagePack) on `<key>-request#<nsp>#`, `{type, uid, requestId?, ...}`.
//!
//! What the Socket.IO adapter has no words for (an emit to a user's sockets wherever they are, a
//! question every node answers) travels as JSON on Switchboard's own channels, which other
//! servers do not listen to.

use bytes::Bytes;
use rmpv::Value as Pack;
use serde_json::{Map, Number, Value, json};

/// The Socket.IO Redis adapter's request types that Switchboard answers.
pub mod request_type {
    pub const SOCKETS: u64 = 0;
    pub const ALL_ROOMS: u64 = 1;
    pub const REMOTE_JOIN: u64 = 2;
    pub const REMOTE_LEAVE: u64 = 3;
    pub const REMOTE_DISCONNECT: u64 = 4;
    pub const REMOTE_FETCH: u64 = 5;
    /// A broadcast that asks for acks (`io.timeout(..).emit(.., callback)` on a Node server).
    pub const BROADCAST: u64 = 7;
    /// The answer to [`BROADCAST`]: how many clients will ack.
    pub const BROADCAST_CLIENT_COUNT: u64 = 8;
}

/// The Socket.IO packet type of an event (its binary variant, 5, is accepted too).
const EVENT: u64 = 2;
const BINARY_EVENT: u64 = 5;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("not MessagePack: {0}")]
    NotMessagePack(String),
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("unexpected shape: {0}")]
    Shape(&'static str),
}

/// A broadcast made on another node (or by an emitter).
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteBroadcast {
    /// The sending node (the emitter says "emitter").
    pub uid: String,
    pub namespace: String,
    pub event: String,
    /// With `{"_placeholder":true,"num":i}` where a binary argument was.
    pub args: Vec<Value>,
    pub attachments: Vec<Bytes>,
    pub rooms: Vec<String>,
    pub except: Vec<String>,
    /// `flags.volatile`: not queued for a socket that is behind, never stored.
    pub volatile: bool,
}

/// Who a broadcast reaches, as the adapters' `opts` say it.
#[derive(Debug, Clone, Copy)]
pub struct Reach<'a> {
    pub rooms: &'a [String],
    pub except: &'a [String],
    /// `flags.volatile`.
    pub volatile: bool,
}

/// The channel a broadcast goes out on: the namespace's, or a single room's under it.
pub fn broadcast_channel(key: &str, namespace: &str, rooms: &[String]) -> String {
    match rooms {
        [room] => format!("{key}#{namespace}#{room}#"),
        _ => format!("{key}#{namespace}#"),
    }
}

/// The channel of requests about one namespace's sockets.
pub fn request_channel(key: &str, namespace: &str) -> String {
    format!("{key}-request#{namespace}#")
}

/// The channel answers to requests are published on.
pub fn response_channel(key: &str, namespace: &str) -> String {
    format!("{key}-response#{namespace}#")
}

/// Encodes a broadcast as the Socket.IO Redis adapter does.
pub fn encode_broadcast(
    uid: &str,
    namespace: &str,
    event: &str,
    args: &[Value],
    attachments: &[Bytes],
    reach: Reach<'_>,
) -> Vec<u8> {
    let Reach {
        rooms,
        except,
        volatile,
    } = reach;
    let mut data = Vec::with_capacity(args.len() + 1);
    data.push(Pack::from(event));
    data.extend(args.iter().map(|arg| json_to_pack(arg, attachments)));
    let packet = Pack::Map(vec![
        (Pack::from("type"), Pack::from(EVENT)),
        (Pack::from("data"), Pack::Array(data)),
        (Pack::from("nsp"), Pack::from(namespace)),
    ]);
    let strings = |list: &[String]| Pack::Array(list.iter().map(|s| Pack::from(&**s)).collect());
    let opts = Pack::Map(vec![
        (Pack::from("rooms"), strings(rooms)),
        (Pack::from("except"), strings(except)),
        (Pack::from("flags"), flags(volatile)),
    ]);
    let message = Pack::Array(vec![Pack::from(uid), packet, opts]);
    let mut out = Vec::with_capacity(64);
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, &message);
    out
}

/// A broadcast's `flags`: `{volatile: true}` for a volatile one, else empty.
fn flags(volatile: bool) -> Pack {
    match volatile {
        true => Pack::Map(vec![(Pack::from("volatile"), Pack::from(true))]),
        false => Pack::Map(Vec::new()),
    }
}

/// Decodes a broadcast; a message that is not one is an error (and is ignored by the caller).
pub fn decode_broadcast(bytes: &[u8]) -> Result<RemoteBroadcast, MessageError> {
    let message = rmpv::decode::read_value(&mut &bytes[..])
        .map_err(|e| MessageError::NotMessagePack(e.to_string()))?;
    let Pack::Array(parts) = message else {
        return Err(MessageError::Shape("a broadcast is an array"));
    };
    let [uid, packet, opts] = <[Pack; 3]>::try_from(parts)
        .map_err(|_| MessageError::Shape("a broadcast is [uid, packet, opts]"))?;
    broadcast_from_parts(uid.as_str().unwrap_or_default(), &packet, &opts)
}

/// The broadcast a [`request_type::BROADCAST`] request carries (MessagePack, or JSON with no
/// binary arguments).
pub fn decode_ack_broadcast(bytes: &[u8]) -> Result<RemoteBroadcast, MessageError> {
    let request = if bytes.first() == Some(&b'{') {
        let json: Value =
            serde_json::from_slice(bytes).map_err(|e| MessageError::NotJson(e.to_string()))?;
        json_to_pack(&json, &[])
    } else {
        rmpv::decode::read_value(&mut &bytes[..])
            .map_err(|e| MessageError::NotMessagePack(e.to_string()))?
    };
    let (Some(packet), Some(opts)) = (field(&request, "packet"), field(&request, "opts")) else {
        return Err(MessageError::Shape(
            "a broadcast request has packet and opts",
        ));
    };
    let uid = field(&request, "uid")
        .and_then(Pack::as_str)
        .unwrap_or_default();
    broadcast_from_parts(uid, packet, opts)
}

pub(crate) fn broadcast_from_parts(
    uid: &str,
    packet: &Pack,
    opts: &Pack,
) -> Result<RemoteBroadcast, MessageError> {
    let uid = uid.to_owned();
    let kind = field(packet, "type").and_then(Pack::as_u64);
    if kind != Some(EVENT) && kind != Some(BINARY_EVENT) {
        return Err(MessageError::Shape("only events are broadcast"));
    }
    let namespace = field(packet, "nsp")
        .and_then(Pack::as_str)
        .unwrap_or("/")
        .to_owned();
    let Some(Pack::Array(data)) = field(packet, "data") else {
        return Err(MessageError::Shape("an event's data is an array"));
    };
    let mut attachments = Vec::new();
    let mut values = data.iter().map(|v| pack_to_json(v, &mut attachments));
    let event = match values.next() {
        Some(Value::String(event)) => event,
        _ => return Err(MessageError::Shape("an event starts with its name")),
    };
    let args = values.collect();
    Ok(RemoteBroadcast {
        uid,
        namespace,
        event,
        args,
        attachments,
        rooms: room_list(field(opts, "rooms")),
        except: room_list(field(opts, "except")),
        volatile: field(opts, "flags")
            .and_then(|flags| field(flags, "volatile"))
            .and_then(Pack::as_bool)
            == Some(true),
    })
}

/// A request from another server: JSON when it starts with `{`, MessagePack otherwise.
pub fn decode_request(bytes: &[u8]) -> Result<Value, MessageError> {
    let request = if bytes.first() == Some(&b'{') {
        serde_json::from_slice(bytes).map_err(|e| MessageError::NotJson(e.to_string()))?
    } else {
        let value = rmpv::decode::read_value(&mut &bytes[..])
            .map_err(|e| MessageError::NotMessagePack(e.to_string()))?;
        pack_to_json(&value, &mut Vec::new())
    };
    if !request.is_object() {
        return Err(MessageError::Shape("a request is an object"));
    }
    Ok(request)
}

/// A request of the Socket.IO Redis adapter (from another server or the emitter), typed.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterRequest {
    /// The asking server.
    pub uid: String,
    /// Echoed in the answer, as it came (a string or a number; null when none).
    pub request_id: Value,
    /// The one socket it is about, when it names one.
    pub sid: Option<String>,
    /// The rooms `opts` selects and excludes; None when it has no `opts`.
    pub selection: Option<(Vec<String>, Vec<String>)>,
    pub kind: RequestKind,
}

/// What an [`AdapterRequest`] asks.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestKind {
    /// The selected sockets join these rooms.
    Join(Vec<String>),
    /// The selected sockets leave these rooms.
    Leave(Vec<String>),
    /// The selected sockets are disconnected (with `close`, their connections closed).
    Disconnect { close: bool },
    /// A broadcast that asks for acks.
    Broadcast(RemoteBroadcast),
    /// The ids of the sockets in these rooms (all when none).
    Sockets { rooms: Vec<String> },
    /// Every room.
    AllRooms,
    /// The selected sockets' details.
    Fetch,
    /// A type this node does not act on.
    Other,
}

/// Decodes a request of the Socket.IO Redis adapter.
pub fn decode_adapter_request(bytes: &[u8]) -> Result<AdapterRequest, MessageError> {
    let request = decode_request(bytes)?;
    let selection = request["opts"].is_object().then(|| selection(&request));
    let kind = match request["type"].as_u64() {
        Some(request_type::REMOTE_JOIN) => RequestKind::Join(rooms_of(&request)),
        Some(request_type::REMOTE_LEAVE) => RequestKind::Leave(rooms_of(&request)),
        Some(request_type::REMOTE_DISCONNECT) => RequestKind::Disconnect {
            close: request["close"].as_bool().unwrap_or(false),
        },
        Some(request_type::BROADCAST) => RequestKind::Broadcast(decode_ack_broadcast(bytes)?),
        Some(request_type::SOCKETS) => RequestKind::Sockets {
            rooms: match request["rooms"].as_array() {
                Some(_) => rooms_of(&request),
                None => selection
                    .clone()
                    .map(|(rooms, _)| rooms)
                    .unwrap_or_default(),
            },
        },
        Some(request_type::ALL_ROOMS) => RequestKind::AllRooms,
        Some(request_type::REMOTE_FETCH) => RequestKind::Fetch,
        _ => RequestKind::Other,
    };
    Ok(AdapterRequest {
        uid: request["uid"].as_str().unwrap_or_default().to_owned(),
        request_id: request["requestId"].clone(),
        sid: request["sid"].as_str().map(str::to_owned),
        selection,
        kind,
    })
}

/// The rooms a request's `opts` selects and excludes (`opts: {rooms, except}`).
pub fn selection(request: &Value) -> (Vec<String>, Vec<String>) {
    let list = |key: &str| -> Vec<String> {
        request["opts"][key]
            .as_array()
            .map(|rooms| rooms.iter().filter_map(room_name).collect())
            .unwrap_or_default()
    };
    (list("rooms"), list("except"))
}

/// The rooms named by a request field (`rooms: [...]`, or `room: "..."`).
pub fn rooms_of(request: &Value) -> Vec<String> {
    match (&request["rooms"], &request["room"]) {
        (Value::Array(rooms), _) => rooms.iter().filter_map(room_name).collect(),
        (_, room) => room_name(room).into_iter().collect(),
    }
}

/// A room as the Socket.IO adapter allows it: a string, or a number.
fn room_name(value: &Value) -> Option<String> {
    match value {
        Value::String(room) => Some(room.clone()),
        Value::Number(room) => Some(room.to_string()),
        _ => None,
    }
}

/// A request that asks a node to change its sockets' rooms or disconnect them, with the rooms that
/// select them: what this node sends for the HTTP API's join, leave and disconnect.
pub fn selection_request(
    uid: &str,
    kind: u64,
    rooms: &[String],
    except: &[String],
    extra: Map<String, Value>,
) -> Vec<u8> {
    let mut request = json!({
        "uid": uid,
        "type": kind,
        "opts": { "rooms": rooms, "except": except },
    });
    if let Value::Object(fields) = &mut request {
        fields.extend(extra);
    }
    request.to_string().into_bytes()
}

pub(crate) fn field<'a>(map: &'a Pack, key: &str) -> Option<&'a Pack> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

pub(crate) fn room_list(value: Option<&Pack>) -> Vec<String> {
    let Some(Pack::Array(rooms)) = value else {
        return Vec::new();
    };
    rooms
        .iter()
        .filter_map(|room| match room {
            Pack::String(s) => s.as_str().map(str::to_owned),
            Pack::Integer(n) => Some(n.to_string()),
            Pack::F64(n) => Some(n.to_string()),
            _ => None,
        })
        .collect()
}

/// JSON to MessagePack, putting each attachment back where its placeholder is.
pub(crate) fn json_to_pack(value: &Value, attachments: &[Bytes]) -> Pack {
    match value {
        Value::Null => Pack::Nil,
        Value::Bool(b) => Pack::Boolean(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Pack::from(i)
            } else if let Some(u) = n.as_u64() {
                Pack::from(u)
            } else {
                Pack::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => Pack::from(s.as_str()),
        Value::Array(items) => Pack::Array(
            items
                .iter()
                .map(|item| json_to_pack(item, attachments))
                .collect(),
        ),
        Value::Object(map) => {
            if let Some(data) = placeholder(map).and_then(|num| attachments.get(num)) {
                return Pack::Binary(data.to_vec());
            }
            Pack::Map(
                map.iter()
                    .map(|(k, v)| (Pack::from(k.as_str()), json_to_pack(v, attachments)))
                    .collect(),
            )
        }
    }
}

fn placeholder(map: &Map<String, Value>) -> Option<usize> {
    if map.len() == 2 && map.get("_placeholder") == Some(&Value::Bool(true)) {
        map.get("num")?.as_u64().map(|n| n as usize)
    } else {
        None
    }
}

/// MessagePack to JSON, taking binary values out as attachments behind placeholders.
pub(crate) fn pack_to_json(value: &Pack, attachments: &mut Vec<Bytes>) -> Value {
    match value {
        Pack::Nil | Pack::Ext(..) => Value::Null,
        Pack::Boolean(b) => Value::Bool(*b),
        Pack::Integer(n) => n
            .as_i64()
            .map(Number::from)
            .or_else(|| n.as_u64().map(Number::from))
            .map_or(Value::Null, Value::Number),
        Pack::F32(f) => Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number),
        Pack::F64(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Pack::String(s) => Value::String(s.as_str().unwrap_or_default().to_owned()),
        Pack::Binary(data) => {
            attachments.push(Bytes::copy_from_slice(data));
            json!({ "_placeholder": true, "num": attachments.len() - 1 })
        }
        Pack::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| pack_to_json(item, attachments))
                .collect(),
        ),
        Pack::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Pack::String(s) => s.as_str().unwrap_or_default().to_owned(),
                        other => other.to_string(),
                    };
                    (key, pack_to_json(v, attachments))
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broadcast_survives_the_round_trip_with_its_binary_arguments() {
        let args = vec![
            json!({ "id": 7, "total": 12.5, "tags": ["a"], "none": null }),
            json!({ "_placeholder": true, "num": 0 }),
        ];
        let attachments = vec![Bytes::from_static(b"\x00\x01\x02")];
        let bytes = encode_broadcast(
            "node1",
            "/orders",
            "order-created",
            &args,
            &attachments,
            Reach {
                rooms: &["shop:1".into()],
                except: &["muted".into()],
                volatile: true,
            },
        );
        let decoded = decode_broadcast(&bytes).expect("decodes");
        assert!(decoded.volatile, "flags.volatile comes back");
        assert_eq!(decoded.uid, "node1");
        assert_eq!(decoded.namespace, "/orders");
        assert_eq!(decoded.event, "order-created");
        assert_eq!(decoded.args, args);
        assert_eq!(decoded.attachments, attachments);
        assert_eq!(decoded.rooms, vec!["shop:1".to_owned()]);
        assert_eq!(decoded.except, vec!["muted".to_owned()]);
    }

    #[test]
    fn a_broadcast_from_the_emitter_shape_decodes() {
        // What @socket.io/redis-emitter publishes: no nsp is "/", numeric rooms are strings.
        let packet = Pack::Map(vec![
            (Pack::from("type"), Pack::from(2)),
            (
                Pack::from("data"),
                Pack::Array(vec![Pack::from("hello"), Pack::Binary(vec![9, 8])]),
            ),
        ]);
        let opts = Pack::Map(vec![
            (Pack::from("rooms"), Pack::Array(vec![Pack::from(42)])),
            (Pack::from("flags"), Pack::Map(vec![])),
        ]);
        let mut bytes = Vec::new();
        rmpv::encode::write_value(
            &mut bytes,
            &Pack::Array(vec![Pack::from("emitter"), packet, opts]),
        )
        .expect("encodes");
        let decoded = decode_broadcast(&bytes).expect("decodes");
        assert_eq!(decoded.namespace, "/");
        assert_eq!(decoded.rooms, vec!["42".to_owned()]);
        assert!(decoded.except.is_empty());
        assert_eq!(
            decoded.args,
            vec![json!({ "_placeholder": true, "num": 0 })]
        );
        assert_eq!(decoded.attachments, vec![Bytes::from_static(&[9, 8])]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_broadcast(b"").is_err());
        assert!(decode_broadcast(b"\x93\xa1x\x01\x02").is_err());
        assert!(decode_broadcast(&[0xc1]).is_err());
        assert!(decode_request(b"{not json").is_err());
        assert!(decode_request(b"[1]").is_err());
    }

    #[test]
    fn adapter_requests_decode_to_what_they_ask() {
        let join = br#"{"uid":"n","type":2,"requestId":"r1","opts":{"rooms":["a"],"except":["b"]},"rooms":["c"]}"#;
        let request = decode_adapter_request(join).expect("decodes");
        assert_eq!(request.kind, RequestKind::Join(vec!["c".into()]));
        assert_eq!(
            request.selection,
            Some((vec!["a".into()], vec!["b".into()]))
        );
        assert_eq!(request.request_id, json!("r1"));
        let by_sid = br#"{"uid":"n","type":4,"sid":"s1","close":true}"#;
        let request = decode_adapter_request(by_sid).expect("decodes");
        assert_eq!(request.kind, RequestKind::Disconnect { close: true });
        assert_eq!(
            (request.sid.as_deref(), request.selection),
            (Some("s1"), None)
        );
        let unknown = br#"{"uid":"n","type":99}"#;
        assert_eq!(
            decode_adapter_request(unknown).map(|r| r.kind),
            Ok(RequestKind::Other)
        );
        assert!(decode_adapter_request(br#"{"uid":"n","type":7}"#).is_err());
        assert!(decode_adapter_request(b"[1]").is_err());
    }

    #[test]
    fn a_selection_request_names_its_rooms() {
        let bytes = selection_request(
            "n",
            request_type::REMOTE_JOIN,
            &["a".into()],
            &[],
            Map::from_iter([("rooms".to_owned(), json!(["b", 3]))]),
        );
        let request = decode_request(&bytes).expect("decodes");
        assert_eq!(request["type"], 2);
        assert_eq!(selection(&request), (vec!["a".to_owned()], vec![]));
        assert_eq!(rooms_of(&request), vec!["b".to_owned(), "3".to_owned()]);
    }
}
