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

mod schema;

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

    /// Says what the core gives, in order, on one connection. What queued up is sent
    /// pipelined (each statement sent before the previous one's answer came, PostgreSQL still
    /// running them in order), except a payload that needs two statements (an attachment, then
    /// its notification), sent alone so that nothing comes between them. A statement that fails
    /// drops its message (its waiter learns it was not taken) and the connection is opened
    /// again.
    async fn write_loop(
        self: Arc<Self>,
        mut outgoing: mpsc::Receiver<Outgoing>,
        shutdown: CancellationToken,
    ) {
        let mut client: Option<Writer> = None;
        let mut batch = Vec::with_capacity(PIPELINE_MAX);
        loop {
            let received = tokio::select! {
                biased;
                received = outgoing.recv_many(&mut batch, PIPELINE_MAX) => received,
                _ = shutdown.cancelled() => return,
            };
            if received == 0 {
                return;
            }
            let mut run = Vec::new();
            let mut sent = Vec::new();
            for item in batch.drain(..) {
                match item {
                    Outgoing::Sent(done) => sent.push(done),
                    Outgoing::Notify(_, _, Some(ref taken))
                    | Outgoing::Append(_, Some(ref taken))
                        if taken.is_closed() => {}
                    item if one_statement(&item) => run.push(item),
                    item => {
                        self.write_all(&mut client, std::mem::take(&mut run)).await;
                        self.write_all(&mut client, vec![item]).await;
                    }
                }
            }
            self.write_all(&mut client, run).await;
            for done in sent {
                let _ = done.send(());
            }
        }
    }

    /// Writes `items` pipelined on the writer's connection (opened when needed).
    async fn write_all(&self, client: &mut Option<Writer>, items: Vec<Outgoing>) {
        if items.is_empty() {
            return;
        }
        if client.as_ref().is_none_or(|w| w.client.is_closed()) {
            *client = self.connect_writer().await;
        }
        let Some(connected) = client.as_ref() else {
            self.dropped
                .fetch_add(items.len() as u64, Ordering::Relaxed);
            items.into_iter().for_each(refuse);
            return;
        };
        let writes = items
            .into_iter()
            .map(|item| tokio::time::timeout(PG_TIMEOUT, self.write(connected, item)));
        let failed = futures_util::future::join_all(writes)
            .await
            .into_iter()
            .filter(|outcome| !matches!(outcome, Ok(Ok(()))))
            .count();
        if failed > 0 {
            self.dropped.fetch_add(failed as u64, Ordering::Relaxed);
            tracing::error!(
                failed,
                "cluster: PostgreSQL writes failed; messages dropped"
            );
            *client = None;
        }
    }

    /// The writer's connection with its statements prepared, a few tries; none when
    /// PostgreSQL cannot be reached (or has not got the schema yet).
    async fn connect_writer(&self) -> Option<Writer> {
        for attempt in 1..=3u64 {
            let connected = async {
                let client = self.connect().await?;
                let append = client
                    .prepare("SELECT switchboard_append($1, $2, $3, $4)")
                    .await?;
                let notify = client.prepare("SELECT pg_notify($1, $2)").await?;
                Ok::<_, tokio_postgres::Error>(Writer {
                    client,
                    append,
                    notify,
                })
            };
            match connected.await {
                Ok(writer) => return Some(writer),
                Err(error) if attempt == 3 => {
                    tracing::warn!(%error, "cluster: cannot reach PostgreSQL to write");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200 * attempt)).await,
            }
        }
        None
    }

    async fn write(
        &self,
        writer: &Writer,
        outgoing: Outgoing,
    ) -> Result<(), tokio_postgres::Error> {
        let client = &writer.client;
        match outgoing {
            Outgoing::Notify(channel, payload, taken) => {
                self.notify(writer, &channel, payload).await?;
                tell_taken(taken, Ok(None));
            }
            Outgoing::Set(key, value, ttl) => {
                client
                    .execute(
                        "INSERT INTO switchboard_kv (key, value, expires_at) VALUES ($1, $2, NOW() + $3 * interval '1 millisecond') \
                         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at",
                        &[&key, &value, &millis(ttl)],
                    )
                    .await?;
            }
            Outgoing::Expire(key, ttl) => {
                client
                    .execute(
                        "UPDATE switchboard_kv SET expires_at = NOW() + $2 * interval '1 millisecond' WHERE key = $1",
                        &[&key, &millis(ttl)],
                    )
                    .await?;
            }
            Outgoing::Delete(key) => {
                client
                    .execute("DELETE FROM switchboard_kv WHERE key = $1", &[&key])
                    .await?;
            }
            Outgoing::Append(fields, taken) => {
                let field = |name: &str| {
                    fields
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                let text = |name: &str| String::from_utf8_lossy(&field(name)).into_owned();
                let kind: i32 = text("type").parse().unwrap_or(0);
                let row = client
                    .query_one(
                        &writer.append,
                        &[&text("uid"), &text("nsp"), &kind, &field("data")],
                    )
                    .await?;
                let id: String = row.get(0);
                tell_taken(taken, Ok(crate::hub::parse_offset(&id)));
            }
            Outgoing::Sent(done) => {
                let _ = done.send(());
            }
        }
        Ok(())
    }

    /// `pg_notify`, or, for a payload too large or not text, the payload in the attachments
    /// table and its id in the notification.
    async fn notify(
        &self,
        writer: &Writer,
        channel: &str,
        payload: Vec<u8>,
    ) -> Result<(), tokio_postgres::Error> {
        let client = &writer.client;
        let text = match String::from_utf8(payload) {
            Ok(text) if text.len() < NOTIFY_MAX => text,
            Ok(text) => {
                return self
                    .notify_attachment(client, channel, text.into_bytes())
                    .await;
            }
            Err(binary) => {
                return self
                    .notify_attachment(client, channel, binary.into_bytes())
                    .await;
            }
        };
        client.execute(&writer.notify, &[&channel, &text]).await?;
        Ok(())
    }

    async fn notify_attachment(
        &self,
        client: &Client,
        channel: &str,
        payload: Vec<u8>,
    ) -> Result<(), tokio_postgres::Error> {
        let insert = format!(
            "INSERT INTO {} (payload) VALUES ($1) RETURNING id",
            self.settings.attachments_table
        );
        let row = client.query_one(&insert, &[&payload]).await?;
        let id: i64 = row.get(0);
        let header = serde_json::json!({ "attachmentId": id.to_string() }).to_string();
        client
            .execute("SELECT pg_notify($1, $2)", &[&channel, &header])
            .await?;
        Ok(())
    }

    /// Listens on every subscribed channel and passes notifications on; reconnects.
    async fn listen_loop(
        self: Arc<Self>,
        mut changes: mpsc::UnboundedReceiver<(String, bool)>,
        incoming: IncomingSender,
        shutdown: CancellationToken,
    ) {
        let mut logged_down = false;
        loop {
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = self.listen_once(&mut changes, &incoming) => outcome,
            };
            match outcome {
                Ok(()) => {
                    tracing::warn!("cluster: lost the PostgreSQL listener; reconnecting");
                    logged_down = false;
                }
                Err(error) if !logged_down => {
                    tracing::warn!(%error, "cluster: cannot reach PostgreSQL; retrying");
                    logged_down = true;
                }
                Err(_) => {}
            }
            self.up.store(false, Ordering::Release);
            if incoming.is_closed() {
                return;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn listen_once(
        &self,
        changes: &mut mpsc::UnboundedReceiver<(String, bool)>,
        incoming: &IncomingSender,
    ) -> Result<(), tokio_postgres::Error> {
        let (client, mut connection) = self.config.connect(NoTls).await?;
        let (notifications, mut received) = mpsc::unbounded_channel();
        let driving = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if notifications
                            .send((n.channel().to_owned(), n.payload().to_owned()))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        let outcome = async {
            client
                .batch_execute(&schema::schema(
                    &self.settings.prefix,
                    &self.settings.attachments_table,
                ))
                .await?;
            client
                .batch_execute(&format!("LISTEN {}", quoted(&self.log_channel)))
                .await?;
            let topics: Vec<String> = self.topics.lock().iter().cloned().collect();
            for channel in topics {
                client
                    .batch_execute(&format!("LISTEN {}", quoted(&channel)))
                    .await?;
            }
            self.up.store(true, Ordering::Release);
            tracing::info!("cluster: listening on PostgreSQL");
            let _ = incoming.send(Incoming::Up);
            // What was appended while no one listened.
            self.appended.notify_waiters();
            loop {
                tokio::select! {
                    _ = self.relink.notified() => return Ok(()),
                    notification = received.recv() => {
                        let Some((channel, payload)) = notification else { return Ok(()) };
                        if channel == self.log_channel {
                            self.appended.notify_waiters();
                            continue;
                        }
                        let payload = self.resolve(payload).await;
                        let _ = incoming.send(Incoming::Message { channel, payload });
                    }
                    change = changes.recv() => {
                        if let Some((channel, on)) = change {
                            let verb = if on { "LISTEN" } else { "UNLISTEN" };
                            client.batch_execute(&format!("{verb} {}", quoted(&channel))).await?;
                        }
                    }
                }
            }
        }
        .await;
        driving.abort();
        outcome
    }

    /// A notification's payload, or the attachment it names (`{"attachmentId": ...}`).
    async fn resolve(&self, payload: String) -> Vec<u8> {
        let id = (payload.len() < 200 && payload.contains("attachmentId"))
            .then(|| serde_json::from_str::<serde_json::Value>(&payload).ok())
            .flatten()
            .and_then(|header| {
                let id = &header["attachmentId"];
                id.as_str()
                    .and_then(|s| s.parse::<i64>().ok())
                    .or_else(|| id.as_i64())
            });
        let Some(id) = id else {
            return payload.into_bytes();
        };
        let select = format!(
            "SELECT payload FROM {} WHERE id = $1",
            self.settings.attachments_table
        );
        match self
            .read(|client| async move { client.query_opt(&select, &[&id]).await })
            .await
        {
            Ok(Some(row)) => row.get::<_, Vec<u8>>(0),
            _ => {
                tracing::warn!(id, "cluster: a notification's attachment could not be read");
                Vec::new()
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

/// Whether a message is written with one statement (a notification with a payload that fits).
fn one_statement(outgoing: &Outgoing) -> bool {
    match outgoing {
        Outgoing::Notify(_, payload, _) => {
            payload.len() < NOTIFY_MAX && std::str::from_utf8(payload).is_ok()
        }
        _ => true,
    }
}

/// A message that could not be written: its waiter learns it was not taken.
fn refuse(outgoing: Outgoing) {
    match outgoing {
        Outgoing::Notify(_, _, taken) | Outgoing::Append(_, taken) => {
            tell_taken(taken, Err(NotTaken))
        }
        Outgoing::Sent(done) => {
            let _ = done.send(());
        }
        _ => {}
    }
}

/// A log entry's id and fields from a row of `switchboard_log`.
fn entry(row: &tokio_postgres::Row) -> LogEntry {
    let (ms, n): (i64, i64) = (row.get(0), row.get(1));
    let fields = vec![
        ("uid".to_owned(), row.get::<_, String>(2).into_bytes()),
        ("nsp".to_owned(), row.get::<_, String>(3).into_bytes()),
        (
            "type".to_owned(),
            row.get::<_, i32>(4).to_string().into_bytes(),
        ),
        ("data".to_owned(), row.get::<_, Vec<u8>>(5)),
    ];
    (format!("{ms}-{n}"), fields)
}

const ENTRY_COLUMNS: &str = "ms, n, uid, nsp, type, data";

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

impl Log for PostgresDriver {
    fn append(&self, fields: Vec<(&'static str, Vec<u8>)>, taken: Option<TakenSender>) {
        self.queue(Outgoing::Append(fields, taken));
    }

    fn newest(&self) -> BoxFuture<'_, Result<Option<String>, DriverError>> {
        Box::pin(async move {
            let row = self
                .read(|client| async move {
                    client
                        .query_opt(
                            "SELECT ms, n FROM switchboard_log ORDER BY ms DESC, n DESC LIMIT 1",
                            &[],
                        )
                        .await
                })
                .await?;
            Ok(row.map(|row| format!("{}-{}", row.get::<_, i64>(0), row.get::<_, i64>(1))))
        })
    }

    fn read_after(
        &self,
        after: String,
        block: Duration,
    ) -> BoxFuture<'_, Result<Vec<LogEntry>, DriverError>> {
        Box::pin(async move {
            let (ms, n) = entry_id_parts(&after);
            let deadline = tokio::time::Instant::now() + block;
            loop {
                // Listening before reading: an append between the two wakes the wait.
                let appended = self.appended.notified();
                let query = format!(
                    "SELECT {ENTRY_COLUMNS} FROM switchboard_log WHERE (ms, n) > ($1, $2) ORDER BY ms, n LIMIT {READ_COUNT}"
                );
                let rows = self
                    .read(|client| async move { client.query(&query, &[&ms, &n]).await })
                    .await?;
                if !rows.is_empty() {
                    return Ok(rows.iter().map(entry).collect());
                }
                if tokio::time::timeout_at(deadline, appended).await.is_err() {
                    return Ok(Vec::new());
                }
            }
        })
    }

    fn contains(&self, id: String) -> BoxFuture<'_, Result<bool, DriverError>> {
        Box::pin(async move {
            let (ms, n) = entry_id_parts(&id);
            let row = self
                .read(|client| async move {
                    client
                        .query_opt(
                            "SELECT 1 FROM switchboard_log WHERE ms = $1 AND n = $2",
                            &[&ms, &n],
                        )
                        .await
                })
                .await?;
            Ok(row.is_some())
        })
    }

    fn range(
        &self,
        after: String,
        through: String,
        count: usize,
    ) -> BoxFuture<'_, Result<Vec<LogEntry>, DriverError>> {
        Box::pin(async move {
            let ((ms, n), (to_ms, to_n)) = (entry_id_parts(&after), entry_id_parts(&through));
            let count = count as i64;
            let query = format!(
                "SELECT {ENTRY_COLUMNS} FROM switchboard_log WHERE (ms, n) > ($1, $2) AND (ms, n) <= ($3, $4) \
                 ORDER BY ms, n LIMIT $5"
            );
            let rows = self
                .read(|client| async move {
                    client
                        .query(&query, &[&ms, &n, &to_ms, &to_n, &count])
                        .await
                })
                .await?;
            Ok(rows.iter().map(entry).collect())
        })
    }
}
