//! What the hub needs from a cluster: the [`Adapter`] it calls after each operation that reaches
//! beyond this node's sockets (a broadcast, a join/leave/disconnect of sockets selected by rooms,
//! an emit or disconnect aimed at a user), and the questions cluster-wide reads ask the other
//! nodes. The hub defines it so that it never depends on an implementation: the Redis adapter
//! (`crate::cluster`) implements it on top of the hub's local operations.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::oneshot;

use super::Target;

/// The cluster's engine did not take an operation in time (Redis out of reach, or too slow):
/// the API answers 503, and the operation reached no one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the cluster could not take the operation in time")]
pub struct NotTaken;

/// Told once the cluster's engine has taken one operation (Redis answered the PUBLISH or the
/// XADD): `Ok` with the shared log's offset for an entry appended to it, or [`NotTaken`]. An
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

/// A boxed future, for the trait's async methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What is done to a user's sockets on the other nodes.
#[derive(Debug, Clone)]
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

/// How far a node has read the shared log (see [`Adapter::log_position`]).
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

    /// How long a caller waits for the engine to take an operation before it gives up.
    fn take_timeout(&self) -> Duration {
        Duration::from_secs(5)
    }

    /// A namespace was created on this node (requests about it are listened for).
    fn namespace_added(&self, namespace: &str);

    /// Asks every other node `question`; answers with what they said (nodes that do not answer
    /// within the configured timeout are left out).
    fn query(&self, question: Value) -> BoxFuture<'_, Vec<Value>>;

    /// Whether the link to the other nodes is up now.
    fn is_connected(&self) -> bool;

    /// Messages for the other nodes dropped since start.
    fn dropped(&self) -> u64;

    /// Other nodes taken for dead since start (silent past the node timeout).
    fn nodes_expired(&self) -> u64 {
        0
    }

    /// Sessions taken from the shared store since start.
    fn shared_sessions_taken(&self) -> u64 {
        0
    }

    /// Whether broadcasts go through a shared, ordered log that brings this node's own back to
    /// it: the hub then leaves their delivery here to the adapter (in the log's order, with the
    /// log's offsets) instead of delivering them at once.
    fn orders_broadcasts(&self) -> bool {
        false
    }

    /// Whether sessions saved for recovery are shared (any node can restore them).
    fn shares_sessions(&self) -> bool {
        false
    }

    /// Takes a session saved by any node out of the shared store.
    fn take_session(&self, _pid: &str) -> BoxFuture<'_, Option<SharedSession>> {
        Box::pin(async { None })
    }

    /// How far this node has read the shared log: the position it started reading after (what
    /// came before is only in the log) and the last position it has read (every namespace's).
    fn log_position(&self) -> Option<LogPosition> {
        None
    }

    /// The events of `namespace` the shared log holds after `after` up to `through`, in order;
    /// None when the log no longer reaches back to `after`.
    fn logged_events(
        &self,
        _namespace: &str,
        _after: u64,
        _through: u64,
    ) -> BoxFuture<'_, Option<Vec<LoggedEvent>>> {
        Box::pin(async { None })
    }

    /// This node is shutting down: tells the others (its users are gone with it) and waits,
    /// briefly, until what it said before has been sent.
    fn leave(&self) -> BoxFuture<'_, ()>;
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
