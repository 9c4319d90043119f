//! Fuzzing on stable Rust: every decoder that reads what the network or a user sends is fed
//! mutations of the committed corpus (`fuzz/corpus/<target>/`) for a bounded time, and must
//! answer (a value or an error) without panicking. Targets: the Engine.IO packet and polling
//! payload decoders (v4, and v3's two forms), the Socket.IO packet decoder (binary placeholders included), its MessagePack
//! form (socket.io-msgpack-parser's, with a round trip through the encoder), the WebSocket frame
//! reader, the config parser, the HTTP API's request bodies, and what other nodes send: the
//! cluster's node messages, the Socket.IO Redis adapter's broadcasts and requests, the Streams
//! adapter's cluster messages, sessions and stream entries, and the replies of a Redis Cluster's
//! masters to the sharded subscriber.
//!
//! `SWITCHBOARD_FUZZ_SECONDS` sets the time per target (2 s by default; CI runs longer). The
//! run is seeded (`SWITCHBOARD_FUZZ_SEED`, printed), so a failure can be replayed. An input that
//! panics is written to `target/fuzz-crashes/`; committed under `fuzz/corpus/<target>/`, it is
//! replayed on every run from then on, as a regression test.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that mean something to one of the decoders.
const TOKENS: &[&[u8]] = &[
    b"[",
    b"]",
    b"{",
    b"}",
    b",",
    b"\"",
    b":",
    b"-",
    b"/",
    b"\x1e",
    b"b",
    b"4",
    b"42",
    b"451-",
    b"\"_placeholder\":true",
    b"\"num\":",
    b"9999999999999999999",
    b"-1",
    b"null",
    b"\\u0000",
    b"\xff",
    b"\x00",
    b"=",
    b"\n[",
    b"]]",
    b"[[[[[[[[",
    b"\"\\",
    b"\x80\x7e",
    b"\x88\xfe",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => out.insert(at, rng.next() as u8),
            2 if !out.is_empty() => {
                let end = (at + rng.below(8)).min(out.len());
                out.drain(at.min(end)..end);
            }
            3 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                out.splice(at..at, token.iter().copied());
            }
            4 if !out.is_empty() => {
                let start = rng.below(out.len());
                let end = (start + rng.below(16)).min(out.len());
                let copy = out[start..end].to_vec();
                out.splice(at..at, copy);
            }
            5 => out.truncate(at),
            _ => {
                let i = rng.below(out.len().max(1));
                if let Some(b) = out.get_mut(i) {
                    *b = b"0123456789[]{}\",:-/"[rng.below(19)];
                }
            }
        }
    }
    out
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    let seeds: Vec<_> = entries
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|bytes| (p, bytes)))
        .collect();
    assert!(!seeds.is_empty(), "no corpus in {}", dir.display());
    seeds
}

fn budget() -> Duration {
    let seconds = std::env::var("SWITCHBOARD_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(seconds)
}

fn seed() -> u64 {
    std::env::var("SWITCHBOARD_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        })
}

/// Feeds the corpus, then its mutations until the budget is spent, to `decode`.
fn fuzz(target: &str, decode: impl Fn(&[u8])) {
    let seeds = corpus(target);
    let seed = seed();
    let mut rng = Rng(seed);
    let crash = |input: &[u8]| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-crashes");
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join(format!("{target}-{:016x}", rng_hash(input)));
        let _ = std::fs::write(&file, input);
        panic!(
            "{target}: an input panicked (seed {seed}); saved as {}",
            file.display()
        );
    };
    for (path, input) in &seeds {
        if std::panic::catch_unwind(AssertUnwindSafe(|| decode(input))).is_err() {
            eprintln!("corpus entry {} panics", path.display());
            crash(input);
        }
    }
    let started = Instant::now();
    let mut runs = 0u64;
    let mut found = None;
    while started.elapsed() < budget() {
        let (_, base) = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, base);
        runs += 1;
        if std::panic::catch_unwind(AssertUnwindSafe(|| decode(&input))).is_err() {
            found = Some(input);
            break;
        }
    }
    eprintln!(
        "{target}: {runs} inputs in {:.1?} (seed {seed})",
        started.elapsed()
    );
    if let Some(input) = found {
        crash(&input);
    }
}

