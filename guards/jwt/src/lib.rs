//! `type: jwt` guard: verifies JSON Web Tokens (RFC 7519) signed with keys
//! given inline as JWKs (RFC 7517) or fetched from a JWKS URL.
//!
//! The key is chosen by the token's `kid`, and the token's `alg` must be the
//! key's `alg`: no `none`, no algorithm confusion (an HMAC token "signed" with
//! an RSA public key is refused because the key says RS256). `exp`, `nbf`,
//! `iss` and `aud` are checked. Roles, identity and attributes are read from
//! claims by dotted paths.

#![forbid(unsafe_code)]

mod cache;
mod jwk;
mod jwks;
mod schema;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indexmap::IndexMap;
use jsonwebtoken::{decode, decode_header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zilla_engine::{
    async_trait, register_guard, BuildError, Events, Guard, GuardFactory, GuardRejection,
    GuardSession, PluginContext,
};

use cache::VerifiedTokens;
pub use cache::PROPERTY_CACHE_SIZE;
pub use jwk::Jwk;
use jwk::{alg_name, problem};
use jwks::KeySource;
pub use jwks::{PROPERTY_REFRESH_MIN, PROPERTY_REFRESH_PERIOD};

/// `options` of a jwt guard.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtOptions {
    /// Required `iss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Required `aud` (the token's audience must contain it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Inline JWKs, or a JWKS URL; when absent, `<issuer>/.well-known/jwks.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<KeysOption>,
    /// The claim holding roles (default `scope`): a space-separated string or an array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<String>,
    /// The claim holding the identity (default `sub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Named attributes and the claims they are read from.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub attributes: IndexMap<String, String>,
    /// Seconds before expiry at which Zilla challenges the client; accepted for
    /// compatibility (sessions here end at `exp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<u64>,
    /// Seconds of clock skew tolerated for `exp` and `nbf` (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leeway: Option<u64>,
}

/// `keys`: a list of JWKs or a JWKS URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KeysOption {
    /// Inline keys.
    Inline(Vec<Jwk>),
    /// A JWKS document's URL.
    Url(String),
}

/// A built jwt guard.
pub struct JwtGuard {
    issuer: Option<String>,
    audience: Option<String>,
    keys: KeySource,
    roles: String,
    identity: String,
    attributes: IndexMap<String, String>,
    leeway: u64,
    verified: VerifiedTokens,
}

