//! Retransmissions on one connection, both versions, both directions: a
//! resend is answered and delivered once, never a reason to end the session.

use mqtt_bytes_v5::PubCompReason;

use super::*;

const BOTH: [Version; 2] = [Version::V4, Version::V5];

fn resend(mut publish: Publish) -> Packet {
    publish.dup = true;
    Packet::Publish(publish)
}

/// What a client of `version` reads of a PUBCOMP with `reason` (3.1.1 has
/// no reason code).
fn pubcomp_for(version: Version, pkid: u16, reason: PubCompReason) -> Packet {
    match version {
        Version::V4 => pubcomp_with(pkid, PubCompReason::Success),
        _ => pubcomp_with(pkid, reason),
    }
}

/// A started session of `version` whose client sent the QoS 2 publish 9,
/// now in flight at the broker as id 1.
fn qos2_in_flight(version: Version) -> (Harness, Publish) {
    let mut h = started(version);
    let first = publish("a", QoS::ExactlyOnce, 9, b"once");
    h.client(Packet::Publish(first.clone())).unwrap();
    assert_eq!(one_publish(h.take_upstream(0)).pkid, 1);
    (h, first)
}

#[test]
fn a_qos2_publish_resent_before_the_brokers_pubrec_goes_onward_once() {
    for version in BOTH {
        let (mut h, first) = qos2_in_flight(version);
        h.client(resend(first)).unwrap();
        assert!(h.take_upstream(0).is_empty(), "{version:?}: not sent again");
        assert!(h.take_client().is_empty());
        // The broker's PUBREC for the first copy answers both.
        h.upstream(0, pubrec(1)).unwrap();
        assert_eq!(h.take_client(), vec![pubrec(9)], "{version:?}");
    }
}

#[test]
fn a_qos2_publish_resent_after_its_pubrec_is_answered_pubrec_again_not_delivered_again() {
    for version in BOTH {
        let (mut h, first) = qos2_in_flight(version);
        h.upstream(0, pubrec(1)).unwrap();
        assert_eq!(h.take_client(), vec![pubrec(9)]);
        assert_eq!(h.take_upstream(0), vec![pubrel(1)], "released at once");
        h.client(resend(first.clone())).unwrap();
        assert_eq!(h.take_client(), vec![pubrec(9)], "{version:?}");
        assert!(h.take_upstream(0).is_empty(), "{version:?}: once onward");
        // The flow completes as usual.
        h.client(pubrel(9)).unwrap();
        h.upstream(0, pubcomp_with(1, PubCompReason::Success))
            .unwrap();
        assert_eq!(
            h.take_client(),
            vec![pubcomp_with(9, PubCompReason::Success)],
            "{version:?}"
        );
        // After PUBCOMP the id is free: the same id is a new message.
        h.client(Packet::Publish(first)).unwrap();
        assert_eq!(one_publish(h.take_upstream(0)).pkid, 2, "{version:?}");
    }
}

#[test]
fn a_qos2_publish_resent_after_the_broker_completed_it_is_answered_pubrec_again() {
    for version in BOTH {
        let (mut h, first) = qos2_in_flight(version);
        h.upstream(0, pubrec(1)).unwrap();
        h.upstream(0, pubcomp_with(1, PubCompReason::Success))
            .unwrap();
        assert_eq!(h.take_client(), vec![pubrec(9)]);
        h.take_upstream(0);
        h.client(resend(first)).unwrap();
        assert_eq!(h.take_client(), vec![pubrec(9)], "{version:?}");
        assert!(h.take_upstream(0).is_empty());
        h.client(pubrel(9)).unwrap();
        assert_eq!(
            h.take_client(),
            vec![pubcomp_with(9, PubCompReason::Success)],
            "{version:?}"
        );
    }
}

