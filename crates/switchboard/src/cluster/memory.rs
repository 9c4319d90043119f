//! The in-memory driver: several nodes in one process share a [`MemoryBroker`] (channels, keys
//! with TTLs, and optionally an ordered log with ids shaped like a Redis stream's). What one
//! node publishes reaches every subscribed node, itself included, in the order it was
//! published, as Redis does. For tests of several nodes in one process and for embedding; a
//! link can be cut and healed to play a node that went silent, and the broker frozen and
//! thawed to play an engine that stops answering for a while (Redis under SIGSTOP: the links
//! look up, what is said waits, then arrives all at once, in order).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::driver::{
    Driver, DriverError, Incoming, IncomingSender, KeyValues, Log, LogEntry, Topic, entry_id_parts,
    tell_taken,
};
use crate::hub::adapter::{BoxFuture, NotTaken, TakenSender};

/// What the nodes of one process share.
#[derive(Default)]
pub struct MemoryBroker {
    state: Mutex<BrokerState>,
    /// Woken on each append, for readers waiting for the log.
    appended: Notify,
    /// The log keeps about this many entries; none: the broker has no log.
    log_max_len: Option<usize>,
}

#[derive(Default)]
struct BrokerState {
    links: Vec<Arc<LinkState>>,
    keys: HashMap<String, (Vec<u8>, Instant)>,
    log: Vec<LogEntry>,
    last_id: (u64, u64),
    /// While frozen, what is published waits here (channel, payload), in order.
    frozen: Option<Vec<(String, Vec<u8>)>>,
}

struct LinkState {
    topics: Mutex<HashSet<Topic>>,
    incoming: IncomingSender,
    up: AtomicBool,
}

impl LinkState {
    fn hears(&self, channel: &str) -> bool {
        self.up.load(Ordering::Acquire)
            && self.topics.lock().iter().any(|topic| match topic {
                Topic::Channel(name) => name == channel,
                Topic::Prefix(prefix) => channel.starts_with(prefix.as_str()),
            })
    }
}

impl MemoryBroker {
    /// A broker with channels and keys only (nodes speak the pub/sub dialect).
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A broker with an ordered log too, trimmed to about `max_len` entries.
    pub fn with_log(max_len: usize) -> Arc<Self> {
        Arc::new(Self {
            log_max_len: Some(max_len.max(1)),
            ..Self::default()
        })
    }

    /// Loses every key, as an engine restarted empty does.
    pub fn forget_keys(&self) {
        self.state.lock().keys.clear();
    }

    /// Stops delivering: what is published from now on waits until [`Self::thaw`].
    pub fn freeze(&self) {
        self.state.lock().frozen.get_or_insert_with(Vec::new);
    }

    /// Delivers what waited, in the order it was published, and goes on as before.
    pub fn thaw(&self) {
        let mut state = self.state.lock();
        for (channel, payload) in state.frozen.take().unwrap_or_default() {
            Self::deliver(&state, &channel, &payload);
        }
    }

    /// A new node's link, telling `incoming` what it receives (it is up at once).
    pub fn connect(self: &Arc<Self>, incoming: IncomingSender) -> Arc<MemoryDriver> {
        let link = Arc::new(LinkState {
            topics: Mutex::new(HashSet::new()),
            incoming,
            up: AtomicBool::new(true),
        });
        self.state.lock().links.push(link.clone());
        let _ = link.incoming.send(Incoming::Up);
        Arc::new(MemoryDriver {
            broker: self.clone(),
            link,
            dropped: AtomicU64::new(0),
        })
    }

    fn publish(&self, channel: &str, payload: &[u8]) {
        let mut state = self.state.lock();
        state.links.retain(|link| !link.incoming.is_closed());
        if let Some(waiting) = state.frozen.as_mut() {
            waiting.push((channel.to_owned(), payload.to_vec()));
            return;
        }
        Self::deliver(&state, channel, payload);
    }

    fn deliver(state: &BrokerState, channel: &str, payload: &[u8]) {
        for link in state.links.iter().filter(|link| link.hears(channel)) {
            let _ = link.incoming.send(Incoming::Message {
                channel: channel.to_owned(),
                payload: payload.to_vec(),
            });
        }
    }

    fn live_value(state: &mut BrokerState, key: &str) -> Option<Vec<u8>> {
        match state.keys.get(key) {
            Some((_, until)) if *until <= Instant::now() => {
                state.keys.remove(key);
                None
            }
            Some((value, _)) => Some(value.clone()),
            None => None,
        }
    }

    fn append(&self, fields: Vec<(&'static str, Vec<u8>)>) -> Option<String> {
        let max_len = self.log_max_len?;
        let mut state = self.state.lock();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let (ms, seq) = state.last_id;
        let id = if now > ms { (now, 0) } else { (ms, seq + 1) };
        state.last_id = id;
        let id = format!("{}-{}", id.0, id.1);
        let fields = fields
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        state.log.push((id.clone(), fields));
        if state.log.len() > max_len {
            let excess = state.log.len() - max_len;
            state.log.drain(..excess);
        }
        drop(state);
        self.appended.notify_waiters();
        Some(id)
    }

    fn entries_after(&self, after: &str, through: Option<&str>, count: usize) -> Vec<LogEntry> {
        let (after, through) = (entry_id_parts(after), through.map(entry_id_parts));
        self.state
            .lock()
            .log
            .iter()
            .filter(|(id, _)| {
                entry_id_parts(id) > after && through.is_none_or(|end| entry_id_parts(id) <= end)
            })
            .take(count)
            .cloned()
            .collect()
    }
}

/// One node's link to a [`MemoryBroker`].
pub struct MemoryDriver {
    broker: Arc<MemoryBroker>,
    link: Arc<LinkState>,
    dropped: AtomicU64,
}

impl MemoryDriver {
    /// Cuts this node off: what it says is dropped, and it hears nothing (a node that hangs, or
    /// loses its network).
    pub fn cut(&self) {
        self.link.up.store(false, Ordering::Release);
    }

