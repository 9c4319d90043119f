//! Users and presence. A socket (or a plain WebSocket connection) belongs to a user when its
//! data holds the user key (set by auth claims, a rule's `set`, or the plain endpoint's query).
//! A user is online while at least one of their connections is; when the last one closes they
//! go offline after a grace period, so a page reload does not flap. Listeners hear each change
//! once (the plain WebSocket endpoint, presence rooms).
//!
//! In a cluster, each node tells the others how each of its users is connected to it (a
//! [`UserHere`], carried by `cluster/node.rs`) and keeps what they said: a user who is online on another node is not
//! announced online again here, nor offline when their last connection here closes, and
//! `{online.<user key>}` lists the users of every node.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

/// Called with (user id, online) on every change.
pub type PresenceListener = Arc<dyn Fn(&str, bool) + Send + Sync>;

#[derive(Default)]
struct UserEntry {
    /// (namespace, socket id) of the user's sockets.
    sockets: Vec<(Arc<str>, Arc<str>)>,
    /// Connections that are not sockets (the plain WebSocket endpoint).
    other: usize,
    /// What listeners were last told.
    announced_online: bool,
    /// Came online here while online on another node, so not announced here (see
    /// [`Presence::user_elsewhere`]).
    held_back: bool,
    /// Bumped on every change, so a stale grace timer does nothing.
    generation: u64,
}

impl UserEntry {
    fn connections(&self) -> usize {
        self.sockets.len() + self.other
    }
}

pub struct Presence {
    user_key: String,
    grace: Duration,
    users: Mutex<HashMap<String, UserEntry>>,
    /// Told of changes where they happen (announcements that reach the whole cluster).
    listeners: RwLock<Vec<PresenceListener>>,
    /// Told of every change, also of a user on another node (audiences of this node only).
    listeners_here: RwLock<Vec<PresenceListener>>,
    /// Told how a user is connected here after each change (the cluster adapter).
    local_change: OnceLock<LocalChange>,
    /// What the other nodes of a cluster said of their users, by node id.
    elsewhere: Mutex<HashMap<String, NodeUsers>>,
    /// This node's id in a cluster.
    node_id: OnceLock<String>,
}

/// Called with (user id, how they are connected here) after each change of a user here.
pub type LocalChange = Arc<dyn Fn(&str, UserHere) + Send + Sync>;

/// How a user is connected to one node, as nodes tell each other.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserHere {
    /// Online there (also during the grace period after their last connection closed).
    pub online: bool,
    /// Namespaces where they have sockets there.
    pub namespaces: Vec<String>,
    /// The node announced this change itself (the others do not announce it again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced: Option<Announced>,
}

/// What a node announced of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Announced {
    Online,
    Offline,
}

/// One other node's users: how each is connected there.
#[derive(Default)]
struct NodeUsers {
    users: HashMap<String, UserHere>,
}

