//! One simulated client: the Engine.IO/Socket.IO client handshake (WebSocket-only, or polling
//! then upgrade), heartbeat answers, and what it measures (latency, loss); plus the HTTP
//! publisher that plays the backend. Every connection goes through `stream::connect`, plain or
//! TLS as the run was asked.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::deflate_ws::DeflateWs;
use crate::stream::{Stream, Tls};

/// The CONNECT to `/`, asking for connection state recovery as socket.io-client 4.6+ can
/// (`auth: { recover: true }`): with `examples/orders.toml` (`[recovery] clients =
/// "on_request"`) every event then carries its offset, as it does for every client by default.
/// The peers ignore the payload.
const CONNECT: &str = r#"40{"recover":true}"#;

/// Microseconds since this process started: the clock carried in payloads.
pub fn now_micros() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Where and how a client connects.
#[derive(Clone)]
pub struct Target {
    pub server: SocketAddr,
    pub source: Ipv4Addr,
    pub path: String,
    /// TLS to the server (`--tls-ca`), or plain TCP.
    pub tls: Option<Tls>,
}

impl Target {
    /// The same server, from another source address.
    pub fn with_source(&self, source: Ipv4Addr) -> Self {
        Self {
            source,
            ..self.clone()
        }
    }

    /// `ws://` or `wss://` and the server's address, for the upgrade request.
    fn ws_base(&self) -> String {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}", self.server)
    }
}

/// What a client listens for.
#[derive(Clone)]
pub enum Expect {
    Nothing,
    /// An event carrying `{"order":{"id","ts"}}` from the publisher.
    Event(String),
    /// Join a room of `room_size` and send `room-message` at `rate` per second (all clients at
    /// the same instants when `burst`).
    Chat {
        room_size: usize,
        rate: f64,
        burst: bool,
        duration: Duration,
    },
}

/// Shared by all clients of a run.
pub struct Counters {
    pub received: AtomicU64,
    pub errors: AtomicU64,
    /// 0: wait, 1: go (chat starts sending), 2: stop.
    pub phase: watch::Sender<u8>,
    pub go: GoSignal,
}

/// Starts the chat senders.
pub struct GoSignal(watch::Sender<u8>);

impl GoSignal {
    pub fn notify_waiters(&self) {
        let _ = self.0.send(1);
    }
}

impl Default for Counters {
    fn default() -> Self {
        let (phase, _) = watch::channel(0u8);
        Self {
            received: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            go: GoSignal(phase.clone()),
            phase,
        }
    }
}

pub struct Outcome {
    histogram: Histogram<u64>,
    /// The next publisher id this client expected.
    next_id: u64,
    lost: u64,
    duplicates: u64,
}

impl Outcome {
    /// One delivery: its latency from the publisher's `ts`, and, with the publisher's `id`,
    /// what it says of losses and repeats.
    fn record(&mut self, counters: &Counters, ts: u64, id: Option<u64>) {
        self.histogram
            .saturating_record(now_micros().saturating_sub(ts).max(1));
        counters.received.fetch_add(1, Ordering::Relaxed);
        if let Some(id) = id {
            if id >= self.next_id {
                self.lost += id - self.next_id;
                self.next_id = id + 1;
            } else {
                self.duplicates += 1;
            }
        }
    }
}

pub struct Client {
    handle: JoinHandle<Outcome>,
}

/// A client's WebSocket: the crate's, or ours that negotiates permessage-deflate. One per
/// client, held in its task: the common kind stays inline rather than behind a pointer.
#[allow(clippy::large_enum_variant)]
enum Conn {
    Plain(Ws),
    Deflate(DeflateWs),
}

impl Conn {
    async fn next(&mut self) -> Option<anyhow::Result<Message>> {
        match self {
            Self::Plain(ws) => ws.next().await.map(|r| r.map_err(Into::into)),
            Self::Deflate(ws) => ws.next().await,
        }
    }

    async fn send_text(&mut self, text: String) -> anyhow::Result<()> {
        match self {
            Self::Plain(ws) => Ok(ws.send(Message::text(text)).await?),
            Self::Deflate(ws) => ws.send_text(&text).await,
        }
    }

    async fn close(&mut self) {
        match self {
            Self::Plain(ws) => {
                let _ = ws.close(None).await;
            }
            Self::Deflate(ws) => ws.close().await,
        }
    }
}

