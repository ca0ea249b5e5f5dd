//! `MQTT_EXITS_SHARE_BROKER` (issue 24): an mqtt server whose sessions may
//! use two exits that lead to one broker warns at start, once per pair, and
//! a server whose exits lead to different brokers does not. No broker is
//! needed: the check reads the configuration, and nothing connects until a
//! client does.

use zilla as _;
use zilla::engine::Engine;
use zilla_testkit::pki::TestCa;
use zilla_testkit::proxy::{captured_events, mqtt_proxy_yaml, Proxy};

const EVENT: &str = "MQTT_EXITS_SHARE_BROKER";

/// Captured `MQTT_EXITS_SHARE_BROKER` events that name `exit`. Events of
/// every test in this process land in one list; exit names tell them apart.
fn warnings_naming(exit: &str) -> Vec<String> {
    captured_events()
        .into_iter()
        .filter(|line| line.contains(EVENT) && line.contains(exit))
        .collect()
}

/// Publishes to `a/#` go to `mqtt_client_<first>`, everything else to
/// `mqtt_client_<second>`: every session opens both.
fn two_exits(first: &str, second: &str) -> String {
    format!(
        "    routes:
      - when:
          - publish:
              - topic: a/#
        exit: mqtt_client_{first}
    exit: mqtt_client_{second}"
    )
}

#[tokio::test]
async fn two_exits_to_one_host_and_port_warn_at_start() {
    let yaml = mqtt_proxy_yaml(
        &two_exits("same_a", "same_b"),
        &[("same_a", 18831), ("same_b", 18831)],
    );
    let proxy = Proxy::start(&yaml).await;
    // Emitted while the engine starts, so already captured.
    let warnings = warnings_naming("mqtt_client_same_a");
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    let line = &warnings[0];
    for part in [
        " WARN ",
        "test-proxy.north_mqtt_server",
        "mqtt server north_mqtt_server",
        "exits mqtt_client_same_a and mqtt_client_same_b",
        "127.0.0.1:18831",
        "one client id",
        "will",
    ] {
        assert!(line.contains(part), "{part:?} in {line}");
    }
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn exits_to_different_ports_do_not_warn() {
    let yaml = mqtt_proxy_yaml(
        &two_exits("apart_a", "apart_b"),
        &[("apart_a", 18832), ("apart_b", 18833)],
    );
    let proxy = Proxy::start(&yaml).await;
    // Start emits the warning before it returns (see the test above).
    assert_eq!(warnings_naming("mqtt_client_apart_a"), Vec::<String>::new());
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn an_exit_through_tls_shares_the_broker_its_tcp_client_names() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Broker CA");
    std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
    // `mqtt client -> tls client -> tcp client` next to `mqtt client -> tcp
    // client`, the same address spelled two ways.
    let yaml = "
name: shared-broker-tls
telemetry:
  exporters:
    capture:
      type: capture
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
    options: { host: 127.0.0.1, port: 0 }
    exit: north_mqtt_server
  north_mqtt_server:
    type: mqtt
    kind: server
    routes:
      - when:
          - session:
              - client-id: sensor-*
        exit: tls_mqtt_client
    exit: plain_mqtt_client
  tls_mqtt_client:
    type: mqtt
    kind: client
    exit: broker_tls_client
  broker_tls_client:
    type: tls
    kind: client
    vault: brokers
    options:
      trust: [ca]
      sni: [localhost]
    exit: broker_tcp_client_tls
  broker_tcp_client_tls:
    type: tcp
    kind: client
    options: { host: 127.000.0.1, port: 18834 }
  plain_mqtt_client:
    type: mqtt
    kind: client
    exit: broker_tcp_client_plain
  broker_tcp_client_plain:
    type: tcp
    kind: client
    options:
      hosts: [broker-elsewhere:1883, 127.0.0.1:18834]
";
    let proxy = Proxy::start_with(Engine::from_yaml(yaml).base_dir(dir.path())).await;
    let warnings = warnings_naming("tls_mqtt_client");
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    let line = &warnings[0];
    assert!(
        line.contains("exits tls_mqtt_client and plain_mqtt_client"),
        "{line}"
    );
    assert!(
        line.contains("127.000.0.1:18834 (written 127.0.0.1:18834 for plain_mqtt_client)"),
        "{line}"
    );
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn a_reloaded_configuration_warns_when_it_starts() {
    // The host reloads by building a successor with the running engine's
    // handover and starting it: the warning comes from that start.
    let first = Proxy::start(&mqtt_proxy_yaml(
        &two_exits("reload_a", "reload_b"),
        &[("reload_a", 18835), ("reload_b", 18836)],
    ))
    .await;
    assert_eq!(
        warnings_naming("mqtt_client_reload_a"),
        Vec::<String>::new()
    );
    let changed = mqtt_proxy_yaml(
        &two_exits("reload_a", "reload_b"),
        &[("reload_a", 18835), ("reload_b", 18835)],
    );
    let second =
        Proxy::start_with(Engine::from_yaml(changed).handover(first.engine.handover())).await;
    first.engine.stop_accepting();
    let warnings = warnings_naming("mqtt_client_reload_a");
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains("127.0.0.1:18835"), "{}", warnings[0]);
    second.engine.shutdown().await;
    first.engine.shutdown().await;
}
