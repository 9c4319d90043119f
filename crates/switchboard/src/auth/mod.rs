//! Authentication of sockets by JWT: where the token is found (handshake `auth.token`, the
//! `token` query parameter, an `Authorization: Bearer` header, a cookie; in a configured order),
//! its verification (HS256/384/512 with a secret, RS256/ES256 with a PEM public key; `exp`,
//! `nbf`, `iss`, `aud` with a leeway), and its claims turned into socket data (user id,
//! organization, role, any mapped claim). Refusals are stable CONNECT_ERROR messages a client
//! sees in `connect_error`: "Authentication required", "Invalid token", "Token expired", each
//! with `data.code`.

use crate::error_code::ErrorCode;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value, json};

use crate::config::AuthSettings;
use crate::http::RequestInfo;
use crate::hub::ConnectError;
use crate::hub::access::TokenMark;

/// Who a verified token says the client is.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// The socket data its claims map to (the user id among them).
    pub data: Map<String, Value>,
    /// Its `exp` (Unix seconds), if it has one.
    pub expires: Option<u64>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token was given")]
    Required,
    #[error("{0}")]
    Invalid(String),
    #[error("the token has expired")]
    Expired,
}

impl AuthError {
    pub fn connect_error(&self) -> ConnectError {
        match self {
            Self::Required => ConnectError::new("Authentication required")
                .with_data(json!({ "code": ErrorCode::AuthRequired.as_str() })),
            Self::Invalid(reason) => ConnectError::new("Invalid token")
                .with_data(json!({ "code": ErrorCode::InvalidToken.as_str(), "reason": reason })),
            Self::Expired => ConnectError::new("Token expired")
                .with_data(json!({ "code": ErrorCode::TokenExpired.as_str() })),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Auth,
    Query,
    Header,
    Cookie,
}

/// Claims never copied into socket data.
const REGISTERED: [&str; 6] = ["exp", "nbf", "iat", "iss", "aud", "jti"];

/// A configured verifier.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    sources: Vec<Source>,
    query_param: String,
    cookie: String,
    user_claim: String,
    claims: BTreeMap<String, String>,
    /// The socket-data key the user id goes to.
    user_key: String,
}

fn algorithm(name: &str) -> Result<Algorithm, String> {
    Ok(match name {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        other => {
            return Err(format!(
                "unsupported algorithm {other:?} (HS256, HS384, HS512, RS256, ES256)"
            ));
        }
    })
}

impl Verifier {
    /// Builds the verifier; errors name the problem for the config check.
    pub fn new(settings: &AuthSettings, user_key: &str) -> Result<Self, String> {
        let algorithms = settings
            .algorithms
            .iter()
            .map(|a| algorithm(a))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(first) = algorithms.first().copied() else {
            return Err("auth.algorithms is empty".into());
        };
        let hmac = algorithms
            .iter()
            .all(|a| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512));
        let asymmetric = algorithms
            .iter()
            .all(|a| matches!(a, Algorithm::RS256 | Algorithm::ES256));
        let key = if hmac {
            let secret = settings
                .secret
                .as_deref()
                .ok_or("HS algorithms need auth.secret")?;
            if secret.len() < 16 {
                return Err("auth.secret must be at least 16 bytes".into());
            }
            DecodingKey::from_secret(secret.as_bytes())
        } else if asymmetric {
            let pem = match (&settings.public_key, &settings.public_key_file) {
                (Some(pem), _) => pem.clone(),
                (None, Some(path)) => std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read auth.public_key_file {path:?}: {e}"))?,
                (None, None) => {
                    return Err("RS256/ES256 need auth.public_key or auth.public_key_file".into());
                }
            };
            let decoded = if first == Algorithm::RS256 {
                DecodingKey::from_rsa_pem(pem.as_bytes())
            } else {
                DecodingKey::from_ec_pem(pem.as_bytes())
            };
            decoded.map_err(|e| format!("auth public key: {e}"))?
        } else {
            return Err("auth.algorithms mixes HMAC and public-key algorithms".into());
        };
        if algorithms.contains(&Algorithm::RS256) && algorithms.contains(&Algorithm::ES256) {
            return Err("one public key cannot verify both RS256 and ES256".into());
        }
        let mut validation = Validation::new(first);
        validation.algorithms = algorithms;
        validation.leeway = settings.leeway.0.as_secs();
        validation.validate_nbf = true;
        validation.required_spec_claims.clear();
        validation.validate_exp = true;
        if let Some(issuer) = &settings.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        match &settings.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        let sources = settings
            .sources
            .iter()
            .map(|s| match s.as_str() {
                "auth" => Ok(Source::Auth),
                "query" => Ok(Source::Query),
                "header" => Ok(Source::Header),
                "cookie" => Ok(Source::Cookie),
                other => Err(format!(
                    "unknown token source {other:?} (auth, query, header, cookie)"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            key,
            validation,
            sources,
            query_param: settings.query_param.clone(),
            cookie: settings.cookie.clone(),
            user_claim: settings.user_claim.clone(),
            claims: settings.claims.clone(),
            user_key: user_key.to_owned(),
        })
    }

    /// The token the client presented, looked for in the configured order.
    pub fn find_token(&self, request: &RequestInfo, auth: &Map<String, Value>) -> Option<String> {
        self.sources
            .iter()
            .find_map(|source| match source {
                Source::Auth => auth.get("token").and_then(Value::as_str).map(str::to_owned),
                Source::Query => request.query_value(&self.query_param).map(str::to_owned),
                Source::Header => request
                    .headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(|t| t.trim().to_owned()),
                Source::Cookie => request
                    .headers
                    .get_all(http::header::COOKIE)
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .find_map(|pair| {
                        let (name, value) = pair.trim().split_once('=')?;
                        (name == self.cookie).then(|| value.to_owned())
                    }),
            })
            .filter(|token| !token.is_empty())
    }

    /// Verifies a token; answers its claims.
    pub fn verify(&self, token: &str) -> Result<Map<String, Value>, AuthError> {
        match jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation) {
            Ok(data) => Ok(data.claims),
            Err(error) => Err(match error.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::Invalid("not valid yet (nbf)".into()),
                ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience".into()),
                ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer".into()),
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::InvalidAlgorithm => AuthError::Invalid("algorithm not allowed".into()),
                ErrorKind::MissingRequiredClaim(claim) => {
                    AuthError::Invalid(format!("missing claim {claim}"))
                }
                _ => AuthError::Invalid("malformed".into()),
            }),
        }
    }

