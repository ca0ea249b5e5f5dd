//! What the proxy offers MQTT 5 clients whatever its brokers do: a server
//! keep-alive it imposes, and topic aliases on its deliveries.

use super::*;

/// A `version` client allowing `aliases` topic aliases, on a server that
/// assigns up to `server_aliases` and imposes `keep_alive`; CONNACK drained.
fn session(
    version: Version,
    aliases: Option<u16>,
    server_aliases: u16,
    keep_alive: Option<u16>,
) -> (Harness, ConnAck) {
    let config = Server {
        client_topic_aliases: server_aliases,
        server_keep_alive: keep_alive,
        ..Server::default()
    }
    .build();
    let mut opening = Opening::new(config, version);
    if version == Version::V5 {
        let mut properties = connect_properties();
        properties.topic_alias_max = aliases;
        opening.connect.properties = Some(properties);
    }
    let mut h = opening.start();
    let ack = h.connack();
    (h, ack)
}

/// (topic, alias) of each publish in `packets`.
fn topics(packets: Vec<Packet>) -> Vec<(String, Option<u16>)> {
    packets
        .into_iter()
        .map(|packet| match packet {
            Packet::Publish(p) => (p.topic, p.properties.and_then(|p| p.topic_alias)),
            other => panic!("expected a PUBLISH, got {other:?}"),
        })
        .collect()
}

fn deliver(h: &mut Harness, topic: &str) {
    h.upstream(
        0,
        Packet::Publish(publish(topic, QoS::AtMostOnce, 0, b"reading")),
    )
    .unwrap();
}

#[test]
fn a_server_keep_alive_is_told_to_a_v5_client_and_enforced() {
    let (mut h, ack) = session(Version::V5, None, 0, Some(20));
    assert_eq!(ack.properties.and_then(|p| p.server_keep_alive), Some(20));
    // The client asked for 60 s; the proxy holds it to 20 s (1.5 x: 30 s).
    h.advance(Duration::from_secs(29)).unwrap();
    h.take_upstream(0);
    assert_eq!(
        refused(h.advance(Duration::from_secs(1))),
        DisconnectReasonCode::KeepAliveTimeout
    );
}

#[test]
fn a_3_1_1_client_keeps_its_own_keep_alive_under_a_server_keep_alive() {
    let (mut h, _) = session(Version::V4, None, 0, Some(20));
    h.advance(Duration::from_secs(60)).unwrap();
    h.take_upstream(0);
    h.advance(Duration::from_secs(29)).unwrap();
    assert!(h.advance(Duration::from_secs(1)).is_err(), "60 s x 1.5");
}

#[test]
fn deliveries_take_topic_aliases_the_client_allows() {
    let (mut h, _) = session(Version::V5, Some(2), 4, None);
    for topic in [
        "sensors/a",
        "sensors/a",
        "sensors/b",
        "sensors/c",
        "sensors/b",
    ] {
        deliver(&mut h, topic);
    }
    assert_eq!(
        topics(h.take_client()),
        vec![
            ("sensors/a".into(), Some(1)),
            (String::new(), Some(1)),
            ("sensors/b".into(), Some(2)),
            // The client allows two: a third topic goes in full.
            ("sensors/c".into(), None),
            (String::new(), Some(2)),
        ]
    );
}

#[test]
fn the_server_option_bounds_the_aliases_and_defaults_to_none() {
    let (mut h, _) = session(Version::V5, Some(10), 1, None);
    deliver(&mut h, "a");
    deliver(&mut h, "b");
    assert_eq!(
        topics(h.take_client()),
        vec![("a".into(), Some(1)), ("b".into(), None)]
    );
    let (mut h, _) = session(Version::V5, Some(10), 0, None);
    deliver(&mut h, "a");
    deliver(&mut h, "a");
    assert_eq!(
        topics(h.take_client()),
        vec![("a".into(), None), ("a".into(), None)]
    );
}

#[test]
fn a_client_that_allows_no_aliases_gets_none() {
    let (mut h, _) = session(Version::V5, None, 8, None);
    deliver(&mut h, "a");
    deliver(&mut h, "a");
    assert_eq!(
        topics(h.take_client()),
        vec![("a".into(), None), ("a".into(), None)]
    );
}

#[test]
fn an_alias_is_assigned_only_by_a_delivery_the_client_gets() {
    let config = Server {
        client_topic_aliases: 4,
        ..Server::default()
    }
    .build();
    let mut opening = Opening::new(config, Version::V5);
    let mut properties = connect_properties();
    properties.topic_alias_max = Some(4);
    properties.max_packet_size = Some(64);
    opening.connect.properties = Some(properties);
    let mut h = opening.start();
    h.connack();
    // Too large for the client: dropped, and its alias not taken.
    h.upstream(
        0,
        Packet::Publish(publish("big", QoS::AtMostOnce, 0, &[b'x'; 100])),
    )
    .unwrap();
    deliver(&mut h, "big");
    assert_eq!(topics(h.take_client()), vec![("big".into(), Some(1))]);
}
