//! Writing a broadcast to its recipients without a task wake-up per recipient, and without
//! holding the caller for the length of the writes: the broadcast queues its frames on every
//! recipient (in order with anything else sent to it, so a session's frames never overtake
//! each other) and leaves the writing of each recipient's queue to one of two writers.
//!
//! - A large broadcast hands the sessions, in chunks, to the flusher threads (half the
//!   machine's cores, at least one, started on first use). The next broadcast is queued while
//!   the last one is still being written, and a session reached by both before its turn comes
//!   gets both in one write. When the flushers fall more than [`MAX_LAG`] behind, a broadcast
//!   waits for them before it returns, so a publisher faster than the sockets can be written
//!   is held back rather than queued behind without end.
//! - A small one (a chat room) is written by the runtime worker that sent it, once that worker
//!   runs out of work (its park hook, [`write_deferred`]) or has [`DEFERRED_MAX`] sessions
//!   waiting: alone, a message goes out at once; in a burst, everything sent to a session
//!   meanwhile goes out in one write. A thread that is not such a worker writes at once.
//!
//! A session waits in at most one flusher chunk and in at most one worker's list (its outbox
//! remembers both); the two are apart, so a large broadcast is never held up by a small one.

use std::cell::RefCell;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::conn::Writer;
use super::{EngineConn, Frame};

/// One broadcast's sending: [`SendBatch::send`] per recipient, then [`SendBatch::finish`].
pub struct SendBatch<'a> {
    frames: &'a [Frame],
    /// Large: written by the flusher threads; small: by this worker once it is idle.
    large: bool,
    chunk: Vec<Arc<EngineConn>>,
    reached: usize,
}

impl<'a> SendBatch<'a> {
    /// `recipients`: how many sessions the broadcast may reach (at most), which decides who
    /// writes it.
    pub fn new(frames: &'a [Frame], recipients: usize) -> Self {
        Self {
            frames,
            large: recipients >= FLUSHER_MIN,
            chunk: Vec::new(),
            reached: 0,
        }
    }

    /// Queues the frames on `conn`; its queue is written later (see the module's text).
    pub fn send(&mut self, conn: &Arc<EngineConn>) {
        let writer = if self.large {
            Writer::Flusher
        } else {
            Writer::Caller
        };
        let Ok(needs_flush) = conn.queue_for(self.frames, writer) else {
            return;
        };
        self.reached += 1;
        if needs_flush {
            if self.chunk.is_empty() {
                self.chunk.reserve_exact(if self.large { CHUNK } else { 4 });
            }
            self.chunk.push(conn.clone());
            if self.large && self.chunk.len() == CHUNK {
                hand_over(std::mem::take(&mut self.chunk));
            }
        }
    }

    /// Hands the sessions over to their writer and returns how many accepted the frames; a
    /// large broadcast returns once the flushers are no more than [`MAX_LAG`] behind.
    pub fn finish(mut self) -> usize {
        let chunk = std::mem::take(&mut self.chunk);
        if !self.large {
            defer(chunk);
            return self.reached;
        }
        if !chunk.is_empty() {
            hand_over(chunk);
        }
        if let Some(flushers) = flushers() {
            flushers.wait_until_caught_up();
        }
        self.reached
    }
}

thread_local! {
    /// Sessions this runtime worker writes once it runs out of work; `None` on any other thread
    /// (set on a worker's first park, so blocking-pool threads, which never park, stay `None`).
    static DEFERRED: RefCell<Option<Vec<Arc<EngineConn>>>> = const { RefCell::new(None) };
}

/// Leaves the sessions to this worker's next idle moment, or writes them now: on a thread that
/// is not a runtime worker with the park hook, or when the worker, busy, has left
/// [`DEFERRED_MAX`] waiting.
fn defer(conns: Vec<Arc<EngineConn>>) {
    if conns.is_empty() {
        return;
    }
    let now = DEFERRED.with(|deferred| {
        let mut deferred = deferred.borrow_mut();
        let Some(waiting) = deferred.as_mut() else {
            return conns;
        };
        waiting.extend(conns);
        if waiting.len() >= DEFERRED_MAX {
            std::mem::take(waiting)
        } else {
            Vec::new()
        }
    });
    write_each(&now);
}

