//! The Redis driver: channels through Redis pub/sub, keys through SET/GET with PX, and, with
//! `adapter = "streams"`, one Redis stream as the log (`stream.rs`). A Redis Cluster has a
//! driver of its own (`cluster.rs`, sharded pub/sub: `adapter = "sharded"`).
//!
//! Two tasks own the two connections. The publisher sends what the core gives it, in order
//! (several commands in one pipeline when they queue up): PUBLISH, SET, PEXPIRE, DEL, XADD. The
//! subscriber holds the subscriptions (channels, and prefixes as patterns), renews them on each
//! reconnect and tells the core [`Incoming::Up`] then, and passes every message on in the order
//! Redis delivered them. Both reconnect by themselves; what is published while Redis is
//! unreachable is lost, as with any pub/sub adapter. Both end on the shutdown signal.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::driver::{Driver, DriverError, Incoming, IncomingSender, KeyValues, Log, Topic};
use crate::hub::adapter::{BoxFuture, NotTaken, TakenSender};

mod cluster;
mod cluster_log;
mod commands;
pub mod resp;
mod sharded_subscriber;
mod slots;
mod stream;

pub use cluster::RedisClusterDriver;
use commands::*;
pub use stream::StreamSettings;

/// What commands wait for the publisher at most; past it a command is dropped (and logged).
const OUTBOX_CAPACITY: usize = 65_536;
/// Commands sent in one pipeline at most.
const PIPELINE_MAX: usize = 256;
/// Connecting to Redis, and each command, gives up after this long.
const REDIS_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum RedisDriverError {
    #[error("invalid Redis URL: {0}")]
    Url(String),
}

/// What the publisher task is given.
enum Outgoing {
    /// A command, sent in order with the others; its sender, when given, is told once Redis
    /// has answered it (with the entry's offset for an XADD).
    Command(redis::Cmd, Option<TakenSender>),
    /// Told once everything given before it has been sent (or dropped).
    Sent(oneshot::Sender<()>),
}

pub struct RedisDriver {
    client: redis::Client,
    url: String,
    outbox: mpsc::Sender<Outgoing>,
    topics: Mutex<HashSet<Topic>>,
    topic_changes: mpsc::UnboundedSender<(Topic, bool)>,
    up: AtomicBool,
    /// The publisher's connection (also used for reads).
    connection: Mutex<Option<MultiplexedConnection>>,
    /// The log reader's connection (its reads block).
    reader: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    relink: Notify,
    dropped: AtomicU64,
    stream: Option<StreamSettings>,
}

impl RedisDriver {
    /// Starts the driver's tasks (on the current Tokio runtime); they connect in the
    /// background, keep reconnecting, and end on `shutdown`. With `stream`, the driver has a
    /// log.
    pub fn start(
        url: &str,
        stream: Option<StreamSettings>,
        incoming: IncomingSender,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, RedisDriverError> {
        let client = redis::Client::open(url).map_err(|e| RedisDriverError::Url(e.to_string()))?;
        let (outbox, outgoing) = mpsc::channel(OUTBOX_CAPACITY);
        let (topic_changes, changes) = mpsc::unbounded_channel();
        let driver = Arc::new(Self {
            client,
            url: url.to_owned(),
            outbox,
            topics: Mutex::new(HashSet::new()),
            topic_changes,
            up: AtomicBool::new(false),
            connection: Mutex::new(None),
            reader: tokio::sync::Mutex::new(None),
            relink: Notify::new(),
            dropped: AtomicU64::new(0),
            stream,
        });
        tokio::spawn(driver.clone().publish_loop(outgoing, shutdown.clone()));
        tokio::spawn(driver.clone().subscribe_loop(changes, incoming, shutdown));
        Ok(driver)
    }

    /// Queues `command` for the publisher. When the queue is full it is dropped (and `taken`
    /// with it: its waiter learns it was not taken).
    fn send(&self, command: redis::Cmd, taken: Option<TakenSender>) {
        if self
            .outbox
            .try_send(Outgoing::Command(command, taken))
            .is_err()
        {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::error!(
                    dropped,
                    "cluster: the Redis publisher is too far behind; messages to other nodes dropped"
                );
            }
        }
    }

