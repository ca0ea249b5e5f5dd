//! Client certificates refused at the handshake: the alert a real rustls
//! client reads, the event and the count, and the acceptable CAs the
//! server advertises.

use std::fmt;

use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;

/// A server requiring a certificate from `clientca`, guarded by `x509_0`.
const REQUIRED: &str = r#"
    options:
      keys: [localhost]
      trust: [clientca]
      mutual: required
      authorization:
        x509_0:
          credentials:
            certificates: pem
    routes:
      - guarded:
          x509_0: [partner]
        exit: partner_app"#;

const GUARD: &str = "{ roles: { device-1: [partner] } }";

/// What a refused client read, and the one event and count it caused.
struct Refused {
    outcome: Outcome,
    event: (String, String),
}

async fn refused(served: &Served, events: &Captured, connector: &TlsConnector) -> Refused {
    let outcome = served.connect(connector).await;
    Refused {
        outcome,
        event: events.one(),
    }
}

/// TLS 1.3: the client finishes its handshake first and reads the alert
/// on its first read.
fn alert_after_handshake(alert: AlertDescription) -> Outcome {
    Outcome::Alert {
        alert,
        after_handshake: true,
    }
}

#[tokio::test]
async fn refused_client_certificates_read_their_alert() {
    let events = capture();
    let pki = Pki::new();
    let served = served("tls-refusals", &pki, GUARD, REQUIRED);
    let tls13 = |identity: Option<&Issued>| client(&pki, identity, &[], Version::Tls13);

    let none = refused(&served, &events, &tls13(None)).await;
    assert_eq!(
        none.outcome,
        alert_after_handshake(AlertDescription::CertificateRequired)
    );
    assert_eq!(
        none.event,
        (
            "TLS_HANDSHAKE_FAILED".to_owned(),
            "client 192.0.2.7:50000: handshake failed: no client certificate, and one is required; \
             alert certificate_required"
                .to_owned()
        )
    );

    let stranger = TestCa::new("Other CA").client("device-7");
    let unknown = refused(&served, &events, &tls13(Some(&stranger))).await;
    assert_eq!(
        unknown.outcome,
        alert_after_handshake(AlertDescription::UnknownCA)
    );
    assert_eq!(unknown.event.0, "TLS_HANDSHAKE_FAILED");
    assert!(
        unknown.event.1.starts_with(
            "client 192.0.2.7:50000: handshake failed: client certificate (subject device-7, issuer \
             \"Other CA\") refused (unknown_ca); alert unknown_ca"
        ),
        "{}",
        unknown.event.1
    );

    let old = pki
        .client_ca
        .client_valid("device-1", (2000, 1, 1), (2001, 1, 1));
    let expired = refused(&served, &events, &tls13(Some(&old))).await;
    assert_eq!(
        expired.outcome,
        alert_after_handshake(AlertDescription::CertificateExpired)
    );
    assert!(
        expired.event.1.contains(
            "(subject device-1, issuer \"Client CA\") refused (certificate_expired); alert certificate_expired"
        ),
        "{}",
        expired.event.1
    );

    let future = pki
        .client_ca
        .client_valid("device-1", (2090, 1, 1), (2091, 1, 1));
    let early = refused(&served, &events, &tls13(Some(&future))).await;
    assert_eq!(
        early.outcome,
        alert_after_handshake(AlertDescription::CertificateExpired),
        "RFC 8446: certificate_expired also means not currently valid"
    );
    assert!(
        early
            .event
            .1
            .contains("refused (certificate_not_yet_valid); alert certificate_expired"),
        "{}",
        early.event.1
    );

    // Issued by another key under the trusted CA's very name.
    let impostor = TestCa::new("Client CA").client("device-1");
    let forged = refused(&served, &events, &tls13(Some(&impostor))).await;
    assert_eq!(
        forged.outcome,
        alert_after_handshake(AlertDescription::DecryptError)
    );
    assert!(
        forged.event.1.contains(
            "(subject device-1, issuer \"Client CA\") refused (bad_signature); alert decrypt_error"
        ),
        "{}",
        forged.event.1
    );

    // A server certificate (serverAuth only) presented as a client's.
    let server_only = pki.client_ca.server(&["device-1"]);
    let purpose = refused(&served, &events, &tls13(Some(&server_only))).await;
    assert_eq!(
        purpose.outcome,
        alert_after_handshake(AlertDescription::UnsupportedCertificate)
    );
    assert!(
        purpose
            .event
            .1
            .contains("refused (invalid_purpose); alert unsupported_certificate"),
        "{}",
        purpose.event.1
    );

    // TLS 1.2: the server's alert ends the client's handshake.
    let tls12 = client(&pki, Some(&stranger), &[], Version::Tls12);
    let unknown12 = refused(&served, &events, &tls12).await;
    assert_eq!(
        unknown12.outcome,
        Outcome::Alert {
            alert: AlertDescription::UnknownCA,
            after_handshake: false
        }
    );
    assert!(unknown12.event.1.contains("refused (unknown_ca)"));

    for event in [
        &none, &unknown, &expired, &early, &forged, &purpose, &unknown12,
    ] {
        assert!(!event.event.1.contains("BEGIN CERTIFICATE"));
    }
    assert_eq!(
        served.refusals(),
        BTreeMap::from([
            ("bad_signature".to_owned(), 1),
            ("certificate_expired".to_owned(), 1),
            ("certificate_not_yet_valid".to_owned(), 1),
            ("certificate_required".to_owned(), 1),
            ("invalid_purpose".to_owned(), 1),
            ("unknown_ca".to_owned(), 2),
        ])
    );

    // Refusals close only their own connection.
    let device = pki.client_ca.client("device-1");
    assert!(matches!(
        served.connect(&tls13(Some(&device))).await,
        Outcome::Served(_)
    ));
}

