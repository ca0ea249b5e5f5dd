//! A key's certificate as the fields `subject.cn` and `subject.dn` hold it,
//! for a tls client that selects the key it presents by them
//! (`routes[].with.certificate`, Zilla 2.2), and names written as text in
//! the same canonical form.
//!
//! The tls binding reads its keys with this guard's own code, rather than a
//! copy, so that an identity this guard granted
//! (`${guarded['x509_0'].identity}`, a CN or a canonical DN) compares equal
//! to the key's field whatever the certificate's encoding. The dependency
//! runs from the binding to the guard only (the guard depends on the engine
//! alone), so there is no cycle.

use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::fields::{Field, Fields, Needs};
use crate::names::NameAttribute;

/// What a client key is selected by, read once from its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySubject {
    /// `subject.dn`: the canonical subject name
    /// (`cn=device-1,o=example inc,c=us`).
    pub dn: String,
    /// `subject.cn`: every common name of the subject, in certificate order
    /// (usually one), as written.
    pub common_names: Vec<String>,
    /// `x5t.s256`: base64url of the SHA-256 of the certificate, which Zilla
    /// orders keys by when their notBefore is the same.
    pub thumbprint: String,
    /// The certificate's notBefore, in seconds since the Unix epoch.
    pub not_before: i64,
    /// The certificate's notAfter, in seconds since the Unix epoch.
    pub not_after: i64,
}

impl KeySubject {
    /// Reads the certificate `der` (a key's leaf), or says why it cannot be.
    pub fn of(der: &[u8]) -> Result<Self, String> {
        let certificate = match X509Certificate::from_der(der) {
            Ok(([], certificate)) => certificate,
            Ok(_) => return Err("the certificate has bytes after its end".into()),
            Err(e) => return Err(format!("not an X.509 certificate ({e})")),
        };
        let mut needs = Needs::default();
        for field in [
            Field::SubjectDn,
            Field::Subject(NameAttribute::Cn),
            Field::X5tS256,
        ] {
            needs.add(field);
        }
        let fields = Fields::resolve(&certificate, needs)?;
        Ok(Self {
            dn: fields
                .first(Field::SubjectDn)
                .unwrap_or_default()
                .to_owned(),
            common_names: fields.values(Field::Subject(NameAttribute::Cn)).to_vec(),
            thumbprint: fields.first(Field::X5tS256).unwrap_or_default().to_owned(),
            not_before: certificate.validity().not_before.timestamp(),
            not_after: certificate.validity().not_after.timestamp(),
        })
    }
}

/// The distinguished name `text` (`CN=device-1, O=Example Inc, C=US`) in
/// the canonical form of the field `subject.dn`
/// (`cn=device-1,o=example inc,c=us`), as Zilla canonicalizes a literal
/// `subject.dn` with Java's `X500Principal`; or why `text` is not a
/// distinguished name. Canonical names are their own canonical form.
pub fn canonical_name(text: &str) -> Result<String, String> {
    crate::text::canonical_text_name(text)
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, DnValue, KeyPair};

    use super::*;

    #[test]
    fn a_key_is_read_as_the_guard_reads_a_client_certificate() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "Device 1");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Example, Inc");
        params.distinguished_name.push(DnType::CountryName, "US");
        params.not_before = rcgen::date_time_ymd(2024, 5, 6);
        params.not_after = rcgen::date_time_ymd(2034, 5, 6);
        let cert = params.self_signed(&key).unwrap();
        let subject = KeySubject::of(cert.der()).unwrap();
        assert_eq!(subject.common_names, ["Device 1"]);
        // rcgen writes the name in this order; RFC 2253 writes it reversed.
        assert_eq!(subject.dn, r"c=us,o=example\, inc,cn=device 1");
        assert_eq!(subject.not_before, 1_714_953_600);
        assert_eq!(subject.not_after, 2_030_486_400);
        assert_eq!(subject.thumbprint.len(), 43);
        // A name written by hand, as Zilla's users write it, compares equal.
        assert_eq!(
            canonical_name(r"C=US, O=Example\, Inc, CN=Device 1").unwrap(),
            subject.dn
        );
        assert_eq!(canonical_name(&subject.dn).unwrap(), subject.dn);
        assert!(KeySubject::of(b"not a certificate").is_err());
    }

    #[test]
    fn canonical_names_of_certificates_are_fixed_points() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            DnValue::Utf8String("Café #1 <x>".into()),
        );
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, "  Two   Spaces ");
        params.distinguished_name.push(
            DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 25]),
            DnValue::Ia5String("com".try_into().unwrap()),
        );
        let cert = params.self_signed(&key).unwrap();
        let dn = KeySubject::of(cert.der()).unwrap().dn;
        assert_eq!(canonical_name(&dn).unwrap(), dn, "{dn}");
    }
}
