//! Malformed and out-of-order input: each case gets its reason code (or, for
//! 3.1.1 and before CONNECT, a closed connection), is logged as an event, and
//! never disturbs a well-behaved client connected at the same time.

use bytes::Bytes;
use zilla as _;
use zilla_testkit::mqtt::packets::{DisconnectReasonCode, Packet, PingReq, Publish, QoS};
use zilla_testkit::mqtt::{connect_packet, RawMqtt};
use zilla_testkit::proxy::{mqtt_proxy_yaml, wait_for_event, Proxy};
use zilla_testkit::Mosquitto;

async fn start(broker: &Mosquitto) -> Proxy {
    let server = "
    options:
      maximum-packet-size: 1024
      connect-timeout: 1
    exit: mqtt_client_a";
    Proxy::start(&mqtt_proxy_yaml(server, &[("a", broker.port())])).await
}

/// The bystander still round-trips a message through the proxy.
async fn bystander_still_works(bystander: &mut RawMqtt, round: u8) {
    let topic = format!("bystander/{round}");
    bystander
        .send(&Packet::Subscribe(
            zilla_testkit::mqtt::packets::Subscribe {
                pkid: u16::from(round) + 1,
                filters: vec![zilla_testkit::mqtt::packets::Filter {
                    path: topic.clone(),
                    qos: QoS::AtMostOnce,
                    nolocal: false,
                    preserve_retain: false,
                    retain_forward_rule:
                        zilla_testkit::mqtt::packets::RetainForwardRule::OnEverySubscribe,
                }],
                properties: None,
            },
        ))
        .await;
    assert!(matches!(bystander.recv().await, Some(Packet::SubAck(_))));
    bystander
        .send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: topic.clone(),
            pkid: 0,
            payload: Bytes::from_static(b"still here"),
            properties: None,
        }))
        .await;
    match bystander.recv().await {
        Some(Packet::Publish(message)) => assert_eq!(message.topic, topic),
        other => panic!("the bystander lost its message: {other:?}"),
    }
}

/// Connects an MQTT 5 session, sends `bytes`, and returns the DISCONNECT reason.
async fn v5_reason_for(
    proxy: &Proxy,
    client_id: &str,
    bytes: &[u8],
) -> Option<DisconnectReasonCode> {
    let (mut client, _) = RawMqtt::connect(proxy.port, client_id).await;
    client.send_bytes(bytes).await;
    client.closed().await.map(|d| d.reason_code)
}

