//! The event proxy's cost: `rpc` has N clients each send an event with an ack at r per second
//! and times every ack (send to answer, on this process's clock); run it against a server whose
//! event is answered by a rule and against one that proxies it to a backend, and the difference
//! is what the backend round trip adds. `backend` is that backend: the least an HTTP service can
//! do (keep-alive HTTP/1.1, a fixed JSON answer), so the figures are the proxy's, not a
//! framework's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Target, Ws, open_websocket};

/// What the clients of one run saw.
#[derive(Default)]
pub struct RpcCounts {
    pub sent: AtomicU64,
    pub answered: AtomicU64,
    /// Acks that carried `{"error": ...}`.
    pub refused: AtomicU64,
    pub errors: AtomicU64,
}

/// One client: connects, waits at `start` until every client has, then sends `event` with ack
/// ids at `rate` for `duration` and waits up to 5 s for the last answers. Answers its latency
/// histogram (µs).
pub async fn client(
    target: Target,
    event: String,
    rate: f64,
    duration: Duration,
    offset: Duration,
    counts: Arc<RpcCounts>,
    start: Arc<tokio::sync::Barrier>,
) -> Histogram<u64> {
    let mut histogram = Histogram::new_with_bounds(1, 120_000_000, 2).expect("valid bounds");
    let opened = open_websocket(&target).await;
    start.wait().await;
    let mut ws: Ws = match opened {
        Ok(ws) => ws,
        Err(_) => {
            counts.errors.fetch_add(1, Ordering::Relaxed);
            return histogram;
        }
    };
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let mut sent_at: HashMap<u64, Instant> = HashMap::new();
    let mut next = 0u64;
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        if next >= total && sent_at.is_empty() {
            break;
        }
        tokio::select! {
            _ = ticker.tick(), if next < total => {
                sent_at.insert(next, Instant::now());
                let frame = format!("42{next}[\"{event}\",{{\"n\":{next}}}]");
                next += 1;
                counts.sent.fetch_add(1, Ordering::Relaxed);
                if ws.send(Message::text(frame)).await.is_err() { break; }
                if next >= total { deadline = Some(tokio::time::Instant::now() + Duration::from_secs(5)); }
            }
            message = ws.next() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                    _ => break,
                };
                if &*text == "2" {
                    let _ = ws.send(Message::text("3")).await;
                    continue;
                }
                let Some(rest) = text.strip_prefix("43") else { continue };
                let id: String = rest.chars().take_while(char::is_ascii_digit).collect();
                let Some(started) = id.parse().ok().and_then(|id| sent_at.remove(&id)) else { continue };
                histogram.saturating_record(started.elapsed().as_micros().max(1) as u64);
                counts.answered.fetch_add(1, Ordering::Relaxed);
                if rest.contains("\"error\"") {
                    counts.refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ = async { match deadline { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => break,
        }
    }
    let _ = ws.close(None).await;
    histogram
}

/// The backend: answers every POST with `{"ack": {"ok": true}}`, keeping connections alive.
pub async fn backend(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!("backend listening on {listen}");
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(stream));
    }
}

async fn serve(mut stream: TcpStream) {
    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 19\r\n\r\n{\"ack\":{\"ok\":true}}";
    let mut buffer = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        // A whole request: its head, then Content-Length bytes of body.
        let (head_end, length) = loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buffer[..at]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                break (at + 4, length);
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        while buffer.len() < head_end + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        buffer.drain(..head_end + length);
        if stream.write_all(ANSWER).await.is_err() {
            return;
        }
    }
}
