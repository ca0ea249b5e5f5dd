//! The express lanes (`state/express.rs`) against the full path: the same
//! input through a session with the lanes and one without sends the client
//! and the brokers the same bytes and ends the same way, over every QoS,
//! flag, packet id, version pairing, window state and chunking (the fuzz
//! entry's differential run, driven by crafted and by generated inputs);
//! and the lanes are taken where they should be.

use bytes::{Bytes, BytesMut};
use mqtt_bytes_v5::{
    Connect, ConnectProperties, Filter, Packet, PubAck, PubAckReason, PubComp, PubCompReason,
    PubRec, PubRecReason, PubRel, PubRelReason, Publish, PublishProperties, QoS, Subscribe,
};
use proptest::prelude::*;

use super::*;
use crate::session::fuzz::server_session;

/// One thing the client sends after its CONNECT and SUBSCRIBE.
#[derive(Debug, Clone)]
enum Step {
    Publish {
        qos: QoS,
        north: bool,
        retain: bool,
        dup: bool,
        pkid: u16,
        payload: usize,
        alias: bool,
    },
    /// Acknowledges delivery `pkid` (PUBACK; PUBREC then PUBCOMP's PUBREL).
    Ack {
        pkid: u16,
        qos2: bool,
    },
    Ping,
}

/// The fuzz entry's input: its control byte (`chunk` - 1, the brokers'
/// version, no guards), a CONNECT of `version` (topic aliases allowed or
/// not), a subscription to `north/#` at QoS 1, then `steps`.
fn input(chunk: u8, brokers_v4: bool, version: Version, aliases: bool, steps: &[Step]) -> Vec<u8> {
    let mut out = BytesMut::new();
    let connect = Connect {
        keep_alive: 0,
        client_id: "express".into(),
        clean_start: true,
        properties: (version == Version::V5).then(|| ConnectProperties {
            topic_alias_max: aliases.then_some(4),
            ..connect_properties()
        }),
    };
    codec::write(&Packet::Connect(connect, None, None), version, &mut out).unwrap();
    let subscribe = Subscribe {
        pkid: 1,
        filters: vec![Filter::new("north/#", QoS::AtLeastOnce)],
        properties: None,
    };
    codec::write(&Packet::Subscribe(subscribe), version, &mut out).unwrap();
    for step in steps {
        let packet = match step.clone() {
            Step::Publish {
                qos,
                north,
                retain,
                dup,
                pkid,
                payload,
                alias,
            } => Packet::Publish(Publish {
                dup: dup && qos != QoS::AtMostOnce,
                qos,
                retain,
                topic: if north { "north/a/b" } else { "south/c" }.into(),
                pkid: if qos == QoS::AtMostOnce { 0 } else { pkid },
                payload: Bytes::from(vec![b'x'; payload]),
                properties: (alias && version == Version::V5).then(|| PublishProperties {
                    topic_alias: Some(1),
                    ..PublishProperties::default()
                }),
            }),
            Step::Ack { pkid, qos2: false } => Packet::PubAck(PubAck {
                pkid,
                reason: PubAckReason::Success,
                properties: None,
            }),
            Step::Ack { pkid, qos2: true } => {
                let rec = Packet::PubRec(PubRec {
                    pkid,
                    reason: PubRecReason::Success,
                    properties: None,
                });
                codec::write(&rec, version, &mut out).unwrap();
                Packet::PubComp(PubComp {
                    pkid,
                    reason: PubCompReason::Success,
                    properties: None,
                })
            }
            Step::Ping => Packet::PingReq(mqtt_bytes_v5::PingReq),
        };
        codec::write(&packet, version, &mut out).unwrap();
    }
    let mut data = vec![(chunk - 1) & 0x3F | if brokers_v4 { 0x40 } else { 0 }];
    data.extend_from_slice(&out);
    data
}

fn publish(qos: QoS, north: bool, pkid: u16) -> Step {
    Step::Publish {
        qos,
        north,
        retain: false,
        dup: false,
        pkid,
        payload: 16,
        alias: false,
    }
}

