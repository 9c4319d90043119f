//! [`Socket`]: one client connected to one namespace. It lives on an Engine.IO session (several
//! sockets, one per namespace, may share one), is always in the room named by its own id, and can
//! emit, join and leave rooms, wait for acks and be disconnected by the server.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use super::broadcast::Broadcast;
use super::event::{AckError, AckReply, DisconnectReason, Handshake};
use super::namespace::Namespace;
use super::packets;
use crate::engine::{EngineConn, SendError};

/// A room name.
pub type Room = Arc<str>;

#[derive(Default)]
struct PendingAcks {
    next_id: u64,
    waiting: HashMap<u64, oneshot::Sender<AckReply>>,
}

pub struct Socket {
    id: Arc<str>,
    namespace: Arc<Namespace>,
    conn: Arc<EngineConn>,
    handshake: Handshake,
    /// The rooms this socket is in. Written only with the namespace's room index locked first.
    pub(crate) rooms: Mutex<HashSet<Room>>,
    data: Mutex<Map<String, Value>>,
    acks: Mutex<PendingAcks>,
    connected: AtomicBool,
    /// The private id a client presents to recover this socket (recovery on only).
    pid: Option<Arc<str>>,
    recovered: bool,
    /// The namespace's last offset when this socket first connected.
    pub(crate) connected_seq: u64,
    /// The user this socket counts for in presence.
    user: Mutex<Option<String>>,
}

/// How a socket starts: fresh, or recovered from a saved session.
pub(crate) struct SocketStart {
    pub id: Arc<str>,
    pub pid: Option<Arc<str>>,
    pub recovered: bool,
    pub connected_seq: u64,
    pub data: Map<String, Value>,
}

impl Socket {
    pub(crate) fn new(
        start: SocketStart,
        namespace: Arc<Namespace>,
        conn: Arc<EngineConn>,
        handshake: Handshake,
    ) -> Self {
        Self {
            id: start.id,
            namespace,
            conn,
            handshake,
            rooms: Mutex::new(HashSet::new()),
            data: Mutex::new(start.data),
            acks: Mutex::new(PendingAcks::default()),
            connected: AtomicBool::new(true),
            pid: start.pid,
            recovered: start.recovered,
            connected_seq: start.connected_seq,
            user: Mutex::new(None),
        }
    }

    /// The user this socket belongs to, if any.
    pub fn user(&self) -> Option<String> {
        self.user.lock().clone()
    }

    /// Counts this socket for the user its data names (once connected).
    pub(crate) fn register_user(&self) {
        let presence = self.namespace.presence();
        let user = self
            .data
            .lock()
            .get(presence.user_key())
            .and_then(super::user_id);
        self.switch_user(user);
    }

    pub(crate) fn unregister_user(&self) {
        self.switch_user(None);
    }

    fn switch_user(&self, user: Option<String>) {
        let presence = self.namespace.presence();
        let old = {
            let mut current = self.user.lock();
            if *current == user {
                return;
            }
            std::mem::replace(&mut *current, user.clone())
        };
        let namespace: Arc<str> = Arc::from(self.namespace.name());
        if let Some(old) = old {
            presence.socket_left(&old, namespace.clone(), self.id.clone());
        }
        if let Some(user) = user {
            presence.socket_joined(&user, namespace, self.id.clone());
        }
    }

    /// The private session id (connection state recovery on).
    pub fn pid(&self) -> Option<&Arc<str>> {
        self.pid.as_ref()
    }

    /// True when this socket was restored from a saved session.
    pub fn recovered(&self) -> bool {
        self.recovered
    }

    /// The Socket.IO id (not the Engine.IO session id).
    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    pub fn namespace(&self) -> &Arc<Namespace> {
        &self.namespace
    }

    pub fn handshake(&self) -> &Handshake {
        &self.handshake
    }

