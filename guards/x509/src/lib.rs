//! `type: x509` guard: turns a client certificate chain, already verified by
//! the TLS handshake, into a session's identity, roles and attributes, as
//! Zilla's x509 guard does.
//!
//! The credentials are the chain as PEM, leaf first (what a tls server hands
//! its guard). The guard checks no signature, trust or validity period (the
//! handshake did); it reads fields of the leaf:
//!
//! - `subject.dn`, `issuer.dn`: the name in Java's canonical form, as Zilla
//!   compares it: `cn=platform.example.com,ou=engineering,o=example inc,c=us`
//!   (RFC 2253 order, lower case, no spaces after separators, RFC 2253
//!   escaping; values that are neither PrintableString nor UTF8String, and
//!   attributes other than the keywords below, as `#` and DER hex);
//! - `subject.<a>`, `issuer.<a>` for the RFC 2253 keywords `cn c l st o ou
//!   street dc uid`: each value as written (`Example Inc`), decoded from its
//!   string type (UTF8String, PrintableString, IA5String, TeletexString as
//!   Latin-1, BMPString as UTF-16BE, UniversalString as UTF-32BE);
//! - `san.dns`, `san.uri`, `san.email`, `san.ip` (Java's text for addresses:
//!   `10.1.2.3`, `2001:db8:0:0:0:0:0:1`);
//! - `x5t.s256`: base64url without padding of the SHA-256 of the leaf's DER,
//!   JOSE's `x5t#S256`.
//!
//! A field may have several values (two OUs, several DNS names): a role's
//! glob matches when any value does, identity and attributes take the first
//! in certificate order. A role lists matches that are alternatives; the
//! fields of one match must all match (globs: `*`, `?`, whole value, ASCII
//! case ignored); a field the certificate lacks matches nothing. A leaf
//! without the identity field is refused, naming the field. The session
//! ends at the leaf's notAfter, as a JWT session ends at `exp`.

#![forbid(unsafe_code)]

mod fields;
mod names;
mod options;
mod roles;
mod schema;
mod subject;
mod text;

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use rustls_pki_types::pem::{PemObject, SectionKind};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use zilla_engine::{
    async_trait, register_guard, BuildError, Guard, GuardFactory, GuardRejection, GuardSession,
    PluginContext,
};

use fields::{Field, Fields, Needs};
pub use options::{OptionError, X509Options};
use roles::Role;
pub use subject::{canonical_name, KeySubject};

/// A built x509 guard.
#[derive(Debug)]
pub struct X509Guard {
    identity: Field,
    attributes: Vec<(String, Field)>,
    roles: Vec<Role>,
    needs: Needs,
}

impl X509Guard {
    /// A guard from its options, or every fault in them.
    pub fn new(options: &X509Options) -> Result<Self, Vec<OptionError>> {
        let compiled = options.compile()?;
        Ok(Self {
            identity: compiled.identity,
            attributes: compiled.attributes,
            roles: compiled.roles,
            needs: compiled.needs,
        })
    }

