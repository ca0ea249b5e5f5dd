//! Today's shape of the asyncapi bindings: `servers` as URLs (the server
//! kind serves the document servers a URL matches, on its port; the client
//! kind connects to its URL), the document from a catalog, the generated or
//! declared store; and server names, the older shape, still working.

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;
use zilla::engine::Engine;
use zilla_testkit::mqtt::packets::{Packet, QoS};
use zilla_testkit::mqtt::{subscribe_packet, RawMqtt};
use zilla_testkit::{free_port, seed, Mosquitto};

use super::{
    behaves_like_the_spec, connect_with_scope, publish, root, start_in, start_listening,
    tokens_are_required, two_six, TOPIC,
};

/// The example (today's shape: `servers` URLs, the document from a
/// filesystem catalog) copied to a fresh directory, its document's server and
/// the server URL moved to a free port; the directory and that port.
fn todays_example(secure_document: bool) -> (tempfile::TempDir, u16) {
    let port = free_port();
    let moved = |text: String| text.replace("localhost:7183", &format!("localhost:{port}"));
    let example = root().join("examples/asyncapi.mqtt.proxy");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("specs")).unwrap();
    let yaml = std::fs::read_to_string(example.join("zilla.yaml")).unwrap();
    assert!(
        yaml.contains("- mqtt://localhost:7183\n"),
        "the example serves by URL"
    );
    let mut spec = std::fs::read_to_string(example.join("specs/mqtt-asyncapi.yaml")).unwrap();
    if secure_document {
        spec = spec
            .replace(
                "components:\n",
                "components:\n  securitySchemes:\n    bearer:\n      type: http\n      scheme: bearer\n",
            )
            .replace(
                "    protocol: mqtt\n",
                "    protocol: mqtt\n    security:\n      - $ref: '#/components/securitySchemes/bearer'\n",
            );
    }
    std::fs::write(dir.path().join("zilla.yaml"), moved(yaml)).unwrap();
    std::fs::write(dir.path().join("specs/mqtt-asyncapi.yaml"), moved(spec)).unwrap();
    (dir, port)
}

