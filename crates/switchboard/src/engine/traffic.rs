//! Traffic counters of one engine: packets and bytes in and out, sessions closed for not
//! reading, and the WebSocket writers still running (a shutdown waits for them to flush).
//! Counted per batch on the way out, never per recipient in the broadcast path.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;

use super::Frame;

#[derive(Debug, Default)]
pub struct Traffic {
    pub packets_in: Counter,
    pub bytes_in: Counter,
    pub packets_out: Counter,
    pub bytes_out: Counter,
    /// Sessions closed because their outbound queue was full.
    pub slow_consumers: Counter,
    /// WebSocket connections that negotiated permessage-deflate.
    pub deflate_connections: Counter,
    /// Handshakes refused by the per-address limits: too many open, too fast.
    pub refused_connections_per_ip: Counter,
    pub refused_connect_rate_per_ip: Counter,
    /// When a slow consumer was last logged.
    slow_consumer_logged: Mutex<Option<Instant>>,
    open_writers: Arc<AtomicUsize>,
}

/// Counts a WebSocket writer as open until dropped.
pub(crate) struct OpenWriter(Arc<AtomicUsize>);

impl Drop for OpenWriter {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Traffic {
    pub(crate) fn count_sent(&self, frames: &[Frame]) {
        self.count(
            frames.len() as u64,
            frames.iter().map(|f| f.payload().len() as u64).sum(),
        );
    }

    /// Counts `packets` sent, `bytes` of payload in all.
    pub(crate) fn count(&self, packets: u64, bytes: u64) {
        if packets == 0 {
            return;
        }
        self.packets_out.inc_by(packets);
        self.bytes_out.inc_by(bytes);
    }

    /// Counts a session closed for not reading; true when it should be logged: the first, then
    /// at most one a second (a mass disconnect can close thousands at once; the counter has
    /// them all).
    pub(crate) fn slow_consumer_closed(&self) -> bool {
        self.slow_consumers.inc();
        let mut logged = self.slow_consumer_logged.lock();
        let due = logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
        if due {
            *logged = Some(Instant::now());
        }
        due
    }

    pub(crate) fn writer_opened(&self) -> OpenWriter {
        self.open_writers.fetch_add(1, Ordering::AcqRel);
        OpenWriter(self.open_writers.clone())
    }

    pub fn open_writers(&self) -> usize {
        self.open_writers.load(Ordering::Acquire)
    }
}
