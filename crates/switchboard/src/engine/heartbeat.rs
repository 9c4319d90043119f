//! The heartbeat of every session, on one timer for the whole engine: a ping every pingInterval,
//! a close when no pong came within pingTimeout, and the handler's deadline (Socket.IO's connect
//! timeout). A session costs a few queue entries, not a timer and a task of its own.
//!
//! Each kind of deadline is a constant delay from the moment it is set (a session opening, a
//! pong, a ping), so each queue is in deadline order as it is pushed: pushing is O(1), and one
//! task sleeps until the earliest front. An entry holds a weak reference to its session and the
//! heartbeat round; one whose session is gone, or whose round has passed (a pong came), is
//! dropped unread.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::session::Session;
use super::{CloseReason, Engine, EngineHandler, Frame};

/// Where one session's heartbeat stands.
#[derive(Debug, Default)]
pub(crate) struct HeartbeatState {
    /// Bumped by every pong: entries of an earlier round are stale.
    round: AtomicU32,
    awaiting_pong: AtomicBool,
}

#[derive(Clone, Copy)]
enum Kind {
    Ping,
    PongCheck,
    Deadline,
    /// Engine.IO v3: the client pings; a session silent for pingInterval + pingTimeout since
    /// its last ping (or its opening) is closed.
    SilenceCheck,
}

/// One deadline: 24 bytes, and one or two per session.
struct Due<H: EngineHandler> {
    /// Milliseconds since the timer began.
    at_ms: u64,
    round: u32,
    session: Weak<Session<H>>,
}

struct Queues<H: EngineHandler> {
    pings: VecDeque<Due<H>>,
    pong_checks: VecDeque<Due<H>>,
    deadlines: VecDeque<Due<H>>,
    silence_checks: VecDeque<Due<H>>,
}

impl<H: EngineHandler> Queues<H> {
    fn queue(&mut self, kind: Kind) -> &mut VecDeque<Due<H>> {
        match kind {
            Kind::Ping => &mut self.pings,
            Kind::PongCheck => &mut self.pong_checks,
            Kind::Deadline => &mut self.deadlines,
            Kind::SilenceCheck => &mut self.silence_checks,
        }
    }

    fn earliest_ms(&self) -> Option<u64> {
        [
            &self.pings,
            &self.pong_checks,
            &self.deadlines,
            &self.silence_checks,
        ]
        .into_iter()
        .filter_map(|queue| queue.front().map(|due| due.at_ms))
        .min()
    }

    /// Takes every entry due by `now_ms`, oldest first within each kind.
    fn take_due(&mut self, now_ms: u64, into: &mut Vec<(Kind, Due<H>)>) {
        for kind in [
            Kind::Ping,
            Kind::PongCheck,
            Kind::Deadline,
            Kind::SilenceCheck,
        ] {
            let queue = self.queue(kind);
            while queue.front().is_some_and(|due| due.at_ms <= now_ms) {
                if let Some(due) = queue.pop_front() {
                    into.push((kind, due));
                }
            }
            if queue.is_empty() {
                // A quiet engine keeps no queue storage.
                *queue = VecDeque::new();
            }
        }
    }
}

/// The engine's heartbeat timer; see the module comment.
pub(crate) struct Heartbeats<H: EngineHandler> {
    epoch: Instant,
    queues: Mutex<Queues<H>>,
    /// Wakes the timer task when an entry lands in an empty queue (it may be the earliest).
    wake: Notify,
    started: AtomicBool,
}

impl<H: EngineHandler> Default for Heartbeats<H> {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            queues: Mutex::new(Queues {
                pings: VecDeque::new(),
                pong_checks: VecDeque::new(),
                deadlines: VecDeque::new(),
                silence_checks: VecDeque::new(),
            }),
            wake: Notify::new(),
            started: AtomicBool::new(false),
        }
    }
}

