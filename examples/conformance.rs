//! The server the official protocol test suites expect, on port 3000:
//! - `/engine.io/`: an Engine.IO server that echoes every message back;
//! - `/socket.io/`: Socket.IO with namespaces `/` and `/custom`; on connect each socket is sent
//!   `auth` with its handshake auth; `message` is answered with `message-back` (same args) and
//!   `message-with-ack` is acknowledged with its own args.
//!
//! pingInterval 300 ms, pingTimeout 200 ms, maxPayload 1000000, connectTimeout 1000 ms, CORS
//! open to any origin. Run: `cargo run --release --example conformance`.

use std::time::Duration;

use serde_json::Value;
use switchboard::cors::CorsPolicy;
use switchboard::engine::{Echo, Engine, EngineConfig};
use switchboard::hub::{Hub, HubConfig};
use switchboard::server::Server;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let engine_config = EngineConfig {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        max_payload: 1_000_000,
        ..EngineConfig::default()
    };
    let hub = Hub::new(HubConfig {
        connect_timeout: Duration::from_millis(1000),
        ..HubConfig::default()
    });
    for name in ["/", "/custom"] {
        let namespace = hub.namespace(name);
        namespace.on_connect(|socket| {
            let auth = Value::Object((*socket.handshake().auth).clone());
            let _ = socket.emit("auth", &[auth]);
        });
        namespace.on("message", |socket, event| {
            let _ = socket.emit_binary("message-back", &event.args, &event.attachments);
        });
        namespace.on("message-with-ack", |_, mut event| {
            if let Some(ack) = event.take_ack() {
                ack.send_binary(&event.args, &event.attachments);
            }
        });
    }

    let server = Server::new()
        .cors(CorsPolicy::AnyOrigin)
        .route("/engine.io/", Engine::new(engine_config.clone(), Echo))
        .route("/socket.io/", Engine::new(engine_config, hub));
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", 3000)).await?;
    tracing::info!("conformance server listening on http://localhost:3000");
    server
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
