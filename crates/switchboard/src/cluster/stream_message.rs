//! What nodes write to the shared Redis stream and say over pub/sub with the streams adapter,
//! encoded and decoded with no I/O, in the shapes of `@socket.io/redis-streams-adapter` 0.3 (and
//! `socket.io-adapter`'s cluster messages), so Node.js servers on that adapter share the stream:
//! - a stream entry has the fields `uid`, `nsp`, `type` (a cluster message type, as a decimal
//!   string) and `data`: JSON, or, when it holds binary, base64 of its MessagePack;
//! - broadcasts (3), joins (4), leaves (5) and disconnects (6) go to the stream; broadcasts with
//!   acks, fetches of sockets and server-side emits are MessagePack `{uid, nsp, type, data}` on
//!   `<prefix>#<nsp>#`, answered on `<prefix>#<nsp>#<uid>#`;
//! - a session is base64 of the MessagePack of `{sid, pid, rooms, data}` under
//!   `<session prefix><pid>`; Switchboard adds `connectedOffset` (where the log stood when the
//!   socket connected), which Node ignores.

use base64::Engine as _;
use bytes::Bytes;
use rmpv::Value as Pack;
use serde_json::{Map, Value, json};

use super::message::{
    MessageError, Reach, RemoteBroadcast, broadcast_from_parts, field, json_to_pack, pack_to_json,
};

/// `socket.io-adapter`'s cluster message types.
pub mod kind {
    pub const INITIAL_HEARTBEAT: u64 = 1;
    pub const HEARTBEAT: u64 = 2;
    pub const BROADCAST: u64 = 3;
    pub const SOCKETS_JOIN: u64 = 4;
    pub const SOCKETS_LEAVE: u64 = 5;
    pub const DISCONNECT_SOCKETS: u64 = 6;
    pub const FETCH_SOCKETS: u64 = 7;
    pub const FETCH_SOCKETS_RESPONSE: u64 = 8;
    pub const BROADCAST_CLIENT_COUNT: u64 = 11;
}

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The fields of one stream entry, ready for XADD.
pub type EntryFields = [(&'static str, Vec<u8>); 4];

/// One entry read from the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEntry {
    Broadcast(RemoteBroadcast),
    /// Sockets selected by rooms join (true) or leave `rooms`.
    Membership {
        uid: String,
        namespace: String,
        rooms: Vec<String>,
        except: Vec<String>,
        change: Vec<String>,
        join: bool,
    },
    Disconnect {
        uid: String,
        namespace: String,
        rooms: Vec<String>,
        except: Vec<String>,
        close: bool,
    },
    /// Anything else (heartbeats of adapters that send them, types to come).
    Other,
}

fn entry(uid: &str, namespace: &str, kind: u64, data: Vec<u8>) -> EntryFields {
    [
        ("uid", uid.as_bytes().to_vec()),
        ("nsp", namespace.as_bytes().to_vec()),
        ("type", kind.to_string().into_bytes()),
        ("data", data),
    ]
}

fn opts(rooms: &[String], except: &[String]) -> Value {
    json!({ "rooms": rooms, "except": except, "flags": {} })
}

/// A broadcast's options, with `flags.volatile` when it is volatile.
fn broadcast_opts(rooms: &[String], except: &[String], volatile: bool) -> Value {
    let mut opts = opts(rooms, except);
    if volatile {
        opts["flags"]["volatile"] = json!(true);
    }
    opts
}

/// A broadcast's `data`: the packet and the options that select its recipients.
pub fn broadcast_data(namespace: &str, event: &str, args: &[Value], reach: Reach<'_>) -> Value {
    let mut data = Vec::with_capacity(args.len() + 1);
    data.push(Value::from(event));
    data.extend(args.iter().cloned());
    json!({
        "packet": { "type": 2, "data": data, "nsp": namespace },
        "opts": broadcast_opts(reach.rooms, reach.except, reach.volatile),
    })
}

/// A join's (or leave's) `data`: the sockets `rooms`/`except` select join `change`.
pub fn membership_data(rooms: &[String], except: &[String], change: &[String]) -> Value {
    json!({ "opts": opts(rooms, except), "rooms": change })
}

/// A disconnect's `data`.
pub fn disconnect_data(rooms: &[String], except: &[String], close: bool) -> Value {
    json!({ "opts": opts(rooms, except), "close": close })
}

fn membership_kind(join: bool) -> u64 {
    if join {
        kind::SOCKETS_JOIN
    } else {
        kind::SOCKETS_LEAVE
    }
}

/// MessagePack of `value`, the attachments' placeholders in it as binary.
fn packed(value: &Value, attachments: &[Bytes]) -> Vec<u8> {
    let mut packed = Vec::with_capacity(64);
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut packed, &json_to_pack(value, attachments));
    packed
}

