//! The memory budget of an idle connection: what the engine and the hub keep for one WebSocket
//! client connected to one namespace, struct by struct. A test fails when any of it grows past
//! the size recorded here, so that growth is a decision (raise the budget, say why in the
//! commit) and not an accident: one field added to a per-connection struct costs every one of
//! 100k connections. What only some connections need (TLS state, rate buckets, data, acks,
//! polling state) lives behind one pointer and is not counted.

use crate::hub::Hub;
use std::sync::Arc;

/// The recorded budget of each per-connection allocation, in bytes (x86_64), `Arc` counts
/// included.
const BUDGET: &[(&str, usize)] = &[
    ("engine::EngineConn", 200),
    ("engine::Session", 48),
    ("session id (20 characters)", 36),
    ("engine::websocket::Connection", 104),
    ("websocket::Socket", 64),
    ("heartbeat deadline", 24),
    ("engine session map entry", 24),
    ("hub::Client", 64),
    ("hub::Socket", 152),
    ("socket ids", 36),
    ("client's socket list", 8),
    ("namespace socket map entry", 24),
];

/// The whole of it (the allocator's own overhead, about 8 bytes per allocation, and tokio's I/O
/// registration, about 250 bytes, come on top).
const TOTAL_BUDGET: usize = 820;

#[test]
fn an_idle_connection_stays_within_its_memory_budget() {
    let parts: Vec<(&str, usize, usize)> = crate::engine::session_state_sizes::<Arc<Hub>>()
        .into_iter()
        .chain(crate::hub::client_state_sizes())
        .collect();
    let mut total = 0;
    let mut over = Vec::new();
    for (what, size, count) in &parts {
        let budget = BUDGET
            .iter()
            .find(|(name, _)| name == what)
            .map(|(_, budget)| *budget)
            .unwrap_or_else(|| panic!("{what} has no recorded budget"));
        eprintln!("{what:<32} {size:>4} B x{count} (budget {budget:>4})");
        total += size * count;
        if *size > budget {
            over.push(format!("{what}: {size} bytes, budget {budget}"));
        }
    }
    eprintln!(
        "{:<32} {total:>4} B (budget {TOTAL_BUDGET})",
        "per idle connection"
    );
    assert!(over.is_empty(), "over budget: {over:?}");
    assert!(
        total <= TOTAL_BUDGET,
        "an idle connection keeps {total} bytes, budget {TOTAL_BUDGET}"
    );
}
