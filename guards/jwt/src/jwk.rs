//! JSON Web Keys (RFC 7517) as the guard reads them.

use jsonwebtoken::errors::{Error, ErrorKind};
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
            (kty, alg) => {
                return Err(format!(
                    "alg {} does not fit a key of type {kty}",
                    alg_name(alg)
                ))
            }
        }
        .map_err(|e| format!("unusable {} key: {}", self.kty, problem(&e)))?;
        Ok(Key {
            kid: self.kid.clone(),
            algorithm,
            key,
        })
    }
}

/// An algorithm as JOSE names it (`RS256`), for events.
pub(crate) fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
    }
}

/// What is wrong with a token or key, in words: jsonwebtoken prints most
/// of its errors as their enum's names.
pub(crate) fn problem(error: &Error) -> String {
    let said = match error.kind() {
        ErrorKind::InvalidToken => "not a well-formed JWT",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidEcdsaKey => "not a valid ECDSA key",
        ErrorKind::RsaFailedSigning => "RSA signing failed",
        ErrorKind::InvalidAlgorithmName => "unknown algorithm name",
        ErrorKind::InvalidKeyFormat => "the key is not in a valid format",
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not valid yet (nbf)",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidSubject => "wrong subject",
        ErrorKind::InvalidAlgorithm => "algorithm not allowed for this key",
        ErrorKind::MissingAlgorithm => "no algorithm allowed",
        // The rest say what they are in their own words.
        _ => return error.to_string(),
    };
    said.to_owned()
}
