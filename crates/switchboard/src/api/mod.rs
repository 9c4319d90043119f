//! The HTTP side for backends and operators: the JSON API under `/api/` (emit, batch, join,
//! leave, disconnect, rooms, stats, its OpenAPI document), and `/`, `/health`, `/ready`,
//! `/metrics`, and the configured HTTP routes (`routes.rs`). API calls run the same hub
//! operations as client events (`hub::operations`, `hub::reads`); the API never reaches into the
//! transports: it speaks to the hub, the metrics and the server's HTTP types (`crate::http`).
//!
//! Auth: `Authorization: Bearer <key>` when keys are configured; with none, only loopback callers.

mod access;
mod error;
mod routes;

use crate::error_code::ErrorCode;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};
use tower::ServiceExt;

pub use error::{ApiError, ApiJson, ApiJsonOrEmpty, BodyLimit, parse_json};

use crate::config::Config;
use crate::http::{HttpResponse, HttpService, RemoteAddr, ResponseFuture};
use crate::hub::Hub;
use crate::hub::operations::{
    self, BatchRequest, DisconnectRequest, EmitRequest, MembershipRequest, Prepared,
};
use crate::hub::reads::{self, Question};
use crate::metrics::{Metrics, StatusLabel};
use crate::rate::{Rate, Tokens};
use crate::rules::CompiledRoute;
use crate::trace::{Kind, Span, SpanContext};

/// The OpenAPI 3.1 description of the API, kept in the repository beside this file.
pub const OPENAPI: &str = include_str!("openapi.json");

/// What every HTTP handler can reach.
pub struct AppState {
    pub hub: Arc<Hub>,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// False while the server drains for shutdown.
    pub ready: AtomicBool,
    /// `[rate_limits] api`: a bucket per API key (per caller address with no keys).
    api_rate: Option<(Rate, Mutex<HashMap<String, Tokens>>)>,
}

impl AppState {
    pub fn new(hub: Arc<Hub>, metrics: Arc<Metrics>, config: Arc<Config>) -> Arc<Self> {
        let api_rate = config.rate_limits.api.map(|bucket| {
            let rate = Rate {
                per_second: bucket.rate,
                burst: bucket.burst,
            };
            (rate, Mutex::new(HashMap::new()))
        });
        Arc::new(Self {
            hub,
            config,
            metrics,
            ready: AtomicBool::new(true),
            api_rate,
        })
    }

    /// Takes a request's token from its caller's bucket; the seconds to wait when there is none.
    fn take_api_token(&self, caller: &str) -> Result<(), f64> {
        let Some((rate, buckets)) = &self.api_rate else {
            return Ok(());
        };
        let now = Instant::now();
        let mut buckets = buckets.lock();
        if buckets.len() > 10_000 {
            buckets.retain(|_, tokens| !tokens.is_full_by(*rate, now));
        }
        let tokens = buckets
            .entry(caller.to_owned())
            .or_insert_with(|| Tokens::full(*rate, now));
        if tokens.take(*rate, now) {
            Ok(())
        } else {
            Err(tokens.wait_secs(*rate))
        }
    }
}

/// A server span for an API call or a configured route (tracing on), continuing the caller's
/// `traceparent`; what the call does (the broadcast, the cluster publish) runs inside it.
async fn traced(request: Request, next: Next) -> Response {
    if !crate::trace::enabled() {
        return next.run(request).await;
    }
    let parent = request
        .headers()
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .and_then(SpanContext::from_traceparent);
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(
            || request.uri().path().to_owned(),
            |p| p.as_str().to_owned(),
        );
    let method = request.method().as_str().to_owned();
    let mut span = Span::start(format!("{method} {route}"), Kind::Server, parent);
    if let Some(span) = &mut span {
        span.set("http.request.method", method);
        span.set("http.route", route);
    }
    let context = span.as_ref().map(Span::context);
    let response = crate::trace::in_span(context, next.run(request)).await;
    if let Some(span) = &mut span {
        let status = response.status().as_u16();
        span.set("http.response.status_code", status);
        if status >= 500 {
            span.fail(format!("HTTP {status}"));
        }
    }
    response
}

