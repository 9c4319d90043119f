//! The Redis Cluster driver (`[cluster] adapter = "sharded"`, or `"streams"` with
//! `redis_cluster = true`): channels through sharded pub/sub (Redis 7 `SPUBLISH`/`SSUBSCRIBE`),
//! keys through SET/GET with PX, and, with a stream, the log (`cluster_log.rs`), each sent to
//! the master that serves its hash slot (`slots.rs`). A Redis that is not a cluster works too
//! (it serves every slot).
//!
//! The publisher task sends what the core gives it in order, one pipeline per master at a time;
//! a command answered `MOVED`/`ASK`/`TRYAGAIN`/`CLUSTERDOWN`, or whose master cannot be
//! reached, is sent again once the slot map is read anew (a master failing over, a slot
//! migrating), until its waiter stops waiting. The subscriber (`sharded_subscriber.rs`) holds
//! one connection per master and follows the slots the same way. Both end on the shutdown
//! signal.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use redis::aio::MultiplexedConnection;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::slots::SlotMap;

mod publish;
use super::stream::{StreamSettings, entry_offset};
use super::{REDIS_TIMEOUT, RedisDriverError};
use crate::cluster::driver::{
    Driver, DriverError, IncomingSender, KeyValues, Log, Topic, tell_taken,
};
use crate::hub::adapter::{BoxFuture, NotTaken, TakenSender};
use publish::follows_cluster;

/// What commands wait for the publisher at most; past it a command is dropped (and logged).
const OUTBOX_CAPACITY: usize = 65_536;
/// Commands taken from the queue at once at most.
const BATCH_MAX: usize = 256;
/// The slot map is read again at most this often.
const REFRESH_AT_MOST_EVERY: Duration = Duration::from_millis(100);
/// A command the cluster could not take is tried again this many times at most (about ten
/// seconds: longer than a master's failover with a short `cluster-node-timeout`) unless its
/// waiter gives up first.
const TRIES: u32 = 20;

/// One Redis server of the cluster, and how to log in to it.
#[derive(Debug, Clone)]
pub(super) struct Login {
    pub username: Option<String>,
    pub password: Option<String>,
}

/// What the publisher task is given.
enum Outgoing {
    /// A command for the master of `route`'s slot (a key or a channel).
    Command {
        route: Vec<u8>,
        command: redis::Cmd,
        taken: Option<TakenSender>,
    },
    Sent(oneshot::Sender<()>),
}

pub struct RedisClusterDriver {
    /// The servers given in the config (`host:port`), asked for the slot map first.
    seeds: Vec<String>,
    pub(super) login: Login,
    pub(super) slots: RwLock<SlotMap>,
    refreshed: tokio::sync::Mutex<Instant>,
    connections: Mutex<HashMap<String, MultiplexedConnection>>,
    outbox: mpsc::Sender<Outgoing>,
    pub(super) channels: Mutex<std::collections::HashSet<String>>,
    changes: mpsc::UnboundedSender<(String, bool)>,
    pub(super) up: AtomicBool,
    pub(super) relink: Notify,
    dropped: AtomicU64,
    /// With `adapter = "streams"`: the stream, on the master of its key's slot.
    pub(super) stream: Option<StreamSettings>,
    /// The log reader's connection (its reads block), and the master it is to.
    pub(super) reader: tokio::sync::Mutex<Option<(String, MultiplexedConnection)>>,
}

