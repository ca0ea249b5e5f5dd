//! Revocation of client certificates end to end (issue 25): a tls server
//! whose `filesystem` vault has `revocation: crl`, real rustls clients
//! (TLS 1.3: the client finishes first and reads the server's alert on its
//! first read), CRLs made with rcgen at test time and rewritten while the
//! proxy runs, and a CRL fetched from a distribution point served by a
//! local HTTP server.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CrlDistributionPoint, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zilla as _;
use zilla::engine::Engine;
use zilla_testkit::http::HttpStub;
use zilla_testkit::proxy::{captured_events, wait_for_event, Proxy};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A CA that issues server and client certificates and signs CRLs.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: Vec<u8>,
}

/// A certificate and its key.
struct Issued {
    cert: Vec<u8>,
    key: Vec<u8>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(
        &self,
        name: &str,
        serial: u64,
        usage: ExtendedKeyUsagePurpose,
        crl_url: Option<&str>,
    ) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![usage];
        if let Some(url) = crl_url {
            params.crl_distribution_points = vec![CrlDistributionPoint {
                uris: vec![url.to_owned()],
            }];
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            pem: format!("{}{}", cert.pem(), key.serialize_pem()),
            cert: cert.der().to_vec(),
            key: key.serialize_der(),
        }
    }

    fn client(&self, serial: u64) -> Issued {
        self.issue(
            &format!("device-{serial}"),
            serial,
            ExtendedKeyUsagePurpose::ClientAuth,
            None,
        )
    }

    /// A CRL revoking `serials`, valid from January of `from` to January of `until`.
    fn crl(&self, serials: &[u64], from: i32, until: i32) -> rcgen::CertificateRevocationList {
        CertificateRevocationListParams {
            this_update: date_time_ymd(from, 1, 1),
            next_update: date_time_ymd(until, 1, 1),
            crl_number: SerialNumber::from(1),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from(*serial),
                    revocation_time: date_time_ymd(from, 1, 1),
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

/// `keys/server.pem` for a.test, `trust/ca.pem` and `trust/other.pem`.
fn pki(dir: &Path, ca: &Ca, other: &Ca) {
    for sub in ["keys", "trust", "crl"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let server = ca.issue("a.test", 1000, ExtendedKeyUsagePurpose::ServerAuth, None);
    std::fs::write(dir.join("keys/server.pem"), server.pem).unwrap();
    std::fs::write(dir.join("trust/ca.pem"), &ca.pem).unwrap();
    std::fs::write(dir.join("trust/other.pem"), &other.pem).unwrap();
}

/// `tcp -> tls (mutual: required) -> echo`, named `name`; `crl` is the
/// vault's `crl` option, if any.
async fn proxy(dir: &Path, name: &str, crl: &str) -> Proxy {
    let yaml = format!(
        "
name: {name}
telemetry:
  exporters:
    capture:
      type: capture
vaults:
  server:
    type: filesystem
    options:
      keys: {{ store: keys, type: pem }}
      trust: {{ store: trust, type: pem }}
      revocation: crl
{crl}
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: {{ host: 127.0.0.1, port: 0 }}
    exit: north_tls_server
  north_tls_server:
    type: tls
    kind: server
    vault: server
    options:
      keys: [server]
      trust: [ca, other]
      mutual: required
    exit: north_echo_server
  north_echo_server:
    type: echo
    kind: server
"
    );
    Proxy::start_with(Engine::from_yaml(yaml).base_dir(dir)).await
}

/// Connects with `client`'s certificate and has the echo answer: `Ok` with
/// what came back, or the error the client read (the server's alert).
async fn exchange(port: u16, ca: &Ca, client: &Issued) -> Result<String, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.der.clone())).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from(client.cert.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(client.key.clone())),
        )
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = ServerName::try_from("a.test").unwrap();
    let attempt = async {
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(b"ping").await?;
        let mut answer = [0u8; 4];
        tls.read_exact(&mut answer).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
    };
    match tokio::time::timeout(TIMEOUT, attempt).await {
        Ok(result) => result.map_err(|e| format!("{e:?}")),
        Err(_) => panic!("the exchange ends in time"),
    }
}

