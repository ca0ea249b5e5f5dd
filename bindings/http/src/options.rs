//! The http binding's options, as written in `zilla.yaml` (Zilla's names).
//!
//! Every struct rejects unknown keys, so a misspelt option is a startup error
//! rather than a silently ignored security setting. What cannot be expressed
//! in the types (one guard only, `{credentials}` exactly once, `allow` only
//! with `policy: cross-origin`) is checked when the binding is built.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `options` of an http server.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpOptions {
    /// The protocol versions served (default both `http/1.1` and `h2`). With
    /// `h2`, HTTP/2 is served to clients that start with its preface (prior
    /// knowledge, h2c, or TLS with ALPN `h2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<HttpVersion>>,
    /// Cross-origin resource sharing (default `policy: same-origin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_control: Option<AccessControl>,
    /// Where a guard finds credentials in a request: `{<guard>: {credentials}}`,
    /// exactly one guard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<BTreeMap<String, HttpAuthorization>>,
}

/// An HTTP protocol version, by its ALPN name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HttpVersion {
    /// HTTP/1.1 (and 1.0), with protocol upgrades such as WebSocket.
    #[serde(rename = "http/1.1")]
    Http11,
    /// HTTP/2.
    #[serde(rename = "h2")]
    H2,
}

/// `options.access-control`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AccessControl {
    /// `same-origin` (default: no CORS headers, nothing refused) or
    /// `cross-origin` (preflights answered, `allow` enforced).
    #[serde(default)]
    pub policy: Policy,
    /// What cross-origin requests may do; absent lists allow anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Allow>,
    /// Seconds a browser may cache a preflight answer (`Access-Control-Max-Age`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
    /// Response headers scripts may read (`Access-Control-Expose-Headers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose: Option<Expose>,
}

/// `access-control.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Browsers' own same-origin rules apply; the server adds nothing.
    #[default]
    SameOrigin,
    /// The server answers preflights and grants cross-origin access.
    CrossOrigin,
}

/// `access-control.allow`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    /// Origins allowed, e.g. `https://example.com` (`*` in a pattern matches
    /// any characters); a request from any other origin is refused with
    /// `403`, WebSocket upgrades included. Absent: any origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origins: Option<Vec<String>>,
    /// Methods a preflight allows; absent: the one asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// Request headers a preflight allows; absent: those asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<String>>,
    /// Whether browsers may send cookies and credentials
    /// (`Access-Control-Allow-Credentials: true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<bool>,
}

/// `access-control.expose`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expose {
    /// Response headers scripts may read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<String>>,
}

/// `options.authorization.<guard>`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpAuthorization {
    /// Where the credentials are.
    pub credentials: CredentialSources,
}

/// `options.authorization.<guard>.credentials`: patterns such as
/// `Bearer {credentials}`, looked for in this order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSources {
    /// Request headers by name, e.g. `authorization: Bearer {credentials}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// Query parameters by name (values percent-decoded), e.g.
    /// `access_token: "{credentials}"`; browsers cannot set headers on a
    /// WebSocket handshake, so this is how they present a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<BTreeMap<String, String>>,
    /// Cookies by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookies: Option<BTreeMap<String, String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &str = r#"
versions:
- http/1.1
- h2
access-control:
  policy: cross-origin
  allow:
    origins:
    - https://example.com
    methods:
    - GET
    headers:
    - authorization
    credentials: true
  max-age: 3600
  expose:
    headers:
    - x-request-id
authorization:
  jwt0:
    credentials:
      headers:
        authorization: Bearer {credentials}
      query:
        access_token: "{credentials}"
      cookies:
        access_token: "{credentials}"
"#;

    #[test]
    fn options_round_trip() {
        let options: HttpOptions = serde_yaml::from_str(OPTIONS).unwrap();
        assert_eq!(
            options.versions,
            Some(vec![HttpVersion::Http11, HttpVersion::H2])
        );
        let access = options.access_control.as_ref().unwrap();
        assert_eq!(access.policy, Policy::CrossOrigin);
        assert_eq!(access.max_age, Some(3600));
        let credentials = &options.authorization.as_ref().unwrap()["jwt0"].credentials;
        assert_eq!(
            credentials.headers.as_ref().unwrap()["authorization"],
            "Bearer {credentials}"
        );
        let again: HttpOptions =
            serde_yaml::from_str(&serde_yaml::to_string(&options).unwrap()).unwrap();
        assert_eq!(options, again);
    }

    #[test]
    fn defaults_and_unknown_keys() {
        let options: HttpOptions = serde_yaml::from_str("{}").unwrap();
        assert_eq!(options, HttpOptions::default());
        let access: AccessControl = serde_yaml::from_str("{}").unwrap();
        assert_eq!(access.policy, Policy::SameOrigin);

        let error = serde_yaml::from_str::<HttpOptions>("version: [h2]\n").unwrap_err();
        assert!(
            error.to_string().contains("unknown field `version`"),
            "{error}"
        );
        let error = serde_yaml::from_str::<HttpOptions>("versions: [h3]\n").unwrap_err();
        assert!(
            error.to_string().contains("unknown variant `h3`"),
            "{error}"
        );
        let error =
            serde_yaml::from_str::<HttpOptions>("access-control: {maxAge: 3}\n").unwrap_err();
        assert!(
            error.to_string().contains("unknown field `maxAge`"),
            "{error}"
        );
        let error = serde_yaml::from_str::<HttpOptions>(
            "authorization: {jwt0: {credentials: {header: {a: '{credentials}'}}}}\n",
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("unknown field `header`"),
            "{error}"
        );
    }
}