    async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(connection) = self.connection.lock().clone() {
            return Ok(connection);
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT);
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *self.connection.lock() = Some(connection.clone());
        Ok(connection)
    }

    /// Runs one command on the publisher's connection (a read), forgetting the connection
    /// when it fails.
    async fn query<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Result<T, DriverError> {
        let mut connection = self.connection().await.map_err(error)?;
        let answer = command.query_async::<T>(&mut connection).await;
        if answer.is_err() {
            *self.connection.lock() = None;
        }
        answer.map_err(error)
    }

    /// Publishes what the core says, in order; a batch that cannot be sent after a few tries
    /// is dropped so that a Redis outage does not hold everything after it. A command whose
    /// waiter has stopped waiting (and answered its caller that it was not taken) is not sent.
    async fn publish_loop(
        self: Arc<Self>,
        mut outgoing: mpsc::Receiver<Outgoing>,
        shutdown: CancellationToken,
    ) {
        let mut batch = Vec::with_capacity(PIPELINE_MAX);
        loop {
            let received = tokio::select! {
                // What was given before the signal is sent first (a node's goodbye).
                biased;
                received = outgoing.recv_many(&mut batch, PIPELINE_MAX) => received,
                _ = shutdown.cancelled() => return,
            };
            if received == 0 {
                return;
            }
            let mut commands = Vec::new();
            let mut waiting = Vec::new();
            for item in batch.drain(..) {
                match item {
                    Outgoing::Command(command, taken) => commands.push((command, taken)),
                    Outgoing::Sent(done) => waiting.push(done),
                }
            }
            if !commands.is_empty() {
                self.send_pipeline(commands).await;
            }
            for done in waiting {
                let _ = done.send(());
            }
        }
    }

    /// Sends commands in one pipeline and tells each waiter Redis's reply (or that it was not
    /// taken). A failure to connect is retried a few times; a command whose waiter has stopped
    /// waiting meanwhile (and answered its caller that it was not taken) is left out, so that
    /// what a caller was told 503 for is not sent after all. A failure once the commands went
    /// out is not retried (Redis may have published some of them, and a second try would
    /// deliver those twice): the batch is dropped and logged, as the Socket.IO adapter does.
    async fn send_pipeline(&self, mut commands: Vec<(redis::Cmd, Option<TakenSender>)>) {
        let mut tries = 0;
        let error = loop {
            let connected = self.connection().await;
            // Only now: a waiter may have given up while Redis could not be reached.
            commands.retain(|(_, taken)| !taken.as_ref().is_some_and(|t| t.is_closed()));
            if commands.is_empty() {
                return;
            }
            match connected {
                Ok(mut connection) => {
                    let mut pipe = redis::pipe();
                    for (command, _) in &commands {
                        pipe.add_command(command.clone());
                    }
                    match pipe.query_async::<Vec<redis::Value>>(&mut connection).await {
                        Ok(replies) => {
                            for ((_, taken), reply) in commands.into_iter().zip(replies) {
                                if let Some(taken) = taken {
                                    let _ = taken.send(Ok(stream::entry_offset(&reply)));
                                }
                            }
                            return;
                        }
                        Err(error) => break error,
                    }
                }
                Err(error) => {
                    tries += 1;
                    if tries == 5 {
                        break error;
                    }
                    tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                }
            }
        };
        *self.connection.lock() = None;
        let messages = commands.len();
        self.dropped.fetch_add(messages as u64, Ordering::Relaxed);
        tracing::error!(%error, messages, "cluster: could not publish to Redis; messages dropped");
        for (_, taken) in commands {
            if let Some(taken) = taken {
                let _ = taken.send(Err(NotTaken));
            }
        }
    }

    /// Holds the subscriptions and passes on what arrives; reconnects when Redis goes away.
    async fn subscribe_loop(
        self: Arc<Self>,
        mut changes: mpsc::UnboundedReceiver<(Topic, bool)>,
        incoming: IncomingSender,
        shutdown: CancellationToken,
    ) {
        let mut logged_down = false;
        loop {
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = self.subscribe_once(&mut changes, &incoming) => outcome,
            };
            match outcome {
                Ok(()) => {
                    tracing::warn!("cluster: lost the Redis subscription; reconnecting");
                    logged_down = false;
                }
                Err(error) if !logged_down => {
                    tracing::warn!(%error, url = %self.url, "cluster: cannot reach Redis; retrying");
                    logged_down = true;
                }
                Err(_) => {}
            }
            self.up.store(false, Ordering::Release);
            // The publisher's connection most likely went with it: the next publish opens a
            // new one rather than failing on the dead one first.
            *self.connection.lock() = None;
            if incoming.is_closed() {
                return;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn subscribe_once(
        &self,
        changes: &mut mpsc::UnboundedReceiver<(Topic, bool)>,
        incoming: &IncomingSender,
    ) -> redis::RedisResult<()> {
        let (mut sink, mut stream) = self.client.get_async_pubsub().await?.split();
        let topics: Vec<Topic> = self.topics.lock().iter().cloned().collect();
        for topic in topics {
            change(&mut sink, topic, true).await?;
        }
        self.up.store(true, Ordering::Release);
        tracing::info!("cluster: subscribed to Redis");
        let _ = incoming.send(Incoming::Up);
        loop {
            tokio::select! {
                _ = self.relink.notified() => return Ok(()),
                received = stream.next() => match received {
                    Some(received) => {
                        let _ = incoming.send(Incoming::Message {
                            channel: received.get_channel_name().to_owned(),
                            payload: received.get_payload_bytes().to_vec(),
                        });
                    }
                    None => return Ok(()),
                },
                topic = changes.recv() => {
                    if let Some((topic, on)) = topic {
                        change(&mut sink, topic, on).await?;
                    }
                }
            }
        }
    }

    /// The local address of a route to Redis: the interface other machines on that network
    /// most likely reach this one on.
    async fn ip_toward_redis(&self) -> Option<IpAddr> {
        let (host, port) = match &self.client.get_connection_info().addr {
            redis::ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
            redis::ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port),
            _ => return None,
        };
        ip_toward(&host, port).await
    }
}

