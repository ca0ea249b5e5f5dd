//! What each side allows: topic aliases, receive maximums, maximum packet
//! sizes, maximum QoS and retain, payload checks and authorization of publishes.

use mqtt_bytes_v5::{PubAck, PubAckProperties, PubAckReason, PublishProperties};

use super::*;

/// A client CONNECT from `c1` with `properties`.
fn connect_with(properties: ConnectProperties) -> Connect {
    Connect {
        properties: Some(properties),
        ..connect("c1")
    }
}

/// A session whose brokers all answer with `properties`.
fn with_broker(properties: ConnAckProperties) -> Harness {
    let mut opening = Opening::new(Server::default().build(), Version::V5);
    opening.broker = broker_ack(Some(properties));
    opening.start()
}

/// A session of a client that connected with `properties`.
fn with_client(properties: ConnectProperties) -> Harness {
    let mut opening = Opening::new(Server::default().build(), Version::V5);
    opening.connect = connect_with(properties);
    opening.start()
}

/// `publish` with `properties`.
fn with(mut publish: Publish, properties: PublishProperties) -> Publish {
    publish.properties = Some(properties);
    publish
}

/// A QoS 0 publish to `topic` under topic alias `alias`.
fn aliased(topic: &str, alias: u16) -> Packet {
    let properties = PublishProperties {
        topic_alias: Some(alias),
        ..PublishProperties::default()
    };
    Packet::Publish(with(publish(topic, QoS::AtMostOnce, 0, b"m"), properties))
}

fn puback(pkid: u16, reason: PubAckReason) -> Packet {
    Packet::PubAck(PubAck {
        pkid,
        reason,
        properties: None,
    })
}

const BIG: &[u8] = &[b'x'; 200];
/// Not UTF-8: 255 starts no UTF-8 sequence.
const NOT_UTF8: &[u8] = &[255];

#[test]
fn a_topic_alias_is_resolved_by_the_proxy_and_never_sent_upstream() {
    let mut h = Opening::new(Server::default().build(), Version::V5).start();
    assert_eq!(
        h.connack().properties.and_then(|p| p.topic_alias_max),
        Some(64)
    );
    h.client(aliased("a/b", 3)).unwrap();
    h.client(aliased("", 3)).unwrap();
    let sent = h.take_upstream(0);
    assert_eq!(sent.len(), 2);
    for packet in sent {
        let Packet::Publish(publish) = packet else {
            panic!("expected a PUBLISH, got {packet:?}")
        };
        assert_eq!(publish.topic, "a/b");
        assert_eq!(publish.properties.and_then(|p| p.topic_alias), None);
    }
}

#[test]
fn a_topic_alias_outside_1_to_64_is_invalid() {
    for alias in [0, 65] {
        let mut h = Opening::new(Server::default().build(), Version::V5).start();
        h.connack();
        let end = h.client(aliased("a/b", alias));
        assert_eq!(
            refused(end),
            DisconnectReasonCode::TopicAliasInvalid,
            "alias {alias}"
        );
        assert!(h.take_upstream(0).is_empty());
    }
}

#[test]
fn a_topic_alias_never_set_is_a_protocol_error() {
    let mut h = Opening::new(Server::default().build(), Version::V5).start();
    h.connack();
    let end = h.client(aliased("", 5));
    assert_eq!(refused(end), DisconnectReasonCode::ProtocolError);
}

#[test]
fn a_publish_beyond_the_brokers_receive_maximum_waits_for_its_window() {
    let mut h = with_broker(ConnAckProperties {
        receive_max: Some(2),
        ..broker_properties()
    });
    // The client is told the proxy's own window, not the broker's.
    assert_eq!(
        h.connack().properties.and_then(|p| p.receive_max),
        Some(u16::MAX)
    );
    for pkid in [1, 2, 3] {
        h.client(Packet::Publish(publish("a", QoS::AtLeastOnce, pkid, b"m")))
            .unwrap();
    }
    assert_eq!(h.take_upstream(0).len(), 2, "the third waits");
    h.upstream(0, puback(1, PubAckReason::Success)).unwrap();
    assert_eq!(one_publish(h.take_upstream(0)).pkid, 3);
}