/// A broadcast as a stream entry: JSON data, or MessagePack (base64) when it has binary.
pub fn broadcast_entry(
    uid: &str,
    namespace: &str,
    event: &str,
    args: &[Value],
    attachments: &[Bytes],
    reach: Reach<'_>,
) -> EntryFields {
    let message = broadcast_data(namespace, event, args, reach);
    let data = if attachments.is_empty() {
        message.to_string().into_bytes()
    } else {
        BASE64.encode(packed(&message, attachments)).into_bytes()
    };
    entry(uid, namespace, kind::BROADCAST, data)
}

/// A join (or leave) of the sockets `rooms`/`except` select, as a stream entry.
pub fn membership_entry(
    uid: &str,
    namespace: &str,
    rooms: &[String],
    except: &[String],
    change: &[String],
    join: bool,
) -> EntryFields {
    let data = membership_data(rooms, except, change);
    entry(
        uid,
        namespace,
        membership_kind(join),
        data.to_string().into_bytes(),
    )
}

/// A disconnect of the sockets `rooms`/`except` select, as a stream entry.
pub fn disconnect_entry(
    uid: &str,
    namespace: &str,
    rooms: &[String],
    except: &[String],
    close: bool,
) -> EntryFields {
    let data = disconnect_data(rooms, except, close);
    entry(
        uid,
        namespace,
        kind::DISCONNECT_SOCKETS,
        data.to_string().into_bytes(),
    )
}

/// A whole cluster message `{uid, nsp, type, data}` for pub/sub, as `socket.io-adapter`'s
/// sharded Redis adapter writes it: JSON, or MessagePack when `data` holds binary.
pub fn cluster_message(
    uid: &str,
    namespace: &str,
    kind: u64,
    data: Value,
    attachments: &[Bytes],
) -> Vec<u8> {
    let message = json!({ "uid": uid, "nsp": namespace, "type": kind, "data": data });
    if attachments.is_empty() {
        message.to_string().into_bytes()
    } else {
        packed(&message, attachments)
    }
}

/// A join (or leave) as a whole cluster message.
pub fn membership_message(
    uid: &str,
    namespace: &str,
    rooms: &[String],
    except: &[String],
    change: &[String],
    join: bool,
) -> Vec<u8> {
    let data = membership_data(rooms, except, change);
    cluster_message(uid, namespace, membership_kind(join), data, &[])
}

/// A log entry as the whole cluster message Node.js servers on `@socket.io/postgres-adapter`
/// read from the attachments table: MessagePack `{uid, nsp, type, data, offset}`, binary kept
/// as binary (what is too large for a notification, or not text). None when `data` is neither
/// JSON nor base64 MessagePack.
pub fn mirrored_message(
    uid: &str,
    namespace: &str,
    kind: u64,
    data: &[u8],
    offset: &str,
) -> Option<Vec<u8>> {
    let data = entry_data(data).ok()?;
    let message = Pack::Map(vec![
        (Pack::from("uid"), Pack::from(uid)),
        (Pack::from("nsp"), Pack::from(namespace)),
        (Pack::from("type"), Pack::from(kind)),
        (Pack::from("data"), data),
        (Pack::from("offset"), Pack::from(offset)),
    ]);
    let mut packed = Vec::with_capacity(64);
    rmpv::encode::write_value(&mut packed, &message).ok()?;
    Some(packed)
}

/// Reads an entry's `data`: JSON when it starts with `{`, base64 MessagePack otherwise.
fn entry_data(data: &[u8]) -> Result<Pack, MessageError> {
    if data.first() == Some(&b'{') {
        let json: Value =
            serde_json::from_slice(data).map_err(|e| MessageError::NotJson(e.to_string()))?;
        return Ok(json_to_pack(&json, &[]));
    }
    let packed = BASE64
        .decode(data)
        .map_err(|_| MessageError::Shape("data is JSON or base64"))?;
    rmpv::decode::read_value(&mut &packed[..])
        .map_err(|e| MessageError::NotMessagePack(e.to_string()))
}

fn strings(value: Option<&Pack>) -> Vec<String> {
    super::message::room_list(value)
}

