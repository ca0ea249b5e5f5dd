//! A tls server's `options.authorization` and `guarded` routes end to end
//! (issue 25): real TCP, a real broker (mosquitto), client certificates made
//! at test time, and a stand-in x509 guard (`test-x509`, registered here:
//! the leaf's CN is the identity, roles by CN from its options).
//!
//! mosquitto's own clients present certificates to `tcp -> tls -> mqtt`; the
//! mqtt server admits them with the identity the tls server's guard granted.
//! The same grant crosses `tls -> http -> ws -> mqtt` for `wss`. Clients the
//! tls server refuses read the alert rustls defines for their error, and
//! every refusal is an event and a `tls.refusals` count.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::AlertDescription;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use x509_parser::pem::Pem;
use zilla as _;
use zilla_engine::telemetry::metrics::Value;
use zilla_engine::{
    async_trait, register_guard, Engine, Guard, GuardFactory, GuardRejection, GuardSession,
};
use zilla_testkit::pki::{Issued, TestCa};
use zilla_testkit::proxy::{captured_events, wait_for_event, Proxy};
use zilla_testkit::Mosquitto;

const TIMEOUT: Duration = Duration::from_secs(10);

/// `options` of `test-x509`: `{roles: {<CN>: [roles]}}`.
type TestGuardOptions = BTreeMap<String, BTreeMap<String, Vec<String>>>;

register_guard!(GuardFactory {
    type_name: "test-x509",
    build: |cx| {
        let mut options: TestGuardOptions = cx.options()?;
        Ok(Arc::new(TestGuard(
            options.remove("roles").unwrap_or_default(),
        )))
    },
});

/// Roles by the leaf's CN.
struct TestGuard(BTreeMap<String, Vec<String>>);

#[async_trait]
impl Guard for TestGuard {
    async fn authorize(&self, credentials: &str) -> Result<GuardSession, GuardRejection> {
        let invalid = || GuardRejection::InvalidCredentials("not a PEM chain".into());
        let leaf = Pem::iter_from_buffer(credentials.as_bytes())
            .next()
            .ok_or_else(invalid)?
            .map_err(|_| invalid())?;
        let cert = leaf.parse_x509().map_err(|_| invalid())?;
        let cn = cert
            .subject()
            .iter_common_name()
            .find_map(|cn| cn.as_str().ok().map(str::to_owned))
            .ok_or_else(invalid)?;
        Ok(GuardSession {
            roles: self.0.get(&cn).cloned().unwrap_or_default(),
            identity: Some(cn),
            ..GuardSession::default()
        })
    }
}

/// The server's CA and key, and the CA whose clients it trusts.
struct Pki {
    server_ca: TestCa,
    client_ca: TestCa,
}

/// `keys/localhost.pem` and `trust/clientca.pem` in `dir`.
fn pki(dir: &Path) -> Pki {
    let server_ca = TestCa::new("Server CA");
    let client_ca = TestCa::new("Client CA");
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    std::fs::create_dir_all(dir.join("trust")).unwrap();
    server_ca
        .server(&["localhost"])
        .write_pem(&dir.join("keys/localhost.pem"));
    std::fs::write(dir.join("trust/clientca.pem"), &client_ca.cert_pem).unwrap();
    std::fs::write(dir.join("server-ca.pem"), &server_ca.cert_pem).unwrap();
    Pki {
        server_ca,
        client_ca,
    }
}

/// `tcp -> tls -> <tls_exit>`, where the tls server requires a certificate
/// from `clientca`, has `x509_0` decide on it and routes role `mqtt` only;
/// `north_http_server -> north_ws_server -> north_mqtt_server` (which admits
/// sessions on `x509_0`'s grant) `-> mqtt client -> broker`.
/// `vault` adds to the vault's options (lines indented six spaces).
fn yaml(name: &str, tls_exit: &str, broker: u16, vault: &str) -> String {
    format!(
        r#"
name: {name}
telemetry:
  metrics: [tls.*]
  exporters:
    capture:
      type: capture
guards:
  x509_0:
    type: test-x509
    options:
      roles:
        device-1: [mqtt]
vaults:
  server:
    type: filesystem
    options:
      keys: {{ store: keys, type: pem }}
      trust: {{ store: trust, type: pem }}
{vault}
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
    telemetry: {{ metrics: [tls.*] }}
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
          x509_0: [mqtt]
        exit: {tls_exit}
  north_http_server:
    type: http
    kind: server
    options:
      versions: [http/1.1]
    routes:
      - when:
          - headers:
              upgrade: websocket
        exit: north_ws_server
  north_ws_server:
    type: ws
    kind: server
    routes:
      - when:
          - protocol: mqtt
        exit: north_mqtt_server
  north_mqtt_server:
    type: mqtt
    kind: server
    options:
      authorization:
        x509_0:
          credentials:
            connect:
              username: "{{credentials}}"
    routes:
      - guarded:
          x509_0: [mqtt]
        exit: north_mqtt_client
  north_mqtt_client:
    type: mqtt
    kind: client
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {broker} }}
"#
    )
}

