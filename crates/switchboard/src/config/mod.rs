//! The configuration: its schema as plain data (with the embedded defaults, so no file is
//! needed), loading from TOML, `SWITCHBOARD_…` environment overrides, `${VAR}` expansion for
//! secrets (`load.rs`), and the checks the schema alone can make. One file per section.
//!
//! Nothing here depends on the parts that use it: each part builds itself from its own section
//! (`EngineConfig::from_settings`, `Verifier::new`, `rules::compile`, ...), and the checks only a
//! part can make (a usable key, rules that compile) run when the app loads the config
//! (`app::load_config`), reported at the key and line through [`Config::invalid`].
//!
//! Precedence: flags > environment > file > defaults. Every error names the key, and for the file
//! the line: an unknown or misspelt key is an error, never silently ignored.

mod admin_ui;
mod auth;
mod backend;
mod cluster;
mod load;
mod namespaces;
mod plain_ws;
mod presence;
mod rate_limits;
mod recovery;
pub mod rules;
mod server;
mod telemetry;
#[cfg(test)]
mod tests;
mod units;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use admin_ui::AdminUiSettings;
pub use auth::AuthSettings;
pub use backend::{
    ConnectProxySettings, EventProxySettings, ProxySettings, RefreshProxySettings, WEBHOOK_EVENTS,
    WebhookSettings,
};
pub use cluster::{AdapterKind, ClusterSettings, SubscriptionMode};
pub use namespaces::{AuthMode, NamespaceConfig, RoomPermission};
pub use plain_ws::PlainWsSettings;
pub use presence::PresenceSettings;
pub use rate_limits::{Bucket, EventLimit, OnExcess, RateLimitSettings};
pub use recovery::{HistorySettings, OnJoin, RecoveryClients, RecoverySettings};
pub use server::{
    ApiConfig, ConsoleSettings, CorsConfig, EngineSettings, LimitsConfig, LogFormat, ServerConfig,
    TlsSettings,
};
pub use telemetry::TracingSettings;
pub use units::{ByteSize, HumanDuration, parse_duration, parse_size};

use load::{apply_env, expand_env_references, file_error, locate_key};
use rules::RouteSpec;

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
    /// The backend asked on connect, for client events and for fresh tokens.
    pub proxy: ProxySettings,
    /// Lifecycle events POSTed to the backend.
    pub webhooks: WebhookSettings,
    /// Token buckets on client events and API requests.
    pub rate_limits: RateLimitSettings,
    /// HTTPS and WSS served directly (off unless both files are set).
    pub tls: TlsSettings,
    /// OpenTelemetry traces (off unless a collector is configured).
    pub tracing: TracingSettings,
    /// The text it was loaded from, to point errors found later at their line.
    #[serde(skip)]
    source: Source,
}

/// The file text a config came from and the name shown for it in errors.
#[derive(Debug, Clone, Default)]
struct Source {
    text: String,
    shown_path: String,
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
        config.source = Source { text, shown_path };
        config.validate()?;
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

