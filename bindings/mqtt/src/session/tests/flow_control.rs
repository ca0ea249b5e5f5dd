//! Flow control owned by the proxy: publishes beyond a broker's window wait
//! in the session, full buffers pause reading instead of disconnecting, and
//! a 3.1.1 client is never refused for the number of its flows.

use mqtt_bytes_v5::{PingReq, PubRec, PubRecReason};

use super::*;

/// A broker whose Receive Maximum is `window`.
fn window(window: u16) -> ConnAck {
    broker_ack(Some(ConnAckProperties {
        receive_max: Some(window),
        ..broker_properties()
    }))
}

/// A `version` client before one broker with receive maximum `broker`,
/// on a server with `flow`; its CONNACK drained.
fn session(version: Version, broker: u16, flow: Flow) -> Harness {
    let config = Server {
        flow,
        ..Server::default()
    }
    .build();
    let mut opening = Opening::new(config, version);
    opening.broker = window(broker);
    let mut h = opening.start();
    h.connack();
    h
}

/// The packet ids of the publishes in `packets`.
fn publish_ids(packets: Vec<Packet>) -> Vec<u16> {
    packets
        .into_iter()
        .map(|packet| match packet {
            Packet::Publish(publish) => publish.pkid,
            other => panic!("expected a PUBLISH, got {other:?}"),
        })
        .collect()
}

/// The payloads of the publishes in `packets`.
fn payloads(packets: Vec<Packet>) -> Vec<Bytes> {
    packets
        .into_iter()
        .map(|packet| match packet {
            Packet::Publish(publish) => publish.payload,
            other => panic!("expected a PUBLISH, got {other:?}"),
        })
        .collect()
}

fn qos1(pkid: u16) -> Packet {
    Packet::Publish(publish("a", QoS::AtLeastOnce, pkid, b"m"))
}

#[test]
fn a_v5_client_is_told_the_proxys_receive_maximum_not_the_brokers() {
    let config = Server {
        flow: Flow {
            receive_maximum: 1000,
            ..Flow::default()
        },
        ..Server::default()
    }
    .build();
    let mut opening = Opening::new(config, Version::V5);
    opening.broker = window(20);
    let mut h = opening.start();
    let properties = h.connack().properties.expect("properties");
    assert_eq!(properties.receive_max, Some(1000));
}

#[test]
fn publishes_beyond_the_brokers_window_wait_and_go_in_order_as_it_acknowledges() {
    let mut h = session(Version::V5, 2, Flow::default());
    for pkid in 10..15 {
        h.client(qos1(pkid)).unwrap();
    }
    assert_eq!(
        publish_ids(h.take_upstream(0)),
        vec![1, 2],
        "the window is 2"
    );
    assert!(h.take_client().is_empty(), "nothing acknowledged yet");
    h.upstream(0, puback(1)).unwrap();
    assert_eq!(h.take_client(), vec![puback(10)]);
    assert_eq!(publish_ids(h.take_upstream(0)), vec![3]);
    h.upstream(0, puback(2)).unwrap();
    h.upstream(0, puback(3)).unwrap();
    assert_eq!(h.take_client(), vec![puback(11), puback(12)]);
    assert_eq!(publish_ids(h.take_upstream(0)), vec![4, 5]);
    h.upstream(0, puback(5)).unwrap();
    h.upstream(0, puback(4)).unwrap();
    assert_eq!(h.take_client(), vec![puback(14), puback(13)]);
}

#[test]
fn a_3_1_1_client_is_never_refused_for_the_number_of_its_flows() {
    let mut h = session(Version::V4, 20, Flow::default());
    for pkid in 1..=2000 {
        h.client(qos1(pkid)).unwrap();
    }
    assert_eq!(h.take_upstream(0).len(), 20);
    // Every broker acknowledgement lets the next one go; all are answered.
    let mut acknowledged = 0;
    let mut next = 1;
    while acknowledged < 2000 {
        h.upstream(0, puback(next)).unwrap();
        next = next % 2000 + 1;
        acknowledged += h.take_client().len();
        h.take_upstream(0);
    }
    assert!(h.session.wants_client_input());
}

