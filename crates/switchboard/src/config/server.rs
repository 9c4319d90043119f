//! The sections about serving: `[server]` (listener, path, shutdown, logs), `[cors]`,
//! `[engine]` (Engine.IO heartbeats, payload, transports), `[limits]`, `[api]`, `[console]` and
//! `[tls]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ByteSize, HumanDuration};

/// `server.drain_period` by default: long enough that the survivors of a rolling restart take
/// the clients a few hundred per second, short enough for an orchestrator's default 30 s grace
/// (see BENCHMARKS.md, "Deploys without reconnect storms").
pub const DEFAULT_DRAIN_PERIOD: Duration = Duration::from_secs(10);

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
    /// Over how long a shutdown closes its clients, in batches (a staged drain, so that they
    /// reconnect to the other nodes a few at a time); "0s" closes them all at once.
    pub drain_period: HumanDuration,
    pub log_format: LogFormat,
    /// How often the stats line is logged; "0s" turns it off.
    pub stats_interval: HumanDuration,
    /// How long a client has to send a request's head (a slowloris client is cut off).
    pub header_read_timeout: HumanDuration,
    /// How long a client has to send a request's body once its head arrived (polling POSTs,
    /// the API, configured routes).
    pub body_read_timeout: HumanDuration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 4000,
            path: "/socket.io/".into(),
            shutdown_timeout: HumanDuration(Duration::from_secs(10)),
            drain_period: HumanDuration(DEFAULT_DRAIN_PERIOD),
            log_format: LogFormat::Pretty,
            stats_interval: HumanDuration(Duration::from_secs(30)),
            header_read_timeout: HumanDuration(Duration::from_secs(10)),
            body_read_timeout: HumanDuration(Duration::from_secs(10)),
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
    /// Whether clients using socket.io-msgpack-parser are served (told by their first packet).
    pub msgpack: bool,
    /// permessage-deflate offered to WebSocket clients (a broadcast compressed once for all).
    pub compression: bool,
    /// Messages shorter than this go uncompressed.
    pub compression_threshold: ByteSize,
    /// Whether Engine.IO v3 clients (socket.io-client 2.x) are served, as the reference
    /// server's `allowEIO3`.
    pub allow_eio3: bool,
    /// Whether the flusher threads write a broadcast's recipients in batches of one system
    /// call through io_uring (Linux, where the kernel and any seccomp profile allow it).
    pub io_uring: bool,
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
            msgpack: true,
            compression: false,
            compression_threshold: ByteSize(512),
            allow_eio3: false,
            io_uring: true,
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
    /// Connections at once from one client address; further handshakes get 429. 0: no limit.
    pub max_connections_per_ip: usize,
    /// New connections per second from one client address (a token bucket with
    /// `connect_burst_per_ip`); faster handshakes get 429. 0: no limit.
    pub connect_rate_per_ip: f64,
    pub connect_burst_per_ip: u32,
    /// Sockets of one user at once on this node (tabs, devices, namespaces); a further connect
    /// gets CONNECT_ERROR `too_many_connections`. 0: no limit.
    pub max_connections_per_user: usize,
    /// Proxies (IPs or CIDRs, e.g. "10.0.0.0/8") whose `X-Forwarded-For` is believed: the
    /// client address is the last one in it that is not such a proxy.
    pub trusted_proxies: Vec<String>,
    /// Rooms one socket may be in (its own not counted); further joins are refused.
    pub max_rooms_per_socket: usize,
    /// Namespaces one connection may join at once.
    pub max_namespaces_per_connection: usize,
    /// The longest event name a client may send, in bytes.
    pub event_name_max: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 0,
            socket_queue: 4096,
            api_max_body: ByteSize(1_000_000),
            room_name_max: 256,
            max_connections_per_ip: 0,
            connect_rate_per_ip: 0.0,
            connect_burst_per_ip: 20,
            max_connections_per_user: 0,
            trusted_proxies: Vec::new(),
            max_rooms_per_socket: 1000,
            max_namespaces_per_connection: 16,
            event_name_max: 256,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub enabled: bool,
    /// Bearer keys for the HTTP API. None: the API answers loopback callers only.
    pub keys: Vec<String>,
    /// How long a block or a token revocation lasts when the request names no end, and the
    /// longest one may last (nothing is kept for ever).
    pub access_ttl: HumanDuration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            keys: Vec::new(),
            access_ttl: HumanDuration(std::time::Duration::from_secs(30 * 24 * 3600)),
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

/// `[tls]`: serve HTTPS and WSS on the listener. Both files set, or neither.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// The certificate chain, PEM, leaf first (e.g. Let's Encrypt's `fullchain.pem`).
    pub cert: Option<String>,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<String>,
}

impl TlsSettings {
    pub fn configured(&self) -> bool {
        self.cert.is_some() || self.key.is_some()
    }
}
