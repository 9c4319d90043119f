//! [`EngineConn`]: what the layers above see of one Engine.IO session: its id, the request that
//! opened it, a bounded outbound queue of ready-made [`Frame`]s, and a way to close it.
//!
//! The queue is drained by whichever transport currently carries the session (the pending polling
//! GET or the WebSocket's connection), so switching transports on upgrade never loses or
//! reorders a packet. It is bounded: a client that does not read fast enough is closed
//! (`SlowConsumer`) instead of growing the server's memory or slowing anyone else down.
//!
//! A broadcast to many queues its frames here without waking the connection and has a flusher
//! thread write the queue (`flush.rs`); everything else is queued and the connection woken,
//! which batches what piled up into one write. Every write happens under the outbox lock, so
//! frames go out whole and in order.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::task::Waker;

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::Notify;

use super::frame::Frame;
use super::traffic::Traffic;
use crate::http::RequestInfo;
use crate::websocket::Socket;

/// Why a session ended. The Socket.IO layer reports these as disconnect reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent an Engine.IO close packet.
    ClientClose,
    /// The connection went away (WebSocket closed, polling request aborted).
    TransportClose,
    /// The transport failed (I/O or WebSocket protocol error).
    TransportError,
    /// No pong within pingTimeout.
    PingTimeout,
    /// The client sent something that is not a valid packet.
    ParseError,
    /// A WebSocket message over maxPayload (close code 1009).
    MessageTooLarge,
    /// The client's outbound queue overflowed.
    SlowConsumer,
    /// The server decided to close it (disconnect, connect timeout, protocol misuse).
    ForcedClose,
    /// The server is shutting down.
    ServerShutdown,
}

impl CloseReason {
    /// The reason string the reference server uses for the same case.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientClose | Self::TransportClose => "transport close",
            Self::TransportError | Self::MessageTooLarge => "transport error",
            Self::PingTimeout => "ping timeout",
            Self::ParseError => "parse error",
            Self::SlowConsumer => "slow consumer",
            Self::ForcedClose => "forced close",
            Self::ServerShutdown => "server shutting down",
        }
    }

    /// Closes the server decides on deliver what is already queued first (so a client sees the
    /// DISCONNECT it was sent); when the client is gone or broke the protocol there is no point.
    pub(crate) fn flushes_queue(self) -> bool {
        matches!(self, Self::ForcedClose | Self::ServerShutdown)
    }

    /// Whether a polling GET that comes after the close still gets an answer (the queued
    /// packets and the close, or the noop acknowledging the client's own close) rather than 400.
    /// A client's GET and its close POST travel on two connections and may arrive in either
    /// order; the GET must not fail for coming second.
    pub(crate) fn answers_final_poll(self) -> bool {
        self.flushes_queue() || self == Self::ClientClose
    }

    /// The WebSocket close code the server sends for this reason.
    pub(crate) fn websocket_code(self) -> u16 {
        match self {
            Self::MessageTooLarge => 1009,
            Self::ParseError => 1002,
            Self::ServerShutdown => 1001,
            Self::SlowConsumer => 1008,
            _ => 1000,
        }
    }
}

/// The Engine.IO protocol a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    V4,
    /// Engine.IO v3 (socket.io v2 clients, `[engine] allow_eio3`): the client pings, polling
    /// payloads are length-prefixed, binary messages carry their type byte. `b64`: the client
    /// asked for binary as base64 on polling.
    V3 { b64: bool },
}

/// The transport currently carrying a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Polling = 0,
    WebSocket = 1,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Polling => "polling",
            Self::WebSocket => "websocket",
        }
    }
}

/// A frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the session is closed")]
    Closed,
    #[error("the session's outbound queue is full; it was closed")]
    Full,
}