#[test]
fn a_v5_client_beyond_the_proxys_receive_maximum_gets_0x93() {
    let flow = Flow {
        receive_maximum: 3,
        ..Flow::default()
    };
    let mut h = session(Version::V5, 1, flow);
    for pkid in 1..=3 {
        h.client(qos1(pkid)).unwrap();
    }
    assert_eq!(
        refused(h.client(qos1(4))),
        DisconnectReasonCode::ReceiveMaximumExceeded
    );
}

#[test]
fn a_v5_client_within_the_proxys_receive_maximum_is_not_bound_by_the_brokers() {
    let mut h = session(Version::V5, 1, Flow::default());
    for pkid in 1..=100 {
        h.client(qos1(pkid)).unwrap();
    }
    assert_eq!(h.take_upstream(0).len(), 1);
}

#[test]
fn a_full_publish_buffer_pauses_reading_and_an_acknowledgement_resumes_it() {
    let flow = Flow {
        publish_buffer: 40,
        ..Flow::default()
    };
    let mut h = session(Version::V5, 1, flow);
    // Five publishes in one read: the first goes, the next ones wait until
    // their bytes fill the buffer, and the rest stay unread.
    let mut bytes = BytesMut::new();
    for pkid in 1..=5 {
        codec::write(
            &Packet::Publish(publish("a", QoS::AtLeastOnce, pkid, b"0123456789")),
            Version::V5,
            &mut bytes,
        )
        .unwrap();
    }
    h.session.on_client_bytes(h.now, &mut bytes).unwrap();
    assert!(!h.session.wants_client_input());
    assert!(!bytes.is_empty(), "what does not fit stays unread");
    assert_eq!(h.take_upstream(0).len(), 1);
    h.upstream(0, puback(1)).unwrap();
    assert!(h.session.wants_client_input());
    h.session.resume_client_input(&mut bytes).unwrap();
    assert!(bytes.is_empty());
    assert_eq!(h.take_client(), vec![puback(1)]);
    assert!(
        h.session.buffered() <= 40 + 30,
        "bounded by the buffer and one publish"
    );
}

#[test]
fn a_qos0_publish_waits_behind_queued_ones_so_order_is_kept() {
    let mut h = session(Version::V5, 1, Flow::default());
    h.client(Packet::Publish(publish("a", QoS::AtLeastOnce, 1, b"first")))
        .unwrap();
    h.client(Packet::Publish(publish(
        "a",
        QoS::AtLeastOnce,
        2,
        b"second",
    )))
    .unwrap();
    h.client(Packet::Publish(publish("a", QoS::AtMostOnce, 0, b"third")))
        .unwrap();
    assert_eq!(
        payloads(h.take_upstream(0)),
        vec![Bytes::from_static(b"first")]
    );
    h.upstream(0, puback(1)).unwrap();
    assert_eq!(
        payloads(h.take_upstream(0)),
        vec![Bytes::from_static(b"second"), Bytes::from_static(b"third")]
    );
}

