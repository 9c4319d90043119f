//! Webhooks: what happens on the server, POSTed to the backend in signed batches.
//!
//! Events: `socket_connected`, `socket_disconnected`, `user_online` / `user_offline` (after the
//! presence grace period, so a quick reconnect sends nothing; once in a cluster),
//! `room_occupied` / `room_vacated`, `member_joined` / `member_left`, and `client_event` for the
//! configured client events. Each is `{"id", "type", "at" (ms), ...}`; a batch is
//! `{"events": [...]}`, at most `batch_max` events gathered for at most `batch_wait`.
//!
//! Signature: `X-Switchboard-Timestamp` (Unix seconds) and `X-Switchboard-Signature:
//! v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>` (docs/configuration.md shows how to
//! check it in Python and Node). A batch that gets a 5xx, a 429, a timeout or no connection is
//! retried with exponential backoff up to `max_attempts`, then dropped and counted; batches go
//! out one at a time, in order. Event ids are unique, so a receiver can drop a batch it got
//! twice (an answer lost after it was processed).
//!
//! On shutdown (the server's one signal) the sender stops waiting to fill a batch and sends what
//! is queued, the events shutdown itself caused included (`socket_disconnected`, and on a node
//! of its own `user_offline`); the server waits for that up to `server.shutdown_timeout`.
//!
//! In a cluster every event is sent by one node: the one where it happened (a socket lives on
//! one node) or, for users, the node presence announces the change on. Rooms occupied and
//! vacated are this node's view of its own members.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::client::{BackendClient, CallHeaders, Traced};
use crate::clock::now_millis;
use crate::config::WebhookSettings;
use crate::hub::{DisconnectReason, Hub, HubObserver, Socket};
use crate::metrics::Metrics;

/// The webhooks of a server: what the hub and presence report goes into a bounded queue that
/// one task sends from.
pub struct Webhooks {
    queue: mpsc::Sender<Value>,
    wanted: Wanted,
    client_events: Vec<String>,
    /// This node's prefix of event ids, and the count after it.
    node: String,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
    /// True once the sender has ended (after shutdown, with the queue sent).
    finished: watch::Receiver<bool>,
}

/// Which event types are sent.
#[derive(Default)]
struct Wanted {
    socket_connected: bool,
    socket_disconnected: bool,
    user_online: bool,
    user_offline: bool,
    room_occupied: bool,
    room_vacated: bool,
    member_joined: bool,
    member_left: bool,
    client_event: bool,
}

/// Where and how batches are sent.
struct Sender {
    client: BackendClient,
    url: String,
    secret: Vec<u8>,
    headers: CallHeaders,
    timeout: Duration,
    batch_max: usize,
    batch_wait: Duration,
    max_attempts: u32,
    retry_initial: Duration,
    retry_max: Duration,
    metrics: Arc<Metrics>,
}

