//! TLS end to end: the seed's keystore on its TLS pipeline, SNI and ALPN
//! routing, mutual TLS, a TLS upstream broker, SNI routing without
//! termination, and every handshake failure closing only its own connection.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use zilla as _;
use zilla::engine::Engine;
use zilla_testkit::pki::{Issued, TestCa};
use zilla_testkit::proxy::{wait_for_event, Proxy};
use zilla_testkit::Mosquitto;

const TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS client trusting `ca`, optionally presenting `identity`, offering `alpn`.
fn connector(ca: &[u8], identity: Option<&Issued>, alpn: &[&str]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.to_vec())).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(issued) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(issued.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.key_der.clone())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Connects with TLS and reads what the upstream behind the proxy answers.
async fn answer(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
    sni: &str,
) -> std::io::Result<String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut tls = tokio::time::timeout(
        TIMEOUT,
        connector.connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp),
    )
    .await
    .expect("the handshake ends in time")?;
    let mut answer = String::new();
    tokio::time::timeout(TIMEOUT, tls.read_to_string(&mut answer))
        .await
        .expect("the answer arrives in time")?;
    Ok(answer)
}

/// A plain TCP upstream that answers every connection with its name.
async fn named_upstream(name: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = stream.write_all(name.as_bytes()).await;
            });
        }
    });
    port
}

/// A TLS upstream (with `cert`) that answers every connection with its name.
async fn named_tls_upstream(name: &'static str, cert: &Issued) -> u16 {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der.clone())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(stream).await {
                    let _ = tls.write_all(name.as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    port
}

/// A tls server behind a tcp server, keys from a PEM directory, routed to two
/// named upstreams; `tls_body` is the tls server's options and routes.
async fn tls_server(
    dir: &Path,
    tls_body: &str,
    alpha: u16,
    beta: u16,
    properties: &[(&str, &str)],
) -> Proxy {
    let yaml = format!(
        "
name: tls-test
telemetry:
  exporters:
    capture:
      type: capture
vaults:
  server:
    type: filesystem
    options:
      keys:
        store: keys
        type: pem
      trust:
        store: trust
        type: pem
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
{tls_body}
  alpha:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {alpha} }}
  beta:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {beta} }}
"
    );
    let mut builder = Engine::from_yaml(yaml).base_dir(dir);
    for (name, value) in properties {
        builder = builder.property(*name, *value);
    }
    Proxy::start_with(builder).await
}

/// A CA, server certificates for a.test and b.test in `keys/`, the CA in `trust/`.
fn pki(dir: &Path) -> TestCa {
    let ca = TestCa::new("Test CA");
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    std::fs::create_dir_all(dir.join("trust")).unwrap();
    ca.server(&["a.test"]).write_pem(&dir.join("keys/a.pem"));
    ca.server(&["b.test"]).write_pem(&dir.join("keys/b.pem"));
    std::fs::write(dir.join("trust/ca.pem"), &ca.cert_pem).unwrap();
    ca
}

#[tokio::test]
async fn the_seed_keystore_serves_tls_for_localhost_to_mosquitto_clients() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mqtt.proxy.jwt");
    std::fs::create_dir_all(dir.path().join("tls")).unwrap();
    std::fs::copy(
        seed.join("tls/localhost.p12"),
        dir.path().join("tls/localhost.p12"),
    )
    .unwrap();
    // The seed's pipeline on a free port, without its guard until JWT lands.
    let yaml = "
name: zilla-mqtt-proxy-tls
telemetry:
  exporters:
    capture:
      type: capture
vaults:
  my_servers:
    type: filesystem
    options:
      keys:
        store: tls/localhost.p12
        type: pkcs12
        password: ${{env.KEYSTORE_PASSWORD}}
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: north_tls_server
  north_tls_server:
    type: tls
    kind: server
    vault: my_servers
    options:
      keys:
        - localhost
      sni:
        - localhost
    exit: north_mqtt_server
  north_mqtt_server:
    type: mqtt
    kind: server
    exit: north_mqtt_client
  north_mqtt_client:
    type: mqtt
    kind: client
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options:
      host: ${{env.MOSQUITTO_BROKER_HOST}}
      port: ${{env.MOSQUITTO_BROKER_PORT}}