#[test]
fn a_qos2_flow_holds_its_place_in_the_window_until_the_brokers_pubcomp() {
    let mut h = session(Version::V5, 1, Flow::default());
    h.client(Packet::Publish(publish("a", QoS::ExactlyOnce, 7, b"x")))
        .unwrap();
    h.client(Packet::Publish(publish("a", QoS::ExactlyOnce, 8, b"y")))
        .unwrap();
    assert_eq!(publish_ids(h.take_upstream(0)), vec![1]);
    // The broker's PUBREC goes to the client, and the proxy releases the
    // message to the broker at once: the window need not wait for the
    // client's PUBREL, which may sit behind publishes not read yet.
    h.upstream(0, pubrec(1)).unwrap();
    assert_eq!(h.take_client(), vec![pubrec(7)]);
    assert_eq!(
        h.take_upstream(0),
        vec![pubrel(1)],
        "PUBREC does not free the window"
    );
    h.upstream(0, pubcomp(1)).unwrap();
    assert_eq!(publish_ids(h.take_upstream(0)), vec![2], "PUBCOMP does");
    assert!(
        h.take_client().is_empty(),
        "no PUBCOMP before the client's PUBREL"
    );
    // The client's PUBREL is answered with the broker's PUBCOMP.
    h.client(pubrel(7)).unwrap();
    assert_eq!(h.take_client(), vec![pubcomp(7)]);
    assert!(
        h.take_upstream(0).is_empty(),
        "the broker was released already"
    );
}

#[test]
fn a_clients_pubrel_before_the_brokers_pubcomp_waits_for_it() {
    let mut h = session(Version::V5, 1, Flow::default());
    h.client(Packet::Publish(publish("a", QoS::ExactlyOnce, 7, b"x")))
        .unwrap();
    h.take_upstream(0);
    h.upstream(0, pubrec(1)).unwrap();
    h.take_client();
    h.take_upstream(0);
    h.client(pubrel(7)).unwrap();
    h.client(pubrel(7)).unwrap();
    assert!(h.take_client().is_empty());
    assert!(h.take_upstream(0).is_empty());
    h.upstream(0, pubcomp(1)).unwrap();
    assert_eq!(h.take_client(), vec![pubcomp(7)], "once");
    // The flow is over: id 7 is free again.
    h.client(Packet::Publish(publish("a", QoS::ExactlyOnce, 7, b"again")))
        .unwrap();
    assert_eq!(publish_ids(h.take_upstream(0)), vec![2]);
}

#[test]
fn a_failed_pubrec_frees_the_window() {
    let mut h = session(Version::V5, 1, Flow::default());
    h.client(Packet::Publish(publish("a", QoS::ExactlyOnce, 7, b"x")))
        .unwrap();
    h.client(Packet::Publish(publish("a", QoS::ExactlyOnce, 8, b"y")))
        .unwrap();
    h.take_upstream(0);
    h.upstream(
        0,
        Packet::PubRec(PubRec {
            pkid: 1,
            reason: PubRecReason::QuotaExceeded,
            properties: None,
        }),
    )
    .unwrap();
    assert_eq!(publish_ids(h.take_upstream(0)), vec![2]);
}

#[test]
fn a_retransmitted_publish_that_still_waits_is_not_queued_twice() {
    let mut h = session(Version::V5, 1, Flow::default());
    h.client(qos1(1)).unwrap();
    h.client(qos1(2)).unwrap();
    let mut again = publish("a", QoS::AtLeastOnce, 2, b"m");
    again.dup = true;
    h.client(Packet::Publish(again)).unwrap();
    h.take_upstream(0);
    h.upstream(0, puback(1)).unwrap();
    assert_eq!(publish_ids(h.take_upstream(0)), vec![2], "once");
    h.upstream(0, puback(2)).unwrap();
    assert_eq!(h.take_client(), vec![puback(1), puback(2)]);
}

#[test]
fn publishes_still_queued_are_not_carried_to_the_next_connection() {
    let mut opening = Opening::new(Server::default().build(), Version::V5);
    opening.broker = window(1);
    let mut properties = connect_properties();
    properties.session_expiry_interval = Some(60);
    opening.connect.properties = Some(properties);
    let mut h = opening.start();
    h.connack();
    h.client(qos1(1)).unwrap();
    h.client(qos1(2)).unwrap();
    let carried = h.session.carried(h.now).expect("persistent");
    assert_eq!(carried.inbound, vec![(1, "north".into(), 1)]);
}