/// The runtime's park hook (see `main.rs`): writes the sessions whose writes this worker
/// deferred, and from its first call on, lets small broadcasts sent on this thread defer.
pub fn write_deferred() {
    let waiting = DEFERRED.with(|deferred| {
        let mut deferred = deferred.borrow_mut();
        std::mem::take(deferred.get_or_insert_with(Vec::new))
    });
    write_each(&waiting);
}

fn write_each(conns: &[Arc<EngineConn>]) {
    for conn in conns {
        conn.write_pending();
    }
}

/// Sessions whose queues a flusher writes, and when they were handed over.
struct Chunk {
    conns: Vec<Arc<EngineConn>>,
    handed_at: Instant,
}

/// The flusher threads' common queue, and how far behind they are.
struct Flushers {
    queue: Sender<Chunk>,
    /// When the chunk a flusher took last was handed over; `None` once the queue ran empty.
    behind_since: Mutex<Option<Instant>>,
    caught_up: Condvar,
}

impl Flushers {
    fn wait_until_caught_up(&self) {
        let mut behind_since = self.behind_since.lock();
        while let Some(since) = *behind_since {
            if since.elapsed() <= MAX_LAG {
                return;
            }
            // Re-checked at least every MAX_LAG, should a flusher be stuck in one write.
            self.caught_up.wait_for(&mut behind_since, MAX_LAG);
        }
    }

    fn record(&self, behind_since: Option<Instant>) {
        *self.behind_since.lock() = behind_since;
        self.caught_up.notify_all();
    }
}

/// Gives a chunk to the flusher threads, or writes it here if they could not be started.
fn hand_over(conns: Vec<Arc<EngineConn>>) {
    let chunk = Chunk {
        conns,
        handed_at: Instant::now(),
    };
    match flushers() {
        Some(flushers) => {
            if let Err(refused) = flushers.queue.send(chunk) {
                flush_each(&refused.0.conns);
            }
        }
        None => flush_each(&chunk.conns),
    }
}

fn flush_each(conns: &[Arc<EngineConn>]) {
    for conn in conns {
        conn.flush();
    }
}

fn flushers() -> Option<&'static Arc<Flushers>> {
    static FLUSHERS: OnceLock<Option<Arc<Flushers>>> = OnceLock::new();
    FLUSHERS
        .get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let (queue, chunks) = channel::<Chunk>();
            let flushers = Arc::new(Flushers {
                queue,
                behind_since: Mutex::new(None),
                caught_up: Condvar::new(),
            });
            let chunks = Arc::new(Mutex::new(chunks));
            let mut started = 0;
            for n in 0..(cores / 2).clamp(1, MAX_FLUSHERS) {
                let (chunks, flushers) = (chunks.clone(), flushers.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("switchboard-flush-{n}"))
                    .spawn(move || flush_chunks(&chunks, &flushers));
                started += usize::from(spawned.is_ok());
            }
            (started > 0).then_some(flushers)
        })
        .as_ref()
}

/// A flusher thread's life: take the next chunk, write each session's queue.
fn flush_chunks(chunks: &Mutex<Receiver<Chunk>>, flushers: &Flushers) {
    loop {
        let next = {
            let receiver = chunks.lock();
            match receiver.try_recv() {
                Ok(chunk) => Ok(chunk),
                Err(TryRecvError::Empty) => {
                    flushers.record(None);
                    receiver.recv().map_err(|_| ())
                }
                Err(TryRecvError::Disconnected) => Err(()),
            }
        };
        let Ok(chunk) = next else { return };
        flushers.record(Some(chunk.handed_at));
        flush_each(&chunk.conns);
    }
}

/// Recipients from which a broadcast is written by the flusher threads rather than by the
/// worker that sent it.
const FLUSHER_MIN: usize = 32;

/// How many sessions a busy worker leaves waiting at most before it writes them.
const DEFERRED_MAX: usize = 4096;

/// Sessions per hand-over: the flushers start writing while a large broadcast is still being
/// queued, and take the queue's lock once per this many sessions.
const CHUNK: usize = 256;

/// How far behind the flushers may fall before a broadcast waits for them.
const MAX_LAG: Duration = Duration::from_millis(500);

/// At most this many flusher threads, whatever the core count.
const MAX_FLUSHERS: usize = 8;
