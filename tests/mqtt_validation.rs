//! Schema validation at the edge: valid payloads pass to the broker, invalid
//! ones are refused with 0x99 and never reach a subscriber.

use bytes::Bytes;
use zilla as _;
use zilla::engine::Engine;
use zilla_testkit::mqtt::packets::{
    DisconnectReasonCode, Packet, PubAckReason, Publish, PublishProperties, QoS,
};
use zilla_testkit::mqtt::RawMqtt;
use zilla_testkit::proxy::{mqtt_proxy_yaml, wait_for_event, Proxy};
use zilla_testkit::Mosquitto;

const LIGHTS: &str = r#"{"type":"object","properties":{"id":{"type":"string"},"status":{"type":"string","enum":["on","off"]}},"required":["id","status"]}"#;

fn server(topics: &str) -> String {
    format!(
        "    options:
      topics:
{topics}
    exit: mqtt_client_a"
    )
}

fn with_catalogs(yaml: String, dir: &std::path::Path) -> String {
    std::fs::write(dir.join("lights.json"), LIGHTS).unwrap();
    yaml.replacen(
        "bindings:",
        &format!(
            "catalogs:
  host_inline:
    type: inline
    options:
      subjects:
        lights:
          schema: '{LIGHTS}'
  host_filesystem:
    type: filesystem
    options:
      subjects:
        lights:
          path: lights.json
bindings:"
        ),
        1,
    )
}

async fn start(broker: &Mosquitto, dir: &std::path::Path, topics: &str) -> Proxy {
    let yaml = with_catalogs(
        mqtt_proxy_yaml(&server(topics), &[("a", broker.port())]),
        dir,
    );
    Proxy::start_with(Engine::from_yaml(yaml).base_dir(dir)).await
}

fn publish(
    topic: &str,
    qos: QoS,
    pkid: u16,
    payload: &'static [u8],
    properties: Option<PublishProperties>,
) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        pkid,
        payload: Bytes::from_static(payload),
        properties,
    })
}

async fn watcher(broker: &Mosquitto) -> RawMqtt {
    let (mut watcher, _) = RawMqtt::connect(broker.port(), "").await;
    watcher
        .send(&zilla_testkit::mqtt::subscribe_packet(
            1,
            "#",
            QoS::AtMostOnce,
        ))
        .await;
    assert!(matches!(watcher.recv().await, Some(Packet::SubAck(_))));
    watcher
}

async fn next_payload(watcher: &mut RawMqtt) -> Bytes {
    loop {
        match watcher.recv().await {
            Some(Packet::Publish(m)) => return m.payload,
            Some(_) => {}
            None => panic!("watcher closed"),
        }
    }
}

const JSON_TOPICS: &str = "        - name: lights/inline/#
          content:
            model: json
            catalog:
              host_inline:
                - subject: lights
        - name: lights/file/#
          content:
            model: json
            catalog:
              host_filesystem:
                - subject: lights
                  version: latest
        - name: lights/reject/#
          on-invalid: reject
          content:
            model: json
            catalog:
              host_inline:
                - subject: lights
        - name: counters/#
          content:
            model: int32
            range: '[0,1000]'
        - name: names/#
          content:
            model: string
            maxLength: 8
          user-properties:
            unit:
              model: string
              pattern: '[a-z]+'";

