//! Who may not connect: users blocked until a time, and tokens revoked by their id (`jti`) or
//! by their user and issue time (`iat` before a cut-off, e.g. a password change). The
//! [`AccessList`] is what one node knows; every fresh connect, recovery and token refresh is
//! checked against it (the socket data keys [`TOKEN_ID_KEY`] and [`TOKEN_ISSUED_KEY`] say which
//! token a socket was admitted with). Changes come through `Hub::change_access` (the HTTP API),
//! which disconnects the sockets a new entry refuses and hands the change to the cluster, whose
//! engine keeps the list for the other nodes, the ones that start later and the ones that come
//! back after an outage. Every entry has an end (`until`): nothing is kept for ever.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::event::ConnectError;
use crate::clock::now_millis;
use crate::error_code::ErrorCode;

/// The socket data key of the `jti` of the token a socket was admitted with.
pub const TOKEN_ID_KEY: &str = "_tokenJti";
/// The socket data key of the `iat` (Unix seconds; 0 when the token has none) of the token a
/// socket was admitted with: present on every socket admitted with a token.
pub const TOKEN_ISSUED_KEY: &str = "_tokenIat";

/// An entry changed on this node less than this long ago is kept when a resync with the
/// cluster's engine does not find it (its write may still be on its way).
const RESYNC_GRACE: Duration = Duration::from_secs(10);

/// One thing the list refuses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AccessEntry {
    /// `user`'s sockets are disconnected and their connects refused until `until` (Unix ms).
    Block {
        user: String,
        until: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The token whose `jti` this is no longer connects, refreshes or recovers.
    Token { jti: String, until: u64 },
    /// `user`'s tokens issued before `issued_before` (Unix seconds, compared with `iat`; a
    /// token without `iat` counts as issued before) no longer connect, refresh or recover.
    UserTokens {
        user: String,
        issued_before: u64,
        until: u64,
    },
}

/// What names an entry (a second entry with the same key replaces the first).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AccessKey {
    Block { user: String },
    Token { jti: String },
    UserTokens { user: String },
}

/// A change of the list, as the cluster carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum AccessChange {
    Add { entry: AccessEntry },
    Remove { key: AccessKey },
}

impl AccessEntry {
    pub fn key(&self) -> AccessKey {
        match self {
            Self::Block { user, .. } => AccessKey::Block { user: user.clone() },
            Self::Token { jti, .. } => AccessKey::Token { jti: jti.clone() },
            Self::UserTokens { user, .. } => AccessKey::UserTokens { user: user.clone() },
        }
    }

    /// When it ends (Unix ms).
    pub fn until(&self) -> u64 {
        match self {
            Self::Block { until, .. }
            | Self::Token { until, .. }
            | Self::UserTokens { until, .. } => *until,
        }
    }

    /// How long it has left from `now` (Unix ms); zero once ended.
    pub fn left(&self, now: u64) -> Duration {
        Duration::from_millis(self.until().saturating_sub(now))
    }

    /// Why it refuses a socket of `user` admitted with `token`, if it does.
    pub fn refuses(&self, user: Option<&str>, token: Option<&TokenMark>) -> Option<Refusal> {
        match self {
            Self::Block {
                user: blocked,
                until,
                reason,
            } if user == Some(blocked.as_str()) => Some(Refusal::Blocked {
                until: *until,
                reason: reason.clone(),
            }),
            Self::Token { jti, .. } if token.and_then(|t| t.id.as_deref()) == Some(jti) => {
                Some(Refusal::TokenRevoked)
            }
            Self::UserTokens {
                user: revoked,
                issued_before,
                ..
            } if user == Some(revoked.as_str())
                && token.is_some_and(|t| t.issued_at < *issued_before) =>
            {
                Some(Refusal::TokenRevoked)
            }
            _ => None,
        }
    }
}

impl AccessKey {
    /// Its name in the cluster's engine (after the list's prefix).
    pub fn path(&self) -> String {
        match self {
            Self::Block { user } => format!("block:{user}"),
            Self::Token { jti } => format!("token:{jti}"),
            Self::UserTokens { user } => format!("user_tokens:{user}"),
        }
    }
}

