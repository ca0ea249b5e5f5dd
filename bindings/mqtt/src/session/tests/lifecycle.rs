//! How a session ends and resumes: DISCONNECTs either way, takeover, draining,
//! lost peers, and the in-flight flows a persistent session carries over.

use mqtt_bytes_v5::{Disconnect, DisconnectProperties, SubAck, SubscribeReasonCode};

use super::*;
use crate::session::end::disconnect;

/// A CONNECT from `c1` whose session the brokers keep `seconds` after it ends.
fn expiring(clean_start: bool, seconds: u32) -> Connect {
    Connect {
        clean_start,
        properties: Some(ConnectProperties {
            session_expiry_interval: Some(seconds),
            ..connect_properties()
        }),
        ..connect("c1")
    }
}

/// A client DISCONNECT, with a session expiry interval when `seconds` is set.
fn client_disconnect(seconds: Option<u32>) -> Packet {
    Packet::Disconnect(Disconnect {
        reason_code: DisconnectReasonCode::NormalDisconnection,
        properties: seconds.map(|seconds| DisconnectProperties {
            session_expiry_interval: Some(seconds),
            reason_string: None,
            user_properties: Vec::new(),
            server_reference: None,
        }),
    })
}

/// A server DISCONNECT with `reason` and reason string `why`.
fn server_disconnect(reason: DisconnectReasonCode, why: &str) -> Packet {
    Packet::Disconnect(disconnect(reason, Some(why.into())))
}

/// Whether `bytes` are exactly one well-formed MQTT 5 DISCONNECT with reason
/// `code` and no properties (property length omitted or zero).
fn is_disconnect(bytes: &[u8], code: u8) -> bool {
    bytes == [0xE0, 0x01, code] || bytes == [0xE0, 0x02, code, 0x00]
}

/// A persistent session (expiry 60 s) on `north` that ends with the client's
/// QoS 1 publish 7 (upstream id 1) and a QoS 1 delivery (upstream id 42,
/// client id 1) both unacknowledged; what it carries over.
fn left_in_flight() -> Carried {
    let mut opening = Opening::new(Server::default().build(), Version::V5);
    opening.connect = expiring(true, 60);
    let mut h = opening.start();
    h.connack();
    h.client(Packet::Publish(publish("a", QoS::AtLeastOnce, 7, b"up")))
        .unwrap();
    assert_eq!(one_publish(h.take_upstream(0)).pkid, 1);
    h.upstream(
        0,
        Packet::Publish(publish("x", QoS::AtLeastOnce, 42, b"down")),
    )
    .unwrap();
    assert_eq!(one_publish(h.take_client()).pkid, 1);
    h.session.carried(h.now).expect("a persistent session")
}

/// The session resumed (clean start off, session present) from `carried`.
fn resumed(carried: Carried) -> Harness {
    let mut opening = Opening::new(Server::default().build(), Version::V5);
    opening.connect = expiring(false, 60);
    opening.broker = ConnAck {
        session_present: true,
        ..broker_ack(None)
    };
    opening.carried = Some(carried);
    let mut h = opening.start();
    assert!(h.connack().session_present);
    h
}

#[test]
fn a_client_disconnect_is_forwarded_to_every_upstream_and_everything_is_flushed() {
    let mut h = Opening::new(two_brokers(), Version::V5).start();
    h.connack();
    let end = h.client(client_disconnect(None));
    assert!(matches!(end, Err(End::ClientDisconnected)), "{end:?}");
    assert_eq!(h.take_upstream(0), vec![client_disconnect(None)]);
    assert_eq!(h.take_upstream(1), vec![client_disconnect(None)]);
    assert_eq!(h.finish(End::ClientDisconnected), Closing::FlushAll);
    assert!(h.take_client().is_empty());
}

#[test]
fn a_clean_session_carries_nothing() {
    let h = started(Version::V5);
    assert_eq!(h.session.carried(h.now), None);
}

#[test]
fn a_session_expiry_interval_is_carried_as_a_deadline() {
    let mut opening = Opening::new(Server::default().build(), Version::V5);
    opening.connect = expiring(true, 60);
    let h = opening.start();
    let carried = h.session.carried(h.now).expect("a persistent session");
    assert_eq!(carried.expires, Some(h.now + Duration::from_secs(60)));
}

