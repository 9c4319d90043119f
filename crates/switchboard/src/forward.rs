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
/// An idle connection to another node is kept this long: less than the time a node waits for
/// a request's head (10 s by default) before closing a connection.
const POOL_IDLE: Duration = Duration::from_secs(5);
/// Once one side of a tunnel has ended, the other has this long to finish.
const TUNNEL_LINGER: Duration = Duration::from_secs(5);

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
        connector.set_keepalive(Some(Duration::from_secs(30)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
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
        other_node(request.uri().query()?, &self.node_id, self.id_len)
    }
}

/// The node id a query's session id starts with (its last `sid`, as the engine reads it), when
/// it looks like one (as long as `own`, alphanumeric) and is not `own`.
fn other_node(query: &str, own: &str, id_len: usize) -> Option<String> {
    let (_, sid) = form_urlencoded::parse(query.as_bytes())
        .filter(|(key, _)| key == "sid")
        .last()?;
    let node = sid.get(..sid.len().checked_sub(id_len)?)?;
    let looks_like_a_node =
        node.len() == own.len() && node.bytes().all(|b| b.is_ascii_alphanumeric());
    (looks_like_a_node && node != own).then(|| node.to_owned())
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
    strip_hop_by_hop(headers, upgrade);
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
        .filter(|name| name.as_str().starts_with("access-control-") || *name == header::VARY)
        .cloned()
        .collect();
    for name in cors {
        headers.remove(name);
    }
    if let (StatusCode::SWITCHING_PROTOCOLS, Some(client_side)) = (status, client_side) {
        let owner_side = hyper::upgrade::on(&mut answer);
        tokio::spawn(async move {
            if let (Ok(client_side), Ok(owner_side)) = (client_side.await, owner_side.await) {
                splice(client_side, owner_side).await;
            }
        });
        return Ok(answer_with(status, headers, Bytes::new()));
    }
    strip_hop_by_hop(&mut headers, false);
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

/// Copies both ways between a client's upgraded connection and the owner's until one side
/// ends; the other then has [`TUNNEL_LINGER`] to finish (a client gone without a word must not
/// keep the tunnel open once the owner has closed the session).
async fn splice(client_side: hyper::upgrade::Upgraded, owner_side: hyper::upgrade::Upgraded) {
    use tokio::io::AsyncWriteExt;
    let (mut from_client, mut to_client) = tokio::io::split(TokioIo::new(client_side));
    let (mut from_owner, mut to_owner) = tokio::io::split(TokioIo::new(owner_side));
    let up = async {
        let _ = tokio::io::copy(&mut from_client, &mut to_owner).await;
        let _ = to_owner.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut from_owner, &mut to_client).await;
        let _ = to_client.shutdown().await;
    };
    tokio::pin!(up, down);
    tokio::select! {
        () = &mut up => { let _ = tokio::time::timeout(TUNNEL_LINGER, down).await; }
        () = &mut down => { let _ = tokio::time::timeout(TUNNEL_LINGER, up).await; }
    }
}

/// Removes the headers that belong to one connection, not to the request: those `Connection`
/// names, and the usual ones (but `Connection` and `Upgrade` on an upgrade, which asks for it).
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<header::HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| header::HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !(upgrade && *name == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [header::TE, header::TRAILER, header::PROXY_AUTHORIZATION] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    if !upgrade {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
        headers.remove(header::TRANSFER_ENCODING);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_id_names_its_node_when_it_is_another() {
        let id = "A".repeat(20);
        let query = |sid: &str| format!("EIO=4&transport=polling&sid={sid}");
        assert_eq!(
            other_node(&query(&format!("b2c3d4{id}")), "a1b2c3", 20).as_deref(),
            Some("b2c3d4")
        );
        // Its own, a plain Engine.IO id, a prefix of another length or with other characters.
        assert_eq!(
            other_node(&query(&format!("a1b2c3{id}")), "a1b2c3", 20),
            None
        );
        assert_eq!(other_node(&query(&id), "a1b2c3", 20), None);
        assert_eq!(other_node(&query(&format!("b2c3{id}")), "a1b2c3", 20), None);
        assert_eq!(
            other_node(&query(&format!("b2-c3_{id}")), "a1b2c3", 20),
            None
        );
        assert_eq!(other_node("EIO=4&transport=polling", "a1b2c3", 20), None);
        // Two sids: the last counts, as in the engine.
        let two = format!("sid=b2c3d4{id}&sid=a1b2c3{id}");
        assert_eq!(other_node(&two, "a1b2c3", 20), None);
    }

    #[test]
    fn hop_by_hop_headers_stay_behind_but_an_upgrade_keeps_what_asks_for_it() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-trace, Upgrade"),
        );
        headers.insert("x-trace", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::COOKIE, HeaderValue::from_static("a=b"));
        let mut upgrade = headers.clone();
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(
            headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["cookie"]
        );
        strip_hop_by_hop(&mut upgrade, true);
        let mut kept: Vec<_> = upgrade.keys().map(|k| k.as_str()).collect();
        kept.sort();
        assert_eq!(kept, ["connection", "cookie", "upgrade"]);
    }
}