    /// Socket data from verified claims: the mapped claims (or all but the registered ones),
    /// the user id under the user key, and which token it was (its `jti` and `iat`, checked
    /// against revoked tokens; `hub::access`).
    pub fn socket_data(&self, claims: &Map<String, Value>) -> Map<String, Value> {
        let mut data = Map::new();
        if self.claims.is_empty() {
            for (key, value) in claims {
                if !REGISTERED.contains(&key.as_str()) {
                    data.insert(key.clone(), value.clone());
                }
            }
        } else {
            for (key, claim) in &self.claims {
                if let Some(value) = claims.get(claim) {
                    data.insert(key.clone(), value.clone());
                }
            }
        }
        if let Some(user) = claims.get(&self.user_claim).or_else(|| claims.get("sub")) {
            data.insert(self.user_key.clone(), user.clone());
        }
        for (key, value) in TokenMark::data_of(claims) {
            data.insert(key.into(), value);
        }
        data
    }

    /// Finds, verifies and maps the token of a connecting client: its socket data and its
    /// expiry (`exp`, Unix seconds) if it has one. `Ok(None)`: no token and none required.
    pub fn authenticate(
        &self,
        request: &RequestInfo,
        auth: &Map<String, Value>,
        required: bool,
    ) -> Result<Option<Identity>, AuthError> {
        match self.find_token(request, auth) {
            None if required => Err(AuthError::Required),
            None => Ok(None),
            Some(token) => self.verify(&token).map(|claims| {
                Some(Identity {
                    data: self.socket_data(&claims),
                    expires: claims.get("exp").and_then(Value::as_u64),
                })
            }),
        }
    }
}