#[tokio::test]
async fn valid_json_passes_and_invalid_json_is_refused_with_0x99() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(&broker, dir.path(), JSON_TOPICS).await;
    let mut seen = watcher(&broker).await;

    for topic in ["lights/inline/1", "lights/file/1"] {
        let (mut client, _) = RawMqtt::connect(proxy.port, "lamp").await;
        client
            .send(&publish(
                topic,
                QoS::AtLeastOnce,
                1,
                br#"{"id":"1","status":"on"}"#,
                None,
            ))
            .await;
        assert!(
            matches!(client.recv().await, Some(Packet::PubAck(a)) if a.reason != PubAckReason::PayloadFormatInvalid)
        );
        assert_eq!(
            next_payload(&mut seen).await.as_ref(),
            br#"{"id":"1","status":"on"}"#
        );

        client
            .send(&publish(
                topic,
                QoS::AtLeastOnce,
                2,
                br#"{"id":"1","stat":"off"}"#,
                None,
            ))
            .await;
        assert_eq!(
            client.closed().await.map(|d| d.reason_code),
            Some(DisconnectReasonCode::PayloadFormatInvalid)
        );
    }
    let event = wait_for_event(&[
        "MQTT_VALIDATION_FAILED",
        "lights/file/1",
        "fails model json",
        "/required",
    ])
    .await;
    assert!(
        !event.contains("stat\\\":\\\"off"),
        "events never carry the payload: {event}"
    );

    // Nothing invalid reached the broker: the next message the watcher sees is this one.
    let (mut client, _) = RawMqtt::connect(proxy.port, "lamp-2").await;
    client
        .send(&publish(
            "lights/inline/2",
            QoS::AtLeastOnce,
            1,
            br#"{"id":"2","status":"off"}"#,
            None,
        ))
        .await;
    assert!(matches!(client.recv().await, Some(Packet::PubAck(_))));
    assert_eq!(
        next_payload(&mut seen).await.as_ref(),
        br#"{"id":"2","status":"off"}"#
    );
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn reject_mode_answers_0x99_and_keeps_the_connection() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(&broker, dir.path(), JSON_TOPICS).await;
    let mut seen = watcher(&broker).await;
    let (mut client, _) = RawMqtt::connect(proxy.port, "rejected").await;
    client
        .send(&publish(
            "lights/reject/1",
            QoS::AtLeastOnce,
            1,
            b"{not json",
            None,
        ))
        .await;
    match client.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!(a.reason, PubAckReason::PayloadFormatInvalid),
        other => panic!("expected PUBACK 0x99, got {other:?}"),
    }
    client
        .send(&publish(
            "lights/reject/1",
            QoS::ExactlyOnce,
            2,
            b"[]",
            None,
        ))
        .await;
    match client.recv().await {
        Some(Packet::PubRec(r)) => assert_eq!(
            r.reason,
            zilla_testkit::mqtt::packets::PubRecReason::PayloadFormatInvalid
        ),
        other => panic!("expected PUBREC 0x99, got {other:?}"),
    }
    client
        .send(&publish(
            "lights/reject/1",
            QoS::AtLeastOnce,
            3,
            br#"{"id":"3","status":"on"}"#,
            None,
        ))
        .await;
    assert!(
        matches!(client.recv().await, Some(Packet::PubAck(a)) if a.reason != PubAckReason::PayloadFormatInvalid)
    );
    assert_eq!(
        next_payload(&mut seen).await.as_ref(),
        br#"{"id":"3","status":"on"}"#
    );
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn string_number_and_user_property_models() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(&broker, dir.path(), JSON_TOPICS).await;
    let mut seen = watcher(&broker).await;
    let unit = |value: &str| {
        Some(PublishProperties {
            payload_format_indicator: None,
            message_expiry_interval: None,
            topic_alias: None,
            response_topic: None,
            correlation_data: None,
            user_properties: vec![("unit".into(), value.into())],
            subscription_identifiers: vec![],
            content_type: None,
        })
    };
    let (mut client, _) = RawMqtt::connect(proxy.port, "numbers").await;
    client
        .send(&publish("counters/a", QoS::AtLeastOnce, 1, b"42", None))
        .await;
    assert!(matches!(client.recv().await, Some(Packet::PubAck(_))));
    assert_eq!(next_payload(&mut seen).await.as_ref(), b"42");
    client
        .send(&publish(
            "names/a",
            QoS::AtLeastOnce,
            2,
            b"short",
            unit("celsius"),
        ))
        .await;
    assert!(matches!(client.recv().await, Some(Packet::PubAck(_))));
    assert_eq!(next_payload(&mut seen).await.as_ref(), b"short");
    client
        .send(&publish("counters/a", QoS::AtLeastOnce, 3, b"1001", None))
        .await;
    assert_eq!(
        client.closed().await.map(|d| d.reason_code),
        Some(DisconnectReasonCode::PayloadFormatInvalid)
    );

    let (mut client, _) = RawMqtt::connect(proxy.port, "names").await;
    client
        .send(&publish(
            "names/b",
            QoS::AtLeastOnce,
            1,
            b"ok",
            unit("Celsius!"),
        ))
        .await;
    assert_eq!(
        client.closed().await.map(|d| d.reason_code),
        Some(DisconnectReasonCode::PayloadFormatInvalid)
    );
    wait_for_event(&[
        "MQTT_VALIDATION_FAILED",
        "user property unit fails model string",
    ])
    .await;
    let (mut client, _) = RawMqtt::connect(proxy.port, "long-name").await;
    client
        .send(&publish(
            "names/c",
            QoS::AtMostOnce,
            0,
            b"much too long",
            None,
        ))
        .await;
    assert_eq!(
        client.closed().await.map(|d| d.reason_code),
        Some(DisconnectReasonCode::PayloadFormatInvalid)
    );
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn a_model_whose_schema_is_missing_fails_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let topics = "        - name: x/#
          content:
            model: json
            catalog:
              host_inline:
                - subject: nope";
    let yaml = with_catalogs(mqtt_proxy_yaml(&server(topics), &[("a", 1)]), dir.path());
    let errors = Engine::from_yaml(yaml)
        .base_dir(dir.path())
        .build()
        .unwrap_err();
    assert!(
        errors.mentions("bindings.north_mqtt_server.options.topics[0].content.catalog.host_inline[0]: catalog host_inline has no subject `nope` version `latest`"),
        "{errors}"
    );
}

