//! The certificate fields identity, attributes and roles are read from, as
//! Zilla names them, and their values on one certificate.
//!
//! A field may have several values (two OUs, several DNS names) or none; a
//! field the certificate does not carry is simply absent.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::OID_X509_EXT_SUBJECT_ALT_NAME;

use crate::names::{self, NameAttribute};

/// One field of a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Field {
    /// `subject.dn`: the canonical subject name.
    SubjectDn,
    /// `subject.<attribute>`.
    Subject(NameAttribute),
    /// `issuer.dn`.
    IssuerDn,
    /// `issuer.<attribute>`.
    Issuer(NameAttribute),
    /// `san.dns`.
    SanDns,
    /// `san.uri`.
    SanUri,
    /// `san.email` (rfc822Name).
    SanEmail,
    /// `san.ip`.
    SanIp,
    /// `x5t.s256`: base64url of the SHA-256 of the DER certificate.
    X5tS256,
}

impl Field {
    /// The field Zilla identifies a session by when `identity` is not set.
    pub(crate) const DEFAULT_IDENTITY: Field = Field::SubjectDn;

    /// The field named `name`, or why there is none.
    pub(crate) fn parse(name: &str) -> Result<Self, String> {
        let field = match name {
            "subject.dn" => Some(Field::SubjectDn),
            "issuer.dn" => Some(Field::IssuerDn),
            "san.dns" => Some(Field::SanDns),
            "san.uri" => Some(Field::SanUri),
            "san.email" => Some(Field::SanEmail),
            "san.ip" => Some(Field::SanIp),
            "x5t.s256" => Some(Field::X5tS256),
            _ => match name.split_once('.') {
                Some(("subject", suffix)) => NameAttribute::from_suffix(suffix).map(Field::Subject),
                Some(("issuer", suffix)) => NameAttribute::from_suffix(suffix).map(Field::Issuer),
                _ => None,
            },
        };
        field.ok_or_else(|| unknown(name))
    }

    fn part(self) -> Part {
        match self {
            Field::SubjectDn => Part::SubjectDn,
            Field::Subject(_) => Part::SubjectAttributes,
            Field::IssuerDn => Part::IssuerDn,
            Field::Issuer(_) => Part::IssuerAttributes,
            Field::SanDns | Field::SanUri | Field::SanEmail | Field::SanIp => Part::Sans,
            Field::X5tS256 => Part::Thumbprint,
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::SubjectDn => f.write_str("subject.dn"),
            Field::Subject(attribute) => write!(f, "subject.{}", attribute.suffix()),
            Field::IssuerDn => f.write_str("issuer.dn"),
            Field::Issuer(attribute) => write!(f, "issuer.{}", attribute.suffix()),
            Field::SanDns => f.write_str("san.dns"),
            Field::SanUri => f.write_str("san.uri"),
            Field::SanEmail => f.write_str("san.email"),
            Field::SanIp => f.write_str("san.ip"),
            Field::X5tS256 => f.write_str("x5t.s256"),
        }
    }
}

fn unknown(name: &str) -> String {
    let attributes: Vec<&str> = NameAttribute::ALL.iter().map(|a| a.suffix()).collect();
    let attributes = attributes.join("|");
    let mut message = format!(
        "unknown certificate field `{name}`; the fields are subject.dn, \
         subject.<{attributes}>, issuer.dn, issuer.<{attributes}>, san.dns, san.uri, \
         san.email, san.ip and x5t.s256"
    );
    let lower = name.to_ascii_lowercase();
    if lower != name && Field::parse(&lower).is_ok() {
        message.push_str(&format!(" (field names are lower case: `{lower}`)"));
    } else if let Some((_, suffix)) = lower
        .split_once('.')
        .filter(|(part, _)| *part == "subject" || *part == "issuer")
    {
        if matches!(suffix, "email" | "emailaddress" | "e") {
            message.push_str(
                " (Zilla reads only the RFC 2253 keyword attributes of a name; \
                 an e-mail address is usually in san.email)",
            );
        } else {
            message.push_str(" (Zilla reads only the RFC 2253 keyword attributes of a name)");
        }
    }
    message
}