struct Outbox {
    frames: VecDeque<Frame>,
    /// Bytes of the first queued frame already written to the WebSocket (a partial write).
    written: usize,
    closed: Option<CloseReason>,
    /// The WebSocket carrying the session, once one does: frames are written to it directly.
    socket: Option<Arc<Socket>>,
    /// Wakes that WebSocket's connection to write what is queued (or to close).
    socket_waker: Option<Waker>,
    /// A flusher thread has this session in a chunk still to write (see `flush.rs`).
    flush_scheduled: bool,
    /// A runtime worker has this session among those it writes when idle (see `flush.rs`).
    write_pending: bool,
    /// A thread is writing the head of the queue with the outbox unlocked: the frames it
    /// writes are out of `frames` meanwhile, and no other thread writes.
    writing: bool,
    /// The session closed (without flushing) while a thread was writing: of the frames it
    /// holds, it puts back only one it wrote in part.
    discard_in_flight: bool,
}

/// Whether a write that empties the queue gives its storage back. A broadcast's writers keep
/// it: the next broadcast queues without an allocation (and its write frees nothing). The
/// connection's own writes (its heartbeat among them, every `ping_interval`) release it, so an
/// idle connection keeps no queue storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QueueStorage {
    Keep,
    Release,
}

/// What one write took of the frames at the head of the queue.
struct Taken {
    /// Frames written whole.
    frames: usize,
    /// Bytes written of the next one (a partial write), 0 if none.
    partly: usize,
    /// The Engine.IO payload bytes of the frames written whole (for the traffic counters).
    payload_bytes: u64,
}

impl Taken {
    /// `wrote` bytes taken by the socket from `frames`, the first of which had `skip` bytes
    /// written before.
    fn of<'a>(frames: impl Iterator<Item = &'a Frame>, skip: usize, mut wrote: usize) -> Self {
        let mut taken = Self {
            frames: 0,
            partly: 0,
            payload_bytes: 0,
        };
        for (index, frame) in frames.enumerate() {
            let left = frame.websocket_bytes().len() - if index == 0 { skip } else { 0 };
            if wrote < left {
                taken.partly = if index == 0 { skip + wrote } else { wrote };
                break;
            }
            wrote -= left;
            taken.frames += 1;
            taken.payload_bytes += frame.payload().len() as u64;
        }
        taken
    }
}

/// How many queued frames one vectored write takes at most.
const FRAMES_PER_WRITE: usize = 64;

/// Frames taken off the head of the queue for one write made with the queue unlocked (the
/// queue is marked `writing` meanwhile); [`InFlight::settle`] puts back what the write did not
/// take.
pub(crate) struct InFlight<const N: usize> {
    frames: [Option<Frame>; N],
    count: usize,
    /// Bytes of the first frame written before (a partial write).
    skip: usize,
}

impl<const N: usize> InFlight<N> {
    fn take(outbox: &mut Outbox) -> Self {
        let mut frames: [Option<Frame>; N] = [const { None }; N];
        let count = outbox.frames.len().min(N);
        for (slot, frame) in frames.iter_mut().zip(outbox.frames.drain(..count)) {
            *slot = Some(frame);
        }
        Self {
            frames,
            count,
            skip: outbox.written,
        }
    }

    /// The bytes still to write, one slice per frame (the first `count` are used).
    pub(crate) fn slices(&self) -> [IoSlice<'_>; N] {
        let mut slices = [IoSlice::new(&[]); N];
        for (index, frame) in self.frames.iter().flatten().enumerate() {
            let bytes = frame.websocket_bytes();
            slices[index] = IoSlice::new(if index == 0 {
                &bytes[self.skip..]
            } else {
                bytes
            });
        }
        slices
    }

    /// How many frames are taken (at least one).
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// `wrote` bytes were taken by the socket: the rest goes back to the front of the queue,
    /// in order. If the session closed meanwhile, only a frame partly written goes back (to be
    /// finished, or the stream is corrupt), ahead of what was queued after the close (its
    /// close frame).
    fn settle(&mut self, outbox: &mut Outbox, wrote: usize) -> Taken {
        let taken = Taken::of(self.frames.iter().flatten(), self.skip, wrote);
        outbox.written = taken.partly;
        let unwritten = taken.frames;
        let put_back = if std::mem::take(&mut outbox.discard_in_flight) {
            let partly_written = usize::from(outbox.written > 0);
            (unwritten + partly_written).min(self.count)
        } else {
            self.count
        };
        for frame in self.frames[unwritten..put_back]
            .iter_mut()
            .rev()
            .filter_map(Option::take)
        {
            outbox.frames.push_front(frame);
        }
        taken
    }
}

