//! JWT at CONNECT: the seed configuration unmodified, every kind of bad token
//! for MQTT 3.1.1 and 5.0, tenant routing with identity-bound topics, sessions
//! ending at `exp`, and a JWKS URL following key rotation.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use zilla as _;
use zilla::engine::Engine;
use zilla_testkit::mqtt::packets::{
    ConnectReturnCode, Login, Packet, PubAckReason, Publish, QoS, SubscribeReasonCode,
};
use zilla_testkit::mqtt::{connect_packet, RawMqtt};
use zilla_testkit::proxy::{wait_for_event, Proxy};
use zilla_testkit::Mosquitto;

const TIMEOUT: Duration = Duration::from_secs(10);

fn seed_dir() -> std::path::PathBuf {
    zilla_testkit::seed::dir()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn seed_claims(scope: &str) -> Value {
    json!({
        "iss": "https://auth.example.com",
        "aud": "https://api.example.com",
        "sub": "device1",
        "exp": now() + 3600,
        "scope": scope,
    })
}

use zilla_testkit::seed::sign;

/// MQTT 5 CONNECT with `username` (and an empty password).
async fn connect_v5(
    port: u16,
    client_id: &str,
    username: Option<&str>,
) -> (RawMqtt, zilla_testkit::mqtt::packets::ConnAck) {
    let mut client = RawMqtt::open(port).await;
    let packet = match connect_packet(client_id, true, None) {
        Packet::Connect(connect, will, _) => Packet::Connect(
            connect,
            will,
            username.map(|u| Login {
                username: u.to_owned(),
                password: String::new(),
            }),
        ),
        other => other,
    };
    client.send(&packet).await;
    match client.recv().await {
        Some(Packet::ConnAck(ack)) => (client, ack),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// MQTT 3.1.1 CONNECT with `username`; returns the CONNACK return code.
async fn connect_v4_code(port: u16, client_id: &str, username: Option<&str>) -> u8 {
    let mut connect = rumqttc::mqttbytes::v4::Connect::new(client_id);
    if let Some(username) = username {
        connect.set_login(username, "");
    }
    let mut out = BytesMut::new();
    connect.write(&mut out).unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(&out).await.unwrap();
    let mut connack = [0u8; 4];
    tokio::time::timeout(TIMEOUT, stream.read_exact(&mut connack))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&connack[..2], &[0x20, 0x02], "a 3.1.1 CONNACK");
    connack[3]
}

fn subscribe(filter: &str) -> Packet {
    zilla_testkit::mqtt::subscribe_packet(1, filter, QoS::AtLeastOnce)
}

fn publish(topic: &str, pkid: u16, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic.into(),
        pkid,
        payload: Bytes::from_static(payload),
        properties: None,
    })
}

