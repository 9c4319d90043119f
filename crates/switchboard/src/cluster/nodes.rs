//! The other nodes as this node knows them, and this node's heartbeat: when each was last heard
//! (any message it sent counts), which are taken for dead after `node_timeout` of silence (as
//! far as this node could hear: silence is counted up to the last time its own heartbeat came
//! back, and a node whose link was down or frozen gives every other node a fresh timeout from
//! when it hears again, so an engine's outage takes no live node for dead), how
//! many are up (what a question waits answers from), and where each can be reached, for passing
//! a request on to the node holding its session (`crate::forward`). Addresses live in the
//! driver's key-value store, `<key>-switchboard-node#<uid>` = `host:port` with the node timeout
//! as TTL (renewed with each heartbeat, deleted when the node leaves), and ride on each
//! heartbeat too, so a node still heard is reached while the store has lost its key (an engine
//! restarted empty, before the node writes it again); a node's address read is kept a few
//! seconds.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::node::ClusterNode;

/// Heartbeats go out every third of the node timeout, and at least this often.
const HEARTBEAT_AT_LEAST: Duration = Duration::from_secs(10);
/// A node hears its own heartbeat back through the engine; not hearing it for this long means
/// the link is dead though it looks alive (the driver is told to connect again).
const SELF_SILENCE: Duration = Duration::from_secs(25);

/// A node's address read from the store is used this long before it is read again.
pub const ADDRESS_KEPT_FOR: Duration = Duration::from_secs(5);
/// An address read longer ago is still used while the store cannot be asked, up to this long.
pub const STALE_ADDRESS_KEPT_FOR: Duration = Duration::from_secs(60);

/// The other nodes of the cluster.
#[derive(Default)]
pub struct NodeRegistry {
    /// When each other node was last heard.
    heard: Mutex<HashMap<String, Instant>>,
    /// Other nodes' addresses as read from the store, and when.
    addresses: Mutex<HashMap<String, (String, Instant)>>,
}

impl NodeRegistry {
    /// The node `uid` said something.
    pub fn heard(&self, uid: &str) {
        let mut heard = self.heard.lock();
        match heard.get_mut(uid) {
            Some(at) => *at = Instant::now(),
            None => {
                heard.insert(uid.to_owned(), Instant::now());
            }
        }
    }

    /// The node `uid` left (said goodbye): forgotten at once. Answers whether it was known.
    pub fn left(&self, uid: &str) -> bool {
        self.addresses.lock().remove(uid);
        self.heard.lock().remove(uid).is_some()
    }

    /// This node could not hear the others until now (its link was down or stalled): each is
    /// given a fresh timeout from now.
    pub fn heard_all_now(&self) {
        let now = Instant::now();
        for at in self.heard.lock().values_mut() {
            *at = now;
        }
    }

    /// Forgets the nodes silent for `silence` or longer as of `hearing_until` (the last moment
    /// this node knows it could hear them); answers their ids.
    pub fn expire(&self, silence: Duration, hearing_until: Instant) -> Vec<String> {
        let mut gone = Vec::new();
        self.heard.lock().retain(|uid, at| {
            let alive = hearing_until.saturating_duration_since(*at) < silence;
            if !alive {
                gone.push(uid.clone());
            }
            alive
        });
        let mut addresses = self.addresses.lock();
        for uid in &gone {
            addresses.remove(uid);
        }
        gone
    }

    /// How many other nodes are up (heard within the node timeout).
    pub fn count(&self) -> usize {
        self.heard.lock().len()
    }

    /// The address of `uid` read recently enough to use without asking again.
    pub fn fresh_address(&self, uid: &str) -> Option<String> {
        self.addresses
            .lock()
            .get(uid)
            .filter(|(_, read)| read.elapsed() < ADDRESS_KEPT_FOR)
            .map(|(address, _)| address.clone())
    }

    /// The last address read for `uid`, however old (while the store cannot be asked).
    pub fn stale_address(&self, uid: &str) -> Option<String> {
        self.addresses
            .lock()
            .get(uid)
            .filter(|(_, read)| read.elapsed() < STALE_ADDRESS_KEPT_FOR)
            .map(|(address, _)| address.clone())
    }

    /// Whether `uid` is up (heard within the node timeout, as of the last expiry).
    pub fn is_up(&self, uid: &str) -> bool {
        self.heard.lock().contains_key(uid)
    }

    /// The node `uid` said where it serves (in its heartbeat).
    pub fn address_heard(&self, uid: &str, address: &str) {
        self.address_read(uid, Some(address));
    }

    /// What the store said of `uid`'s address (None: no such live node).
    pub fn address_read(&self, uid: &str, address: Option<&str>) {
        let mut kept = self.addresses.lock();
        kept.retain(|_, (_, read)| read.elapsed() < STALE_ADDRESS_KEPT_FOR);
        match address {
            Some(address) => {
                kept.insert(uid.to_owned(), (address.to_owned(), Instant::now()));
            }
            None => {
                kept.remove(uid);
            }
        }
    }
}

/// Where the node `uid`'s address is kept.
pub fn address_key(key: &str, uid: &str) -> String {
    format!("{key}-switchboard-node#{uid}")
}