    /// The session `chain` (PEM certificates, leaf first) grants; what
    /// [`Guard::authorize`] answers.
    pub fn session(&self, chain: &str) -> Result<GuardSession, GuardRejection> {
        let chain = unescape(chain);
        if chain.is_empty() {
            return Err(invalid("empty certificate chain"));
        }
        let ders = pem_certificates(&chain)?;
        let mut leaf = None;
        for (index, der) in ders.iter().enumerate() {
            let certificate = match X509Certificate::from_der(der) {
                Ok(([], certificate)) => certificate,
                Ok(_) => {
                    return Err(unparseable(format!(
                        "certificate {index} has bytes after its end"
                    )))
                }
                Err(e) => {
                    return Err(unparseable(format!(
                        "certificate {index} is not an X.509 certificate ({e})"
                    )))
                }
            };
            if index == 0 {
                leaf = Some(certificate);
            }
        }
        let leaf = leaf.ok_or_else(|| unparseable("it holds no certificate".into()))?;
        let fields = Fields::resolve(&leaf, self.needs).map_err(unparseable)?;

        let identity = match fields.first(self.identity) {
            None => {
                return Err(invalid(format!(
                    "the certificate has no {} for the identity",
                    self.identity
                )))
            }
            Some("") => {
                return Err(invalid(format!(
                    "the certificate's {} (the identity) is empty",
                    self.identity
                )))
            }
            Some(identity) => identity.to_owned(),
        };
        let attributes = self
            .attributes
            .iter()
            .filter_map(|(name, field)| Some((name.clone(), fields.first(*field)?.to_owned())))
            .collect();
        let not_after = leaf.validity().not_after.timestamp();
        let expires_at = match u64::try_from(not_after) {
            Ok(seconds) => UNIX_EPOCH + Duration::from_secs(seconds),
            Err(_) => UNIX_EPOCH - Duration::from_secs(not_after.unsigned_abs()),
        };
        Ok(GuardSession {
            identity: Some(identity),
            roles: roles::granted(&self.roles, &fields),
            attributes,
            expires_at: Some(expires_at),
        })
    }
}

/// Zilla's leniency for a chain whose newlines were escaped on the way
/// (`\n` as two characters), then surrounding whitespace trimmed.
fn unescape(credentials: &str) -> String {
    credentials
        .replace("\\r\\n", "\n")
        .replace("\\n", "\n")
        .replace("\\r", "\n")
        .trim()
        .to_owned()
}

/// A PEM section's label, as the PEM itself spells it.
fn section_name(kind: SectionKind) -> &'static str {
    match kind {
        SectionKind::Certificate => "CERTIFICATE",
        SectionKind::PublicKey => "PUBLIC KEY",
        SectionKind::RsaPrivateKey => "RSA PRIVATE KEY",
        SectionKind::PrivateKey => "PRIVATE KEY",
        SectionKind::EcPrivateKey => "EC PRIVATE KEY",
        SectionKind::Crl => "X509 CRL",
        SectionKind::Csr => "CERTIFICATE REQUEST",
        SectionKind::EchConfigList => "ECHCONFIG",
        _ => "non-certificate",
    }
}

/// The DER of each `CERTIFICATE` section, in order. Any other section (a
/// private key sent by mistake) refuses the chain, named by its kind only.
fn pem_certificates(chain: &str) -> Result<Vec<Vec<u8>>, GuardRejection> {
    let mut ders = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(chain.as_bytes()) {
        match section {
            Ok((SectionKind::Certificate, der)) => ders.push(der),
            Ok((kind, _)) => {
                return Err(unparseable(format!(
                    "it holds a {} section, which is not a certificate",
                    section_name(kind)
                )))
            }
            // The PEM errors can quote the offending line; say less.
            Err(_) => return Err(unparseable("it is not well-formed PEM".into())),
        }
    }
    Ok(ders)
}

fn unparseable(why: String) -> GuardRejection {
    invalid(format!("unable to parse certificate chain: {why}"))
}

fn invalid(reason: impl Into<String>) -> GuardRejection {
    GuardRejection::InvalidCredentials(reason.into())
}

#[async_trait]
impl Guard for X509Guard {
    async fn authorize(&self, credentials: &str) -> Result<GuardSession, GuardRejection> {
        self.session(credentials)
    }
}

fn build(cx: &mut PluginContext<'_>) -> Result<Arc<dyn Guard>, BuildError> {
    let options: X509Options = cx.options()?;
    match X509Guard::new(&options) {
        Ok(guard) => Ok(Arc::new(guard)),
        Err(errors) => {
            let mut last = None;
            for error in errors {
                last = Some(cx.error(&format!("options.{}", error.path), error.message));
            }
            Err(last.unwrap_or_else(|| cx.error("options", "invalid options")))
        }
    }
}

register_guard!(GuardFactory {
    type_name: "x509",
    build,
});

#[cfg(test)]
mod tests;