    /// The Engine.IO session under this socket (request query, headers, transport).
    pub fn conn(&self) -> &Arc<EngineConn> {
        &self.conn
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Data attached to the socket (by auth, rules or handlers).
    pub fn data(&self) -> Map<String, Value> {
        self.data.lock().clone()
    }

    /// Sets one data key; setting the user key makes the socket count for that user.
    pub fn set_data(&self, key: impl Into<String>, value: Value) {
        let key = key.into();
        let is_user = key == self.namespace.presence().user_key();
        self.data.lock().insert(key, value);
        if is_user && self.is_connected() {
            self.register_user();
        }
    }

    /// The rooms this socket is in, its own id included.
    pub fn rooms(&self) -> Vec<Room> {
        self.rooms.lock().iter().cloned().collect()
    }

    pub fn in_room(&self, room: &str) -> bool {
        self.rooms.lock().contains(room)
    }

    pub fn join(self: &Arc<Self>, room: impl Into<Room>) {
        self.namespace.join(self, room.into());
    }

    pub fn leave(self: &Arc<Self>, room: &str) {
        self.namespace.leave(self, room);
    }

    /// Sends an event to this socket.
    pub fn emit(&self, event: &str, args: &[Value]) -> Result<(), SendError> {
        self.emit_binary(event, args, &[])
    }

    pub fn emit_binary(
        &self,
        event: &str,
        args: &[Value],
        attachments: &[Bytes],
    ) -> Result<(), SendError> {
        if !self.is_connected() {
            return Err(SendError::Closed);
        }
        if self.namespace.recovers() {
            // Stored with an offset, like any event, so it survives a dropped transport.
            let target = super::broadcast::Target {
                rooms: vec![self.id.clone()],
                ..Default::default()
            };
            return match self
                .namespace
                .publish(&target, event, args, attachments)
                .reached
            {
                0 => Err(SendError::Closed),
                _ => Ok(()),
            };
        }
        let frames = packets::event(self.namespace.name(), None, event, args, attachments);
        self.conn.send_all(&frames)
    }

    /// Sends an event and waits for the client's acknowledgement.
    pub async fn emit_with_ack(
        &self,
        event: &str,
        args: &[Value],
        timeout: Duration,
    ) -> Result<AckReply, AckError> {
        let (sender, receiver) = oneshot::channel();
        let id = {
            let mut acks = self.acks.lock();
            let id = acks.next_id;
            acks.next_id += 1;
            acks.waiting.insert(id, sender);
            id
        };
        let frames = packets::event(self.namespace.name(), Some(id), event, args, &[]);
        if !self.is_connected() || self.conn.send_all(&frames).is_err() {
            self.acks.lock().waiting.remove(&id);
            return Err(AckError::Disconnected);
        }
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(AckError::Disconnected),
            Err(_) => {
                self.acks.lock().waiting.remove(&id);
                Err(AckError::Timeout)
            }
        }
    }

    /// A client's ACK packet for one of our emits. Unknown ids are ignored (it timed out).
    pub(crate) fn on_ack(&self, id: u64, reply: AckReply) {
        if let Some(sender) = self.acks.lock().waiting.remove(&id) {
            let _ = sender.send(reply);
        }
    }

    /// Everyone in the namespace but this socket.
    pub fn broadcast(&self) -> Broadcast {
        self.namespace.everyone().except_socket(self.id.clone())
    }

    /// Everyone in `room` but this socket.
    pub fn to(&self, room: impl Into<Room>) -> Broadcast {
        self.broadcast().to(room)
    }

    /// Disconnects this socket from its namespace; the client sees "io server disconnect".
    pub fn disconnect(self: &Arc<Self>) {
        if self.is_connected() {
            let _ = self.conn.send(packets::disconnect(self.namespace.name()));
            self.namespace
                .remove_socket(self, DisconnectReason::ServerNamespaceDisconnect);
        }
    }

    /// Marks the socket gone and fails whatever acks it still owed. True the first time only.
    pub(crate) fn mark_disconnected(&self) -> bool {
        let was_connected = self.connected.swap(false, Ordering::AcqRel);
        if was_connected {
            self.acks.lock().waiting.clear();
        }
        was_connected
    }
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.id)
            .field("namespace", &self.namespace.name())
            .finish()
    }
}
