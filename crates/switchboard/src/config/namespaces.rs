//! `[[namespaces]]`: the namespaces clients may connect to, their room permissions, rules
//! (`rules.rs`), recovery and token requirement.

use serde::{Deserialize, Serialize};

use super::rules::{ConnectRule, DisconnectRule, EventRule};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    pub name: String,
    /// Room-name patterns a client event may join or address (`*` wildcards); none: any name
    /// (but never another socket's own room).
    #[serde(default)]
    pub rooms: Option<Vec<RoomPermission>>,
    #[serde(default)]
    pub on_connect: Option<ConnectRule>,
    #[serde(default)]
    pub events: Vec<EventRule>,
    #[serde(default)]
    pub on_disconnect: Option<DisconnectRule>,
    /// `false` turns connection state recovery off for this namespace.
    #[serde(default)]
    pub recovery: Option<bool>,
    /// Token requirement (default: `required` when `[auth]` is configured and requires it).
    #[serde(default)]
    pub auth: Option<AuthMode>,
}

/// Whether a namespace requires a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// A valid token is needed to connect.
    Required,
    /// A token is checked when given; anonymous sockets connect too.
    Optional,
    /// No token is looked at.
    Off,
}

/// A room-name pattern a client event may use; `*` wildcards, `{data.key}` placeholders, and an
/// optional condition on socket data: `{ pattern = "video:*", when = { role = ["admin"] } }`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RoomPermission {
    Pattern(String),
    Conditional {
        pattern: String,
        when: std::collections::BTreeMap<String, Vec<serde_json::Value>>,
    },
}
