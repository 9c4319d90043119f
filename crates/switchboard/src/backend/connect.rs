//! The connect proxy: on each Socket.IO or plain WebSocket connect, the backend is POSTed the
//! handshake (namespace, auth payload, query, forwarded headers, remote address, and the user
//! and data a verified token gave) and decides.
//!
//! Its answer accepts, `{"accept": true, "user": "42", "data": {...}, "rooms": [...]}`, or
//! refuses, `{"accept": false, "message": "...", "code": "...", "data": {...}}` (a 4xx with such
//! a body refuses too); the client sees a refusal's message and `data.code` in `connect_error`.
//! A backend that is down, slow, failing (5xx) or answering nonsense refuses the connect with
//! "Backend unavailable" and `data: {code: ErrorCode::BackendUnavailable.as_str(), retryable: true}`: never an
//! accidental accept. Open sessions are never touched by it.

use crate::error_code::ErrorCode;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::client::{BackendClient, CallError, CallHeaders, Traced};
use crate::config::ConnectProxySettings;
use crate::http::RequestInfo;
use crate::hub::{Admission, ConnectError, ConnectGate, GateRequest};
use crate::metrics::Metrics;

/// The connect proxy of a server.
pub struct ConnectProxy {
    client: BackendClient,
    url: String,
    timeout: Duration,
    headers: CallHeaders,
    /// The namespaces it decides for (none: all).
    namespaces: Vec<String>,
    plain_ws: bool,
    user_key: String,
    room_name_max: usize,
    metrics: Arc<Metrics>,
}

/// What the backend is told.
#[derive(Serialize)]
struct ConnectCall<'a> {
    /// `socket.io` or `websocket` (the plain endpoint).
    transport: &'static str,
    namespace: &'a str,
    auth: &'a Map<String, Value>,
    query: Map<String, Value>,
    headers: Map<String, Value>,
    remote_addr: Option<String>,
    /// The user a verified token named, if any.
    user: Option<&'a Value>,
    /// The socket data so far (a verified token's claims).
    data: &'a Map<String, Value>,
}

/// What the backend answers.
#[derive(Deserialize)]
struct ConnectAnswer {
    accept: Option<bool>,
    #[serde(default)]
    user: Option<Value>,
    #[serde(default)]
    data: Option<Map<String, Value>>,
    #[serde(default)]
    rooms: Vec<Value>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

/// Whom the backend admitted.
#[derive(Debug, Default)]
pub struct Admitted {
    /// The socket data: what the token set, with the backend's `data` and `user` over it.
    pub data: Map<String, Value>,
    pub rooms: Vec<String>,
}

impl ConnectProxy {
    pub fn new(
        settings: &ConnectProxySettings,
        client: BackendClient,
        user_key: &str,
        room_name_max: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, String> {
        Ok(Arc::new(Self {
            client,
            url: settings.url.clone(),
            timeout: settings.timeout.0,
            headers: CallHeaders::new(&settings.headers, &settings.forward_headers)?,
            namespaces: settings.namespaces.clone(),
            plain_ws: settings.plain_ws,
            user_key: user_key.to_owned(),
            room_name_max,
            metrics,
        }))
    }

    /// Whether it decides connects to `namespace`.
    pub fn covers(&self, namespace: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace)
    }

    /// Whether it decides plain WebSocket connects.
    pub fn covers_plain_ws(&self) -> bool {
        self.plain_ws
    }

    /// The client headers it passes on (the sessions keep them for it).
    pub fn forwarded_headers(&self) -> &[http::HeaderName] {
        self.headers.forwarded()
    }

    /// The hub's connect gate for a namespace.
    pub fn gate(self: &Arc<Self>) -> ConnectGate {
        let proxy = self.clone();
        Arc::new(move |request: GateRequest| {
            let proxy = proxy.clone();
            Box::pin(async move {
                let admitted = proxy
                    .decide(
                        "socket.io",
                        &request.namespace,
                        request.conn.request(),
                        &request.auth,
                        request.data,
                    )
                    .await?;
                Ok(Admission {
                    data: admitted.data,
                    rooms: admitted.rooms,
                })
            })
        })
    }

