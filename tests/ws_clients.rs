//! MQTT over WebSocket with real client libraries: the example
//! `examples/mqtt.proxy.ws` run by the `zilla` host (`tcp -> [tls ->] http ->
//! ws -> mqtt server -> mqtt client -> tcp`) in front of a real mosquitto.
//!
//! MQTT.js (node) and Eclipse paho-mqtt (python) run their conformance
//! scripts in `tests/clients/` over `ws://` and `wss://` (trusting the
//! example's Test CA), over MQTT 3.1.1 and 5, with the JWT in the
//! `access_token` query parameter: connect, subscribe, publish and receive at
//! QoS 0/1/2, a retained message, a will, user properties (5 only). A
//! WebSocket client and a TCP client on the same topics see each other's
//! messages both ways. An invalid token is refused with HTTP 401 before the
//! upgrade; no token at all gets the MQTT server's CONNACK refusal, since it
//! then needs the token as the user name.
//!
//! The libraries are installed by `.ci/run`; when they are missing the tests
//! fail and say how to install them.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use zilla_testkit::clients::{
    run_script, ws_example_claims, ws_example_sign, ws_example_token, Library, ScriptRun, WsExample,
};
use zilla_testkit::Mosquitto;

const ZILLA: &str = env!("CARGO_BIN_EXE_zilla");

/// The scripts give up after 30 s; this is a bound on the process itself.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// How a client reaches the proxy.
#[derive(Debug, Clone, Copy)]
enum Transport {
    /// `ws://127.0.0.1:<port>/mqtt?access_token=<token>`.
    Ws,
    /// `wss://localhost:<port>/mqtt?access_token=<token>`, trusting the CA.
    Wss,
}

/// The example in front of a fresh mosquitto.
fn start() -> (Mosquitto, WsExample) {
    let broker = Mosquitto::start().unwrap_or_else(|error| panic!("{error}"));
    let example = WsExample::start(Path::new(ZILLA), &broker)
        .unwrap_or_else(|error| panic!("examples/mqtt.proxy.ws does not start: {error}"));
    (broker, example)
}

/// `library`'s script `script` with `args`, run to its end.
async fn run(library: Library, script: &str, args: &[String]) -> ScriptRun {
    let command = library
        .command(script, args)
        .unwrap_or_else(|error| panic!("{error}"));
    run_script(command, SCRIPT_TIMEOUT)
        .await
        .unwrap_or_else(|error| panic!("{error}"))
}

/// `--name value` pairs as script arguments.
fn args(pairs: &[(&str, String)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(name, value)| [format!("--{name}"), value.clone()])
        .collect()
}

/// The conformance checks a script reports for `protocol`, in order.
fn expected_checks(protocol: u8) -> Vec<&'static str> {
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
    expected
}

/// Asserts that `run` reported every conformance check for `protocol`, passed.
fn assert_conformance(run: &ScriptRun, protocol: u8, what: &str, example: &WsExample) {
    let reported = run.checks();
    let failed = run.failures();
    assert!(
        failed.is_empty(),
        "{what} failed {failed:#?}\n{}\n{}",
        run.transcript(),
        example.transcript()
    );
    assert_eq!(
        reported,
        expected_checks(protocol),
        "{what} reported other checks than expected\n{}",
        run.transcript()
    );
    assert!(
        run.status.success() && run.done().is_some_and(|d| d["ok"] == true),
        "{what} did not end with success\n{}",
        run.transcript()
    );
}

/// Runs `library`'s conformance script over `transport` and MQTT `protocol`
/// (4 = 3.1.1, 5) through the example, the token in the query.
async fn conformance(library: Library, transport: Transport, protocol: u8) {
    let (_broker, example) = start();
    let token = ws_example_token();
    let mut pairs = vec![
        ("protocol", protocol.to_string()),
        (
            "prefix",
            format!(
                "{}-{transport:?}-v{protocol}",
                library.name().to_lowercase().replace('.', "")
            )
            .to_lowercase(),
        ),
    ];
    match transport {
        Transport::Ws => pairs.push(("url", example.ws_url(Some(&token)))),
        Transport::Wss => {
            pairs.push(("url", example.wss_url(Some(&token))));
            pairs.push(("ca", example.ca().display().to_string()));
        }
    }
    let run = run(library, "conformance", &args(&pairs)).await;
    let version = if protocol == 4 { "3.1.1" } else { "5" };
    let what = format!("{} over {transport:?} and MQTT {version}", library.name());
    assert_conformance(&run, protocol, &what, &example);
    eprintln!(
        "{what}: {} checks passed in {:?}",
        expected_checks(protocol).len(),
        run.elapsed
    );
}

#[tokio::test]
async fn mqttjs_over_ws_and_mqtt_3_1_1() {
    conformance(Library::MqttJs, Transport::Ws, 4).await;
}

#[tokio::test]
async fn mqttjs_over_ws_and_mqtt_5() {
    conformance(Library::MqttJs, Transport::Ws, 5).await;
}

