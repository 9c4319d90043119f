//! The log dialect of the cluster core (a driver with a log, such as Redis streams): entries in
//! the shapes of `@socket.io/redis-streams-adapter` (see `stream_message.rs`), so Node.js servers
//! on that adapter share the log, and sessions shared for recovery on any node.
//!
//! - Every broadcast, join, leave and disconnect is appended to the log (in the driver's order).
//!   One task reads the log and applies each entry here in the log's order, this node's own
//!   broadcasts included: every client of every node gets events in the same order, and an
//!   event's offset is its entry id, so a client's offset means the same on every node.
//! - A socket's session (id, rooms, data) is written (`shared_sessions.rs`) to
//!   `<session prefix><pid>` when it connects and whenever its rooms or its data change, and rewritten every third of the recovery
//!   window while it is connected, with the window as TTL: when its node is killed, the session
//!   is already there. When the link comes back they are written again, and when the engine
//!   came back empty (a per-node marker key is gone) so are the sessions this node saved for
//!   clients that dropped ([`ClusterNode::resync_sessions`]).
//! - A client that comes back on another node takes its session from the store and what it
//!   missed from the log ([`SharedLog`]) when that node's own history does not reach back far
//!   enough.
//! - Broadcasts that ask for acks and fetches of sockets by Node.js servers come over pub/sub on
//!   `<key>#<nsp>#` and are answered on `<key>#<nsp>#<uid>#`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use super::adapter_peers::Peers;
use super::driver::{DriverError, Topic};
use super::message::Reach;
use super::node::{ClusterNode, LogPeers};
use super::shared_sessions::{SessionWriter, refresh_sessions_loop};
use super::socketio_pubsub::{excluded, strings};
use super::stream_message::{self, EntryFields, StreamEntry, kind};
use crate::hub::adapter::{
    BoxFuture, LogPosition, LoggedEvent, SharedLog, SharedSession, TakenSender,
};
use crate::hub::{Broadcast, Hub, Target, log_seq, offset_text, parse_offset};

/// How long one read waits for new entries.
const READ_BLOCK: Duration = Duration::from_secs(2);
/// Entries read at once when replaying to a client.
const REPLAY_COUNT: usize = 1000;

/// How far this node has read the log (0 while it has not started), and the sessions it took.
#[derive(Default)]
pub struct LogReading {
    start: AtomicU64,
    read: AtomicU64,
    sessions_taken: AtomicU64,
}

impl LogReading {
    /// Whether this node has started reading the log.
    pub fn started(&self) -> bool {
        self.start.load(Ordering::Acquire) > 0
    }

    pub fn sessions_taken(&self) -> u64 {
        self.sessions_taken.load(Ordering::Relaxed)
    }
}

impl ClusterNode {
    /// Where Node.js servers sharing the log speak to every node about a namespace.
    pub(super) fn log_request_topic(&self, namespace: &str) -> Topic {
        let key = &self.settings.key;
        match self.settings.log_peers {
            LogPeers::RedisStreams => {
                Topic::Channel(stream_message::namespace_channel(key, namespace, None))
            }
            LogPeers::Postgres => Topic::Channel(format!("{key}#{namespace}")),
        }
    }

    /// Where they answer this node (the Streams adapter only).
    pub(super) fn log_reply_topic(&self, namespace: &str) -> Option<Topic> {
        let key = &self.settings.key;
        (self.settings.log_peers == LogPeers::RedisStreams).then(|| {
            Topic::Channel(stream_message::namespace_channel(
                key,
                namespace,
                Some(&self.uid),
            ))
        })
    }

    /// Reads the log, keeps sessions in the store as they change, and refreshes them.
    pub(super) fn start_log_tasks(self: &Arc<Self>, hub: &Arc<Hub>) {
        tokio::spawn(read_loop(self.clone()));
        hub.observe(Arc::new(SessionWriter(Arc::downgrade(self))));
        tokio::spawn(refresh_sessions_loop(self.clone()));
    }

    fn append(&self, entry: EntryFields, taken: Option<TakenSender>) {
        if let Some(log) = self.driver.log() {
            log.append(entry.to_vec(), taken);
        }
    }

