//! The cluster core: this node's side of the cluster, over any [`Driver`]. It implements the
//! hub's [`Adapter`], speaks Switchboard's node protocol (`node_message.rs`: operations on a
//! user's sockets, presence, questions), matches answers to questions (`requests.rs`), keeps
//! the other nodes' heartbeats, expiry and addresses (`nodes.rs`), and sends broadcasts and room
//! operations in one of two dialects, chosen by what the driver can do:
//! - no log: the Socket.IO Redis adapter's pub/sub messages (`socketio_pubsub.rs`);
//! - a log: the Socket.IO Redis Streams adapter's entries, read back by every node in the log's
//!   order, and sessions shared for recovery on any node (`shared_log.rs`).
//!
//! One task receives what the driver delivers and applies it in order (`node/inbound.rs`); one beats the
//! heart (every third of the node timeout, at most every 10 s: who this node's users are, where
//! it serves; nodes silent past the timeout are taken for dead). With a log, one task reads it
//! and one refreshes the saved sessions. Every task ends on the shutdown signal.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::driver::{Driver, Incoming, IncomingSender, Topic};
use super::node_message::{self, NodeMessage, NodeReply};
use super::nodes::{NodeRegistry, address_key};
use super::requests::Requests;
use super::shared_log::LogReading;
use crate::config::SubscriptionMode;
use crate::hub::access::AccessChange;
use crate::hub::adapter::{Adapter, BoxFuture, ClusterCounters, SharedLog, TakenSender, UserOp};
use crate::hub::reads::Question;
use crate::hub::{Hub, Target};

mod inbound;

/// This node's figures for a stats question (they come from every layer, not only the hub:
/// installed by the app).
pub type StatsSource = Arc<dyn Fn() -> Value + Send + Sync>;

/// What the core needs of `[cluster]`.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// The channel prefix (the Socket.IO adapter's `key`, "socket.io" by default).
    pub key: String,
    /// How long a question waits for the other nodes' answers, and an operation for the engine
    /// to take it.
    pub request_timeout: Duration,
    /// A node silent this long is taken for dead (its users go offline here).
    pub node_timeout: Duration,
    /// With a log: sessions are kept under `<session_prefix><pid>`.
    pub session_prefix: String,
    /// With a log: the Node.js adapter that shares it, whose messages this node understands.
    pub log_peers: LogPeers,
    /// With no log: speak the sharded Redis adapter's dialect, giving rooms channels of their
    /// own as this mode says (the driver's channels are sharded: no patterns).
    pub sharding: Option<SubscriptionMode>,
}

/// Which Node.js adapter shares the log with the nodes (how its servers speak on pub/sub).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogPeers {
    /// `@socket.io/redis-streams-adapter`: MessagePack on `<key>#<nsp>#`, answers on
    /// `<key>#<nsp>#<uid>#`.
    #[default]
    RedisStreams,
    /// `@socket.io/postgres-adapter`: every cluster message on `<key>#<nsp>` (not in the log).
    Postgres,
}

/// How broadcasts and room operations travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// The Socket.IO Redis adapter's pub/sub messages.
    PubSub,
    /// The Socket.IO Redis Streams adapter's log entries.
    Log,
    /// The sharded Redis adapter's cluster messages, on namespaces' and rooms' channels.
    Sharded,
}

pub struct ClusterNode {
    pub(super) uid: String,
    pub(super) settings: NodeSettings,
    pub(super) driver: Arc<dyn Driver>,
    pub(super) hub: Weak<Hub>,
    dialect: Dialect,
    node_channel: String,
    reply_channel: String,
    stats: OnceLock<StatsSource>,
    requests: Requests,
    pub(super) nodes: NodeRegistry,
    /// When this node last heard its own heartbeat back.
    pub(super) heard_self: Mutex<Instant>,
    /// Shutting down: said goodbye, says nothing more of its users.
    pub(super) leaving: AtomicBool,
    /// Where this node serves, as the others reach it.
    pub(super) advertised: OnceLock<String>,
    pub(super) nodes_expired: AtomicU64,
    /// Messages the driver delivered.
    received: AtomicU64,
    /// With a log: how far this node has read it, and the sessions taken from the store.
    pub(super) log: LogReading,
    pub(super) shutdown: CancellationToken,
}