/// How many queued frames a write handed to the batched writer takes at most (a broadcast's
/// recipient has one queued, mostly).
pub(crate) const FRAMES_PER_DETACHED_WRITE: usize = 8;

/// A write of the head of a session's queue that the caller makes itself, with others, in one
/// system call (`uring.rs`): [`EngineConn::begin_detached_flush`], the send, then
/// [`EngineConn::end_detached_flush`] with its outcome.
pub(crate) struct DetachedWrite {
    pub(crate) frames: InFlight<FRAMES_PER_DETACHED_WRITE>,
    /// Holds the descriptor open until the write ends.
    socket: Arc<Socket>,
}

impl DetachedWrite {
    pub(crate) fn socket(&self) -> &Socket {
        &self.socket
    }
}

/// Who writes frames queued on a WebSocket session (a polling session's are collected by its
/// pending GET, woken at once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Writer {
    /// Its connection, woken now.
    Connection,
    /// A flusher thread (`flush.rs`); the session is marked until one has written it, so that
    /// it waits in one chunk at most.
    Flusher,
    /// The caller, a little later ([`EngineConn::write_pending`]; an idle runtime worker); the
    /// session is marked until then, so that it waits in one worker's list at most.
    Caller,
}

/// What writing a session's queue to its WebSocket came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// Nothing is left queued.
    All,
    /// The socket takes no more for now (or there is no socket): frames are left queued.
    Blocked,
    /// Another thread is writing this queue; it writes what was queued meanwhile too, and wakes
    /// the connection if it leaves anything.
    ByAnother,
}

/// What only a session opened on polling needs; boxed, so that a WebSocket session (most of
/// them) carries none of it.
#[derive(Default)]
pub(crate) struct PollingState {
    /// Wakes a pending GET (a WebSocket is woken through its `socket_waker`).
    pub(crate) consumer_wake: Notify,
    pub(crate) poll_in_flight: AtomicBool,
    pub(crate) post_in_flight: AtomicBool,
    /// Signalled when a GET delivered the final close packet.
    pub(crate) final_poll_done: Notify,
    /// Wakes everyone waiting in [`EngineConn::closed`]: the supervisor and an upgrade under way
    /// (a session opened on WebSocket is torn down by its connection, which waits for nothing).
    closed_signal: Notify,
}

/// One Engine.IO session as the layers above see it.
pub struct EngineConn {
    sid: Arc<str>,
    request: RequestInfo,
    outbox: Mutex<Outbox>,
    traffic: Arc<Traffic>,
    max_queued_frames: u32,
    transport: AtomicU8,
    /// permessage-deflate's server window (bits) once its WebSocket negotiated it; 0: none.
    deflate: AtomicU8,
    polling: Option<Box<PollingState>>,
    protocol: Protocol,
}

impl EngineConn {
    pub(crate) fn new(
        sid: Arc<str>,
        request: RequestInfo,
        transport: TransportKind,
        max_queued_frames: usize,
        traffic: Arc<Traffic>,
        protocol: Protocol,
    ) -> Self {
        Self {
            sid,
            request,
            outbox: Mutex::new(Outbox {
                frames: VecDeque::new(),
                written: 0,
                closed: None,
                socket: None,
                socket_waker: None,
                flush_scheduled: false,
                write_pending: false,
                writing: false,
                discard_in_flight: false,
            }),
            traffic,
            max_queued_frames: u32::try_from(max_queued_frames).unwrap_or(u32::MAX),
            transport: AtomicU8::new(transport as u8),
            deflate: AtomicU8::new(0),
            polling: (transport == TransportKind::Polling).then(Box::default),
            protocol,
        }
    }

    /// The Engine.IO protocol the session speaks.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Whether the session speaks Engine.IO v3 (a socket.io v2 client).
    pub fn eio3(&self) -> bool {
        matches!(self.protocol, Protocol::V3 { .. })
    }

