//! What the hub needs from a cluster: the [`Adapter`] it calls after each operation that reaches
//! beyond this node's sockets (a broadcast, a join/leave/disconnect of sockets selected by rooms,
//! an emit or disconnect aimed at a user), the questions cluster-wide reads ask the other
//! nodes, and, when the cluster has one, the [`SharedLog`] every node reads broadcasts from in
//! one order. The hub defines it so that it never depends on an implementation: the cluster
//! core (`crate::cluster`) implements it on top of the hub's local operations.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::oneshot;

use super::Target;
use super::access::AccessChange;
use super::reads::Question;

/// The cluster's engine did not take an operation in time (out of reach, or too slow):
/// the API answers 503, and the operation reached no one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the cluster could not take the operation in time")]
pub struct NotTaken;

/// Told once the cluster's engine has taken one operation (it answered the publish or the
/// append): `Ok` with the shared log's offset for an entry appended to it, or [`NotTaken`]. An
/// adapter that is given one and cannot send its operation drops it (the waiter then learns
/// [`NotTaken`]), and does not send an operation whose waiter has stopped waiting.
pub type TakenSender = oneshot::Sender<Result<Option<u64>, NotTaken>>;

/// Hands `send` a [`TakenSender`] for the operation it gives `adapter`, then waits until the
/// engine has taken it, at most [`Adapter::take_timeout`].
pub async fn until_taken(
    adapter: &dyn Adapter,
    send: impl FnOnce(TakenSender),
) -> Result<Option<u64>, NotTaken> {
    let (taken, receipt) = oneshot::channel();
    send(taken);
    match tokio::time::timeout(adapter.take_timeout(), receipt).await {
        Ok(Ok(outcome)) => outcome,
        // Dropped unsent, or not taken in time (the receipt is dropped here: the adapter then
        // leaves the operation unsent if it still can).
        Ok(Err(_)) | Err(_) => Err(NotTaken),
    }
}

/// The receiving end of a [`TakenSender`]: what a caller that does not wait at once keeps.
pub type TakenReceipt = oneshot::Receiver<Result<Option<u64>, NotTaken>>;

/// Waits until the engine has taken every operation of `receipts`, at most the adapter's take
/// timeout in all.
pub async fn all_taken(adapter: &dyn Adapter, receipts: Vec<TakenReceipt>) -> Result<(), NotTaken> {
    // Every receipt is read to its end, a failed one included: one dropped unread would tell
    // the driver that nobody waits for the operations after it, and it would leave them out.
    let every = async {
        let mut all = true;
        for receipt in receipts {
            all &= matches!(receipt.await, Ok(Ok(_)));
        }
        if all { Ok(()) } else { Err(NotTaken) }
    };
    tokio::time::timeout(adapter.take_timeout(), every)
        .await
        .unwrap_or(Err(NotTaken))
}

/// A boxed future, for the trait's async methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What is done to a user's sockets on the other nodes (tagged `op` on the wire).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum UserOp {
    /// Emit to the user's sockets and to `rooms`, minus `except`, as one broadcast.
    Emit {
        rooms: Vec<String>,
        except: Vec<String>,
        event: String,
        args: Vec<Value>,
    },
    /// Disconnect the user's sockets (closing their connections with `close`).
    Disconnect { close: bool },
}

/// How far a node has read the shared log (see [`SharedLog::position`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogPosition {
    /// Every entry after this one has been read and applied here.
    pub start: u64,
    /// The last entry read.
    pub read: u64,
}

/// A session another node saved in the shared store (its node may since have been killed).
#[derive(Debug, Clone)]
pub struct SharedSession {
    pub sid: String,
    pub pid: String,
    /// Its rooms, its own id among them.
    pub rooms: Vec<String>,
    pub data: serde_json::Map<String, Value>,
    /// Where the log stood when it first connected (a client that received nothing sends no
    /// offset).
    pub connected_seq: Option<u64>,
}

/// An event read back from the shared log.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    pub seq: u64,
    pub rooms: Vec<String>,
    pub except: Vec<String>,
    pub event: String,
    pub args: Vec<Value>,
    pub attachments: Vec<Bytes>,
}

/// Carries this node's operations to the other nodes of a cluster. Each operation may come
/// with a [`TakenSender`], told once the cluster's engine has taken it (the HTTP API answers
/// then); operations are taken in the order they were given.
pub trait Adapter: Send + Sync {
    /// A broadcast made on this node.
    fn broadcast(
        &self,
        namespace: &str,
        target: &Target,
        event: &str,
        args: &[Value],
        attachments: &[Bytes],
        taken: Option<TakenSender>,
    );

