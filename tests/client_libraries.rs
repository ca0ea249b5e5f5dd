//! Real client libraries through the proxy: MQTT.js (node) and Eclipse
//! paho-mqtt (python), each over MQTT 3.1.1 and 5, run their scripts in
//! `tests/clients/` against `tcp -> mqtt server -> mqtt client -> tcp` in
//! front of a real mosquitto: connect, subscribe, publish and receive at QoS
//! 0/1/2, a retained message for a late subscriber, a will when a client drops
//! without DISCONNECT, user properties (5 only), a clean disconnect.
//!
//! The libraries are installed by `.ci/run`; when they are missing the tests
//! fail and say how to install them.

use std::time::Duration;

// Links every first-party plugin, as the host does.
use zilla as _;
use zilla_testkit::clients::{run_script, Library};
use zilla_testkit::proxy::{mqtt_proxy_yaml, Proxy};
use zilla_testkit::Mosquitto;

/// The scripts give up after 30 s; this is a bound on the process itself.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `library`'s conformance script over MQTT `protocol` (4 = 3.1.1, 5)
/// through the proxy and asserts that it reported every check, passed.
async fn conformance(library: Library, protocol: u8) {
    let broker = Mosquitto::start().unwrap();
    let proxy = Proxy::start(&mqtt_proxy_yaml(
        "    exit: mqtt_client_a",
        &[("a", broker.port())],
    ))
    .await;
    let version = if protocol == 4 { "3.1.1" } else { "5" };
    let prefix = format!(
        "{}-v{protocol}",
        library.name().to_lowercase().replace('.', "")
    );
    let command = library
        .command(
            "conformance",
            &[
                "--port".into(),
                proxy.port.to_string(),
                "--protocol".into(),
                protocol.to_string(),
                "--prefix".into(),
                prefix,
            ],
        )
        .unwrap_or_else(|error| panic!("{error}"));
    let run = run_script(command, SCRIPT_TIMEOUT)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let mut expected = vec![
        "connect",
        "subscribe",
        "publish_qos0",
        "publish_qos1",
        "publish_qos2",
        "retained",
        "will",
    ];
    if protocol == 5 {
        expected.push("user_properties");
    }
    expected.push("disconnect");
    let reported = run.checks();
    let failed = run.failures();
    assert!(
        failed.is_empty(),
        "{} over MQTT {version} through the proxy failed {failed:#?}\n{}",
        library.name(),
        run.transcript()
    );
    assert_eq!(
        reported,
        expected,
        "{} reported other checks than expected\n{}",
        library.name(),
        run.transcript()
    );
    assert!(
        run.status.success() && run.done().is_some_and(|d| d["ok"] == true),
        "{} did not end with success\n{}",
        library.name(),
        run.transcript()
    );
    eprintln!(
        "{} over MQTT {version}: {} checks passed in {:?}",
        library.name(),
        reported.len(),
        run.elapsed
    );
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn mqttjs_over_mqtt_3_1_1() {
    conformance(Library::MqttJs, 4).await;
}

#[tokio::test]
async fn mqttjs_over_mqtt_5() {
    conformance(Library::MqttJs, 5).await;
}

#[tokio::test]
async fn paho_over_mqtt_3_1_1() {
    conformance(Library::Paho, 4).await;
}

#[tokio::test]
async fn paho_over_mqtt_5() {
    conformance(Library::Paho, 5).await;
}