    /// The Engine.IO session id.
    pub fn sid(&self) -> &Arc<str> {
        &self.sid
    }

    pub fn request(&self) -> &RequestInfo {
        &self.request
    }

    pub fn transport(&self) -> TransportKind {
        if self.transport.load(Ordering::Acquire) == TransportKind::WebSocket as u8 {
            TransportKind::WebSocket
        } else {
            TransportKind::Polling
        }
    }

    pub(crate) fn set_transport(&self, transport: TransportKind) {
        self.transport.store(transport as u8, Ordering::Release);
        // A polling GET still pending re-checks the transport.
        self.wake_poll();
    }

    /// The polling side of a session opened on polling.
    pub(crate) fn polling(&self) -> Option<&PollingState> {
        self.polling.as_deref()
    }

    /// Wakes a pending polling GET, if the session has polled.
    pub(crate) fn wake_poll(&self) {
        if let Some(polling) = &self.polling {
            polling.consumer_wake.notify_one();
        }
    }

    /// permessage-deflate's server window (bits), when its WebSocket negotiated it.
    pub fn deflate(&self) -> Option<u8> {
        Some(self.deflate.load(Ordering::Acquire)).filter(|bits| *bits != 0)
    }

    /// Adds `frames` to the queue, each compressed first when this session's WebSocket takes
    /// compressed messages and it is not already (a broadcast's were compressed once for all
    /// its recipients: `Frame::deflated`).
    fn enqueue(&self, outbox: &mut Outbox, frames: &[Frame]) {
        match self.deflate() {
            None => outbox.frames.extend(frames.iter().cloned()),
            Some(bits) => outbox.frames.extend(
                frames
                    .iter()
                    .map(|frame| frame.deflated(bits).unwrap_or_else(|| frame.clone())),
            ),
        }
    }

    /// Queues one frame.
    pub fn send(&self, frame: Frame) -> Result<(), SendError> {
        self.send_all(std::slice::from_ref(&frame))
    }

    /// Queues several frames together (a packet and its binary attachments): all or none. The
    /// transport writes them, together with whatever else is queued by then: under load several
    /// frames for one client go out in one write.
    pub fn send_all(&self, frames: &[Frame]) -> Result<(), SendError> {
        self.queue_for(frames, Writer::Connection).map(|_| ())
    }

    /// Whether something is queued and not written yet.
    pub fn has_backlog(&self) -> bool {
        let outbox = self.outbox.lock();
        !outbox.frames.is_empty() || outbox.closed.is_some()
    }

    /// Whether a frame queued now would wait: something is queued before it, or the session is
    /// on polling with no GET waiting for it (it goes with the next GET). A volatile event is
    /// not queued then: it would only be late (engine.io's `writable` false).
    pub fn would_wait(&self) -> bool {
        let outbox = self.outbox.lock();
        if !outbox.frames.is_empty() || outbox.closed.is_some() {
            return true;
        }
        outbox.socket.is_none()
            && self
                .polling
                .as_ref()
                .is_some_and(|polling| !polling.poll_in_flight.load(Ordering::Acquire))
    }

    /// Queues `frames` (all or none) for `writer` to write (see [`Writer`]): true when the
    /// caller must now arrange that write, false when one is already due (or the session polls,
    /// whose pending GET was woken, or `writer` is the connection, which was woken).
    pub(crate) fn queue_for(&self, frames: &[Frame], writer: Writer) -> Result<bool, SendError> {
        {
            let mut outbox = self.outbox.lock();
            if outbox.closed.is_some() {
                return Err(SendError::Closed);
            }
            if outbox.frames.len() + frames.len() <= self.max_queued_frames as usize {
                self.enqueue(&mut outbox, frames);
                if outbox.socket.is_some() {
                    match writer {
                        Writer::Connection => {}
                        Writer::Flusher => {
                            let first = !outbox.flush_scheduled;
                            outbox.flush_scheduled = true;
                            return Ok(first);
                        }
                        Writer::Caller => {
                            let first = !outbox.write_pending;
                            outbox.write_pending = true;
                            return Ok(first);
                        }
                    }
                }
                self.wake_consumer(&outbox);
                return Ok(false);
            }
        }
        // Counted and logged once per session, by whichever sender closed it.
        if self.close_first(CloseReason::SlowConsumer) && self.traffic.slow_consumer_closed() {
            tracing::warn!(
                sid = %self.sid,
                limit = self.max_queued_frames,
                closed_so_far = self.traffic.slow_consumers.get(),
                "closed a session whose outbound queue was full (the client does not read fast \
                 enough); such closes are logged at most once a second, all are counted in \
                 switchboard_slow_consumers_closed"
            );
        }
        Err(SendError::Full)
    }

