//! The MQTT proxy end to end: real mosquitto brokers on free ports, the engine
//! with `tcp -> mqtt server -> mqtt client -> tcp`, and real clients (rumqttc
//! v4 and v5, mosquitto_pub/mosquitto_sub, and a raw client for exact bytes).

use std::time::Duration;
use tokio::process::Command;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{LastWill, Packet as V5Packet, PublishProperties};
use rumqttc::v5::mqttbytes::QoS as V5QoS;
use rumqttc::v5::{
    AsyncClient as V5Client, Event as V5Event, EventLoop as V5EventLoop, MqttOptions as V5Options,
};
use rumqttc::{
    AsyncClient as V4Client, Event as V4Event, EventLoop as V4EventLoop, MqttOptions as V4Options,
    Packet as V4Packet, QoS as V4QoS,
};
// Links every first-party plugin, as the host does.
use zilla as _;
use zilla_testkit::mqtt::packets::{
    DisconnectReasonCode, Filter, Packet, PubAck, PubAckReason, Publish,
    PublishProperties as RawPublishProperties, QoS, RetainForwardRule, Subscribe,
    SubscribeReasonCode,
};
use zilla_testkit::mqtt::{persistent_connect_packet, RawMqtt};
use zilla_testkit::proxy::{mqtt_proxy_yaml, Proxy};
use zilla_testkit::Mosquitto;

const TIMEOUT: Duration = Duration::from_secs(10);

/// One broker behind an unauthenticated proxy.
async fn single(broker: &Mosquitto) -> Proxy {
    Proxy::start(&mqtt_proxy_yaml(
        "    exit: mqtt_client_a",
        &[("a", broker.port())],
    ))
    .await
}

async fn v5_client(
    id: &str,
    port: u16,
    configure: impl FnOnce(&mut V5Options),
) -> (V5Client, V5EventLoop) {
    let mut options = V5Options::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(10));
    configure(&mut options);
    V5Client::new(options, 100)
}

async fn v4_client(id: &str, port: u16) -> (V4Client, V4EventLoop) {
    let mut options = V4Options::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(10));
    V4Client::new(options, 100)
}

/// Polls a v5 event loop until `pick` returns something.
async fn v5_until<T>(events: &mut V5EventLoop, mut pick: impl FnMut(&V5Event) -> Option<T>) -> T {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let event = events.poll().await.expect("the v5 connection stays up");
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    })
    .await
    .expect("the expected v5 event arrives in time")
}

async fn v4_until<T>(events: &mut V4EventLoop, mut pick: impl FnMut(&V4Event) -> Option<T>) -> T {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            // The proxy's events say which connection was refused and why
            // (a CONNACK 0x03 names neither).
            let event = events.poll().await.unwrap_or_else(|error| {
                panic!(
                    "the v4 connection stays up: {error}; the proxy's events: {:#?}",
                    zilla_testkit::proxy::captured_events()
                )
            });
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the expected v4 event arrives in time; the proxy's events: {:#?}",
            zilla_testkit::proxy::captured_events()
        )
    })
}

fn v5_suback(event: &V5Event) -> Option<()> {
    matches!(event, V5Event::Incoming(V5Packet::SubAck(_))).then_some(())
}

fn v5_publish(event: &V5Event) -> Option<rumqttc::v5::mqttbytes::v5::Publish> {
    match event {
        V5Event::Incoming(V5Packet::Publish(publish)) => Some(publish.clone()),
        _ => None,
    }
}

/// Drives a v5 client's event loop in the background, forwarding what it receives.
fn drive_v5(mut events: V5EventLoop) -> tokio::sync::mpsc::UnboundedReceiver<V5Event> {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            if sender.send(event).is_err() {
                break;
            }
        }
    });
    receiver
}

