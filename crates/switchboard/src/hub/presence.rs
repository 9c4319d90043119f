//! Users and presence. A socket (or a plain WebSocket connection) belongs to a user when its
//! data holds the user key (set by auth claims, a rule's `set`, or the plain endpoint's query).
//! A user is online while at least one of their connections is; when the last one closes they
//! go offline after a grace period, so a page reload does not flap. Listeners hear each change
//! once (the plain WebSocket endpoint, presence rooms).

use std::collections::HashMap;
use std::sync::Arc;
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
    listeners: RwLock<Vec<PresenceListener>>,
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
        })
    }

    /// The socket-data key that holds a user id.
    pub fn user_key(&self) -> &str {
        &self.user_key
    }

    pub fn on_change(&self, listener: PresenceListener) {
        self.listeners.write().push(listener);
    }

    fn announce(&self, user: &str, online: bool) {
        let listeners = self.listeners.read().clone();
        for listener in listeners {
            listener(user, online);
        }
    }

    fn add(&self, user: &str, change: Change) {
        let announce = {
            let mut users = self.users.lock();
            let entry = users.entry(user.to_owned()).or_default();
            match change {
                Change::Socket(namespace, id) => entry.sockets.push((namespace, id)),
                Change::Other => entry.other += 1,
            }
            entry.generation += 1;
            let announce = !entry.announced_online;
            entry.announced_online = true;
            announce
        };
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
                return;
            }
            entry.generation
        };
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
        let announce = {
            let mut users = self.users.lock();
            match users.get(user) {
                Some(entry) if entry.generation == generation && entry.connections() == 0 => {
                    let announce = entry.announced_online;
                    users.remove(user);
                    announce
                }
                _ => false,
            }
        };
        if announce {
            self.announce(user, false);
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
