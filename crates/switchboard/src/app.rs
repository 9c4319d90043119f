//! The switchboard server as a product: builds the hub, engine, HTTP API and routes from a
//! [`Config`], runs them, logs a stats line, and shuts down gracefully.
//!
//! Shutdown, in order: `/ready` turns false and new Socket.IO sessions are refused (503); every
//! client transport is closed as "server shutting down" (queued packets flushed first), which
//! official clients treat as a transport close and reconnect from (to another node when there is
//! one); we wait for that flush up to `server.shutdown_timeout`; then stop accepting and return.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::api::{self, ApiService, AppState};
use crate::config::Config;
use crate::engine::{CloseReason, Engine};
use crate::hub::{Hub, HubConfig};
use crate::rules;
use crate::server::Server;

pub struct App {
    pub state: Arc<AppState>,
    server: Server,
}

impl App {
    pub fn build(config: Config) -> Self {
        let config = Arc::new(config);
        let hub = Hub::new(HubConfig {
            connect_timeout: config.engine.connect_timeout.0,
        });
        for name in config.namespace_names() {
            let namespace = hub.namespace(&name);
            if config.recovers(&name) {
                namespace.enable_recovery(config.recovery_config());
            }
        }
        let engine = Engine::new(config.engine_config(), hub.clone());
        let state = AppState::new(hub, engine.clone(), config.clone());
        // The config was validated when it loaded, rules included; compiling again cannot fail
        // for a loaded config, and a hand-built one with bad rules runs without them.
        let extra = match rules::compile(&config) {
            Ok((namespaces, routes)) => rules::install(&state, namespaces, &routes),
            Err(error) => {
                tracing::error!(key = %error.key, "{}", error.message);
                axum::Router::new()
            }
        };
        let router = api::router(state.clone(), extra);
        let server = Server::new()
            .cors(config.cors_policy())
            .route(&config.server.path, engine)
            .fallback(ApiService(router));
        Self { state, server }
    }

    /// Serves until `shutdown` resolves, then drains (see the module comment).
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        let state = self.state;
        let config = state.config.clone();
        if config.api.enabled && config.api.keys.is_empty() {
            tracing::warn!(
                "no API key configured: the HTTP API answers loopback callers only \
                 (set [api] keys or SWITCHBOARD_API_KEYS)"
            );
        }
        let stats = tokio::spawn(log_stats(state.clone(), config.server.stats_interval.0));
        let (stop_accepting, accept_stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(self.server.serve(listener, async {
            let _ = accept_stopped.await;
        }));

        shutdown.await;
        tracing::info!("shutting down: closing client transports so clients reconnect");
        state.ready.store(false, Ordering::Release);
        state.engine.begin_drain();
        state.engine.close_all(CloseReason::ServerShutdown);
        let timeout = config.server.shutdown_timeout.0;
        let drained = tokio::time::timeout(timeout, async {
            while !state.engine.is_drained() {
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
        stats.abort();
        let _ = stop_accepting.send(());
        serving.await.map_err(std::io::Error::other)??;
        tracing::info!("stopped");
        Ok(())
    }
}

/// "N sockets, M users, K rooms, X msg/s in, Y msg/s out" every `every`.
async fn log_stats(state: Arc<AppState>, every: Duration) {
    if every.is_zero() {
        return;
    }
    let traffic = state.engine.traffic().clone();
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
        let stats = api::stats_snapshot(&state);
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
