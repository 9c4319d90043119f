//! The HTTP vocabulary every part shares, owned by the server: the response type, the remote
//! address the accept loop records, what an opening request carried (kept for a session's life:
//! auth, templates, a backend's connect proxy), and the service trait routes implement.
//! Its one piece of behaviour is [`read_body`], the single way a request body is read (the
//! polling transport, the API and configured routes), so that every body is bounded in size and
//! in time alike. The transports, the API and auth all speak it without reaching into one
//! another.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;

/// The body of every response the server gives.
pub type HttpResponse = Response<Full<Bytes>>;

/// A boxed response future.
pub type ResponseFuture = Pin<Box<dyn Future<Output = HttpResponse> + Send>>;

/// Anything the server can route requests to.
pub trait HttpService: Send + Sync + 'static {
    fn call(&self, request: Request<Incoming>) -> ResponseFuture;
}

impl<F, Fut> HttpService for F
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HttpResponse> + Send + 'static,
{
    fn call(&self, request: Request<Incoming>) -> ResponseFuture {
        Box::pin(self(request))
    }
}

/// Why a request body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyReadError {
    /// Over the limit: declared so in `Content-Length` (refused before any byte is read), or
    /// counted as it arrived.
    #[error("the request body is over the limit")]
    TooLarge,
    /// It did not arrive within the body read timeout.
    #[error("the request body did not arrive in time")]
    TimedOut,
    /// The connection failed or closed before the body ended.
    #[error("the request body ended early")]
    Aborted,
}

/// Reads a request's whole body: at most `limit` bytes (a larger declared `Content-Length` is
/// refused without keeping any of it), all of it within `timeout`. Without these a client that
/// declares a huge length and sends a byte would hold its connection, and a task, for ever.
///
/// A body refused as too large is refused at once, and read on (and dropped) meanwhile by a
/// task of its own, up to [`DISCARD_MAX`] bytes within [`DISCARD_TIME`]: a connection closed
/// with the client's bytes unread is reset, and the client, still sending, would see the reset
/// rather than the 413.
pub async fn read_body<B>(
    headers: &HeaderMap,
    body: B,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, BodyReadError>
where
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut body = body;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        tokio::spawn(discard(body));
        return Err(BodyReadError::TooLarge);
    }
    let mut collected = bytes::BytesMut::new();
    let read = tokio::time::timeout(timeout, async {
        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
            let Ok(data) = frame.map_err(|_| BodyReadError::Aborted)?.into_data() else {
                continue;
            };
            if collected.len() + data.len() > limit {
                return Err(BodyReadError::TooLarge);
            }
            collected.extend_from_slice(&data);
        }
        Ok(())
    })
    .await;
    match read {
        Err(_) => Err(BodyReadError::TimedOut),
        Ok(Ok(())) => Ok(collected.freeze()),
        Ok(Err(BodyReadError::TooLarge)) => {
            tokio::spawn(discard(body));
            Err(BodyReadError::TooLarge)
        }
        Ok(Err(error)) => Err(error),
    }
}

/// How much of a body refused as too large is read and dropped at most before the answer.
pub const DISCARD_MAX: usize = 8 * 1024 * 1024;

/// How long a body refused as too large is read on at most before the answer.
pub const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads and drops what is left of `body`, within [`DISCARD_MAX`] and [`DISCARD_TIME`].
async fn discard<B>(mut body: B)
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let mut dropped = 0;
    let _ = tokio::time::timeout(DISCARD_TIME, async {
        while dropped < DISCARD_MAX {
            match http_body_util::BodyExt::frame(&mut body).await {
                Some(Ok(frame)) => {
                    dropped += frame.data_ref().map_or(0, Bytes::len);
                }
                _ => return,
            }
        }
    })
    .await;
}

/// The remote address of a request, put in its extensions by the server's accept loop.
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

/// A response with a status, a content type and a body.
pub fn response(status: StatusCode, content_type: &str, body: Bytes) -> HttpResponse {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// Headers kept from the opening request, as a plain list: a session keeps only a few (see
/// [`KEPT_HEADERS`]), and a `HeaderMap` costs several times more per session for so few.
#[derive(Debug, Default, Clone)]
pub struct KeptHeaders(Box<[(HeaderName, HeaderValue)]>);

impl KeptHeaders {
    /// Keeps the [`KEPT_HEADERS`] of a request's headers.
    pub fn from_request(headers: &HeaderMap) -> Self {
        Self::from_request_with(headers, &[])
    }

    /// Keeps the [`KEPT_HEADERS`] and `extra` (headers a backend proxy passes on).
    pub fn from_request_with(headers: &HeaderMap, extra: &[HeaderName]) -> Self {
        let mut kept = Vec::new();
        for name in KEPT_HEADERS {
            for value in headers.get_all(name) {
                kept.push((HeaderName::from_static(name), value.clone()));
            }
        }
        for name in extra {
            if KEPT_HEADERS.contains(&name.as_str()) {
                continue;
            }
            for value in headers.get_all(name) {
                kept.push((name.clone(), value.clone()));
            }
        }
        Self(kept.into_boxed_slice())
    }

    /// The first value of a header.
    pub fn get(&self, name: impl AsRef<str>) -> Option<&HeaderValue> {
        self.get_all(name).next()
    }

    /// Every value of a header, in order.
    pub fn get_all(&self, name: impl AsRef<str>) -> impl Iterator<Item = &HeaderValue> {
        let name = name.as_ref().to_owned();
        self.0
            .iter()
            .filter(move |(key, _)| key.as_str().eq_ignore_ascii_case(&name))
            .map(|(_, value)| value)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.0.iter().map(|(name, value)| (name, value))
    }

    pub fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        let mut kept = std::mem::take(&mut self.0).into_vec();
        kept.retain(|(key, _)| *key != name);
        kept.push((name, value));
        self.0 = kept.into_boxed_slice();
    }
}

/// Whether a secret a request presented (an API key, a session's private id) is the expected
/// one, in a time that does not depend on where they differ.
pub fn same_secret(expected: &str, presented: &str) -> bool {
    expected.len() == presented.len()
        && expected
            .bytes()
            .zip(presented.bytes())
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
}

/// The parts of the opening HTTP request that the layers above may need (auth, templates).
#[derive(Debug, Default)]
pub struct RequestInfo {
    /// The application's query parameters (not the engine's own `EIO`, `transport`, `sid`, `t`).
    pub query: Box<[(String, String)]>,
    /// Only the headers worth keeping for the session's life (see [`KEPT_HEADERS`]).
    pub headers: KeptHeaders,
    pub remote_addr: Option<PeerAddr>,
}

/// A peer's address as a session keeps it: its IP and port, without what an IPv6
/// `SocketAddr` adds (flow info, scope id): 20 bytes instead of 32 in every session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr {
    ip: std::net::IpAddr,
    port: u16,
}

impl PeerAddr {
    pub fn ip(&self) -> std::net::IpAddr {
        self.ip
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(address: SocketAddr) -> Self {
        Self {
            ip: address.ip(),
            port: address.port(),
        }
    }
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        SocketAddr::new(self.ip, self.port).fmt(f)
    }
}

/// Headers kept from the opening request; the rest are dropped to keep sessions small.
pub const KEPT_HEADERS: [&str; 7] = [
    "authorization",
    "cookie",
    "origin",
    "traceparent",
    "user-agent",
    "x-forwarded-for",
    "x-real-ip",
];

impl RequestInfo {
    pub fn query_value(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}
