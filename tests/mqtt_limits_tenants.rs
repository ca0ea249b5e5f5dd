//! Limits per tenant, source address and session (`options.limits`) end to
//! end: real MQTT 5 and 3.1.1 clients with signed tokens carrying a `tenant`
//! claim, through the proxy to mosquitto. Each test checks the codes the
//! refused client reads and that another tenant goes on unaffected.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use rumqttc::mqttbytes::v4;
use serde_json::json;
use tokio::time::Instant;
use zilla as _;
use zilla::engine::Engine;
use zilla_testkit::limits_clients::{events, puback, publish, qos1, ACCEPTED, V311};
use zilla_testkit::mqtt::packets::{
    ConnAck, ConnectReturnCode, Filter, Login, Packet, PubAckReason, PubRecReason, QoS,
    RetainForwardRule, Subscribe, SubscribeReasonCode,
};
use zilla_testkit::mqtt::{connect_packet, RawMqtt};
use zilla_testkit::proxy::{wait_for_event, Proxy};
use zilla_testkit::seed::sign;
use zilla_testkit::tenants::{tenant_bindings, tenants_guards};
use zilla_testkit::Mosquitto;

/// The tenants example, which holds the guard these tests use.
fn example() -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mqtt.proxy.tenants/zilla.yaml");
    std::fs::read_to_string(path).expect("the tenants example")
}

/// A proxy in front of `broker` whose mqtt server has the example's guard,
/// routes every tenant to `tenants/<its tenant claim>/#`, and has `options`
/// (indented for `options:`) besides its authorization.
async fn proxy(broker: &Mosquitto, options: &str) -> Proxy {
    Proxy::start(&config(broker.port(), options)).await
}

/// The configuration [`proxy`] starts (the broker on `port`); `options` may
/// name the store `memory0`.
fn config(port: u16, options: &str) -> String {
    let guards = tenants_guards();
    let bindings = tenant_bindings(options, port);
    format!(
        r#"
name: limits-test
stores:
  memory0:
    type: memory
guards:
{guards}
telemetry:
  exporters:
    capture:
      type: capture
{bindings}"#
    )
}

/// `Bearer <token>` for a device of `tenant`, signed like the example's.
fn bearer(tenant: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let claims = json!({
        "iss": "https://auth.example.com",
        "aud": "https://api.example.com",
        "sub": format!("device-of-{tenant}"),
        "exp": exp,
        "scope": format!("mqtt:stream tenant:{tenant}"),
        "tenant": tenant,
    });
    format!("Bearer {}", sign(&claims, "example"))
}

/// How this file's 3.1.1 clients connect: with a token of their tenant.
trait ConnectAs: Sized {
    /// Connects `id` of `tenant`; the CONNACK return code.
    async fn connect(port: u16, id: &str, tenant: &str) -> (Self, u8);
}

impl ConnectAs for V311 {
    async fn connect(port: u16, id: &str, tenant: &str) -> (Self, u8) {
        Self::connect_with(port, id, bearer(tenant), None).await
    }
}