/// A user id from socket data: strings as they are, numbers as text.
pub fn user_id(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

enum Change {
    Socket(Arc<str>, Arc<str>),
    Other,
}

impl Presence {
    pub fn new(user_key: impl Into<String>, grace: Duration) -> Arc<Self> {
        Arc::new(Self {
            user_key: user_key.into(),
            grace,
            users: Mutex::new(HashMap::new()),
            listeners: RwLock::new(Vec::new()),
            listeners_here: RwLock::new(Vec::new()),
            local_change: OnceLock::new(),
            elsewhere: Mutex::new(HashMap::new()),
            node_id: OnceLock::new(),
        })
    }

    /// Sets this node's id in a cluster (once).
    pub fn set_node_id(&self, id: &str) {
        let _ = self.node_id.set(id.to_owned());
    }

    /// Of the nodes this one knows to be up, this one has the smallest id: it makes the
    /// announcements no node made itself (a user whose last connections closed on two nodes at
    /// once, the users of a node that left), so that they are made once.
    fn speaks_for_the_cluster(&self) -> bool {
        let Some(me) = self.node_id.get() else {
            return true;
        };
        self.elsewhere.lock().keys().all(|other| me < other)
    }

    /// Sets who is told of each local change (once).
    pub fn on_local_change(&self, listener: LocalChange) {
        let _ = self.local_change.set(listener);
    }

    /// Tells the local-change listener how `user` is now, while the users are locked, so that
    /// two changes of one user are told in the order they happened.
    fn tell_local_change(&self, user: &str, announced: Option<bool>) {
        if let Some(listener) = self.local_change.get() {
            let users = self.users.lock();
            let mut here = Self::describe(users.get(user));
            // This node announced the change itself: the others do not.
            here.announced = announced.map(|online| {
                if online {
                    Announced::Online
                } else {
                    Announced::Offline
                }
            });
            listener(user, here);
        }
    }

    /// How a user is connected to this node.
    fn describe(entry: Option<&UserEntry>) -> UserHere {
        let Some(entry) = entry else {
            return UserHere::default();
        };
        let mut namespaces: Vec<String> =
            entry.sockets.iter().map(|(n, _)| n.to_string()).collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        UserHere {
            online: entry.announced_online,
            namespaces,
            announced: None,
        }
    }

    /// Calls `tell` with every user of this node, as `Presence::describe` describes them, while
    /// the users are locked (`tell` must not come back into presence).
    pub fn with_everyone_here(&self, tell: impl FnOnce(BTreeMap<String, UserHere>)) {
        let users = self.users.lock();
        tell(
            users
                .iter()
                .map(|(user, entry)| (user.clone(), Self::describe(Some(entry))))
                .collect(),
        );
    }

    /// Another node said how `user` is connected to it.
    pub fn user_elsewhere(&self, node: &str, user: &str, there: &UserHere) {
        let announced = there.announced.is_some();
        let announced_offline = there.announced == Some(Announced::Offline);
        let there = UserHere {
            announced: None,
            ..there.clone()
        };
        self.update_elsewhere(vec![user.to_owned()], announced, |elsewhere| {
            let node = elsewhere.entry(node.to_owned()).or_default();
            if there.online {
                node.users.insert(user.to_owned(), there);
            } else {
                node.users.remove(user);
            }
        });
        // The other node announced this user offline while they had just come online here (it
        // had not heard of it yet): announce them online again.
        if announced_offline {
            let reannounce = self.users.lock().get_mut(user).is_some_and(|entry| {
                std::mem::take(&mut entry.held_back) && entry.announced_online
            });
            if reannounce {
                self.announce(user, true);
            }
        }
    }

    /// Another node said who all its users are (as [`Presence::with_everyone_here`] gives them).
    pub fn users_elsewhere(&self, node: &str, users: BTreeMap<String, UserHere>) {
        let users: HashMap<String, UserHere> = users
            .into_iter()
            .filter(|(_, there)| there.online)
            .collect();
        let mut touched: Vec<String> = users.keys().cloned().collect();
        if let Some(known) = self.elsewhere.lock().get(node) {
            touched.extend(
                known
                    .users
                    .keys()
                    .filter(|u| !users.contains_key(*u))
                    .cloned(),
            );
        }
        self.update_elsewhere(touched, false, |elsewhere| {
            elsewhere.insert(node.to_owned(), NodeUsers { users });
        });
    }

    /// Forgets a node that said it is leaving, or was taken for dead, with its users (they go
    /// offline here, announced once).
    pub fn forget_node(&self, node: &str) {
        let touched: Vec<String> = self
            .elsewhere
            .lock()
            .get(node)
            .map(|known| known.users.keys().cloned().collect())
            .unwrap_or_default();
        self.update_elsewhere(touched, false, |elsewhere| {
            elsewhere.remove(node);
        });
    }

    /// Users online on this node or on another.
    pub fn online_users_everywhere(&self) -> Vec<String> {
        let mut users = self.online_users();
        users.extend(
            self.elsewhere
                .lock()
                .values()
                .flat_map(|node| node.users.keys().cloned()),
        );
        users.sort_unstable();
        users.dedup();
        users
    }

    /// Whether another node has `user` online.
    pub fn online_elsewhere(&self, user: &str) -> bool {
        self.elsewhere
            .lock()
            .values()
            .any(|node| node.users.contains_key(user))
    }

    /// The users with a socket in `namespace` on another node.
    pub fn users_elsewhere_in(&self, namespace: &str) -> Vec<String> {
        let mut users: Vec<String> = self
            .elsewhere
            .lock()
            .values()
            .flat_map(|node| node.users.iter())
            .filter(|(_, there)| there.namespaces.iter().any(|n| n == namespace))
            .map(|(user, _)| user.clone())
            .collect();
        users.sort_unstable();
        users.dedup();
        users
    }

    /// The socket-data key that holds a user id.
    pub fn user_key(&self) -> &str {
        &self.user_key
    }

    /// `listener` hears each change once in a cluster: on the node where it happened (for
    /// announcements that themselves reach every node, such as a broadcast).
    pub fn on_change(&self, listener: PresenceListener) {
        self.listeners.write().push(listener);
    }

    /// `listener` hears each change on every node of a cluster (for this node's own audience,
    /// such as its plain WebSocket clients).
    pub fn on_change_here(&self, listener: PresenceListener) {
        self.listeners_here.write().push(listener);
    }

    fn announce(&self, user: &str, online: bool) {
        let listeners = self.listeners.read().clone();
        for listener in listeners {
            listener(user, online);
        }
        self.announce_here(user, online);
    }

    fn announce_here(&self, user: &str, online: bool) {
        let listeners = self.listeners_here.read().clone();
        for listener in listeners {
            listener(user, online);
        }
    }

    /// Online on this node or on another (during grace periods too).
    fn online_anywhere(&self, user: &str) -> bool {
        let online_here = self
            .users
            .lock()
            .get(user)
            .is_some_and(|entry| entry.announced_online);
        online_here || self.online_elsewhere(user)
    }

    /// Runs `change` to what other nodes said, then tells of each user whose status it
    /// changed for the cluster as a whole: this node's own audience always; everyone (the
    /// announcements that reach every node) when the node the change came from did not announce
    /// it and this node speaks for the cluster.
    fn update_elsewhere(
        &self,
        users: Vec<String>,
        announced_there: bool,
        change: impl FnOnce(&mut HashMap<String, NodeUsers>),
    ) {
        let before: Vec<bool> = users.iter().map(|u| self.online_anywhere(u)).collect();
        change(&mut self.elsewhere.lock());
        let speak = !announced_there && self.speaks_for_the_cluster();
        for (user, was) in users.iter().zip(before) {
            let now = self.online_anywhere(user);
            if now != was {
                if speak {
                    self.announce(user, now);
                } else {
                    self.announce_here(user, now);
                }
            }
        }
    }

    fn add(&self, user: &str, change: Change) {
        // A user already online on another node was announced there.
        let online_elsewhere = self.online_elsewhere(user);
        let announce = {
            let mut users = self.users.lock();
            let entry = users.entry(user.to_owned()).or_default();
            match change {
                Change::Socket(namespace, id) => entry.sockets.push((namespace, id)),
                Change::Other => entry.other += 1,
            }
            entry.generation += 1;
            let first = !entry.announced_online;
            entry.announced_online = true;
            if first && online_elsewhere {
                entry.held_back = true;
            }
            first && !online_elsewhere
        };
        self.tell_local_change(user, announce.then_some(true));
        if announce {
            self.announce(user, true);
        }
    }

    fn remove(self: &Arc<Self>, user: &str, change: Change) {
        let generation = {
            let mut users = self.users.lock();
            let Some(entry) = users.get_mut(user) else {
                return;
            };
            match change {
                Change::Socket(namespace, id) => entry
                    .sockets
                    .retain(|(n, i)| !(*n == namespace && *i == id)),
                Change::Other => entry.other = entry.other.saturating_sub(1),
            }
            entry.generation += 1;
            if entry.connections() > 0 {
                drop(users);
                self.tell_local_change(user, None);
                return;
            }
            entry.generation
        };
        self.tell_local_change(user, None);
        if self.grace.is_zero() {
            self.go_offline(user, generation);
            return;
        }
        let presence = self.clone();
        let user = user.to_owned();
        let grace = self.grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            presence.go_offline(&user, generation);
        });
    }

    fn go_offline(&self, user: &str, generation: u64) {
        // Still online on another node: not offline for anyone.
        let online_elsewhere = self.online_elsewhere(user);
        let removed = {
            let mut users = self.users.lock();
            match users.get(user) {
                Some(entry) if entry.generation == generation && entry.connections() == 0 => {
                    let was_online = entry.announced_online;
                    users.remove(user);
                    Some(was_online)
                }
                _ => None,
            }
        };
        let Some(was_online) = removed else {
            return;
        };
        let announce = was_online && !online_elsewhere;
        self.tell_local_change(user, announce.then_some(false));
        if announce {
            self.announce(user, false);
        }
    }

    /// Users in their grace period (no connection left) go offline now: the server is shutting
    /// down and their grace timers would not fire.
    pub fn end_grace(&self) {
        let waiting: Vec<(String, u64)> = self
            .users
            .lock()
            .iter()
            .filter(|(_, entry)| entry.connections() == 0)
            .map(|(user, entry)| (user.clone(), entry.generation))
            .collect();
        for (user, generation) in waiting {
            self.go_offline(&user, generation);
        }
    }

    pub fn socket_joined(&self, user: &str, namespace: Arc<str>, socket: Arc<str>) {
        self.add(user, Change::Socket(namespace, socket));
    }

    pub fn socket_left(self: &Arc<Self>, user: &str, namespace: Arc<str>, socket: Arc<str>) {
        self.remove(user, Change::Socket(namespace, socket));
    }

    /// A connection outside Socket.IO (the plain WebSocket endpoint).
    pub fn connection_opened(&self, user: &str) {
        self.add(user, Change::Other);
    }

    pub fn connection_closed(self: &Arc<Self>, user: &str) {
        self.remove(user, Change::Other);
    }

    /// (online, connections) of a user. Online stays true during the grace period.
    pub fn user(&self, user: &str) -> (bool, usize) {
        self.users
            .lock()
            .get(user)
            .map_or((false, 0), |e| (e.announced_online, e.connections()))
    }

    /// The ids of a user's sockets in one namespace.
    pub fn sockets_of(&self, user: &str, namespace: &str) -> Vec<Arc<str>> {
        self.users.lock().get(user).map_or_else(Vec::new, |e| {
            e.sockets
                .iter()
                .filter(|(n, _)| **n == *namespace)
                .map(|(_, id)| id.clone())
                .collect()
        })
    }

    /// Users online now.
    pub fn online_count(&self) -> usize {
        self.users
            .lock()
            .values()
            .filter(|e| e.announced_online)
            .count()
    }

    pub fn online_users(&self) -> Vec<String> {
        let mut users: Vec<String> = self
            .users
            .lock()
            .iter()
            .filter(|(_, e)| e.announced_online)
            .map(|(u, _)| u.clone())
            .collect();
        users.sort();
        users
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder(presence: &Presence) -> Arc<Mutex<Vec<(String, bool)>>> {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        presence.on_change(Arc::new(move |user, online| {
            sink.lock().push((user.to_owned(), online))
        }));
        log
    }

    type Outbox = Arc<Mutex<Vec<(String, UserHere)>>>;

    /// A node of a two-node cluster whose messages wait in an outbox until delivered.
    fn node(id: &str) -> (Arc<Presence>, Outbox) {
        let presence = Presence::new("userId", Duration::ZERO);
        presence.set_node_id(id);
        let outbox: Outbox = Arc::default();
        let sent = outbox.clone();
        presence.on_local_change(Arc::new(move |user, here| {
            sent.lock().push((user.to_owned(), here))
        }));
        (presence, outbox)
    }

    fn deliver(from: &str, outbox: &Outbox, to: &Presence) {
        for (user, here) in outbox.lock().drain(..) {
            to.user_elsewhere(from, &user, &here);
        }
    }

    #[test]
    fn a_user_on_two_nodes_is_announced_online_once_and_offline_once() {
        let (a, from_a) = node("a");
        let (b, from_b) = node("b");
        let (heard_a, heard_b) = (recorder(&a), recorder(&b));
        a.socket_joined("u", "/".into(), "s1".into());
        deliver("a", &from_a, &b);
        b.socket_joined("u", "/".into(), "s2".into());
        deliver("b", &from_b, &a);
        assert_eq!(*heard_a.lock(), vec![("u".to_owned(), true)]);
        assert!(heard_b.lock().is_empty(), "already announced by a");
        // Both connections close before either node hears of the other's.
        a.socket_left("u", "/".into(), "s1".into());
        b.socket_left("u", "/".into(), "s2".into());
        assert_eq!(heard_a.lock().len(), 1, "b still had the user");
        deliver("a", &from_a, &b);
        deliver("b", &from_b, &a);
        // Announced offline once, by the node with the smallest id.
        assert_eq!(
            *heard_a.lock(),
            vec![("u".to_owned(), true), ("u".to_owned(), false)]
        );
        assert!(heard_b.lock().is_empty());
        assert!(!a.online_elsewhere("u") && !b.online_elsewhere("u"));
    }

    #[tokio::test]
    async fn online_while_any_connection_is_with_a_grace_period() {
        let presence = Presence::new("userId", Duration::from_millis(50));
        let log = recorder(&presence);
        presence.socket_joined("u1", "/".into(), "s1".into());
        presence.connection_opened("u1");
        assert_eq!(presence.user("u1"), (true, 2));
        presence.socket_left("u1", "/".into(), "s1".into());
        presence.connection_closed("u1");
        // A reload within the grace period: no flap.
        presence.connection_opened("u1");
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(*log.lock(), vec![("u1".to_owned(), true)]);
        presence.connection_closed("u1");
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(
            *log.lock(),
            vec![("u1".to_owned(), true), ("u1".to_owned(), false)]
        );
        assert_eq!(presence.user("u1"), (false, 0));
        assert_eq!(presence.online_count(), 0);
    }
}
