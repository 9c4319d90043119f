//! Connection state recovery: nothing is lost when a transport drops.
//!
//! With recovery on, every event emitted without an ack gets an offset (the namespace's next
//! sequence number, as a string) as its last argument, and is kept in the history of each room it
//! targeted (the namespace-wide log for "everyone"). When a socket's transport drops for a reason
//! worth recovering from, its session (id, private id, rooms, data) is saved. A client that comes
//! back with `{pid, offset}` within `max_disconnection` gets the same socket id, rooms and data,
//! then every event it missed, in order, once, filtered by its rooms and exclusions.
//!
//! Ordering: publishing (sequence number, store, deliver) and restoring (collect the missed
//! events, queue them, index the socket) hold the namespace's history lock, so a restored client
//! sees each event exactly once, in offset order. Memory is bounded: per-room count and age
//! limits, a cap on room histories, a cap on saved sessions, and expiry.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::socket::{Room, RoomSet};
use crate::config::{HistorySettings, RecoverySettings};
use crate::engine::Frame;
use crate::pattern::glob_match;

/// Offsets as clients see them. A node on its own, or on the pub/sub adapter, numbers its events
/// 1, 2, 3… and an offset is that number. On the streams adapter an event's offset is the id of
/// its entry in the shared Redis stream, `<ms>-<n>`, so that any node (or a Node.js server on the
/// same stream) knows where a client got to; here it is kept as the one number `ms << 20 | n`.
/// Stream ids increase, and so do these; a counter never reaches [`LOG_OFFSET_BASE`].
pub const LOG_OFFSET_BASE: u64 = 1 << 40;
const LOG_SEQUENCE_BITS: u32 = 20;

/// The sequence number of a stream entry id (`<ms>-<n>`); None for anything else.
pub fn log_seq(id: &str) -> Option<u64> {
    let (ms, n) = id.split_once('-')?;
    let (ms, n) = (ms.parse::<u64>().ok()?, n.parse::<u64>().ok()?);
    let seq = ms.checked_shl(LOG_SEQUENCE_BITS)? | n;
    (n < 1 << LOG_SEQUENCE_BITS && ms < 1 << (64 - LOG_SEQUENCE_BITS) && seq >= LOG_OFFSET_BASE)
        .then_some(seq)
}

/// An offset as clients read it: the counter, or the stream entry id.
pub fn offset_text(seq: u64) -> String {
    if seq >= LOG_OFFSET_BASE {
        format!(
            "{}-{}",
            seq >> LOG_SEQUENCE_BITS,
            seq & ((1 << LOG_SEQUENCE_BITS) - 1)
        )
    } else {
        seq.to_string()
    }
}

/// An offset a client (or a backend) gave back: a counter or a stream entry id.
/// The socket id of a socket with private id `pid`: derived from it (the first 15 bytes of its
/// SHA-256, base64url, 20 characters, as random as a fresh id), so that a client presenting its
/// pid names the socket it had, and the socket can be found even while its old transport is
/// still open; the pid cannot be derived from the id, which is public.
pub fn socket_id_for(pid: &str) -> Arc<str> {
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(pid.as_bytes());
    Arc::from(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..15]))
}

pub fn parse_offset(text: &str) -> Option<u64> {
    if text.contains('-') {
        log_seq(text)
    } else {
        text.parse::<u64>().ok()
    }
}

/// History limits for the rooms matching `pattern` (`*` wildcards); the first match wins.
#[derive(Debug, Clone)]
pub struct HistoryLimit {
    pub pattern: String,
    pub max_events: usize,
    pub max_age: Duration,
}

#[derive(Debug, Clone)]
pub struct RecoveryConfig {
    /// How long a disconnected session can be recovered.
    pub max_disconnection: Duration,
    /// Saved sessions at most (the oldest go first).
    pub max_sessions: usize,
    /// Room histories at most (the least recently written go first).
    pub max_rooms: usize,
    /// Per-room history limits by pattern; rooms matching none use the last default.
    pub history: Vec<HistoryLimit>,
    /// Whether the namespace's middleware (auth) runs again when a session is recovered.
    pub rerun_middleware: bool,
    /// Whether the connect handlers (rules) run again when a session is recovered.
    pub rerun_on_connect: bool,
    /// Only clients that ask for it (CONNECT auth `recover: true`) get a session id and
    /// offsets; the others' events carry none.
    pub on_request: bool,
}