/// The parts of a certificate a guard reads, so that it computes no more.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Needs(u8);

#[derive(Debug, Clone, Copy)]
enum Part {
    SubjectDn = 1,
    SubjectAttributes = 2,
    IssuerDn = 4,
    IssuerAttributes = 8,
    Sans = 16,
    Thumbprint = 32,
}

impl Needs {
    /// Also read what `field` needs.
    pub(crate) fn add(&mut self, field: Field) {
        self.0 |= field.part() as u8;
    }

    fn has(self, part: Part) -> bool {
        self.0 & part as u8 != 0
    }
}

/// The values of the fields of one certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Fields {
    values: Vec<(Field, Vec<String>)>,
}

impl Fields {
    /// The fields of `certificate` that `needs` asks for. Fails only for a
    /// subjectAltName extension that is repeated, or critical and
    /// unreadable: a certificate Java (and so Zilla) refuses to parse.
    pub(crate) fn resolve(certificate: &X509Certificate<'_>, needs: Needs) -> Result<Self, String> {
        let mut fields = Fields::default();
        let tbs = &certificate.tbs_certificate;
        if needs.has(Part::SubjectDn) {
            fields.add(Field::SubjectDn, names::canonical(&tbs.subject));
        }
        if needs.has(Part::SubjectAttributes) {
            names::relative_values(&tbs.subject, |attribute, value| {
                fields.add(Field::Subject(attribute), value)
            });
        }
        if needs.has(Part::IssuerDn) {
            fields.add(Field::IssuerDn, names::canonical(&tbs.issuer));
        }
        if needs.has(Part::IssuerAttributes) {
            names::relative_values(&tbs.issuer, |attribute, value| {
                fields.add(Field::Issuer(attribute), value)
            });
        }
        // Checked whatever the fields read, so that a certificate is refused
        // or not whatever the configuration.
        let extension = certificate
            .get_extension_unique(&OID_X509_EXT_SUBJECT_ALT_NAME)
            .map_err(|_| "the leaf has more than one subjectAltName extension".to_owned())?;
        match extension.map(|e| (e.critical, e.parsed_extension())) {
            Some((_, ParsedExtension::SubjectAlternativeName(sans))) => {
                if needs.has(Part::Sans) {
                    fields.add_sans(&sans.general_names)
                }
            }
            // Java refuses a certificate whose critical extension does not
            // parse, and reads no names from a non-critical one.
            Some((true, _)) => {
                return Err("the leaf's critical subjectAltName does not parse".to_owned())
            }
            Some((false, _)) | None => {}
        }
        if needs.has(Part::Thumbprint) {
            let digest = ring::digest::digest(&ring::digest::SHA256, certificate.as_raw());
            fields.add(Field::X5tS256, URL_SAFE_NO_PAD.encode(digest.as_ref()));
        }
        Ok(fields)
    }

    /// Every value of `field`, in certificate order.
    pub(crate) fn values(&self, field: Field) -> &[String] {
        self.values
            .iter()
            .find(|(f, _)| *f == field)
            .map_or(&[], |(_, values)| values.as_slice())
    }

    /// The first value of `field`, which is what identity and attributes take.
    pub(crate) fn first(&self, field: Field) -> Option<&str> {
        self.values(field).first().map(String::as_str)
    }

    fn add(&mut self, field: Field, value: String) {
        match self.values.iter_mut().find(|(f, _)| *f == field) {
            Some((_, values)) => values.push(value),
            None => self.values.push((field, vec![value])),
        }
    }

