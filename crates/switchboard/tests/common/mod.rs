//! Test harness: starts the real server on port 0 (an Engine.IO echo endpoint at `/engine.io/`
//! and a Socket.IO hub at `/socket.io/`) and gives plain HTTP and WebSocket clients to talk to it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use switchboard::cors::CorsPolicy;
use switchboard::engine::{Echo, Engine, EngineConfig};
use switchboard::hub::{Hub, HubConfig};
use switchboard::server::Server;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct TestServer {
    pub addr: SocketAddr,
    pub hub: Arc<Hub>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The settings the official suites use: fast heartbeats so timeouts can be observed.
pub fn fast_engine() -> EngineConfig {
    EngineConfig {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        max_payload: 1_000_000,
        ..EngineConfig::default()
    }
}

pub async fn start(engine: EngineConfig, setup: impl FnOnce(&Arc<Hub>)) -> TestServer {
    let hub = HubConfig {
        connect_timeout: Duration::from_millis(1000),
        ..HubConfig::default()
    };
    start_with(hub, engine, setup).await
}

/// As [`start`], with the hub's settings given.
pub async fn start_with(
    hub: HubConfig,
    engine: EngineConfig,
    setup: impl FnOnce(&Arc<Hub>),
) -> TestServer {
    let hub = Hub::new(hub);
    setup(&hub);
    let server = Server::new()
        .cors(CorsPolicy::AnyOrigin)
        .route("/engine.io/", Engine::new(engine.clone(), Echo))
        .route("/socket.io/", Engine::new(engine, hub.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    TestServer {
        addr,
        hub,
        _stop: stop,
    }
}

impl TestServer {
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    pub fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.addr, path_and_query)
    }

    /// Opens a polling session on `path` and returns its sid.
    pub async fn polling_session(&self, path: &str) -> String {
        let (status, body) = get(&self.url(&format!("{path}?EIO=4&transport=polling"))).await;
        assert_eq!(status, 200);
        let open: serde_json::Value = serde_json::from_str(&body[1..]).unwrap();
        open["sid"].as_str().unwrap().to_owned()
    }
}

pub async fn request(method: &str, url: &str, body: &[u8]) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = http::Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap();
    match client.request(request).await {
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
        Err(_) => (0, String::new()),
    }
}

pub async fn get(url: &str) -> (u16, String) {
    request("GET", url, b"").await
}

pub async fn post(url: &str, body: &str) -> (u16, String) {
    request("POST", url, body.as_bytes()).await
}

pub async fn ws_connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// The next message, or None when the connection closed (or nothing came within 3 s).
pub async fn next(ws: &mut Ws) -> Option<WsMessage> {
    loop {
        match tokio::time::timeout(Duration::from_secs(3), ws.next()).await {
            Ok(Some(Ok(WsMessage::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => {
                return None;
            }
            Ok(Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_)))) => continue,
            Ok(Some(Ok(message))) => return Some(message),
        }
    }
}

/// The next message that is not an Engine.IO ping.
pub async fn next_data(ws: &mut Ws) -> Option<WsMessage> {
    loop {
        let message = next(ws).await?;
        if message != WsMessage::text("2") {
            return Some(message);
        }
    }
}

pub async fn next_text(ws: &mut Ws) -> String {
    match next_data(ws).await {
        Some(WsMessage::Text(text)) => text.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

pub async fn send(ws: &mut Ws, text: &str) {
    ws.send(WsMessage::text(text)).await.unwrap();
}

pub async fn send_binary(ws: &mut Ws, data: &[u8]) {
    ws.send(WsMessage::binary(data.to_vec())).await.unwrap();
}

/// True once the server closed the connection (within 3 s).
pub async fn closed(ws: &mut Ws) -> bool {
    loop {
        match tokio::time::timeout(Duration::from_secs(3), ws.next()).await {
            Ok(Some(Ok(WsMessage::Close(_)))) | Ok(Some(Err(_))) | Ok(None) => return true,
            Ok(Some(Ok(_))) => continue,
            Err(_) => return false,
        }
    }
}

/// A WebSocket connected to the Socket.IO endpoint and to namespace `/`, past the handshake.
pub async fn socketio_ws(server: &TestServer, connect: &str) -> (Ws, String) {
    let mut ws = ws_connect(&server.ws_url("/socket.io/?EIO=4&transport=websocket")).await;
    let open = next_text(&mut ws).await;
    assert!(open.starts_with('0'));
    send(&mut ws, connect).await;
    let reply = next_text(&mut ws).await;
    (ws, reply)
}
