//! The switchboard server as a product, and the one place that knows every part: loads the
//! config and has each part check its own section, builds the hub, engine, auth, rules, cluster
//! adapter, HTTP API and endpoints from it, runs them, logs a stats line, and shuts down
//! gracefully.
//!
//! Shutdown, in order: `/ready` turns false and new Socket.IO sessions are refused (503); the
//! client transports are closed as "server shutting down" (queued packets flushed first) in
//! batches spread over `server.drain_period` (a staged drain), which official clients treat as a
//! transport close and reconnect from (to another node when there is one, a few at a time); we
//! wait for the flush up to `server.shutdown_timeout`; the cluster is told this node
//! leaves (or, on a node of its own, users whose last connection closed go offline at once);
//! then the one shutdown signal ends every long-lived task, the webhook sender after sending
//! what is queued (within what is left of the timeout); then stop accepting and return.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiService, AppState};
use crate::auth::Verifier;
use crate::backend::{self, Backend, TOKEN_EXPIRY_KEY};
use crate::cluster::driver::Driver;
use crate::cluster::node::{ClusterNode, LogPeers, NodeSettings};
use crate::cluster::postgres::{PostgresDriver, PostgresSettings};
use crate::cluster::redis::{RedisClusterDriver, RedisDriver, StreamSettings};
use crate::config::{AdapterKind, AuthMode, Config, ConfigError, Overrides};
use crate::cors::CorsPolicy;
use crate::engine::{CloseReason, Engine, EngineConfig};
use crate::forward::{NodeLookup, SessionForwarder};
use crate::hub::last_state::LastStateConfig;
use crate::hub::limits::HubLimits;
use crate::hub::{Hub, HubConfig, RecoveryConfig, SocketEngine};
use crate::metrics::Metrics;
use crate::plain_ws::PlainWs;
use crate::rules;
use crate::server::Server;
use crate::tls::{Tls, TlsCounters};

/// Loads the config (file, environment, flags) and has the parts check what only they can: a
/// usable auth key, rules that compile. Every error names the key, and the line when it is in
/// the file.
pub fn load_config(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
    let config = Config::load(path, overrides)?;
    check_parts(&config)?;
    Ok(config)
}

/// The checks of a loaded config that the parts building from it make.
pub fn check_parts(config: &Config) -> Result<(), ConfigError> {
    if config.auth.configured()
        && let Err(message) = Verifier::new(&config.auth, &config.presence.user_key)
    {
        return Err(config.invalid("auth", message));
    }
    if let Err(error) = rules::compile(config) {
        return Err(config.invalid_near(error.needle.as_deref(), error.key, error.message));
    }
    if let Err((key, message)) = backend::check(config) {
        return Err(config.invalid(&key, message));
    }
    if config.tls.configured()
        && let Err(error) = Tls::load(&config.tls, TlsCounters::default())
    {
        return Err(config.invalid(&format!("tls.{}", error.key), error.message));
    }
    Ok(())
}

pub struct App {
    pub state: Arc<AppState>,
    engine: Arc<SocketEngine>,
    server: Server,
    /// The backend's proxies, webhooks and token watch, kept for the server's life.
    backend: Backend,
    /// Serving TLS: the certificate (reloaded on SIGHUP), or why it could not be loaded (the
    /// server then refuses to start rather than serve in the clear).
    tls: Result<Option<Arc<Tls>>, String>,
    /// This node's side of the cluster, told where this node listens once it does.
    cluster: Option<Arc<ClusterNode>>,
    /// The one shutdown signal every long-lived task of the server ends on.
    shutdown: CancellationToken,
}