#[test]
fn deliveries_beyond_the_clients_window_fill_the_delivery_buffer_and_pause_the_brokers() {
    let mut opening = Opening::new(
        Server {
            flow: Flow {
                delivery_buffer: 60,
                ..Flow::default()
            },
            ..Server::default()
        }
        .build(),
        Version::V5,
    );
    let mut properties = connect_properties();
    properties.receive_maximum = Some(1);
    opening.connect.properties = Some(properties);
    let mut h = opening.start();
    h.connack();
    let mut bytes = BytesMut::new();
    for pkid in 1..=6 {
        codec::write(
            &Packet::Publish(publish("t", QoS::AtLeastOnce, pkid, b"0123456789")),
            Version::V5,
            &mut bytes,
        )
        .unwrap();
    }
    h.session.on_upstream_bytes(h.now, 0, &mut bytes).unwrap();
    assert!(!h.session.wants_upstream_input());
    assert!(
        !bytes.is_empty(),
        "the rest waits unread at the broker's side"
    );
    assert_eq!(publish_ids(h.take_client()), vec![1]);
    h.client(puback(1)).unwrap();
    assert_eq!(publish_ids(h.take_client()), vec![2]);
    assert!(h.session.wants_upstream_input());
}

#[test]
fn a_paused_client_is_not_timed_out_for_the_packets_the_proxy_leaves_unread() {
    let flow = Flow {
        publish_buffer: 10,
        ..Flow::default()
    };
    let mut h = session(Version::V5, 1, flow);
    h.client(qos1(1)).unwrap();
    h.client(qos1(2)).unwrap();
    assert!(!h.session.wants_client_input());
    // Keep-alive 60 s: 1.5 x is 90 s; the broker keeps answering pings.
    for _ in 0..4 {
        h.advance(Duration::from_secs(60)).unwrap();
        if h.take_upstream(0).contains(&Packet::PingReq(PingReq)) {
            h.upstream(0, Packet::PingResp(mqtt_bytes_v5::PingResp))
                .unwrap();
        }
    }
}

#[test]
fn an_unread_pingresp_does_not_lose_a_paused_upstream() {
    let mut opening = Opening::new(
        Server {
            flow: Flow {
                delivery_buffer: 1,
                ..Flow::default()
            },
            ..Server::default()
        }
        .build(),
        Version::V5,
    );
    let mut properties = connect_properties();
    properties.receive_maximum = Some(1);
    opening.connect.properties = Some(properties);
    opening.connect.keep_alive = 0;
    let mut h = opening.start();
    h.connack();
    h.upstream(0, qos1(1)).unwrap();
    h.upstream(0, qos1(2)).unwrap();
    assert!(!h.session.wants_upstream_input());
    for _ in 0..5 {
        h.advance(Duration::from_secs(60)).unwrap();
    }
}

#[test]
fn a_qos2_flow_the_broker_completed_is_completed_for_the_resumed_client() {
    let persistent = |carried: Option<Carried>| {
        let mut opening = Opening::new(Server::default().build(), Version::V5);
        let mut properties = connect_properties();
        properties.session_expiry_interval = Some(300);
        opening.connect.properties = Some(properties);
        opening.connect.clean_start = carried.is_none();
        opening.carried = carried;
        let mut h = opening.start();
        h.connack();
        h
    };
    let mut h = persistent(None);
    h.client(Packet::Publish(publish("a", QoS::ExactlyOnce, 1, b"x")))
        .unwrap();
    h.take_upstream(0);
    h.upstream(0, pubrec(1)).unwrap();
    h.upstream(0, pubcomp(1)).unwrap();
    // The connection drops before the client's PUBREL.
    let carried = h.session.carried(h.now).expect("persistent");
    assert_eq!(carried.completed, vec![1]);
    assert!(carried.inbound.is_empty());
    let mut h = persistent(Some(carried));
    h.client(pubrel(1)).unwrap();
    assert_eq!(h.take_client(), vec![pubcomp(1)]);
    assert!(h.take_upstream(0).is_empty(), "answered by the proxy");
}
