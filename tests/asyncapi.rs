//! The MQTT proxy generated from AsyncAPI: the example runs as-is, the same
//! document in 2.6 behaves the same, and bad documents fail at startup with
//! messages that point into them.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use zilla as _;
use zilla::engine::Engine;
use zilla_testkit::mqtt::packets::{DisconnectReasonCode, Packet, Publish, QoS};
use zilla_testkit::mqtt::RawMqtt;
use zilla_testkit::Mosquitto;

const TOPIC: &str = "smartylighting/streetlights/1/0/event/1/lighting/measured";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
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

/// Valid events pass, invalid ones get 0x99, other topics are refused.
async fn behaves_like_the_spec(port: u16) {
    let (mut subscriber, _) = RawMqtt::connect(port, "streetlight-watcher").await;
    subscriber
        .send(&zilla_testkit::mqtt::subscribe_packet(
            1,
            "smartylighting/streetlights/1/0/event/+/lighting/measured",
            QoS::AtLeastOnce,
        ))
        .await;
    assert!(matches!(subscriber.recv().await, Some(Packet::SubAck(_))));

    let (mut light, _) = RawMqtt::connect(port, "streetlight-1").await;
    light
        .send(&publish(TOPIC, 1, br#"{"id":"1","status":"on"}"#))
        .await;
    assert!(matches!(light.recv().await, Some(Packet::PubAck(_))));
    match subscriber.recv().await {
        Some(Packet::Publish(m)) => assert_eq!(m.payload.as_ref(), br#"{"id":"1","status":"on"}"#),
        other => panic!("the subscriber expected the event, got {other:?}"),
    }
    light
        .send(&publish(TOPIC, 2, br#"{"id":"1","stat":"off"}"#))
        .await;
    assert_eq!(light.closed().await.map(|d| d.reason_code as u8), Some(153));

    let (mut stray, _) = RawMqtt::connect(port, "stray").await;
    stray
        .send(&publish(
            "smartylighting/other",
            1,
            br#"{"id":"1","status":"on"}"#,
        ))
        .await;
    assert_eq!(
        stray.closed().await.map(|d| d.reason_code),
        Some(DisconnectReasonCode::ImplementationSpecificError),
        "a topic outside the document's channels is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_runs_as_is() {
    let broker = Mosquitto::start().unwrap();
    let env = broker.env();
    let engine = Engine::from_file(root().join("examples/asyncapi.mqtt.proxy/zilla.yaml"))
        .env(move |name| env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()))
        .build()
        .expect("the example is valid");
    let started = engine.start().await.unwrap();
    let server = started
        .iter()
        .find(|b| b.name == "mqtt_proxy_server")
        .unwrap();
    assert_eq!(
        server.listening[0].port(),
        7183,
        "the port of the document's server"
    );
    behaves_like_the_spec(7183).await;
    engine.shutdown().await;
}

fn two_six(broker: u16) -> String {
    format!(
        "
name: asyncapi-2-6
catalogs:
  host_filesystem:
    type: filesystem
    options:
      subjects:
        smartylighting:
          path: specs/mqtt-asyncapi.yaml
bindings:
  mqtt_proxy_server:
    type: asyncapi
    kind: server
    options:
      specs:
        my-asyncapi-spec:
          catalog:
            host_filesystem:
              subject: smartylighting
      tcp:
        host: 127.0.0.1
        port: 0
    exit: mqtt_proxy_client
  mqtt_proxy_client:
    type: asyncapi
    kind: client
    options:
      specs:
        my-asyncapi-spec:
          catalog:
            host_filesystem:
              subject: smartylighting
      tcp:
        host: 127.0.0.1
        port: {broker}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_document_in_asyncapi_2_6_behaves_the_same() {
    let broker = Mosquitto::start().unwrap();
    let engine = Engine::from_yaml(two_six(broker.port()))
        .base_dir(root().join("tests/fixtures/asyncapi-2.6"))
        .build()
        .expect("the 2.6 configuration is valid");
    let started = engine.start().await.unwrap();
    let port = started
        .iter()
        .find(|b| b.name == "mqtt_proxy_server")
        .unwrap()
        .listening[0]
        .port();
    behaves_like_the_spec(port).await;
    // What the document became: ordinary tcp, mqtt bindings and an inline catalog.
    let generated = serde_yaml::to_string(engine.generated_config()).unwrap();
    for expected in [
        "mqtt_proxy_server_mqtt:",
        "type: inline",
        "smartylighting/streetlights/1/0/event/+/lighting/measured",
    ] {
        assert!(generated.contains(expected), "{generated}");
    }
    engine.shutdown().await;
}

fn failing(spec: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("specs")).unwrap();
    std::fs::write(dir.path().join("specs/mqtt-asyncapi.yaml"), spec).unwrap();
    Engine::from_yaml(two_six(1))
        .base_dir(dir.path())
        .build()
        .unwrap_err()
        .to_string()
}

#[test]
fn malformed_documents_fail_at_startup_pointing_into_them() {
    let valid = std::fs::read_to_string(
        root().join("examples/asyncapi.mqtt.proxy/specs/mqtt-asyncapi.yaml"),
    )
    .unwrap();
    let report = failing("asyncapi: [unclosed");
    assert!(report.contains("bindings.mqtt_proxy_server.options.specs.my-asyncapi-spec: smartylighting: not a YAML or JSON document"), "{report}");
    let report = failing(&valid.replace("#/components/schemas/item", "#/components/schemas/gone"));
    assert!(
        report.contains("channels.smartylighting.messages.item.payload: $ref `#/components/schemas/gone` does not exist"),
        "{report}"
    );
    let report = failing(&valid.replace("protocol: mqtt", "protocol: kafka"));
    assert!(
        report.contains("servers: no server with protocol `mqtt` or `mqtts`"),
        "{report}"
    );
    let report = failing(&valid.replace("asyncapi: 3.0.0", "asyncapi: 9.1.0"));
    assert!(
        report.contains("asyncapi: version `9.1.0` is not supported"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_with_security_requires_tokens() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("specs")).unwrap();
    let valid = std::fs::read_to_string(
        root().join("examples/asyncapi.mqtt.proxy/specs/mqtt-asyncapi.yaml"),
    )
    .unwrap();
    let secured = valid.replace(
        "components:\n",
        "components:\n  securitySchemes:\n    bearer:\n      type: http\n      scheme: bearer\n",
    );
    std::fs::write(dir.path().join("specs/mqtt-asyncapi.yaml"), secured).unwrap();
    let seed = std::fs::read_to_string(root().join("examples/mqtt.proxy.jwt/zilla.yaml")).unwrap();
    let guard = seed
        .split("guards:\n")
        .nth(1)
        .unwrap()
        .split("bindings:\n")
        .next()
        .unwrap();
    let without_mapping = two_six(broker.port());
    let errors = Engine::from_yaml(without_mapping)
        .base_dir(dir.path())
        .build()
        .unwrap_err();
    assert!(
        errors.mentions("the document requires security (http)"),
        "{errors}"
    );

    let yaml = two_six(broker.port())
        .replace("bindings:\n", &format!("guards:\n{guard}bindings:\n"))
        .replacen(
            "      tcp:\n        host: 127.0.0.1\n        port: 0\n",
            "      tcp:\n        host: 127.0.0.1\n        port: 0\n      mqtt:\n        authorization:\n          authn_jwt:\n            credentials:\n              connect:\n                username: Bearer {credentials}\n",
            1,
        );
    let engine = Engine::from_yaml(yaml)
        .base_dir(dir.path())
        .build()
        .expect("valid with the guard mapped");
    let started = engine.start().await.unwrap();
    let port = started
        .iter()
        .find(|b| b.name == "mqtt_proxy_server")
        .unwrap()
        .listening[0]
        .port();
    let (_, ack) = RawMqtt::connect(port, "no-token").await;
    assert_eq!(
        ack.code,
        zilla_testkit::mqtt::packets::ConnectReturnCode::BadUserNamePassword
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": "https://auth.example.com", "aud": "https://api.example.com",
        "sub": "light-1", "exp": now + 600, "scope": "mqtt:stream",
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("example".into());
    let key = std::fs::read(root().join("examples/mqtt.proxy.jwt/private.pem")).unwrap();
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(&key).unwrap(),
    )
    .unwrap();
    let mut client = RawMqtt::open(port).await;
    let connect = match zilla_testkit::mqtt::connect_packet("with-token", true, None) {
        Packet::Connect(c, w, _) => Packet::Connect(
            c,
            w,
            Some(zilla_testkit::mqtt::packets::Login {
                username: format!("Bearer {token}"),
                password: String::new(),
            }),
        ),
        other => other,
    };
    client.send(&connect).await;
    match client.recv().await {
        Some(Packet::ConnAck(ack)) => assert_eq!(
            ack.code,
            zilla_testkit::mqtt::packets::ConnectReturnCode::Success
        ),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    engine.shutdown().await;
}

#[test]
fn message_headers_become_user_property_models() {
    let valid = std::fs::read_to_string(
        root().join("examples/asyncapi.mqtt.proxy/specs/mqtt-asyncapi.yaml"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("specs")).unwrap();
    std::fs::write(
        dir.path().join("specs/mqtt-asyncapi.yaml"),
        valid.replace("          id:\n            description: Street Light ID\n            type: string", "          id:\n            description: Street Light ID\n            type: string\n            maxLength: 8"),
    )
    .unwrap();
    let engine = Engine::from_yaml(two_six(1))
        .base_dir(dir.path())
        .build()
        .unwrap();
    let generated = serde_yaml::to_string(engine.generated_config()).unwrap();
    assert!(generated.contains("user-properties:"), "{generated}");
    assert!(generated.contains("idempotency-key:"), "{generated}");
    assert!(generated.contains("maxLength: 8"), "{generated}");
}