/// WebSocket-only with permessage-deflate negotiated: open packet, then CONNECT to `/`.
async fn open_websocket_deflate(target: &Target) -> anyhow::Result<DeflateWs> {
    let path = format!("{}?EIO=4&transport=websocket", target.path);
    let mut ws = DeflateWs::connect(tcp(target).await?, &target.server.to_string(), &path).await?;
    let mut connected = false;
    while let Some(message) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await? {
        let Message::Text(text) = message? else {
            continue;
        };
        if text.starts_with('0') && !connected {
            ws.send_text(CONNECT).await?;
            connected = true;
        } else if text.starts_with("40") {
            return Ok(ws);
        } else if text.starts_with("44") {
            bail!("refused: {text}");
        }
    }
    bail!("closed before the CONNECT reply")
}

pub type Ws = WebSocketStream<Stream>;

async fn tcp(target: &Target) -> std::io::Result<Stream> {
    crate::stream::connect(target.server, Some(target.source), target.tls.as_ref()).await
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

async fn read_more(stream: &mut Stream, rest: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        bail!("connection closed");
    }
    rest.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// Reads an HTTP answer's head: answers it lowercased, and the bytes read past it.
pub async fn read_head(stream: &mut Stream) -> anyhow::Result<(String, Vec<u8>)> {
    let mut buffer = Vec::with_capacity(1024);
    loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..at + 4]).to_ascii_lowercase();
            buffer.drain(..at + 4);
            return Ok((head, buffer));
        }
        read_more(stream, &mut buffer).await?;
    }
}

/// A minimal HTTP/1.1 exchange on a kept-alive stream (Content-Length or chunked answers).
pub async fn http(
    stream: &mut Stream,
    host: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).await?;
    let (head, mut rest) = read_head(stream).await?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("status")?;
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match length {
        Some(length) => {
            while rest.len() < length {
                read_more(stream, &mut rest).await?;
            }
            rest.truncate(length);
            Ok((status, rest))
        }
        None if head.contains("transfer-encoding: chunked") => {
            let mut body = Vec::new();
            loop {
                let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
                    read_more(stream, &mut rest).await?;
                    continue;
                };
                let size =
                    usize::from_str_radix(String::from_utf8_lossy(&rest[..line_end]).trim(), 16)?;
                while rest.len() < line_end + 2 + size + 2 {
                    read_more(stream, &mut rest).await?;
                }
                body.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
                rest.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    return Ok((status, body));
                }
            }
        }
        None => Ok((status, rest)),
    }
}

async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await? {
            Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
            Some(Ok(Message::Close(_))) | None => bail!("closed"),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(_)) => continue,
        }
    }
}

fn sid_of(open: &str) -> anyhow::Result<String> {
    let value: serde_json::Value = serde_json::from_str(open.trim_start_matches('0'))?;
    Ok(value["sid"].as_str().context("sid")?.to_owned())
}

/// The CONNECT of a socket.io-msgpack-parser client, asking for recovery as [`CONNECT`] does.
fn msgpack_connect() -> Vec<u8> {
    let packet = rmpv::Value::Map(vec![
        ("type".into(), 0.into()),
        (
            "data".into(),
            rmpv::Value::Map(vec![("recover".into(), true.into())]),
        ),
        ("nsp".into(), "/".into()),
    ]);
    let mut out = Vec::new();
    let _ = rmpv::encode::write_value(&mut out, &packet);
    out
}

/// A MessagePack packet's `type` and `data`.
fn msgpack_packet(bytes: &[u8]) -> Option<(u64, rmpv::Value)> {
    let value = rmpv::decode::read_value(&mut &bytes[..]).ok()?;
    let map = value.as_map()?;
    let field = |name: &str| {
        map.iter()
            .find(|(k, _)| k.as_str() == Some(name))
            .map(|(_, v)| v.clone())
    };
    Some((
        field("type")?.as_u64()?,
        field("data").unwrap_or(rmpv::Value::Nil),
    ))
}

/// The first number under `key` anywhere in `value` (the publisher's `ts` and `id`).
fn msgpack_number(value: &rmpv::Value, key: &str) -> Option<u64> {
    match value {
        rmpv::Value::Map(entries) => entries.iter().find_map(|(k, v)| {
            if k.as_str() == Some(key) {
                v.as_u64()
            } else {
                msgpack_number(v, key)
            }
        }),
        rmpv::Value::Array(items) => items.iter().find_map(|v| msgpack_number(v, key)),
        _ => None,
    }
}

