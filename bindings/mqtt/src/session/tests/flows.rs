//! QoS 0, 1 and 2 flows both ways, with packet ids mapped per upstream.

use mqtt_bytes_v5::{
    PingReq, PingResp, PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason, PubRel,
    PubRelReason,
};

use super::*;

#[test]
fn qos0_passes_through_unchanged() {
    let mut h = Opening::new(Server::default().build(), Version::V5).start();
    h.connack();
    h.client(Packet::Publish(publish("a/b", QoS::AtMostOnce, 0, b"hi")))
        .unwrap();
    assert_eq!(
        h.take_upstream(0),
        vec![Packet::Publish(publish("a/b", QoS::AtMostOnce, 0, b"hi"))]
    );
    h.upstream(0, Packet::Publish(publish("x", QoS::AtMostOnce, 0, b"yo")))
        .unwrap();
    assert_eq!(
        h.take_client(),
        vec![Packet::Publish(publish("x", QoS::AtMostOnce, 0, b"yo"))]
    );
}

#[test]
fn qos1_publish_is_acknowledged_only_after_the_broker_with_the_clients_id() {
    let mut h = Opening::new(Server::default().build(), Version::V5).start();
    h.connack();
    h.client(Packet::Publish(publish("a", QoS::AtLeastOnce, 700, b"m")))
        .unwrap();
    assert!(h.take_client().is_empty(), "no PUBACK before the broker's");
    let sent = one_publish(h.take_upstream(0));
    assert_eq!(sent.pkid, 1, "a fresh id in the upstream's space");
    h.upstream(0, puback(sent.pkid)).unwrap();
    assert_eq!(h.take_client(), vec![puback(700)]);
}