/// Mints a token for development: `switchboard token --secret ... --claim userId=1`.
pub fn mint(
    secret: &str,
    algorithm_name: &str,
    claims: &Map<String, Value>,
    expires_in: Option<Duration>,
) -> Result<String, String> {
    let algorithm = algorithm(algorithm_name)?;
    if !matches!(
        algorithm,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    ) {
        return Err("token minting supports HS256, HS384 and HS512".into());
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut claims = claims.clone();
    claims.entry("iat").or_insert(json!(now));
    if let Some(expires_in) = expires_in {
        claims
            .entry("exp")
            .or_insert(json!(now + expires_in.as_secs()));
    }
    jsonwebtoken::encode(
        &Header::new(algorithm),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-test-secret-that-is-long-enough";

    fn verifier(settings: AuthSettings) -> Verifier {
        Verifier::new(&settings, "userId").unwrap()
    }

    fn hs256() -> AuthSettings {
        AuthSettings {
            secret: Some(SECRET.into()),
            ..AuthSettings::default()
        }
    }

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn verifies_and_maps_claims() {
        let v = verifier(hs256());
        let token = mint(
            SECRET,
            "HS256",
            &claims(json!({"userId": 7, "organizationId": "acme", "role": "admin"})),
            Some(Duration::from_secs(60)),
        )
        .unwrap();
        let mut data = v.socket_data(&v.verify(&token).unwrap());
        // Which token it was, for revocation: its iat (this one has no jti).
        let issued_at = data.remove(crate::hub::access::TOKEN_ISSUED_KEY).unwrap();
        assert!(issued_at.as_u64().is_some_and(|iat| iat > 1_700_000_000));
        assert_eq!(
            data,
            claims(json!({"userId": 7, "organizationId": "acme", "role": "admin"}))
        );
    }

    #[test]
    fn expired_bad_and_wrong_audience_tokens_are_told_apart() {
        let v = verifier(AuthSettings {
            audience: Some("videos".into()),
            leeway: crate::config::HumanDuration(Duration::ZERO),
            ..hs256()
        });
        let expired = mint(
            SECRET,
            "HS256",
            &claims(json!({"aud": "videos", "exp": 1_000_000})),
            None,
        )
        .unwrap();
        assert_eq!(v.verify(&expired), Err(AuthError::Expired));
        let wrong_audience = mint(
            SECRET,
            "HS256",
            &claims(json!({"aud": "other"})),
            Some(Duration::from_secs(60)),
        )
        .unwrap();
        assert!(matches!(
            v.verify(&wrong_audience),
            Err(AuthError::Invalid(_))
        ));
        let other_secret = mint(
            "another-secret-long-enough!!",
            "HS256",
            &claims(json!({"aud": "videos"})),
            Some(Duration::from_secs(60)),
        )
        .unwrap();
        assert!(matches!(
            v.verify(&other_secret),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            v.verify("not.a.token"),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn tokens_are_found_in_the_configured_order() {
        let v = verifier(AuthSettings {
            sources: vec!["cookie".into(), "query".into()],
            ..hs256()
        });
        let mut request = RequestInfo {
            query: Box::new([("token".into(), "from-query".into())]),
            ..RequestInfo::default()
        };
        assert_eq!(
            v.find_token(&request, &Map::new()).as_deref(),
            Some("from-query")
        );
        request.headers.insert(
            http::header::COOKIE,
            "a=1; token=from-cookie".parse().unwrap(),
        );
        assert_eq!(
            v.find_token(&request, &Map::new()).as_deref(),
            Some("from-cookie")
        );
        let auth = claims(json!({"token": "from-auth"}));
        assert_eq!(
            v.find_token(&request, &auth).as_deref(),
            Some("from-cookie"),
            "auth is not a configured source"
        );
    }

    fn signed(algorithm: Algorithm, private_pem: &str, claims: &Map<String, Value>) -> String {
        let key = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(private_pem.as_bytes()),
            _ => EncodingKey::from_ec_pem(private_pem.as_bytes()),
        }
        .unwrap();
        jsonwebtoken::encode(&Header::new(algorithm), claims, &key).unwrap()
    }

    #[test]
    fn rs256_and_es256_verify_with_a_pem_public_key() {
        let claims = claims(json!({"userId": "u9", "exp": 4_000_000_000u64}));
        for (name, algorithm, private, public) in [
            (
                "RS256",
                Algorithm::RS256,
                include_str!("test-keys/rsa-private.pem"),
                include_str!("test-keys/rsa-public.pem"),
            ),
            (
                "ES256",
                Algorithm::ES256,
                include_str!("test-keys/ec-private.pem"),
                include_str!("test-keys/ec-public.pem"),
            ),
        ] {
            let v = verifier(AuthSettings {
                algorithms: vec![name.into()],
                public_key: Some(public.into()),
                ..AuthSettings::default()
            });
            let token = signed(algorithm, private, &claims);
            assert_eq!(
                v.socket_data(&v.verify(&token).unwrap())["userId"],
                json!("u9"),
                "{name}"
            );
            // An HMAC token must not pass as the public-key algorithm.
            let hmac = mint(SECRET, "HS256", &claims, None).unwrap();
            assert!(
                matches!(v.verify(&hmac), Err(AuthError::Invalid(_))),
                "{name}"
            );
        }
    }

    #[test]
    fn configuration_errors_are_explained() {
        assert!(
            Verifier::new(
                &AuthSettings {
                    secret: Some("short".into()),
                    ..AuthSettings::default()
                },
                "u"
            )
            .is_err()
        );
        assert!(
            Verifier::new(
                &AuthSettings {
                    algorithms: vec!["none".into()],
                    ..hs256()
                },
                "u"
            )
            .is_err()
        );
        assert!(
            Verifier::new(
                &AuthSettings {
                    algorithms: vec!["RS256".into()],
                    ..hs256()
                },
                "u"
            )
            .is_err()
        );
    }
}