impl<H: EngineHandler> Heartbeats<H> {
    /// Milliseconds from the timer's start to `at` (rounded up: never early).
    fn ms(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.epoch);
        since.as_millis() as u64 + u64::from(!since.subsec_nanos().is_multiple_of(1_000_000))
    }

    fn instant(&self, ms: u64) -> Instant {
        self.epoch + std::time::Duration::from_millis(ms)
    }

    fn push(&self, kind: Kind, due: Due<H>) {
        let mut queues = self.queues.lock();
        let queue = queues.queue(kind);
        let was_empty = queue.is_empty();
        queue.push_back(due);
        drop(queues);
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// Starts the heartbeat of a session opened at `opened`.
    pub(crate) fn session_opened(
        engine: &Arc<Engine<H>>,
        session: &Arc<Session<H>>,
        opened: Instant,
    ) {
        let heartbeats = &engine.heartbeats;
        if !heartbeats.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(run(heartbeats.clone(), Arc::downgrade(engine)));
        }
        if session.conn.eio3() {
            heartbeats.push(
                Kind::SilenceCheck,
                Due {
                    at_ms: heartbeats.ms(opened + Self::v3_silence(engine)),
                    round: 0,
                    session: Arc::downgrade(session),
                },
            );
        } else {
            let ping = Due {
                at_ms: heartbeats.ms(opened + engine.config().ping_interval),
                round: 0,
                session: Arc::downgrade(session),
            };
            heartbeats.push(Kind::Ping, ping);
        }
        if let Some(after) = engine.handler().deadline() {
            let deadline = Due {
                at_ms: heartbeats.ms(opened + after),
                round: 0,
                session: Arc::downgrade(session),
            };
            heartbeats.push(Kind::Deadline, deadline);
        }
    }

    /// How long a v3 session may stay silent (the reference server's rule).
    fn v3_silence(engine: &Engine<H>) -> std::time::Duration {
        engine.config().ping_interval + engine.config().ping_timeout
    }

    /// Takes note of a v3 client's ping: the silence check starts again from now.
    pub(crate) fn client_ping(engine: &Engine<H>, session: &Arc<Session<H>>) {
        let round = session
            .heartbeat
            .round
            .fetch_add(1, Ordering::AcqRel)
            .wrapping_add(1);
        let heartbeats = &engine.heartbeats;
        heartbeats.push(
            Kind::SilenceCheck,
            Due {
                at_ms: heartbeats.ms(Instant::now() + Self::v3_silence(engine)),
                round,
                session: Arc::downgrade(session),
            },
        );
    }

    /// Takes note of a pong: the next ping is due a pingInterval from now.
    pub(crate) fn pong(engine: &Engine<H>, session: &Arc<Session<H>>) {
        let state = &session.heartbeat;
        if !state.awaiting_pong.swap(false, Ordering::AcqRel) {
            return;
        }
        let round = state.round.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
        let heartbeats = &engine.heartbeats;
        let ping = Due {
            at_ms: heartbeats.ms(Instant::now() + engine.config().ping_interval),
            round,
            session: Arc::downgrade(session),
        };
        heartbeats.push(Kind::Ping, ping);
    }

    /// Does what is due by now; returns when the timer should look again.
    fn fire_due(&self, engine: &Engine<H>) -> Option<Instant> {
        let mut due = Vec::new();
        self.queues
            .lock()
            .take_due(self.ms(Instant::now()), &mut due);
        for (kind, entry) in due {
            let Some(session) = entry.session.upgrade() else {
                continue;
            };
            let conn = &session.conn;
            let state = &session.heartbeat;
            let current = state.round.load(Ordering::Acquire) == entry.round;
            if conn.is_closed() {
                continue;
            }
            match kind {
                Kind::Ping if current => {
                    state.awaiting_pong.store(true, Ordering::Release);
                    let _ = conn.send(Frame::text_packet(b"2"));
                    // From the ping's due time, not from now, so timer lateness does not add up.
                    let check = Due {
                        at_ms: entry.at_ms + engine.config().ping_timeout.as_millis() as u64,
                        round: entry.round,
                        session: entry.session,
                    };
                    self.push(Kind::PongCheck, check);
                }
                Kind::PongCheck if current && state.awaiting_pong.load(Ordering::Acquire) => {
                    conn.close(CloseReason::PingTimeout);
                }
                Kind::SilenceCheck if current => conn.close(CloseReason::PingTimeout),
                Kind::Deadline => engine.handler().on_deadline(&session.state, conn),
                Kind::Ping | Kind::PongCheck | Kind::SilenceCheck => {}
            }
        }
        let earliest = self.queues.lock().earliest_ms();
        earliest.map(|ms| self.instant(ms))
    }
}

/// The timer task: sleeps until the earliest entry, or until one lands in an empty queue.
async fn run<H: EngineHandler>(heartbeats: Arc<Heartbeats<H>>, engine: Weak<Engine<H>>) {
    let Some(shutdown) = engine.upgrade().map(|e| e.config().shutdown.clone()) else {
        return;
    };
    loop {
        let next = {
            let Some(engine) = engine.upgrade() else {
                return;
            };
            heartbeats.fire_due(&engine)
        };
        let due = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = due => {}
            () = heartbeats.wake.notified() => {}
        }
    }
}

/// The size of one heartbeat deadline (for the budget in `connection_budget.rs`).
#[cfg(test)]
pub(crate) fn due_size<H: EngineHandler>() -> usize {
    size_of::<Due<H>>()
}