const READING: &str = r#"{"type":"record","name":"Reading","fields":[{"name":"id","type":"string"},{"name":"celsius","type":"double"}]}"#;

fn reading(celsius: f64) -> Vec<u8> {
    use apache_avro::types::Value;
    let schema = apache_avro::Schema::parse_str(READING).unwrap();
    apache_avro::to_avro_datum(
        &schema,
        Value::Record(vec![
            ("id".into(), Value::String("s1".into())),
            ("celsius".into(), Value::Double(celsius)),
        ]),
    )
    .unwrap()
}

#[tokio::test]
async fn avro_from_inline_by_id_with_framing_and_from_a_file() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("reading.avsc"), READING).unwrap();
    let topics = "        - name: framed/#
          content:
            model: avro
            catalog:
              avro_inline:
                - id: 7
        - name: plain/#
          content:
            model: avro
            view: json
            catalog:
              avro_files:
                - subject: reading";
    let yaml = mqtt_proxy_yaml(&server(topics), &[("a", broker.port())]).replacen(
        "bindings:",
        &format!(
            "catalogs:
  avro_inline:
    type: inline
    options:
      subjects:
        reading:
          schema: '{READING}'
          id: 7
  avro_files:
    type: filesystem
    options:
      subjects:
        reading:
          path: reading.avsc
bindings:"
        ),
        1,
    );
    let proxy = Proxy::start_with(Engine::from_yaml(yaml).base_dir(dir.path())).await;
    let mut seen = watcher(&broker).await;
    let (mut client, _) = RawMqtt::connect(proxy.port, "avro").await;
    let send = |topic: &str, payload: Vec<u8>| {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: topic.into(),
            pkid: 1,
            payload: Bytes::from(payload),
            properties: None,
        })
    };
    let mut framed = vec![0, 0, 0, 0, 7];
    framed.extend(reading(21.5));
    client.send(&send("framed/a", framed.clone())).await;
    assert!(matches!(client.recv().await, Some(Packet::PubAck(_))));
    assert_eq!(next_payload(&mut seen).await.as_ref(), framed.as_slice());
    client.send(&send("plain/a", reading(19.0))).await;
    assert!(matches!(client.recv().await, Some(Packet::PubAck(_))));
    assert_eq!(
        next_payload(&mut seen).await.as_ref(),
        reading(19.0).as_slice()
    );

    // Unframed on the framed topic: refused.
    client.send(&send("framed/b", reading(1.0))).await;
    assert_eq!(
        client.closed().await.map(|d| d.reason_code),
        Some(DisconnectReasonCode::PayloadFormatInvalid)
    );
    wait_for_event(&["MQTT_VALIDATION_FAILED", "framed/b", "fails model avro"]).await;
    let (mut client, _) = RawMqtt::connect(proxy.port, "avro-2").await;
    client.send(&send("plain/b", b"\x02".to_vec())).await;
    assert_eq!(
        client.closed().await.map(|d| d.reason_code),
        Some(DisconnectReasonCode::PayloadFormatInvalid)
    );
    proxy.engine.shutdown().await;
}

