//! What both Redis drivers (one server, a Redis Cluster) send the same way: key writes with a
//! TTL, scans, map writes, reading values, and the probe of this machine's address toward Redis.

use super::*;

/// The local address of this machine's route to `host:port` (no packet is sent): the interface
/// other machines on that network most likely reach it on. Both Redis drivers ask it.
pub(super) async fn ip_toward(host: &str, port: u16) -> Option<IpAddr> {
    let probe = tokio::net::UdpSocket::bind("0.0.0.0:0").await.ok()?;
    tokio::time::timeout(REDIS_TIMEOUT, probe.connect((host, port)))
        .await
        .ok()?
        .ok()?;
    probe.local_addr().ok().map(|local| local.ip())
}

/// SET with a time to live, as both Redis drivers write keys.
pub(super) fn set_command(key: &str, value: Vec<u8>, ttl: Duration) -> redis::Cmd {
    let mut set = redis::cmd("SET");
    set.arg(key).arg(value).arg("PX").arg(millis(ttl));
    set
}

pub(super) fn expire_command(key: &str, ttl: Duration) -> redis::Cmd {
    let mut expire = redis::cmd("PEXPIRE");
    expire.arg(key).arg(millis(ttl));
    expire
}

/// One step of a SCAN for the keys that start with `prefix`.
pub(super) fn scan_command(prefix: &str, cursor: u64) -> redis::Cmd {
    let mut scan = redis::cmd("SCAN");
    scan.arg(cursor)
        .arg("MATCH")
        .arg(crate::cluster::driver::glob_prefix(prefix))
        .arg("COUNT")
        .arg(1000);
    scan
}

/// The values of `keys` (one MGET; the keys share a slot), skipping those gone meanwhile.
pub(super) async fn values_of<F, Fut>(
    keys: Vec<String>,
    query: F,
) -> Result<Vec<(String, Vec<u8>)>, DriverError>
where
    F: FnOnce(redis::Cmd) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Option<Vec<u8>>>, DriverError>>,
{
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut get = redis::cmd("MGET");
    get.arg(&keys);
    let values = query(get).await?;
    Ok(keys
        .into_iter()
        .zip(values)
        .filter_map(|(key, value)| Some((key, value?)))
        .collect())
}

/// HSET of one field, then the map's time to live from this write.
pub(super) fn map_set_commands(
    key: &str,
    field: &str,
    value: Vec<u8>,
    ttl: Duration,
) -> (redis::Cmd, redis::Cmd) {
    let mut set = redis::cmd("HSET");
    set.arg(key).arg(field).arg(value);
    (set, expire_command(key, ttl))
}

pub(super) fn delete_command(key: &str) -> redis::Cmd {
    let mut delete = redis::cmd("DEL");
    delete.arg(key);
    delete
}

pub(super) async fn change(
    sink: &mut redis::aio::PubSubSink,
    topic: Topic,
    on: bool,
) -> redis::RedisResult<()> {
    match (topic, on) {
        (Topic::Channel(channel), true) => sink.subscribe(channel).await,
        (Topic::Channel(channel), false) => sink.unsubscribe(channel).await,
        (Topic::Prefix(prefix), true) => sink.psubscribe(format!("{prefix}*")).await,
        (Topic::Prefix(prefix), false) => sink.punsubscribe(format!("{prefix}*")).await,
    }
}

pub(super) fn error(error: redis::RedisError) -> DriverError {
    DriverError(error.to_string())
}

pub(super) fn millis(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}
