//! Blocked users and revoked tokens across the cluster: each change goes to every node as a
//! node message and is kept in the engine, one key per entry under `{<key>-access}:` with the
//! entry's own time to live (so nothing stays past its end), beside a marker key saying the
//! engine holds the list. When a node's link comes up (at start, after an outage) it reads the
//! list back: with the marker there, the engine's list is the truth (what was lifted meanwhile
//! is lifted here too); with the marker gone (the engine restarted empty), the node writes back
//! what it knows.

use std::sync::Arc;
use std::time::Duration;

use super::node::ClusterNode;
use super::node_message::NodeMessage;
use crate::clock::now_millis;
use crate::hub::access::{AccessChange, AccessEntry};
use crate::hub::adapter::TakenSender;

/// How long the marker lives past its last write: longer than any entry can.
const MARKER_TTL: Duration = Duration::from_secs(400 * 24 * 3600);
const MARKER: &str = "present";

/// Where the list lives in the engine: one hash tag, so one slot on a Redis Cluster.
fn prefix(key: &str) -> String {
    format!("{{{key}-access}}:")
}

impl ClusterNode {
    /// Keeps `change` in the engine, then tells every node (the order the driver keeps: once
    /// the message is taken, so is the write).
    pub(super) fn share_access(&self, change: &AccessChange, taken: Option<TakenSender>) {
        self.store_access(change);
        let message = NodeMessage::Access {
            uid: self.uid.clone(),
            change: change.clone(),
        };
        self.say(&message, taken);
    }

    fn store_access(&self, change: &AccessChange) {
        let prefix = prefix(&self.settings.key);
        match change {
            AccessChange::Add { entry } => {
                let left = entry.left(now_millis());
                if left.is_zero() {
                    return;
                }
                let value = serde_json::to_vec(entry).unwrap_or_default();
                (self.driver).set(format!("{prefix}{}", entry.key().path()), value, left);
            }
            AccessChange::Remove { key } => {
                self.driver.delete(format!("{prefix}{}", key.path()));
            }
        }
        (self.driver).set(format!("{prefix}{MARKER}"), b"1".to_vec(), MARKER_TTL);
    }

    /// Reads the list back from the engine (the link is up again) and applies it here.
    pub(super) async fn resync_access(self: Arc<Self>) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let prefix = prefix(&self.settings.key);
        let held = match self.driver.scan(prefix.clone()).await {
            Ok(held) => held,
            Err(error) => {
                tracing::warn!(%error, "cluster: could not read the blocked users and revoked tokens back");
                return;
            }
        };
        let marker = format!("{prefix}{MARKER}");
        if !held.iter().any(|(key, _)| *key == marker) {
            let known = hub.access().entries();
            if !known.is_empty() {
                tracing::info!(
                    entries = known.len(),
                    "cluster: the engine lost the blocked users and revoked tokens; writing them back"
                );
            }
            for entry in known {
                self.store_access(&AccessChange::Add { entry });
            }
            return;
        }
        let entries: Vec<AccessEntry> = held
            .iter()
            .filter(|(key, _)| *key != marker)
            .filter_map(|(key, value)| match serde_json::from_slice(value) {
                Ok(entry) => Some(entry),
                Err(error) => {
                    tracing::debug!(%error, key, "cluster: ignoring a malformed access entry");
                    None
                }
            })
            .collect();
        for entry in hub.access().resync(entries) {
            hub.enforce_access(&entry);
        }
    }
}
