//! The PostgreSQL driver (`[cluster] adapter = "postgres"`): channels through `LISTEN`/`NOTIFY`
//! (what does not fit a notification, 8,000 bytes, or is not text goes through the
//! `socket_io_attachments` table, as `@socket.io/postgres-adapter` does), keys in a table with
//! an expiry, and the log in a table (`schema.rs`), so a cluster needs PostgreSQL alone.
//!
//! Three connections: the listener (LISTEN on every subscribed channel and the log's channel;
//! renewed on reconnect, then [`Incoming::Up`]), the writer (what the core says, in order:
//! notifications, key writes, log appends) and the reader (key reads, log reads). Each
//! reconnects by itself; every task ends on the shutdown signal. A table sweep every 30 s
//! removes expired keys, attachments older than a minute, and log entries past the configured
//! count or older than the recovery window.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_postgres::{AsyncMessage, Client, NoTls};
use tokio_util::sync::CancellationToken;

use super::driver::{
    Driver, DriverError, Incoming, IncomingSender, KeyValues, Log, LogEntry, Topic, entry_id_parts,
    tell_taken,
};
use crate::hub::adapter::{BoxFuture, NotTaken, TakenSender};

mod listen;
mod log;
mod schema;
mod write;

/// What a notification carries at most; a larger payload goes through the attachments table.
const NOTIFY_MAX: usize = 8_000;
/// What waits for the writer at most; past it a message is dropped (and counted).
const OUTBOX_CAPACITY: usize = 65_536;
/// Connecting, and each statement, gives up after this long.
const PG_TIMEOUT: Duration = Duration::from_secs(3);
/// How often old rows are removed.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// Statements sent pipelined at most.
const PIPELINE_MAX: usize = 64;
/// Log entries read at once at most.
const READ_COUNT: i64 = 1000;

/// `[cluster]` settings of the PostgreSQL driver.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    /// The channel prefix (`channelPrefix` of the Node.js adapter).
    pub prefix: String,
    /// The attachments table (`tableName` of the Node.js adapter).
    pub attachments_table: String,
    /// The log keeps about this many entries.
    pub log_max_len: usize,
    /// Log entries older than this are removed (the recovery window).
    pub log_max_age: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum PostgresDriverError {
    #[error("invalid PostgreSQL URL: {0}")]
    Url(String),
}

/// What the writer is given.
enum Outgoing {
    Notify(String, Vec<u8>, Option<TakenSender>),
    Set(String, Vec<u8>, Duration),
    Expire(String, Duration),
    Delete(String),
    Append(Vec<(&'static str, Vec<u8>)>, Option<TakenSender>),
    Sent(oneshot::Sender<()>),
}

/// The writer's connection and the statements it runs most, prepared once.
struct Writer {
    client: Client,
    append: tokio_postgres::Statement,
    notify: tokio_postgres::Statement,
}

pub struct PostgresDriver {
    config: tokio_postgres::Config,
    settings: PostgresSettings,
    outbox: mpsc::Sender<Outgoing>,
    topics: Mutex<HashSet<String>>,
    topic_changes: mpsc::UnboundedSender<(String, bool)>,
    up: AtomicBool,
    reader: Mutex<Option<Arc<Client>>>,
    /// Woken by each notification on the log's channel.
    appended: Notify,
    relink: Notify,
    dropped: AtomicU64,
    log_channel: String,
}

impl PostgresDriver {
    /// Starts the driver's tasks (on the current Tokio runtime); they connect in the background,
    /// keep reconnecting, and end on `shutdown`.
    pub fn start(
        settings: PostgresSettings,
        incoming: IncomingSender,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, PostgresDriverError> {
        let mut config: tokio_postgres::Config = settings
            .url
            .parse()
            .map_err(|e: tokio_postgres::Error| PostgresDriverError::Url(e.to_string()))?;
        config.connect_timeout(PG_TIMEOUT);
        let (outbox, outgoing) = mpsc::channel(OUTBOX_CAPACITY);
        let (topic_changes, changes) = mpsc::unbounded_channel();
        let driver = Arc::new(Self {
            log_channel: format!("{}-switchboard-log", settings.prefix),
            config,
            settings,
            outbox,
            topics: Mutex::new(HashSet::new()),
            topic_changes,
            up: AtomicBool::new(false),
            reader: Mutex::new(None),
            appended: Notify::new(),
            relink: Notify::new(),
            dropped: AtomicU64::new(0),
        });
        tokio::spawn(driver.clone().write_loop(outgoing, shutdown.clone()));
        tokio::spawn(
            driver
                .clone()
                .listen_loop(changes, incoming, shutdown.clone()),
        );
        tokio::spawn(driver.clone().sweep_loop(shutdown));
        Ok(driver)
    }

    /// A new connection, driven by a task of its own (its notifications dropped).
    async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    fn queue(&self, outgoing: Outgoing) {
        if let Err(refused) = self.outbox.try_send(outgoing) {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::error!(
                    dropped,
                    "cluster: the PostgreSQL writer is too far behind; messages dropped"
                );
            }
            let taken = match refused.into_inner() {
                Outgoing::Notify(_, _, taken) | Outgoing::Append(_, taken) => taken,
                _ => None,
            };
            if let Some(taken) = taken {
                let _ = taken.send(Err(NotTaken));
            }
        }
    }

    /// The reader's connection (opened again when it failed).
    async fn reader(&self) -> Result<Arc<Client>, DriverError> {
        if let Some(client) = self.reader.lock().clone()
            && !client.is_closed()
        {
            return Ok(client);
        }
        let client = Arc::new(self.connect().await.map_err(error)?);
        *self.reader.lock() = Some(client.clone());
        Ok(client)
    }

    /// Runs a read on the reader's connection, at most [`PG_TIMEOUT`].
    async fn read<T, F, Fut>(&self, query: F) -> Result<T, DriverError>
    where
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let client = self.reader().await?;
        match tokio::time::timeout(PG_TIMEOUT, query(client)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(failed)) => {
                *self.reader.lock() = None;
                Err(error(failed))
            }
            Err(_) => {
                *self.reader.lock() = None;
                Err(DriverError("PostgreSQL did not answer in time".into()))
            }
        }
    }

