//! The PostgreSQL driver's writer: what the core says (notifications, key writes, log appends),
//! in order on one connection, pipelined, with the statements it runs most prepared once; a
//! payload that does not fit a notification goes through the attachments table first.

use super::*;
use crate::cluster::stream_message;

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
                // In the log: taken, whatever becomes of the mirror below.
                tell_taken(taken, Ok(crate::hub::parse_offset(&id)));
                // What `switchboard_append` does not mirror to Node.js servers on the postgres
                // adapter (large, or binary) goes to them through the attachments table, as
                // the best it can (they keep no log: a failure here loses it for them only).
                let data = field("data");
                if !schema::mirrored_in_sql(&data)
                    && let Some(message) = stream_message::mirrored_message(
                        &text("uid"),
                        &text("nsp"),
                        u64::try_from(kind).unwrap_or_default(),
                        &data,
                        &id,
                    )
                {
                    let channel = format!("{}#{}", self.settings.prefix, text("nsp"));
                    if let Err(error) = self.notify_attachment(client, &channel, message).await {
                        tracing::warn!(%error, offset = %id, "cluster: a log entry could not be mirrored to Node.js servers");
                    }
                }
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
        let header = attachment_header(&payload, id);
        client
            .execute("SELECT pg_notify($1, $2)", &[&channel, &header])
            .await?;
        Ok(())
    }
}

/// The notification naming an attachment: its id, with the sender's `uid` and the message's
/// `type` as `@socket.io/postgres-adapter` writes them (a Node.js server takes a notification
/// without a `uid` for one of its own and drops it).
fn attachment_header(payload: &[u8], id: i64) -> String {
    let mut header = serde_json::Map::new();
    let (uid, kind) = match stream_message::decode_cluster_message(payload) {
        Ok(message) => (Some(message.uid), Some(message.kind)),
        Err(_) => (
            serde_json::from_slice::<serde_json::Value>(payload)
                .ok()
                .and_then(|value| value["uid"].as_str().map(str::to_owned)),
            None,
        ),
    };
    header.insert(
        "uid".into(),
        uid.unwrap_or_else(|| "switchboard".into()).into(),
    );
    if let Some(kind) = kind {
        header.insert("type".into(), kind.into());
    }
    header.insert("attachmentId".into(), id.to_string().into());
    serde_json::Value::Object(header).to_string()
}

/// Whether a message is written with one statement (a notification with a payload that fits,
/// an append that `switchboard_append` mirrors itself); the others are sent alone, so that
/// nothing comes between their statements.
fn one_statement(outgoing: &Outgoing) -> bool {
    match outgoing {
        Outgoing::Notify(_, payload, _) => {
            payload.len() < NOTIFY_MAX && std::str::from_utf8(payload).is_ok()
        }
        Outgoing::Append(fields, _) => fields
            .iter()
            .find(|(name, _)| *name == "data")
            .is_none_or(|(_, data)| schema::mirrored_in_sql(data)),
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

#[cfg(test)]
mod tests {
    use super::attachment_header;
    use crate::cluster::stream_message::{self, kind};

    #[test]
    fn an_attachment_header_names_its_sender_as_the_node_adapter_expects() {
        let packed =
            stream_message::mirrored_message("n1", "/", kind::BROADCAST, br#"{"opts":{}}"#, "1-0")
                .expect("packed");
        let header: serde_json::Value =
            serde_json::from_str(&attachment_header(&packed, 42)).expect("JSON");
        assert_eq!(
            header,
            serde_json::json!({ "uid": "n1", "type": kind::BROADCAST, "attachmentId": "42" })
        );
        // Switchboard's own node messages (JSON) name their sender too.
        let header: serde_json::Value =
            serde_json::from_str(&attachment_header(br#"{"uid":"n2","kind":"bye"}"#, 7))
                .expect("JSON");
        assert_eq!(header["uid"], "n2");
        assert!(attachment_header(b"\xff", 8).contains(r#""uid":"switchboard""#));
    }
}