async fn start(dir: &Path, name: &str, tls_exit: &str, broker: u16) -> Proxy {
    start_with_vault(dir, name, tls_exit, broker, "").await
}

async fn start_with_vault(
    dir: &Path,
    name: &str,
    tls_exit: &str,
    broker: u16,
    vault: &str,
) -> Proxy {
    let yaml = yaml(name, tls_exit, broker, vault);
    Proxy::start_with(Engine::from_yaml(yaml).base_dir(dir)).await
}

/// `tls.refusals` of `north_tls_server`, by reason (zeros left out).
fn refusals(proxy: &Proxy) -> BTreeMap<String, u64> {
    proxy
        .engine
        .metrics()
        .collect()
        .iter()
        .filter(|s| {
            s.metric.name == "tls.refusals" && s.label("binding") == Some("north_tls_server")
        })
        .filter_map(|s| match s.value {
            Value::Counter(n) if n > 0 => Some((s.label("reason").unwrap().to_owned(), n)),
            _ => None,
        })
        .collect()
}

/// `identity`'s certificate and key as files for mosquitto's clients.
fn write_identity(dir: &Path, name: &str, identity: &Issued) -> (String, String) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, &identity.cert_pem).unwrap();
    std::fs::write(&key, &identity.key_pem).unwrap();
    (cert.display().to_string(), key.display().to_string())
}

/// mosquitto_pub or mosquitto_sub over TLS with a client certificate.
fn mosquitto(program: &str, dir: &Path, port: u16, identity: &(String, String)) -> Command {
    let mut command = Command::new(program);
    command
        .arg("--cafile")
        .arg(dir.join("server-ca.pem"))
        .args(["--cert", &identity.0, "--key", &identity.1])
        .args([
            "-h",
            "localhost",
            "-p",
            &port.to_string(),
            "-t",
            "devices/1",
        ]);
    command
}

#[tokio::test]
async fn mosquitto_clients_are_admitted_with_their_certificate_identity() {
    let broker = Mosquitto::start().unwrap_or_else(|error| panic!("{error}"));
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let proxy = start(
        dir.path(),
        "tls-authz-mqtt",
        "north_mqtt_server",
        broker.port(),
    )
    .await;

    let device = write_identity(dir.path(), "device-1", &pki.client_ca.client("device-1"));
    let status = mosquitto("mosquitto_pub", dir.path(), proxy.port, &device)
        .args(["-i", "pub-device-1", "-m", "hello", "-r", "-q", "1"])
        .status()
        .await
        .unwrap();
    assert!(
        status.success(),
        "mosquitto_pub with device-1's certificate"
    );
    wait_for_event(&[
        "MQTT_AUTHORIZATION_SUCCEEDED",
        "pub-device-1",
        "x509_0 authorized identity device-1",
    ])
    .await;
    let received = tokio::time::timeout(
        TIMEOUT,
        mosquitto("mosquitto_sub", dir.path(), proxy.port, &device)
            .args(["-i", "sub-device-1", "-C", "1", "-W", "10"])
            .output(),
    )
    .await
    .expect("the subscriber gets the message in time")
    .unwrap();
    assert!(received.status.success());
    assert_eq!(String::from_utf8_lossy(&received.stdout).trim(), "hello");

    // A trusted certificate without the role: closed by the tls server.
    let other = write_identity(dir.path(), "device-2", &pki.client_ca.client("device-2"));
    let status = mosquitto("mosquitto_pub", dir.path(), proxy.port, &other)
        .args(["-i", "pub-device-2", "-m", "nope", "-q", "1"])
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(!status.success(), "device-2 has no role for any route");
    wait_for_event(&[
        "TLS_AUTHORIZATION_DENIED",
        "x509_0 granted identity device-2 roles []",
        "need x509_0 [mqtt]",
    ])
    .await;
    let _ = pki.server_ca;
    proxy.engine.shutdown().await;
}

/// A rustls client trusting the server's CA, presenting `identity`.
fn connector(pki: &Pki, identity: Option<&Issued>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(pki.server_ca.cert_der.clone()))
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots);
    let config = match identity {
        Some(issued) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(issued.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.key_der.clone())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Connects over TCP; TLS 1.3 lets the client finish its handshake, then
/// its first read gets the server's alert.
async fn alert(pki: &Pki, port: u16, identity: Option<&Issued>) -> AlertDescription {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = tokio::time::timeout(TIMEOUT, connector(pki, identity).connect(name, tcp))
        .await
        .expect("the handshake ends in time")
        .expect("TLS 1.3: the client's side of the handshake completes");
    let mut byte = [0u8; 1];
    let error = tokio::time::timeout(TIMEOUT, tls.read(&mut byte))
        .await
        .expect("the alert arrives in time")
        .expect_err("refused");
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::AlertReceived(alert)) => *alert,
        _ => panic!("not an alert: {error}"),
    }
}

