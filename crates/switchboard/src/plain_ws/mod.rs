//! The plain WebSocket endpoint, for clients that do not speak Socket.IO: JSON text messages on
//! a configurable path (e.g. `ws://host:3001/ws-online-status?userId=123`).
//!
//! On connect the client gets `{"type":"CONNECTION_ESTABLISHED","userId","timestamp",
//! "connectionId"}`; every client gets `USER_ONLINE` / `USER_OFFLINE` `{type, userId, timestamp}`
//! when a user's status changes, from this endpoint or from Socket.IO (presence is shared).
//! Clients may send `{"type":"PING"}` (answered `PONG`) and `{"type":"GET_ONLINE_USERS"}`
//! (answered `ONLINE_USERS` with `users`). The server pings every `ping_interval` and drops a
//! peer that did not answer the previous ping. With auth required, the user comes from the
//! token in the `token` query parameter, not from the query's user id.

use crate::error_code::ErrorCode;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::websocket::Socket;
use bytes::Bytes;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use parking_lot::RwLock;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::auth::Verifier;
use crate::backend::ConnectProxy;
use crate::clock::iso_now;
use crate::config::PlainWsSettings;
use crate::engine::{AddressLimitSettings, AddressLimits, Frame};
use crate::http::{
    HttpResponse, HttpService, KeptHeaders, RemoteAddr, RequestInfo, ResponseFuture, response,
};
use crate::hub::access::{AccessEntry, AccessList, TokenMark};
use crate::hub::{Hub, Presence, user_id};

/// Who a connecting client is: its user, and the token it presented, if any.
type Identified = (String, Option<TokenMark>);
use crate::websocket::{
    Incoming as Received, MessageReader, close_gracefully, next_message, write_all,
};

struct Client {
    outbox: mpsc::Sender<Frame>,
    /// Ends the connection (a client too slow to keep up, a user blocked, a token revoked).
    kick: Arc<tokio::sync::Notify>,
    user: String,
    /// The token it was admitted with, if any.
    token: Option<TokenMark>,
}

/// The endpoint: its connections and what it needs to admit them.
pub struct PlainWs {
    settings: PlainWsSettings,
    presence: Arc<Presence>,
    access: Arc<AccessList>,
    verifier: Option<Arc<Verifier>>,
    require_auth: bool,
    max_message: usize,
    /// The backend that decides who connects, when configured for this endpoint.
    connect_proxy: Option<Arc<ConnectProxy>>,
    /// Connections per client address (the `[limits]` per-address caps).
    addresses: AddressLimits,
    clients: RwLock<HashMap<u64, Client>>,
    next_id: AtomicU64,
}

fn json_frame(value: &Value) -> Frame {
    Frame::text_packet(value.to_string().as_bytes())
}

fn refuse(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    let body = json!({ "error": { "code": code, "message": message } }).to_string();
    response(status, "application/json", Bytes::from(body))
}

impl PlainWs {
    pub fn new(
        settings: PlainWsSettings,
        hub: &Hub,
        verifier: Option<Arc<Verifier>>,
        require_auth: bool,
        max_message: usize,
        connect_proxy: Option<Arc<ConnectProxy>>,
        address_limits: AddressLimitSettings,
    ) -> Arc<Self> {
        let presence = hub.presence().clone();
        let endpoint = Arc::new(Self {
            settings,
            presence: presence.clone(),
            access: hub.access().clone(),
            verifier,
            require_auth,
            max_message,
            connect_proxy,
            addresses: AddressLimits::new(address_limits),
            clients: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        });
        let weak = Arc::downgrade(&endpoint);
        presence.on_change_here(Arc::new(move |user, online| {
            if let Some(endpoint) = weak.upgrade() {
                endpoint.announce(user, online);
            }
        }));
        let weak = Arc::downgrade(&endpoint);
        hub.access().on_added(Box::new(move |entry| {
            if let Some(endpoint) = weak.upgrade() {
                endpoint.refuse_now(entry);
            }
        }));
        endpoint
    }

    /// Ends the connections a new block or revocation refuses.
    fn refuse_now(&self, entry: &AccessEntry) {
        for client in self.clients.read().values() {
            if let Some(refusal) = entry.refuses(Some(&client.user), client.token.as_ref()) {
                self.access.count(&refusal);
                client.kick.notify_one();
            }
        }
    }

    pub fn connections(&self) -> usize {
        self.clients.read().len()
    }

    /// Sends one status change to every client: encoded once, the same frame for all.
    fn announce(&self, user: &str, online: bool) {
        let frame = json_frame(&json!({
            "type": if online { "USER_ONLINE" } else { "USER_OFFLINE" },
            "userId": user,
            "timestamp": iso_now(),
        }));
        let mut slow = Vec::new();
        for (id, client) in self.clients.read().iter() {
            if client.outbox.try_send(frame.clone()).is_err() {
                slow.push(*id);
            }
        }
        if !slow.is_empty() {
            let mut clients = self.clients.write();
            for id in slow {
                tracing::warn!(
                    connection = id,
                    "dropping a plain WebSocket client that does not read"
                );
                if let Some(client) = clients.remove(&id) {
                    client.kick.notify_one();
                }
            }
        }
    }

