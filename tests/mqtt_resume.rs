//! Persistent MQTT 5 sessions resumed through the proxy: QoS 1 and 2 flows
//! left open by a connection that went away are finished by the next one
//! with the same client id (MQTT 4.4), against a real mosquitto on a free
//! port, with a raw client for exact packet ids.

use bytes::Bytes;
use zilla as _;
use zilla_testkit::mqtt::packets::{Packet, Publish, QoS};
use zilla_testkit::mqtt::{persistent_connect_packet, RawMqtt};
use zilla_testkit::proxy::{mqtt_proxy_yaml, Proxy};
use zilla_testkit::Mosquitto;

async fn resume(port: u16, client_id: &str, expect_present: bool) -> RawMqtt {
    let mut client = RawMqtt::open(port).await;
    client
        .send(&persistent_connect_packet(client_id, 300))
        .await;
    match client.recv().await {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.session_present, expect_present),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    client
}

#[tokio::test]
async fn qos2_and_qos1_flows_finish_after_the_session_resumes() {
    let broker = Mosquitto::start().unwrap();
    let proxy = Proxy::start(&mqtt_proxy_yaml(
        "    exit: mqtt_client_a",
        &[("a", broker.port())],
    ))
    .await;
    let (mut watcher, _) = RawMqtt::connect(broker.port(), "").await;
    watcher
        .send(&zilla_testkit::mqtt::subscribe_packet(
            1,
            "resume/#",
            QoS::ExactlyOnce,
        ))
        .await;
    assert!(matches!(watcher.recv().await, Some(Packet::SubAck(_))));
    let qos2 = |payload: &'static [u8], dup: bool| {
        Packet::Publish(Publish {
            dup,
            qos: QoS::ExactlyOnce,
            retain: false,
            topic: "resume/q2".into(),
            pkid: 1,
            payload: Bytes::from_static(payload),
            properties: None,
        })
    };

    // A QoS 2 publish gets its PUBREC, then the connection drops before PUBREL.
    let mut client = resume(proxy.port, "resumer", false).await;
    client.send(&qos2(b"first", false)).await;
    assert!(matches!(client.recv().await, Some(Packet::PubRec(r)) if r.pkid == 1));
    drop(client);

    // Resumed: the PUBREL completes the old flow at the broker, and packet id 1
    // is free again for a new message that must not be taken for a duplicate.
    let mut client = resume(proxy.port, "resumer", true).await;
    client
        .send(&Packet::PubRel(zilla_testkit::mqtt::packets::PubRel {
            pkid: 1,
            reason: zilla_testkit::mqtt::packets::PubRelReason::Success,
            properties: None,
        }))
        .await;
    match client.recv().await {
        Some(Packet::PubComp(c)) => {
            assert_eq!(c.pkid, 1);
            assert_eq!(
                c.reason,
                zilla_testkit::mqtt::packets::PubCompReason::Success
            );
        }
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    client.send(&qos2(b"second", false)).await;
    assert!(matches!(client.recv().await, Some(Packet::PubRec(r)) if r.pkid == 1));
    client
        .send(&Packet::PubRel(zilla_testkit::mqtt::packets::PubRel {
            pkid: 1,
            reason: zilla_testkit::mqtt::packets::PubRelReason::Success,
            properties: None,
        }))
        .await;
    assert!(matches!(client.recv().await, Some(Packet::PubComp(_))));
    let mut delivered = Vec::new();
    while delivered.len() < 2 {
        match watcher.recv().await {
            Some(Packet::Publish(m)) => {
                if m.qos == QoS::ExactlyOnce {
                    watcher
                        .send(&Packet::PubRec(zilla_testkit::mqtt::packets::PubRec {
                            pkid: m.pkid,
                            reason: zilla_testkit::mqtt::packets::PubRecReason::Success,
                            properties: None,
                        }))
                        .await;
                }
                delivered.push(m.payload);
            }
            Some(_) => {}
            None => panic!("watcher closed"),
        }
    }
    assert_eq!(
        delivered,
        vec![Bytes::from_static(b"first"), Bytes::from_static(b"second")]
    );

    // A QoS 1 message the client did not acknowledge comes again after resuming.
    client
        .send(&zilla_testkit::mqtt::subscribe_packet(
            2,
            "resume/to-client",
            QoS::AtLeastOnce,
        ))
        .await;
    assert!(matches!(client.recv().await, Some(Packet::SubAck(_))));
    watcher
        .send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "resume/to-client".into(),
            pkid: 9,
            payload: Bytes::from_static(b"unacknowledged"),
            properties: None,
        }))
        .await;
    let first_pkid = match client.recv().await {
        Some(Packet::Publish(m)) => m.pkid,
        other => panic!("expected the message, got {other:?}"),
    };
    drop(client);
    let mut client = resume(proxy.port, "resumer", true).await;
    match client.recv().await {
        Some(Packet::Publish(m)) => {
            assert_eq!(m.payload.as_ref(), b"unacknowledged");
            assert!(m.dup, "a redelivery");
            assert_eq!(m.pkid, first_pkid, "under the id the client saw first");
        }
        other => panic!("expected the redelivery, got {other:?}"),
    }
    proxy.engine.shutdown().await;
}