impl RedisClusterDriver {
    /// Starts the driver's tasks on the current Tokio runtime, for the cluster one of `urls`
    /// (comma-separated `redis://` URLs of any of its servers) belongs to. With `stream`, the
    /// driver has a log.
    pub fn start(
        urls: &str,
        stream: Option<StreamSettings>,
        incoming: IncomingSender,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, RedisDriverError> {
        let (seeds, login) = parse_seeds(urls)?;
        let (outbox, outgoing) = mpsc::channel(OUTBOX_CAPACITY);
        let (changes, changed) = mpsc::unbounded_channel();
        let driver = Arc::new(Self {
            seeds,
            login,
            slots: RwLock::new(SlotMap::default()),
            refreshed: tokio::sync::Mutex::new(Instant::now()),
            connections: Mutex::new(HashMap::new()),
            outbox,
            channels: Mutex::new(Default::default()),
            changes,
            up: AtomicBool::new(false),
            relink: Notify::new(),
            dropped: AtomicU64::new(0),
            stream,
            reader: tokio::sync::Mutex::new(None),
        });
        tokio::spawn(driver.clone().publish_loop(outgoing, shutdown.clone()));
        tokio::spawn(super::sharded_subscriber::run(
            driver.clone(),
            changed,
            incoming,
            shutdown,
        ));
        Ok(driver)
    }

    pub(super) fn send(&self, route: Vec<u8>, command: redis::Cmd, taken: Option<TakenSender>) {
        let outgoing = Outgoing::Command {
            route,
            command,
            taken,
        };
        if self.outbox.try_send(outgoing).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::error!(
                    dropped,
                    "cluster: the Redis Cluster publisher is too far behind; messages dropped"
                );
            }
        }
    }

    /// The master serving `route`'s slot, reading the slot map first when there is none.
    pub(super) async fn master_for(&self, route: &[u8]) -> Option<String> {
        if self.slots.read().is_empty() {
            self.refresh_slots(false).await;
        }
        self.slots.read().master_for(route).map(str::to_owned)
    }

    /// Reads the slot map again from any server that answers (the masters known, then the
    /// seeds), at most every [`REFRESH_AT_MOST_EVERY`] unless `now` (the cluster said a slot
    /// moved). A Redis that is not a cluster serves every slot.
    pub(super) async fn refresh_slots(&self, now: bool) {
        let mut last = self.refreshed.lock().await;
        let known = !self.slots.read().is_empty();
        if known && !now && last.elapsed() < REFRESH_AT_MOST_EVERY {
            return;
        }
        let mut candidates = self.slots.read().masters();
        candidates.extend(self.seeds.iter().cloned());
        candidates.dedup();
        for address in candidates {
            let Ok(mut connection) = self.connection(&address).await else {
                continue;
            };
            let answer = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async::<redis::Value>(&mut connection)
                .await;
            let host = address
                .rsplit_once(':')
                .map_or("", |(host, _)| host)
                .trim_matches(['[', ']']);
            let map = match answer {
                Ok(reply) => SlotMap::from_cluster_slots(&reply, host),
                Err(error) if error.to_string().contains("cluster support disabled") => {
                    Some(SlotMap::single(&address))
                }
                Err(_) => {
                    self.forget(&address);
                    None
                }
            };
            if let Some(map) = map.filter(|map| !map.is_empty()) {
                *self.slots.write() = map;
                break;
            }
        }
        *last = Instant::now();
    }

    /// A connection for commands to the server at `address` (kept for the next ones).
    async fn connection(&self, address: &str) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(connection) = self.connections.lock().get(address).cloned() {
            return Ok(connection);
        }
        let client = redis::Client::open(self.connection_info(address)?)?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT);
        let connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        self.connections
            .lock()
            .insert(address.to_owned(), connection.clone());
        Ok(connection)
    }

    pub(super) fn connection_info(
        &self,
        address: &str,
    ) -> redis::RedisResult<redis::ConnectionInfo> {
        let (host, port) = split_address(address).ok_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "not host:port"))
        })?;
        Ok(redis::ConnectionInfo {
            addr: redis::ConnectionAddr::Tcp(host, port),
            redis: redis::RedisConnectionInfo {
                db: 0,
                username: self.login.username.clone(),
                password: self.login.password.clone(),
                protocol: redis::ProtocolVersion::RESP2,
            },
        })
    }

    pub(super) fn forget(&self, address: &str) {
        self.connections.lock().remove(address);
    }

    /// Runs one command on the master of `route`'s slot, following the cluster when it moved.
    pub(super) async fn query<T: redis::FromRedisValue>(
        &self,
        route: &[u8],
        command: &redis::Cmd,
    ) -> Result<T, DriverError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let address = self
                .master_for(route)
                .await
                .ok_or_else(|| DriverError("no Redis Cluster master serves the slot".into()))?;
            let answer = match self.connection(&address).await {
                Ok(mut connection) => command.query_async::<T>(&mut connection).await,
                Err(error) => Err(error),
            };
            match answer {
                Ok(value) => return Ok(value),
                Err(error) if tries < 3 && follows_cluster(&error) => {
                    if error.is_io_error() || error.is_connection_dropped() {
                        self.forget(&address);
                    }
                    self.refresh_slots(true).await;
                }
                Err(error) => {
                    if error.is_io_error() || error.is_connection_dropped() {
                        self.forget(&address);
                    }
                    return Err(DriverError(error.to_string()));
                }
            }
        }
    }

    /// The local address on the route to the first seed.
    async fn ip_toward_redis(&self) -> Option<IpAddr> {
        let (host, port) = split_address(self.seeds.first()?)?;
        super::ip_toward(&host, port).await
    }
}

/// `host:port` (brackets around an IPv6 host) as its parts.
pub(super) fn split_address(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_owned(), port.parse().ok()?))
}

