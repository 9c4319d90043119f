//! Serving another node's sessions: in a cluster every Engine.IO session id starts with the id
//! of the node that holds it, so a polling request or a WebSocket upgrade that a round-robin load
//! balancer sent to the wrong node is passed on to the right one, and its answer passed back.
//! Polling requests are forwarded as HTTP requests (their bodies streamed through); an upgrade
//! becomes a tunnel, the client's upgraded connection spliced to the owner's.
//!
//! It knows nothing of Redis: where a node is comes from a lookup the app gives it (the cluster
//! adapter's). Requests whose session is here, or that another node already forwarded, go to the
//! engine untouched.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::metrics::counter::Counter;

use crate::http::{HttpResponse, HttpService, RemoteAddr, ResponseFuture, response};

/// Marks a request one node passed to another, so that it is never passed on again.
pub const FORWARDED_HEADER: &str = "x-switchboard-forwarded";
/// The owner's answer to a polling request is read whole, up to this size.
const ANSWER_MAX: usize = 64 * 1024 * 1024;
/// Connecting to another node gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where a node is: its `host:port` for a node id, or `None` when no live node has that id.
pub type NodeLookup =
    Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = Option<String>> + Send>> + Send + Sync>;

/// What forwarding counts (shared with the metrics' families).
#[derive(Clone, Debug, Default)]
pub struct ForwardCounters {
    /// Polling requests passed to their session's node.
    pub polling: Counter,
    /// WebSocket upgrades tunnelled to their session's node.
    pub upgrades: Counter,
    /// Requests for a node no longer in the cluster (answered "Session ID unknown").
    pub unknown_node: Counter,
    /// Requests whose node could not be reached (answered 502).
    pub unreachable: Counter,
}

/// The engine's path, served here for this node's sessions and passed on for the others'.
pub struct SessionForwarder {
    engine: Arc<dyn HttpService>,
    /// This node's id: the first characters of the session ids it gives.
    node_id: Arc<str>,
    /// How long a session id is past its node id (an Engine.IO id).
    id_len: usize,
    lookup: NodeLookup,
    client: Client<HttpConnector, Incoming>,
    counters: ForwardCounters,
}

impl SessionForwarder {
    /// Serves `engine`'s path for a node whose session ids are `node_id` followed by `id_len`
    /// characters.
    pub fn new(
        engine: impl HttpService,
        node_id: &str,
        id_len: usize,
        lookup: NodeLookup,
        counters: ForwardCounters,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Self {
            engine: Arc::new(engine),
            node_id: node_id.into(),
            id_len,
            lookup,
            client,
            counters,
        }
    }

    /// The node holding the session a request names, when that is not this one.
    fn owner_of(&self, request: &Request<Incoming>) -> Option<String> {
        if request.headers().contains_key(FORWARDED_HEADER) {
            return None;
        }
        let query = request.uri().query()?;
        let sid = form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "sid")
            .map(|(_, value)| value.into_owned())?;
        let node = sid.get(..sid.len().checked_sub(self.id_len)?)?;
        (!node.is_empty() && node != &*self.node_id).then(|| node.to_owned())
    }
}

impl HttpService for SessionForwarder {
    fn call(&self, request: Request<Incoming>) -> ResponseFuture {
        let Some(node) = self.owner_of(&request) else {
            return self.engine.call(request);
        };
        let lookup = self.lookup.clone();
        let client = self.client.clone();
        let counters = self.counters.clone();
        let node_id = self.node_id.clone();
        Box::pin(async move {
            let Some(address) = lookup(node.clone()).await else {
                counters.unknown_node.inc();
                return crate::engine::unknown_session_response();
            };
            let upgrade = is_upgrade(request.headers());
            match forward(&client, request, &address, &node_id, upgrade).await {
                Ok(answer) => {
                    if upgrade {
                        counters.upgrades.inc();
                    } else {
                        counters.polling.inc();
                    }
                    answer
                }
                Err(error) => {
                    counters.unreachable.inc();
                    tracing::warn!(%error, node, address, "cluster: cannot reach the node holding a session");
                    let body = serde_json::json!({
                        "code": 3,
                        "message": "the node holding this session cannot be reached",
                    });
                    response(
                        StatusCode::BAD_GATEWAY,
                        "application/json",
                        Bytes::from(body.to_string()),
                    )
                }
            }
        })
    }
}

/// Passes `request` to the node at `address` and gives back its answer; an upgrade's answer
/// comes with a task splicing the two upgraded connections.
async fn forward(
    client: &Client<HttpConnector, Incoming>,
    mut request: Request<Incoming>,
    address: &str,
    node_id: &str,
    upgrade: bool,
) -> Result<HttpResponse, String> {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str());
    *request.uri_mut() = format!("http://{address}{path}")
        .parse()
        .map_err(|e| format!("bad node address {address:?}: {e}"))?;
    let remote = request.extensions().get::<RemoteAddr>().map(|addr| addr.0);
    let client_side = upgrade.then(|| hyper::upgrade::on(&mut request));
    let headers = request.headers_mut();
    if !upgrade {
        strip_hop_by_hop(headers);
    }
    headers.remove(header::HOST);
    if let Some(remote) = remote {
        let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(earlier) => format!("{earlier}, {}", remote.ip()),
            None => remote.ip().to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
            headers.insert("x-forwarded-for", value);
        }
    }
    if let Ok(value) = HeaderValue::from_str(node_id) {
        headers.insert(FORWARDED_HEADER, value);
    }
    let mut answer = client.request(request).await.map_err(|e| e.to_string())?;
    let status = answer.status();
    let mut headers = std::mem::take(answer.headers_mut());
    // The CORS headers are this node's to give (the server adds them to every answer).
    let cors: Vec<_> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in cors {
        headers.remove(name);
    }
    if let (StatusCode::SWITCHING_PROTOCOLS, Some(client_side)) = (status, client_side) {
        let owner_side = hyper::upgrade::on(&mut answer);
        tokio::spawn(async move {
            let (Ok(client_side), Ok(owner_side)) = (client_side.await, owner_side.await) else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(
                &mut TokioIo::new(client_side),
                &mut TokioIo::new(owner_side),
            )
            .await;
        });
        return Ok(answer_with(status, headers, Bytes::new()));
    }
    strip_hop_by_hop(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    let body = Limited::new(answer.into_body(), ANSWER_MAX)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok(answer_with(status, headers, body))
}

fn answer_with(status: StatusCode, headers: HeaderMap, body: Bytes) -> HttpResponse {
    let mut answer = hyper::Response::new(Full::new(body));
    *answer.status_mut() = status;
    *answer.headers_mut() = headers;
    answer
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

/// Removes the headers that belong to one connection, not to the request.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}
