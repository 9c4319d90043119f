//! Switchboard: a real-time server that speaks Socket.IO.
//!
//! The layers, from the wire up: [`protocol`] (pure codecs), [`engine`] (Engine.IO sessions and
//! transports), [`hub`] (Socket.IO namespaces, sockets, rooms, broadcast) and [`server`] (the
//! listener and HTTP routing).

pub mod admin_ui;
pub mod api;
pub mod app;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod cors;
pub mod engine;
pub mod hub;
pub mod metrics;
pub mod plain_ws;
pub mod protocol;
pub mod rules;
pub mod server;
pub mod websocket;