/// The servers of comma-separated `redis://` URLs, and the login they share.
pub(super) fn parse_seeds(urls: &str) -> Result<(Vec<String>, Login), RedisDriverError> {
    let mut seeds = Vec::new();
    let mut login = Login {
        username: None,
        password: None,
    };
    for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let info: redis::ConnectionInfo = url
            .parse()
            .map_err(|e: redis::RedisError| RedisDriverError::Url(e.to_string()))?;
        match info.addr {
            redis::ConnectionAddr::Tcp(host, port) => {
                seeds.push(super::slots::address(&host, port))
            }
            _ => {
                return Err(RedisDriverError::Url(format!(
                    "{url}: the sharded adapter connects over plain TCP (redis://host:port)"
                )));
            }
        }
        if info.redis.password.is_some() {
            login = Login {
                username: info.redis.username,
                password: info.redis.password,
            };
        }
    }
    if seeds.is_empty() {
        return Err(RedisDriverError::Url("no Redis URL given".into()));
    }
    Ok((seeds, login))
}

impl Driver for RedisClusterDriver {
    fn publish(&self, channel: String, payload: Vec<u8>, taken: Option<TakenSender>) {
        let mut publish = redis::cmd("SPUBLISH");
        publish.arg(&channel).arg(payload);
        self.send(channel.into_bytes(), publish, taken);
    }

    fn subscribe(&self, topic: Topic) {
        let Topic::Channel(channel) = topic else {
            tracing::error!(?topic, "cluster: sharded pub/sub has no patterns");
            return;
        };
        if self.channels.lock().insert(channel.clone()) {
            let _ = self.changes.send((channel, true));
        }
    }

    fn unsubscribe(&self, topic: Topic) {
        let Topic::Channel(channel) = topic else {
            return;
        };
        if self.channels.lock().remove(&channel) {
            let _ = self.changes.send((channel, false));
        }
    }

    fn set(&self, key: String, value: Vec<u8>, ttl: Duration) {
        let set = super::set_command(&key, value, ttl);
        self.send(key.into_bytes(), set, None);
    }

    fn expire(&self, key: String, ttl: Duration) {
        let expire = super::expire_command(&key, ttl);
        self.send(key.into_bytes(), expire, None);
    }

    fn delete(&self, key: String) {
        let delete = super::delete_command(&key);
        self.send(key.into_bytes(), delete, None);
    }

    fn map_set(&self, key: String, field: String, value: Vec<u8>, ttl: Duration) {
        let (set, expire) = super::map_set_commands(&key, &field, value, ttl);
        self.send(key.clone().into_bytes(), set, None);
        self.send(key.into_bytes(), expire, None);
    }

    fn map_all(&self, key: String) -> BoxFuture<'_, Result<KeyValues, DriverError>> {
        Box::pin(async move {
            let mut all = redis::cmd("HGETALL");
            all.arg(&key);
            self.query(key.as_bytes(), &all).await
        })
    }

    fn get(&self, key: String) -> BoxFuture<'_, Result<Option<Vec<u8>>, DriverError>> {
        Box::pin(async move {
            let mut get = redis::cmd("GET");
            get.arg(&key);
            self.query(key.as_bytes(), &get).await
        })
    }

    fn take(&self, key: String) -> BoxFuture<'_, Result<Option<Vec<u8>>, DriverError>> {
        Box::pin(async move {
            // GETDEL: one key, one slot, atomic.
            let mut take = redis::cmd("GETDEL");
            take.arg(&key);
            self.query(key.as_bytes(), &take).await
        })
    }

    /// The keys live in the slot of the prefix's `{tag}`: the master that serves it is asked.
    fn scan(&self, prefix: String) -> BoxFuture<'_, Result<KeyValues, DriverError>> {
        Box::pin(async move {
            let route = prefix.as_bytes();
            let mut keys = Vec::new();
            let mut cursor = 0u64;
            loop {
                let scan = super::scan_command(&prefix, cursor);
                let (next, found): (u64, Vec<String>) = self.query(route, &scan).await?;
                keys.extend(found);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            super::values_of(keys, |get| async move { self.query(route, &get).await }).await
        })
    }

    fn listeners(&self, channel: String) -> BoxFuture<'_, Option<usize>> {
        Box::pin(async move {
            let mut numsub = redis::cmd("PUBSUB");
            numsub.arg("SHARDNUMSUB").arg(&channel);
            let (_, count): (String, usize) = self.query(channel.as_bytes(), &numsub).await.ok()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_come_from_comma_separated_urls() {
        let (seeds, login) =
            parse_seeds("redis://:secret@127.0.0.1:7000, redis://[::1]:7001").unwrap();
        assert_eq!(seeds, vec!["127.0.0.1:7000", "[::1]:7001"]);
        assert_eq!(login.password.as_deref(), Some("secret"));
        assert_eq!(split_address("[::1]:7001"), Some(("::1".into(), 7001)));
        assert!(parse_seeds("").is_err());
        assert!(parse_seeds("http://x").is_err());
    }
}
