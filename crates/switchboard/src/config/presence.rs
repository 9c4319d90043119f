//! `[presence]`: which socket-data key is a user, how long a user stays online after their
//! last connection, and the presence events.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::HumanDuration;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceSettings {
    /// The socket-data key that holds a user id (set by auth claims, rules or the plain endpoint).
    pub user_key: String,
    /// How long a user stays online after their last connection closes (no flap on reload).
    pub grace: HumanDuration,
    /// Namespace and rooms that get presence events.
    pub namespace: String,
    pub rooms: Vec<String>,
    pub online_event: String,
    pub offline_event: String,
    /// A client event answered (by ack) with the users in a room the sender is in.
    pub query_event: Option<String>,
}

impl Default for PresenceSettings {
    fn default() -> Self {
        Self {
            user_key: "userId".into(),
            grace: HumanDuration(Duration::from_secs(5)),
            namespace: "/".into(),
            rooms: Vec::new(),
            online_event: "user:online".into(),
            offline_event: "user:offline".into(),
            query_event: Some("presence:list".into()),
        }
    }
}
