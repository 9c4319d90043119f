//! `[proxy]` and `[webhooks]`: the application's own backend in the loop. The connect proxy asks
//! it who may connect (as whom, into which rooms), the event proxy has it answer client events,
//! the refresh proxy hands out fresh tokens, and webhooks tell it what happened.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::HumanDuration;

/// `[proxy]`: calls to the backend made while clients wait.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySettings {
    /// `[proxy.connect]`: asked on every connect.
    pub connect: Option<ConnectProxySettings>,
    /// `[[proxy.events]]`: client events answered by the backend.
    pub events: Vec<EventProxySettings>,
    /// `[proxy.refresh]`: asked for a fresh token before a socket's token expires.
    pub refresh: Option<RefreshProxySettings>,
    /// Event proxy calls in flight at once on this node.
    pub max_concurrency: usize,
    /// Proxied events a socket may have waiting; further ones are answered with an error ack.
    pub max_pending_per_socket: usize,
    /// Proxied events waiting on this node in all; further ones are answered with an error ack.
    pub max_backlog: usize,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            connect: None,
            events: Vec::new(),
            refresh: None,
            max_concurrency: 256,
            max_pending_per_socket: 16,
            max_backlog: 10_000,
        }
    }
}

/// `[proxy.connect]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectProxySettings {
    pub url: String,
    #[serde(default = "one_second")]
    pub timeout: HumanDuration,
    /// The namespaces it decides for; none: every configured namespace.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Whether plain WebSocket connections are decided by it too.
    #[serde(default = "yes")]
    pub plain_ws: bool,
    /// Headers of the client's opening request passed on (lowercase names).
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// Headers added to every call (a shared secret, say: `"${PROXY_SECRET}"`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// `[[proxy.events]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventProxySettings {
    /// The client event.
    pub event: String,
    #[serde(default = "root_namespace")]
    pub namespace: String,
    pub url: String,
    #[serde(default = "five_seconds")]
    pub timeout: HumanDuration,
    #[serde(default)]
    pub forward_headers: Vec<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// `[proxy.refresh]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshProxySettings {
    pub url: String,
    #[serde(default = "five_seconds")]
    pub timeout: HumanDuration,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The lifecycle events webhooks can report.
pub const WEBHOOK_EVENTS: [&str; 9] = [
    "socket_connected",
    "socket_disconnected",
    "user_online",
    "user_offline",
    "room_occupied",
    "room_vacated",
    "member_joined",
    "member_left",
    "client_event",
];

/// `[webhooks]`: events POSTed to the backend in signed batches, retried on failure.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// Where batches go; none: no webhooks.
    pub url: Option<String>,
    /// The HMAC-SHA256 key of the `X-Switchboard-Signature` header.
    pub secret: Option<String>,
    /// Which events are sent (see [`WEBHOOK_EVENTS`]).
    pub events: Vec<String>,
    /// The client events sent as `client_event` (with `client_event` in `events`).
    pub client_events: Vec<String>,
    /// Events per batch at most.
    pub batch_max: usize,
    /// How long an event waits for others to share its batch.
    pub batch_wait: HumanDuration,
    pub timeout: HumanDuration,
    /// Tries per batch, the first included; then it is dropped (and counted).
    pub max_attempts: u32,
    /// The wait before the first retry; it doubles up to `retry_max`.
    pub retry_initial: HumanDuration,
    pub retry_max: HumanDuration,
    /// Events waiting to be sent at most; further ones are dropped (and counted).
    pub queue: usize,
    /// Headers added to every call.
    pub headers: BTreeMap<String, String>,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            url: None,
            secret: None,
            events: WEBHOOK_EVENTS
                .iter()
                .filter(|e| **e != "client_event")
                .map(|e| (*e).to_owned())
                .collect(),
            client_events: Vec::new(),
            batch_max: 100,
            batch_wait: HumanDuration(Duration::from_millis(100)),
            timeout: HumanDuration(Duration::from_secs(5)),
            max_attempts: 6,
            retry_initial: HumanDuration(Duration::from_millis(500)),
            retry_max: HumanDuration(Duration::from_secs(30)),
            queue: 10_000,
            headers: BTreeMap::new(),
        }
    }
}

fn one_second() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

fn five_seconds() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

fn yes() -> bool {
    true
}

fn root_namespace() -> String {
    "/".into()
}
