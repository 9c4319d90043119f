//! Fuzzing on stable Rust: every decoder that reads what the network or a user sends
//! (`switchboard::fuzzing`, the same targets libFuzzer runs in `fuzz/`) is fed the committed
//! corpus (`fuzz/corpus/<target>/`) and its mutations for a bounded time, and must answer (a
//! value or an error) without panicking. Targets: the Engine.IO packet and polling
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
    fuzz("engine_packet", switchboard::fuzzing::engine_packet);
}

#[test]
fn polling_payload_decoder() {
    fuzz("polling_payload", switchboard::fuzzing::polling_payload);
}

#[test]
fn polling_payload_v3_decoder() {
    fuzz(
        "polling_payload_v3",
        switchboard::fuzzing::polling_payload_v3,
    );
}

#[test]
fn socket_packet_decoder() {
    fuzz("socket_packet", switchboard::fuzzing::socket_packet);
}

#[test]
fn msgpack_packet_decoder() {
    fuzz("msgpack_packet", switchboard::fuzzing::msgpack_packet);
}

#[test]
fn websocket_frame_reader() {
    fuzz("websocket_frames", switchboard::fuzzing::websocket_frames);
}

#[test]
fn config_parser() {
    fuzz("config", switchboard::fuzzing::config);
}

#[test]
fn api_request_bodies() {
    fuzz("api_body", switchboard::fuzzing::api_body);
}

#[test]
fn cluster_node_messages() {
    fuzz("node_message", switchboard::fuzzing::node_message);
}

#[test]
fn socketio_adapter_messages() {
    fuzz("adapter_message", switchboard::fuzzing::adapter_message);
}

#[test]
fn redis_cluster_replies() {
    fuzz("redis_reply", switchboard::fuzzing::redis_reply);
}

#[test]
fn stream_entries() {
    fuzz("stream_entry", switchboard::fuzzing::stream_entry);
}

#[test]
fn every_target_has_a_corpus_and_a_test() {
    let this = include_str!("fuzz_decoders.rs");
    for (target, _) in switchboard::fuzzing::TARGETS {
        assert!(!corpus(target).is_empty(), "{target} has a corpus");
        let fuzzed = [")", ","]
            .iter()
            .any(|end| this.contains(&format!("fuzzing::{target}{end}")));
        assert!(fuzzed, "{target} is fuzzed here");
    }
}
