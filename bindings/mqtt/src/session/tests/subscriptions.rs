//! SUBSCRIBE and UNSUBSCRIBE split by route over the upstreams, and the one
//! SUBACK or UNSUBACK the client gets, merged from theirs and the proxy's own codes.

use mqtt_bytes_v5::{
    PubAck, PubAckReason, SubAck, SubAckProperties, SubscribeReasonCode, UnsubAck, UnsubAckReason,
    Unsubscribe,
};

use super::*;

/// Two brokers and no default exit: `north/#` and `south/#` only.
fn two_brokers_only() -> Arc<ServerConfig> {
    Server {
        routes: r#"
- exit: north
  when:
    - subscribe: [{topic: "north/#"}]
- exit: south
  when:
    - subscribe: [{topic: "south/#"}]
"#,
        exit: None,
        ..Server::default()
    }
    .build()
}

/// A guarded server without default exit: `public/#` for everyone,
/// `secret/#` only with the `admin` role.
fn guarded() -> Arc<ServerConfig> {
    Server {
        routes: r#"
- exit: north
  when:
    - subscribe: [{topic: "public/#"}]
- exit: north
  roles: [admin]
  when:
    - subscribe: [{topic: "secret/#"}]
"#,
        exit: None,
        guard: true,
        ..Server::default()
    }
    .build()
}

fn suback(pkid: u16, return_codes: Vec<SubscribeReasonCode>) -> Packet {
    Packet::SubAck(SubAck {
        pkid,
        return_codes,
        properties: None,
    })
}

fn unsubscribe(pkid: u16, filters: &[&str]) -> Packet {
    Packet::Unsubscribe(Unsubscribe {
        pkid,
        filters: filters.iter().map(|f| (*f).to_owned()).collect(),
        properties: None,
    })
}

fn unsuback(pkid: u16, reasons: Vec<UnsubAckReason>) -> Packet {
    Packet::UnsubAck(UnsubAck {
        pkid,
        reasons,
        properties: None,
    })
}

const GRANTED: SubscribeReasonCode = SubscribeReasonCode::Success(QoS::AtLeastOnce);

#[test]
fn a_subscribe_split_over_two_upstreams_is_acknowledged_once_in_the_clients_order() {
    let mut h = Opening::new(two_brokers(), Version::V5).start();
    h.connack();
    // North's next packet id is 2: each upstream numbers its own requests.
    h.client(Packet::Publish(publish(
        "north/p",
        QoS::AtLeastOnce,
        1,
        b"m",
    )))
    .unwrap();
    one_publish(h.take_upstream(0));
    h.client(subscribe(42, &["south/a", "north/a", "south/b", "north/b"]))
        .unwrap();
    assert_eq!(
        h.take_upstream(0),
        vec![subscribe(2, &["north/a", "north/b"])]
    );
    assert_eq!(
        h.take_upstream(1),
        vec![subscribe(1, &["south/a", "south/b"])]
    );
    let south = vec![GRANTED, SubscribeReasonCode::Success(QoS::AtMostOnce)];
    h.upstream(1, suback(1, south)).unwrap();
    assert!(h.take_client().is_empty(), "the SUBACK waits for north too");
    let north = vec![GRANTED, SubscribeReasonCode::QuotaExceeded];
    h.upstream(0, suback(2, north)).unwrap();
    assert_eq!(
        h.take_client(),
        vec![suback(
            42,
            vec![
                GRANTED,
                GRANTED,
                SubscribeReasonCode::Success(QoS::AtMostOnce),
                SubscribeReasonCode::QuotaExceeded,
            ]
        )]
    );
}

#[test]
fn a_merged_suback_keeps_the_first_reason_string_and_every_user_property() {
    let mut h = Opening::new(two_brokers(), Version::V5).start();
    h.connack();
    h.client(subscribe(7, &["north/a", "south/a"])).unwrap();
    let (north, south) = (h.take_upstream(0), h.take_upstream(1));
    assert_eq!((north.len(), south.len()), (1, 1));
    let answer = |reason: &str, from: &str| {
        Packet::SubAck(SubAck {
            pkid: 1,
            return_codes: vec![GRANTED],
            properties: Some(SubAckProperties {
                reason_string: Some(reason.into()),
                user_properties: vec![("from".into(), from.into())],
            }),
        })
    };
    h.upstream(1, answer("south first", "south")).unwrap();
    h.upstream(0, answer("north second", "north")).unwrap();
    assert_eq!(
        h.take_client(),
        vec![Packet::SubAck(SubAck {
            pkid: 7,
            return_codes: vec![GRANTED, GRANTED],
            properties: Some(SubAckProperties {
                reason_string: Some("south first".into()),
                user_properties: vec![
                    ("from".into(), "south".into()),
                    ("from".into(), "north".into()),
                ],
            }),
        })]
    );
}

#[test]
fn an_invalid_filter_is_refused_without_going_upstream() {
    let mut h = Opening::new(Server::default().build(), Version::V5).start();
    h.connack();
    h.client(subscribe(3, &["a/#/b", "a/b"])).unwrap();
    assert_eq!(h.take_upstream(0), vec![subscribe(1, &["a/b"])]);
    h.upstream(0, suback(1, vec![GRANTED])).unwrap();
    assert_eq!(
        h.take_client(),
        vec![suback(
            3,
            vec![SubscribeReasonCode::TopicFilterInvalid, GRANTED]
        )]
    );
}