    /// Connects it again (it is told [`Incoming::Up`], as after a reconnect).
    pub fn heal(&self) {
        self.link.up.store(true, Ordering::Release);
        let _ = self.link.incoming.send(Incoming::Up);
    }

    /// Whether what it says now goes anywhere; else counts it dropped.
    fn sending(&self) -> bool {
        let up = self.link.up.load(Ordering::Acquire);
        if !up {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        up
    }
}

impl Driver for MemoryDriver {
    fn publish(&self, channel: String, payload: Vec<u8>, taken: Option<TakenSender>) {
        if taken.as_ref().is_some_and(|t| t.is_closed()) {
            return;
        }
        if !self.sending() {
            return tell_taken(taken, Err(NotTaken));
        }
        self.broker.publish(&channel, &payload);
        tell_taken(taken, Ok(None));
    }

    fn subscribe(&self, topic: Topic) {
        self.link.topics.lock().insert(topic);
    }

    fn unsubscribe(&self, topic: Topic) {
        self.link.topics.lock().remove(&topic);
    }

    fn set(&self, key: String, value: Vec<u8>, ttl: Duration) {
        if self.sending() {
            let until = Instant::now() + ttl;
            self.broker.state.lock().keys.insert(key, (value, until));
        }
    }

    fn expire(&self, key: String, ttl: Duration) {
        if self.sending()
            && let Some((_, until)) = self.broker.state.lock().keys.get_mut(&key)
        {
            *until = Instant::now() + ttl;
        }
    }

    fn delete(&self, key: String) {
        if self.sending() {
            self.broker.state.lock().keys.remove(&key);
        }
    }

    fn get(&self, key: String) -> BoxFuture<'_, Result<Option<Vec<u8>>, DriverError>> {
        Box::pin(async move {
            let mut state = self.broker.state.lock();
            Ok(MemoryBroker::live_value(&mut state, &key))
        })
    }

    fn take(&self, key: String) -> BoxFuture<'_, Result<Option<Vec<u8>>, DriverError>> {
        Box::pin(async move {
            let mut state = self.broker.state.lock();
            let value = MemoryBroker::live_value(&mut state, &key);
            state.keys.remove(&key);
            Ok(value)
        })
    }

    fn scan(&self, prefix: String) -> BoxFuture<'_, Result<KeyValues, DriverError>> {
        Box::pin(async move {
            let now = Instant::now();
            let state = self.broker.state.lock();
            Ok((state.keys.iter())
                .filter(|(key, (_, until))| key.starts_with(&prefix) && *until > now)
                .map(|(key, (value, _))| (key.clone(), value.clone()))
                .collect())
        })
    }

    fn listeners(&self, channel: String) -> BoxFuture<'_, Option<usize>> {
        Box::pin(async move {
            let state = self.broker.state.lock();
            Some(state.links.iter().filter(|l| l.hears(&channel)).count())
        })
    }

    fn log(&self) -> Option<&dyn Log> {
        self.broker.log_max_len.map(|_| self as &dyn Log)
    }

    fn sent(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    fn is_up(&self) -> bool {
        self.link.up.load(Ordering::Acquire)
    }

    fn relink(&self) {
        if self.is_up() {
            let _ = self.link.incoming.send(Incoming::Up);
        }
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Log for MemoryDriver {
    fn append(&self, fields: Vec<(&'static str, Vec<u8>)>, taken: Option<TakenSender>) {
        if taken.as_ref().is_some_and(|t| t.is_closed()) {
            return;
        }
        if !self.sending() {
            return tell_taken(taken, Err(NotTaken));
        }
        let offset = self
            .broker
            .append(fields)
            .and_then(|id| crate::hub::parse_offset(&id));
        tell_taken(taken, Ok(offset));
    }

    fn newest(&self) -> BoxFuture<'_, Result<Option<String>, DriverError>> {
        Box::pin(async move {
            Ok(self
                .broker
                .state
                .lock()
                .log
                .last()
                .map(|(id, _)| id.clone()))
        })
    }

    fn read_after(
        &self,
        after: String,
        block: Duration,
    ) -> BoxFuture<'_, Result<Vec<LogEntry>, DriverError>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + block;
            loop {
                let appended = self.broker.appended.notified();
                if !self.is_up() {
                    return Err(DriverError("the link is cut".into()));
                }
                let entries = self.broker.entries_after(&after, None, 1000);
                if !entries.is_empty() {
                    return Ok(entries);
                }
                if tokio::time::timeout_at(deadline, appended).await.is_err() {
                    return Ok(Vec::new());
                }
            }
        })
    }

    fn contains(&self, id: String) -> BoxFuture<'_, Result<bool, DriverError>> {
        Box::pin(async move {
            Ok(self
                .broker
                .state
                .lock()
                .log
                .iter()
                .any(|(held, _)| *held == id))
        })
    }

    fn range(
        &self,
        after: String,
        through: String,
        count: usize,
    ) -> BoxFuture<'_, Result<Vec<LogEntry>, DriverError>> {
        Box::pin(async move { Ok(self.broker.entries_after(&after, Some(&through), count)) })
    }
}
