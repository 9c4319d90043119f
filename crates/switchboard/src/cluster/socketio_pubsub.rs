//! The pub/sub dialect of the cluster core (a driver with no log): broadcasts and room
//! operations as the Socket.IO Redis adapter sends them (shapes in `message.rs`), so Node.js
//! servers on `@socket.io/redis-adapter` and `@socket.io/redis-emitter` publishers share rooms
//! with Switchboard nodes. Broadcasts go on `<key>#<nsp>#` (or `<key>#<nsp>#<room>#`); requests
//! on `<key>-request#<nsp>#`, answered on `<key>-response#<nsp>#`. What is published while a node
//! is away is gone, as with any pub/sub adapter.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};

use super::driver::Topic;
use super::message::{self, AdapterRequest, Reach, RequestKind, request_type};
use super::node::ClusterNode;
use crate::hub::adapter::TakenSender;
use crate::hub::{Hub, Namespace, Room, Target};

impl ClusterNode {
    /// Every broadcast channel (the pattern `<key>#*`).
    pub(super) fn broadcast_topic(&self) -> Topic {
        Topic::Prefix(format!("{}#", self.settings.key))
    }

    /// The request channel of a namespace.
    pub(super) fn request_topic(&self, namespace: &str) -> Topic {
        Topic::Channel(message::request_channel(&self.settings.key, namespace))
    }

    pub(super) fn on_pubsub_message(&self, hub: &Hub, channel: &str, payload: &[u8]) {
        let key = self.settings.key.as_str();
        let under_key = channel
            .strip_prefix(key)
            .is_some_and(|rest| rest.starts_with('#'));
        if under_key {
            self.on_broadcast(hub, payload);
        } else if let Some(namespace) = channel
            .strip_prefix(key)
            .and_then(|rest| rest.strip_prefix("-request#"))
            .and_then(|rest| rest.strip_suffix('#'))
            .and_then(|name| hub.of(name))
        {
            match message::decode_adapter_request(payload) {
                Ok(request) if request.uid != self.uid => self.on_request(&namespace, request),
                Ok(_) => {}
                Err(error) => tracing::debug!(%error, "cluster: ignoring a malformed request"),
            }
        }
    }

    fn on_broadcast(&self, hub: &Hub, payload: &[u8]) {
        let broadcast = match message::decode_broadcast(payload) {
            Ok(broadcast) => broadcast,
            Err(error) => {
                tracing::debug!(%error, "cluster: ignoring a message that is not a broadcast");
                return;
            }
        };
        if broadcast.uid == self.uid {
            return;
        }
        let Some(namespace) = hub.of(&broadcast.namespace) else {
            return;
        };
        namespace
            .select(&broadcast.rooms, &broadcast.except)
            .volatile(broadcast.volatile)
            .local_publish(&broadcast.event, &broadcast.args, &broadcast.attachments);
    }

