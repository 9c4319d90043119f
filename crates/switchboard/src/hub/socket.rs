//! [`Socket`]: one client connected to one namespace. It lives on an Engine.IO session (several
//! sockets, one per namespace, may share one), is always in the room named by its own id, and can
//! emit, join and leave rooms, wait for acks and be disconnected by the server.

use std::collections::HashMap;
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

/// The rooms one socket is in, as a sorted list: a socket is in a few rooms (its own and a
/// handful more), where a hash set would cost several times the memory for the same lookups.
/// A socket in its own room only (most of them) keeps it without a list.
#[derive(Debug, Clone, Eq)]
pub enum RoomSet {
    One(Room),
    /// Sorted; none, or two and more.
    Many(Vec<Room>),
}

/// The same rooms, however they are kept (`One(a)` equals a list of `a` alone).
impl PartialEq for RoomSet {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Default for RoomSet {
    fn default() -> Self {
        Self::Many(Vec::new())
    }
}

impl RoomSet {
    fn as_slice(&self) -> &[Room] {
        match self {
            Self::One(room) => std::slice::from_ref(room),
            Self::Many(rooms) => rooms,
        }
    }

    fn position(&self, room: &str) -> Result<usize, usize> {
        self.as_slice()
            .binary_search_by(|probe| (**probe).cmp(room))
    }

    pub fn contains(&self, room: &str) -> bool {
        self.position(room).is_ok()
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// True when it was not in the set yet.
    pub fn insert(&mut self, room: Room) -> bool {
        let Err(at) = self.position(&room) else {
            return false;
        };
        match self {
            Self::Many(rooms) if rooms.is_empty() => *self = Self::One(room),
            Self::Many(rooms) => rooms.insert(at, room),
            Self::One(first) => {
                let mut rooms = Vec::with_capacity(2);
                rooms.push(first.clone());
                rooms.insert(at, room);
                *self = Self::Many(rooms);
            }
        }
        true
    }

    /// True when it was in the set.
    pub fn remove(&mut self, room: &str) -> bool {
        let Ok(at) = self.position(room) else {
            return false;
        };
        match self {
            Self::One(_) => *self = Self::default(),
            Self::Many(rooms) => {
                rooms.remove(at);
            }
        }
        true
    }

    pub fn iter(&self) -> impl Iterator<Item = &Room> {
        self.as_slice().iter()
    }

    /// Empties the set, handing out its rooms.
    pub fn take(&mut self) -> Vec<Room> {
        match std::mem::take(self) {
            Self::One(room) => vec![room],
            Self::Many(rooms) => rooms,
        }
    }
}

impl FromIterator<Room> for RoomSet {
    fn from_iter<I: IntoIterator<Item = Room>>(rooms: I) -> Self {
        let mut set = Self::default();
        for room in rooms {
            set.insert(room);
        }
        set
    }
}

impl IntoIterator for RoomSet {
    type Item = Room;
    type IntoIter = std::vec::IntoIter<Room>;

