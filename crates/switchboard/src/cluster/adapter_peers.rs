//! What Node.js servers on `socket.io-adapter`'s cluster adapters say, applied here:
//! broadcasts, joins, leaves and disconnects of sockets selected by rooms, and fetches of
//! sockets, as its cluster messages `{uid, nsp, type, data}` (JSON, or MessagePack when they
//! hold binary). Two adapters speak them on pub/sub:
//! - `@socket.io/postgres-adapter` (and `@socket.io/postgres-emitter` publishers) on
//!   `<prefix>#<nsp>`, large ones through the attachments table. They are not in the log, so they
//!   carry no offset; what a Switchboard node mirrors there from its log (marked with its
//!   `offset`) is skipped: the log brings it, in order. Like a Node.js server on that adapter, a
//!   node says it is alive on each namespace's channel every 5 s (so their `fetchSockets()`
//!   count it and wait for its answer);
//! - `createShardedAdapter` of `@socket.io/redis-adapter` on `<prefix>#<nsp>#` and its room
//!   channels, answered on `<prefix>#<nsp>#<uid>#` (it counts servers with `SHARDNUMSUB`, no
//!   heartbeat).
//!
//! Server-side emits are not answered (Switchboard has no server-side handlers), and a
//! broadcast asking for acks is answered "no client will ack".

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::node::ClusterNode;
use super::shared_log::fetched_sockets;
use super::stream_message::{self, kind};
use crate::hub::Hub;

/// How often a node tells Node.js servers it is alive (their default heartbeat interval; they
/// forget a server silent for 10 s).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// An answer at least this large goes as MessagePack (the driver passes it through the
/// attachments table, which the Node.js adapter reads as MessagePack).
const JSON_ANSWER_MAX: usize = 7_000;

/// Which adapter the Node.js servers are on (where and how they are answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Peers {
    Postgres,
    ShardedRedis,
}

impl ClusterNode {
    /// A cluster message from a Node.js server (the namespace taken from the channel when the
    /// message does not say it: `@socket.io/postgres-emitter` 0.1 leaves `nsp` out).
    pub(super) fn on_peer_message(&self, hub: &Hub, namespace: &str, payload: &[u8], peers: Peers) {
        let message = match stream_message::decode_cluster_message(payload) {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(%error, "cluster: ignoring a malformed cluster adapter message");
                return;
            }
        };
        if message.uid == self.uid || message.offset.is_some() {
            return;
        }
        let named = if message.namespace.is_empty() {
            namespace
        } else {
            message.namespace.as_str()
        };
        let Some(namespace) = hub.of(named) else {
            return;
        };
        let opts = &message.data["opts"];
        let selection = namespace
            .select(
                &stream_message::string_list(&opts["rooms"]),
                &stream_message::string_list(&opts["except"]),
            )
            .volatile(opts["flags"]["volatile"] == true);
        let request_id = message.data["requestId"].clone();
        let answer = |kind: u64, data: Value| match peers {
            Peers::Postgres => self.answer_postgres_peer(namespace.name(), kind, data),
            Peers::ShardedRedis => {
                let channel = stream_message::namespace_channel(
                    &self.settings.key,
                    namespace.name(),
                    Some(&message.uid),
                );
                let payload =
                    stream_message::cluster_message(&self.uid, namespace.name(), kind, data, &[]);
                self.driver.publish(channel, payload, None);
            }
        };
        match message.kind {
            kind::INITIAL_HEARTBEAT if peers == Peers::Postgres => {
                self.beat_for_peers(namespace.name(), kind::HEARTBEAT)
            }
            kind::BROADCAST => {
                let data = &message.data["packet"]["data"];
                let Some((event, args)) = data.as_array().and_then(|d| d.split_first()) else {
                    return;
                };
                if let Some(event) = event.as_str() {
                    selection.local_publish(event, args, &message.attachments);
                }
                // A broadcast that asks for acks: no client here will ack.
                if !request_id.is_null() {
                    let data = json!({ "requestId": request_id, "clientCount": 0 });
                    answer(kind::BROADCAST_CLIENT_COUNT, data);
                }
            }
            kind::FETCH_SOCKETS => {
                let data = fetched_sockets(&selection, request_id);
                answer(kind::FETCH_SOCKETS_RESPONSE, data);
            }
            kind::SOCKETS_JOIN | kind::SOCKETS_LEAVE => {
                let rooms = stream_message::string_list(&message.data["rooms"]);
                selection.local_change_rooms(&rooms, message.kind == kind::SOCKETS_JOIN);
            }
            kind::DISCONNECT_SOCKETS => {
                let close = message.data["close"].as_bool().unwrap_or(false);
                selection.local_disconnect(close);
            }
            _ => {}
        }
    }
}

impl ClusterNode {
    /// Says `kind` (a heartbeat) on a namespace's channel.
    fn beat_for_peers(&self, namespace: &str, kind: u64) {
        let message = json!({ "uid": self.uid, "nsp": namespace, "type": kind });
        let channel = format!("{}#{namespace}", self.settings.key);
        self.driver
            .publish(channel, message.to_string().into_bytes(), None);
    }

    /// Answers a Node.js server on a namespace's channel: JSON, or MessagePack when large.
    fn answer_postgres_peer(&self, namespace: &str, kind: u64, data: Value) {
        let message = json!({ "uid": self.uid, "nsp": namespace, "type": kind, "data": data });
        let text = message.to_string();
        let payload = if text.len() < JSON_ANSWER_MAX {
            text.into_bytes()
        } else {
            stream_message::encode_response(&self.uid, namespace, kind, &message["data"])
        };
        let channel = format!("{}#{namespace}", self.settings.key);
        self.driver.publish(channel, payload, None);
    }
}

/// Tells Node.js servers on the PostgreSQL adapter that this node is alive, on every namespace,
/// until shutdown (the first time as their "initial" heartbeat, which they answer).
pub(super) async fn heartbeat_loop(node: Arc<ClusterNode>) {
    let mut beat = kind::INITIAL_HEARTBEAT;
    let mut ticker = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let Some(hub) = node.hub.upgrade() else {
            return;
        };
        if node.driver.is_up() {
            for namespace in hub.namespaces() {
                node.beat_for_peers(namespace.name(), beat);
            }
            beat = kind::HEARTBEAT;
        }
    }
}
