//! switchboard-bench: a load generator that speaks the client side of Engine.IO v4 / Socket.IO
//! v5 over WebSocket (and the polling-then-upgrade handshake browsers do), from several loopback
//! source addresses, against any Socket.IO server (Switchboard, Node.js socket.io, socketioxide).
//!
//! Scenarios (each bounded in count and time, stopping by itself):
//! - `idle`: N idle connections; the server's resident memory per connection (from /proc).
//! - `fanout`: N clients in one room; a publisher POSTs `/broadcast/order-created` at R/s;
//!   deliveries/s, publish-to-receive latency percentiles (the send time travels in the
//!   payload), lost messages, server CPU per delivery, and how far the server held the
//!   publisher behind its schedule (it sends one request at a time).
//! - `chat`: rooms of k members; every client emits `room-message` at r/s; the same figures.
//! - `connect`: new connections per second up to a count, WebSocket-only or polling-then-upgrade.
//! - `churn`: clients connect, ping and disconnect continuously; the server's memory, file
//!   descriptors and tasks before and after (they should return to their level).
//! - `rpc`: every client sends an event with an ack at r/s; ack latency and rate, server CPU per
//!   event (against a rule's answer or the event proxy's, with `backend` as the backend).
//! - `storm`: N clients lose their connections at once (cut by the generator, or the server
//!   restarted) and reconnect, asking for recovery as socket.io-client does; how long until all
//!   are back, how many recovered, the server's peak memory and CPU, and the latency a group of
//!   observers sees meanwhile (see `storm.rs`).
//!
//! With `--tls-ca` every connection to the server is TLS (`stream.rs`). Prints a table, and with
//! `--json` one JSON line for `bench/compare`; each carries `"tls"`.
//!
//! `floor` is not a scenario but a server: the bare minimum this rig allows (see `floor.rs`),
//! measured beside the real servers.

mod churn;
mod client;
mod deflate_ws;
mod floor;
mod probe;
mod roll;
mod rpc;
mod storm;
mod stream;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use serde_json::json;

use client::{Expect, Target};

#[derive(Parser)]
#[command(name = "switchboard-bench", about = "Socket.IO load generator")]
struct Cli {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:4000", global = true)]
    server: SocketAddr,
    /// Socket.IO path.
    #[arg(long, default_value = "/socket.io/", global = true)]
    path: String,
    /// Loopback source addresses to spread connections over (127.0.0.2 ...).
    #[arg(long, default_value_t = 8, global = true)]
    sources: u8,
    /// The server's pid, to read its CPU time and memory from /proc.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Print one JSON line of results.
    #[arg(long, global = true)]
    json: bool,
    /// Speak TLS to the server, trusting the certificates of this PEM file as roots.
    #[arg(long, global = true, value_name = "PEM file")]
    tls_ca: Option<PathBuf>,
    /// The name the server's certificate is checked for (with `--tls-ca`).
    #[arg(long, global = true, default_value = "localhost")]
    tls_name: String,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Clone)]
enum Scenario {
    /// N idle connections: server memory per connection.
    Idle {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value_t = 5)]
        hold_secs: u64,
        /// The share of clients that negotiate permessage-deflate.
        #[arg(long, default_value_t = 0.0)]
        deflate_share: f64,
    },
    /// N clients in one room, a publisher at R messages per second.
    Fanout {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        rate: u32,
        #[arg(long, default_value_t = 10)]
        duration_secs: u64,
        /// Publish to this server instead of the clients' one (another node of a cluster).
        #[arg(long)]
        publish_to: Option<SocketAddr>,
        /// The share of clients (0 to 1, spread evenly) that use socket.io-msgpack-parser's
        /// format instead of the default parser's.
        #[arg(long, default_value_t = 0.0)]
        msgpack_share: f64,
        /// The share of clients (0 to 1, spread evenly) that negotiate permessage-deflate (the
        /// server needs `[engine] compression = true`).
        #[arg(long, default_value_t = 0.0)]
        deflate_share: f64,
        /// Publish orders as the orders example's backend does (~1 KB of JSON each) instead
        /// of `{"order":{"id","ts"}}`.
        #[arg(long)]
        order_detail: bool,
    },
    /// Rooms of k members; every client sends at r per second.
    Chat {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        room_size: usize,
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        #[arg(long, default_value_t = 10)]
        duration_secs: u64,
        /// Every client sends at the same instants (bursts of one message per client); by
        /// default each client starts at its own point of the period, spreading the sends.
        #[arg(long)]
        burst: bool,
    },
    /// Opens connections as fast as it can up to a count.
    Connect {
        #[arg(long, default_value_t = 2000)]
        clients: usize,
        /// Start on polling and upgrade, as browsers do.
        #[arg(long)]
        polling: bool,
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
    },
    /// Workers that connect, ping and disconnect over and over: leaks show as memory, file
    /// descriptors or tasks above their starting level once it settles.
    Churn {
        #[arg(long, default_value_t = 500)]
        workers: usize,
        #[arg(long, default_value_t = 30)]
        duration_secs: u64,
        /// How long after the churn memory is read.
        #[arg(long, default_value_t = 60)]
        settle_secs: u64,
    },
    /// Every client sends `event` with an ack at r per second: ack latency and throughput.
    Rpc {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        #[arg(long, default_value_t = 10)]
        duration_secs: u64,
        #[arg(long, default_value = "rpc")]
        event: String,
    },
    /// N clients lose their connections at once and reconnect (recovering when the server can):
    /// time until all are back, server peak memory and CPU, observers' latency meanwhile.
    Storm(storm::StormArgs),
    /// A rolling restart: clients spread over a cluster's nodes (round robin, no stickiness)
    /// while the caller restarts the nodes one by one; connections per second, latency, and
    /// events lost, repeated or out of order.
    Roll(roll::RollArgs),
    /// Runs the minimal HTTP backend the event proxy is measured against.
    Backend {
        #[arg(long, default_value = "127.0.0.1:4100")]
        listen: SocketAddr,
    },
    /// Runs the floor server (handshake and one pre-encoded frame per recipient, nothing else).
    Floor {
        #[arg(long, default_value = "127.0.0.1:4000")]
        listen: SocketAddr,
    },
}

