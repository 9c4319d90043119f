//! The listener: accepts TCP connections, serves HTTP/1.1 on them (with upgrades for WebSocket),
//! inside TLS when one is configured (`tls/`), applies CORS and routes each request by path to a mounted service (an Engine.IO endpoint, the
//! HTTP API, ...). Stops accepting when the shutdown future resolves.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::cors::CorsPolicy;
use crate::engine::{Engine, EngineHandler};
use crate::http::{HttpResponse, HttpService, RemoteAddr, ResponseFuture, response};
use crate::tls::Tls;

impl<H: EngineHandler> HttpService for Arc<Engine<H>> {
    fn call(&self, request: Request<Incoming>) -> ResponseFuture {
        let engine = self.clone();
        Box::pin(async move { engine.handle(request).await })
    }
}

struct Route {
    /// `/socket.io/` serves `/socket.io/` and `/socket.io` (and `/x` serves `/x/`).
    path: String,
    service: Arc<dyn HttpService>,
}

/// An HTTP server with path routes.
pub struct Server {
    routes: Vec<Route>,
    fallback: Option<Arc<dyn HttpService>>,
    cors: CorsPolicy,
    /// How long a client has to send a request's head (and to finish a TLS handshake).
    header_read_timeout: std::time::Duration,
    tls: Option<Arc<Tls>>,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            routes: Vec::new(),
            fallback: None,
            cors: CorsPolicy::default(),
            header_read_timeout: std::time::Duration::from_secs(10),
            tls: None,
        }
    }
}

impl Server {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `path` (exactly, with or without its trailing slash) with `service`.
    pub fn route(mut self, path: &str, service: impl HttpService) -> Self {
        self.routes.push(Route {
            path: path.to_owned(),
            service: Arc::new(service),
        });
        self
    }

    /// Serves every request no route matched.
    pub fn fallback(mut self, service: impl HttpService) -> Self {
        self.fallback = Some(Arc::new(service));
        self
    }

    pub fn cors(mut self, cors: CorsPolicy) -> Self {
        self.cors = cors;
        self
    }

    /// How long a client has to send a request's head before its connection is closed.
    pub fn header_read_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Serves every connection inside TLS.
    pub fn tls(mut self, tls: Arc<Tls>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Accepts connections until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        let header_read_timeout = self.header_read_timeout;
        let server = Arc::new(self);
        tokio::pin!(shutdown);
        loop {
            let (stream, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // Out of file descriptors, say: wait a moment rather than spin.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => return Ok(()),
            };
            let _ = stream.set_nodelay(true);
            let server = server.clone();
            // Plain and TLS connections are separate tasks: one task holding both would carry
            // the TLS stream's space on every plain connection while its request is served.
            let tls = server.tls.clone();
            let service = server.service(remote);
            match tls {
                None => {
                    let served = serve_http(TokioIo::new(stream), service, header_read_timeout);
                    tokio::spawn(served);
                }
                Some(tls) => {
                    tokio::spawn(async move {
                        if let Some(stream) = tls.handshake(stream, header_read_timeout).await {
                            serve_http(TokioIo::new(stream), service, header_read_timeout).await;
                        }
                    });
                }
            }
        }
    }

    /// The hyper service of one connection: routes each request, tagged with the peer's address.
    fn service(
        self: Arc<Self>,
        remote: std::net::SocketAddr,
    ) -> impl hyper::service::Service<
        Request<Incoming>,
        Response = HttpResponse,
        Error = std::convert::Infallible,
        Future: Send,
    > + Send
    + 'static {
        service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(RemoteAddr(remote));
            let server = self.clone();
            async move { Ok::<_, std::convert::Infallible>(server.dispatch(request).await) }
        })
    }

    async fn dispatch(&self, request: Request<Incoming>) -> HttpResponse {
        if let Some(preflight) = self.cors.preflight(request.method(), request.headers()) {
            return preflight;
        }
        // Only the Origin is needed afterwards (to answer CORS), not the whole header map.
        let origin = request.headers().get(http::header::ORIGIN).cloned();
        let path = request.uri().path();
        let route = self
            .routes
            .iter()
            .find(|route| route.path.trim_end_matches('/') == path.trim_end_matches('/'))
            .map(|route| route.service.clone())
            .or_else(|| self.fallback.clone());
        let mut response = match route {
            Some(service) => service.call(request).await,
            None => response(
                StatusCode::NOT_FOUND,
                "application/json",
                Bytes::from_static(
                    b"{\"error\":{\"code\":\"not_found\",\"message\":\"no such path\"}}",
                ),
            ),
        };
        self.cors.decorate(origin.as_ref(), &mut response);
        response
    }
}

/// HTTP/1.1 on one connection, upgrades allowed; a client that dribbles its request head
/// (slowloris) is cut off after `header_read_timeout`.
async fn serve_http<I, S>(io: I, service: S, header_read_timeout: std::time::Duration)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = http_body_util::Full<Bytes>>,
{
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(io, service)
        .with_upgrades()
        .await;
}
