//! Conformance at the edge: every hostile packet a server must refuse is
//! refused by the proxy itself, with the reason code the specification names,
//! and the broker behind it sees nothing of it. Each case is sent through the
//! proxy by a raw client, in MQTT 5 and 3.1.1 where both apply; a raw broker
//! stub records everything that reaches it. The rows of
//! `docs/conformance.md` point to these cases.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use zilla as _;
use zilla_testkit::mqtt::packets::{
    ConnectReturnCode as Code, DisconnectReasonCode as Reason, Packet, PingResp, PubAck,
    PubAckReason, PubComp, PubRec, PubRecReason, SubAck, SubscribeReasonCode,
};
use zilla_testkit::mqtt::RawMqtt;
use zilla_testkit::proxy::{mqtt_proxy_yaml, Proxy};

/// Bytes a case is built from: a frame with its remaining length.
fn frame(byte1: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![byte1];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A length-prefixed string or binary field.
fn s(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// A property block (shorter than 128 bytes).
fn props(bytes: &[u8]) -> Vec<u8> {
    [&[bytes.len() as u8], bytes].concat()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum V {
    V4,
    V5,
}

/// A CONNECT for `id` with `flags`, CONNECT `properties` (5.0) and the
/// payload `fields` after the client id.
fn connect(v: V, id: &str, flags: u8, properties: &[u8], fields: &[u8]) -> Vec<u8> {
    let mut body = s(b"MQTT");
    body.extend_from_slice(&[if v == V::V5 { 5 } else { 4 }, flags, 0, 30]);
    if v == V::V5 {
        body.extend(props(properties));
    }
    body.extend(s(id.as_bytes()));
    body.extend_from_slice(fields);
    frame(0x10, &body)
}

/// A PUBLISH of "m" to `topic` at `qos` with packet id `pkid`.
fn publish(v: V, qos: u8, pkid: u16, topic: &[u8], properties: &[u8]) -> Vec<u8> {
    let mut body = s(topic);
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    if v == V::V5 {
        body.extend(props(properties));
    }
    body.push(b'm');
    frame(0x30 | qos << 1, &body)
}

/// A SUBSCRIBE with packet id `pkid` of `filters` and their options.
fn subscribe(v: V, pkid: u16, properties: &[u8], filters: &[(&[u8], u8)]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    if v == V::V5 {
        body.extend(props(properties));
    }
    for (filter, options) in filters {
        body.extend(s(filter));
        body.push(*options);
    }
    frame(0x82, &body)
}

/// An UNSUBSCRIBE with packet id `pkid` of `filters`.
fn unsubscribe(v: V, pkid: u16, filters: &[&[u8]]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    if v == V::V5 {
        body.push(0);
    }
    for filter in filters {
        body.extend(s(filter));
    }
    frame(0xA2, &body)
}

/// What one upstream connection brought to the broker stub.
#[derive(Debug, Default)]
struct UpstreamSeen {
    client_id: String,
    /// Every packet after the CONNECT.
    packets: Vec<Packet>,
    closed: bool,
}

/// A raw MQTT 5 broker on a free port: it accepts every session, answers
/// what a broker answers (acks, SUBACKs, PINGRESP) and records it all.
struct BrokerStub {
    port: u16,
    seen: Arc<Mutex<Vec<UpstreamSeen>>>,
    changes: watch::Receiver<u64>,
}

impl BrokerStub {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<UpstreamSeen>>> = Arc::default();
        let (changed, changes) = watch::channel(0u64);
        let changed = Arc::new(changed);
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_upstream(stream, record.clone(), changed.clone()));
            }
        });
        Self {
            port,
            seen,
            changes,
        }
    }

    /// Upstream sessions opened so far.
    fn connections(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Waits until `condition` holds of what the stub saw for `client_id`.
    async fn wait_for<T>(
        &self,
        client_id: &str,
        what: &str,
        condition: impl Fn(&UpstreamSeen) -> Option<T>,
    ) -> T {
        let mut changes = self.changes.clone();
        let found = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                changes.borrow_and_update();
                let found = self
                    .seen
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|u| u.client_id == client_id)
                    .find_map(&condition);
                if let Some(value) = found {
                    return value;
                }
                changes.changed().await.unwrap();
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("the broker never saw {what} for {client_id}"))
    }

    /// What reached the broker from `client_id`'s session after its CONNECT,
    /// once that upstream connection has closed.
    async fn after_connect(&self, client_id: &str) -> Vec<Packet> {
        self.wait_for(client_id, "the upstream close", |u| {
            u.closed.then(|| u.packets.clone())
        })
        .await
    }

    /// The first `count` packets after `client_id`'s CONNECT, once they arrived.
    async fn packets(&self, client_id: &str, count: usize) -> Vec<Packet> {
        self.wait_for(client_id, "the packets", |u| {
            (u.packets.len() >= count).then(|| u.packets[..count].to_vec())
        })
        .await
    }
}