    pub(super) fn append_broadcast(
        &self,
        namespace: &str,
        target: &Target,
        event: &str,
        args: &[Value],
        attachments: &[Bytes],
        taken: Option<TakenSender>,
    ) {
        let (rooms, except) = (strings(&target.rooms), excluded(target));
        let entry = stream_message::broadcast_entry(
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
        self.append(entry, taken);
    }

    pub(super) fn append_membership(
        &self,
        namespace: &str,
        selection: &Target,
        rooms: &[String],
        join: bool,
        taken: Option<TakenSender>,
    ) {
        let (selected, except) = (strings(&selection.rooms), excluded(selection));
        let entry =
            stream_message::membership_entry(&self.uid, namespace, &selected, &except, rooms, join);
        self.append(entry, taken);
    }

    pub(super) fn append_disconnect(
        &self,
        namespace: &str,
        selection: &Target,
        close: bool,
        taken: Option<TakenSender>,
    ) {
        let (selected, except) = (strings(&selection.rooms), excluded(selection));
        let entry =
            stream_message::disconnect_entry(&self.uid, namespace, &selected, &except, close);
        self.append(entry, taken);
    }

    /// The Streams adapter's pub/sub messages from Node.js servers: broadcasts that ask for
    /// acks and fetches of sockets. (Server-side emits are not answered: Switchboard has no
    /// server-side handlers.)
    pub(super) fn on_log_channel_message(&self, hub: &Hub, channel: &str, payload: &[u8]) {
        let under_key = channel
            .strip_prefix(self.settings.key.as_str())
            .is_some_and(|rest| rest.starts_with('#'));
        if !under_key {
            return;
        }
        if self.settings.log_peers == LogPeers::Postgres {
            let namespace = &channel[self.settings.key.len() + 1..];
            return self.on_peer_message(hub, namespace, payload, Peers::Postgres);
        }
        let Ok(message) = stream_message::decode_cluster_message(payload) else {
            tracing::debug!("cluster: ignoring a malformed cluster message");
            return;
        };
        if message.uid == self.uid {
            return;
        }
        let Some(namespace) = hub.of(&message.namespace) else {
            return;
        };
        let request_id = message.data["requestId"].clone();
        let opts = &message.data["opts"];
        let selection = namespace.select(
            &stream_message::string_list(&opts["rooms"]),
            &stream_message::string_list(&opts["except"]),
        );
        let answer = |kind: u64, data: Value| {
            let channel = stream_message::namespace_channel(
                &self.settings.key,
                namespace.name(),
                Some(&message.uid),
            );
            let payload = stream_message::encode_response(&self.uid, namespace.name(), kind, &data);
            self.driver.publish(channel, payload, None);
        };
        match message.kind {
            kind::BROADCAST if !request_id.is_null() => {
                // Delivered here without asking for acks (a socket here cannot ack a request
                // made on another server): no client of this node will ack.
                let data = &message.data["packet"]["data"];
                let Some((event, args)) = data.as_array().and_then(|d| d.split_first()) else {
                    return;
                };
                let Some(event) = event.as_str() else {
                    return;
                };
                selection.local_publish(event, args, &message.attachments);
                let data = json!({ "requestId": request_id, "clientCount": 0 });
                answer(kind::BROADCAST_CLIENT_COUNT, data);
            }
            kind::FETCH_SOCKETS => {
                let data = fetched_sockets(&selection, request_id);
                answer(kind::FETCH_SOCKETS_RESPONSE, data);
            }
            _ => {}
        }
    }

    /// Applies one log entry here.
    fn apply_entry(&self, hub: &Hub, id: &str, fields: &[(String, Vec<u8>)]) {
        let entry = match stream_message::decode_entry(fields) {
            Ok(entry) => entry,
            Err(error) => {
                tracing::debug!(%error, id, "cluster: ignoring a malformed log entry");
                return;
            }
        };
        match entry {
            StreamEntry::Broadcast(broadcast) => {
                let Some(namespace) = hub.of(&broadcast.namespace) else {
                    return;
                };
                let selection = namespace
                    .select(&broadcast.rooms, &broadcast.except)
                    .volatile(broadcast.volatile);
                let (event, args, attachments) =
                    (&broadcast.event, &broadcast.args, &broadcast.attachments);
                match log_seq(id) {
                    Some(seq) => selection.local_publish_logged(event, args, attachments, seq),
                    None => selection.local_publish(event, args, attachments),
                };
            }
            // This node's own room changes and disconnects too: it waited for them to come back
            // (see `Broadcast::waits_for_log` in the hub), in order with its broadcasts.
            StreamEntry::Membership {
                namespace,
                rooms,
                except,
                change,
                join,
                ..
            } => {
                if let Some(namespace) = hub.of(&namespace) {
                    namespace
                        .select(&rooms, &except)
                        .local_change_rooms(&change, join);
                }
            }
            StreamEntry::Disconnect {
                namespace,
                rooms,
                except,
                close,
                ..
            } => {
                if let Some(namespace) = hub.of(&namespace) {
                    namespace.select(&rooms, &except).local_disconnect(close);
                }
            }
            StreamEntry::Other => {}
        }
    }

    async fn read_logged(
        &self,
        namespace: &str,
        after: u64,
        through: u64,
    ) -> Option<Vec<LoggedEvent>> {
        let log = self.driver.log()?;
        let (after_id, through_id) = (offset_text(after), offset_text(through));
        if !log.contains(after_id.clone()).await.ok()? {
            return None;
        }
        let mut events = Vec::new();
        let mut from = after_id;
        loop {
            let page = log
                .range(from.clone(), through_id.clone(), REPLAY_COUNT)
                .await
                .ok()?;
            let Some((last, _)) = page.last() else {
                break;
            };
            from = last.clone();
            for (id, fields) in &page {
                if let (Ok(StreamEntry::Broadcast(b)), Some(seq)) =
                    (stream_message::decode_entry(fields), log_seq(id))
                    && b.namespace == namespace
                {
                    events.push(LoggedEvent {
                        seq,
                        rooms: b.rooms,
                        except: b.except,
                        event: b.event,
                        args: b.args,
                        attachments: b.attachments,
                    });
                }
            }
            if page.len() < REPLAY_COUNT {
                break;
            }
        }
        Some(events)
    }
}

impl SharedLog for ClusterNode {
    fn position(&self) -> Option<LogPosition> {
        let start = self.log.start.load(Ordering::Acquire);
        (start > 0).then(|| LogPosition {
            start,
            read: self.log.read.load(Ordering::Acquire),
        })
    }

