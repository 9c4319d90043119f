//! `[cluster]`: several nodes sharing rooms through Redis or PostgreSQL.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::HumanDuration;

/// `[cluster]`: nodes share broadcasts, room operations and the API's reads through Redis
/// pub/sub, in the Socket.IO Redis adapter's message shapes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// `redis://host:port/db` (or `rediss://`); none: this node stands alone (unless
    /// `postgres_url` is set). With `adapter = "sharded"`: one or more servers of the Redis
    /// Cluster, comma-separated (`redis://10.0.0.1:7000,redis://10.0.0.2:7000`).
    pub redis_url: Option<String>,
    /// `redis_url` names servers of a Redis Cluster (implied by `adapter = "sharded"`): with
    /// `adapter = "streams"`, the stream and the keys go to the masters serving their slots and
    /// the nodes speak to each other with sharded pub/sub.
    pub redis_cluster: bool,
    /// `adapter = "sharded"`: which rooms get a channel of their own, as `createShardedAdapter`'s
    /// `subscriptionMode`: "dynamic" (every room but a socket's own: a node hears a room's
    /// broadcasts only while it has members there), "dynamic-private" (a socket's own room too)
    /// or "static" (none: every broadcast on the namespace's channel).
    pub subscription_mode: SubscriptionMode,
    /// `adapter = "postgres"`: `postgres://user:password@host:port/database`.
    pub postgres_url: Option<String>,
    /// `adapter = "postgres"`: the table for payloads too large for a notification (the
    /// Node.js adapter's `tableName`).
    pub attachments_table: String,
    /// The channel prefix; "socket.io" shares rooms with `@socket.io/redis-adapter` servers and
    /// `@socket.io/redis-emitter` publishers using the default key.
    pub key: String,
    /// How long the API waits for the other nodes' answers to a cluster-wide read, and for
    /// Redis to take what an API call publishes (past it: 503).
    pub request_timeout: HumanDuration,
    /// A node not heard from for this long is taken for dead (killed, cut off): its users go
    /// offline on the others. Nodes say who is online every third of it (at most every 10 s).
    pub node_timeout: HumanDuration,
    /// How nodes share broadcasts: "pubsub" (the Socket.IO Redis adapter's channels; what is
    /// published while a node is away is gone) or "streams" (the Socket.IO Redis Streams
    /// adapter's stream: one ordered log whose entry ids are the clients' offsets, with sessions
    /// in Redis, so a client recovers on any node, even after its node was killed), or
    /// "postgres" (PostgreSQL alone: `LISTEN`/`NOTIFY` as `@socket.io/postgres-adapter` speaks
    /// it, and the log and sessions in tables, so clients recover on any node there too), or
    /// "sharded" (a Redis Cluster's sharded pub/sub, as `createShardedAdapter` of
    /// `@socket.io/redis-adapter` speaks it: a node hears the rooms it has members in).
    pub adapter: AdapterKind,
    /// `adapter = "streams"`: the stream's key (the Streams adapter's `streamName`).
    pub stream_name: String,
    /// `adapter = "streams"`: the stream is trimmed to about this many entries (`maxLen`).
    pub stream_max_len: usize,
    /// `host:port` where the other nodes reach this one, to pass on requests for its sessions
    /// (a round-robin load balancer needs no sticky sessions). None: the listening address, or
    /// when that is a wildcard, this machine's address on the route to Redis.
    pub advertise_address: Option<String>,
    /// `adapter = "streams"`: where sessions are kept, `<prefix><pid>` (`sessionKeyPrefix`).
    pub session_key_prefix: String,
}

/// `[cluster] adapter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterKind {
    Pubsub,
    Streams,
    Postgres,
    Sharded,
}

/// `[cluster] subscription_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubscriptionMode {
    Static,
    #[default]
    Dynamic,
    DynamicPrivate,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            redis_url: None,
            postgres_url: None,
            subscription_mode: SubscriptionMode::Dynamic,
            redis_cluster: false,
            attachments_table: "socket_io_attachments".into(),
            key: "socket.io".into(),
            request_timeout: HumanDuration(Duration::from_secs(5)),
            node_timeout: HumanDuration(Duration::from_secs(35)),
            adapter: AdapterKind::Pubsub,
            stream_name: "socket.io".into(),
            stream_max_len: 10_000,
            session_key_prefix: "sio:session:".into(),
            advertise_address: None,
        }
    }
}

impl ClusterSettings {
    /// Whether `redis_url` names servers of a Redis Cluster.
    pub fn on_redis_cluster(&self) -> bool {
        self.redis_cluster || self.adapter == AdapterKind::Sharded
    }

    /// Whether this node is part of a cluster.
    pub fn configured(&self) -> bool {
        self.redis_url.is_some() || self.postgres_url.is_some()
    }
}
