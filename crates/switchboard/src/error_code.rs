//! Every error code a client or a backend can read from Switchboard, in one catalogue: in
//! CONNECT refusals (`data.code`), in error acks (`{"error": {"code"}}`), in HTTP answers of the
//! API and the plain WebSocket endpoint. Codes a backend gives (the connect proxy's `code`) pass
//! through as they are and are not listed here. docs/configuration.md lists the same codes.

use std::fmt;

/// One client-visible error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A CONNECT without a token where one is required.
    AuthRequired,
    /// A token that does not verify (signature, audience, issuer, claims).
    InvalidToken,
    /// A token past its `exp`.
    TokenExpired,
    /// A refreshed token that names another user.
    UserMismatch,
    /// A user blocked through the API (`data.until`, `data.reason`).
    Blocked,
    /// A token revoked through the API (by its `jti`, or issued before its user's cut-off).
    TokenRevoked,
    /// Auth required on the plain WebSocket endpoint with none configured.
    AuthUnconfigured,
    /// The connect proxy admitted a plain WebSocket connection without naming a user.
    MissingUser,
    /// The connect proxy refused, and gave no code of its own.
    Forbidden,
    /// A room the socket may not join or read (a rule, presence queries).
    ForbiddenRoom,
    /// A room name that is not a string.
    InvalidRoom,
    /// A room name past `limits.room_name_max`.
    RoomNameTooLong,
    /// A join past `limits.max_rooms_per_socket`.
    TooManyRooms,
    /// A connection past a namespace's or an address's limit.
    TooManyConnections,
    /// A CONNECT past `limits.max_namespaces_per_connection`.
    TooManyNamespaces,
    /// An event name past `limits.event_name_max`.
    InvalidEvent,
    /// A client sending events faster than `[rate_limits]` allow.
    RateLimited,
    /// An event without an argument a rule reads.
    MissingField,
    /// An argument of the wrong type.
    InvalidType,
    /// The backend did not answer (the client may try again).
    BackendUnavailable,
    /// The event proxy's backlog is full.
    BackendBusy,
    /// The backend answered the event proxy with a 4xx.
    BackendRefused,
    /// The backend's answer was not understood.
    BackendError,
    /// An API request field with a wrong value (the answer names the field).
    InvalidField,
    /// An API request body that is not JSON.
    InvalidJson,
    /// An API request for a namespace the server does not have.
    UnknownNamespace,
    /// An API request without a valid key.
    Unauthorized,
    /// An API request body past the limit.
    PayloadTooLarge,
    /// A request body that did not arrive within `server.body_read_timeout` (408).
    BodyTimeout,
    /// A request body that ended before its declared length (400).
    BodyAborted,
    /// A history read in a namespace that keeps none (recovery off; 404).
    HistoryDisabled,
    /// An API path that does not exist.
    NotFound,
    /// The cluster's engine could not take the operation in time (503).
    ClusterUnavailable,
    /// A plain HTTP request to the plain WebSocket endpoint.
    NotWebsocket,
    /// A WebSocket upgrade request that is not valid.
    BadUpgrade,
}

impl ErrorCode {
    /// Every code, in the catalogue's order.
    pub const ALL: &[ErrorCode] = &[
        Self::AuthRequired,
        Self::InvalidToken,
        Self::TokenExpired,
        Self::UserMismatch,
        Self::Blocked,
        Self::TokenRevoked,
        Self::AuthUnconfigured,
        Self::MissingUser,
        Self::Forbidden,
        Self::ForbiddenRoom,
        Self::InvalidRoom,
        Self::RoomNameTooLong,
        Self::TooManyRooms,
        Self::TooManyConnections,
        Self::TooManyNamespaces,
        Self::InvalidEvent,
        Self::RateLimited,
        Self::MissingField,
        Self::InvalidType,
        Self::BackendUnavailable,
        Self::BackendBusy,
        Self::BackendRefused,
        Self::BackendError,
        Self::InvalidField,
        Self::InvalidJson,
        Self::UnknownNamespace,
        Self::Unauthorized,
        Self::PayloadTooLarge,
        Self::BodyTimeout,
        Self::BodyAborted,
        Self::HistoryDisabled,
        Self::NotFound,
        Self::ClusterUnavailable,
        Self::NotWebsocket,
        Self::BadUpgrade,
    ];

    /// The code as clients read it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AuthRequired => "auth_required",
            Self::InvalidToken => "invalid_token",
            Self::TokenExpired => "token_expired",
            Self::UserMismatch => "user_mismatch",
            Self::Blocked => "blocked",
            Self::TokenRevoked => "token_revoked",
            Self::AuthUnconfigured => "auth_unconfigured",
            Self::MissingUser => "missing_user",
            Self::Forbidden => "forbidden",
            Self::ForbiddenRoom => "forbidden_room",
            Self::InvalidRoom => "invalid_room",
            Self::RoomNameTooLong => "room_name_too_long",
            Self::TooManyRooms => "too_many_rooms",
            Self::TooManyConnections => "too_many_connections",
            Self::TooManyNamespaces => "too_many_namespaces",
            Self::InvalidEvent => "invalid_event",
            Self::RateLimited => "rate_limited",
            Self::MissingField => "missing_field",
            Self::InvalidType => "invalid_type",
            Self::BackendUnavailable => "backend_unavailable",
            Self::BackendBusy => "backend_busy",
            Self::BackendRefused => "backend_refused",
            Self::BackendError => "backend_error",
            Self::InvalidField => "invalid_field",
            Self::InvalidJson => "invalid_json",
            Self::UnknownNamespace => "unknown_namespace",
            Self::Unauthorized => "unauthorized",
            Self::PayloadTooLarge => "payload_too_large",
            Self::BodyTimeout => "body_timeout",
            Self::BodyAborted => "body_aborted",
            Self::HistoryDisabled => "history_disabled",
            Self::NotFound => "not_found",
            Self::ClusterUnavailable => "cluster_unavailable",
            Self::NotWebsocket => "not_websocket",
            Self::BadUpgrade => "bad_upgrade",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn every_code_is_distinct_snake_case_and_documented() {
        let mut seen = std::collections::HashSet::new();
        let docs = include_str!("../../../docs/configuration.md");
        for code in ErrorCode::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} twice");
            assert!(
                text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{text} is not snake_case"
            );
            assert!(
                docs.contains(&format!("`{text}`")),
                "{text} is not in docs/configuration.md"
            );
        }
    }
}
