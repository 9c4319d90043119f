//! The flusher's batched writes (Linux): the sessions of a chunk written with one system call
//! through io_uring instead of one `send` each, where the kernel offers it and no seccomp
//! profile refuses it (`[engine] io_uring`; elsewhere the flusher sends one by one, `flush.rs`).
//!
//! Every send carries `MSG_DONTWAIT`: a socket that cannot take it now completes at once with
//! `EAGAIN` (nothing is left waiting in the kernel) and the session is left to its connection,
//! as after a plain `send` that would block. All sends of a batch have completed when
//! [`BatchedWriter::flush_each`] returns, so a session is written by one thread at a time as
//! before (the writer holds its queue's `writing` mark from the first step to the last) and the
//! descriptors, buffers and message headers the kernel reads stay alive until it is done.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{IoUring, Probe, opcode, types};

use super::EngineConn;
use super::conn::{DetachedWrite, FRAMES_PER_DETACHED_WRITE};

/// Sends submitted with one system call at most (a flusher chunk is 256 sessions).
const RING_ENTRIES: u32 = 256;

/// How many sessions ahead the batch's first pass asks the CPU to fetch the queue state it
/// locks: that pass makes no system call between two sessions, so the fetch needs a longer
/// lead than the flusher's one-`send`-each loop gives it.
const PREFETCH_AHEAD: usize = 16;

const SEND_FLAGS: i32 = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;

/// How long a batch's sends may take at most (none should wait at all, see
/// `submit_and_collect`).
const BATCH_WAIT_LIMIT: Duration = Duration::from_secs(1);

/// The user data of a cancellation's own completion (no slot has this index).
const CANCELLATION: u64 = u64::MAX;

/// One flusher thread's ring and the writes in flight on it.
pub(super) struct BatchedWriter {
    ring: IoUring,
    /// The writes of the batch being built, in the chunk's order. Never grows past its
    /// capacity (a full batch is submitted first), so a slot's message header never moves
    /// while the kernel may read it.
    slots: Vec<Slot>,
}

/// A session's write in a batch.
struct Slot {
    /// The session, by its place in the chunk.
    conn: usize,
    write: DetachedWrite,
    /// For a write of several frames (one `sendmsg`): what the message header points to.
    iovecs: [libc::iovec; FRAMES_PER_DETACHED_WRITE],
    header: libc::msghdr,
    result: Option<io::Result<usize>>,
}

