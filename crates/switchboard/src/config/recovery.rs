//! `[recovery]` (connection state recovery) and `[[history]]` (per-room event history limits).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::HumanDuration;

/// Which clients get recovery (a private session id, and an offset as every event's last
/// argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryClients {
    /// Every client (what the reference server does): right for socket.io-client 4.6+ in JS.
    #[default]
    All,
    /// Only clients whose CONNECT auth says `recover: true`; the others receive events exactly
    /// as sent (python-socketio, Swift and Java clients do not implement recovery).
    OnRequest,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoverySettings {
    pub enabled: bool,
    /// `all` or `on_request` (see [`RecoveryClients`]).
    pub clients: RecoveryClients,
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
            clients: RecoveryClients::All,
            max_disconnection_duration: HumanDuration(Duration::from_secs(120)),
            max_sessions: 100_000,
            max_rooms: 100_000,
            rerun_auth: false,
            rerun_on_connect: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistorySettings {
    /// Room-name pattern (`*` wildcards); `*` alone also covers events sent to everyone.
    pub rooms: String,
    pub max_events: usize,
    pub max_age: HumanDuration,
    /// What a socket joining a matching room is given at once (`hub::last_state`).
    pub on_join: OnJoin,
    /// How long a room's last state is kept (and given) after it was sent.
    pub last_max_age: HumanDuration,
}

impl Default for HistorySettings {
    fn default() -> Self {
        Self {
            rooms: "*".into(),
            max_events: 1000,
            max_age: HumanDuration(Duration::from_secs(120)),
            on_join: OnJoin::None,
            last_max_age: HumanDuration(Duration::from_secs(24 * 3600)),
        }
    }
}

/// `[[history]] on_join`: what a socket that joins a matching room gets at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnJoin {
    /// Nothing (the default).
    #[default]
    None,
    /// The last event sent to the room.
    Last,
    /// The last event of each event name sent to the room.
    LastPerEvent,
}
