//! The reconnect storm: N clients lose their connections at once and come back, as a fleet of
//! browsers does when a load balancer or the server restarts. Each client behaves like
//! socket.io-client 4.6+ with `auth: { recover: true }` over WebSocket: it keeps the private id
//! (`pid`) from the server's CONNECT reply and the last string argument of the last event it got
//! (the offset), and reconnects with `40{"pid":..,"offset":..,"recover":true}`; it counts as
//! recovered when the reply carries the same pid (`recovered = pid && this._pid === pid`, as the
//! JS client decides). Servers without recovery send no pid: they recover nobody, and the time
//! until all are back is still measured.
//!
//! Two ways to lose the connections:
//! - `--cut`: the generator drops every transport at once (the sockets are closed, no close
//!   frame), waits until all are dropped, then every client reconnects at once (or each after
//!   `--delay-ms` and a random wait up to `--jitter-ms`).
//! - `--wait-restart`: once all are connected (`--ready-file` is written then), the caller kills
//!   the server and starts it again; the storm starts at the first drop, and the clients retry
//!   with socket.io-client's randomized exponential backoff from `--retry-ms` (±50%, doubling,
//!   at most 5 s) until they are back.
//!
//! Meanwhile `--observers` clients that are not cut receive the fan-out publisher's messages
//! (the `fanout` scenario's POST, at `--rate`): their latency before and during the storm. The
//! server is sampled every 100 ms from /proc (`--server-pid`, or `--server-pid-file`, re-read at
//! every sample so a restarted server's new pid is followed) for its peak memory and CPU.
//! Every phase (connecting, waiting for the drop, the storm) ends after `--timeout-secs`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::Cli;
use crate::client::{self, Target, Ws, now_micros};
use crate::probe::Process;
use crate::stream::Tls;

#[derive(clap::Args, Clone)]
pub struct StormArgs {
    /// Clients that lose their connection (the observers come on top).
    #[arg(long, default_value_t = 19000)]
    clients: usize,
    /// The generator drops every connection at once.
    #[arg(
        long,
        conflicts_with = "wait_restart",
        required_unless_present = "wait_restart"
    )]
    cut: bool,
    /// The caller restarts the server: wait until every connection has dropped, then retry.
    #[arg(long)]
    wait_restart: bool,
    /// After the cut, each client waits a random time up to this before reconnecting (0: all
    /// at once).
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// After the cut, every client waits this long before its first attempt (socket.io-client
    /// waits its `reconnectionDelay`, 1 s ±50%); counted in the time until all are back.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// The reconnection backoff's first delay (randomized ±50%, doubled at every failed
    /// attempt, at most 5 s), as socket.io-client's `reconnectionDelay`.
    #[arg(long, default_value_t = 100)]
    retry_ms: u64,
    /// Clients that are not cut and receive the fan-out meanwhile.
    #[arg(long, default_value_t = 100)]
    observers: usize,
    /// Fan-out messages per second (to every client in the room, observers and the rest).
    #[arg(long, default_value_t = 10)]
    rate: u32,
    /// The longest each phase (connecting, waiting for the drop, the storm) may take.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    /// A file holding the server's pid, re-read at every sample (for a server that restarts).
    #[arg(long)]
    server_pid_file: Option<PathBuf>,
    /// Written once every client is connected (a script then restarts the server).
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Initial connections under way at once (the storm's reconnects are not limited).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
}

/// The run's phases, in order, on a watch channel every client follows.
const CONNECTING: u8 = 0;
/// All connected; with `--wait-restart` a drop now starts the storm.
const ARMED: u8 = 1;
/// Drop the transport now (`--cut`).
const CUT: u8 = 2;
/// Reconnect.
const GO: u8 = 3;
const STOP: u8 = 4;

/// One connection attempt's limit: the TCP connect (a full SYN backlog retries for minutes),
/// the handshake and the CONNECT reply; socket.io-client's `timeout` (each message of the
/// handshake must also come within 10 s, as everywhere in this generator).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
/// socket.io-client's `reconnectionDelayMax`.
const MAX_BACKOFF_MS: u64 = 5000;
/// How long the observers are measured before the cut.
const CALM: Duration = Duration::from_secs(1);
const EVENT: &str = "42[\"order_created\"";

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Storm,
    Observer,
}

