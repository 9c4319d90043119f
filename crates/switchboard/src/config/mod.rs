//! The configuration: its schema (with the embedded defaults, so no file is needed), loading from
//! TOML, `SWITCHBOARD_…` environment overrides, `${VAR}` expansion for secrets, and validation.
//!
//! Precedence: flags > environment > file > defaults. Every error names the key, and for the file
//! the line: an unknown or misspelt key is an error, never silently ignored.

mod units;

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use units::{ByteSize, HumanDuration, parse_duration, parse_size};

pub use crate::admin_ui::AdminUiSettings;
pub use crate::auth::AuthSettings;
pub use crate::plain_ws::PlainWsSettings;
use crate::rules::spec::{ConnectRule, DisconnectRule, EventRule, RouteSpec};

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub cors: CorsConfig,
    pub engine: EngineSettings,
    pub limits: LimitsConfig,
    pub api: ApiConfig,
    /// The namespaces clients may connect to, with their rules. None configured: only `/`.
    pub namespaces: Vec<NamespaceConfig>,
    /// HTTP endpoints for backends that emit an event (`POST /broadcast/...`).
    pub routes: Vec<RouteSpec>,
    /// Connection state recovery (on by default).
    pub recovery: RecoverySettings,
    /// Per-room history limits, by room-name pattern; the first match wins.
    pub history: Vec<HistorySettings>,
    /// JWT verification of connecting clients.
    pub auth: AuthSettings,
    /// Users online, presence events.
    pub presence: PresenceSettings,
    /// The plain WebSocket endpoint (JSON, for non-Socket.IO clients).
    pub plain_ws: PlainWsSettings,
    /// The web console at /console.
    pub console: ConsoleSettings,
    /// Compatibility with the official Socket.IO Admin UI (off unless enabled).
    pub admin_ui: AdminUiSettings,
    /// Several nodes sharing rooms through Redis (off unless `redis_url` is set).
    pub cluster: ClusterSettings,
}

/// `[cluster]`: nodes share broadcasts, room operations and the API's reads through Redis
/// pub/sub, in the Socket.IO Redis adapter's message shapes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// `redis://host:port/db` (or `rediss://`); none: this node stands alone.
    pub redis_url: Option<String>,
    /// The channel prefix; "socket.io" shares rooms with `@socket.io/redis-adapter` servers and
    /// `@socket.io/redis-emitter` publishers using the default key.
    pub key: String,
    /// How long the API waits for the other nodes' answers to a cluster-wide read.
    pub request_timeout: HumanDuration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            redis_url: None,
            key: "socket.io".into(),
            request_timeout: HumanDuration(Duration::from_secs(5)),
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceSettings {
    /// The socket-data key that holds a user id (set by auth claims, rules or the plain endpoint).
    pub user_key: String,
    /// How long a user stays online after their last connection closes (no flap on reload).
    pub grace: HumanDuration,
    /// Namespace and rooms that get presence events.
    pub namespace: String,
    pub rooms: Vec<String>,
    pub online_event: String,
    pub offline_event: String,
    /// A client event answered (by ack) with the users in a room the sender is in.
    pub query_event: Option<String>,
}

impl Default for PresenceSettings {
    fn default() -> Self {
        Self {
            user_key: "userId".into(),
            grace: HumanDuration(Duration::from_secs(5)),
            namespace: "/".into(),
            rooms: Vec::new(),
            online_event: "user:online".into(),
            offline_event: "user:offline".into(),
            query_event: Some("presence:list".into()),
        }
    }
}

/// Whether a namespace requires a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// A valid token is needed to connect.
    Required,
    /// A token is checked when given; anonymous sockets connect too.
    Optional,
    /// No token is looked at.
    Off,
}

