//! The rolling restart: N clients spread over several nodes of a cluster while the caller
//! (`bench/roll`) restarts the nodes one after the other, as a deploy does. The clients behave
//! like socket.io-client with `auth: { recover: true }` (`storm.rs`'s session: pid and offset)
//! behind a round-robin balancer without stickiness: each attempt goes to the next node, a node
//! that refuses the TCP connection is skipped at once (a balancer's health check), any other
//! failure waits socket.io-client's randomized backoff. A publisher posts the fan-out's order
//! events (`/broadcast/order-created`, every client in the room) to the nodes in turn, the next
//! one when a node does not answer 200.
//!
//! Reported: connections per second over the run (the survivors' peak is the storm a deploy
//! makes), the deliveries' latency percentiles, and per client the events it lost (answered 200
//! by the API and never delivered), got twice or out of order; sessions recovered against
//! fresh ones.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Target, Ws, now_micros};
use crate::storm::{Rng, Session, attempt, backoff};

#[derive(clap::Args, Clone)]
pub struct RollArgs {
    /// The cluster's nodes, comma-separated (`127.0.0.1:4000,127.0.0.1:4001,...`).
    #[arg(long, value_delimiter = ',', required = true)]
    nodes: Vec<SocketAddr>,
    #[arg(long, default_value_t = 15000)]
    clients: usize,
    /// Order events per second, to every client.
    #[arg(long, default_value_t = 10)]
    rate: u32,
    /// How long the publisher runs (the roll happens meanwhile); the clients then get a few
    /// seconds more to catch up.
    #[arg(long, default_value_t = 60)]
    duration_secs: u64,
    /// Written once every client is connected and the publisher starts.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// socket.io-client's `reconnectionDelay` (randomized ±50%, doubled each failed attempt).
    #[arg(long, default_value_t = 1000)]
    retry_ms: u64,
    /// Initial connections under way at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    ids: Vec<u32>,
    connects: u32,
    recovered: u32,
}

struct Shared {
    /// Connections established, by second since the start of the run.
    per_second: Vec<AtomicU64>,
    started: Instant,
    latency: std::sync::Mutex<Histogram<u64>>,
    stop: AtomicBool,
    initial_failed: AtomicU64,
}

impl Shared {
    fn connected(&self) {
        let second = self.started.elapsed().as_secs() as usize;
        if let Some(slot) = self.per_second.get(second) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Connects through the "balancer": the next node, skipping those that refuse at once.
async fn connect_any(
    nodes: &[Target],
    next: &mut usize,
    session: &Session,
) -> anyhow::Result<(Ws, String)> {
    let mut last = anyhow::anyhow!("no node");
    for _ in 0..nodes.len() {
        let target = &nodes[*next % nodes.len()];
        *next += 1;
        match attempt(target, session).await {
            Ok(connected) => return Ok(connected),
            Err(error) => {
                let refused = error
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
                if !refused {
                    return Err(error);
                }
                last = error;
            }
        }
    }
    Err(last)
}

/// Reads one connection until it drops or the run stops; false when the run stopped.
async fn serve(ws: &mut Ws, session: &mut Session, seen: &mut Seen, shared: &Shared) -> bool {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            message = ws.next() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return true,
                    Some(Ok(_)) => continue,
                };
                if &*text == "2" {
                    if ws.send(Message::text("3")).await.is_err() {
                        return true;
                    }
                    continue;
                }
                if !text.starts_with("42[\"order_created\"") {
                    continue;
                }
                if let (Some(id), Some(ts)) = (
                    client::number_after(&text, "\"id\":"),
                    client::number_after(&text, "\"ts\":"),
                ) {
                    seen.ids.push(id as u32);
                    let latency = now_micros().saturating_sub(ts).max(1);
                    if let Ok(mut histogram) = shared.latency.lock() {
                        let _ = histogram.record(latency);
                    }
                }
                session.last_event = text.to_string();
            }
            _ = tick.tick() => {
                if shared.stop.load(Ordering::Relaxed) {
                    return false;
                }
            }
        }
    }
}