#[test]
fn a_disconnect_with_the_maximum_expiry_keeps_the_session_until_a_clean_start() {
    let mut opening = Opening::new(Server::default().build(), Version::V5);
    opening.connect = expiring(true, 60);
    let mut h = opening.start();
    let end = h.client(client_disconnect(Some(u32::MAX)));
    assert!(matches!(end, Err(End::ClientDisconnected)), "{end:?}");
    let carried = h.session.carried(h.now).expect("a persistent session");
    assert_eq!(carried.expires, None);
}

#[test]
fn a_disconnect_with_zero_expiry_leaves_nothing_to_carry() {
    let mut opening = Opening::new(Server::default().build(), Version::V5);
    opening.connect = expiring(true, 60);
    let mut h = opening.start();
    let end = h.client(client_disconnect(Some(0)));
    assert!(matches!(end, Err(End::ClientDisconnected)), "{end:?}");
    assert_eq!(h.session.carried(h.now), None);
}

#[test]
fn a_persistent_session_carries_its_unacknowledged_flows_both_ways() {
    let carried = left_in_flight();
    assert_eq!(carried.inbound, vec![(7, Arc::from("north"), 1)]);
    assert_eq!(carried.outbound, vec![(1, Arc::from("north"), 42)]);
    assert_eq!(carried.next_pkids, vec![(Arc::from("north"), 1)]);
    assert_eq!(carried.next_client_pkid, 1);
}

#[test]
fn a_resumed_session_acknowledges_a_carried_publish_with_the_clients_id() {
    let mut h = resumed(left_in_flight());
    h.upstream(0, puback(1)).unwrap();
    assert_eq!(h.take_client(), vec![puback(7)]);
}

#[test]
fn a_client_retransmission_after_resume_goes_where_the_first_copy_went_with_its_id() {
    let mut h = resumed(left_in_flight());
    let mut again = publish("a", QoS::AtLeastOnce, 7, b"up");
    again.dup = true;
    h.client(Packet::Publish(again.clone())).unwrap();
    let sent = one_publish(h.take_upstream(0));
    assert_eq!(sent, Publish { pkid: 1, ..again });
    // The flow is still the carried one: the broker's PUBACK completes it.
    h.upstream(0, puback(1)).unwrap();
    assert_eq!(h.take_client(), vec![puback(7)]);
}

#[test]
fn reusing_a_carried_packet_id_without_dup_is_a_protocol_error() {
    let mut h = resumed(left_in_flight());
    let end = h.client(Packet::Publish(publish("a", QoS::AtLeastOnce, 7, b"new")));
    assert_eq!(refused(end), DisconnectReasonCode::ProtocolError);
    assert!(h.take_upstream(0).is_empty());
}

#[test]
fn a_broker_retransmission_after_resume_reaches_the_client_under_its_carried_id() {
    let mut h = resumed(left_in_flight());
    let mut again = publish("x", QoS::AtLeastOnce, 42, b"down");
    again.dup = true;
    h.upstream(0, Packet::Publish(again.clone())).unwrap();
    assert_eq!(one_publish(h.take_client()), Publish { pkid: 1, ..again });
    // The client's PUBACK of its id goes back with the broker's.
    h.client(puback(1)).unwrap();
    assert_eq!(h.take_upstream(0), vec![puback(42)]);
}

#[test]
fn a_takeover_tells_an_mqtt5_client_its_session_was_taken_over() {
    let mut h = started(Version::V5);
    assert_eq!(h.finish(End::TakenOver), Closing::CloseClient);
    assert_eq!(
        h.take_client(),
        vec![server_disconnect(
            DisconnectReasonCode::SessionTakenOver,
            "session taken over"
        )]
    );
    assert!(h.take_upstream(0).is_empty(), "the upstream is dropped");
}

#[test]
fn a_takeover_queues_nothing_for_a_3_1_1_client() {
    let mut h = started(Version::V4);
    assert_eq!(h.finish(End::TakenOver), Closing::CloseClient);
    assert!(h.session.client_transmit().is_empty());
}