/// An MQTT 5 client `id` of `tenant` (`None`: credentials the guard refuses).
async fn v5(port: u16, id: &str, tenant: Option<&str>) -> (RawMqtt, ConnAck) {
    let mut client = RawMqtt::open(port).await;
    let Packet::Connect(connect, will, _) = connect_packet(id, true, None) else {
        unreachable!()
    };
    let username = tenant.map_or("Bearer not-a-token".to_owned(), bearer);
    let login = Login {
        username,
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

#[tokio::test]
async fn sessions_per_tenant_refuse_the_next_one_and_free_their_place_when_they_end() {
    let broker = Mosquitto::start().unwrap();
    let proxy = proxy(
        &broker,
        "      limits:\n        - key: {claim: tenant}\n          sessions: 2",
    )
    .await;
    let port = proxy.port;
    let (mut a1, ack) = v5(port, "s-a1", Some("s-acme")).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let (_a2, code) = V311::connect(port, "s-a2", "s-acme").await;
    assert_eq!(code, 0);

    // A third acme session: MQTT 5 CONNACK 0x97, 3.1.1 return code 3.
    let (_, ack) = v5(port, "s-a3", Some("s-acme")).await;
    assert_eq!(ack.code, ConnectReturnCode::QuotaExceeded);
    let why = ack.properties.and_then(|p| p.reason_string).unwrap();
    assert!(
        why.contains(r#"sessions limit (2) of claim:tenant s-acme"#),
        "{why}"
    );
    let (_, code) = V311::connect(port, "s-a4", "s-acme").await;
    assert_eq!(code, 3);
    wait_for_event(&["MQTT_LIMIT_HIT", r#"claim:tenant s-acme"#, "CONNACK 0x97"]).await;

    // Another tenant connects and publishes, with either version.
    let (mut globex, ack) = v5(port, "s-g1", Some("s-globex")).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    globex.send(&qos1("tenants/s-globex/t", 1, "19")).await;
    assert!(ACCEPTED.contains(&puback(&mut globex).await.1));
    let (mut globex311, code) = V311::connect(port, "s-g2", "s-globex").await;
    assert_eq!(code, 0);
    globex311.publish("tenants/s-globex/t", 7, b"20").await;
    assert_eq!(globex311.puback().await, 7);

    // An acme session that ends frees its place: once the proxy closed it,
    // a new acme session is admitted.
    a1.send(&Packet::Disconnect(
        zilla_testkit::mqtt::packets::Disconnect {
            reason_code: zilla_testkit::mqtt::packets::DisconnectReasonCode::NormalDisconnection,
            properties: None,
        },
    ))
    .await;
    assert!(a1.closed().await.is_none());
    let (_, ack) = v5(port, "s-a3", Some("s-acme")).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
}

#[tokio::test]
async fn connects_per_tenant_are_refused_over_the_rate_and_logged_once() {
    let broker = Mosquitto::start().unwrap();
    let proxy = proxy(
        &broker,
        "      limits:\n        - key: {claim: tenant}\n          connects: {rate: 0.001, burst: 2}",
    )
    .await;
    let port = proxy.port;
    for id in ["c-a1", "c-a2"] {
        assert_eq!(
            v5(port, id, Some("c-acme")).await.1.code,
            ConnectReturnCode::Success
        );
    }
    let (_, ack) = v5(port, "c-a3", Some("c-acme")).await;
    assert_eq!(ack.code, ConnectReturnCode::ConnectionRateExceeded);
    let (_, code) = V311::connect(port, "c-a4", "c-acme").await;
    assert_eq!(code, 3);
    // Two hits, one event (logged before the CONNACK is written).
    assert_eq!(events(&["MQTT_LIMIT_HIT", "claim:tenant c-acme"]), 1);
    assert_eq!(events(&["MQTT_CONNECT_REJECTED", "c-a3"]), 0);
    // Another tenant is not slowed.
    assert_eq!(
        v5(port, "c-g1", Some("c-globex")).await.1.code,
        ConnectReturnCode::Success
    );
    assert_eq!(V311::connect(port, "c-g2", "c-globex").await.1, 0);
}

#[tokio::test]
async fn connects_per_source_address_are_refused_before_the_guard_is_asked() {
    let broker = Mosquitto::start().unwrap();
    let proxy = proxy(
        &broker,
        "      limits:\n        - key: source-address\n          connects: {rate: 0.001, burst: 3}",
    )
    .await;
    let port = proxy.port;
    assert_eq!(
        v5(port, "a-1", Some("a-acme")).await.1.code,
        ConnectReturnCode::Success
    );
    assert_eq!(V311::connect(port, "a-2", "a-globex").await.1, 0);
    // A bad token is refused for itself (0x86) while under the rate...
    assert_eq!(
        v5(port, "a-3", None).await.1.code,
        ConnectReturnCode::BadUserNamePassword
    );
    // ...and for the rate (0x9F) above it: the guard was not asked.
    assert_eq!(
        v5(port, "a-4", None).await.1.code,
        ConnectReturnCode::ConnectionRateExceeded
    );
    assert_eq!(V311::connect(port, "a-5", "a-acme").await.1, 3);
    wait_for_event(&[
        "MQTT_LIMIT_HIT",
        r#"connects limit (0.001/s, burst 3) of source-address 127.0.0.1"#,
    ])
    .await;
}

#[tokio::test]
async fn publishes_over_a_tenants_rate_wait_while_other_tenants_go_on() {
    let broker = Mosquitto::start().unwrap();
    let proxy = proxy(
        &broker,
        "      limit-wait: 60\n      limits:\n        - key: {claim: tenant}\n          publishes: {rate: 5, burst: 1}",
    )
    .await;
    let port = proxy.port;

    // MQTT 5: six publishes at once go at five a second, all acknowledged.
    let (mut acme, _) = v5(port, "p-a1", Some("p-acme")).await;
    let (mut globex, _) = v5(port, "p-g1", Some("p-globex")).await;
    let start = Instant::now();
    for pkid in 1..=6 {
        acme.send(&qos1("tenants/p-acme/t", pkid, "m")).await;
    }
    globex.send(&qos1("tenants/p-globex/t", 1, "m")).await;
    assert_eq!(puback(&mut globex).await.0, 1);
    let globex_acked = start.elapsed();
    for pkid in 1..=6 {
        let (id, reason, _) = puback(&mut acme).await;
        assert_eq!(id, pkid);
        assert!(ACCEPTED.contains(&reason));
    }
    let acme_acked = start.elapsed();
    assert!(acme_acked >= Duration::from_millis(900), "{acme_acked:?}");
    assert!(globex_acked < acme_acked, "{globex_acked:?} {acme_acked:?}");
    wait_for_event(&[
        "MQTT_LIMIT_HIT",
        "claim:tenant p-acme",
        "reading from the client paused",
    ])
    .await;

    // MQTT 3.1.1 likewise.
    let (mut acme, _) = V311::connect(port, "p-a2", "p-acme").await;
    let (mut globex, _) = V311::connect(port, "p-g2", "p-globex").await;
    let start = Instant::now();
    for pkid in 1..=6 {
        acme.publish("tenants/p-acme/t", pkid, b"m").await;
    }
    globex.publish("tenants/p-globex/t", 1, b"m").await;
    assert_eq!(globex.puback().await, 1);
    let globex_acked = start.elapsed();
    for pkid in 1..=6 {
        assert_eq!(acme.puback().await, pkid);
    }
    let acme_acked = start.elapsed();
    assert!(acme_acked >= Duration::from_millis(900), "{acme_acked:?}");
    assert!(globex_acked < acme_acked, "{globex_acked:?} {acme_acked:?}");
}

#[tokio::test]
async fn publishes_still_over_the_rate_after_limit_wait_are_refused() {
    let broker = Mosquitto::start().unwrap();
    let proxy = proxy(
        &broker,
        "      limit-wait: 1\n      limits:\n        - key: {claim: tenant}\n          publishes: {rate: 0.01, burst: 2}",
    )
    .await;
    let port = proxy.port;

    // MQTT 5: the third waits a second, then PUBACK 0x97 with why.
    let (mut acme, _) = v5(port, "r-a1", Some("r-acme")).await;
    let start = Instant::now();
    for pkid in 1..=3 {
        acme.send(&qos1("tenants/r-acme/t", pkid, "m")).await;
    }
    for _ in 1..=2 {
        assert!(ACCEPTED.contains(&puback(&mut acme).await.1));
    }
    let (pkid, reason, why) = puback(&mut acme).await;
    assert_eq!((pkid, reason), (3, PubAckReason::QuotaExceeded));
    assert_eq!(
        why,
        r#"publishes limit (0.01/s, burst 2) of claim:tenant r-acme exceeded"#
    );
    assert!(start.elapsed() >= Duration::from_millis(900));
    // Now refused at once, QoS 2 with PUBREC 0x97; the session goes on.
    acme.send(&publish("tenants/r-acme/t", QoS::ExactlyOnce, 4, "m"))
        .await;
    match acme.recv().await {
        Some(Packet::PubRec(rec)) => assert_eq!(rec.reason, PubRecReason::QuotaExceeded),
        other => panic!("expected PUBREC 0x97, got {other:?}"),
    }
    let (mut globex, _) = v5(port, "r-g1", Some("r-globex")).await;
    globex.send(&qos1("tenants/r-globex/t", 1, "m")).await;
    assert!(ACCEPTED.contains(&puback(&mut globex).await.1));

    // MQTT 3.1.1 has no negative PUBACK: after the wait, the connection
    // closes. The tenant's tokens are still used up; another's are not.
    let (mut acme, code) = V311::connect(port, "r-a2", "r-acme").await;
    assert_eq!(code, 0);
    acme.publish("tenants/r-acme/t", 1, b"m").await;
    assert!(acme.closed().await);
    let (mut globex, _) = V311::connect(port, "r-g2", "r-globex").await;
    globex.publish("tenants/r-globex/t", 1, b"m").await;
    assert_eq!(globex.puback().await, 1);
    wait_for_event(&["MQTT_SESSION_REFUSED", "r-a2", "DISCONNECT 0x96"]).await;
}

#[tokio::test]
async fn payload_bytes_per_session() {
    let broker = Mosquitto::start().unwrap();
    let proxy = proxy(
        &broker,
        "      limit-wait: 0\n      limits:\n        - key: session\n          bytes: {rate: 1, burst: 100}",
    )
    .await;
    let port = proxy.port;
    let (mut first, _) = v5(port, "b-1", Some("b-acme")).await;
    first
        .send(&qos1("tenants/b-acme/t", 1, vec![b'x'; 60]))
        .await;
    assert!(ACCEPTED.contains(&puback(&mut first).await.1));
    first
        .send(&qos1("tenants/b-acme/t", 2, vec![b'x'; 60]))
        .await;
    assert_eq!(puback(&mut first).await.1, PubAckReason::QuotaExceeded);
    first
        .send(&qos1("tenants/b-acme/t", 3, vec![b'x'; 200]))
        .await;
    let (_, reason, why) = puback(&mut first).await;
    assert_eq!(reason, PubAckReason::QuotaExceeded);
    assert!(why.starts_with("payload larger than the burst"), "{why}");
    // Another session of the same tenant has its own bytes.
    let (mut second, _) = v5(port, "b-2", Some("b-acme")).await;
    second
        .send(&qos1("tenants/b-acme/t", 1, vec![b'x'; 60]))
        .await;
    assert!(ACCEPTED.contains(&puback(&mut second).await.1));
    // 3.1.1: a payload that can never pass closes the connection.
    let (mut old, _) = V311::connect(port, "b-3", "b-acme").await;
    old.publish("tenants/b-acme/t", 1, &[b'x'; 200]).await;
    assert!(old.closed().await);
}

#[tokio::test]
async fn subscriptions_and_topic_sizes_per_session() {
    let broker = Mosquitto::start().unwrap();
    let proxy = proxy(
        &broker,
        "      limits:\n        - key: session\n          subscriptions: 2\n          topic: {length: 64, levels: 4}",
    )
    .await;
    let port = proxy.port;
    let filters = ["tenants/q-acme/a", "tenants/q-acme/b", "tenants/q-acme/c"];

    let (mut client, _) = v5(port, "q-1", Some("q-acme")).await;
    client
        .send(&Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: filters
                .iter()
                .map(|path| Filter {
                    path: (*path).into(),
                    qos: QoS::AtLeastOnce,
                    nolocal: false,
                    preserve_retain: false,
                    retain_forward_rule: RetainForwardRule::OnEverySubscribe,
                })
                .collect(),
            properties: None,
        }))
        .await;
    match client.recv().await {
        Some(Packet::SubAck(ack)) => assert_eq!(
            ack.return_codes,
            vec![
                SubscribeReasonCode::Success(QoS::AtLeastOnce),
                SubscribeReasonCode::Success(QoS::AtLeastOnce),
                SubscribeReasonCode::QuotaExceeded,
            ]
        ),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    client
        .send(&zilla_testkit::mqtt::subscribe_packet(
            2,
            "tenants/q-acme/a/b/c",
            QoS::AtLeastOnce,
        ))
        .await;
    match client.recv().await {
        Some(Packet::SubAck(ack)) => {
            assert_eq!(
                ack.return_codes,
                vec![SubscribeReasonCode::TopicFilterInvalid]
            )
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
    client.send(&qos1("tenants/q-acme/a/b/c", 3, "deep")).await;
    let (_, reason, why) = puback(&mut client).await;
    assert_eq!(reason, PubAckReason::TopicNameInvalid);
    assert!(why.contains("topic-levels limit (4)"), "{why}");

    // 3.1.1: SUBACK 0x80 for the filter beyond the quota; a publish beyond
    // the topic limits closes the connection.
    let (mut old, _) = V311::connect(port, "q-2", "q-acme").await;
    let mut subscribe = v4::Subscribe::new_many(filters.iter().map(|path| {
        v4::SubscribeFilter::new((*path).into(), rumqttc::mqttbytes::QoS::AtLeastOnce)
    }));
    subscribe.pkid = 1;
    old.send(|out| subscribe.write(out)).await;
    match old.recv().await {
        Some(v4::Packet::SubAck(ack)) => {
            let mut out = BytesMut::new();
            ack.write(&mut out).unwrap();
            assert_eq!(&out[4..], &[0x01, 0x01, 0x80]);
        }
        other => panic!("expected a 3.1.1 SUBACK, got {other:?}"),
    }
    old.publish("tenants/q-acme/a/b/c", 4, b"deep").await;
    assert!(old.closed().await);
}

#[tokio::test]
async fn the_tenants_example_holds_each_session_to_its_topic_limits() {
    let broker = Mosquitto::start().unwrap();
    let port = broker.port();
    let yaml = example()
        .replace("port: 7183", "port: 0")
        .replace("type: stdout", "type: capture");
    let proxy = Proxy::start_with(Engine::from_yaml(yaml).env(move |name| match name {
        "ACME_BROKER_HOST" | "GLOBEX_BROKER_HOST" => Some("127.0.0.1".into()),
        "ACME_BROKER_PORT" | "GLOBEX_BROKER_PORT" => Some(port.to_string()),
        _ => None,
    }))
    .await;
    let (mut acme, ack) = v5(proxy.port, "example-acme", Some("acme")).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    acme.send(&qos1("tenants/acme/1/2/3/4/5/6/7", 1, "deep"))
        .await;
    assert_eq!(puback(&mut acme).await.1, PubAckReason::TopicNameInvalid);
    acme.send(&qos1("tenants/acme/temp", 2, "21")).await;
    assert!(ACCEPTED.contains(&puback(&mut acme).await.1));
}

#[tokio::test]
async fn a_reload_applies_new_limits_to_new_sessions_and_keeps_the_stores_counts() {
    let broker = Mosquitto::start().unwrap();
    let limits = |store: &str, extra: &str| {
        format!(
            "{store}      limits:\n        - key: {{claim: tenant}}\n          sessions: 1{extra}"
        )
    };
    for (store, kept) in [("      store: memory0\n", true), ("", false)] {
        let tenant = if kept { "h-store" } else { "h-own" };
        let first = Proxy::start(&config(broker.port(), &limits(store, ""))).await;
        let (_held, ack) = v5(first.port, &format!("{tenant}-1"), Some(tenant)).await;
        assert_eq!(ack.code, ConnectReturnCode::Success);
        // The reload adds a connect rate: one CONNECT, then none for a while.
        let reloaded = limits(store, "\n          connects: {rate: 0.001, burst: 1}");
        let second = Proxy::start_with(
            Engine::from_yaml(config(broker.port(), &reloaded)).handover(first.engine.handover()),
        )
        .await;
        assert_eq!(second.port, first.port, "the same listener");
        first.engine.stop_accepting();
        // With the store, the session of the replaced configuration still
        // counts: the tenant is at its limit. Without, the new server counts
        // from zero: the tenant has two sessions until the old one ends.
        let (_, ack) = v5(second.port, &format!("{tenant}-2"), Some(tenant)).await;
        let expected = if kept {
            ConnectReturnCode::QuotaExceeded
        } else {
            ConnectReturnCode::Success
        };
        assert_eq!(ack.code, expected, "{tenant}");
        // The new limit applies to new sessions.
        let (_, ack) = v5(second.port, &format!("{tenant}-3"), Some(tenant)).await;
        assert_eq!(ack.code, ConnectReturnCode::ConnectionRateExceeded);
    }
}

#[test]
fn misplaced_limits_are_configuration_errors_with_their_line() {
    let yaml = config(
        1883,
        "      limits:\n        - key: {claim: tenant}\n          sessions: 10\n        - key: session\n          sessions: 1",
    );
    let errors = Engine::from_yaml(yaml)
        .build()
        .expect_err("refused")
        .to_string();
    assert!(
        errors.contains("north_mqtt_server.options.limits[1].sessions: counts the sessions of one key value, not of a session"),
        "{errors}"
    );
    assert!(errors.contains("line "), "{errors}");
}
