//! The tls binding's options and route conditions, as written in `zilla.yaml`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `options` of a tls binding.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// Aliases of keys in the vault's key store: the server's certificates, or
    /// a client's certificates for mutual TLS (the first is presented unless
    /// a route's `with.certificate` selects one by the stream's identity).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// Aliases of trusted certificates in the vault's trust store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust: Vec<String>,
    /// Also trust the system's CA certificates (default: true when `trust` is absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trustcacerts: Option<bool>,
    /// Server: the server names accepted (any when absent). Client: the name
    /// sent and verified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni: Vec<String>,
    /// Application protocols offered (client) or accepted (server), by preference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alpn: Vec<String>,
    /// Client certificates: `required`, `requested` or `none` (default `none`
    /// without `trust`, else `required`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutual: Option<Mutual>,
    /// Aliases of signer certificates in the vault. In Zilla they choose a
    /// binding's own keys by the CA that issued them (in place of `keys`);
    /// a tls server refuses them here (the vault cannot list keys by
    /// issuer), a client accepts and ignores them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signers: Vec<String>,
    /// The lowest protocol version: `TLSv1.2` (default) or `TLSv1.3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<TlsVersion>,
    /// Server: the one guard that decides on the verified client certificate
    /// chain, by guard name (`{<guard>: {credentials: {certificates: pem}}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<BTreeMap<String, TlsAuthorization>>,
}

/// `options.authorization.<guard>` of a tls server.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsAuthorization {
    /// How the guard is given the client's certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<TlsCredentials>,
}

/// `options.authorization.<guard>.credentials` of a tls server.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCredentials {
    /// The form of the certificate chain the guard reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<CertificatesFormat>,
}

/// How a certificate chain is handed to a guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertificatesFormat {
    /// Concatenated PEM `CERTIFICATE` blocks, the client's own certificate
    /// first, then the rest of the chain as it presented it.
    Pem,
}

/// Whether a server asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mutual {
    /// A trusted client certificate is required.
    Required,
    /// A client certificate is asked for; without one the handshake succeeds.
    Requested,
    /// No client certificate is asked for.
    None,
}

/// A TLS protocol version name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2 and later.
    #[serde(rename = "TLSv1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "TLSv1.3")]
    Tls13,
}

impl TlsVersion {
    pub(crate) fn versions(
        version: Option<Self>,
    ) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        static TLS12_AND_13: [&rustls::SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        match version {
            Some(TlsVersion::Tls13) => &TLS13_ONLY,
            _ => &TLS12_AND_13,
        }
    }
}

/// A route condition of a tls server or proxy; every field given must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCondition {
    /// The server name (SNI); `*.example.com` matches one label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// The negotiated (server) or offered (proxy) application protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpn: Option<String>,
    /// The local port the connection arrived on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl TlsCondition {
    /// Whether a stream with these facts meets the condition.
    pub fn matches(&self, authority: Option<&str>, alpn: &[&str], port: Option<u16>) -> bool {
        self.authority.as_deref().is_none_or(|pattern| {
            authority.is_some_and(|name| crate::names::name_matches(pattern, name))
        }) && self
            .alpn
            .as_deref()
            .is_none_or(|wanted| alpn.contains(&wanted))
            && self.port.is_none_or(|wanted| port == Some(wanted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip() {
        let yaml = "keys:\n- localhost\nsni:\n- localhost\nalpn:\n- mqtt\nmutual: requested\nversion: TLSv1.3\n";
        let options: TlsOptions = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(options.mutual, Some(Mutual::Requested));
        let again: TlsOptions =
            serde_yaml::from_str(&serde_yaml::to_string(&options).unwrap()).unwrap();
        assert_eq!(options, again);
        let error = serde_yaml::from_str::<TlsOptions>("key: [a]\n").unwrap_err();
        assert!(error.to_string().contains("unknown field `key`"), "{error}");
    }

    #[test]
    fn authorization_has_zillas_shape() {
        let yaml = "authorization:\n  x509_0:\n    credentials:\n      certificates: pem\n";
        let options: TlsOptions = serde_yaml::from_str(yaml).unwrap();
        let authorization = &options.authorization.as_ref().unwrap()["x509_0"];
        assert_eq!(
            authorization.credentials.as_ref().unwrap().certificates,
            Some(CertificatesFormat::Pem)
        );
        let again: TlsOptions =
            serde_yaml::from_str(&serde_yaml::to_string(&options).unwrap()).unwrap();
        assert_eq!(options, again);
        let der = "authorization:\n  g:\n    credentials:\n      certificates: der\n";
        let error = serde_yaml::from_str::<TlsOptions>(der).unwrap_err();
        assert!(
            error.to_string().contains("unknown variant `der`"),
            "{error}"
        );
    }

    #[test]
    fn conditions_match_sni_alpn_and_port() {
        let condition: TlsCondition =
            serde_yaml::from_str("authority: \"*.example.com\"\nalpn: mqtt\n").unwrap();
        assert!(condition.matches(Some("a.example.com"), &["mqtt"], None));
        assert!(!condition.matches(Some("a.b.example.com"), &["mqtt"], None));
        assert!(!condition.matches(Some("a.example.com"), &["h2"], None));
        assert!(!condition.matches(None, &["mqtt"], None));
    }
}
