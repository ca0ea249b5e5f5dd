//! Routing one fleet across two brokers: by publish topic, by subscribe
//! filter, by client id, and one client whose topics land on both brokers.

use bytes::Bytes;
use zilla as _;
use zilla_testkit::mqtt::packets::{
    DisconnectReasonCode, Filter, Packet, Publish, QoS, RetainForwardRule, Subscribe,
    SubscribeReasonCode,
};
use zilla_testkit::mqtt::RawMqtt;
use zilla_testkit::proxy::{mqtt_proxy_yaml, Proxy};
use zilla_testkit::Mosquitto;

const FLEET_ROUTES: &str = "
    routes:
      - when:
          - session:
              - client-id: fleet-b-*
        exit: mqtt_client_b
      - when:
          - publish:
              - topic: b/#
          - subscribe:
              - topic: b/#
        exit: mqtt_client_b
    exit: mqtt_client_a";

fn publish(topic: &str, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic.into(),
        pkid: 1,
        payload: Bytes::from_static(payload),
        properties: None,
    })
}

fn subscribe(pkid: u16, filters: &[&str]) -> Packet {
    Packet::Subscribe(Subscribe {
        pkid,
        filters: filters
            .iter()
            .map(|path| Filter {
                path: (*path).into(),
                qos: QoS::AtLeastOnce,
                nolocal: false,
                preserve_retain: false,
                retain_forward_rule: RetainForwardRule::OnEverySubscribe,
            })
            .collect(),
        properties: None,
    })
}

/// A direct subscriber to everything on one broker.
async fn watch(broker: &Mosquitto) -> RawMqtt {
    let (mut watcher, _) = RawMqtt::connect(broker.port(), "").await;
    watcher.send(&subscribe(1, &["#"])).await;
    assert!(matches!(watcher.recv().await, Some(Packet::SubAck(_))));
    watcher
}

async fn next_topic(client: &mut RawMqtt) -> String {
    loop {
        match client.recv().await {
            Some(Packet::Publish(message)) => return message.topic,
            Some(_) => {}
            None => panic!("connection closed while waiting for a message"),
        }
    }
}

/// Sends a PINGREQ and returns the topics of messages that arrive before the PINGRESP.
async fn drain_topics(client: &mut RawMqtt) -> Vec<String> {
    client
        .send(&Packet::PingReq(zilla_testkit::mqtt::packets::PingReq))
        .await;
    let mut topics = Vec::new();
    loop {
        match client.recv().await {
            Some(Packet::Publish(message)) => topics.push(message.topic),
            Some(Packet::PingResp(_)) => return topics,
            Some(_) => {}
            None => panic!("connection closed"),
        }
    }
}