/// The captured events containing every one of `needles`.
fn events_with(needles: &[&str]) -> Vec<String> {
    captured_events()
        .into_iter()
        .filter(|line| needles.iter().all(|n| line.contains(n)))
        .collect()
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_with_certificate_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = (Ca::new("Test CA"), Ca::new("Other CA"));
    pki(dir.path(), &ca, &other);
    std::fs::write(
        dir.path().join("crl/ca.crl"),
        ca.crl(&[2], 2020, 2099).der(),
    )
    .unwrap();
    let crl = "      crl: { store: crl, type: der }";
    let proxy = proxy(dir.path(), "rev-revoked", crl).await;

    assert_eq!(
        exchange(proxy.port, &ca, &ca.client(1)).await.unwrap(),
        "ping"
    );
    let refused = exchange(proxy.port, &ca, &ca.client(2)).await.unwrap_err();
    assert!(refused.contains("CertificateRevoked"), "{refused}");
    let event = wait_for_event(&[
        "rev-revoked.north_tls_server TLS_CLIENT_CERTIFICATE_REVOKED",
        "client certificate CN=device-2 serial 02 issued by \"CN=Test CA\" is revoked",
        "crl/ca.crl",
        "certificate_revoked",
    ])
    .await;
    assert!(event.contains("WARN"), "{event}");

    // The server still serves certificates in good standing.
    assert_eq!(
        exchange(proxy.port, &ca, &ca.client(3)).await.unwrap(),
        "ping"
    );
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn an_issuer_without_a_crl_is_not_checked_and_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = (Ca::new("Test CA"), Ca::new("Other CA"));
    pki(dir.path(), &ca, &other);
    std::fs::write(
        dir.path().join("crl/ca.pem"),
        ca.crl(&[2], 2020, 2099).pem().unwrap(),
    )
    .unwrap();
    let proxy = proxy(
        dir.path(),
        "rev-missing",
        "      crl: { store: crl/ca.pem }",
    )
    .await;

    // Serial 2 of the other CA: revoked only by Test CA's list.
    for _ in 0..3 {
        assert_eq!(
            exchange(proxy.port, &ca, &other.client(2)).await.unwrap(),
            "ping"
        );
    }
    wait_for_event(&[
        "rev-missing.north_tls_server TLS_CRL_MISSING",
        "no CRL for issuer \"CN=Other CA\": the certificates it issued are not checked",
    ])
    .await;
    assert_eq!(
        events_with(&["rev-missing.north_tls_server TLS_CRL_MISSING"]).len(),
        1,
        "once per issuer"
    );
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn a_crl_past_its_next_update_fails_what_it_decides() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = (Ca::new("Test CA"), Ca::new("Other CA"));
    pki(dir.path(), &ca, &other);
    std::fs::write(dir.path().join("crl/ca.crl"), ca.crl(&[], 2020, 2021).der()).unwrap();
    let crl = "      crl: { store: crl/ca.crl, type: der }";
    let proxy = proxy(dir.path(), "rev-stale", crl).await;

    let refused = exchange(proxy.port, &ca, &ca.client(1)).await.unwrap_err();
    assert!(refused.contains("UnknownCA"), "webpki's alert: {refused}");
    wait_for_event(&[
        "rev-stale.north_tls_server TLS_CRL_EXPIRED",
        "the CRL of \"CN=Test CA\" from",
        "crl/ca.crl is past its nextUpdate (Jan  1 00:00:00 2021 +00:00)",
    ])
    .await;
    // Another issuer's certificates are not concerned.
    assert_eq!(
        exchange(proxy.port, &ca, &other.client(1)).await.unwrap(),
        "ping"
    );
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn a_rewritten_crl_takes_effect_for_the_next_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = (Ca::new("Test CA"), Ca::new("Other CA"));
    pki(dir.path(), &ca, &other);
    let file = dir.path().join("crl/ca.pem");
    std::fs::write(&file, ca.crl(&[], 2020, 2099).pem().unwrap()).unwrap();
    let proxy = proxy(
        dir.path(),
        "rev-rewrite",
        "      crl: { store: crl/ca.pem }",
    )
    .await;

    let device = ca.client(7);
    assert_eq!(exchange(proxy.port, &ca, &device).await.unwrap(), "ping");
    // Revoked: written in place, as `openssl ca -gencrl -out` does.
    std::fs::write(&file, ca.crl(&[7], 2021, 2099).pem().unwrap()).unwrap();
    let refused = exchange(proxy.port, &ca, &device).await.unwrap_err();
    assert!(refused.contains("CertificateRevoked"), "{refused}");
    wait_for_event(&["rev-rewrite.server VAULT_CRL_RELOADED", "1 list(s)"]).await;

    // A broken rewrite keeps the list read before.
    std::fs::write(&file, "-----BEGIN X509 CRL-----\nAAAA\n").unwrap();
    let refused = exchange(proxy.port, &ca, &device).await.unwrap_err();
    assert!(refused.contains("CertificateRevoked"), "{refused}");
    wait_for_event(&[
        "rev-rewrite.server VAULT_CRL_UNREADABLE",
        "crl/ca.pem: bad PEM",
        "the 1 list(s) read before stay",
    ])
    .await;
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn a_distribution_point_is_fetched_and_cached() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = (Ca::new("Test CA"), Ca::new("Other CA"));
    pki(dir.path(), &ca, &other);
    let stub = HttpStub::start().await;
    // PEM: the stub answers text; DER answers are covered by the binding's tests.
    stub.set("/ca.crl", 200, ca.crl(&[2], 2020, 2099).pem().unwrap());
    let url = format!("http://127.0.0.1:{}/ca.crl", stub.port);
    let device = |serial| {
        ca.issue(
            &format!("device-{serial}"),
            serial,
            ExtendedKeyUsagePurpose::ClientAuth,
            Some(&url),
        )
    };
    let proxy = proxy(dir.path(), "rev-fetch", "").await;

    // Not fetched yet: the first handshake is not held up, nor checked.
    assert_eq!(exchange(proxy.port, &ca, &device(2)).await.unwrap(), "ping");
    wait_for_event(&[
        "rev-fetch.north_tls_server TLS_CRL_MISSING",
        &format!("no CRL for issuer \"CN=Test CA\": fetching {url}; until it arrives"),
    ])
    .await;
    wait_for_event(&[
        "rev-fetch.north_tls_server TLS_CRL_FETCHED",
        &format!(
            "the CRL of \"CN=Test CA\" from {url}: 1 revoked, next update Jan  1 00:00:00 2099"
        ),
    ])
    .await;

    let refused = exchange(proxy.port, &ca, &device(2)).await.unwrap_err();
    assert!(refused.contains("CertificateRevoked"), "{refused}");
    for serial in [3, 4, 5] {
        assert_eq!(
            exchange(proxy.port, &ca, &device(serial)).await.unwrap(),
            "ping"
        );
    }
    let fetches = stub
        .requests()
        .iter()
        .filter(|head| head.starts_with("GET /ca.crl "))
        .count();
    assert_eq!(fetches, 1, "cached until its nextUpdate");
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn a_crl_store_that_cannot_be_read_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = (Ca::new("Test CA"), Ca::new("Other CA"));
    pki(dir.path(), &ca, &other);
    std::fs::write(dir.path().join("crl/ca.crl"), ca.crl(&[], 2020, 2099).der()).unwrap();
    let yaml = "
name: rev-errors
vaults:
  server:
    type: filesystem
    options:
      trust: { store: trust, type: pem }
      revocation: crl
      crl: { store: crl/ca.crl }
";
    let errors = Engine::from_yaml(yaml)
        .base_dir(dir.path())
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("vaults.server.options.crl.store: vault server: crl store ")
            && errors
                .contains("crl/ca.crl holds no `X509 CRL` PEM block (a DER file? use `type: der`)"),
        "{errors}"
    );
}
