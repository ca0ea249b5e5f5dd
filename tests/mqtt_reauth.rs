//! MQTT 5 enhanced authentication against a real mosquitto: a CONNECT with
//! the Authentication Method `jwt` and its token as Authentication Data,
//! then AUTH 0x19 refreshing the token inside the session (issue 27).
//!
//! The client is raw: the codec crate of the testkit has no AUTH, and the
//! proxy's DISCONNECT 0x8C and 0xA0 have no name there either, so frames
//! are split here and AUTH and DISCONNECT read by hand. Every wait is for a
//! packet or an event, with a timeout; the only timed pauses are the token
//! refreshes, which are what is tested.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zilla as _;
use zilla_testkit::mqtt::packets::{
    ConnAck, Connect, ConnectProperties, ConnectReturnCode, Login, Packet, PubAckReason, Publish,
    QoS, SubscribeReasonCode,
};
use zilla_testkit::proxy::{mqtt_proxy_yaml, wait_for_event, Proxy};
use zilla_testkit::seed::{guards_yaml, sign};
use zilla_testkit::Mosquitto;

const TIMEOUT: Duration = Duration::from_secs(10);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A seed token for `sub` with `scope`, living `lives` seconds (negative:
/// expired).
fn token(sub: &str, scope: &str, lives: i64) -> String {
    let claims = json!({
        "iss": "https://auth.example.com",
        "aud": "https://api.example.com",
        "sub": sub,
        "exp": (now() as i64 + lives),
        "scope": scope,
    });
    sign(&claims, "example")
}

/// The proxy in front of `broker`: the seed guard, its token as a
/// `Bearer` user name or as the Authentication Data of method `jwt`;
/// subscriptions need the role `sub`, publishes the role `pub`.
async fn proxy(broker: &Mosquitto) -> Proxy {
    let server = r#"
    options:
      authorization:
        authn_jwt:
          credentials:
            connect:
              username: Bearer {credentials}
            authentication:
              method: jwt
    routes:
      - guarded:
          authn_jwt: [sub]
        when:
          - subscribe: [{topic: "data/#"}]
        exit: mqtt_client_a
      - guarded:
          authn_jwt: [pub]
        when:
          - publish: [{topic: "data/#"}]
        exit: mqtt_client_a"#;
    let yaml = mqtt_proxy_yaml(server, &[("a", broker.port())]).replacen(
        "\nbindings:\n",
        &format!("\nguards:\n{}bindings:\n", guards_yaml()),
        1,
    );
    Proxy::start(&yaml).await
}

/// What the proxy sent, as this test reads it.
#[derive(Debug)]
enum Frame {
    /// AUTH: its reason code and Authentication Method.
    Auth(u8, Option<String>),
    /// DISCONNECT: its reason code (any, 0x8C and 0xA0 included).
    Disconnect(u8),
    Packet(Box<Packet>),
}

/// A raw MQTT 5 client.
struct Client {
    stream: TcpStream,
    buf: BytesMut,
}

impl Client {
    /// Connects as `id` with `token`: as the Authentication Data of method
    /// `method`, or as a `Bearer` user name without one.
    async fn connect(port: u16, id: &str, method: Option<&str>, token: &str) -> (Self, ConnAck) {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut client = Self {
            stream,
            buf: BytesMut::new(),
        };
        let properties = method.map(|method| ConnectProperties {
            session_expiry_interval: None,
            receive_maximum: None,
            max_packet_size: None,
            topic_alias_max: None,
            request_response_info: None,
            request_problem_info: None,
            user_properties: Vec::new(),
            authentication_method: Some(method.into()),
            authentication_data: Some(Bytes::copy_from_slice(token.as_bytes())),
        });
        let login = method.is_none().then(|| Login {
            username: format!("Bearer {token}"),
            password: String::new(),
        });
        let connect = Connect {
            keep_alive: 30,
            client_id: id.into(),
            clean_start: true,
            properties,
        };
        client.send(&Packet::Connect(connect, None, login)).await;
        match client.recv().await {
            Some(Frame::Packet(packet)) => match *packet {
                Packet::ConnAck(ack) => (client, ack),
                other => panic!("expected CONNACK, got {other:?}"),
            },
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out).unwrap();
        let _ = self.stream.write_all(&out).await;
    }

    /// AUTH with `reason`, `method` and `token` (each property if given).
    async fn auth(&mut self, reason: u8, method: Option<&str>, token: Option<&str>) {
        let mut properties = Vec::new();
        for (id, value) in [(0x15u8, method), (0x16, token)] {
            if let Some(value) = value {
                properties.push(id);
                properties.extend_from_slice(&(value.len() as u16).to_be_bytes());
                properties.extend_from_slice(value.as_bytes());
            }
        }
        let mut body = vec![reason];
        varint(properties.len(), &mut body);
        body.extend_from_slice(&properties);
        let mut frame = vec![0xF0];
        varint(body.len(), &mut frame);
        frame.extend_from_slice(&body);
        let _ = self.stream.write_all(&frame).await;
    }

    /// AUTH 0x19 with the method `jwt` and `token`.
    async fn refresh(&mut self, token: &str) {
        self.auth(0x19, Some("jwt"), Some(token)).await;
    }

    /// The next frame, or `None` once the connection is closed.
    async fn recv(&mut self) -> Option<Frame> {
        tokio::time::timeout(TIMEOUT, self.recv_inner())
            .await
            .expect("a packet or the end of the connection in time")
    }

    async fn recv_inner(&mut self) -> Option<Frame> {
        loop {
            if let Some((header, len)) = frame_len(&self.buf) {
                if self.buf.len() >= header + len {
                    let byte1 = self.buf[0];
                    let body = self.buf[header..header + len].to_vec();
                    return Some(match byte1 >> 4 {
                        15 => {
                            self.buf.advance(header + len);
                            Frame::Auth(body.first().copied().unwrap_or(0), auth_method(&body))
                        }
                        14 => {
                            self.buf.advance(header + len);
                            Frame::Disconnect(body.first().copied().unwrap_or(0))
                        }
                        _ => Frame::Packet(Box::new(Packet::read(&mut self.buf, None).unwrap())),
                    });
                }
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next frame, which must be a packet.
    async fn packet(&mut self) -> Packet {
        match self.recv().await {
            Some(Frame::Packet(packet)) => *packet,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    /// The DISCONNECT reason the session ends with (the connection closes).
    async fn disconnected(&mut self) -> u8 {
        let code = loop {
            match self.recv().await {
                Some(Frame::Disconnect(code)) => break code,
                Some(_) => {}
                None => panic!("closed without DISCONNECT"),
            }
        };
        assert!(self.recv().await.is_none(), "closed after DISCONNECT");
        code
    }
}

fn varint(mut value: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            return;
        }
    }
}

/// The fixed header's length and the remaining length, once both arrived.
fn frame_len(buf: &[u8]) -> Option<(usize, usize)> {
    let mut len = 0usize;
    for (index, byte) in buf.iter().skip(1).take(4).enumerate() {
        len |= usize::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((index + 2, len));
        }
    }
    None
}

/// The Authentication Method of an AUTH body (reason, properties).
fn auth_method(body: &[u8]) -> Option<String> {
    // Property lengths of these tests are under 128: one byte.
    let properties = body.get(2..)?;
    let mut at = 0;
    while at < properties.len() {
        let id = properties[at];
        let len = usize::from(u16::from_be_bytes([properties[at + 1], properties[at + 2]]));
        let value = &properties[at + 3..at + 3 + len];
        if id == 0x15 {
            return Some(String::from_utf8_lossy(value).into_owned());
        }
        at += 3 + len;
    }
    None
}

/// Waits for the wall clock's next whole second (plus a little, so that
/// `now()` has moved on).
async fn align_to_a_second() {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let to_next = Duration::from_secs(1) - Duration::from_nanos(u64::from(since.subsec_nanos()));
    tokio::time::sleep(to_next + Duration::from_millis(20)).await;
}

fn publish(topic: &str, pkid: u16, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic.into(),
        pkid,
        payload: Bytes::from_static(payload),
        properties: None,
    })
}

fn subscribe(pkid: u16, filter: &str) -> Packet {
    zilla_testkit::mqtt::subscribe_packet(pkid, filter, QoS::AtLeastOnce)
}

/// The broker's own subscriber on `filter`, straight to mosquitto.
async fn on_broker(broker: &Mosquitto, filter: &str) -> zilla_testkit::mqtt::RawMqtt {
    let (mut client, _) = zilla_testkit::mqtt::RawMqtt::connect(broker.port(), "").await;
    client.send(&subscribe(1, filter)).await;
    assert!(matches!(client.recv().await, Some(Packet::SubAck(_))));
    client
}

#[tokio::test]
async fn refreshed_tokens_keep_one_session_alive_past_their_lifetimes() {
    let broker = Mosquitto::start().unwrap();
    let proxy = proxy(&broker).await;
    let mut watcher = on_broker(&broker, "data/#").await;
    // A token's `exp` is in whole seconds: starting on a second's boundary
    // gives each 3 s token its full 3 s, and each refresh at 2 s a second
    // to spare.
    align_to_a_second().await;
    let started = tokio::time::Instant::now();
    let (mut client, ack) = Client::connect(
        proxy.port,
        "refresher",
        Some("jwt"),
        &token("d1", "sub pub", 3),
    )
    .await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let method = ack.properties.and_then(|p| p.authentication_method);
    assert_eq!(
        method.as_deref(),
        Some("jwt"),
        "the CONNACK names the method"
    );
    client.send(&subscribe(1, "data/down")).await;
    assert!(matches!(client.packet().await, Packet::SubAck(_)));
    let mut round = 0u16;
    // Six refreshes of 3 s tokens, 2 s apart: 12 s, past every one of them.
    while started.elapsed() < Duration::from_secs(12) {
        round += 1;
        tokio::time::sleep_until(started + Duration::from_secs(2) * u32::from(round)).await;
        client.refresh(&token("d1", "sub pub", 3)).await;
        match client.recv().await {
            Some(Frame::Auth(0x00, method)) => assert_eq!(method.as_deref(), Some("jwt")),
            other => panic!("expected AUTH 0x00, got {other:?}"),
        }
        // Both ways: up to the broker, and down from it.
        client.send(&publish("data/up", round, b"up")).await;
        assert!(
            matches!(client.packet().await, Packet::PubAck(a) if a.reason == PubAckReason::Success)
        );
        // The watcher also hears its own messages and their PUBACKs.
        loop {
            match watcher.recv().await {
                Some(Packet::Publish(p)) if p.topic == "data/up" => break,
                Some(_) => {}
                None => panic!("the broker closed the watcher"),
            }
        }
        watcher.send(&publish("data/down", round, b"down")).await;
        loop {
            match client.packet().await {
                Packet::Publish(p) => {
                    assert_eq!(p.topic, "data/down");
                    client
                        .send(&Packet::PubAck(zilla_testkit::mqtt::packets::PubAck {
                            pkid: p.pkid,
                            reason: PubAckReason::Success,
                            properties: None,
                        }))
                        .await;
                    break;
                }
                Packet::PubAck(_) => {}
                other => panic!("expected the message, got {other:?}"),
            }
        }
    }
    // One session all along: started once, re-authenticated each round.
    let events = zilla_testkit::proxy::captured_events();
    let started_events = events
        .iter()
        .filter(|e| e.contains("MQTT_SESSION_STARTED") && e.contains("\"refresher\""))
        .count();
    assert_eq!(started_events, 1, "no reconnect");
    let refreshed = events
        .iter()
        .filter(|e| e.contains("MQTT_REAUTHENTICATED") && e.contains("\"refresher\""))
        .count();
    assert_eq!(refreshed, usize::from(round));
    assert!(
        !events.iter().any(|e| e.contains("eyJ")),
        "no token in any event"
    );
    // Without a refresh it still ends at exp, with 0xA0.
    assert_eq!(client.disconnected().await, 0xA0);
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn bad_refreshes_end_the_session_with_their_reason_codes() {
    let broker = Mosquitto::start().unwrap();
    let proxy = proxy(&broker).await;
    let cases: [(&str, Option<&str>, Option<String>, u8); 5] = [
        (
            "another-identity",
            Some("jwt"),
            Some(token("d2", "sub pub", 60)),
            0x87,
        ),
        ("garbage", Some("jwt"), Some("not.a.token".into()), 0x87),
        (
            "expired",
            Some("jwt"),
            Some(token("d1", "sub pub", -60)),
            0x87,
        ),
        (
            "another-method",
            Some("SCRAM-SHA-1"),
            Some(token("d1", "sub pub", 60)),
            0x8C,
        ),
        ("no-method", None, None, 0x82),
    ];
    for (name, method, refresh, code) in cases {
        let (mut client, ack) =
            Client::connect(proxy.port, name, Some("jwt"), &token("d1", "sub pub", 60)).await;
        assert_eq!(ack.code, ConnectReturnCode::Success, "{name}");
        client.auth(0x19, method, refresh.as_deref()).await;
        assert_eq!(client.disconnected().await, code, "{name}");
        if code != 0x82 {
            wait_for_event(&["MQTT_REAUTHENTICATION_FAILED", name]).await;
        }
    }
    // AUTH 0x18: no challenge-response method is offered.
    let (mut client, _) = Client::connect(
        proxy.port,
        "continue",
        Some("jwt"),
        &token("d1", "sub pub", 60),
    )
    .await;
    client.auth(0x18, Some("jwt"), Some("x")).await;
    assert_eq!(client.disconnected().await, 0x82);
    // AUTH in a session whose CONNECT named no method.
    let (mut client, ack) =
        Client::connect(proxy.port, "user-name", None, &token("d1", "sub pub", 60)).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    client.refresh(&token("d1", "sub pub", 60)).await;
    assert_eq!(client.disconnected().await, 0x82);
    // A method no guard names, at CONNECT.
    let (_, ack) = Client::connect(
        proxy.port,
        "unknown",
        Some("SCRAM-SHA-1"),
        &token("d1", "sub", 60),
    )
    .await;
    assert_eq!(ack.code, ConnectReturnCode::BadAuthenticationMethod);
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn a_refresh_with_fewer_roles_ends_a_subscription_and_refuses_publishes() {
    let broker = Mosquitto::start().unwrap();
    let proxy = proxy(&broker).await;
    let (mut client, _) = Client::connect(
        proxy.port,
        "narrowed",
        Some("jwt"),
        &token("d1", "sub pub", 60),
    )
    .await;
    client.send(&subscribe(1, "data/down")).await;
    assert!(matches!(client.packet().await, Packet::SubAck(_)));
    // Publishing only: the subscription ends upstream.
    client.refresh(&token("d1", "pub", 60)).await;
    assert!(matches!(client.recv().await, Some(Frame::Auth(0x00, _))));
    wait_for_event(&["MQTT_SUBSCRIPTION_REVOKED", "narrowed", "data/down"]).await;
    client.send(&subscribe(2, "data/down")).await;
    match client.packet().await {
        Packet::SubAck(ack) => {
            assert_eq!(ack.return_codes, vec![SubscribeReasonCode::NotAuthorized])
        }
        other => panic!("expected SUBACK 0x87, got {other:?}"),
    }
    // A message to the ended subscription no longer reaches the client:
    // the publish after it (to a topic it never subscribed) is what
    // proves the broker had nothing for it.
    let (mut sender, _) = zilla_testkit::mqtt::RawMqtt::connect(broker.port(), "").await;
    sender.send(&publish("data/down", 1, b"revoked")).await;
    assert!(matches!(sender.recv().await, Some(Packet::PubAck(_))));
    client.send(&publish("data/up", 3, b"still")).await;
    match client.packet().await {
        // 0x10 from mosquitto: nobody subscribes to data/up here.
        Packet::PubAck(ack) => assert_ne!(ack.reason, PubAckReason::NotAuthorized),
        other => panic!("expected PUBACK, not the revoked message: {other:?}"),
    }
    // Subscribing only: a publish is refused with 0x87, the session lives.
    client.refresh(&token("d1", "sub", 60)).await;
    assert!(matches!(client.recv().await, Some(Frame::Auth(0x00, _))));
    client.send(&publish("data/up", 4, b"refused")).await;
    match client.packet().await {
        Packet::PubAck(ack) => assert_eq!(ack.reason, PubAckReason::NotAuthorized),
        other => panic!("expected PUBACK 0x87, got {other:?}"),
    }
    client.send(&subscribe(5, "data/down")).await;
    assert!(
        matches!(client.packet().await, Packet::SubAck(a) if a.return_codes[0] != SubscribeReasonCode::NotAuthorized)
    );
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn user_name_tokens_work_as_before() {
    let broker = Mosquitto::start().unwrap();
    let proxy = proxy(&broker).await;
    let (mut client, ack) =
        Client::connect(proxy.port, "bearer-v5", None, &token("d1", "sub pub", 60)).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let method = ack.properties.and_then(|p| p.authentication_method);
    assert_eq!(method, None);
    client.send(&publish("data/up", 1, b"v5")).await;
    assert!(
        matches!(client.packet().await, Packet::PubAck(a) if a.reason != PubAckReason::NotAuthorized)
    );
    // 3.1.1, with the same kind of token.
    let mut connect = rumqttc::mqttbytes::v4::Connect::new("bearer-v4");
    connect.set_login(format!("Bearer {}", token("d1", "sub pub", 60)), "");
    let mut out = BytesMut::new();
    connect.write(&mut out).unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    stream.write_all(&out).await.unwrap();
    let mut connack = [0u8; 4];
    tokio::time::timeout(TIMEOUT, stream.read_exact(&mut connack))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn mqttjs_refreshes_its_token_in_its_session() {
    use zilla_testkit::clients::{run_script, Library};
    let broker = Mosquitto::start().unwrap();
    let proxy = proxy(&broker).await;
    let key = zilla_testkit::seed::dir().join("private.pem");
    let args = [
        "--port",
        &proxy.port.to_string(),
        "--key",
        &key.display().to_string(),
        "--sub",
        "device1",
        "--lifetime",
        "3",
        "--every",
        "2",
        "--rounds",
        "6",
        "--prefix",
        "mqttjs",
    ]
    .map(str::to_owned);
    let command = Library::MqttJs
        .command("reauth", &args)
        .unwrap_or_else(|error| panic!("{error}"));
    let run = run_script(command, Duration::from_secs(60))
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(run.failures().is_empty(), "{}", run.transcript());
    let mut expected = vec!["connect".to_owned(), "subscribe".to_owned()];
    expected.extend((1..=6).map(|round| format!("refresh_{round}")));
    expected.push("expiry".into());
    assert_eq!(run.checks(), expected, "{}", run.transcript());
    // One session: started once, re-authenticated six times.
    let events = zilla_testkit::proxy::captured_events();
    let count = |kind: &str| {
        (events.iter())
            .filter(|e| e.contains(kind) && e.contains("\"mqttjs-refresher\""))
            .count()
    };
    assert_eq!(count("MQTT_SESSION_STARTED"), 1, "no reconnect");
    assert_eq!(count("MQTT_REAUTHENTICATED"), 6);
    proxy.engine.shutdown().await;
}