#[tokio::test]
async fn other_handshake_failures_are_counted_too() {
    let events = capture();
    let pki = Pki::new();
    let served = served("tls-refusals-other", &pki, GUARD, REQUIRED);
    // A client that does not trust the server gives up on its side; the
    // server reads the client's alert.
    let distrustful = {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(TestCa::new("Elsewhere").cert_der))
            .unwrap();
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    };
    let outcome = served.connect(&distrustful).await;
    assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
    let (name, message) = events.one();
    assert_eq!(name, "TLS_HANDSHAKE_FAILED");
    assert!(
        message.starts_with(
            "client 192.0.2.7:50000: handshake failed: received fatal alert: UnknownCA"
        ),
        "{message}"
    );
    assert_eq!(
        served.refusals(),
        BTreeMap::from([("handshake_failed".to_owned(), 1)])
    );
}

/// A client certificate resolver that keeps the acceptable CAs the server
/// named in its CertificateRequest.
struct Hints {
    key: Arc<CertifiedKey>,
    seen: Mutex<Vec<Vec<u8>>>,
}

impl fmt::Debug for Hints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hints").finish_non_exhaustive()
    }
}

impl ResolvesClientCert for Hints {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        _schemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let mut seen = self.seen.lock().unwrap();
        seen.extend(root_hint_subjects.iter().map(|s| s.to_vec()));
        Some(self.key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn the_trusted_cas_are_advertised_as_acceptable() {
    let _events = capture();
    let pki = Pki::new();
    let served = served("tls-refusals-hints", &pki, GUARD, REQUIRED);
    let device = pki.client_ca.client("device-1");
    let key = provider()
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            device.key_der.clone(),
        )))
        .unwrap();
    let hints = Arc::new(Hints {
        key: Arc::new(CertifiedKey::new(
            vec![CertificateDer::from(device.cert_der.clone())],
            key,
        )),
        seen: Mutex::new(Vec::new()),
    });
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(pki.server_ca.cert_der.clone()))
        .unwrap();
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(hints.clone());
    let outcome = served.connect(&TlsConnector::from(Arc::new(config))).await;
    assert!(matches!(outcome, Outcome::Served(_)), "{outcome:?}");
    let (_, ca) = X509Certificate::from_der(&pki.client_ca.cert_der).unwrap();
    assert_eq!(
        *hints.seen.lock().unwrap(),
        vec![ca.subject().as_raw().to_vec()],
        "the subject of `trust` (clientca), and only it"
    );
}