async fn next_v5<T>(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<V5Event>,
    mut pick: impl FnMut(&V5Event) -> Option<T>,
) -> T {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let event = events.recv().await.expect("the event loop is running");
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    })
    .await
    .expect("the expected event arrives in time")
}

#[tokio::test]
async fn v5_qos_0_1_2_with_properties_both_ways() {
    let broker = Mosquitto::start().unwrap();
    let proxy = single(&broker).await;

    // Subscriber behind the proxy, publisher directly on the broker: downstream.
    let (subscriber, events) = v5_client("v5-sub", proxy.port, |_| {}).await;
    let mut received = drive_v5(events);
    subscriber
        .subscribe("props/#", V5QoS::ExactlyOnce)
        .await
        .unwrap();
    next_v5(&mut received, v5_suback).await;

    // Publisher behind the proxy too: upstream then downstream.
    let (publisher, events) = v5_client("v5-pub", proxy.port, |_| {}).await;
    let mut published = drive_v5(events);
    let properties = PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(3600),
        topic_alias: None,
        response_topic: Some("props/reply".into()),
        correlation_data: Some(Bytes::from_static(b"corr-1")),
        user_properties: vec![("tenant".into(), "acme".into()), ("k".into(), "v".into())],
        subscription_identifiers: vec![],
        content_type: Some("application/json".into()),
    };
    for (qos, topic) in [
        (V5QoS::AtMostOnce, "props/q0"),
        (V5QoS::AtLeastOnce, "props/q1"),
        (V5QoS::ExactlyOnce, "props/q2"),
    ] {
        publisher
            .publish_with_properties(
                topic,
                qos,
                false,
                format!("{{\"qos\":\"{topic}\"}}"),
                properties.clone(),
            )
            .await
            .unwrap();
        let message = next_v5(&mut received, v5_publish).await;
        assert_eq!(message.topic, topic.as_bytes());
        assert_eq!(message.qos, qos);
        assert_eq!(
            message.payload,
            format!("{{\"qos\":\"{topic}\"}}").as_bytes()
        );
        let got = message.properties.expect("properties pass through");
        assert_eq!(got.payload_format_indicator, Some(1));
        assert_eq!(got.content_type.as_deref(), Some("application/json"));
        assert_eq!(got.response_topic.as_deref(), Some("props/reply"));
        assert_eq!(got.correlation_data.as_deref(), Some(&b"corr-1"[..]));
        assert_eq!(got.user_properties, properties.user_properties);
        assert!(got
            .message_expiry_interval
            .is_some_and(|e| e <= 3600 && e > 3500));
    }
    // The publisher's QoS 1 and 2 flows completed: PUBACK and PUBCOMP arrived.
    next_v5(&mut published, |e| {
        matches!(e, V5Event::Incoming(V5Packet::PubAck(_))).then_some(())
    })
    .await;
    next_v5(&mut published, |e| {
        matches!(e, V5Event::Incoming(V5Packet::PubComp(_))).then_some(())
    })
    .await;
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn v4_clients_publish_and_subscribe_at_every_qos() {
    let broker = Mosquitto::start().unwrap();
    let proxy = single(&broker).await;
    let (subscriber, mut sub_events) = v4_client("v4-sub", proxy.port).await;
    subscriber
        .subscribe("v4/#", V4QoS::ExactlyOnce)
        .await
        .unwrap();
    v4_until(&mut sub_events, |e| {
        matches!(e, V4Event::Incoming(V4Packet::SubAck(_))).then_some(())
    })
    .await;

    let (publisher, mut pub_events) = v4_client("v4-pub", proxy.port).await;
    tokio::spawn(async move { while pub_events.poll().await.is_ok() {} });
    for (qos, topic) in [
        (V4QoS::AtMostOnce, "v4/q0"),
        (V4QoS::AtLeastOnce, "v4/q1"),
        (V4QoS::ExactlyOnce, "v4/q2"),
    ] {
        publisher
            .publish(topic, qos, false, topic.as_bytes().to_vec())
            .await
            .unwrap();
        let message = v4_until(&mut sub_events, |e| match e {
            V4Event::Incoming(V4Packet::Publish(p)) => Some(p.clone()),
            _ => None,
        })
        .await;
        assert_eq!(message.topic, topic);
        assert_eq!(message.qos, qos);
        assert_eq!(message.payload.as_ref(), topic.as_bytes());
    }
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn qos1_is_acknowledged_only_after_the_broker_and_ids_are_mapped() {
    let broker = Mosquitto::start().unwrap();
    let proxy = single(&broker).await;
    let (mut client, ack) = RawMqtt::connect(proxy.port, "raw-qos1").await;
    assert_eq!(
        ack.code,
        zilla_testkit::mqtt::packets::ConnectReturnCode::Success
    );
    // The proxy advertises topic aliases it resolves itself.
    assert_eq!(
        ack.properties.as_ref().and_then(|p| p.topic_alias_max),
        Some(64)
    );
    for pkid in [7u16, 9, 65535] {
        client
            .send(&Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "raw/qos1".into(),
                pkid,
                payload: Bytes::from_static(b"x"),
                properties: None,
            }))
            .await;
        match client.recv().await {
            Some(Packet::PubAck(PubAck {
                pkid: acked,
                reason,
                ..
            })) => {
                assert_eq!(acked, pkid, "the client's own packet id comes back");
                // mosquitto answers 0x10 No matching subscribers; relayed as is.
                assert!(matches!(
                    reason,
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                ));
            }
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn retained_messages_and_subscription_options() {
    let broker = Mosquitto::start().unwrap();
    let proxy = single(&broker).await;
    let (mut publisher, _) = RawMqtt::connect(proxy.port, "retainer").await;
    publisher
        .send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "retained/state".into(),
            pkid: 1,
            payload: Bytes::from_static(b"on"),
            properties: None,
        }))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));

    // retain-as-published keeps the retain flag; a subscription identifier comes back.
    let (mut subscriber, _) = RawMqtt::connect(proxy.port, "retain-reader").await;
    subscriber
        .send(&Packet::Subscribe(Subscribe {
            pkid: 3,
            filters: vec![Filter {
                path: "retained/#".into(),
                qos: QoS::AtLeastOnce,
                nolocal: true,
                preserve_retain: true,
                retain_forward_rule: RetainForwardRule::OnEverySubscribe,
            }],
            properties: Some(zilla_testkit::mqtt::packets::SubscribeProperties {
                id: Some(42),
                user_properties: vec![],
            }),
        }))
        .await;
    match subscriber.recv().await {
        Some(Packet::SubAck(ack)) => {
            assert_eq!(ack.pkid, 3);
            assert_eq!(
                ack.return_codes,
                vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
            );
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
    match subscriber.recv().await {
        Some(Packet::Publish(message)) => {
            assert!(message.retain);
            assert_eq!(message.payload.as_ref(), b"on");
            assert_eq!(
                message.properties.map(|p| p.subscription_identifiers),
                Some(vec![42])
            );
        }
        other => panic!("expected the retained PUBLISH, got {other:?}"),
    }

    // retain handling "never": no retained message on subscribe.
    let (mut late, _) = RawMqtt::connect(proxy.port, "retain-never").await;
    late.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        filters: vec![Filter {
            path: "retained/#".into(),
            qos: QoS::AtMostOnce,
            nolocal: false,
            preserve_retain: false,
            retain_forward_rule: RetainForwardRule::Never,
        }],
        properties: None,
    }))
    .await;
    assert!(matches!(late.recv().await, Some(Packet::SubAck(_))));
    late.send(&Packet::PingReq(zilla_testkit::mqtt::packets::PingReq))
        .await;
    assert!(
        matches!(late.recv().await, Some(Packet::PingResp(_))),
        "nothing retained arrives before the PINGRESP"
    );
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn topic_aliases_from_the_client_are_resolved() {
    let broker = Mosquitto::start().unwrap();
    let proxy = single(&broker).await;
    let (mut subscriber, _) = RawMqtt::connect(proxy.port, "alias-reader").await;
    subscriber
        .send(&zilla_testkit::mqtt::subscribe_packet(
            1,
            "alias/#",
            QoS::AtMostOnce,
        ))
        .await;
    assert!(matches!(subscriber.recv().await, Some(Packet::SubAck(_))));

    let (mut publisher, _) = RawMqtt::connect(proxy.port, "alias-writer").await;
    let aliased = |topic: &str, payload: &'static [u8]| {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: topic.into(),
            pkid: 0,
            payload: Bytes::from_static(payload),
            properties: Some(RawPublishProperties {
                payload_format_indicator: None,
                message_expiry_interval: None,
                topic_alias: Some(5),
                response_topic: None,
                correlation_data: None,
                user_properties: vec![],
                subscription_identifiers: vec![],
                content_type: None,
            }),
        })
    };
    publisher
        .send(&aliased("alias/long/topic/name", b"first"))
        .await;
    publisher.send(&aliased("", b"second")).await;
    for expected in [&b"first"[..], b"second"] {
        match subscriber.recv().await {
            Some(Packet::Publish(message)) => {
                assert_eq!(message.topic, "alias/long/topic/name");
                assert_eq!(message.payload.as_ref(), expected);
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    // An alias beyond the advertised maximum ends the session with 0x94.
    let mut too_far = aliased("alias/x", b"x");
    if let Packet::Publish(p) = &mut too_far {
        p.properties.as_mut().unwrap().topic_alias = Some(65);
    }
    publisher.send(&too_far).await;
    assert_eq!(
        publisher.closed().await.map(|d| d.reason_code),
        Some(DisconnectReasonCode::TopicAliasInvalid)
    );
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn will_fires_on_abrupt_loss_but_not_on_disconnect() {
    let broker = Mosquitto::start().unwrap();
    let proxy = single(&broker).await;
    let (watcher, events) = v5_client("will-watcher", broker.port(), |_| {}).await;
    let mut watched = drive_v5(events);
    watcher
        .subscribe("wills/#", V5QoS::AtLeastOnce)
        .await
        .unwrap();
    next_v5(&mut watched, v5_suback).await;

    // A clean DISCONNECT: no will.
    let (polite, mut events) = v5_client("polite", proxy.port, |o| {
        o.set_last_will(LastWill::new(
            "wills/polite",
            "gone",
            V5QoS::AtLeastOnce,
            false,
            None,
        ));
    })
    .await;
    v5_until(&mut events, |e| {
        matches!(e, V5Event::Incoming(V5Packet::ConnAck(_))).then_some(())
    })
    .await;
    polite.disconnect().await.unwrap();
    let _ = tokio::time::timeout(TIMEOUT, async { while events.poll().await.is_ok() {} }).await;

    // DISCONNECT 0x04: the client leaves but asks for its will.
    let mut leaving = RawMqtt::open(proxy.port).await;
    leaving
        .send(&Packet::Connect(
            zilla_testkit::mqtt::packets::Connect {
                keep_alive: 30,
                client_id: "leaving".into(),
                clean_start: true,
                properties: None,
            },
            Some(zilla_testkit::mqtt::packets::LastWill {
                topic: Bytes::from_static(b"wills/leaving"),
                message: Bytes::from_static(b"asked for"),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: None,
            }),
            None,
        ))
        .await;
    assert!(matches!(leaving.recv().await, Some(Packet::ConnAck(_))));
    leaving
        .send(&Packet::Disconnect(
            zilla_testkit::mqtt::packets::Disconnect {
                reason_code: DisconnectReasonCode::DisconnectWithWillMessage,
                properties: None,
            },
        ))
        .await;
    let will = next_v5(&mut watched, v5_publish).await;
    assert_eq!(
        will.topic,
        &b"wills/leaving"[..],
        "the polite client's will did not fire; this one did"
    );

    // An abrupt loss: the will reaches the broker's subscribers.
    let (_abrupt, mut events) = v5_client("abrupt", proxy.port, |o| {
        o.set_last_will(LastWill::new(
            "wills/abrupt",
            "lost",
            V5QoS::AtLeastOnce,
            false,
            None,
        ));
    })
    .await;
    v5_until(&mut events, |e| {
        matches!(e, V5Event::Incoming(V5Packet::ConnAck(_))).then_some(())
    })
    .await;
    drop(events); // closes the socket without DISCONNECT

    let will = next_v5(&mut watched, v5_publish).await;
    assert_eq!(
        will.topic,
        &b"wills/abrupt"[..],
        "only the abrupt client's will fires"
    );
    assert_eq!(will.payload, &b"lost"[..]);
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn assigned_client_id_and_persistent_session_with_queued_messages() {
    let broker = Mosquitto::start().unwrap();
    let proxy = single(&broker).await;

    let (_anonymous, ack) = RawMqtt::connect(proxy.port, "").await;
    let assigned = ack
        .properties
        .and_then(|p| p.assigned_client_identifier)
        .expect("an empty client id gets an assigned one");
    assert!(assigned.starts_with("zilla-"), "{assigned}");

    let persistent = || persistent_connect_packet("persistent-1", 300);
    let mut client = RawMqtt::open(proxy.port).await;
    client.send(&persistent()).await;
    assert!(matches!(client.recv().await, Some(Packet::ConnAck(_))));
    client
        .send(&zilla_testkit::mqtt::subscribe_packet(
            1,
            "queued/#",
            QoS::AtLeastOnce,
        ))
        .await;
    assert!(matches!(client.recv().await, Some(Packet::SubAck(_))));
    client
        .send(&Packet::Disconnect(
            zilla_testkit::mqtt::packets::Disconnect {
                reason_code: DisconnectReasonCode::NormalDisconnection,
                properties: None,
            },
        ))
        .await;
    assert!(client.closed().await.is_none());

    // While it is offline, messages arrive at the broker.
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(["-t", "queued/1", "-m", "while-offline", "-q", "1"])
        .status()
        .await
        .unwrap();
    assert!(status.success());

    let mut client = RawMqtt::open(proxy.port).await;
    client.send(&persistent()).await;
    match client.recv().await {
        Some(Packet::ConnAck(ack)) => assert!(ack.session_present, "the broker kept the session"),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    match client.recv().await {
        Some(Packet::Publish(message)) => {
            assert_eq!(message.topic, "queued/1");
            assert_eq!(message.payload.as_ref(), b"while-offline");
            client
                .send(&Packet::PubAck(PubAck {
                    pkid: message.pkid,
                    reason: PubAckReason::Success,
                    properties: None,
                }))
                .await;
        }
        other => panic!("expected the queued PUBLISH, got {other:?}"),
    }
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn session_takeover_disconnects_the_older_connection() {
    let broker = Mosquitto::start().unwrap();
    let proxy = single(&broker).await;
    let (mut first, _) = RawMqtt::connect(proxy.port, "same-id").await;
    let (mut second, ack) = RawMqtt::connect(proxy.port, "same-id").await;
    assert_eq!(
        ack.code,
        zilla_testkit::mqtt::packets::ConnectReturnCode::Success
    );
    assert_eq!(
        first.closed().await.map(|d| d.reason_code),
        Some(DisconnectReasonCode::SessionTakenOver)
    );
    second
        .send(&Packet::PingReq(zilla_testkit::mqtt::packets::PingReq))
        .await;
    assert!(matches!(second.recv().await, Some(Packet::PingResp(_))));
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn mosquitto_clients_v311_and_v5_through_the_proxy() {
    let broker = Mosquitto::start().unwrap();
    let proxy = single(&broker).await;
    let port = proxy.port.to_string();
    for version in ["mqttv311", "mqttv5"] {
        let topic = format!("cli/{version}");
        let subscriber = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port, "-V", version, "-t", &topic])
            .args(["-C", "1", "-W", "10", "-q", "1"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Retained, so it reaches the subscriber whichever connects first.
        let status = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "-V", version, "-t", &topic])
            .args(["-m", "Hello, world", "-q", "2", "-r"])
            .status()
            .await
            .unwrap();
        assert!(status.success());
        let output = subscriber.wait_with_output().await.unwrap();
        assert!(output.status.success(), "mosquitto_sub -V {version} failed");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "Hello, world"
        );
    }
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn a_broker_that_needs_3_1_1_is_spoken_to_in_3_1_1() {
    let broker = Mosquitto::start().unwrap();
    let yaml = mqtt_proxy_yaml("    exit: mqtt_client_a", &[("a", broker.port())]).replace(
        "    kind: client\n    exit: tcp_client_a",
        "    kind: client\n    options:\n      version: v3.1.1\n    exit: tcp_client_a",
    );
    assert!(yaml.contains("version: v3.1.1"));
    let proxy = Proxy::start(&yaml).await;

    // An MQTT 5 client subscribes and publishes at QoS 1 and 2 through it.
    let (client, events) = v5_client("v5-over-v4", proxy.port, |_| {}).await;
    let mut received = drive_v5(events);
    client
        .subscribe("legacy/#", V5QoS::ExactlyOnce)
        .await
        .unwrap();
    next_v5(&mut received, v5_suback).await;
    let tagged = PublishProperties {
        user_properties: vec![("only".into(), "in v5".into())],
        ..PublishProperties::default()
    };
    for qos in [V5QoS::AtLeastOnce, V5QoS::ExactlyOnce] {
        client
            .publish_with_properties("legacy/x", qos, false, "old broker", tagged.clone())
            .await
            .unwrap();
        let message = next_v5(&mut received, v5_publish).await;
        assert_eq!(message.payload, &b"old broker"[..]);
        // 3.1.1 has no user properties: proof the broker was spoken to in 3.1.1.
        assert!(message
            .properties
            .is_none_or(|p| p.user_properties.is_empty()));
    }
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn a_3_1_1_session_without_clean_session_persists() {
    let broker = Mosquitto::start().unwrap();
    let proxy = single(&broker).await;
    let options = || {
        let mut options = V4Options::new("v4-persistent", "127.0.0.1", proxy.port);
        options.set_clean_session(false);
        options.set_keep_alive(Duration::from_secs(10));
        options
    };
    let (client, mut events) = V4Client::new(options(), 10);
    client
        .subscribe("persist/#", V4QoS::AtLeastOnce)
        .await
        .unwrap();
    v4_until(&mut events, |e| {
        matches!(e, V4Event::Incoming(V4Packet::SubAck(_))).then_some(())
    })
    .await;
    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(TIMEOUT, async { while events.poll().await.is_ok() {} }).await;

    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(["-t", "persist/1", "-m", "kept", "-q", "1"])
        .status()
        .await
        .unwrap();
    assert!(status.success());

    let (_client, mut events) = V4Client::new(options(), 10);
    let present = v4_until(&mut events, |e| match e {
        V4Event::Incoming(V4Packet::ConnAck(ack)) => Some(ack.session_present),
        _ => None,
    })
    .await;
    assert!(present, "the broker kept the 3.1.1 session");
    let message = v4_until(&mut events, |e| match e {
        V4Event::Incoming(V4Packet::Publish(p)) => Some(p.clone()),
        _ => None,
    })
    .await;
    assert_eq!(message.payload.as_ref(), b"kept");
    proxy.engine.shutdown().await;
}