/// Builds the router, with the configured HTTP routes.
pub fn router(state: Arc<AppState>, routes: &[CompiledRoute]) -> Router {
    let mut app = Router::new()
        .route("/", get(root))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics));
    if state.config.api.enabled {
        let api = Router::new()
            .route("/api/emit", post(emit))
            .route("/api/batch", post(batch))
            .route("/api/join", post(join))
            .route("/api/leave", post(leave))
            .route("/api/disconnect", post(disconnect))
            .route("/api/rooms", get(rooms))
            .route("/api/rooms/{room}", get(room))
            .route("/api/rooms/{room}/last", get(room_last))
            .route("/api/stats", get(stats))
            .route("/api/users/{user}", get(user))
            .route(
                "/api/users/{user}/block",
                post(access::block).delete(access::unblock),
            )
            .route("/api/blocks", get(access::blocks))
            .route("/api/tokens/revoke", post(access::revoke))
            .route("/api/tokens/unrevoke", post(access::unrevoke))
            .route("/api/tokens/revoked", get(access::revoked))
            .route("/api/presence/{room}", get(room_presence))
            .route("/api/history", get(history_everyone))
            .route("/api/history/{room}", get(history_room))
            .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
            .route_layer(middleware::from_fn(traced));
        app = app.merge(api).route("/api/openapi.json", get(openapi));
    }
    if state.config.console.enabled {
        app = app
            .route("/console", get(console_page))
            .route("/console/", get(console_page))
            .route("/console/{asset}", get(console_asset));
    }
    let mut configured = routes::router(routes, &state);
    if !routes.is_empty() {
        configured = configured.route_layer(middleware::from_fn(traced));
    }
    app.merge(configured)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(axum::Extension(BodyLimit {
            max: state.config.limits.api_max_body.0,
            read_timeout: state.config.server.body_read_timeout.0,
        }))
        .with_state(state)
}

/// The router as a service of our HTTP server (its fallback, after the Socket.IO path).
pub struct ApiService(pub Router);

impl HttpService for ApiService {
    fn call(&self, request: hyper::Request<Incoming>) -> ResponseFuture {
        let router = self.0.clone();
        Box::pin(async move {
            let response = match router.oneshot(request.map(axum::body::Body::new)).await {
                Ok(response) => response,
                Err(infallible) => match infallible {},
            };
            let (parts, body) = response.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|collected| collected.to_bytes())
                .unwrap_or_default();
            HttpResponse::from_parts(parts, Full::new(bytes))
        })
    }
}

/// The API key a request presents (`Authorization: Bearer <key>`), or "".
fn presented_key(request: &Request) -> &str {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

/// Applies the API rate limit, then requires the API key (or, with none configured, a loopback
/// caller).
pub async fn authorize(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let keys = &state.config.api.keys;
    let caller = if keys.is_empty() {
        request
            .extensions()
            .get::<RemoteAddr>()
            .map(|addr| addr.0.ip().to_string())
            .unwrap_or_default()
    } else {
        presented_key(&request).to_owned()
    };
    if let Err(wait) = state.take_api_token(&caller) {
        state.hub.limits().hit("api_rate");
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            "too many API requests for this key; slow down (see Retry-After)",
        )
        .into_response();
        if let Ok(value) = header::HeaderValue::from_str(&(wait.ceil() as u64).max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    if keys.is_empty() {
        let loopback = request
            .extensions()
            .get::<RemoteAddr>()
            .is_some_and(|addr| addr.0.ip().is_loopback());
        if !loopback {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "no API key is configured, so the API answers loopback callers only \
                 (set [api] keys or SWITCHBOARD_API_KEYS)",
            )
            .into_response();
        }
    } else {
        let presented = presented_key(&request);
        if !keys
            .iter()
            .any(|key| crate::http::same_secret(key, presented))
        {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "send a configured API key as 'Authorization: Bearer <key>'",
            )
            .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return response;
        }
    }
    next.run(request).await
}

async fn count_requests(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let is_api = request.uri().path().starts_with("/api/");
    let response = next.run(request).await;
    if is_api {
        state
            .metrics
            .api_requests
            .get_or_create(&StatusLabel {
                status: response.status().as_u16(),
            })
            .inc();
    }
    response
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such path")
}

type ApiResult = Result<axum::Json<Value>, ApiError>;

/// Runs an operation and answers once the cluster has taken it (503 when it could not).
async fn run_taken(state: &AppState, prepared: Prepared) -> Result<Value, ApiError> {
    let is_emit = prepared.is_emit();
    let result = prepared.run_taken().await?;
    if is_emit {
        state.metrics.count_emit("api");
    }
    Ok(result)
}