/// A WebSocket-only Engine.IO session, its open packet read.
async fn open_engine_websocket(target: &Target) -> anyhow::Result<Ws> {
    let url = format!(
        "{}{}?EIO=4&transport=websocket",
        target.ws_base(),
        target.path
    );
    let (mut ws, _) = client_async_with_config(url, tcp(target).await?, Some(ws_config())).await?;
    let open = next_text(&mut ws).await?;
    if !open.starts_with('0') {
        bail!("expected the open packet, got {open:?}");
    }
    Ok(ws)
}

/// WebSocket-only with socket.io-msgpack-parser's format: open packet, then CONNECT to `/`.
async fn open_websocket_msgpack(target: &Target) -> anyhow::Result<Ws> {
    let mut ws = open_engine_websocket(target).await?;
    ws.send(Message::binary(msgpack_connect())).await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await? {
            Some(Ok(Message::Binary(bytes))) => match msgpack_packet(&bytes) {
                Some((0, _)) => return Ok(ws),
                Some((4, data)) => bail!("refused: {data}"),
                _ => continue,
            },
            Some(Ok(Message::Close(_))) | None => bail!("closed"),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(_)) => continue,
        }
    }
}

/// WebSocket-only: open packet, then CONNECT to `/`.
pub async fn open_websocket(target: &Target) -> anyhow::Result<Ws> {
    Ok(open_websocket_with(target, CONNECT).await?.0)
}

/// WebSocket-only: open packet, then `connect` (a CONNECT packet to `/`); answers the socket and
/// the server's CONNECT reply (`40{"sid":..}`, with `"pid"` when it keeps the session for
/// recovery).
pub async fn open_websocket_with(target: &Target, connect: &str) -> anyhow::Result<(Ws, String)> {
    let mut ws = open_engine_websocket(target).await?;
    ws.send(Message::text(connect)).await?;
    loop {
        let reply = next_text(&mut ws).await?;
        if reply.starts_with("40") {
            return Ok((ws, reply));
        }
        if reply.starts_with("44") {
            bail!("refused: {reply}");
        }
    }
}

/// Polling first (handshake, CONNECT, its reply), then the upgrade to WebSocket.
async fn open_polling_then_upgrade(target: &Target) -> anyhow::Result<Ws> {
    let host = target.server.to_string();
    let mut stream = tcp(target).await?;
    let base = format!("{}?EIO=4&transport=polling", target.path);
    let (status, body) = http(&mut stream, &host, "GET", &base, b"").await?;
    if status != 200 {
        bail!("handshake status {status}");
    }
    let sid = sid_of(&String::from_utf8_lossy(&body))?;
    let with_sid = format!("{base}&sid={sid}");
    let (status, _) = http(&mut stream, &host, "POST", &with_sid, CONNECT.as_bytes()).await?;
    if status != 200 {
        bail!("connect status {status}");
    }
    let (_, body) = http(&mut stream, &host, "GET", &with_sid, b"").await?;
    if !String::from_utf8_lossy(&body).contains("40") {
        bail!("no CONNECT reply on polling");
    }
    let url = format!(
        "{}{}?EIO=4&transport=websocket&sid={sid}",
        target.ws_base(),
        target.path
    );
    let (mut ws, _) = client_async_with_config(url, tcp(target).await?, Some(ws_config())).await?;
    ws.send(Message::text("2probe")).await?;
    loop {
        if next_text(&mut ws).await? == "3probe" {
            break;
        }
    }
    ws.send(Message::text("5")).await?;
    drop(stream);
    Ok(ws)
}

/// The number after `"key":` in `text`.
pub fn number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits: String = text[at..]
        .chars()
        .skip_while(|c| *c == ' ')
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