#[test]
fn a_brokers_puback_frees_a_place_in_its_receive_maximum() {
    let mut h = with_broker(ConnAckProperties {
        receive_max: Some(2),
        ..broker_properties()
    });
    h.connack();
    for pkid in [1, 2] {
        h.client(Packet::Publish(publish("a", QoS::AtLeastOnce, pkid, b"m")))
            .unwrap();
    }
    assert_eq!(h.take_upstream(0).len(), 2);
    h.upstream(0, puback(1, PubAckReason::Success)).unwrap();
    assert_eq!(h.take_client(), vec![puback(1, PubAckReason::Success)]);
    h.client(Packet::Publish(publish("a", QoS::AtLeastOnce, 3, b"m")))
        .unwrap();
    assert_eq!(one_publish(h.take_upstream(0)).pkid, 3);
}

#[test]
fn deliveries_beyond_the_clients_receive_maximum_wait_for_its_puback_in_order() {
    let mut h = with_client(ConnectProperties {
        receive_maximum: Some(1),
        ..connect_properties()
    });
    h.connack();
    for (pkid, payload) in [(10, b"1"), (11, b"2"), (12, b"3")] {
        h.upstream(
            0,
            Packet::Publish(publish("t", QoS::AtLeastOnce, pkid, payload)),
        )
        .unwrap();
    }
    let first = one_publish(h.take_client());
    assert_eq!((first.pkid, &first.payload[..]), (1, &b"1"[..]));
    h.client(puback(1, PubAckReason::Success)).unwrap();
    assert_eq!(h.take_upstream(0), vec![puback(10, PubAckReason::Success)]);
    let second = one_publish(h.take_client());
    assert_eq!((second.pkid, &second.payload[..]), (2, &b"2"[..]));
    h.client(puback(2, PubAckReason::Success)).unwrap();
    let third = one_publish(h.take_client());
    assert_eq!((third.pkid, &third.payload[..]), (3, &b"3"[..]));
}

#[test]
fn qos0_deliveries_are_not_held_back_by_the_clients_receive_maximum() {
    let mut h = with_client(ConnectProperties {
        receive_maximum: Some(1),
        ..connect_properties()
    });
    h.connack();
    h.upstream(0, Packet::Publish(publish("t", QoS::AtLeastOnce, 10, b"1")))
        .unwrap();
    h.upstream(0, Packet::Publish(publish("t", QoS::AtLeastOnce, 11, b"2")))
        .unwrap();
    assert_eq!(one_publish(h.take_client()).pkid, 1);
    h.upstream(0, Packet::Publish(publish("t", QoS::AtMostOnce, 0, b"now")))
        .unwrap();
    assert_eq!(
        h.take_client(),
        vec![Packet::Publish(publish("t", QoS::AtMostOnce, 0, b"now"))]
    );
}

#[test]
fn a_publish_larger_than_the_connacks_maximum_packet_size_is_too_large() {
    let config = Server {
        maximum_packet_size: 128,
        ..Server::default()
    }
    .build();
    let mut h = Opening::new(config, Version::V5).start();
    assert_eq!(
        h.connack().properties.and_then(|p| p.max_packet_size),
        Some(128)
    );
    let end = h.client(Packet::Publish(publish("a", QoS::AtLeastOnce, 1, BIG)));
    assert_eq!(refused(end), DisconnectReasonCode::PacketTooLarge);
    assert!(h.take_upstream(0).is_empty());
}