    /// DNS names, URIs, e-mail addresses and IP addresses, in extension order.
    /// As in Java, an IP address of a length no address has makes the whole
    /// extension unreadable, so none of its names are fields.
    fn add_sans(&mut self, names: &[GeneralName<'_>]) {
        let mut sans = Vec::with_capacity(names.len());
        for name in names {
            match name {
                GeneralName::DNSName(value) => sans.push((Field::SanDns, (*value).to_owned())),
                GeneralName::URI(value) => sans.push((Field::SanUri, (*value).to_owned())),
                GeneralName::RFC822Name(value) => sans.push((Field::SanEmail, (*value).to_owned())),
                GeneralName::IPAddress(bytes) => match ip_text(bytes) {
                    Some(text) => sans.push((Field::SanIp, text)),
                    None => return,
                },
                _ => {}
            }
        }
        for (field, value) in sans {
            self.add(field, value);
        }
    }
}

/// An iPAddress as Java's `IPAddressName.getName()` writes it: dotted IPv4;
/// IPv6 as eight lower-case hex groups without `::` compression
/// (`2001:db8:0:0:0:0:0:1`), an IPv4-mapped one as IPv4; with a mask
/// (8 or 32 bytes) `address/mask` for IPv4 and `address/prefix` for IPv6.
fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => Some(ipv4(&bytes[..4])),
        8 => Some(format!("{}/{}", ipv4(&bytes[..4]), ipv4(&bytes[4..]))),
        16 => Some(ipv6(&bytes[..16])),
        32 => {
            let mask = u128::from_be_bytes(bytes[16..].try_into().ok()?);
            let prefix = mask.leading_ones();
            // Java refuses a mask whose ones are not contiguous.
            if prefix < 128 && mask << prefix != 0 {
                return None;
            }
            Some(format!("{}/{prefix}", ipv6(&bytes[..16])))
        }
        _ => None,
    }
}

fn ipv4(bytes: &[u8]) -> String {
    Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string()
}

fn ipv6(bytes: &[u8]) -> String {
    let octets: [u8; 16] = bytes.try_into().unwrap_or([0; 16]);
    let address = Ipv6Addr::from(octets);
    if let Some(v4) = address.to_ipv4_mapped() {
        return v4.to_string();
    }
    address
        .segments()
        .iter()
        .map(|segment| format!("{segment:x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_name_reads_back() {
        let mut names = vec![
            "subject.dn",
            "issuer.dn",
            "san.dns",
            "san.uri",
            "san.email",
            "san.ip",
            "x5t.s256",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        for attribute in NameAttribute::ALL {
            names.push(format!("subject.{}", attribute.suffix()));
            names.push(format!("issuer.{}", attribute.suffix()));
        }
        for name in names {
            assert_eq!(Field::parse(&name).unwrap().to_string(), name);
        }
    }

    #[test]
    fn unknown_fields_are_explained() {
        let message = Field::parse("subject.CN").unwrap_err();
        assert!(message.contains("lower case: `subject.cn`"), "{message}");
        let message = Field::parse("subject.emailaddress").unwrap_err();
        assert!(message.contains("san.email"), "{message}");
        let message = Field::parse("subject.serialnumber").unwrap_err();
        assert!(message.contains("RFC 2253 keyword"), "{message}");
        for name in ["", "dn", "subject", "subject.", "san.dn", "x5t", "x5t#S256"] {
            let message = Field::parse(name).unwrap_err();
            assert!(message.starts_with(&format!("unknown certificate field `{name}`")));
        }
    }

    #[test]
    fn ip_addresses_are_written_as_java_writes_them() {
        assert_eq!(ip_text(&[10, 1, 2, 3]).unwrap(), "10.1.2.3");
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(ip_text(&v6.octets()).unwrap(), "2001:db8:0:0:0:0:0:1");
        let mapped: Ipv6Addr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ip_text(&mapped.octets()).unwrap(), "192.0.2.7");
        assert_eq!(
            ip_text(&Ipv6Addr::LOCALHOST.octets()).unwrap(),
            "0:0:0:0:0:0:0:1"
        );
        assert_eq!(
            ip_text(&[10, 0, 0, 0, 255, 255, 255, 0]).unwrap(),
            "10.0.0.0/255.255.255.0"
        );
        let mut subnet = v6.octets().to_vec();
        subnet.extend_from_slice(&(u128::MAX << 64).to_be_bytes());
        assert_eq!(ip_text(&subnet).unwrap(), "2001:db8:0:0:0:0:0:1/64");
        subnet[31] = 1;
        assert_eq!(ip_text(&subnet), None, "a mask with a gap");
        assert_eq!(ip_text(&[1, 2, 3]), None);
    }
}