impl Webhooks {
    /// Starts the sender and hooks into the hub and presence. None when no URL is configured.
    pub fn start(
        settings: &WebhookSettings,
        client: BackendClient,
        hub: &Arc<Hub>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Result<Option<Arc<Self>>, String> {
        let Some(url) = &settings.url else {
            return Ok(None);
        };
        let secret = settings
            .secret
            .clone()
            .ok_or("webhooks need a secret to sign with")?;
        let wants = |name: &str| settings.events.iter().any(|e| e == name);
        let wanted = Wanted {
            socket_connected: wants("socket_connected"),
            socket_disconnected: wants("socket_disconnected"),
            user_online: wants("user_online"),
            user_offline: wants("user_offline"),
            room_occupied: wants("room_occupied"),
            room_vacated: wants("room_vacated"),
            member_joined: wants("member_joined"),
            member_left: wants("member_left"),
            client_event: wants("client_event"),
        };
        let sender = Sender {
            client,
            url: url.clone(),
            secret: secret.into_bytes(),
            headers: CallHeaders::new(&settings.headers, &[])?,
            timeout: settings.timeout.0,
            batch_max: settings.batch_max,
            batch_wait: settings.batch_wait.0,
            max_attempts: settings.max_attempts,
            retry_initial: settings.retry_initial.0,
            retry_max: settings.retry_max.0,
            metrics: metrics.clone(),
        };
        let (queue, events) = mpsc::channel(settings.queue);
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "webhooks need a tokio runtime".to_owned())?;
        let (finish, finished) = watch::channel(false);
        runtime.spawn(async move {
            sender.run(events, shutdown).await;
            let _ = finish.send(true);
        });
        let webhooks = Arc::new(Self {
            queue,
            wanted,
            client_events: settings.client_events.clone(),
            node: format!("{:08x}", rand::random::<u32>()),
            next_id: AtomicU64::new(0),
            metrics,
            finished,
        });
        hub.observe(webhooks.clone());
        if webhooks.wanted.user_online || webhooks.wanted.user_offline {
            let weak = Arc::downgrade(&webhooks);
            hub.presence().on_change(Arc::new(move |user, online| {
                let Some(webhooks) = weak.upgrade() else {
                    return;
                };
                if online && webhooks.wanted.user_online {
                    webhooks.send("user_online", json!({ "user": user }));
                } else if !online && webhooks.wanted.user_offline {
                    webhooks.send("user_offline", json!({ "user": user }));
                }
            }));
        }
        if webhooks.wanted.client_event {
            for namespace in hub.namespaces() {
                let weak = Arc::downgrade(&webhooks);
                for name in &webhooks.client_events {
                    let weak = weak.clone();
                    namespace.tap(name.clone(), move |socket, event| {
                        if let Some(webhooks) = weak.upgrade() {
                            webhooks.send(
                                "client_event",
                                json!({
                                    "namespace": socket.namespace().name(),
                                    "socket": socket.id().as_ref(),
                                    "user": socket.user(),
                                    "event": event.name,
                                    "args": event.args,
                                }),
                            );
                        }
                    });
                }
            }
        }
        Ok(Some(webhooks))
    }

    /// Resolves once the sender has ended: after the shutdown signal, with what was queued
    /// sent (or dropped after its last attempt).
    pub async fn finished(&self) {
        let mut finished = self.finished.clone();
        let _ = finished.wait_for(|done| *done).await;
    }

    /// Queues one event; a full queue drops it (counted).
    fn send(&self, kind: &str, mut fields: Value) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        fields["id"] = json!(format!("{}-{id}", self.node));
        fields["type"] = json!(kind);
        fields["at"] = json!(now_millis());
        if self.queue.try_send(fields).is_err() {
            self.metrics.webhook_events_dropped.inc();
        }
    }
}

impl HubObserver for Webhooks {
    fn socket_connected(&self, socket: &Arc<Socket>) {
        if self.wanted.socket_connected {
            self.send(
                "socket_connected",
                json!({
                    "namespace": socket.namespace().name(),
                    "socket": socket.id().as_ref(),
                    "user": socket.user(),
                    "transport": socket.conn().transport().as_str(),
                    "recovered": socket.recovered(),
                }),
            );
        }
    }

    fn socket_disconnected(&self, socket: &Arc<Socket>, reason: DisconnectReason) {
        if self.wanted.socket_disconnected {
            self.send(
                "socket_disconnected",
                json!({
                    "namespace": socket.namespace().name(),
                    "socket": socket.id().as_ref(),
                    "user": socket.user(),
                    "reason": reason.as_str(),
                }),
            );
        }
    }

    fn room_joined(&self, namespace: &str, room: &str, socket: &str) {
        if self.wanted.member_joined {
            self.send(
                "member_joined",
                json!({ "namespace": namespace, "room": room, "socket": socket }),
            );
        }
    }

