//! The wire formats, with no I/O: Engine.IO v4 packets and payloads (`engine`), Socket.IO v5
//! packets (`socket`) and their MessagePack form (`msgpack`, socket.io-msgpack-parser's). Everything here is a pure function of its input, so it can be unit-tested
//! and fuzzed without a network, and nothing here can panic on bad input.

pub mod engine;
pub mod msgpack;
pub mod socket;
