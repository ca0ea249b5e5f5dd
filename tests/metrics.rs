//! Metrics end to end, through the `zilla` host: MQTT traffic through the
//! seed-style proxy (JWT at CONNECT, JSON validation), then
//!
//! - a scrape of the `prometheus` endpoint whose values match the traffic
//!   exactly (sessions, publishes by QoS, bytes, a refused token, an invalid
//!   payload) and that `promtool check metrics` accepts; `zilla metrics`
//!   prints the same;
//! - the `otlp` exporter's pushes to a local collector stub, decoded from
//!   protobuf: the same counters, and the events as log records;
//! - `examples/mqtt.proxy.metrics` (a Zilla configuration with both
//!   exporters) builds as it is, and runs.
//!
//! `promtool` comes from Debian's `prometheus` package (`.ci/run` installs
//! it); without it the test fails and says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message;
use serde_json::json;
use zilla::engine::Engine;
use zilla_testkit::http::{get, HttpStub};
use zilla_testkit::mqtt::packets::{
    ConnAck, ConnectReturnCode, Login, Packet, PubAck, PubAckReason, PubRel, PubRelReason, Publish,
    QoS,
};
use zilla_testkit::mqtt::{connect_packet, subscribe_packet, RawMqtt};
use zilla_testkit::{free_port, seed, wait_for, Mosquitto, ZillaProcess};

const ZILLA: &str = env!("CARGO_BIN_EXE_zilla");
const TIMEOUT: Duration = Duration::from_secs(20);
const NS: &str = "metrics-test";

/// `promtool`, or a failure that says how to install it.
fn promtool() -> &'static str {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        found,
        "promtool is missing: install Debian's `prometheus` package \
         (`sudo apt-get install prometheus`), or run `bash .ci/run`, which does"
    );
    "promtool"
}

fn token(scope: &str, expires_in: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({
        "iss": "https://auth.example.com",
        "aud": "https://api.example.com",
        "sub": "device1",
        "exp": now + expires_in,
        "scope": scope,
    });
    format!("Bearer {}", seed::sign(&claims, "example"))
}

