//! `options.limits` at CONNECT and on subscriptions and topics: sessions
//! and CONNECTs per key (client id, identity, claim, source address), the
//! session's subscriptions and topic sizes, for MQTT 5 and 3.1.1 clients.
//! Publish rates are in `rates.rs`.

use mqtt_bytes_v5::{
    PubAck, PubAckReason, PubRecReason, SubAck, SubscribeReasonCode, UnsubAck, UnsubAckReason,
    Unsubscribe,
};

use super::*;

/// A guarded server (tokens read `identity[:roles][@tenant]`) with `limits`.
pub(super) fn limited(limits: &'static str) -> Arc<ServerConfig> {
    Server {
        guard: true,
        limits,
        ..Server::default()
    }
    .build()
}

/// A `version` client `id` presenting `token`.
pub(super) fn client(
    config: &Arc<ServerConfig>,
    version: Version,
    id: &str,
    token: &str,
) -> Opening {
    let mut opening = Opening::new(config.clone(), version).token(token);
    opening.connect = connect(id);
    opening
}

/// The CONNACK of `refusal` as its client reads it: (return code byte,
/// decoded code).
fn on_the_wire(refusal: &Refusal) -> (u8, ConnectReturnCode) {
    let mut out = BytesMut::new();
    codec::write(
        &Packet::ConnAck(*refusal.connack.clone()),
        refusal.version,
        &mut out,
    )
    .unwrap();
    let code = match codec::read(&mut out.clone(), refusal.version, usize::MAX) {
        Ok(Some(Packet::ConnAck(ack))) => ack.code,
        other => panic!("a CONNACK: {other:?}"),
    };
    (out[3], code)
}

/// What a refused CONNECT's client sees, for each version: MQTT 5 the
/// code, 3.1.1 return code 3 (server unavailable).
fn assert_refused(refusal: Refusal, v5_code: u8) {
    let version = refusal.version;
    assert!(
        refusal.limit.is_some(),
        "logged as a limit hit: {refusal:?}"
    );
    let (byte, _) = on_the_wire(&refusal);
    match version {
        Version::V5 => assert_eq!(byte, v5_code, "{refusal:?}"),
        Version::V4 => assert_eq!(byte, 0x03, "{refusal:?}"),
    }
}

