//! Which server names a certificate serves, a resolver that picks the
//! certificate for a ClientHello's SNI, and the names events give a client
//! certificate by.
//!
//! rustls's own SNI resolver accepts only certificates whose subjectAltName
//! lists the name; Java-made keystores (like the seed's `localhost.p12`) often
//! carry only a CN. Here a certificate serves its DNS subjectAltNames or, when
//! it has none, its subject CN.

use std::fmt;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};
use zilla_engine::telemetry::text;

/// The DNS names `der` serves: its subjectAltName DNS entries, else its CN.
pub(crate) fn certificate_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let alt_names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if !alt_names.is_empty() {
        return alt_names;
    }
    cert.subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_ascii_lowercase))
        .collect()
}

/// Longest name an event quotes: a certificate is the client's to write,
/// and an event line is not the place for all of it.
const MAX_NAME: usize = 128;

/// The subject and issuer of a client certificate, as events name it: each
/// its common name (CN), or its whole distinguished name when it has none.
/// Shown quoted and escaped (`subject "device-1", issuer "Test CA"`), so a
/// name with control characters cannot forge an event line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertificateNames {
    pub(crate) subject: String,
    pub(crate) issuer: String,
    /// The whole subject distinguished name, as the identity a client
    /// certificate gives the stream (`StreamInfo::identity`).
    pub(crate) distinguished: String,
}

impl CertificateNames {
    /// The names of the certificate `der`, if it parses at all.
    pub(crate) fn of(der: &[u8]) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let name = |name: &x509_parser::x509::X509Name<'_>| {
            let cn = name
                .iter_common_name()
                .find_map(|cn| cn.as_str().ok().map(str::to_owned));
            let mut text = cn.unwrap_or_else(|| name.to_string());
            if text.len() > MAX_NAME {
                let mut end = MAX_NAME;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
                text.push('…');
            }
            text
        };
        Some(Self {
            subject: name(cert.subject()),
            issuer: name(cert.issuer()),
            distinguished: cert.subject().to_string(),
        })
    }
}

impl fmt::Display for CertificateNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "subject {}, issuer {}",
            text(&self.subject),
            text(&self.issuer)
        )
    }
}

/// Whether `pattern` (`name` or `*.domain`) matches the server name `name`.
pub(crate) fn name_matches(pattern: &str, name: &str) -> bool {
    let (pattern, name) = (pattern.to_ascii_lowercase(), name.to_ascii_lowercase());
    match pattern.strip_prefix("*.") {
        Some(domain) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == domain),
        None => pattern == name,
    }
}

/// Picks a certificate by SNI; without SNI, the first one.
pub(crate) struct SniResolver {
    keys: Vec<(Vec<String>, Arc<CertifiedKey>)>,
}

impl SniResolver {
    pub(crate) fn new(keys: Vec<(Vec<String>, Arc<CertifiedKey>)>) -> Self {
        Self { keys }
    }
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|(names, _)| names))
            .finish()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match hello.server_name() {
            Some(sni) => self
                .keys
                .iter()
                .find(|(names, _)| names.iter().any(|pattern| name_matches(pattern, sni)))
                .map(|(_, key)| key.clone()),
            None => self.keys.first().map(|(_, key)| key.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_one_label() {
        assert!(name_matches("*.example.com", "mqtt.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", "a.mqtt.example.com"));
        assert!(name_matches("LocalHost", "localhost"));
    }

    #[test]
    fn certificate_names_cannot_forge_event_lines() {
        let names = CertificateNames {
            subject: "evil\n2026-01-01 WARN forged".into(),
            issuer: "Test \"CA\"".into(),
            distinguished: String::new(),
        };
        assert_eq!(
            names.to_string(),
            r#"subject "evil\n2026-01-01 WARN forged", issuer "Test \"CA\"""#
        );
    }
}
