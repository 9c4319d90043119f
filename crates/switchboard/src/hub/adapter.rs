//! What the hub needs from a cluster: the [`Adapter`] it calls after each operation that reaches
//! beyond this node's sockets (a broadcast, a join/leave/disconnect of sockets selected by rooms,
//! an emit or disconnect aimed at a user), and the questions cluster-wide reads ask the other
//! nodes. The hub defines it so that it never depends on an implementation: the Redis adapter
//! (`crate::cluster`) implements it on top of the hub's local operations.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde_json::Value;

use super::Target;

/// A boxed future, for the trait's one async method.
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

/// Carries this node's operations to the other nodes of a cluster.
pub trait Adapter: Send + Sync {
    /// A broadcast made on this node.
    fn broadcast(
        &self,
        namespace: &str,
        target: &Target,
        event: &str,
        args: &[Value],
        attachments: &[Bytes],
    );

    /// The sockets `selection` picks join (or leave) `rooms`.
    fn membership(&self, namespace: &str, selection: &Target, rooms: &[String], join: bool);

    /// The sockets `selection` picks are disconnected.
    fn disconnect(&self, namespace: &str, selection: &Target, close: bool);

    /// An operation on a user's sockets wherever they are connected.
    fn for_user(&self, namespace: &str, user: &str, op: UserOp);

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