fn registry_yaml(broker: u16, registry: u16, topics: &str) -> String {
    mqtt_proxy_yaml(&server(topics), &[("a", broker)]).replacen(
        "bindings:",
        &format!(
            "catalogs:
  registry:
    type: schema-registry
    options:
      url: http://127.0.0.1:{registry}
      max-age: 0
      credentials:
        headers:
          authorization: Basic dXNlcjpwYXNz
bindings:"
        ),
        1,
    )
}

// Multi-threaded: building the engine fetches from the registry stub, which
// must keep answering on another worker while `build` blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_from_a_confluent_registry_survive_its_outage() {
    let broker = Mosquitto::start().unwrap();
    let registry = zilla_testkit::http::HttpStub::start().await;
    let answer =
        serde_json::json!({"subject": "lights-value", "version": 3, "id": 21, "schema": LIGHTS})
            .to_string();
    registry.set("/subjects/lights-value/versions/latest", 200, answer);
    registry.set(
        "/schemas/ids/42",
        200,
        serde_json::json!({"schema": READING}).to_string(),
    );
    let topics = "        - name: lights/#
          content:
            model: json
            catalog:
              registry:
                - subject: lights-value
        - name: readings/#
          content:
            model: avro
            catalog:
              registry:
                - id: 42";
    let proxy = Proxy::start(&registry_yaml(broker.port(), registry.port, topics)).await;
    assert!(
        registry
            .requests()
            .iter()
            .all(|r| r.contains("authorization: Basic dXNlcjpwYXNz")),
        "credentials are sent: {:?}",
        registry.requests()
    );

    // The registry goes down: the schemas fetched at startup keep working.
    registry.go_down();
    let mut seen = watcher(&broker).await;
    let (mut client, _) = RawMqtt::connect(proxy.port, "registry-client").await;
    client
        .send(&publish(
            "lights/1",
            QoS::AtLeastOnce,
            1,
            br#"{"id":"1","status":"on"}"#,
            None,
        ))
        .await;
    assert!(matches!(client.recv().await, Some(Packet::PubAck(_))));
    assert_eq!(
        next_payload(&mut seen).await.as_ref(),
        br#"{"id":"1","status":"on"}"#
    );
    let mut framed = vec![0, 0, 0, 0, 42];
    framed.extend(reading(3.0));
    client
        .send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "readings/1".into(),
            pkid: 2,
            payload: Bytes::from(framed.clone()),
            properties: None,
        }))
        .await;
    assert!(matches!(client.recv().await, Some(Packet::PubAck(_))));
    assert_eq!(next_payload(&mut seen).await.as_ref(), framed.as_slice());
    // A message framed with a schema id the proxy does not know fails, alone.
    framed[4] = 43;
    client
        .send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "readings/2".into(),
            pkid: 3,
            payload: Bytes::from(framed),
            properties: None,
        }))
        .await;
    assert_eq!(
        client.closed().await.map(|d| d.reason_code),
        Some(DisconnectReasonCode::PayloadFormatInvalid)
    );
    wait_for_event(&[
        "MQTT_VALIDATION_FAILED",
        "readings/2",
        "framed with schema id 43, expected 42",
    ])
    .await;
    proxy.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_cannot_answer_at_startup_is_a_startup_error() {
    let registry = zilla_testkit::http::HttpStub::start().await;
    let topics = "        - name: lights/#
          content:
            model: json
            catalog:
              registry:
                - subject: missing-value";
    let errors = Engine::from_yaml(registry_yaml(1, registry.port, topics))
        .build()
        .unwrap_err();
    assert!(
        errors.mentions("catalog registry cannot get subject `missing-value` version `latest`"),
        "{errors}"
    );
}