#[test]
fn sessions_per_claim_are_distinct_client_ids_and_are_freed_when_sessions_end() {
    let config = limited("- {key: {claim: tenant}, sessions: 2}");
    let a1 = client(&config, Version::V5, "a1", "d1@acme").start();
    let a2 = client(&config, Version::V4, "a2", "d2@acme").start();
    for version in [Version::V5, Version::V4] {
        let refusal = client(&config, version, "a3", "d3@acme")
            .admit()
            .err()
            .expect("refused");
        assert_eq!(refusal.connack.code, ConnectReturnCode::QuotaExceeded);
        assert!(refusal
            .why
            .contains(r#"sessions limit (2) of claim:tenant acme"#));
        assert_refused(refusal, 0x97);
    }
    // Another tenant, and a session without the claim, are not counted.
    let _globex = client(&config, Version::V5, "g1", "d4@globex").start();
    let _unclaimed = client(&config, Version::V5, "u1", "d5").start();
    // A connection taking a1's session over is the same session.
    let a1_again = client(&config, Version::V5, "a1", "d1@acme").start();
    drop(a1);
    assert!(client(&config, Version::V5, "a3", "d3@acme")
        .admit()
        .is_err());
    drop(a1_again);
    let _a3 = client(&config, Version::V5, "a3", "d3@acme").start();
    drop(a2);
}

#[test]
fn an_admission_that_never_becomes_a_session_gives_its_place_back() {
    let config = limited("- {key: {claim: tenant}, sessions: 1}");
    // Admitted, then dropped, as the driver drops it when a broker refuses.
    let admission = client(&config, Version::V5, "a1", "d1@acme").admit();
    assert!(admission.is_ok());
    assert!(client(&config, Version::V5, "a2", "d2@acme")
        .admit()
        .is_err());
    drop(admission);
    let _a2 = client(&config, Version::V5, "a2", "d2@acme").start();
}

#[test]
fn sessions_per_identity_and_per_source_address() {
    let config = limited("- {key: identity, sessions: 1}\n- {key: source-address, sessions: 2}");
    let _d1 = client(&config, Version::V5, "c1", "d1")
        .from("10.0.0.1:1000")
        .start();
    let refusal = client(&config, Version::V5, "c2", "d1")
        .from("10.0.0.2:1000")
        .admit()
        .err()
        .expect("refused");
    assert!(refusal.why.contains(r#"of identity d1"#), "{}", refusal.why);
    let _d2 = client(&config, Version::V4, "c3", "d2")
        .from("10.0.0.1:2000")
        .start();
    let refusal = client(&config, Version::V4, "c4", "d3")
        .from("10.0.0.1:3000")
        .admit()
        .err()
        .expect("refused");
    assert!(refusal.why.contains(r#"of source-address 10.0.0.1"#));
    assert_refused(refusal, 0x97);
}

#[test]
fn connects_per_source_address_are_refused_before_the_guard_is_asked() {
    let config = limited("- {key: source-address, connects: {rate: 1, burst: 2}}");
    let t0 = clock();
    for id in ["c1", "c2"] {
        let admitted = client(&config, Version::V5, id, "d1")
            .from("10.0.0.1:1000")
            .admit_at(t0);
        assert!(admitted.is_ok());
    }
    // Over the rate: 0x9F, even with credentials the guard would refuse
    // (0x86): a CONNECT flood costs no signature check.
    for version in [Version::V5, Version::V4] {
        let refusal = client(&config, version, "c3", "bad")
            .from("10.0.0.1:1000")
            .admit_at(t0)
            .err()
            .expect("refused");
        assert_eq!(
            refusal.connack.code,
            ConnectReturnCode::ConnectionRateExceeded
        );
        assert_refused(refusal, 0x9F);
    }
    // Another address has its own bucket; a second later there is a token.
    assert!(client(&config, Version::V5, "c4", "d1")
        .from("10.0.0.2:1000")
        .admit_at(t0)
        .is_ok());
    assert!(client(&config, Version::V5, "c5", "d1")
        .from("10.0.0.1:1000")
        .admit_at(t0 + Duration::from_secs(1))
        .is_ok());
    // IPv6 clients count by their /64; IPv4 mapped into IPv6 as IPv4.
    for peer in ["[2001:db8::1]:1", "[2001:db8::2]:1"] {
        assert!(client(&config, Version::V5, "c6", "d1")
            .from(peer)
            .admit_at(t0)
            .is_ok());
    }
    let refusal = client(&config, Version::V5, "c6", "d1")
        .from("[2001:db8:0:0:ffff::3]:1")
        .admit_at(t0)
        .err()
        .expect("refused");
    assert!(
        refusal.why.contains("source-address 2001:db8::/64 "),
        "{}",
        refusal.why
    );
    let refusal = client(&config, Version::V5, "c7", "d1")
        .from("[::ffff:10.0.0.1]:1")
        .admit_at(t0)
        .err()
        .expect("refused");
    assert!(
        refusal.why.contains("source-address 10.0.0.1 "),
        "{}",
        refusal.why
    );
}

#[test]
fn connects_per_claim_leave_other_tenants_alone() {
    let config = limited("- {key: {claim: tenant}, connects: {rate: 0.5, burst: 1}}");
    let t0 = clock();
    assert!(client(&config, Version::V5, "a1", "d1@acme")
        .admit_at(t0)
        .is_ok());
    // Credentials the guard refuses are refused for themselves, and cost
    // the tenant nothing (the claim comes from the guard).
    let refusal = client(&config, Version::V5, "a2", "bad")
        .admit_at(t0)
        .err()
        .expect("refused");
    assert_eq!(refusal.connack.code, ConnectReturnCode::BadUserNamePassword);
    for version in [Version::V5, Version::V4] {
        let refusal = client(&config, version, "a2", "d2@acme")
            .admit_at(t0)
            .err()
            .expect("refused");
        assert_refused(refusal, 0x9F);
    }
    assert!(client(&config, Version::V4, "g1", "d3@globex")
        .admit_at(t0)
        .is_ok());
    // One every two seconds.
    assert!(client(&config, Version::V5, "a2", "d2@acme")
        .admit_at(t0 + Duration::from_secs(2))
        .is_ok());
}

#[test]
fn connects_per_client_id_slow_a_reconnect_loop() {
    let config = Server {
        limits: "- {key: client-id, connects: {rate: 1, burst: 1}}",
        ..Server::default()
    }
    .build();
    let t0 = clock();
    let mut sensor = Opening::new(config.clone(), Version::V4);
    assert!(sensor.admit_at(t0).is_ok());
    assert_refused(sensor.admit_at(t0).err().expect("refused"), 0x9F);
    let mut other = Opening::new(config, Version::V4);
    other.connect = connect("c2");
    assert!(other.admit_at(t0).is_ok());
}

/// A session with `subscriptions: 2` and topics of at most 16 bytes and 3
/// levels.
fn quota_session(version: Version) -> Harness {
    let config = Server {
        limits: "- {key: session, subscriptions: 2, topic: {length: 16, levels: 3}}",
        ..Server::default()
    }
    .build();
    let mut h = Opening::new(config, version).start();
    h.connack();
    h
}

/// The broker's SUBACK granting everything in the upstream SUBSCRIBE it got.
fn grant_all(h: &mut Harness) {
    for packet in h.take_upstream(0) {
        let Packet::Subscribe(subscribe) = packet else {
            panic!("a SUBSCRIBE: {packet:?}")
        };
        let codes = vec![SubscribeReasonCode::Success(QoS::AtLeastOnce); subscribe.filters.len()];
        h.upstream(
            0,
            Packet::SubAck(SubAck {
                pkid: subscribe.pkid,
                return_codes: codes,
                properties: None,
            }),
        )
        .unwrap();
    }
}

fn suback_codes(h: &mut Harness) -> Vec<SubscribeReasonCode> {
    match one(h.take_client()) {
        Packet::SubAck(ack) => ack.return_codes,
        other => panic!("a SUBACK: {other:?}"),
    }
}

#[test]
fn filters_beyond_the_subscriptions_quota_get_0x97_and_3_1_1_0x80() {
    const GRANTED: SubscribeReasonCode = SubscribeReasonCode::Success(QoS::AtLeastOnce);
    for version in [Version::V5, Version::V4] {
        let mut h = quota_session(version);
        h.client(subscribe(1, &["a", "b", "c"])).unwrap();
        grant_all(&mut h);
        let refused = match version {
            Version::V5 => SubscribeReasonCode::QuotaExceeded,
            // 3.1.1 has one failure code, 0x80, read back as unspecified.
            Version::V4 => SubscribeReasonCode::Unspecified,
        };
        assert_eq!(suback_codes(&mut h), vec![GRANTED, GRANTED, refused]);
        // A filter already held is replaced, not added.
        h.client(subscribe(2, &["a"])).unwrap();
        grant_all(&mut h);
        assert_eq!(suback_codes(&mut h), vec![GRANTED]);
        // Unsubscribing makes room.
        h.client(Packet::Unsubscribe(Unsubscribe {
            pkid: 3,
            filters: vec!["b".into()],
            properties: None,
        }))
        .unwrap();
        let Packet::Unsubscribe(upstream) = one(h.take_upstream(0)) else {
            panic!("an UNSUBSCRIBE")
        };
        h.upstream(
            0,
            Packet::UnsubAck(UnsubAck {
                pkid: upstream.pkid,
                reasons: vec![UnsubAckReason::Success],
                properties: None,
            }),
        )
        .unwrap();
        h.take_client();
        h.client(subscribe(4, &["d", "e"])).unwrap();
        grant_all(&mut h);
        assert_eq!(suback_codes(&mut h), vec![GRANTED, refused]);
    }
}

#[test]
fn pipelined_subscribes_cannot_pass_the_quota_before_their_subacks() {
    let mut h = quota_session(Version::V5);
    h.client(subscribe(1, &["a", "b"])).unwrap();
    // Before the broker answered, another SUBSCRIBE: its filter is refused
    // by the proxy at once, as the first two are reserved.
    h.client(subscribe(2, &["c"])).unwrap();
    assert_eq!(
        suback_codes(&mut h),
        vec![SubscribeReasonCode::QuotaExceeded]
    );
    // A filter the broker refuses is not held: its place is free again.
    let Packet::Subscribe(upstream) = one(h.take_upstream(0)) else {
        panic!("a SUBSCRIBE")
    };
    h.upstream(
        0,
        Packet::SubAck(SubAck {
            pkid: upstream.pkid,
            return_codes: vec![
                SubscribeReasonCode::Success(QoS::AtLeastOnce),
                SubscribeReasonCode::NotAuthorized,
            ],
            properties: None,
        }),
    )
    .unwrap();
    h.take_client();
    h.client(subscribe(3, &["c"])).unwrap();
    grant_all(&mut h);
    assert_eq!(
        suback_codes(&mut h),
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
}

#[test]
fn topics_beyond_the_topic_limits_are_refused_per_packet_where_mqtt_can_answer() {
    let long = "abcdefghijklmnopq"; // 17 bytes
    let deep = "a/b/c/d";
    for version in [Version::V5, Version::V4] {
        let mut h = quota_session(version);
        // SUBSCRIBE: 0x8F for that filter (3.1.1: 0x80); `$share/g/` is
        // not a level of the filter.
        h.client(subscribe(1, &[long, deep, "a/b/#", "$share/g/a/b/c"]))
            .unwrap();
        grant_all(&mut h);
        let invalid = match version {
            Version::V5 => SubscribeReasonCode::TopicFilterInvalid,
            Version::V4 => SubscribeReasonCode::Unspecified,
        };
        let granted = SubscribeReasonCode::Success(QoS::AtLeastOnce);
        assert_eq!(
            suback_codes(&mut h),
            vec![invalid, invalid, granted, granted]
        );
        // Within the limits, a publish goes on.
        h.client(Packet::Publish(publish("a/b/c", QoS::AtLeastOnce, 1, b"x")))
            .unwrap();
        assert_eq!(h.take_upstream(0).len(), 1);
        match version {
            Version::V5 => {
                // QoS 1/2: PUBACK/PUBREC 0x90 with a reason string.
                h.client(Packet::Publish(publish(long, QoS::AtLeastOnce, 2, b"x")))
                    .unwrap();
                let Packet::PubAck(PubAck {
                    reason, properties, ..
                }) = one(h.take_client())
                else {
                    panic!("a PUBACK")
                };
                assert_eq!(reason, PubAckReason::TopicNameInvalid);
                let why = properties.and_then(|p| p.reason_string).unwrap();
                assert!(why.contains("topic-length limit (16 bytes)"), "{why}");
                h.client(Packet::Publish(publish(deep, QoS::ExactlyOnce, 3, b"x")))
                    .unwrap();
                let Packet::PubRec(rec) = one(h.take_client()) else {
                    panic!("a PUBREC")
                };
                assert_eq!(rec.reason, PubRecReason::TopicNameInvalid);
                assert!(h.take_upstream(0).is_empty());
                // QoS 0 has no answer: DISCONNECT 0x90, as for a topic no
                // route could take.
                let end = h.client(Packet::Publish(publish(deep, QoS::AtMostOnce, 0, b"x")));
                assert_eq!(refused(end), DisconnectReasonCode::TopicNameInvalid);
            }
            Version::V4 => {
                // 3.1.1 has no negative PUBACK: the connection closes.
                let end = h.client(Packet::Publish(publish(long, QoS::AtLeastOnce, 2, b"x")));
                assert_eq!(refused(end), DisconnectReasonCode::TopicNameInvalid);
                assert_eq!(
                    h.finish(End::Refuse(
                        DisconnectReasonCode::TopicNameInvalid,
                        String::new()
                    )),
                    Closing::CloseClient
                );
                assert!(h.take_client().is_empty(), "no DISCONNECT in 3.1.1");
            }
        }
    }
}

#[test]
fn a_will_topic_beyond_the_topic_limits_refuses_the_connect() {
    let config = Server {
        limits: "- {key: session, topic: {levels: 2}}",
        ..Server::default()
    }
    .build();
    for version in [Version::V5, Version::V4] {
        let mut opening = Opening::new(config.clone(), version);
        opening.will = Some(LastWill {
            topic: Bytes::from_static(b"a/b/c"),
            message: Bytes::from_static(b"gone"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: None,
        });
        let refusal = opening.admit().err().expect("refused");
        assert_eq!(refusal.connack.code, ConnectReturnCode::TopicNameInvalid);
        assert_refused(refusal, 0x90);
    }
}
