//! The streams adapter's I/O (`[cluster] adapter = "streams"`): the stream every node reads,
//! the sessions kept in Redis, and the Streams adapter's pub/sub messages (shapes in
//! `cluster/stream_message.rs`).
//!
//! - Every broadcast, join, leave and disconnect is appended to one stream (XADD, in the
//!   publisher's order). One task per node reads the stream (XREAD BLOCK) and applies each entry
//!   here in the stream's order, this node's own broadcasts included: every client of every node
//!   gets events in the same order, and an event's offset is its entry id, so a client's offset
//!   means the same on every node.
//! - A socket's session (id, rooms, data) is written to `<prefix><pid>` when it connects and
//!   whenever its rooms or its data change, and rewritten every third of the recovery window while it is
//!   connected, with the window as TTL: when its node is killed, the session is already there.
//! - A client that comes back on another node takes its session from Redis (`take_shared_session`)
//!   and what it missed from the stream (`read_logged`) when that node's own copy of it does not
//!   reach back far enough.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::{Value, json};

use super::RedisAdapter;
use crate::cluster::stream_message::{self, EntryFields, StoredSession, StreamEntry, kind};
use crate::hub::adapter::{LoggedEvent, SharedSession, TakenSender};
use crate::hub::{DisconnectReason, Hub, HubObserver, Socket, offset_text, parse_offset};

/// Entries read at once at most.
const READ_COUNT: usize = 1000;
/// How long one XREAD waits for new entries.
const READ_BLOCK_MS: u64 = 2000;
/// Entries read at once when replaying to a client.
const REPLAY_COUNT: usize = 1000;

/// `[cluster]` settings of the streams adapter.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// The stream's key.
    pub name: String,
    /// The stream is trimmed to about this many entries.
    pub max_len: usize,
    /// Sessions are kept under `<session_prefix><pid>`.
    pub session_prefix: String,
}

impl RedisAdapter {
    fn stream(&self) -> Option<&StreamSettings> {
        self.settings.streams.as_ref()
    }

    /// Appends an entry to the stream (in order with everything else this node sends);
    /// `taken` is told the entry's offset once Redis has it.
    pub(super) fn append(&self, entry: EntryFields, taken: Option<TakenSender>) {
        let Some(stream) = self.stream() else {
            return;
        };
        let mut xadd = redis::cmd("XADD");
        xadd.arg(&stream.name)
            .arg("MAXLEN")
            .arg("~")
            .arg(stream.max_len)
            .arg("*");
        for (field, value) in entry {
            xadd.arg(field).arg(value);
        }
        self.send_command_taken(xadd, taken);
    }

