//! MQTT.js and paho-mqtt as devices of `examples/mqtt.proxy.x509`: their
//! `device` scripts (`tests/clients/node/device.mjs`,
//! `tests/clients/python/device.py`) with a certificate made by the
//! example's script, over MQTT/TLS or secure WebSocket, and what an
//! application watching `devices/#`, the events and the metrics show.

use std::time::Duration;

use serde_json::Value;
use zilla_testkit::clients::{run_script, Library};

use super::x509_example::{event, start, Watcher, DEVICES};

/// How a client library reaches the example.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Transport {
    /// `mqtts://localhost:<port>`.
    Mqtts,
    /// `wss://localhost:<port>/mqtt`.
    Wss,
}

/// `library`'s `device` script over `transport` and MQTT `protocol` (4 =
/// 3.1.1, 5) with a device certificate: every check passes, an application
/// watching `devices/#` gets the device's telemetry and marker and never
/// its forged publish, and the proxy told and counted each refusal.
pub(crate) async fn device_script(library: Library, transport: Transport, protocol: u8) {
    let (_broker, example) = start();
    let name = library.name().to_lowercase().replace(['.', '-'], "");
    let identity = format!("{name}-{transport:?}-v{protocol}").to_lowercase();
    let other = "meter-elsewhere";
    let device = example.pki.device(&identity);
    let watcher = Watcher::start(&example, "app-watch", "devices/#").await;
    let url = match transport {
        Transport::Mqtts => format!("mqtts://localhost:{}", example.mqtts),
        Transport::Wss => format!("wss://localhost:{}/mqtt", example.wss),
    };
    let args: Vec<String> = [
        ("url", url),
        ("protocol", protocol.to_string()),
        ("ca", example.server_ca().display().to_string()),
        ("cert", device.cert.display().to_string()),
        ("key", device.key.display().to_string()),
        ("identity", identity.clone()),
        ("other", other.to_owned()),
    ]
    .into_iter()
    .flat_map(|(name, value)| [format!("--{name}"), value])
    .collect();
    let command = library
        .command("device", &args)
        .unwrap_or_else(|error| panic!("{error}"));
    let script = run_script(command, Duration::from_secs(60))
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let what = format!("{} over {transport:?} and MQTT {protocol}", library.name());
    let failed = script.failures();
    assert!(
        failed.is_empty(),
        "{what} failed {failed:#?}\n{}\n{}",
        script.transcript(),
        example.transcript()
    );
    assert_eq!(
        script.checks(),
        [
            "connect",
            "subscribe",
            "subscribe_other",
            "publish",
            "publish_other",
            "marker",
            "client_id",
            "disconnect"
        ],
        "{what}\n{}",
        script.transcript()
    );
    assert!(
        script.status.success() && script.done().is_some_and(|d| d["ok"] == Value::Bool(true)),
        "{what}\n{}",
        script.transcript()
    );

    let lines = watcher
        .wait_line(&format!("devices/{identity}/marker marker"))
        .await;
    assert!(
        lines.contains(&format!("devices/{identity}/telemetry 21.5")),
        "{lines:#?}"
    );
    assert!(
        !lines
            .iter()
            .any(|line| line.starts_with(&format!("devices/{other}/"))),
        "the forged publish was delivered: {lines:#?}"
    );

    let granted = format!("id {identity}: x509_0 granted identity {identity}");
    example
        .wait_event(&[&event(DEVICES, "MQTT_AUTHORIZATION_SUCCEEDED"), &granted])
        .await;
    example
        .wait_event(&[
            &event(DEVICES, "MQTT_PUBLISH_REJECTED"),
            &format!("publish to devices/{other}/telemetry is not authorized"),
        ])
        .await;
    example
        .wait_event(&[
            &event(DEVICES, "MQTT_SUBSCRIBE_REJECTED"),
            &format!("devices/{other}/#"),
        ])
        .await;
    example
        .wait_event(&[
            &event(DEVICES, "MQTT_CONNECT_REJECTED"),
            &format!("not {other}"),
        ])
        .await;
    let devices = |labels: &[(&'static str, &'static str)]| {
        let mut all = vec![("binding", DEVICES)];
        all.extend_from_slice(labels);
        all
    };
    example
        .wait_metric(
            "mqtt_connects_total",
            &devices(&[("reason_code", "0x00")]),
            1.0,
        )
        .await;
    example
        .wait_metric(
            "mqtt_connects_total",
            &devices(&[("reason_code", "0x85")]),
            1.0,
        )
        .await;
    for packet in ["PUBACK", "SUBACK"] {
        let labels = devices(&[("packet", packet), ("reason_code", "0x87")]);
        example
            .wait_metric("mqtt_refusals_total", &labels, 1.0)
            .await;
    }
    eprintln!("{what}: every check passed in {:?}", script.elapsed);
}

// The library clients as devices, over both transports and versions; run
// with the rest of tests/x509_devices.rs, whose module this is.

#[tokio::test]
async fn paho_device_over_mqtts_and_mqtt_5() {
    device_script(Library::Paho, Transport::Mqtts, 5).await;
}

#[tokio::test]
async fn paho_device_over_mqtts_and_mqtt_3_1_1() {
    device_script(Library::Paho, Transport::Mqtts, 4).await;
}

#[tokio::test]
async fn paho_device_over_wss_and_mqtt_5() {
    device_script(Library::Paho, Transport::Wss, 5).await;
}

#[tokio::test]
async fn paho_device_over_wss_and_mqtt_3_1_1() {
    device_script(Library::Paho, Transport::Wss, 4).await;
}

#[tokio::test]
async fn mqttjs_device_over_mqtts_and_mqtt_5() {
    device_script(Library::MqttJs, Transport::Mqtts, 5).await;
}

#[tokio::test]
async fn mqttjs_device_over_mqtts_and_mqtt_3_1_1() {
    device_script(Library::MqttJs, Transport::Mqtts, 4).await;
}

#[tokio::test]
async fn mqttjs_device_over_wss_and_mqtt_5() {
    device_script(Library::MqttJs, Transport::Wss, 5).await;
}

#[tokio::test]
async fn mqttjs_device_over_wss_and_mqtt_3_1_1() {
    device_script(Library::MqttJs, Transport::Wss, 4).await;
}
