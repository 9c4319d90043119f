//! What the cluster core does with what it hears, in the order the driver delivers it: the link
//! coming up (its users, its address and a presence sync said again), the node protocol's
//! messages (operations on a user's sockets, presence, goodbyes, questions answered, blocks
//! and revocations, sessions taken over), answers to its own questions, and the dialect's
//! broadcasts and room operations.

use super::*;

impl ClusterNode {
    /// Applies what the driver delivers, in order, until shutdown.
    pub(super) async fn receive_loop(
        self: Arc<Self>,
        mut received: mpsc::UnboundedReceiver<Incoming>,
    ) {
        loop {
            let next = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                next = received.recv() => next,
            };
            match next {
                None => return,
                Some(Incoming::Up) => {
                    self.on_up();
                    tokio::spawn(self.clone().resync_access());
                    if self.dialect == Dialect::Log {
                        tokio::spawn(self.clone().resync_sessions());
                    }
                }
                Some(Incoming::Message { channel, payload }) => {
                    self.received.fetch_add(1, Ordering::Relaxed);
                    self.on_message(&channel, &payload)
                }
            }
        }
    }

    /// The link is up (again): who is online where, ours to them and theirs to us.
    pub(super) fn on_up(&self) {
        *self.heard_self.lock() = Instant::now();
        // While the link was down this node heard no one: their silence does not count.
        self.nodes.heard_all_now();
        tracing::info!(node = %self.uid, "cluster: linked to the other nodes");
        self.tell_all_users();
        self.say_where();
        self.say(
            &NodeMessage::PresenceSync {
                uid: self.uid.clone(),
            },
            None,
        );
    }

    pub(super) fn on_message(&self, channel: &str, payload: &[u8]) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        if channel == self.node_channel {
            self.on_node_message(&hub, payload);
        } else if channel == self.reply_channel {
            match NodeReply::decode(payload) {
                Ok(reply) => self.requests.answer(&reply.request_id, reply.answer),
                Err(error) => tracing::debug!(%error, "cluster: ignoring a malformed reply"),
            }
        } else {
            match self.dialect {
                Dialect::PubSub => self.on_pubsub_message(&hub, channel, payload),
                Dialect::Log => self.on_log_channel_message(&hub, channel, payload),
                Dialect::Sharded => self.on_sharded_message(&hub, payload),
            }
        }
    }

    pub(super) fn on_node_message(&self, hub: &Hub, payload: &[u8]) {
        let message = match NodeMessage::decode(payload) {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(%error, "cluster: ignoring a malformed node message");
                return;
            }
        };
        let from = message.sender();
        if from == self.uid {
            let mut heard_self = self.heard_self.lock();
            // Its own heartbeat back after a gap: the engine held what everyone said (frozen,
            // or slow), and what the others said meanwhile may still be on its way.
            if heard_self.elapsed() > self.settings.node_timeout / 2 {
                self.nodes.heard_all_now();
            }
            *heard_self = Instant::now();
            return;
        }
        if !matches!(message, NodeMessage::Bye { .. }) {
            self.nodes.heard(from);
        }
        match &message {
            NodeMessage::User { nsp, user, op, .. } => self.on_user_op(hub, nsp, user, op),
            NodeMessage::Presence { user, here, .. } => {
                hub.presence().user_elsewhere(from, user, here)
            }
            NodeMessage::PresenceAll { users, address, .. } => {
                if let Some(address) = address {
                    self.nodes.address_heard(from, address);
                }
                hub.presence().users_elsewhere(from, users.clone())
            }
            NodeMessage::Bye { .. } => {
                self.nodes.left(from);
                hub.presence().forget_node(from);
            }
            NodeMessage::PresenceSync { .. } => self.tell_all_users(),
            NodeMessage::Access { change, .. } => hub.change_access_here(change),
            NodeMessage::SessionTaken { nsp, sid, pid, .. } => {
                if let Some(namespace) = hub.of(nsp) {
                    namespace.drop_taken_over(sid, pid.as_deref());
                }
            }
            NodeMessage::Query {
                request_id,
                question,
                ..
            } => {
                // Always an answer (null for what this node cannot say): the asking node counts
                // on one from every node.
                let stats = || self.stats.get().map_or(Value::Null, |stats| stats());
                let answer = crate::hub::reads::answer(hub, question, stats);
                let reply = NodeReply {
                    request_id: request_id.clone(),
                    answer,
                };
                self.driver.publish(
                    node_message::reply_channel(&self.settings.key, from),
                    reply.encode(),
                    None,
                );
            }
        }
    }

    /// Another node asked for an operation on a user's sockets here.
    pub(super) fn on_user_op(&self, hub: &Hub, namespace: &str, user: &str, op: &UserOp) {
        let Some(namespace) = hub.of(namespace) else {
            return;
        };
        let of_user = namespace.presence().sockets_of(user, namespace.name());
        match op {
            UserOp::Emit {
                rooms,
                except,
                event,
                args,
            } => {
                let mut targets = rooms.clone();
                targets.extend(of_user.iter().map(|id| id.to_string()));
                if !targets.is_empty() {
                    namespace
                        .select(&targets, except)
                        .local_publish(event, args, &[]);
                }
            }
            UserOp::Disconnect { close } if !of_user.is_empty() => {
                let ids: Vec<String> = of_user.iter().map(|id| id.to_string()).collect();
                namespace.select(&ids, &[]).local_disconnect(*close);
            }
            UserOp::Disconnect { .. } => {}
        }
    }
}
