//! The small trait every cluster engine implements, and nothing more: publish to a channel,
//! subscribe to channels, a key-value store with TTLs, and, as an optional capability, an
//! ordered log to append to and read from. The cluster core (`node.rs`) speaks the node
//! protocol on top of it; a driver only moves bytes. Drivers: `memory.rs` (one process, for
//! tests and embedding), `redis/` (pub/sub, with Redis streams as its log).
//!
//! A driver keeps its subscriptions across reconnects by itself and tells the core through the
//! [`Incoming`] channel it was started with: [`Incoming::Up`] each time the link is (again) in
//! place, then every message of a subscribed channel, in the order the engine delivered them.
//! What is published, set, expired, deleted or appended is sent in the order it was given.

use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::hub::adapter::{BoxFuture, NotTaken, TakenSender};

/// What a subscription listens to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// One channel, by its name.
    Channel(String),
    /// Every channel whose name starts with this.
    Prefix(String),
}

/// What a driver tells the core.
#[derive(Debug)]
pub enum Incoming {
    /// The link is up (again) with every subscription in place: what was said while it was down
    /// is lost, and the core says again what the others must know.
    Up,
    /// A message on a subscribed channel.
    Message { channel: String, payload: Vec<u8> },
}

/// Where a driver sends what it receives.
pub type IncomingSender = mpsc::UnboundedSender<Incoming>;

/// The engine could not be asked, or answered an error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct DriverError(pub String);

/// Keys and their values.
pub type KeyValues = Vec<(String, Vec<u8>)>;

/// One entry of a [`Log`]: its id (`<milliseconds>-<sequence>`, increasing) and its fields.
pub type LogEntry = (String, Vec<(String, Vec<u8>)>);

/// A cluster engine, as the core uses it.
pub trait Driver: Send + Sync {
    /// Publishes `payload` on `channel`; `taken`, when given, is told once the engine has it
    /// (or that it could not take it). A payload whose waiter has stopped waiting is not sent.
    fn publish(&self, channel: String, payload: Vec<u8>, taken: Option<TakenSender>);

    /// Listens to `topic` from now on (and after each reconnect).
    fn subscribe(&self, topic: Topic);

    /// Stops listening to `topic`.
    fn unsubscribe(&self, topic: Topic);

    /// Sets `key` to `value`, gone after `ttl`.
    fn set(&self, key: String, value: Vec<u8>, ttl: Duration);

    /// Gives `key` a new time to live.
    fn expire(&self, key: String, ttl: Duration);

    /// Removes `key`.
    fn delete(&self, key: String);

    /// The value of `key`.
    fn get(&self, key: String) -> BoxFuture<'_, Result<Option<Vec<u8>>, DriverError>>;

    /// The value of `key`, removed at once (two nodes taking it: one gets it).
    fn take(&self, key: String) -> BoxFuture<'_, Result<Option<Vec<u8>>, DriverError>>;

    /// Sets `field` of the map `key` to `value`, the whole map gone after `ttl` from its last
    /// write. By default one key per field (`<key>\0<field>`, each with its own TTL).
    fn map_set(&self, key: String, field: String, value: Vec<u8>, ttl: Duration) {
        self.set(format!("{key}\0{field}"), value, ttl);
    }

    /// Every field of the map `key`, with its value.
    fn map_all(&self, key: String) -> BoxFuture<'_, Result<KeyValues, DriverError>> {
        Box::pin(async move {
            let prefix = format!("{key}\0");
            let fields = self.scan(prefix.clone()).await?;
            Ok(fields
                .into_iter()
                .map(|(name, value)| (name[prefix.len()..].to_owned(), value))
                .collect())
        })
    }

    /// Every live key that starts with `prefix`, with its value. The prefix begins with a
    /// `{tag}` so that on an engine that shards keys they all live in one place.
    fn scan(&self, prefix: String) -> BoxFuture<'_, Result<KeyValues, DriverError>>;

    /// How many nodes (this one included) listen on `channel` now, when the engine can tell:
    /// more current than heartbeats (a killed node's subscription ends with its connection).
    fn listeners(&self, _channel: String) -> BoxFuture<'_, Option<usize>> {
        Box::pin(async { None })
    }

    /// The ordered log, when this engine has one.
    fn log(&self) -> Option<&dyn Log> {
        None
    }

    /// Resolves once everything given before has been sent (or dropped).
    fn sent(&self) -> BoxFuture<'_, ()>;

    /// Whether the link is up now.
    fn is_up(&self) -> bool;

    /// The link looks dead though it says it is up (the core stopped hearing itself): drop it
    /// and connect again.
    fn relink(&self);

    /// Messages dropped since start (the engine out of reach, or the queue to it full).
    fn dropped(&self) -> u64;

    /// The address of this machine on the route to the engine (what other nodes most likely
    /// reach it at), when the engine is across a network.
    fn local_ip(&self) -> BoxFuture<'_, Option<IpAddr>> {
        Box::pin(async { None })
    }
}

/// An ordered log all nodes read (the Redis streams adapter's stream).
pub trait Log: Send + Sync {
    /// Appends an entry, in order with what the driver was given before; `taken` is told the
    /// entry's offset once the engine has it.
    fn append(&self, fields: Vec<(&'static str, Vec<u8>)>, taken: Option<TakenSender>);

    /// The id of the newest entry (None for an empty log).
    fn newest(&self) -> BoxFuture<'_, Result<Option<String>, DriverError>>;

    /// The entries after `after` (an id), waiting up to `block` for the first to come; empty
    /// when none came.
    fn read_after(
        &self,
        after: String,
        block: Duration,
    ) -> BoxFuture<'_, Result<Vec<LogEntry>, DriverError>>;

    /// Whether the entry `id` is still in the log (not trimmed).
    fn contains(&self, id: String) -> BoxFuture<'_, Result<bool, DriverError>>;

    /// At most `count` entries after `after` up to `through`, in order.
    fn range(
        &self,
        after: String,
        through: String,
        count: usize,
    ) -> BoxFuture<'_, Result<Vec<LogEntry>, DriverError>>;
}

/// Tells an operation's waiter, when there is one, whether the engine took it.
pub fn tell_taken(taken: Option<TakenSender>, outcome: Result<Option<u64>, NotTaken>) {
    if let Some(taken) = taken {
        let _ = taken.send(outcome);
    }
}

/// `prefix` as a Redis glob matching every key that starts with it.
pub fn glob_prefix(prefix: &str) -> String {
    let mut glob = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            glob.push('\\');
        }
        glob.push(c);
    }
    glob.push('*');
    glob
}

/// A log entry id `<ms>-<n>` as its two numbers, ordered as the log orders ids (0-0 for what
/// is not an id).
pub fn entry_id_parts(id: &str) -> (i64, i64) {
    let (ms, n) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), n.parse().unwrap_or(0))
}