    /// The sockets `selection` picks join (or leave) `rooms`.
    fn membership(
        &self,
        namespace: &str,
        selection: &Target,
        rooms: &[String],
        join: bool,
        taken: Option<TakenSender>,
    );

    /// The sockets `selection` picks are disconnected.
    fn disconnect(
        &self,
        namespace: &str,
        selection: &Target,
        close: bool,
        taken: Option<TakenSender>,
    );

    /// An operation on a user's sockets wherever they are connected.
    fn for_user(&self, namespace: &str, user: &str, op: UserOp, taken: Option<TakenSender>);

    /// A user was blocked or a token revoked (or either lifted) on this node: every other node
    /// applies it, and the cluster's engine keeps it until it ends, for nodes that start later.
    fn access_changed(&self, change: &AccessChange, taken: Option<TakenSender>);

    /// Keeps `event` (encoded) in the engine as the last state of `room` under `field` (the
    /// event name, or "" for a room that keeps one event), until `ttl`; said by the node that
    /// publishes it.
    fn keep_last(&self, namespace: &str, room: &str, field: &str, event: Vec<u8>, ttl: Duration);

    /// What the engine keeps as `room`'s last state (nothing when it cannot be asked).
    fn last_of(&self, namespace: &str, room: &str) -> BoxFuture<'_, Vec<Vec<u8>>>;

    /// Whether this node hears every broadcast to every room, even rooms none of its sockets
    /// are in (the sharded adapter's dynamic modes hear only their sockets' rooms).
    fn hears_every_room(&self) -> bool {
        true
    }

    /// This node restored a session (`socket_id` in `namespace`, private id `pid`): a node that
    /// still has that socket (its old transport not seen ending there) drops it, and a node
    /// that saved a copy of the session forgets it.
    fn session_taken(&self, _namespace: &str, _socket_id: &str, _pid: &str) {}

    /// How long a caller waits for the engine to take an operation before it gives up.
    fn take_timeout(&self) -> Duration {
        Duration::from_secs(5)
    }

    /// A namespace was created on this node (requests about it are listened for).
    fn namespace_added(&self, namespace: &str);

    /// Asks every other node `question`; answers with what they said (nodes that do not answer
    /// within the configured timeout are left out).
    fn query(&self, question: Question) -> BoxFuture<'_, Vec<Value>>;

    /// Whether the link to the other nodes is up now.
    fn is_connected(&self) -> bool;

    /// What the cluster has counted since start (for the metrics).
    fn counters(&self) -> ClusterCounters;

    /// The shared log, when broadcasts go through one: it brings this node's own broadcasts
    /// back to it, and the hub then leaves their delivery here to the log (in its order, with
    /// its offsets) instead of delivering them at once; sessions are shared through it.
    fn shared_log(&self) -> Option<&dyn SharedLog> {
        None
    }

    /// This node is shutting down: tells the others (its users are gone with it) and waits,
    /// briefly, until what it said before has been sent.
    fn leave(&self) -> BoxFuture<'_, ()>;
}

/// What a cluster has counted since start, and the other nodes up now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterCounters {
    /// Messages for the other nodes dropped.
    pub dropped: u64,
    /// Other nodes taken for dead (silent past the node timeout).
    pub nodes_expired: u64,
    /// Other nodes up now (heard within the node timeout).
    pub nodes_up: u64,
    /// Messages received from the cluster's engine.
    pub received: u64,
    /// Sessions taken from the shared store.
    pub shared_sessions_taken: u64,
}

/// An ordered log every node reads broadcasts and room operations from, and the session store
/// that goes with it (any node can restore a session another node saved).
pub trait SharedLog: Send + Sync {
    /// How far this node has read the log: the position it started reading after (what came
    /// before is only in the log) and the last position it has read (every namespace's).
    /// None while it has not started reading.
    fn position(&self) -> Option<LogPosition>;

    /// Takes a session saved by any node out of the shared store.
    fn take_session(&self, pid: &str) -> BoxFuture<'_, Option<SharedSession>>;

    /// The events of `namespace` the log holds after `after` up to `through`, in order; None
    /// when the log no longer reaches back to `after`.
    fn events(
        &self,
        namespace: &str,
        after: u64,
        through: u64,
    ) -> BoxFuture<'_, Option<Vec<LoggedEvent>>>;
}

/// Where the hub and its namespaces find the adapter: empty on a node of its own.
#[derive(Default)]
pub struct ClusterSlot(OnceLock<Arc<dyn Adapter>>);

impl ClusterSlot {
    pub fn get(&self) -> Option<&Arc<dyn Adapter>> {
        self.0.get()
    }

    /// Sets the adapter once; a second one is refused (returned).
    pub fn set(&self, adapter: Arc<dyn Adapter>) -> Result<(), Arc<dyn Adapter>> {
        self.0.set(adapter)
    }
}
