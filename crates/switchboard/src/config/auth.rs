//! `[auth]`: JWT verification of connecting clients (keys, algorithms, claims, token sources).
//! `crate::auth` builds its verifier from this section.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::HumanDuration;

/// `[auth]` in the config.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// HMAC secret (HS256/384/512). Name an environment variable: `"${JWT_SECRET}"`.
    pub secret: Option<String>,
    /// PEM public key (RS256, ES256), inline or as a file path.
    pub public_key: Option<String>,
    pub public_key_file: Option<String>,
    pub algorithms: Vec<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: HumanDuration,
    /// Where to look for the token, in order: auth, query, header, cookie.
    pub sources: Vec<String>,
    pub query_param: String,
    pub cookie: String,
    /// Whether namespaces require a token unless they say otherwise.
    pub required: bool,
    /// The claim holding the user id (falls back to `sub`).
    pub user_claim: String,
    /// Socket data key -> claim name. Empty: every claim but the registered ones is copied.
    pub claims: BTreeMap<String, String>,
    /// Whether a token's `exp` holds during the connection: the socket is warned before it
    /// (`token:expiring`), may send a fresh token (`token:refresh`), and is disconnected at it
    /// (`token:expired`) unless refreshed.
    pub enforce_expiry: bool,
    /// How long before expiry the socket is warned (and the refresh proxy asked).
    pub expiry_warning: HumanDuration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            secret: None,
            public_key: None,
            public_key_file: None,
            algorithms: vec!["HS256".into()],
            issuer: None,
            audience: None,
            leeway: HumanDuration(Duration::from_secs(30)),
            sources: vec![
                "auth".into(),
                "query".into(),
                "header".into(),
                "cookie".into(),
            ],
            query_param: "token".into(),
            cookie: "token".into(),
            required: true,
            user_claim: "userId".into(),
            claims: BTreeMap::new(),
            enforce_expiry: true,
            expiry_warning: HumanDuration(Duration::from_secs(60)),
        }
    }
}

impl AuthSettings {
    /// True when a key is configured (auth is in use at all).
    pub fn configured(&self) -> bool {
        self.secret.is_some() || self.public_key.is_some() || self.public_key_file.is_some()
    }
}
