//! Cross-origin access for browsers on other origins: which origins may call us, the preflight
//! answer, and the headers added to every answer. Allowed origins are echoed with
//! `Access-Control-Allow-Credentials: true` (never `*`), so `withCredentials` clients work.

use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::config::CorsConfig;
use crate::http::HttpResponse;
use crate::pattern::glob_match;

/// Which origins may call the server from a browser.
#[derive(Debug, Clone, Default)]
pub enum CorsPolicy {
    /// No CORS headers at all (same-origin pages and non-browser clients only).
    #[default]
    Disabled,
    /// Any origin.
    AnyOrigin,
    /// Origins matching one of these patterns: exact (`https://app.example.com`) or with `*`
    /// standing for any run of characters (`http://localhost:*`, `https://*.example.com`).
    Origins(Vec<String>),
}

impl CorsPolicy {
    /// The policy `[cors]` describes: `["*"]` any origin, none: no CORS at all.
    pub fn from_settings(cors: &CorsConfig) -> Self {
        if cors.origins.iter().any(|o| o == "*") {
            Self::AnyOrigin
        } else if cors.origins.is_empty() {
            Self::Disabled
        } else {
            Self::Origins(cors.origins.clone())
        }
    }

    pub fn allows(&self, origin: &str) -> bool {
        match self {
            Self::Disabled => false,
            Self::AnyOrigin => true,
            Self::Origins(patterns) => patterns.iter().any(|p| glob_match(p, origin)),
        }
    }

    fn allowed_origin<'a>(&self, headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
        self.allowed(headers.get(header::ORIGIN)?)
    }

    /// The request's Origin, when it is allowed (to echo it in the answer).
    pub fn allowed<'a>(&self, origin: &'a HeaderValue) -> Option<&'a HeaderValue> {
        self.allows(origin.to_str().ok()?).then_some(origin)
    }

    /// The answer to a preflight request, if this is one.
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<HttpResponse> {
        if method != Method::OPTIONS || !headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return None;
        }
        let mut response = HttpResponse::default();
        *response.status_mut() = StatusCode::NO_CONTENT;
        if let Some(origin) = self.allowed_origin(headers) {
            let out = response.headers_mut();
            out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            out.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
            );
            if let Some(requested) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
                out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
            }
            out.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("86400"),
            );
            out.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        Some(response)
    }

    /// Adds the CORS headers to an answer, given the request's Origin header.
    pub fn decorate(&self, origin: Option<&HeaderValue>, response: &mut HttpResponse) {
        if let Some(origin) = origin.and_then(|origin| self.allowed(origin)) {
            let out = response.headers_mut();
            out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            out.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
}
