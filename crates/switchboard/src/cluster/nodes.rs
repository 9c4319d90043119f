//! The other nodes as this node knows them: when each was last heard (any message it sent
//! counts), which are taken for dead after `node_timeout` of silence, how many are up (what a
//! question waits answers from), and where each can be reached, for passing a request on to the
//! node holding its session (`crate::forward`). Addresses live in the driver's key-value store,
//! `<key>-switchboard-node#<uid>` = `host:port` with the node timeout as TTL (renewed with each
//! heartbeat, deleted when the node leaves); a node's address read is kept a few seconds.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

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

    /// Forgets the nodes silent for `silence` or longer; answers their ids.
    pub fn expire(&self, silence: Duration) -> Vec<String> {
        let now = Instant::now();
        let mut gone = Vec::new();
        self.heard.lock().retain(|uid, at| {
            let alive = now.duration_since(*at) < silence;
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
            nodes.expire(Duration::from_millis(20)),
            vec!["a".to_owned()]
        );
        assert_eq!(nodes.count(), 1);
        assert!(nodes.left("b"));
        assert!(!nodes.left("b"));
        assert_eq!(nodes.count(), 0);
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