struct Settings {
    restart: bool,
    jitter_ms: u64,
    delay_ms: u64,
    retry_ms: u64,
}

/// What all clients count, read by the coordinator.
struct Shared {
    initial_ok: AtomicUsize,
    initial_failed: AtomicUsize,
    observers_ok: AtomicUsize,
    observers_failed: AtomicUsize,
    /// Storm clients that dropped their transport at the cut.
    cut_done: AtomicUsize,
    /// Storm clients whose connection dropped in the storm (`--wait-restart`).
    dropped: AtomicUsize,
    back: AtomicUsize,
    recovered: AtomicUsize,
    /// Attempts refused at TCP level (nothing listening: the server is down).
    refused: AtomicU64,
    /// Other failed attempts (timeouts, handshakes, CONNECT refused).
    errors: AtomicU64,
    /// Drops outside the storm (before the cut, or a second drop after coming back).
    unexpected_drops: AtomicU64,
    observer_deliveries: AtomicU64,
    /// Observers' connections that dropped (they reconnect, missing what came meanwhile).
    observer_drops: AtomicU64,
    first_drop: AtomicU64,
    first_back: AtomicU64,
    last_back: AtomicU64,
    error_samples: Mutex<Vec<String>>,
}

impl Shared {
    fn new() -> Self {
        Self {
            initial_ok: AtomicUsize::new(0),
            initial_failed: AtomicUsize::new(0),
            observers_ok: AtomicUsize::new(0),
            observers_failed: AtomicUsize::new(0),
            cut_done: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            back: AtomicUsize::new(0),
            recovered: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            unexpected_drops: AtomicU64::new(0),
            observer_deliveries: AtomicU64::new(0),
            observer_drops: AtomicU64::new(0),
            first_drop: AtomicU64::new(u64::MAX),
            first_back: AtomicU64::new(u64::MAX),
            last_back: AtomicU64::new(0),
            error_samples: Mutex::new(Vec::new()),
        }
    }

    /// Counts a failed attempt: refused (nothing listening) or another error, keeping the
    /// first few distinct messages for the report.
    fn failed(&self, error: &anyhow::Error) {
        let refused = error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
        if refused {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.errors.fetch_add(1, Ordering::Relaxed);
        let text = error.to_string();
        if let Ok(mut samples) = self.error_samples.lock()
            && samples.len() < 5
            && !samples.contains(&text)
        {
            samples.push(text);
        }
    }
}

/// What socket.io-client keeps across reconnections.
#[derive(Default)]
pub(crate) struct Session {
    /// The private id of the server's last CONNECT reply.
    pid: Option<String>,
    /// The last event whose last argument is a string (the offset, read out on reconnection);
    /// the text is kept rather than parsed, as most events are followed by another.
    pub(crate) last_event: String,
}

impl Session {
    /// The CONNECT packet: `{"recover":true}` (what the application passes as `auth`), with
    /// the pid and offset once the server gave a pid, as socket.io-client's
    /// `Object.assign({ pid, offset }, auth)`.
    pub(crate) fn connect_packet(&self) -> String {
        let Some(pid) = &self.pid else {
            return r#"40{"recover":true}"#.to_owned();
        };
        // Inserted in key order: the same text whether or not serde_json keeps insertion order
        // (it does when built with the server's `preserve_order` in the workspace).
        let mut auth = serde_json::Map::new();
        if let Some(offset) = last_string_argument(&self.last_event) {
            auth.insert("offset".into(), offset.into());
        }
        auth.insert("pid".into(), pid.clone().into());
        auth.insert("recover".into(), true.into());
        format!("40{}", Value::Object(auth))
    }

    /// Takes the CONNECT reply's pid; answers whether the session was recovered.
    pub(crate) fn connected(&mut self, reply: &str) -> bool {
        let pid = reply
            .get(2..)
            .and_then(|body| serde_json::from_str::<Value>(body).ok())
            .and_then(|v| v.get("pid")?.as_str().map(str::to_owned));
        let recovered = pid.is_some() && pid == self.pid;
        self.pid = pid;
        recovered
    }
}

/// The last argument of an event packet (`42["name",...,"offset"]`) when it is a string:
/// socket.io-client's `_lastOffset` (the event name counts as an argument there too).
fn last_string_argument(text: &str) -> Option<String> {
    let rest = text.strip_prefix("42")?;
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    let args: Value = serde_json::from_str(rest).ok()?;
    args.as_array()?.last()?.as_str().map(str::to_owned)
}

/// splitmix64: each client's own random waits, no shared state.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(index: usize) -> Self {
        Self((index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ now_micros())
    }

