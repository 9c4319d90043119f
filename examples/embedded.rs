//! Switchboard as a library: start a Socket.IO server from Rust and register handlers.
//! The e2e protocol tests drive this server with the official clients.
//!
//! `PORT=4100 cargo run --release --example embedded`
//!
//! Client events it answers (namespace `/`, and `/chat` for multiplexing):
//! - `echo` (args...) -> acknowledged with the same args, binary included
//! - `join` / `leave` (room) -> acknowledged with the socket's rooms
//! - `to-room` (room, event, ...args) -> `event` to everyone in `room`
//! - `to-others` (event, ...args) -> `event` to everyone but the sender
//! - `ask` (question) -> the server emits `question` with an ack and emits `answer` with the reply
//! - `kick-me` -> disconnected from the namespace by the server
//! - `drop-me` -> the server closes the underlying connection (the client reconnects)

use std::time::Duration;

use serde_json::{Value, json};
use switchboard::cors::CorsPolicy;
use switchboard::engine::{CloseReason, Engine, EngineConfig};
use switchboard::hub::{Hub, HubConfig, Namespace};
use switchboard::server::Server;

fn install(namespace: &Namespace) {
    namespace.on("echo", |_, mut event| {
        if let Some(ack) = event.take_ack() {
            ack.send_binary(&event.args, &event.attachments);
        }
    });
    namespace.on("join", |socket, mut event| {
        if let Some(room) = event.args.first().and_then(Value::as_str) {
            socket.join(room);
        }
        if let Some(ack) = event.take_ack() {
            let mut rooms: Vec<String> = socket.rooms().iter().map(|r| r.to_string()).collect();
            rooms.sort();
            ack.send(&[json!(rooms)]);
        }
    });
    namespace.on("leave", |socket, mut event| {
        if let Some(room) = event.args.first().and_then(Value::as_str) {
            socket.leave(room);
        }
        if let Some(ack) = event.take_ack() {
            ack.send(&[]);
        }
    });
    namespace.on("to-room", |socket, event| {
        if let [Value::String(room), Value::String(name), rest @ ..] = event.args.as_slice() {
            socket
                .namespace()
                .to(room.as_str())
                .emit_binary(name, rest, &event.attachments);
        }
    });
    namespace.on("to-others", |socket, event| {
        if let [Value::String(name), rest @ ..] = event.args.as_slice() {
            socket
                .broadcast()
                .emit_binary(name, rest, &event.attachments);
        }
    });
    namespace.on("ask", |socket, event| {
        let socket = socket.clone();
        tokio::spawn(async move {
            let reply = socket
                .emit_with_ack("question", &event.args, Duration::from_secs(5))
                .await;
            let answer = match reply {
                Ok(reply) => json!({ "ok": true, "args": reply.args }),
                Err(error) => json!({ "ok": false, "error": error.to_string() }),
            };
            let _ = socket.emit("answer", &[answer]);
        });
    });
    namespace.on("kick-me", |socket, _| socket.disconnect());
    namespace.on("drop-me", |socket, _| {
        socket.conn().close(CloseReason::TransportClose)
    });
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(4100);

    let hub = Hub::new(HubConfig::default());
    install(&hub.namespace("/"));
    install(&hub.namespace("/chat"));

    let server = Server::new()
        .cors(CorsPolicy::AnyOrigin)
        .route("/socket.io/", Engine::new(EngineConfig::default(), hub));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    tracing::info!(port, "embedded example listening");
    server
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
