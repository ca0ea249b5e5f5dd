//! Limits by each kind of key (`options.limits`) end to end, beside the
//! tenant ones of `mqtt_limits_tenants.rs`: sessions and CONNECTs per
//! identity (the token's `sub`), sessions per source address as a PROXY
//! protocol header names it, payload bytes per tenant claim, and QoS 0
//! publishes over a session's rate. Real MQTT 5 and 3.1.1 clients with
//! signed tokens, through the proxy to mosquitto; each test checks the codes
//! the refused client reads and that another key value goes on unaffected.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use futures_util::FutureExt;
use serde_json::json;
use tokio::time::Instant;
use zilla as _;
use zilla_testkit::limits_clients::{events, puback, publish, qos1, ACCEPTED, V311};
use zilla_testkit::mqtt::packets::{
    ConnAck, ConnectReturnCode, Disconnect, DisconnectReasonCode, Login, Packet, PingReq,
    PubAckReason, QoS, SubscribeReasonCode,
};
use zilla_testkit::mqtt::{connect_packet, subscribe_packet, RawMqtt};
use zilla_testkit::proxy::{wait_for_event, Proxy};
use zilla_testkit::seed::sign;
use zilla_testkit::Mosquitto;

/// The tcp server's `proxy-protocol`: a header from loopback is required.
const PROXY_PROTOCOL: &str = ", proxy-protocol: { mode: required, from: [127.0.0.1/32] }";

/// A proxy in front of `broker` with the tenants example's guard, routing
/// every tenant to `tenants/<its tenant claim>/#`; `tcp` is added to the tcp
/// server's options and `options` (indented for `options:`) to the mqtt
/// server's.
async fn proxy(broker: &Mosquitto, tcp: &str, options: &str) -> Proxy {
    Proxy::start(&yaml(broker, tcp, options, "")).await
}

/// [`proxy`] with its metrics served by a `prometheus` exporter, and that
/// exporter's port (free when chosen; another is tried if it was taken).
async fn metered_proxy(broker: &Mosquitto, options: &str) -> (Proxy, u16) {
    for _ in 0..3 {
        let metrics = zilla_testkit::free_port();
        let exporter = format!(
            "    prometheus0:\n      type: prometheus\n      options:\n        endpoints:\n          - {{ scheme: http, port: {metrics}, path: /metrics }}\n"
        );
        let yaml = yaml(broker, "", options, &exporter);
        // A start that fails (the port was taken meanwhile) panics.
        let started = AssertUnwindSafe(Proxy::start(&yaml)).catch_unwind();
        if let Ok(proxy) = started.await {
            return (proxy, metrics);
        }
    }
    panic!("the proxy did not start in three tries (see the panics above)");
}

/// The configuration [`proxy`] starts, with `exporter` (indented for
/// `exporters:`) besides the capture.
fn yaml(broker: &Mosquitto, tcp: &str, options: &str, exporter: &str) -> String {
    let guards = zilla_testkit::tenants::tenants_guards();
    let port = broker.port();
    format!(
        r#"
name: limits-keys-test
guards:
{guards}
telemetry:
  metrics: [mqtt.*]
  exporters:
    capture:
      type: capture
{exporter}bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: {{ host: 127.0.0.1, port: 0{tcp} }}
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
{options}
    routes:
      - when:
          - publish:
              - topic: tenants/{{tenant}}/#
                params:
                  tenant: ${{guarded['authn_jwt'].attributes.tenant}}
          - subscribe:
              - topic: tenants/{{tenant}}/#
                params:
                  tenant: ${{guarded['authn_jwt'].attributes.tenant}}
        exit: mqtt_client
  mqtt_client:
    type: mqtt
    kind: client
    exit: tcp_client
  tcp_client:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {port} }}
"#
    )
}

/// Who connects: the token's `sub` (the guard's identity) and `tenant`
/// claim, and the client address a PROXY protocol header names, if any.
#[derive(Debug, Clone, Copy)]
struct Who {
    sub: &'static str,
    tenant: &'static str,
    source: Option<&'static str>,
}

impl Who {
    const fn new(sub: &'static str, tenant: &'static str) -> Self {
        Self {
            sub,
            tenant,
            source: None,
        }
    }

    const fn from(self, source: &'static str) -> Self {
        Self {
            source: Some(source),
            ..self
        }
    }