";
    let env = broker.env();
    let builder = Engine::from_yaml(yaml)
        .base_dir(dir.path())
        .env(move |name| match name {
            "KEYSTORE_PASSWORD" => Some("generated".into()),
            _ => env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()),
        });
    let proxy = Proxy::start_with(builder).await;

    // The Test CA that signed localhost, taken from the keystore itself.
    let vault = zilla_vault_filesystem::FilesystemVault::load(
        "my_servers",
        &serde_yaml::from_str("keys: {store: tls/localhost.p12, password: generated}").unwrap(),
        dir.path(),
    )
    .unwrap();
    let chain = zilla::engine::Vault::key(&vault, "localhost")
        .unwrap()
        .chain;
    let cafile = dir.path().join("test-ca.pem");
    std::fs::write(
        &cafile,
        pem::encode(&pem::Pem::new("CERTIFICATE", chain[1].to_vec())),
    )
    .unwrap();

    let port = proxy.port.to_string();
    let tls_args = |command: &mut Command| {
        command
            .arg("--cafile")
            .arg(&cafile)
            .args(["-h", "localhost", "-p", &port, "-t", "zilla"]);
    };
    // Retained, so the subscriber gets it whenever it subscribes.
    let mut publish = Command::new("mosquitto_pub");
    tls_args(&mut publish);
    let status = publish
        .args(["-m", "Hello, world", "-r", "-q", "1"])
        .status()
        .await
        .unwrap();
    assert!(status.success(), "mosquitto_pub over TLS failed");
    let mut sub = Command::new("mosquitto_sub");
    tls_args(&mut sub);
    let output = tokio::time::timeout(TIMEOUT, sub.args(["-C", "1", "-W", "10"]).output())
        .await
        .expect("the subscriber gets the message in time")
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "Hello, world"
    );
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn sni_and_alpn_route_to_different_exits() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki(dir.path());
    let (alpha, beta) = (named_upstream("alpha").await, named_upstream("beta").await);
    let by_sni = "
    options:
      keys: [a, b]
      mutual: none
    routes:
      - when:
          - authority: a.test
        exit: alpha
      - when:
          - authority: b.test
        exit: beta";
    let proxy = tls_server(dir.path(), by_sni, alpha, beta, &[]).await;
    let client = connector(&ca.cert_der, None, &[]);
    assert_eq!(
        answer(&client, proxy.port, "a.test").await.unwrap(),
        "alpha"
    );
    assert_eq!(answer(&client, proxy.port, "b.test").await.unwrap(), "beta");
    proxy.engine.shutdown().await;

    let by_alpn = "
    options:
      keys: [a]
      alpn: [mqtt, x-other]
      mutual: none
    routes:
      - when:
          - alpn: mqtt
        exit: alpha
      - when:
          - alpn: x-other
        exit: beta";
    let proxy = tls_server(dir.path(), by_alpn, alpha, beta, &[]).await;
    let mqtt = connector(&ca.cert_der, None, &["mqtt"]);
    let other = connector(&ca.cert_der, None, &["x-other"]);
    assert_eq!(answer(&mqtt, proxy.port, "a.test").await.unwrap(), "alpha");
    assert_eq!(answer(&other, proxy.port, "a.test").await.unwrap(), "beta");
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn mutual_tls_accepts_trusted_clients_and_refuses_others() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki(dir.path());
    let (alpha, beta) = (named_upstream("alpha").await, named_upstream("beta").await);
    let mutual = "
    options:
      keys: [a]
      trust: [ca]
      mutual: required
    exit: alpha";
    let proxy = tls_server(dir.path(), mutual, alpha, beta, &[]).await;

    let trusted = ca.client("device-1");
    let with_cert = connector(&ca.cert_der, Some(&trusted), &[]);
    assert_eq!(
        answer(&with_cert, proxy.port, "a.test").await.unwrap(),
        "alpha"
    );

    // No certificate: TLS 1.3 lets the client finish first, then it is refused.
    let without = connector(&ca.cert_der, None, &[]);
    assert!(answer(&without, proxy.port, "a.test")
        .await
        .map(|a| a.is_empty())
        .unwrap_or(true));
    wait_for_event(&[
        "TLS_HANDSHAKE_FAILED",
        "handshake failed",
        "no client certificate, and one is required",
    ])
    .await;

    let stranger = TestCa::new("Other CA").client("device-2");
    let untrusted = connector(&ca.cert_der, Some(&stranger), &[]);
    assert!(answer(&untrusted, proxy.port, "a.test")
        .await
        .map(|a| a.is_empty())
        .unwrap_or(true));
    wait_for_event(&["TLS_HANDSHAKE_FAILED", "refused (unknown_ca)"]).await;

    // The server still serves trusted clients.
    assert_eq!(
        answer(&with_cert, proxy.port, "a.test").await.unwrap(),
        "alpha"
    );
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn handshake_failures_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki(dir.path());
    let (alpha, beta) = (named_upstream("alpha").await, named_upstream("beta").await);
    let only_a = "
    options:
      keys: [a, b]
      sni: [a.test]
      mutual: none
    exit: alpha";
    let proxy = tls_server(
        dir.path(),
        only_a,
        alpha,
        beta,
        &[("zilla.binding.tls.handshake.timeout", "0.5")],
    )
    .await;
    let client = connector(&ca.cert_der, None, &[]);

    // An SNI the server does not accept.
    assert!(answer(&client, proxy.port, "b.test").await.is_err());
    wait_for_event(&[
        "TLS_HANDSHAKE_FAILED",
        "no server certificate chain resolved",
    ])
    .await;

    // Plain text on the TLS port.
    let mut plain = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    plain
        .write_all(&[
            0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x00,
        ])
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, plain.read_to_end(&mut rest))
        .await
        .unwrap();
    wait_for_event(&["TLS_HANDSHAKE_FAILED", "corrupt message"]).await;

    // A client that never completes its handshake.
    let mut silent = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(TIMEOUT, silent.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the silent connection was closed by the handshake timeout"
    );
    wait_for_event(&[
        "TLS_HANDSHAKE_TIMEOUT",
        "no complete handshake within 500 ms",
    ])
    .await;

    // Meanwhile and afterwards, good clients are served.
    assert_eq!(
        answer(&client, proxy.port, "a.test").await.unwrap(),
        "alpha"
    );
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn tls_proxy_routes_by_sni_without_terminating() {
    let ca = TestCa::new("Backend CA");
    let (a, b) = (ca.server(&["a.test"]), ca.server(&["b.test"]));
    let (alpha, beta) = (
        named_tls_upstream("alpha", &a).await,
        named_tls_upstream("beta", &b).await,
    );
    let yaml = format!(
        "
name: tls-proxy
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: {{ host: 127.0.0.1, port: 0 }}
    exit: north_tls_proxy
  north_tls_proxy:
    type: tls
    kind: proxy
    routes:
      - when:
          - authority: a.test
        exit: alpha
      - when:
          - authority: b.test
        exit: beta
  alpha:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {alpha} }}
  beta:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {beta} }}