    /// Who the client is: from a verified token when auth is required, else the query.
    fn identify(&self, request: &RequestInfo) -> Result<Identified, Box<HttpResponse>> {
        let refused = |status, code: &str, message: &str| Box::new(refuse(status, code, message));
        if self.require_auth {
            let Some(verifier) = &self.verifier else {
                return Err(refused(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::AuthUnconfigured.as_str(),
                    "auth is required but not configured",
                ));
            };
            let claims = verifier
                .authenticate(request, &Map::new(), true)
                .map_err(|error| {
                    let refusal = error.connect_error();
                    let code = refusal
                        .data
                        .as_ref()
                        .and_then(|d| d["code"].as_str())
                        .unwrap_or(ErrorCode::InvalidToken.as_str())
                        .to_owned();
                    refused(StatusCode::UNAUTHORIZED, &code, &refusal.message)
                })?
                .unwrap_or_default()
                .data;
            let token = TokenMark::from_data(&claims);
            return claims
                .get(self.presence.user_key())
                .and_then(user_id)
                .map(|user| (user, token))
                .ok_or_else(|| {
                    refused(
                        StatusCode::UNAUTHORIZED,
                        ErrorCode::InvalidToken.as_str(),
                        "the token names no user",
                    )
                });
        }
        request
            .query_value(&self.settings.user_param)
            .filter(|user| !user.is_empty() && user.len() <= 256)
            .map(|user| (user.to_owned(), None))
            .ok_or_else(|| {
                refused(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::MissingUser.as_str(),
                    &format!(
                        "give the user id as the `{}` query parameter",
                        self.settings.user_param
                    ),
                )
            })
    }

    /// The connect proxy decides: with the user a token or the query named (a token that was
    /// refused stays refused), it may accept (naming the user, if none was) or refuse.
    async fn ask_backend(
        &self,
        proxy: &ConnectProxy,
        info: &RequestInfo,
        identified: Result<Identified, Box<HttpResponse>>,
    ) -> Result<Identified, Box<HttpResponse>> {
        let user_key = self.presence.user_key().to_owned();
        let mut data = Map::new();
        let mut token = None;
        match identified {
            Ok((user, mark)) => {
                data.insert(user_key.clone(), Value::String(user));
                token = mark;
            }
            Err(refusal) if refusal.status() != StatusCode::BAD_REQUEST => return Err(refusal),
            Err(_) => {}
        }
        let path = self.settings.path.as_deref().unwrap_or("/");
        match proxy
            .decide("websocket", path, info, &Map::new(), data)
            .await
        {
            Ok(admitted) => admitted
                .data
                .get(&user_key)
                .and_then(user_id)
                .map(|user| (user, token))
                .ok_or_else(|| {
                    Box::new(refuse(
                        StatusCode::FORBIDDEN,
                        ErrorCode::MissingUser.as_str(),
                        "the backend admitted the connection but named no user",
                    ))
                }),
            Err(refusal) => {
                let code = refusal
                    .data
                    .as_ref()
                    .and_then(|d| d["code"].as_str())
                    .unwrap_or(ErrorCode::Forbidden.as_str())
                    .to_owned();
                let status = if code == ErrorCode::BackendUnavailable.as_str() {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::FORBIDDEN
                };
                Err(Box::new(refuse(status, &code, &refusal.message)))
            }
        }
    }

