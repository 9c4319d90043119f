//! Clustering: rooms that span every node. It sits above the hub: it calls the hub's local
//! operations to apply what other nodes did, and the hub only knows its
//! [`Adapter`](crate::hub::adapter::Adapter) trait.
//!
//! A node on its own (the default) needs nothing here: the hub's rooms are the whole truth.
//! With `[cluster]` configured, the hub is given a [`node::ClusterNode`] (the core) and calls it
//! after each of its operations that reach beyond this node's sockets: a broadcast, a
//! join/leave/disconnect of sockets selected by rooms, an emit or disconnect aimed at a user.
//! The core carries them to the other nodes, which apply them to their own sockets with the
//! hub's local operations (never sending them on again). Reads the HTTP API answers for the
//! whole cluster (room members, presence, stats) are questions every other node answers
//! (`hub::reads`).
//!
//! The layers, top down:
//! - `node.rs`: the core (node protocol, questions and answers, heartbeats, node expiry and
//!   addresses), with its three dialects for broadcasts and room operations:
//!   `socketio_pubsub.rs` (the Socket.IO Redis adapter's messages), `sharded.rs` (the sharded
//!   Redis adapter's cluster messages, on a namespace's channel or a room's) and `shared_log.rs`
//!   (the Redis Streams adapter's log entries, and sessions shared for recovery on any node);
//!   what Node.js servers on `socket.io-adapter`'s cluster adapters say is applied by
//!   `adapter_peers.rs`; blocked users and revoked tokens are carried and kept by
//!   `access.rs`;
//! - the codecs, with no I/O: `node_message.rs` (Switchboard's own node protocol),
//!   `message.rs` and `stream_message.rs` (the Socket.IO adapters' shapes);
//! - `driver.rs`: the small trait an engine implements (publish, subscribe, keys with TTLs, an
//!   optional log), and its drivers: `memory.rs` (one process), `redis/` (pub/sub, with a
//!   stream as its log; and a Redis Cluster through sharded pub/sub) and `postgres/`
//!   (`LISTEN`/`NOTIFY`, the log and keys in tables).

mod access;
mod adapter_peers;
pub mod driver;
pub mod memory;
pub mod message;
pub mod node;
pub mod node_message;
mod nodes;
pub mod postgres;
pub mod redis;
mod requests;
mod sharded;
mod shared_log;
mod shared_sessions;
mod socketio_pubsub;
pub mod stream_message;