    fn room_left(&self, namespace: &str, room: &str, socket: &str) {
        if self.wanted.member_left {
            self.send(
                "member_left",
                json!({ "namespace": namespace, "room": room, "socket": socket }),
            );
        }
    }

    fn room_created(&self, namespace: &str, room: &str) {
        if self.wanted.room_occupied {
            self.send(
                "room_occupied",
                json!({ "namespace": namespace, "room": room }),
            );
        }
    }

    fn room_deleted(&self, namespace: &str, room: &str) {
        if self.wanted.room_vacated {
            self.send(
                "room_vacated",
                json!({ "namespace": namespace, "room": room }),
            );
        }
    }
}

impl Sender {
    /// Sends batches until the shutdown signal, then what is queued, and ends.
    async fn run(self, mut events: mpsc::Receiver<Value>, shutdown: CancellationToken) {
        loop {
            let first = tokio::select! {
                biased;
                event = events.recv() => match event {
                    Some(event) => event,
                    None => return,
                },
                _ = shutdown.cancelled() => break,
            };
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + self.batch_wait;
            while batch.len() < self.batch_max {
                let next = tokio::select! {
                    biased;
                    next = tokio::time::timeout_at(deadline, events.recv()) => next,
                    // Shutting down: no more waiting for a fuller batch.
                    _ = shutdown.cancelled() => break,
                };
                match next {
                    Ok(Some(event)) => batch.push(event),
                    Ok(None) | Err(_) => break,
                }
            }
            self.deliver(batch).await;
        }
        // Shutting down: what is queued goes out now, batch after batch.
        loop {
            let mut batch = Vec::new();
            while batch.len() < self.batch_max {
                match events.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                return;
            }
            self.deliver(batch).await;
        }
    }

    /// Sends one batch, retrying what a later try can fix.
    async fn deliver(&self, batch: Vec<Value>) {
        let count = batch.len() as u64;
        let body = json!({ "events": batch }).to_string();
        let mut wait = self.retry_initial;
        for attempt in 1..=self.max_attempts {
            let timestamp = (now_millis() / 1000).to_string();
            let mut headers = self.headers.fixed().clone();
            for (name, value) in [
                ("x-switchboard-timestamp", timestamp.clone()),
                (
                    "x-switchboard-signature",
                    format!("v1={}", sign(&self.secret, &timestamp, &body)),
                ),
                ("x-switchboard-attempt", attempt.to_string()),
            ] {
                if let Ok(value) = http::HeaderValue::try_from(value) {
                    headers.insert(http::HeaderName::from_static(name), value);
                }
            }
            match self
                .client
                .post(
                    Traced::named("webhooks"),
                    &self.url,
                    self.timeout,
                    &headers,
                    body.clone().into_bytes(),
                )
                .await
            {
                Ok((_, took)) => {
                    self.metrics.webhook_events_sent.inc_by(count);
                    self.metrics.webhook_latency.observe(took.as_secs_f64());
                    return;
                }
                Err(error) => {
                    self.metrics.webhook_attempts_failed.inc();
                    let retry = error.retryable() && attempt < self.max_attempts;
                    tracing::warn!(%error, attempt, retry, url = %self.url, "webhook batch failed");
                    if !retry {
                        break;
                    }
                    self.metrics.webhook_retries.inc();
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(self.retry_max);
                }
            }
        }
        self.metrics.webhook_events_dropped.inc_by(count);
    }
}

/// The hex HMAC-SHA256 of `"<timestamp>.<body>"`.
pub fn sign(secret: &[u8], timestamp: &str, body: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Computed independently, with Python's hmac module (as a receiver would check it).
        let signature = super::sign(b"a-webhook-secret-0123", "1700000000", r#"{"events":[]}"#);
        assert_eq!(
            signature,
            "f01c8f1649b4ca019c0910534bccdba47bb862ee845077ef44be52516bd9ac8b"
        );
    }
}