/// Decodes one stream entry from its fields.
pub fn decode_entry(fields: &[(String, Vec<u8>)]) -> Result<StreamEntry, MessageError> {
    let get = |name: &str| {
        fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_slice())
    };
    let text = |name: &str| get(name).and_then(|v| std::str::from_utf8(v).ok());
    let uid = text("uid").unwrap_or_default().to_owned();
    let namespace = text("nsp")
        .ok_or(MessageError::Shape("an entry has nsp"))?
        .to_owned();
    let kind = text("type")
        .and_then(|t| t.parse::<u64>().ok())
        .ok_or(MessageError::Shape("an entry has a numeric type"))?;
    let data = match get("data") {
        Some(data) => entry_data(data)?,
        None => Pack::Nil,
    };
    let opts = field(&data, "opts");
    let selected = || {
        (
            strings(opts.and_then(|o| field(o, "rooms"))),
            strings(opts.and_then(|o| field(o, "except"))),
        )
    };
    Ok(match kind {
        kind::BROADCAST => {
            let (Some(packet), Some(opts)) = (field(&data, "packet"), opts) else {
                return Err(MessageError::Shape("a broadcast has packet and opts"));
            };
            let mut broadcast = broadcast_from_parts(&uid, packet, opts)?;
            broadcast.namespace = namespace;
            StreamEntry::Broadcast(broadcast)
        }
        kind::SOCKETS_JOIN | kind::SOCKETS_LEAVE => {
            let (rooms, except) = selected();
            StreamEntry::Membership {
                uid,
                namespace,
                rooms,
                except,
                change: strings(field(&data, "rooms")),
                join: kind == kind::SOCKETS_JOIN,
            }
        }
        kind::DISCONNECT_SOCKETS => {
            let (rooms, except) = selected();
            StreamEntry::Disconnect {
                uid,
                namespace,
                rooms,
                except,
                close: field(&data, "close").and_then(Pack::as_bool) == Some(true),
            }
        }
        _ => StreamEntry::Other,
    })
}

/// A pub/sub cluster message (`{uid, nsp, type, data}`: MessagePack from the Streams adapter,
/// JSON or MessagePack from the PostgreSQL adapter), its binary values behind placeholders in
/// `data`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterMessage {
    pub uid: String,
    pub namespace: String,
    pub kind: u64,
    pub data: Value,
    pub attachments: Vec<Bytes>,
    /// Set on what a Switchboard node mirrors from its log to the PostgreSQL adapter's channel
    /// (other Switchboard nodes read it from the log instead).
    pub offset: Option<String>,
}

