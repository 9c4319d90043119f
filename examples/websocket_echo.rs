//! A WebSocket echo made of the server's own WebSocket parts, for the Autobahn|Testsuite
//! (`scripts/autobahn/run`): the handshake (`websocket::accept`), the client-frame reader
//! (`MessageReader`: fragments, control frames, UTF-8 and close-frame checks, the size limit)
//! and the outbound frames (`engine::Frame`), with permessage-deflate taken when offered
//! (`websocket::deflate`: inbound messages inflated, every echo compressed, as
//! `Frame::deflated` compresses a broadcast). Two endpoints, one per close-code path:
//! - `/plain`: closes as the plain WebSocket endpoint does (the reader's code);
//! - `/engine`: closes as an Engine.IO WebSocket session does (`engine::read_error_reason`,
//!   then `engine::websocket_close_code`).
//!
//! Run: `cargo run --release --example websocket_echo -- 9001` (port 9001 by default).

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming as Body;
use switchboard::engine::{CloseReason, Frame, read_error_reason, websocket_close_code};
use switchboard::http::{HttpResponse, HttpService, ResponseFuture};
use switchboard::server::Server;
use switchboard::websocket::{
    Incoming, MessageReader, Socket, close_gracefully, next_message, write_all,
};

/// Autobahn's largest messages are 16 MiB.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

#[derive(Clone, Copy)]
enum ClosePath {
    Plain,
    Engine,
}

struct EchoEndpoint(ClosePath);

impl HttpService for EchoEndpoint {
    fn call(&self, mut request: http::Request<Body>) -> ResponseFuture {
        let path = self.0;
        Box::pin(async move {
            let accepted = match switchboard::websocket::accept_with(&mut request, true) {
                Ok(accepted) => accepted,
                Err(error) => {
                    let mut response = HttpResponse::new(error.to_string().into());
                    *response.status_mut() = http::StatusCode::BAD_REQUEST;
                    return response;
                }
            };
            let deflate = accepted.deflate.map(|chosen| chosen.window_bits);
            tokio::spawn(async move {
                if let Some((socket, received)) = accepted.upgrade.stream().await {
                    let mut reader =
                        MessageReader::new(MAX_MESSAGE).with_deflate(deflate.is_some());
                    reader.push(&received);
                    echo(Arc::new(socket), reader, path, deflate).await;
                }
            });
            accepted.response
        })
    }
}

/// Sends every message back until the client closes or breaks the protocol, then closes with
/// the code the endpoint's path chooses.
async fn echo(
    socket: Arc<Socket>,
    mut reader: MessageReader,
    path: ClosePath,
    deflate: Option<u8>,
) {
    let reason = loop {
        let reply = match next_message(&socket, &mut reader).await {
            Ok(Some(Incoming::Text(text))) => Frame::text_packet(&text),
            Ok(Some(Incoming::Binary(data))) => Frame::binary(&data),
            Ok(Some(Incoming::Ping(payload))) => Frame::pong(&payload),
            Ok(Some(Incoming::Pong)) => continue,
            Ok(Some(Incoming::Close(_))) => break CloseReason::TransportClose,
            Err(error) => break read_error_reason(error),
            // The client went away without a close frame.
            Ok(None) => return,
        };
        let reply = match deflate {
            Some(bits) => reply.deflated(bits).unwrap_or(reply),
            None => reply,
        };
        if write_all(&socket, reply.websocket_bytes()).await.is_err() {
            return;
        }
    };
    let code = match path {
        ClosePath::Plain => reader.close_code().unwrap_or(1000),
        ClosePath::Engine => websocket_close_code(reason, reader.close_code()),
    };
    let _ = write_all(&socket, Frame::close(code).websocket_bytes()).await;
    close_gracefully(socket, Duration::from_secs(2)).await;
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = match std::env::args().nth(1) {
        Some(port) => port.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "usage: websocket_echo [port]",
            )
        })?,
        None => 9001u16,
    };
    // Every echo compressed, however short, when the client negotiated it.
    switchboard::engine::set_compression_threshold(0);
    let server = Server::new()
        .route("/plain", EchoEndpoint(ClosePath::Plain))
        .route("/engine", EchoEndpoint(ClosePath::Engine));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("WebSocket echo on ws://127.0.0.1:{port}/plain and /engine");
    server
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