    /// An error about `key`, located at the line of the file where it is set (if it is).
    pub fn invalid(&self, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            location: locate_key(&self.source.text, &self.source.shown_path, key),
            key: key.to_owned(),
            message,
        }
    }

    /// An error about `key`, located at the first line of the file containing `needle` (the text
    /// that went wrong, when the key alone does not tell where: the fifth rule, say).
    pub fn invalid_near(&self, needle: Option<&str>, key: String, message: String) -> ConfigError {
        let location = needle
            .and_then(|needle| {
                self.source
                    .text
                    .lines()
                    .position(|line| line.contains(needle))
                    .map(|index| format!("{}:{}: ", self.source.shown_path, index + 1))
            })
            .unwrap_or_default();
        ConfigError::Invalid {
            location,
            key,
            message,
        }
    }

    /// The checks the schema alone can make.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| self.invalid(key, message);
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
        if self.tls.configured() && (self.tls.cert.is_none() || self.tls.key.is_none()) {
            return Err(invalid(
                if self.tls.cert.is_none() {
                    "tls.cert"
                } else {
                    "tls.key"
                },
                "tls needs both cert and key (PEM files)".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.tracing.sample_ratio) {
            return Err(invalid(
                "tracing.sample_ratio",
                "a share between 0 and 1".into(),
            ));
        }
        if let Some(endpoint) = &self.tracing.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(invalid(
                "tracing.otlp_endpoint",
                format!("an http:// or https:// URL, not {endpoint}"),
            ));
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
        if let Some(urls) = &self.cluster.redis_url {
            // A Redis Cluster is named by several of its servers.
            let sharded = self.cluster.on_redis_cluster();
            let urls: Vec<&str> = match sharded {
                true => urls.split(',').map(str::trim).collect(),
                false => vec![urls.as_str()],
            };
            for url in urls {
                if let Err(error) = redis::Client::open(url) {
                    return Err(invalid(
                        "cluster.redis_url",
                        format!("not a Redis URL: {url}: {error}"),
                    ));
                }
                if sharded && !url.starts_with("redis://") {
                    return Err(invalid(
                        "cluster.redis_url",
                        format!("a Redis Cluster is reached with redis://host:port, not {url}"),
                    ));
                }
            }
        }
        if self.cluster.redis_cluster && self.cluster.adapter == AdapterKind::Pubsub {
            return Err(invalid(
                "cluster.redis_cluster",
                "on a Redis Cluster, use adapter = \"sharded\" (or \"streams\")".into(),
            ));
        }
        if self.cluster.adapter == AdapterKind::Sharded && self.cluster.redis_url.is_none() {
            return Err(invalid(
                "cluster.adapter",
                "the sharded adapter needs cluster.redis_url (servers of the Redis Cluster)".into(),
            ));
        }
        let postgres = self.cluster.adapter == AdapterKind::Postgres;
        if let Some(url) = &self.cluster.postgres_url {
            if let Err(error) = url.parse::<tokio_postgres::Config>() {
                return Err(invalid(
                    "cluster.postgres_url",
                    format!("not a PostgreSQL URL: {error}"),
                ));
            }
            if !postgres {
                return Err(invalid(
                    "cluster.postgres_url",
                    "set adapter = \"postgres\" to cluster through PostgreSQL".into(),
                ));
            }
        }
        if postgres && self.cluster.postgres_url.is_none() {
            return Err(invalid(
                "cluster.adapter",
                "the postgres adapter needs cluster.postgres_url".into(),
            ));
        }
        if postgres && self.cluster.redis_url.is_some() {
            return Err(invalid(
                "cluster.redis_url",
                "a node clusters through Redis or PostgreSQL, not both".into(),
            ));
        }
        let table = &self.cluster.attachments_table;
        if table.is_empty()
            || !table
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            || table.as_bytes()[0].is_ascii_digit()
        {
            return Err(invalid(
                "cluster.attachments_table",
                "a table name is lowercase letters, digits and '_', not starting with a digit"
                    .into(),
            ));
        }
        if self.cluster.node_timeout.0 < std::time::Duration::from_millis(300) {
            return Err(invalid(
                "cluster.node_timeout",
                "must be at least 300ms (nodes speak every third of it)".into(),
            ));
        }
        if self.cluster.stream_name.is_empty() {
            return Err(invalid(
                "cluster.stream_name",
                "a stream key is not empty".into(),
            ));
        }
        if self.cluster.stream_max_len < 100 {
            return Err(invalid(
                "cluster.stream_max_len",
                "at least 100 entries (the stream is what clients recover from)".into(),
            ));
        }
        if let Some(address) = &self.cluster.advertise_address {
            let port = address
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            if !matches!(port, Some((host, Ok(port))) if !host.is_empty() && port > 0)
                || address.contains('/')
            {
                return Err(invalid(
                    "cluster.advertise_address",
                    format!("{address:?} is not host:port (like \"10.0.0.5:3000\")"),
                ));
            }
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
        self.validate_backend(&invalid)?;
        self.validate_limits(&invalid)?;
        if self.api.keys.iter().any(|key| key.len() < 8) {
            return Err(invalid(
                "api.keys",
                "API keys must be at least 8 characters".into(),
            ));
        }
        Ok(())
    }

    /// The checks of `[proxy]` and `[webhooks]`.
    fn validate_backend(
        &self,
        invalid: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let url_ok = |url: &str| url.starts_with("http://") || url.starts_with("https://");
        let names = self.namespace_names();
        if let Some(connect) = &self.proxy.connect {
            if !url_ok(&connect.url) {
                return Err(invalid(
                    "proxy.connect.url",
                    "must be an http:// or https:// URL".into(),
                ));
            }
            if let Some(unknown) = connect.namespaces.iter().find(|n| !names.contains(n)) {
                return Err(invalid(
                    "proxy.connect.namespaces",
                    format!("namespace {unknown:?} is not configured"),
                ));
            }
        }
        if let Some(refresh) = &self.proxy.refresh
            && !url_ok(&refresh.url)
        {
            return Err(invalid(
                "proxy.refresh.url",
                "must be an http:// or https:// URL".into(),
            ));
        }
        let mut proxied = std::collections::HashSet::new();
        for (index, route) in self.proxy.events.iter().enumerate() {
            let key = |field: &str| format!("proxy.events[{index}].{field}");
            if !url_ok(&route.url) {
                return Err(invalid(
                    &key("url"),
                    "must be an http:// or https:// URL".into(),
                ));
            }
            if !names.contains(&route.namespace) {
                return Err(invalid(
                    &key("namespace"),
                    format!("namespace {:?} is not configured", route.namespace),
                ));
            }
            if route.event.is_empty()
                || crate::protocol::socket::RESERVED_EVENTS.contains(&route.event.as_str())
            {
                return Err(invalid(
                    &key("event"),
                    format!("{:?} cannot be proxied (empty or reserved)", route.event),
                ));
            }
            let ruled = self
                .namespaces
                .iter()
                .filter(|n| n.name == route.namespace)
                .flat_map(|n| &n.events)
                .any(|rule| rule.on == route.event);
            if ruled || !proxied.insert((&route.namespace, &route.event)) {
                return Err(invalid(
                    &key("event"),
                    format!(
                        "{:?} in {:?} is handled twice (by another proxy entry or a rule)",
                        route.event, route.namespace
                    ),
                ));
            }
        }
        if self.proxy.max_concurrency == 0
            || self.proxy.max_pending_per_socket == 0
            || self.proxy.max_backlog == 0
        {
            return Err(invalid(
                "proxy.max_concurrency",
                "max_concurrency, max_pending_per_socket and max_backlog must be at least 1".into(),
            ));
        }
        let hooks = &self.webhooks;
        if let Some(url) = &hooks.url {
            if !url_ok(url) {
                return Err(invalid(
                    "webhooks.url",
                    "must be an http:// or https:// URL".into(),
                ));
            }
            if hooks.secret.as_deref().is_none_or(|s| s.len() < 16) {
                return Err(invalid(
                    "webhooks.secret",
                    "webhooks are signed: set a secret of at least 16 bytes".into(),
                ));
            }
        }
        if let Some(unknown) = hooks
            .events
            .iter()
            .find(|e| !WEBHOOK_EVENTS.contains(&e.as_str()))
        {
            return Err(invalid(
                "webhooks.events",
                format!("unknown event {unknown:?} ({})", WEBHOOK_EVENTS.join(", ")),
            ));
        }
        if hooks.batch_max == 0 || hooks.max_attempts == 0 || hooks.queue == 0 {
            return Err(invalid(
                "webhooks.batch_max",
                "batch_max, max_attempts and queue must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The checks of the limits.
    fn validate_limits(
        &self,
        invalid: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let bucket_ok = |b: &Bucket| b.rate > 0.0 && b.rate.is_finite() && b.burst >= 1.0;
        let limits = &self.rate_limits;
        if limits.socket.as_ref().is_some_and(|b| !bucket_ok(b)) {
            return Err(invalid(
                "rate_limits.socket",
                "rate must be above 0 and burst at least 1".into(),
            ));
        }
        if limits.api.as_ref().is_some_and(|b| !bucket_ok(b)) {
            return Err(invalid(
                "rate_limits.api",
                "rate must be above 0 and burst at least 1".into(),
            ));
        }
        for (index, event) in limits.events.iter().enumerate() {
            let bucket = Bucket {
                rate: event.rate,
                burst: event.burst,
            };
            if event.event.is_empty() || !bucket_ok(&bucket) {
                return Err(invalid(
                    &format!("rate_limits.events[{index}]"),
                    "name the event; rate must be above 0 and burst at least 1".into(),
                ));
            }
        }
        let l = &self.limits;
        if l.connect_rate_per_ip < 0.0 || !l.connect_rate_per_ip.is_finite() {
            return Err(invalid(
                "limits.connect_rate_per_ip",
                "must be 0 (off) or above".into(),
            ));
        }
        if l.connect_rate_per_ip > 0.0 && l.connect_burst_per_ip == 0 {
            return Err(invalid(
                "limits.connect_burst_per_ip",
                "must be at least 1".into(),
            ));
        }
        for proxy in &l.trusted_proxies {
            if crate::pattern::parse_cidr(proxy).is_none() {
                return Err(invalid(
                    "limits.trusted_proxies",
                    format!("{proxy:?} is not an IP address or CIDR (e.g. \"10.0.0.0/8\")"),
                ));
            }
        }
        if l.max_rooms_per_socket == 0
            || l.max_namespaces_per_connection == 0
            || l.event_name_max == 0
        {
            return Err(invalid(
                "limits.max_rooms_per_socket",
                "max_rooms_per_socket, max_namespaces_per_connection and event_name_max must be at least 1".into(),
            ));
        }
        Ok(())
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
}
