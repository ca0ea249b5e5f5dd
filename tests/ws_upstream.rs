//! The mqtt client reaching a broker's own WebSocket listener through a `ws`
//! client: `tcp server -> mqtt server -> mqtt client -> ws client -> tcp
//! client -> mosquitto (listener with protocol websockets)`. The tcp client
//! knows only the WebSocket listener's port, where plain MQTT is refused, so a
//! round trip proves the upstream spoke WebSocket.

use zilla as _;
use zilla_testkit::mqtt::packets::{Packet, QoS};
use zilla_testkit::mqtt::{publish_packet, subscribe_packet, RawMqtt};
use zilla_testkit::proxy::Proxy;
use zilla_testkit::{free_port, Mosquitto};

fn yaml(ws_port: u16) -> String {
    format!(
        "
name: ws-upstream
telemetry:
  exporters:
    capture:
      type: capture
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: {{ host: 127.0.0.1, port: 0 }}
    exit: north_mqtt_server
  north_mqtt_server:
    type: mqtt
    kind: server
    exit: north_mqtt_client
  north_mqtt_client:
    type: mqtt
    kind: client
    exit: south_ws_client
  south_ws_client:
    type: ws
    kind: client
    options:
      defaults:
        protocol: mqtt
        path: /mqtt
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {ws_port} }}
"
    )
}

#[tokio::test]
async fn the_mqtt_client_reaches_mosquittos_websocket_listener_through_a_ws_client() {
    let ws_port = free_port();
    let broker = Mosquitto::start_with(&format!(
        "listener {ws_port} 127.0.0.1\nprotocol websockets"
    ))
    .unwrap();
    let proxy = Proxy::start(&yaml(ws_port)).await;

    let (mut subscriber, ack) = RawMqtt::connect(proxy.port, "ws-upstream-sub").await;
    assert_eq!(
        ack.code,
        zilla_testkit::mqtt::packets::ConnectReturnCode::Success,
        "{:#?}",
        zilla_testkit::proxy::captured_events()
    );
    subscriber
        .send(&subscribe_packet(1, "ws/upstream/#", QoS::AtLeastOnce))
        .await;
    assert!(matches!(subscriber.recv().await, Some(Packet::SubAck(_))));

    // A publisher straight at the broker's plain listener: the message
    // reaches the proxy's subscriber over the broker's WebSocket listener.
    let (mut direct, _) = RawMqtt::connect(broker.port(), "ws-upstream-direct").await;
    direct
        .send(&publish_packet(
            "ws/upstream/in",
            QoS::AtLeastOnce,
            7,
            b"to the proxy".to_vec(),
        ))
        .await;
    assert!(matches!(direct.recv().await, Some(Packet::PubAck(_))));
    match subscriber.recv().await {
        Some(Packet::Publish(publish)) => {
            assert_eq!(&publish.topic[..], "ws/upstream/in");
            assert_eq!(&publish.payload[..], b"to the proxy");
        }
        other => panic!("expected the message, got {other:?}"),
    }

    // And the other way: through the proxy, over WebSocket, to a direct
    // subscriber; the PUBACK comes after the broker's.
    direct
        .send(&subscribe_packet(2, "ws/upstream/out", QoS::AtLeastOnce))
        .await;
    assert!(matches!(direct.recv().await, Some(Packet::SubAck(_))));
    subscriber
        .send(&publish_packet(
            "ws/upstream/out",
            QoS::AtLeastOnce,
            9,
            b"to the broker".to_vec(),
        ))
        .await;
    let mut acked = false;
    while !acked {
        match subscriber.recv().await {
            Some(Packet::PubAck(ack)) => {
                assert_eq!(ack.pkid, 9);
                acked = true;
            }
            Some(Packet::Publish(_)) => {}
            other => panic!("expected the PUBACK, got {other:?}"),
        }
    }
    match direct.recv().await {
        Some(Packet::Publish(publish)) => assert_eq!(&publish.payload[..], b"to the broker"),
        other => panic!("expected the message, got {other:?}"),
    }
}
