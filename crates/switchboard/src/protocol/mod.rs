//! The wire formats, with no I/O: Engine.IO v4 packets and payloads (`engine`) and Socket.IO v5
//! packets (`socket`). Everything here is a pure function of its input, so it can be unit-tested
//! and fuzzed without a network, and nothing here can panic on bad input.

pub mod engine;
pub mod socket;
