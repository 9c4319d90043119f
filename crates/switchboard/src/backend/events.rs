//! The event proxy: a configured client event is POSTed to the backend with the socket's user,
//! data and rooms; the backend's answer becomes the client's ack and what follows from it
//! (emits to rooms, users or sockets through the hub's own operations, rooms joined or left,
//! socket data set). "Save to the database, then broadcast" with no Node server.
//!
//! Order: a socket's proxied events are sent one after another, event N+1 only once N is
//! answered (or failed), by one task per socket that lives while it has events waiting.
//! Limits: at most `max_concurrency` calls in flight on the node, `max_pending_per_socket`
//! events waiting per socket and `max_backlog` in all; past them, and when the backend fails,
//! the client's callback gets `{"error": {"code", "message"}}` at once, so nothing waits without
//! bound and no event is dropped silently.

use crate::error_code::ErrorCode;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

use super::client::{BackendClient, CallError, CallHeaders, Traced};
use crate::config::{EventProxySettings, ProxySettings};
use crate::hub::operations::EmitRequest;
use crate::hub::{Ack, Event, Hub, Socket};
use crate::metrics::Metrics;

/// One configured proxied event.
struct Route {
    event: String,
    url: String,
    timeout: Duration,
    headers: CallHeaders,
}

/// An event waiting for its turn.
struct Job {
    socket: Arc<Socket>,
    route: Arc<Route>,
    event: Event,
}

/// The event proxy of a server.
pub struct EventProxy {
    client: BackendClient,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    in_flight: Semaphore,
    max_pending_per_socket: usize,
    max_backlog: usize,
    /// Events waiting, in all.
    backlog: AtomicUsize,
    /// The sockets with a task running, and the events waiting behind the one it handles.
    queues: Mutex<HashMap<Arc<str>, VecDeque<Job>>>,
    room_name_max: usize,
}

/// What the backend is told.
#[derive(Serialize)]
struct EventCall<'a> {
    namespace: &'a str,
    event: &'a str,
    args: &'a [Value],
    /// Binary attachments, base64; `args` refer to them with `{"_placeholder":true,"num":i}`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    attachments: Vec<String>,
    /// Whether the client waits for an answer (passed a callback).
    ack: bool,
    socket: SocketView<'a>,
}

#[derive(Serialize)]
struct SocketView<'a> {
    id: &'a str,
    user: Option<String>,
    data: Map<String, Value>,
    rooms: Vec<String>,
    headers: Map<String, Value>,
}

/// What the backend answers; every field may be left out.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EventAnswer {
    /// The ack's arguments: an array, or one value.
    #[serde(default)]
    ack: Option<Value>,
    /// Emits, in the HTTP API's `/api/emit` shape (the socket's namespace by default).
    #[serde(default)]
    emit: Vec<EmitRequest>,
    #[serde(default)]
    join: Vec<String>,
    #[serde(default)]
    leave: Vec<String>,
    /// Socket data to set (merged over what it has).
    #[serde(default)]
    data: Option<Map<String, Value>>,
}

