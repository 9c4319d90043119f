//! The one HTTP client the server calls the application's backend with: JSON POSTs with a
//! timeout, the configured static headers and the headers forwarded from a client's opening
//! request. Every failure is a [`CallError`] that says whether trying again could help. With
//! tracing on, each call is a client span whose `traceparent` the backend receives.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::de::DeserializeOwned;

use crate::http::RequestInfo;
use crate::trace::{Kind, Span, SpanContext};

/// What a call is, for its span: a name, and the span it continues (a client's `traceparent`),
/// else the current task's, else none (a new trace).
#[derive(Debug, Clone, Copy)]
pub struct Traced {
    pub name: &'static str,
    pub parent: Option<SpanContext>,
}

impl Traced {
    pub fn named(name: &'static str) -> Self {
        Self { name, parent: None }
    }

    /// Continues the trace a client's opening request carried (`traceparent`), if any.
    pub fn from_client(name: &'static str, request: &RequestInfo) -> Self {
        let parent = request
            .headers
            .get("traceparent")
            .and_then(|value| value.to_str().ok())
            .and_then(SpanContext::from_traceparent);
        Self { name, parent }
    }
}

/// Why a call to the backend did not give the answer wanted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("the backend did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the backend: {0}")]
    Unreachable(String),
    #[error("the backend answered HTTP {status}")]
    Status { status: u16, body: Bytes },
    #[error("the backend's answer is not what was expected: {0}")]
    BadAnswer(String),
}

impl CallError {
    /// Whether the same call may succeed later (the backend down, slow or overloaded).
    pub fn retryable(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Unreachable(_) => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            Self::BadAnswer(_) => false,
        }
    }

    /// The outcome label of the call metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Unreachable(_) => "unreachable",
            Self::Status { .. } => "status",
            Self::BadAnswer(_) => "bad_answer",
        }
    }
}

/// Headers for the calls of one configured endpoint: its static headers, and the names of the
/// client's headers to pass on.
#[derive(Debug, Clone, Default)]
pub struct CallHeaders {
    fixed: HeaderMap,
    forwarded: Vec<HeaderName>,
}

impl CallHeaders {
    /// Checks and builds them; an error names the bad header.
    pub fn new(fixed: &BTreeMap<String, String>, forwarded: &[String]) -> Result<Self, String> {
        let mut map = HeaderMap::new();
        for (name, value) in fixed {
            let header = HeaderName::try_from(name.as_str())
                .map_err(|_| format!("{name:?} is not a header name"))?;
            let value = HeaderValue::try_from(value.as_str())
                .map_err(|_| format!("the value of header {name:?} is not a header value"))?;
            map.insert(header, value);
        }
        let forwarded = forwarded
            .iter()
            .map(|name| {
                HeaderName::try_from(name.to_ascii_lowercase())
                    .map_err(|_| format!("{name:?} is not a header name"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            fixed: map,
            forwarded,
        })
    }

    /// The static headers every call carries.
    pub fn fixed(&self) -> &HeaderMap {
        &self.fixed
    }

    /// The names of the client's headers passed on, for the session to keep them.
    pub fn forwarded(&self) -> &[HeaderName] {
        &self.forwarded
    }

    /// The forwarded headers a client's opening request had, as the call's JSON shows them.
    pub fn from_client(&self, request: &RequestInfo) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        for name in &self.forwarded {
            if let Some(value) = request.headers.get(name).and_then(|v| v.to_str().ok()) {
                out.insert(name.as_str().to_owned(), value.into());
            }
        }
        out
    }
}

/// Shared by every backend call of the server (its connections are pooled).
#[derive(Clone)]
pub struct BackendClient {
    http: reqwest::Client,
}

impl BackendClient {
    pub fn new() -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        Ok(Self { http })
    }

    /// POSTs `body` (JSON) and answers the status and body of a 2xx answer, with how long it
    /// took.
    pub async fn post(
        &self,
        traced: Traced,
        url: &str,
        timeout: Duration,
        headers: &HeaderMap,
        body: Vec<u8>,
    ) -> Result<(Bytes, Duration), CallError> {
        let mut span = Span::start(traced.name, Kind::Client, traced.parent);
        let mut headers = headers.clone();
        if let Some(span) = &mut span {
            span.set("http.request.method", "POST");
            span.set("url.full", url);
            if let Ok(value) = HeaderValue::try_from(span.context().traceparent()) {
                headers.insert(HeaderName::from_static("traceparent"), value);
            }
        }
        let outcome = self.send(url, timeout, headers, body).await;
        if let Some(span) = &mut span {
            match &outcome {
                Ok(_) => span.set("http.response.status_code", 200),
                Err(CallError::Status { status, .. }) => {
                    span.set("http.response.status_code", *status);
                    span.fail(format!("HTTP {status}"));
                }
                Err(error) => span.fail(error.to_string()),
            }
        }
        outcome
    }

    async fn send(
        &self,
        url: &str,
        timeout: Duration,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<(Bytes, Duration), CallError> {
        let started = Instant::now();
        let request = self
            .http
            .post(url)
            .timeout(timeout)
            .headers(headers)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body);
        let response = request.send().await.map_err(|e| classify(e, timeout))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| classify(e, timeout))?;
        if !status.is_success() {
            return Err(CallError::Status {
                status: status.as_u16(),
                body,
            });
        }
        Ok((body, started.elapsed()))
    }

    /// POSTs JSON and parses the JSON answer.
    pub async fn post_json<T: DeserializeOwned>(
        &self,
        traced: Traced,
        url: &str,
        timeout: Duration,
        headers: &HeaderMap,
        body: &impl serde::Serialize,
    ) -> Result<(T, Duration), CallError> {
        let body = serde_json::to_vec(body).map_err(|e| CallError::BadAnswer(e.to_string()))?;
        let (answer, took) = self.post(traced, url, timeout, headers, body).await?;
        let parsed =
            serde_json::from_slice(&answer).map_err(|e| CallError::BadAnswer(format!("{e}")))?;
        Ok((parsed, took))
    }
}

fn classify(error: reqwest::Error, timeout: Duration) -> CallError {
    if error.is_timeout() {
        CallError::Timeout(timeout)
    } else {
        CallError::Unreachable(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_a_later_try_can_fix_are_retryable() {
        assert!(CallError::Timeout(Duration::from_secs(1)).retryable());
        assert!(CallError::Unreachable("refused".into()).retryable());
        let status = |status| CallError::Status {
            status,
            body: Bytes::new(),
        };
        assert!(status(503).retryable());
        assert!(status(429).retryable());
        assert!(!status(400).retryable());
        assert!(!status(403).retryable());
        assert!(!CallError::BadAnswer("not json".into()).retryable());
    }

    #[test]
    fn bad_headers_are_named() {
        let fixed = BTreeMap::from([("bad header".to_owned(), "x".to_owned())]);
        assert!(
            CallHeaders::new(&fixed, &[])
                .unwrap_err()
                .contains("bad header")
        );
        let ok = CallHeaders::new(&BTreeMap::new(), &["Cookie".into()]).unwrap();
        assert_eq!(ok.forwarded()[0].as_str(), "cookie");
    }
}