async fn emit(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<EmitRequest>,
) -> ApiResult {
    let mut result = run_taken(&state, request.prepare(&state.hub)?).await?;
    let mut answer = json!({ "reached": result["reached"].take() });
    if let Some(offset) = result.get_mut("offset") {
        answer["offset"] = offset.take();
    }
    Ok(axum::Json(answer))
}

async fn batch(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<BatchRequest>,
) -> ApiResult {
    let prepared = request.prepare(&state.hub)?;
    let mut results = Vec::with_capacity(prepared.len());
    // In order, each taken before the next is given: a command the cluster could not take
    // stops the batch there (the answer names it; the commands before it were carried out).
    for (index, op) in prepared.into_iter().enumerate() {
        match run_taken(&state, op).await {
            Ok(result) => results.push(result),
            Err(mut error) => {
                error.field = Some(format!("commands[{index}]"));
                error.message = format!(
                    "{} (commands before commands[{index}] were carried out)",
                    error.message
                );
                return Err(error);
            }
        }
    }
    Ok(axum::Json(json!({ "results": results })))
}

async fn join(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<MembershipRequest>,
) -> ApiResult {
    let mut result = run_taken(&state, request.prepare_join(&state.hub)?).await?;
    Ok(axum::Json(json!({ "affected": result["affected"].take() })))
}

async fn leave(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<MembershipRequest>,
) -> ApiResult {
    let mut result = run_taken(&state, request.prepare_leave(&state.hub)?).await?;
    Ok(axum::Json(json!({ "affected": result["affected"].take() })))
}

async fn disconnect(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<DisconnectRequest>,
) -> ApiResult {
    let mut result = run_taken(&state, request.prepare(&state.hub)?).await?;
    Ok(axum::Json(
        json!({ "disconnected": result["disconnected"].take() }),
    ))
}

#[derive(Deserialize)]
struct NamespaceQuery {
    namespace: Option<String>,
}

async fn rooms(
    State(state): State<Arc<AppState>>,
    Query(query): Query<NamespaceQuery>,
) -> ApiResult {
    let namespace = operations::namespace(&state.hub, query.namespace.as_deref())?;
    let mine = reads::local_rooms(&namespace);
    let question = Question::Rooms {
        namespace: namespace.name().to_owned(),
    };
    let rooms = reads::merge_rooms(mine, &reads::others(&state.hub, question).await);
    Ok(axum::Json(
        json!({ "namespace": namespace.name(), "rooms": rooms }),
    ))
}

/// `GET /api/rooms/{room}/last`: what a socket joining the room is given (`[[history]]
/// on_join`), from this node or the cluster's engine.
async fn room_last(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    Query(query): Query<NamespaceQuery>,
) -> ApiResult {
    let namespace = operations::namespace(&state.hub, query.namespace.as_deref())?;
    let events: Vec<Value> = (namespace.last_events(&room).await.into_iter())
        .map(|event| {
            let mut shown = json!({ "event": event.event, "args": event.args, "at": event.at });
            if let Some(seq) = event.seq {
                shown["offset"] = crate::hub::offset_text(seq).into();
            }
            shown
        })
        .collect();
    Ok(axum::Json(json!({
        "namespace": namespace.name(),
        "room": room,
        "events": events,
    })))
}

async fn room(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    Query(query): Query<NamespaceQuery>,
) -> ApiResult {
    let namespace = operations::namespace(&state.hub, query.namespace.as_deref())?;
    let mine = reads::local_room_members(&namespace, &room);
    let question = Question::Room {
        namespace: namespace.name().to_owned(),
        room: room.clone(),
    };
    let sockets = reads::merge_members(mine, &reads::others(&state.hub, question).await);
    Ok(axum::Json(json!({
        "namespace": namespace.name(),
        "room": room,
        "size": sockets.len(),
        "sockets": sockets,
    })))
}

#[derive(Deserialize)]
struct HistoryQuery {
    namespace: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
}

async fn history_everyone(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HistoryQuery>,
) -> ApiResult {
    history(&state, None, query)
}