#[tokio::test]
async fn a_rewritten_schema_file_is_reloaded() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let topics = "        - name: lights/file/#
          content:
            model: json
            catalog:
              host_filesystem:
                - subject: lights";
    let yaml = with_catalogs(
        mqtt_proxy_yaml(&server(topics), &[("a", broker.port())]),
        dir.path(),
    );
    let proxy = Proxy::start_with(
        Engine::from_yaml(yaml)
            .base_dir(dir.path())
            .property("zilla.catalog.filesystem.poll", "0.05"),
    )
    .await;
    let (mut client, _) = RawMqtt::connect(proxy.port, "reloader").await;
    client
        .send(&publish(
            "lights/file/1",
            QoS::AtLeastOnce,
            1,
            br#"{"id":"1","status":"on"}"#,
            None,
        ))
        .await;
    assert!(matches!(client.recv().await, Some(Packet::PubAck(_))));

    // The schema now also requires `level`.
    let stricter = LIGHTS.replace(
        r#""required":["id","status"]"#,
        r#""required":["id","status","level"]"#,
    );
    std::fs::write(dir.path().join("lights.json"), stricter).unwrap();
    wait_for_event(&["CATALOG_SCHEMA_CHANGED", "subject `lights` reloaded"]).await;
    client
        .send(&publish(
            "lights/file/1",
            QoS::AtLeastOnce,
            2,
            br#"{"id":"1","status":"on"}"#,
            None,
        ))
        .await;
    assert_eq!(
        client.closed().await.map(|d| d.reason_code),
        Some(DisconnectReasonCode::PayloadFormatInvalid)
    );
    wait_for_event(&["MODEL_SCHEMA_RELOADED"]).await;

    // A broken file leaves the last good schema in force.
    std::fs::write(dir.path().join("lights.json"), "{ not json").unwrap();
    let directory = dir.path().display().to_string();
    zilla_testkit::proxy::wait_for_events(&["CATALOG_SCHEMA_CHANGED", &directory], 2).await;
    let (mut client, _) = RawMqtt::connect(proxy.port, "reloader-2").await;
    client
        .send(&publish(
            "lights/file/2",
            QoS::AtLeastOnce,
            1,
            br#"{"id":"2","status":"off","level":3}"#,
            None,
        ))
        .await;
    assert!(
        matches!(client.recv().await, Some(Packet::PubAck(a)) if a.reason != PubAckReason::PayloadFormatInvalid)
    );
    wait_for_event(&[
        "MODEL_SCHEMA_RELOAD_FAILED",
        "the previous schema stays in force",
    ])
    .await;
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn a_payload_declared_utf8_must_be_utf8() {
    let broker = Mosquitto::start().unwrap();
    let proxy = Proxy::start(&mqtt_proxy_yaml(
        "    exit: mqtt_client_a",
        &[("a", broker.port())],
    ))
    .await;
    let utf8 = Some(PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: None,
        topic_alias: None,
        response_topic: None,
        correlation_data: None,
        user_properties: vec![],
        subscription_identifiers: vec![],
        content_type: None,
    });
    let (mut client, _) = RawMqtt::connect(proxy.port, "declared-utf8").await;
    client
        .send(&publish(
            "text/a",
            QoS::AtLeastOnce,
            1,
            "héllo".as_bytes(),
            utf8.clone(),
        ))
        .await;
    assert!(matches!(client.recv().await, Some(Packet::PubAck(_))));
    client
        .send(&publish("text/a", QoS::AtLeastOnce, 2, &[0xC3, 0x28], utf8))
        .await;
    assert_eq!(
        client.closed().await.map(|d| d.reason_code),
        Some(DisconnectReasonCode::PayloadFormatInvalid)
    );
    wait_for_event(&[
        "MQTT_SESSION_REFUSED",
        "declared-utf8",
        "declared UTF-8 is not UTF-8",
        "0x99",
    ])
    .await;
    proxy.engine.shutdown().await;
}