impl BatchedWriter {
    /// A ring for the calling thread (only it submits), once the kernel has shown it offers
    /// what the writer relies on: `send` and `sendmsg` operations, and a send to a full socket
    /// with `MSG_DONTWAIT` completing at once with `EAGAIN` rather than waiting.
    pub(super) fn new() -> io::Result<Self> {
        let ring = IoUring::builder()
            .setup_submit_all()
            .setup_coop_taskrun()
            .setup_single_issuer()
            .build(RING_ENTRIES)
            .or_else(|_| IoUring::new(RING_ENTRIES))?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if !probe.is_supported(opcode::Send::CODE) || !probe.is_supported(opcode::SendMsg::CODE) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the kernel's io_uring has no send or sendmsg",
            ));
        }
        Ok(Self {
            ring: check_send_to_full_socket(ring)?,
            slots: Vec::with_capacity(RING_ENTRIES as usize),
        })
    }

    /// Writes each session's queue as [`EngineConn::flush`] does, the plain WebSocket ones in
    /// batches of one system call. An error means the ring is unusable: the sessions of the
    /// batch were left to their connections (nothing was lost), and the caller stops using it.
    pub(super) fn flush_each(&mut self, conns: &[Arc<EngineConn>]) -> io::Result<()> {
        for (index, conn) in conns.iter().enumerate() {
            if let Some(ahead) = conns.get(index + PREFETCH_AHEAD) {
                ahead.prefetch_outbox();
            }
            // Halfway there, the queue's state is in the cache: its socket's turn.
            if let Some(ahead) = conns.get(index + PREFETCH_AHEAD / 2) {
                ahead.prefetch_socket();
            }
            let Some(write) = conn.begin_detached_flush() else {
                continue;
            };
            if self.slots.len() == self.slots.capacity() {
                self.complete(conns)?;
            }
            self.push(index, conn, write);
        }
        self.complete(conns)
    }

    /// Adds a session's write to the batch.
    fn push(&mut self, index: usize, conn: &EngineConn, write: DetachedWrite) {
        let user_data = self.slots.len() as u64;
        self.slots.push(Slot {
            conn: index,
            write,
            // SAFETY: both are plain C structures for which all zeroes is a valid value.
            iovecs: unsafe { std::mem::zeroed() },
            header: unsafe { std::mem::zeroed() },
            result: None,
        });
        let Some(slot) = self.slots.last_mut() else {
            return;
        };
        let fd = types::Fd(slot.write.socket().raw_fd());
        let slices = slot.write.frames.slices();
        let count = slot.write.frames.count();
        let entry = if count == 1 {
            let length = u32::try_from(slices[0].len()).unwrap_or(u32::MAX);
            opcode::Send::new(fd, slices[0].as_ptr(), length)
                .flags(SEND_FLAGS)
                .build()
        } else {
            for (iovec, slice) in slot.iovecs.iter_mut().zip(&slices[..count]) {
                *iovec = libc::iovec {
                    iov_base: slice.as_ptr().cast_mut().cast(),
                    iov_len: slice.len(),
                };
            }
            slot.header.msg_iov = slot.iovecs.as_mut_ptr();
            slot.header.msg_iovlen = count as _;
            opcode::SendMsg::new(fd, &slot.header)
                .flags(SEND_FLAGS as u32)
                .build()
        };
        // SAFETY: what the entry points to (the frames' bytes, the slot's header and iovecs,
        // the descriptor held open by the write's socket) lives in the slot, which stays where
        // it is until `complete` has seen the send's completion. The queue has room: it holds
        // as many entries as there are slots, and every batch is submitted before a new one.
        let pushed = unsafe { self.ring.submission().push(&entry.user_data(user_data)) };
        if pushed.is_err()
            && let Some(slot) = self.slots.pop()
        {
            // Cannot happen (see above); nothing was sent, the connection writes it.
            conn.end_detached_flush(slot.write, Err(io::ErrorKind::WouldBlock.into()));
        }
    }

    /// Submits the batch, waits for every send of it to complete (at once: none waits) and
    /// ends each session's write with its outcome.
    fn complete(&mut self, conns: &[Arc<EngineConn>]) -> io::Result<()> {
        if self.slots.is_empty() {
            return Ok(());
        }
        let outcome = self.submit_and_collect();
        let mut sent = 0;
        for slot in self.slots.drain(..) {
            sent += usize::from(slot.result.is_some());
            // Slots are made for sessions of the chunk only.
            if let Some(conn) = conns.get(slot.conn) {
                // Without a completion (the ring failed), nothing of it was sent: its frames
                // go back to its queue and its connection writes them.
                let result = slot
                    .result
                    .unwrap_or_else(|| Err(io::ErrorKind::WouldBlock.into()));
                conn.end_detached_flush(slot.write, result);
            }
        }
        super::flush::count_io_uring_sends(sent);
        outcome
    }

    /// Submits the batch and collects a completion for each of its sends. None should wait in
    /// the kernel (each carries `MSG_DONTWAIT`, and the kernel was checked for it), but should
    /// one wait past [`BATCH_WAIT_LIMIT`] anyway (where the kernel bounds the wait, 5.11 on),
    /// those still waiting are cancelled, their completions collected all the same, and an
    /// error tells the caller to give the ring up.
    fn submit_and_collect(&mut self) -> io::Result<()> {
        let mut waiting = self.slots.len();
        let limit = types::Timespec::from(BATCH_WAIT_LIMIT);
        let bounded = self.ring.params().is_feature_ext_arg();
        let mut cancelled = false;
        while waiting > 0 {
            let waited = if bounded && !cancelled {
                let args = types::SubmitArgs::new().timespec(&limit);
                self.ring.submitter().submit_with_args(waiting, &args)
            } else {
                self.ring.submit_and_wait(waiting)
            };
            match waited {
                Ok(_) => {}
                Err(error) if error.raw_os_error() == Some(libc::ETIME) => {
                    self.cancel_waiting();
                    cancelled = true;
                }
                Err(error)
                    if matches!(
                        error.raw_os_error(),
                        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                    ) => {}
                Err(error) => return Err(error),
            }
            for completion in self.ring.completion() {
                // A cancellation's own completion has no slot.
                let Some(slot) = usize::try_from(completion.user_data())
                    .ok()
                    .and_then(|index| self.slots.get_mut(index))
                else {
                    continue;
                };
                if slot.result.is_none() {
                    waiting -= 1;
                }
                let code = completion.result();
                slot.result = Some(match usize::try_from(code) {
                    Ok(sent) => Ok(sent),
                    Err(_) => Err(io::Error::from_raw_os_error(-code)),
                });
            }
        }
        if cancelled {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "a send waited in the kernel despite MSG_DONTWAIT; it was cancelled",
            ));
        }
        Ok(())
    }

    /// Asks the kernel to cancel the batch's sends that have not completed.
    fn cancel_waiting(&mut self) {
        for (index, slot) in self.slots.iter().enumerate() {
            if slot.result.is_some() {
                continue;
            }
            let entry = opcode::AsyncCancel::new(index as u64)
                .build()
                .user_data(CANCELLATION);
            // SAFETY: a cancellation points to no memory. The queue has room: the batch's own
            // entries were all submitted, and there is one cancellation per send at most.
            let _ = unsafe { self.ring.submission().push(&entry) };
        }
    }
}