fn rng_hash(input: &[u8]) -> u64 {
    input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[test]
fn engine_packet_decoder() {
    fuzz("engine_packet", |input| {
        let _ = switchboard::protocol::engine::decode_text_packet(Bytes::copy_from_slice(input));
    });
}

#[test]
fn polling_payload_decoder() {
    fuzz("polling_payload", |input| {
        let _ =
            switchboard::protocol::engine::decode_polling_payload(Bytes::copy_from_slice(input));
    });
}

#[test]
fn polling_payload_v3_decoder() {
    fuzz("polling_payload_v3", |input| {
        let _ = switchboard::protocol::engine::decode_v3_payload(Bytes::copy_from_slice(input));
    });
}

#[test]
fn socket_packet_decoder() {
    fuzz("socket_packet", |input| {
        if let Ok(text) = std::str::from_utf8(input)
            && let Ok(packet) = switchboard::protocol::socket::decode_packet(text)
            && let Some(data) = &packet.data
        {
            let _ = switchboard::protocol::socket::is_placeholder(data, packet.attachments);
        }
    });
}

#[test]
fn msgpack_packet_decoder() {
    use switchboard::protocol::{msgpack, socket::PacketKind};
    fuzz("msgpack_packet", |input| {
        let Ok((packet, attachments)) = msgpack::decode(input) else {
            return;
        };
        // What decodes as an event re-encodes (as the server would send it) to the same event.
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
            let (again, again_attachments) =
                msgpack::decode(&out).expect("an encoded event decodes");
            assert_eq!(again.data, packet.data, "round trip of {input:?}");
            assert_eq!(again_attachments, attachments);
        }
    });
}

#[test]
fn websocket_frame_reader() {
    fuzz("websocket_frames", |input| {
        let mut reader = switchboard::websocket::MessageReader::new(1024);
        // Fed in two pieces, as bytes arrive.
        let split = input.len() / 2;
        reader.push(&input[..split]);
        while let Ok(Some(_)) = reader.next_message() {}
        reader.push(&input[split..]);
        while let Ok(Some(_)) = reader.next_message() {}
    });
}

#[test]
fn config_parser() {
    fuzz("config", |input| {
        if let Ok(text) = std::str::from_utf8(input) {
            let _ = switchboard::config::Config::parse(text, "fuzz.toml");
        }
    });
}

#[test]
fn api_request_bodies() {
    use switchboard::hub::operations::{BatchRequest, EmitRequest};
    fuzz("api_body", |input| {
        let _ = switchboard::api::parse_json::<EmitRequest>(input);
        let _ = switchboard::api::parse_json::<BatchRequest>(input);
    });
}

#[test]
fn cluster_node_messages() {
    use switchboard::cluster::node_message::{NodeMessage, NodeReply};
    fuzz("node_message", |input| {
        // What decodes re-encodes to the same message.
        if let Ok(message) = NodeMessage::decode(input) {
            let again = NodeMessage::decode(&message.encode()).expect("an encoded message decodes");
            assert_eq!(again, message, "round trip of {input:?}");
        }
        let _ = NodeReply::decode(input);
    });
}

#[test]
fn socketio_adapter_messages() {
    use switchboard::cluster::{message, stream_message};
    fuzz("adapter_message", |input| {
        let _ = message::decode_broadcast(input);
        let _ = message::decode_ack_broadcast(input);
        let _ = message::decode_adapter_request(input);
        let _ = stream_message::decode_cluster_message(input);
        let _ = stream_message::decode_session(input);
    });
}

#[test]
fn redis_cluster_replies() {
    use switchboard::cluster::redis::resp::{self, Push};
    fuzz("redis_reply", |input| {
        // What a Redis Cluster master sends a subscribed connection: read reply by reply as
        // the bytes come, never past what was given.
        let mut at = 0;
        while let Ok(Some((reply, used))) = resp::parse(&input[at..]) {
            assert!(used > 0 && at + used <= input.len(), "{input:?}");
            at += used;
            let _ = Push::from_reply(reply);
        }
    });
}

#[test]
fn stream_entries() {
    use switchboard::cluster::stream_message;
    fuzz("stream_entry", |input| {
        // The entry's fields, in the order the streams adapter writes them, NUL-separated.
        let fields: Vec<(String, Vec<u8>)> = ["uid", "nsp", "type", "data"]
            .iter()
            .zip(input.splitn(4, |b| *b == 0))
            .map(|(name, value)| ((*name).to_owned(), value.to_vec()))
            .collect();
        let _ = stream_message::decode_entry(&fields);
    });
}