/// Publishes of every QoS to both exits, more than the windows hold,
/// resent, retained, aliased; deliveries acknowledged late.
fn crafted() -> Vec<Step> {
    let mut steps = Vec::new();
    for pkid in 1..=20u16 {
        let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][usize::from(pkid % 3)];
        steps.push(publish(qos, pkid % 2 == 0, pkid));
    }
    steps.push(Step::Publish {
        qos: QoS::AtLeastOnce,
        north: true,
        retain: true,
        dup: true,
        pkid: 4,
        payload: 300,
        alias: false,
    });
    steps.push(Step::Publish {
        qos: QoS::AtLeastOnce,
        north: true,
        retain: false,
        dup: false,
        pkid: 30,
        payload: 8,
        alias: true,
    });
    // A burst of small QoS 0 publishes to both exits: runs of several
    // frames in one read, split where the route changes.
    for n in 0..16u16 {
        steps.push(Step::Publish {
            qos: QoS::AtMostOnce,
            north: n % 5 != 0,
            retain: n % 3 == 0,
            dup: false,
            pkid: 0,
            payload: usize::from(n % 4),
            alias: false,
        });
    }
    for pkid in 1..=12 {
        steps.push(Step::Ack { pkid, qos2: false });
    }
    steps.push(Step::Ping);
    for pkid in 31..=40u16 {
        steps.push(publish(QoS::AtLeastOnce, true, pkid));
    }
    steps
}

#[test]
fn the_lanes_send_what_the_full_path_sends_on_crafted_input() {
    for version in [Version::V5, Version::V4] {
        for brokers_v4 in [false, true] {
            for aliases in [false, true] {
                // Even chunks: no limits (the inbound lane open); odd: limits.
                for chunk in [2, 1, 7, 64] {
                    // Panics if the two runs differ.
                    server_session(&input(chunk, brokers_v4, version, aliases, &crafted()));
                }
            }
        }
    }
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (qos(), any::<bool>(), any::<bool>(), any::<bool>(), 1..24u16, 0..200usize, prop::bool::weighted(0.1))
            .prop_map(|(qos, north, retain, dup, pkid, payload, alias)| Step::Publish {
                qos, north, retain, dup, pkid, payload, alias,
            }),
        2 => (1..24u16, any::<bool>()).prop_map(|(pkid, qos2)| Step::Ack { pkid, qos2 }),
        1 => Just(Step::Ping),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Generated sessions: the same bytes and the same end either way.
    #[test]
    fn the_lanes_send_what_the_full_path_sends_on_generated_input(
        steps in prop::collection::vec(step(), 0..60),
        chunk in 1..=64u8,
        brokers_v4 in any::<bool>(),
        v4 in any::<bool>(),
        aliases in any::<bool>(),
    ) {
        let version = if v4 { Version::V4 } else { Version::V5 };
        server_session(&input(chunk, brokers_v4, version, aliases, &steps));
    }
}

/// A session of a `client` version client whose broker speaks `broker`,
/// its CONNACK taken.
fn connected(client: Version, broker: Version) -> Harness {
    let mut opening = Opening::new(Server::default().build(), client);
    opening.upstream_version = broker;
    let mut h = opening.start();
    let _ = h.take_client();
    h
}

/// The bytes of `packet` as `version` writes them.
fn wire(packet: &Packet, version: Version) -> Vec<u8> {
    let mut out = BytesMut::new();
    codec::write(packet, version, &mut out).unwrap();
    out.to_vec()
}

#[test]
fn a_plain_publish_goes_on_as_its_frame_with_the_upstreams_packet_id() {
    for version in [Version::V5, Version::V4] {
        let mut h = connected(version, version);
        let mut sent = Publish::new("sensors/1", QoS::AtLeastOnce, "21.5", None);
        sent.pkid = 700;
        let frame = wire(&Packet::Publish(sent.clone()), version);
        h.client_bytes(&frame).unwrap();
        assert_eq!(h.session.express_taken(), 1, "{version:?}");
        let upstream = h.session.upstream_transmit(0).to_vec();
        let mut expected = sent;
        expected.pkid = 1;
        assert_eq!(upstream, wire(&Packet::Publish(expected), version));
        // Its PUBACK comes back under the client's id.
        h.upstream(0, Packet::PubAck(PubAck::new(1, None))).unwrap();
        assert_eq!(one(h.take_client()), Packet::PubAck(PubAck::new(700, None)));
    }
}

#[test]
fn a_publish_that_needs_more_than_its_packet_id_takes_the_full_path() {
    // Properties (a message expiry): decoded and encoded.
    let mut h = started(Version::V5);
    let properties = PublishProperties {
        message_expiry_interval: Some(60),
        ..PublishProperties::default()
    };
    let frame = wire(
        &Packet::Publish(Publish::new(
            "north/a",
            QoS::AtMostOnce,
            "x",
            Some(properties),
        )),
        Version::V5,
    );
    h.client_bytes(&frame).unwrap();
    assert_eq!(h.session.express_taken(), 0);
    assert_eq!(h.take_upstream(0).len(), 1);
}