    /// Asks the CPU to start fetching the queue's state for writing, for a flusher that locks
    /// it a few sessions later (a hint only: nothing is read or changed).
    #[inline]
    pub(crate) fn prefetch_outbox(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_ET0, _mm_prefetch};
            let outbox: *const Mutex<Outbox> = &self.outbox;
            // SAFETY: a prefetch reads nothing and faults on no address; this one is a live
            // reference's.
            unsafe { _mm_prefetch::<_MM_HINT_ET0>(outbox.cast()) };
        }
    }

    /// Asks the CPU to start fetching the session's socket (its reference count and whether it
    /// is plain, which [`EngineConn::begin_detached_flush`] reads), for a flusher that takes it
    /// a few sessions later. Skipped if the queue is locked (a hint only: nothing is changed).
    #[inline]
    pub(crate) fn prefetch_socket(&self) {
        #[cfg(target_arch = "x86_64")]
        if let Some(outbox) = self.outbox.try_lock()
            && let Some(socket) = &outbox.socket
        {
            use std::arch::x86_64::{_MM_HINT_ET0, _mm_prefetch};
            let data: *const Socket = Arc::as_ptr(socket);
            // SAFETY: a prefetch reads nothing and faults on no address. The reference counts
            // sit just before the data, in the same allocation.
            unsafe {
                _mm_prefetch::<_MM_HINT_ET0>(data.cast::<i8>().wrapping_sub(16));
                _mm_prefetch::<_MM_HINT_ET0>(data.cast::<i8>().wrapping_add(48));
            }
        }
    }

    /// A flusher thread's turn: writes what is queued as far as the socket takes it; what is
    /// left (a full socket, an error, a close) is the connection's, which is woken for it.
    pub(crate) fn flush(&self) {
        let mut outbox = self.outbox.lock();
        outbox.flush_scheduled = false;
        self.write_or_wake(outbox, QueueStorage::Keep);
    }

    /// A flusher thread's turn, when it writes many sessions with one system call: takes the
    /// head of the queue for the caller to write ([`DetachedWrite`]) if the session is on a
    /// plain WebSocket that nobody else is writing; otherwise does what [`EngineConn::flush`]
    /// does and returns `None`.
    pub(crate) fn begin_detached_flush(&self) -> Option<DetachedWrite> {
        let mut outbox = self.outbox.lock();
        outbox.flush_scheduled = false;
        let socket = match &outbox.socket {
            Some(socket)
                if socket.is_plain()
                    && outbox.closed.is_none()
                    && !outbox.writing
                    && !outbox.frames.is_empty() =>
            {
                socket.clone()
            }
            _ => {
                self.write_or_wake(outbox, QueueStorage::Keep);
                return None;
            }
        };
        outbox.writing = true;
        Some(DetachedWrite {
            frames: InFlight::take(&mut outbox),
            socket,
        })
    }

    /// The end of a [`DetachedWrite`]: `result` is what the socket took. What it did not take
    /// goes back to the queue, and the rest of the queue is written as [`EngineConn::flush`]
    /// writes it (a full socket or an error leaves it to the connection, woken for it).
    pub(crate) fn end_detached_flush(
        &self,
        mut write: DetachedWrite,
        result: std::io::Result<usize>,
    ) {
        let mut outbox = self.outbox.lock();
        let taken = write
            .frames
            .settle(&mut outbox, *result.as_ref().unwrap_or(&0));
        outbox.writing = false;
        self.traffic.count(taken.frames as u64, taken.payload_bytes);
        match result {
            // All written, nothing queued meanwhile: the usual end of a broadcast's write.
            Ok(_) if outbox.frames.is_empty() && outbox.closed.is_none() => {}
            Ok(_) => self.write_or_wake(outbox, QueueStorage::Keep),
            Err(_) => self.wake_consumer(&outbox),
        }
    }

    /// The caller's write of what it queued with [`Writer::Caller`], as [`EngineConn::flush`].
    pub(crate) fn write_pending(&self) {
        let mut outbox = self.outbox.lock();
        outbox.write_pending = false;
        self.write_or_wake(outbox, QueueStorage::Keep);
    }

    fn write_or_wake(&self, mut outbox: MutexGuard<'_, Outbox>, storage: QueueStorage) {
        if outbox.closed.is_none()
            && matches!(
                self.write_out(&mut outbox, storage),
                Ok(Flushed::All | Flushed::ByAnother)
            )
        {
            return;
        }
        self.wake_consumer(&outbox);
    }

    /// Queues frames past the queue limit: a recovered session's missed events, which the
    /// client asked for and which must all arrive.
    pub fn send_all_unbounded(&self, frames: &[Frame]) -> Result<(), SendError> {
        let mut outbox = self.outbox.lock();
        if outbox.closed.is_some() {
            return Err(SendError::Closed);
        }
        self.enqueue(&mut outbox, frames);
        self.wake_consumer(&outbox);
        Ok(())
    }

    /// Moves every queued frame into `into`, in order (the polling transport's read).
    pub(crate) fn drain_into(&self, into: &mut Vec<Frame>) {
        into.extend(self.outbox.lock().frames.drain(..));
    }

    /// Wakes whoever writes the queue: the WebSocket's connection, or a pending polling GET.
    /// Called with the outbox locked, so that a WebSocket detached meanwhile is not woken.
    fn wake_consumer(&self, outbox: &Outbox) {
        match &outbox.socket_waker {
            Some(waker) => waker.wake_by_ref(),
            None => self.wake_poll(),
        }
    }

    /// From now on this WebSocket carries the session: frames are written to it directly, and
    /// `waker` wakes its connection when there is more to write or the session closes.
    /// With `deflate` (the WebSocket negotiated permessage-deflate), what is queued from now
    /// on goes compressed: set under the queue's lock with the socket, so that nothing
    /// compressed is ever queued for the polling transport.
    pub(crate) fn attach_socket(&self, socket: Arc<Socket>, waker: Waker, deflate: Option<u8>) {
        {
            let mut outbox = self.outbox.lock();
            outbox.socket = Some(socket);
            outbox.socket_waker = Some(waker);
            if let Some(bits) = deflate {
                self.deflate.store(bits, Ordering::Release);
            }
        }
        self.set_transport(TransportKind::WebSocket);
    }

    /// The WebSocket carrying the session, if one does.
    pub(crate) fn socket(&self) -> Option<Arc<Socket>> {
        self.outbox.lock().socket.clone()
    }

    /// Gives the WebSocket back once its connection ends; nothing is written to it any more.
    pub(crate) fn detach_socket(&self) -> Option<Arc<Socket>> {
        let mut outbox = self.outbox.lock();
        outbox.socket_waker = None;
        outbox.socket.take()
    }

    /// Writes what is queued to the WebSocket, as far as it takes it without waiting.
    pub(crate) fn write_queued(&self) -> std::io::Result<Flushed> {
        self.write_out(&mut self.outbox.lock(), QueueStorage::Release)
    }

    /// Writes queued frames to the socket until none is left or it would block. The socket
    /// call is made with the outbox unlocked, so that a broadcast queueing on this session is
    /// not held up behind it; one thread writes at a time (`Outbox::writing`), and it goes on
    /// to what was queued while it wrote.
    fn write_out(
        &self,
        outbox: &mut MutexGuard<'_, Outbox>,
        storage: QueueStorage,
    ) -> std::io::Result<Flushed> {
        if outbox.writing {
            return Ok(Flushed::ByAnother);
        }
        let Some(socket) = outbox.socket.clone() else {
            return Ok(if outbox.frames.is_empty() {
                Flushed::All
            } else {
                Flushed::Blocked
            });
        };
        outbox.writing = true;
        // Counted once at the end, not per frame.
        let (mut packets, mut bytes) = (0, 0);
        let outcome = loop {
            // The connection may have ended meanwhile: nothing more goes to its socket.
            if outbox.socket.is_none() {
                break Ok(Flushed::Blocked);
            }
            if outbox.frames.is_empty() {
                if storage == QueueStorage::Release {
                    outbox.frames = VecDeque::new();
                }
                if !socket.output_pending() {
                    break Ok(Flushed::All);
                }
                // Inside TLS, written bytes the socket did not take yet; then, what was queued
                // meanwhile.
                match MutexGuard::unlocked(outbox, || socket.flush_pending()) {
                    Ok(true) => continue,
                    Ok(false) => break Ok(Flushed::Blocked),
                    Err(error) => break Err(error),
                }
            }
            let mut in_flight = InFlight::<FRAMES_PER_WRITE>::take(outbox);
            let result = MutexGuard::unlocked(outbox, || {
                let slices = in_flight.slices();
                // One frame (a broadcast's, mostly): a plain send; several: one sendmsg (a
                // shorter way through the kernel than writev). A broadcast's writers do not ask
                // tokio first (see `Socket::send_now`).
                let slices = &slices[..in_flight.count];
                match storage {
                    QueueStorage::Keep => socket.send_now(slices),
                    QueueStorage::Release => None,
                }
                .unwrap_or_else(|| socket.try_write_vectored(slices))
            });
            let taken = in_flight.settle(outbox, *result.as_ref().unwrap_or(&0));
            packets += taken.frames as u64;
            bytes += taken.payload_bytes;
            match result {
                Ok(_) => {}
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    break Ok(Flushed::Blocked);
                }
                Err(error) => break Err(error),
            }
        };
        outbox.writing = false;
        self.traffic.count(packets, bytes);
        outcome
    }

    /// Queues a last frame after the session closed (the WebSocket close frame).
    pub(crate) fn queue_final(&self, frame: Frame) {
        self.outbox.lock().frames.push_back(frame);
    }

    /// Closes the session. The first reason wins; later calls do nothing.
    pub fn close(&self, reason: CloseReason) {
        self.close_first(reason);
    }

    /// [`EngineConn::close`], true when this call closed the session.
    fn close_first(&self, reason: CloseReason) -> bool {
        {
            let mut outbox = self.outbox.lock();
            if outbox.closed.is_some() {
                return false;
            }
            outbox.closed = Some(reason);
            if !reason.flushes_queue() {
                if outbox.writing {
                    // The writer holds the head of the queue (a frame it may have written in
                    // part); it puts back only that one (see `write_out`).
                    outbox.frames.clear();
                    outbox.discard_in_flight = true;
                } else {
                    // A frame partly written must still be finished, or the stream is corrupt.
                    let keep = usize::from(outbox.written > 0);
                    outbox.frames.truncate(keep);
                }
            }
            self.wake_consumer(&outbox);
        }
        if let Some(polling) = &self.polling {
            polling.closed_signal.notify_waiters();
        }
        true
    }

    /// Resolves once the session is closed, with the reason. Only a session opened on polling
    /// can be waited for: on one opened on WebSocket this resolves only if it is closed already.
    pub async fn closed(&self) -> CloseReason {
        let Some(polling) = &self.polling else {
            return match self.close_reason() {
                Some(reason) => reason,
                None => std::future::pending().await,
            };
        };
        loop {
            let notified = polling.closed_signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(reason) = self.close_reason() {
                return reason;
            }
            notified.await;
        }
    }

    /// Why the session was closed, if it was.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.outbox.lock().closed
    }

    pub fn is_closed(&self) -> bool {
        self.close_reason().is_some()
    }
}

impl std::fmt::Debug for EngineConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConn")
            .field("sid", &self.sid)
            .field("transport", &self.transport())
            .finish()
    }
}