#[test]
fn a_publish_larger_than_its_broker_accepts_is_refused_and_the_session_goes_on() {
    let mut h = with_broker(ConnAckProperties {
        max_packet_size: Some(64),
        ..broker_properties()
    });
    h.connack();
    // It fits the client's limit only with its topic aliased: the proxy
    // expands the alias, and the broker's 64 bytes are exceeded.
    let topic = "a/topic/name/of/exactly/forty/characters";
    h.client(aliased(topic, 1)).unwrap();
    assert_eq!(one_publish(h.take_upstream(0)).topic, topic);
    let properties = PublishProperties {
        topic_alias: Some(1),
        ..PublishProperties::default()
    };
    let big = with(publish("", QoS::AtLeastOnce, 7, &[b'x'; 30]), properties);
    h.client(Packet::Publish(big)).unwrap();
    assert_eq!(
        h.take_client(),
        vec![puback(7, PubAckReason::QuotaExceeded)]
    );
    assert!(h.take_upstream(0).is_empty(), "nothing goes upstream");
    h.client(Packet::Publish(publish("a", QoS::AtLeastOnce, 8, b"m")))
        .unwrap();
    assert_eq!(one_publish(h.take_upstream(0)).topic, "a");
}

#[test]
fn a_qos1_delivery_larger_than_the_client_accepts_is_dropped_and_acknowledged() {
    let mut h = with_client(ConnectProperties {
        max_packet_size: Some(64),
        ..connect_properties()
    });
    h.connack();
    h.upstream(0, Packet::Publish(publish("t", QoS::AtLeastOnce, 7, BIG)))
        .unwrap();
    assert!(h.take_client().is_empty(), "dropped");
    assert_eq!(h.take_upstream(0), vec![puback(7, PubAckReason::Success)]);
}

#[test]
fn a_qos0_delivery_larger_than_the_client_accepts_is_dropped() {
    let mut h = with_client(ConnectProperties {
        max_packet_size: Some(64),
        ..connect_properties()
    });
    h.connack();
    h.upstream(0, Packet::Publish(publish("t", QoS::AtMostOnce, 0, BIG)))
        .unwrap();
    assert!(h.take_client().is_empty(), "dropped");
    assert!(
        h.take_upstream(0).is_empty(),
        "QoS 0 has nothing to acknowledge"
    );
    h.upstream(
        0,
        Packet::Publish(publish("t", QoS::AtMostOnce, 0, b"small")),
    )
    .unwrap();
    assert_eq!(one_publish(h.take_client()).payload, &b"small"[..]);
}

#[test]
fn an_acknowledgement_too_large_for_the_client_loses_its_properties_not_itself() {
    let mut h = with_client(ConnectProperties {
        max_packet_size: Some(64),
        ..connect_properties()
    });
    h.connack();
    h.client(Packet::Publish(publish("a", QoS::AtLeastOnce, 4, b"m")))
        .unwrap();
    let sent = one_publish(h.take_upstream(0));
    let ack = PubAck {
        pkid: sent.pkid,
        reason: PubAckReason::NoMatchingSubscribers,
        properties: Some(PubAckProperties {
            reason_string: Some("r".repeat(100)),
            user_properties: Vec::new(),
        }),
    };
    h.upstream(0, Packet::PubAck(ack)).unwrap();
    assert_eq!(
        h.take_client(),
        vec![puback(4, PubAckReason::NoMatchingSubscribers)]
    );
}

#[test]
fn a_publish_above_the_maximum_qos_is_not_supported() {
    let mut h = with_broker(ConnAckProperties {
        max_qos: Some(1),
        ..broker_properties()
    });
    assert_eq!(h.connack().properties.and_then(|p| p.max_qos), Some(1));
    let end = h.client(Packet::Publish(publish("a", QoS::ExactlyOnce, 1, b"m")));
    assert_eq!(refused(end), DisconnectReasonCode::QoSNotSupported);
}

#[test]
fn a_retained_publish_without_retain_available_is_not_supported() {
    let mut h = with_broker(ConnAckProperties {
        retain_available: Some(0),
        ..broker_properties()
    });
    h.connack();
    let mut retained = publish("a", QoS::AtMostOnce, 0, b"m");
    retained.retain = true;
    let end = h.client(Packet::Publish(retained));
    assert_eq!(refused(end), DisconnectReasonCode::RetainNotSupported);
}

