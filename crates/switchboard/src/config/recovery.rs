//! `[recovery]` (connection state recovery) and `[[history]]` (per-room event history limits).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::HumanDuration;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoverySettings {
    pub enabled: bool,
    /// How long a disconnected client can come back to its session.
    pub max_disconnection_duration: HumanDuration,
    /// Saved sessions per namespace at most.
    pub max_sessions: usize,
    /// Room histories per namespace at most.
    pub max_rooms: usize,
    /// Whether auth runs again when a session is recovered.
    pub rerun_auth: bool,
    /// Whether on_connect rules run again when a session is recovered.
    pub rerun_on_connect: bool,
}

impl Default for RecoverySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_disconnection_duration: HumanDuration(Duration::from_secs(120)),
            max_sessions: 100_000,
            max_rooms: 100_000,
            rerun_auth: false,
            rerun_on_connect: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HistorySettings {
    /// Room-name pattern (`*` wildcards); `*` alone also covers events sent to everyone.
    pub rooms: String,
    pub max_events: usize,
    pub max_age: HumanDuration,
}
