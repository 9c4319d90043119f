//! The sections about serving: `[server]` (listener, path, shutdown, logs), `[cors]`,
//! `[engine]` (Engine.IO heartbeats, payload, transports), `[limits]`, `[api]` and `[console]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ByteSize, HumanDuration};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// Where Socket.IO clients connect (the client's `path` option).
    pub path: String,
    /// How long a shutdown waits for queued messages to reach clients.
    pub shutdown_timeout: HumanDuration,
    pub log_format: LogFormat,
    /// How often the stats line is logged; "0s" turns it off.
    pub stats_interval: HumanDuration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 4000,
            path: "/socket.io/".into(),
            shutdown_timeout: HumanDuration(Duration::from_secs(10)),
            log_format: LogFormat::Pretty,
            stats_interval: HumanDuration(Duration::from_secs(30)),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Allowed browser origins: exact, with `*` wildcards, or `["*"]` for any.
    pub origins: Vec<String>,
    /// Whether browsers may send cookies (the origin is then echoed, never `*`).
    pub credentials: bool,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            origins: vec!["http://localhost:*".into(), "http://127.0.0.1:*".into()],
            credentials: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    pub ping_interval: HumanDuration,
    pub ping_timeout: HumanDuration,
    pub max_payload: ByteSize,
    pub connect_timeout: HumanDuration,
    pub upgrade_timeout: HumanDuration,
    /// Transports clients may use: "polling", "websocket".
    pub transports: Vec<String>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            ping_interval: HumanDuration(Duration::from_secs(25)),
            ping_timeout: HumanDuration(Duration::from_secs(20)),
            max_payload: ByteSize(1_000_000),
            connect_timeout: HumanDuration(Duration::from_secs(45)),
            upgrade_timeout: HumanDuration(Duration::from_secs(10)),
            transports: vec!["polling".into(), "websocket".into()],
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Connections at once; further handshakes get 503. 0: no limit.
    pub max_connections: usize,
    /// Packets a connection may have queued before it is closed as a slow consumer.
    pub socket_queue: usize,
    /// The largest HTTP API request body.
    pub api_max_body: ByteSize,
    /// The longest room name a client may use, in bytes.
    pub room_name_max: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 0,
            socket_queue: 4096,
            api_max_body: ByteSize(1_000_000),
            room_name_max: 256,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub enabled: bool,
    /// Bearer keys for the HTTP API. None: the API answers loopback callers only.
    pub keys: Vec<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            keys: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSettings {
    pub enabled: bool,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self { enabled: true }
    }
}