#[test]
fn a_filter_only_a_guarded_route_takes_is_not_authorized_without_the_role() {
    let mut h = Opening::new(guarded(), Version::V5).token("bob:").start();
    h.connack();
    h.client(subscribe(4, &["secret/x", "public/x"])).unwrap();
    assert_eq!(h.take_upstream(0), vec![subscribe(1, &["public/x"])]);
    h.upstream(0, suback(1, vec![GRANTED])).unwrap();
    assert_eq!(
        h.take_client(),
        vec![suback(4, vec![SubscribeReasonCode::NotAuthorized, GRANTED])]
    );
}

#[test]
fn a_subscribe_the_proxy_refuses_entirely_is_answered_at_once() {
    let mut h = Opening::new(guarded(), Version::V5).token("bob:").start();
    h.connack();
    h.client(subscribe(6, &["a/#/b", "secret/x"])).unwrap();
    assert_eq!(
        h.take_client(),
        vec![suback(
            6,
            vec![
                SubscribeReasonCode::TopicFilterInvalid,
                SubscribeReasonCode::NotAuthorized,
            ]
        )]
    );
    assert!(h.take_upstream(0).is_empty(), "nothing to ask a broker");
}

#[test]
fn an_unsubscribe_split_over_two_upstreams_is_acknowledged_once_in_the_clients_order() {
    let mut h = Opening::new(two_brokers_only(), Version::V5).start();
    h.connack();
    h.client(unsubscribe(9, &["south/a", "north/a", "south/b"]))
        .unwrap();
    assert_eq!(h.take_upstream(0), vec![unsubscribe(1, &["north/a"])]);
    assert_eq!(
        h.take_upstream(1),
        vec![unsubscribe(1, &["south/a", "south/b"])]
    );
    let south = vec![
        UnsubAckReason::Success,
        UnsubAckReason::NoSubscriptionExisted,
    ];
    h.upstream(1, unsuback(1, south)).unwrap();
    assert!(
        h.take_client().is_empty(),
        "the UNSUBACK waits for north too"
    );
    h.upstream(0, unsuback(1, vec![UnsubAckReason::NotAuthorized]))
        .unwrap();
    assert_eq!(
        h.take_client(),
        vec![unsuback(
            9,
            vec![
                UnsubAckReason::Success,
                UnsubAckReason::NotAuthorized,
                UnsubAckReason::NoSubscriptionExisted,
            ]
        )]
    );
}

#[test]
fn unsubscribing_a_filter_no_route_takes_reads_as_no_subscription_existed() {
    let mut h = Opening::new(two_brokers_only(), Version::V5).start();
    h.connack();
    h.client(unsubscribe(2, &["elsewhere/x"])).unwrap();
    assert_eq!(
        h.take_client(),
        vec![unsuback(2, vec![UnsubAckReason::NoSubscriptionExisted])]
    );
    assert!(h.take_upstream(0).is_empty());
    assert!(h.take_upstream(1).is_empty());
}

#[test]
fn a_3_1_1_brokers_unsuback_without_reason_codes_reads_as_success() {
    let mut opening = Opening::new(Server::default().build(), Version::V5);
    opening.upstream_version = Version::V4;
    let mut h = opening.start();
    h.connack();
    h.client(unsubscribe(8, &["a", "b"])).unwrap();
    assert_eq!(h.take_upstream(0), vec![unsubscribe(1, &["a", "b"])]);
    h.upstream(0, unsuback(1, Vec::new())).unwrap();
    assert_eq!(
        h.take_client(),
        vec![unsuback(8, vec![UnsubAckReason::Success; 2])]
    );
}

#[test]
fn an_unsuback_for_a_subscribes_packet_id_leaves_the_subscribe_pending() {
    let mut h = Opening::new(Server::default().build(), Version::V5).start();
    h.connack();
    h.client(subscribe(5, &["a"])).unwrap();
    assert_eq!(h.take_upstream(0), vec![subscribe(1, &["a"])]);
    h.upstream(0, unsuback(1, vec![UnsubAckReason::Success]))
        .unwrap();
    assert!(h.take_client().is_empty(), "not the SUBACK it waits for");
    h.upstream(0, suback(1, vec![GRANTED])).unwrap();
    assert_eq!(h.take_client(), vec![suback(5, vec![GRANTED])]);
}

#[test]
fn a_puback_for_a_subscribes_packet_id_leaves_the_subscribe_pending() {
    let mut h = Opening::new(Server::default().build(), Version::V5).start();
    h.connack();
    h.client(subscribe(5, &["a"])).unwrap();
    assert_eq!(h.take_upstream(0), vec![subscribe(1, &["a"])]);
    h.upstream(
        0,
        Packet::PubAck(PubAck {
            pkid: 1,
            reason: PubAckReason::Success,
            properties: None,
        }),
    )
    .unwrap();
    assert!(h.take_client().is_empty(), "not the SUBACK it waits for");
    h.upstream(0, suback(1, vec![GRANTED])).unwrap();
    assert_eq!(h.take_client(), vec![suback(5, vec![GRANTED])]);
}

#[test]
fn a_3_1_1_clients_suback_says_failure_for_a_refused_filter() {
    let mut h = Opening::new(Server::default().build(), Version::V4).start();
    h.connack();
    h.client(subscribe(11, &["a/#/b", "a/b"])).unwrap();
    assert_eq!(h.take_upstream(0), vec![subscribe(1, &["a/b"])]);
    h.upstream(0, suback(1, vec![GRANTED])).unwrap();
    // 3.1.1 has one failure code, 0x80, which reads back as Unspecified.
    assert_eq!(
        h.take_client(),
        vec![suback(11, vec![SubscribeReasonCode::Unspecified, GRANTED])]
    );
}
