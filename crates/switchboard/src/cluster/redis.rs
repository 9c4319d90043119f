//! The Redis adapter: nodes share broadcasts, room operations and questions through Redis
//! pub/sub, in the Socket.IO Redis adapter's shapes (`message.rs`).
//!
//! With `adapter = "streams"` (see `streams.rs`) broadcasts and room operations go to one Redis
//! stream instead, read back by every node in the stream's order, and sessions are kept in
//! Redis; Switchboard's own channels (user operations, questions, presence) stay on pub/sub.
//!
//! Two tasks own the two connections. The publisher sends what this node says, in the order it
//! said it (several messages in one pipeline when they queue up); the subscriber receives the
//! broadcast channels (one pattern), the request channel of each namespace and Switchboard's own
//! channel, and applies each message to this node's sockets with the hub's local operations, in
//! the order Redis delivered them. Both reconnect by themselves; what is published while Redis is
//! unreachable is lost, as with any pub/sub adapter (clients that reconnect to a node recover
//! from its history).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::message::{self, request_type};
use super::stream_message;

mod node_address;
mod streams;
use crate::hub::adapter::{Adapter, BoxFuture, NotTaken, TakenSender, UserOp};
use crate::hub::{Hub, Namespace, Target};
pub use streams::StreamSettings;

/// What messages wait for the publisher at most; past it a message is dropped (and logged).
const OUTBOX_CAPACITY: usize = 65_536;
/// Messages sent in one pipeline at most.
const PIPELINE_MAX: usize = 256;
/// Every node says who all its users are this often at most (what a lost message got wrong
/// heals), and every third of `cluster.node_timeout`: a node not heard from for that long is
/// taken for gone, with its users.
const PRESENCE_EVERY: Duration = Duration::from_secs(10);
/// A node hears its own periodic snapshot back through Redis; not hearing it for this long
/// means the subscription is dead though its TCP connection looks alive (it reconnects).
const SELF_SILENCE: Duration = Duration::from_secs(25);
/// Connecting to Redis, and each command, gives up after this long.
const REDIS_TIMEOUT: Duration = Duration::from_secs(3);

/// The offset of a stream entry from XADD's reply (its id); none for other replies.
fn stream_entry_offset(reply: &redis::Value) -> Option<u64> {
    match reply {
        redis::Value::BulkString(id) => std::str::from_utf8(id)
            .ok()
            .filter(|id| id.contains('-'))
            .and_then(crate::hub::parse_offset),
        redis::Value::SimpleString(id) if id.contains('-') => crate::hub::parse_offset(id),
        _ => None,
    }
}

/// Answers a cluster question with what this node knows (installed by the app).
pub type Answerer = Arc<dyn Fn(&Value) -> Value + Send + Sync>;

/// The `[cluster]` settings the adapter needs.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    /// The channel prefix (the Socket.IO adapter's `key`, "socket.io" by default).
    pub key: String,
    /// How long a question waits for the other nodes' answers.
    pub request_timeout: Duration,
    /// A node silent this long is taken for dead (its users go offline here).
    pub node_timeout: Duration,
    /// Broadcasts through a stream (`adapter = "streams"`) rather than pub/sub.
    pub streams: Option<StreamSettings>,
}

#[derive(Debug, thiserror::Error)]
pub enum RedisAdapterError {
    #[error("invalid Redis URL: {0}")]
    Url(String),
}

/// What the publisher task is given.
enum Outgoing {
    /// A command (a PUBLISH, an XADD, a session write), sent in order with the others; its
    /// sender, when given, is told once Redis has answered it (with the entry id of an XADD).
    Command(redis::Cmd, Option<TakenSender>),
    /// Told once everything given before it has been sent (or dropped).
    Sent(oneshot::Sender<()>),
}

struct Pending {
    expected: usize,
    answers: Vec<Value>,
    done: Option<oneshot::Sender<Vec<Value>>>,
}

