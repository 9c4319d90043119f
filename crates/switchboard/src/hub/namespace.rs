//! [`Namespace`]: its sockets, its room index and its handlers (middleware, connect, events,
//! disconnect). Handlers run on the thread that decoded the packet, one at a time per client, so a
//! client's events are handled in the order it sent them.
//!
//! Lock order, everywhere: the room index, then the socket map, then a socket's own room set.
//!
//! A socket's own-id room is not in the room index: a map of one member per connection would cost
//! every connection for nothing, since the socket map already finds a socket by its id. See
//! [`Namespace::each_member`], the one place that resolves a room to its members.

use crate::error_code::ErrorCode;
use std::collections::HashMap;
use std::sync::Arc;

use std::sync::OnceLock;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use prometheus_client::metrics::histogram::Histogram;
use serde_json::{Map, Value};

use super::broadcast::Broadcast;
use super::event::{ConnectError, ConnectGate, DisconnectReason, Event, Handshake};
use super::last_state::{LastEvent, LastState, LastStateConfig};
use super::packets::Parser;
use super::presence::Presence;
use super::recovery::{
    HistoryPage, Recovery, RecoveryConfig, SavedSession, StoredEvent, worth_saving,
};
use super::socket::{Room, Socket, SocketStart};
use crate::engine::EngineConn;

type Middleware = Arc<
    dyn Fn(&EngineConn, &Handshake, &mut Map<String, Value>) -> Result<(), ConnectError>
        + Send
        + Sync,
>;
/// The rooms a socket started in, each with whether it created the room here.
type JoinedRooms = Vec<(Room, bool)>;
type ConnectHandler = Arc<dyn Fn(&Arc<Socket>) + Send + Sync>;
type EventHandler = Arc<dyn Fn(&Arc<Socket>, Event) + Send + Sync>;
type DisconnectHandler = Arc<dyn Fn(&Arc<Socket>, DisconnectReason) + Send + Sync>;
type EventTap = Arc<dyn Fn(&Arc<Socket>, &Event) + Send + Sync>;

/// The members of one room, by socket id.
pub(crate) type Members = HashMap<Arc<str>, Arc<Socket>>;
/// Every room of a namespace with its members.
pub(crate) type RoomIndex = HashMap<Room, Members>;

#[derive(Default, Clone)]
struct Handlers {
    middleware: Vec<Middleware>,
    on_connect: Vec<ConnectHandler>,
    events: HashMap<String, EventHandler>,
    fallback: Option<EventHandler>,
    /// Seen before the handler, by event name (webhooks of client events, say).
    taps: HashMap<String, Vec<EventTap>>,
    on_disconnect: Vec<DisconnectHandler>,
}

pub struct Namespace {
    name: Arc<str>,
    pub(crate) sockets: RwLock<HashMap<Arc<str>, Arc<Socket>>>,
    /// room -> its members
    pub(crate) rooms: RwLock<RoomIndex>,
    handlers: RwLock<Handlers>,
    pub(crate) fanout: Histogram,
    /// History and saved sessions, when connection state recovery is on.
    pub(crate) recovery: OnceLock<Mutex<Recovery>>,
    /// Recovery only for clients that ask (`RecoveryConfig::on_request`).
    recovery_on_request: std::sync::atomic::AtomicBool,
    /// The recovery window (`max_disconnection`), readable without the history lock.
    recovery_window: OnceLock<Duration>,
    pub(crate) presence: Arc<Presence>,
    pub(crate) observers: Arc<super::Observers>,
    /// The other nodes, when clustered.
    pub(crate) cluster: Arc<super::adapter::ClusterSlot>,
    /// The values `{online.<key>}` lists, counted over this namespace's sockets.
    pub(crate) online: super::online::OnlineIndex,
    /// The asynchronous connect decision, when one is set.
    gate: OnceLock<ConnectGate>,
    /// Engine.IO sessions whose CONNECT is being decided on a task (by the gate, or a restore
    /// from the shared store): a second CONNECT meanwhile is dropped.
    waiting: Mutex<std::collections::HashSet<Arc<str>>>,
    limits: Arc<super::limits::HubLimits>,
    /// The hub's blocked users and revoked tokens.
    access: Arc<super::access::AccessList>,
    /// The server's shutdown signal (the history sweep ends on it).
    shutdown: tokio_util::sync::CancellationToken,
    /// Clients back with their pid before their old transport's end was noticed (see
    /// [`Namespace::end_stale_transport`]).
    stale_transports_closed: std::sync::atomic::AtomicU64,
    /// Clients that asked to recover: their sessions restored, and those that started afresh.
    recoveries: [std::sync::atomic::AtomicU64; 2],
    /// Volatile events not queued for a socket that had something queued already.
    volatile_dropped: std::sync::atomic::AtomicU64,
    /// The rooms that give a joining socket their last state, and what they keep.
    pub(crate) last_state: OnceLock<(LastStateConfig, Mutex<LastState>)>,
}