async fn history_room(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> ApiResult {
    history(&state, Some(room), query)
}

/// The events stored for a room (recovery's history): for backends, and for clients that come
/// back after the recovery window.
fn history(state: &AppState, room: Option<String>, query: HistoryQuery) -> ApiResult {
    let namespace = operations::namespace(&state.hub, query.namespace.as_deref())?;
    let since = match query.since.as_deref() {
        None | Some("") => 0,
        Some(text) => crate::hub::parse_offset(text).ok_or_else(|| {
            ApiError::field(
                "since",
                "an offset is a number or a stream entry id (<ms>-<n>), as events carry it",
            )
        })?,
    };
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let Some(page) = namespace.history(room.as_deref(), since, limit) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::HistoryDisabled,
            format!(
                "namespace {:?} does not keep history (recovery is off)",
                namespace.name()
            ),
        ));
    };
    let events = reads::history_events(&page);
    Ok(axum::Json(json!({
        "namespace": namespace.name(),
        "room": room,
        "events": events,
        "complete": page.complete,
        "latest_offset": crate::hub::offset_text(page.latest_seq),
    })))
}

async fn user(State(state): State<Arc<AppState>>, Path(user): Path<String>) -> axum::Json<Value> {
    let (online, connections) = state.hub.presence().user(&user);
    let question = Question::User { user: user.clone() };
    let answers = reads::others(&state.hub, question).await;
    let (online, connections) = reads::merge_user(online, connections, &answers);
    axum::Json(json!({ "user": user, "online": online, "connections": connections }))
}

async fn room_presence(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    Query(query): Query<NamespaceQuery>,
) -> ApiResult {
    let namespace = operations::namespace(&state.hub, query.namespace.as_deref())?;
    let mine = reads::room_users(&namespace, &room);
    let question = Question::RoomUsers {
        namespace: namespace.name().to_owned(),
        room: room.clone(),
    };
    let mut answer = reads::merge_room_users(mine, &reads::others(&state.hub, question).await);
    answer["namespace"] = json!(namespace.name());
    Ok(axum::Json(answer))
}

async fn stats(State(state): State<Arc<AppState>>) -> axum::Json<Value> {
    let mut stats = state.metrics.stats_snapshot();
    if state.hub.cluster().is_some() {
        let answers = reads::others(&state.hub, Question::Stats).await;
        stats["cluster"] = reads::cluster_totals(&state.hub, &stats, &answers);
    }
    axum::Json(stats)
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        Bytes::from_static(OPENAPI.as_bytes()),
    )
        .into_response()
}

async fn root(State(state): State<Arc<AppState>>) -> axum::Json<Value> {
    let stats = state.metrics.stats_snapshot();
    axum::Json(json!({
        "name": "switchboard",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": stats["uptime_seconds"],
        "connections": stats["connections"],
        "sockets": stats["sockets"],
        "path": state.config.server.path,
    }))
}

/// The web console: a page, its stylesheet, its script and our small Socket.IO client, all
/// embedded in the binary (no CDN, no build step).
async fn console_page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("console/index.html"),
    )
        .into_response()
}

async fn console_asset(Path(asset): Path<String>) -> Response {
    let (content_type, body) = match asset.as_str() {
        "console.js" => (
            "text/javascript; charset=utf-8",
            include_str!("console/console.js"),
        ),
        "sio-client.js" => (
            "text/javascript; charset=utf-8",
            include_str!("console/sio-client.js"),
        ),
        "console.css" => (
            "text/css; charset=utf-8",
            include_str!("console/console.css"),
        ),
        _ => return not_found().await.into_response(),
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn health(State(state): State<Arc<AppState>>) -> axum::Json<Value> {
    match state.hub.cluster() {
        Some(cluster) => axum::Json(json!({
            "status": "ok",
            "cluster": { "redis": if cluster.is_connected() { "connected" } else { "disconnected" } },
        })),
        None => axum::Json(json!({ "status": "ok" })),
    }
}

/// Ready to take clients: not draining, and when clustered, linked to the other nodes (a node
/// cut off from Redis would silently miss their broadcasts).
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let not_ready = |reason: &str| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "ready": false, "reason": reason })),
        )
            .into_response()
    };
    if !state.ready.load(Ordering::Acquire) {
        return not_ready("shutting down");
    }
    if state.hub.cluster().is_some_and(|c| !c.is_connected()) {
        return not_ready("not linked to the cluster's engine, or not reading its log yet");
    }
    axum::Json(json!({ "ready": true })).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = state.metrics.render();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