    /// `Bearer <token>`, signed like the example's.
    fn bearer(self) -> String {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        let claims = json!({
            "iss": "https://auth.example.com",
            "aud": "https://api.example.com",
            "sub": self.sub,
            "exp": exp,
            "scope": format!("mqtt:stream tenant:{}", self.tenant),
            "tenant": self.tenant,
        });
        format!("Bearer {}", sign(&claims, "example"))
    }

    /// The PROXY protocol v1 header a load balancer would send first.
    fn header(self) -> Option<Vec<u8>> {
        let source = self.source?;
        let (family, proxy) = match source.contains(':') {
            true => ("TCP6", "::1"),
            false => ("TCP4", "127.0.0.1"),
        };
        Some(format!("PROXY {family} {source} {proxy} 5000 7183\r\n").into_bytes())
    }
}

/// An MQTT 5 client `id` of `who`, and its CONNACK.
async fn v5(port: u16, id: &str, who: Who) -> (RawMqtt, ConnAck) {
    let mut client = RawMqtt::open(port).await;
    if let Some(header) = who.header() {
        client.send_bytes(&header).await;
    }
    let Packet::Connect(connect, will, _) = connect_packet(id, true, None) else {
        unreachable!()
    };
    let login = Login {
        username: who.bearer(),
        password: String::new(),
    };
    client
        .send(&Packet::Connect(connect, will, Some(login)))
        .await;
    match client.recv().await {
        Some(Packet::ConnAck(ack)) => (client, ack),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// Subscribes `client` to `filter` at QoS 1 and waits for its SUBACK.
async fn subscribed(client: &mut RawMqtt, filter: &str) {
    client
        .send(&subscribe_packet(1, filter, QoS::AtLeastOnce))
        .await;
    match client.recv().await {
        Some(Packet::SubAck(ack)) => assert_eq!(
            ack.return_codes,
            vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
        ),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// How this file's 3.1.1 clients connect: as a `Who`.
trait ConnectAs: Sized {
    /// Connects `id` of `who`; the CONNACK return code.
    async fn connect(port: u16, id: &str, who: Who) -> (Self, u8);
}

impl ConnectAs for V311 {
    async fn connect(port: u16, id: &str, who: Who) -> (Self, u8) {
        Self::connect_with(port, id, who.bearer(), who.header()).await
    }
}

/// The value of the series of `name` in a prometheus `body` whose labels
/// include each of `labels` (`key="value"`).
fn metric(body: &str, name: &str, labels: &[&str]) -> Option<u64> {
    let series = format!("{name}{{");
    body.lines()
        .filter(|line| line.starts_with(&series))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

/// The reason string of a CONNACK.
fn reason(ack: ConnAck) -> String {
    ack.properties
        .and_then(|p| p.reason_string)
        .unwrap_or_default()
}

#[tokio::test]
async fn sessions_and_connects_per_identity_refuse_that_identity_only() {
    let broker = Mosquitto::start().unwrap();
    let proxy = proxy(
        &broker,
        "",
        "      limits:\n        - key: identity\n          sessions: 2\n          connects: {rate: 0.001, burst: 5}",
    )
    .await;
    let port = proxy.port;
    // Two identities of the same tenant: the identity is what counts.
    let one = Who::new("i-device-1", "i-acme");
    let two = Who::new("i-device-2", "i-acme");

    // Two sessions of i-device-1 (CONNECTs 1 and 2)...
    let (mut first, ack) = v5(port, "i-1", one).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let (_second, code) = V311::connect(port, "i-2", one).await;
    assert_eq!(code, 0);
    // ...and a third is refused: MQTT 5 0x97, 3.1.1 return code 3
    // (CONNECTs 3 and 4: an attempt counts, admitted or not).
    let (_, ack) = v5(port, "i-3", one).await;
    assert_eq!(ack.code, ConnectReturnCode::QuotaExceeded);
    let why = reason(ack);
    assert!(
        why.contains(r#"sessions limit (2) of identity i-device-1"#),
        "{why}"
    );
    assert_eq!(V311::connect(port, "i-4", one).await.1, 3);
    // A reconnect taking a session over is the same session (CONNECT 5).
    let (_again, ack) = v5(port, "i-1", one).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let taken = first.closed().await.map(|d| d.reason_code);
    assert_eq!(taken, Some(DisconnectReasonCode::SessionTakenOver));
    // Its CONNECTs are used up: 0x9F, whatever the sessions.
    let (_, ack) = v5(port, "i-5", one).await;
    assert_eq!(ack.code, ConnectReturnCode::ConnectionRateExceeded);
    let why = reason(ack);
    assert!(
        why.contains(r#"connects limit (0.001/s, burst 5) of identity i-device-1"#),
        "{why}"
    );
    assert_eq!(V311::connect(port, "i-6", one).await.1, 3);
    wait_for_event(&[
        "MQTT_LIMIT_HIT",
        r#"id i-3: sessions limit (2) of identity i-device-1 exceeded; CONNACK 0x97"#,
    ])
    .await;
    wait_for_event(&[
        "MQTT_LIMIT_HIT",
        r#"id i-5: connects limit (0.001/s, burst 5) of identity i-device-1 exceeded; CONNACK 0x9F"#,
    ])
    .await;
    // Refusals by a limit are logged as such, not as rejected CONNECTs.
    assert_eq!(events(&["MQTT_CONNECT_REJECTED", r#"id i-"#]), 0);

    // Another identity of the tenant connects and publishes with either
    // version, never counted with the first.
    let (mut other, ack) = v5(port, "i-7", two).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    other.send(&qos1("tenants/i-acme/t", 1, "m")).await;
    assert!(ACCEPTED.contains(&puback(&mut other).await.1));
    let (mut other311, code) = V311::connect(port, "i-8", two).await;
    assert_eq!(code, 0);
    other311.publish("tenants/i-acme/t", 1, b"m").await;
    assert_eq!(other311.puback().await, 1);
    assert_eq!(events(&["MQTT_LIMIT_HIT", "i-device-2"]), 0);
}

#[tokio::test]
async fn sessions_per_source_address_count_the_address_a_proxy_protocol_header_names() {
    let broker = Mosquitto::start().unwrap();
    let proxy = proxy(
        &broker,
        PROXY_PROTOCOL,
        "      limits:\n        - key: source-address\n          sessions: 1",
    )
    .await;
    let port = proxy.port;
    // Every connection comes from 127.0.0.1; the headers tell them apart.
    let device = Who::new("sa-device", "sa-acme");

    let (mut first, ack) = v5(port, "sa-1", device.from("10.0.0.1")).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    // A second session from 10.0.0.1: MQTT 5 0x97, 3.1.1 return code 3.
    let (_, ack) = v5(port, "sa-2", device.from("10.0.0.1")).await;
    assert_eq!(ack.code, ConnectReturnCode::QuotaExceeded);
    let why = reason(ack);
    assert!(
        why.contains(r#"sessions limit (1) of source-address 10.0.0.1"#),
        "{why}"
    );
    assert_eq!(
        V311::connect(port, "sa-3", device.from("10.0.0.1")).await.1,
        3
    );
    wait_for_event(&[
        "MQTT_LIMIT_HIT",
        r#"client 10.0.0.1:5000 id sa-2: sessions limit (1) of source-address 10.0.0.1 exceeded; CONNACK 0x97"#,
    ])
    .await;

    // Other addresses have their own session, with either version.
    let (mut second, ack) = v5(port, "sa-4", device.from("10.0.0.2")).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    second.send(&qos1("tenants/sa-acme/t", 1, "m")).await;
    assert!(ACCEPTED.contains(&puback(&mut second).await.1));
    let (mut third, code) = V311::connect(port, "sa-5", device.from("10.0.0.3")).await;
    assert_eq!(code, 0);
    third.publish("tenants/sa-acme/t", 1, b"m").await;
    assert_eq!(third.puback().await, 1);
    assert_eq!(events(&["MQTT_LIMIT_HIT", "10.0.0.2"]), 0);
    assert_eq!(events(&["MQTT_LIMIT_HIT", "10.0.0.3"]), 0);

    // IPv4 mapped into IPv6 is that IPv4 address; IPv6 counts by its /64.
    let (_, ack) = v5(port, "sa-6", device.from("::ffff:10.0.0.1")).await;
    assert_eq!(ack.code, ConnectReturnCode::QuotaExceeded);
    let (_v6, ack) = v5(port, "sa-7", device.from("2001:db8::1")).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let (_, ack) = v5(port, "sa-8", device.from("2001:db8::2")).await;
    assert_eq!(ack.code, ConnectReturnCode::QuotaExceeded);
    let why = reason(ack);
    assert!(
        why.contains(r#"sessions limit (1) of source-address 2001:db8::/64"#),
        "{why}"
    );
    let (_, ack) = v5(port, "sa-9", device.from("2001:db8:0:1::1")).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);

    // The session from 10.0.0.1 ends: its place is free again.
    first
        .send(&Packet::Disconnect(Disconnect {
            reason_code: DisconnectReasonCode::NormalDisconnection,
            properties: None,
        }))
        .await;
    assert!(first.closed().await.is_none());
    let (_, ack) = v5(port, "sa-2", device.from("10.0.0.1")).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
}

#[tokio::test]
async fn payload_bytes_per_tenant_are_refused_after_limit_wait_while_other_tenants_go_on() {
    let broker = Mosquitto::start().unwrap();
    let proxy = proxy(
        &broker,
        "",
        "      limit-wait: 1\n      limits:\n        - key: {claim: tenant}\n          bytes: {rate: 1, burst: 100}",
    )
    .await;
    let port = proxy.port;
    let acme = Who::new("y-device-a", "y-acme");
    let globex = Who::new("y-device-g", "y-globex");
    // A globex subscriber, so that mosquitto acknowledges its publishes 0x00.
    let (mut watcher, _) = v5(port, "y-gw", globex).await;
    subscribed(&mut watcher, "tenants/y-globex/#").await;

    // MQTT 5: acme's 60 bytes pass; 60 more are over its 100 bytes and
    // wait limit-wait (1 s), then PUBACK 0x97 with why.
    let (mut acme5, _) = v5(port, "y-a1", acme).await;
    let (mut globex5, _) = v5(port, "y-g1", globex).await;
    acme5
        .send(&qos1("tenants/y-acme/t", 1, vec![b'x'; 60]))
        .await;
    assert!(ACCEPTED.contains(&puback(&mut acme5).await.1));
    let start = Instant::now();
    acme5
        .send(&qos1("tenants/y-acme/t", 2, vec![b'x'; 60]))
        .await;
    // Meanwhile globex's bytes are its own.
    globex5
        .send(&qos1("tenants/y-globex/t", 1, vec![b'x'; 20]))
        .await;
    assert_eq!(
        puback(&mut globex5).await,
        (1, PubAckReason::Success, String::new())
    );
    let globex_acked = start.elapsed();
    let (pkid, reason, why) = puback(&mut acme5).await;
    let acme_refused = start.elapsed();
    assert_eq!((pkid, reason), (2, PubAckReason::QuotaExceeded));
    assert_eq!(
        why,
        r#"bytes limit (1/s, burst 100) of claim:tenant y-acme exceeded"#
    );
    assert!(
        acme_refused >= Duration::from_millis(900),
        "{acme_refused:?}"
    );
    assert!(globex_acked < acme_refused, "{globex_acked:?}");
    wait_for_event(&[
        "MQTT_LIMIT_HIT",
        r#"id y-a1: bytes limit (1/s, burst 100) of claim:tenant y-acme exceeded; PUBACK 0x97"#,
    ])
    .await;
    // The session goes on: a publish within what is left passes.
    acme5.send(&qos1("tenants/y-acme/t", 3, "small")).await;
    assert!(ACCEPTED.contains(&puback(&mut acme5).await.1));
    globex5
        .send(&qos1("tenants/y-globex/t", 2, vec![b'x'; 20]))
        .await;
    assert_eq!(
        puback(&mut globex5).await,
        (2, PubAckReason::Success, String::new())
    );

    // MQTT 3.1.1: a new acme session has what the tenant has left (under
    // 40 bytes), not 100: its 60 bytes wait, then the connection closes.
    // Globex's pass meanwhile.
    let (mut acme311, code) = V311::connect(port, "y-a2", acme).await;
    assert_eq!(code, 0);
    let start = Instant::now();
    acme311.publish("tenants/y-acme/t", 1, &[b'x'; 60]).await;
    let (mut globex311, code) = V311::connect(port, "y-g2", globex).await;
    assert_eq!(code, 0);
    globex311
        .publish("tenants/y-globex/t", 1, &[b'x'; 20])
        .await;
    assert_eq!(globex311.puback().await, 1);
    assert!(acme311.closed().await);
    assert!(start.elapsed() >= Duration::from_millis(900));
    wait_for_event(&["MQTT_SESSION_REFUSED", "y-a2", "DISCONNECT 0x96"]).await;
    assert_eq!(events(&["MQTT_LIMIT_HIT", "y-globex"]), 0);
}

#[tokio::test]
async fn qos0_publishes_over_a_sessions_rate_are_dropped_and_the_session_goes_on() {
    let broker = Mosquitto::start().unwrap();
    let (proxy, metrics) = metered_proxy(
        &broker,
        "      limit-wait: 0\n      limits:\n        - key: session\n          publishes: {rate: 0.1, burst: 3}",
    )
    .await;
    let port = proxy.port;
    let device = Who::new("d-device", "d-acme");
    let (mut subscriber, _) = v5(port, "d-sub", device).await;
    subscribed(&mut subscriber, "tenants/d-acme/#").await;

    // Ten QoS 0 publishes in one write: the burst's three pass, the others
    // find no tokens and, without limit-wait, are dropped at once.
    let (mut publisher, ack) = v5(port, "d-pub", device).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let sent: Vec<String> = (0..10).map(|n| format!("q{n}")).collect();
    let mut burst = BytesMut::new();
    for payload in &sent {
        let packet = publish("tenants/d-acme/t", QoS::AtMostOnce, 0, payload.clone());
        packet.write(&mut burst).unwrap();
    }
    publisher.send_bytes(&burst).await;
    wait_for_event(&[
        "MQTT_LIMIT_HIT",
        r#"id d-pub: publishes limit (0.1/s, burst 3) of the session exceeded; QoS 0 publish dropped"#,
    ])
    .await;

    // Without tokens (one every ten seconds), a QoS 1 publish is refused
    // with 0x97, and the session goes on: it still answers a PINGREQ.
    publisher
        .send(&qos1("tenants/d-acme/t", 1, "refused"))
        .await;
    match puback(&mut publisher).await {
        (1, PubAckReason::QuotaExceeded, _) => {}
        other => panic!("expected PUBACK 0x97 for 1, got {other:?}"),
    }
    publisher.send(&Packet::PingReq(PingReq)).await;
    assert!(
        matches!(publisher.recv().await, Some(Packet::PingResp(_))),
        "the session is still open"
    );
    // Another session has its own budget: its message marks the end of
    // what the subscriber gets from this test.
    let (mut marker, _) = v5(port, "d-marker", device).await;
    marker.send(&qos1("tenants/d-acme/t", 1, "last")).await;
    match puback(&mut marker).await {
        (1, PubAckReason::Success, _) => {}
        other => panic!("expected PUBACK 0x00 for the marker, got {other:?}"),
    }

    // What reached the subscriber before that last publish: the burst.
    let mut arrived = Vec::new();
    loop {
        match subscriber.recv().await {
            Some(Packet::Publish(message)) if message.payload == "last" => break,
            Some(Packet::Publish(message)) => {
                arrived.push(String::from_utf8(message.payload.to_vec()).unwrap());
            }
            other => panic!("expected the messages, got {other:?}"),
        }
    }
    assert!(arrived.len() < sent.len(), "{arrived:?}");
    assert_eq!(arrived, sent[..3]);
    // Seven drops and the 0x97 after them: one event, the first; each
    // counted in mqtt.limits.hits and mqtt.refusals.
    assert_eq!(events(&["MQTT_LIMIT_HIT", r#"id d-pub"#]), 1);
    let refused_polls = 1;
    let (status, body) =
        tokio::task::spawn_blocking(move || zilla_testkit::http::get(metrics, "/metrics"))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(status, 200);
    let hits = |action: &str| {
        let action = format!(r#"action="{action}""#);
        let labels = [r#"key="session""#, r#"limit="publishes""#, &action];
        metric(&body, "mqtt_limits_hits_total", &labels)
    };
    assert_eq!(hits("refused"), Some(7 + refused_polls), "{body}");
    assert_eq!(hits("delayed"), Some(0), "{body}");
    let refusals = |packet: &str| {
        let packet = format!(r#"packet="{packet}""#);
        let labels = [&packet, r#"reason_code="0x97""#];
        metric(&body, "mqtt_refusals_total", &labels).unwrap_or(0)
    };
    assert_eq!(refusals("PUBLISH"), 7, "{body}");
    assert_eq!(refusals("PUBACK"), refused_polls, "{body}");
}