"
    );
    let proxy = Proxy::start(&yaml).await;
    // The client verifies the backends' own certificates end to end.
    let client = connector(&ca.cert_der, None, &[]);
    assert_eq!(
        answer(&client, proxy.port, "a.test").await.unwrap(),
        "alpha"
    );
    assert_eq!(answer(&client, proxy.port, "b.test").await.unwrap(), "beta");
    assert!(
        answer(&client, proxy.port, "c.test").await.is_err(),
        "no route: closed"
    );
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn the_mqtt_client_reaches_a_broker_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Broker CA");
    let broker_cert = ca.server(&["localhost", "127.0.0.1"]);
    std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
    std::fs::write(dir.path().join("broker.crt"), &broker_cert.cert_pem).unwrap();
    std::fs::write(dir.path().join("broker.key"), &broker_cert.key_pem).unwrap();
    let broker = Mosquitto::start_with(&format!(
        "cafile {0}/ca.pem\ncertfile {0}/broker.crt\nkeyfile {0}/broker.key\n",
        dir.path().display()
    ))
    .unwrap();
    let yaml = format!(
        "
name: tls-upstream
vaults:
  brokers:
    type: filesystem
    options:
      trust:
        store: ca.pem
        type: pem
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: {{ host: 127.0.0.1, port: 0 }}
    exit: north_mqtt_server
  north_mqtt_server:
    type: mqtt
    kind: server
    exit: north_mqtt_client
  north_mqtt_client:
    type: mqtt
    kind: client
    exit: south_tls_client
  south_tls_client:
    type: tls
    kind: client
    vault: brokers
    options:
      trust: [ca]
      sni: [localhost]
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {} }}
",
        broker.port()
    );
    let proxy = Proxy::start_with(Engine::from_yaml(yaml).base_dir(dir.path())).await;
    let (mut client, ack) = zilla_testkit::mqtt::RawMqtt::connect(proxy.port, "over-tls").await;
    assert_eq!(
        ack.code,
        zilla_testkit::mqtt::packets::ConnectReturnCode::Success
    );
    use zilla_testkit::mqtt::packets::{Packet, Publish, QoS};
    client
        .send(&zilla_testkit::mqtt::subscribe_packet(
            1,
            "secure/#",
            QoS::AtLeastOnce,
        ))
        .await;
    assert!(matches!(client.recv().await, Some(Packet::SubAck(_))));
    client
        .send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "secure/x".into(),
            pkid: 5,
            payload: bytes::Bytes::from_static(b"encrypted upstream"),
            properties: None,
        }))
        .await;
    let mut got_message = false;
    let mut got_ack = false;
    while !(got_message && got_ack) {
        match client.recv().await {
            Some(Packet::Publish(m)) => {
                assert_eq!(m.payload.as_ref(), b"encrypted upstream");
                got_message = true;
            }
            Some(Packet::PubAck(a)) => {
                assert_eq!(a.pkid, 5);
                got_ack = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    proxy.engine.shutdown().await;
}
