//! OpenTelemetry traces, off unless configured (`[tracing]` or the standard `OTEL_*` variables):
//! spans as plain values, W3C `traceparent` read from incoming requests and written on outgoing
//! ones, and the sampled spans sent in batches to an OTLP/HTTP collector as JSON (`/v1/traces`)
//! by one task. A span's parent is an incoming request's `traceparent`, or the span the current
//! task runs in ([`in_span`]). With tracing off, starting a span is one check of a static that
//! answers `None`: nothing is allocated and nothing is sent.

use std::borrow::Cow;
use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Spans waiting for the exporter at most; past it they are dropped (and counted).
const QUEUE: usize = 8192;
/// Spans sent in one request at most.
const BATCH: usize = 512;
/// How long a finished span waits for others to share its request.
const BATCH_WAIT: Duration = Duration::from_secs(1);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and what to export.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The full URL spans are POSTed to (`http://collector:4318/v1/traces`).
    pub endpoint: String,
    pub service_name: String,
    /// The share of traces started here that are sampled (0 to 1); a trace started elsewhere
    /// follows its `traceparent`'s sampled flag.
    pub sample_ratio: f64,
    /// Headers sent with every export (`OTEL_EXPORTER_OTLP_HEADERS`).
    pub headers: Vec<(String, String)>,
}

struct Exporter {
    spans: mpsc::Sender<Finished>,
    /// Traces started here are sampled when their id's low 64 bits fall below this.
    threshold: u64,
    exported: AtomicU64,
    dropped: AtomicU64,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// Turns tracing on for this process and starts the exporter task (on the current runtime),
/// which sends what is left when `shutdown` comes and ends. Once only: false if it was on.
pub fn install(settings: Settings, shutdown: CancellationToken) -> bool {
    let (spans, queued) = mpsc::channel(QUEUE);
    let ratio = settings.sample_ratio.clamp(0.0, 1.0);
    let exporter = Exporter {
        spans,
        threshold: if ratio >= 1.0 {
            u64::MAX
        } else {
            (ratio * u64::MAX as f64) as u64
        },
        exported: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
    };
    if EXPORTER.set(exporter).is_err() {
        return false;
    }
    tokio::spawn(export_loop(settings, queued, shutdown));
    true
}

/// Whether tracing is on.
pub fn enabled() -> bool {
    EXPORTER.get().is_some()
}

/// Spans sent to the collector and spans dropped (queue full, or the collector failed).
pub fn counts() -> (u64, u64) {
    EXPORTER.get().map_or((0, 0), |e| {
        (
            e.exported.load(Ordering::Relaxed),
            e.dropped.load(Ordering::Relaxed),
        )
    })
}

/// A span's identity, as `traceparent` carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

impl SpanContext {
    /// Reads a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex flags>`); None for anything
    /// else, all-zero ids included.
    pub fn from_traceparent(text: &str) -> Option<Self> {
        let mut parts = text.trim().split('-');
        let version = parts.next()?;
        let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            (s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u128::from_str_radix(s, 16).ok())
                .flatten()
        };
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let trace_id = hex(trace, 32).filter(|id| *id != 0)?;
        let span_id = hex(span, 16).filter(|id| *id != 0)? as u64;
        let flags = hex(flags, 2)?;
        Some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// As a `traceparent` header value.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

/// What a span stands for, as OTLP numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
}

tokio::task_local! {
    static CURRENT: SpanContext;
}

/// The span the current task runs in, if any.
pub fn current() -> Option<SpanContext> {
    CURRENT.try_with(|context| *context).ok()
}

/// Runs `future` inside the span `context` (spans started in it without a parent are its
/// children).
pub async fn in_span<F: Future>(context: Option<SpanContext>, future: F) -> F::Output {
    match context {
        Some(context) => CURRENT.scope(context, future).await,
        None => future.await,
    }
}

/// One operation being timed; sent to the exporter when dropped (if its trace is sampled).
pub struct Span {
    context: SpanContext,
    parent: Option<u64>,
    name: Cow<'static, str>,
    kind: Kind,
    start: u64,
    attributes: Vec<(&'static str, Value)>,
    error: Option<String>,
}

impl Span {
    /// Starts a span under `parent`, or under the current task's span, or as a new trace's
    /// root (sampled at the configured ratio). None while tracing is off.
    pub fn start(
        name: impl Into<Cow<'static, str>>,
        kind: Kind,
        parent: Option<SpanContext>,
    ) -> Option<Span> {
        let exporter = EXPORTER.get()?;
        let parent = parent.or_else(current);
        let context = match parent {
            Some(parent) => SpanContext {
                span_id: new_span_id(),
                ..parent
            },
            None => {
                let trace_id = loop {
                    let id: u128 = rand::random();
                    if id != 0 {
                        break id;
                    }
                };
                SpanContext {
                    trace_id,
                    span_id: new_span_id(),
                    sampled: (trace_id as u64) <= exporter.threshold,
                }
            }
        };
        Some(Span {
            context,
            parent: parent.map(|p| p.span_id),
            name: name.into(),
            kind,
            start: now_nanos(),
            attributes: Vec::new(),
            error: None,
        })
    }

