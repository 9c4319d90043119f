//! `[cluster]`: several nodes sharing rooms through Redis.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::HumanDuration;

/// `[cluster]`: nodes share broadcasts, room operations and the API's reads through Redis
/// pub/sub, in the Socket.IO Redis adapter's message shapes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// `redis://host:port/db` (or `rediss://`); none: this node stands alone.
    pub redis_url: Option<String>,
    /// The channel prefix; "socket.io" shares rooms with `@socket.io/redis-adapter` servers and
    /// `@socket.io/redis-emitter` publishers using the default key.
    pub key: String,
    /// How long the API waits for the other nodes' answers to a cluster-wide read.
    pub request_timeout: HumanDuration,
    /// A node not heard from for this long is taken for dead (killed, cut off): its users go
    /// offline on the others. Nodes say who is online every third of it (at most every 10 s).
    pub node_timeout: HumanDuration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            redis_url: None,
            key: "socket.io".into(),
            request_timeout: HumanDuration(Duration::from_secs(5)),
            node_timeout: HumanDuration(Duration::from_secs(35)),
        }
    }
}