#[tokio::test]
async fn mqttjs_over_wss_and_mqtt_3_1_1() {
    conformance(Library::MqttJs, Transport::Wss, 4).await;
}

#[tokio::test]
async fn mqttjs_over_wss_and_mqtt_5() {
    conformance(Library::MqttJs, Transport::Wss, 5).await;
}

#[tokio::test]
async fn paho_over_ws_and_mqtt_3_1_1() {
    conformance(Library::Paho, Transport::Ws, 4).await;
}

#[tokio::test]
async fn paho_over_ws_and_mqtt_5() {
    conformance(Library::Paho, Transport::Ws, 5).await;
}

#[tokio::test]
async fn paho_over_wss_and_mqtt_3_1_1() {
    conformance(Library::Paho, Transport::Wss, 4).await;
}

#[tokio::test]
async fn paho_over_wss_and_mqtt_5() {
    conformance(Library::Paho, Transport::Wss, 5).await;
}

/// A client that keeps presenting its token as the CONNECT user name works
/// over WebSocket too, without `access_token`.
#[tokio::test]
async fn mqttjs_over_ws_with_the_token_as_the_user_name() {
    let (_broker, example) = start();
    let pairs = [
        ("url", example.ws_url(None)),
        ("username", format!("Bearer {}", ws_example_token())),
        ("protocol", "5".to_owned()),
        ("prefix", "mqttjs-ws-username".to_owned()),
    ];
    let run = run(Library::MqttJs, "conformance", &args(&pairs)).await;
    assert_conformance(
        &run,
        5,
        "MQTT.js over ws with `Bearer <token>` as the user name",
        &example,
    );
}

/// MQTT.js over WebSocket (MQTT 5, token in the query) and rumqttc over TCP
/// (MQTT 3.1.1, `Bearer <token>` as the user name) through the same proxy,
/// both subscribed to one topic: each receives what the other publishes
/// there (rumqttc answers MQTT.js's message).
#[tokio::test]
async fn websocket_and_tcp_clients_see_each_others_messages() {
    use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS};

    let (_broker, example) = start();
    let token = ws_example_token();
    let topic = "mixed/chat";
    let (from_ws, from_tcp) = (
        "hello from MQTT.js over WebSocket",
        "hello from rumqttc over TCP",
    );

    let mut options = MqttOptions::new("rumqttc-over-tcp", "127.0.0.1", example.mqtt_port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_credentials(format!("Bearer {token}"), "");
    let (tcp, mut events) = AsyncClient::new(options, 10);
    tcp.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    let mut transcript: Vec<String> = Vec::new();
    // Subscribed before MQTT.js publishes.
    let subscribed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let event = events.poll().await;
            transcript.push(format!("{event:?}"));
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    assert_eq!(ack.code, ConnectReturnCode::Success, "{transcript:#?}");
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => return,
                Ok(_) => {}
                Err(error) => panic!("rumqttc over TCP: {error}\n{transcript:#?}"),
            }
        }
    })
    .await;
    assert!(
        subscribed.is_ok(),
        "rumqttc got no SUBACK\n{transcript:#?}\n{}",
        example.transcript()
    );

    let pairs = [
        ("url", example.ws_url(Some(&token))),
        ("protocol", "5".to_owned()),
        ("send", topic.to_owned()),
        ("receive", topic.to_owned()),
        ("message", from_ws.to_owned()),
        ("expect", from_tcp.to_owned()),
        ("client-id", "mqttjs-over-ws".to_owned()),
    ];
    let args = args(&pairs);
    let script = run(Library::MqttJs, "exchange", &args);
    tokio::pin!(script);
    // rumqttc answers what MQTT.js sent, and keeps its connection serviced
    // until MQTT.js received the answer (the script bounds itself). It hears
    // its own answer too, being subscribed to the same topic.
    let mut received: Vec<String> = Vec::new();
    let run = loop {
        tokio::select! {
            finished = &mut script => break finished,
            event = events.poll() => {
                transcript.push(format!("{event:?}"));
                match event {
                    Ok(Event::Incoming(Packet::Publish(message))) if message.topic == topic => {
                        let payload = String::from_utf8_lossy(&message.payload).into_owned();
                        if payload == from_ws && !received.contains(&payload) {
                            tcp.publish(topic, QoS::AtLeastOnce, false, from_tcp)
                                .await
                                .unwrap();
                        }
                        received.push(payload);
                    }
                    Ok(_) => {}
                    Err(error) => panic!("rumqttc over TCP: {error}\n{transcript:#?}"),
                }
            }
        }
    };
    assert!(
        received.iter().any(|payload| payload == from_ws),
        "rumqttc over TCP did not receive what MQTT.js published over WebSocket\n\
         rumqttc: {transcript:#?}\n{}\n{}",
        run.transcript(),
        example.transcript()
    );
    let checks: Vec<(&str, bool)> = run
        .reports
        .iter()
        .filter_map(|r| Some((r["check"].as_str()?, r["ok"] == true)))
        .collect();
    assert_eq!(
        checks,
        [
            ("connect", true),
            ("subscribe", true),
            ("publish", true),
            ("receive", true)
        ],
        "MQTT.js over WebSocket did not receive what rumqttc published over TCP\n\
         rumqttc: {transcript:#?}\n{}\n{}",
        run.transcript(),
        example.transcript()
    );
    assert!(run.status.success(), "{}", run.transcript());
    tcp.disconnect().await.unwrap();
    eprintln!(
        "both ways in {:?}: rumqttc heard {received:?}; MQTT.js {}",
        run.elapsed, run.reports[3]["detail"]
    );
}

