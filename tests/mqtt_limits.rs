//! Flow control, packet size limits, keep-alive, a broker dying mid-session,
//! shutdown, and `$SYS` / `$share` topics.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use zilla as _;
use zilla_testkit::mqtt::packets::{
    ConnectProperties, DisconnectReasonCode, Filter, LastWill, Packet, PingReq, PubAck,
    PubAckReason, Publish, QoS, RetainForwardRule, Subscribe,
};
use zilla_testkit::mqtt::{publish_packet, subscribe_packet, RawMqtt, RECV_TIMEOUT};
use zilla_testkit::proxy::{mqtt_proxy_yaml, wait_for_event, Proxy};
use zilla_testkit::Mosquitto;

async fn single(broker: &Mosquitto) -> Proxy {
    Proxy::start(&mqtt_proxy_yaml(
        "    exit: mqtt_client_a",
        &[("a", broker.port())],
    ))
    .await
}

fn properties(receive_maximum: Option<u16>, max_packet_size: Option<u32>) -> ConnectProperties {
    ConnectProperties {
        session_expiry_interval: None,
        receive_maximum,
        max_packet_size,
        topic_alias_max: None,
        request_response_info: None,
        request_problem_info: None,
        user_properties: vec![],
        authentication_method: None,
        authentication_data: None,
    }
}

fn connect(
    client_id: &str,
    keep_alive: u16,
    properties: Option<ConnectProperties>,
    will: Option<LastWill>,
) -> Packet {
    Packet::Connect(
        zilla_testkit::mqtt::packets::Connect {
            keep_alive,
            client_id: client_id.into(),
            clean_start: true,
            properties,
        },
        will,
        None,
    )
}

