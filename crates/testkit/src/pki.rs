//! A throwaway certificate authority for TLS tests: a CA, server and client
//! certificates it issues, written as PEM files a vault or mosquitto can read.

use std::path::{Path, PathBuf};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};

/// A CA that issues certificates.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA certificate, DER.
    pub cert_der: Vec<u8>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// An issued certificate and its key.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Certificate PEM.
    pub cert_pem: String,
    /// Certificate DER.
    pub cert_der: Vec<u8>,
    /// Private key PEM (PKCS#8).
    pub key_pem: String,
    /// Private key DER (PKCS#8).
    pub key_der: Vec<u8>,
}

impl Issued {
    /// Key and certificate in one PEM file, as the filesystem vault reads a PEM key store.
    pub fn write_pem(&self, path: &Path) -> PathBuf {
        std::fs::write(path, format!("{}{}", self.cert_pem, self.key_pem))
            .expect("writable temp dir");
        path.to_path_buf()
    }
}

/// A calendar day (year, month, day), UTC midnight, for validity periods.
pub type Day = (i32, u8, u8);

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("a key pair");
        let params = Self::ca_params(name);
        let cert = params.self_signed(&key).expect("a CA certificate");
        Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An intermediate CA named `name`, issued by this CA: what it issues
    /// chains to this CA through `cert_der` of the intermediate.
    pub fn intermediate(&self, name: &str) -> Self {
        let key = KeyPair::generate().expect("a key pair");
        let params = Self::ca_params(name);
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("an intermediate CA certificate");
        Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    fn ca_params(name: &str) -> CertificateParams {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
    }

    /// A client certificate whose subject CN is `name`, valid from
    /// `not_before` until `not_after` (e.g. an expired one, or one not
    /// valid yet).
    pub fn client_valid(&self, name: &str, not_before: Day, not_after: Day) -> Issued {
        self.issue_with(&[name], ExtendedKeyUsagePurpose::ClientAuth, |params| {
            params.not_before = date_time_ymd(not_before.0, not_before.1, not_before.2);
            params.not_after = date_time_ymd(not_after.0, not_after.1, not_after.2);
        })
    }

    /// A server certificate for `names` (DNS names, or IP addresses).
    pub fn server(&self, names: &[&str]) -> Issued {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate whose subject CN is `name`.
    pub fn client(&self, name: &str) -> Issued {
        self.issue(&[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A client certificate whose subject CN is `name`, with serial number
    /// `serial` (so that a [`crl_pem`](Self::crl_pem) can revoke it).
    pub fn client_serial(&self, name: &str, serial: u64) -> Issued {
        self.issue_with(&[name], ExtendedKeyUsagePurpose::ClientAuth, |params| {
            params.serial_number = Some(SerialNumber::from(serial));
        })
    }

    /// A CRL of this CA (PEM) revoking the certificates with `serials`,
    /// valid from 2020 to 2099.
    pub fn crl_pem(&self, serials: &[u64]) -> String {
        CertificateRevocationListParams {
            this_update: date_time_ymd(2020, 1, 1),
            next_update: date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(1),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from(*serial),
                    revocation_time: date_time_ymd(2020, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .and_then(|crl| crl.pem())
        .expect("a CRL")
    }

    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Issued {
        self.issue_with(names, usage, |_| {})
    }

    fn issue_with(
        &self,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Issued {
        let key = KeyPair::generate().expect("a key pair");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*name).try_into().expect("a DNS name")),
            })
            .collect();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![usage];
        adjust(&mut params);
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("an issued certificate");
        Issued {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }
}
