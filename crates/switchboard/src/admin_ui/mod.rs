//! Compatibility with the official Socket.IO Admin UI (`@socket.io/admin-ui`): the `/admin`
//! namespace it connects to, with its authentication (basic, a bcrypt password hash, or none),
//! the `config` and `all_sockets` it expects on connect, `server_stats` every 2 s, the socket and
//! room events it draws from, and its commands (`emit`, `join`, `leave`, `_disconnect`).
//! Off unless configured (`[admin_ui]`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::clock::iso_now;
use crate::config::AdminUiSettings;
use crate::engine::Engine;
use crate::hub::{ConnectError, DisconnectReason, Event, Hub, HubObserver, Namespace, Socket};

/// A socket as the Admin UI shows it.
fn serialize(socket: &Socket) -> Value {
    let conn = socket.conn();
    let request = conn.request();
    let headers: serde_json::Map<String, Value> = request
        .headers
        .iter()
        .filter_map(|(name, value)| Some((name.to_string(), json!(value.to_str().ok()?))))
        .collect();
    // The engine keeps only the application's parameters; its own are known.
    let mut query: serde_json::Map<String, Value> = request
        .query
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    query.insert("EIO".into(), json!("4"));
    query.insert("transport".into(), json!(conn.transport().as_str()));
    let issued = socket.handshake().issued_ms;
    let address = request
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.remote_addr.map(|a| a.ip().to_string()))
        .unwrap_or_default();
    let mut rooms: Vec<String> = socket.rooms().iter().map(|r| r.to_string()).collect();
    rooms.sort();
    json!({
        "id": socket.id().as_ref(),
        // The random end of the session id (in a cluster it starts with the node's id).
        "clientId": conn.sid().get(conn.sid().len().saturating_sub(12)..).unwrap_or_default(),
        "transport": conn.transport().as_str(),
        "nsp": socket.namespace().name(),
        "data": socket.data(),
        "handshake": {
            "address": address,
            "headers": headers,
            "query": query,
            "issued": issued,
            "secure": false,
            "time": iso_now(),
            "url": "",
            "xdomain": headers.contains_key("origin"),
        },
        "rooms": rooms,
    })
}

/// The instrumentation: the admin namespace and what it reports.
pub struct AdminUi {
    hub: Arc<Hub>,
    namespace: Arc<Namespace>,
    settings: AdminUiSettings,
    sessions: Mutex<HashSet<String>>,
    started: Instant,
}