    async fn accept(self: Arc<Self>, mut request: Request<Incoming>) -> HttpResponse {
        if !crate::websocket::is_upgrade_request(&request) {
            return refuse(
                StatusCode::BAD_REQUEST,
                ErrorCode::NotWebsocket.as_str(),
                "this endpoint speaks WebSocket",
            );
        }
        let info = RequestInfo {
            query: request
                .uri()
                .query()
                .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default(),
            headers: KeptHeaders::from_request_with(
                request.headers(),
                self.connect_proxy
                    .as_ref()
                    .map_or(&[][..], |proxy| proxy.forwarded_headers()),
            ),
            remote_addr: (request.extensions().get::<RemoteAddr>()).map(|a| a.0.into()),
        };
        let (user, token) = match (&self.connect_proxy, self.identify(&info)) {
            (None, Ok(identified)) => identified,
            (None, Err(refusal)) => return *refusal,
            (Some(proxy), identified) => match self.ask_backend(proxy, &info, identified).await {
                Ok(identified) => identified,
                Err(refusal) => return *refusal,
            },
        };
        if let Err(refusal) = self.access.check(Some(&user), token.as_ref()) {
            let error = refusal.connect_error();
            return refuse(
                StatusCode::FORBIDDEN,
                refusal.code().as_str(),
                &error.message,
            );
        }
        let accepted = match crate::websocket::accept(&mut request) {
            Ok(accepted) => accepted,
            Err(error) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BadUpgrade.as_str(),
                    &error.to_string(),
                );
            }
        };
        // Over a per-address cap: the upgrade completes, then closes with 1008 and the reason.
        let refused = self.addresses.admit(&info).err();
        let upgrade = accepted.upgrade;
        tokio::spawn(async move {
            let Some((stream, received)) = upgrade.stream().await else {
                if refused.is_none() {
                    self.addresses.release(&info);
                }
                return;
            };
            if let Some(refusal) = refused {
                tracing::debug!(
                    reason = refusal.label(),
                    "plain WebSocket connection refused"
                );
                let _ = write_all(&stream, Frame::close(1008).websocket_bytes()).await;
                return;
            }
            let mut reader = MessageReader::new(self.max_message);
            reader.push(&received);
            drop(received);
            let endpoint = self.clone();
            self.serve(Arc::new(stream), reader, user, token).await;
            endpoint.addresses.release(&info);
        });
        accepted.response
    }

    async fn serve(
        self: Arc<Self>,
        socket: Arc<Socket>,
        mut reader: MessageReader,
        user: String,
        token: Option<TokenMark>,
    ) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, mut outbox) = mpsc::channel::<Frame>(self.settings.queue.max(1));
        let write = socket.clone();
        let _ = sender.try_send(json_frame(&json!({
            "type": "CONNECTION_ESTABLISHED",
            "userId": user,
            "timestamp": iso_now(),
            "connectionId": id.to_string(),
        })));
        let kick = Arc::new(tokio::sync::Notify::new());
        self.clients.write().insert(
            id,
            Client {
                outbox: sender.clone(),
                kick: kick.clone(),
                user: user.clone(),
                token,
            },
        );
        self.presence.connection_opened(&user);

        let alive = Arc::new(AtomicBool::new(true));
        // The close code the writer ends with (the reader's when it ended the connection).
        let close_code = Arc::new(std::sync::atomic::AtomicU16::new(1000));
        let ping_interval = self.settings.ping_interval.0;
        let writer_alive = alive.clone();
        let writer_close_code = close_code.clone();
        let mut writer = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(ping_interval);
            ticker.tick().await;
            loop {
                tokio::select! {
                    frame = outbox.recv() => match frame {
                        Some(frame) => {
                            if write_all(&write, frame.websocket_bytes()).await.is_err() { break; }
                        }
                        None => break,
                    },
                    _ = ticker.tick() => {
                        // No answer to the last ping: the peer is gone.
                        if !writer_alive.swap(false, Ordering::AcqRel) { break; }
                        if write_all(&write, Frame::ping().websocket_bytes()).await.is_err() { break; }
                    }
                }
            }
            let code = writer_close_code.load(Ordering::Acquire);
            let _ = write_all(&write, Frame::close(code).websocket_bytes()).await;
        });

        loop {
            let message = tokio::select! {
                message = next_message(&socket, &mut reader) => message,
                _ = kick.notified() => break,
                _ = sender.closed() => break,
            };
            let message = match message {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(error) => {
                    close_code.store(error.close_code(), Ordering::Release);
                    break;
                }
            };
            alive.store(true, Ordering::Release);
            match message {
                Received::Close(_) => {
                    // The client's code echoed (RFC 6455 section 5.5.1).
                    if let Some(code) = reader.close_code() {
                        close_code.store(code, Ordering::Release);
                    }
                    break;
                }
                Received::Ping(payload) => {
                    if sender.try_send(Frame::pong(&payload)).is_err() {
                        break;
                    }
                }
                Received::Text(text) => {
                    let reply = match serde_json::from_slice::<Value>(&text) {
                        Ok(message) => match message["type"].as_str() {
                            Some("PING") => json!({ "type": "PONG", "timestamp": iso_now() }),
                            Some("GET_ONLINE_USERS") => {
                                json!({ "type": "ONLINE_USERS", "users": self.presence.online_users_everywhere() })
                            }
                            _ => {
                                json!({ "type": "ERROR", "message": "unknown message type (PING, GET_ONLINE_USERS)" })
                            }
                        },
                        Err(_) => {
                            json!({ "type": "ERROR", "message": "messages are JSON objects with a type" })
                        }
                    };
                    if sender.try_send(json_frame(&reply)).is_err() {
                        break;
                    }
                }
                Received::Binary(_) | Received::Pong => {}
            }
        }
        self.clients.write().remove(&id);
        // The writer sends what is queued and the close frame, unless the peer stopped reading.
        drop(sender);
        if tokio::time::timeout(Duration::from_secs(5), &mut writer)
            .await
            .is_err()
        {
            writer.abort();
            let _ = writer.await;
        }
        self.presence.connection_closed(&user);
        close_gracefully(socket, Duration::from_secs(2)).await;
    }
}

impl HttpService for Arc<PlainWs> {
    fn call(&self, request: Request<Incoming>) -> ResponseFuture {
        let endpoint = self.clone();
        Box::pin(endpoint.accept(request))
    }
}
