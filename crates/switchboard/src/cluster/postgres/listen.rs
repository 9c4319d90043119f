//! The PostgreSQL driver's listener: LISTEN on every subscribed channel and the log's channel,
//! renewed on reconnect, each notification passed on (its attachment read when it names one).

use super::*;

impl PostgresDriver {
    /// Listens on every subscribed channel and passes notifications on; reconnects.
    pub(super) async fn listen_loop(
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

    pub(super) async fn listen_once(
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
    pub(super) async fn resolve(&self, payload: String) -> Vec<u8> {
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
}