impl ClusterNode {
    /// One heartbeat: forgets the nodes silent past the node timeout (their users go offline
    /// here), says who this node's users are and where it serves, and checks that its own
    /// heartbeats still come back.
    pub(super) fn beat(&self) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let silence = self.settings.node_timeout;
        let hearing_until = *self.heard_self.lock();
        let gone = self.nodes.expire(silence, hearing_until);
        for uid in &gone {
            hub.presence().forget_node(uid);
        }
        if !gone.is_empty() {
            self.nodes_expired
                .fetch_add(gone.len() as u64, Ordering::Relaxed);
            tracing::warn!(
                nodes = gone.len(),
                ?silence,
                "cluster: nodes silent past node_timeout taken for dead; their users are offline"
            );
        }
        if self.driver.is_up() {
            if self.heard_self.lock().elapsed() > SELF_SILENCE {
                tracing::warn!("cluster: no heartbeat came back in time; linking again");
                *self.heard_self.lock() = Instant::now();
                self.nodes.heard_all_now();
                self.driver.relink();
            }
            self.tell_all_users();
            self.say_where();
        }
    }

    /// Tells the cluster where this node serves (once, when it starts listening): `listening`
    /// unless it is a wildcard address, in which case the address this machine reaches the
    /// engine from, with its port.
    pub async fn advertise(&self, configured: Option<&str>, listening: std::net::SocketAddr) {
        let address = match configured {
            Some(address) => address.to_owned(),
            None if !listening.ip().is_unspecified() => listening.to_string(),
            None => {
                let ip = self.driver.local_ip().await.unwrap_or_else(|| {
                    tracing::warn!(
                        "cluster: cannot tell this node's address from the route to the engine; \
                         other nodes will reach it at 127.0.0.1 (set cluster.advertise_address)"
                    );
                    std::net::IpAddr::from([127, 0, 0, 1])
                });
                std::net::SocketAddr::new(ip, listening.port()).to_string()
            }
        };
        tracing::info!(node = %self.uid, %address, "cluster: other nodes pass requests for this node's sessions to it");
        if self.advertised.set(address).is_ok() {
            self.say_where();
        }
    }

    /// Writes this node's address again (on linking, and with each heartbeat).
    pub(super) fn say_where(&self) {
        let Some(address) = self.advertised.get() else {
            return;
        };
        if self.leaving.load(Ordering::Acquire) {
            return;
        }
        self.driver.set(
            address_key(&self.settings.key, &self.uid),
            address.as_bytes().to_vec(),
            self.settings.node_timeout,
        );
    }

    /// The `host:port` of the node `uid`, or `None` when no live node has that id (or the
    /// engine cannot say).
    pub async fn node_address(&self, uid: &str) -> Option<String> {
        if uid == self.uid {
            return self.advertised.get().cloned();
        }
        if let Some(address) = self.nodes.fresh_address(uid) {
            return Some(address);
        }
        match self.driver.get(address_key(&self.settings.key, uid)).await {
            Ok(Some(bytes)) => {
                let address = String::from_utf8(bytes).ok();
                self.nodes.address_read(uid, address.as_deref());
                address
            }
            // No key, but the node is heard: the engine lost it (restarted empty) and the node
            // has not written it again yet; where its heartbeat said it serves.
            Ok(None) if self.nodes.is_up(uid) => self.nodes.stale_address(uid),
            Ok(None) => {
                self.nodes.address_read(uid, None);
                None
            }
            // The engine cannot say (a blip): the node read last is most likely still there.
            Err(_) => self.nodes.stale_address(uid),
        }
    }
}

/// Beats the heart until shutdown.
pub(super) async fn heartbeat_loop(node: Arc<ClusterNode>) {
    let every = (node.settings.node_timeout / 3)
        .min(HEARTBEAT_AT_LEAST)
        .max(Duration::from_millis(50));
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = ticker.tick() => node.beat(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_nodes_expire_and_nodes_that_speak_stay() {
        let nodes = NodeRegistry::default();
        nodes.heard("a");
        nodes.heard("b");
        assert_eq!(nodes.count(), 2);
        std::thread::sleep(Duration::from_millis(30));
        nodes.heard("b");
        assert_eq!(
            nodes.expire(Duration::from_millis(20), Instant::now()),
            vec!["a".to_owned()]
        );
        assert_eq!(nodes.count(), 1);
        assert!(nodes.left("b"));
        assert!(!nodes.left("b"));
        assert_eq!(nodes.count(), 0);
    }

    #[test]
    fn an_address_heard_in_a_heartbeat_is_kept_until_the_node_expires() {
        let nodes = NodeRegistry::default();
        nodes.heard("a");
        nodes.address_heard("a", "10.0.0.1:3000");
        assert!(nodes.is_up("a"));
        assert_eq!(nodes.stale_address("a").as_deref(), Some("10.0.0.1:3000"));
        std::thread::sleep(Duration::from_millis(30));
        nodes.expire(Duration::from_millis(20), Instant::now());
        assert!(!nodes.is_up("a"));
        assert_eq!(nodes.stale_address("a"), None);
    }

    #[test]
    fn an_address_is_kept_a_while_then_asked_again() {
        let nodes = NodeRegistry::default();
        nodes.address_read("a", Some("10.0.0.1:3000"));
        assert_eq!(nodes.fresh_address("a").as_deref(), Some("10.0.0.1:3000"));
        nodes.address_read("a", None);
        assert_eq!(nodes.fresh_address("a"), None);
        assert_eq!(nodes.stale_address("a"), None);
    }
}
