//! API errors and the JSON body extractor. Every refusal is a 4xx with
//! `{"error": {"code", "message", "field"}}`, `field` naming what was wrong (`rooms[2]`,
//! `commands[1].event`) so a backend developer can fix the call without reading our code; an
//! operation the cluster could not take is a 503 of the same shape (the caller may retry).

use crate::error_code::ErrorCode;
use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::http::{BodyReadError, read_body};
use crate::hub::adapter::NotTaken;
use crate::hub::operations::{OpError, OpErrorKind};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.as_str(),
            message: message.into(),
            field: None,
        }
    }

    /// 400 about one field of the request.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: ErrorCode::InvalidField.as_str(),
            message: message.into(),
            field: Some(field.into()),
        }
    }

    pub fn body(&self) -> serde_json::Value {
        json!({ "error": { "code": self.code, "message": self.message, "field": self.field } })
    }
}

/// A hub operation's refusal, as the API answers it.
/// The code and message of a 503 for an operation the cluster could not take.
pub const CLUSTER_UNAVAILABLE: &str = ErrorCode::ClusterUnavailable.as_str();
pub const NOT_TAKEN_MESSAGE: &str = "Redis did not take the operation in time; nothing was \
     delivered or changed, retry later";

impl From<NotTaken> for ApiError {
    fn from(_: NotTaken) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ClusterUnavailable,
            NOT_TAKEN_MESSAGE,
        )
    }
}

impl From<OpError> for ApiError {
    fn from(error: OpError) -> Self {
        let status = match error.kind {
            OpErrorKind::Invalid => StatusCode::BAD_REQUEST,
            OpErrorKind::NotFound => StatusCode::NOT_FOUND,
        };
        Self {
            status,
            code: error.code,
            message: error.message,
            field: error.field,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// A JSON body: size-limited, parsed with the path of any bad field reported.
pub struct ApiJson<T>(pub T);

/// How a request body is read: its limit and how long it may take to arrive, put in the
/// request extensions by the router.
#[derive(Clone, Copy)]
pub struct BodyLimit {
    pub max: usize,
    pub read_timeout: std::time::Duration,
}

impl Default for BodyLimit {
    fn default() -> Self {
        Self {
            max: 1_000_000,
            read_timeout: std::time::Duration::from_secs(10),
        }
    }
}

impl BodyLimit {
    /// Reads a request's body within the limit and the time, or the refusal to answer.
    pub async fn read(self, request: Request<Body>) -> Result<bytes::Bytes, ApiError> {
        let (parts, body) = request.into_parts();
        read_body(&parts.headers, body, self.max, self.read_timeout)
            .await
            .map_err(|error| match error {
                BodyReadError::TooLarge => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::PayloadTooLarge,
                    format!("the request body is over the {}-byte limit", self.max),
                ),
                BodyReadError::TimedOut => ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    ErrorCode::BodyTimeout,
                    format!(
                        "the request body did not arrive within {:?} (server.body_read_timeout)",
                        self.read_timeout
                    ),
                ),
                BodyReadError::Aborted => ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BodyAborted,
                    "the request body ended before its declared length",
                ),
            })
    }
}

/// A request's body, within the router's [`BodyLimit`]. It is read as JSON whatever its
/// Content-Type: backends often omit it or send curl's form default.
async fn limited_body(request: Request<Body>) -> Result<bytes::Bytes, ApiError> {
    let limit = request
        .extensions()
        .get::<BodyLimit>()
        .copied()
        .unwrap_or_default();
    limit.read(request).await
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request<Body>, _: &S) -> Result<Self, ApiError> {
        parse_json(&limited_body(request).await?).map(ApiJson)
    }
}

/// A JSON request body that may be left out (an empty body is `T::default()`).
pub struct ApiJsonOrEmpty<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for ApiJsonOrEmpty<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request<Body>, _: &S) -> Result<Self, ApiError> {
        let bytes = limited_body(request).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        parse_json(&bytes).map(ApiJsonOrEmpty)
    }
}

/// Parses JSON, naming the field at fault.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(value) => deserializer.end().map(|()| value).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidJson,
                e.to_string(),
            )
        }),
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidJson,
                    format!("the body is not valid JSON: {inner}"),
                ));
            }
            let message = inner.to_string();
            // A missing field is reported by serde at its parent; name the field itself.
            let field = match message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
            {
                Some(missing) if path == "." => missing.to_owned(),
                Some(missing) => format!("{path}.{missing}"),
                None => path,
            };
            let message = message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .to_owned();
            Err(ApiError::field(field, message))
        }
    }
}
