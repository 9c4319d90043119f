//! The churn soak: `workers` clients at a time, each connecting, greeting (the server's
//! `connection_established`), sending `ping` and reading its `pong`, disconnecting, and starting
//! over, for the whole duration. Then it waits for the server to settle and compares its
//! resident memory, open file descriptors and tokio tasks (`switchboard_tasks` from `/metrics`)
//! with the levels before: a server that leaks per connection ends above them. Memory is read
//! after `settle`: a closed session's heartbeat entries (a weak reference each) hold its
//! allocation until they fall due (Switchboard's connect timeout, 45 s by default), and freed
//! memory is handed back every 10 s.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Target, open_websocket};
use crate::probe::Process;

#[derive(Default)]
struct Counts {
    cycles: AtomicU64,
    errors: AtomicU64,
}

/// One connect-ping-disconnect cycle.
async fn cycle(target: &Target) -> anyhow::Result<()> {
    let mut ws = open_websocket(target).await?;
    let mut greeted = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next()).await?;
        let Some(Ok(Message::Text(text))) = message else {
            anyhow::bail!("closed before the pong");
        };
        if &*text == "2" {
            ws.send(Message::text("3")).await?;
        } else if text.starts_with("42[\"connection_established\"") && !greeted {
            greeted = true;
            ws.send(Message::text("42[\"ping\"]")).await?;
        } else if text.starts_with("42[\"pong\"") {
            break;
        }
    }
    // A clean disconnect: the socket leaves its namespace, then the connection closes.
    ws.send(Message::text("41")).await?;
    let _ = ws.close(None).await;
    Ok(())
}

/// The server's live tokio tasks, from its metrics.
async fn tasks(target: &Target) -> Option<u64> {
    let server = target.server;
    let mut stream = crate::stream::connect(server, None, target.tls.as_ref())
        .await
        .ok()?;
    let (_, body) = crate::client::http(&mut stream, &server.to_string(), "GET", "/metrics", b"")
        .await
        .ok()?;
    String::from_utf8_lossy(&body)
        .lines()
        .find(|l| l.starts_with("switchboard_tasks "))?
        .split_whitespace()
        .nth(1)?
        .parse::<f64>()
        .ok()
        .map(|v| v as u64)
}

fn open_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// The soak; answers its JSON result.
pub async fn run(
    base: &Target,
    sources: u8,
    workers: usize,
    duration: Duration,
    settle: Duration,
    pid: Option<u32>,
) -> anyhow::Result<serde_json::Value> {
    let probe = pid.map(Process::new);
    let level = |probe: &Option<Process>| {
        (
            probe.as_ref().and_then(Process::rss_kib),
            pid.and_then(open_fds),
        )
    };
    let (rss_before, fds_before) = level(&probe);
    let tasks_before = tasks(base).await;
    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let mut handles = Vec::with_capacity(workers);
    for index in 0..workers {
        let target = base.with_source(crate::source_address(index, sources));
        let counts = counts.clone();
        handles.push(tokio::spawn(async move {
            while started.elapsed() < duration {
                match cycle(&target).await {
                    Ok(()) => counts.cycles.fetch_add(1, Ordering::Relaxed),
                    Err(_) => counts.errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let mut peak_rss = rss_before;
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak_rss = peak_rss.max(probe.as_ref().and_then(Process::rss_kib));
        eprint!(
            "\r  churn: {} cycles, {} errors",
            counts.cycles.load(Ordering::Relaxed),
            counts.errors.load(Ordering::Relaxed)
        );
    }
    for handle in handles {
        let _ = handle.await;
    }
    let churned = started.elapsed().as_secs_f64();
    eprintln!();
    // Settled: descriptors and tasks back to their level (or 15 s), then a trim's period for
    // memory (the server hands freed memory back every 10 s).
    let settle_started = Instant::now();
    while settle_started.elapsed() < Duration::from_secs(15) {
        let fds = pid.and_then(open_fds);
        let now_tasks = tasks(base).await;
        if fds <= fds_before && now_tasks <= tasks_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(settle.saturating_sub(settle_started.elapsed())).await;
    let (rss_after, fds_after) = level(&probe);
    let tasks_after = tasks(base).await;
    let cycles = counts.cycles.load(Ordering::Relaxed);
    Ok(json!({
        "scenario": "churn", "workers": workers, "seconds": churned,
        "cycles": cycles, "cycles_per_sec": cycles as f64 / churned,
        "errors": counts.errors.load(Ordering::Relaxed),
        "settle_seconds": settle.as_secs_f64(),
        "rss_before_kib": rss_before, "rss_peak_kib": peak_rss, "rss_after_kib": rss_after,
        "fds_before": fds_before, "fds_after": fds_after,
        "tasks_before": tasks_before, "tasks_after": tasks_after,
    }))
}