    fn into_iter(mut self) -> Self::IntoIter {
        self.take().into_iter()
    }
}

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
    pub(crate) rooms: Mutex<RoomSet>,
    /// What only some sockets have (data, a user, acks awaited, rate buckets), behind one
    /// pointer that stays empty on most sockets: an idle socket pays 8 bytes for all of it.
    extras: Mutex<Option<Box<Extras>>>,
    connected: AtomicBool,
    /// Counted in the namespace's `{online.<key>}` lists (read and written with `data` locked).
    counted_online: AtomicBool,
    /// The private id a client presents to recover this socket (recovery on only).
    pid: Option<Arc<str>>,
    recovered: bool,
    /// The namespace's last offset when this socket first connected.
    pub(crate) connected_seq: u64,
}

/// A socket's state that most sockets never have; made by the first thing that needs it.
#[derive(Default)]
struct Extras {
    /// Data attached by auth, rules or handlers.
    data: Map<String, Value>,
    /// The user this socket counts for in presence.
    user: Option<String>,
    acks: Option<Box<PendingAcks>>,
    /// Its event rate buckets (made on its first limited event).
    buckets: Option<Box<super::limits::SocketBuckets>>,
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
            rooms: Mutex::new(RoomSet::default()),
            extras: Mutex::new((!start.data.is_empty()).then(|| {
                Box::new(Extras {
                    data: start.data,
                    ..Extras::default()
                })
            })),
            connected: AtomicBool::new(true),
            counted_online: AtomicBool::new(false),
            pid: start.pid,
            recovered: start.recovered,
            connected_seq: start.connected_seq,
        }
    }

    /// The user this socket belongs to, if any.
    pub fn user(&self) -> Option<String> {
        self.extras.lock().as_ref()?.user.clone()
    }

    /// Counts this socket for the user its data names (once connected).
    pub(crate) fn register_user(&self) {
        let presence = self.namespace.presence();
        let user = self
            .extras
            .lock()
            .as_ref()
            .and_then(|extras| extras.data.get(presence.user_key()))
            .and_then(super::user_id);
        self.switch_user(user);
    }

    /// Stops counting this socket, now disconnected, for its user. [`Socket::user`] still names
    /// the user, for whoever is told of the disconnect (webhooks, disconnect rules).
    pub(crate) fn unregister_user(&self) {
        let user = self.user();
        if let Some(user) = user {
            let namespace: Arc<str> = Arc::from(self.namespace.name());
            (self.namespace.presence()).socket_left(&user, namespace, self.id.clone());
        }
    }

    fn switch_user(&self, user: Option<String>) {
        let presence = self.namespace.presence();
        let old = {
            let mut extras = self.extras.lock();
            if extras.as_ref().and_then(|extras| extras.user.as_ref()) == user.as_ref() {
                return;
            }
            let extras = extras.get_or_insert_with(Box::default);
            std::mem::replace(&mut extras.user, user.clone())
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
    /// The parser this socket's client speaks.
    pub fn parser(&self) -> packets::Parser {
        self.handshake.parser
    }

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
        (self.extras.lock().as_ref())
            .map(|extras| extras.data.clone())
            .unwrap_or_default()
    }

    /// Sets one data key; setting the user key makes the socket count for that user.
    pub fn set_data(&self, key: impl Into<String>, value: Value) {
        let key = key.into();
        let is_user = key == self.namespace.presence().user_key();
        {
            let mut extras = self.extras.lock();
            let data = &mut extras.get_or_insert_with(Box::default).data;
            if self.counted_online.load(Ordering::Relaxed) {
                self.namespace.online.change(&key, data.get(&key), &value);
            }
            data.insert(key, value);
        }
        if self.is_connected() {
            if is_user {
                self.register_user();
            }
            let namespace = &self.namespace;
            (namespace.observers).each(|o| o.data_changed(namespace.name(), self.id()));
        }
    }

    /// Starts or stops counting this socket's data in the namespace's `{online.<key>}` lists
    /// (when it enters and leaves the namespace's index).
    pub(crate) fn count_online(&self, counted: bool) {
        if !self.namespace.online.tracks_any() {
            return;
        }
        let extras = self.extras.lock();
        if self.counted_online.swap(counted, Ordering::Relaxed) == counted {
            return;
        }
        let empty = Map::new();
        let data = extras.as_ref().map_or(&empty, |extras| &extras.data);
        self.namespace.online.count_socket(data, counted);
    }

    /// Runs `read` with the value of `key` this socket is counted with in `{online.<key>}`
    /// (`Some(None)` when it has none, None while it is not counted), its data locked so that
    /// the counts do not move meanwhile.
    pub(crate) fn with_counted_value<T>(
        &self,
        key: &str,
        read: impl FnOnce(Option<Option<&Value>>) -> T,
    ) -> T {
        let extras = self.extras.lock();
        let counted = self.counted_online.load(Ordering::Relaxed);
        read(counted.then(|| extras.as_ref().and_then(|extras| extras.data.get(key))))
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

    /// Checks event `name` against the socket's event rates (taking its tokens if within them).
    pub(crate) fn check_event_rate(
        &self,
        limits: &super::limits::HubLimits,
        name: &str,
    ) -> super::limits::Verdict {
        let mut extras = self.extras.lock();
        let extras = extras.get_or_insert_with(Box::default);
        limits.check_event(&mut extras.buckets, name)
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
        let frames = packets::event(
            self.parser(),
            self.namespace.name(),
            None,
            event,
            args,
            attachments,
        );
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
            let mut extras = self.extras.lock();
            let extras = extras.get_or_insert_with(Box::default);
            let acks = extras.acks.get_or_insert_with(Box::default);
            let id = acks.next_id;
            acks.next_id += 1;
            acks.waiting.insert(id, sender);
            id
        };
        let frames = packets::event(
            self.parser(),
            self.namespace.name(),
            Some(id),
            event,
            args,
            &[],
        );
        if !self.is_connected() || self.conn.send_all(&frames).is_err() {
            self.forget_ack(id);
            return Err(AckError::Disconnected);
        }
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(AckError::Disconnected),
            Err(_) => {
                self.forget_ack(id);
                Err(AckError::Timeout)
            }
        }
    }

    /// A client's ACK packet for one of our emits. Unknown ids are ignored (it timed out).
    pub(crate) fn on_ack(&self, id: u64, reply: AckReply) {
        if let Some(sender) = self.forget_ack(id) {
            let _ = sender.send(reply);
        }
    }

    fn forget_ack(&self, id: u64) -> Option<oneshot::Sender<AckReply>> {
        let mut extras = self.extras.lock();
        extras.as_mut()?.acks.as_mut()?.waiting.remove(&id)
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
            let _ = self
                .conn
                .send(packets::disconnect(self.parser(), self.namespace.name()));
            self.namespace
                .remove_socket(self, DisconnectReason::ServerNamespaceDisconnect);
        }
    }

    /// Marks the socket gone and fails whatever acks it still owed. True the first time only.
    pub(crate) fn mark_disconnected(&self) -> bool {
        let was_connected = self.connected.swap(false, Ordering::AcqRel);
        if was_connected
            && let Some(acks) = self
                .extras
                .lock()
                .as_mut()
                .and_then(|extras| extras.acks.as_mut())
        {
            acks.waiting.clear();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_in_its_own_room_only_keeps_no_list() {
        let mut rooms = RoomSet::default();
        assert!(rooms.insert("own".into()));
        assert!(matches!(rooms, RoomSet::One(_)));
        assert!(rooms.contains("own") && rooms.len() == 1);
        assert!(rooms.insert("a".into()));
        let listed: Vec<&str> = rooms.iter().map(|room| &**room).collect();
        assert_eq!(listed, ["a", "own"], "sorted once it has two");
        assert!(rooms.remove("a"));
        assert_eq!(
            rooms,
            RoomSet::One("own".into()),
            "the same set, kept either way"
        );
        assert!(rooms.remove("own"));
        assert_eq!(rooms.len(), 0);
        assert!(rooms.insert("z".into()));
        assert!(rooms.remove("z") && !rooms.contains("z"));
        assert_eq!(rooms.take(), Vec::<Room>::new());
    }

    #[test]
    fn a_room_set_keeps_each_room_once() {
        let mut rooms = RoomSet::default();
        assert!(rooms.insert("b".into()));
        assert!(rooms.insert("a".into()));
        assert!(rooms.insert("c".into()));
        assert!(!rooms.insert("b".into()), "already in");
        assert!(rooms.contains("a") && rooms.contains("b") && rooms.contains("c"));
        assert!(!rooms.contains("d"));
        assert!(rooms.remove("b"));
        assert!(!rooms.remove("b"), "already gone");
        let left: Vec<&str> = rooms.iter().map(|room| &**room).collect();
        assert_eq!(left, ["a", "c"]);
        let taken = rooms.take();
        assert_eq!(taken.len(), 2);
        assert!(!rooms.contains("a"));
        let rebuilt: RoomSet = taken.into_iter().chain(["a".into()]).collect();
        assert_eq!(rebuilt.iter().count(), 2);
    }
}