/// A room-name pattern a client event may use; `*` wildcards, `{data.key}` placeholders, and an
/// optional condition on socket data: `{ pattern = "video:*", when = { role = ["admin"] } }`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RoomPermission {
    Pattern(String),
    Conditional {
        pattern: String,
        when: std::collections::BTreeMap<String, Vec<serde_json::Value>>,
    },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoverySettings {
    pub enabled: bool,
    /// How long a disconnected client can come back to its session.
    pub max_disconnection_duration: HumanDuration,
    /// Saved sessions per namespace at most.
    pub max_sessions: usize,
    /// Room histories per namespace at most.
    pub max_rooms: usize,
    /// Whether auth runs again when a session is recovered.
    pub rerun_auth: bool,
    /// Whether on_connect rules run again when a session is recovered.
    pub rerun_on_connect: bool,
}

impl Default for RecoverySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_disconnection_duration: HumanDuration(Duration::from_secs(120)),
            max_sessions: 100_000,
            max_rooms: 100_000,
            rerun_auth: false,
            rerun_on_connect: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HistorySettings {
    /// Room-name pattern (`*` wildcards); `*` alone also covers events sent to everyone.
    pub rooms: String,
    pub max_events: usize,
    pub max_age: HumanDuration,
}

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
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    pub name: String,
    /// Room-name patterns a client event may join or address (`*` wildcards); none: any name
    /// (but never another socket's own room).
    #[serde(default)]
    pub rooms: Option<Vec<RoomPermission>>,
    #[serde(default)]
    pub on_connect: Option<ConnectRule>,
    #[serde(default)]
    pub events: Vec<EventRule>,
    #[serde(default)]
    pub on_disconnect: Option<DisconnectRule>,
    /// `false` turns connection state recovery off for this namespace.
    #[serde(default)]
    pub recovery: Option<bool>,
    /// Token requirement (default: `required` when `[auth]` is configured and requires it).
    #[serde(default)]
    pub auth: Option<AuthMode>,
}

/// A configuration problem, with where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    File {
        path: String,
        line: usize,
        column: usize,
        /// The dotted key, when the error is about one.
        key: Option<String>,
        message: String,
    },
    #[error("environment variable {variable}: {message}")]
    Env { variable: String, message: String },
    #[error("{location}key `{key}`: {message}")]
    Invalid {
        /// `path:line: ` when the key is found in the file.
        location: String,
        key: String,
        message: String,
    },
}

/// Flags that override the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub log_format: Option<LogFormat>,
}

/// The list-valued keys an environment variable fills with a comma-separated value.
const LIST_KEYS: [&str; 6] = [
    "cors.origins",
    "engine.transports",
    "api.keys",
    "auth.algorithms",
    "auth.sources",
    "presence.rooms",
];
const SECTIONS: [&str; 12] = [
    "server", "cors", "engine", "limits", "api", "recovery", "auth", "presence", "plain_ws",
    "console", "admin_ui", "cluster",
];
/// `SWITCHBOARD_…` variables that are not settings.
const NOT_SETTINGS: [&str; 2] = ["SWITCHBOARD_CONFIG", "SWITCHBOARD_LOG"];

