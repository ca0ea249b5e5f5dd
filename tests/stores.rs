//! Stores: the seed in today's shape (a `memory` store holding session
//! ownership, named by the mqtt server's `store`) and in its older shape
//! without one, both on free ports in front of a real mosquitto; servers that
//! name one store take over each other's sessions by client id, servers with
//! different stores (or none) do not.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::process::Command;
use zilla as _;
use zilla::engine::Engine;
use zilla_testkit::mqtt::packets::{
    ConnAck, ConnectReturnCode, DisconnectReasonCode, Login, Packet, PubAckReason, QoS,
};
use zilla_testkit::mqtt::{connect_packet, publish_packet, subscribe_packet, RawMqtt};
use zilla_testkit::{free_port, seed, Mosquitto};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A token signed with the seed's key, granting `scope`.
fn bearer(scope: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "iss": "https://auth.example.com", "aud": "https://api.example.com",
        "sub": "device1", "exp": now + 600, "scope": scope,
    });
    format!("Bearer {}", seed::sign(&claims, "example"))
}

/// MQTT 5 CONNECT with `username`; the connection and its CONNACK.
async fn connect(port: u16, client_id: &str, username: Option<&str>) -> (RawMqtt, ConnAck) {
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

/// The seed's `zilla.yaml` as the example has it (today's shape).
fn seed_yaml() -> String {
    std::fs::read_to_string(seed::dir().join("zilla.yaml")).expect("the seed config")
}

/// The seed before Zilla required stores: no `stores`, no `store`.
fn older_shape(yaml: &str) -> String {
    let (stores, store) = (
        "stores:\n  memory0:\n    type: memory\n",
        "      store: memory0\n",
    );
    assert!(yaml.contains(stores) && yaml.contains(store), "{yaml}");
    yaml.replace(stores, "").replace(store, "")
}

/// Starts the seed's `yaml` with its two ports moved to free ones; the
/// engine, its plain MQTT port and its MQTT over TLS port.
async fn start_seed(yaml: &str, broker: &Mosquitto) -> (Engine, u16, u16) {
    let plain = free_port();
    let tls = loop {
        let port = free_port();
        if port != plain {
            break port;
        }
    };
    let yaml = yaml
        .replace("7183", &plain.to_string())
        .replace("7883", &tls.to_string());
    let env = broker.env();
    let engine = Engine::from_yaml(yaml)
        .base_dir(seed::dir())
        .env(move |name| match name {
            "KEYSTORE_PASSWORD" => Some("generated".into()),
            _ => env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()),
        })
        .build()
        .expect("the seed configuration is valid");
    engine.start().await.expect("the seed starts");
    (engine, plain, tls)
}