    /// The Streams adapter's pub/sub messages from Node.js servers: broadcasts that ask for
    /// acks and fetches of sockets. (Server-side emits are not answered: Switchboard has no
    /// server-side handlers.)
    pub(super) fn on_cluster_message(&self, hub: &Hub, payload: &[u8]) {
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
            self.send(channel, payload);
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
                let data = json!({ "requestId": request_id, "sockets": sockets });
                answer(kind::FETCH_SOCKETS_RESPONSE, data);
            }
            _ => {}
        }
    }

    /// Applies one stream entry here.
    fn apply_entry(&self, hub: &Hub, id: &str, fields: &[(String, Vec<u8>)]) {
        let entry = match stream_message::decode_entry(fields) {
            Ok(entry) => entry,
            Err(error) => {
                tracing::debug!(%error, id, "cluster: ignoring a malformed stream entry");
                return;
            }
        };
        match entry {
            StreamEntry::Broadcast(broadcast) => {
                let Some(namespace) = hub.of(&broadcast.namespace) else {
                    return;
                };
                let selection = namespace.select(&broadcast.rooms, &broadcast.except);
                let (event, args, attachments) =
                    (&broadcast.event, &broadcast.args, &broadcast.attachments);
                match crate::hub::log_seq(id) {
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
            _ => {}
        }
    }

    /// Takes (GET and DEL, at once) a session any node saved.
    pub(super) async fn take_shared_session(&self, pid: &str) -> Option<SharedSession> {
        let stream = self.stream()?;
        let key = format!("{}{pid}", stream.session_prefix);
        let mut connection = self.connection().await.ok()?;
        let (text,): (Option<Vec<u8>>,) = redis::pipe()
            .atomic()
            .get(&key)
            .del(&key)
            .ignore()
            .query_async(&mut connection)
            .await
            .ok()?;
        let session = stream_message::decode_session(&text?).ok()?;
        self.shared_sessions_taken
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(SharedSession {
            sid: session.sid,
            pid: session.pid,
            rooms: session.rooms,
            data: session.data,
            connected_seq: session.connected_offset.as_deref().and_then(parse_offset),
        })
    }

    /// The broadcasts of `namespace` in the stream after `after` up to `through`; None when the
    /// entry `after` is no longer in the stream (trimmed: what followed may be lost too).
    pub(super) async fn read_logged(
        &self,
        namespace: &str,
        after: u64,
        through: u64,
    ) -> Option<Vec<LoggedEvent>> {
        let stream = self.stream()?;
        let mut connection = self.connection().await.ok()?;
        let (after_id, through_id) = (offset_text(after), offset_text(through));
        let found: redis::Value = redis::cmd("XRANGE")
            .arg(&stream.name)
            .arg(&after_id)
            .arg(&after_id)
            .query_async(&mut connection)
            .await
            .ok()?;
        if entries(found).is_empty() {
            return None;
        }
        let mut events = Vec::new();
        let mut from = after_id;
        loop {
            let page: redis::Value = redis::cmd("XRANGE")
                .arg(&stream.name)
                .arg(format!("({from}"))
                .arg(&through_id)
                .arg("COUNT")
                .arg(REPLAY_COUNT)
                .query_async(&mut connection)
                .await
                .ok()?;
            let page = entries(page);
            let Some((last, _)) = page.last() else {
                break;
            };
            from = last.clone();
            for (id, fields) in &page {
                if let (Ok(StreamEntry::Broadcast(b)), Some(seq)) = (
                    stream_message::decode_entry(fields),
                    crate::hub::log_seq(id),
                ) && b.namespace == namespace
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

    /// Writes a connected socket's session (rooms, data) with the recovery window as TTL.
    fn write_session(&self, socket: &Socket) {
        let (Some(stream), Some(pid)) = (self.stream(), socket.pid()) else {
            return;
        };
        let Some(window) = socket.namespace().recovery_window() else {
            return;
        };
        // A socket gone since it was listed (a refresh) has had its session ended: not again.
        if !socket.is_connected() {
            return;
        }
        let session = StoredSession {
            sid: socket.id().to_string(),
            pid: pid.to_string(),
            rooms: socket.rooms().iter().map(|r| r.to_string()).collect(),
            data: socket.data(),
            connected_offset: Some(offset_text(socket.connected_seq)),
        };
        let mut set = redis::cmd("SET");
        set.arg(format!("{}{pid}", stream.session_prefix))
            .arg(stream_message::encode_session(&session))
            .arg("PX")
            .arg(window.as_millis().max(1) as u64);
        self.send_command(set);
    }

    /// What happens to a gone socket's session: kept for the recovery window when the socket
    /// may come back, deleted when it left for good.
    fn end_session(&self, socket: &Socket, keep: bool) {
        let (Some(stream), Some(pid)) = (self.stream(), socket.pid()) else {
            return;
        };
        let key = format!("{}{pid}", stream.session_prefix);
        let window = socket.namespace().recovery_window();
        let command = match window {
            Some(window) if keep => {
                let mut expire = redis::cmd("PEXPIRE");
                expire.arg(key).arg(window.as_millis().max(1) as u64);
                expire
            }
            _ => {
                let mut del = redis::cmd("DEL");
                del.arg(key);
                del
            }
        };
        self.send_command(command);
    }
}

/// Reads the stream from its end at start, then every entry after, and applies each here; on a
/// lost connection, reconnects and goes on from the last entry read.
pub(super) async fn read_loop(adapter: Weak<RedisAdapter>) {
    let mut last_id: Option<String> = None;
    let mut logged_down = false;
    loop {
        let Some(strong) = adapter.upgrade() else {
            return;
        };
        match read_some(&strong, &mut last_id).await {
            Ok(()) => logged_down = false,
            Err(error) => {
                if !logged_down {
                    tracing::warn!(%error, "cluster: cannot read the stream; retrying");
                    logged_down = true;
                }
                drop(strong);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn read_some(
    adapter: &Arc<RedisAdapter>,
    last_id: &mut Option<String>,
) -> redis::RedisResult<()> {
    let Some(stream) = adapter.stream() else {
        return Ok(());
    };
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(super::REDIS_TIMEOUT)
        .set_response_timeout(Duration::from_millis(READ_BLOCK_MS) + super::REDIS_TIMEOUT);
    let mut connection = adapter
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    if last_id.is_none() {
        // From the stream's end: what came before is history, read on demand.
        let newest: redis::Value = redis::cmd("XREVRANGE")
            .arg(&stream.name)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut connection)
            .await?;
        let newest = entries(newest)
            .pop()
            .map_or_else(|| "0-0".to_owned(), |(id, _)| id);
        // Everything after it is read and applied here; 1 for an empty stream (0 is "not yet").
        let start = crate::hub::log_seq(&newest).unwrap_or(0).max(1);
        adapter.log_start.store(start, Ordering::Release);
        adapter.log_read.store(start, Ordering::Release);
        *last_id = Some(newest);
    }
    loop {
        let from = last_id.clone().unwrap_or_else(|| "0-0".to_owned());
        let reply: redis::Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(READ_BLOCK_MS)
            .arg("STREAMS")
            .arg(&stream.name)
            .arg(&from)
            .query_async(&mut connection)
            .await?;
        let Some(hub) = adapter.hub.upgrade() else {
            return Ok(());
        };
        for (id, fields) in read_entries(reply) {
            adapter.apply_entry(&hub, &id, &fields);
            if let Some(seq) = crate::hub::log_seq(&id) {
                adapter.log_read.store(seq, Ordering::Release);
            }
            *last_id = Some(id);
        }
    }
}

type Entry = (String, Vec<(String, Vec<u8>)>);

fn text(value: &redis::Value) -> Option<String> {
    match value {
        redis::Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        redis::Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

/// The entries of an XRANGE/XREVRANGE reply: `[[id, [field, value, ...]], ...]`.
fn entries(reply: redis::Value) -> Vec<Entry> {
    let redis::Value::Array(items) = reply else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let redis::Value::Array(mut parts) = item else {
                return None;
            };
            if parts.len() != 2 {
                return None;
            }
            let redis::Value::Array(flat) = parts.pop()? else {
                return None;
            };
            let id = text(&parts[0])?;
            let fields = flat
                .chunks(2)
                .filter_map(|pair| match pair {
                    [key, redis::Value::BulkString(value)] => Some((text(key)?, value.clone())),
                    _ => None,
                })
                .collect();
            Some((id, fields))
        })
        .collect()
}

/// The entries of an XREAD reply on one stream: `[[name, entries]]` (nil when none came).
fn read_entries(reply: redis::Value) -> Vec<Entry> {
    match reply {
        redis::Value::Array(streams) => streams
            .into_iter()
            .flat_map(|stream| match stream {
                redis::Value::Array(mut parts) if parts.len() == 2 => {
                    parts.pop().map(entries).unwrap_or_default()
                }
                _ => Vec::new(),
            })
            .collect(),
        redis::Value::Map(streams) => streams
            .into_iter()
            .flat_map(|(_, list)| entries(list))
            .collect(),
        _ => Vec::new(),
    }
}

/// Keeps each socket's session in Redis as it changes.
pub(super) struct SessionWriter(Weak<RedisAdapter>);

impl SessionWriter {
    pub(super) fn new(adapter: &Arc<RedisAdapter>) -> Self {
        Self(Arc::downgrade(adapter))
    }

    fn write(&self, namespace: &str, socket: &str) {
        if let Some(adapter) = self.0.upgrade()
            && let Some(hub) = adapter.hub.upgrade()
            && let Some(socket) = hub.of(namespace).and_then(|n| n.socket(socket))
        {
            adapter.write_session(&socket);
        }
    }
}

impl HubObserver for SessionWriter {
    fn socket_connected(&self, socket: &Arc<Socket>) {
        if let Some(adapter) = self.0.upgrade() {
            adapter.write_session(socket);
        }
    }

    fn socket_disconnected(&self, socket: &Arc<Socket>, reason: DisconnectReason) {
        if let Some(adapter) = self.0.upgrade() {
            adapter.end_session(socket, crate::hub::worth_saving(reason));
        }
    }

    fn room_joined(&self, namespace: &str, _room: &str, socket: &str) {
        self.write(namespace, socket);
    }

    fn room_left(&self, namespace: &str, _room: &str, socket: &str) {
        self.write(namespace, socket);
    }

    /// The user set by a rule on connect must survive a kill: without it the recovered socket
    /// has no user, and that user stays offline everywhere.
    fn data_changed(&self, namespace: &str, socket: &str) {
        self.write(namespace, socket);
    }
}

/// Rewrites every connected socket's session every third of the shortest recovery window (its
/// data may have changed, and its TTL runs); ends with the adapter.
pub(super) async fn refresh_sessions_loop(adapter: Weak<RedisAdapter>) {
    loop {
        let every = {
            let Some(adapter) = adapter.upgrade() else {
                return;
            };
            let Some(hub) = adapter.hub.upgrade() else {
                return;
            };
            hub.namespaces()
                .iter()
                .filter_map(|n| n.recovery_window().map(|w| w / 3))
                .min()
                .unwrap_or(Duration::from_secs(30))
                .max(Duration::from_secs(1))
        };
        tokio::time::sleep(every).await;
        let Some(adapter) = adapter.upgrade() else {
            return;
        };
        let Some(hub) = adapter.hub.upgrade() else {
            return;
        };
        for namespace in hub.namespaces() {
            if namespace.recovers() {
                for socket in namespace.select(&[], &[]).sockets() {
                    adapter.write_session(&socket);
                }
            }
        }
    }
}