/// Which token a socket was admitted with, from its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenMark {
    /// Its `jti`.
    pub id: Option<String>,
    /// Its `iat` (Unix seconds), 0 when it has none.
    pub issued_at: u64,
}

impl TokenMark {
    /// The mark the socket data holds (none for a socket admitted without a token).
    pub fn from_data(data: &Map<String, Value>) -> Option<Self> {
        let issued_at = data.get(TOKEN_ISSUED_KEY)?.as_u64().unwrap_or(0);
        let id = data
            .get(TOKEN_ID_KEY)
            .and_then(Value::as_str)
            .map(str::to_owned);
        Some(Self { id, issued_at })
    }

    /// The mark of a verified token's claims, as socket data entries (its `jti` only when it
    /// has one).
    pub fn data_of(claims: &Map<String, Value>) -> Vec<(&'static str, Value)> {
        let issued_at = claims.get("iat").and_then(Value::as_u64).unwrap_or(0);
        let mut entries = vec![(TOKEN_ISSUED_KEY, Value::from(issued_at))];
        if let Some(jti) = claims.get("jti").and_then(Value::as_str) {
            entries.push((TOKEN_ID_KEY, Value::from(jti.to_owned())));
        }
        entries
    }
}

/// Why a socket is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Blocked { until: u64, reason: Option<String> },
    TokenRevoked,
}

impl Refusal {
    /// What the client sees in `connect_error`.
    pub fn connect_error(&self) -> ConnectError {
        match self {
            Self::Blocked { until, reason } => {
                let mut data = json!({ "code": ErrorCode::Blocked.as_str(), "until": until });
                if let Some(reason) = reason {
                    data["reason"] = reason.clone().into();
                }
                ConnectError::new("Blocked").with_data(data)
            }
            Self::TokenRevoked => ConnectError::new("Token revoked")
                .with_data(json!({ "code": ErrorCode::TokenRevoked.as_str() })),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Blocked { .. } => ErrorCode::Blocked,
            Self::TokenRevoked => ErrorCode::TokenRevoked,
        }
    }
}

/// Told of each entry new on this node (the hub disconnects its own sockets itself).
pub type AccessListener = Box<dyn Fn(&AccessEntry) + Send + Sync>;

/// One node's list, with what it has refused.
#[derive(Default)]
pub struct AccessList {
    entries: RwLock<HashMap<AccessKey, (AccessEntry, Instant)>>,
    refused_blocked: AtomicU64,
    refused_revoked: AtomicU64,
    /// Other connections to end when an entry refuses them (the plain WebSocket endpoint's).
    listeners: RwLock<Vec<AccessListener>>,
}

impl AccessList {
    /// Calls `listener` with each entry new on this node from now on.
    pub fn on_added(&self, listener: AccessListener) {
        self.listeners.write().push(listener);
    }

    /// Tells the listeners of a new entry.
    pub fn tell_added(&self, entry: &AccessEntry) {
        for listener in self.listeners.read().iter() {
            listener(entry);
        }
    }

    /// Applies a change; true when it changed the list.
    pub fn apply(&self, change: &AccessChange) -> bool {
        let now = now_millis();
        let mut entries = self.entries.write();
        entries.retain(|_, (entry, _)| entry.until() > now);
        match change {
            AccessChange::Add { entry } if entry.until() > now => {
                let previous = entries.insert(entry.key(), (entry.clone(), Instant::now()));
                previous.is_none_or(|(previous, _)| previous != *entry)
            }
            AccessChange::Add { .. } => false,
            AccessChange::Remove { key } => entries.remove(key).is_some(),
        }
    }

    /// The entries in force, ordered by kind and name.
    pub fn entries(&self) -> Vec<AccessEntry> {
        let now = now_millis();
        let mut live: Vec<AccessEntry> = (self.entries.read().values())
            .filter(|(entry, _)| entry.until() > now)
            .map(|(entry, _)| entry.clone())
            .collect();
        live.sort_by_key(|entry| entry.key().path());
        live
    }

