//! What a client is told for a publish or a subscription no route takes:
//! a per-packet answer wherever MQTT has one (SUBACK per filter, PUBACK or
//! PUBREC in 5.0), the session ending only where it has none; and the
//! session-level rules the codec cannot see (session expiry at DISCONNECT).

use mqtt_bytes_v5::{
    Disconnect, DisconnectProperties, PubAck, PubAckReason, PubRec, PubRecReason, SubAck,
    SubscribeReasonCode,
};

use super::*;

/// One broker, no default exit: publishes to `a/#` and subscriptions to
/// `a/#` anyone may make, `secret/#` only with the `admin` role.
fn routes_a(version: Version) -> Harness {
    let config = Server {
        routes: r#"
- exit: north
  when:
    - publish: [{topic: "a/#"}]
      subscribe: [{topic: "a/#"}]
- exit: north
  roles: [admin]
  when:
    - publish: [{topic: "secret/#"}]
      subscribe: [{topic: "secret/#"}]
"#,
        exit: None,
        guard: true,
        ..Server::default()
    }
    .build();
    let mut h = Opening::new(config, version).token("bob:").start();
    h.connack();
    h
}

const GRANTED: SubscribeReasonCode = SubscribeReasonCode::Success(QoS::AtLeastOnce);

#[test]
fn each_filter_gets_its_own_answer_and_the_session_goes_on() {
    for version in [Version::V5, Version::V4] {
        let mut h = routes_a(version);
        // `#`, `+/+/#` and `tenants/#` reach beyond every route; `secret/x`
        // is a route's, but not for this token.
        h.client(subscribe(
            9,
            &["#", "a/1", "+/+/#", "secret/x", "tenants/#"],
        ))
        .unwrap_or_else(|end| panic!("{version:?}: the session ended: {end:?}"));
        assert_eq!(
            h.take_upstream(0),
            vec![subscribe(1, &["a/1"])],
            "{version:?}: only the routable filter goes upstream"
        );
        h.upstream(
            0,
            Packet::SubAck(SubAck {
                pkid: 1,
                return_codes: vec![GRANTED],
                properties: None,
            }),
        )
        .unwrap();
        let Packet::SubAck(ack) = one(h.take_client()) else {
            panic!("{version:?}: a SUBACK")
        };
        let invalid = SubscribeReasonCode::TopicFilterInvalid;
        let expected = match version {
            Version::V5 => vec![
                invalid,
                GRANTED,
                invalid,
                SubscribeReasonCode::NotAuthorized,
                invalid,
            ],
            // 3.1.1 has one failure code, 0x80, for all of them.
            Version::V4 => vec![
                SubscribeReasonCode::Unspecified,
                GRANTED,
                SubscribeReasonCode::Unspecified,
                SubscribeReasonCode::Unspecified,
                SubscribeReasonCode::Unspecified,
            ],
        };
        assert_eq!((ack.pkid, ack.return_codes), (9, expected), "{version:?}");
        // The session goes on.
        h.client(Packet::Publish(publish("a/1", QoS::AtMostOnce, 0, b"m")))
            .unwrap();
        assert_eq!(h.take_upstream(0).len(), 1, "{version:?}");
    }
}

#[test]
fn a_subscribe_no_filter_of_which_routes_is_answered_at_once() {
    let mut h = routes_a(Version::V5);
    h.client(subscribe(3, &["#"])).unwrap();
    assert!(h.take_upstream(0).is_empty());
    assert_eq!(
        h.take_client(),
        vec![Packet::SubAck(SubAck {
            pkid: 3,
            return_codes: vec![SubscribeReasonCode::TopicFilterInvalid],
            properties: None,
        })]
    );
}