    pub(crate) fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as f64 / u64::MAX as f64
    }
}

/// socket.io-client's backoff: `base · 2^attempt`, ±50% at random, at most 5 s.
pub(crate) fn backoff(base_ms: u64, attempt: u32, rng: &mut Rng) -> Duration {
    let ms = base_ms.saturating_mul(1 << attempt.min(16)) as f64;
    let ms = (ms * (0.5 + rng.next_f64())).min(MAX_BACKOFF_MS as f64);
    Duration::from_millis(ms as u64)
}

/// What an observer measured: (publish time, latency) per delivery, the ids it got, repeats.
#[derive(Default)]
struct Observed {
    samples: Vec<(u64, u64)>,
    ids: Vec<bool>,
    duplicates: u64,
}

impl Observed {
    fn record(&mut self, text: &str) {
        let Some(ts) = client::number_after(text, "\"ts\":") else {
            return;
        };
        self.samples
            .push((ts, now_micros().saturating_sub(ts).max(1)));
        let Some(id) = client::number_after(text, "\"id\":") else {
            return;
        };
        let Ok(id) = usize::try_from(id) else { return };
        if id >= self.ids.len() {
            self.ids.resize(id + 1, false);
        }
        if std::mem::replace(&mut self.ids[id], true) {
            self.duplicates += 1;
        }
    }
}

/// Why a connection ended.
enum End {
    Cut,
    Dropped,
    Stop,
}

/// Reads a connection until it drops, the cut comes (storm clients) or the run stops.
async fn serve(
    ws: &mut Ws,
    role: Role,
    cut: &mut bool,
    session: &mut Session,
    observed: &mut Observed,
    shared: &Shared,
    phase: &mut watch::Receiver<u8>,
) -> End {
    loop {
        // A phase change made while this client was connecting is seen here too.
        let now = *phase.borrow_and_update();
        if now == STOP {
            return End::Stop;
        }
        if now == CUT && role == Role::Storm && !*cut {
            *cut = true;
            return End::Cut;
        }
        tokio::select! {
            message = ws.next() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return End::Dropped,
                    Some(Ok(_)) => continue,
                };
                if &*text == "2" {
                    if ws.send(Message::text("3")).await.is_err() {
                        return End::Dropped;
                    }
                } else if text.starts_with("42") {
                    if role == Role::Observer && text.starts_with(EVENT) {
                        observed.record(&text);
                        shared.observer_deliveries.fetch_add(1, Ordering::Relaxed);
                    }
                    if session.pid.is_some() && text.ends_with("\"]") {
                        session.last_event.clear();
                        session.last_event.push_str(&text);
                    }
                } else if text.starts_with("41") {
                    // The server disconnected the socket (the transport may stay): gone.
                    return End::Dropped;
                }
            }
            changed = phase.changed() => if changed.is_err() { return End::Stop },
        }
    }
}

/// Waits until the phase is `at_least` (true) or the run stops (false).
async fn wait_phase(phase: &mut watch::Receiver<u8>, at_least: u8) -> bool {
    loop {
        let now = *phase.borrow_and_update();
        if now == STOP {
            return false;
        }
        if now >= at_least {
            return true;
        }
        if phase.changed().await.is_err() {
            return false;
        }
    }
}

