//! Publish rates of `options.limits`, per session and per key, on the fake
//! clock: a publish over its rate waits with reading paused, until its
//! tokens are due; a client over its rate for `limit-wait` is refused
//! (MQTT 5: PUBACK/PUBREC 0x97, QoS 0 dropped; 3.1.1: connection closed).

use mqtt_bytes_v5::{PubAck, PubAckReason, PubRec, PubRecReason};
use zilla_engine::telemetry::metrics::{registered_metrics, BindingMetrics, Metrics, Value};

use super::quotas::client;
use super::*;
use crate::metrics::{family, SessionMetrics};

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

/// A `version` session limited by `limits` (no guard) and `limit-wait`.
fn session(version: Version, limits: &'static str, wait: u32) -> Harness {
    let config = Server {
        limits,
        limit_wait: Some(wait),
        ..Server::default()
    }
    .build();
    let mut h = Opening::new(config, version).start();
    h.connack();
    h
}

/// A QoS 1 publish with packet id `pkid`, which is also its payload.
fn qos1(pkid: u16) -> Packet {
    sized(pkid, 0)
}

/// A QoS 1 publish with packet id `pkid`, its payload `pkid` padded with
/// spaces to `size` bytes.
fn sized(pkid: u16, size: usize) -> Packet {
    let mut publish = publish("a", QoS::AtLeastOnce, pkid, b"");
    publish.payload = Bytes::from(format!("{pkid:<size$}"));
    Packet::Publish(publish)
}

/// The client packet ids (payloads) of the publishes queued for upstream 0
/// (which numbers them its own way); PINGREQs answered.
fn forwarded(h: &mut Harness) -> Vec<u16> {
    let mut ids = Vec::new();
    for packet in h.take_upstream(0) {
        match packet {
            Packet::Publish(publish) => ids.push(
                std::str::from_utf8(&publish.payload)
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap(),
            ),
            Packet::PingReq(_) => h
                .upstream(0, Packet::PingResp(mqtt_bytes_v5::PingResp))
                .unwrap(),
            other => panic!("a PUBLISH: {other:?}"),
        }
    }
    ids
}

/// The one PUBACK queued for the client: (packet id, reason, reason string).
fn puback_of(h: &mut Harness) -> (u16, PubAckReason, String) {
    match one(h.take_client()) {
        Packet::PubAck(PubAck {
            pkid,
            reason,
            properties,
        }) => (
            pkid,
            reason,
            properties.and_then(|p| p.reason_string).unwrap_or_default(),
        ),
        other => panic!("a PUBACK: {other:?}"),
    }
}

#[test]
fn a_publish_over_the_rate_waits_with_reading_paused_until_its_token() {
    for version in [Version::V5, Version::V4] {
        let mut h = session(
            version,
            "- {key: session, publishes: {rate: 10, burst: 2}}",
            5,
        );
        // Two publishes and a third in one read: the burst goes, the third
        // waits (held), the fourth stays unread in the buffer.
        let mut bytes = BytesMut::new();
        for pkid in 1..=4 {
            codec::write(&qos1(pkid), version, &mut bytes).unwrap();
        }
        h.session.on_client_bytes(h.now, &mut bytes).unwrap();
        assert_eq!(forwarded(&mut h), vec![1, 2]);
        assert!(!h.session.wants_client_input(), "reading paused");
        assert!(!bytes.is_empty(), "the fourth stays unread");
        assert_eq!(h.session.poll_timeout(), Some(h.now + 100 * MS));
        h.advance(99 * MS).unwrap();
        assert!(forwarded(&mut h).is_empty());
        h.advance(MS).unwrap();
        assert_eq!(forwarded(&mut h), vec![3]);
        assert!(h.session.wants_client_input());
        // The driver then feeds what waited in its buffer: held again.
        h.session.resume_client_input(&mut bytes).unwrap();
        assert!(bytes.is_empty());
        assert!(!h.session.wants_client_input());
        h.advance(100 * MS).unwrap();
        assert_eq!(forwarded(&mut h), vec![4]);
        assert!(h.take_client().is_empty(), "no refusal: only a delay");
    }
}