#[test]
fn an_unroutable_qos_1_or_2_publish_of_a_5_0_client_is_refused_alone() {
    let mut h = routes_a(Version::V5);
    h.client(Packet::Publish(publish("b/1", QoS::AtLeastOnce, 4, b"m")))
        .unwrap();
    h.client(Packet::Publish(publish("b/1", QoS::ExactlyOnce, 5, b"m")))
        .unwrap();
    h.client(Packet::Publish(publish(
        "secret/1",
        QoS::AtLeastOnce,
        6,
        b"m",
    )))
    .unwrap();
    assert_eq!(
        h.take_client(),
        vec![
            Packet::PubAck(PubAck {
                pkid: 4,
                reason: PubAckReason::TopicNameInvalid,
                properties: None,
            }),
            Packet::PubRec(PubRec {
                pkid: 5,
                reason: PubRecReason::TopicNameInvalid,
                properties: None,
            }),
            Packet::PubAck(PubAck {
                pkid: 6,
                reason: PubAckReason::NotAuthorized,
                properties: None,
            }),
        ]
    );
    assert!(h.take_upstream(0).is_empty(), "nothing reached the broker");
    // The session goes on, and the packet ids are free again.
    h.client(Packet::Publish(publish("a/1", QoS::AtLeastOnce, 4, b"m")))
        .unwrap();
    assert_eq!(h.take_upstream(0).len(), 1);
}

#[test]
fn an_unroutable_publish_without_a_failure_answer_ends_the_session() {
    let cases = [
        (Version::V5, QoS::AtMostOnce),
        (Version::V4, QoS::AtMostOnce),
        (Version::V4, QoS::AtLeastOnce),
        (Version::V4, QoS::ExactlyOnce),
    ];
    for (version, qos) in cases {
        let mut h = routes_a(version);
        assert_eq!(
            refused(h.client(Packet::Publish(publish("b/1", qos, 1, b"m")))),
            DisconnectReasonCode::TopicNameInvalid,
            "{version:?} {qos:?}"
        );
        assert!(h.take_upstream(0).is_empty());
    }
}

#[test]
fn an_unauthorized_qos_0_publish_is_dropped_and_the_session_goes_on() {
    for version in [Version::V5, Version::V4] {
        let mut h = routes_a(version);
        h.client(Packet::Publish(publish(
            "secret/1",
            QoS::AtMostOnce,
            0,
            b"m",
        )))
        .unwrap();
        assert!(h.take_client().is_empty());
        assert!(h.take_upstream(0).is_empty());
    }
}

fn disconnect_with_expiry(seconds: u32) -> Packet {
    Packet::Disconnect(Disconnect {
        reason_code: DisconnectReasonCode::NormalDisconnection,
        properties: Some(DisconnectProperties {
            session_expiry_interval: Some(seconds),
            reason_string: None,
            user_properties: Vec::new(),
            server_reference: None,
        }),
    })
}

#[test]
fn a_disconnect_cannot_give_a_session_without_expiry_one() {
    let mut h = started(Version::V5);
    assert_eq!(
        refused(h.client(disconnect_with_expiry(60))),
        DisconnectReasonCode::ProtocolError
    );
    assert!(h.take_upstream(0).is_empty(), "not forwarded");
    // Zero again is allowed, and forwarded.
    let mut h = started(Version::V5);
    assert!(matches!(
        h.client(disconnect_with_expiry(0)),
        Err(End::ClientDisconnected)
    ));
    assert_eq!(h.take_upstream(0), vec![disconnect_with_expiry(0)]);
}

#[test]
fn a_disconnect_may_change_a_session_expiry_set_at_connect() {
    let mut opening = Opening::new(Server::default().build(), Version::V5);
    opening.connect.properties = Some(ConnectProperties {
        session_expiry_interval: Some(30),
        ..connect_properties()
    });
    let mut h = opening.start();
    h.connack();
    assert!(matches!(
        h.client(disconnect_with_expiry(600)),
        Err(End::ClientDisconnected)
    ));
    assert_eq!(h.take_upstream(0), vec![disconnect_with_expiry(600)]);
}