/// Builds `dir/zilla.yaml` (after `edit`) in front of `broker`.
fn build_in(dir: &Path, broker: &Mosquitto, edit: impl FnOnce(String) -> String) -> Engine {
    let path = dir.join("zilla.yaml");
    let yaml = edit(std::fs::read_to_string(&path).unwrap());
    std::fs::write(&path, yaml).unwrap();
    let env = broker.env();
    Engine::from_file(path)
        .env(move |name| env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()))
        .build()
        .expect("a valid configuration")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn todays_shape_serves_the_server_url_and_connects_to_the_client_url() {
    let broker = Mosquitto::start().unwrap();
    let (dir, port) = todays_example(false);
    let engine = build_in(dir.path(), &broker, |yaml| yaml);
    assert_eq!(
        start_listening(&engine, "mqtt_proxy_server").await,
        port,
        "the port of the server URL"
    );
    behaves_like_the_spec(port).await;
    // The client went where its URL says, and the server keeps its sessions
    // in a memory store of its own, as Zilla generates one.
    let generated = serde_yaml::to_string(engine.generated_config()).unwrap();
    for expected in [
        "stores:\n  mqtt_proxy_server_store:\n    type: memory\n",
        "      store: mqtt_proxy_server_store\n",
        &format!(
            "  mqtt_proxy_client_tcp:\n    type: tcp\n    kind: client\n    options:\n      host: 127.0.0.1\n      port: {}\n",
            broker.port()
        ),
    ] {
        assert!(generated.contains(expected), "`{expected}` in:\n{generated}");
    }
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn todays_shape_with_security_and_a_declared_store_requires_tokens() {
    let broker = Mosquitto::start().unwrap();
    let (dir, port) = todays_example(true);
    let guard = seed::guards_yaml();
    let engine = build_in(dir.path(), &broker, |yaml| {
        yaml.replace(
            "bindings:\n",
            &format!("stores:\n  memory0:\n    type: memory\nguards:\n{guard}bindings:\n"),
        )
        .replacen(
            "              subject: smartylighting\n    exit:",
            "              subject: smartylighting\n          store: memory0\n          security:\n            bearer: authn_jwt\n    exit:",
            1,
        )
    });
    assert_eq!(start_listening(&engine, "mqtt_proxy_server").await, port);
    tokens_are_required(port).await;
    // With a token, the document's rules hold as before.
    let (mut light, _) = connect_with_scope(port, "streetlight-1", "mqtt:stream").await;
    light
        .send(&publish(TOPIC, 1, br#"{"id":"1","status":"on"}"#))
        .await;
    assert!(matches!(light.recv().await, Some(Packet::PubAck(_))));
    light
        .send(&publish(TOPIC, 2, br#"{"id":"1","stat":"off"}"#))
        .await;
    assert_eq!(light.closed().await.map(|d| d.reason_code as u8), Some(153));
    let generated = serde_yaml::to_string(engine.generated_config()).unwrap();
    assert!(generated.contains("      store: memory0\n"), "{generated}");
    assert!(
        !generated.contains("mqtt_proxy_server_store"),
        "a declared store is used, none generated:\n{generated}"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_names_keep_working_in_servers_and_names() {
    let broker = Mosquitto::start().unwrap();
    let yaml = two_six(broker.port())
        .replacen(
            "        my-asyncapi-spec:\n",
            "        my-asyncapi-spec:\n          names:\n            - plain\n",
            1,
        )
        .replacen(
            "    kind: client\n    options:\n      specs:\n        my-asyncapi-spec:\n",
            "    kind: client\n    options:\n      specs:\n        my-asyncapi-spec:\n          servers:\n            - plain\n",
            1,
        );
    assert_eq!(yaml.matches("plain\n").count(), 2, "{yaml}");
    let (engine, port) = start_in(yaml, &root().join("tests/fixtures/asyncapi-2.6")).await;
    behaves_like_the_spec(port).await;
    engine.shutdown().await;
}

/// Two server URLs, plain and TLS: the generated tcp server listens on both
/// ports and hands the TLS one to the generated tls server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_server_urls_listen_on_their_ports_plain_and_tls() {
    let broker = Mosquitto::start().unwrap();
    let (dir, plain) = todays_example(false);
    let tls = loop {
        let port = free_port();
        if port != plain {
            break port;
        }
    };
    let spec_path = dir.path().join("specs/mqtt-asyncapi.yaml");
    let spec = std::fs::read_to_string(&spec_path).unwrap().replace(
        "    protocol: mqtt\n",
        &format!("    protocol: mqtt\n  secure:\n    host: localhost:{tls}\n    protocol: mqtts\n"),
    );
    std::fs::write(&spec_path, spec).unwrap();
    std::fs::create_dir_all(dir.path().join("tls")).unwrap();
    std::fs::copy(
        seed::dir().join("tls/localhost.p12"),
        dir.path().join("tls/localhost.p12"),
    )
    .unwrap();
    let engine = build_in(dir.path(), &broker, |yaml| {
        yaml.replace(
            "bindings:\n",
            "vaults:\n  my_servers:\n    type: filesystem\n    options:\n      keys:\n        store: tls/localhost.p12\n        password: generated\nbindings:\n",
        )
        .replacen(
            &format!("            - mqtt://localhost:{plain}\n"),
            &format!("            - mqtt://localhost:{plain}\n            - mqtts://localhost:{tls}\n"),
            1,
        )
        .replacen(
            "    exit: mqtt_proxy_client\n",
            "      tls:\n        keys: [localhost]\n        sni: [localhost]\n    vault: my_servers\n    exit: mqtt_proxy_client\n",
            1,
        )
    });
    let started = engine.start().await.unwrap();
    let listening: Vec<u16> = started
        .iter()
        .find(|b| b.name == "mqtt_proxy_server")
        .unwrap()
        .listening
        .iter()
        .map(|a| a.port())
        .collect();
    assert_eq!(listening, [plain, tls]);

    let (mut subscriber, _) = RawMqtt::connect(plain, "watcher").await;
    subscriber
        .send(&subscribe_packet(
            1,
            "smartylighting/streetlights/1/0/event/+/lighting/measured",
            QoS::AtLeastOnce,
        ))
        .await;
    assert!(matches!(subscriber.recv().await, Some(Packet::SubAck(_))));
    let published = tokio::time::timeout(
        Duration::from_secs(10),
        Command::new("mosquitto_pub")
            .arg("--cafile")
            .arg(seed::dir().join("tls/test-ca.pem"))
            .args(["-h", "localhost", "-p", &tls.to_string(), "-q", "1"])
            .args(["-t", TOPIC, "-m", r#"{"id":"1","status":"on"}"#])
            .status(),
    )
    .await
    .expect("mosquitto_pub ends in time")
    .expect("mosquitto_pub runs");
    assert!(published.success(), "a valid event over TLS");
    match subscriber.recv().await {
        Some(Packet::Publish(m)) => assert_eq!(m.payload.as_ref(), br#"{"id":"1","status":"on"}"#),
        other => panic!("the event published over TLS arrives, got {other:?}"),
    }
    engine.shutdown().await;
}