    /// The entry named `key`, if in force.
    pub fn get(&self, key: &AccessKey) -> Option<AccessEntry> {
        let now = now_millis();
        (self.entries.read().get(key))
            .filter(|(entry, _)| entry.until() > now)
            .map(|(entry, _)| entry.clone())
    }

    /// Replaces what this node knows with what the cluster's engine holds, keeping the entries
    /// changed here a moment ago (their write may not have landed yet). Answers the entries
    /// that are new here, for the caller to enforce.
    pub fn resync(&self, held: Vec<AccessEntry>) -> Vec<AccessEntry> {
        let now = now_millis();
        let mut entries = self.entries.write();
        let held: HashMap<AccessKey, AccessEntry> = held
            .into_iter()
            .filter(|entry| entry.until() > now)
            .map(|entry| (entry.key(), entry))
            .collect();
        entries.retain(|key, (entry, changed)| {
            entry.until() > now && (held.contains_key(key) || changed.elapsed() < RESYNC_GRACE)
        });
        let mut added = Vec::new();
        for (key, entry) in held {
            let known = entries.get(&key).is_some_and(|(known, _)| *known == entry);
            if !known {
                entries.insert(key, (entry.clone(), Instant::now()));
                added.push(entry);
            }
        }
        added
    }

    /// Whether a socket of `user` admitted with `token` may connect; a refusal is counted.
    pub fn check(&self, user: Option<&str>, token: Option<&TokenMark>) -> Result<(), Refusal> {
        let entries = self.entries.read();
        if entries.is_empty() || (user.is_none() && token.is_none()) {
            return Ok(());
        }
        let now = now_millis();
        let mut keys = Vec::with_capacity(3);
        if let Some(user) = user {
            keys.push(AccessKey::Block { user: user.into() });
            keys.push(AccessKey::UserTokens { user: user.into() });
        }
        if let Some(jti) = token.and_then(|t| t.id.clone()) {
            keys.push(AccessKey::Token { jti });
        }
        let refusal = keys.iter().find_map(|key| {
            let (entry, _) = entries.get(key)?;
            (entry.until() > now)
                .then(|| entry.refuses(user, token))
                .flatten()
        });
        match refusal {
            None => Ok(()),
            Some(refusal) => {
                self.count(&refusal);
                Err(refusal)
            }
        }
    }