#[test]
fn a_publish_between_versions_takes_the_lane_rewritten() {
    for (client, broker) in [(Version::V4, Version::V5), (Version::V5, Version::V4)] {
        let mut h = connected(client, broker);
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            let mut sent = Publish::new("a", qos, "x", None);
            sent.pkid = if qos == QoS::AtMostOnce { 0 } else { 40 };
            let taken = h.session.express_taken();
            h.client_bytes(&wire(&Packet::Publish(sent.clone()), client))
                .unwrap();
            assert_eq!(h.session.express_taken(), taken + 1, "{client:?} {qos:?}");
            let mut expected = sent;
            expected.pkid = if qos == QoS::AtMostOnce { 0 } else { 1 };
            let upstream = h.session.upstream_transmit(0).split().to_vec();
            assert_eq!(upstream, wire(&Packet::Publish(expected), broker));
        }
    }
}

#[test]
fn the_release_of_a_qos2_delivery_is_unchanged() {
    // Deliveries of QoS 2 take the lane; the PUBREL/PUBCOMP that follow
    // go the full way, as before.
    let mut h = started(Version::V5);
    let mut delivery = Publish::new("north/x", QoS::ExactlyOnce, "p", None);
    delivery.pkid = 9;
    h.upstream(0, Packet::Publish(delivery)).unwrap();
    let Packet::Publish(got) = one(h.take_client()) else {
        panic!("a delivery")
    };
    h.client(Packet::PubRec(PubRec::new(got.pkid, None)))
        .unwrap();
    assert_eq!(
        one(h.take_upstream(0)),
        Packet::PubRec(PubRec::new(9, None))
    );
    h.upstream(
        0,
        Packet::PubRel(PubRel {
            pkid: 9,
            reason: PubRelReason::Success,
            properties: None,
        }),
    )
    .unwrap();
    assert_eq!(
        one(h.take_client()),
        Packet::PubRel(PubRel::new(got.pkid, None))
    );
}

#[test]
fn a_run_of_qos0_publishes_goes_on_as_one_copy_each_way() {
    for version in [Version::V5, Version::V4] {
        let mut h = connected(version, version);
        // 40 QoS 0 (some retained), a QoS 1 in the middle, 10 more.
        let mut sent = Vec::new();
        let mut expected = Vec::new();
        for n in 0..51u16 {
            let qos = if n == 40 {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            };
            let mut publish = Publish::new(format!("sensors/{n}"), qos, vec![n as u8; 70], None);
            publish.retain = n % 7 == 0;
            if qos == QoS::AtLeastOnce {
                publish.pkid = 900;
            }
            sent.extend(wire(&Packet::Publish(publish.clone()), version));
            if qos == QoS::AtLeastOnce {
                publish.pkid = 1;
            }
            expected.extend(wire(&Packet::Publish(publish), version));
        }
        h.client_bytes(&sent).unwrap();
        assert_eq!(h.session.express_taken(), 51, "{version:?}");
        assert_eq!(h.session.upstream_transmit(0).to_vec(), expected);
        // Deliveries: a run of 30 and an incomplete one that waits.
        let mut delivered = Vec::new();
        for n in 0..31u16 {
            let publish = Publish::new(format!("north/{n}"), QoS::AtMostOnce, vec![1; 50], None);
            delivered.extend(wire(&Packet::Publish(publish), version));
        }
        // The last one comes in two reads: it waits whole in the buffer.
        let whole = delivered.len() - 10;
        let mut buf = BytesMut::from(&delivered[..whole]);
        h.session.on_upstream_bytes(h.now, 0, &mut buf).unwrap();
        assert_eq!(h.session.express_taken(), 51 + 30, "{version:?}");
        let to_client = h.session.client_transmit().split().to_vec();
        assert_eq!(to_client, delivered[..to_client.len()]);
        buf.extend_from_slice(&delivered[whole..]);
        h.session.on_upstream_bytes(h.now, 0, &mut buf).unwrap();
        assert!(buf.is_empty());
        let rest = h.session.client_transmit().split().to_vec();
        assert_eq!([to_client, rest].concat(), delivered);
    }
}