impl EventProxy {
    pub fn new(
        settings: &ProxySettings,
        client: BackendClient,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        room_name_max: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            hub,
            metrics,
            in_flight: Semaphore::new(settings.max_concurrency),
            max_pending_per_socket: settings.max_pending_per_socket,
            max_backlog: settings.max_backlog,
            backlog: AtomicUsize::new(0),
            queues: Mutex::new(HashMap::new()),
            room_name_max,
        })
    }

    /// Registers a proxied event on its namespace.
    pub fn install(self: &Arc<Self>, settings: &EventProxySettings) -> Result<(), String> {
        let route = Arc::new(Route {
            event: settings.event.clone(),
            url: settings.url.clone(),
            timeout: settings.timeout.0,
            headers: CallHeaders::new(&settings.headers, &settings.forward_headers)?,
        });
        let namespace = self.hub.namespace(&settings.namespace);
        let proxy = self.clone();
        namespace.on(settings.event.clone(), move |socket, event| {
            proxy.enqueue(socket, &route, event);
        });
        Ok(())
    }

    /// The client headers the proxied events pass on.
    pub fn forwarded_headers(settings: &ProxySettings) -> Vec<http::HeaderName> {
        settings
            .events
            .iter()
            .filter_map(|e| CallHeaders::new(&Default::default(), &e.forward_headers).ok())
            .flat_map(|h| h.forwarded().to_vec())
            .collect()
    }

    /// Queues a client event behind the socket's others (called in the order they arrived).
    fn enqueue(self: &Arc<Self>, socket: &Arc<Socket>, route: &Arc<Route>, mut event: Event) {
        if self.backlog.load(Ordering::Relaxed) >= self.max_backlog {
            self.metrics.count_proxy("event", "backlog_full");
            return refuse(
                event.take_ack(),
                ErrorCode::BackendBusy.as_str(),
                "too many events wait for the backend",
            );
        }
        let job = Job {
            socket: socket.clone(),
            route: route.clone(),
            event,
        };
        let mut queues = self.queues.lock();
        match queues.get_mut(socket.id()) {
            Some(waiting) if waiting.len() >= self.max_pending_per_socket => {
                drop(queues);
                self.metrics.count_proxy("event", "backlog_full");
                let mut event = job.event;
                refuse(
                    event.take_ack(),
                    ErrorCode::BackendBusy.as_str(),
                    "too many of your events wait for the backend",
                );
            }
            Some(waiting) => {
                self.backlog.fetch_add(1, Ordering::Relaxed);
                waiting.push_back(job);
            }
            None => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    drop(queues);
                    let mut event = job.event;
                    return refuse(
                        event.take_ack(),
                        ErrorCode::BackendError.as_str(),
                        "no runtime to call the backend on",
                    );
                };
                queues.insert(socket.id().clone(), VecDeque::new());
                self.backlog.fetch_add(1, Ordering::Relaxed);
                let proxy = self.clone();
                runtime.spawn(async move { proxy.drain(job).await });
            }
        }
    }

    /// Handles a socket's events one after another until none waits.
    async fn drain(self: Arc<Self>, first: Job) {
        let id = first.socket.id().clone();
        let mut job = first;
        loop {
            self.handle(job).await;
            self.backlog.fetch_sub(1, Ordering::Relaxed);
            let next = {
                let mut queues = self.queues.lock();
                match queues.get_mut(&id).and_then(VecDeque::pop_front) {
                    Some(next) => next,
                    None => {
                        queues.remove(&id);
                        return;
                    }
                }
            };
            job = next;
        }
    }

    async fn handle(&self, job: Job) {
        let Job {
            socket,
            route,
            mut event,
        } = job;
        let ack = event.take_ack();
        let body = EventCall {
            namespace: socket.namespace().name(),
            event: &route.event,
            args: &event.args,
            attachments: event
                .attachments
                .iter()
                .map(|a| base64::engine::general_purpose::STANDARD.encode(a))
                .collect(),
            ack: ack.is_some(),
            socket: SocketView {
                id: socket.id(),
                user: socket.user(),
                data: socket.data(),
                rooms: socket
                    .rooms()
                    .iter()
                    .filter(|r| **r != *socket.id())
                    .map(|r| r.to_string())
                    .collect(),
                headers: route.headers.from_client(socket.conn().request()),
            },
        };
        let answer = {
            let Ok(_permit) = self.in_flight.acquire().await else {
                return refuse(
                    ack,
                    ErrorCode::BackendError.as_str(),
                    "the event proxy is shutting down",
                );
            };
            self.client
                .post_json::<EventAnswer>(
                    Traced::named("event proxy"),
                    &route.url,
                    route.timeout,
                    route.headers.fixed(),
                    &body,
                )
                .await
        };
        match answer {
            Ok((answer, took)) => {
                self.metrics.observe_proxy("event", took);
                self.metrics.count_proxy("event", "answered");
                self.apply(&socket, answer, ack);
            }
            Err(error) => {
                self.metrics.count_proxy("event", error.outcome());
                tracing::warn!(%error, url = %route.url, event = %route.event, socket = %socket.id(), "event proxy failed");
                let (code, message) = match &error {
                    CallError::Status { status, .. } if *status < 500 => (
                        ErrorCode::BackendRefused.as_str(),
                        format!("the backend refused the event ({status})"),
                    ),
                    CallError::BadAnswer(_) => (
                        ErrorCode::BackendError.as_str(),
                        "the backend's answer was not understood".to_owned(),
                    ),
                    _ => (
                        ErrorCode::BackendUnavailable.as_str(),
                        "the backend did not answer; try again".to_owned(),
                    ),
                };
                refuse(ack, code, &message);
            }
        }
    }

    /// Does what the backend answered: data, rooms, emits, then the ack (so the client's
    /// callback runs once the rest is done).
    fn apply(&self, socket: &Arc<Socket>, answer: EventAnswer, ack: Option<Ack>) {
        if let Some(data) = answer.data {
            for (key, value) in data {
                socket.set_data(key, value);
            }
        }
        let valid = |room: &&String| !room.is_empty() && room.len() <= self.room_name_max;
        for room in answer.join.iter().filter(valid) {
            socket.join(room.as_str());
        }
        for room in answer.leave.iter().filter(valid) {
            socket.leave(room);
        }
        for (index, mut emit) in answer.emit.into_iter().enumerate() {
            if emit.namespace.is_none() {
                emit.namespace = Some(socket.namespace().name().to_owned());
            }
            match emit.prepare(&self.hub) {
                Ok(prepared) => {
                    prepared.run();
                    self.metrics.count_emit("proxy");
                }
                Err(error) => {
                    tracing::warn!(field = ?error.field, "event proxy answer: emit[{index}] refused: {error}");
                }
            }
        }
        if let Some(ack) = ack {
            let args = match answer.ack {
                Some(Value::Array(args)) => args,
                Some(value) => vec![value],
                None => Vec::new(),
            };
            ack.send(&args);
        }
    }
}

/// Answers a client's callback with an error (when it passed one).
fn refuse(ack: Option<Ack>, code: &str, message: &str) {
    if let Some(ack) = ack {
        ack.send(&[json!({ "error": { "code": code, "message": message } })]);
    }
}