#[test]
fn a_paused_session_is_not_timed_out_for_keep_alive() {
    let mut h = session(
        Version::V5,
        "- {key: session, publishes: {rate: 0.005, burst: 1}}",
        600,
    );
    h.client(qos1(1)).unwrap();
    h.client(qos1(2)).unwrap();
    assert_eq!(forwarded(&mut h), vec![1]);
    assert!(!h.session.wants_client_input());
    // Keep-alive is 60 s (90 s with its grace); the client is silent
    // because the proxy does not read it (its token is due in 200 s).
    for _ in 0..15 {
        h.advance(10 * S).unwrap();
        // The brokers are pinged and answer; only the client is silent.
        assert!(forwarded(&mut h).is_empty());
    }
}

#[test]
fn a_5_0_client_over_its_rate_for_limit_wait_gets_0x97_and_its_qos0_publishes_are_dropped() {
    let mut h = session(
        Version::V5,
        "- {key: session, publishes: {rate: 10, burst: 1}}",
        1,
    );
    h.client(qos1(1)).unwrap();
    assert_eq!(forwarded(&mut h), vec![1]);
    // Back to back over the rate: each publish waits 100 ms; after one
    // second of waiting, the pause budget is used up.
    for pkid in 2..=11 {
        h.client(qos1(pkid)).unwrap();
        assert!(!h.session.wants_client_input());
        h.advance(100 * MS).unwrap();
        assert_eq!(forwarded(&mut h), vec![pkid]);
    }
    h.client(qos1(12)).unwrap();
    let (pkid, reason, why) = puback_of(&mut h);
    assert_eq!((pkid, reason), (12, PubAckReason::QuotaExceeded));
    assert_eq!(
        why,
        "publishes limit (10/s, burst 1) of the session exceeded"
    );
    assert!(h.session.wants_client_input(), "reading goes on");
    h.client(Packet::Publish(publish("a", QoS::ExactlyOnce, 13, b"m")))
        .unwrap();
    let Packet::PubRec(PubRec {
        pkid: 13, reason, ..
    }) = one(h.take_client())
    else {
        panic!("a PUBREC")
    };
    assert_eq!(reason, PubRecReason::QuotaExceeded);
    h.client(Packet::Publish(publish("a", QoS::AtMostOnce, 0, b"q0")))
        .unwrap();
    assert!(
        h.take_client().is_empty() && forwarded(&mut h).is_empty(),
        "dropped"
    );
    // Publishes within the rate still pass while it refuses the rest.
    h.advance(100 * MS).unwrap();
    h.client(qos1(14)).unwrap();
    assert_eq!(forwarded(&mut h), vec![14]);
    // Once the budget refilled (as long without waiting), publishes over
    // the rate wait again.
    h.advance(S).unwrap();
    h.client(qos1(15)).unwrap();
    h.client(qos1(16)).unwrap();
    assert_eq!(forwarded(&mut h), vec![15]);
    assert!(!h.session.wants_client_input());
    assert!(h.take_client().is_empty());
}

#[test]
fn a_held_publish_is_refused_when_limit_wait_passes_first() {
    for version in [Version::V5, Version::V4] {
        let mut h = session(
            version,
            "- {key: session, publishes: {rate: 0.1, burst: 1}}",
            1,
        );
        h.client(qos1(1)).unwrap();
        h.client(qos1(2)).unwrap();
        // Its token is due in 10 s; limit-wait is 1 s.
        assert_eq!(h.session.poll_timeout(), Some(h.now + S));
        let end = h.advance(S);
        match version {
            Version::V5 => {
                end.unwrap();
                assert_eq!(puback_of(&mut h).1, PubAckReason::QuotaExceeded);
                assert!(h.session.wants_client_input());
            }
            Version::V4 => {
                // No negative PUBACK in 3.1.1: the connection closes.
                assert_eq!(refused(end), DisconnectReasonCode::MessageRateTooHigh);
                let closing = h.finish(End::Refuse(
                    DisconnectReasonCode::MessageRateTooHigh,
                    String::new(),
                ));
                assert_eq!(closing, Closing::CloseClient);
                assert!(h.take_client().is_empty());
            }
        }
        assert_eq!(forwarded(&mut h), vec![1]);
    }
}

