//! The API's blocking and revocation: `POST /api/users/{user}/block` (`until` or `duration`,
//! `reason`), `DELETE /api/users/{user}/block`, `GET /api/blocks`, `POST /api/tokens/revoke`
//! (by `jti`, or by `user` and `issued_before`), `POST /api/tokens/unrevoke`,
//! `GET /api/tokens/revoked`. Each change runs `Hub::change_access`, on every node; an entry
//! lasts until its end, at most `[api] access_ttl` (the default end too).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiJson, ApiJsonOrEmpty, ApiResult, AppState};
use crate::clock::now_millis;
use crate::hub::access::{AccessChange, AccessEntry, AccessKey};
use crate::hub::operations::{MAX_NAME_BYTES, OpError, UserId};

/// When an entry ends: at `until` (Unix ms) or after `duration` ("15m", or seconds).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ending {
    #[serde(default)]
    until: Option<u64>,
    #[serde(default)]
    duration: Option<Value>,
}

impl Ending {
    /// The end (Unix ms): the one asked for, at most `longest` from now (the default).
    fn resolve(&self, longest: Duration) -> Result<u64, OpError> {
        let now = now_millis();
        let cap = now.saturating_add(longest.as_millis() as u64);
        let end = match (self.until, &self.duration) {
            (Some(_), Some(_)) => {
                return Err(OpError::field(
                    "duration",
                    "give until or duration, not both",
                ));
            }
            (Some(until), None) if until <= now => {
                return Err(OpError::field(
                    "until",
                    "until must be in the future (Unix milliseconds)",
                ));
            }
            (Some(until), None) => until,
            (None, Some(duration)) => {
                let length = match duration {
                    Value::Number(seconds) => seconds
                        .as_f64()
                        .and_then(|s| Duration::try_from_secs_f64(s).ok()),
                    Value::String(text) => crate::config::parse_duration(text).ok(),
                    _ => None,
                }
                .filter(|length| !length.is_zero())
                .ok_or_else(|| {
                    OpError::field(
                        "duration",
                        "duration is a positive number of seconds or a text like \"15m\"",
                    )
                })?;
                now.saturating_add(length.min(longest).as_millis() as u64)
            }
            (None, None) => cap,
        };
        Ok(end.min(cap))
    }
}

fn check_name(field: &str, name: &str) -> Result<(), OpError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(OpError::field(
            field,
            format!("{field} must be 1 to {MAX_NAME_BYTES} bytes"),
        ));
    }
    Ok(())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BlockRequest {
    #[serde(flatten)]
    ending: Ending,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /api/users/{user}/block`: the user's sockets are disconnected on every node and their
/// connects refused until the end.
pub(super) async fn block(
    State(state): State<Arc<AppState>>,
    Path(user): Path<String>,
    ApiJsonOrEmpty(request): ApiJsonOrEmpty<BlockRequest>,
) -> ApiResult {
    check_name("user", &user)?;
    if request.reason.as_ref().is_some_and(|r| r.len() > 1024) {
        return Err(OpError::field("reason", "reason is at most 1024 bytes").into());
    }
    let until = request.ending.resolve(state.config.api.access_ttl.0)?;
    let entry = AccessEntry::Block {
        user,
        until,
        reason: request.reason,
    };
    add(&state, entry, "blocked").await
}

/// Puts `entry` in force on every node and answers it under `answer_as`.
async fn add(state: &AppState, entry: AccessEntry, answer_as: &str) -> ApiResult {
    state
        .hub
        .change_access(AccessChange::Add {
            entry: entry.clone(),
        })
        .await?;
    Ok(axum::Json(json!({ answer_as: entry })))
}

/// Lifts the entry under `key` on every node; answers under `answer_as` whether there was one.
async fn remove(state: &AppState, key: AccessKey, answer_as: &str) -> ApiResult {
    let was = state.hub.access().get(&key).is_some();
    state
        .hub
        .change_access(AccessChange::Remove { key })
        .await?;
    Ok(axum::Json(json!({ answer_as: was })))
}

/// `DELETE /api/users/{user}/block`.
pub(super) async fn unblock(
    State(state): State<Arc<AppState>>,
    Path(user): Path<String>,
) -> ApiResult {
    check_name("user", &user)?;
    remove(&state, AccessKey::Block { user }, "unblocked").await
}

/// `GET /api/blocks`.
pub(super) async fn blocks(State(state): State<Arc<AppState>>) -> ApiResult {
    let blocked: Vec<AccessEntry> = (state.hub.access().entries().into_iter())
        .filter(|entry| matches!(entry, AccessEntry::Block { .. }))
        .collect();
    Ok(axum::Json(json!({ "blocked": blocked })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RevokeRequest {
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    user: Option<UserId>,
    /// Unix seconds (as `iat`); now by default.
    #[serde(default)]
    issued_before: Option<u64>,
    #[serde(flatten)]
    ending: Ending,
}

/// Which entry a revoke or unrevoke request names.
fn revoked_key(jti: &Option<String>, user: &Option<UserId>) -> Result<AccessKey, OpError> {
    match (jti, user) {
        (Some(jti), None) => {
            check_name("jti", jti)?;
            Ok(AccessKey::Token { jti: jti.clone() })
        }
        (None, Some(user)) => {
            let user = user.as_string();
            check_name("user", &user)?;
            Ok(AccessKey::UserTokens { user })
        }
        (Some(_), Some(_)) => Err(OpError::field("user", "give jti or user, not both")),
        (None, None) => Err(OpError::field(
            "jti",
            "give jti (one token) or user (their tokens issued before issued_before)",
        )),
    }
}

/// `POST /api/tokens/revoke`: the token (or the user's tokens issued before the cut-off) no
/// longer connects, refreshes or recovers; sockets admitted with it are disconnected.
pub(super) async fn revoke(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<RevokeRequest>,
) -> ApiResult {
    let key = revoked_key(&request.jti, &request.user)?;
    let until = request.ending.resolve(state.config.api.access_ttl.0)?;
    let entry = match (key, request.issued_before) {
        (AccessKey::UserTokens { user }, issued_before) => AccessEntry::UserTokens {
            user,
            // Every token issued before this second (iat has whole seconds): a token the
            // backend mints right after revoking the old ones still connects.
            issued_before: issued_before.unwrap_or_else(|| now_millis() / 1000),
            until,
        },
        (_, Some(_)) => {
            return Err(OpError::field(
                "issued_before",
                "issued_before goes with user, not with jti",
            )
            .into());
        }
        (_, None) => AccessEntry::Token {
            jti: request.jti.unwrap_or_default(),
            until,
        },
    };
    add(&state, entry, "revoked").await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UnrevokeRequest {
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    user: Option<UserId>,
}

/// `POST /api/tokens/unrevoke`.
pub(super) async fn unrevoke(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<UnrevokeRequest>,
) -> ApiResult {
    let key = revoked_key(&request.jti, &request.user)?;
    remove(&state, key, "unrevoked").await
}

/// `GET /api/tokens/revoked`.
pub(super) async fn revoked(State(state): State<Arc<AppState>>) -> ApiResult {
    let revoked: Vec<AccessEntry> = (state.hub.access().entries().into_iter())
        .filter(|entry| !matches!(entry, AccessEntry::Block { .. }))
        .collect();
    Ok(axum::Json(json!({ "revoked": revoked })))
}