impl Client {
    pub async fn open(
        target: Target,
        index: usize,
        expect: Expect,
        counters: Arc<Counters>,
        polling: bool,
        msgpack: bool,
        deflate: bool,
    ) -> anyhow::Result<Self> {
        let ws = if deflate {
            open_websocket_deflate(&target).await.map(Conn::Deflate)
        } else if polling {
            open_polling_then_upgrade(&target).await.map(Conn::Plain)
        } else if msgpack {
            open_websocket_msgpack(&target).await.map(Conn::Plain)
        } else {
            open_websocket(&target).await.map(Conn::Plain)
        };
        let mut ws = match ws {
            Ok(ws) => ws,
            Err(error) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                return Err(error);
            }
        };
        let room = match &expect {
            Expect::Chat { room_size, .. } => {
                let room = format!("room-{}", index / room_size.max(&1));
                ws.send_text(format!("42[\"join-room\",\"{room}\"]"))
                    .await?;
                Some(room)
            }
            _ => None,
        };
        let mut phase = counters.phase.subscribe();
        let handle = tokio::spawn(async move {
            let mut outcome = Outcome {
                histogram: Histogram::new_with_bounds(1, 120_000_000, 2)
                    .unwrap_or_else(|_| Histogram::new(2).expect("2 significant digits is valid")),
                next_id: 0,
                lost: 0,
                duplicates: 0,
            };
            let msgpack_event = match &expect {
                Expect::Event(name) if msgpack => Some(name.clone()),
                _ => None,
            };
            let (event_prefix, chat) = match &expect {
                Expect::Event(name) => (Some(format!("42[\"{name}\"")), None),
                Expect::Chat {
                    rate,
                    duration,
                    burst,
                    ..
                } => (
                    Some("42[\"room-broadcast\"".to_owned()),
                    Some((*rate, *duration, *burst)),
                ),
                Expect::Nothing => (None, None),
            };
            let mut sending: Option<(tokio::time::Interval, Instant, Duration)> = None;
            let mut sent = 0u64;
            loop {
                tokio::select! {
                    message = ws.next() => {
                        let text = match message {
                            Some(Ok(Message::Text(text))) => text,
                            Some(Ok(Message::Binary(bytes))) => {
                                // A MessagePack event: ["name", {... ts, id ...}, offset?].
                                let Some(name) = &msgpack_event else { continue };
                                let Some((2, data)) = msgpack_packet(&bytes) else { continue };
                                if data.as_array().and_then(|a| a.first()).and_then(|v| v.as_str()) != Some(name.as_str()) {
                                    continue;
                                }
                                let Some(ts) = msgpack_number(&data, "ts") else { continue };
                                outcome.record(&counters, ts, msgpack_number(&data, "id"));
                                continue;
                            }
                            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                            Some(Ok(_)) => continue,
                        };
                        if &*text == "2" {
                            if ws.send_text("3".into()).await.is_err() { break; }
                            continue;
                        }
                        if let Some(prefix) = &event_prefix && text.starts_with(prefix.as_str()) {
                            let Some(ts) = number_after(&text, "\"ts\":") else { continue };
                            // Chat messages carry no publisher id.
                            let id = if chat.is_none() { number_after(&text, "\"id\":") } else { None };
                            outcome.record(&counters, ts, id);
                        }
                    }
                    changed = phase.changed() => {
                        if changed.is_err() { break; }
                        match *phase.borrow() {
                            1 => if let Some((rate, duration, burst)) = chat {
                                // Unless in bursts, each client starts at its own point of the
                                // period (spread evenly by the golden ratio), so the clients' sends
                                // are spread over each second as a real chat's are.
                                let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
                                let spread = if burst { 0.0 } else { (index as f64 * 0.618_033_988_75).fract() };
                                let offset = period.mul_f64(spread);
                                let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
                                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                                sending = Some((ticker, Instant::now(), duration));
                            },
                            2 => break,
                            _ => {}
                        }
                    }
                    _ = async {
                        match sending.as_mut() {
                            Some((ticker, _, _)) => { ticker.tick().await; }
                            None => std::future::pending::<()>().await,
                        }
                    } => {
                        let Some((_, started, duration)) = &sending else { continue };
                        let total = (chat.map_or(0.0, |c| c.0) * duration.as_secs_f64()).round() as u64;
                        if started.elapsed() > *duration + Duration::from_secs(1) || sent >= total {
                            sending = None;
                            continue;
                        }
                        sent += 1;
                        let room = room.as_deref().unwrap_or("room");
                        let frame = format!("42[\"room-message\",{{\"room\":\"{room}\",\"message\":{{\"ts\":{},\"n\":{sent}}}}}]", now_micros());
                        if ws.send_text(frame).await.is_err() { break; }
                    }
                }
            }
            ws.close().await;
            outcome
        });
        Ok(Self { handle })
    }
}