/// One attempt: connect, handshake, CONNECT with what the session holds.
pub(crate) async fn attempt(target: &Target, session: &Session) -> anyhow::Result<(Ws, String)> {
    let packet = session.connect_packet();
    tokio::time::timeout(
        ATTEMPT_TIMEOUT,
        client::open_websocket_with(target, &packet),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no CONNECT reply within {ATTEMPT_TIMEOUT:?}"))?
}

/// One client for the whole run: connects (holding `permit`), then serves, drops, reconnects
/// until the run stops.
#[allow(clippy::too_many_arguments)]
async fn client_task(
    index: usize,
    role: Role,
    target: Target,
    settings: Arc<Settings>,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<u8>,
    permit: OwnedSemaphorePermit,
) -> Observed {
    let mut session = Session::default();
    let mut observed = Observed::default();
    let mut rng = Rng::new(index);
    let first = attempt(&target, &session).await;
    drop(permit);
    let (ok, failed) = match role {
        Role::Storm => (&shared.initial_ok, &shared.initial_failed),
        Role::Observer => (&shared.observers_ok, &shared.observers_failed),
    };
    let mut ws = match first {
        Ok((ws, reply)) => {
            session.connected(&reply);
            ok.fetch_add(1, Ordering::Relaxed);
            ws
        }
        Err(error) => {
            shared.failed(&error);
            failed.fetch_add(1, Ordering::Relaxed);
            return observed;
        }
    };
    let mut cut = false;
    // Whether this client lost its connection in the storm and is not back yet; `counted`
    // once it was, so a later drop is not a second storm.
    let mut in_storm = false;
    let mut counted = false;
    loop {
        let end = serve(
            &mut ws,
            role,
            &mut cut,
            &mut session,
            &mut observed,
            &shared,
            &mut phase,
        )
        .await;
        // Dropped, not closed: the server sees the transport go, as when a network fails.
        drop(ws);
        let mut delay = match end {
            End::Stop => return observed,
            End::Cut => {
                in_storm = true;
                shared.cut_done.fetch_add(1, Ordering::Relaxed);
                if !wait_phase(&mut phase, GO).await {
                    return observed;
                }
                let jitter = (settings.jitter_ms as f64 * rng.next_f64()) as u64;
                Duration::from_millis(settings.delay_ms + jitter)
            }
            End::Dropped => {
                let storm_drop =
                    role == Role::Storm && settings.restart && !counted && *phase.borrow() == ARMED;
                if storm_drop {
                    in_storm = true;
                    shared.first_drop.fetch_min(now_micros(), Ordering::Relaxed);
                    shared.dropped.fetch_add(1, Ordering::Relaxed);
                } else if role == Role::Storm {
                    shared.unexpected_drops.fetch_add(1, Ordering::Relaxed);
                } else {
                    shared.observer_drops.fetch_add(1, Ordering::Relaxed);
                }
                backoff(settings.retry_ms, 0, &mut rng)
            }
        };
        let mut attempts = 0;
        ws = loop {
            if !delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = wait_phase(&mut phase, STOP) => return observed,
                }
            }
            let result = tokio::select! {
                result = attempt(&target, &session) => result,
                _ = wait_phase(&mut phase, STOP) => return observed,
            };
            match result {
                Ok((ws, reply)) => {
                    let recovered = session.connected(&reply);
                    if in_storm {
                        in_storm = false;
                        counted = true;
                        let now = now_micros();
                        shared.first_back.fetch_min(now, Ordering::Relaxed);
                        shared.last_back.fetch_max(now, Ordering::Relaxed);
                        shared.back.fetch_add(1, Ordering::Relaxed);
                        if recovered {
                            shared.recovered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    break ws;
                }
                Err(error) => {
                    shared.failed(&error);
                    attempts += 1;
                    delay = backoff(settings.retry_ms, attempts, &mut rng);
                }
            }
        };
    }
}

/// Where the server's pid comes from.
enum Pids {
    Fixed(u32),
    /// Re-read at every sample: a restarted server's new pid.
    File(PathBuf),
    Unknown,
}

impl Pids {
    fn current(&self) -> Option<u32> {
        match self {
            Pids::Fixed(pid) => Some(*pid),
            Pids::File(path) => std::fs::read_to_string(path).ok()?.trim().parse().ok(),
            Pids::Unknown => None,
        }
    }
}

/// One reading of the server: when (µs on the generator's clock), whose, its threads' CPU
/// time (µs by thread id), its memory.
struct Sample {
    at: u64,
    pid: u32,
    threads: Option<Vec<(u32, u64)>>,
    rss_kib: Option<u64>,
}

/// CPU time the server used between two samples of the same process: each thread's growth, a
/// thread started since counted whole (a thread that ended since is missed).
fn cpu_between(a: &Sample, b: &Sample) -> Option<u64> {
    let (before, after) = (a.threads.as_ref()?, b.threads.as_ref()?);
    Some(
        after
            .iter()
            .map(|&(tid, now)| match before.iter().find(|(t, _)| *t == tid) {
                Some(&(_, then)) => now.saturating_sub(then),
                None => now,
            })
            .sum(),
    )
}

/// Reads the server every 100 ms until `stop`, on a thread of its own: the generator's runtime
/// is busiest exactly when the readings matter.
fn sample(pids: Pids, stop: Arc<AtomicBool>) -> Vec<Sample> {
    let mut samples = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if let Some(pid) = pids.current() {
            let process = Process::new(pid);
            samples.push(Sample {
                at: now_micros(),
                pid,
                threads: process.thread_cpu_micros(),
                rss_kib: process.rss_kib(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    samples
}

/// Peak resident memory, peak CPU % (over steps of about 100 ms) and mean CPU % of the server
/// between `from` and `to` (µs); steps across a restart are left out.
fn server_figures(samples: &[Sample], from: u64, to: u64) -> Value {
    // The sample just after `to` closes the last step.
    let window: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= from && s.at <= to + 100_000)
        .collect();
    let rss_peak = window.iter().filter_map(|s| s.rss_kib).max();
    let mut cpu_peak: Option<f64> = None;
    let (mut busy, mut wall) = (0u64, 0u64);
    let mut start: Option<&Sample> = None;
    for &sample in &window {
        let Some(a) = start.filter(|a| a.pid == sample.pid) else {
            start = Some(sample);
            continue;
        };
        // A step shorter than 80 ms (a late reading) is merged into the next.
        if sample.at < a.at + 80_000 {
            continue;
        }
        if let Some(used) = cpu_between(a, sample) {
            let percent = used as f64 * 100.0 / (sample.at - a.at) as f64;
            cpu_peak = Some(cpu_peak.map_or(percent, |p| p.max(percent)));
            busy += used;
            wall += sample.at - a.at;
        }
        start = Some(sample);
    }
    let before = samples
        .iter()
        .rev()
        .find(|s| s.at < from)
        .and_then(|s| s.rss_kib);
    json!({
        "server_rss_before_kib": before,
        "server_rss_peak_kib": rss_peak,
        "server_cpu_peak_pct": cpu_peak,
        "server_cpu_mean_pct": (wall > 0).then(|| busy as f64 * 100.0 / wall as f64),
        "server_samples": window.len(),
    })
}

/// Polls `done` every 50 ms until it holds or `deadline` passes; prints `progress` each second.
async fn wait_until(
    deadline: Instant,
    done: impl Fn() -> bool,
    progress: impl Fn() -> String,
) -> bool {
    let mut last_print = Instant::now();
    while !done() {
        if Instant::now() >= deadline {
            eprintln!();
            return false;
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            eprint!("\r  {}   ", progress());
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprint!("\r  {}   ", progress());
    eprintln!();
    true
}

pub async fn run(cli: &Cli, tls: Option<&Tls>, args: &StormArgs) -> anyhow::Result<Value> {
    let timeout = Duration::from_secs(args.timeout_secs);
    let settings = Arc::new(Settings {
        restart: args.wait_restart,
        jitter_ms: args.jitter_ms,
        delay_ms: args.delay_ms,
        retry_ms: args.retry_ms,
    });
    let shared = Arc::new(Shared::new());
    let (phase, _) = watch::channel(CONNECTING);
    let pids = match (&args.server_pid_file, cli.server_pid) {
        (Some(path), _) => Pids::File(path.clone()),
        (None, Some(pid)) => Pids::Fixed(pid),
        (None, None) => Pids::Unknown,
    };
    let sampling_stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = sampling_stop.clone();
        tokio::task::spawn_blocking(move || sample(pids, stop))
    };

    // The observers first, then the storm's clients, `concurrency` connecting at once.
    let semaphore = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let total = args.observers + args.clients;
    let started = Instant::now();
    let mut observers = Vec::with_capacity(args.observers);
    let mut stormers = Vec::with_capacity(args.clients);
    for index in 0..total {
        let permit = semaphore.clone().acquire_owned().await?;
        let role = if index < args.observers {
            Role::Observer
        } else {
            Role::Storm
        };
        let handle = tokio::spawn(client_task(
            index,
            role,
            cli.target(index, tls),
            settings.clone(),
            shared.clone(),
            phase.subscribe(),
            permit,
        ));
        match role {
            Role::Observer => observers.push(handle),
            Role::Storm => stormers.push(handle),
        }
        if index % 2000 == 1999 {
            eprint!("\r  opened {}/{total}", index + 1);
        }
    }
    let initial_done = || {
        shared.initial_ok.load(Ordering::Relaxed)
            + shared.initial_failed.load(Ordering::Relaxed)
            + shared.observers_ok.load(Ordering::Relaxed)
            + shared.observers_failed.load(Ordering::Relaxed)
            >= total
    };
    wait_until(started + timeout, initial_done, || {
        format!(
            "connected {} + {} observers ({} failed)",
            shared.initial_ok.load(Ordering::Relaxed),
            shared.observers_ok.load(Ordering::Relaxed),
            shared.initial_failed.load(Ordering::Relaxed)
                + shared.observers_failed.load(Ordering::Relaxed),
        )
    })
    .await;
    let connected = shared.initial_ok.load(Ordering::Relaxed);
    let observers_connected = shared.observers_ok.load(Ordering::Relaxed);
    eprintln!(
        "  {connected} clients and {observers_connected} observers connected in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let _ = phase.send(ARMED);
    if let Some(path) = &args.ready_file {
        std::fs::write(path, format!("{connected}\n"))?;
    }

    // The publisher, from now until the storm is over.
    let publishing_stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let stop = publishing_stop.clone();
        let tls = tls.cloned();
        let (server, rate) = (cli.server, args.rate);
        tokio::spawn(async move {
            let path = "/broadcast/order-created";
            client::publish(
                server,
                tls.as_ref(),
                path,
                rate,
                u64::MAX,
                Some(&stop),
                false,
            )
            .await
        })
    };

    let storm_start = if args.wait_restart {
        eprintln!("  waiting for the server to go away (kill and restart it now)");
        let armed = Instant::now();
        wait_until(
            armed + timeout,
            || shared.dropped.load(Ordering::Relaxed) >= connected,
            || {
                format!(
                    "dropped {}/{connected}",
                    shared.dropped.load(Ordering::Relaxed)
                )
            },
        )
        .await;
        let first = shared.first_drop.load(Ordering::Relaxed);
        if first == u64::MAX {
            now_micros()
        } else {
            first
        }
    } else {
        tokio::time::sleep(CALM).await;
        let at = now_micros();
        let _ = phase.send(CUT);
        let cut_at = Instant::now();
        wait_until(
            cut_at + Duration::from_secs(5),
            || shared.cut_done.load(Ordering::Relaxed) >= connected,
            || {
                format!(
                    "cut {}/{connected}",
                    shared.cut_done.load(Ordering::Relaxed)
                )
            },
        )
        .await;
        let _ = phase.send(GO);
        at
    };
    let lost_connection = if args.wait_restart {
        shared.dropped.load(Ordering::Relaxed)
    } else {
        shared.cut_done.load(Ordering::Relaxed)
    };
    let storm_started = Instant::now();
    let all_back = wait_until(
        storm_started + timeout,
        || shared.back.load(Ordering::Relaxed) >= lost_connection,
        || {
            format!(
                "back {}/{lost_connection}, recovered {}, refused {}, errors {}",
                shared.back.load(Ordering::Relaxed),
                shared.recovered.load(Ordering::Relaxed),
                shared.refused.load(Ordering::Relaxed),
                shared.errors.load(Ordering::Relaxed),
            )
        },
    )
    .await;
    let storm_end = if all_back && lost_connection > 0 {
        shared.last_back.load(Ordering::Relaxed)
    } else {
        now_micros()
    };

    publishing_stop.store(true, Ordering::Relaxed);
    let published = publisher.await?;
    let accepted: Vec<usize> = (0..published.accepted.len())
        .filter(|&id| published.accepted[id])
        .collect();
    // The last messages on their way to the observers: until every publish (even a failed one
    // may have been delivered) reached every observer, or the accepted ones did and nothing
    // came for 500 ms, or 5 s.
    let deliveries = || shared.observer_deliveries.load(Ordering::Relaxed);
    let (attempted, expected) = (
        (published.accepted.len() * observers_connected) as u64,
        (accepted.len() * observers_connected) as u64,
    );
    let drain = Instant::now();
    let (mut last, mut quiet_since) = (deliveries(), Instant::now());
    while deliveries() < attempted && drain.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = deliveries();
        if now != last {
            (last, quiet_since) = (now, Instant::now());
        } else if now >= expected && quiet_since.elapsed() >= Duration::from_millis(500) {
            break;
        }
    }
    let _ = phase.send(STOP);
    for handle in stormers {
        let _ = handle.await;
    }
    let mut during = Histogram::<u64>::new_with_bounds(1, 120_000_000, 2)?;
    let mut before = Histogram::<u64>::new_with_bounds(1, 120_000_000, 2)?;
    let (mut missed, mut duplicates) = (0u64, 0u64);
    for handle in observers {
        let Ok(observed) = handle.await else { continue };
        for &(ts, latency) in &observed.samples {
            if ts < storm_start {
                before.saturating_record(latency);
            } else if ts <= storm_end {
                during.saturating_record(latency);
            }
        }
        if !observed.ids.is_empty() || !observed.samples.is_empty() {
            missed += accepted
                .iter()
                .filter(|&&id| !observed.ids.get(id).copied().unwrap_or(false))
                .count() as u64;
        }
        duplicates += observed.duplicates;
    }
    sampling_stop.store(true, Ordering::Relaxed);
    let samples = sampler.await?;

    let back = shared.back.load(Ordering::Relaxed);
    let first_back = shared.first_back.load(Ordering::Relaxed);
    let seconds = |micros: u64| micros as f64 / 1e6;
    let error_samples = shared
        .error_samples
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    let mut result = json!({
        "scenario": "storm",
        "mode": if args.wait_restart { "restart" } else { "cut" },
        "clients": args.clients, "connected": connected,
        "initial_errors": shared.initial_failed.load(Ordering::Relaxed),
        "jitter_ms": args.jitter_ms, "delay_ms": args.delay_ms, "retry_ms": args.retry_ms,
        "lost_connection": lost_connection, "back": back, "all_back": all_back,
        "seconds_to_all_back": all_back.then(|| seconds(storm_end.saturating_sub(storm_start))),
        "seconds_first_to_last_back": (back > 0 && first_back != u64::MAX)
            .then(|| seconds(shared.last_back.load(Ordering::Relaxed).saturating_sub(first_back))),
        "recovered": shared.recovered.load(Ordering::Relaxed),
        "connect_errors": shared.errors.load(Ordering::Relaxed),
        "refused_attempts": shared.refused.load(Ordering::Relaxed),
        "unexpected_drops": shared.unexpected_drops.load(Ordering::Relaxed),
        "error_samples": error_samples,
        "observers": observers_connected, "rate": args.rate,
        "published": accepted.len(), "publish_errors": published.errors,
        "observer_missed": missed, "observer_duplicates": duplicates,
        "observer_drops": shared.observer_drops.load(Ordering::Relaxed),
        "observer_latency_before": crate::percentiles(&before),
        "observer_latency_during": crate::percentiles(&during),
    });
    if let (Some(fields), Value::Object(server)) = (
        result.as_object_mut(),
        server_figures(&samples, storm_start, storm_end),
    ) {
        fields.extend(server);
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_with_pid_and_offset() {
        let mut session = Session::default();
        assert_eq!(session.connect_packet(), r#"40{"recover":true}"#);
        assert!(!session.connected(r#"40{"sid":"s1","pid":"p1"}"#));
        session
            .last_event
            .push_str(r#"42["order_created",{"order":{"id":3}},"17-4"]"#);
        assert_eq!(
            session.connect_packet(),
            r#"40{"offset":"17-4","pid":"p1","recover":true}"#
        );
        assert!(session.connected(r#"40{"sid":"s1","pid":"p1"}"#));
        // A server that keeps no session: no pid, nothing recovered, nothing presented.
        assert!(!session.connected(r#"40{"sid":"s2"}"#));
        assert_eq!(session.connect_packet(), r#"40{"recover":true}"#);
    }

    #[test]
    fn offset_is_the_last_string_argument() {
        assert_eq!(
            last_string_argument(r#"42["e",{"a":1},"x\"y"]"#).as_deref(),
            Some("x\"y")
        );
        assert_eq!(last_string_argument(r#"42["e",{"a":1}]"#), None);
        assert_eq!(last_string_argument("42["), None);
    }
}
