//! Token expiry during a connection: a socket admitted with a JWT that has an `exp` is warned
//! before it (`token:expiring` `{expiresAt, inSeconds}`, `expiry_warning` ahead), may send a
//! fresh token (`token:refresh` with the token, answered by ack `{ok, expiresAt}` or
//! `{error}`), or the refresh proxy is asked for one (the socket then gets `token:refreshed`
//! `{token, expiresAt}`); at expiry an unrefreshed socket gets `token:expired` `{message,
//! expiredAt}` and is disconnected (the client sees "io server disconnect" and does not
//! reconnect on its own). A fresh token must name the same user.
//!
//! The deadline is the socket data key [`TOKEN_EXPIRY_KEY`] (Unix seconds), so it survives
//! connection state recovery with the rest of the data. Each socket with one has a sleeping
//! task, aborted when the socket leaves.

use crate::error_code::ErrorCode;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::client::{BackendClient, CallHeaders, Traced};
use crate::auth::{AuthError, Verifier};
use crate::clock::now_millis;
use crate::config::RefreshProxySettings;
use crate::hub::access::TokenMark;
use crate::hub::{DisconnectReason, Event, Hub, HubObserver, Socket};
use crate::metrics::Metrics;

/// The socket data key of a token's expiry (Unix seconds).
pub const TOKEN_EXPIRY_KEY: &str = "_tokenExp";

/// The refresh proxy: asked for a fresh token before a socket's expires.
struct RefreshProxy {
    client: BackendClient,
    url: String,
    timeout: Duration,
    headers: CallHeaders,
}

#[derive(Serialize)]
struct RefreshCall<'a> {
    namespace: &'a str,
    socket: &'a str,
    user: Option<String>,
    data: Map<String, Value>,
    /// Unix milliseconds.
    expires_at: u64,
}

#[derive(Deserialize)]
struct RefreshAnswer {
    token: Option<String>,
}

/// A watched socket: its namespace and id.
type WatchKey = (Arc<str>, Arc<str>);

/// Watches the expiry of every socket that has one.
pub struct ExpiryWatch {
    verifier: Arc<Verifier>,
    warning: Duration,
    refresh: Option<RefreshProxy>,
    metrics: Arc<Metrics>,
    user_key: String,
    /// The sleeping task of each watched socket, by namespace and socket id.
    watching: Mutex<HashMap<WatchKey, tokio::task::AbortHandle>>,
    /// Itself, for the tasks it starts from the hub's callbacks.
    me: Weak<ExpiryWatch>,
}

