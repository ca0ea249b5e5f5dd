//! A tls client presents upstream the client certificate of the session's
//! identity (`routes[].with.certificate`, Zilla 2.2; issue 25), end to end:
//! devices connect to the proxy with their own client certificates (a tls
//! server whose `x509` guard grants the CN as identity), through the mqtt
//! server and client, to a tls client whose vault holds one upstream key
//! per device CN, and on to a real mosquitto that requires a client
//! certificate, takes its CN as the user name (`use_identity_as_username`)
//! and lets a user write only under `devices/<user>/` (`acl_file`).
//!
//! A device's publish under its own name reaching a subscriber proves that
//! mosquitto saw the device's own CN; the same device writing under another
//! device's name is refused by mosquitto (PUBACK 0x87), proving it was not
//! seen as that device either. A device whose CN has no upstream key is
//! presented upstream with no certificate: mosquitto refuses the handshake,
//! so the device reads CONNACK 0x88 (server unavailable), and the proxy says
//! why (`TLS_CLIENT_CERTIFICATE_NOT_MATCHED`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use zilla as _;
use zilla_engine::Engine;
use zilla_testkit::mqtt::packets::{ConnAck, ConnectReturnCode, Packet, PubAck, PubAckReason, QoS};
use zilla_testkit::mqtt::{connect_packet, publish_packet, subscribe_packet, RawMqtt};
use zilla_testkit::pki::{Issued, TestCa};
use zilla_testkit::proxy::{wait_for_event, Proxy};
use zilla_testkit::{free_port, Mosquitto};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The certificates of a test, written where the vaults and mosquitto read
/// them.
struct Pki {
    /// Issues the proxy's server certificate; devices trust it.
    proxy_ca: TestCa,
    /// Issues the devices' certificates for the proxy (its `trust`).
    devices_ca: TestCa,
}

/// The files: `keys/localhost.pem`, `trust/devices-ca.pem` (the tls server's
/// vault); `upstream-keys/<device>.pem` for `upstream_devices`, issued by
/// another CA (the proxy's upstream identities), and
/// `upstream-trust/broker-ca.pem` (the tls client's vault);
/// `upstream-ca.pem`, `broker.crt`, `broker.key` and `acl` (mosquitto's).
fn pki(dir: &Path, upstream_devices: &[&str]) -> Pki {
    let proxy_ca = TestCa::new("Proxy CA");
    let devices_ca = TestCa::new("Devices CA");
    let upstream_ca = TestCa::new("Upstream Devices CA");
    let broker_ca = TestCa::new("Broker CA");
    for sub in ["keys", "trust", "upstream-keys", "upstream-trust"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    proxy_ca
        .server(&["localhost"])
        .write_pem(&dir.join("keys/localhost.pem"));
    std::fs::write(dir.join("trust/devices-ca.pem"), &devices_ca.cert_pem).unwrap();
    for device in upstream_devices {
        upstream_ca
            .client(device)
            .write_pem(&dir.join(format!("upstream-keys/{device}.pem")));
    }
    std::fs::write(
        dir.join("upstream-trust/broker-ca.pem"),
        &broker_ca.cert_pem,
    )
    .unwrap();
    let broker = broker_ca.server(&["localhost"]);
    std::fs::write(dir.join("broker.crt"), &broker.cert_pem).unwrap();
    std::fs::write(dir.join("broker.key"), &broker.key_pem).unwrap();
    std::fs::write(dir.join("upstream-ca.pem"), &upstream_ca.cert_pem).unwrap();
    // Anonymous clients (the watcher, on the plain listener) read everything
    // under devices/; a user writes only under its own name.
    std::fs::write(
        dir.join("acl"),
        "topic read devices/#\npattern readwrite devices/%u/#\n",
    )
    .unwrap();
    Pki {
        proxy_ca,
        devices_ca,
    }
}

/// mosquitto with a plain listener (for the watcher) and a TLS listener on
/// `tls_port` that requires a client certificate and names its users by it.
fn mosquitto(dir: &Path, tls_port: u16) -> Mosquitto {
    let path = |file: &str| dir.join(file).display().to_string();
    let config = format!(
        "acl_file {acl}\n\
         listener {tls_port} 127.0.0.1\n\
         cafile {ca}\n\
         certfile {cert}\n\
         keyfile {key}\n\
         require_certificate true\n\
         use_identity_as_username true\n",
        acl = path("acl"),
        ca = path("upstream-ca.pem"),
        cert = path("broker.crt"),
        key = path("broker.key"),
    );
    Mosquitto::start_with(&config).unwrap_or_else(|error| panic!("{error}"))
}

/// `tcp -> tls (x509_0 grants the CN) -> mqtt -> mqtt client -> tls client
/// (one upstream key per device, chosen by the identity) -> tcp -> broker`.
fn yaml(broker_tls_port: u16, upstream_keys: &[&str]) -> String {
    format!(
        r#"
name: tls-client-identity
telemetry:
  exporters:
    capture:
      type: capture
guards:
  x509_0:
    type: x509
    options:
      identity: subject.cn
      roles:
        device:
          - issuer.cn: Devices CA
vaults:
  server:
    type: filesystem
    options:
      keys: {{ store: keys, type: pem }}
      trust: {{ store: trust, type: pem }}
  upstream:
    type: filesystem
    options:
      keys: {{ store: upstream-keys, type: pem }}
      trust: {{ store: upstream-trust, type: pem }}
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
      keys: [localhost]
      trust: [devices-ca]
      mutual: required
      authorization:
        x509_0:
          credentials:
            certificates: pem
    routes:
      - guarded:
          x509_0: [device]
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
    vault: upstream
    options:
      sni: [localhost]
      trust: [broker-ca]
      keys: {upstream_keys:?}
    routes:
      - with:
          certificate:
            subject.cn: ${{guarded['x509_0'].identity}}
        exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {broker_tls_port} }}
"#
    )
}

