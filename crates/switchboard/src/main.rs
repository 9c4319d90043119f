//! The `switchboard` binary: a Socket.IO server on port 4000 (`PORT` overrides).

use std::time::Duration;

use switchboard::cors::CorsPolicy;
use switchboard::engine::{CloseReason, Engine, EngineConfig};
use switchboard::hub::{Hub, HubConfig};
use switchboard::server::Server;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(4000);
    let hub = Hub::new(HubConfig::default());
    hub.namespace("/");
    let engine = Engine::new(EngineConfig::default(), hub);
    let server = Server::new()
        .cors(CorsPolicy::Origins(vec![
            "http://localhost:*".into(),
            "http://127.0.0.1:*".into(),
        ]))
        .route("/socket.io/", engine.clone());
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    tracing::info!(port, "switchboard listening");
    server
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    engine.close_all(CloseReason::ServerShutdown);
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}