impl ClusterNode {
    /// Starts this node's side of the cluster for `hub` over the driver `connect` makes (given
    /// where to send what it receives). Its tasks run on the current Tokio runtime until
    /// `shutdown` is cancelled.
    pub fn start<E>(
        settings: NodeSettings,
        hub: &Arc<Hub>,
        shutdown: CancellationToken,
        connect: impl FnOnce(IncomingSender) -> Result<Arc<dyn Driver>, E>,
    ) -> Result<Arc<Self>, E> {
        let (incoming, received) = mpsc::unbounded_channel();
        let driver = connect(incoming)?;
        let uid = node_uid();
        let dialect = match (driver.log(), settings.sharding) {
            (Some(_), _) => Dialect::Log,
            (None, Some(_)) => Dialect::Sharded,
            (None, None) => Dialect::PubSub,
        };
        let node = Arc::new(Self {
            node_channel: node_message::node_channel(&settings.key),
            reply_channel: node_message::reply_channel(&settings.key, &uid),
            uid,
            settings,
            driver,
            hub: Arc::downgrade(hub),
            dialect,
            stats: OnceLock::new(),
            requests: Requests::default(),
            nodes: NodeRegistry::default(),
            heard_self: Mutex::new(Instant::now()),
            leaving: AtomicBool::new(false),
            advertised: OnceLock::new(),
            nodes_expired: AtomicU64::new(0),
            received: AtomicU64::new(0),
            log: LogReading::default(),
            shutdown,
        });
        hub.presence().set_node_id(&node.uid);
        let telling = Arc::downgrade(&node);
        hub.presence().on_local_change(Arc::new(move |user, here| {
            if let Some(node) = telling.upgrade()
                && !node.leaving.load(Ordering::Acquire)
            {
                let message = NodeMessage::Presence {
                    uid: node.uid.clone(),
                    user: user.to_owned(),
                    here,
                };
                node.say(&message, None);
            }
        }));
        node.driver
            .subscribe(Topic::Channel(node.node_channel.clone()));
        node.driver
            .subscribe(Topic::Channel(node.reply_channel.clone()));
        match node.dialect {
            Dialect::PubSub => node.driver.subscribe(node.broadcast_topic()),
            Dialect::Sharded => node.follow_rooms(hub),
            Dialect::Log => {}
        }
        for namespace in hub.namespaces() {
            node.namespace_added(namespace.name());
        }
        if node.dialect == Dialect::Log {
            node.start_log_tasks(hub);
            if node.settings.log_peers == LogPeers::Postgres {
                tokio::spawn(super::adapter_peers::heartbeat_loop(node.clone()));
            }
        }
        tokio::spawn(node.clone().receive_loop(received));
        tokio::spawn(super::nodes::heartbeat_loop(node.clone()));
        Ok(node)
    }

    /// Sets where this node's figures come from when another node asks for its stats.
    pub fn stats_from(&self, stats: StatsSource) {
        let _ = self.stats.set(stats);
    }

    /// This node's id in the cluster.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// How many other nodes this node knows to be up.
    pub fn nodes_up(&self) -> usize {
        self.nodes.count()
    }

    /// Says `message` to every node.
    pub(super) fn say(&self, message: &NodeMessage, taken: Option<TakenSender>) {
        self.driver
            .publish(self.node_channel.clone(), message.encode(), taken);
    }

    /// Tells the other nodes who all of this node's users are.
    pub(super) fn tell_all_users(&self) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        if self.leaving.load(Ordering::Acquire) {
            return;
        }
        // Sent while the users are read, so that no change of a user is sent before it.
        hub.presence().with_everyone_here(|users| {
            let message = NodeMessage::PresenceAll {
                uid: self.uid.clone(),
                users,
                address: self.advertised.get().cloned(),
            };
            self.say(&message, None);
        });
    }

    /// Asks every other node `question`; waits for their answers at most the request
    /// timeout (counting them included), then answers with those that came.
    async fn ask(&self, question: Question) -> Vec<Value> {
        let id = self.requests.next_id(&self.uid);
        // Removes the waiting entry however this ends (answered, timed out, or the HTTP
        // request that asked was dropped).
        let _forget = Forget(&self.requests, &id);
        let asking = async {
            // The engine's count when it has one (this node among them while it is linked),
            // else the nodes heard within the node timeout.
            let expected = match self.driver.listeners(self.node_channel.clone()).await {
                Some(listening) => listening.saturating_sub(usize::from(self.driver.is_up())),
                None => self.nodes.count(),
            };
            if expected == 0 {
                return Vec::new();
            }
            let answered = self.requests.wait(&id, expected);
            let message = NodeMessage::Query {
                uid: self.uid.clone(),
                request_id: id.clone(),
                question,
            };
            self.say(&message, None);
            answered.await.unwrap_or_default()
        };
        match tokio::time::timeout(self.settings.request_timeout, asking).await {
            Ok(answers) => answers,
            Err(_) => {
                let (expected, answers) = self.requests.give_up(&id).unwrap_or_default();
                tracing::warn!(
                    expected,
                    answered = answers.len(),
                    "cluster: not every node answered in time"
                );
                answers
            }
        }
    }
}

/// Stops waiting on a question when its asking ends.
struct Forget<'a>(&'a Requests, &'a str);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.give_up(self.1);
    }
}

/// Where a room's last state is kept in the engine: one key per room (a hash of event names,
/// or of "" alone), so one slot on a Redis Cluster.
fn last_state_key(key: &str, namespace: &str, room: &str) -> String {
    format!("{key}-last#{namespace}#{{{room}}}")
}

/// Six random alphanumerics, like the Socket.IO adapter's node ids.
fn node_uid() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..6)
        .map(|_| {
            let n = rng.random_range(0..36u8);
            char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 })
        })
        .collect()
}

