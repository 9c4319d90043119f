//! `[rate_limits]`: token buckets on what clients and backends send: every socket's events, one
//! event name's, and each API key's requests.

use serde::{Deserialize, Serialize};

/// A token bucket: `rate` per second on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    pub rate: f64,
    pub burst: f64,
}

/// What happens to a socket's event over its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExcess {
    /// The event is not handled; a callback gets `{"error": {"code": "rate_limited"}}`.
    #[default]
    Drop,
    /// The socket is disconnected (the client sees "io server disconnect").
    Disconnect,
}

/// `[[rate_limits.events]]`: one event name's own bucket, per socket.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventLimit {
    pub event: String,
    pub rate: f64,
    pub burst: f64,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Every event of one socket.
    pub socket: Option<Bucket>,
    /// One event name, per socket (on top of `socket`).
    pub events: Vec<EventLimit>,
    pub on_excess: OnExcess,
    /// HTTP API requests per key (per caller address when no keys are configured); over it:
    /// 429 with `Retry-After`.
    pub api: Option<Bucket>,
}

impl RateLimitSettings {
    pub fn any_event_limit(&self) -> bool {
        self.socket.is_some() || !self.events.is_empty()
    }
}