async fn open(port: u16, packet: Packet) -> RawMqtt {
    let mut client = RawMqtt::open(port).await;
    client.send(&packet).await;
    match client.recv().await {
        Some(Packet::ConnAck(ack)) => assert_eq!(
            ack.code,
            zilla_testkit::mqtt::packets::ConnectReturnCode::Success
        ),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    client
}

fn subscribe(filter: &str, qos: QoS) -> Packet {
    subscribe_packet(1, filter, qos)
}

fn publish(topic: &str, qos: QoS, pkid: u16, payload: Vec<u8>) -> Packet {
    publish_packet(topic, qos, pkid, payload)
}

async fn subscribed(client: &mut RawMqtt, filter: &str, qos: QoS) {
    client.send(&subscribe(filter, qos)).await;
    assert!(matches!(client.recv().await, Some(Packet::SubAck(_))));
}

/// Messages that arrive before the answer to a PINGREQ.
async fn until_pingresp(client: &mut RawMqtt) -> Vec<Publish> {
    client.send(&Packet::PingReq(PingReq)).await;
    let mut messages = Vec::new();
    loop {
        match client.recv().await {
            Some(Packet::Publish(message)) => messages.push(message),
            Some(Packet::PingResp(_)) => return messages,
            Some(_) => {}
            None => panic!("connection closed"),
        }
    }
}

fn ack(pkid: u16) -> Packet {
    Packet::PubAck(PubAck {
        pkid,
        reason: PubAckReason::Success,
        properties: None,
    })
}

#[tokio::test]
async fn the_clients_receive_maximum_bounds_messages_in_flight() {
    let broker = Mosquitto::start().unwrap();
    let proxy = single(&broker).await;
    let mut client = open(
        proxy.port,
        connect("flow-1", 30, Some(properties(Some(2), None)), None),
    )
    .await;
    subscribed(&mut client, "flow/#", QoS::AtLeastOnce).await;
    let (mut publisher, _) = RawMqtt::connect(broker.port(), "").await;
    for i in 1..=5u8 {
        publisher
            .send(&publish("flow/x", QoS::AtLeastOnce, u16::from(i), vec![i]))
            .await;
        assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    }
    let mut received = Vec::new();
    while received.len() < 5 {
        let mut batch = Vec::new();
        // Collect until the proxy stops sending: at most two unacknowledged.
        while batch.len() < 2 {
            match client.recv().await {
                Some(Packet::Publish(message)) => batch.push(message),
                other => panic!("expected PUBLISH, got {other:?}"),
            }
            if received.len() + batch.len() == 5 {
                break;
            }
        }
        assert!(
            until_pingresp(&mut client).await.is_empty(),
            "no third message while two are unacknowledged"
        );
        for message in &batch {
            client.send(&ack(message.pkid)).await;
        }
        received.extend(batch.into_iter().map(|m| m.payload[0]));
    }
    assert_eq!(received, vec![1, 2, 3, 4, 5], "in order, none lost");
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn messages_larger_than_the_clients_maximum_packet_size_are_not_sent() {
    let broker = Mosquitto::start().unwrap();
    let proxy = single(&broker).await;
    let mut client = open(
        proxy.port,
        connect("small-1", 30, Some(properties(None, Some(64))), None),
    )
    .await;
    subscribed(&mut client, "size/#", QoS::AtMostOnce).await;
    let (mut publisher, _) = RawMqtt::connect(broker.port(), "").await;
    publisher
        .send(&publish("size/big", QoS::AtMostOnce, 0, vec![b'x'; 200]))
        .await;
    publisher
        .send(&publish("size/small", QoS::AtMostOnce, 0, b"ok".to_vec()))
        .await;
    match client.recv().await {
        Some(Packet::Publish(message)) => assert_eq!(message.topic, "size/small"),
        other => panic!("expected only the small PUBLISH, got {other:?}"),
    }
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn keep_alive_expiry_disconnects_with_0x8d_and_fires_the_will() {
    let broker = Mosquitto::start().unwrap();
    let proxy = single(&broker).await;
    let (mut watcher, _) = RawMqtt::connect(broker.port(), "").await;
    subscribed(&mut watcher, "wills/#", QoS::AtMostOnce).await;
    let will = LastWill {
        topic: Bytes::from_static(b"wills/silent"),
        message: Bytes::from_static(b"timed out"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: None,
    };
    let mut silent = open(proxy.port, connect("silent-1", 1, None, Some(will))).await;
    let started = tokio::time::Instant::now();
    assert_eq!(
        silent.closed().await.map(|d| d.reason_code),
        Some(DisconnectReasonCode::KeepAliveTimeout)
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < RECV_TIMEOUT,
        "{waited:?}"
    );
    match watcher.recv().await {
        Some(Packet::Publish(message)) => assert_eq!(message.payload.as_ref(), b"timed out"),
        other => panic!("expected the will, got {other:?}"),
    }
    wait_for_event(&[
        "MQTT_SESSION_REFUSED",
        "silent-1",
        "1.5 x keep-alive",
        "0x8D",
    ])
    .await;
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn a_broker_killed_mid_session_is_reported_and_acknowledged_messages_were_delivered() {
    let mut broker = Mosquitto::start().unwrap();
    let proxy = single(&broker).await;
    let (mut direct, _) = RawMqtt::connect(broker.port(), "").await;
    subscribed(&mut direct, "durable/#", QoS::AtLeastOnce).await;

    let mut client = open(proxy.port, connect("killed-1", 30, None, None)).await;
    let mut acknowledged = HashSet::new();
    for pkid in 1..=20u16 {
        client
            .send(&publish(
                "durable/x",
                QoS::AtLeastOnce,
                pkid,
                pkid.to_be_bytes().to_vec(),
            ))
            .await;
    }
    // Collect some acknowledgements, then kill the broker mid-stream.
    while acknowledged.len() < 10 {
        match client.recv().await {
            Some(Packet::PubAck(ack)) => {
                acknowledged.insert(ack.pkid);
            }
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    broker.kill();
    let started = tokio::time::Instant::now();
    let mut disconnect = None;
    while let Some(packet) = client.recv().await {
        match packet {
            Packet::PubAck(ack) => {
                acknowledged.insert(ack.pkid);
            }
            Packet::Disconnect(d) => disconnect = Some(d),
            other => panic!("unexpected {other:?}"),
        }
    }
    let disconnect = disconnect.expect("the client is told with a DISCONNECT");
    assert_eq!(
        disconnect.reason_code,
        DisconnectReasonCode::UnspecifiedError
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "told within a keep-alive interval"
    );

    // Every message the client was told is safe reached the broker's subscriber.
    let mut delivered = HashSet::new();
    while let Some(packet) = direct.recv().await {
        if let Packet::Publish(message) = packet {
            delivered.insert(u16::from_be_bytes([message.payload[0], message.payload[1]]));
        }
    }
    assert!(
        acknowledged.is_subset(&delivered),
        "acknowledged {acknowledged:?}, delivered {delivered:?}"
    );
    wait_for_event(&["MQTT_UPSTREAM_LOST", "killed-1", "upstream mqtt_client_a"]).await;
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn shutdown_tells_clients_0x8b_and_their_wills_fire() {
    let broker = Mosquitto::start().unwrap();
    let proxy = single(&broker).await;
    let (mut watcher, _) = RawMqtt::connect(broker.port(), "").await;
    subscribed(&mut watcher, "wills/#", QoS::AtMostOnce).await;
    let will = LastWill {
        topic: Bytes::from_static(b"wills/drained"),
        message: Bytes::from_static(b"proxy stopped"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: None,
    };
    let mut client = open(proxy.port, connect("drained-1", 30, None, Some(will))).await;
    let drained = proxy.engine.shutdown().await;
    assert_eq!(drained.abandoned, 0);
    assert_eq!(
        client.closed().await.map(|d| d.reason_code),
        Some(DisconnectReasonCode::ServerShuttingDown)
    );
    match watcher.recv().await {
        Some(Packet::Publish(message)) => assert_eq!(message.payload.as_ref(), b"proxy stopped"),
        other => panic!("expected the will, got {other:?}"),
    }
}

#[tokio::test]
async fn sys_topics_and_shared_subscriptions_pass_through() {
    let broker = Mosquitto::start_with("sys_interval 1").unwrap();
    let proxy = single(&broker).await;

    let mut sys = open(proxy.port, connect("sys-reader", 30, None, None)).await;
    subscribed(&mut sys, "$SYS/broker/uptime", QoS::AtMostOnce).await;
    match sys.recv().await {
        Some(Packet::Publish(message)) => assert_eq!(message.topic, "$SYS/broker/uptime"),
        other => panic!("expected a $SYS message, got {other:?}"),
    }

    let mut first = open(proxy.port, connect("shared-1", 30, None, None)).await;
    let mut second = open(proxy.port, connect("shared-2", 30, None, None)).await;
    subscribed(&mut first, "$share/group/shared/#", QoS::AtMostOnce).await;
    subscribed(&mut second, "$share/group/shared/#", QoS::AtMostOnce).await;
    let (mut publisher, _) = RawMqtt::connect(broker.port(), "").await;
    for i in 0..6u8 {
        publisher
            .send(&publish("shared/x", QoS::AtMostOnce, 0, vec![i]))
            .await;
    }
    // Each member gets some of the messages; together, every one exactly once.
    let mut seen = Vec::new();
    let collecting = async {
        while seen.len() < 6 {
            let message = tokio::select! {
                message = first.recv() => message,
                message = second.recv() => message,
            };
            match message {
                Some(Packet::Publish(message)) => seen.push(message.payload[0]),
                Some(_) => {}
                None => panic!("a member's connection closed"),
            }
        }
    };
    tokio::time::timeout(RECV_TIMEOUT, collecting)
        .await
        .expect("all shared messages arrive");
    seen.sort_unstable();
    assert_eq!(
        seen,
        vec![0, 1, 2, 3, 4, 5],
        "each message went to exactly one member"
    );
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn the_proxys_receive_maximum_is_advertised_and_enforced() {
    let broker = Mosquitto::start_with("max_inflight_messages 1").unwrap();
    let proxy = Proxy::start(&mqtt_proxy_yaml(
        "    options:\n      flow:\n        receive-maximum: 3\n    exit: mqtt_client_a",
        &[("a", broker.port())],
    ))
    .await;
    let mut client = RawMqtt::open(proxy.port).await;
    client.send(&connect("eager-1", 30, None, None)).await;
    match client.recv().await {
        Some(Packet::ConnAck(ack)) => {
            assert_eq!(ack.properties.and_then(|p| p.receive_max), Some(3));
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
    // Four QoS 1 publishes in one write: the fourth exceeds what the proxy
    // advertised (the broker's own window of 1 is the proxy's business).
    let mut burst = bytes::BytesMut::new();
    for pkid in 1..=4u16 {
        publish("eager/x", QoS::AtLeastOnce, pkid, vec![1])
            .write(&mut burst)
            .unwrap();
    }
    client.send_bytes(&burst).await;
    assert_eq!(
        client.closed().await.map(|d| d.reason_code),
        Some(DisconnectReasonCode::ReceiveMaximumExceeded)
    );
    wait_for_event(&[
        "MQTT_SESSION_REFUSED",
        "eager-1",
        "more than 3 QoS 1/2 publishes in flight",
        "0x93",
    ])
    .await;
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn publishes_beyond_the_brokers_receive_maximum_wait_in_the_proxy() {
    let broker = Mosquitto::start_with("max_inflight_messages 3").unwrap();
    let proxy = single(&broker).await;
    let mut client = RawMqtt::open(proxy.port).await;
    client.send(&connect("eager-2", 30, None, None)).await;
    assert!(matches!(client.recv().await, Some(Packet::ConnAck(_))));
    // Fifty QoS 1 publishes in one write, far beyond the broker's window:
    // each is acknowledged once the broker acknowledged it, in order.
    let mut burst = bytes::BytesMut::new();
    for pkid in 1..=50u16 {
        publish("eager/y", QoS::AtLeastOnce, pkid, vec![1])
            .write(&mut burst)
            .unwrap();
    }
    client.send_bytes(&burst).await;
    for pkid in 1..=50u16 {
        match client.recv().await {
            Some(Packet::PubAck(ack)) => assert_eq!(ack.pkid, pkid),
            other => panic!("expected PUBACK {pkid}, got {other:?}"),
        }
    }
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn the_proxy_keeps_its_own_keep_alive_with_the_broker() {
    let broker = Mosquitto::start().unwrap();
    let proxy = single(&broker).await;
    // Keep-alive 1 s: the broker drops an upstream silent for 1.5 s. The
    // client's PINGREQs are answered by the proxy, so only the proxy's own
    // PINGREQs keep the upstream alive.
    let mut client = open(proxy.port, connect("pinger-1", 1, None, None)).await;
    let mut ticks = tokio::time::interval(Duration::from_millis(500));
    for _ in 0..8 {
        ticks.tick().await;
        client.send(&Packet::PingReq(PingReq)).await;
        assert!(matches!(client.recv().await, Some(Packet::PingResp(_))));
    }
    subscribed(&mut client, "alive/#", QoS::AtMostOnce).await;
    client
        .send(&publish("alive/x", QoS::AtMostOnce, 0, b"yes".to_vec()))
        .await;
    match client.recv().await {
        Some(Packet::Publish(message)) => assert_eq!(message.payload.as_ref(), b"yes"),
        other => panic!("the upstream session did not survive 4 s: {other:?}"),
    }
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn no_local_subscriptions_do_not_echo_the_clients_own_messages() {
    let broker = Mosquitto::start().unwrap();
    let proxy = single(&broker).await;
    let mut client = open(proxy.port, connect("no-local-1", 30, None, None)).await;
    client
        .send(&Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![Filter {
                path: "echo/#".into(),
                qos: QoS::AtMostOnce,
                nolocal: true,
                preserve_retain: false,
                retain_forward_rule: RetainForwardRule::OnEverySubscribe,
            }],
            properties: None,
        }))
        .await;
    assert!(matches!(client.recv().await, Some(Packet::SubAck(_))));
    // QoS 1: the broker would write an echo on this session before its PUBACK.
    client
        .send(&publish("echo/mine", QoS::AtLeastOnce, 1, b"own".to_vec()))
        .await;
    match client.recv().await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.pkid, 1),
        other => panic!("expected the PUBACK and no echo, got {other:?}"),
    }
    let (mut other, _) = RawMqtt::connect(broker.port(), "").await;
    other
        .send(&publish(
            "echo/theirs",
            QoS::AtMostOnce,
            0,
            b"other".to_vec(),
        ))
        .await;
    match client.recv().await {
        Some(Packet::Publish(message)) => assert_eq!(
            message.topic, "echo/theirs",
            "its own message was not echoed"
        ),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    proxy.engine.shutdown().await;
}
