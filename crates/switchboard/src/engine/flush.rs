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
//!   meanwhile goes out in one write. Should the worker stay busy without pause, a flusher
//!   thread writes what waited longer than [`DEFERRED_WAIT`]. A thread that is not such a
//!   worker writes at once.
//!
//! A session waits in at most one flusher chunk and in at most one worker's list (its outbox
//! remembers both); the two are apart, so a large broadcast is never held up by a small one.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError, channel};
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
        self.hand_off();
        if self.large
            && let Some(flushers) = flushers()
        {
            flushers.wait_until_caught_up();
        }
        self.reached
    }

    /// Gives the sessions marked so far to their writer.
    fn hand_off(&mut self) {
        let chunk = std::mem::take(&mut self.chunk);
        if !self.large {
            defer(chunk);
        } else if !chunk.is_empty() {
            hand_over(chunk);
        }
    }
}

impl Drop for SendBatch<'_> {
    /// A batch left unfinished (a panic while it was filled) still hands its sessions on: they
    /// are marked as waiting for a writer, and no other broadcast would write them.
    fn drop(&mut self) {
        if !self.chunk.is_empty() {
            self.hand_off();
        }
    }
}

thread_local! {
    /// Sessions this runtime worker writes once it runs out of work; `None` on any other thread
    /// (set on a worker's first park, so blocking-pool threads, which never park, stay `None`).
    static DEFERRED: RefCell<Option<Arc<Mutex<Deferred>>>> = const { RefCell::new(None) };
}

/// One worker's sessions waiting for it to be idle, and since when the first has waited. Shared
/// with the flusher threads, which write them if the worker stays busy for [`DEFERRED_WAIT`].
#[derive(Default)]
struct Deferred {
    conns: Vec<Arc<EngineConn>>,
    since: Option<Instant>,
}

impl Deferred {
    fn take(&mut self) -> Vec<Arc<EngineConn>> {
        self.since = None;
        std::mem::take(&mut self.conns)
    }
}

/// Every worker's [`Deferred`], for the flushers' sweep.
static ALL_DEFERRED: Mutex<Vec<Arc<Mutex<Deferred>>>> = Mutex::new(Vec::new());

/// Leaves the sessions to this worker's next idle moment, or writes them now: on a thread that
/// is not a runtime worker with the park hook, or when the worker, busy, has left
/// [`DEFERRED_MAX`] waiting.
fn defer(conns: Vec<Arc<EngineConn>>) {
    if conns.is_empty() {
        return;
    }
    // A thread that is not a runtime worker, or one whose thread-locals are being torn down,
    // writes at once.
    let mut conns = Some(conns);
    let _ = DEFERRED.try_with(|deferred| {
        let deferred = deferred.borrow();
        let Some(waiting) = deferred.as_ref() else {
            return;
        };
        let mut waiting = waiting.lock();
        waiting.since.get_or_insert_with(Instant::now);
        waiting.conns.extend(conns.take().into_iter().flatten());
        if waiting.conns.len() >= DEFERRED_MAX {
            conns = Some(waiting.take());
        }
    });
    if let Some(now) = conns {
        write_each(&now);
    }
}

/// The runtime's park hook (see `main.rs`): writes the sessions whose writes this worker
/// deferred, and from its first call on, lets small broadcasts sent on this thread defer.
pub fn write_deferred() {
    let Ok(waiting) = DEFERRED.try_with(|deferred| {
        let mut deferred = deferred.borrow_mut();
        let waiting = deferred.get_or_insert_with(|| {
            // The flushers sweep what a busy worker leaves waiting; start them now.
            let _ = flushers();
            let waiting = Arc::default();
            ALL_DEFERRED.lock().push(Arc::clone(&waiting));
            waiting
        });
        waiting.lock().take()
    }) else {
        // The thread is exiting: its list, if it had one, is swept by the flushers.
        return;
    };
    write_each(&waiting);
}