impl Driver for RedisDriver {
    fn publish(&self, channel: String, payload: Vec<u8>, taken: Option<TakenSender>) {
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(channel).arg(payload);
        self.send(publish, taken);
    }

    fn subscribe(&self, topic: Topic) {
        if self.topics.lock().insert(topic.clone()) {
            let _ = self.topic_changes.send((topic, true));
        }
    }

    fn unsubscribe(&self, topic: Topic) {
        if self.topics.lock().remove(&topic) {
            let _ = self.topic_changes.send((topic, false));
        }
    }

    fn set(&self, key: String, value: Vec<u8>, ttl: Duration) {
        self.send(set_command(&key, value, ttl), None);
    }

    fn expire(&self, key: String, ttl: Duration) {
        self.send(expire_command(&key, ttl), None);
    }

    fn delete(&self, key: String) {
        self.send(delete_command(&key), None);
    }

    fn map_set(&self, key: String, field: String, value: Vec<u8>, ttl: Duration) {
        let (set, expire) = map_set_commands(&key, &field, value, ttl);
        self.send(set, None);
        self.send(expire, None);
    }

    fn map_all(&self, key: String) -> BoxFuture<'_, Result<KeyValues, DriverError>> {
        Box::pin(async move {
            let mut all = redis::cmd("HGETALL");
            all.arg(key);
            self.query(all).await
        })
    }

    fn get(&self, key: String) -> BoxFuture<'_, Result<Option<Vec<u8>>, DriverError>> {
        Box::pin(async move {
            let mut get = redis::cmd("GET");
            get.arg(key);
            self.query(get).await
        })
    }

    fn take(&self, key: String) -> BoxFuture<'_, Result<Option<Vec<u8>>, DriverError>> {
        Box::pin(async move {
            let mut connection = self.connection().await.map_err(error)?;
            let (value,): (Option<Vec<u8>>,) = redis::pipe()
                .atomic()
                .get(&key)
                .del(&key)
                .ignore()
                .query_async(&mut connection)
                .await
                .map_err(error)?;
            Ok(value)
        })
    }

    fn scan(&self, prefix: String) -> BoxFuture<'_, Result<KeyValues, DriverError>> {
        Box::pin(async move {
            let mut keys = Vec::new();
            let mut cursor = 0u64;
            loop {
                let (next, found): (u64, Vec<String>) =
                    self.query(scan_command(&prefix, cursor)).await?;
                keys.extend(found);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            values_of(keys, |get| self.query(get)).await
        })
    }

    fn listeners(&self, channel: String) -> BoxFuture<'_, Option<usize>> {
        Box::pin(async move {
            let mut numsub = redis::cmd("PUBSUB");
            numsub.arg("NUMSUB").arg(channel);
            let (_, count): (String, usize) = self.query(numsub).await.ok()?;
            Some(count)
        })
    }

    fn log(&self) -> Option<&dyn Log> {
        self.stream.as_ref().map(|_| self as &dyn Log)
    }

    fn sent(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let (done, sent) = oneshot::channel();
            if self.outbox.try_send(Outgoing::Sent(done)).is_ok() {
                let _ = sent.await;
            }
        })
    }

    fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    fn relink(&self) {
        self.relink.notify_one();
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn local_ip(&self) -> BoxFuture<'_, Option<IpAddr>> {
        Box::pin(self.ip_toward_redis())
    }
}