/// A device's MQTT 5 connection to the proxy over TLS, presenting `identity`.
struct Device {
    tls: TlsStream<TcpStream>,
    buf: BytesMut,
}

impl Device {
    async fn open(pki: &Pki, port: u16, identity: &Issued) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(pki.proxy_ca.cert_der.clone()))
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from(identity.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_der.clone())),
        )
        .unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("the proxy's handshake");
        Self {
            tls,
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out).unwrap();
        self.tls.write_all(&out).await.unwrap();
    }

    async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(TIMEOUT, async {
            loop {
                if !self.buf.is_empty() {
                    match Packet::read(&mut self.buf, None) {
                        Ok(packet) => return Some(packet),
                        Err(zilla_testkit::mqtt::packets::Error::InsufficientBytes(_)) => {}
                        Err(error) => panic!("the proxy sent a malformed packet: {error}"),
                    }
                }
                match self.tls.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("a packet or the end of the connection in time")
    }

    /// Sends CONNECT as client `id` and returns the CONNACK.
    async fn connect(&mut self, id: &str) -> ConnAck {
        self.send(&connect_packet(id, true, None)).await;
        match self.recv().await {
            Some(Packet::ConnAck(ack)) => ack,
            other => panic!("{id}: expected CONNACK, got {other:?}"),
        }
    }

    /// Publishes at QoS 1 and returns the PUBACK.
    async fn publish(&mut self, topic: &str, pkid: u16, payload: &str) -> PubAck {
        let payload = payload.as_bytes().to_vec();
        self.send(&publish_packet(topic, QoS::AtLeastOnce, pkid, payload))
            .await;
        match self.recv().await {
            Some(Packet::PubAck(ack)) => ack,
            other => panic!("{topic}: expected PUBACK, got {other:?}"),
        }
    }
}

/// The next message the watcher receives: topic and payload.
async fn next_message(watcher: &mut RawMqtt) -> (String, String) {
    loop {
        match watcher.recv().await {
            Some(Packet::Publish(publish)) => {
                return (
                    publish.topic.clone(),
                    String::from_utf8_lossy(&publish.payload).into_owned(),
                )
            }
            Some(_) => {}
            None => panic!("the watcher's connection closed"),
        }
    }
}

#[tokio::test]
async fn each_device_is_known_upstream_by_its_own_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path(), &["device-1", "device-2"]);
    let tls_port = free_port();
    let broker = mosquitto(dir.path(), tls_port);
    let builder = Engine::from_yaml(yaml(tls_port, &["device-1", "device-2"])).base_dir(dir.path());
    let proxy = Proxy::start_with(builder).await;

    let (mut watcher, ack) = RawMqtt::connect(broker.port(), "watcher").await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    watcher
        .send(&subscribe_packet(1, "devices/#", QoS::AtLeastOnce))
        .await;
    assert!(matches!(watcher.recv().await, Some(Packet::SubAck(..))));

    // Both devices connected at once, each with its own upstream connection.
    let mut one = Device::open(&pki, proxy.port, &pki.devices_ca.client("device-1")).await;
    let mut two = Device::open(&pki, proxy.port, &pki.devices_ca.client("device-2")).await;
    assert_eq!(
        one.connect("device-1").await.code,
        ConnectReturnCode::Success
    );
    assert_eq!(
        two.connect("device-2").await.code,
        ConnectReturnCode::Success
    );

    let ack = one.publish("devices/device-1/telemetry", 1, "from 1").await;
    assert_eq!(ack.reason, PubAckReason::Success);
    assert_eq!(
        next_message(&mut watcher).await,
        ("devices/device-1/telemetry".into(), "from 1".into())
    );
    let ack = two.publish("devices/device-2/telemetry", 1, "from 2").await;
    assert_eq!(ack.reason, PubAckReason::Success);
    assert_eq!(
        next_message(&mut watcher).await,
        ("devices/device-2/telemetry".into(), "from 2".into())
    );
    // Under another device's name: mosquitto, which knows device-1 as
    // device-1, refuses it.
    let ack = one.publish("devices/device-2/telemetry", 2, "forged").await;
    assert_eq!(ack.reason, PubAckReason::NotAuthorized);
    let ack = one.publish("devices/device-1/telemetry", 3, "again").await;
    assert_eq!(ack.reason, PubAckReason::Success);
    assert_eq!(
        next_message(&mut watcher).await,
        ("devices/device-1/telemetry".into(), "again".into()),
        "the forged message never arrived"
    );

    // Reconnecting in turns: each time its own certificate again.
    drop((one, two));
    for (pkid, device) in [(4, "device-2"), (5, "device-1"), (6, "device-2")] {
        let identity = pki.devices_ca.client(device);
        let mut again = Device::open(&pki, proxy.port, &identity).await;
        assert_eq!(again.connect(device).await.code, ConnectReturnCode::Success);
        let topic = format!("devices/{device}/telemetry");
        let ack = again.publish(&topic, pkid, "back").await;
        assert_eq!(ack.reason, PubAckReason::Success, "{device}");
        assert_eq!(next_message(&mut watcher).await, (topic, "back".into()));
    }
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn a_device_without_an_upstream_key_reads_server_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path(), &["device-1"]);
    let tls_port = free_port();
    let broker = mosquitto(dir.path(), tls_port);
    let builder = Engine::from_yaml(yaml(tls_port, &["device-1"])).base_dir(dir.path());
    let proxy = Proxy::start_with(builder).await;

    let identity = pki.devices_ca.client("device-3");
    let mut device = Device::open(&pki, proxy.port, &identity).await;
    let ack = device.connect("device-3").await;
    assert_eq!(ack.code, ConnectReturnCode::ServerUnavailable);
    assert_eq!(device.recv().await, None, "closed after the CONNACK");
    let event = wait_for_event(&["TLS_CLIENT_CERTIFICATE_NOT_MATCHED"]).await;
    assert!(
        event.contains(
            r#"routes[0].with.certificate (subject.cn=device-3) matched no key of options.keys [device-1], so no client certificate is presented"#
        ),
        "{event}"
    );
    let rejected = wait_for_event(&["MQTT_CONNECT_REJECTED", "device-3"]).await;
    assert!(
        rejected.contains("upstream north_mqtt_client unavailable"),
        "{rejected}"
    );

    // device-1, on the same proxy, is unaffected.
    let identity = pki.devices_ca.client("device-1");
    let mut known = Device::open(&pki, proxy.port, &identity).await;
    assert_eq!(
        known.connect("device-1").await.code,
        ConnectReturnCode::Success
    );
    drop(broker);
    proxy.engine.shutdown().await;
}
