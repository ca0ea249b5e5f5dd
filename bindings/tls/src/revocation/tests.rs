//! The revocation verifier on its own (handshakes are in
//! `tests/tls_revocation.rs`): webpki's verdicts with the lists as they
//! change, the choice among lists, and fetching from distribution points.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CrlDistributionPoint, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, Error, RootCertStore};
use zilla_engine::{Crl, CrlSet, Events, RevocationLists};

use super::RevocationVerifier;

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let der = params.self_signed(&key).unwrap().der().clone();
        Self {
            issuer: Issuer::new(params, key),
            der,
        }
    }

    /// A client certificate with `serial`, naming `crl_url` if given.
    fn client(&self, serial: u64, crl_url: Option<&str>) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![format!("device-{serial}")]).unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if let Some(url) = crl_url {
            params.crl_distribution_points = vec![CrlDistributionPoint {
                uris: vec![url.to_owned()],
            }];
        }
        params.signed_by(&key, &self.issuer).unwrap().der().clone()
    }

    /// A CRL revoking `serials`, issued in `year`, next update in `until`; DER.
    fn crl(&self, serials: &[u64], year: i32, until: i32) -> Vec<u8> {
        self.signed_crl(serials, year, until).der().to_vec()
    }

    fn signed_crl(
        &self,
        serials: &[u64],
        year: i32,
        until: i32,
    ) -> rcgen::CertificateRevocationList {
        CertificateRevocationListParams {
            this_update: date_time_ymd(year, 1, 1),
            next_update: date_time_ymd(until, 1, 1),
            crl_number: SerialNumber::from(u64::try_from(year).unwrap()),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from(*serial),
                    revocation_time: date_time_ymd(year, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .unwrap()
    }
}

/// Lists a test changes as it goes, as a vault's file would.
#[derive(Default)]
struct Lists(Mutex<Arc<CrlSet>>);

impl Lists {
    fn set(&self, ders: &[Vec<u8>]) {
        let mut lists = self.0.lock().unwrap();
        *lists = Arc::new(CrlSet {
            version: lists.version + 1,
            lists: ders
                .iter()
                .enumerate()
                .map(|(index, der)| Crl {
                    der: der.clone().into(),
                    source: format!("list-{index}.crl"),
                })
                .collect(),
        });
    }
}

impl RevocationLists for Lists {
    fn current(&self) -> Arc<CrlSet> {
        self.0.lock().unwrap().clone()
    }
}

fn verifier(trusted: &[&Ca], lists: Arc<Lists>) -> RevocationVerifier {
    let mut roots = RootCertStore::empty();
    for ca in trusted {
        roots.add(ca.der.clone()).unwrap();
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crate::provider());
    RevocationVerifier::new(builder, lists, Events::new("test", "revocation")).unwrap()
}

fn verify(verifier: &RevocationVerifier, leaf: &CertificateDer<'_>) -> Result<(), Error> {
    verifier
        .verify_client_cert(leaf, &[], UnixTime::now())
        .map(|_| ())
}

#[test]
fn webpki_decides_with_the_lists_as_they_are_now() {
    let (ca, other) = (Ca::new("Test CA"), Ca::new("Other CA"));
    let lists = Arc::new(Lists::default());
    lists.set(&[ca.crl(&[2], 2020, 2099)]);
    let verifier = verifier(&[&ca, &other], lists.clone());

    assert_eq!(verify(&verifier, &ca.client(1, None)), Ok(()));
    assert_eq!(
        verify(&verifier, &ca.client(2, None)),
        Err(Error::InvalidCertificate(CertificateError::Revoked))
    );
    assert_eq!(
        verify(&verifier, &other.client(2, None)),
        Ok(()),
        "an issuer without a list is not checked"
    );

    // The list changes: the next verification uses it.
    lists.set(&[ca.crl(&[1, 2], 2021, 2099)]);
    assert_eq!(
        verify(&verifier, &ca.client(1, None)),
        Err(Error::InvalidCertificate(CertificateError::Revoked))
    );

    // A list past its nextUpdate fails what it decides, and only that.
    lists.set(&[ca.crl(&[], 2020, 2021)]);
    assert!(matches!(
        verify(&verifier, &ca.client(3, None)),
        Err(Error::InvalidCertificate(
            CertificateError::ExpiredRevocationListContext { .. }
        ))
    ));
    assert_eq!(verify(&verifier, &other.client(3, None)), Ok(()));
}

#[test]
fn the_newest_list_of_an_issuer_decides() {
    let ca = Ca::new("Test CA");
    let lists = Arc::new(Lists::default());
    // The older one first, as a directory sorted by name may give them.
    lists.set(&[ca.crl(&[], 2020, 2021), ca.crl(&[5], 2022, 2099)]);
    let verifier = verifier(&[&ca], lists);
    assert_eq!(
        verify(&verifier, &ca.client(5, None)),
        Err(Error::InvalidCertificate(CertificateError::Revoked)),
        "not the stale 2020 list, which webpki would have taken first"
    );
    assert_eq!(verify(&verifier, &ca.client(6, None)), Ok(()));
}

#[test]
fn a_local_list_that_does_not_verify_fails_its_issuer() {
    let (ca, other) = (Ca::new("Test CA"), Ca::new("Other CA"));
    // Same name, another key: a list signed by the wrong CA key.
    let impostor = Ca::new("Test CA");
    let lists = Arc::new(Lists::default());
    lists.set(&[impostor.crl(&[], 2020, 2099)]);
    let verifier = verifier(&[&ca, &other], lists);
    assert!(matches!(
        verify(&verifier, &ca.client(1, None)),
        Err(Error::InvalidCertRevocationList(_))
    ));
    assert_eq!(verify(&verifier, &other.client(1, None)), Ok(()));
}

/// An HTTP server on a free port answering every GET with `body`.
struct Distribution {
    url: String,
    body: Arc<Mutex<Vec<u8>>>,
    requests: Arc<AtomicUsize>,
}

impl Distribution {
    fn start(body: Vec<u8>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/ca.crl", listener.local_addr().unwrap());
        let body = Arc::new(Mutex::new(body));
        let requests = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (body.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let body = served.lock().unwrap().clone();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        Self {
            url,
            body,
            requests,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Waits until no fetch is under way and `done` holds.
fn settle(verifier: &RevocationVerifier, done: impl Fn() -> bool) {
    for _ in 0..500 {
        if verifier.fetcher.idle() && done() {
            return;
        }
        // Polling interval; the condition decides.
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the fetch did not settle");
}

#[test]
fn a_distribution_point_is_fetched_in_the_background_and_cached() {
    let ca = Ca::new("Test CA");
    let server = Distribution::start(ca.crl(&[2], 2020, 2099));
    let verifier = verifier(&[&ca], Arc::new(Lists::default()));
    let revoked = ca.client(2, Some(&server.url));

    // Not there yet: the handshake goes on, unchecked.
    assert_eq!(verify(&verifier, &revoked), Ok(()));
    settle(&verifier, || verifier.fetcher.lists().lists.len() == 1);
    assert_eq!(
        verify(&verifier, &revoked),
        Err(Error::InvalidCertificate(CertificateError::Revoked))
    );
    assert_eq!(verify(&verifier, &ca.client(3, Some(&server.url))), Ok(()));
    settle(&verifier, || true);
    assert_eq!(server.requests(), 1, "cached until its nextUpdate");
}

#[test]
fn a_pem_answer_is_taken_too() {
    let ca = Ca::new("Test CA");
    let pem = ca.signed_crl(&[2], 2020, 2099).pem().unwrap();
    let server = Distribution::start(pem.into_bytes());
    let verifier = verifier(&[&ca], Arc::new(Lists::default()));
    let revoked = ca.client(2, Some(&server.url));
    assert_eq!(verify(&verifier, &revoked), Ok(()));
    settle(&verifier, || verifier.fetcher.lists().lists.len() == 1);
    assert_eq!(
        verify(&verifier, &revoked),
        Err(Error::InvalidCertificate(CertificateError::Revoked))
    );
}

#[test]
fn a_fetched_list_that_does_not_verify_is_not_used() {
    let ca = Ca::new("Test CA");
    // Same name, another key: what a tampered answer would carry.
    let impostor = Ca::new("Test CA");
    let server = Distribution::start(impostor.crl(&[], 2020, 2099));
    let verifier = verifier(&[&ca], Arc::new(Lists::default()));
    let leaf = ca.client(2, Some(&server.url));
    assert_eq!(verify(&verifier, &leaf), Ok(()));
    settle(&verifier, || server.requests() == 1);
    assert!(verifier.fetcher.lists().lists.is_empty());
    assert_eq!(
        verify(&verifier, &leaf),
        Ok(()),
        "not refused for a list webpki cannot verify"
    );

    // The CA's own list, once served, is taken at the next attempt (a
    // minute later; the test does not wait for it).
    *server.body.lock().unwrap() = ca.crl(&[2], 2020, 2099);
    assert!(verifier.fetcher.lists().lists.is_empty());
}

#[test]
fn a_certificate_that_does_not_verify_fetches_nothing() {
    let (ca, stranger) = (Ca::new("Test CA"), Ca::new("Stranger CA"));
    let server = Distribution::start(stranger.crl(&[], 2020, 2099));
    let verifier = verifier(&[&ca], Arc::new(Lists::default()));
    let leaf = stranger.client(1, Some(&server.url));
    assert_eq!(
        verify(&verifier, &leaf),
        Err(Error::InvalidCertificate(CertificateError::UnknownIssuer))
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(server.requests(), 0, "a stranger's URL is not requested");
}

#[test]
fn a_local_list_hides_the_distribution_point() {
    let ca = Ca::new("Test CA");
    let server = Distribution::start(ca.crl(&[], 2020, 2099));
    let lists = Arc::new(Lists::default());
    lists.set(&[ca.crl(&[2], 2020, 2099)]);
    let verifier = verifier(&[&ca], lists);
    assert_eq!(verify(&verifier, &ca.client(1, Some(&server.url))), Ok(()));
    assert_eq!(
        verify(&verifier, &ca.client(2, Some(&server.url))),
        Err(Error::InvalidCertificate(CertificateError::Revoked))
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(server.requests(), 0);
}

#[test]
fn serials_read_as_openssl_prints_them() {
    assert_eq!(super::serial(&[0x00, 0x9F, 0x01]), "9F01");
    assert_eq!(super::serial(&[0x00]), "00");
    assert_eq!(super::serial(&[0x12]), "12");
}