#[tokio::test]
async fn the_seed_configuration_runs_unmodified() {
    let broker = Mosquitto::start().unwrap();
    let env = broker.env();
    let engine = Engine::from_file(seed_dir().join("zilla.yaml"))
        .env(move |name| match name {
            "KEYSTORE_PASSWORD" => Some("generated".into()),
            _ => env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()),
        })
        .build()
        .expect("the seed configuration is valid");
    engine
        .start()
        .await
        .expect("the seed configuration starts on 7183 and 7883");
    let token = sign(&seed_claims("mqtt:stream"), "example");
    let bearer = format!("Bearer {token}");

    // Plain MQTT on 7183: subscribe and publish with the token.
    let (mut subscriber, ack) = connect_v5(7183, "seed-sub", Some(&bearer)).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    subscriber.send(&subscribe("zilla")).await;
    assert!(matches!(subscriber.recv().await, Some(Packet::SubAck(_))));
    let (mut publisher, ack) = connect_v5(7183, "seed-pub", Some(&bearer)).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    publisher.send(&publish("zilla", 1, b"Hello, world")).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    match subscriber.recv().await {
        Some(Packet::Publish(message)) => assert_eq!(message.payload.as_ref(), b"Hello, world"),
        other => panic!("expected the message, got {other:?}"),
    }
    // A 3.1.1 client with the same token.
    assert_eq!(connect_v4_code(7183, "seed-v4", Some(&bearer)).await, 0);

    // TLS on 7883 with mosquitto's own clients, verifying the keystore's Test CA.
    let dir = tempfile::tempdir().unwrap();
    let vault = zilla_vault_filesystem::FilesystemVault::load(
        "my_servers",
        &serde_yaml::from_str("keys: {store: tls/localhost.p12, password: generated}").unwrap(),
        &seed_dir(),
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
    let tls = |command: &mut Command| {
        command.arg("--cafile").arg(&cafile).args([
            "-h",
            "localhost",
            "-p",
            "7883",
            "-t",
            "zilla/tls",
            "-u",
            &bearer,
        ]);
    };
    let mut pub_tls = Command::new("mosquitto_pub");
    tls(&mut pub_tls);
    let status = pub_tls
        .args(["-m", "over TLS", "-r", "-q", "1"])
        .status()
        .await
        .unwrap();
    assert!(status.success(), "mosquitto_pub over TLS with the token");
    let mut sub_tls = Command::new("mosquitto_sub");
    tls(&mut sub_tls);
    let output = tokio::time::timeout(TIMEOUT, sub_tls.args(["-C", "1", "-W", "10"]).output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "over TLS");

    // Without the mqtt:stream scope: valid token, but no route allows the session.
    let unscoped = format!("Bearer {}", sign(&seed_claims("other"), "example"));
    assert_eq!(
        connect_v5(7183, "unscoped", Some(&unscoped)).await.1.code,
        ConnectReturnCode::NotAuthorized
    );
    assert_eq!(connect_v4_code(7183, "unscoped4", Some(&unscoped)).await, 5);

    // Every invalid token is "bad user name or password": 0x86, or 0x04 in 3.1.1.
    let with = |key: &str, value: Value| {
        let mut claims = seed_claims("mqtt:stream");
        claims[key] = value;
        format!("Bearer {}", sign(&claims, "example"))
    };
    let (head, signature) = token.rsplit_once('.').unwrap();
    let mut tampered = signature.to_owned().into_bytes();
    tampered[5] = if tampered[5] == b'x' { b'y' } else { b'x' };
    let tampered = format!("Bearer {head}.{}", String::from_utf8(tampered).unwrap());
    let unsigned = {
        use base64::Engine as _;
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "Bearer {}.{}.",
            b64(br#"{"alg":"none","typ":"JWT","kid":"example"}"#),
            b64(seed_claims("mqtt:stream").to_string().as_bytes())
        )
    };
    let confused = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("example".into());
        // The public key itself as an HMAC secret: the classic confusion attack.
        let config = std::fs::read_to_string(seed_dir().join("zilla.yaml")).unwrap();
        let public_key = config
            .split("n: ")
            .nth(1)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .as_bytes()
            .to_vec();
        format!(
            "Bearer {}",
            encode(
                &header,
                &seed_claims("mqtt:stream"),
                &EncodingKey::from_secret(&public_key)
            )
            .unwrap()
        )
    };
    let cases: Vec<(&str, Option<String>)> = vec![
        ("expired", Some(with("exp", json!(now() - 60)))),
        ("not-yet-valid", Some(with("nbf", json!(now() + 600)))),
        (
            "wrong-issuer",
            Some(with("iss", json!("https://evil.example.com"))),
        ),
        (
            "wrong-audience",
            Some(with("aud", json!("https://other.example.com"))),
        ),
        (
            "unknown-kid",
            Some(format!(
                "Bearer {}",
                sign(&seed_claims("mqtt:stream"), "other")
            )),
        ),
        ("tampered", Some(tampered)),
        ("alg-none", Some(unsigned)),
        ("hs256-confusion", Some(confused)),
        ("no-bearer-prefix", Some(token.clone())),
        ("no-credentials", None),
    ];
    for (case, username) in &cases {
        let (_, ack) = connect_v5(7183, case, username.as_deref()).await;
        assert_eq!(
            ack.code,
            ConnectReturnCode::BadUserNamePassword,
            "MQTT 5, case {case}"
        );
        assert_eq!(
            connect_v4_code(7183, case, username.as_deref()).await,
            4,
            "MQTT 3.1.1, case {case}"
        );
    }
    engine.shutdown().await;
}