    /// Counts a refusal (a connect refused, or a socket disconnected by a new entry).
    pub fn count(&self, refusal: &Refusal) {
        let counter = match refusal {
            Refusal::Blocked { .. } => &self.refused_blocked,
            Refusal::TokenRevoked => &self.refused_revoked,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Connects refused and sockets disconnected since start: `(blocked, token revoked)`.
    pub fn refusals(&self) -> (u64, u64) {
        (
            self.refused_blocked.load(Ordering::Relaxed),
            self.refused_revoked.load(Ordering::Relaxed),
        )
    }

    /// Entries in force by kind: `(blocks, tokens, users' tokens)`.
    pub fn counts(&self) -> (usize, usize, usize) {
        let now = now_millis();
        let mut counts = (0, 0, 0);
        for (entry, _) in self.entries.read().values() {
            if entry.until() <= now {
                continue;
            }
            match entry {
                AccessEntry::Block { .. } => counts.0 += 1,
                AccessEntry::Token { .. } => counts.1 += 1,
                AccessEntry::UserTokens { .. } => counts.2 += 1,
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn later() -> u64 {
        now_millis() + 60_000
    }

    fn token(id: Option<&str>, issued_at: u64) -> TokenMark {
        TokenMark {
            id: id.map(str::to_owned),
            issued_at,
        }
    }

    #[test]
    fn a_blocked_user_is_refused_with_when_and_why_until_unblocked() {
        let list = AccessList::default();
        let until = later();
        let block = AccessEntry::Block {
            user: "ada".into(),
            until,
            reason: Some("abuse".into()),
        };
        assert!(list.apply(&AccessChange::Add {
            entry: block.clone()
        }));
        assert!(!list.apply(&AccessChange::Add { entry: block }));
        let refusal = list.check(Some("ada"), None).expect_err("blocked");
        let error = refusal.connect_error();
        assert_eq!(error.message, "Blocked");
        let data = error.data.expect("data");
        assert_eq!(data["code"], "blocked");
        assert_eq!(data["until"], until);
        assert_eq!(data["reason"], "abuse");
        assert!(list.check(Some("bob"), None).is_ok());
        assert!(list.check(None, Some(&token(Some("t1"), 5))).is_ok());
        assert!(list.apply(&AccessChange::Remove {
            key: AccessKey::Block { user: "ada".into() }
        }));
        assert!(list.check(Some("ada"), None).is_ok());
        assert_eq!(list.refusals(), (1, 0));
    }

    #[test]
    fn revoked_tokens_are_refused_by_id_or_by_issue_time() {
        let list = AccessList::default();
        list.apply(&AccessChange::Add {
            entry: AccessEntry::Token {
                jti: "t1".into(),
                until: later(),
            },
        });
        list.apply(&AccessChange::Add {
            entry: AccessEntry::UserTokens {
                user: "ada".into(),
                issued_before: 1_000,
                until: later(),
            },
        });
        assert_eq!(
            list.check(Some("bob"), Some(&token(Some("t1"), 5_000))),
            Err(Refusal::TokenRevoked)
        );
        assert!(list.check(Some("bob"), Some(&token(Some("t2"), 5))).is_ok());
        // Issued before the cut-off, or with no iat at all: refused; after it: admitted.
        assert!(list.check(Some("ada"), Some(&token(None, 999))).is_err());
        assert!(list.check(Some("ada"), Some(&token(None, 0))).is_err());
        assert!(list.check(Some("ada"), Some(&token(None, 1_000))).is_ok());
        // A socket of that user admitted without a token is not a token's.
        assert!(list.check(Some("ada"), None).is_ok());
        assert_eq!(list.refusals(), (0, 3));
    }

    #[test]
    fn ended_entries_refuse_nothing_and_are_not_listed() {
        let list = AccessList::default();
        let gone = AccessEntry::Block {
            user: "ada".into(),
            until: now_millis().saturating_sub(1),
            reason: None,
        };
        assert!(!list.apply(&AccessChange::Add { entry: gone }));
        assert!(list.check(Some("ada"), None).is_ok());
        assert!(list.entries().is_empty());
        assert_eq!(list.counts(), (0, 0, 0));
    }

    #[test]
    fn a_resync_takes_the_engines_list_but_keeps_what_changed_a_moment_ago() {
        let list = AccessList::default();
        let fresh = AccessEntry::Token {
            jti: "mine".into(),
            until: later(),
        };
        list.apply(&AccessChange::Add {
            entry: fresh.clone(),
        });
        let theirs = AccessEntry::Block {
            user: "bob".into(),
            until: later(),
            reason: None,
        };
        let added = list.resync(vec![theirs.clone()]);
        assert_eq!(added, vec![theirs.clone()]);
        assert_eq!(
            list.entries().len(),
            2,
            "the entry written a moment ago stays"
        );
        assert!(list.resync(vec![theirs, fresh]).is_empty());
    }

    #[test]
    fn marks_come_from_claims_and_back_from_socket_data() {
        let claims: Map<String, Value> =
            serde_json::from_value(json!({"sub": "ada", "jti": "t9", "iat": 1234})).expect("map");
        let data: Map<String, Value> = TokenMark::data_of(&claims)
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect();
        assert_eq!(TokenMark::from_data(&data), Some(token(Some("t9"), 1234)));
        assert_eq!(TokenMark::from_data(&Map::new()), None);
    }

    #[test]
    fn changes_keep_their_wire_shape() {
        let change = AccessChange::Add {
            entry: AccessEntry::UserTokens {
                user: "ada".into(),
                issued_before: 10,
                until: 20,
            },
        };
        let text = serde_json::to_value(&change).expect("json");
        assert_eq!(
            text,
            json!({"change": "add", "entry": {"kind": "user_tokens", "user": "ada", "issued_before": 10, "until": 20}})
        );
        let back: AccessChange = serde_json::from_value(text).expect("decodes");
        assert_eq!(back, change);
    }
}
