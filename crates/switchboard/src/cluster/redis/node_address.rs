//! Where each node can be reached, for passing a request on to the node holding its session
//! (`forward.rs`): each node keeps `<key>-switchboard-node#<uid>` set to its `host:port`, with
//! the node timeout as its TTL (renewed with its presence, deleted when it leaves), and the
//! others read it when they need it, keeping what they read for a few seconds.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::{REDIS_TIMEOUT, RedisAdapter};

/// A node's address read from Redis is used this long before it is read again.
const ADDRESS_KEPT_FOR: Duration = Duration::from_secs(5);
/// An address read longer ago is still used while Redis cannot be asked, up to this long.
const STALE_ADDRESS_KEPT_FOR: Duration = Duration::from_secs(60);

impl RedisAdapter {
    fn node_key(&self, uid: &str) -> String {
        format!("{}-switchboard-node#{uid}", self.settings.key)
    }

    /// Tells the cluster where this node serves (once, when it starts listening): `listening`
    /// unless it is a wildcard address, in which case the address this machine reaches Redis
    /// from, with its port.
    pub async fn advertise(&self, configured: Option<&str>, listening: SocketAddr) {
        let address = match configured {
            Some(address) => address.to_owned(),
            None if !listening.ip().is_unspecified() => listening.to_string(),
            None => {
                let ip = self.ip_toward_redis().await.unwrap_or_else(|| {
                    tracing::warn!(
                        "cluster: cannot tell this node's address from the route to Redis; \
                         other nodes will reach it at 127.0.0.1 (set cluster.advertise_address)"
                    );
                    IpAddr::from([127, 0, 0, 1])
                });
                SocketAddr::new(ip, listening.port()).to_string()
            }
        };
        tracing::info!(node = %self.uid, %address, "cluster: other nodes pass requests for this node's sessions to it");
        if self.advertised.set(address).is_ok() {
            self.say_where();
        }
    }

    /// Writes this node's address again (at connect, and with each presence snapshot).
    pub(super) fn say_where(&self) {
        let Some(address) = self.advertised.get() else {
            return;
        };
        if self.leaving.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let mut set = redis::cmd("SET");
        set.arg(self.node_key(&self.uid))
            .arg(address)
            .arg("PX")
            .arg(self.settings.node_timeout.as_millis() as u64);
        self.send_command(set);
    }

    /// Removes this node's address (a clean shutdown).
    pub(super) fn say_gone(&self) {
        let mut delete = redis::cmd("DEL");
        delete.arg(self.node_key(&self.uid));
        self.send_command(delete);
    }

    /// The `host:port` of the node `uid`, or `None` when no live node has that id (or Redis
    /// cannot say).
    pub async fn node_address(&self, uid: &str) -> Option<String> {
        if uid == self.uid {
            return self.advertised.get().cloned();
        }
        let kept = self.node_addresses.lock().get(uid).cloned();
        if let Some((address, read)) = &kept
            && read.elapsed() < ADDRESS_KEPT_FOR
        {
            return Some(address.clone());
        }
        // Redis cannot say (a blip): the node read last is most likely still there.
        let stale = || kept.as_ref().map(|(address, _)| address.clone());
        let Ok(mut connection) = self.connection().await else {
            return stale();
        };
        let Ok(address) = redis::cmd("GET")
            .arg(self.node_key(uid))
            .query_async::<Option<String>>(&mut connection)
            .await
        else {
            return stale();
        };
        let mut kept = self.node_addresses.lock();
        kept.retain(|_, (_, read)| read.elapsed() < STALE_ADDRESS_KEPT_FOR);
        match &address {
            Some(address) => {
                kept.insert(uid.to_owned(), (address.clone(), Instant::now()));
            }
            None => {
                kept.remove(uid);
            }
        }
        address
    }

    /// The local address of a route to Redis: the interface other machines on that network
    /// most likely reach this one on.
    async fn ip_toward_redis(&self) -> Option<IpAddr> {
        let (host, port) = match &self.client.get_connection_info().addr {
            redis::ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
            redis::ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port),
            _ => return None,
        };
        let probe = tokio::net::UdpSocket::bind("0.0.0.0:0").await.ok()?;
        tokio::time::timeout(REDIS_TIMEOUT, probe.connect((host.as_str(), port)))
            .await
            .ok()?
            .ok()?;
        probe.local_addr().ok().map(|local| local.ip())
    }
}