/// The tenants example, on a free port and with captured events.
async fn tenants(acme: &Mosquitto, globex: &Mosquitto) -> Proxy {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mqtt.proxy.tenants/zilla.yaml");
    let yaml = std::fs::read_to_string(path)
        .unwrap()
        .replace("port: 7183", "port: 0")
        .replace("type: stdout", "type: capture");
    let ports = [acme.port(), globex.port()];
    Proxy::start_with(Engine::from_yaml(yaml).env(move |name| match name {
        "ACME_BROKER_HOST" | "GLOBEX_BROKER_HOST" => Some("127.0.0.1".into()),
        "ACME_BROKER_PORT" => Some(ports[0].to_string()),
        "GLOBEX_BROKER_PORT" => Some(ports[1].to_string()),
        _ => None,
    }))
    .await
}

fn tenant_token(tenant: &str) -> String {
    let mut claims = seed_claims(&format!("mqtt:stream tenant:{tenant}"));
    claims["tenant"] = json!(tenant);
    format!("Bearer {}", sign(&claims, "example"))
}

#[tokio::test]
async fn tenants_reach_their_own_broker_and_stay_in_their_topics() {
    let (acme_broker, globex_broker) = (Mosquitto::start().unwrap(), Mosquitto::start().unwrap());
    let proxy = tenants(&acme_broker, &globex_broker).await;
    let (mut on_acme, _) = RawMqtt::connect(acme_broker.port(), "").await;
    on_acme.send(&subscribe("#")).await;
    assert!(matches!(on_acme.recv().await, Some(Packet::SubAck(_))));
    let (mut on_globex, _) = RawMqtt::connect(globex_broker.port(), "").await;
    on_globex.send(&subscribe("#")).await;
    assert!(matches!(on_globex.recv().await, Some(Packet::SubAck(_))));

    let (mut acme, ack) = connect_v5(proxy.port, "acme-device", Some(&tenant_token("acme"))).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let (mut globex, ack) =
        connect_v5(proxy.port, "globex-device", Some(&tenant_token("globex"))).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);

    acme.send(&publish("tenants/acme/temp", 1, b"21")).await;
    assert!(
        matches!(acme.recv().await, Some(Packet::PubAck(a)) if a.reason != PubAckReason::NotAuthorized)
    );
    globex.send(&publish("tenants/globex/temp", 1, b"19")).await;
    assert!(
        matches!(globex.recv().await, Some(Packet::PubAck(a)) if a.reason != PubAckReason::NotAuthorized)
    );
    match on_acme.recv().await {
        Some(Packet::Publish(m)) => assert_eq!(m.topic, "tenants/acme/temp"),
        other => panic!("acme's broker expected acme's message: {other:?}"),
    }
    match on_globex.recv().await {
        Some(Packet::Publish(m)) => assert_eq!(m.topic, "tenants/globex/temp"),
        other => panic!("globex's broker expected globex's message: {other:?}"),
    }

    // Outside its tenant: PUBACK and SUBACK 0x87, the connection stays up.
    acme.send(&publish("tenants/globex/temp", 2, b"intrusion"))
        .await;
    match acme.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!(a.reason, PubAckReason::NotAuthorized),
        other => panic!("expected PUBACK 0x87, got {other:?}"),
    }
    acme.send(&subscribe("tenants/globex/#")).await;
    match acme.recv().await {
        Some(Packet::SubAck(a)) => {
            assert_eq!(a.return_codes, vec![SubscribeReasonCode::NotAuthorized])
        }
        other => panic!("expected SUBACK 0x87, got {other:?}"),
    }
    wait_for_event(&[
        "MQTT_PUBLISH_REJECTED",
        "acme-device",
        "tenants/globex/temp",
    ])
    .await;
    wait_for_event(&["MQTT_SUBSCRIBE_REJECTED", "acme-device", "tenants/globex/#"]).await;
    acme.send(&publish("tenants/acme/still", 3, b"ok")).await;
    assert!(
        matches!(acme.recv().await, Some(Packet::PubAck(a)) if a.reason != PubAckReason::NotAuthorized)
    );

    // A token for no tenant the routes know: valid, but not authorized.
    let (_, ack) = connect_v5(proxy.port, "initech-device", Some(&tenant_token("initech"))).await;
    assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);
    wait_for_event(&[
        "MQTT_CONNECT_REJECTED",
        "initech-device",
        "no route accepts this session",
    ])
    .await;
    // A rejected token's event gives the reason, never the token.
    let bad = format!(
        "Bearer {}",
        sign(
            &{
                let mut c = seed_claims("x");
                c["exp"] = json!(now() - 5);
                c
            },
            "example"
        )
    );
    let (_, ack) = connect_v5(proxy.port, "late-device", Some(&bad)).await;
    assert_eq!(ack.code, ConnectReturnCode::BadUserNamePassword);
    let event = wait_for_event(&["MQTT_CONNECT_REJECTED", "late-device", "token expired"]).await;
    assert!(
        !event.contains(bad.trim_start_matches("Bearer ")),
        "{event}"
    );
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn the_session_ends_when_the_token_expires() {
    let (acme_broker, globex_broker) = (Mosquitto::start().unwrap(), Mosquitto::start().unwrap());
    let proxy = tenants(&acme_broker, &globex_broker).await;
    let mut claims = seed_claims("mqtt:stream tenant:acme");
    claims["tenant"] = json!("acme");
    claims["exp"] = json!(now() + 2);
    let token = format!("Bearer {}", sign(&claims, "example"));
    let (mut client, ack) = connect_v5(proxy.port, "short-lived", Some(&token)).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let disconnect = client.closed().await.expect("a DISCONNECT at exp");
    // 0xA0 Maximum connect time; the codec crate has no name for it.
    let reason_string = disconnect.properties.and_then(|p| p.reason_string);
    assert_eq!(reason_string.as_deref(), Some("credentials expired"));
    assert!(now() >= claims["exp"].as_u64().unwrap(), "not before exp");
    wait_for_event(&["MQTT_SESSION_EXPIRED", "short-lived", "DISCONNECT 0xA0"]).await;
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn a_jwks_url_follows_key_rotation() {
    use base64::Engine as _;
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let seed_jwk = json!({
        "kty": "RSA", "alg": "RS256", "kid": "example", "e": "AQAB",
        "n": "qqEu50hX-43Bx4W1UYWnAVKwFm-vDbP0kuIOSLVNa-HKQdHTf-3Sei5UCnkskn796izA29D0DdCy3ET9oaKRHIJyKbqFl0rv6f516QzOoXKC6N01sXBHBE_ovs0wwDvlaW-gFGPgkzdcfUlyrWLDnLV7LcuQymhTND2uH0oR3wJnNENN_OFgM1KGPPDOe19YsIKdLqARgxrhZVsh06OurEviZTXOBFI5r-yac7haDwOQhLHXNv-Y9MNvxs5QLWPFIM3bNUWfYrJnLrs4hGJS-y_KDM9Si-HL30QAFXy4YNO33J8DHjZ7ddG5n8_FqplOKvRtUgjcKWlxoGY4VdVaDQ"
    });
    // The rotated key: a fresh P-256 key, published as an EC JWK.
    let rotated = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = rotated.public_key_raw();
    let rotated_jwk = json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "rotated",
        "x": b64(&point[1..33]), "y": b64(&point[33..65])
    });
    let jwks_stub = zilla_testkit::http::HttpStub::start().await;
    jwks_stub.set(
        "/.well-known/jwks.json",
        200,
        json!({"keys": [seed_jwk]}).to_string(),
    );
    let jwks = jwks_stub.port;
    let broker = Mosquitto::start().unwrap();
    let yaml = format!(
        "
name: jwks
telemetry:
  exporters:
    capture:
      type: capture
guards:
  authn_jwt:
    type: jwt
    options:
      issuer: https://auth.example.com
      audience: https://api.example.com
      keys: http://127.0.0.1:{jwks}/.well-known/jwks.json
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: {{ host: 127.0.0.1, port: 0 }}
    exit: north_mqtt_server
  north_mqtt_server:
    type: mqtt
    kind: server
    options:
      authorization:
        authn_jwt:
          credentials:
            connect:
              username: Bearer {{credentials}}
    routes:
      - guarded:
          authn_jwt: [mqtt:stream]
        exit: north_mqtt_client
  north_mqtt_client:
    type: mqtt
    kind: client
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {} }}
",
        broker.port()
    );
    let proxy = Proxy::start_with(
        Engine::from_yaml(yaml).property(zilla_guard_jwt::PROPERTY_REFRESH_MIN, "0"),
    )
    .await;
    let old = format!("Bearer {}", sign(&seed_claims("mqtt:stream"), "example"));
    assert_eq!(
        connect_v5(proxy.port, "before", Some(&old)).await.1.code,
        ConnectReturnCode::Success
    );

    // The issuer rotates to a new key; a token naming it triggers a refresh.
    jwks_stub.set(
        "/.well-known/jwks.json",
        200,
        json!({"keys": [rotated_jwk]}).to_string(),
    );
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("rotated".into());
    let new = format!(
        "Bearer {}",
        encode(
            &header,
            &seed_claims("mqtt:stream"),
            &EncodingKey::from_ec_der(&rotated.serialize_der())
        )
        .unwrap()
    );
    assert_eq!(
        connect_v5(proxy.port, "after", Some(&new)).await.1.code,
        ConnectReturnCode::Success
    );
    // The retired key is gone.
    assert_eq!(
        connect_v5(proxy.port, "retired", Some(&old)).await.1.code,
        ConnectReturnCode::BadUserNamePassword
    );
    wait_for_event(&["MQTT_CONNECT_REJECTED", "retired", "unknown key id example"]).await;
    proxy.engine.shutdown().await;
}