impl Adapter for ClusterNode {
    fn broadcast(
        &self,
        namespace: &str,
        target: &Target,
        event: &str,
        args: &[Value],
        attachments: &[Bytes],
        taken: Option<TakenSender>,
    ) {
        match self.dialect {
            Dialect::PubSub => {
                self.publish_broadcast(namespace, target, event, args, attachments, taken)
            }
            Dialect::Log => {
                self.append_broadcast(namespace, target, event, args, attachments, taken)
            }
            Dialect::Sharded => {
                self.sharded_broadcast(namespace, target, event, args, attachments, taken)
            }
        }
    }

    fn membership(
        &self,
        namespace: &str,
        selection: &Target,
        rooms: &[String],
        join: bool,
        taken: Option<TakenSender>,
    ) {
        match self.dialect {
            Dialect::PubSub => self.request_membership(namespace, selection, rooms, join, taken),
            Dialect::Log => self.append_membership(namespace, selection, rooms, join, taken),
            Dialect::Sharded => self.sharded_membership(namespace, selection, rooms, join, taken),
        }
    }

    fn disconnect(
        &self,
        namespace: &str,
        selection: &Target,
        close: bool,
        taken: Option<TakenSender>,
    ) {
        match self.dialect {
            Dialect::PubSub => self.request_disconnect(namespace, selection, close, taken),
            Dialect::Log => self.append_disconnect(namespace, selection, close, taken),
            Dialect::Sharded => self.sharded_disconnect(namespace, selection, close, taken),
        }
    }

    fn for_user(&self, namespace: &str, user: &str, op: UserOp, taken: Option<TakenSender>) {
        let message = NodeMessage::User {
            uid: self.uid.clone(),
            nsp: namespace.to_owned(),
            user: user.to_owned(),
            op,
        };
        self.say(&message, taken);
    }

    fn access_changed(&self, change: &AccessChange, taken: Option<TakenSender>) {
        self.share_access(change, taken);
    }

    fn keep_last(&self, namespace: &str, room: &str, field: &str, event: Vec<u8>, ttl: Duration) {
        let key = last_state_key(&self.settings.key, namespace, room);
        self.driver.map_set(key, field.to_owned(), event, ttl);
    }

    fn last_of(&self, namespace: &str, room: &str) -> BoxFuture<'_, Vec<Vec<u8>>> {
        let key = last_state_key(&self.settings.key, namespace, room);
        Box::pin(async move {
            match self.driver.map_all(key).await {
                Ok(kept) => kept.into_iter().map(|(_, value)| value).collect(),
                Err(error) => {
                    tracing::warn!(%error, "cluster: could not read a room's last state");
                    Vec::new()
                }
            }
        })
    }

    fn hears_every_room(&self) -> bool {
        !matches!(
            (self.dialect, self.settings.sharding),
            (
                Dialect::Sharded,
                Some(SubscriptionMode::Dynamic | SubscriptionMode::DynamicPrivate)
            )
        )
    }

    fn session_taken(&self, namespace: &str, socket_id: &str, pid: &str) {
        let message = NodeMessage::SessionTaken {
            uid: self.uid.clone(),
            nsp: namespace.to_owned(),
            sid: socket_id.to_owned(),
            pid: Some(pid.to_owned()),
        };
        self.say(&message, None);
    }

    fn take_timeout(&self) -> Duration {
        self.settings.request_timeout
    }

    fn namespace_added(&self, namespace: &str) {
        let topic = match self.dialect {
            Dialect::PubSub => self.request_topic(namespace),
            Dialect::Log => {
                if let Some(replies) = self.log_reply_topic(namespace) {
                    self.driver.subscribe(replies);
                }
                self.log_request_topic(namespace)
            }
            Dialect::Sharded => self.sharded_namespace_topic(namespace),
        };
        self.driver.subscribe(topic);
    }

    fn query(&self, question: Question) -> BoxFuture<'_, Vec<Value>> {
        Box::pin(self.ask(question))
    }

    /// Linked, and with a log, reading it (what is appended before this node reads the log is
    /// history to it: it is not ready before).
    fn is_connected(&self) -> bool {
        self.driver.is_up() && (self.dialect != Dialect::Log || self.log.started())
    }

    fn counters(&self) -> ClusterCounters {
        ClusterCounters {
            dropped: self.driver.dropped(),
            nodes_expired: self.nodes_expired.load(Ordering::Relaxed),
            nodes_up: self.nodes.count() as u64,
            received: self.received.load(Ordering::Relaxed),
            shared_sessions_taken: self.log.sessions_taken(),
        }
    }

    fn shared_log(&self) -> Option<&dyn SharedLog> {
        (self.dialect == Dialect::Log).then_some(self as &dyn SharedLog)
    }

    fn leave(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.leaving.store(true, Ordering::Release);
            self.say(
                &NodeMessage::Bye {
                    uid: self.uid.clone(),
                },
                None,
            );
            self.driver
                .delete(address_key(&self.settings.key, &self.uid));
            let _ = tokio::time::timeout(Duration::from_secs(2), self.driver.sent()).await;
        })
    }
}
