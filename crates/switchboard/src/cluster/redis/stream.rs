//! The Redis drivers' log: one Redis stream (`[cluster] adapter = "streams"`), its commands and
//! replies (shared by the Redis and the Redis Cluster drivers), and the Redis driver's `Log`.
//! Appends are XADD with `MAXLEN ~`, sent by the publisher in order with everything else; reads
//! are XREAD BLOCK on a connection of their own, and XRANGE for replays.

use std::time::Duration;

use super::{REDIS_TIMEOUT, RedisDriver, error};
use crate::cluster::driver::{DriverError, Log, LogEntry};
use crate::hub::adapter::{BoxFuture, TakenSender};

/// Entries read at once at most.
const READ_COUNT: usize = 1000;

/// The stream the Redis driver uses as its log.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// The stream's key (the Streams adapter's `streamName`).
    pub name: String,
    /// The stream is trimmed to about this many entries (`maxLen`).
    pub max_len: usize,
}

/// The offset of a stream entry from XADD's reply (its id); none for other replies.
pub(super) fn entry_offset(reply: &redis::Value) -> Option<u64> {
    match reply {
        redis::Value::BulkString(id) => std::str::from_utf8(id)
            .ok()
            .filter(|id| id.contains('-'))
            .and_then(crate::hub::parse_offset),
        redis::Value::SimpleString(id) if id.contains('-') => crate::hub::parse_offset(id),
        _ => None,
    }
}

/// XADD of an entry, trimmed to about `max_len` entries.
pub(super) fn append_command(
    stream: &StreamSettings,
    fields: Vec<(&'static str, Vec<u8>)>,
) -> redis::Cmd {
    let mut xadd = redis::cmd("XADD");
    xadd.arg(&stream.name)
        .arg("MAXLEN")
        .arg("~")
        .arg(stream.max_len)
        .arg("*");
    for (field, value) in fields {
        xadd.arg(field).arg(value);
    }
    xadd
}

/// The newest entry (an XRANGE-shaped reply of at most one).
pub(super) fn newest_command(name: &str) -> redis::Cmd {
    let mut newest = redis::cmd("XREVRANGE");
    newest.arg(name).arg("+").arg("-").arg("COUNT").arg(1);
    newest
}

/// The entries after `after`, waiting up to `block` for the first.
pub(super) fn read_command(name: &str, after: &str, block: Duration) -> redis::Cmd {
    let mut read = redis::cmd("XREAD");
    read.arg("COUNT")
        .arg(READ_COUNT)
        .arg("BLOCK")
        .arg(block.as_millis() as u64)
        .arg("STREAMS")
        .arg(name)
        .arg(after);
    read
}

/// The entry `id` alone (empty when it was trimmed).
pub(super) fn entry_command(name: &str, id: &str) -> redis::Cmd {
    let mut range = redis::cmd("XRANGE");
    range.arg(name).arg(id).arg(id);
    range
}

/// At most `count` entries after `after` up to `through`.
pub(super) fn range_command(name: &str, after: &str, through: &str, count: usize) -> redis::Cmd {
    let mut range = redis::cmd("XRANGE");
    range
        .arg(name)
        .arg(format!("({after}"))
        .arg(through)
        .arg("COUNT")
        .arg(count);
    range
}

impl RedisDriver {
    fn stream_name(&self) -> Result<&str, DriverError> {
        self.stream
            .as_ref()
            .map(|stream| stream.name.as_str())
            .ok_or_else(|| DriverError("no stream configured".into()))
    }

    async fn range_query(&self, command: redis::Cmd) -> Result<Vec<LogEntry>, DriverError> {
        Ok(entries(self.query(command).await?))
    }
}

impl Log for RedisDriver {
    fn append(&self, fields: Vec<(&'static str, Vec<u8>)>, taken: Option<TakenSender>) {
        if let Some(stream) = &self.stream {
            self.send(append_command(stream, fields), taken);
        }
    }

    fn newest(&self) -> BoxFuture<'_, Result<Option<String>, DriverError>> {
        Box::pin(async move {
            let newest = newest_command(self.stream_name()?);
            Ok(self.range_query(newest).await?.pop().map(|(id, _)| id))
        })
    }

    fn read_after(
        &self,
        after: String,
        block: Duration,
    ) -> BoxFuture<'_, Result<Vec<LogEntry>, DriverError>> {
        Box::pin(async move {
            let read = read_command(self.stream_name()?, &after, block);
            let mut reader = self.reader.lock().await;
            if reader.is_none() {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(REDIS_TIMEOUT)
                    .set_response_timeout(block + REDIS_TIMEOUT);
                let connection = self
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(error)?;
                *reader = Some(connection);
            }
            let Some(connection) = reader.as_mut() else {
                return Ok(Vec::new());
            };
            match read.query_async::<redis::Value>(connection).await {
                Ok(reply) => Ok(read_entries(reply)),
                Err(failed) => {
                    *reader = None;
                    Err(error(failed))
                }
            }
        })
    }

    fn contains(&self, id: String) -> BoxFuture<'_, Result<bool, DriverError>> {
        Box::pin(async move {
            let range = entry_command(self.stream_name()?, &id);
            Ok(!self.range_query(range).await?.is_empty())
        })
    }

    fn range(
        &self,
        after: String,
        through: String,
        count: usize,
    ) -> BoxFuture<'_, Result<Vec<LogEntry>, DriverError>> {
        Box::pin(async move {
            let range = range_command(self.stream_name()?, &after, &through, count);
            self.range_query(range).await
        })
    }
}

fn text(value: &redis::Value) -> Option<String> {
    match value {
        redis::Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        redis::Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

/// The entries of an XRANGE/XREVRANGE reply: `[[id, [field, value, ...]], ...]`.
pub(super) fn entries(reply: redis::Value) -> Vec<LogEntry> {
    let redis::Value::Array(items) = reply else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let redis::Value::Array(mut parts) = item else {
                return None;
            };
            if parts.len() != 2 {
                return None;
            }
            let redis::Value::Array(flat) = parts.pop()? else {
                return None;
            };
            let id = text(&parts[0])?;
            let fields = flat
                .chunks(2)
                .filter_map(|pair| match pair {
                    [key, redis::Value::BulkString(value)] => Some((text(key)?, value.clone())),
                    _ => None,
                })
                .collect();
            Some((id, fields))
        })
        .collect()
}

/// The entries of an XREAD reply on one stream: `[[name, entries]]` (nil when none came).
pub(super) fn read_entries(reply: redis::Value) -> Vec<LogEntry> {
    match reply {
        redis::Value::Array(streams) => streams
            .into_iter()
            .flat_map(|stream| match stream {
                redis::Value::Array(mut parts) if parts.len() == 2 => {
                    parts.pop().map(entries).unwrap_or_default()
                }
                _ => Vec::new(),
            })
            .collect(),
        redis::Value::Map(streams) => streams
            .into_iter()
            .flat_map(|(_, list)| entries(list))
            .collect(),
        _ => Vec::new(),
    }
}
