//! `[plain_ws]`: the plain WebSocket endpoint (JSON, for clients that do not speak Socket.IO).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::HumanDuration;

/// `[plain_ws]` in the config.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlainWsSettings {
    /// Where the endpoint listens; none: off.
    pub path: Option<String>,
    /// The query parameter that names the user (without auth).
    pub user_param: String,
    pub ping_interval: HumanDuration,
    /// Whether a token is required (default: `auth.required` when auth is configured).
    pub require_auth: Option<bool>,
    /// Messages queued per client before it is dropped as too slow.
    pub queue: usize,
}

impl Default for PlainWsSettings {
    fn default() -> Self {
        Self {
            path: None,
            user_param: "userId".into(),
            ping_interval: HumanDuration(Duration::from_secs(30)),
            require_auth: None,
            queue: 256,
        }
    }
}