    /// The Socket.IO adapter's requests (from other servers or the emitter).
    fn on_request(&self, namespace: &Arc<Namespace>, request: AdapterRequest) {
        let by_sid = request
            .sid
            .as_deref()
            .and_then(|sid| namespace.socket(sid).map(|_| sid.to_owned()));
        // By socket id, or by the rooms in `opts` (no rooms there means everyone).
        let chosen = match (&by_sid, &request.selection) {
            (Some(sid), _) => Some(namespace.select(std::slice::from_ref(sid), &[])),
            (None, Some((rooms, except))) => Some(namespace.select(rooms, except)),
            (None, None) => None,
        };
        let respond = |mut answer: Value| {
            answer["requestId"] = request.request_id.clone();
            self.driver.publish(
                message::response_channel(&self.settings.key, namespace.name()),
                answer.to_string().into_bytes(),
                None,
            );
        };
        match &request.kind {
            RequestKind::Join(rooms) | RequestKind::Leave(rooms) => {
                let Some(chosen) = chosen else { return };
                chosen.local_change_rooms(rooms, matches!(request.kind, RequestKind::Join(_)));
                if by_sid.is_some() {
                    respond(json!({}));
                }
            }
            RequestKind::Disconnect { close } => {
                let Some(chosen) = chosen else { return };
                chosen.local_disconnect(*close);
                if by_sid.is_some() {
                    respond(json!({}));
                }
            }
            RequestKind::Broadcast(broadcast) => {
                // Delivered here without asking for acks (a socket here cannot ack a request
                // made on another server); the answer says no client of this node will ack, so
                // the asking server does not wait for any.
                namespace
                    .select(&broadcast.rooms, &broadcast.except)
                    .local_publish(&broadcast.event, &broadcast.args, &broadcast.attachments);
                respond(json!({ "type": request_type::BROADCAST_CLIENT_COUNT, "clientCount": 0 }));
            }
            RequestKind::Sockets { rooms } => {
                let ids: Vec<String> = namespace
                    .select(rooms, &[])
                    .sockets()
                    .iter()
                    .map(|s| s.id().to_string())
                    .collect();
                respond(json!({ "sockets": ids }));
            }
            RequestKind::AllRooms => {
                let rooms: Vec<String> = namespace
                    .rooms()
                    .into_iter()
                    .map(|(room, _)| room.to_string())
                    .collect();
                respond(json!({ "rooms": rooms }));
            }
            RequestKind::Fetch => {
                let (rooms, except) = request.selection.clone().unwrap_or_default();
                let sockets: Vec<Value> = namespace
                    .select(&rooms, &except)
                    .sockets()
                    .iter()
                    .map(|socket| {
                        json!({
                            "id": socket.id().as_ref(),
                            "handshake": {
                                "auth": &*socket.handshake().auth,
                                "issued": socket.handshake().issued_ms,
                                "headers": {},
                                "query": {},
                            },
                            "rooms": socket.rooms().iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                            "data": socket.data(),
                        })
                    })
                    .collect();
                respond(json!({ "sockets": sockets }));
            }
            RequestKind::Other => {}
        }
    }

    pub(super) fn publish_broadcast(
        &self,
        namespace: &str,
        target: &Target,
        event: &str,
        args: &[Value],
        attachments: &[Bytes],
        taken: Option<TakenSender>,
    ) {
        let rooms = strings(&target.rooms);
        let except = excluded(target);
        let payload = message::encode_broadcast(
            &self.uid,
            namespace,
            event,
            args,
            attachments,
            Reach {
                rooms: &rooms,
                except: &except,
                volatile: target.volatile,
            },
        );
        self.driver.publish(
            message::broadcast_channel(&self.settings.key, namespace, &rooms),
            payload,
            taken,
        );
    }

    pub(super) fn request_membership(
        &self,
        namespace: &str,
        selection: &Target,
        rooms: &[String],
        join: bool,
        taken: Option<TakenSender>,
    ) {
        let kind = if join {
            request_type::REMOTE_JOIN
        } else {
            request_type::REMOTE_LEAVE
        };
        let rooms = ("rooms", json!(rooms));
        self.send_selection_request(namespace, kind, selection, rooms, taken);
    }

    pub(super) fn request_disconnect(
        &self,
        namespace: &str,
        selection: &Target,
        close: bool,
        taken: Option<TakenSender>,
    ) {
        let close = ("close", json!(close));
        let kind = request_type::REMOTE_DISCONNECT;
        self.send_selection_request(namespace, kind, selection, close, taken);
    }

    /// Asks the other servers to act on the sockets `selection` picks (a Socket.IO adapter
    /// request, with one field of its own).
    fn send_selection_request(
        &self,
        namespace: &str,
        kind: u64,
        selection: &Target,
        (field, value): (&str, Value),
        taken: Option<TakenSender>,
    ) {
        let payload = message::selection_request(
            &self.uid,
            kind,
            &strings(&selection.rooms),
            &excluded(selection),
            serde_json::Map::from_iter([(field.to_owned(), value)]),
        );
        self.driver.publish(
            message::request_channel(&self.settings.key, namespace),
            payload,
            taken,
        );
    }
}

/// Rooms as the wire writes them.
pub(super) fn strings(rooms: &[Room]) -> Vec<String> {
    rooms.iter().map(|r| r.to_string()).collect()
}

/// What a selection leaves out: its excluded rooms and sockets.
pub(super) fn excluded(selection: &Target) -> Vec<String> {
    selection
        .except_rooms
        .iter()
        .chain(&selection.except_sockets)
        .map(|r| r.to_string())
        .collect()
}
