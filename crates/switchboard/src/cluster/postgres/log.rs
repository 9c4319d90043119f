//! The PostgreSQL driver's log: `switchboard_log` rows as the core's log entries (append in
//! order through the writer, reads on the reader's connection).

use super::*;

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