async fn client_task(
    index: usize,
    nodes: Arc<Vec<Target>>,
    retry_ms: u64,
    shared: Arc<Shared>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Seen {
    let mut session = Session::default();
    let mut seen = Seen::default();
    let mut rng = Rng::new(index);
    let mut next = index;
    let first = connect_any(&nodes, &mut next, &session).await;
    drop(permit);
    let mut ws = match first {
        Ok((ws, reply)) => {
            session.connected(&reply);
            seen.connects += 1;
            ws
        }
        Err(_) => {
            shared.initial_failed.fetch_add(1, Ordering::Relaxed);
            return seen;
        }
    };
    loop {
        if !serve(&mut ws, &mut session, &mut seen, &shared).await {
            return seen;
        }
        drop(ws);
        let mut attempts = 0;
        ws = loop {
            tokio::time::sleep(backoff(retry_ms, attempts, &mut rng)).await;
            if shared.stop.load(Ordering::Relaxed) {
                return seen;
            }
            match connect_any(&nodes, &mut next, &session).await {
                Ok((ws, reply)) => {
                    shared.connected();
                    seen.connects += 1;
                    if session.connected(&reply) {
                        seen.recovered += 1;
                    }
                    break ws;
                }
                Err(_) => attempts += 1,
            }
        };
    }
}

/// Posts the order events to the nodes in turn (the next on anything but 200); answers which
/// ids were accepted.
async fn publish(nodes: &[SocketAddr], rate: u32, total: u64) -> Vec<bool> {
    let mut accepted = Vec::with_capacity(total as usize);
    let mut streams: Vec<Option<crate::stream::Stream>> = nodes.iter().map(|_| None).collect();
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    for id in 0..total {
        tokio::time::sleep_until((started + interval.mul_f64(id as f64)).into()).await;
        let body = format!("{{\"order\":{{\"id\":{id},\"ts\":{}}}}}", now_micros());
        let mut ok = false;
        for turn in 0..nodes.len() {
            let at = (id as usize + turn) % nodes.len();
            if streams[at].is_none() {
                streams[at] = crate::stream::connect(nodes[at], None, None).await.ok();
            }
            let Some(stream) = streams[at].as_mut() else {
                continue;
            };
            let host = nodes[at].to_string();
            let answer = tokio::time::timeout(
                Duration::from_secs(5),
                client::http(
                    stream,
                    &host,
                    "POST",
                    "/broadcast/order-created",
                    body.as_bytes(),
                ),
            )
            .await;
            match answer {
                Ok(Ok((200, _))) => {
                    ok = true;
                    break;
                }
                Ok(Ok(_)) => {}
                _ => streams[at] = None,
            }
        }
        accepted.push(ok);
    }
    accepted
}

pub async fn run(sources: u8, path: &str, args: &RollArgs) -> anyhow::Result<Value> {
    let per_source_node: Vec<Target> = args
        .nodes
        .iter()
        .map(|server| Target {
            server: *server,
            source: std::net::Ipv4Addr::new(127, 0, 0, 2),
            path: path.to_owned(),
            tls: None,
        })
        .collect();
    let run_secs = args.duration_secs as usize + 120;
    let shared = Arc::new(Shared {
        per_second: (0..run_secs).map(|_| AtomicU64::new(0)).collect(),
        started: Instant::now(),
        latency: std::sync::Mutex::new(Histogram::new_with_bounds(1, 120_000_000, 3)?),
        stop: AtomicBool::new(false),
        initial_failed: AtomicU64::new(0),
    });
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(args.clients);
    for index in 0..args.clients {
        let source =
            std::net::Ipv4Addr::new(127, 0, 0, 2 + (index % usize::from(sources.max(1))) as u8);
        let nodes: Vec<Target> = per_source_node
            .iter()
            .map(|target| target.with_source(source))
            .collect();
        let permit = gate.clone().acquire_owned().await?;
        tasks.push(tokio::spawn(client_task(
            index,
            Arc::new(nodes),
            args.retry_ms,
            shared.clone(),
            permit,
        )));
    }
    // Every initial attempt done.
    let _ = gate.acquire_many(args.concurrency.max(1) as u32).await?;
    let connect_done = shared.started.elapsed().as_secs() as usize;
    if let Ok(mut histogram) = shared.latency.lock() {
        histogram.reset();
    }
    if let Some(file) = &args.ready_file {
        std::fs::write(file, b"ready")?;
    }
    let total = u64::from(args.rate) * args.duration_secs;
    let accepted = publish(&args.nodes, args.rate, total).await;
    // The stragglers reconnect and recover what they missed.
    tokio::time::sleep(Duration::from_secs(10)).await;
    shared.stop.store(true, Ordering::Relaxed);
    let mut lost = 0u64;
    let mut duplicates = 0u64;
    let mut out_of_order = 0u64;
    let mut recovered = 0u64;
    let mut reconnects = 0u64;
    let mut clients_losing = 0u64;
    for task in tasks {
        let Ok(seen) = task.await else { continue };
        reconnects += u64::from(seen.connects.saturating_sub(1));
        recovered += u64::from(seen.recovered);
        let mut got = vec![0u8; accepted.len()];
        let mut last: Option<u32> = None;
        for &id in &seen.ids {
            if let Some(slot) = got.get_mut(id as usize) {
                *slot = slot.saturating_add(1);
            }
            if last.is_some_and(|l| id <= l) {
                out_of_order += 1;
            }
            last = Some(id);
        }
        let mut missing = 0;
        for (id, &ok) in accepted.iter().enumerate() {
            match got[id] {
                0 if ok => missing += 1,
                n if n > 1 => duplicates += u64::from(n - 1),
                _ => {}
            }
        }
        if missing > 0 {
            clients_losing += 1;
        }
        lost += missing;
    }
    let per_second: Vec<u64> = shared
        .per_second
        .iter()
        .skip(connect_done)
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    let last_busy = per_second.iter().rposition(|&c| c > 0).map_or(0, |p| p + 1);
    let histogram = shared.latency.lock().map(|h| h.clone()).ok();
    Ok(json!({
        "scenario": "roll",
        "clients": args.clients,
        "nodes": args.nodes.len(),
        "rate": args.rate,
        "published": accepted.len(),
        "accepted": accepted.iter().filter(|&&ok| ok).count(),
        "initial_failed": shared.initial_failed.load(Ordering::Relaxed),
        "reconnects": reconnects,
        "recovered": recovered,
        "peak_connects_per_sec": per_second.iter().copied().max().unwrap_or(0),
        "connects_per_sec": &per_second[..last_busy],
        "lost": lost,
        "clients_losing": clients_losing,
        "duplicates": duplicates,
        "out_of_order": out_of_order,
        "latency": histogram.as_ref().map(crate::percentiles),
    }))
}
