//! The PostgreSQL driver's writer: what the core says (notifications, key writes, log appends),
//! in order on one connection, pipelined, with the statements it runs most prepared once; a
//! payload that does not fit a notification goes through the attachments table first.

use super::*;

impl PostgresDriver {
    /// Says what the core gives, in order, on one connection. What queued up is sent
    /// pipelined (each statement sent before the previous one's answer came, PostgreSQL still
    /// running them in order), except a payload that needs two statements (an attachment, then
    /// its notification), sent alone so that nothing comes between them. A statement that fails
    /// drops its message (its waiter learns it was not taken) and the connection is opened
    /// again.
    pub(super) async fn write_loop(
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
    pub(super) async fn write_all(&self, client: &mut Option<Writer>, items: Vec<Outgoing>) {
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
    pub(super) async fn connect_writer(&self) -> Option<Writer> {
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

    pub(super) async fn write(
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
    pub(super) async fn notify(
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

    pub(super) async fn notify_attachment(
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