/// One upstream connection of the stub.
async fn serve_upstream(
    mut stream: tokio::net::TcpStream,
    seen: Arc<Mutex<Vec<UpstreamSeen>>>,
    changed: Arc<watch::Sender<u64>>,
) {
    let mut buf = BytesMut::new();
    let mut index = None;
    loop {
        // A DISCONNECT with a reason and no property length, which the codec
        // crate does not read (MQTT 5 allows it: 3.14.2.2.1).
        if buf.len() >= 3 && buf[..2] == [0xE0, 0x01] {
            let reason = Reason::try_from(buf[2]).expect("a DISCONNECT reason");
            let _ = buf.split_to(3);
            buf.extend_from_slice(&[0xE0, 0x02, reason as u8, 0x00]);
        }
        let packet = match Packet::read(&mut buf, None) {
            Ok(packet) => packet,
            Err(zilla_testkit::mqtt::packets::Error::InsufficientBytes(_)) => {
                if matches!(stream.read_buf(&mut buf).await, Ok(0) | Err(_)) {
                    break;
                }
                continue;
            }
            Err(error) => panic!("the proxy sent the broker a malformed packet: {error}"),
        };
        let reply = match &packet {
            Packet::Connect(connect, ..) => {
                {
                    let mut seen = seen.lock().unwrap();
                    index = Some(seen.len());
                    seen.push(UpstreamSeen {
                        client_id: connect.client_id.clone(),
                        ..UpstreamSeen::default()
                    });
                }
                changed.send_modify(|n| *n += 1);
                stream.write_all(&[0x20, 0x03, 0x00, 0x00, 0x00]).await.ok();
                continue;
            }
            Packet::Publish(p) if p.qos as u8 == 1 => Some(Packet::PubAck(PubAck {
                pkid: p.pkid,
                reason: PubAckReason::Success,
                properties: None,
            })),
            Packet::Publish(p) if p.qos as u8 == 2 => Some(Packet::PubRec(PubRec {
                pkid: p.pkid,
                reason: PubRecReason::Success,
                properties: None,
            })),
            Packet::Subscribe(sub) => Some(Packet::SubAck(SubAck {
                pkid: sub.pkid,
                return_codes: sub
                    .filters
                    .iter()
                    .map(|f| SubscribeReasonCode::Success(f.qos))
                    .collect(),
                properties: None,
            })),
            Packet::PingReq(_) => Some(Packet::PingResp(PingResp)),
            _ => None,
        };
        if let Some(index) = index {
            seen.lock().unwrap()[index].packets.push(packet);
            changed.send_modify(|n| *n += 1);
        }
        if let Some(reply) = reply {
            let mut out = BytesMut::new();
            reply.write(&mut out).unwrap();
            stream.write_all(&out).await.ok();
        }
    }
    if let Some(index) = index {
        seen.lock().unwrap()[index].closed = true;
        changed.send_modify(|n| *n += 1);
    }
}