#[tokio::test]
async fn publishes_route_by_topic_and_one_client_reaches_both_brokers() {
    let (broker_a, broker_b) = (Mosquitto::start().unwrap(), Mosquitto::start().unwrap());
    let proxy = Proxy::start(&mqtt_proxy_yaml(
        FLEET_ROUTES,
        &[("a", broker_a.port()), ("b", broker_b.port())],
    ))
    .await;
    let (mut on_a, mut on_b) = (watch(&broker_a).await, watch(&broker_b).await);

    let (mut device, _) = RawMqtt::connect(proxy.port, "device-1").await;
    device.send(&publish("b/temperature", b"21")).await;
    assert!(matches!(device.recv().await, Some(Packet::PubAck(_))));
    device.send(&publish("a/humidity", b"40")).await;
    assert!(matches!(device.recv().await, Some(Packet::PubAck(_))));

    assert_eq!(next_topic(&mut on_b).await, "b/temperature");
    assert_eq!(next_topic(&mut on_a).await, "a/humidity");
    assert!(
        drain_topics(&mut on_a).await.is_empty(),
        "nothing else reached broker a"
    );
    assert!(
        drain_topics(&mut on_b).await.is_empty(),
        "nothing else reached broker b"
    );
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn one_subscribe_is_split_across_brokers_and_its_suback_merged() {
    let (broker_a, broker_b) = (Mosquitto::start().unwrap(), Mosquitto::start().unwrap());
    let proxy = Proxy::start(&mqtt_proxy_yaml(
        FLEET_ROUTES,
        &[("a", broker_a.port()), ("b", broker_b.port())],
    ))
    .await;
    let (mut device, _) = RawMqtt::connect(proxy.port, "device-2").await;
    device.send(&subscribe(9, &["a/#", "b/#", "a/+/x"])).await;
    match device.recv().await {
        Some(Packet::SubAck(ack)) => {
            assert_eq!(ack.pkid, 9);
            assert_eq!(
                ack.return_codes,
                vec![SubscribeReasonCode::Success(QoS::AtLeastOnce); 3]
            );
        }
        other => panic!("expected one merged SUBACK, got {other:?}"),
    }
    let (mut direct_a, _) = RawMqtt::connect(broker_a.port(), "").await;
    let (mut direct_b, _) = RawMqtt::connect(broker_b.port(), "").await;
    direct_b.send(&publish("b/from-b", b"1")).await;
    assert_eq!(next_topic(&mut device).await, "b/from-b");
    direct_a.send(&publish("a/from-a", b"2")).await;
    assert_eq!(next_topic(&mut device).await, "a/from-a");
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn sessions_route_by_client_id() {
    let (broker_a, broker_b) = (Mosquitto::start().unwrap(), Mosquitto::start().unwrap());
    let proxy = Proxy::start(&mqtt_proxy_yaml(
        FLEET_ROUTES,
        &[("a", broker_a.port()), ("b", broker_b.port())],
    ))
    .await;
    let (mut on_a, mut on_b) = (watch(&broker_a).await, watch(&broker_b).await);
    let (mut fleet_b, _) = RawMqtt::connect(proxy.port, "fleet-b-7").await;
    // Its client id sends even an `a/...` topic to broker b.
    fleet_b.send(&publish("a/humidity", b"40")).await;
    assert!(matches!(fleet_b.recv().await, Some(Packet::PubAck(_))));
    assert_eq!(next_topic(&mut on_b).await, "a/humidity");
    assert!(drain_topics(&mut on_a).await.is_empty());
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn unroutable_publish_and_subscribe_are_refused_per_packet() {
    let broker = Mosquitto::start().unwrap();
    let routes = "
    routes:
      - when:
          - publish:
              - topic: sensors/#
          - subscribe:
              - topic: sensors/#
        exit: mqtt_client_a";
    let proxy = Proxy::start(&mqtt_proxy_yaml(routes, &[("a", broker.port())])).await;

    // A QoS 1 publish no route takes gets its own PUBACK 0x90; the session goes on.
    let (mut publisher, _) = RawMqtt::connect(proxy.port, "stray-publisher").await;
    publisher.send(&publish("sensors/1", b"ok")).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    publisher.send(&publish("actuators/1", b"no")).await;
    match publisher.recv().await {
        Some(Packet::PubAck(ack)) => assert_eq!(
            ack.reason,
            zilla_testkit::mqtt::packets::PubAckReason::TopicNameInvalid
        ),
        other => panic!("expected PUBACK 0x90, got {other:?}"),
    }
    publisher.send(&publish("sensors/2", b"ok")).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));

    // A filter no route takes gets its own SUBACK 0x8F; the session goes on.
    let (mut subscriber, _) = RawMqtt::connect(proxy.port, "stray-subscriber").await;
    subscriber.send(&subscribe(1, &["actuators/#"])).await;
    match subscriber.recv().await {
        Some(Packet::SubAck(ack)) => assert_eq!(
            ack.return_codes,
            vec![SubscribeReasonCode::TopicFilterInvalid]
        ),
        other => panic!("expected SUBACK 0x8F, got {other:?}"),
    }
    zilla_testkit::proxy::wait_for_event(&[
        "MQTT_SUBSCRIBE_REJECTED",
        "stray-subscriber",
        "no route for subscription to actuators/#",
    ])
    .await;

    // A QoS 0 publish has no answer of its own: it ends the session, 0x90.
    subscriber
        .send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "actuators/1".into(),
            pkid: 0,
            payload: Bytes::from_static(b"no"),
            properties: None,
        }))
        .await;
    let disconnect = subscriber.closed().await.expect("a DISCONNECT");
    assert_eq!(
        disconnect.reason_code,
        DisconnectReasonCode::TopicNameInvalid
    );
    zilla_testkit::proxy::wait_for_event(&[
        "MQTT_SESSION_REFUSED",
        "stray-subscriber",
        "no route for publish to actuators/1",
        "0x90",
    ])
    .await;
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn a_session_no_route_accepts_gets_connack_0x87() {
    let broker = Mosquitto::start().unwrap();
    let routes = "
    routes:
      - when:
          - session:
              - client-id: known-*
        exit: mqtt_client_a";
    let proxy = Proxy::start(&mqtt_proxy_yaml(routes, &[("a", broker.port())])).await;
    let (_, ack) = RawMqtt::connect(proxy.port, "stranger").await;
    assert_eq!(
        ack.code,
        zilla_testkit::mqtt::packets::ConnectReturnCode::NotAuthorized
    );
    let (_, ack) = RawMqtt::connect(proxy.port, "known-1").await;
    assert_eq!(
        ack.code,
        zilla_testkit::mqtt::packets::ConnectReturnCode::Success
    );
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn session_present_only_when_every_upstream_had_the_session() {
    let (broker_a, broker_b) = (Mosquitto::start().unwrap(), Mosquitto::start().unwrap());
    let proxy = Proxy::start(&mqtt_proxy_yaml(
        FLEET_ROUTES,
        &[("a", broker_a.port()), ("b", broker_b.port())],
    ))
    .await;
    let persistent = || zilla_testkit::mqtt::persistent_connect_packet("device-9", 300);
    let leave = Packet::Disconnect(zilla_testkit::mqtt::packets::Disconnect {
        reason_code: DisconnectReasonCode::NormalDisconnection,
        properties: None,
    });
    // Broker a alone knows the session.
    let mut direct = RawMqtt::open(broker_a.port()).await;
    direct.send(&persistent()).await;
    assert!(matches!(direct.recv().await, Some(Packet::ConnAck(_))));
    direct.send(&leave).await;
    assert!(direct.closed().await.is_none());

    let session_present = |packet: Option<Packet>| match packet {
        Some(Packet::ConnAck(ack)) => ack.session_present,
        other => panic!("expected CONNACK, got {other:?}"),
    };
    let mut device = RawMqtt::open(proxy.port).await;
    device.send(&persistent()).await;
    assert!(
        !session_present(device.recv().await),
        "broker b had no session"
    );
    device.send(&leave).await;
    assert!(device.closed().await.is_none());

    let mut device = RawMqtt::open(proxy.port).await;
    device.send(&persistent()).await;
    assert!(
        session_present(device.recv().await),
        "now both brokers have it"
    );
    proxy.engine.shutdown().await;
}