/// What every namespace of a hub shares with it.
pub(crate) struct HubParts {
    pub fanout: Histogram,
    pub presence: Arc<Presence>,
    pub observers: Arc<super::Observers>,
    pub cluster: Arc<super::adapter::ClusterSlot>,
    pub limits: Arc<super::limits::HubLimits>,
    pub access: Arc<super::access::AccessList>,
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl Namespace {
    pub(crate) fn new(name: Arc<str>, parts: HubParts) -> Self {
        let HubParts {
            fanout,
            presence,
            observers,
            cluster,
            limits,
            access,
            shutdown,
        } = parts;
        Self {
            name,
            sockets: RwLock::new(HashMap::new()),
            rooms: RwLock::new(HashMap::new()),
            handlers: RwLock::new(Handlers::default()),
            fanout,
            recovery: OnceLock::new(),
            recovery_on_request: std::sync::atomic::AtomicBool::new(false),
            recovery_window: OnceLock::new(),
            presence,
            observers,
            cluster,
            online: super::online::OnlineIndex::default(),
            gate: OnceLock::new(),
            waiting: Mutex::new(Default::default()),
            limits,
            access,
            shutdown,
            stale_transports_closed: std::sync::atomic::AtomicU64::new(0),
            recoveries: Default::default(),
            volatile_dropped: std::sync::atomic::AtomicU64::new(0),
            last_state: OnceLock::new(),
        }
    }

    /// The hub's blocked users and revoked tokens.
    pub fn access(&self) -> &Arc<super::access::AccessList> {
        &self.access
    }

    /// Refuses a socket with these data whose user is blocked or whose token is revoked, or
    /// whose user already has the most sockets allowed on this node.
    pub(crate) fn check_admission(&self, data: &Map<String, Value>) -> Result<(), ConnectError> {
        let user = data.get(self.presence.user_key()).and_then(super::user_id);
        let token = super::access::TokenMark::from_data(data);
        if let Err(refusal) = self.access.check(user.as_deref(), token.as_ref()) {
            return Err(refusal.connect_error());
        }
        let max = self.limits.max_sockets_per_user;
        if max == 0 {
            return Ok(());
        }
        let Some(user) = user else {
            return Ok(());
        };
        if self.presence.user(&user).1 >= max {
            self.limits.hit("connections_per_user");
            return Err(ConnectError::new("Too many connections").with_data(
                serde_json::json!({ "code": ErrorCode::TooManyConnections.as_str(), "max": max }),
            ));
        }
        Ok(())
    }

    /// Sets the asynchronous connect decision (once): after the middleware, each fresh socket
    /// waits for `gate` before it connects; a recovered session keeps what it was admitted
    /// with. Answers false if one was set already.
    pub fn set_connect_gate(&self, gate: ConnectGate) -> bool {
        self.gate.set(gate).is_ok()
    }

    pub(crate) fn connect_gate(&self) -> Option<ConnectGate> {
        self.gate.get().cloned()
    }

    /// Marks session `sid`'s CONNECT as being decided on a task; false if it already was.
    pub(crate) fn begin_waiting(&self, sid: &Arc<str>) -> bool {
        self.waiting.lock().insert(sid.clone())
    }

    pub(crate) fn is_waiting(&self, sid: &str) -> bool {
        self.waiting.lock().contains(sid)
    }

    pub(crate) fn end_waiting(&self, sid: &str) {
        self.waiting.lock().remove(sid);
    }

    /// The cluster adapter, when this node is part of a cluster.
    pub fn cluster(&self) -> Option<&Arc<dyn super::adapter::Adapter>> {
        self.cluster.get()
    }

    pub fn presence(&self) -> &Arc<Presence> {
        &self.presence
    }

    /// Keeps the distinct values of socket-data `key` counted, for `{online.<key>}`. Only
    /// before the first socket connects (rules are installed then): once sockets are here the
    /// key is not counted, and [`Namespace::online_values`] reads every socket's data for it.
    /// Answers whether the key is counted.
    pub fn track_online(&self, key: &str) -> bool {
        // Sockets enter and leave with the room index locked.
        let _entering = self.rooms.write();
        if !self.sockets.read().is_empty() {
            return self.online.tracks(key);
        }
        self.online.track(key);
        true
    }

    /// `{online.<key>}`: the distinct values of socket-data `key` among this node's sockets, in
    /// the order of their JSON text, `null` left out; `sender` and the data a rule is giving it
    /// (`pending`) count as if already set. For the user key, the users other nodes of a
    /// cluster have in this namespace too.
    pub fn online_values(
        &self,
        key: &str,
        sender: Option<(&Socket, &Map<String, Value>)>,
    ) -> Vec<Value> {
        let mut values = self.online_values_here(key, sender);
        let elsewhere = if key == self.presence.user_key() {
            self.presence.users_elsewhere_in(self.name())
        } else {
            Vec::new()
        };
        if !elsewhere.is_empty() {
            let here: std::collections::HashSet<String> =
                values.iter().filter_map(super::user_id).collect();
            values.extend(
                elsewhere
                    .into_iter()
                    .filter(|user| !here.contains(user))
                    .map(Value::String),
            );
            values.sort_by_cached_key(|v| v.to_string());
        }
        values
    }

    /// [`Namespace::online_values`] on this node: from the counts when
    /// [`Namespace::track_online`] counted `key`, else from every socket's data.
    fn online_values_here(
        &self,
        key: &str,
        sender: Option<(&Socket, &Map<String, Value>)>,
    ) -> Vec<Value> {
        let counted = match sender {
            Some((socket, pending)) => socket.with_counted_value(key, |stored| {
                let replacing = stored.map(|stored| (stored, pending.get(key)));
                self.online.values(key, replacing)
            }),
            None => self.online.values(key, None),
        };
        counted.unwrap_or_else(|| {
            let sockets = self.sockets();
            let values = sockets.iter().map(|socket| match sender {
                Some((sender, pending)) if socket.id() == sender.id() => pending.get(key).cloned(),
                _ => socket.data().get(key).cloned(),
            });
            super::online::distinct(values)
        })
    }

    /// Turns connection state recovery on (before clients connect). Expired history and
    /// sessions are swept every few seconds.
    /// Gives sockets that join the rooms `config` covers those rooms' last state (set once).
    pub fn keep_last_state(&self, config: LastStateConfig) {
        let store = Mutex::new(LastState::new(config.clone()));
        let _ = self.last_state.set((config, store));
    }

    /// The last-state store, locked, when one of `rooms` keeps a last state. Lock order: the
    /// history, then this, then the room index.
    pub(crate) fn last_state_of(
        &self,
        rooms: &[Room],
    ) -> Option<parking_lot::MutexGuard<'_, LastState>> {
        let (config, store) = self.last_state.get()?;
        LastState::covers(config, rooms).then(|| store.lock())
    }