/// The `connect` check's failure report of a script whose CONNECT was meant
/// to be refused.
fn refusal<'a>(run: &'a ScriptRun, what: &str) -> &'a Value {
    let first = run.reports.first();
    assert!(
        first.is_some_and(|r| r["check"] == "connect" && r["ok"] == false),
        "{what}: the connection should have been refused\n{}",
        run.transcript()
    );
    assert!(
        !run.status.success() && run.done().is_some_and(|d| d["ok"] == false),
        "{what}: the script should have failed\n{}",
        run.transcript()
    );
    &run.reports[0]
}

/// A token the guard rejects in the `access_token` query parameter: the
/// http server answers the upgrade with 401 (a valid one gets 101), and the
/// clients see that the handshake failed.
#[tokio::test]
async fn an_invalid_token_in_the_query_is_refused_with_401_before_the_upgrade() {
    let (_broker, example) = start();
    let mut expired = ws_example_claims("mqtt:stream");
    expired["exp"] = serde_json::json!(1);
    let mut other_issuer = ws_example_claims("mqtt:stream");
    other_issuer["iss"] = serde_json::json!("https://someone.else");
    let invalid = [
        ("not a JWT", "not-a-jwt".to_owned()),
        ("expired", ws_example_sign(&expired)),
        ("another issuer", ws_example_sign(&other_issuer)),
    ];

    let head = example
        .upgrade(&format!("/mqtt?access_token={}", ws_example_token()))
        .unwrap();
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "a valid token is upgraded:\n{head}\n{}",
        example.transcript()
    );
    for (what, token) in &invalid {
        let head = example
            .upgrade(&format!("/mqtt?access_token={token}"))
            .unwrap();
        assert!(
            head.starts_with("HTTP/1.1 401"),
            "an upgrade with a token that is {what} gets 401, not:\n{head}\n{}",
            example.transcript()
        );
    }

    let url = example.ws_url(Some(&invalid[0].1));
    let pairs = [("url", url), ("protocol", "5".to_owned())];
    let run = run(Library::MqttJs, "conformance", &args(&pairs)).await;
    let report = refusal(&run, "MQTT.js with an invalid token");
    assert_eq!(
        report["error"],
        "Unexpected server response: 401",
        "MQTT.js sees the 401\n{}",
        run.transcript()
    );

    let run = run_paho_refused(&example.ws_url(Some(&invalid[1].1))).await;
    let report = refusal(&run, "paho-mqtt with an expired token");
    assert!(
        report["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("WebSocket handshake error")),
        "paho-mqtt sees the handshake fail\n{}",
        run.transcript()
    );
}

async fn run_paho_refused(url: &str) -> ScriptRun {
    let pairs = [("url", url.to_owned()), ("protocol", "5".to_owned())];
    run(Library::Paho, "conformance", &args(&pairs)).await
}

/// Without any token the WebSocket is upgraded, and the MQTT server, which
/// then needs `Bearer <token>` as the user name, refuses the CONNECT: 0x86
/// (bad user name or password) in MQTT 5, return code 4 in 3.1.1.
#[tokio::test]
async fn a_websocket_without_a_token_gets_a_connack_refusal() {
    let (_broker, example) = start();
    let head = example.upgrade("/mqtt").unwrap();
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "without a token the upgrade succeeds:\n{head}\n{}",
        example.transcript()
    );
    for (protocol, code) in [(5, 0x86), (4, 4)] {
        let pairs = [
            ("url", example.ws_url(None)),
            ("protocol", protocol.to_string()),
        ];
        let run = run(Library::MqttJs, "conformance", &args(&pairs)).await;
        let report = refusal(&run, "MQTT.js without a token");
        assert_eq!(
            report["code"],
            code,
            "MQTT.js over MQTT {protocol} without a token gets CONNACK {code:#x}\n{}\n{}",
            run.transcript(),
            example.transcript()
        );
    }
    let run = run_paho_refused(&example.ws_url(None)).await;
    let report = refusal(&run, "paho-mqtt without a token");
    assert_eq!(
        report["code"],
        0x86,
        "paho-mqtt over MQTT 5 without a token gets CONNACK 0x86\n{}",
        run.transcript()
    );
}