    /// A child of the current task's span; None when there is none (or tracing is off).
    pub fn child(name: &'static str, kind: Kind) -> Option<Span> {
        let parent = current()?;
        Span::start(name, kind, Some(parent))
    }

    pub fn context(&self) -> SpanContext {
        self.context
    }

    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        self.attributes.push((key, value.into()));
    }

    /// Marks the span failed, saying why.
    pub fn fail(&mut self, message: impl Into<String>) {
        self.error = Some(message.into());
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if !self.context.sampled {
            return;
        }
        let Some(exporter) = EXPORTER.get() else {
            return;
        };
        let finished = Finished {
            context: self.context,
            parent: self.parent,
            name: std::mem::take(&mut self.name),
            kind: self.kind,
            start: self.start,
            end: now_nanos(),
            attributes: std::mem::take(&mut self.attributes),
            error: self.error.take(),
        };
        if exporter.spans.try_send(finished).is_err() {
            exporter.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn new_span_id() -> u64 {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A span that ended, waiting to be exported.
struct Finished {
    context: SpanContext,
    parent: Option<u64>,
    name: Cow<'static, str>,
    kind: Kind,
    start: u64,
    end: u64,
    attributes: Vec<(&'static str, Value)>,
    error: Option<String>,
}

/// An attribute value as OTLP's JSON encoding writes it.
fn any_value(value: &Value) -> Value {
    match value {
        Value::Bool(b) => json!({ "boolValue": b }),
        Value::Number(n) if n.is_i64() || n.is_u64() => json!({ "intValue": n.to_string() }),
        Value::Number(n) => json!({ "doubleValue": n.as_f64() }),
        Value::String(s) => json!({ "stringValue": s }),
        other => json!({ "stringValue": other.to_string() }),
    }
}

/// The OTLP/JSON `ExportTraceServiceRequest` for `spans`.
fn export_request(service_name: &str, spans: &[Finished]) -> Value {
    let spans: Vec<Value> = spans
        .iter()
        .map(|span| {
            let mut encoded = json!({
                "traceId": format!("{:032x}", span.context.trace_id),
                "spanId": format!("{:016x}", span.context.span_id),
                "name": span.name,
                "kind": span.kind as u8,
                "startTimeUnixNano": span.start.to_string(),
                "endTimeUnixNano": span.end.max(span.start).to_string(),
                "attributes": span.attributes.iter()
                    .map(|(key, value)| json!({ "key": key, "value": any_value(value) }))
                    .collect::<Vec<_>>(),
                "status": match &span.error {
                    Some(message) => json!({ "code": 2, "message": message }),
                    None => json!({ "code": 1 }),
                },
            });
            if let Some(parent) = span.parent {
                encoded["parentSpanId"] = json!(format!("{parent:016x}"));
            }
            encoded
        })
        .collect();
    json!({
        "resourceSpans": [{
            "resource": { "attributes": [
                { "key": "service.name", "value": { "stringValue": service_name } },
                { "key": "service.version", "value": { "stringValue": env!("CARGO_PKG_VERSION") } },
            ] },
            "scopeSpans": [{
                "scope": { "name": "switchboard", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans,
            }],
        }],
    })
}

/// Sends finished spans in batches until shutdown, then what is left.
async fn export_loop(
    settings: Settings,
    mut queued: mpsc::Receiver<Finished>,
    shutdown: CancellationToken,
) {
    let client = reqwest::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .build()
        .unwrap_or_default();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let closing = tokio::select! {
            _ = shutdown.cancelled() => true,
            received = queued.recv_many(&mut batch, BATCH) => received == 0,
        };
        if !closing && batch.len() < BATCH {
            // Let a few more share the request.
            let deadline = tokio::time::sleep(BATCH_WAIT);
            tokio::pin!(deadline);
            while batch.len() < BATCH {
                let room = BATCH - batch.len();
                tokio::select! {
                    _ = &mut deadline => break,
                    _ = shutdown.cancelled() => break,
                    received = queued.recv_many(&mut batch, room) => {
                        if received == 0 { break; }
                    }
                }
            }
        }
        if closing {
            while let Ok(span) = queued.try_recv() {
                batch.push(span);
            }
        }
        for chunk in batch.chunks(BATCH) {
            send(&client, &settings, chunk).await;
        }
        batch.clear();
        if closing {
            return;
        }
    }
}

async fn send(client: &reqwest::Client, settings: &Settings, spans: &[Finished]) {
    let Some(exporter) = EXPORTER.get() else {
        return;
    };
    let body = export_request(&settings.service_name, spans).to_string();
    let mut request = client
        .post(&settings.endpoint)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body);
    for (name, value) in &settings.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let count = spans.len() as u64;
    match request.send().await {
        Ok(response) if response.status().is_success() => {
            exporter.exported.fetch_add(count, Ordering::Relaxed);
        }
        outcome => {
            exporter.dropped.fetch_add(count, Ordering::Relaxed);
            let error = match outcome {
                Ok(response) => format!("status {}", response.status()),
                Err(error) => error.to_string(),
            };
            tracing::warn!(%error, spans = count, endpoint = %settings.endpoint, "tracing: the collector did not take spans");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_refuses_what_is_not_one() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = SpanContext::from_traceparent(text).unwrap();
        assert_eq!(context.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(context.span_id, 0x00f067aa0ba902b7);
        assert!(context.sampled);
        assert_eq!(context.traceparent(), text);
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(!SpanContext::from_traceparent(unsampled).unwrap().sampled);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(SpanContext::from_traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_export_request_is_otlp_json() {
        let span = Finished {
            context: SpanContext {
                trace_id: 1,
                span_id: 2,
                sampled: true,
            },
            parent: Some(3),
            name: "POST /api/emit".into(),
            kind: Kind::Server,
            start: 10,
            end: 20,
            attributes: vec![("http.response.status_code", json!(200))],
            error: None,
        };
        let request = export_request("switchboard", &[span]);
        let encoded = &request["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(encoded["traceId"], "00000000000000000000000000000001");
        assert_eq!(encoded["spanId"], "0000000000000002");
        assert_eq!(encoded["parentSpanId"], "0000000000000003");
        assert_eq!(encoded["kind"], 2);
        assert_eq!(encoded["startTimeUnixNano"], "10");
        assert_eq!(
            encoded["attributes"][0]["value"],
            json!({ "intValue": "200" })
        );
    }

    #[test]
    fn spans_are_nothing_while_tracing_is_off() {
        // This test binary never installs tracing.
        assert!(!enabled());
        assert!(Span::start("x", Kind::Internal, None).is_none());
        assert!(Span::child("x", Kind::Internal).is_none());
    }
}