pub struct RedisAdapter {
    uid: String,
    settings: RedisSettings,
    /// Switchboard's own channel (user operations, questions, presence).
    own_channel: String,
    /// Where other nodes answer this node's questions.
    reply_channel: String,
    /// What the request channels' names start with (`<key>-request#`).
    request_prefix: String,
    client: redis::Client,
    hub: Weak<Hub>,
    outbox: mpsc::Sender<Outgoing>,
    subscriptions: mpsc::UnboundedSender<String>,
    answerer: OnceLock<Answerer>,
    pending: Mutex<HashMap<String, Pending>>,
    next_request: AtomicU64,
    connected: AtomicBool,
    connection: Mutex<Option<MultiplexedConnection>>,
    dropped: AtomicU64,
    /// Nodes forgotten for their silence (killed or cut off without saying goodbye).
    nodes_expired: AtomicU64,
    /// Sessions taken from Redis (streams adapter).
    shared_sessions_taken: AtomicU64,
    /// Streams adapter: how far this node has read the stream (0 while it has not started).
    log_start: AtomicU64,
    log_read: AtomicU64,
    /// When this node last heard one of its own messages back (see [`SELF_SILENCE`]).
    heard_self: Mutex<Instant>,
    /// Shutting down: said goodbye, says nothing more of its users.
    leaving: AtomicBool,
    /// Where this node serves, as the others reach it (see `node_address.rs`).
    advertised: OnceLock<String>,
    /// Other nodes' addresses, as read from Redis, and when.
    node_addresses: Mutex<HashMap<String, (String, Instant)>>,
}

