//! Switchboard: a real-time server that speaks Socket.IO.
//!
//! The parts, from the bottom up (each uses only parts below it; `tests/layers.rs` keeps it so):
//! plain data and tools ([`protocol`] pure codecs, [`config`] the schema, [`http`] the shared
//! HTTP types and the one body reader, [`pattern`], [`clock`], [`rate`], [`trace`] spans for
//! OpenTelemetry); the transports
//! ([`websocket`], [`engine`] Engine.IO sessions, [`cors`], [`forward`]: passing requests for
//! another node's sessions on); [`hub`] (Socket.IO namespaces, sockets, rooms, broadcast, and
//! the operations every other caller uses); parts built on the hub ([`cluster`], [`auth`],
//! [`metrics`], [`rules`], [`backend`], [`plain_ws`], [`admin_ui`], [`api`]); [`server`] (the
//! listener and HTTP routing, over [`tls`] when configured); and [`app`], which builds them
//! all from a config.

pub mod admin_ui;
pub mod api;
pub mod app;
pub mod auth;
pub mod backend;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod cors;
pub mod engine;
pub mod error_code;
pub mod forward;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod pattern;
pub mod plain_ws;
pub mod protocol;
pub mod rate;
pub mod rules;
pub mod server;
pub mod tls;
pub mod trace;
pub mod websocket;

#[cfg(test)]
mod connection_budget;