#[tokio::test]
async fn malformed_mqtt5_input_gets_its_reason_code() {
    let broker = Mosquitto::start().unwrap();
    let proxy = start(&broker).await;
    let (mut bystander, _) = RawMqtt::connect(proxy.port, "bystander").await;

    let cases: &[(&str, &[u8], DisconnectReasonCode, &str)] = &[
        (
            "bad-length",
            &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            DisconnectReasonCode::MalformedPacket,
            "remaining length longer than four bytes",
        ),
        (
            "reserved-flags",
            &[0x80, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, b'a'],
            DisconnectReasonCode::MalformedPacket,
            "reserved flags",
        ),
        (
            "bad-utf8",
            &[0x30, 0x05, 0x00, 0x02, 0xC3, 0x28, 0x00],
            DisconnectReasonCode::MalformedPacket,
            "not valid UTF-8",
        ),
        (
            "wildcard-topic",
            &[0x30, 0x06, 0x00, 0x03, b'a', b'/', b'#', 0x00],
            DisconnectReasonCode::TopicNameInvalid,
            "contains a wildcard",
        ),
        (
            "qos3",
            &[0x36, 0x00],
            DisconnectReasonCode::MalformedPacket,
            "QoS 3",
        ),
        (
            "oversize",
            &[0x30, 0x80, 0x10],
            DisconnectReasonCode::PacketTooLarge,
            "exceeds the maximum of 1024",
        ),
    ];
    for (round, (client_id, bytes, reason, message)) in cases.iter().enumerate() {
        assert_eq!(
            v5_reason_for(&proxy, client_id, bytes).await,
            Some(*reason),
            "case {client_id}"
        );
        wait_for_event(&["MQTT_SESSION_REFUSED", client_id, message]).await;
        bystander_still_works(&mut bystander, round as u8).await;
    }

    // A second CONNECT is a protocol error.
    let (mut twice, _) = RawMqtt::connect(proxy.port, "connects-twice").await;
    twice
        .send(&connect_packet("connects-twice", true, None))
        .await;
    assert_eq!(
        twice.closed().await.map(|d| d.reason_code),
        Some(DisconnectReasonCode::ProtocolError)
    );
    wait_for_event(&[
        "MQTT_SESSION_REFUSED",
        "connects-twice",
        "a second CONNECT",
        "0x82",
    ])
    .await;
    bystander_still_works(&mut bystander, 100).await;
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn input_before_or_instead_of_connect_closes_the_connection() {
    let broker = Mosquitto::start().unwrap();
    let proxy = start(&broker).await;
    let (mut bystander, _) = RawMqtt::connect(proxy.port, "bystander-2").await;

    // A PINGREQ before CONNECT: closed, no CONNACK.
    let mut early = RawMqtt::open(proxy.port).await;
    early.send(&Packet::PingReq(PingReq)).await;
    assert!(early.recv().await.is_none());
    wait_for_event(&["MQTT_CONNECT_REJECTED", "the first packet must be CONNECT"]).await;
    bystander_still_works(&mut bystander, 1).await;

    // A CONNECT that never completes: closed after connect-timeout (1 s).
    let mut slow = RawMqtt::open(proxy.port).await;
    slow.send_bytes(&[0x10, 0x20, 0x00, 0x04, b'M']).await;
    assert!(slow.recv().await.is_none());
    wait_for_event(&["MQTT_CONNECT_TIMEOUT", "sent no CONNECT within 1 s"]).await;
    bystander_still_works(&mut bystander, 2).await;

    // Not MQTT at all.
    let mut http = RawMqtt::open(proxy.port).await;
    http.send_bytes(b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(http.recv().await.is_none());
    bystander_still_works(&mut bystander, 3).await;
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn malformed_mqtt311_input_closes_the_connection() {
    let broker = Mosquitto::start().unwrap();
    let proxy = start(&broker).await;
    let (mut bystander, _) = RawMqtt::connect(proxy.port, "bystander-3").await;
    // MQTT 3.1.1 CONNECT for "old-1", keep-alive 30, clean session.
    let connect = [
        0x10, 0x11, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x1E, 0x00, 0x05, b'o',
        b'l', b'd', b'-', b'1',
    ];
    let mut old = RawMqtt::open(proxy.port).await;
    old.send_bytes(&connect).await;
    // A 3.1.1 CONNACK: 0x20 0x02 flags code.
    old.send_bytes(&[0x36, 0x00]).await; // QoS 3
    let mut seen = Vec::new();
    while let Some(packet) = old.recv().await {
        seen.push(packet);
    }
    assert!(
        seen.iter().all(|p| matches!(p, Packet::ConnAck(_))),
        "3.1.1 has no DISCONNECT from the server; only the CONNACK came: {seen:?}"
    );
    wait_for_event(&["MQTT_SESSION_REFUSED", "old-1", "QoS 3"]).await;
    bystander_still_works(&mut bystander, 1).await;
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn a_disabled_protocol_version_is_refused_in_its_own_terms() {
    let broker = Mosquitto::start().unwrap();
    let only_v5 = "
    options:
      versions: [v5]
    exit: mqtt_client_a";
    let proxy = Proxy::start(&mqtt_proxy_yaml(only_v5, &[("a", broker.port())])).await;
    let mut old = RawMqtt::open(proxy.port).await;
    old.send_bytes(&[
        0x10, 0x11, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x1E, 0x00, 0x05, b'o',
        b'l', b'd', b'-', b'2',
    ])
    .await;
    let mut reply = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut old.into_stream(), &mut reply)
        .await
        .unwrap();
    assert_eq!(
        reply,
        vec![0x20, 0x02, 0x00, 0x01],
        "3.1.1 CONNACK: unacceptable protocol version"
    );
    wait_for_event(&["MQTT_CONNECT_REJECTED", "MQTT v3.1.1 is not enabled"]).await;
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_broker_gets_connack_0x88() {
    let nobody = zilla_testkit::free_port();
    let proxy = Proxy::start(&mqtt_proxy_yaml(
        "    exit: mqtt_client_a",
        &[("a", nobody)],
    ))
    .await;
    let (_, ack) = RawMqtt::connect(proxy.port, "hopeful").await;
    assert_eq!(
        ack.code,
        zilla_testkit::mqtt::packets::ConnectReturnCode::ServerUnavailable
    );
    let reason = ack
        .properties
        .and_then(|p| p.reason_string)
        .unwrap_or_default();
    assert!(
        reason.contains("upstream mqtt_client_a unavailable"),
        "{reason}"
    );
    wait_for_event(&[
        "MQTT_CONNECT_REJECTED",
        "hopeful",
        "upstream mqtt_client_a unavailable",
    ])
    .await;
    proxy.engine.shutdown().await;
}

/// A broker stub on a free port: takes one CONNECT, hands its raw bytes
/// back, and accepts the session.
async fn stub_broker() -> (u16, tokio::task::JoinHandle<Vec<u8>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut bytes = Vec::new();
        loop {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the proxy closed before its CONNECT was complete");
            bytes.extend_from_slice(&chunk[..n]);
            // Remaining length in one byte is enough for this CONNECT.
            if bytes.len() >= 2 && bytes.len() >= 2 + usize::from(bytes[1]) {
                break;
            }
        }
        stream
            .write_all(&[0x20, 0x03, 0x00, 0x00, 0x00])
            .await
            .unwrap();
        // Hold the session until the test ends.
        let mut rest = [0u8; 64];
        let _ = stream.read(&mut rest).await;
        bytes
    });
    (port, task)
}

#[tokio::test]
async fn a_binary_password_reaches_the_broker_byte_for_byte() {
    use zilla_testkit::mqtt::packets::{Connect, Login};
    let (port, broker) = stub_broker().await;
    let proxy = Proxy::start(&mqtt_proxy_yaml("    exit: mqtt_client_a", &[("a", port)])).await;
    // The codec crates only write text passwords: write one of the same
    // length and put the binary bytes over it (the password is last).
    let password = [0xFF, 0x00, 0xC3, 0x28, 0x80, 0xFE];
    let mut bytes = bytes::BytesMut::new();
    Packet::Connect(
        Connect {
            keep_alive: 30,
            client_id: "binary-1".into(),
            clean_start: true,
            properties: None,
        },
        None,
        Some(Login {
            username: "device".into(),
            password: "x".repeat(password.len()),
        }),
    )
    .write(&mut bytes)
    .unwrap();
    let end = bytes.len();
    bytes[end - password.len()..].copy_from_slice(&password);
    let mut client = RawMqtt::open(proxy.port).await;
    client.send_bytes(&bytes).await;
    match client.recv().await {
        Some(Packet::ConnAck(ack)) => assert_eq!(
            ack.code,
            zilla_testkit::mqtt::packets::ConnectReturnCode::Success
        ),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    drop(client);
    let upstream = broker.await.unwrap();
    assert!(
        upstream.ends_with(&password),
        "the broker got the password as sent: {upstream:02X?}"
    );
    proxy.engine.shutdown().await;
}