/// What the seed promises: with a token, messages published over plain MQTT
/// and over TLS reach subscribers through mosquitto; without one, or without
/// the `mqtt:stream` scope, CONNECT is refused.
async fn behaves_like_the_seed(plain: u16, tls: u16) {
    let token = bearer("mqtt:stream");
    let (mut subscriber, ack) = connect(plain, "seed-sub", Some(&token)).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    subscriber
        .send(&subscribe_packet(1, "zilla/#", QoS::AtLeastOnce))
        .await;
    assert!(matches!(subscriber.recv().await, Some(Packet::SubAck(_))));

    let (mut publisher, _) = connect(plain, "seed-pub", Some(&token)).await;
    publisher
        .send(&publish_packet(
            "zilla/plain",
            QoS::AtLeastOnce,
            1,
            &b"over MQTT"[..],
        ))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    match subscriber.recv().await {
        Some(Packet::Publish(m)) => assert_eq!(m.payload.as_ref(), b"over MQTT"),
        other => panic!("expected the plain message, got {other:?}"),
    }

    // mosquitto's own client over TLS, trusting the keystore's Test CA.
    let status = tokio::time::timeout(
        TIMEOUT,
        Command::new("mosquitto_pub")
            .arg("--cafile")
            .arg(seed::dir().join("tls/test-ca.pem"))
            .args(["-h", "localhost", "-p", &tls.to_string()])
            .args(["-t", "zilla/tls", "-m", "over TLS", "-q", "1", "-u", &token])
            .status(),
    )
    .await
    .expect("mosquitto_pub ends in time")
    .expect("mosquitto_pub runs");
    assert!(status.success(), "mosquitto_pub over TLS with the token");
    match subscriber.recv().await {
        Some(Packet::Publish(m)) => assert_eq!(m.payload.as_ref(), b"over TLS"),
        other => panic!("expected the TLS message, got {other:?}"),
    }

    let (_, ack) = connect(plain, "no-token", None).await;
    assert_eq!(ack.code, ConnectReturnCode::BadUserNamePassword);
    let (_, ack) = connect(plain, "unscoped", Some(&bearer("other"))).await;
    assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_in_todays_shape_with_a_memory_store_runs() {
    let broker = Mosquitto::start().unwrap();
    let yaml = seed_yaml();
    assert!(yaml.contains("stores:\n  memory0:\n    type: memory\n"));
    let (engine, plain, tls) = start_seed(&yaml, &broker).await;
    behaves_like_the_seed(plain, tls).await;
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_in_its_older_shape_without_a_store_still_runs() {
    let broker = Mosquitto::start().unwrap();
    let (engine, plain, tls) = start_seed(&older_shape(&seed_yaml()), &broker).await;
    behaves_like_the_seed(plain, tls).await;
    engine.shutdown().await;
}

/// Two tcp+mqtt server pipelines, `a` and `b`, each toward its own broker,
/// whose mqtt servers name `store_a` and `store_b` (`None`: no store).
fn two_servers(
    namespace: &str,
    store_a: Option<&str>,
    store_b: Option<&str>,
    brokers: [u16; 2],
) -> String {
    let options = |store: Option<&str>| {
        store
            .map(|s| format!("    options:\n      store: {s}\n"))
            .unwrap_or_default()
    };
    let mut yaml = format!(
        "
name: {namespace}
stores:
  memory0:
    type: memory
  memory1:
    type: memory
bindings:
"
    );
    for (side, store, broker) in [("a", store_a, brokers[0]), ("b", store_b, brokers[1])] {
        yaml.push_str(&format!(
            "  {side}_tcp_server:
    type: tcp
    kind: server
    options: {{ host: 127.0.0.1, port: 0 }}
    exit: {side}_mqtt_server
  {side}_mqtt_server:
    type: mqtt
    kind: server
{options}    exit: {side}_mqtt_client
  {side}_mqtt_client:
    type: mqtt
    kind: client
    exit: {side}_tcp_client
  {side}_tcp_client:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {broker} }}
",
            options = options(store)
        ));
    }
    yaml
}

/// Starts `yaml`; the engine and the ports of `a_tcp_server` and `b_tcp_server`.
async fn start_two(yaml: String) -> (Engine, u16, u16) {
    let engine = Engine::from_yaml(yaml)
        .build()
        .expect("a valid configuration");
    let started = engine.start().await.unwrap();
    let port = |name: &str| started.iter().find(|b| b.name == name).unwrap().listening[0].port();
    (engine, port("a_tcp_server"), port("b_tcp_server"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_sharing_a_store_take_over_each_others_sessions() {
    // Each side has its own broker, so only the proxy can end the first session.
    let brokers = [Mosquitto::start().unwrap(), Mosquitto::start().unwrap()];
    let ports = [brokers[0].port(), brokers[1].port()];
    let yaml = two_servers("stores-shared", Some("memory0"), Some("memory0"), ports);
    let (engine, a, b) = start_two(yaml).await;
    let (mut first, _) = RawMqtt::connect(a, "sensor-1").await;
    let (_second, ack) = RawMqtt::connect(b, "sensor-1").await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    assert_eq!(
        first.closed().await.map(|d| d.reason_code),
        Some(DisconnectReasonCode::SessionTakenOver),
        "a connection through the other server took the client id over"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_with_different_stores_or_none_keep_their_own_sessions() {
    let brokers = [Mosquitto::start().unwrap(), Mosquitto::start().unwrap()];
    let ports = [brokers[0].port(), brokers[1].port()];
    for (namespace, store_a, store_b) in [
        ("stores-apart", Some("memory0"), Some("memory1")),
        ("stores-none", None, None),
    ] {
        let yaml = two_servers(namespace, store_a, store_b, ports);
        let (engine, a, b) = start_two(yaml).await;
        let (mut first, _) = RawMqtt::connect(a, "sensor-1").await;
        let (_second, ack) = RawMqtt::connect(b, "sensor-1").await;
        assert_eq!(ack.code, ConnectReturnCode::Success);
        // The first session is still there: its publish is acknowledged.
        first
            .send(&publish_packet(
                "sensors/1",
                QoS::AtLeastOnce,
                1,
                &b"21"[..],
            ))
            .await;
        match first.recv().await {
            Some(Packet::PubAck(ack)) => assert!(
                matches!(
                    ack.reason,
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                ),
                "{namespace}: {ack:?}"
            ),
            other => panic!("{namespace}: the first session lives on, got {other:?}"),
        }
        engine.shutdown().await;
    }
}