/// A send to a socket whose buffer is full must complete at once with `EAGAIN`: a kernel that
/// instead waits for room would hold the flusher behind one slow client. The ring is given
/// back if it passes, and closed (cancelling the send) if not.
fn check_send_to_full_socket(mut ring: IoUring) -> io::Result<IoUring> {
    static FILLER: [u8; 16 * 1024] = [0; 16 * 1024];
    let (full, _reader) = UnixStream::pair()?;
    full.set_nonblocking(true)?;
    loop {
        match io::Write::write(&mut &full, &FILLER) {
            Ok(_) => continue,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) => return Err(error),
        }
    }
    let entry = opcode::Send::new(types::Fd(full.as_raw_fd()), FILLER.as_ptr(), 1)
        .flags(SEND_FLAGS)
        .build()
        .user_data(0);
    // SAFETY: the buffer is static; the ring holds its own reference to the socket.
    unsafe { ring.submission().push(&entry) }
        .map_err(|_| io::Error::other("the ring's submission queue is full"))?;
    ring.submit()?;
    let deadline = Instant::now() + Duration::from_millis(200);
    loop {
        let code = ring
            .completion()
            .next()
            .map(|completion| completion.result());
        if let Some(code) = code {
            return if code == -libc::EAGAIN {
                Ok(ring)
            } else {
                Err(io::Error::other(format!(
                    "a send to a full socket completed with {code} instead of EAGAIN"
                )))
            };
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the kernel's io_uring waits on a send with MSG_DONTWAIT",
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::engine::Frame;
    use crate::engine::conn::Writer;
    use crate::engine::flush::tests::{a_slow_client_gets_every_frame_in_order, session};

    /// The writer, or `None` where the kernel or a seccomp profile refuses io_uring (the
    /// flushers then send one by one, which the other engine tests cover).
    fn writer() -> Option<BatchedWriter> {
        match BatchedWriter::new() {
            Ok(writer) => Some(writer),
            Err(error) if matches!(error.raw_os_error(), Some(libc::EPERM | libc::ENOSYS)) => {
                eprintln!("io_uring refused here ({error}): batched writes not tested");
                None
            }
            Err(error) => panic!("io_uring is offered but unusable: {error}"),
        }
    }

    fn frame(text: &str) -> Frame {
        Frame::message(|buf| buf.extend_from_slice(text.as_bytes()))
    }

    #[test]
    fn more_sessions_than_one_batch_each_get_their_frames_in_order() {
        let Some(mut writer) = writer() else { return };
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let sessions: Vec<_> = (0..300).map(|_| runtime.block_on(session())).collect();
        let conns: Vec<_> = sessions.iter().map(|(conn, _)| conn.clone()).collect();
        let sends_before = super::super::flush::io_uring_sends();
        // One frame (a send) for some, two or three (a sendmsg) for others.
        let mut expected = Vec::new();
        for (n, conn) in conns.iter().enumerate() {
            let mut bytes = Vec::new();
            for k in 0..=(n % 3) {
                let frame = frame(&format!("session {n} frame {k}"));
                bytes.extend_from_slice(frame.websocket_bytes());
                conn.queue_for(std::slice::from_ref(&frame), Writer::Flusher)
                    .expect("queued");
            }
            expected.push(bytes);
        }
        writer.flush_each(&conns).expect("the ring works");
        for (n, ((conn, mut client), bytes)) in sessions.into_iter().zip(expected).enumerate() {
            assert!(!conn.has_backlog(), "session {n} left frames queued");
            let mut received = vec![0u8; bytes.len()];
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            client.read_exact(&mut received).expect("the frames arrive");
            assert_eq!(received, bytes, "session {n}");
        }
        assert!(super::super::flush::io_uring_sends() >= sends_before + 300);
    }

    #[test]
    fn a_client_that_stops_reading_is_left_to_its_connection_and_loses_nothing() {
        let Some(mut writer) = writer() else { return };
        // Each frame queued for the flusher and written through the ring; the last write
        // before the socket is full is likely partial.
        a_slow_client_gets_every_frame_in_order(|conn, frame| {
            conn.queue_for(&[frame], Writer::Flusher).expect("queued");
            writer
                .flush_each(std::slice::from_ref(conn))
                .expect("the ring works");
        });
    }
}