/// The proxy before the stub: `allowed/#` is the one route, packets up to
/// 1024 bytes.
async fn proxy(broker: &BrokerStub) -> Proxy {
    let server = "
    options:
      maximum-packet-size: 1024
    routes:
      - when:
          - publish: [{topic: allowed/#}]
          - subscribe: [{topic: allowed/#}]
        exit: mqtt_client_a";
    Proxy::start(&mqtt_proxy_yaml(server, &[("a", broker.port)])).await
}

/// A connected client `id`: its CONNACK read (a 3.1.1 CONNACK is 4 bytes).
async fn connected(port: u16, v: V, id: &str) -> RawMqtt {
    let mut client = RawMqtt::open(port).await;
    client.send_bytes(&connect(v, id, 0x02, &[], &[])).await;
    match v {
        V::V5 => match client.recv().await {
            Some(Packet::ConnAck(ack)) => assert_eq!(ack.code, Code::Success, "{id}"),
            other => panic!("{id}: expected a CONNACK, got {other:?}"),
        },
        V::V4 => assert_eq!(
            client.recv_bytes(4).await,
            Some(vec![0x20, 0x02, 0x00, 0x00]),
            "{id}: a 3.1.1 CONNACK"
        ),
    }
    client
}

/// What a client sees of a refusal.
#[derive(Debug, Clone, Copy)]
enum Sees {
    /// 5.0: a CONNACK with this code, then the close.
    Connack(Code),
    /// 3.1.1: the connection closes, and no byte comes.
    Closed,
}

/// A hostile CONNECT: its name, version, bytes (for client id `id`) and
/// what the client sees.
type ConnectCase = (&'static str, V, fn(&str) -> Vec<u8>, Sees);

#[rustfmt::skip]
fn connect_cases() -> Vec<ConnectCase> {
    vec![
        ("reserved flag", V::V5, |id| connect(V::V5, id, 0x03, &[], &[]), Sees::Connack(Code::MalformedPacket)),
        ("reserved flag", V::V4, |id| connect(V::V4, id, 0x03, &[], &[]), Sees::Closed),
        ("password flag without user name", V::V4, |id| connect(V::V4, id, 0x42, &[], &s(b"pw")), Sees::Closed),
        ("will QoS 3", V::V5, |id| connect(V::V5, id, 0x1E, &[], &[props(&[]), s(b"w"), s(b"x")].concat()), Sees::Connack(Code::MalformedPacket)),
        ("will QoS 3", V::V4, |id| connect(V::V4, id, 0x1E, &[], &[s(b"w"), s(b"x")].concat()), Sees::Closed),
        ("will QoS without the will flag", V::V4, |id| connect(V::V4, id, 0x0A, &[], &[]), Sees::Closed),
        ("Session Expiry Interval twice", V::V5, |id| connect(V::V5, id, 0x02, &[0x11, 0, 0, 0, 9, 0x11, 0, 0, 0, 9], &[]), Sees::Connack(Code::ProtocolError)),
        ("Receive Maximum 0", V::V5, |id| connect(V::V5, id, 0x02, &[0x21, 0, 0], &[]), Sees::Connack(Code::ProtocolError)),
        ("Maximum Packet Size 0", V::V5, |id| connect(V::V5, id, 0x02, &[0x27, 0, 0, 0, 0], &[]), Sees::Connack(Code::ProtocolError)),
        ("Request Problem Information 2", V::V5, |id| connect(V::V5, id, 0x02, &[0x17, 2], &[]), Sees::Connack(Code::ProtocolError)),
        ("Request Response Information 2", V::V5, |id| connect(V::V5, id, 0x02, &[0x19, 2], &[]), Sees::Connack(Code::ProtocolError)),
        ("Authentication Data without a method", V::V5, |id| connect(V::V5, id, 0x02, &[0x16, 0, 1, 7], &[]), Sees::Connack(Code::ProtocolError)),
        ("a Topic Alias in CONNECT", V::V5, |id| connect(V::V5, id, 0x02, &[0x23, 0, 1], &[]), Sees::Connack(Code::MalformedPacket)),
        ("a user property with U+0000", V::V5, |id| connect(V::V5, id, 0x02, &[0x26, 0, 1, b'k', 0, 1, 0], &[]), Sees::Connack(Code::MalformedPacket)),
        ("a will declared UTF-8 that is not", V::V5, |id| connect(V::V5, id, 0x06, &[], &[props(&[0x01, 1]), s(b"w"), s(&[0xFF])].concat()), Sees::Connack(Code::PayloadFormatInvalid)),
        ("bytes after the last field", V::V4, |id| connect(V::V4, id, 0x02, &[], &[0]), Sees::Closed),
    ]
}

#[tokio::test]
async fn a_connect_the_proxy_must_refuse_never_reaches_the_broker() {
    let broker = BrokerStub::start().await;
    let proxy = proxy(&broker).await;
    let cases = connect_cases();
    for (round, (name, v, bytes, sees)) in cases.into_iter().enumerate() {
        let id = format!("connect-{round}");
        let before = broker.connections();
        let mut client = RawMqtt::open(proxy.port).await;
        client.send_bytes(&bytes(&id)).await;
        match sees {
            Sees::Connack(code) => match client.recv().await {
                Some(Packet::ConnAck(ack)) => {
                    assert_eq!(ack.code, code, "{name} ({v:?})");
                    assert!(client.recv().await.is_none(), "{name}: closed after");
                }
                other => panic!("{name} ({v:?}): expected CONNACK {code:?}, got {other:?}"),
            },
            Sees::Closed => assert!(
                client.bytes_until_closed().await.is_empty(),
                "{name} ({v:?}): 3.1.1 has no CONNACK for it: the connection just closes"
            ),
        }
        // The proxy opens upstreams only for an admitted CONNECT, before it
        // answers: none was opened for this one.
        assert_eq!(
            broker.connections(),
            before,
            "{name} ({v:?}) reached the broker"
        );
    }
    proxy.engine.shutdown().await;
}

/// A hostile packet after a valid CONNECT: name, versions, bytes, what a 5.0
/// client sees (a 3.1.1 client sees the connection close).
type SessionCase = (&'static str, &'static [V], Vec<u8>, Reason, &'static str);

const BOTH: &[V] = &[V::V4, V::V5];
const V5: &[V] = &[V::V5];

#[rustfmt::skip]
fn session_cases(v: V) -> Vec<SessionCase> {
    let qos1 = |topic: &[u8], properties: &[u8]| publish(v, 1, 5, topic, properties);
    let qos0 = |topic: &[u8], properties: &[u8]| publish(v, 0, 0, topic, properties);
    let reserved_option = if v == V::V5 { 0x40 } else { 0x04 };
    let oversize = publish(v, 0, 0, &vec![b'a'; 1025 - 3 - 2 - 1 - usize::from(v == V::V5)], &[]);
    assert_eq!(oversize.len(), 1025);
    vec![
        ("U+0000 in a topic", BOTH, qos0(b"allowed/\0", &[]), Reason::MalformedPacket, "the PUBLISH topic contains U+0000"),
        ("a non-character in a topic", BOTH, qos0("allowed/\u{FFFF}".as_bytes(), &[]), Reason::MalformedPacket, "non-character U+FFFF"),
        ("an empty topic without alias", BOTH, qos0(b"", &[]), Reason::ProtocolError, "empty topic and no topic alias"),
        ("a wildcard in a topic", BOTH, qos0(b"allowed/#", &[]), Reason::TopicNameInvalid, "contains a wildcard"),
        ("QoS 1 with packet id 0", BOTH, publish(v, 1, 0, b"allowed/1", &[]), Reason::ProtocolError, "packet identifier 0"),
        ("Content Type twice", V5, qos1(b"allowed/1", &[0x03, 0, 1, b't', 0x03, 0, 1, b't']), Reason::ProtocolError, "Content Type appears more than once in PUBLISH"),
        ("a Subscription Identifier from a client", V5, qos1(b"allowed/1", &[0x0B, 1]), Reason::ProtocolError, "Subscription Identifier in a PUBLISH from a client"),
        ("Topic Alias 0", V5, qos1(b"allowed/1", &[0x23, 0, 0]), Reason::TopicAliasInvalid, "Topic Alias 0"),
        ("a user property with U+0000", V5, qos1(b"allowed/1", &[0x26, 0, 1, b'k', 0, 1, 0]), Reason::MalformedPacket, "user property value contains U+0000"),
        ("Payload Format Indicator 2", V5, qos1(b"allowed/1", &[0x01, 2]), Reason::ProtocolError, "Payload Format Indicator of 2"),
        ("a QoS 0 publish no route takes", BOTH, qos0(b"elsewhere/1", &[]), Reason::TopicNameInvalid, "no route for publish"),
        ("SUBSCRIBE with packet id 0", BOTH, subscribe(v, 0, &[], &[(b"allowed/1", 1)]), Reason::ProtocolError, "SUBSCRIBE with packet identifier 0"),
        ("SUBSCRIBE without filters", BOTH, subscribe(v, 1, &[], &[]), Reason::ProtocolError, "SUBSCRIBE without topic filters"),
        ("reserved subscription option bits", BOTH, subscribe(v, 1, &[], &[(b"allowed/1", reserved_option)]), Reason::MalformedPacket, "reserved bits"),
        ("a subscription with QoS 3", V5, subscribe(v, 1, &[], &[(b"allowed/1", 3)]), Reason::ProtocolError, "maximum QoS 3"),
        ("Retain Handling 3", V5, subscribe(v, 1, &[], &[(b"allowed/1", 0x30)]), Reason::ProtocolError, "Retain Handling 3"),
        ("No Local on a shared subscription", V5, subscribe(v, 1, &[], &[(b"$share/g/allowed/1", 0x04)]), Reason::ProtocolError, "No Local on a shared subscription"),
        ("Subscription Identifier 0", V5, subscribe(v, 1, &[0x0B, 0], &[(b"allowed/1", 0)]), Reason::ProtocolError, "Subscription Identifier of 0"),
        ("UNSUBSCRIBE with packet id 0", BOTH, unsubscribe(v, 0, &[b"allowed/1"]), Reason::ProtocolError, "UNSUBSCRIBE with packet identifier 0"),
        ("UNSUBSCRIBE without filters", BOTH, unsubscribe(v, 1, &[]), Reason::ProtocolError, "UNSUBSCRIBE without topic filters"),
        ("PINGREQ with a body", BOTH, frame(0xC0, &[0]), Reason::MalformedPacket, "PINGREQ has 1 bytes after"),
        ("PUBACK with an unknown reason", V5, frame(0x40, &[0, 1, 0x05]), Reason::MalformedPacket, "PUBACK with reason code 0x05"),
        ("AUTH without an authentication method", V5, frame(0xF0, &[]), Reason::ProtocolError, "CONNECT had no Authentication Method"),
        ("CONNACK from a client", BOTH, frame(0x20, &[0, 0]), Reason::ProtocolError, "unexpected packet from a client: CONNACK"),
        ("a remaining length not in the fewest bytes", BOTH, vec![0xC0, 0x80, 0x00], Reason::MalformedPacket, "fewest bytes"),
        ("one byte over the maximum packet size", BOTH, oversize, Reason::PacketTooLarge, "1025 bytes exceeds the maximum of 1024"),
        ("a session expiry at DISCONNECT after none at CONNECT", V5, frame(0xE0, &[0x00, 5, 0x11, 0, 0, 0, 9]), Reason::ProtocolError, "DISCONNECT sets a session expiry"),
    ]
}

#[tokio::test]
async fn a_packet_the_proxy_must_refuse_never_reaches_the_broker() {
    let broker = BrokerStub::start().await;
    let proxy = proxy(&broker).await;
    let mut round = 0;
    for v in [V::V5, V::V4] {
        for (name, versions, bytes, reason, message) in session_cases(v) {
            if !versions.contains(&v) {
                continue;
            }
            round += 1;
            let id = format!("session-{round}");
            let mut client = connected(proxy.port, v, &id).await;
            client.send_bytes(&bytes).await;
            match v {
                V::V5 => {
                    let disconnect = client.closed().await;
                    let disconnect =
                        disconnect.unwrap_or_else(|| panic!("{name}: expected a DISCONNECT"));
                    assert_eq!(disconnect.reason_code, reason, "{name}");
                    let why = disconnect
                        .properties
                        .and_then(|p| p.reason_string)
                        .unwrap_or_default();
                    assert!(
                        why.contains(message),
                        "{name}: {why:?} does not say {message:?}"
                    );
                }
                V::V4 => assert!(
                    client.bytes_until_closed().await.is_empty(),
                    "{name} (3.1.1): the connection closes without a byte"
                ),
            }
            assert_eq!(
                broker.after_connect(&id).await,
                Vec::<Packet>::new(),
                "{name} ({v:?}): the broker saw it"
            );
        }
    }
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn every_short_form_the_specification_allows_is_accepted() {
    let broker = BrokerStub::start().await;
    let proxy = proxy(&broker).await;
    let mut client = connected(proxy.port, V::V5, "short-forms").await;
    // Acks for packet ids nobody used are ignored; a PUBREL is answered.
    client
        .send_bytes(
            &[
                frame(0x40, &[0, 9]),
                frame(0x40, &[0, 9, 0x10]),
                frame(0x40, &[0, 9, 0x80, 0]),
                frame(0x50, &[0, 9, 0x80]),
                frame(0x70, &[0, 9, 0x92]),
                frame(0x62, &[0, 9, 0x00]),
                frame(0xC0, &[]),
            ]
            .concat(),
        )
        .await;
    assert!(matches!(
        client.recv().await,
        Some(Packet::PubComp(PubComp { pkid: 9, .. }))
    ));
    assert!(matches!(client.recv().await, Some(Packet::PingResp(_))));
    // DISCONNECT with a reason and no property length.
    client.send_bytes(&[0xE0, 0x01, 0x04]).await;
    assert!(client.closed().await.is_none(), "no DISCONNECT back");
    // The proxy answers PINGREQ itself; the DISCONNECT goes on as sent.
    match broker.packets("short-forms", 1).await.as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.reason_code, Reason::DisconnectWithWillMessage),
        other => panic!("the broker expected DISCONNECT 0x04, got {other:?}"),
    }
    // 3.1.1 acks of two bytes.
    let mut old = connected(proxy.port, V::V4, "short-forms-4").await;
    old.send_bytes(&[frame(0x40, &[0, 9]), frame(0x62, &[0, 9]), frame(0xC0, &[])].concat())
        .await;
    // PUBCOMP 9, then PINGRESP.
    assert_eq!(
        old.recv_bytes(6).await,
        Some(vec![0x70, 0x02, 0, 9, 0xD0, 0x00])
    );
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn the_maximum_packet_size_counts_the_whole_packet() {
    let broker = BrokerStub::start().await;
    let proxy = proxy(&broker).await;
    for v in [V::V5, V::V4] {
        let id = format!("largest-{v:?}");
        let mut client = connected(proxy.port, v, &id).await;
        // 1024 bytes with the fixed header: exactly the maximum.
        let topic = [
            b"allowed/".as_slice(),
            &vec![b'a'; 1024 - 3 - 2 - 1 - 8 - usize::from(v == V::V5)],
        ]
        .concat();
        let largest = publish(v, 0, 0, &topic, &[]);
        assert_eq!(largest.len(), 1024);
        client.send_bytes(&largest).await;
        match broker.packets(&id, 1).await.as_slice() {
            [Packet::Publish(p)] => assert_eq!(p.topic.len(), topic.len()),
            other => panic!("{v:?}: the largest packet did not pass: {other:?}"),
        }
    }
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn a_filter_no_route_takes_gets_its_own_suback_code_and_the_session_goes_on() {
    let broker = BrokerStub::start().await;
    let proxy = proxy(&broker).await;
    let filters: &[(&[u8], u8)] = &[
        (b"#", 1),
        (b"allowed/1", 1),
        (b"+/+/#", 0),
        (b"tenants/#", 1),
    ];
    // MQTT 5: 0x8F (Topic Filter invalid) for each filter no route takes.
    let mut client = connected(proxy.port, V::V5, "filters-5").await;
    client.send_bytes(&subscribe(V::V5, 3, &[], filters)).await;
    match client.recv().await {
        Some(Packet::SubAck(ack)) => assert_eq!(
            ack.return_codes,
            vec![
                SubscribeReasonCode::TopicFilterInvalid,
                SubscribeReasonCode::Success(zilla_testkit::mqtt::packets::QoS::AtLeastOnce),
                SubscribeReasonCode::TopicFilterInvalid,
                SubscribeReasonCode::TopicFilterInvalid,
            ]
        ),
        other => panic!("expected a SUBACK, got {other:?}"),
    }
    client.send_bytes(&frame(0xC0, &[])).await;
    assert!(
        matches!(client.recv().await, Some(Packet::PingResp(_))),
        "the session goes on"
    );
    match broker.packets("filters-5", 1).await.as_slice() {
        [Packet::Subscribe(sub)] => {
            let paths: Vec<&str> = sub.filters.iter().map(|f| f.path.as_str()).collect();
            assert_eq!(
                paths,
                ["allowed/1"],
                "only the routable filter reached the broker"
            );
        }
        other => panic!("{other:?}"),
    }
    // 3.1.1: 0x80 for each.
    let mut old = connected(proxy.port, V::V4, "filters-4").await;
    old.send_bytes(&subscribe(V::V4, 3, &[], filters)).await;
    assert_eq!(
        old.recv_bytes(8).await,
        Some(vec![0x90, 0x06, 0, 3, 0x80, 0x01, 0x80, 0x80])
    );
    old.send_bytes(&frame(0xC0, &[])).await;
    assert_eq!(
        old.recv_bytes(2).await,
        Some(vec![0xD0, 0x00]),
        "the session goes on"
    );
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn a_qos_1_or_2_publish_no_route_takes_is_refused_alone() {
    let broker = BrokerStub::start().await;
    let proxy = proxy(&broker).await;
    let mut client = connected(proxy.port, V::V5, "stray-5").await;
    client
        .send_bytes(
            &[
                publish(V::V5, 1, 4, b"elsewhere/1", &[]),
                publish(V::V5, 2, 5, b"elsewhere/2", &[]),
            ]
            .concat(),
        )
        .await;
    match client.recv().await {
        Some(Packet::PubAck(ack)) => {
            assert_eq!((ack.pkid, ack.reason), (4, PubAckReason::TopicNameInvalid))
        }
        other => panic!("expected PUBACK 0x90, got {other:?}"),
    }
    match client.recv().await {
        Some(Packet::PubRec(rec)) => {
            assert_eq!((rec.pkid, rec.reason), (5, PubRecReason::TopicNameInvalid))
        }
        other => panic!("expected PUBREC 0x90, got {other:?}"),
    }
    // The session goes on: a routable publish gets the broker's PUBACK.
    client
        .send_bytes(&publish(V::V5, 1, 6, b"allowed/1", &[]))
        .await;
    match client.recv().await {
        Some(Packet::PubAck(ack)) => assert_eq!((ack.pkid, ack.reason), (6, PubAckReason::Success)),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    match broker.packets("stray-5", 1).await.as_slice() {
        [Packet::Publish(p)] => assert_eq!(p.topic, "allowed/1", "only it reached the broker"),
        other => panic!("{other:?}"),
    }
    // 3.1.1 has no failure PUBACK: the session ends, and nothing is forwarded.
    let mut old = connected(proxy.port, V::V4, "stray-4").await;
    old.send_bytes(&publish(V::V4, 1, 4, b"elsewhere/1", &[]))
        .await;
    assert!(old.bytes_until_closed().await.is_empty());
    assert!(broker.after_connect("stray-4").await.is_empty());
    proxy.engine.shutdown().await;
}
