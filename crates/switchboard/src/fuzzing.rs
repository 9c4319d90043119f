//! The fuzz targets: one function per decoder that reads bytes from the network or a user,
//! each answering (a value or an error) without panicking, and checking what round-trips. The
//! same functions are driven two ways: by libFuzzer, coverage-guided (`fuzz/`, `cargo fuzz run
//! <target>`), and on stable Rust by `tests/fuzz_decoders.rs`, which replays the committed
//! corpus (`fuzz/corpus/<target>/`) and its mutations on every test run.

use bytes::Bytes;

/// A fuzz target: decodes what it is given.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("engine_packet", engine_packet),
    ("polling_payload", polling_payload),
    ("polling_payload_v3", polling_payload_v3),
    ("socket_packet", socket_packet),
    ("msgpack_packet", msgpack_packet),
    ("websocket_frames", websocket_frames),
    ("config", config),
    ("api_body", api_body),
    ("node_message", node_message),
    ("adapter_message", adapter_message),
    ("redis_reply", redis_reply),
    ("stream_entry", stream_entry),
];

/// An Engine.IO v4 packet.
pub fn engine_packet(input: &[u8]) {
    let _ = crate::protocol::engine::decode_text_packet(Bytes::copy_from_slice(input));
}

/// An Engine.IO v4 polling payload.
pub fn polling_payload(input: &[u8]) {
    let _ = crate::protocol::engine::decode_polling_payload(Bytes::copy_from_slice(input));
}

/// An Engine.IO v3 polling payload (both of its forms).
pub fn polling_payload_v3(input: &[u8]) {
    let _ = crate::protocol::engine::decode_v3_payload(Bytes::copy_from_slice(input));
}

/// A Socket.IO packet, binary placeholders included.
pub fn socket_packet(input: &[u8]) {
    if let Ok(text) = std::str::from_utf8(input)
        && let Ok(packet) = crate::protocol::socket::decode_packet(text)
        && let Some(data) = &packet.data
    {
        let _ = crate::protocol::socket::is_placeholder(data, packet.attachments);
    }
}

/// A MessagePack Socket.IO packet (socket.io-msgpack-parser's); an event re-encodes (as the
/// server would send it) to the same event.
pub fn msgpack_packet(input: &[u8]) {
    use crate::protocol::{msgpack, socket::PacketKind};
    let Ok((packet, attachments)) = msgpack::decode(input) else {
        return;
    };
    if let (PacketKind::Event | PacketKind::BinaryEvent, Some(serde_json::Value::Array(items))) =
        (packet.kind, &packet.data)
        && let Some((serde_json::Value::String(name), args)) = items.split_first()
    {
        let mut out = Vec::new();
        msgpack::encode_event(
            &mut out,
            &packet.namespace,
            packet.ack_id,
            name,
            args,
            &attachments,
            None,
        );
        let (again, again_attachments) = msgpack::decode(&out).expect("an encoded event decodes");
        assert_eq!(again.data, packet.data, "round trip of {input:?}");
        assert_eq!(again_attachments, attachments);
    }
}

/// WebSocket frames, fed in two pieces as bytes arrive; with permessage-deflate negotiated when
/// the first byte is odd (compressed messages inflated, bounded by the limit).
pub fn websocket_frames(input: &[u8]) {
    let deflate = input.first().is_some_and(|b| b & 1 == 1);
    let mut reader = crate::websocket::MessageReader::new(1024).with_deflate(deflate);
    let split = input.len() / 2;
    reader.push(&input[..split]);
    while let Ok(Some(_)) = reader.next_message() {}
    reader.push(&input[split..]);
    while let Ok(Some(_)) = reader.next_message() {}
}

/// A config file.
pub fn config(input: &[u8]) {
    if let Ok(text) = std::str::from_utf8(input) {
        let _ = crate::config::Config::parse(text, "fuzz.toml");
    }
}

/// The HTTP API's request bodies.
pub fn api_body(input: &[u8]) {
    use crate::hub::operations::{BatchRequest, EmitRequest};
    let _ = crate::api::parse_json::<EmitRequest>(input);
    let _ = crate::api::parse_json::<BatchRequest>(input);
}

/// Switchboard's node protocol; what decodes re-encodes to the same message.
pub fn node_message(input: &[u8]) {
    use crate::cluster::node_message::{NodeMessage, NodeReply};
    if let Ok(message) = NodeMessage::decode(input) {
        let again = NodeMessage::decode(&message.encode()).expect("an encoded message decodes");
        assert_eq!(again, message, "round trip of {input:?}");
    }
    let _ = NodeReply::decode(input);
}

/// The Socket.IO adapters' broadcasts, requests, cluster messages and sessions.
pub fn adapter_message(input: &[u8]) {
    use crate::cluster::{message, stream_message};
    let _ = message::decode_broadcast(input);
    let _ = message::decode_ack_broadcast(input);
    let _ = message::decode_adapter_request(input);
    let _ = stream_message::decode_cluster_message(input);
    let _ = stream_message::decode_session(input);
}

/// What a Redis Cluster master sends a subscribed connection: read reply by reply as the bytes
/// come, never past what was given.
pub fn redis_reply(input: &[u8]) {
    use crate::cluster::redis::resp::{self, Push};
    let mut at = 0;
    while let Ok(Some((reply, used))) = resp::parse(&input[at..]) {
        assert!(used > 0 && at + used <= input.len(), "{input:?}");
        at += used;
        let _ = Push::from_reply(reply);
    }
}

/// A stream entry's fields, in the order the streams adapter writes them, NUL-separated.
pub fn stream_entry(input: &[u8]) {
    let fields: Vec<(String, Vec<u8>)> = ["uid", "nsp", "type", "data"]
        .iter()
        .zip(input.splitn(4, |b| *b == 0))
        .map(|(name, value)| ((*name).to_owned(), value.to_vec()))
        .collect();
    let _ = crate::cluster::stream_message::decode_entry(&fields);
}