impl ExpiryWatch {
    /// Starts watching the hub's sockets, and answers `token:refresh` in `namespaces`.
    pub fn start(
        hub: &Arc<Hub>,
        namespaces: &[String],
        verifier: Arc<Verifier>,
        warning: Duration,
        refresh: Option<(&RefreshProxySettings, BackendClient)>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, String> {
        let refresh = match refresh {
            Some((settings, client)) => Some(RefreshProxy {
                client,
                url: settings.url.clone(),
                timeout: settings.timeout.0,
                headers: CallHeaders::new(&settings.headers, &[])?,
            }),
            None => None,
        };
        let watch = Arc::new_cyclic(|me| Self {
            verifier,
            warning,
            refresh,
            metrics,
            user_key: hub.presence().user_key().to_owned(),
            watching: Mutex::new(HashMap::new()),
            me: me.clone(),
        });
        for name in namespaces {
            let weak = Arc::downgrade(&watch);
            hub.namespace(name)
                .on("token:refresh", move |socket, event| {
                    if let Some(watch) = weak.upgrade() {
                        watch.refresh_from_client(socket, event);
                    }
                });
        }
        hub.observe(watch.clone());
        Ok(watch)
    }

    /// `token:refresh` (token): a fresh token for the same user moves the deadline.
    fn refresh_from_client(&self, socket: &Arc<Socket>, mut event: Event) {
        let ack = event.take_ack();
        let token = match event.args.first() {
            Some(Value::String(token)) => Some(token.as_str()),
            Some(Value::Object(object)) => object.get("token").and_then(Value::as_str),
            _ => None,
        };
        let answer = match token {
            None => {
                json!({ "error": { "code": ErrorCode::InvalidType.as_str(), "message": "send the token as the event's argument" } })
            }
            Some(token) => match self.adopt(socket, token) {
                Ok(expires_at) => json!({ "ok": true, "expiresAt": expires_at }),
                Err((code, message)) => json!({ "error": { "code": code, "message": message } }),
            },
        };
        if let Some(ack) = ack {
            ack.send(&[answer]);
        }
    }

    /// Verifies a fresh token and makes it the socket's; answers its expiry (Unix ms).
    fn adopt(&self, socket: &Socket, token: &str) -> Result<Option<u64>, (&'static str, String)> {
        let claims = self.verifier.verify(token).map_err(|error| match error {
            AuthError::Expired => (
                ErrorCode::TokenExpired.as_str(),
                "the token has expired".to_owned(),
            ),
            other => (
                ErrorCode::InvalidToken.as_str(),
                format!("the token is not valid: {other}"),
            ),
        })?;
        let data = self.verifier.socket_data(&claims);
        let current = socket.data().get(&self.user_key).cloned();
        if data.get(&self.user_key) != current.as_ref() {
            return Err((
                ErrorCode::UserMismatch.as_str(),
                "a fresh token must name the same user".to_owned(),
            ));
        }
        let user = current.as_ref().and_then(crate::hub::user_id);
        let token = TokenMark::from_data(&data);
        if let Err(refusal) = (socket.namespace().access()).check(user.as_deref(), token.as_ref()) {
            let message = match refusal {
                crate::hub::access::Refusal::Blocked { .. } => "this user is blocked",
                crate::hub::access::Refusal::TokenRevoked => "this token was revoked",
            };
            return Err((refusal.code().as_str(), message.to_owned()));
        }
        for (key, value) in data {
            socket.set_data(key, value);
        }
        let expires = claims.get("exp").and_then(Value::as_u64);
        socket.set_data(TOKEN_EXPIRY_KEY, expires.map_or(Value::Null, Value::from));
        self.metrics.count_token("refreshed");
        Ok(expires.map(|exp| exp * 1000))
    }

    /// Asks the refresh proxy for a fresh token; true when the socket got one.
    async fn refresh_from_backend(&self, socket: &Socket, expires_at: u64) -> bool {
        let Some(proxy) = &self.refresh else {
            return false;
        };
        let call = RefreshCall {
            namespace: socket.namespace().name(),
            socket: socket.id(),
            user: socket.user(),
            data: socket.data(),
            expires_at,
        };
        let answer = proxy
            .client
            .post_json::<RefreshAnswer>(
                Traced::named("token refresh"),
                &proxy.url,
                proxy.timeout,
                proxy.headers.fixed(),
                &call,
            )
            .await;
        let token = match answer {
            Ok((RefreshAnswer { token: Some(token) }, took)) => {
                self.metrics.observe_proxy("refresh", took);
                token
            }
            Ok(_) => {
                self.metrics.count_proxy("refresh", "no_token");
                return false;
            }
            Err(error) => {
                self.metrics.count_proxy("refresh", error.outcome());
                tracing::warn!(%error, socket = %socket.id(), "refresh proxy failed");
                return false;
            }
        };
        match self.adopt(socket, &token) {
            Ok(expires_at) => {
                self.metrics.count_proxy("refresh", "answered");
                let _ = socket.emit(
                    "token:refreshed",
                    &[json!({ "token": token, "expiresAt": expires_at })],
                );
                true
            }
            Err((code, message)) => {
                self.metrics.count_proxy("refresh", "bad_answer");
                tracing::warn!(code, message, socket = %socket.id(), "refresh proxy's token refused");
                false
            }
        }
    }

    /// Sleeps until the socket's warning, then its expiry, following refreshes.
    async fn watch(self: Arc<Self>, socket: Weak<Socket>) {
        let mut warned: Option<u64> = None;
        loop {
            let Some(socket) = socket.upgrade().filter(|s| s.is_connected()) else {
                return;
            };
            let Some(exp) = socket.data().get(TOKEN_EXPIRY_KEY).and_then(Value::as_u64) else {
                return;
            };
            let expires_at = exp.saturating_mul(1000);
            let warn_at = expires_at.saturating_sub(self.warning.as_millis() as u64);
            let now = now_millis();
            if now < warn_at {
                drop(socket);
                tokio::time::sleep(Duration::from_millis(warn_at - now)).await;
                continue;
            }
            if warned != Some(exp) {
                warned = Some(exp);
                self.metrics.count_token("warned");
                let left = expires_at.saturating_sub(now) / 1000;
                let _ = socket.emit(
                    "token:expiring",
                    &[json!({ "expiresAt": expires_at, "inSeconds": left })],
                );
                if self.refresh_from_backend(&socket, expires_at).await {
                    continue;
                }
            }
            let now = now_millis();
            if now < expires_at {
                drop(socket);
                tokio::time::sleep(Duration::from_millis(expires_at - now)).await;
                continue;
            }
            self.metrics.count_token("expired");
            let _ = socket.emit(
                "token:expired",
                &[json!({ "message": "Token expired", "expiredAt": expires_at })],
            );
            socket.disconnect();
            return;
        }
    }
}

impl HubObserver for ExpiryWatch {
    fn socket_connected(&self, socket: &Arc<Socket>) {
        if socket.data().get(TOKEN_EXPIRY_KEY).is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(watch) = self.me.upgrade() else {
            return;
        };
        let task = runtime.spawn(watch.watch(Arc::downgrade(socket)));
        self.watching.lock().insert(
            (Arc::from(socket.namespace().name()), socket.id().clone()),
            task.abort_handle(),
        );
    }

    fn socket_disconnected(&self, socket: &Arc<Socket>, _reason: DisconnectReason) {
        let key = (Arc::from(socket.namespace().name()), socket.id().clone());
        if let Some(task) = self.watching.lock().remove(&key) {
            task.abort();
        }
    }
}