#[test]
fn draining_asks_every_broker_for_the_will_and_tells_the_client_the_server_shuts_down() {
    let mut h = Opening::new(two_brokers(), Version::V5).start();
    h.connack();
    assert_eq!(
        h.finish(End::Draining),
        Closing::FlushUpstreamsThenCloseClient
    );
    assert_eq!(
        h.take_client(),
        vec![server_disconnect(
            DisconnectReasonCode::ServerShuttingDown,
            "server shutting down"
        )]
    );
    for index in 0..2 {
        let queued = h.session.upstream_transmit(index).to_vec();
        assert!(
            is_disconnect(&queued, 0x04),
            "upstream {index}: {queued:02X?} is not one DISCONNECT 0x04"
        );
    }
}

#[test]
fn a_client_disconnect_with_will_and_no_properties_is_forwarded_with_its_reason() {
    let mut h = started(Version::V5);
    // Remaining length 1: the reason code only, no property length (MQTT 5 3.14.2.2.1).
    let end = h.client_bytes(&[0xE0, 0x01, 0x04]);
    assert!(matches!(end, Err(End::ClientDisconnected)), "{end:?}");
    let queued = h.session.upstream_transmit(0).to_vec();
    assert!(
        is_disconnect(&queued, 0x04),
        "{queued:02X?} is not one DISCONNECT 0x04"
    );
}

#[test]
fn a_broker_disconnect_is_relayed_to_an_mqtt5_client() {
    let mut h = started(Version::V5);
    let busy = disconnect(DisconnectReasonCode::ServerBusy, Some("busy".into()));
    let end = h.upstream(0, Packet::Disconnect(busy.clone()));
    let Err(end @ End::UpstreamDisconnected(0, _)) = end else {
        panic!("expected the upstream's DISCONNECT, got {end:?}");
    };
    assert_eq!(h.finish(end), Closing::CloseClient);
    assert_eq!(h.take_client(), vec![Packet::Disconnect(busy)]);
}

#[test]
fn a_lost_client_aborts_without_telling_anyone() {
    let mut h = started(Version::V5);
    let closing = h.finish(End::ClientLost("connection reset".into()));
    assert_eq!(closing, Closing::Abort);
    assert!(h.take_client().is_empty());
    assert!(
        h.take_upstream(0).is_empty(),
        "no DISCONNECT: the will fires"
    );
}

#[test]
fn a_lost_upstream_is_an_unspecified_error_for_an_mqtt5_client() {
    let mut h = started(Version::V5);
    let closing = h.finish(End::UpstreamLost(0, "connection closed".into()));
    assert_eq!(closing, Closing::CloseClient);
    assert_eq!(
        h.take_client(),
        vec![server_disconnect(
            DisconnectReasonCode::UnspecifiedError,
            "upstream north unavailable"
        )]
    );
}

#[test]
fn a_second_connect_is_a_protocol_error() {
    let mut h = started(Version::V5);
    let end = h.client(Packet::Connect(connect("c1"), None, None));
    assert_eq!(refused(end), DisconnectReasonCode::ProtocolError);
}

#[test]
fn a_packet_only_a_server_sends_is_a_protocol_error_from_a_client() {
    let mut h = started(Version::V5);
    let end = h.client(Packet::ConnAck(broker_ack(None)));
    assert_eq!(refused(end), DisconnectReasonCode::ProtocolError);
    let mut h = started(Version::V5);
    let end = h.client(Packet::SubAck(SubAck {
        pkid: 1,
        return_codes: vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)],
        properties: None,
    }));
    assert_eq!(refused(end), DisconnectReasonCode::ProtocolError);
}

#[test]
fn expired_credentials_end_an_mqtt5_session_with_maximum_connect_time() {
    let mut h = started(Version::V5);
    assert_eq!(h.finish(End::Expired), Closing::CloseClient);
    let mut expected = vec![0xE0, 24, 0xA0, 22, 0x1F, 0x00, 19];
    expected.extend_from_slice(b"credentials expired");
    assert_eq!(h.session.client_transmit().to_vec(), expected);
}

#[test]
fn expired_credentials_queue_nothing_for_a_3_1_1_client() {
    let mut h = started(Version::V4);
    assert_eq!(h.finish(End::Expired), Closing::CloseClient);
    assert!(h.session.client_transmit().is_empty());
}