/// A one-shot broker stand-in that records the CONNECT it receives.
async fn recording_broker() -> (u16, tokio::sync::oneshot::Receiver<Packet>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (sender, receiver) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        let connect = loop {
            stream.read_buf(&mut buf).await.unwrap();
            if let Ok(packet) = Packet::read(&mut buf, None) {
                break packet;
            }
        };
        let mut out = BytesMut::new();
        Packet::ConnAck(zilla_testkit::mqtt::packets::ConnAck {
            session_present: false,
            code: ConnectReturnCode::Success,
            properties: None,
        })
        .write(&mut out)
        .unwrap();
        stream.write_all(&out).await.unwrap();
        let _ = sender.send(connect);
        // Hold the connection open until the proxy closes it.
        let _ = stream.read_buf(&mut buf).await;
    });
    (port, receiver)
}

#[tokio::test]
async fn the_mqtt_client_forwards_the_token_upstream_only_when_configured() {
    let yaml = |broker: u16, forward: bool| {
        let client_options = if forward {
            "    options:\n      authorization:\n        authn_jwt:\n          credentials:\n            connect:\n              password: \"{credentials}\"\n"
        } else {
            ""
        };
        let guard = zilla_testkit::seed::guards_yaml();
        format!(
            "
name: forwarding
guards:
{guard}bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: {{ host: 127.0.0.1, port: 0 }}
    exit: north_mqtt_server
  north_mqtt_server:
    type: mqtt
    kind: server
    options:
      authorization:
        authn_jwt:
          credentials:
            connect:
              username: Bearer {{credentials}}
    routes:
      - guarded:
          authn_jwt: [mqtt:stream]
        exit: north_mqtt_client
  north_mqtt_client:
    type: mqtt
    kind: client
{client_options}    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {broker} }}
"
        )
    };
    let token = sign(&seed_claims("mqtt:stream"), "example");
    let bearer = format!("Bearer {token}");
    for forward in [true, false] {
        let (broker, connect) = recording_broker().await;
        let proxy = Proxy::start(&yaml(broker, forward)).await;
        let (_client, ack) = connect_v5(proxy.port, "forwarded", Some(&bearer)).await;
        assert_eq!(ack.code, ConnectReturnCode::Success);
        let login = match connect.await.unwrap() {
            Packet::Connect(_, _, login) => login,
            other => panic!("expected CONNECT, got {other:?}"),
        };
        if forward {
            assert_eq!(
                login.map(|l| l.password),
                Some(token.clone()),
                "the token, in the password"
            );
        } else {
            assert!(
                login.is_none(),
                "credentials meant for the proxy stay at the proxy"
            );
        }
        proxy.engine.shutdown().await;
    }
}