impl RecoveryConfig {
    /// Recovery's part of the config: `[recovery]` and the `[[history]]` limits.
    pub fn from_settings(recovery: &RecoverySettings, history: &[HistorySettings]) -> Self {
        Self {
            max_disconnection: recovery.max_disconnection_duration.0,
            max_sessions: recovery.max_sessions,
            max_rooms: recovery.max_rooms,
            history: history
                .iter()
                .map(|h| HistoryLimit {
                    pattern: h.rooms.clone(),
                    max_events: h.max_events,
                    max_age: h.max_age.0,
                })
                .collect(),
            rerun_middleware: recovery.rerun_auth,
            rerun_on_connect: recovery.rerun_on_connect,
            on_request: recovery.clients == crate::config::RecoveryClients::OnRequest,
        }
    }
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            max_disconnection: Duration::from_secs(120),
            max_sessions: 100_000,
            max_rooms: 100_000,
            history: Vec::new(),
            rerun_middleware: false,
            rerun_on_connect: false,
            on_request: false,
        }
    }
}

/// Which history limit applies: an index into [`RecoveryConfig::history`], or the default.
#[derive(Debug, Clone, Copy)]
struct LimitRef(u32);

impl LimitRef {
    const DEFAULT: Self = Self(u32::MAX);
}

impl RecoveryConfig {
    fn limit_for(&self, room: Option<&str>) -> LimitRef {
        let name = room.unwrap_or("*");
        self.history
            .iter()
            .position(|limit| glob_match(&limit.pattern, name))
            .and_then(|index| u32::try_from(index).ok())
            .map_or(LimitRef::DEFAULT, LimitRef)
    }

    /// The most events and the longest age of a limit.
    fn limit(&self, limit: LimitRef) -> (usize, Duration) {
        match self.history.get(limit.0 as usize) {
            Some(limit) => (limit.max_events, limit.max_age),
            None => (1000, self.max_disconnection.max(Duration::from_secs(60))),
        }
    }
}

/// One stored event: its ready-made frames (the offset already inside) and who it excluded.
/// Kept small: with per-socket greetings in history, there is one per connected client.
#[derive(Debug)]
pub struct StoredEvent {
    pub seq: u64,
    /// When it was stored, in milliseconds since the history began.
    stored_ms: u64,
    frames: StoredFrames,
    excluded: Option<Box<Exclusions>>,
}

/// Frames of a stored event: almost always one (a packet without binary attachments), kept
/// inline.
#[derive(Debug)]
enum StoredFrames {
    One(Frame),
    Many(Box<[Frame]>),
}

#[derive(Debug)]
struct Exclusions {
    rooms: Vec<Room>,
    sockets: Vec<Arc<str>>,
}

impl StoredEvent {
    /// An event read back from the shared log to replay to one client (not kept).
    pub fn replayed(seq: u64, mut frames: Vec<Frame>) -> Arc<Self> {
        let frames = match frames.len() {
            1 => StoredFrames::One(frames.remove(0)),
            _ => StoredFrames::Many(frames.into_boxed_slice()),
        };
        Arc::new(Self {
            seq,
            stored_ms: 0,
            frames,
            excluded: None,
        })
    }

    /// The event's frames: the packet, then its binary attachments.
    pub fn frames(&self) -> &[Frame] {
        match &self.frames {
            StoredFrames::One(frame) => std::slice::from_ref(frame),
            StoredFrames::Many(frames) => frames,
        }
    }

    fn excludes(&self, sid: &str, rooms: &RoomSet) -> bool {
        self.excluded.as_ref().is_some_and(|excluded| {
            excluded.sockets.iter().any(|id| **id == *sid)
                || excluded.rooms.iter().any(|room| rooms.contains(room))
        })
    }
}

struct RoomLog {
    events: VecDeque<Arc<StoredEvent>>,
    /// The highest sequence number dropped from this log (0: none).
    evicted_through: u64,
    /// When it was last written, in seconds since the history began (u32: one per room).
    last_write_s: u32,
    limit: LimitRef,
}

impl RoomLog {
    fn new(limit: LimitRef, now_ms: u64) -> Self {
        Self {
            events: VecDeque::new(),
            evicted_through: 0,
            last_write_s: seconds(now_ms),
            limit,
        }
    }