impl std::fmt::Debug for JwtGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtGuard")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl JwtGuard {
    /// A guard from its options; `events` receives key refresh failures.
    pub fn new(options: JwtOptions, events: Events) -> Result<Self, (String, String)> {
        let keys = match options.keys {
            Some(KeysOption::Inline(jwks)) => {
                let mut keys = Vec::new();
                for (index, jwk) in jwks.into_iter().enumerate() {
                    let key = jwk
                        .decoding_key()
                        .map_err(|e| (format!("keys[{index}]"), e))?;
                    keys.push(key);
                }
                KeySource::inline(keys)
            }
            Some(KeysOption::Url(url)) => KeySource::remote(url, events),
            None => match &options.issuer {
                Some(issuer) => KeySource::remote(
                    format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/')),
                    events,
                ),
                None => {
                    return Err((
                        "keys".into(),
                        "needs `keys` or an `issuer` to find them at".into(),
                    ))
                }
            },
        };
        Ok(Self {
            issuer: options.issuer,
            audience: options.audience,
            keys,
            roles: options.roles.unwrap_or_else(|| "scope".into()),
            identity: options.identity.unwrap_or_else(|| "sub".into()),
            attributes: options.attributes,
            leeway: options.leeway.unwrap_or(0),
            verified: VerifiedTokens::new(cache::DEFAULT_CACHE_SIZE),
        })
    }

    /// Remembers up to `capacity` verified tokens (0: none).
    pub fn with_cache_size(mut self, capacity: usize) -> Self {
        self.verified = VerifiedTokens::new(capacity);
        self
    }

    fn session(&self, claims: &Value) -> GuardSession {
        let roles = match claim(claims, &self.roles) {
            Some(Value::String(text)) => text.split_whitespace().map(str::to_owned).collect(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        let attributes: BTreeMap<String, String> = self
            .attributes
            .iter()
            .filter_map(|(name, path)| {
                claim(claims, path)
                    .and_then(text)
                    .map(|v| (name.clone(), v))
            })
            .collect();
        GuardSession {
            identity: claim(claims, &self.identity).and_then(text),
            roles,
            attributes,
            expires_at: claims
                .get("exp")
                .and_then(Value::as_u64)
                .map(|exp| UNIX_EPOCH + Duration::from_secs(exp)),
        }
    }
}

/// The claim at a dotted path (`realm_access.roles`).
fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(claims, |value, segment| value.get(segment))
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn invalid(reason: impl Into<String>) -> GuardRejection {
    GuardRejection::InvalidCredentials(reason.into())
}

#[async_trait]
impl Guard for JwtGuard {
    async fn authorize(&self, credentials: &str) -> Result<GuardSession, GuardRejection> {
        let now = SystemTime::now();
        // Read before the keys are: a refresh meanwhile only makes the
        // entry stale, never fresh.
        let generation = self.keys.generation();
        if let Some(session) = self.verified.get(credentials, generation, now) {
            return Ok(session);
        }
        let header = decode_header(credentials)
            .map_err(|e| invalid(format!("not a signed JWT: {}", problem(&e))))?;
        let key = self.keys.find(header.kid.as_deref()).await?;
        if header.alg != key.algorithm {
            return Err(invalid(format!(
                "token alg {} does not match key alg {}",
                alg_name(header.alg),
                alg_name(key.algorithm)
            )));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.required_spec_claims.clear();
        validation.validate_aud = self.audience.is_some();
        match &self.issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        if let Some(audience) = &self.audience {
            validation.set_audience(&[audience]);
        }
        let data = decode::<Value>(credentials, &key.key, &validation)
            .map_err(|e| invalid(problem(&e)))?;
        if self.audience.is_some() && data.claims.get("aud").is_none() {
            return Err(invalid("token has no audience"));
        }
        if self.issuer.is_some() && data.claims.get("iss").is_none() {
            return Err(invalid("token has no issuer"));
        }
        // `exp` is optional in JWT; when present it was checked above.
        let session = self.session(&data.claims);
        let valid_until = session
            .expires_at
            .map(|exp| exp + Duration::from_secs(self.leeway));
        if valid_until.is_some_and(|until| until <= now) {
            return Err(invalid("token expired"));
        }
        self.verified
            .insert(credentials, generation, &session, valid_until, now);
        Ok(session)
    }

    async fn start(&self) -> Result<(), GuardRejection> {
        self.keys.start().await
    }
}

fn build(cx: &mut PluginContext<'_>) -> Result<Arc<dyn Guard>, BuildError> {
    let options: JwtOptions = cx.options()?;
    let seconds =
        |cx: &mut PluginContext<'_>, name: &str| -> Result<Option<Duration>, BuildError> {
            match cx.property(name).map(str::to_owned) {
                None => Ok(None),
                Some(value) => match value.parse::<f64>() {
                    Ok(s) if s >= 0.0 && s.is_finite() => Ok(Some(Duration::from_secs_f64(s))),
                    _ => Err(cx.error("", format!("-P {name}: expected seconds, found `{value}`"))),
                },
            }
        };
    let refresh_min = seconds(cx, jwks::PROPERTY_REFRESH_MIN)?;
    let refresh_period = seconds(cx, jwks::PROPERTY_REFRESH_PERIOD)?;
    let cache_size = match cx.property(PROPERTY_CACHE_SIZE).map(str::to_owned) {
        None => cache::DEFAULT_CACHE_SIZE,
        Some(value) => value.parse::<usize>().map_err(|_| {
            cx.error(
                "",
                format!("-P {PROPERTY_CACHE_SIZE}: expected a number of tokens, found `{value}`"),
            )
        })?,
    };
    match JwtGuard::new(options, cx.events()) {
        Ok(guard) => {
            let mut guard = guard.with_cache_size(cache_size);
            guard
                .keys
                .configure(refresh_min, refresh_period, cx.shutdown());
            Ok(Arc::new(guard))
        }
        Err((path, message)) => Err(cx.error(&format!("options.{path}"), message)),
    }
}

register_guard!(GuardFactory {
    type_name: "jwt",
    build,
});

#[cfg(test)]
mod tests;