#[test]
fn a_payload_declared_utf8_that_is_not_is_an_invalid_payload_format() {
    let mut h = Opening::new(Server::default().build(), Version::V5).start();
    h.connack();
    let properties = PublishProperties {
        payload_format_indicator: Some(1),
        ..PublishProperties::default()
    };
    let publish = with(publish("a", QoS::AtMostOnce, 0, NOT_UTF8), properties);
    let end = h.client(Packet::Publish(publish));
    assert_eq!(refused(end), DisconnectReasonCode::PayloadFormatInvalid);
    assert!(h.take_upstream(0).is_empty());
}

/// A server that validates `sensors/#` payloads and does `on_invalid`.
fn validating(on_invalid: OnInvalid) -> Harness {
    let config = Server {
        validate: vec![("sensors/#", on_invalid)],
        ..Server::default()
    }
    .build();
    let mut h = Opening::new(config, Version::V5).start();
    h.connack();
    h
}

#[test]
fn an_invalid_payload_is_rejected_with_its_puback_when_so_configured() {
    let mut h = validating(OnInvalid::Reject);
    h.client(Packet::Publish(publish(
        "sensors/1",
        QoS::AtLeastOnce,
        5,
        b"bad",
    )))
    .unwrap();
    assert_eq!(
        h.take_client(),
        vec![puback(5, PubAckReason::PayloadFormatInvalid)]
    );
    assert!(h.take_upstream(0).is_empty(), "nothing goes upstream");
}

#[test]
fn an_invalid_payload_ends_the_session_when_so_configured() {
    let mut h = validating(OnInvalid::Disconnect);
    let end = h.client(Packet::Publish(publish(
        "sensors/1",
        QoS::AtLeastOnce,
        5,
        b"bad",
    )));
    assert_eq!(refused(end), DisconnectReasonCode::PayloadFormatInvalid);
    assert!(h.take_upstream(0).is_empty());
}

#[test]
fn a_valid_payload_passes_validation() {
    let mut h = validating(OnInvalid::Disconnect);
    h.client(Packet::Publish(publish(
        "sensors/1",
        QoS::AtLeastOnce,
        5,
        b"good",
    )))
    .unwrap();
    assert_eq!(one_publish(h.take_upstream(0)).payload, &b"good"[..]);
    assert!(h.take_client().is_empty(), "the PUBACK is the broker's");
}

/// A guarded server: `public/#` for everyone, `secret/#` only with `admin`.
fn guarded(version: Version) -> Harness {
    let config = Server {
        routes: r#"
- exit: north
  when:
    - publish: [{topic: "public/#"}]
- exit: north
  roles: [admin]
  when:
    - publish: [{topic: "secret/#"}]
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

#[test]
fn a_publish_only_a_guarded_route_takes_is_not_authorized_without_the_role() {
    let mut h = guarded(Version::V5);
    h.client(Packet::Publish(publish(
        "secret/x",
        QoS::AtLeastOnce,
        6,
        b"m",
    )))
    .unwrap();
    assert_eq!(
        h.take_client(),
        vec![puback(6, PubAckReason::NotAuthorized)]
    );
    assert!(h.take_upstream(0).is_empty());
}

#[test]
fn a_3_1_1_client_still_gets_a_puback_for_an_unauthorized_publish() {
    let mut h = guarded(Version::V4);
    h.client(Packet::Publish(publish(
        "secret/x",
        QoS::AtLeastOnce,
        6,
        b"m",
    )))
    .unwrap();
    // 3.1.1 has no reason code: the PUBACK only ends the flow.
    assert_eq!(h.take_client(), vec![puback(6, PubAckReason::Success)]);
    assert!(h.take_upstream(0).is_empty());
}
