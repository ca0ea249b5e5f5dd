//! The MQTT proxy generated from AsyncAPI: the example runs as-is, the same
//! document in 2.6 behaves the same, and bad documents fail at startup with
//! messages that point into them. Choosing servers (URLs, names) is in
//! `asyncapi/servers.rs`.

// The crate root is this file, so the submodule's path is given outright.
#[path = "asyncapi/servers.rs"]
mod servers;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use zilla as _;
use zilla::engine::Engine;
use zilla_testkit::mqtt::packets::{Packet, PubAckReason, Publish, QoS, SubscribeReasonCode};
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
    match stray.recv().await {
        Some(Packet::PubAck(ack)) => assert_eq!(
            ack.reason,
            PubAckReason::TopicNameInvalid,
            "a topic outside the document's channels is refused"
        ),
        other => panic!("expected PUBACK 0x90, got {other:?}"),
    }
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
    let (engine, port) = start_in(
        two_six(broker.port()),
        &root().join("tests/fixtures/asyncapi-2.6"),
    )
    .await;
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

/// Connects with a token signed by the seed's key, granting `scope`.
async fn connect_with_scope(
    port: u16,
    client_id: &str,
    scope: &str,
) -> (RawMqtt, zilla_testkit::mqtt::packets::ConnAck) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": "https://auth.example.com", "aud": "https://api.example.com",
        "sub": client_id, "exp": now + 600, "scope": scope,
    });
    let token = zilla_testkit::seed::sign(&claims, "example");
    let mut client = RawMqtt::open(port).await;
    let connect = match zilla_testkit::mqtt::connect_packet(client_id, true, None) {
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
        Some(Packet::ConnAck(ack)) => (client, ack),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// A client without a token is refused; one with a token signed by the
/// seed's key connects.
async fn tokens_are_required(port: u16) {
    let (_, ack) = RawMqtt::connect(port, "no-token").await;
    assert_eq!(
        ack.code,
        zilla_testkit::mqtt::packets::ConnectReturnCode::BadUserNamePassword
    );
    let (_, ack) = connect_with_scope(port, "with-token", "mqtt:stream").await;
    assert_eq!(
        ack.code,
        zilla_testkit::mqtt::packets::ConnectReturnCode::Success
    );
}

/// Starts `engine`; the port binding `name` listens on.
async fn start_listening(engine: &Engine, name: &str) -> u16 {
    let started = engine.start().await.unwrap();
    started.iter().find(|b| b.name == name).unwrap().listening[0].port()
}

/// Builds and starts `yaml`; the engine and the asyncapi server's port.
async fn start_in(yaml: String, dir: &Path) -> (Engine, u16) {
    let engine = Engine::from_yaml(yaml)
        .base_dir(dir)
        .build()
        .expect("a valid configuration");
    let port = start_listening(&engine, "mqtt_proxy_server").await;
    (engine, port)
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
    let secured = valid
        .replace(
            "components:\n",
            "components:\n  securitySchemes:\n    bearer:\n      type: http\n      scheme: bearer\n    cert:\n      type: X509\n",
        )
        .replace(
            "    protocol: mqtt\n",
            "    protocol: mqtt\n    security:\n      - $ref: '#/components/securitySchemes/bearer'\n",
        );
    std::fs::write(dir.path().join("specs/mqtt-asyncapi.yaml"), secured).unwrap();
    let guard = zilla_testkit::seed::guards_yaml();
    let with_guard =
        two_six(broker.port()).replace("bindings:\n", &format!("guards:\n{guard}bindings:\n"));
    let mapped = |security: &str| {
        with_guard.replacen(
            "              subject: smartylighting\n",
            &format!("              subject: smartylighting\n          security:\n            {security}\n"),
            1,
        )
    };

    for (yaml, expected) in [
        (with_guard.clone(), "my-asyncapi-spec.security: the document requires security (`bearer` (http bearer)): map a scheme to a guard"),
        (mapped("bearr: authn_jwt"), "security.bearr: the document has no security scheme `bearr` (it declares: `bearer` (http bearer), `cert` (X509))"),
        (mapped("bearer: no_such_guard"), "no guard named `no_such_guard`"),
    ] {
        let errors = Engine::from_yaml(yaml).base_dir(dir.path()).build().unwrap_err();
        assert!(errors.mentions(expected), "{errors}");
    }

    // 2.x style: the scheme named in the document, mapped to the guard.
    let (engine, port) = start_in(mapped("bearer: authn_jwt"), dir.path()).await;
    tokens_are_required(port).await;
    let generated = serde_yaml::to_string(engine.generated_config()).unwrap();
    assert!(
        generated.contains("username: Bearer {credentials}"),
        "{generated}"
    );
    engine.shutdown().await;

    // 1.x style: the mqtt authorization given outright.
    let explicit = with_guard.replacen(
        "      tcp:\n        host: 127.0.0.1\n        port: 0\n",
        "      tcp:\n        host: 127.0.0.1\n        port: 0\n      mqtt:\n        authorization:\n          authn_jwt:\n            credentials:\n              connect:\n                username: Bearer {credentials}\n",
        1,
    );
    let (engine, port) = start_in(explicit, dir.path()).await;
    tokens_are_required(port).await;
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

/// The proxy fixture's documents in a fresh directory, and its zilla.yaml.
fn proxy_fixture() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let fixture = root().join("tests/fixtures/asyncapi-proxy");
    std::fs::create_dir_all(dir.path().join("specs")).unwrap();
    for file in ["fleet.yaml", "telemetry.yaml", "control.yaml"] {
        let file = Path::new("specs").join(file);
        std::fs::copy(fixture.join(&file), dir.path().join(&file)).unwrap();
    }
    let yaml = std::fs::read_to_string(fixture.join("zilla.yaml")).unwrap();
    (dir, yaml)
}

/// The proxy fixture, edited by `edit`, on a free port in front of the two brokers.
fn proxy_config(
    telemetry: u16,
    control: u16,
    edit: impl FnOnce(String) -> String,
) -> (Engine, tempfile::TempDir) {
    let (dir, yaml) = proxy_fixture();
    let engine = Engine::from_yaml(edit(yaml))
        .base_dir(dir.path())
        .env(move |name| match name {
            "FLEET_PORT" => Some("0".to_owned()),
            "TELEMETRY_BROKER_PORT" => Some(telemetry.to_string()),
            "CONTROL_BROKER_PORT" => Some(control.to_string()),
            _ => None,
        })
        .build()
        .expect("the proxy configuration is valid");
    (engine, dir)
}

/// The proxy kind: each operation of the fleet document goes to the broker
/// whose document serves it; what no route names is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_routes_operations_to_the_brokers_that_serve_them() {
    use zilla_testkit::mqtt::{publish_packet, subscribe_packet};
    let telemetry = Mosquitto::start().unwrap();
    let control = Mosquitto::start().unwrap();
    let (engine, _dir) = proxy_config(telemetry.port(), control.port(), |yaml| yaml);
    let port = start_listening(&engine, "fleet_server").await;

    let (mut telemetry_watcher, _) = RawMqtt::connect(telemetry.port(), "telemetry-watcher").await;
    let (mut control_watcher, _) = RawMqtt::connect(control.port(), "control-watcher").await;
    for watcher in [&mut telemetry_watcher, &mut control_watcher] {
        watcher
            .send(&subscribe_packet(1, "fleet/#", QoS::AtLeastOnce))
            .await;
        assert!(matches!(watcher.recv().await, Some(Packet::SubAck(_))));
    }

    // An operator subscribes to commands through the proxy: served by the control broker.
    let (mut operator, _) = RawMqtt::connect(port, "operator").await;
    operator
        .send(&subscribe_packet(1, "fleet/+/commands", QoS::AtLeastOnce))
        .await;
    match operator.recv().await {
        Some(Packet::SubAck(ack)) => assert_eq!(
            ack.return_codes,
            vec![zilla_testkit::mqtt::packets::SubscribeReasonCode::Success(
                QoS::AtLeastOnce
            )]
        ),
        other => panic!("expected SUBACK, got {other:?}"),
    }

    let (mut vehicle, _) = RawMqtt::connect(port, "vehicle-7").await;
    vehicle
        .send(&publish_packet(
            "fleet/7/telemetry",
            QoS::AtLeastOnce,
            1,
            &br#"{"speed":42.5}"#[..],
        ))
        .await;
    assert!(matches!(vehicle.recv().await, Some(Packet::PubAck(_))));
    match telemetry_watcher.recv().await {
        Some(Packet::Publish(m)) => assert_eq!(m.topic, "fleet/7/telemetry"),
        other => panic!("telemetry reaches the telemetry broker, got {other:?}"),
    }

    vehicle
        .send(&publish_packet(
            "fleet/7/commands",
            QoS::AtLeastOnce,
            2,
            &br#"{"action":"stop"}"#[..],
        ))
        .await;
    assert!(matches!(vehicle.recv().await, Some(Packet::PubAck(_))));
    match control_watcher.recv().await {
        Some(Packet::Publish(m)) => assert_eq!(m.topic, "fleet/7/commands"),
        other => panic!("a command reaches the control broker, got {other:?}"),
    }
    match operator.recv().await {
        Some(Packet::Publish(m)) => assert_eq!(m.payload.as_ref(), br#"{"action":"stop"}"#),
        other => panic!("the operator receives the command, got {other:?}"),
    }
    // Only the control broker saw the command, only the telemetry broker the reading.
    control_watcher
        .send(&publish_packet(
            "fleet/0/marker",
            QoS::AtMostOnce,
            0,
            &b"end"[..],
        ))
        .await;
    match control_watcher.recv().await {
        Some(Packet::Publish(m)) => assert_eq!(m.topic, "fleet/0/marker"),
        other => panic!("the control broker saw no telemetry, got {other:?}"),
    }

    // Telemetry cannot be received through the fleet API (no receive operation).
    let (mut snoop, _) = RawMqtt::connect(port, "snoop").await;
    snoop
        .send(&subscribe_packet(1, "fleet/+/telemetry", QoS::AtLeastOnce))
        .await;
    match snoop.recv().await {
        Some(Packet::SubAck(ack)) => assert_eq!(
            ack.return_codes,
            vec![SubscribeReasonCode::TopicFilterInvalid]
        ),
        other => panic!("expected SUBACK 0x8F, got {other:?}"),
    }
    // Payloads are still validated against the fleet document.
    vehicle
        .send(&publish_packet(
            "fleet/7/telemetry",
            QoS::AtLeastOnce,
            3,
            &br#"{"speed":"fast"}"#[..],
        ))
        .await;
    assert_eq!(
        vehicle.closed().await.map(|d| d.reason_code as u8),
        Some(153)
    );
    engine.shutdown().await;
}

fn proxy_failure(from: &str, to: &str) -> String {
    let (dir, yaml) = proxy_fixture();
    assert!(yaml.contains(from), "the fixture holds {from:?}");
    Engine::from_yaml(yaml.replacen(from, to, 1))
        .base_dir(dir.path())
        .env(|_| Some("1".into()))
        .build()
        .unwrap_err()
        .to_string()
}

#[test]
fn proxy_routes_that_cannot_hold_fail_at_startup() {
    let to_telemetry = "api-id: telemetry_api\n          operation-id: sendTelemetry";
    for (from, to, expected) in [
        (
            "operation-id: sendTelemetry\n        exit",
            "operation-id: sendTelemetree\n        exit",
            "bindings.fleet_proxy.routes[0].when[0].operation-id: document `fleet_api` has no operation `sendTelemetree` (its operations: `sendTelemetry`, `sendCommands`, `receiveCommands`)",
        ),
        (
            "api-id: control_api\n",
            "api-id: telemetry_api\n",
            "bindings.fleet_proxy.routes[1].with.operation-id: document `telemetry_api` has no operation `sendCommands`",
        ),
        (
            to_telemetry,
            "api-id: control_api\n          operation-id: sendCommands",
            "bindings.fleet_proxy.routes[0].with: `sendTelemetry` of `fleet_api` is on `fleet/+/telemetry` but `sendCommands` of `control_api` on `fleet/+/commands`",
        ),
        (
            to_telemetry,
            "api-id: control_api\n          operation-id: receiveCommands",
            "lets clients publish but `receiveCommands` of `control_api` subscribe",
        ),
        (
            "    exit: fleet_proxy\n",
            "    exit: telemetry_client\n",
            "bindings.fleet_proxy: an asyncapi proxy works as the `exit` of an asyncapi server; none leads here",
        ),
    ] {
        let report = proxy_failure(from, to);
        assert!(report.contains(expected), "{report}");
    }
}

/// A proxy route's `guarded` roles apply to its operations only: a token
/// without `fleet:command` may send telemetry but not commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_routes_carry_their_own_roles() {
    use zilla_testkit::mqtt::packets::PubAckReason;
    use zilla_testkit::mqtt::publish_packet;
    let telemetry = Mosquitto::start().unwrap();
    let control = Mosquitto::start().unwrap();
    let (engine, _dir) = proxy_config(telemetry.port(), control.port(), |yaml| {
        yaml.replace(
            "bindings:\n",
            &format!("guards:\n{}bindings:\n", zilla_testkit::seed::guards_yaml()),
        )
        .replace(
            "        port: ${{env.FLEET_PORT}}\n",
            "        port: 0\n      mqtt:\n        authorization:\n          authn_jwt:\n            credentials:\n              connect:\n                username: Bearer {credentials}\n",
        )
        .replace(
            "        exit: control_client\n",
            "        exit: control_client\n        guarded:\n          authn_jwt:\n            - fleet:command\n",
        )
    });
    let port = start_listening(&engine, "fleet_server").await;

    /// mosquitto answers 0x10 (no matching subscribers) for an accepted message nobody reads.
    fn accepted(reason: PubAckReason) -> bool {
        matches!(
            reason,
            PubAckReason::Success | PubAckReason::NoMatchingSubscribers
        )
    }
    async fn publish_ack(client: &mut RawMqtt, topic: &str, pkid: u16) -> PubAckReason {
        let payload = &br#"{"speed":1,"action":"go"}"#[..];
        client
            .send(&publish_packet(topic, QoS::AtLeastOnce, pkid, payload))
            .await;
        match client.recv().await {
            Some(Packet::PubAck(ack)) => ack.reason,
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    let (mut vehicle, ack) = connect_with_scope(port, "vehicle-1", "mqtt:stream").await;
    assert_eq!(
        ack.code,
        zilla_testkit::mqtt::packets::ConnectReturnCode::Success
    );
    assert!(accepted(
        publish_ack(&mut vehicle, "fleet/1/telemetry", 1).await
    ));
    assert_eq!(
        publish_ack(&mut vehicle, "fleet/1/commands", 2).await,
        PubAckReason::NotAuthorized,
        "commands need fleet:command"
    );
    let (mut operator, _) =
        connect_with_scope(port, "operator-1", "mqtt:stream fleet:command").await;
    assert!(accepted(
        publish_ack(&mut operator, "fleet/1/commands", 1).await
    ));
    engine.shutdown().await;
}