impl AdminUi {
    /// Sets the admin namespace up on `hub` and starts the stats emitter.
    pub fn install(
        hub: &Arc<Hub>,
        engine: &Arc<Engine<Arc<Hub>>>,
        settings: AdminUiSettings,
    ) -> Arc<Self> {
        let namespace = hub.namespace(&settings.namespace);
        let admin = Arc::new(Self {
            hub: hub.clone(),
            namespace: namespace.clone(),
            settings,
            sessions: Mutex::new(HashSet::new()),
            started: Instant::now(),
        });
        let auth = admin.clone();
        namespace
            .use_middleware(move |_, handshake, data| auth.authenticate(&handshake.auth, data));
        let on_connect = admin.clone();
        namespace.on_connect(move |socket| on_connect.greet(socket));
        if !admin.settings.readonly {
            for command in ["emit", "join", "leave", "_disconnect"] {
                let admin = admin.clone();
                namespace.on(command, move |_, event| admin.command(event));
            }
        }
        hub.observe(admin.clone());
        let weak = Arc::downgrade(&admin);
        let engine = Arc::downgrade(engine);
        let shutdown = hub.shutdown_signal().clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(2));
            let mut last = (0u64, 0u64, 0u64, 0u64);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                let (Some(admin), Some(engine)) = (weak.upgrade(), engine.upgrade()) else {
                    return;
                };
                last = admin.emit_stats(&engine, last);
            }
        });
        admin
    }

    fn authenticate(
        &self,
        auth: &serde_json::Map<String, Value>,
        data: &mut serde_json::Map<String, Value>,
    ) -> Result<(), ConnectError> {
        let (Some(username), Some(hash)) = (&self.settings.username, &self.settings.password_hash)
        else {
            return Ok(());
        };
        if let Some(session) = auth.get("sessionId").and_then(Value::as_str)
            && self.sessions.lock().contains(session)
        {
            return Ok(());
        }
        let given_user = auth.get("username").and_then(Value::as_str);
        let given_password = auth.get("password").and_then(Value::as_str).unwrap_or("");
        if given_user == Some(username.as_str())
            && bcrypt::verify(given_password, hash).unwrap_or(false)
        {
            let session = format!("{:016x}", rand::random::<u64>());
            self.sessions.lock().insert(session.clone());
            data.insert("_admin_session".into(), json!(session));
            return Ok(());
        }
        Err(ConnectError::new("invalid credentials"))
    }

    fn features(&self) -> Vec<&'static str> {
        let mut features = if self.settings.readonly {
            Vec::new()
        } else {
            vec![
                "EMIT",
                "JOIN",
                "LEAVE",
                "DISCONNECT",
                "MJOIN",
                "MLEAVE",
                "MDISCONNECT",
            ]
        };
        features.extend(["AGGREGATED_EVENTS", "ALL_EVENTS"]);
        features
    }

    fn greet(&self, socket: &Arc<Socket>) {
        if let Some(session) = socket.data().get("_admin_session") {
            let _ = socket.emit("session", std::slice::from_ref(session));
        }
        let _ = socket.emit("config", &[json!({ "supportedFeatures": self.features() })]);
        let sockets: Vec<Value> = self
            .hub
            .namespaces()
            .iter()
            .flat_map(|ns| ns.sockets())
            .map(|s| serialize(&s))
            .collect();
        let _ = socket.emit("all_sockets", &[Value::Array(sockets)]);
    }

    /// The sockets a command selects: `filter` is a socket id or a room (a socket id is also its
    /// own room); none: the whole namespace.
    fn select(&self, namespace: &str, filter: Option<&Value>) -> Option<crate::hub::Broadcast> {
        let namespace = self.hub.of(namespace)?;
        Some(match filter.and_then(Value::as_str) {
            Some(room) if !room.is_empty() => namespace.to(room),
            _ => namespace.everyone(),
        })
    }

    fn command(&self, event: Event) {
        let args = &event.args;
        let nsp = args.first().and_then(Value::as_str).unwrap_or("/");
        match event.name.as_str() {
            "emit" => {
                let (Some(target), Some(name)) = (
                    self.select(nsp, args.get(1)),
                    args.get(2).and_then(Value::as_str),
                ) else {
                    return;
                };
                target.emit(name, args.get(3..).unwrap_or_default());
            }
            "join" | "leave" => {
                let (Some(room), Some(target)) = (
                    args.get(1).and_then(Value::as_str),
                    self.select(nsp, args.get(2)),
                ) else {
                    return;
                };
                if event.name == "join" {
                    target.join(room);
                } else {
                    target.leave(room);
                }
            }
            "_disconnect" => {
                let close = args.get(1).and_then(Value::as_bool).unwrap_or(false);
                let Some(target) = self.select(nsp, args.get(2)) else {
                    return;
                };
                target.local_disconnect(close);
            }
            _ => {}
        }
    }

    fn emit_stats(
        &self,
        engine: &Engine<Arc<Hub>>,
        last: (u64, u64, u64, u64),
    ) -> (u64, u64, u64, u64) {
        let traffic = engine.traffic();
        let now = (
            traffic.packets_in.get(),
            traffic.packets_out.get(),
            traffic.bytes_in.get(),
            traffic.bytes_out.get(),
        );
        if self.namespace.socket_count() == 0 {
            return now;
        }
        let second = crate::clock::now_millis() / 1000 * 1000;
        let aggregated: Vec<Value> = [
            ("packetsIn", now.0 - last.0),
            ("packetsOut", now.1 - last.1),
            ("bytesIn", now.2 - last.2),
            ("bytesOut", now.3 - last.3),
        ]
        .iter()
        .filter(|(_, count)| *count > 0)
        .map(|(kind, count)| json!({ "timestamp": second, "type": kind, "count": count }))
        .collect();
        let (polling, _) = engine.sessions_by_transport();
        let namespaces: Vec<Value> = self
            .hub
            .namespaces()
            .iter()
            .map(|ns| json!({ "name": ns.name(), "socketsCount": ns.socket_count() }))
            .collect();
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "switchboard".into());
        self.namespace.everyone().emit(
            "server_stats",
            &[json!({
                "serverId": hostname,
                "hostname": hostname,
                "pid": std::process::id(),
                "uptime": self.started.elapsed().as_secs_f64(),
                "clientsCount": engine.session_count(),
                "pollingClientsCount": polling,
                "aggregatedEvents": aggregated,
                "namespaces": namespaces,
            })],
        );
        now
    }

    fn tell(&self, event: &str, args: &[Value]) {
        if self.namespace.socket_count() > 0 {
            self.namespace.everyone().emit(event, args);
        }
    }
}

impl HubObserver for AdminUi {
    fn socket_connected(&self, socket: &Arc<Socket>) {
        self.tell("socket_connected", &[serialize(socket), json!(iso_now())]);
    }

    fn socket_disconnected(&self, socket: &Arc<Socket>, reason: DisconnectReason) {
        self.tell(
            "socket_disconnected",
            &[
                json!(socket.namespace().name()),
                json!(socket.id().as_ref()),
                json!(reason.as_str()),
                json!(iso_now()),
            ],
        );
    }

    fn room_joined(&self, namespace: &str, room: &str, socket: &str) {
        self.tell(
            "room_joined",
            &[
                json!(namespace),
                json!(room),
                json!(socket),
                json!(iso_now()),
            ],
        );
    }

    fn room_left(&self, namespace: &str, room: &str, socket: &str) {
        self.tell(
            "room_left",
            &[
                json!(namespace),
                json!(room),
                json!(socket),
                json!(iso_now()),
            ],
        );
    }
}