#[test]
fn a_pubrel_resent_is_answered_pubcomp_again() {
    for version in BOTH {
        let (mut h, _) = qos2_in_flight(version);
        h.upstream(0, pubrec(1)).unwrap();
        h.take_client();
        h.take_upstream(0);
        // Resent while the broker's PUBCOMP is still due: that PUBCOMP
        // answers it, once.
        h.client(pubrel(9)).unwrap();
        h.client(pubrel(9)).unwrap();
        assert!(h.take_client().is_empty());
        h.upstream(0, pubcomp_with(1, PubCompReason::Success))
            .unwrap();
        assert_eq!(
            h.take_client(),
            vec![pubcomp_with(9, PubCompReason::Success)]
        );
        // Resent once the PUBCOMP went: answered again, the flow unknown.
        h.client(pubrel(9)).unwrap();
        assert_eq!(
            h.take_client(),
            vec![pubcomp_for(
                version,
                9,
                PubCompReason::PacketIdentifierNotFound
            )],
            "{version:?}"
        );
        assert!(h.take_upstream(0).is_empty());
    }
}

#[test]
fn a_qos1_publish_resent_before_its_puback_is_answered_by_the_brokers_puback_once() {
    for version in BOTH {
        let mut h = started(version);
        let first = publish("a", QoS::AtLeastOnce, 5, b"m");
        h.client(Packet::Publish(first.clone())).unwrap();
        h.client(resend(first.clone())).unwrap();
        assert_eq!(one_publish(h.take_upstream(0)).pkid, 1, "once onward");
        h.upstream(0, puback(1)).unwrap();
        assert_eq!(h.take_client(), vec![puback(5)], "{version:?}");
        // Resent after its PUBACK went: at least once, so a new publish.
        h.client(resend(first)).unwrap();
        assert_eq!(one_publish(h.take_upstream(0)).pkid, 2, "{version:?}");
    }
}

#[test]
fn a_resend_of_a_publish_waiting_for_the_brokers_window_is_not_queued_twice() {
    let mut opening = Opening::new(Server::default().build(), Version::V4);
    opening.broker = broker_ack(Some(ConnAckProperties {
        receive_max: Some(1),
        ..broker_properties()
    }));
    let mut h = opening.start();
    h.connack();
    h.client(Packet::Publish(publish("a", QoS::ExactlyOnce, 1, b"1")))
        .unwrap();
    let waiting = publish("a", QoS::ExactlyOnce, 2, b"2");
    h.client(Packet::Publish(waiting.clone())).unwrap();
    h.client(resend(waiting)).unwrap();
    assert_eq!(one_publish(h.take_upstream(0)).pkid, 1);
    h.upstream(0, pubrec(1)).unwrap();
    h.upstream(0, pubcomp_with(1, PubCompReason::Success))
        .unwrap();
    let onward: Vec<Packet> = h
        .take_upstream(0)
        .into_iter()
        .filter(|p| matches!(p, Packet::Publish(_)))
        .collect();
    assert_eq!(one_publish(onward).payload, &b"2"[..]);
}

#[test]
fn an_id_reused_without_dup_or_resent_after_its_pubrel_is_a_protocol_error() {
    for version in BOTH {
        let (mut h, first) = qos2_in_flight(version);
        let end = h.client(Packet::Publish(first.clone()));
        assert_eq!(refused(end), DisconnectReasonCode::ProtocolError);

        let (mut h, first) = qos2_in_flight(version);
        h.upstream(0, pubrec(1)).unwrap();
        h.client(pubrel(9)).unwrap();
        let end = h.client(resend(first));
        assert_eq!(refused(end), DisconnectReasonCode::ProtocolError);
    }
}

/// A started session of `version` to which the broker delivered QoS 2
/// message 7, sent to the client as its id 1.
fn qos2_delivered(version: Version) -> (Harness, Publish) {
    let mut h = started(version);
    let message = publish("x", QoS::ExactlyOnce, 7, b"down");
    h.upstream(0, Packet::Publish(message.clone())).unwrap();
    assert_eq!(one_publish(h.take_client()).pkid, 1);
    (h, message)
}

#[test]
fn a_delivery_the_broker_resends_before_the_clients_pubrec_reaches_the_client_once() {
    for version in BOTH {
        let (mut h, message) = qos2_delivered(version);
        h.upstream(0, resend(message)).unwrap();
        assert!(
            h.take_client().is_empty(),
            "{version:?}: once to the client"
        );
        assert!(h.take_upstream(0).is_empty());
        h.client(pubrec(1)).unwrap();
        assert_eq!(h.take_upstream(0), vec![pubrec(7)]);
    }
}

