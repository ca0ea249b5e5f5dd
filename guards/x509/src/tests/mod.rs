//! The guard against certificates made at test time with rcgen, issued by a
//! test CA. Names rcgen cannot write are hand-encoded DER put in place of an
//! rcgen certificate's subject ([`der`]); the guard checks no signature.

mod der;
mod fields;
mod guard;
mod options;

use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams, CustomExtension, DnType,
    DnValue, IsCa, Issuer, KeyPair, SanType,
};

use super::*;

/// The leaf's notAfter, 2030-01-02T00:00:00Z, in seconds since the epoch.
const NOT_AFTER: u64 = 1_893_542_400;

/// A test CA with a subject `C=US, O=Example Inc, CN=<cn>`.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(cn: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = dn(&[
            (DnType::CountryName, "US".into()),
            (DnType::OrganizationName, "Example Inc".into()),
            (DnType::CommonName, cn.into()),
        ]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let certificate = params.self_signed(&key).unwrap();
        Self {
            pem: certificate.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf with subject `subject` and subjectAltNames `sans`, valid until
    /// [`NOT_AFTER`].
    fn issue(&self, subject: &[(DnType, DnValue)], sans: Vec<SanType>) -> Certificate {
        self.issue_with(subject, sans, Vec::new())
    }

    /// [`issue`](Self::issue) with extensions of the test's own making.
    fn issue_with(
        &self,
        subject: &[(DnType, DnValue)],
        sans: Vec<SanType>,
        extensions: Vec<CustomExtension>,
    ) -> Certificate {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = dn(subject);
        params.subject_alt_names = sans;
        params.custom_extensions = extensions;
        params.not_before = date_time_ymd(2025, 1, 1);
        params.not_after = date_time_ymd(2030, 1, 2);
        params.signed_by(&key, &self.issuer).unwrap()
    }

    /// `leaf` followed by this CA, as a tls server hands the chain over.
    fn chain(&self, leaf: &Certificate) -> String {
        format!("{}{}", leaf.pem(), self.pem)
    }
}

fn dn(entries: &[(DnType, DnValue)]) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    for (ty, value) in entries {
        dn.push(ty.clone(), value.clone());
    }
    dn
}

fn ia5(text: &str) -> rcgen::string::Ia5String {
    text.try_into().unwrap()
}

/// The subject of the platform certificate:
/// `C=US, O=Example Inc, OU=Platform, CN=platform.example.com`.
fn platform_subject() -> Vec<(DnType, DnValue)> {
    vec![
        (DnType::CountryName, "US".into()),
        (DnType::OrganizationName, "Example Inc".into()),
        (DnType::OrganizationalUnitName, "Platform".into()),
        (DnType::CommonName, "platform.example.com".into()),
    ]
}

/// One subjectAltName of every kind the guard reads, two DNS names.
fn platform_sans() -> Vec<SanType> {
    vec![
        SanType::DnsName(ia5("platform.internal.example.com")),
        SanType::DnsName(ia5("events.internal.example.com")),
        SanType::URI(ia5("spiffe://example.com/ns/prod/sa/platform")),
        SanType::Rfc822Name(ia5("platform@example.com")),
        SanType::IpAddress("10.1.2.3".parse().unwrap()),
        SanType::IpAddress("2001:db8::1".parse().unwrap()),
    ]
}

/// The platform leaf issued by "Internal CA", and its chain.
fn platform() -> (Certificate, String) {
    let ca = Ca::new("Internal CA");
    let leaf = ca.issue(&platform_subject(), platform_sans());
    let chain = ca.chain(&leaf);
    (leaf, chain)
}

/// A leaf whose subject is the hand-encoded `subject`, as PEM.
fn with_subject(subject: &[&[der::Ava<'_>]]) -> String {
    let ca = Ca::new("Internal CA");
    let leaf = ca.issue(
        &[(DnType::CommonName, "placeholder".into())],
        vec![SanType::DnsName(ia5("placeholder.example.com"))],
    );
    der::pem(&der::replace_name(leaf.der(), false, &der::name(subject)))
}

fn guard(yaml: &str) -> X509Guard {
    let options: X509Options = serde_yaml::from_str(yaml).unwrap();
    X509Guard::new(&options).unwrap()
}

/// Every value of `field` on the leaf of `chain`.
fn values(chain: &str, field: &str) -> Vec<String> {
    let field = Field::parse(field).unwrap();
    let ders = pem_certificates(chain).unwrap();
    let (_, leaf) = X509Certificate::from_der(&ders[0]).unwrap();
    let mut needs = Needs::default();
    needs.add(field);
    Fields::resolve(&leaf, needs)
        .unwrap()
        .values(field)
        .to_vec()
}

fn rejected(result: Result<GuardSession, GuardRejection>) -> String {
    match result {
        Err(GuardRejection::InvalidCredentials(why)) => why,
        other => panic!("expected an invalid-credentials rejection, got {other:?}"),
    }
}