    /// Asks the backend about one connect.
    pub async fn decide(
        &self,
        transport: &'static str,
        namespace: &str,
        request: &RequestInfo,
        auth: &Map<String, Value>,
        mut data: Map<String, Value>,
    ) -> Result<Admitted, ConnectError> {
        let call = ConnectCall {
            transport,
            namespace,
            auth,
            query: request
                .query
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
            headers: self.headers.from_client(request),
            remote_addr: request.remote_addr.map(|a| a.to_string()),
            user: data.get(&self.user_key),
            data: &data,
        };
        let answer = self
            .client
            .post_json::<ConnectAnswer>(
                Traced::from_client("connect proxy", request),
                &self.url,
                self.timeout,
                self.headers.fixed(),
                &call,
            )
            .await;
        let answer = match answer {
            Ok((answer, took)) => {
                self.metrics.observe_proxy("connect", took);
                answer
            }
            Err(CallError::Status { status, body }) if (400..500).contains(&status) => {
                // A refusal given as a 4xx: its JSON body, if any, says why.
                let refusal: Option<ConnectAnswer> = serde_json::from_slice(&body).ok();
                self.metrics.count_proxy("connect", "refused");
                return Err(refusal_error(refusal.as_ref()));
            }
            Err(error) => {
                self.metrics.count_proxy("connect", error.outcome());
                tracing::warn!(%error, url = %self.url, nsp = namespace, "connect proxy failed; the connect is refused");
                return Err(unavailable());
            }
        };
        match answer.accept {
            Some(true) => {}
            Some(false) => {
                self.metrics.count_proxy("connect", "refused");
                return Err(refusal_error(Some(&answer)));
            }
            None => {
                self.metrics.count_proxy("connect", "bad_answer");
                tracing::warn!(url = %self.url, "connect proxy answered without \"accept\"; the connect is refused");
                return Err(unavailable());
            }
        }
        let mut rooms = Vec::with_capacity(answer.rooms.len());
        for room in &answer.rooms {
            match room.as_str() {
                Some(room) if !room.is_empty() && room.len() <= self.room_name_max => {
                    rooms.push(room.to_owned());
                }
                _ => {
                    self.metrics.count_proxy("connect", "bad_answer");
                    tracing::warn!(url = %self.url, ?room, "connect proxy named a bad room; the connect is refused");
                    return Err(unavailable());
                }
            }
        }
        if let Some(extra) = answer.data {
            data.extend(extra);
        }
        match answer.user {
            Some(user @ (Value::String(_) | Value::Number(_))) => {
                data.insert(self.user_key.clone(), user);
            }
            Some(Value::Null) | None => {}
            Some(_) => {
                self.metrics.count_proxy("connect", "bad_answer");
                tracing::warn!(url = %self.url, "connect proxy's user is not a string or number; the connect is refused");
                return Err(unavailable());
            }
        }
        self.metrics.count_proxy("connect", "accepted");
        Ok(Admitted { data, rooms })
    }
}

/// The client-visible refusal the backend gave.
fn refusal_error(answer: Option<&ConnectAnswer>) -> ConnectError {
    let message = answer
        .and_then(|a| a.message.clone())
        .unwrap_or_else(|| "Forbidden".to_owned());
    let mut data = answer.and_then(|a| a.data.clone()).unwrap_or_default();
    let code = answer
        .and_then(|a| a.code.clone())
        .unwrap_or_else(|| ErrorCode::Forbidden.as_str().to_owned());
    data.insert("code".into(), json!(code));
    ConnectError::new(message).with_data(Value::Object(data))
}

/// The refusal when the backend could not decide: the client may try again later.
pub fn unavailable() -> ConnectError {
    ConnectError::new("Backend unavailable")
        .with_data(json!({ "code": ErrorCode::BackendUnavailable.as_str(), "retryable": true }))
}