    /// Takes (reads and deletes, at once) a session any node saved.
    fn take_session(&self, pid: &str) -> BoxFuture<'_, Option<SharedSession>> {
        let key = self.session_key(pid);
        Box::pin(async move {
            let bytes = self.driver.take(key).await.ok()??;
            let session = stream_message::decode_session(&bytes).ok()?;
            self.log.sessions_taken.fetch_add(1, Ordering::Relaxed);
            Some(SharedSession {
                sid: session.sid,
                pid: session.pid,
                rooms: session.rooms,
                data: session.data,
                connected_seq: session.connected_offset.as_deref().and_then(parse_offset),
            })
        })
    }

    /// The broadcasts of `namespace` in the log after `after` up to `through`; None when the
    /// entry `after` is no longer in the log (trimmed: what followed may be lost too).
    fn events(
        &self,
        namespace: &str,
        after: u64,
        through: u64,
    ) -> BoxFuture<'_, Option<Vec<LoggedEvent>>> {
        let namespace = namespace.to_owned();
        Box::pin(async move { self.read_logged(&namespace, after, through).await })
    }
}

/// The answer to a Node.js server's `fetchSockets()`: the selected sockets of this node as
/// `socket.io-adapter` describes them.
pub(super) fn fetched_sockets(selection: &Broadcast, request_id: Value) -> Value {
    let sockets: Vec<Value> = selection
        .sockets()
        .iter()
        .map(|socket| {
            json!({
                "id": socket.id().as_ref(),
                "handshake": { "auth": &*socket.handshake().auth, "headers": {}, "query": {} },
                "rooms": socket.rooms().iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                "data": socket.data(),
            })
        })
        .collect();
    json!({ "requestId": request_id, "sockets": sockets })
}

/// Reads the log from its end at start, then every entry after, and applies each here; on a
/// failed read, goes on from the last entry read. Ends on shutdown.
async fn read_loop(node: Arc<ClusterNode>) {
    let mut last: Option<String> = None;
    let mut logged_down = false;
    loop {
        let read = tokio::select! {
            _ = node.shutdown.cancelled() => return,
            read = read_some(&node, &mut last) => read,
        };
        match read {
            Ok(()) => return,
            Err(error) => {
                if !logged_down {
                    tracing::warn!(%error, "cluster: cannot read the log; retrying");
                    logged_down = true;
                }
                tokio::select! {
                    _ = node.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }
}

/// Reads until an error (or the hub is gone: `Ok`).
async fn read_some(node: &ClusterNode, last: &mut Option<String>) -> Result<(), DriverError> {
    let Some(log) = node.driver.log() else {
        return Ok(());
    };
    if last.is_none() {
        // From the log's end: what came before is history, read on demand.
        let newest = log.newest().await?.unwrap_or_else(|| "0-0".to_owned());
        // Everything after it is read and applied here; 1 for an empty log (0 is "not yet").
        let start = log_seq(&newest).unwrap_or(0).max(1);
        node.log.start.store(start, Ordering::Release);
        node.log.read.store(start, Ordering::Release);
        *last = Some(newest);
    }
    loop {
        let after = last.clone().unwrap_or_else(|| "0-0".to_owned());
        let entries = log.read_after(after, READ_BLOCK).await?;
        let Some(hub) = node.hub.upgrade() else {
            return Ok(());
        };
        for (id, fields) in entries {
            node.apply_entry(&hub, &id, &fields);
            if let Some(seq) = log_seq(&id) {
                node.log.read.store(seq, Ordering::Release);
            }
            *last = Some(id);
        }
    }
}