/// A flusher's sweep: writes what a worker, busy without pause, has left waiting too long.
fn write_stale_deferred() {
    let all = {
        let mut all = ALL_DEFERRED.lock();
        // A list only held here is that of a thread that has exited; once written, it goes.
        all.retain(|waiting| Arc::strong_count(waiting) > 1 || waiting.lock().since.is_some());
        all.clone()
    };
    for waiting in all {
        let stale = {
            let mut waiting = waiting.lock();
            match waiting.since {
                Some(since) if since.elapsed() >= DEFERRED_WAIT => waiting.take(),
                _ => continue,
            }
        };
        write_each(&stale);
    }
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
    for (index, conn) in conns.iter().enumerate() {
        if let Some(ahead) = conns.get(index + PREFETCH_AHEAD) {
            ahead.prefetch_outbox();
        }
        conn.flush();
    }
}

/// How many sessions ahead a flusher asks the CPU to fetch the state it will lock: the
/// broadcast that queued on them ran on another core, so each is a cache miss otherwise.
const PREFETCH_AHEAD: usize = 4;

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
    let mut batched = BatchedWrites::default();
    let mut swept = Instant::now();
    loop {
        if swept.elapsed() >= DEFERRED_WAIT {
            write_stale_deferred();
            swept = Instant::now();
        }
        let next = {
            let receiver = chunks.lock();
            match receiver.try_recv() {
                Ok(chunk) => Ok(chunk),
                Err(TryRecvError::Empty) => {
                    flushers.record(None);
                    receiver.recv_timeout(DEFERRED_WAIT)
                }
                Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
            }
        };
        match next {
            Ok(chunk) => {
                flushers.record(Some(chunk.handed_at));
                batched.flush_each(&chunk.conns);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Whether the flushers write a chunk's sessions with one system call (io_uring, Linux) where
/// the kernel allows it (`[engine] io_uring`; one value for the process, set when the engine
/// starts, before the flushers do).
static IO_URING: AtomicBool = AtomicBool::new(true);

/// Sets whether the flushers may use io_uring (see [`IO_URING`]).
pub fn set_io_uring(allowed: bool) {
    IO_URING.store(allowed, Ordering::Relaxed);
}

/// How many flusher threads write through io_uring (the `switchboard_flusher_io_uring` gauge).
static FLUSHERS_ON_IO_URING: AtomicUsize = AtomicUsize::new(0);

/// How many flusher threads write through io_uring.
pub fn flushers_on_io_uring() -> usize {
    FLUSHERS_ON_IO_URING.load(Ordering::Relaxed)
}

/// Writes the flushers made through io_uring (the `switchboard_io_uring_sends` counter).
static IO_URING_SENDS: AtomicU64 = AtomicU64::new(0);

/// Writes the flushers made through io_uring since start.
pub fn io_uring_sends() -> u64 {
    IO_URING_SENDS.load(Ordering::Relaxed)
}

/// Counts writes made through io_uring.
pub(super) fn count_io_uring_sends(sends: usize) {
    IO_URING_SENDS.fetch_add(sends as u64, Ordering::Relaxed);
}

/// A flusher thread's way of writing its chunks: batched through its own ring, or one `send`
/// per session (no io_uring here, not allowed, or the ring failed). Chosen at the first chunk,
/// not when the thread starts: the flushers start with the runtime, before the engine has read
/// its settings.
#[derive(Default)]
struct BatchedWrites {
    #[cfg(target_os = "linux")]
    ring: RingState,
}

#[cfg(target_os = "linux")]
#[derive(Default)]
enum RingState {
    #[default]
    NotChosen,
    Ring(Box<super::uring::BatchedWriter>),
    Off,
}

impl BatchedWrites {
    fn flush_each(&mut self, conns: &[Arc<EngineConn>]) {
        #[cfg(target_os = "linux")]
        {
            if matches!(self.ring, RingState::NotChosen) {
                self.ring = Self::open_ring();
            }
            if let RingState::Ring(ring) = &mut self.ring {
                let Err(error) = ring.flush_each(conns) else {
                    return;
                };
                tracing::warn!(
                    %error,
                    "the flusher's io_uring failed; it sends with one system call per recipient \
                     from now on (nothing was lost)"
                );
                self.ring = RingState::Off;
                FLUSHERS_ON_IO_URING.fetch_sub(1, Ordering::Relaxed);
                // Then one by one, the whole chunk: the sessions the ring had not reached yet
                // are written; those it had are looked at again (nothing is written twice).
            }
        }
        flush_each(conns);
    }

    #[cfg(target_os = "linux")]
    fn open_ring() -> RingState {
        if !IO_URING.load(Ordering::Relaxed) {
            return RingState::Off;
        }
        match super::uring::BatchedWriter::new() {
            Ok(ring) => {
                FLUSHERS_ON_IO_URING.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("a flusher thread writes through io_uring");
                RingState::Ring(Box::new(ring))
            }
            Err(error) => {
                tracing::info!(
                    %error,
                    "io_uring is not available (a seccomp profile may refuse it); the flusher \
                     sends to each recipient with its own system call"
                );
                RingState::Off
            }
        }
    }
}

/// Recipients from which a broadcast is written by the flusher threads rather than by the
/// worker that sent it.
const FLUSHER_MIN: usize = 32;

/// How many sessions a busy worker leaves waiting at most before it writes them.
const DEFERRED_MAX: usize = 4096;

/// How long a session waits at most for a busy worker before a flusher thread writes it (the
/// flushers look this often).
const DEFERRED_WAIT: Duration = Duration::from_millis(50);

/// Sessions per hand-over: the flushers start writing while a large broadcast is still being
/// queued, and take the queue's lock once per this many sessions.
const CHUNK: usize = 256;

/// How far behind the flushers may fall before a broadcast waits for them.
const MAX_LAG: Duration = Duration::from_millis(500);

/// At most this many flusher threads, whatever the core count.
const MAX_FLUSHERS: usize = 8;

#[cfg(test)]
pub(super) mod tests {
    use std::io::Read;
    use std::task::Waker;

    use super::*;
    use crate::engine::{Traffic, TransportKind};
    use crate::http::{KeptHeaders, RequestInfo};

    /// A session on a real loopback socket, and the client's end of it.
    pub(in crate::engine) async fn session() -> (Arc<EngineConn>, std::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let client = std::net::TcpStream::connect(address).expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let request = RequestInfo {
            query: Box::default(),
            headers: KeptHeaders::from_request(&http::HeaderMap::new()),
            remote_addr: None,
        };
        let conn = Arc::new(EngineConn::new(
            "sid".into(),
            request,
            TransportKind::WebSocket,
            16,
            Arc::new(Traffic::default()),
            super::super::Protocol::V4,
        ));
        conn.attach_socket(
            Arc::new(crate::websocket::Socket::plain(server)),
            Waker::noop().clone(),
            None,
        );
        (conn, client)
    }

    fn send_small_broadcast(conn: &Arc<EngineConn>) {
        let frames = [Frame::text_packet(b"4hello")];
        let mut batch = SendBatch::new(&frames, 1);
        batch.send(conn);
        assert_eq!(batch.finish(), 1);
    }

    /// Reads the one frame the session was sent; how long after `sent` it arrived.
    fn arrival(mut client: std::net::TcpStream, sent: Instant) -> Duration {
        let mut frame = [0u8; 8];
        client.read_exact(&mut frame).expect("the frame arrives");
        assert_eq!(&frame, b"\x81\x064hello");
        sent.elapsed()
    }

    #[test]
    fn a_small_broadcast_is_written_while_its_worker_stays_busy() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .on_thread_park(write_deferred)
            .build()
            .expect("runtime");
        let (conn, client) = runtime.block_on(session());
        let sent = Instant::now();
        let reader = std::thread::spawn(move || arrival(client, sent));
        runtime.block_on(async {
            tokio::spawn(async move {
                send_small_broadcast(&conn);
                // Busy without a pause: a worker would write the session only once idle.
                while sent.elapsed() < Duration::from_millis(1500) {
                    std::hint::spin_loop();
                }
            })
            .await
            .expect("the task ends");
        });
        // A flusher thread wrote it long before the worker became idle.
        let waited = reader.join().expect("reader");
        assert!(waited < Duration::from_millis(1000), "waited {waited:?}");
    }

    #[test]
    fn a_small_broadcast_off_the_runtime_is_written_at_once() {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let (conn, client) = runtime.block_on(session());
        let sent = Instant::now();
        // Not a runtime worker: nothing would write a deferred session, so it is written now.
        send_small_broadcast(&conn);
        let waited = arrival(client, sent);
        assert!(waited < Duration::from_millis(1000), "waited {waited:?}");
    }

    /// Counts the wake-ups of the connection a session's writers leave the rest to.
    struct CountingWaker(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// A client that stops reading: 16 KB frames, numbered, are sent to it with `send` (a
    /// broadcast's writer) until the socket takes no more, then ten more (the session queues
    /// 16 at most). The writer must leave the rest queued and wake the connection; once the
    /// client reads again and the connection writes what is left, every frame must have
    /// arrived whole and in order.
    pub(in crate::engine) fn a_slow_client_gets_every_frame_in_order(
        mut send: impl FnMut(&Arc<EngineConn>, Frame),
    ) {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let (conn, mut client) = runtime.block_on(session());
        let woken = Arc::new(CountingWaker(0.into()));
        let socket = conn.detach_socket().expect("attached");
        conn.attach_socket(socket, Waker::from(woken.clone()), None);
        let body = vec![b'x'; 16 * 1024];
        let numbered = |n: usize| {
            Frame::message(|buf| {
                buf.extend_from_slice(format!("{n:04}").as_bytes());
                buf.extend_from_slice(&body);
            })
        };
        let mut frames = 0;
        while !conn.has_backlog() {
            assert!(frames < 5000, "the socket took 80 MB without blocking");
            send(&conn, numbered(frames));
            frames += 1;
        }
        for _ in 0..10 {
            send(&conn, numbered(frames));
            frames += 1;
        }
        assert!(
            woken.0.load(std::sync::atomic::Ordering::SeqCst) > 0,
            "the connection was woken"
        );
        // The connection's part: write what is left whenever the client has read some.
        let writer = std::thread::spawn(move || {
            while conn.has_backlog() {
                conn.write_queued().expect("writes");
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let frame_len = 2 + 2 + 1 + 4 + body.len();
        let mut stream = vec![0u8; frame_len * frames];
        client.read_exact(&mut stream).expect("every frame arrives");
        writer.join().expect("writer");
        for (n, frame) in stream.chunks(frame_len).enumerate() {
            // A text frame with a 16-bit length, `4`, the sequence number, then the body.
            assert_eq!(
                frame[..2],
                [0x81, 126],
                "frame {n} starts where the last ended"
            );
            assert_eq!(
                &frame[4..9],
                format!("4{n:04}").as_bytes(),
                "frame {n} in order"
            );
            assert!(
                frame[9..].iter().all(|byte| *byte == b'x'),
                "frame {n} whole"
            );
        }
    }

    #[test]
    fn broadcasts_a_client_reads_too_slowly_for_arrive_whole_and_in_order() {
        // Large broadcasts written from this thread (not a runtime worker): written at once.
        a_slow_client_gets_every_frame_in_order(|conn, frame| {
            let mut batch = SendBatch::new(std::slice::from_ref(&frame), 1);
            batch.send(conn);
            assert_eq!(batch.finish(), 1, "frame queued");
        });
    }
}