/// The seed's proxy with JSON validation on `sensors/#`, telemetry on, and
/// `exporters` (YAML under `telemetry.exporters`).
fn config(dir: &Path, broker: u16, exporters: &str) -> PathBuf {
    let yaml = format!(
        r#"
name: {NS}
catalogs:
  inline0:
    type: inline
    options:
      subjects:
        reading:
          schema: '{{"type":"object","properties":{{"t":{{"type":"number"}}}},"required":["t"]}}'
guards:
{guards}bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: {{ host: 127.0.0.1, port: 0 }}
    telemetry: {{ metrics: [stream.*] }}
    exit: north_mqtt_server
  north_mqtt_server:
    type: mqtt
    kind: server
    telemetry: {{ metrics: [mqtt.*] }}
    options:
      authorization:
        authn_jwt:
          credentials:
            connect:
              username: Bearer {{credentials}}
      topics:
        - name: sensors/#
          on-invalid: reject
          content:
            model: json
            catalog:
              inline0:
                - subject: reading
    routes:
      - guarded:
          authn_jwt:
            - mqtt:stream
        exit: north_mqtt_client
  north_mqtt_client:
    type: mqtt
    kind: client
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    telemetry: {{ metrics: [stream.*] }}
    options: {{ host: 127.0.0.1, port: {broker} }}
telemetry:
  metrics: [stream.*, mqtt.*]
  exporters:
{exporters}"#,
        guards = seed::guards_yaml(),
    );
    let path = dir.join("zilla.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn prometheus_exporter(port: u16) -> String {
    format!(
        "    prometheus0:
      type: prometheus
      options:
        endpoints:
          - scheme: http
            port: {port}
            path: /metrics
"
    )
}

/// Starts the host on `config(port)`; a free port taken meanwhile by
/// someone else is retried with another.
fn start(config: impl Fn(u16) -> PathBuf) -> (ZillaProcess, u16) {
    let mut failure = String::new();
    for _ in 0..3 {
        let port = free_port();
        match ZillaProcess::start(Path::new(ZILLA), &config(port), &[], &[]) {
            Ok(zilla) => return (zilla, port),
            Err(error) => failure = error,
        }
    }
    panic!("zilla did not start: {failure}");
}

/// A client that counts every byte it sends.
struct Client {
    mqtt: RawMqtt,
}

impl Client {
    async fn send(&mut self, packet: &Packet, sent: &mut u64) {
        let mut out = BytesMut::new();
        packet.write(&mut out).unwrap();
        *sent += out.len() as u64;
        self.mqtt.send_bytes(&out).await;
    }

    async fn connect(port: u16, id: &str, username: &str, sent: &mut u64) -> (Self, ConnAck) {
        let mut client = Self {
            mqtt: RawMqtt::open(port).await,
        };
        let Packet::Connect(connect, will, _) = connect_packet(id, true, None) else {
            unreachable!()
        };
        let login = Login {
            username: username.into(),
            password: String::new(),
        };
        client
            .send(&Packet::Connect(connect, will, Some(login)), sent)
            .await;
        match client.mqtt.recv().await {
            Some(Packet::ConnAck(ack)) => (client, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }
}

fn publish(topic: &str, qos: QoS, pkid: u16, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        pkid,
        payload: Bytes::from_static(payload),
        properties: None,
    })
}

/// Samples of a scrape: `name{labels}` as written -> value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// `name{namespace="metrics-test",binding="...",labels}`, as the exporter writes it.
fn series(name: &str, binding: &str, labels: &str) -> String {
    let extra = if labels.is_empty() {
        String::new()
    } else {
        format!(",{labels}")
    };
    format!("{name}{{namespace=\"{NS}\",binding=\"{binding}\"{extra}}}")
}

const P0: &[u8] = br#"{"t":0}"#;
const P1: &[u8] = br#"{"t":1.5}"#;
const P2: &[u8] = br#"{"t":22}"#;
const BAD: &[u8] = b"not json";

/// The traffic both exporters are checked against: a subscriber, a
/// publisher sending QoS 0, 1, 2 and one invalid payload, and a client with
/// an expired token. Returns the bytes the clients sent and the clients
/// (connected, so their sessions are active).
async fn traffic(port: u16) -> (u64, Vec<Client>) {
    let mut sent = 0;
    let good = token("mqtt:stream", 3600);
    let (mut subscriber, ack) = Client::connect(port, "sub", &good, &mut sent).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    subscriber
        .send(
            &subscribe_packet(1, "sensors/#", QoS::AtLeastOnce),
            &mut sent,
        )
        .await;
    assert!(matches!(
        subscriber.mqtt.recv().await,
        Some(Packet::SubAck(_))
    ));

    let (mut publisher, ack) = Client::connect(port, "pub", &good, &mut sent).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    publisher
        .send(&publish("sensors/1", QoS::AtMostOnce, 0, P0), &mut sent)
        .await;
    publisher
        .send(&publish("sensors/1", QoS::AtLeastOnce, 1, P1), &mut sent)
        .await;
    assert!(matches!(
        publisher.mqtt.recv().await,
        Some(Packet::PubAck(_))
    ));
    publisher
        .send(&publish("sensors/1", QoS::ExactlyOnce, 2, P2), &mut sent)
        .await;
    assert!(matches!(
        publisher.mqtt.recv().await,
        Some(Packet::PubRec(_))
    ));
    let release = Packet::PubRel(PubRel {
        pkid: 2,
        reason: PubRelReason::Success,
        properties: None,
    });
    publisher.send(&release, &mut sent).await;
    assert!(matches!(
        publisher.mqtt.recv().await,
        Some(Packet::PubComp(_))
    ));
    publisher
        .send(&publish("sensors/2", QoS::AtLeastOnce, 3, BAD), &mut sent)
        .await;
    match publisher.mqtt.recv().await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.reason, PubAckReason::PayloadFormatInvalid),
        other => panic!("expected PUBACK 0x99, got {other:?}"),
    }

    // The three valid messages reach the subscriber (QoS 0, and 1 twice).
    for _ in 0..3 {
        match subscriber.mqtt.recv().await {
            Some(Packet::Publish(message)) if message.qos != QoS::AtMostOnce => {
                let ack = Packet::PubAck(PubAck {
                    pkid: message.pkid,
                    reason: PubAckReason::Success,
                    properties: None,
                });
                subscriber.send(&ack, &mut sent).await;
            }
            Some(Packet::Publish(_)) => {}
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    // An expired token is refused at CONNECT; the proxy closes the connection.
    let (mut refused, ack) =
        Client::connect(port, "late", &token("mqtt:stream", -600), &mut sent).await;
    assert_eq!(ack.code, ConnectReturnCode::BadUserNamePassword);
    assert_eq!(refused.mqtt.recv().await, None, "closed after the refusal");
    (sent, vec![subscriber, publisher])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scrape_matches_the_traffic_and_passes_promtool() {
    let promtool = promtool();
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (zilla, prometheus) =
        start(|port| config(dir.path(), broker.port(), &prometheus_exporter(port)));
    let (sent, _clients) = traffic(zilla.port("north_tcp_server")).await;

    let payload_in = (P0.len() + P1.len() + P2.len() + BAD.len()) as f64;
    let payload_out = (P0.len() + P1.len() + P2.len()) as f64;
    let mqtt = |name: &str, labels: &str| series(name, "north_mqtt_server", labels);
    let north = |name: &str| series(name, "north_tcp_server", "");
    let expected: Vec<(String, f64)> = vec![
        (mqtt("mqtt_sessions_active", ""), 2.0),
        (
            mqtt(
                "mqtt_connects_total",
                r#"reason_code="0x00",reason="success""#,
            ),
            2.0,
        ),
        (
            mqtt(
                "mqtt_connects_total",
                r#"reason_code="0x86",reason="bad_user_name_or_password""#,
            ),
            1.0,
        ),
        (
            mqtt("mqtt_authentication_failures_total", r#"reason="invalid""#),
            1.0,
        ),
        (mqtt("mqtt_connect_duration_seconds_count", ""), 3.0),
        (mqtt("mqtt_publishes_received_total", r#"qos="0""#), 1.0),
        (mqtt("mqtt_publishes_received_total", r#"qos="1""#), 2.0),
        (mqtt("mqtt_publishes_received_total", r#"qos="2""#), 1.0),
        (mqtt("mqtt_payload_received_bytes_total", ""), payload_in),
        (mqtt("mqtt_publishes_delivered_total", r#"qos="0""#), 1.0),
        (mqtt("mqtt_publishes_delivered_total", r#"qos="1""#), 2.0),
        (mqtt("mqtt_payload_delivered_bytes_total", ""), payload_out),
        (mqtt("mqtt_subscriptions_active", ""), 1.0),
        (
            mqtt(
                "mqtt_validation_failures_total",
                r#"topic="sensors/#",model="json""#,
            ),
            1.0,
        ),
        (
            mqtt(
                "mqtt_refusals_total",
                r#"packet="PUBACK",reason_code="0x99",reason="payload_format_invalid""#,
            ),
            1.0,
        ),
        (
            mqtt(
                "mqtt_upstream_sessions_total",
                r#"exit="north_mqtt_client""#,
            ),
            2.0,
        ),
        (
            mqtt(
                "mqtt_upstream_sessions_active",
                r#"exit="north_mqtt_client""#,
            ),
            2.0,
        ),
        (
            mqtt(
                "mqtt_publish_ack_duration_seconds_count",
                r#"exit="north_mqtt_client""#,
            ),
            2.0,
        ),
        (north("stream_opens_received_total"), 3.0),
        (north("stream_active_received"), 2.0),
        (north("stream_closes_received_total"), 1.0),
        (north("stream_data_sent_bytes_total"), sent as f64),
        (
            series("stream_opens_sent_total", "south_tcp_client", ""),
            2.0,
        ),
    ];
    // Each value is final once the proxy has read what the clients sent
    // last (their PUBACKs), so the scrape is repeated until it converges.
    let mut last = String::new();
    let converged = wait_for("the scrape to match the traffic", TIMEOUT, || {
        let (status, body) = get(prometheus, "/metrics").ok()?;
        assert_eq!(status, 200);
        let found = samples(&body);
        last = body;
        expected
            .iter()
            .all(|(series, value)| found.get(series) == Some(value))
            .then_some(found)
    });
    let found = converged.unwrap_or_else(|timeout| {
        let found = samples(&last);
        let wrong: Vec<String> = expected
            .iter()
            .filter(|(series, value)| found.get(series) != Some(value))
            .map(|(series, value)| {
                format!("{series}: expected {value}, got {:?}", found.get(series))
            })
            .collect();
        panic!("{timeout}:\n{}\nscrape:\n{last}", wrong.join("\n"))
    });
    assert!(found[&north("stream_data_received_bytes_total")] > 0.0);

    // promtool accepts the exposition as it is (format and naming rules).
    let scrape = dir.path().join("scrape.prom");
    std::fs::write(&scrape, &last).unwrap();
    let checked = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&scrape).unwrap())
        .output()
        .unwrap();
    assert!(
        checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // `zilla metrics` finds the endpoint in the configuration and prints the same.
    let printed = Command::new(ZILLA)
        .args(["metrics", "-c"])
        .arg(dir.path().join("zilla.yaml"))
        .arg("north_mqtt_server")
        .output()
        .unwrap();
    assert!(printed.status.success(), "{printed:?}");
    let table = String::from_utf8(printed.stdout).unwrap();
    assert!(table.starts_with("namespace"), "{table}");
    let row = table
        .lines()
        .find(|l| l.contains("mqtt.publishes.received{qos=\"1\"}"))
        .unwrap_or_else(|| panic!("no publishes row in\n{table}"));
    assert!(
        row.starts_with(NS) && row.trim_end().ends_with(" 2"),
        "{row}"
    );
    assert!(
        !table.contains("north_tcp_server"),
        "filtered by binding:\n{table}"
    );
}

/// Decoded OTLP metrics pushes: `name{label=value,...}` -> the latest value.
fn otlp_values(bodies: &[Vec<u8>]) -> BTreeMap<String, i64> {
    let mut values = BTreeMap::new();
    for body in bodies {
        let request = ExportMetricsServiceRequest::decode(body.as_slice()).expect("OTLP protobuf");
        let metrics = request
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics);
        for metric in metrics {
            let points = match &metric.data {
                Some(metric::Data::Sum(sum)) => &sum.data_points,
                Some(metric::Data::Gauge(gauge)) => &gauge.data_points,
                _ => continue,
            };
            for point in points {
                let labels: Vec<String> = point
                    .attributes
                    .iter()
                    .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                        any_value::Value::StringValue(v) => Some(format!("{}={v}", kv.key)),
                        _ => None,
                    })
                    .collect();
                if let Some(number_data_point::Value::AsInt(value)) = point.value {
                    values.insert(format!("{}{{{}}}", metric.name, labels.join(",")), value);
                }
            }
        }
    }
    values
}

/// Decoded OTLP logs pushes: (event.name, severity text, body) of each record.
fn otlp_events(bodies: &[Vec<u8>]) -> Vec<(String, String, String)> {
    let mut events = Vec::new();
    for body in bodies {
        let request = ExportLogsServiceRequest::decode(body.as_slice()).expect("OTLP protobuf");
        let records = request
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records);
        for record in records {
            let name = record
                .attributes
                .iter()
                .find(|kv| kv.key == "event.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    any_value::Value::StringValue(v) => Some(v.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            let body = match record.body.as_ref().and_then(|b| b.value.as_ref()) {
                Some(any_value::Value::StringValue(text)) => text.clone(),
                _ => String::new(),
            };
            events.push((name, record.severity_text.clone(), body));
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread")]
async fn an_otlp_collector_receives_the_counters_and_the_events() {
    let collector = HttpStub::start().await;
    collector.set("/v1/metrics", 200, "");
    collector.set("/v1/logs", 200, "");
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let otlp = format!(
        "    otlp0:
      type: otlp
      options:
        interval: 0.2
        signals: [metrics, logs]
        endpoint:
          protocol: http
          location: http://127.0.0.1:{}
",
        collector.port
    );
    let (mut zilla, _) = start(|port| {
        config(
            dir.path(),
            broker.port(),
            &format!("{otlp}{}", prometheus_exporter(port)),
        )
    });
    let (_, clients) = traffic(zilla.port("north_tcp_server")).await;

    let name = |metric: &str, labels: &str| {
        let extra = if labels.is_empty() {
            String::new()
        } else {
            format!(",{labels}")
        };
        format!("{metric}{{namespace={NS},binding=north_mqtt_server{extra}}}")
    };
    let expected = [
        (name("mqtt.sessions.active", ""), 2),
        (
            name(
                "mqtt.connects",
                "reason_code=0x86,reason=bad_user_name_or_password",
            ),
            1,
        ),
        (name("mqtt.publishes.received", "qos=1"), 2),
        (
            name("mqtt.payload.received", ""),
            (P0.len() + P1.len() + P2.len() + BAD.len()) as i64,
        ),
        (
            name("mqtt.validation.failures", "topic=sensors/#,model=json"),
            1,
        ),
    ];
    wait_for("the collector to receive the counters", TIMEOUT, || {
        let values = otlp_values(&collector.bodies("/v1/metrics"));
        expected
            .iter()
            .all(|(series, value)| values.get(series) == Some(value))
            .then_some(())
    })
    .unwrap_or_else(|timeout| {
        panic!(
            "{timeout}; latest values: {:#?}",
            otlp_values(&collector.bodies("/v1/metrics"))
        )
    });
    let events = wait_for("the collector to receive the events", TIMEOUT, || {
        let events = otlp_events(&collector.bodies("/v1/logs"));
        let has = |event: &str| events.iter().any(|(name, _, _)| name == event);
        (has("MQTT_SESSION_STARTED") && has("MQTT_CONNECT_REJECTED")).then_some(events)
    })
    .unwrap();
    let rejected = events
        .iter()
        .find(|(name, _, _)| name == "MQTT_CONNECT_REJECTED")
        .unwrap();
    assert_eq!(rejected.1, "WARN");
    assert!(rejected.2.contains("late"), "{rejected:?}");

    // On SIGTERM the sessions are told (DISCONNECT 0x8B) and a last push
    // carries it.
    let (status, _) = zilla.terminate(TIMEOUT).unwrap();
    assert!(status.success());
    drop(clients);
    let values = otlp_values(&collector.bodies("/v1/metrics"));
    assert_eq!(
        values.get(&name(
            "mqtt.refusals",
            "packet=DISCONNECT,reason_code=0x8B,reason=server_shutting_down"
        )),
        Some(&2),
        "{values:#?}"
    );
}

/// `examples/mqtt.proxy.metrics`: a Zilla configuration with `prometheus`
/// and `otlp` exporters builds as it is, and runs (its fixed ports moved to
/// free ones, nothing else changed).
#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_example_runs_unchanged() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mqtt.proxy.metrics");
    let broker = Mosquitto::start().unwrap();
    let env = broker.env();
    let lookup_env = env.clone();
    Engine::from_file(example.join("zilla.yaml"))
        .env(move |name| match name {
            "KEYSTORE_PASSWORD" => Some("generated".into()),
            _ => lookup_env
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone()),
        })
        .build()
        .expect("the example builds as it is");

    let collector = HttpStub::start().await;
    collector.set("/v1/metrics", 200, "");
    collector.set("/v1/logs", 200, "");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tls")).unwrap();
    std::fs::copy(
        example.join("tls/localhost.p12"),
        dir.path().join("tls/localhost.p12"),
    )
    .unwrap();
    let text = std::fs::read_to_string(example.join("zilla.yaml")).unwrap();
    let mut env: Vec<(&str, String)> = env.to_vec();
    env.push(("KEYSTORE_PASSWORD", "generated".into()));
    let mut failure = String::new();
    for _ in 0..3 {
        let (mqtt, tls, prometheus) = (free_port(), free_port(), free_port());
        let moved = text
            .replace("7183", &mqtt.to_string())
            .replace("7883", &tls.to_string())
            .replace("7190", &prometheus.to_string())
            .replace("localhost:4318", &format!("127.0.0.1:{}", collector.port));
        let config = dir.path().join("zilla.yaml");
        std::fs::write(&config, moved).unwrap();
        let mut zilla = match ZillaProcess::start(Path::new(ZILLA), &config, &env, &[]) {
            Ok(zilla) => zilla,
            Err(error) => {
                failure = error;
                continue;
            }
        };
        let (status, body) = get(prometheus, "/metrics").unwrap();
        assert_eq!(status, 200);
        let found = samples(&body);
        let opens = "stream_opens_received_total\
                     {namespace=\"zilla-mqtt-proxy-jwt\",binding=\"north_tcp_server\"}";
        assert_eq!(found.get(opens), Some(&0.0), "{body}");
        // The last push on shutdown reaches the collector.
        let (status, _) = zilla.terminate(TIMEOUT).unwrap();
        assert!(status.success());
        assert!(
            !collector.bodies("/v1/metrics").is_empty(),
            "a metrics push on shutdown"
        );
        return;
    }
    panic!("the example did not start: {failure}");
}

/// A reload builds a successor engine: its prometheus exporter takes over
/// the same socket (no "address in use"), and the counts go on, those of
/// connections still served by the replaced engine included.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_keeps_the_endpoint_and_the_counts() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_port = upstream.local_addr().unwrap().port();
    let yaml = |prometheus| {
        format!(
            "
name: {NS}
telemetry:
  metrics: [stream.*]
  exporters:
{}bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: {{ host: 127.0.0.1, port: 0 }}
    telemetry: {{ metrics: [stream.*] }}
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {upstream_port} }}
",
            prometheus_exporter(prometheus)
        )
    };
    // A free port another process takes before the exporter binds it
    // (AddrInUse, seen in CI) is retried with another.
    let mut attempts = 0;
    let (prometheus, first, started) = loop {
        attempts += 1;
        let prometheus = free_port();
        let first = Engine::from_yaml(yaml(prometheus)).build().unwrap();
        match first.start().await {
            Ok(started) => break (prometheus, first, started),
            Err(error) if attempts < 3 => eprintln!("retrying: {error}"),
            Err(error) => panic!("the engine did not start: {error}"),
        }
    };
    let yaml = yaml(prometheus);
    let proxy = started
        .iter()
        .find(|b| b.name == "north_tcp_server")
        .unwrap()
        .listening[0];
    let mut old = tokio::net::TcpStream::connect(proxy).await.unwrap();
    old.write_all(b"old").await.unwrap();
    let (mut old_upstream, _) = upstream.accept().await.unwrap();
    let mut three = [0u8; 3];
    old_upstream.read_exact(&mut three).await.unwrap();

    let second = Engine::from_yaml(yaml)
        .handover(first.handover())
        .build()
        .unwrap();
    second
        .start()
        .await
        .expect("the successor shares the metrics socket");
    first.stop_accepting();
    let mut new = tokio::net::TcpStream::connect(proxy).await.unwrap();
    new.write_all(b"new!").await.unwrap();
    let (mut new_upstream, _) = upstream.accept().await.unwrap();
    let mut four = [0u8; 4];
    new_upstream.read_exact(&mut four).await.unwrap();

    let opens = series("stream_opens_received_total", "north_tcp_server", "");
    let active = series("stream_active_received", "north_tcp_server", "");
    let sent = series("stream_data_sent_bytes_total", "north_tcp_server", "");
    let found = wait_for("both generations in one scrape", TIMEOUT, || {
        let found = samples(&get(prometheus, "/metrics").ok()?.1);
        (found.get(&sent) == Some(&7.0)).then_some(found)
    })
    .unwrap();
    assert_eq!(found.get(&opens), Some(&2.0));
    assert_eq!(found.get(&active), Some(&2.0), "one on each generation");

    // The replaced engine's last connection ends and the engine goes: its
    // counts stay, its gauge goes.
    drop((old, old_upstream));
    first.connections_ended().await;
    first.shutdown().await;
    drop(first);
    let found = wait_for("the replaced engine's counts to stay", TIMEOUT, || {
        let found = samples(&get(prometheus, "/metrics").ok()?.1);
        (found.get(&active) == Some(&1.0)).then_some(found)
    })
    .unwrap();
    assert_eq!(found.get(&opens), Some(&2.0));
    assert_eq!(found.get(&sent), Some(&7.0));
    drop((new, new_upstream));
    second.shutdown().await;
}