impl App {
    /// The server's one shutdown signal: a task the binary adds ends on it too.
    pub fn shutdown_signal(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub fn build(config: Config) -> Self {
        let config = Arc::new(config);
        // The one shutdown signal every long-lived task of the server ends on.
        let shutdown = CancellationToken::new();
        if let Some(tracing) = trace_settings(&config, |name| std::env::var(name).ok()) {
            tracing::info!(endpoint = %tracing.endpoint, ratio = tracing.sample_ratio, "tracing: spans go to the OTLP collector");
            crate::trace::install(tracing, shutdown.clone());
        }
        let hub = Hub::new(HubConfig {
            shutdown: shutdown.clone(),
            connect_timeout: config.engine.connect_timeout.0,
            user_key: config.presence.user_key.clone(),
            presence_grace: config.presence.grace.0,
            limits: HubLimits::from_settings(&config.rate_limits, &config.limits),
            msgpack: config.engine.msgpack,
        });
        // Validated when the config loaded; a hand-built config with a bad key runs without auth.
        let verifier = config
            .auth
            .configured()
            .then(|| Verifier::new(&config.auth, &config.presence.user_key))
            .and_then(|built| built.map_err(|e| tracing::error!("auth: {e}")).ok())
            .map(Arc::new);
        for name in config.namespace_names() {
            let namespace = hub.namespace(&name);
            if config.recovers(&name) {
                namespace.enable_recovery(RecoveryConfig::from_settings(
                    &config.recovery,
                    &config.history,
                ));
            }
            if let Some(last_state) = LastStateConfig::from_settings(&config.history) {
                namespace.keep_last_state(last_state);
            }
            let mode = config.auth_mode(&name);
            if let (Some(verifier), true) = (&verifier, mode != AuthMode::Off) {
                let verifier = verifier.clone();
                let required = mode == AuthMode::Required;
                let enforce_expiry = config.auth.enforce_expiry;
                namespace.use_middleware(move |conn, handshake, data| {
                    match verifier.authenticate(conn.request(), &handshake.auth, required) {
                        Ok(Some(identity)) => {
                            data.extend(identity.data);
                            if let (true, Some(exp)) = (enforce_expiry, identity.expires) {
                                data.insert(TOKEN_EXPIRY_KEY.into(), exp.into());
                            }
                            Ok(())
                        }
                        Ok(None) => Ok(()),
                        Err(error) => Err(error.connect_error()),
                    }
                });
            }
            if let Some(event) = &config.presence.query_event {
                namespace.on(event.clone(), presence::answer_room_query);
            }
        }
        let cluster = start_cluster(&config, &hub, &shutdown);
        presence::announce_in_rooms(&hub, &config.presence);
        let mut engine_config = EngineConfig::from_settings(&config.engine, &config.limits);
        engine_config.body_read_timeout = config.server.body_read_timeout.0;
        engine_config.shutdown = shutdown.clone();
        engine_config.extra_kept_headers = backend::forwarded_headers(&config);
        // In a cluster a session id says which node holds it, so that any node can pass a
        // request for it on (no sticky sessions); not over TLS, whose peers are not plain HTTP.
        let forwarding = cluster.as_ref().filter(|_| !config.tls.configured());
        if let Some(cluster) = forwarding {
            engine_config.sid_prefix = Some(cluster.uid().into());
        } else if cluster.is_some() {
            tracing::warn!(
                "cluster: with [tls] on the nodes, requests are not passed between nodes; \
                 polling clients need sticky sessions (or end TLS at the load balancer)"
            );
        }
        // The plain endpoint keeps its own per-address counts under the same limits.
        let address_limits = engine_config.address_limits.clone();
        let engine = Engine::new(engine_config, hub.clone());
        if config.admin_ui.enabled {
            crate::admin_ui::AdminUi::install(&hub, &engine, config.admin_ui.clone());
        }
        let metrics = Metrics::new(engine.clone(), hub.clone());
        let state = AppState::new(hub, metrics, config.clone());
        if let Some(cluster) = &cluster {
            let answering = Arc::downgrade(&state);
            cluster.stats_from(Arc::new(move || {
                answering
                    .upgrade()
                    .map_or(serde_json::Value::Null, |state| {
                        state.metrics.stats_snapshot()
                    })
            }));
        }
        // The config was checked when it loaded, rules included; compiling again cannot fail
        // for a loaded config, and a hand-built one with bad rules runs without them.
        let routes = match rules::compile(&config) {
            Ok((namespaces, routes)) => {
                let room_name_max = config.limits.room_name_max;
                rules::install(
                    &state.hub,
                    &state.metrics,
                    room_name_max,
                    namespaces,
                    &routes,
                );
                routes
            }
            Err(error) => {
                tracing::error!(key = %error.key, "{}", error.message);
                Vec::new()
            }
        };
        // The config was checked when it loaded; a hand-built one the backend part cannot start
        // from runs without it.
        let backend = Backend::start(
            &config,
            &state.hub,
            &state.metrics,
            verifier.as_ref(),
            &shutdown,
        )
        .unwrap_or_else(|error| {
            tracing::error!("backend: {error}");
            Backend::default()
        });
        let router = api::router(state.clone(), &routes);
        let tls = if config.tls.configured() {
            Tls::load(&config.tls, state.metrics.tls_counters())
                .map(Some)
                .map_err(|error| format!("tls.{}: {error}", error.key))
        } else {
            Ok(None)
        };
        let mut server = Server::new()
            .cors(CorsPolicy::from_settings(&config.cors))
            .header_read_timeout(config.server.header_read_timeout.0);
        server = match forwarding {
            Some(cluster) => {
                let finding = Arc::downgrade(cluster);
                let lookup: NodeLookup = Arc::new(move |node| {
                    let finding = finding.clone();
                    Box::pin(async move { finding.upgrade()?.node_address(&node).await })
                });
                server.route(
                    &config.server.path,
                    SessionForwarder::new(
                        engine.clone(),
                        cluster.uid(),
                        crate::engine::ID_LEN,
                        lookup,
                        state.metrics.forward_counters(),
                    ),
                )
            }
            None => server.route(&config.server.path, engine.clone()),
        };
        if let Some(path) = &config.plain_ws.path {
            let require_auth = config
                .plain_ws
                .require_auth
                .unwrap_or(config.auth.configured() && config.auth.required);
            let endpoint = PlainWs::new(
                config.plain_ws.clone(),
                &state.hub,
                verifier.clone(),
                require_auth,
                config.engine.max_payload.0,
                backend
                    .connect
                    .clone()
                    .filter(|proxy| proxy.covers_plain_ws()),
                address_limits,
            );
            server = server.route(path, endpoint);
        }
        if let Ok(Some(tls)) = &tls {
            server = server.tls(tls.clone());
        }
        let server = server.fallback(ApiService(router));
        Self {
            state,
            engine,
            server,
            backend,
            tls,
            cluster,
            shutdown,
        }
    }

    /// Serves until `shutdown` resolves, then drains (see the module comment).
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        let state = self.state;
        let engine = self.engine;
        let config = state.config.clone();
        let tls = self.tls.map_err(std::io::Error::other)?;
        let shutdown_signal = self.shutdown.clone();
        if let Some(tls) = tls {
            spawn_until(&shutdown_signal, reload_on_hangup(tls));
        }
        if config.api.enabled && config.api.keys.is_empty() {
            tracing::warn!(
                "no API key configured: the HTTP API answers loopback callers only \
                 (set [api] keys or SWITCHBOARD_API_KEYS)"
            );
        }
        if let (Some(cluster), Ok(listening)) = (&self.cluster, listener.local_addr()) {
            cluster
                .advertise(config.cluster.advertise_address.as_deref(), listening)
                .await;
        }
        spawn_until(
            &shutdown_signal,
            log_stats(
                state.clone(),
                engine.clone(),
                config.server.stats_interval.0,
            ),
        );
        let (stop_accepting, accept_stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(self.server.serve(listener, async {
            let _ = accept_stopped.await;
        }));

        shutdown.await;
        let drain_period = config.server.drain_period.0;
        tracing::info!(
            sessions = engine.session_count(),
            ?drain_period,
            "shutting down: closing client transports in batches so clients reconnect elsewhere"
        );
        state.ready.store(false, Ordering::Release);
        engine.begin_drain();
        engine
            .close_all_over(CloseReason::ServerShutdown, drain_period)
            .await;
        let timeout = config.server.shutdown_timeout.0;
        let began = tokio::time::Instant::now();
        let drained = tokio::time::timeout(timeout, async {
            while !engine.is_drained() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .is_ok();
        if !drained {
            tracing::warn!(
                ?timeout,
                "shutdown timeout reached with messages still queued"
            );
        }
        match state.hub.cluster() {
            // The other nodes forget this one's users now, not when it has been silent a while
            // (and announce them offline unless they came back elsewhere).
            Some(cluster) => cluster.leave().await,
            // On a node of its own no one else will say its users went offline: now, not after
            // the grace period.
            None => state.hub.presence().end_grace(),
        }
        // The one signal: every long-lived task ends on it; the webhook sender first sends
        // what is queued (the events of this shutdown included), within the shutdown timeout.
        shutdown_signal.cancel();
        if let Some(webhooks) = &self.backend.webhooks {
            let left = timeout
                .saturating_sub(began.elapsed())
                .max(Duration::from_secs(1));
            if tokio::time::timeout(left, webhooks.finished())
                .await
                .is_err()
            {
                tracing::warn!(
                    ?timeout,
                    "shutdown timeout reached with webhooks still queued"
                );
            }
        }
        let _ = stop_accepting.send(());
        serving.await.map_err(std::io::Error::other)??;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Where spans go, from `[tracing]` and the standard OpenTelemetry variables (which win): None
/// when no collector is named, or `OTEL_SDK_DISABLED=true`, `OTEL_TRACES_SAMPLER=always_off`,
/// `OTEL_TRACES_EXPORTER=none`, or `OTEL_EXPORTER_OTLP_PROTOCOL=grpc` (not spoken).
fn trace_settings(
    config: &Config,
    env: impl Fn(&str) -> Option<String>,
) -> Option<crate::trace::Settings> {
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return None;
    }
    let base = |url: &str| format!("{}/v1/traces", url.trim_end_matches('/'));
    let endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT").map(|url| base(&url)))
        .or_else(|| config.tracing.otlp_endpoint.as_deref().map(base))?;
    // OTLP over HTTP with JSON bodies is what is sent; a collector's HTTP port takes it whether
    // its clients say http/json or http/protobuf. gRPC is another port and another protocol.
    let protocol = [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .into_iter()
    .find_map(|name| env(name).map(|value| (name, value)));
    if let Some((name, _)) = protocol.filter(|(_, p)| p.eq_ignore_ascii_case("grpc")) {
        tracing::error!(
            "tracing: {name}=grpc is not spoken (spans go over OTLP/HTTP as JSON): traces are \
             off; name the collector's HTTP endpoint (port 4318) and http/json"
        );
        return None;
    }
    let mut sample_ratio = config.tracing.sample_ratio;
    match env("OTEL_TRACES_SAMPLER").as_deref() {
        Some("always_off" | "parentbased_always_off") => return None,
        Some("always_on" | "parentbased_always_on") => sample_ratio = 1.0,
        _ => {}
    }
    if let Some(ratio) = env("OTEL_TRACES_SAMPLER_ARG").and_then(|v| v.parse::<f64>().ok()) {
        sample_ratio = ratio.clamp(0.0, 1.0);
    }
    let headers = env("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
        .or_else(|| env("OTEL_EXPORTER_OTLP_HEADERS"))
        .map(|list| {
            list.split(',')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    Some(crate::trace::Settings {
        endpoint,
        service_name: env("OTEL_SERVICE_NAME")
            .unwrap_or_else(|| config.tracing.service_name.clone()),
        sample_ratio,
        headers,
    })
}

/// This node's side of the cluster `[cluster]` configures (none on a node of its own), over
/// the driver of its engine, joined to the hub.
fn start_cluster(
    config: &Config,
    hub: &Arc<Hub>,
    shutdown: &CancellationToken,
) -> Option<Arc<ClusterNode>> {
    let cluster = &config.cluster;
    let postgres = cluster.adapter == AdapterKind::Postgres;
    let settings = NodeSettings {
        key: cluster.key.clone(),
        request_timeout: cluster.request_timeout.0,
        node_timeout: cluster.node_timeout.0,
        session_prefix: cluster.session_key_prefix.clone(),
        log_peers: if postgres {
            LogPeers::Postgres
        } else {
            LogPeers::RedisStreams
        },
        sharding: (cluster.adapter == AdapterKind::Sharded).then_some(cluster.subscription_mode),
    };
    // The URLs were validated when the config loaded.
    let started = match (&cluster.postgres_url, &cluster.redis_url) {
        (Some(url), _) if postgres => {
            let postgres = PostgresSettings {
                url: url.clone(),
                prefix: cluster.key.clone(),
                attachments_table: cluster.attachments_table.clone(),
                log_max_len: cluster.stream_max_len,
                log_max_age: config.recovery.max_disconnection_duration.0,
            };
            ClusterNode::start(settings, hub, shutdown.clone(), |incoming| {
                PostgresDriver::start(postgres, incoming, shutdown.clone())
                    .map(|driver| driver as Arc<dyn Driver>)
                    .map_err(|e| e.to_string())
            })
        }
        (_, Some(urls)) if cluster.on_redis_cluster() => {
            let stream = (cluster.adapter == AdapterKind::Streams).then(|| StreamSettings {
                name: cluster.stream_name.clone(),
                max_len: cluster.stream_max_len,
            });
            ClusterNode::start(settings, hub, shutdown.clone(), |incoming| {
                RedisClusterDriver::start(urls, stream, incoming, shutdown.clone())
                    .map(|driver| driver as Arc<dyn Driver>)
                    .map_err(|e| e.to_string())
            })
        }
        (_, Some(url)) => {
            let stream = (cluster.adapter == AdapterKind::Streams).then(|| StreamSettings {
                name: cluster.stream_name.clone(),
                max_len: cluster.stream_max_len,
            });
            ClusterNode::start(settings, hub, shutdown.clone(), |incoming| {
                RedisDriver::start(url, stream, incoming, shutdown.clone())
                    .map(|driver| driver as Arc<dyn Driver>)
                    .map_err(|e| e.to_string())
            })
        }
        _ => return None,
    };
    let node = started.map_err(|e| tracing::error!("cluster: {e}")).ok()?;
    let _ = hub.join_cluster(node.clone());
    Some(node)
}

/// Runs `task` until it ends or the shutdown signal comes.
fn spawn_until(shutdown: &CancellationToken, task: impl Future<Output = ()> + Send + 'static) {
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = task => {}
        }
    });
}

/// Presence wired into Socket.IO: events to presence rooms, and the room query event.
mod presence {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use crate::clock::iso_now;
    use crate::config::PresenceSettings;
    use crate::error_code::ErrorCode;
    use crate::hub::{Event, Hub, Socket, reads};

    /// Emits `user:online` / `user:offline` `{userId, timestamp}` to the configured rooms.
    pub fn announce_in_rooms(hub: &Arc<Hub>, settings: &PresenceSettings) {
        if settings.rooms.is_empty() {
            return;
        }
        let Some(namespace) = hub.of(&settings.namespace) else {
            return;
        };
        let settings = settings.clone();
        let weak = Arc::downgrade(&namespace);
        hub.presence().on_change(Arc::new(move |user, online| {
            let Some(namespace) = weak.upgrade() else {
                return;
            };
            let event = if online {
                &settings.online_event
            } else {
                &settings.offline_event
            };
            let payload = json!({ "userId": user, "timestamp": iso_now() });
            let broadcast = settings
                .rooms
                .iter()
                .fold(namespace.everyone(), |b, room| b.to(room.as_str()));
            broadcast.emit(event, &[payload]);
        }));
    }

    /// `presence:list` (room) answered by ack with the room's users; only for a room the
    /// sender is in.
    pub fn answer_room_query(socket: &Arc<Socket>, mut event: Event) {
        let Some(ack) = event.take_ack() else { return };
        let reply = match event.args.first().and_then(Value::as_str) {
            Some(room) if socket.in_room(room) => reads::room_users(socket.namespace(), room),
            Some(room) => {
                json!({ "error": { "code": ErrorCode::ForbiddenRoom.as_str(), "message": format!("you are not in room {room:?}") } })
            }
            None => {
                json!({ "error": { "code": ErrorCode::InvalidType.as_str(), "message": "the event's argument must be a room name" } })
            }
        };
        ack.send(&[reply]);
    }
}

/// "N sockets, M users, K rooms, X msg/s in, Y msg/s out" every `every`.
async fn log_stats(state: Arc<AppState>, engine: Arc<SocketEngine>, every: Duration) {
    if every.is_zero() {
        return;
    }
    let traffic = engine.traffic().clone();
    let mut last = (traffic.packets_in.get(), traffic.packets_out.get());
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let now = (traffic.packets_in.get(), traffic.packets_out.get());
        let seconds = every.as_secs_f64();
        let rate_in = (now.0 - last.0) as f64 / seconds;
        let rate_out = (now.1 - last.1) as f64 / seconds;
        last = now;
        let stats = state.metrics.stats_snapshot();
        let sockets = stats["sockets"].as_u64().unwrap_or(0);
        let users = stats["users"].as_u64().unwrap_or(0);
        let rooms = stats["rooms"].as_u64().unwrap_or(0);
        tracing::info!(
            sockets,
            users,
            rooms,
            msg_in_per_s = rate_in,
            msg_out_per_s = rate_out,
            "{sockets} sockets, {users} users, {rooms} rooms, {rate_in:.1} msg/s in, {rate_out:.1} msg/s out"
        );
    }
}

/// Reloads the TLS certificate and key on every SIGHUP (a renewal hook sends one).
async fn reload_on_hangup(tls: Arc<Tls>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: the TLS certificate is not reloaded");
            return;
        };
        while hangups.recv().await.is_some() {
            // A failure is logged and counted; the pair in use stays.
            let _ = tls.reload();
        }
    }
    #[cfg(not(unix))]
    let _ = tls;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(file: Option<&str>, vars: &[(&str, &str)]) -> Option<crate::trace::Settings> {
        let mut config = Config::default();
        config.tracing.otlp_endpoint = file.map(str::to_owned);
        config.tracing.sample_ratio = 0.5;
        let vars: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        trace_settings(&config, |name| vars.get(name).cloned())
    }

    #[test]
    fn tracing_is_off_unless_a_collector_is_named() {
        assert!(settings(None, &[]).is_none());
        assert!(settings(None, &[("OTEL_SERVICE_NAME", "x")]).is_none());
        let on = settings(Some("http://collector:4318/"), &[]).expect("on");
        assert_eq!(on.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(on.sample_ratio, 0.5);
        assert_eq!(on.service_name, "switchboard");
    }

    #[test]
    fn the_standard_variables_win_over_the_file() {
        let on = settings(
            Some("http://file:4318"),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
                ("OTEL_SERVICE_NAME", "edge"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cret, x-team = rt"),
            ],
        )
        .expect("on");
        assert_eq!(on.endpoint, "http://env:4318/v1/traces");
        assert_eq!(on.service_name, "edge");
        assert_eq!(
            on.headers,
            vec![
                ("api-key".to_owned(), "s3cret".to_owned()),
                ("x-team".to_owned(), "rt".to_owned())
            ]
        );
        // The traces endpoint is a full URL, taken as it is.
        let on = settings(
            None,
            &[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://env:4318/custom",
            )],
        )
        .expect("on");
        assert_eq!(on.endpoint, "http://env:4318/custom");
    }

    #[test]
    fn the_sampler_variables_set_the_fraction_or_turn_tracing_off() {
        let file = Some("http://collector:4318");
        let ratio = |vars: &[(&str, &str)]| settings(file, vars).map(|s| s.sample_ratio);
        assert_eq!(
            ratio(&[
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25")
            ]),
            Some(0.25)
        );
        assert_eq!(
            ratio(&[
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0")
            ]),
            Some(0.0)
        );
        assert_eq!(ratio(&[("OTEL_TRACES_SAMPLER_ARG", "7")]), Some(1.0));
        assert_eq!(ratio(&[("OTEL_TRACES_SAMPLER_ARG", "half")]), Some(0.5));
        assert_eq!(ratio(&[("OTEL_TRACES_SAMPLER", "always_on")]), Some(1.0));
        assert_eq!(ratio(&[("OTEL_TRACES_SAMPLER", "always_off")]), None);
        assert_eq!(ratio(&[("OTEL_SDK_DISABLED", "TRUE")]), None);
        assert_eq!(ratio(&[("OTEL_TRACES_EXPORTER", "none")]), None);
    }

    #[test]
    fn grpc_is_refused_and_http_protocols_are_served() {
        let file = Some("http://collector:4318");
        assert!(settings(file, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).is_none());
        assert!(settings(file, &[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")]).is_none());
        assert!(settings(file, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]).is_some());
        assert!(settings(file, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).is_some());
    }
}
