//! The sharded dialect of the cluster core (`[cluster] adapter = "sharded"`): broadcasts and
//! room operations as `createShardedAdapter` of `@socket.io/redis-adapter` 8.3 sends them over
//! Redis 7 sharded pub/sub, `socket.io-adapter`'s cluster messages `{uid, nsp, type, data}`
//! (JSON, MessagePack when they hold binary):
//! - every node listens on its namespaces' channels `<key>#<nsp>#`; operations on sockets
//!   selected by rooms and broadcasts to several rooms go there;
//! - with `subscription_mode = "dynamic"` a broadcast to one room (not a socket's own) goes on
//!   the room's channel `<key>#<nsp>#<room>#`, which a node listens to only while the room has
//!   members on it, so a node's cluster traffic follows its own clients' rooms;
//!   "dynamic-private" does the same for sockets' own rooms, "static" gives no room a channel;
//! - answers to a Node.js server's questions go to `<key>#<nsp>#<its uid>#`.
//!
//! Messages from Node.js servers are applied by `adapter_peers.rs`; Switchboard's own node
//! protocol (users, presence, questions) travels on its own channels, sharded as well.

use std::sync::{Arc, Weak};

use bytes::Bytes;

use super::adapter_peers::Peers;
use super::driver::Topic;
use super::message::Reach;
use super::node::ClusterNode;
use super::socketio_pubsub::{excluded, strings};
use super::stream_message::{self, kind};
use crate::config::SubscriptionMode;
use crate::hub::adapter::TakenSender;
use crate::hub::{Hub, HubObserver, Socket, Target};

/// How long a socket id is: the sharded adapter takes a room named with this many characters
/// for a socket's own room (it gives it no channel of its own in "dynamic" mode).
const SOCKET_ID_LENGTH: usize = 20;

impl ClusterNode {
    fn mode(&self) -> SubscriptionMode {
        self.settings.sharding.unwrap_or_default()
    }

    /// A namespace's channel.
    pub(super) fn sharded_namespace_topic(&self, namespace: &str) -> Topic {
        Topic::Channel(stream_message::namespace_channel(
            &self.settings.key,
            namespace,
            None,
        ))
    }

    /// A room's channel (`<key>#<nsp>#<room>#`).
    fn room_channel(&self, namespace: &str, room: &str) -> String {
        format!("{}#{namespace}#{room}#", self.settings.key)
    }

    /// Whether a broadcast to `room` alone goes on the room's channel.
    fn room_has_channel(&self, room: &str) -> bool {
        match self.mode() {
            SubscriptionMode::Static => false,
            SubscriptionMode::Dynamic => room.chars().count() != SOCKET_ID_LENGTH,
            SubscriptionMode::DynamicPrivate => true,
        }
    }

    pub(super) fn on_sharded_message(&self, hub: &Hub, payload: &[u8]) {
        self.on_peer_message(hub, "", payload, Peers::ShardedRedis);
    }

    pub(super) fn sharded_broadcast(
        &self,
        namespace: &str,
        target: &Target,
        event: &str,
        args: &[serde_json::Value],
        attachments: &[Bytes],
        taken: Option<TakenSender>,
    ) {
        let rooms = strings(&target.rooms);
        let except = excluded(target);
        let channel = match rooms.as_slice() {
            [room] if self.room_has_channel(room) => self.room_channel(namespace, room),
            _ => stream_message::namespace_channel(&self.settings.key, namespace, None),
        };
        let reach = Reach {
            rooms: &rooms,
            except: &except,
            volatile: target.volatile,
        };
        let data = stream_message::broadcast_data(namespace, event, args, reach);
        let payload = stream_message::cluster_message(
            &self.uid,
            namespace,
            kind::BROADCAST,
            data,
            attachments,
        );
        self.driver.publish(channel, payload, taken);
    }

    pub(super) fn sharded_membership(
        &self,
        namespace: &str,
        selection: &Target,
        rooms: &[String],
        join: bool,
        taken: Option<TakenSender>,
    ) {
        let payload = stream_message::membership_message(
            &self.uid,
            namespace,
            &strings(&selection.rooms),
            &excluded(selection),
            rooms,
            join,
        );
        let channel = stream_message::namespace_channel(&self.settings.key, namespace, None);
        self.driver.publish(channel, payload, taken);
    }

    pub(super) fn sharded_disconnect(
        &self,
        namespace: &str,
        selection: &Target,
        close: bool,
        taken: Option<TakenSender>,
    ) {
        let data = stream_message::disconnect_data(
            &strings(&selection.rooms),
            &excluded(selection),
            close,
        );
        let payload = stream_message::cluster_message(
            &self.uid,
            namespace,
            kind::DISCONNECT_SOCKETS,
            data,
            &[],
        );
        let channel = stream_message::namespace_channel(&self.settings.key, namespace, None);
        self.driver.publish(channel, payload, taken);
    }

    /// Listens to rooms' channels while they have members here ("dynamic" modes).
    pub(super) fn follow_rooms(self: &Arc<Self>, hub: &Hub) {
        if self.mode() == SubscriptionMode::Static {
            return;
        }
        hub.observe(Arc::new(RoomChannels {
            node: Arc::downgrade(self),
        }));
    }

    fn room_channel_topic(&self, namespace: &str, room: &str) -> Option<Topic> {
        (self.mode() != SubscriptionMode::Static)
            .then(|| Topic::Channel(self.room_channel(namespace, room)))
    }
}

/// Subscribes a room's channel when the room gets its first member here, and unsubscribes it
/// when its last leaves (and, in "dynamic-private" mode, a socket's own room for its life).
struct RoomChannels {
    node: Weak<ClusterNode>,
}

impl RoomChannels {
    fn change(&self, namespace: &str, room: &str, on: bool) {
        let Some(node) = self.node.upgrade() else {
            return;
        };
        if let Some(topic) = node.room_channel_topic(namespace, room) {
            match on {
                true => node.driver.subscribe(topic),
                false => node.driver.unsubscribe(topic),
            }
        }
    }

    fn private(&self) -> bool {
        self.node
            .upgrade()
            .is_some_and(|node| node.mode() == SubscriptionMode::DynamicPrivate)
    }
}

impl HubObserver for RoomChannels {
    fn room_created(&self, namespace: &str, room: &str) {
        self.change(namespace, room, true);
    }

    fn room_deleted(&self, namespace: &str, room: &str) {
        self.change(namespace, room, false);
    }

    fn socket_connected(&self, socket: &Arc<Socket>) {
        if self.private() {
            self.change(socket.namespace().name(), socket.id(), true);
        }
    }

    fn socket_disconnected(&self, socket: &Arc<Socket>, _reason: crate::hub::DisconnectReason) {
        if self.private() {
            self.change(socket.namespace().name(), socket.id(), false);
        }
    }
}
