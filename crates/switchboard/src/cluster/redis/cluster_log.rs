//! The Redis Cluster driver's log (`adapter = "streams"` with `redis_cluster = true`): the one
//! stream lives on the master serving its key's slot. Appends go through the publisher in order
//! with everything else; reads block on a connection of their own to that master, opened again
//! when the slot moves or the master fails over.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::REDIS_TIMEOUT;
use super::cluster::RedisClusterDriver;
use super::stream::{self, entries, read_entries};
use crate::cluster::driver::{DriverError, Log, LogEntry};
use crate::hub::adapter::{BoxFuture, TakenSender};

impl RedisClusterDriver {
    fn stream_name(&self) -> Result<&str, DriverError> {
        self.stream
            .as_ref()
            .map(|stream| stream.name.as_str())
            .ok_or_else(|| DriverError("no stream configured".into()))
    }

    async fn range_query(&self, command: redis::Cmd) -> Result<Vec<LogEntry>, DriverError> {
        let name = self.stream_name()?;
        let reply: redis::Value = self.query(name.as_bytes(), &command).await?;
        Ok(entries(reply))
    }

    /// A connection for blocking reads to the master of the stream's slot.
    async fn reader_for(
        &self,
        name: &str,
        block: Duration,
    ) -> Result<(String, MultiplexedConnection), DriverError> {
        let master = self.master_for(name.as_bytes()).await.ok_or_else(|| {
            DriverError("no Redis Cluster master serves the stream's slot".into())
        })?;
        let mut reader = self.reader.lock().await;
        if let Some((address, connection)) = reader.as_ref()
            && *address == master
        {
            return Ok((master, connection.clone()));
        }
        let client =
            redis::Client::open(self.connection_info(&master).map_err(error)?).map_err(error)?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(block + REDIS_TIMEOUT);
        let connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(error)?;
        *reader = Some((master.clone(), connection.clone()));
        Ok((master, connection))
    }
}

fn error(error: redis::RedisError) -> DriverError {
    DriverError(error.to_string())
}

impl Log for RedisClusterDriver {
    fn append(&self, fields: Vec<(&'static str, Vec<u8>)>, taken: Option<TakenSender>) {
        if let Some(settings) = &self.stream {
            let append = stream::append_command(settings, fields);
            self.send(settings.name.as_bytes().to_vec(), append, taken);
        }
    }

    fn newest(&self) -> BoxFuture<'_, Result<Option<String>, DriverError>> {
        Box::pin(async move {
            let newest = stream::newest_command(self.stream_name()?);
            Ok(self.range_query(newest).await?.pop().map(|(id, _)| id))
        })
    }

    fn read_after(
        &self,
        after: String,
        block: Duration,
    ) -> BoxFuture<'_, Result<Vec<LogEntry>, DriverError>> {
        Box::pin(async move {
            let name = self.stream_name()?;
            let read = stream::read_command(name, &after, block);
            let (master, mut connection) = self.reader_for(name, block).await?;
            match read.query_async::<redis::Value>(&mut connection).await {
                Ok(reply) => Ok(read_entries(reply)),
                Err(failed) => {
                    // Moved, failed over or gone: the next read asks the slot map again.
                    *self.reader.lock().await = None;
                    self.forget(&master);
                    self.refresh_slots(true).await;
                    Err(error(failed))
                }
            }
        })
    }

    fn contains(&self, id: String) -> BoxFuture<'_, Result<bool, DriverError>> {
        Box::pin(async move {
            let range = stream::entry_command(self.stream_name()?, &id);
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
            let range = stream::range_command(self.stream_name()?, &after, &through, count);
            self.range_query(range).await
        })
    }
}