    fn prune(&mut self, config: &RecoveryConfig, now_ms: u64) {
        let (max_events, max_age) = config.limit(self.limit);
        let max_age_ms = max_age.as_millis() as u64;
        while let Some(front) = self.events.front() {
            let too_many = self.events.len() > max_events;
            let too_old = now_ms.saturating_sub(front.stored_ms) > max_age_ms;
            if !(too_many || too_old) {
                break;
            }
            self.evicted_through = self.evicted_through.max(front.seq);
            self.events.pop_front();
        }
        if self.events.is_empty() {
            self.events = VecDeque::new();
        }
    }
}

/// A disconnected socket that may come back.
#[derive(Debug, Clone)]
pub struct SavedSession {
    pub sid: Arc<str>,
    pub pid: Arc<str>,
    pub rooms: RoomSet,
    pub data: Map<String, Value>,
    /// The last sequence number before the socket connected: a client that received nothing
    /// has missed everything after it.
    pub connected_seq: u64,
    pub saved_at: Instant,
}

/// The history and saved sessions of one namespace. Lives behind the namespace's history lock.
pub struct Recovery {
    pub config: RecoveryConfig,
    /// When the history began: stored times are milliseconds since then.
    epoch: Instant,
    epoch_wall_ms: u64,
    last_seq: u64,
    /// The first sequence number stored (0: none yet): on a shared log, what came before it
    /// is not here (the node started later) and is read from the log.
    first_seq: u64,
    /// On a shared log, where this node started reading it (0: unknown): every entry after it
    /// was read here, so what this history holds is complete from there on.
    log_start: u64,
    everyone: RoomLog,
    rooms: HashMap<Room, RoomLog>,
    /// The highest sequence number of any room log dropped whole (to stay under `max_rooms`).
    dropped_through: u64,
    sessions: HashMap<Arc<str>, SavedSession>,
    session_order: VecDeque<(Instant, Arc<str>)>,
}

/// What a history query found.
pub struct HistoryPage {
    pub events: Vec<Arc<StoredEvent>>,
    /// False when events after `since` were already dropped (count or age limits).
    pub complete: bool,
    pub latest_seq: u64,
    epoch_wall_ms: u64,
}

impl HistoryPage {
    /// When an event was stored, in milliseconds since 1970.
    pub fn wall_ms(&self, event: &StoredEvent) -> u64 {
        self.epoch_wall_ms + event.stored_ms
    }
}