#[tokio::test]
async fn refused_certificates_read_their_alert_and_are_counted() {
    let broker = Mosquitto::start().unwrap_or_else(|error| panic!("{error}"));
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let proxy = start(
        dir.path(),
        "tls-authz-alerts",
        "north_mqtt_server",
        broker.port(),
    )
    .await;
    assert_eq!(
        alert(&pki, proxy.port, None).await,
        AlertDescription::CertificateRequired
    );
    wait_for_event(&[
        "tls-authz-alerts.north_tls_server TLS_HANDSHAKE_FAILED",
        "no client certificate, and one is required; alert certificate_required",
    ])
    .await;
    let stranger = TestCa::new("Other CA").client("device-7");
    assert_eq!(
        alert(&pki, proxy.port, Some(&stranger)).await,
        AlertDescription::UnknownCA
    );
    wait_for_event(&[
        "tls-authz-alerts.north_tls_server TLS_HANDSHAKE_FAILED",
        "client certificate (subject device-7, issuer \"Other CA\") refused (unknown_ca); alert unknown_ca",
    ])
    .await;
    let expired = pki
        .client_ca
        .client_valid("device-1", (2000, 1, 1), (2001, 1, 1));
    assert_eq!(
        alert(&pki, proxy.port, Some(&expired)).await,
        AlertDescription::CertificateExpired
    );
    wait_for_event(&[
        "tls-authz-alerts.north_tls_server TLS_HANDSHAKE_FAILED",
        "refused (certificate_expired); alert certificate_expired",
    ])
    .await;

    assert_eq!(
        refusals(&proxy),
        BTreeMap::from([
            ("certificate_expired".to_owned(), 1),
            ("certificate_required".to_owned(), 1),
            ("unknown_ca".to_owned(), 1),
        ])
    );
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn a_revoked_certificate_reads_certificate_revoked_and_is_told_twice() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    std::fs::create_dir_all(dir.path().join("crl")).unwrap();
    std::fs::write(
        dir.path().join("crl/clientca.pem"),
        pki.client_ca.crl_pem(&[2]),
    )
    .unwrap();
    // Refused at the handshake: the broker behind is never reached.
    let vault = "      revocation: crl\n      crl: { store: crl }";
    let proxy = start_with_vault(
        dir.path(),
        "tls-authz-revoked",
        "north_mqtt_server",
        9,
        vault,
    )
    .await;
    let revoked = pki.client_ca.client_serial("device-1", 2);
    assert_eq!(
        alert(&pki, proxy.port, Some(&revoked)).await,
        AlertDescription::CertificateRevoked
    );
    wait_for_event(&["tls-authz-revoked.north_tls_server TLS_CLIENT_CERTIFICATE_REVOKED"]).await;
    // The serial and CRL in one event, the client's address in the other.
    wait_for_event(&[
        "tls-authz-revoked.north_tls_server TLS_HANDSHAKE_FAILED",
        "client 127.0.0.1:",
        "certificate_revoked",
    ])
    .await;
    // Counted when the server's side of the handshake ends, which may be
    // just after the client read the alert.
    let expected = BTreeMap::from([("certificate_revoked".to_owned(), 1)]);
    let counted = tokio::time::timeout(TIMEOUT, async {
        while refusals(&proxy) != expected {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(counted.is_ok(), "{:?}", refusals(&proxy));
    let told: Vec<String> = captured_events()
        .into_iter()
        .filter(|line| line.contains("tls-authz-revoked.north_tls_server"))
        .collect();
    assert_eq!(told.len(), 2, "two events per refused handshake: {told:#?}");
    proxy.engine.shutdown().await;
}

/// MQTT 3.1.1 CONNECT with client id `id`, clean session, no user name.
fn connect_packet(id: &str) -> Vec<u8> {
    let mut packet = vec![0x10, (12 + id.len()) as u8];
    packet.extend_from_slice(&[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C]);
    packet.extend_from_slice(&[0x00, id.len() as u8]);
    packet.extend_from_slice(id.as_bytes());
    packet
}

#[tokio::test]
async fn the_grant_reaches_the_mqtt_server_over_wss() {
    let broker = Mosquitto::start().unwrap_or_else(|error| panic!("{error}"));
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let proxy = start(
        dir.path(),
        "tls-authz-wss",
        "north_http_server",
        broker.port(),
    )
    .await;

    let device = pki.client_ca.client("device-1");
    let tcp = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector(&pki, Some(&device))
        .connect(name, tcp)
        .await
        .unwrap();
    let mut request = "wss://localhost/mqtt".into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    let (mut ws, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::client_async(request, tls))
        .await
        .expect("the upgrade is answered in time")
        .expect("upgraded");
    ws.send(Message::binary(connect_packet("wss-device-1")))
        .await
        .unwrap();
    let connack = tokio::time::timeout(TIMEOUT, ws.next())
        .await
        .expect("CONNACK in time")
        .expect("a frame")
        .unwrap();
    assert_eq!(
        connack.into_data().as_ref(),
        &[0x20, 0x02, 0x00, 0x00],
        "accepted without a user name, on the certificate's grant"
    );
    wait_for_event(&[
        "tls-authz-wss.north_mqtt_server MQTT_AUTHORIZATION_SUCCEEDED",
        "wss-device-1",
        "x509_0 authorized identity device-1",
    ])
    .await;
    proxy.engine.shutdown().await;
}