#[test]
fn packet_ids_are_mapped_per_upstream_and_back() {
    let mut h = Opening::new(two_brokers(), Version::V5).start();
    h.connack();
    assert_eq!(h.exits, vec!["north", "south"]);
    h.client(Packet::Publish(publish(
        "north/1",
        QoS::AtLeastOnce,
        10,
        b"n",
    )))
    .unwrap();
    h.client(Packet::Publish(publish(
        "south/1",
        QoS::AtLeastOnce,
        11,
        b"s",
    )))
    .unwrap();
    h.client(Packet::Publish(publish(
        "north/2",
        QoS::AtLeastOnce,
        12,
        b"n",
    )))
    .unwrap();
    let north: Vec<u16> = h
        .take_upstream(0)
        .into_iter()
        .map(|p| match p {
            Packet::Publish(p) => p.pkid,
            other => panic!("{other:?}"),
        })
        .collect();
    let south: Vec<u16> = h
        .take_upstream(1)
        .into_iter()
        .map(|p| match p {
            Packet::Publish(p) => p.pkid,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(north, vec![1, 2]);
    assert_eq!(south, vec![1], "each upstream has its own id space");
    // The same upstream id on two upstreams stands for two client ids.
    h.upstream(1, puback(1)).unwrap();
    h.upstream(0, puback(2)).unwrap();
    h.upstream(0, puback(1)).unwrap();
    assert_eq!(h.take_client(), vec![puback(11), puback(12), puback(10)]);
}

#[test]
fn qos2_publish_from_the_client_maps_every_step() {
    let mut h = Opening::new(Server::default().build(), Version::V5).start();
    h.connack();
    h.client(Packet::Publish(publish("a", QoS::ExactlyOnce, 9, b"m")))
        .unwrap();
    let sent = one_publish(h.take_upstream(0));
    let rec = |pkid| {
        Packet::PubRec(PubRec {
            pkid,
            reason: PubRecReason::Success,
            properties: None,
        })
    };
    let rel = |pkid| {
        Packet::PubRel(PubRel {
            pkid,
            reason: PubRelReason::Success,
            properties: None,
        })
    };
    let comp = |pkid| {
        Packet::PubComp(PubComp {
            pkid,
            reason: PubCompReason::Success,
            properties: None,
        })
    };
    h.upstream(0, rec(sent.pkid)).unwrap();
    assert_eq!(h.take_client(), vec![rec(9)]);
    h.client(rel(9)).unwrap();
    assert_eq!(h.take_upstream(0), vec![rel(sent.pkid)]);
    h.upstream(0, comp(sent.pkid)).unwrap();
    assert_eq!(h.take_client(), vec![comp(9)]);
    // The flow is over: the client may use id 9 again without DUP.
    h.client(Packet::Publish(publish("a", QoS::ExactlyOnce, 9, b"again")))
        .unwrap();
}

#[test]
fn a_qos1_delivery_gets_a_client_side_id_and_the_clients_puback_goes_back_with_the_brokers_id() {
    let mut h = started(Version::V5);
    h.upstream(
        0,
        Packet::Publish(publish("x", QoS::AtLeastOnce, 300, b"m")),
    )
    .unwrap();
    assert_eq!(
        one_publish(h.take_client()),
        publish("x", QoS::AtLeastOnce, 1, b"m"),
        "the first id of the client-side space"
    );
    h.client(puback(1)).unwrap();
    assert_eq!(h.take_upstream(0), vec![puback(300)]);
}

#[test]
fn deliveries_with_one_id_from_two_upstreams_get_two_client_ids_and_acks_go_back_where_they_came_from(
) {
    let mut h = Opening::new(two_brokers(), Version::V5).start();
    h.connack();
    h.upstream(
        0,
        Packet::Publish(publish("north/x", QoS::AtLeastOnce, 7, b"n")),
    )
    .unwrap();
    h.upstream(
        1,
        Packet::Publish(publish("south/x", QoS::AtLeastOnce, 7, b"s")),
    )
    .unwrap();
    assert_eq!(
        h.take_client(),
        vec![
            Packet::Publish(publish("north/x", QoS::AtLeastOnce, 1, b"n")),
            Packet::Publish(publish("south/x", QoS::AtLeastOnce, 2, b"s")),
        ]
    );
    h.client(puback(2)).unwrap();
    assert_eq!(h.take_upstream(1), vec![puback(7)]);
    assert!(h.take_upstream(0).is_empty());
    h.client(puback(1)).unwrap();
    assert_eq!(h.take_upstream(0), vec![puback(7)]);
    assert!(h.take_upstream(1).is_empty());
}

#[test]
fn qos2_delivery_to_the_client_maps_every_step() {
    let mut h = started(Version::V5);
    h.upstream(
        0,
        Packet::Publish(publish("x", QoS::ExactlyOnce, 300, b"m")),
    )
    .unwrap();
    assert_eq!(
        one_publish(h.take_client()),
        publish("x", QoS::ExactlyOnce, 1, b"m")
    );
    h.client(pubrec_with(1, PubRecReason::Success)).unwrap();
    assert_eq!(
        h.take_upstream(0),
        vec![pubrec_with(300, PubRecReason::Success)]
    );
    h.upstream(0, pubrel(300)).unwrap();
    assert_eq!(h.take_client(), vec![pubrel(1)]);
    h.client(pubcomp_with(1, PubCompReason::Success)).unwrap();
    assert_eq!(
        h.take_upstream(0),
        vec![pubcomp_with(300, PubCompReason::Success)]
    );
    assert!(h.take_client().is_empty());
}

#[test]
fn a_failed_pubrec_from_the_client_ends_the_delivery_and_the_next_waiting_one_proceeds() {
    let mut opening = Opening::new(Server::default().build(), Version::V5);
    opening.connect.properties = Some(ConnectProperties {
        receive_maximum: Some(1),
        ..connect_properties()
    });
    let mut h = opening.start();
    h.connack();
    h.upstream(
        0,
        Packet::Publish(publish("x", QoS::ExactlyOnce, 5, b"one")),
    )
    .unwrap();
    h.upstream(
        0,
        Packet::Publish(publish("x", QoS::ExactlyOnce, 6, b"two")),
    )
    .unwrap();
    assert_eq!(
        one_publish(h.take_client()),
        publish("x", QoS::ExactlyOnce, 1, b"one"),
        "the second waits for the client's receive maximum of 1"
    );
    h.client(pubrec_with(1, PubRecReason::UnspecifiedError))
        .unwrap();
    assert_eq!(
        h.take_upstream(0),
        vec![pubrec_with(5, PubRecReason::UnspecifiedError)]
    );
    assert_eq!(
        one_publish(h.take_client()),
        publish("x", QoS::ExactlyOnce, 2, b"two")
    );
    // The first delivery is over: a PUBREL for it finds nothing.
    h.upstream(0, pubrel(5)).unwrap();
    assert_eq!(
        h.take_upstream(0),
        vec![pubcomp_with(5, PubCompReason::PacketIdentifierNotFound)]
    );
    assert!(h.take_client().is_empty());
}

#[test]
fn a_failed_pubrec_from_the_broker_reaches_the_client_and_ends_the_flow() {
    let mut h = started(Version::V5);
    h.client(Packet::Publish(publish("a", QoS::ExactlyOnce, 9, b"m")))
        .unwrap();
    let sent = one_publish(h.take_upstream(0));
    h.upstream(0, pubrec_with(sent.pkid, PubRecReason::QuotaExceeded))
        .unwrap();
    assert_eq!(
        h.take_client(),
        vec![pubrec_with(9, PubRecReason::QuotaExceeded)]
    );
    // The flow is over: id 9 is free again, without DUP.
    h.client(Packet::Publish(publish("a", QoS::ExactlyOnce, 9, b"again")))
        .unwrap();
    let again = one_publish(h.take_upstream(0));
    assert_eq!(again.payload, Bytes::from_static(b"again"));
    assert_ne!(again.pkid, sent.pkid, "a fresh upstream id");
}

#[test]
fn a_pubrel_from_the_client_for_an_unknown_id_gets_pubcomp_packet_identifier_not_found() {
    let mut h = started(Version::V5);
    h.client(pubrel(33)).unwrap();
    assert_eq!(
        h.take_client(),
        vec![pubcomp_with(33, PubCompReason::PacketIdentifierNotFound)]
    );
    assert!(h.take_upstream(0).is_empty());
}

#[test]
fn a_pubrel_from_the_broker_for_an_unknown_id_gets_pubcomp_packet_identifier_not_found() {
    let mut h = started(Version::V5);
    h.upstream(0, pubrel(44)).unwrap();
    assert_eq!(
        h.take_upstream(0),
        vec![pubcomp_with(44, PubCompReason::PacketIdentifierNotFound)]
    );
    assert!(h.take_client().is_empty());
}

#[test]
fn a_packet_id_the_client_reuses_while_in_flight_without_dup_is_a_protocol_error() {
    let mut h = started(Version::V5);
    h.client(Packet::Publish(publish("a", QoS::AtLeastOnce, 5, b"first")))
        .unwrap();
    assert_eq!(
        refused(h.client(Packet::Publish(publish(
            "a",
            QoS::AtLeastOnce,
            5,
            b"second"
        )))),
        DisconnectReasonCode::ProtocolError
    );
}

#[test]
fn a_puback_from_the_broker_for_an_id_the_proxy_never_used_is_ignored() {
    let mut h = started(Version::V5);
    h.client(Packet::Publish(publish("a", QoS::AtLeastOnce, 700, b"m")))
        .unwrap();
    let sent = one_publish(h.take_upstream(0));
    h.upstream(0, puback(sent.pkid + 1)).unwrap();
    assert!(h.take_client().is_empty());
    // The publish in flight is still acknowledged by its own PUBACK.
    h.upstream(0, puback(sent.pkid)).unwrap();
    assert_eq!(h.take_client(), vec![puback(700)]);
}

#[test]
fn a_3_1_1_clients_qos1_publish_round_trips_with_its_own_id() {
    let mut h = Opening::new(Server::default().build(), Version::V4).start();
    h.connack();
    h.client(Packet::Publish(publish("a", QoS::AtLeastOnce, 700, b"m")))
        .unwrap();
    assert!(h.take_client().is_empty(), "no PUBACK before the broker's");
    let sent = one_publish(h.take_upstream(0));
    assert_eq!(sent, publish("a", QoS::AtLeastOnce, 1, b"m"));
    h.upstream(0, puback(sent.pkid)).unwrap();
    assert_eq!(h.take_client(), vec![puback(700)]);
}

#[test]
fn a_3_1_1_client_gets_qos1_deliveries_and_its_puback_goes_back_with_the_brokers_id() {
    let mut h = Opening::new(Server::default().build(), Version::V4).start();
    h.connack();
    h.upstream(
        0,
        Packet::Publish(publish("x", QoS::AtLeastOnce, 300, b"m")),
    )
    .unwrap();
    assert_eq!(
        one_publish(h.take_client()),
        publish("x", QoS::AtLeastOnce, 1, b"m")
    );
    h.client(puback(1)).unwrap();
    assert_eq!(h.take_upstream(0), vec![puback(300)]);
}

#[test]
fn a_3_1_1_client_gets_a_brokers_failed_puback_without_a_reason_code_on_the_wire() {
    let mut h = Opening::new(Server::default().build(), Version::V4).start();
    h.connack();
    h.client(Packet::Publish(publish("a", QoS::AtLeastOnce, 700, b"m")))
        .unwrap();
    let sent = one_publish(h.take_upstream(0));
    h.upstream(
        0,
        Packet::PubAck(PubAck {
            pkid: sent.pkid,
            reason: PubAckReason::QuotaExceeded,
            properties: None,
        }),
    )
    .unwrap();
    let mut wire = h.session.client_transmit().split();
    assert_eq!(wire.len(), 4, "fixed header and packet id, nothing more");
    assert_eq!(&wire[2..], &700u16.to_be_bytes());
    assert_eq!(
        codec::read(&mut wire, Version::V4, usize::MAX).unwrap(),
        Some(puback(700))
    );
}

#[test]
fn packets_pipelined_in_one_read_are_all_handled_in_order() {
    let mut h = started(Version::V5);
    let mut bytes = BytesMut::new();
    for packet in [
        Packet::Publish(publish("a", QoS::AtMostOnce, 0, b"0")),
        Packet::Publish(publish("b", QoS::AtLeastOnce, 5, b"1")),
        Packet::PingReq(PingReq),
        subscribe(6, &["c"]),
    ] {
        codec::write(&packet, h.version, &mut bytes).unwrap();
    }
    h.client_bytes(&bytes).unwrap();
    assert_eq!(
        h.take_upstream(0),
        vec![
            Packet::Publish(publish("a", QoS::AtMostOnce, 0, b"0")),
            Packet::Publish(publish("b", QoS::AtLeastOnce, 1, b"1")),
            subscribe(2, &["c"]),
        ]
    );
    assert_eq!(h.take_client(), vec![Packet::PingResp(PingResp)]);
}

#[test]
fn a_partial_packet_stays_buffered_until_the_rest_arrives() {
    let mut h = started(Version::V5);
    let mut bytes = BytesMut::new();
    codec::write(
        &Packet::Publish(publish("a/b", QoS::AtLeastOnce, 5, b"hello")),
        h.version,
        &mut bytes,
    )
    .unwrap();
    let half = bytes.len() / 2;
    let mut buf = BytesMut::from(&bytes[..half]);
    h.session.on_client_bytes(h.now, &mut buf).unwrap();
    assert_eq!(
        &buf[..],
        &bytes[..half],
        "the half packet is left in the buffer"
    );
    assert!(h.take_upstream(0).is_empty());
    assert!(h.take_client().is_empty());
    buf.extend_from_slice(&bytes[half..]);
    h.session.on_client_bytes(h.now, &mut buf).unwrap();
    assert!(buf.is_empty());
    assert_eq!(
        h.take_upstream(0),
        vec![Packet::Publish(publish(
            "a/b",
            QoS::AtLeastOnce,
            1,
            b"hello"
        ))]
    );
}
