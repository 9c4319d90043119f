//! What Node.js servers on `@socket.io/postgres-adapter` (and `@socket.io/postgres-emitter`
//! publishers) say on `<prefix>#<nsp>`, applied here: broadcasts, joins, leaves and disconnects
//! of sockets selected by rooms, as `socket.io-adapter`'s cluster messages (JSON, or MessagePack
//! through the attachments table). They are not in the log, so they carry no offset. What a
//! Switchboard node mirrors there from its log (marked with its `offset`) is skipped: the log
//! brings it, in order. Fetches of sockets and server-side emits are not answered.

use super::node::ClusterNode;
use super::stream_message::{self, kind};
use crate::hub::Hub;

impl ClusterNode {
    /// A message on `<prefix>#<namespace>` (the namespace taken from the channel when the
    /// message does not say it: `@socket.io/postgres-emitter` 0.1 leaves `nsp` out).
    pub(super) fn on_postgres_peer_message(&self, hub: &Hub, namespace: &str, payload: &[u8]) {
        let message = match stream_message::decode_cluster_message(payload) {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(%error, "cluster: ignoring a malformed PostgreSQL adapter message");
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
        let selection = namespace.select(
            &stream_message::string_list(&opts["rooms"]),
            &stream_message::string_list(&opts["except"]),
        );
        match message.kind {
            kind::BROADCAST => {
                let data = &message.data["packet"]["data"];
                let Some((event, args)) = data.as_array().and_then(|d| d.split_first()) else {
                    return;
                };
                if let Some(event) = event.as_str() {
                    selection.local_publish(event, args, &message.attachments);
                }
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