    /// Runs one statement on the key-value table with a key (or prefix) as its one parameter.
    async fn kv_rows(
        &self,
        statement: &'static str,
        key: String,
    ) -> Result<Vec<tokio_postgres::Row>, DriverError> {
        self.read(|client| async move { client.query(statement, &[&key]).await })
            .await
    }

    /// Removes expired keys, old attachments and log entries past the count or the age.
    async fn sweep_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
            }
            let attachments = format!(
                "DELETE FROM {} WHERE created_at < NOW() - interval '60 seconds'",
                self.settings.attachments_table
            );
            let (max_len, max_age) = (
                self.settings.log_max_len as i64,
                millis(self.settings.log_max_age),
            );
            let swept = self
                .read(|client| async move {
                    client.execute("DELETE FROM switchboard_kv WHERE expires_at < NOW()", &[]).await?;
                    client.execute(&attachments, &[]).await?;
                    client
                        .execute(
                            "DELETE FROM switchboard_log WHERE created_at < NOW() - $1 * interval '1 millisecond' \
                             OR (ms, n) < (SELECT ms, n FROM switchboard_log ORDER BY ms DESC, n DESC OFFSET $2 LIMIT 1)",
                            &[&max_age, &max_len],
                        )
                        .await
                })
                .await;
            if let Err(error) = swept {
                tracing::debug!(%error, "cluster: the PostgreSQL sweep failed");
            }
        }
    }
}

/// An identifier, double-quoted (for LISTEN).
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn millis(duration: Duration) -> f64 {
    duration.as_millis().max(1) as f64
}

fn error(error: tokio_postgres::Error) -> DriverError {
    DriverError(error.to_string())
}

impl Driver for PostgresDriver {
    fn publish(&self, channel: String, payload: Vec<u8>, taken: Option<TakenSender>) {
        self.queue(Outgoing::Notify(channel, payload, taken));
    }

    /// Channels only: PostgreSQL has no patterns (the core asks for none on this driver).
    fn subscribe(&self, topic: Topic) {
        if let Topic::Channel(channel) = topic
            && self.topics.lock().insert(channel.clone())
        {
            let _ = self.topic_changes.send((channel, true));
        }
    }

    fn unsubscribe(&self, topic: Topic) {
        if let Topic::Channel(channel) = topic
            && self.topics.lock().remove(&channel)
        {
            let _ = self.topic_changes.send((channel, false));
        }
    }

    fn set(&self, key: String, value: Vec<u8>, ttl: Duration) {
        self.queue(Outgoing::Set(key, value, ttl));
    }

    fn expire(&self, key: String, ttl: Duration) {
        self.queue(Outgoing::Expire(key, ttl));
    }

    fn delete(&self, key: String) {
        self.queue(Outgoing::Delete(key));
    }

    fn get(&self, key: String) -> BoxFuture<'_, Result<Option<Vec<u8>>, DriverError>> {
        Box::pin(async move {
            let rows = self
                .kv_rows(
                    "SELECT value FROM switchboard_kv WHERE key = $1 AND expires_at > NOW()",
                    key,
                )
                .await?;
            Ok(rows.first().map(|row| row.get(0)))
        })
    }

    fn take(&self, key: String) -> BoxFuture<'_, Result<Option<Vec<u8>>, DriverError>> {
        Box::pin(async move {
            let rows = self
                .kv_rows(
                    "DELETE FROM switchboard_kv WHERE key = $1 RETURNING value, expires_at > NOW()",
                    key,
                )
                .await?;
            Ok(rows
                .first()
                .filter(|row| row.get::<_, bool>(1))
                .map(|row| row.get(0)))
        })
    }

    fn scan(&self, prefix: String) -> BoxFuture<'_, Result<KeyValues, DriverError>> {
        Box::pin(async move {
            let rows = self
                .kv_rows(
                    "SELECT key, value FROM switchboard_kv WHERE starts_with(key, $1) AND expires_at > NOW()",
                    prefix,
                )
                .await?;
            Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
        })
    }

    fn log(&self) -> Option<&dyn Log> {
        Some(self)
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
}