/// Stops every client and merges what they measured: (latency histogram, lost, duplicates).
/// `published`: how many messages the publisher sent (fan-out), to count losses at the tail.
pub async fn finish(clients: Vec<Client>, published: u64) -> (Histogram<u64>, u64, u64) {
    let mut histogram = Histogram::new_with_bounds(1, 120_000_000, 2).expect("valid bounds");
    let mut lost = 0;
    let mut duplicates = 0;
    // Phase 2 tells every client to stop.
    if let Some(phase) = STOP.get() {
        let _ = phase.send(2);
    }
    for client in clients {
        if let Ok(outcome) = client.handle.await {
            let _ = histogram.add(&outcome.histogram);
            lost += outcome.lost + published.saturating_sub(outcome.next_id);
            duplicates += outcome.duplicates;
        }
    }
    (histogram, lost, duplicates)
}

/// The phase channel of the run, so `finish` can stop the clients.
pub static STOP: OnceLock<watch::Sender<u8>> = OnceLock::new();

/// What the publisher saw.
pub struct Published {
    /// Publishes that failed.
    pub errors: u64,
    /// How far behind its schedule the publisher fell at worst: it sends one request at a time,
    /// so a server slower than the rate holds it back, and that wait is not in the latency
    /// (each message carries the time it was actually sent).
    pub most_behind: Duration,
    /// Which ids the server accepted (answered 200), by id.
    pub accepted: Vec<bool>,
}

/// An order as the orders example's backend sends them, about 1 KB of JSON: customer, address,
/// eight lines, notes (`--order-detail`).
fn detailed_order(id: u64, ts: u64) -> String {
    let items: Vec<String> = (0..8)
        .map(|n| {
            format!(
                "{{\"sku\":\"SKU-{}\",\"name\":\"Item number {n}\",\"qty\":{},\"price\":{}.99}}",
                1000 + (id + n) % 97,
                n + 1,
                9 + n
            )
        })
        .collect();
    format!(
        "{{\"order\":{{\"id\":{id},\"ts\":{ts},\"status\":\"paid\",\"customer\":{{\"name\":\"Customer {}\",\"email\":\"customer{}@example.com\",\"phone\":\"+44 20 7946 {:04}\"}},\"address\":{{\"street\":\"{} Analytical Row\",\"city\":\"London\",\"postcode\":\"EC1A 1BB\",\"country\":\"GB\"}},\"items\":[{}],\"notes\":\"Leave at the door; ring twice. Fragile items inside, please handle with care.\",\"created_at\":\"2026-12-06T23:00:00Z\"}}}}",
        id % 1000,
        id % 1000,
        id % 10_000,
        id % 200,
        items.join(",")
    )
}

/// Plays the backend: POSTs `{"order":{"id","ts"}}` at `rate` per second, up to `total` times,
/// on one kept-alive connection (TLS when `tls` is given). Without `stop` it gives up when it
/// cannot connect again after a failure (the fan-out's server is gone); with `stop` it goes on
/// failing and reconnecting (a storm's server comes back) until `stop` is set.
pub async fn publish(
    server: SocketAddr,
    tls: Option<&Tls>,
    path: &str,
    rate: u32,
    total: u64,
    stop: Option<&AtomicBool>,
    detailed: bool,
) -> Published {
    let host = server.to_string();
    let mut published = Published {
        errors: 0,
        most_behind: Duration::ZERO,
        accepted: Vec::new(),
    };
    let mut stream = crate::stream::connect(server, None, tls).await.ok();
    if stream.is_none() && stop.is_none() {
        published.errors = total;
        return published;
    }
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    for id in 0..total {
        let due = started + interval.mul_f64(id as f64);
        tokio::time::sleep_until(due.into()).await;
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            break;
        }
        published.most_behind = published.most_behind.max(due.elapsed());
        let body = if detailed {
            detailed_order(id, now_micros())
        } else {
            format!("{{\"order\":{{\"id\":{id},\"ts\":{}}}}}", now_micros())
        };
        let outcome = match stream.as_mut() {
            Some(stream) => http(stream, &host, "POST", path, body.as_bytes()).await,
            None => Err(anyhow::anyhow!("not connected")),
        };
        published.accepted.push(matches!(outcome, Ok((200, _))));
        match outcome {
            Ok((200, _)) => {}
            Ok(_) => published.errors += 1,
            Err(_) => {
                published.errors += 1;
                stream = crate::stream::connect(server, None, tls).await.ok();
                if stream.is_none() && stop.is_none() {
                    published.errors += total - id - 1;
                    return published;
                }
            }
        }
    }
    published
}