pub fn decode_cluster_message(bytes: &[u8]) -> Result<ClusterMessage, MessageError> {
    let message = if bytes.first() == Some(&b'{') {
        let json: Value =
            serde_json::from_slice(bytes).map_err(|e| MessageError::NotJson(e.to_string()))?;
        json_to_pack(&json, &[])
    } else {
        rmpv::decode::read_value(&mut &bytes[..])
            .map_err(|e| MessageError::NotMessagePack(e.to_string()))?
    };
    let text = |name: &str| {
        field(&message, name)
            .and_then(Pack::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let kind = field(&message, "type")
        .and_then(Pack::as_u64)
        .ok_or(MessageError::Shape("a cluster message has a type"))?;
    let mut attachments = Vec::new();
    let data = field(&message, "data").map_or(Value::Null, |d| pack_to_json(d, &mut attachments));
    Ok(ClusterMessage {
        uid: text("uid"),
        namespace: text("nsp"),
        kind,
        data,
        attachments,
        offset: field(&message, "offset")
            .and_then(Pack::as_str)
            .map(str::to_owned),
    })
}

/// A response to a cluster message, MessagePack `{uid, nsp, type, data}`.
pub fn encode_response(uid: &str, namespace: &str, kind: u64, data: &Value) -> Vec<u8> {
    let message = Pack::Map(vec![
        (Pack::from("uid"), Pack::from(uid)),
        (Pack::from("nsp"), Pack::from(namespace)),
        (Pack::from("type"), Pack::from(kind)),
        (Pack::from("data"), json_to_pack(data, &[])),
    ]);
    let mut out = Vec::with_capacity(64);
    let _ = rmpv::encode::write_value(&mut out, &message);
    out
}

/// The channel a namespace's cluster messages go out on, and (with `uid`) a node's answers.
pub fn namespace_channel(prefix: &str, namespace: &str, uid: Option<&str>) -> String {
    match uid {
        Some(uid) => format!("{prefix}#{namespace}#{uid}#"),
        None => format!("{prefix}#{namespace}#"),
    }
}

/// A session for the shared store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSession {
    pub sid: String,
    pub pid: String,
    pub rooms: Vec<String>,
    pub data: Map<String, Value>,
    /// Where the log stood when the socket connected (Switchboard's own field).
    pub connected_offset: Option<String>,
}

pub fn encode_session(session: &StoredSession) -> String {
    let mut value = json!({
        "sid": session.sid,
        "pid": session.pid,
        "rooms": session.rooms,
        "data": session.data,
    });
    if let Some(offset) = &session.connected_offset {
        value["connectedOffset"] = json!(offset);
    }
    let mut packed = Vec::with_capacity(64);
    let _ = rmpv::encode::write_value(&mut packed, &json_to_pack(&value, &[]));
    BASE64.encode(packed)
}

/// The strings of a JSON array (none when it is not one).
pub fn string_list(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub fn decode_session(text: &[u8]) -> Result<StoredSession, MessageError> {
    let packed = BASE64
        .decode(text)
        .map_err(|_| MessageError::Shape("a session is base64"))?;
    let value = rmpv::decode::read_value(&mut &packed[..])
        .map_err(|e| MessageError::NotMessagePack(e.to_string()))?;
    let value = pack_to_json(&value, &mut Vec::new());
    let (Some(sid), Some(pid)) = (value["sid"].as_str(), value["pid"].as_str()) else {
        return Err(MessageError::Shape("a session has sid and pid"));
    };
    Ok(StoredSession {
        sid: sid.to_owned(),
        pid: pid.to_owned(),
        rooms: string_list(&value["rooms"]),
        data: value["data"].as_object().cloned().unwrap_or_default(),
        connected_offset: value["connectedOffset"].as_str().map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(entry: EntryFields) -> Vec<(String, Vec<u8>)> {
        entry.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    #[test]
    fn a_broadcast_entry_reads_back() {
        let rooms = vec!["orders".to_owned()];
        let entry = broadcast_entry(
            "n1",
            "/",
            "order",
            &[json!({"id": 7})],
            &[],
            Reach {
                rooms: &rooms,
                except: &[],
                volatile: false,
            },
        );
        assert_eq!(entry[2].1, b"3");
        assert!(entry[3].1.starts_with(b"{\"opts\"") || entry[3].1.starts_with(b"{\"packet\""));
        let StreamEntry::Broadcast(b) = decode_entry(&fields(entry)).unwrap() else {
            panic!("not a broadcast");
        };
        assert_eq!(
            (b.event.as_str(), b.rooms.as_slice()),
            ("order", &rooms[..])
        );
        assert_eq!(b.args, vec![json!({"id": 7})]);
    }

    #[test]
    fn binary_goes_as_base64_messagepack() {
        let attachment = Bytes::from_static(b"\x00\x01\x02");
        let args = [json!({"_placeholder": true, "num": 0})];
        let entry = broadcast_entry(
            "n1",
            "/",
            "blob",
            &args,
            std::slice::from_ref(&attachment),
            Reach {
                rooms: &[],
                except: &[],
                volatile: false,
            },
        );
        assert!(!entry[3].1.starts_with(b"{"));
        let StreamEntry::Broadcast(b) = decode_entry(&fields(entry)).unwrap() else {
            panic!("not a broadcast");
        };
        assert_eq!(b.attachments, vec![attachment]);
    }

    #[test]
    fn a_mirrored_entry_is_a_whole_messagepack_cluster_message_with_its_binary() {
        let rooms = vec!["feed".to_owned()];
        let entry = fields(broadcast_entry(
            "n1",
            "/",
            "photo",
            &[json!({ "_placeholder": true, "num": 0 })],
            &[Bytes::from_static(&[0, 1, 2, 255])],
            Reach {
                rooms: &rooms,
                except: &[],
                volatile: false,
            },
        ));
        let data = &entry[3].1;
        let packed = mirrored_message("n1", "/", kind::BROADCAST, data, "17-0").expect("packed");
        let message = decode_cluster_message(&packed).expect("a cluster message");
        assert_eq!(message.uid, "n1");
        assert_eq!(message.namespace, "/");
        assert_eq!(message.offset.as_deref(), Some("17-0"));
        let text = format!(
            "{:?}",
            rmpv::decode::read_value(&mut &packed[..]).expect("MessagePack")
        );
        assert!(text.contains("Binary([0, 1, 2, 255])"), "{text}");
        // A large JSON entry goes the same way; garbage does not.
        let big = json!({ "packet": { "type": 2, "nsp": "/", "data": ["news", "x".repeat(9000)] }, "opts": {} });
        let packed = mirrored_message(
            "n1",
            "/",
            kind::BROADCAST,
            big.to_string().as_bytes(),
            "18-0",
        );
        assert!(packed.is_some_and(|p| p.len() > 9000));
        assert!(mirrored_message("n1", "/", kind::BROADCAST, b"%%%", "19-0").is_none());
    }

    #[test]
    fn a_session_reads_back_and_garbage_is_an_error() {
        let session = StoredSession {
            sid: "s".into(),
            pid: "p".into(),
            rooms: vec!["s".into(), "r".into()],
            data: Map::from_iter([("user".to_owned(), json!("ana"))]),
            connected_offset: Some("1-0".into()),
        };
        assert_eq!(
            decode_session(encode_session(&session).as_bytes()).unwrap(),
            session
        );
        assert!(decode_session(b"!!").is_err());
        assert!(decode_entry(&[("nsp".into(), b"/".to_vec())]).is_err());
    }
}
