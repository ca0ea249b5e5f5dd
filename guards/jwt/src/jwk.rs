//! JSON Web Keys (RFC 7517) as the guard reads them.

use jsonwebtoken::{Algorithm, DecodingKey};
use serde::{Deserialize, Serialize};

/// One JWK.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jwk {
    /// Key type: `RSA`, `EC`, `OKP`, or `oct` (HMAC).
    pub kty: String,
    /// Key id, matched against the token header's `kid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The one algorithm tokens signed with this key may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Intended use (`sig`).
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// RSA modulus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA exponent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// Curve (`P-256`, `P-384`, `Ed25519`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC or OKP public x coordinate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC public y coordinate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// HMAC secret (`oct` keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<String>,
    /// Key operations; accepted, not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<String>>,
    /// Certificate chain; accepted, not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5c: Option<Vec<String>>,
    /// Certificate thumbprint; accepted, not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5t: Option<String>,
}

/// A usable verification key.
#[derive(Clone)]
pub(crate) struct Key {
    pub(crate) kid: Option<String>,
    pub(crate) algorithm: Algorithm,
    pub(crate) key: DecodingKey,
}

/// JWKs in the wild carry standard base64 (the seed's `n` has `+` and `=`);
/// JWK says base64url without padding. Accept both.
fn base64url(value: &str) -> String {
    value
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

impl Jwk {
    fn field<'a>(&'a self, value: &'a Option<String>, name: &str) -> Result<&'a str, String> {
        value
            .as_deref()
            .ok_or_else(|| format!("{} key needs `{name}`", self.kty))
    }

    /// The key this JWK describes, with the one algorithm it allows.
    pub(crate) fn decoding_key(&self) -> Result<Key, String> {
        let algorithm = match (self.kty.as_str(), self.alg.as_deref(), self.crv.as_deref()) {
            (_, Some("none"), _) => return Err("`alg: none` is never accepted".into()),
            (_, Some(alg), _) => alg
                .parse::<Algorithm>()
                .map_err(|_| format!("unsupported alg `{alg}`"))?,
            ("EC", None, Some("P-256")) => Algorithm::ES256,
            ("EC", None, Some("P-384")) => Algorithm::ES384,
            ("OKP", None, Some("Ed25519")) => Algorithm::EdDSA,
            (kty, None, _) => return Err(format!("a {kty} key needs `alg`")),
        };
        let key = match (self.kty.as_str(), algorithm) {
            (
                "RSA",
                Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512,
            ) => DecodingKey::from_rsa_components(
                &base64url(self.field(&self.n, "n")?),
                &base64url(self.field(&self.e, "e")?),
            ),
            ("EC", Algorithm::ES256 | Algorithm::ES384) => DecodingKey::from_ec_components(
                &base64url(self.field(&self.x, "x")?),
                &base64url(self.field(&self.y, "y")?),
            ),
            ("OKP", Algorithm::EdDSA) => {
                DecodingKey::from_ed_components(&base64url(self.field(&self.x, "x")?))
            }
            ("oct", Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => {
                let secret = base64url(self.field(&self.k, "k")?);
                DecodingKey::from_base64_secret(&secret.replace('-', "+").replace('_', "/"))
                    .or_else(|_| {
                        let padded = format!("{secret}{}", "=".repeat((4 - secret.len() % 4) % 4));
                        DecodingKey::from_base64_secret(&padded.replace('-', "+").replace('_', "/"))
                    })
            }
            (kty, alg) => return Err(format!("alg {alg:?} does not fit a key of type {kty}")),
        }
        .map_err(|e| format!("unusable {} key: {e}", self.kty))?;
        Ok(Key {
            kid: self.kid.clone(),
            algorithm,
            key,
        })
    }
}
