//! Sessions shared for recovery on any node (the log dialect): a socket's session (id, rooms,
//! data) kept at `<session prefix><pid>` with the recovery window as TTL, written when it
//! connects and whenever its rooms or its data change, rewritten every third of the window
//! while it is connected, kept (or deleted) when it ends; written back when the link returns,
//! with the sessions saved for dropped clients when the engine came back empty.

use std::sync::Arc;
use std::time::Duration;

use super::node::ClusterNode;
use super::stream_message::{self, StoredSession};
use crate::hub::{DisconnectReason, Hub, HubObserver, Socket, offset_text};

/// Each node's marker among the sessions (`<session_prefix>switchboard-node#<uid>`): gone when
/// the engine lost what it held. It lives three refreshes of the sessions and each refresh
/// extends it (an `EXPIRE`, which never brings a lost marker back), so a node gone for good
/// leaves it behind only that long.
const SESSIONS_MARKER: &str = "switchboard-node#";

impl ClusterNode {
    pub(super) fn session_key(&self, pid: &str) -> String {
        format!("{}{pid}", self.settings.session_prefix)
    }

    /// The link is up (at start, after an outage): every connected socket's session is written
    /// again (this node holds the truth of those), and when the engine came back without this
    /// node's marker (Redis restarted empty) the sessions it saved for clients that dropped
    /// are written back too, with the time they have left, so that those clients still recover
    /// on any node. Saved copies are not written back otherwise: another node may have taken
    /// one meanwhile.
    pub(super) async fn resync_sessions(self: Arc<Self>) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let marker = self.sessions_marker();
        let lost = match self.driver.get(marker.clone()).await {
            Ok(held) => held.is_none(),
            Err(error) => {
                tracing::debug!(%error, "cluster: cannot tell whether the engine kept the sessions");
                return;
            }
        };
        self.write_connected_sessions(&hub);
        if lost {
            let written = self.write_saved_sessions(&hub);
            if written > 0 {
                tracing::info!(
                    sessions = written,
                    "cluster: the engine lost the saved sessions; writing this node's back"
                );
            }
        }
        self.driver
            .set(marker, b"1".to_vec(), sessions_refresh_every(&hub) * 3);
    }

    pub(super) fn sessions_marker(&self) -> String {
        self.session_key(&format!("{SESSIONS_MARKER}{}", self.uid))
    }

    /// Writes every connected socket's session again.
    pub(super) fn write_connected_sessions(&self, hub: &Hub) {
        for namespace in hub.namespaces() {
            if namespace.recovers() {
                for socket in namespace.select(&[], &[]).sockets() {
                    self.write_session(&socket);
                }
            }
        }
    }

    /// Writes back the sessions this node saved for dropped clients, each with the time it has
    /// left; answers how many.
    pub(super) fn write_saved_sessions(&self, hub: &Hub) -> usize {
        let mut written = 0;
        for namespace in hub.namespaces().iter().filter(|n| n.recovers()) {
            for (session, left) in namespace.saved_with_time_left() {
                self.put_session(
                    StoredSession {
                        sid: session.sid.to_string(),
                        pid: session.pid.to_string(),
                        rooms: session.rooms.iter().map(|r| r.to_string()).collect(),
                        data: session.data,
                        connected_offset: Some(offset_text(session.connected_seq)),
                    },
                    left,
                );
                written += 1;
            }
        }
        written
    }

    /// Writes a connected socket's session (rooms, data) with the recovery window as TTL.
    pub(super) fn write_session(&self, socket: &Socket) {
        let Some(pid) = socket.pid() else {
            return;
        };
        let Some(window) = socket.namespace().recovery_window() else {
            return;
        };
        // A socket gone since it was listed (a refresh) has had its session ended: not again.
        if !socket.is_connected() {
            return;
        }
        let session = StoredSession {
            sid: socket.id().to_string(),
            pid: pid.to_string(),
            rooms: socket.rooms().iter().map(|r| r.to_string()).collect(),
            data: socket.data(),
            connected_offset: Some(offset_text(socket.connected_seq)),
        };
        self.put_session(session, window);
    }

    /// Keeps `session` in the store under its pid for `ttl`.
    pub(super) fn put_session(&self, session: StoredSession, ttl: Duration) {
        let value = stream_message::encode_session(&session).into_bytes();
        self.driver.set(
            self.session_key(&session.pid),
            value,
            ttl.max(Duration::from_millis(1)),
        );
    }

    /// What happens to a gone socket's session: kept for the recovery window when the socket
    /// may come back, deleted when it left for good.
    pub(super) fn end_session(&self, socket: &Socket, keep: bool) {
        let Some(pid) = socket.pid() else {
            return;
        };
        let key = self.session_key(pid);
        match socket.namespace().recovery_window() {
            Some(window) if keep => self
                .driver
                .expire(key, window.max(Duration::from_millis(1))),
            _ => self.driver.delete(key),
        }
    }
}

/// Keeps each socket's session in the store as it changes.
pub(super) struct SessionWriter(pub(super) std::sync::Weak<ClusterNode>);

impl SessionWriter {
    fn write(&self, namespace: &str, socket: &str) {
        if let Some(node) = self.0.upgrade()
            && let Some(hub) = node.hub.upgrade()
            && let Some(socket) = hub.of(namespace).and_then(|n| n.socket(socket))
        {
            node.write_session(&socket);
        }
    }
}

impl HubObserver for SessionWriter {
    fn socket_connected(&self, socket: &Arc<Socket>) {
        if let Some(node) = self.0.upgrade() {
            node.write_session(socket);
        }
    }

    fn socket_disconnected(&self, socket: &Arc<Socket>, reason: DisconnectReason) {
        // A copy left behind by a session another node took over: the stored session is that
        // node's now.
        if reason == DisconnectReason::TakenOver {
            return;
        }
        if let Some(node) = self.0.upgrade() {
            node.end_session(socket, crate::hub::worth_saving(reason));
        }
    }

    fn room_joined(&self, namespace: &str, _room: &str, socket: &str) {
        self.write(namespace, socket);
    }

    fn room_left(&self, namespace: &str, _room: &str, socket: &str) {
        self.write(namespace, socket);
    }

    /// The user set by a rule on connect must survive a kill: without it the recovered socket
    /// has no user, and that user stays offline everywhere.
    fn data_changed(&self, namespace: &str, socket: &str) {
        self.write(namespace, socket);
    }
}

/// Rewrites every connected socket's session every third of the shortest recovery window (its
/// data may have changed, and its TTL runs); ends on shutdown.
pub(super) async fn refresh_sessions_loop(node: Arc<ClusterNode>) {
    loop {
        let every = match node.hub.upgrade() {
            Some(hub) => sessions_refresh_every(&hub),
            None => return,
        };
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let Some(hub) = node.hub.upgrade() else {
            return;
        };
        node.write_connected_sessions(&hub);
        node.driver.expire(node.sessions_marker(), every * 3);
    }
}

/// How often connected sessions are written again: every third of the shortest recovery window.
fn sessions_refresh_every(hub: &Hub) -> Duration {
    hub.namespaces()
        .iter()
        .filter_map(|n| n.recovery_window().map(|w| w / 3))
        .min()
        .unwrap_or(Duration::from_secs(30))
        .max(Duration::from_secs(1))
}
