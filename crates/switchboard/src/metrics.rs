//! What the server reports of itself: the Prometheus registry behind `GET /metrics`, and the
//! figures of `/api/stats` and the periodic stats line. Counters live where the work is counted
//! (the engine's traffic, the hub's fan-out histogram) and are registered here by handle; gauges
//! that describe the current state are read from the engine and hub when asked. This is the one
//! part above both the engine and the hub that reads them, so the API reports transport figures
//! without reaching into the transport layer.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use crate::hub::{Hub, SocketEngine};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    pub transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecoveryLabel {
    pub namespace: String,
    /// `recovered` or `missed`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabel {
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// `api` (HTTP API), `route` (configured HTTP route), `client` (a client event's rule),
    /// `proxy` (an event proxy's answer).
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProxyLabel {
    /// `connect`, `event` or `refresh`.
    pub kind: &'static str,
    /// `accepted`, `refused`, `answered`, `timeout`, `unreachable`, `status`, `bad_answer`,
    /// `backlog_full`, `no_token`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `blocked` or `token_revoked`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

/// 1 ms to 16 s.
fn call_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

pub struct Metrics {
    engine: Arc<SocketEngine>,
    hub: Arc<Hub>,
    started: Instant,
    registry: Registry,
    connections: Family<TransportLabel, Gauge>,
    sockets: Family<NamespaceLabel, Gauge>,
    rooms: Family<NamespaceLabel, Gauge>,
    /// Sessions kept for connection state recovery, by namespace.
    recovery_sessions: Family<NamespaceLabel, Gauge>,
    /// What each namespace's history holds: rooms with a log, and their entries.
    history_rooms: Family<NamespaceLabel, Gauge>,
    history_entries: Family<NamespaceLabel, Gauge>,
    /// Clients back with their pid before their old transport's end was noticed, by namespace.
    recovery_stale_transports: Family<NamespaceLabel, Counter>,
    /// Clients that came back with their session id, by namespace and outcome.
    recovery_attempts: Family<RecoveryLabel, Counter>,
    /// Volatile events not queued for sockets that were behind, by namespace.
    volatile_dropped: Family<NamespaceLabel, Counter>,
    /// Events given to sockets joining a room that keeps its last state, and such rooms.
    last_state_given: Family<NamespaceLabel, Counter>,
    last_state_rooms: Family<NamespaceLabel, Gauge>,
    /// Connects refused and sockets disconnected by a block or a revoked token, by reason.
    access_refused: Family<ReasonLabel, Counter>,
    /// Blocks and token revocations in force on this node, by kind.
    access_entries: Family<KindLabel, Gauge>,
    pub emits: Family<SourceLabel, Counter>,
    pub api_requests: Family<StatusLabel, Counter>,
    /// On a node of a cluster: linked to Redis now (1) or not (0).
    cluster_connected: Gauge,
    /// On a node of a cluster: messages for the other nodes dropped (publisher too far behind,
    /// or Redis unreachable), as the adapter counts them.
    cluster_dropped: Gauge,
    /// On a node of a cluster: other nodes taken for dead (silent past node_timeout).
    cluster_nodes_expired: Gauge,
    /// On a node of a cluster: other nodes it knows to be up (heard within node_timeout).
    cluster_nodes_up: Gauge,
    cluster_received: Gauge,
    /// While shutting down: 1, and the sessions the staged drain has still to close.
    draining: Gauge,
    drain_left: Gauge,
    /// Flusher threads writing through io_uring, and the sends they made that way.
    flushers_io_uring: Gauge,
    io_uring_sends: Counter,
    /// With tracing on: spans sent to the collector, and dropped.
    trace_exported: Gauge,
    trace_dropped: Gauge,
    /// On the streams adapter: sessions this node took from Redis (saved by another node).
    cluster_shared_sessions_taken: Gauge,
    /// Calls to the backend's proxies, by kind and outcome, and how long answered ones took.
    pub proxy_calls: Family<ProxyLabel, Counter>,
    pub proxy_latency: Family<KindLabel, Histogram, fn() -> Histogram>,
    /// Webhook events delivered, attempts that failed, retries, events dropped (after the last
    /// attempt, or with the queue full), and the time a delivered batch took.
    pub webhook_events_sent: Counter,
    pub webhook_attempts_failed: Counter,
    pub webhook_retries: Counter,
    pub webhook_events_dropped: Counter,
    pub webhook_latency: Histogram,
    /// Token expiry: sockets warned, tokens refreshed, sockets disconnected at expiry.
    pub tokens: Family<OutcomeLabel, Counter>,
    /// Tokio tasks alive now (a churn soak checks they return to their level).
    tasks: Gauge,
    /// TLS handshakes by outcome, and certificate reloads by outcome.
    pub tls_handshakes: Family<OutcomeLabel, Counter>,
    pub tls_reloads: Family<OutcomeLabel, Counter>,
    /// Requests for another node's sessions, by outcome.
    pub cluster_forwarded: Family<OutcomeLabel, Counter>,
}

impl Metrics {
    pub fn new(engine: Arc<SocketEngine>, hub: Arc<Hub>) -> Arc<Self> {
        let mut registry = Registry::with_prefix("switchboard");
        let connections = Family::<TransportLabel, Gauge>::default();
        let sockets = Family::<NamespaceLabel, Gauge>::default();
        let rooms = Family::<NamespaceLabel, Gauge>::default();
        let recovery_sessions = Family::<NamespaceLabel, Gauge>::default();
        registry.register(
            "recovery_sessions_saved",
            "Sessions kept for connection state recovery (dropped clients that may come back), by namespace",
            recovery_sessions.clone(),
        );
        let history_rooms = Family::<NamespaceLabel, Gauge>::default();
        registry.register(
            "history_rooms",
            "Rooms whose events the history keeps now (everyone's log counted as one), by namespace",
            history_rooms.clone(),
        );
        let history_entries = Family::<NamespaceLabel, Gauge>::default();
        registry.register(
            "history_entries",
            "Events the history keeps now, summed over its room logs (an event sent to two rooms counts in each), by namespace",
            history_entries.clone(),
        );
        let recovery_stale_transports = Family::<NamespaceLabel, Counter>::default();
        registry.register(
            "recovery_stale_transports_closed",
            "Clients back with their session id before their old transport's end was noticed: the old transport closed, the session recovered; by namespace",
            recovery_stale_transports.clone(),
        );
        let recovery_attempts = Family::<RecoveryLabel, Counter>::default();
        registry.register(
            "recovery_attempts",
            "Clients that came back with their session id asking to recover, by namespace and outcome (recovered: same socket and every missed event; missed: the session was gone, the client started afresh)",
            recovery_attempts.clone(),
        );
        let volatile_dropped = Family::<NamespaceLabel, Counter>::default();
        registry.register(
            "volatile_dropped",
            "Volatile events (volatile: true) not queued for a socket that had something queued already, by namespace",
            volatile_dropped.clone(),
        );
        let last_state_given = Family::<NamespaceLabel, Counter>::default();
        registry.register(
            "last_state_given",
            "Events given at once to sockets joining a room that keeps its last state ([[history]] on_join), by namespace",
            last_state_given.clone(),
        );
        let last_state_rooms = Family::<NamespaceLabel, Gauge>::default();
        registry.register(
            "last_state_rooms",
            "Rooms whose last state this node keeps, by namespace",
            last_state_rooms.clone(),
        );
        let access_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "access_refused",
            "Connects, recoveries and token refreshes refused, and sockets disconnected, because their user is blocked or their token revoked (POST /api/users/{user}/block, /api/tokens/revoke), by reason",
            access_refused.clone(),
        );
        let access_entries = Family::<KindLabel, Gauge>::default();
        registry.register(
            "access_entries",
            "Blocks and token revocations in force on this node, by kind (block, token, user_tokens)",
            access_entries.clone(),
        );
        let emits = Family::<SourceLabel, Counter>::default();
        let api_requests = Family::<StatusLabel, Counter>::default();
        let cluster_connected = Gauge::default();
        let cluster_dropped = Gauge::default();
        let cluster_nodes_expired = Gauge::default();
        let cluster_nodes_up = Gauge::default();
        let cluster_received = Gauge::default();
        let cluster_shared_sessions_taken = Gauge::default();
        let proxy_calls = Family::<ProxyLabel, Counter>::default();
        let proxy_latency =
            Family::<KindLabel, Histogram, fn() -> Histogram>::new_with_constructor(call_histogram);
        let webhook_events_sent = Counter::default();
        let webhook_attempts_failed = Counter::default();
        let webhook_retries = Counter::default();
        let webhook_events_dropped = Counter::default();
        let webhook_latency = call_histogram();
        let tokens = Family::<OutcomeLabel, Counter>::default();
        let tls_handshakes = Family::<OutcomeLabel, Counter>::default();
        let tls_reloads = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes on the listener, by outcome (ok, failed: refused or timed out)",
            tls_handshakes.clone(),
        );
        registry.register(
            "tls_reloads",
            "TLS certificate reloads (SIGHUP), by outcome (ok, failed: the old pair stays)",
            tls_reloads.clone(),
        );
        let cluster_forwarded = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "cluster_forwarded_requests",
            "Requests for a session another node holds, by outcome (polling, websocket: passed \
             on; unknown_node: no such node, answered 400; unreachable: answered 502)",
            cluster_forwarded.clone(),
        );
        let draining = Gauge::default();
        registry.register(
            "draining",
            "1 while this node shuts down: /ready answers 503, new sessions are refused and the clients are closed in batches over server.drain_period",
            draining.clone(),
        );
        let flushers_io_uring = Gauge::default();
        registry.register(
            "flushers_io_uring",
            "Flusher threads (they write large broadcasts) that write through io_uring, many recipients per system call ([engine] io_uring; 0 before the first large broadcast, or where the kernel or a seccomp profile refuses io_uring)",
            flushers_io_uring.clone(),
        );
        let io_uring_sends = Counter::default();
        registry.register(
            "io_uring_sends",
            "Writes to clients the flusher threads made through io_uring",
            io_uring_sends.clone(),
        );
        let drain_left = Gauge::default();
        registry.register(
            "drain_sessions_left",
            "Sessions the staged drain has still to close (0 once every client was told to reconnect elsewhere)",
            drain_left.clone(),
        );
        let trace_exported = Gauge::default();
        let trace_dropped = Gauge::default();
        if crate::trace::enabled() {
            registry.register(
                "trace_spans_exported",
                "Spans sent to the OpenTelemetry collector since start ([tracing] or OTEL_EXPORTER_OTLP_ENDPOINT)",
                trace_exported.clone(),
            );
            registry.register(
                "trace_spans_dropped",
                "Spans dropped since start: the queue to the collector was full, or the collector did not take them",
                trace_dropped.clone(),
            );
        }
        let tasks = Gauge::default();
        registry.register(
            "tasks",
            "Tokio tasks alive now (connections with work, timers, proxies)",
            tasks.clone(),
        );
        registry.register(
            "proxy_calls",
            "Calls to the backend's connect, event and refresh proxies, by outcome",
            proxy_calls.clone(),
        );
        registry.register(
            "proxy_latency_seconds",
            "Time the backend took to answer a proxy call",
            proxy_latency.clone(),
        );
        registry.register(
            "webhook_events_sent",
            "Webhook events the backend accepted",
            webhook_events_sent.clone(),
        );
        registry.register(
            "webhook_attempts_failed",
            "Webhook batch attempts that failed (timeout, no connection, non-2xx)",
            webhook_attempts_failed.clone(),
        );
        registry.register(
            "webhook_retries",
            "Webhook batches tried again after a failure",
            webhook_retries.clone(),
        );
        registry.register(
            "webhook_events_dropped",
            "Webhook events given up on (attempts exhausted, refused, or the queue full)",
            webhook_events_dropped.clone(),
        );
        registry.register(
            "webhook_latency_seconds",
            "Time a delivered webhook batch took, its last attempt",
            webhook_latency.clone(),
        );
        registry.register(
            "tokens",
            "Token expiry: sockets warned, tokens refreshed, sockets disconnected at expiry",
            tokens.clone(),
        );
        if hub.cluster().is_some() {
            registry.register(
                "cluster_connected",
                "1 while this node is linked to the cluster's engine (Redis), 0 while it is not",
                cluster_connected.clone(),
            );
            registry.register(
                "cluster_messages_dropped",
                "Messages for the other nodes dropped since start (publisher behind, or Redis unreachable)",
                cluster_dropped.clone(),
            );
            registry.register(
                "cluster_nodes_expired",
                "Other nodes taken for dead since start: silent past cluster.node_timeout (killed or cut off), their users set offline",
                cluster_nodes_expired.clone(),
            );
            registry.register(
                "cluster_nodes_up",
                "Other nodes this node knows to be up: heard from within cluster.node_timeout",
                cluster_nodes_up.clone(),
            );
            registry.register(
                "cluster_messages_received",
                "Messages from the cluster's engine this node received since start (its inbound cluster traffic: with adapter = \"sharded\" and a dynamic subscription mode, only its rooms' share)",
                cluster_received.clone(),
            );
            registry.register(
                "cluster_shared_sessions_taken",
                "Sessions this node took from Redis to recover a client another node had (cluster.adapter = \"streams\"), its node killed or the client sent elsewhere",
                cluster_shared_sessions_taken.clone(),
            );
        }
        registry.register(
            "connections",
            "Engine.IO connections open now, by transport",
            connections.clone(),
        );
        registry.register(
            "sockets",
            "Sockets connected now, by namespace",
            sockets.clone(),
        );
        registry.register(
            "rooms",
            "Rooms with members now, by namespace (not counting each socket's own room)",
            rooms.clone(),
        );
        let traffic = engine.traffic();
        registry.register(
            "packets_received",
            "Engine.IO packets received from clients",
            traffic.packets_in.clone(),
        );
        registry.register(
            "packets_sent",
            "Engine.IO packets written to clients",
            traffic.packets_out.clone(),
        );
        registry.register(
            "bytes_received",
            "Bytes of packets received from clients",
            traffic.bytes_in.clone(),
        );
        registry.register(
            "bytes_sent",
            "Bytes of packets written to clients",
            traffic.bytes_out.clone(),
        );
        registry.register(
            "slow_consumers_closed",
            "Sessions closed because their outbound queue was full (the client did not read)",
            traffic.slow_consumers.clone(),
        );
        registry.register(
            "websocket_deflate_connections",
            "WebSocket connections that negotiated permessage-deflate ([engine] compression)",
            traffic.deflate_connections.clone(),
        );
        registry.register("emits", "Emits by source", emits.clone());
        registry.register(
            "limits_hit",
            "Client actions refused by a limit (event_rate, event_name, rooms_per_socket, namespaces_per_connection, connections_per_user, api_rate)",
            hub.limits().hits().clone(),
        );
        registry.register(
            "handshakes_refused_connections_per_ip",
            "Handshakes refused: the client address had limits.max_connections_per_ip open",
            traffic.refused_connections_per_ip.clone(),
        );
        registry.register(
            "handshakes_refused_connect_rate_per_ip",
            "Handshakes refused: the client address connected faster than limits.connect_rate_per_ip",
            traffic.refused_connect_rate_per_ip.clone(),
        );
        registry.register(
            "api_requests",
            "HTTP API requests answered, by status",
            api_requests.clone(),
        );
        registry.register(
            "sessions_by_parser",
            "Engine.IO sessions by the Socket.IO parser their first packet showed (json, msgpack)",
            hub.parser_counts().clone(),
        );
        registry.register(
            "broadcast_fanout_seconds",
            "Time for one broadcast to reach every recipient's queue",
            hub.fanout_histogram().clone(),
        );
        Arc::new(Self {
            engine,
            hub,
            started: Instant::now(),
            registry,
            connections,
            sockets,
            rooms,
            recovery_sessions,
            history_rooms,
            history_entries,
            recovery_stale_transports,
            recovery_attempts,
            volatile_dropped,
            last_state_given,
            last_state_rooms,
            access_refused,
            access_entries,
            emits,
            api_requests,
            cluster_connected,
            cluster_dropped,
            cluster_nodes_expired,
            cluster_nodes_up,
            cluster_received,
            draining,
            drain_left,
            flushers_io_uring,
            io_uring_sends,
            trace_exported,
            trace_dropped,
            cluster_shared_sessions_taken,
            proxy_calls,
            proxy_latency,
            webhook_events_sent,
            webhook_attempts_failed,
            webhook_retries,
            webhook_events_dropped,
            webhook_latency,
            tokens,
            tasks,
            tls_handshakes,
            tls_reloads,
            cluster_forwarded,
        })
    }

    pub fn count_emit(&self, source: &'static str) {
        self.emits.get_or_create(&SourceLabel { source }).inc();
    }

    pub fn count_proxy(&self, kind: &'static str, outcome: &'static str) {
        self.proxy_calls
            .get_or_create(&ProxyLabel { kind, outcome })
            .inc();
    }

    /// An answered proxy call: how long it took.
    pub fn observe_proxy(&self, kind: &'static str, took: std::time::Duration) {
        self.proxy_latency
            .get_or_create(&KindLabel { kind })
            .observe(took.as_secs_f64());
    }

    pub fn count_token(&self, outcome: &'static str) {
        self.tokens.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// The counters the TLS listener increments (shared with these families).
    pub fn tls_counters(&self) -> crate::tls::TlsCounters {
        let handshakes = |outcome| {
            self.tls_handshakes
                .get_or_create(&OutcomeLabel { outcome })
                .clone()
        };
        let reloads = |outcome| {
            self.tls_reloads
                .get_or_create(&OutcomeLabel { outcome })
                .clone()
        };
        crate::tls::TlsCounters {
            handshakes: handshakes("ok"),
            handshake_failures: handshakes("failed"),
            reloads: reloads("ok"),
            reload_failures: reloads("failed"),
        }
    }

    /// The counters request forwarding increments (shared with this family).
    pub fn forward_counters(&self) -> crate::forward::ForwardCounters {
        let counter = |outcome| {
            self.cluster_forwarded
                .get_or_create(&OutcomeLabel { outcome })
                .clone()
        };
        crate::forward::ForwardCounters {
            polling: counter("polling"),
            upgrades: counter("websocket"),
            unknown_node: counter("unknown_node"),
            unreachable: counter("unreachable"),
        }
    }

    /// The text exposition, with the current-state gauges read now.
    pub fn render(&self) -> String {
        let hub = &self.hub;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let alive = runtime.metrics().num_alive_tasks();
            self.tasks.set(i64::try_from(alive).unwrap_or(i64::MAX));
        }
        let (polling, websocket) = self.engine.sessions_by_transport();
        self.draining.set(i64::from(self.engine.is_draining()));
        self.flushers_io_uring
            .set(crate::engine::flushers_on_io_uring() as i64);
        let sends = crate::engine::io_uring_sends();
        self.io_uring_sends
            .inc_by(sends.saturating_sub(self.io_uring_sends.get()));
        let (exported, dropped) = crate::trace::counts();
        self.trace_exported.set(exported as i64);
        self.trace_dropped.set(dropped as i64);
        self.drain_left.set(self.engine.drain_left() as i64);
        self.connections
            .get_or_create(&TransportLabel {
                transport: "polling",
            })
            .set(polling as i64);
        self.connections
            .get_or_create(&TransportLabel {
                transport: "websocket",
            })
            .set(websocket as i64);
        for namespace in hub.namespaces() {
            let label = NamespaceLabel {
                namespace: namespace.name().to_owned(),
            };
            self.sockets
                .get_or_create(&label)
                .set(namespace.socket_count() as i64);
            let (rooms, entries) = namespace.history_size();
            if rooms > 0 {
                self.history_rooms.get_or_create(&label).set(rooms as i64);
                self.history_entries
                    .get_or_create(&label)
                    .set(entries as i64);
            }
            if namespace.recovers() {
                self.recovery_sessions
                    .get_or_create(&label)
                    .set(namespace.saved_sessions() as i64);
                let closed = self.recovery_stale_transports.get_or_create(&label);
                closed.inc_by(
                    namespace
                        .stale_transports_closed()
                        .saturating_sub(closed.get()),
                );
                let (recovered, missed) = namespace.recoveries();
                for (outcome, count) in [("recovered", recovered), ("missed", missed)] {
                    let counter = self.recovery_attempts.get_or_create(&RecoveryLabel {
                        namespace: namespace.name().to_owned(),
                        outcome,
                    });
                    counter.inc_by(count.saturating_sub(counter.get()));
                }
            }
            if let Some((rooms, given)) = namespace.last_state_figures() {
                let counter = self.last_state_given.get_or_create(&label);
                counter.inc_by(given.saturating_sub(counter.get()));
                (self.last_state_rooms.get_or_create(&label)).set(rooms as i64);
            }
            let dropped = namespace.volatile_dropped();
            if dropped > 0 {
                let counter = self.volatile_dropped.get_or_create(&label);
                counter.inc_by(dropped.saturating_sub(counter.get()));
            }
            self.rooms
                .get_or_create(&label)
                .set(namespace.shared_room_count() as i64);
        }
        let (blocked, revoked) = hub.access().refusals();
        for (reason, count) in [("blocked", blocked), ("token_revoked", revoked)] {
            let counter = self.access_refused.get_or_create(&ReasonLabel { reason });
            counter.inc_by(count.saturating_sub(counter.get()));
        }
        let (blocks, tokens, user_tokens) = hub.access().counts();
        for (kind, count) in [
            ("block", blocks),
            ("token", tokens),
            ("user_tokens", user_tokens),
        ] {
            (self.access_entries.get_or_create(&KindLabel { kind })).set(count as i64);
        }
        if let Some(cluster) = hub.cluster() {
            self.cluster_connected
                .set(i64::from(cluster.is_connected()));
            let counters = cluster.counters();
            let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.cluster_dropped.set(gauge(counters.dropped));
            self.cluster_nodes_expired
                .set(gauge(counters.nodes_expired));
            self.cluster_nodes_up.set(gauge(counters.nodes_up));
            self.cluster_received.set(gauge(counters.received));
            self.cluster_shared_sessions_taken
                .set(gauge(counters.shared_sessions_taken));
        }
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// How long the server has run.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// The figures `/api/stats` and the periodic stats line report.
    pub fn stats_snapshot(&self) -> Value {
        let (polling, websocket) = self.engine.sessions_by_transport();
        let namespaces: Vec<Value> = self
            .hub
            .namespaces()
            .iter()
            .map(|ns| {
                json!({
                    "name": ns.name(),
                    "sockets": ns.socket_count(),
                    "rooms": ns.shared_room_count(),
                    "recovery": ns.recovers(),
                    "saved_sessions": ns.saved_sessions(),
                })
            })
            .collect();
        let traffic = self.engine.traffic();
        json!({
            "connections": polling + websocket,
            "connections_by_transport": { "polling": polling, "websocket": websocket },
            "sockets": namespaces.iter().map(|n| n["sockets"].as_u64().unwrap_or(0)).sum::<u64>(),
            "rooms": namespaces.iter().map(|n| n["rooms"].as_u64().unwrap_or(0)).sum::<u64>(),
            "users": self.hub.presence().online_count(),
            "saved_sessions": namespaces.iter().map(|n| n["saved_sessions"].as_u64().unwrap_or(0)).sum::<u64>(),
            "namespaces": namespaces,
            "packets_in": traffic.packets_in.get(),
            "packets_out": traffic.packets_out.get(),
            "bytes_in": traffic.bytes_in.get(),
            "bytes_out": traffic.bytes_out.get(),
            "uptime_seconds": self.started.elapsed().as_secs(),
        })
    }
}