    /// The events `room` keeps for joining sockets: this node's, else the cluster engine's.
    pub async fn last_events(&self, room: &str) -> Vec<LastEvent> {
        let Some((config, store)) = self.last_state.get() else {
            return Vec::new();
        };
        if config.rule_for(room).is_none() {
            return Vec::new();
        }
        let here = store.lock().events(room);
        if !here.is_empty() {
            return here;
        }
        let Some(cluster) = self.cluster.get() else {
            return here;
        };
        let kept = cluster.last_of(self.name(), room).await;
        let mut events: Vec<LastEvent> = kept.iter().filter_map(|v| LastEvent::decode(v)).collect();
        events.sort_by_key(|e| e.at);
        events
    }

    /// Gives `socket`, which has just joined `room` (with `last` locked), the room's last
    /// state; when this node has none, asks the cluster's engine on a task and gives it to the
    /// room's sockets then, unless something newer came meanwhile.
    fn give_last_state(self: &Arc<Self>, last: &mut LastState, room: &Room, socket: &Socket) {
        last.give(self.name(), room, socket);
        let Some(cluster) = self.cluster.get() else {
            return;
        };
        if !last.should_fetch(room) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (namespace, cluster, room) = (self.clone(), cluster.clone(), room.clone());
        runtime.spawn(async move {
            let kept = cluster.last_of(namespace.name(), &room).await;
            let events = kept.iter().filter_map(|v| LastEvent::decode(v)).collect();
            let Some((_, store)) = namespace.last_state.get() else {
                return;
            };
            let mut last = store.lock();
            if last.fill(&room, events) {
                let index = namespace.rooms.read();
                for member in index.get(&room).into_iter().flat_map(|m| m.values()) {
                    last.give(namespace.name(), &room, member);
                }
            }
        });
    }

    /// Rooms with a kept last state, and events given to joining sockets (None: no room of
    /// this namespace keeps one).
    pub fn last_state_figures(&self) -> Option<(usize, u64)> {
        let (_, store) = self.last_state.get()?;
        Some(store.lock().figures())
    }

    /// A room this node's sockets all left: its kept state is forgotten when this node may not
    /// hear what is sent to it from now on (the engine has it).
    fn room_emptied(&self, room: &str) {
        let hears_all = self.cluster.get().is_none_or(|c| c.hears_every_room());
        if let (false, Some((_, store))) = (hears_all, self.last_state.get()) {
            store.lock().forget(room);
        }
    }