fn seconds(ms: u64) -> u32 {
    u32::try_from(ms / 1000).unwrap_or(u32::MAX)
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Recovery {
    pub fn new(config: RecoveryConfig) -> Self {
        let everyone = RoomLog::new(config.limit_for(None), 0);
        Self {
            config,
            epoch: Instant::now(),
            epoch_wall_ms: wall_ms(),
            last_seq: 0,
            first_seq: 0,
            log_start: 0,
            everyone,
            rooms: HashMap::new(),
            dropped_through: 0,
            sessions: HashMap::new(),
            session_order: VecDeque::new(),
        }
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The sequence number the next stored event will get.
    pub fn next_seq(&mut self) -> u64 {
        self.last_seq + 1
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Stores an event sent to `rooms` (none: everyone); returns its sequence number.
    pub fn store(
        &mut self,
        seq: u64,
        rooms: &[Room],
        mut frames: Vec<Frame>,
        except_rooms: Vec<Room>,
        except_sockets: Vec<Arc<str>>,
    ) {
        self.last_seq = seq;
        if self.first_seq == 0 {
            self.first_seq = seq;
        }
        let now_ms = self.now_ms();
        let frames = match (frames.pop(), frames.is_empty()) {
            (Some(frame), true) => StoredFrames::One(frame),
            (Some(last), false) => {
                frames.push(last);
                StoredFrames::Many(frames.into_boxed_slice())
            }
            (None, _) => StoredFrames::Many(Box::default()),
        };
        let excluded = (!except_rooms.is_empty() || !except_sockets.is_empty()).then(|| {
            Box::new(Exclusions {
                rooms: except_rooms,
                sockets: except_sockets,
            })
        });
        let event = Arc::new(StoredEvent {
            seq,
            stored_ms: now_ms,
            frames,
            excluded,
        });
        if rooms.is_empty() {
            self.everyone.events.push_back(event);
            self.everyone.last_write_s = seconds(now_ms);
            self.everyone.prune(&self.config, now_ms);
            return;
        }
        for room in rooms {
            if !self.rooms.contains_key(room) && self.rooms.len() >= self.config.max_rooms {
                self.drop_stalest_room();
            }
            let limit = self.config.limit_for(Some(room));
            let log = self
                .rooms
                .entry(room.clone())
                .or_insert_with(|| RoomLog::new(limit, now_ms));
            if log.events.capacity() == 0 {
                // Most room logs hold one event (a socket's greeting): no room for four.
                log.events.reserve_exact(1);
            }
            log.events.push_back(event.clone());
            log.last_write_s = seconds(now_ms);
            log.prune(&self.config, now_ms);
        }
    }

    fn drop_stalest_room(&mut self) {
        // Sample a few and drop the least recently written, as an approximate LRU.
        let victim = self
            .rooms
            .iter()
            .take(16)
            .min_by_key(|(_, log)| log.last_write_s)
            .map(|(room, _)| room.clone());
        if let Some(room) = victim
            && let Some(log) = self.rooms.remove(&room)
        {
            let last = log.events.back().map_or(0, |e| e.seq);
            self.dropped_through = self.dropped_through.max(last).max(log.evicted_through);
        }
    }

    /// Drops expired history and sessions. Called periodically.
    pub fn sweep(&mut self) {
        let now_ms = self.now_ms();
        let config = &self.config;
        self.everyone.prune(config, now_ms);
        self.rooms.retain(|_, log| {
            log.prune(config, now_ms);
            let max_age_s = config.limit(log.limit).1.as_secs().max(1);
            let idle_s = u64::from(seconds(now_ms).saturating_sub(log.last_write_s));
            !log.events.is_empty() || idle_s < max_age_s
        });
        self.expire_sessions(Instant::now());
    }

    fn expire_sessions(&mut self, now: Instant) {
        while let Some((saved_at, pid)) = self.session_order.front().cloned() {
            let expired = now.duration_since(saved_at) > self.config.max_disconnection;
            let over = self.sessions.len() > self.config.max_sessions;
            if !(expired || over) {
                break;
            }
            self.session_order.pop_front();
            // The entry may have been taken (restored) or saved again since.
            if self
                .sessions
                .get(&pid)
                .is_some_and(|s| s.saved_at == saved_at)
            {
                self.sessions.remove(&pid);
            }
        }
    }

    /// Drops the history of a socket's own room once that socket is gone for good (left, not
    /// saved): no session can ever name it again, so keeping it only holds memory (a churn of
    /// short visits that were each greeted kept thousands of such logs for minutes).
    pub fn forget_own_room(&mut self, sid: &str) {
        self.rooms.remove(sid);
    }

    pub fn save(&mut self, session: SavedSession) {
        let now = session.saved_at;
        self.session_order.push_back((now, session.pid.clone()));
        self.sessions.insert(session.pid.clone(), session);
        self.expire_sessions(now);
    }

    pub fn saved_sessions(&self) -> usize {
        self.sessions.len()
    }

    /// What the history holds now: rooms with a log (everyone's counted as one) and the
    /// entries of all logs (an event sent to two rooms is an entry in each).
    pub fn size(&self) -> (usize, usize) {
        let entries = self
            .rooms
            .values()
            .map(|log| log.events.len())
            .sum::<usize>();
        (self.rooms.len() + 1, entries + self.everyone.events.len())
    }

    /// The saved sessions still within the recovery window, each with the time it has left.
    pub fn saved_with_time_left(&self) -> Vec<(SavedSession, Duration)> {
        let window = self.config.max_disconnection;
        (self.sessions.values())
            .filter_map(|session| {
                let left = window.checked_sub(session.saved_at.elapsed())?;
                (!left.is_zero()).then(|| (session.clone(), left))
            })
            .collect()
    }

    /// Takes a saved session back if it is still within the recovery window.
    pub fn take(&mut self, pid: &str) -> Option<SavedSession> {
        let session = self.sessions.remove(pid)?;
        (session.saved_at.elapsed() <= self.config.max_disconnection).then_some(session)
    }

    /// Where this node started reading the shared log (see [`Recovery::missed`]).
    pub fn note_log_start(&mut self, start: u64) {
        self.log_start = start;
    }

    /// Every stored event after `after` that reached a socket with these rooms, in order; None
    /// when some of them were already dropped (the client then starts afresh).
    pub fn missed(&self, sid: &str, rooms: &RoomSet, after: u64) -> Option<Vec<Arc<StoredEvent>>> {
        if after > self.last_seq {
            return None;
        }
        // What this history holds all of: everything after the counter's 0, or, on a shared
        // log, after its first entry (the entries before it came before this node).
        let complete_after = match self.first_seq {
            _ if self.log_start > 0 => self.log_start,
            seq if seq >= LOG_OFFSET_BASE => seq,
            _ => 0,
        };
        // 0: the socket connected before this namespace had any event, so all of them count.
        if after != 0 && after < complete_after {
            return None;
        }
        let mut found: Vec<Arc<StoredEvent>> = Vec::new();
        let mut logs: Vec<&RoomLog> = vec![&self.everyone];
        for room in rooms.iter() {
            match self.rooms.get(room) {
                Some(log) => logs.push(log),
                None if after < self.dropped_through => return None,
                None => {}
            }
        }
        for log in logs {
            if after < log.evicted_through {
                return None;
            }
            let start = log.events.partition_point(|e| e.seq <= after);
            found.extend(
                log.events
                    .range(start..)
                    .filter(|e| !e.excludes(sid, rooms))
                    .cloned(),
            );
        }
        found.sort_by_key(|e| e.seq);
        found.dedup_by_key(|e| e.seq);
        Some(found)
    }

    /// The stored events of one room (or everyone's, for `None`) after `since`.
    pub fn room_history(&self, room: Option<&str>, since: u64, limit: usize) -> HistoryPage {
        let log = match room {
            None => Some(&self.everyone),
            Some(room) => self.rooms.get(room),
        };
        let Some(log) = log else {
            return HistoryPage {
                events: Vec::new(),
                complete: since >= self.dropped_through,
                latest_seq: self.last_seq,
                epoch_wall_ms: self.epoch_wall_ms,
            };
        };
        let start = log.events.partition_point(|e| e.seq <= since);
        HistoryPage {
            events: log.events.range(start..).take(limit).cloned().collect(),
            complete: since >= log.evicted_through,
            latest_seq: self.last_seq,
            epoch_wall_ms: self.epoch_wall_ms,
        }
    }
}

/// Disconnect reasons after which a session is kept for recovery (the client did not mean to
/// leave): transport close or error, ping timeout, a forced close, server shutdown, a full queue.
pub fn worth_saving(reason: super::DisconnectReason) -> bool {
    use crate::engine::CloseReason;
    matches!(
        reason,
        super::DisconnectReason::Engine(
            CloseReason::TransportClose
                | CloseReason::ClientClose
                | CloseReason::TransportError
                | CloseReason::PingTimeout
                | CloseReason::ForcedClose
                | CloseReason::ServerShutdown
                | CloseReason::SlowConsumer
                | CloseReason::MessageTooLarge
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u64) -> Vec<Frame> {
        vec![Frame::text_packet(format!("42[\"e\",{n}]").as_bytes())]
    }

    fn rooms(names: &[&str]) -> RoomSet {
        names.iter().map(|n| Room::from(*n)).collect()
    }

    #[test]
    fn missed_events_come_back_in_order_once_and_filtered() {
        let mut recovery = Recovery::new(RecoveryConfig::default());
        let a: Room = "a".into();
        let b: Room = "b".into();
        for seq in 1..=6 {
            let targets = match seq % 3 {
                0 => vec![a.clone(), b.clone()],
                1 => vec![a.clone()],
                _ => vec![b.clone()],
            };
            let except = if seq == 4 {
                vec![Room::from("muted")]
            } else {
                vec![]
            };
            recovery.store(seq, &targets, frame(seq), except, vec![]);
        }
        recovery.store(7, &[], frame(7), vec![], vec![Arc::from("me")]);
        recovery.store(8, &[], frame(8), vec![], vec![]);
        let seqs = |events: Vec<Arc<StoredEvent>>| events.iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(
            seqs(recovery.missed("me", &rooms(&["a"]), 0).unwrap()),
            [1, 3, 4, 6, 8]
        );
        assert_eq!(
            seqs(
                recovery
                    .missed("me", &rooms(&["a", "b", "muted"]), 2)
                    .unwrap()
            ),
            [3, 5, 6, 8]
        );
        assert_eq!(
            seqs(recovery.missed("other", &rooms(&["b"]), 6).unwrap()),
            [7, 8]
        );
        assert!(
            recovery.missed("me", &rooms(&["a"]), 99).is_none(),
            "an offset from the future"
        );
    }

    #[test]
    fn an_event_keeps_its_attachments_and_exclusions() {
        let mut recovery = Recovery::new(RecoveryConfig::default());
        let frames = vec![
            Frame::text_packet(b"451-[\"file\",{\"_placeholder\":true,\"num\":0},\"1\"]"),
            Frame::binary(b"\x01\x02"),
        ];
        recovery.store(1, &["r".into()], frames, vec![], vec![Arc::from("sender")]);
        let missed = recovery.missed("other", &rooms(&["r"]), 0).unwrap();
        assert_eq!(missed.len(), 1);
        assert_eq!(missed[0].frames().len(), 2, "the packet and its attachment");
        assert_eq!(missed[0].frames()[1].payload(), b"\x01\x02");
        assert!(
            recovery
                .missed("sender", &rooms(&["r"]), 0)
                .unwrap()
                .is_empty(),
            "the excluded sender does not get it back"
        );
        let page = recovery.room_history(Some("r"), 0, 10);
        assert!(page.wall_ms(&page.events[0]) >= recovery.epoch_wall_ms);
    }

    #[test]
    fn a_gap_in_history_refuses_recovery() {
        let config = RecoveryConfig {
            history: vec![HistoryLimit {
                pattern: "*".into(),
                max_events: 2,
                max_age: Duration::from_secs(60),
            }],
            ..RecoveryConfig::default()
        };
        let mut recovery = Recovery::new(config);
        for seq in 1..=5 {
            recovery.store(seq, &["r".into()], frame(seq), vec![], vec![]);
        }
        assert!(
            recovery.missed("s", &rooms(&["r"]), 1).is_none(),
            "events 2 and 3 are gone"
        );
        assert_eq!(recovery.missed("s", &rooms(&["r"]), 3).unwrap().len(), 2);
        let page = recovery.room_history(Some("r"), 0, 10);
        assert!(!page.complete);
        assert_eq!(page.events.len(), 2);
    }

    #[test]
    fn sessions_expire_and_are_bounded() {
        let config = RecoveryConfig {
            max_sessions: 2,
            max_disconnection: Duration::from_millis(50),
            ..RecoveryConfig::default()
        };
        let mut recovery = Recovery::new(config);
        for n in 0..3 {
            recovery.save(SavedSession {
                sid: format!("s{n}").into(),
                pid: format!("p{n}").into(),
                rooms: RoomSet::default(),
                data: Map::new(),
                connected_seq: 0,
                saved_at: Instant::now(),
            });
        }
        assert_eq!(recovery.saved_sessions(), 2, "the oldest went first");
        assert!(recovery.take("p0").is_none());
        std::thread::sleep(Duration::from_millis(60));
        assert!(recovery.take("p1").is_none(), "expired");
        recovery.sweep();
        assert_eq!(recovery.saved_sessions(), 0);
    }

    #[test]
    fn a_departed_sockets_own_room_is_forgotten_and_others_still_recover() {
        let mut recovery = Recovery::new(RecoveryConfig::default());
        let seq = recovery.next_seq();
        recovery.store(
            seq,
            &[Room::from("gone-socket")],
            frame(seq),
            vec![],
            vec![],
        );
        let seq = recovery.next_seq();
        recovery.store(seq, &[Room::from("kitchen")], frame(seq), vec![], vec![]);
        assert_eq!(recovery.rooms.len(), 2);
        recovery.forget_own_room("gone-socket");
        assert_eq!(recovery.rooms.len(), 1);
        let missed = recovery
            .missed("other", &rooms(&["other", "kitchen"]), 0)
            .unwrap();
        assert_eq!(
            missed.len(),
            1,
            "a session in the kitchen still gets its event"
        );
    }
}