fn source_address(index: usize, sources: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (index % usize::from(sources.max(1))) as u8)
}

impl Cli {
    /// Where client `index` connects from and to.
    fn target(&self, index: usize, tls: Option<&stream::Tls>) -> Target {
        Target {
            server: self.server,
            source: source_address(index, self.sources),
            path: self.path.clone(),
            tls: tls.cloned(),
        }
    }
}

/// Opens `count` clients (WebSocket, in the room the server puts them in), `concurrency` at once.
/// The server's `switchboard_bytes_sent_total` (payload bytes written to clients, compressed
/// ones as compressed), read from its `/metrics`; None for a server that has no such metric.
async fn server_bytes_sent(server: SocketAddr, tls: Option<&stream::Tls>) -> Option<u64> {
    let mut connection = stream::connect(server, None, tls).await.ok()?;
    let (status, body) = client::http(&mut connection, &server.to_string(), "GET", "/metrics", b"")
        .await
        .ok()?;
    if status != 200 {
        return None;
    }
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .find_map(|line| line.strip_prefix("switchboard_bytes_sent_total "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
}

async fn open_clients(
    cli: &Cli,
    tls: Option<&stream::Tls>,
    count: usize,
    expect: Expect,
    counters: &Arc<client::Counters>,
    msgpack_share: f64,
    deflate_share: f64,
) -> anyhow::Result<Vec<client::Client>> {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(256));
    let mut handles = Vec::with_capacity(count);
    let started = Instant::now();
    for index in 0..count {
        let permit = semaphore.clone().acquire_owned().await?;
        let target = cli.target(index, tls);
        let counters = counters.clone();
        let expect = expect.clone();
        handles.push(tokio::spawn(async move {
            // Spread evenly: client i speaks MessagePack when the share's running count steps up.
            let picked =
                |share: f64| ((index + 1) as f64 * share).floor() > (index as f64 * share).floor();
            let (msgpack, deflate) = (picked(msgpack_share), picked(deflate_share));
            let result =
                client::Client::open(target, index, expect, counters, false, msgpack, deflate)
                    .await;
            drop(permit);
            result
        }));
        if index % 2000 == 1999 {
            eprint!("\r  connected {}/{count}", index + 1);
        }
    }
    let mut clients = Vec::with_capacity(count);
    let mut errors = 0;
    for handle in handles {
        match handle.await? {
            Ok(client) => clients.push(client),
            Err(_) => errors += 1,
        }
    }
    eprintln!(
        "\r  connected {}/{count} in {:.1}s ({errors} failed)",
        clients.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(clients)
}

/// Lets the last messages arrive (until `expected` or 5 s), then reads the run's length in
/// seconds and the server's CPU time since `cpu_before`, in microseconds.
async fn drain(
    counters: &client::Counters,
    expected: u64,
    started: Instant,
    probe: Option<&probe::Process>,
    cpu_before: Option<u64>,
) -> (f64, Option<u64>) {
    let drain = Instant::now();
    while counters.received.load(Ordering::Relaxed) < expected
        && drain.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = probe
        .and_then(|p| p.cpu_micros())
        .zip(cpu_before)
        .map(|(a, b)| a - b);
    (elapsed, cpu)
}

fn percentiles(histogram: &Histogram<u64>) -> serde_json::Value {
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    json!({
        "p50_ms": ms(0.5), "p99_ms": ms(0.99), "p999_ms": ms(0.999),
        "max_ms": histogram.max() as f64 / 1000.0, "samples": histogram.len(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let tls = match &cli.tls_ca {
        Some(ca) => Some(stream::Tls::load(ca, &cli.tls_name)?),
        None => None,
    };
    let tls = tls.as_ref();
    let probe = cli.server_pid.map(probe::Process::new);
    let counters = Arc::new(client::Counters::default());
    let _ = client::STOP.set(counters.phase.clone());
    let result = match cli.scenario.clone() {
        Scenario::Floor { listen } => return floor::run(listen).await,
        Scenario::Backend { listen } => return rpc::backend(listen).await,
        Scenario::Storm(args) => storm::run(&cli, tls, &args).await?,
        Scenario::Roll(args) => roll::run(cli.sources, &cli.path, &args).await?,
        Scenario::Churn {
            workers,
            duration_secs,
            settle_secs,
        } => {
            churn::run(
                &cli.target(0, tls),
                cli.sources,
                workers,
                Duration::from_secs(duration_secs),
                Duration::from_secs(settle_secs),
                cli.server_pid,
            )
            .await?
        }
        Scenario::Rpc {
            clients,
            rate,
            duration_secs,
            event,
        } => {
            let counts = Arc::new(rpc::RpcCounts::default());
            let duration = Duration::from_secs(duration_secs);
            let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let start = Arc::new(tokio::sync::Barrier::new(clients + 1));
            let mut handles = Vec::with_capacity(clients);
            for index in 0..clients {
                let target = cli.target(index, tls);
                // Each client starts at its own point of the period (golden-ratio spread).
                let offset = period.mul_f64((index as f64 * 0.618_033_988_75).fract());
                handles.push(tokio::spawn(rpc::client(
                    target,
                    event.clone(),
                    rate,
                    duration,
                    offset,
                    counts.clone(),
                    start.clone(),
                )));
            }
            // Every client is connected: the measured part starts.
            start.wait().await;
            let cpu_before = probe.as_ref().and_then(|p| p.cpu_micros());
            let started = Instant::now();
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 2)?;
            for handle in handles {
                let _ = histogram.add(&handle.await?);
            }
            let elapsed = started.elapsed().as_secs_f64();
            let cpu = probe
                .as_ref()
                .and_then(|p| p.cpu_micros())
                .zip(cpu_before)
                .map(|(a, b)| a - b);
            let sent = counts.sent.load(Ordering::Relaxed);
            let answered = counts.answered.load(Ordering::Relaxed);
            json!({
                "scenario": "rpc", "clients": clients, "rate": rate, "event": event,
                "sent": sent, "answered": answered,
                "lost": sent.saturating_sub(answered),
                "refused": counts.refused.load(Ordering::Relaxed),
                "errors": counts.errors.load(Ordering::Relaxed),
                "acks_per_sec": answered as f64 / elapsed,
                "server_cpu_us_per_event": cpu.map(|c| c as f64 / answered.max(1) as f64),
                "latency": percentiles(&histogram),
            })
        }
        Scenario::Idle {
            clients,
            hold_secs,
            deflate_share,
        } => {
            let before = probe.as_ref().and_then(|p| p.rss_kib());
            let open = open_clients(
                &cli,
                tls,
                clients,
                Expect::Nothing,
                &counters,
                0.0,
                deflate_share,
            )
            .await?;
            tokio::time::sleep(Duration::from_secs(hold_secs)).await;
            let after = probe.as_ref().and_then(|p| p.rss_kib());
            let per_connection = match (before, after) {
                (Some(b), Some(a)) if !open.is_empty() => {
                    Some((a.saturating_sub(b)) as f64 * 1024.0 / open.len() as f64)
                }
                _ => None,
            };
            let errors = clients - open.len();
            drop(open);
            json!({
                "scenario": "idle", "clients": clients, "connected": clients - errors, "errors": errors,
                "rss_before_kib": before, "rss_after_kib": after,
                "bytes_per_connection": per_connection,
            })
        }
        Scenario::Fanout {
            clients,
            rate,
            duration_secs,
            publish_to,
            msgpack_share,
            deflate_share,
            order_detail,
        } => {
            let expect = Expect::Event("order_created".into());
            let open = open_clients(
                &cli,
                tls,
                clients,
                expect,
                &counters,
                msgpack_share,
                deflate_share,
            )
            .await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let total = u64::from(rate) * duration_secs;
            let cpu_before = probe.as_ref().and_then(|p| p.cpu_micros());
            let bytes_before = server_bytes_sent(cli.server, tls).await;
            let started = Instant::now();
            let publisher = publish_to.unwrap_or(cli.server);
            let published = client::publish(
                publisher,
                tls,
                "/broadcast/order-created",
                rate,
                total,
                None,
                order_detail,
            )
            .await;
            let expected = total * open.len() as u64;
            let (elapsed, cpu) =
                drain(&counters, expected, started, probe.as_ref(), cpu_before).await;
            let bytes_sent = match (bytes_before, server_bytes_sent(cli.server, tls).await) {
                (Some(before), Some(after)) => Some(after.saturating_sub(before)),
                _ => None,
            };
            let (histogram, lost, duplicates) = client::finish(open, total).await;
            let received = counters.received.load(Ordering::Relaxed);
            json!({
                "scenario": "fanout", "clients": clients, "rate": rate, "messages": total,
                "msgpack_share": msgpack_share, "deflate_share": deflate_share, "order_detail": order_detail,
                "server_bytes_sent_per_delivery": bytes_sent.map(|b| b as f64 / received.max(1) as f64),
                "expected": expected, "received": received, "lost": lost, "duplicates": duplicates,
                "errors": counters.errors.load(Ordering::Relaxed) + published.errors,
                "deliveries_per_sec": received as f64 / elapsed,
                "publisher_behind_ms": published.most_behind.as_secs_f64() * 1000.0,
                "server_cpu_us_per_delivery": cpu.map(|c| c as f64 / received.max(1) as f64),
                "latency": percentiles(&histogram),
            })
        }
        Scenario::Chat {
            clients,
            room_size,
            rate,
            duration_secs,
            burst,
        } => {
            let expect = Expect::Chat {
                room_size,
                rate,
                burst,
                duration: Duration::from_secs(duration_secs),
            };
            let open = open_clients(&cli, tls, clients, expect, &counters, 0.0, 0.0).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let cpu_before = probe.as_ref().and_then(|p| p.cpu_micros());
            let started = Instant::now();
            counters.go.notify_waiters();
            let per_client = (rate * duration_secs as f64).round() as u64;
            let expected = per_client * clients as u64 * room_size as u64;
            tokio::time::sleep(Duration::from_secs(duration_secs)).await;
            let (elapsed, cpu) =
                drain(&counters, expected, started, probe.as_ref(), cpu_before).await;
            let received = counters.received.load(Ordering::Relaxed);
            let (histogram, _, _) = client::finish(open, 0).await;
            json!({
                "scenario": "chat", "clients": clients, "room_size": room_size, "rate": rate, "burst": burst,
                "expected": expected, "received": received,
                "lost": expected.saturating_sub(received),
                "errors": counters.errors.load(Ordering::Relaxed),
                "deliveries_per_sec": received as f64 / elapsed,
                "server_cpu_us_per_delivery": cpu.map(|c| c as f64 / received.max(1) as f64),
                "latency": percentiles(&histogram),
            })
        }
        Scenario::Connect {
            clients,
            polling,
            concurrency,
        } => {
            let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency));
            let started = Instant::now();
            let errors = Arc::new(AtomicU64::new(0));
            let mut handles = Vec::with_capacity(clients);
            for index in 0..clients {
                let permit = semaphore.clone().acquire_owned().await?;
                let target = cli.target(index, tls);
                let counters = counters.clone();
                let errors = errors.clone();
                handles.push(tokio::spawn(async move {
                    let result = client::Client::open(
                        target,
                        index,
                        Expect::Nothing,
                        counters,
                        polling,
                        false,
                        false,
                    )
                    .await;
                    drop(permit);
                    if result.is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    result.ok()
                }));
            }
            let mut open = Vec::new();
            for handle in handles {
                if let Some(client) = handle.await? {
                    open.push(client);
                }
            }
            let elapsed = started.elapsed().as_secs_f64();
            let errors = errors.load(Ordering::Relaxed);
            drop(open);
            json!({
                "scenario": if polling { "connect-polling" } else { "connect-websocket" },
                "clients": clients, "errors": errors,
                "connections_per_sec": (clients as u64 - errors) as f64 / elapsed,
                "seconds": elapsed,
            })
        }
    };
    let mut result = result;
    if let Some(fields) = result.as_object_mut() {
        fields.insert("tls".into(), json!(tls.is_some()));
    }
    if cli.json {
        println!("{result}");
    } else {
        println!("{}", serde_json::to_string_pretty(&result)?);
    }
    Ok(())
}