#[test]
fn a_delivery_the_broker_resends_after_the_clients_pubrec_is_answered_by_the_proxy() {
    for version in BOTH {
        let (mut h, message) = qos2_delivered(version);
        h.client(pubrec(1)).unwrap();
        assert_eq!(h.take_upstream(0), vec![pubrec(7)]);
        h.upstream(0, resend(message)).unwrap();
        assert!(
            h.take_client().is_empty(),
            "{version:?}: once to the client"
        );
        assert_eq!(h.take_upstream(0), vec![pubrec(7)], "{version:?}");
        // The flow completes as usual.
        h.upstream(0, pubrel(7)).unwrap();
        assert_eq!(h.take_client(), vec![pubrel(1)]);
        // A PUBREL resent before the client's PUBCOMP is not passed again.
        h.upstream(0, pubrel(7)).unwrap();
        assert!(h.take_client().is_empty(), "{version:?}");
        h.client(pubcomp_with(1, PubCompReason::Success)).unwrap();
        assert_eq!(
            h.take_upstream(0),
            vec![pubcomp_with(7, PubCompReason::Success)]
        );
        // One resent after it: completed by the proxy, unknown to the client.
        h.upstream(0, pubrel(7)).unwrap();
        assert!(h.take_client().is_empty());
        assert_eq!(
            h.take_upstream(0),
            vec![pubcomp_with(7, PubCompReason::PacketIdentifierNotFound)]
        );
    }
}

#[test]
fn a_qos1_delivery_the_broker_resends_reaches_the_client_once() {
    for version in BOTH {
        let mut h = started(version);
        let message = publish("x", QoS::AtLeastOnce, 3, b"down");
        h.upstream(0, Packet::Publish(message.clone())).unwrap();
        h.upstream(0, resend(message)).unwrap();
        assert_eq!(one_publish(h.take_client()).pkid, 1, "{version:?}");
        h.client(puback(1)).unwrap();
        assert_eq!(h.take_upstream(0), vec![puback(3)]);
    }
}

#[test]
fn a_delivery_resent_while_it_waits_for_the_clients_window_is_delivered_once() {
    let mut opening = Opening::new(Server::default().build(), Version::V5);
    opening.connect.properties = Some(ConnectProperties {
        receive_maximum: Some(1),
        ..connect_properties()
    });
    let mut h = opening.start();
    h.connack();
    h.upstream(0, Packet::Publish(publish("x", QoS::AtLeastOnce, 1, b"1")))
        .unwrap();
    let waiting = publish("x", QoS::AtLeastOnce, 2, b"2");
    h.upstream(0, Packet::Publish(waiting.clone())).unwrap();
    h.upstream(0, resend(waiting)).unwrap();
    assert_eq!(one_publish(h.take_client()).payload, &b"1"[..]);
    h.client(puback(1)).unwrap();
    assert_eq!(one_publish(h.take_client()).payload, &b"2"[..]);
    h.client(puback(2)).unwrap();
    assert!(h.take_client().is_empty(), "no second copy");
}

#[test]
fn after_a_resume_the_brokers_resend_reaches_the_client_again_once() {
    let mut opening = Opening::new(Server::default().build(), Version::V5);
    opening.connect.clean_start = false;
    opening.broker = ConnAck {
        session_present: true,
        ..broker_ack(None)
    };
    opening.carried = Some(Carried {
        outbound: vec![(4, Arc::from("north"), 42)],
        next_client_pkid: 4,
        ..Carried::default()
    });
    let mut h = opening.start();
    h.connack();
    let message = publish("x", QoS::ExactlyOnce, 42, b"again");
    // The client may never have had it: it goes, marked DUP, with its id.
    h.upstream(0, resend(message.clone())).unwrap();
    let sent = one_publish(h.take_client());
    assert_eq!((sent.pkid, sent.dup), (4, true));
    // A second resend on this connection does not.
    h.upstream(0, resend(message)).unwrap();
    assert!(h.take_client().is_empty());
}