#[test]
fn no_limit_wait_refuses_at_once() {
    let mut h = session(
        Version::V5,
        "- {key: session, publishes: {rate: 1, burst: 1}}",
        0,
    );
    h.client(qos1(1)).unwrap();
    h.client(qos1(2)).unwrap();
    assert_eq!(forwarded(&mut h), vec![1]);
    assert_eq!(
        puback_of(&mut h),
        (
            2,
            PubAckReason::QuotaExceeded,
            "publishes limit (1/s, burst 1) of the session exceeded".into()
        )
    );
    assert!(h.session.wants_client_input());
}

#[test]
fn payload_bytes_wait_and_a_payload_beyond_the_burst_never_passes() {
    for version in [Version::V5, Version::V4] {
        let mut h = session(
            version,
            "- {key: session, bytes: {rate: 100, burst: 100}}",
            5,
        );
        h.client(sized(1, 60)).unwrap();
        h.client(sized(2, 60)).unwrap();
        assert_eq!(forwarded(&mut h), vec![1]);
        // 40 bytes left: 20 more are there after 200 ms.
        assert_eq!(h.session.poll_timeout(), Some(h.now + 200 * MS));
        h.advance(200 * MS).unwrap();
        assert_eq!(forwarded(&mut h), vec![2]);
        let end = h.client(sized(3, 101));
        match version {
            Version::V5 => {
                end.unwrap();
                let (pkid, reason, why) = puback_of(&mut h);
                assert_eq!((pkid, reason), (3, PubAckReason::QuotaExceeded));
                assert!(why.starts_with("payload larger than the burst"), "{why}");
            }
            Version::V4 => assert_eq!(refused(end), DisconnectReasonCode::QuotaExceeded),
        }
    }
}

#[test]
fn publishes_per_claim_are_shared_by_the_tenants_sessions_only() {
    let config = Server {
        guard: true,
        limits: "- {key: {claim: tenant}, publishes: {rate: 2, burst: 1}}\n- {key: session, publishes: {rate: 1, burst: 1}}",
        ..Server::default()
    }
    .build();
    let t0 = clock();
    let start = |id, token| {
        let mut h = client(&config, Version::V5, id, token).start_at(t0);
        h.connack();
        h
    };
    let (mut a1, mut a2, mut g1) = (
        start("a1", "d1@acme"),
        start("a2", "d2@acme"),
        start("g1", "d3@globex"),
    );
    a1.client(qos1(1)).unwrap();
    assert_eq!(forwarded(&mut a1), vec![1]);
    // The tenant's token is gone: a2 waits, globex does not.
    a2.client(qos1(1)).unwrap();
    assert!(forwarded(&mut a2).is_empty());
    g1.client(qos1(1)).unwrap();
    assert_eq!(forwarded(&mut g1), vec![1]);
    // a2's own session token was given back when the tenant's lacked, so
    // it goes as soon as the tenant's is due (500 ms), not after its own
    // second.
    assert_eq!(a2.session.poll_timeout(), Some(t0 + 500 * MS));
    a2.advance(500 * MS).unwrap();
    assert_eq!(forwarded(&mut a2), vec![1]);
}

#[test]
fn limit_hits_are_counted_by_key_limit_and_action() {
    let config = Server {
        limits: "- {key: session, publishes: {rate: 10, burst: 1}, subscriptions: 1}",
        limit_wait: Some(0),
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
    let mut h = Opening::new(config, Version::V5).start();
    h.connack();
    h.session.set_metrics(SessionMetrics::open(&family));
    for pkid in 1..=3 {
        h.client(qos1(pkid)).unwrap();
    }
    h.client(subscribe(4, &["x", "y"])).unwrap();
    let series = registry.collect();
    let count = |limit: &str, action: &str| {
        series
            .iter()
            .find(|s| {
                s.metric.name == "mqtt.limits.hits"
                    && s.label("key") == Some("session")
                    && s.label("limit") == Some(limit)
                    && s.label("action") == Some(action)
            })
            .map(|s| s.value.clone())
    };
    assert_eq!(count("publishes", "refused"), Some(Value::Counter(2)));
    assert_eq!(count("publishes", "delayed"), Some(Value::Counter(0)));
    assert_eq!(count("subscriptions", "refused"), Some(Value::Counter(1)));
    let refusals = series
        .iter()
        .find(|s| {
            s.metric.name == "mqtt.refusals"
                && s.label("packet") == Some("SUBACK")
                && s.label("reason_code") == Some("0x97")
        })
        .map(|s| s.value.clone());
    assert_eq!(refusals, Some(Value::Counter(1)));
}
