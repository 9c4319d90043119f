//! Clustering: the implementation of the hub's [`Adapter`](crate::hub::adapter::Adapter), so that
//! rooms span every node. It sits above the hub: it calls the hub's local operations to apply
//! what other nodes did, and the hub only knows the trait.
//!
//! A node on its own (the default) needs nothing here: the hub's rooms are the whole truth.
//! With `[cluster]` configured, the hub is given an adapter and calls it after each of its
//! operations that reach beyond this node's sockets: a broadcast, a join/leave/disconnect of
//! sockets selected by rooms, an emit or disconnect aimed at a user. The adapter carries them to
//! the other nodes, which apply them to their own sockets with the hub's local operations (never
//! sending them on again). Reads the HTTP API answers for the whole cluster (room members,
//! presence, stats) are questions every other node answers (`hub::reads`).
//!
//! [`redis::RedisAdapter`] is the implementation: Redis pub/sub in the Socket.IO Redis adapter's
//! message shapes (see `message.rs`), or with `adapter = "streams"` one Redis stream in the
//! Redis Streams adapter's (see `stream_message.rs`, `redis/streams.rs`), sessions kept in Redis
//! for recovery on any node. An operation may ask to be told once Redis has taken it (the HTTP
//! API answers then). `redis/node_address.rs` keeps each node's address for `crate::forward`.

pub mod message;
pub mod redis;
pub mod stream_message;