    pub fn enable_recovery(self: &Arc<Self>, config: RecoveryConfig) {
        let on_request = config.on_request;
        let _ = self.recovery_window.set(config.max_disconnection);
        if self
            .recovery
            .set(Mutex::new(Recovery::new(config)))
            .is_err()
        {
            return;
        }
        self.recovery_on_request
            .store(on_request, std::sync::atomic::Ordering::Release);
        let weak = Arc::downgrade(self);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let shutdown = self.shutdown.clone();
            runtime.spawn(async move {
                let mut ticker = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = ticker.tick() => {}
                    }
                    let Some(namespace) = weak.upgrade() else {
                        return;
                    };
                    if let Some(recovery) = namespace.recovery.get() {
                        recovery.lock().sweep();
                    }
                }
            });
        }
    }

    /// Whether only clients that ask get recovery.
    pub(crate) fn recovery_on_request(&self) -> bool {
        self.recovery_on_request
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether events are stored for recovery.
    pub fn recovers(&self) -> bool {
        self.recovery.get().is_some()
    }

    /// How long a disconnected session can be recovered (recovery on).
    pub fn recovery_window(&self) -> Option<Duration> {
        self.recovery_window.get().copied()
    }

    pub(crate) fn recovery_config(&self) -> Option<RecoveryConfig> {
        self.recovery.get().map(|r| r.lock().config.clone())
    }

    /// How many clients came back with their pid before their old transport's end was noticed.
    pub fn stale_transports_closed(&self) -> u64 {
        (self.stale_transports_closed).load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts a client that came back with its session id: recovered, or started afresh.
    pub(crate) fn count_recovery(&self, recovered: bool) {
        self.recoveries[usize::from(!recovered)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Clients that came back with their session id since start: (recovered, started afresh).
    pub fn recoveries(&self) -> (u64, u64) {
        let count = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
        (count(&self.recoveries[0]), count(&self.recoveries[1]))
    }

    pub(crate) fn count_volatile_dropped(&self, sockets: u64) {
        (self.volatile_dropped).fetch_add(sockets, std::sync::atomic::Ordering::Relaxed);
    }

    /// Volatile events dropped for sockets that were behind, since start.
    pub fn volatile_dropped(&self) -> u64 {
        (self.volatile_dropped).load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What the history holds now: rooms with a log and entries (see `Recovery::size`).
    pub fn history_size(&self) -> (usize, usize) {
        self.recovery.get().map_or((0, 0), |r| r.lock().size())
    }

    /// The sessions saved here for recovery, each with the time it has left.
    pub(crate) fn saved_with_time_left(&self) -> Vec<(SavedSession, Duration)> {
        (self.recovery.get()).map_or_else(Vec::new, |r| r.lock().saved_with_time_left())
    }

    /// Sessions saved for recovery right now.
    pub fn saved_sessions(&self) -> usize {
        self.recovery.get().map_or(0, |r| r.lock().saved_sessions())
    }

    /// The stored events of `room` (`None`: those sent to everyone) after offset `since`.
    pub fn history(&self, room: Option<&str>, since: u64, limit: usize) -> Option<HistoryPage> {
        self.recovery
            .get()
            .map(|r| r.lock().room_history(room, since, limit))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs before a socket connects; an error refuses it with CONNECT_ERROR. The middleware may
    /// fill in the socket's data (claims of a verified token, say).
    pub fn use_middleware(
        &self,
        middleware: impl Fn(
            &EngineConn,
            &Handshake,
            &mut Map<String, Value>,
        ) -> Result<(), ConnectError>
        + Send
        + Sync
        + 'static,
    ) -> &Self {
        self.handlers.write().middleware.push(Arc::new(middleware));
        self
    }

    pub fn on_connect(&self, handler: impl Fn(&Arc<Socket>) + Send + Sync + 'static) -> &Self {
        self.handlers.write().on_connect.push(Arc::new(handler));
        self
    }

    /// Handles the client event `name` for every socket of this namespace.
    pub fn on(
        &self,
        name: impl Into<String>,
        handler: impl Fn(&Arc<Socket>, Event) + Send + Sync + 'static,
    ) -> &Self {
        self.handlers
            .write()
            .events
            .insert(name.into(), Arc::new(handler));
        self
    }

    /// Handles every client event no `on` handler claimed.
    /// Sees every `event` a client sends here, before its handler runs (it handles nothing).
    pub fn tap(
        &self,
        event: impl Into<String>,
        tap: impl Fn(&Arc<Socket>, &Event) + Send + Sync + 'static,
    ) -> &Self {
        self.handlers
            .write()
            .taps
            .entry(event.into())
            .or_default()
            .push(Arc::new(tap));
        self
    }

    pub fn on_any(&self, handler: impl Fn(&Arc<Socket>, Event) + Send + Sync + 'static) -> &Self {
        self.handlers.write().fallback = Some(Arc::new(handler));
        self
    }

    pub fn on_disconnect(
        &self,
        handler: impl Fn(&Arc<Socket>, DisconnectReason) + Send + Sync + 'static,
    ) -> &Self {
        self.handlers.write().on_disconnect.push(Arc::new(handler));
        self
    }

    /// A broadcast to every socket of the namespace (narrow it with `to`, `except`).
    pub fn everyone(self: &Arc<Self>) -> Broadcast {
        Broadcast::new(self.clone())
    }

    pub fn to(self: &Arc<Self>, room: impl Into<Room>) -> Broadcast {
        self.everyone().to(room)
    }

    /// The sockets in any of `rooms` (everyone when none) and in none of `except`.
    pub fn select(self: &Arc<Self>, rooms: &[String], except: &[String]) -> Broadcast {
        let chosen = rooms
            .iter()
            .fold(self.everyone(), |b, room| b.to(room.as_str()));
        except
            .iter()
            .fold(chosen, |b, room| b.except(room.as_str()))
    }

    pub fn socket(&self, id: &str) -> Option<Arc<Socket>> {
        self.sockets.read().get(id).cloned()
    }

    pub fn sockets(&self) -> Vec<Arc<Socket>> {
        self.sockets.read().values().cloned().collect()
    }

    pub fn socket_count(&self) -> usize {
        self.sockets.read().len()
    }

    /// The indexed rooms with their member counts: every room but the sockets' own-id rooms.
    pub fn rooms(&self) -> Vec<(Room, usize)> {
        self.rooms
            .read()
            .iter()
            .map(|(room, members)| (room.clone(), members.len()))
            .collect()
    }

    /// Rooms other than the sockets' own-id rooms.
    pub fn shared_room_count(&self) -> usize {
        let index = self.rooms.read();
        let sockets = self.sockets.read();
        index
            .keys()
            .filter(|room| !sockets.contains_key(&***room))
            .count()
    }

    /// Is `room` a socket's own-id room?
    pub fn is_private_room(&self, room: &str) -> bool {
        self.sockets.read().contains_key(room)
    }

    pub fn room_members(&self, room: &str) -> Vec<Arc<Socket>> {
        let index = self.rooms.read();
        let sockets = self.sockets.read();
        let mut members = Vec::new();
        Self::each_member(&index, &sockets, room, |socket| {
            members.push(socket.clone())
        });
        members
    }

    /// Calls `visit` for each member of `room`: those in the index, and the socket whose own-id
    /// room it is (not indexed), if it has not left it. Each member once.
    pub(crate) fn each_member<'a>(
        index: &'a RoomIndex,
        sockets: &'a Members,
        room: &str,
        mut visit: impl FnMut(&'a Arc<Socket>),
    ) {
        if let Some(members) = index.get(room) {
            members.values().for_each(&mut visit);
        }
        if let Some(owner) = sockets.get(room)
            && owner.rooms.lock().contains(room)
        {
            visit(owner);
        }
    }

    /// Whether `socket` may join `room` after joining `joining_before` other new rooms
    /// (`limits.max_rooms_per_socket`, its own room not counted). A refusal is counted, for a
    /// caller that refuses the client before anything happens (a rule).
    pub fn may_join(&self, socket: &Socket, room: &str, joining_before: usize) -> bool {
        let allowed = self.room_allowed(&socket.rooms.lock(), room, joining_before);
        if !allowed {
            self.limits.hit("rooms_per_socket");
        }
        allowed
    }

    /// Whether a socket in `own` rooms may be in `room` too, after `joining_before` other new
    /// ones: `limits.max_rooms_per_socket`, its own room (always in `own`) not counted.
    fn room_allowed(
        &self,
        own: &super::socket::RoomSet,
        room: &str,
        joining_before: usize,
    ) -> bool {
        own.contains(room)
            || own.len().saturating_add(joining_before) <= self.limits.max_rooms_per_socket
    }

    /// `limits.max_rooms_per_socket`.
    pub fn max_rooms_per_socket(&self) -> usize {
        self.limits.max_rooms_per_socket
    }

    pub(crate) fn join(self: &Arc<Self>, socket: &Arc<Socket>, mut room: Room) {
        if !socket.is_connected() {
            return;
        }
        // Held until the room's last state is queued: no broadcast to it in between.
        let mut last = self.last_state_of(std::slice::from_ref(&room));
        let (joined, created) = {
            let mut index = self.rooms.write();
            // Every member shares the index's copy of the name (a large room: one copy, not one
            // per member).
            if let Some((name, _)) = index.get_key_value(&*room) {
                room = name.clone();
            }
            let mut own = socket.rooms.lock();
            if !self.room_allowed(&own, &room, 0) {
                drop(own);
                drop(index);
                self.limits.hit("rooms_per_socket");
                return;
            }
            let joined = own.insert(room.clone());
            drop(own);
            let mut created = false;
            if joined && room != *socket.id() {
                let members = index.entry(room.clone()).or_default();
                created = members.is_empty();
                members.insert(socket.id().clone(), socket.clone());
            }
            (joined, created)
        };
        if let (true, Some(last)) = (joined, last.as_deref_mut()) {
            self.give_last_state(last, &room, socket);
        }
        drop(last);
        if created {
            self.observers.each(|o| o.room_created(self.name(), &room));
        }
        if joined {
            self.observers
                .each(|o| o.room_joined(self.name(), &room, socket.id()));
        }
    }

    pub(crate) fn leave(&self, socket: &Socket, room: &str) {
        let (left, deleted) = {
            let mut index = self.rooms.write();
            let left = socket.rooms.lock().remove(room);
            let deleted = left && Self::unindex(&mut index, room, socket.id());
            (left, deleted)
        };
        if left {
            self.observers
                .each(|o| o.room_left(self.name(), room, socket.id()));
        }
        if deleted {
            self.room_emptied(room);
            self.observers.each(|o| o.room_deleted(self.name(), room));
        }
    }

    /// Takes a member out of the index; true when that emptied (and removed) the room.
    fn unindex(
        index: &mut HashMap<Room, HashMap<Arc<str>, Arc<Socket>>>,
        room: &str,
        id: &str,
    ) -> bool {
        if let Some(members) = index.get_mut(room) {
            members.remove(id);
            if members.is_empty() {
                index.remove(room);
                return true;
            }
        }
        false
    }

    /// Runs the middleware (refusals are CONNECT_ERROR for the caller to send).
    pub(crate) fn check_middleware(
        &self,
        conn: &EngineConn,
        handshake: &Handshake,
    ) -> Result<Map<String, Value>, ConnectError> {
        let middleware = self.handlers.read().middleware.clone();
        let mut data = Map::new();
        for check in &middleware {
            check(conn, handshake, &mut data)?;
        }
        Ok(data)
    }

    /// Runs the middleware; on success the client has its CONNECT reply and the socket is
    /// indexed in its own room.
    pub(crate) fn admit(
        self: &Arc<Self>,
        conn: &Arc<EngineConn>,
        handshake: Handshake,
    ) -> Result<Arc<Socket>, ConnectError> {
        let data = self.check_middleware(conn, &handshake)?;
        self.check_admission(&data)?;
        Ok(self.admit_with(conn, handshake, data, Vec::new()))
    }

    /// Admits a socket with its data and first rooms (what a connect gate decided): the client
    /// has its CONNECT reply and the socket is in its rooms before any broadcast reaches it.
    pub(crate) fn admit_with(
        self: &Arc<Self>,
        conn: &Arc<EngineConn>,
        handshake: Handshake,
        data: Map<String, Value>,
        rooms: Vec<String>,
    ) -> Arc<Socket> {
        // A socket with no session id gets no offsets either (see `deliver`).
        let (pid, connected_seq) = match self.recovery.get() {
            // socket.io v2 clients know no recovery.
            Some(_) if handshake.parser == Parser::Legacy => (None, 0),
            Some(recovery) if handshake.recovery_requested || !self.recovery_on_request() => {
                (Some(crate::engine::new_id()), recovery.lock().last_seq())
            }
            _ => (None, 0),
        };
        let socket = Arc::new(Socket::new(
            SocketStart {
                // Random for every client (derived from its random pid when it has one). A
                // socket.io v2 client derives an id of its own from the session id (`sid`,
                // `/nsp#sid`), as the reference server leaves it: using it here would publish
                // the session id, which is all it takes to speak for the session, wherever a
                // socket id is shown.
                id: match &pid {
                    Some(pid) => super::recovery::socket_id_for(pid),
                    None => crate::engine::new_id(),
                },
                pid,
                recovered: false,
                connected_seq,
                data,
            },
            self.clone(),
            conn.clone(),
            handshake,
        ));
        let rooms: Vec<Room> = rooms.into_iter().map(Room::from).collect();
        // Held until the first rooms' last state is queued, after the CONNECT reply.
        let mut last = self.last_state_of(&rooms);
        let joined = self.index_new(&socket, rooms.into_iter(), &[]);
        if let Some(last) = last.as_deref_mut() {
            for (room, _) in &joined {
                self.give_last_state(last, room, &socket);
            }
        }
        drop(last);
        self.announce_joined(&socket, &joined);
        socket
    }

    /// Queues the CONNECT reply (and any missed events), then indexes the socket in its rooms,
    /// all under the room index lock so no broadcast lands before the reply. Answers the rooms it
    /// joined, each with whether it was created.
    fn index_new(
        &self,
        socket: &Arc<Socket>,
        rooms: impl Iterator<Item = Room>,
        missed: &[Arc<StoredEvent>],
    ) -> Vec<(Room, bool)> {
        let mut index = self.rooms.write();
        let conn = socket.conn();
        let parser = socket.parser();
        let reply = super::packets::connect(
            parser,
            self.name(),
            socket.id(),
            socket.pid().map(|pid| &**pid),
        );
        let _ = conn.send(reply);
        for event in missed {
            // Stored in the JSON form; a MessagePack client's copy is converted as it goes.
            match parser {
                Parser::Json | Parser::Legacy => {
                    let _ = conn.send_all_unbounded(event.frames());
                }
                Parser::MsgPack => {
                    if let Some(frames) = super::packets::json_frames_as_msgpack(event.frames()) {
                        let _ = conn.send_all_unbounded(&frames);
                    }
                }
            }
        }

        self.sockets
            .write()
            .insert(socket.id().clone(), socket.clone());
        socket.count_online(true);
        let mut own = socket.rooms.lock();
        own.insert(socket.id().clone());
        let mut joined = Vec::new();
        for room in rooms {
            if own.insert(room.clone()) && room != *socket.id() {
                let members = index.entry(room.clone()).or_default();
                joined.push((room, members.is_empty()));
                members.insert(socket.id().clone(), socket.clone());
            }
        }
        joined
    }

    /// Tells the observers of the rooms a new or restored socket started in.
    fn announce_joined(&self, socket: &Socket, joined: &[(Room, bool)]) {
        for (room, created) in joined {
            if *created {
                self.observers.each(|o| o.room_created(self.name(), room));
            }
            self.observers
                .each(|o| o.room_joined(self.name(), room, socket.id()));
        }
    }

    /// Restores a saved session: same socket id, rooms and data, then every missed event, in
    /// order. None when there is nothing to restore (unknown or expired pid, a bad offset, a
    /// gap in history, or that socket id alive again): the caller connects it afresh.
    pub(crate) fn restore(
        self: &Arc<Self>,
        conn: &Arc<EngineConn>,
        handshake: Handshake,
        pid: &str,
        offset: Option<&str>,
    ) -> Option<Arc<Socket>> {
        let recovery = self.recovery.get()?;
        self.end_stale_transport(conn, pid);
        let mut history = recovery.lock();
        let session = history.take(pid)?;
        let after = match offset {
            Some(offset) => super::recovery::parse_offset(offset)?,
            None => session.connected_seq,
        };
        let (socket, joined) =
            self.restore_with(&mut history, conn, handshake, session, after, Vec::new())?;
        drop(history);
        self.announce_joined(&socket, &joined);
        Some(socket)
    }

    /// A client back with its pid before this node noticed its old transport end (thousands
    /// reconnecting at once, a half-open connection): the socket still connected under that pid
    /// is disconnected as if its transport had closed, which saves its session for the restore
    /// that follows, and the stale transport is closed. Only the holder of the pid, a secret
    /// given to that client alone, can do this; socket.io-client sends it only once it has lost
    /// its connection.
    fn end_stale_transport(&self, conn: &Arc<EngineConn>, pid: &str) {
        let Some(stale) = self.socket(&super::recovery::socket_id_for(pid)) else {
            return;
        };
        let presented = stale
            .pid()
            .is_some_and(|own| crate::http::same_secret(own, pid));
        if !presented || Arc::ptr_eq(stale.conn(), conn) {
            return;
        }
        tracing::debug!(nsp = %self.name, socket = %stale.id(), "its client is back on a new transport; closing the old one");
        let closed = crate::engine::CloseReason::TransportClose;
        (self.stale_transports_closed).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.remove_socket(&stale, DisconnectReason::Engine(closed));
        stale.conn().close(closed);
    }

    /// Another node restored socket `sid`'s session (private id `pid`). A copy this node saved
    /// is forgotten: the client has moved on from it (rooms joined, data set elsewhere), so
    /// restoring it here later would bring back an older socket. A copy still connected here
    /// (its client moved without this node seeing the old transport end: a half-open
    /// connection, polling requests that went elsewhere) is dropped without being saved, so
    /// that it neither keeps its user online nor answers for it, and its transport is closed.
    pub(crate) fn drop_taken_over(&self, sid: &str, pid: Option<&str>) {
        if let (Some(pid), Some(recovery)) = (pid, self.recovery.get()) {
            recovery.lock().take(pid);
        }
        let Some(stale) = self.socket(sid) else {
            return;
        };
        tracing::debug!(nsp = %self.name, socket = %sid, "its session was taken over by another node; dropping the copy here");
        (self.stale_transports_closed).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.remove_socket(&stale, DisconnectReason::TakenOver);
        stale
            .conn()
            .close(crate::engine::CloseReason::TransportClose);
    }

    /// Restores `session`: `earlier` (events read back from the shared log), then what this
    /// node's history holds after `after`, all under the history lock (`history`). Answers the
    /// socket and the rooms it joined, for the caller to announce once the lock is released.
    fn restore_with(
        self: &Arc<Self>,
        history: &mut Recovery,
        conn: &Arc<EngineConn>,
        handshake: Handshake,
        session: SavedSession,
        after: u64,
        earlier: Vec<Arc<StoredEvent>>,
    ) -> Option<(Arc<Socket>, JoinedRooms)> {
        if self.socket(&session.sid).is_some() {
            return None;
        }
        // A blocked user, a revoked token: not restored (connecting afresh, it is refused).
        if self.check_admission(&session.data).is_err() {
            return None;
        }
        let mut missed = earlier;
        missed.extend(history.missed(&session.sid, &session.rooms, after)?);
        let socket = Arc::new(Socket::new(
            SocketStart {
                id: session.sid.clone(),
                pid: Some(session.pid.clone()),
                recovered: true,
                connected_seq: session.connected_seq,
                data: session.data,
            },
            self.clone(),
            conn.clone(),
            handshake,
        ));
        let joined = self.index_new(&socket, session.rooms.into_iter(), &missed);
        tracing::debug!(nsp = %self.name, socket = %socket.id(), missed = missed.len(), "session recovered");
        Some((socket, joined))
    }

    /// Whether a session this node does not hold may be in the cluster's shared store.
    pub(crate) fn shares_sessions(&self) -> bool {
        self.recovers() && self.cluster.get().is_some_and(|c| c.shared_log().is_some())
    }

    /// Restores a session saved by another node (which may have been killed since): takes it
    /// from the shared store, waits until this node's copy of the log has caught up with the
    /// client's offset, and replays what the client missed. This node's history holds every
    /// event of the log since it started; what came before is read back from the log.
    pub(crate) async fn restore_shared(
        self: Arc<Self>,
        conn: Arc<EngineConn>,
        handshake: Handshake,
        pid: String,
        offset: Option<String>,
    ) -> Option<Arc<Socket>> {
        let cluster = self.cluster.get()?.clone();
        let recovery = self.recovery.get()?;
        let log = cluster.shared_log()?;
        let shared = log.take_session(&pid).await?;
        let after = match offset.as_deref() {
            Some(offset) => super::recovery::parse_offset(offset)?,
            None => shared.connected_seq?,
        };
        let session = SavedSession {
            sid: Arc::from(shared.sid),
            pid: Arc::from(shared.pid),
            rooms: shared.rooms.into_iter().map(Room::from).collect(),
            data: shared.data,
            connected_seq: after,
            saved_at: std::time::Instant::now(),
        };
        // The client may have got further in the log than this node has read so far.
        let read = || {
            let position = log.position().unwrap_or_default();
            (position, recovery.lock().last_seq().max(position.read))
        };
        let caught_up = tokio::time::Instant::now() + Duration::from_secs(2);
        while read().1 < after && tokio::time::Instant::now() < caught_up {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (position, through) = read();
        recovery.lock().note_log_start(position.start);
        if through < after {
            // Replaying now would send again what the client has: it starts afresh.
            tracing::warn!(nsp = %self.name, "recovery: this node's copy of the log is behind the client's offset");
            return None;
        }
        // This node's history holds every event it read, since it started reading: from there
        // on it can answer alone; from the start when the stream was empty then (a client that
        // connected before any event, offset 0, recovers too).
        let read_it_all = position.start < super::recovery::LOG_OFFSET_BASE;
        if after >= position.start || read_it_all {
            let mut history = recovery.lock();
            if history
                .missed(&session.sid, &session.rooms, after)
                .is_some()
            {
                let (socket, joined) =
                    self.restore_with(&mut history, &conn, handshake, session, after, Vec::new())?;
                drop(history);
                self.announce_joined(&socket, &joined);
                return Some(socket);
            }
        }
        // What came before (or was evicted here) is read back from the log, up to what this
        // node has read; what it reads meanwhile is in its history, after that.
        let logged = log.events(self.name(), after, through).await?;
        let earlier = logged
            .into_iter()
            .filter(|event| reached(&session.rooms, &event.rooms, &event.except))
            .map(|event| {
                let offset = super::recovery::offset_text(event.seq);
                let frames = super::packets::event_with_offset(
                    Parser::Json,
                    self.name(),
                    None,
                    &event.event,
                    &event.args,
                    &event.attachments,
                    Some(&offset),
                );
                StoredEvent::replayed(event.seq, frames)
            })
            .collect();
        let mut history = recovery.lock();
        let from = through.min(history.last_seq());
        let (socket, joined) =
            self.restore_with(&mut history, &conn, handshake, session, from, earlier)?;
        drop(history);
        self.announce_joined(&socket, &joined);
        Some(socket)
    }

    pub(crate) fn run_connect_handlers(&self, socket: &Arc<Socket>) {
        let handlers = self.handlers.read().on_connect.clone();
        for handler in handlers {
            handler(socket);
        }
    }

    pub(crate) fn dispatch(&self, socket: &Arc<Socket>, event: Event) {
        let (handler, taps) = {
            let handlers = self.handlers.read();
            let handler = handlers
                .events
                .get(&event.name)
                .or(handlers.fallback.as_ref())
                .cloned();
            let taps = if handlers.taps.is_empty() {
                None
            } else {
                handlers.taps.get(&event.name).cloned()
            };
            (handler, taps)
        };
        for tap in taps.iter().flatten() {
            tap(socket, &event);
        }
        if let Some(handler) = handler {
            handler(socket, event);
        }
    }

    /// Takes the socket out of the namespace and its rooms, then runs the disconnect handlers.
    pub(crate) fn remove_socket(&self, socket: &Arc<Socket>, reason: DisconnectReason) {
        if !socket.mark_disconnected() {
            return;
        }
        if let Some(recovery) = self.recovery.get() {
            match socket.pid() {
                Some(pid) if worth_saving(reason) => recovery.lock().save(SavedSession {
                    sid: socket.id().clone(),
                    pid: pid.clone(),
                    rooms: socket.rooms.lock().clone(),
                    data: socket.data(),
                    connected_seq: socket.connected_seq,
                    saved_at: std::time::Instant::now(),
                }),
                _ => recovery.lock().forget_own_room(socket.id()),
            }
        }
        socket.unregister_user();
        // Which rooms it left (and emptied), for the observers; none are kept when nobody
        // listens.
        let notify = !self.observers.is_empty();
        let mut left = Vec::new();
        let mut emptied = Vec::new();
        {
            let mut index = self.rooms.write();
            self.sockets.write().remove(socket.id());
            socket.count_online(false);
            for room in socket.rooms.lock().take() {
                let deleted = Self::unindex(&mut index, &room, socket.id());
                if notify && room != *socket.id() {
                    left.push((room, deleted));
                } else if deleted {
                    emptied.push(room);
                }
            }
        }
        for room in emptied
            .iter()
            .chain(left.iter().filter(|(_, d)| *d).map(|(r, _)| r))
        {
            self.room_emptied(room);
        }
        for (room, deleted) in &left {
            self.observers
                .each(|o| o.room_left(self.name(), room, socket.id()));
            if *deleted {
                self.observers.each(|o| o.room_deleted(self.name(), room));
            }
        }
        tracing::debug!(nsp = %self.name, socket = %socket.id(), reason = reason.as_str(), "socket disconnected");
        let handlers = self.handlers.read().on_disconnect.clone();
        for handler in handlers {
            handler(socket, reason);
        }
        self.observers
            .each(|o| o.socket_disconnected(socket, reason));
    }
}

/// Whether an event sent to `rooms` (none: everyone) minus `except` reached a socket in
/// `socket_rooms` (its own id among them).
fn reached(socket_rooms: &super::socket::RoomSet, rooms: &[String], except: &[String]) -> bool {
    let included = rooms.is_empty() || rooms.iter().any(|room| socket_rooms.contains(room));
    included && !except.iter().any(|room| socket_rooms.contains(room))
}
