//! `mqtt.*` metrics counted by the state machine: driven with bytes and the
//! fake clock like every other behaviour, then read the way a scrape does.

use std::time::Duration;

use mqtt_bytes_v5::{PubAck, PubAckReason, SubAck, SubscribeReasonCode};
use zilla_engine::telemetry::metrics::{
    registered_metrics, BindingMetrics, Metrics, Series, Value,
};

use super::*;
use crate::metrics::{family, SessionMetrics};

fn find<'a>(series: &'a [Series], name: &str, labels: &[(&str, &str)]) -> Option<&'a Value> {
    series
        .iter()
        .find(|s| {
            s.metric.name == name
                && labels
                    .iter()
                    .all(|(label, value)| s.label(label) == Some(*value))
        })
        .map(|s| &s.value)
}

fn counter(series: &[Series], name: &str, labels: &[(&str, &str)]) -> u64 {
    match find(series, name, labels) {
        Some(Value::Counter(count)) => *count,
        other => panic!("{name} {labels:?}: {other:?}"),
    }
}

fn gauge(series: &[Series], name: &str) -> i64 {
    match find(series, name, &[]) {
        Some(Value::Gauge(value)) => *value,
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn the_session_counts_what_it_handles() {
    let config = Server {
        routes: NORTH_ROUTES,
        exit: Some("south"),
        validate: vec![("north/#", OnInvalid::Reject)],
        ..Server::default()
    }
    .build();
    let registry = Metrics::new();
    let mqtt = registered_metrics()
        .into_iter()
        .filter(|m| m.name.starts_with("mqtt."))
        .collect();
    let binding = BindingMetrics::new(&registry, "test", "mqtt_server0", mqtt);
    let family = family(&binding, &config.routes, &config.topics, &config.limits);
    assert!(family.is_some());

    let mut h = Opening::new(config, Version::V5).start();
    h.connack();
    let mut metrics = SessionMetrics::open(&family);
    metrics.connect_read(h.now, true);
    metrics.connack_sent(ConnectReturnCode::Success, h.now + Duration::from_millis(3));
    metrics.admitted(h.exits.iter().map(String::as_str));
    h.session.set_metrics(metrics);
    let north = h.exits.iter().position(|e| e == "north").unwrap();
    let south = 1 - north;

    // QoS 1 to north, acknowledged 4 ms later; QoS 0 to south; an invalid
    // payload refused with PUBACK 0x99.
    h.client(Packet::Publish(publish(
        "north/a",
        QoS::AtLeastOnce,
        1,
        b"hello",
    )))
    .unwrap();
    let sent = one_publish(h.take_upstream(north));
    h.now += Duration::from_millis(4);
    h.upstream(
        north,
        Packet::PubAck(PubAck {
            pkid: sent.pkid,
            reason: PubAckReason::Success,
            properties: None,
        }),
    )
    .unwrap();
    h.client(Packet::Publish(publish(
        "south/b",
        QoS::AtMostOnce,
        0,
        b"hi",
    )))
    .unwrap();
    h.client(Packet::Publish(publish(
        "north/a",
        QoS::AtLeastOnce,
        2,
        b"bad",
    )))
    .unwrap();
    // A granted subscription, and a delivery from south.
    h.client(subscribe(3, &["north/#"])).unwrap();
    let Packet::Subscribe(upstream_subscribe) = one(h.take_upstream(north)) else {
        panic!("a SUBSCRIBE upstream");
    };
    h.upstream(
        north,
        Packet::SubAck(SubAck {
            pkid: upstream_subscribe.pkid,
            return_codes: vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)],
            properties: None,
        }),
    )
    .unwrap();
    h.upstream(
        south,
        Packet::Publish(publish("south/c", QoS::AtMostOnce, 0, b"abcd")),
    )
    .unwrap();

    let series = registry.collect();
    assert_eq!(gauge(&series, "mqtt.sessions.active"), 1);
    assert_eq!(
        counter(&series, "mqtt.connects", &[("reason_code", "0x00")]),
        1
    );
    assert_eq!(
        counter(&series, "mqtt.publishes.received", &[("qos", "1")]),
        2
    );
    assert_eq!(
        counter(&series, "mqtt.publishes.received", &[("qos", "0")]),
        1
    );
    assert_eq!(counter(&series, "mqtt.payload.received", &[]), 10);
    assert_eq!(
        counter(&series, "mqtt.publishes.delivered", &[("qos", "0")]),
        1
    );
    assert_eq!(counter(&series, "mqtt.payload.delivered", &[]), 4);
    assert_eq!(gauge(&series, "mqtt.subscriptions.active"), 1);
    assert_eq!(
        counter(
            &series,
            "mqtt.validation.failures",
            &[("topic", "north/#"), ("model", "not-bad")]
        ),
        1
    );
    assert_eq!(
        counter(
            &series,
            "mqtt.refusals",
            &[("packet", "PUBACK"), ("reason_code", "0x99")]
        ),
        1
    );
    let Some(Value::Histogram(acks)) =
        find(&series, "mqtt.publish.ack.duration", &[("exit", "north")])
    else {
        panic!("an acknowledgement histogram for north");
    };
    assert_eq!(acks.count(), 1);
    assert!((acks.sum - 0.004).abs() < 1e-9, "{}", acks.sum);
    let Some(Value::Histogram(connects)) = find(&series, "mqtt.connect.duration", &[]) else {
        panic!("a connect histogram");
    };
    assert_eq!(connects.count(), 1);

    // Taken over: the session ends, its counts stay, its gauges go.
    h.finish(End::TakenOver);
    drop(h);
    let series = registry.collect();
    assert_eq!(gauge(&series, "mqtt.sessions.active"), 0);
    assert_eq!(gauge(&series, "mqtt.subscriptions.active"), 0);
    assert_eq!(counter(&series, "mqtt.takeovers", &[]), 1);
    assert_eq!(counter(&series, "mqtt.wills.released", &[]), 1);
    assert_eq!(
        counter(
            &series,
            "mqtt.refusals",
            &[("packet", "DISCONNECT"), ("reason_code", "0x8E")]
        ),
        1
    );
    assert_eq!(
        counter(&series, "mqtt.upstream.sessions", &[("exit", "north")]),
        0,
        "the driver records upstream opens, not this test"
    );
    assert_eq!(
        counter(&series, "mqtt.publishes.received", &[("qos", "1")]),
        2
    );
}

#[test]
fn without_mqtt_metrics_nothing_is_allocated() {
    let config = Server::default().build();
    let registry = Metrics::new();
    let binding = BindingMetrics::new(&registry, "test", "mqtt_server0", Vec::new());
    assert!(family(&binding, &config.routes, &config.topics, &config.limits).is_none());
    let mut h = Opening::new(config, Version::V4).start();
    h.connack();
    h.session.set_metrics(SessionMetrics::open(&None));
    h.client(Packet::Publish(publish("a", QoS::AtMostOnce, 0, b"x")))
        .unwrap();
    assert!(registry.collect().is_empty());
}