impl RedisAdapter {
    /// Starts the adapter's tasks (on the current Tokio runtime) for `hub`; they connect in the
    /// background and keep reconnecting.
    pub fn start(settings: RedisSettings, hub: &Arc<Hub>) -> Result<Arc<Self>, RedisAdapterError> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|e| RedisAdapterError::Url(e.to_string()))?;
        let (outbox, outgoing) = mpsc::channel(OUTBOX_CAPACITY);
        let (subscriptions, new_channels) = mpsc::unbounded_channel();
        let uid = node_uid();
        let adapter = Arc::new(Self {
            own_channel: format!("{}-switchboard#", settings.key),
            reply_channel: reply_channel(&settings.key, &uid),
            request_prefix: format!("{}-request#", settings.key),
            uid,
            settings,
            client,
            hub: Arc::downgrade(hub),
            outbox,
            subscriptions,
            answerer: OnceLock::new(),
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            connected: AtomicBool::new(false),
            connection: Mutex::new(None),
            dropped: AtomicU64::new(0),
            nodes_expired: AtomicU64::new(0),
            shared_sessions_taken: AtomicU64::new(0),
            log_start: AtomicU64::new(0),
            log_read: AtomicU64::new(0),
            heard_self: Mutex::new(Instant::now()),
            leaving: AtomicBool::new(false),
            advertised: OnceLock::new(),
            node_addresses: Mutex::new(HashMap::new()),
        });
        hub.presence().set_node_id(&adapter.uid);
        let telling = Arc::downgrade(&adapter);
        hub.presence().on_local_change(Arc::new(move |user, here| {
            if let Some(adapter) = telling.upgrade()
                && !adapter.leaving.load(Ordering::Acquire)
            {
                let message =
                    json!({ "kind": "presence", "uid": adapter.uid, "user": user, "here": here });
                adapter.send(
                    adapter.own_channel.clone(),
                    message.to_string().into_bytes(),
                );
            }
        }));
        if adapter.settings.streams.is_some() {
            tokio::spawn(streams::read_loop(Arc::downgrade(&adapter)));
            hub.observe(Arc::new(streams::SessionWriter::new(&adapter)));
            tokio::spawn(streams::refresh_sessions_loop(Arc::downgrade(&adapter)));
        }
        tokio::spawn(adapter.clone().publish_loop(outgoing));
        tokio::spawn(adapter.clone().subscribe_loop(new_channels));
        tokio::spawn(presence_loop(Arc::downgrade(&adapter)));
        Ok(adapter)
    }

    /// Sets how this node answers the other nodes' questions.
    pub fn answer_with(&self, answerer: Answerer) {
        let _ = self.answerer.set(answerer);
    }

    /// This node's id in the cluster.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    fn send(&self, channel: String, payload: Vec<u8>) {
        self.send_taken(channel, payload, None);
    }

    /// Publishes on `channel`; `taken` is told once Redis has answered.
    fn send_taken(&self, channel: String, payload: Vec<u8>, taken: Option<TakenSender>) {
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(channel).arg(payload);
        self.send_command_taken(publish, taken);
    }

    fn send_command(&self, command: redis::Cmd) {
        self.send_command_taken(command, None);
    }

    /// Queues `command` for the publisher. When the queue is full it is dropped (and `taken`
    /// with it: its waiter learns it was not taken).
    fn send_command_taken(&self, command: redis::Cmd, taken: Option<TakenSender>) {
        if self
            .outbox
            .try_send(Outgoing::Command(command, taken))
            .is_err()
        {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::error!(
                    dropped,
                    "cluster: the Redis publisher is too far behind; messages to other nodes dropped"
                );
            }
        }
    }

    async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(connection) = self.connection.lock().clone() {
            return Ok(connection);
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT);
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *self.connection.lock() = Some(connection.clone());
        Ok(connection)
    }

    /// Publishes what this node says, in order; a batch that cannot be sent after a few tries
    /// is dropped so that a Redis outage does not hold everything after it. A command whose
    /// waiter has stopped waiting (and answered its caller that it was not taken) is not sent.
    async fn publish_loop(self: Arc<Self>, mut outgoing: mpsc::Receiver<Outgoing>) {
        let mut batch = Vec::with_capacity(PIPELINE_MAX);
        while outgoing.recv_many(&mut batch, PIPELINE_MAX).await > 0 {
            let mut pipe = redis::pipe();
            let mut waiters = Vec::new();
            let mut waiting = Vec::new();
            for item in batch.drain(..) {
                match item {
                    Outgoing::Command(_, Some(taken)) if taken.is_closed() => {}
                    Outgoing::Command(command, taken) => {
                        pipe.add_command(command);
                        waiters.push(taken);
                    }
                    Outgoing::Sent(done) => waiting.push(done),
                }
            }
            if !waiters.is_empty() {
                match self.send_pipeline(&pipe, waiters.len()).await {
                    Some(replies) => {
                        for (taken, reply) in waiters.into_iter().zip(replies) {
                            if let Some(taken) = taken {
                                let _ = taken.send(Ok(stream_entry_offset(&reply)));
                            }
                        }
                    }
                    None => {
                        for taken in waiters.into_iter().flatten() {
                            let _ = taken.send(Err(NotTaken));
                        }
                    }
                }
            }
            for done in waiting {
                let _ = done.send(());
            }
        }
    }

    /// Sends one pipeline; answers Redis's replies, one per command. A failure to connect is
    /// retried a few times; a failure once the commands went out is not (Redis may have
    /// published some of them, and a second try would deliver those twice): the batch is
    /// dropped and logged, as the Socket.IO adapter does.
    async fn send_pipeline(
        &self,
        pipe: &redis::Pipeline,
        messages: usize,
    ) -> Option<Vec<redis::Value>> {
        let mut tries = 0;
        let error = loop {
            match self.connection().await {
                Ok(mut connection) => {
                    match pipe.query_async::<Vec<redis::Value>>(&mut connection).await {
                        Ok(replies) => return Some(replies),
                        Err(error) => break error,
                    }
                }
                Err(error) => {
                    tries += 1;
                    if tries == 5 {
                        break error;
                    }
                    tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                }
            }
        };
        *self.connection.lock() = None;
        self.dropped.fetch_add(messages as u64, Ordering::Relaxed);
        tracing::error!(%error, messages, "cluster: could not publish to Redis; messages dropped");
        None
    }

    /// Receives from the other nodes and applies it here; reconnects when Redis goes away.
    async fn subscribe_loop(self: Arc<Self>, mut new_channels: mpsc::UnboundedReceiver<String>) {
        let mut logged_down = false;
        loop {
            match self.subscribe_once(&mut new_channels).await {
                Ok(()) => {
                    tracing::warn!("cluster: lost the Redis subscription; reconnecting");
                    logged_down = false;
                }
                Err(error) if !logged_down => {
                    tracing::warn!(%error, url = %self.settings.url, "cluster: cannot reach Redis; retrying");
                    logged_down = true;
                }
                Err(_) => {}
            }
            self.connected.store(false, Ordering::Release);
            // The publisher's connection most likely went with it: the next publish opens a
            // new one rather than failing on the dead one first.
            *self.connection.lock() = None;
            if self.hub.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn subscribe_once(
        &self,
        new_channels: &mut mpsc::UnboundedReceiver<String>,
    ) -> redis::RedisResult<()> {
        let (mut sink, mut stream) = self.client.get_async_pubsub().await?.split();
        if self.settings.streams.is_none() {
            sink.psubscribe(format!("{}#*", self.settings.key)).await?;
        }
        sink.subscribe(&self.own_channel).await?;
        sink.subscribe(&self.reply_channel).await?;
        let namespaces = self
            .hub
            .upgrade()
            .map(|hub| hub.namespaces())
            .unwrap_or_default();
        for namespace in namespaces {
            for channel in self.namespace_channels(namespace.name()) {
                sink.subscribe(channel).await?;
            }
        }
        self.connected.store(true, Ordering::Release);
        *self.heard_self.lock() = Instant::now();
        tracing::info!(node = %self.uid, "cluster: subscribed to Redis");
        // Who is online where: ours to them, theirs to us.
        self.tell_all_users();
        self.say_where();
        let sync = json!({ "kind": "presence_sync", "uid": self.uid });
        self.send(self.own_channel.clone(), sync.to_string().into_bytes());
        let mut check = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = check.tick() => {
                    if self.heard_self.lock().elapsed() > SELF_SILENCE {
                        tracing::warn!("cluster: no message came back through Redis in time; reconnecting");
                        return Ok(());
                    }
                }
                received = stream.next() => match received {
                    Some(received) => self.on_message(received.get_channel_name(), received.get_payload_bytes()),
                    None => return Ok(()),
                },
                channel = new_channels.recv() => {
                    if let Some(channel) = channel {
                        sink.subscribe(channel).await?;
                    }
                }
            }
        }
    }

    fn on_message(&self, channel: &str, payload: &[u8]) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let key = &self.settings.key;
        let under_key = channel
            .strip_prefix(key.as_str())
            .is_some_and(|rest| rest.starts_with('#'));
        if under_key && self.settings.streams.is_some() {
            self.on_cluster_message(&hub, payload);
        } else if under_key {
            self.on_broadcast(&hub, payload);
        } else if channel == self.own_channel {
            self.on_switchboard(&hub, payload);
        } else if channel == self.reply_channel {
            self.on_reply(payload);
        } else if let Some(namespace) = channel
            .strip_prefix(self.request_prefix.as_str())
            .and_then(|rest| rest.strip_suffix('#'))
            .and_then(|name| hub.of(name))
        {
            self.on_request(&namespace, payload);
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
            .local_publish(&broadcast.event, &broadcast.args, &broadcast.attachments);
    }

    /// The Socket.IO adapter's requests (from other servers or the emitter).
    fn on_request(&self, namespace: &Arc<Namespace>, payload: &[u8]) {
        let Ok(request) = message::decode_request(payload) else {
            tracing::debug!("cluster: ignoring a malformed request");
            return;
        };
        if request["uid"].as_str() == Some(self.uid.as_str()) {
            return;
        }
        let (rooms, except) = message::selection(&request);
        let by_sid = request["sid"]
            .as_str()
            .and_then(|sid| namespace.socket(sid).map(|_| sid.to_owned()));
        // By socket id, or by the rooms in `opts` (an object: no rooms there means everyone).
        let chosen = match (&by_sid, request["opts"].is_object()) {
            (Some(sid), _) => Some(namespace.select(std::slice::from_ref(sid), &[])),
            (None, true) => Some(namespace.select(&rooms, &except)),
            (None, false) => None,
        };
        let respond = |answer: Value| {
            let mut answer = answer;
            answer["requestId"] = request["requestId"].clone();
            self.send(
                message::response_channel(&self.settings.key, namespace.name()),
                answer.to_string().into_bytes(),
            );
        };
        match request["type"].as_u64() {
            Some(kind @ (request_type::REMOTE_JOIN | request_type::REMOTE_LEAVE)) => {
                let Some(chosen) = chosen else { return };
                chosen.local_change_rooms(
                    &message::rooms_of(&request),
                    kind == request_type::REMOTE_JOIN,
                );
                if by_sid.is_some() {
                    respond(json!({}));
                }
            }
            Some(request_type::REMOTE_DISCONNECT) => {
                let Some(chosen) = chosen else { return };
                chosen.local_disconnect(request["close"].as_bool().unwrap_or(false));
                if by_sid.is_some() {
                    respond(json!({}));
                }
            }
            Some(request_type::BROADCAST) => {
                // Delivered here without asking for acks (a socket here cannot ack a request
                // made on another server); the answer says no client of this node will ack, so
                // the asking server does not wait for any.
                let Ok(broadcast) = message::decode_ack_broadcast(payload) else {
                    return;
                };
                namespace
                    .select(&broadcast.rooms, &broadcast.except)
                    .local_publish(&broadcast.event, &broadcast.args, &broadcast.attachments);
                respond(json!({ "type": request_type::BROADCAST_CLIENT_COUNT, "clientCount": 0 }));
            }
            Some(request_type::SOCKETS) => {
                let rooms = match request["rooms"].as_array() {
                    Some(_) => message::rooms_of(&request),
                    None => rooms,
                };
                let ids: Vec<String> = namespace
                    .select(&rooms, &[])
                    .sockets()
                    .iter()
                    .map(|s| s.id().to_string())
                    .collect();
                respond(json!({ "sockets": ids }));
            }
            Some(request_type::ALL_ROOMS) => {
                let rooms: Vec<String> = namespace
                    .rooms()
                    .into_iter()
                    .map(|(room, _)| room.to_string())
                    .collect();
                respond(json!({ "rooms": rooms }));
            }
            Some(request_type::REMOTE_FETCH) => {
                let sockets: Vec<Value> = namespace.select(&rooms, &except)
                    .sockets()
                    .iter()
                    .map(|socket| {
                        let issued = socket.handshake().issued_ms;
                        json!({
                            "id": socket.id().as_ref(),
                            "handshake": {
                                "auth": &*socket.handshake().auth,
                                "issued": issued,
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
            _ => {}
        }
    }

    /// Switchboard's own messages: operations on a user's sockets, and questions.
    fn on_switchboard(&self, hub: &Hub, payload: &[u8]) {
        let Ok(message) = serde_json::from_slice::<Value>(payload) else {
            tracing::debug!("cluster: ignoring a malformed message");
            return;
        };
        let from = message["uid"].as_str().unwrap_or_default();
        if from == self.uid {
            *self.heard_self.lock() = Instant::now();
            return;
        }
        match message["kind"].as_str() {
            Some("user") => self.on_user_op(hub, &message),
            Some("presence") => {
                if let Some(user) = message["user"].as_str() {
                    hub.presence().user_elsewhere(from, user, &message["here"]);
                }
            }
            Some("presence_all") => hub.presence().users_elsewhere(from, &message["users"]),
            Some("bye") => hub.presence().forget_node(from),
            Some("presence_sync") => self.tell_all_users(),
            Some("query") => {
                // Always an answer (null before the app has set how to answer): the asking
                // node counts on one from every node.
                let answer = self
                    .answerer
                    .get()
                    .map_or(Value::Null, |answer| answer(&message["question"]));
                let reply = json!({ "requestId": message["requestId"], "answer": answer });
                self.send(
                    reply_channel(&self.settings.key, from),
                    reply.to_string().into_bytes(),
                );
            }
            _ => {}
        }
    }

    /// Tells the other nodes who all of this node's users are.
    fn tell_all_users(&self) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        if self.leaving.load(Ordering::Acquire) {
            return;
        }
        // Sent while the users are read, so that no change of a user is sent before it.
        hub.presence().with_everyone_here(|users| {
            let message = json!({ "kind": "presence_all", "uid": self.uid, "users": users });
            self.send(self.own_channel.clone(), message.to_string().into_bytes());
        });
    }

    fn on_user_op(&self, hub: &Hub, message: &Value) {
        let (Some(namespace), Some(user)) = (
            message["nsp"].as_str().and_then(|name| hub.of(name)),
            message["user"].as_str(),
        ) else {
            return;
        };
        let strings = |key: &str| -> Vec<String> {
            message[key]
                .as_array()
                .map(|list| {
                    list.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let of_user = namespace.presence().sockets_of(user, namespace.name());
        let mut targets = strings("rooms");
        targets.extend(of_user.iter().map(|id| id.to_string()));
        if targets.is_empty() {
            return;
        }
        match message["op"].as_str() {
            Some("emit") => {
                let Some(event) = message["event"].as_str() else {
                    return;
                };
                let args = message["args"].as_array().cloned().unwrap_or_default();
                namespace
                    .select(&targets, &strings("except"))
                    .local_publish(event, &args, &[]);
            }
            Some("disconnect") if !of_user.is_empty() => {
                let ids: Vec<String> = of_user.iter().map(|id| id.to_string()).collect();
                namespace
                    .select(&ids, &[])
                    .local_disconnect(message["close"].as_bool().unwrap_or(false));
            }
            _ => {}
        }
    }

    fn on_reply(&self, payload: &[u8]) {
        let Ok(mut reply) = serde_json::from_slice::<Value>(payload) else {
            return;
        };
        let Some(id) = reply["requestId"].as_str().map(str::to_owned) else {
            return;
        };
        let mut pending = self.pending.lock();
        let Some(waiting) = pending.get_mut(&id) else {
            return;
        };
        waiting.answers.push(reply["answer"].take());
        if waiting.answers.len() >= waiting.expected
            && let Some(waiting) = pending.remove(&id)
            && let Some(done) = waiting.done
        {
            let _ = done.send(waiting.answers);
        }
    }

    /// The channels this node listens to for a namespace: the Redis adapter's request channel,
    /// or the Streams adapter's namespace channel and this node's own under it.
    fn namespace_channels(&self, namespace: &str) -> Vec<String> {
        let key = &self.settings.key;
        match self.settings.streams {
            Some(_) => vec![
                stream_message::namespace_channel(key, namespace, None),
                stream_message::namespace_channel(key, namespace, Some(&self.uid)),
            ],
            None => vec![message::request_channel(key, namespace)],
        }
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
        self.send_taken(
            message::request_channel(&self.settings.key, namespace),
            payload,
            taken,
        );
    }

    async fn ask(&self, question: Value) -> Vec<Value> {
        let id = format!(
            "{}-{}",
            self.uid,
            self.next_request.fetch_add(1, Ordering::Relaxed)
        );
        // Removes the waiting entry however this ends (answered, timed out, or the HTTP
        // request that asked was dropped).
        let _pending = PendingGuard {
            adapter: self,
            id: id.clone(),
        };
        match tokio::time::timeout(self.settings.request_timeout, self.ask_inner(&id, question))
            .await
        {
            Ok(answers) => answers,
            Err(_) => {
                let partial = self.pending.lock().remove(&id);
                tracing::warn!(
                    expected = partial.as_ref().map_or(0, |p| p.expected),
                    answered = partial.as_ref().map_or(0, |p| p.answers.len()),
                    "cluster: not every node answered in time"
                );
                partial.map(|p| p.answers).unwrap_or_default()
            }
        }
    }

    async fn ask_inner(&self, id: &str, question: Value) -> Vec<Value> {
        let channel = self.own_channel.clone();
        let nodes: usize = match self.connection().await {
            Ok(mut connection) => redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async::<(String, usize)>(&mut connection)
                .await
                .map(|(_, count)| count)
                .unwrap_or(0),
            Err(_) => 0,
        };
        // This node is one of the subscribers while its subscription is up.
        let expected = nodes.saturating_sub(usize::from(self.is_connected()));
        if expected == 0 {
            return Vec::new();
        }
        let (done, answered) = oneshot::channel();
        self.pending.lock().insert(
            id.to_owned(),
            Pending {
                expected,
                answers: Vec::new(),
                done: Some(done),
            },
        );
        let request =
            json!({ "kind": "query", "uid": self.uid, "requestId": id, "question": question });
        self.send(channel, request.to_string().into_bytes());
        answered.await.unwrap_or_default()
    }
}

/// Removes a question's waiting entry when the asking ends.
struct PendingGuard<'a> {
    adapter: &'a RedisAdapter,
    id: String,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.adapter.pending.lock().remove(&self.id);
    }
}

/// Every third of the node timeout (at most [`PRESENCE_EVERY`]), tells the other nodes who this
/// node's users are and forgets nodes silent for the node timeout; ends with the adapter.
async fn presence_loop(adapter: Weak<RedisAdapter>) {
    let (every, silence) = match adapter.upgrade() {
        Some(adapter) => {
            let silence = adapter.settings.node_timeout;
            ((silence / 3).min(PRESENCE_EVERY), silence)
        }
        None => return,
    };
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(adapter) = adapter.upgrade() else {
            return;
        };
        let Some(hub) = adapter.hub.upgrade() else {
            return;
        };
        let forgotten = hub.presence().forget_nodes_silent_for(silence);
        if forgotten > 0 {
            adapter
                .nodes_expired
                .fetch_add(forgotten as u64, Ordering::Relaxed);
            tracing::warn!(
                nodes = forgotten,
                ?silence,
                "cluster: nodes silent past node_timeout taken for dead; their users are offline"
            );
        }
        if adapter.is_connected() {
            adapter.tell_all_users();
            adapter.say_where();
        }
    }
}

/// The channel where the node `uid` is answered.
fn reply_channel(key: &str, uid: &str) -> String {
    format!("{key}-switchboard#{uid}#")
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

impl Adapter for RedisAdapter {
    fn broadcast(
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
        if self.settings.streams.is_some() {
            let entry = stream_message::broadcast_entry(
                &self.uid,
                namespace,
                event,
                args,
                attachments,
                &rooms,
                &except,
            );
            return self.append(entry, taken);
        }
        let payload = message::encode_broadcast(
            &self.uid,
            namespace,
            event,
            args,
            attachments,
            &rooms,
            &except,
        );
        self.send_taken(
            message::broadcast_channel(&self.settings.key, namespace, &rooms),
            payload,
            taken,
        );
    }

    fn membership(
        &self,
        namespace: &str,
        selection: &Target,
        rooms: &[String],
        join: bool,
        taken: Option<TakenSender>,
    ) {
        if self.settings.streams.is_some() {
            let (selected, except) = (strings(&selection.rooms), excluded(selection));
            let entry = stream_message::membership_entry(
                &self.uid, namespace, &selected, &except, rooms, join,
            );
            return self.append(entry, taken);
        }
        let kind = if join {
            request_type::REMOTE_JOIN
        } else {
            request_type::REMOTE_LEAVE
        };
        let rooms = ("rooms", json!(rooms));
        self.send_selection_request(namespace, kind, selection, rooms, taken);
    }

    fn disconnect(
        &self,
        namespace: &str,
        selection: &Target,
        close: bool,
        taken: Option<TakenSender>,
    ) {
        if self.settings.streams.is_some() {
            let (selected, except) = (strings(&selection.rooms), excluded(selection));
            let entry =
                stream_message::disconnect_entry(&self.uid, namespace, &selected, &except, close);
            return self.append(entry, taken);
        }
        let kind = request_type::REMOTE_DISCONNECT;
        let close = ("close", json!(close));
        self.send_selection_request(namespace, kind, selection, close, taken);
    }

    fn take_timeout(&self) -> Duration {
        self.settings.request_timeout
    }

    fn for_user(&self, namespace: &str, user: &str, op: UserOp, taken: Option<TakenSender>) {
        let mut message =
            json!({ "kind": "user", "uid": self.uid, "nsp": namespace, "user": user });
        match op {
            UserOp::Emit {
                rooms,
                except,
                event,
                args,
            } => {
                message["op"] = json!("emit");
                message["rooms"] = json!(rooms);
                message["except"] = json!(except);
                message["event"] = json!(event);
                message["args"] = Value::Array(args);
            }
            UserOp::Disconnect { close } => {
                message["op"] = json!("disconnect");
                message["close"] = json!(close);
            }
        }
        self.send_taken(
            self.own_channel.clone(),
            message.to_string().into_bytes(),
            taken,
        );
    }

    fn namespace_added(&self, namespace: &str) {
        for channel in self.namespace_channels(namespace) {
            let _ = self.subscriptions.send(channel);
        }
    }

    fn shared_sessions_taken(&self) -> u64 {
        self.shared_sessions_taken.load(Ordering::Relaxed)
    }

    fn orders_broadcasts(&self) -> bool {
        self.settings.streams.is_some()
    }

    fn shares_sessions(&self) -> bool {
        self.settings.streams.is_some()
    }

    fn take_session(&self, pid: &str) -> BoxFuture<'_, Option<crate::hub::adapter::SharedSession>> {
        let pid = pid.to_owned();
        Box::pin(async move { self.take_shared_session(&pid).await })
    }

    fn log_position(&self) -> Option<crate::hub::adapter::LogPosition> {
        let start = self.log_start.load(Ordering::Acquire);
        (self.settings.streams.is_some() && start > 0).then(|| crate::hub::adapter::LogPosition {
            start,
            read: self.log_read.load(Ordering::Acquire),
        })
    }

    fn logged_events(
        &self,
        namespace: &str,
        after: u64,
        through: u64,
    ) -> BoxFuture<'_, Option<Vec<crate::hub::adapter::LoggedEvent>>> {
        let namespace = namespace.to_owned();
        Box::pin(async move { self.read_logged(&namespace, after, through).await })
    }

    fn query(&self, question: Value) -> BoxFuture<'_, Vec<Value>> {
        Box::pin(self.ask(question))
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn nodes_expired(&self) -> u64 {
        self.nodes_expired.load(Ordering::Relaxed)
    }

    fn leave(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.leaving.store(true, Ordering::Release);
            let bye = json!({ "kind": "bye", "uid": self.uid });
            self.send(self.own_channel.clone(), bye.to_string().into_bytes());
            self.say_gone();
            let (done, sent) = oneshot::channel();
            if self.outbox.try_send(Outgoing::Sent(done)).is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(2), sent).await;
            }
        })
    }
}

fn strings(rooms: &[crate::hub::Room]) -> Vec<String> {
    rooms.iter().map(|r| r.to_string()).collect()
}

fn excluded(selection: &Target) -> Vec<String> {
    selection
        .except_rooms
        .iter()
        .chain(&selection.except_sockets)
        .map(|r| r.to_string())
        .collect()
}