impl Config {
    /// Loads `path` (or the embedded defaults), then the environment, then the flags.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(path, overrides, &env)
    }

    pub fn load_with_env(
        path: Option<&Path>,
        overrides: &Overrides,
        env: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let (text, shown_path) = match path {
            Some(path) => (
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?,
                path.display().to_string(),
            ),
            None => (String::new(), "<defaults>".to_owned()),
        };
        // First pass straight from the text, so errors carry the line.
        Self::parse(&text, &shown_path)?;
        let mut table: toml::Table = toml::from_str(&text).unwrap_or_default();
        expand_env_references(&mut table, "", env, &text, &shown_path)?;
        apply_env(&mut table, env)?;
        let mut config: Config =
            Config::deserialize(toml::Value::Table(table)).map_err(|error| ConfigError::Env {
                variable: "SWITCHBOARD_*".into(),
                message: error.to_string(),
            })?;
        if let Some(port) = env.iter().find(|(k, _)| k == "PORT").map(|(_, v)| v) {
            config.server.port = port.parse().map_err(|_| ConfigError::Env {
                variable: "PORT".into(),
                message: format!("{port:?} is not a port number"),
            })?;
        }
        if let Some(host) = &overrides.host {
            config.server.host = host.clone();
        }
        if let Some(port) = overrides.port {
            config.server.port = port;
        }
        if let Some(path) = &overrides.path {
            config.server.path = path.clone();
        }
        if let Some(format) = overrides.log_format {
            config.server.log_format = format;
        }
        config.validate(&text, &shown_path)?;
        Ok(config)
    }

    /// Parses TOML text, reporting the first error with its line, column and key.
    pub fn parse(text: &str, shown_path: &str) -> Result<Self, ConfigError> {
        let deserializer = toml::de::Deserializer::parse(text)
            .map_err(|error| file_error(text, shown_path, error.span(), None, error.message()))?;
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let key = error.path().to_string();
            let inner = error.into_inner();
            let key = (key != ".").then_some(key);
            file_error(text, shown_path, inner.span(), key, inner.message())
        })
    }

    /// The namespaces clients may connect to (the Admin UI's own is set up apart).
    pub fn namespace_names(&self) -> Vec<String> {
        if self.namespaces.is_empty() {
            vec!["/".into()]
        } else {
            self.namespaces.iter().map(|n| n.name.clone()).collect()
        }
    }

    fn validate(&self, text: &str, shown_path: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            location: locate_key(text, shown_path, key),
            key: key.to_owned(),
            message,
        };
        let path = &self.server.path;
        if !path.starts_with('/') {
            return Err(invalid(
                "server.path",
                format!("{path:?} must start with '/'"),
            ));
        }
        for transport in &self.engine.transports {
            if transport != "polling" && transport != "websocket" {
                return Err(invalid(
                    "engine.transports",
                    format!("unknown transport {transport:?} (polling, websocket)"),
                ));
            }
        }
        if self.engine.transports.is_empty() {
            return Err(invalid(
                "engine.transports",
                "needs at least one transport".into(),
            ));
        }
        if self.engine.ping_interval.0.is_zero() || self.engine.ping_timeout.0.is_zero() {
            return Err(invalid(
                "engine.ping_interval",
                "ping_interval and ping_timeout must be above zero".into(),
            ));
        }
        if let Some(url) = &self.cluster.redis_url
            && let Err(error) = redis::Client::open(url.as_str())
        {
            return Err(invalid(
                "cluster.redis_url",
                format!("not a Redis URL: {error}"),
            ));
        }
        if self.cluster.key.is_empty() || self.cluster.key.contains('#') {
            return Err(invalid(
                "cluster.key",
                "a channel prefix is not empty and has no '#'".into(),
            ));
        }
        if self.engine.max_payload.0 < 64 {
            return Err(invalid(
                "engine.max_payload",
                "must be at least 64 bytes".into(),
            ));
        }
        for (index, history) in self.history.iter().enumerate() {
            if history.max_events == 0 || history.rooms.is_empty() {
                return Err(invalid(
                    &format!("history[{index}]"),
                    "rooms must be a pattern and max_events at least 1".into(),
                ));
            }
        }
        if self.limits.socket_queue == 0 {
            return Err(invalid("limits.socket_queue", "must be at least 1".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for namespace in &self.namespaces {
            if !namespace.name.starts_with('/') {
                return Err(invalid(
                    "namespaces.name",
                    format!("namespace {:?} must start with '/'", namespace.name),
                ));
            }
            if !seen.insert(&namespace.name) {
                return Err(invalid(
                    "namespaces.name",
                    format!("namespace {:?} is configured twice", namespace.name),
                ));
            }
        }
        if self.auth.configured()
            && let Err(message) = crate::auth::Verifier::new(&self.auth, &self.presence.user_key)
        {
            return Err(invalid("auth", message));
        }
        for (index, namespace) in self.namespaces.iter().enumerate() {
            if namespace.auth.is_some_and(|m| m != AuthMode::Off) && !self.auth.configured() {
                return Err(invalid(
                    &format!("namespaces[{index}].auth"),
                    "needs [auth] with a secret or public key".into(),
                ));
            }
        }
        if let Some(path) = &self.plain_ws.path {
            if !path.starts_with('/')
                || path.trim_end_matches('/') == self.server.path.trim_end_matches('/')
            {
                return Err(invalid(
                    "plain_ws.path",
                    format!("{path:?} must start with '/' and differ from server.path"),
                ));
            }
            if self.plain_ws.require_auth == Some(true) && !self.auth.configured() {
                return Err(invalid(
                    "plain_ws.require_auth",
                    "needs [auth] with a secret or public key".into(),
                ));
            }
        }
        if self.admin_ui.enabled
            && let Err(message) = self.admin_ui.check()
        {
            return Err(invalid("admin_ui", message));
        }
        if let Err(error) = crate::rules::compile(self) {
            let location = error
                .needle
                .as_deref()
                .and_then(|needle| {
                    text.lines()
                        .position(|line| line.contains(needle))
                        .map(|index| format!("{shown_path}:{}: ", index + 1))
                })
                .unwrap_or_default();
            return Err(ConfigError::Invalid {
                location,
                key: error.key,
                message: error.message,
            });
        }
        if self.api.keys.iter().any(|key| key.len() < 8) {
            return Err(invalid(
                "api.keys",
                "API keys must be at least 8 characters".into(),
            ));
        }
        Ok(())
    }

    pub fn engine_config(&self) -> crate::engine::EngineConfig {
        crate::engine::EngineConfig {
            ping_interval: self.engine.ping_interval.0,
            ping_timeout: self.engine.ping_timeout.0,
            max_payload: self.engine.max_payload.0,
            allow_polling: self.engine.transports.iter().any(|t| t == "polling"),
            allow_websocket: self.engine.transports.iter().any(|t| t == "websocket"),
            upgrade_timeout: self.engine.upgrade_timeout.0,
            max_queued_frames: self.limits.socket_queue,
            max_sessions: (self.limits.max_connections > 0).then_some(self.limits.max_connections),
        }
    }

    /// The token requirement of namespace `name`.
    pub fn auth_mode(&self, name: &str) -> AuthMode {
        let configured = self
            .namespaces
            .iter()
            .find(|n| n.name == name)
            .and_then(|n| n.auth);
        match (configured, self.auth.configured()) {
            (Some(mode), _) => mode,
            (None, true) if self.auth.required => AuthMode::Required,
            (None, true) => AuthMode::Optional,
            (None, false) => AuthMode::Off,
        }
    }

    /// Whether namespace `name` stores events and saves sessions for recovery.
    pub fn recovers(&self, name: &str) -> bool {
        self.recovery.enabled
            && self
                .namespaces
                .iter()
                .find(|n| n.name == name)
                .and_then(|n| n.recovery)
                .unwrap_or(true)
    }

    pub fn recovery_config(&self) -> crate::hub::RecoveryConfig {
        crate::hub::RecoveryConfig {
            max_disconnection: self.recovery.max_disconnection_duration.0,
            max_sessions: self.recovery.max_sessions,
            max_rooms: self.recovery.max_rooms,
            history: self
                .history
                .iter()
                .map(|h| crate::hub::HistoryLimit {
                    pattern: h.rooms.clone(),
                    max_events: h.max_events,
                    max_age: h.max_age.0,
                })
                .collect(),
            rerun_middleware: self.recovery.rerun_auth,
            rerun_on_connect: self.recovery.rerun_on_connect,
        }
    }

    pub fn cors_policy(&self) -> crate::cors::CorsPolicy {
        if self.cors.origins.iter().any(|o| o == "*") {
            crate::cors::CorsPolicy::AnyOrigin
        } else if self.cors.origins.is_empty() {
            crate::cors::CorsPolicy::Disabled
        } else {
            crate::cors::CorsPolicy::Origins(self.cors.origins.clone())
        }
    }
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

fn file_error(
    text: &str,
    shown_path: &str,
    span: Option<std::ops::Range<usize>>,
    key: Option<String>,
    message: &str,
) -> ConfigError {
    let (line, column) = span.map_or((1, 1), |span| line_and_column(text, span.start));
    let message = match &key {
        Some(key) => format!("key `{key}`: {message}"),
        None => message.to_owned(),
    };
    ConfigError::File {
        path: shown_path.to_owned(),
        line,
        column,
        key,
        message,
    }
}

/// `path:line: ` for the line where the key's last part is set, or "" when it is not in the file.
fn locate_key(text: &str, shown_path: &str, key: &str) -> String {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    text.lines()
        .position(|line| {
            let line = line.trim_start();
            line.strip_prefix(leaf)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|index| format!("{shown_path}:{}: ", index + 1))
        .unwrap_or_default()
}

/// Replaces `${NAME}` in every string value by the environment variable NAME (for secrets).
fn expand_env_references(
    table: &mut toml::Table,
    prefix: &str,
    env: &[(String, String)],
    text: &str,
    shown_path: &str,
) -> Result<(), ConfigError> {
    fn expand(
        value: &mut toml::Value,
        key: &str,
        env: &[(String, String)],
        text: &str,
        shown_path: &str,
    ) -> Result<(), ConfigError> {
        match value {
            toml::Value::String(s) if s.contains("${") => {
                let mut out = String::new();
                let mut rest = s.as_str();
                while let Some(start) = rest.find("${") {
                    out.push_str(&rest[..start]);
                    let Some(end) = rest[start..].find('}') else {
                        out.push_str(&rest[start..]);
                        rest = "";
                        break;
                    };
                    let name = &rest[start + 2..start + end];
                    let found = env.iter().find(|(k, _)| k == name).map(|(_, v)| v);
                    match found {
                        Some(v) => out.push_str(v),
                        None => {
                            return Err(ConfigError::Invalid {
                                location: locate_key(text, shown_path, key),
                                key: key.to_owned(),
                                message: format!("environment variable {name} is not set"),
                            });
                        }
                    }
                    rest = &rest[start + end + 1..];
                }
                out.push_str(rest);
                *s = out;
            }
            toml::Value::Array(items) => {
                for item in items {
                    expand(item, key, env, text, shown_path)?;
                }
            }
            toml::Value::Table(table) => {
                for (k, v) in table.iter_mut() {
                    expand(v, &format!("{key}.{k}"), env, text, shown_path)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
    for (k, v) in table.iter_mut() {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        expand(v, &key, env, text, shown_path)?;
    }
    Ok(())
}

/// `SWITCHBOARD_ENGINE_PING_INTERVAL=10s` sets `engine.ping_interval`; list keys split on commas.
fn apply_env(table: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    for (variable, raw) in env {
        let Some(rest) = variable.strip_prefix("SWITCHBOARD_") else {
            continue;
        };
        if NOT_SETTINGS.contains(&variable.as_str()) {
            continue;
        }
        let rest = rest.to_ascii_lowercase();
        let Some((section, key)) = SECTIONS.iter().find_map(|section| {
            rest.strip_prefix(section)
                .and_then(|k| k.strip_prefix('_'))
                .map(|k| (*section, k.to_owned()))
        }) else {
            return Err(ConfigError::Env {
                variable: variable.clone(),
                message: format!("not a setting (sections: {})", SECTIONS.join(", ")),
            });
        };
        let dotted = format!("{section}.{key}");
        let value = if LIST_KEYS.contains(&dotted.as_str()) {
            toml::Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_owned()))
                    .collect(),
            )
        } else {
            toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(raw.clone()))
        };
        let section_table = table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(section_table) = section_table {
            section_table.insert(key, value);
        }
        // Check this one setting on its own, so an error names the variable.
        let mut probe = toml::Table::new();
        probe.insert(section.to_owned(), table[section].clone());
        if let Err(error) = Config::deserialize(toml::Value::Table(probe)) {
            return Err(ConfigError::Env {
                variable: variable.clone(),
                message: error.message().to_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!("sb-config-{}", rand::random::<u64>()));
        std::fs::write(&dir, text).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let result = Config::load_with_env(Some(&dir), &Overrides::default(), &env);
        let _ = std::fs::remove_file(&dir);
        result
    }

    #[test]
    fn defaults_need_no_file() {
        let config = Config::load_with_env(None, &Overrides::default(), &[]).unwrap();
        assert_eq!(config.server.port, 4000);
        assert_eq!(config.server.path, "/socket.io/");
        assert_eq!(config.namespace_names(), ["/"]);
    }

    #[test]
    fn a_typo_names_the_key_and_line() {
        let error = load("[server]\nport = 4001\nprot = 1\n", &[]).unwrap_err();
        let message = error.to_string();
        assert!(message.contains(":3:"), "{message}");
        assert!(message.contains("prot"), "{message}");
        let ConfigError::File { line, key, .. } = error else {
            panic!()
        };
        assert_eq!(line, 3);
        assert_eq!(key.as_deref(), Some("server.prot"));
    }

    #[test]
    fn a_cluster_is_configured_by_its_redis_url_and_a_bad_one_is_named() {
        let config = load(
            "[cluster]\nkey = \"app\"\n",
            &[("SWITCHBOARD_CLUSTER_REDIS_URL", "redis://10.0.0.5:6379/2")],
        )
        .unwrap();
        assert_eq!(
            config.cluster.redis_url.as_deref(),
            Some("redis://10.0.0.5:6379/2")
        );
        assert_eq!(config.cluster.key, "app");
        let error = load("[server]\n[cluster]\nredis_url = \"http://x\"\n", &[]).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(":3:") && message.contains("cluster.redis_url"),
            "{message}"
        );
    }

    #[test]
    fn a_wrong_type_names_the_key_and_line() {
        let error = load("[engine]\n\nping_interval = \"soon\"\n", &[]).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(":3:") && message.contains("engine.ping_interval"),
            "{message}"
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let config = load(
            "[engine]\nping_interval = \"10s\"\n",
            &[
                ("SWITCHBOARD_ENGINE_PING_INTERVAL", "3s"),
                ("SWITCHBOARD_API_KEYS", "key-one-123,key-two-456"),
                ("SWITCHBOARD_CORS_ORIGINS", "https://a.example.com"),
                ("PORT", "5005"),
            ],
        )
        .unwrap();
        assert_eq!(config.engine.ping_interval.0, Duration::from_secs(3));
        assert_eq!(config.api.keys, ["key-one-123", "key-two-456"]);
        assert_eq!(config.cors.origins, ["https://a.example.com"]);
        assert_eq!(config.server.port, 5005);
        let error = load("", &[("SWITCHBOARD_ENGINE_PING_INTERVL", "3s")]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("SWITCHBOARD_ENGINE_PING_INTERVL"),
            "{error}"
        );
        let error = load("", &[("SWITCHBOARD_NOPE", "3s")]).unwrap_err();
        assert!(error.to_string().contains("SWITCHBOARD_NOPE"), "{error}");
    }

    #[test]
    fn secrets_come_from_named_variables() {
        let config = load(
            "[api]\nkeys = [\"${MY_KEY}\"]\n",
            &[("MY_KEY", "secret-from-env")],
        )
        .unwrap();
        assert_eq!(config.api.keys, ["secret-from-env"]);
        let error = load("[api]\nkeys = [\"${MISSING_KEY}\"]\n", &[]).unwrap_err();
        assert!(error.to_string().contains("MISSING_KEY"), "{error}");
        assert!(error.to_string().contains(":2:"), "{error}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        let error = load("[engine]\ntransports = [\"carrier-pigeon\"]\n", &[]).unwrap_err();
        assert!(error.to_string().contains("engine.transports"), "{error}");
        assert!(error.to_string().contains(":2:"), "{error}");
    }
}
