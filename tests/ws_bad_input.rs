//! Bad input on the WebSocket path, `tcp -> http -> ws -> mqtt`: each case
//! ends only its own connection, with the HTTP status or WebSocket close code
//! RFC 6455 / RFC 9110 name and an event naming the peer, while a bystander
//! MQTT-over-WebSocket session keeps working and new connections are served.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zilla as _;
use zilla_engine::Engine;
use zilla_testkit::mqtt::packets::{ConnAck, ConnectReturnCode, Packet, PubAck, QoS};
use zilla_testkit::mqtt::{connect_packet, publish_packet, subscribe_packet};
use zilla_testkit::proxy::{wait_for_event, Proxy};
use zilla_testkit::Mosquitto;

const TIMEOUT: Duration = Duration::from_secs(10);
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn yaml(broker: u16) -> String {
    format!(
        "
name: ws-bad-input
telemetry:
  exporters:
    capture:
      type: capture
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: {{ host: 127.0.0.1, port: 0 }}
    exit: north_http_server
  north_http_server:
    type: http
    kind: server
    routes:
      - when:
          - headers:
              upgrade: websocket
        exit: north_ws_server
  north_ws_server:
    type: ws
    kind: server
    routes:
      - when:
          - protocol: mqtt
        exit: north_mqtt_server
  north_mqtt_server:
    type: mqtt
    kind: server
    exit: north_mqtt_client
  north_mqtt_client:
    type: mqtt
    kind: client
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {broker} }}
"
    )
}

async fn proxy(broker: &Mosquitto) -> Proxy {
    // A short header deadline, so the slow-handshake case ends quickly.
    Proxy::start_with(
        Engine::from_yaml(yaml(broker.port())).property("zilla.binding.http.header.timeout", "1"),
    )
    .await
}

/// An upgrade request with `headers` replacing the usual ones of the same name
/// (a header given with an empty value is left out).
fn upgrade_request(headers: &[(&str, &str)]) -> String {
    let mut all = vec![
        ("Host", "127.0.0.1"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", KEY),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Protocol", "mqtt"),
    ];
    for (name, value) in headers {
        match all.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some(entry) => entry.1 = value,
            None => all.push((name, value)),
        }
    }
    let mut request = "GET /mqtt HTTP/1.1\r\n".to_owned();
    for (name, value) in all.iter().filter(|(_, v)| !v.is_empty()) {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request
}

/// A raw client connection and the address the proxy's events name it by.
async fn open(port: u16) -> (TcpStream, String) {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let local = stream.local_addr().unwrap().to_string();
    (stream, local)
}

/// Reads an HTTP response head; returns it as text.
async fn response_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(TIMEOUT, async {
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(0) | Err(_) => break,
                Ok(_) => head.push(byte[0]),
            }
        }
    })
    .await
    .expect("a response in time");
    String::from_utf8_lossy(&head).into_owned()
}

fn status(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {head:?}"))
}

/// A client frame: `first` is FIN/RSV/opcode, masked with a fixed key.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![first];
    match payload.len() {
        len @ 0..=125 => frame.push(0x80 | len as u8),
        len @ 126..=65535 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Reads server frames until a Close; returns its status code (`None` when
/// the connection ended without one).
async fn close_code(stream: &mut TcpStream) -> Option<u16> {
    let mut bytes = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut bytes))
        .await
        .expect("the proxy ends the connection in time")
        .ok()?;
    let mut at = 0;
    while at + 2 <= bytes.len() {
        let opcode = bytes[at] & 0x0f;
        let (len, header) = match bytes[at + 1] & 0x7f {
            126 => (
                u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize,
                4,
            ),
            127 => return None,
            len => (len as usize, 2),
        };
        let payload = &bytes[at + header..(at + header + len).min(bytes.len())];
        if opcode == 0x8 {
            return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
        }
        at += header + len;
    }
    None
}

/// An upgraded MQTT-over-WebSocket connection; asserts the 101.
async fn upgraded(port: u16) -> (TcpStream, String) {
    let (mut stream, peer) = open(port).await;
    stream
        .write_all(upgrade_request(&[]).as_bytes())
        .await
        .unwrap();
    let head = response_head(&mut stream).await;
    assert_eq!(status(&head), 101, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-protocol: mqtt"),
        "{head}"
    );
    (stream, peer)
}

fn encode(packet: &Packet) -> Vec<u8> {
    let mut bytes = BytesMut::new();
    packet.write(&mut bytes).unwrap();
    bytes.to_vec()
}

/// A minimal MQTT 5 client over binary WebSocket frames.
struct Bystander {
    stream: TcpStream,
    read: Vec<u8>,
}

impl Bystander {
    async fn connect(port: u16, id: &str) -> Self {
        let (mut stream, _) = upgraded(port).await;
        let packet = connect_packet(id, true, None);
        stream
            .write_all(&frame(0x82, &encode(&packet)))
            .await
            .unwrap();
        let mut bystander = Self {
            stream,
            read: Vec::new(),
        };
        match bystander.recv().await {
            Packet::ConnAck(ConnAck { code, .. }) => assert_eq!(code, ConnectReturnCode::Success),
            other => panic!("expected a CONNACK, got {other:?}"),
        }
        bystander
    }

    async fn send(&mut self, packet: &Packet) {
        self.stream
            .write_all(&frame(0x82, &encode(packet)))
            .await
            .unwrap();
    }

    /// The next MQTT packet, from the payloads of the server's binary frames.
    async fn recv(&mut self) -> Packet {
        tokio::time::timeout(TIMEOUT, async {
            loop {
                let mut buffer = BytesMut::from(&self.read[..]);
                if let Some(packet) = next_packet(&mut buffer) {
                    self.read = buffer.to_vec();
                    return packet;
                }
                let mut header = [0u8; 2];
                self.stream.read_exact(&mut header).await.unwrap();
                let len = match header[1] & 0x7f {
                    126 => self.stream.read_u16().await.unwrap() as usize,
                    127 => self.stream.read_u64().await.unwrap() as usize,
                    len => len as usize,
                };
                let mut payload = vec![0u8; len];
                self.stream.read_exact(&mut payload).await.unwrap();
                assert_eq!(header[0] & 0x0f, 0x2, "the proxy sends binary frames");
                self.read.extend_from_slice(&payload);
            }
        })
        .await
        .expect("a packet in time")
    }

    /// A QoS 1 round trip through the proxy and the broker.
    async fn round_trip(&mut self, topic: &str) {
        self.send(&subscribe_packet(1, topic, QoS::AtLeastOnce))
            .await;
        assert!(matches!(self.recv().await, Packet::SubAck(_)));
        self.send(&publish_packet(
            topic,
            QoS::AtLeastOnce,
            2,
            b"still here".to_vec(),
        ))
        .await;
        let (mut acked, mut received) = (false, false);
        while !(acked && received) {
            match self.recv().await {
                Packet::PubAck(PubAck { pkid: 2, .. }) => acked = true,
                Packet::Publish(publish) => {
                    assert_eq!(&publish.payload[..], b"still here");
                    self.send(&Packet::PubAck(PubAck::new(publish.pkid, None)))
                        .await;
                    received = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

fn next_packet(buffer: &mut BytesMut) -> Option<Packet> {
    Packet::read(buffer, None).ok()
}

/// A refused handshake: the case, the headers it changes, the status and the event.
type HandshakeCase = (
    &'static str,
    &'static [(&'static str, &'static str)],
    u16,
    &'static str,
);

#[tokio::test]
async fn bad_handshakes_get_their_status_and_an_event() {
    let broker = Mosquitto::start().unwrap();
    let proxy = proxy(&broker).await;
    let mut bystander = Bystander::connect(proxy.port, "bystander-handshakes").await;

    let cases: [HandshakeCase; 4] = [
        (
            "no key",
            &[("Sec-WebSocket-Key", "")],
            400,
            "WS_HANDSHAKE_REFUSED",
        ),
        (
            "a key that is not 16 bytes",
            &[("Sec-WebSocket-Key", "c2hvcnQ=")],
            400,
            "WS_HANDSHAKE_REFUSED",
        ),
        (
            "version 8",
            &[("Sec-WebSocket-Version", "8")],
            426,
            "WS_HANDSHAKE_REFUSED",
        ),
        (
            "a subprotocol no route takes",
            &[("Sec-WebSocket-Protocol", "amqp")],
            400,
            "WS_ROUTE_REJECTED",
        ),
    ];
    for (case, headers, expected, event) in cases {
        let (mut stream, peer) = open(proxy.port).await;
        stream
            .write_all(upgrade_request(headers).as_bytes())
            .await
            .unwrap();
        let head = response_head(&mut stream).await;
        assert_eq!(status(&head), expected, "{case}: {head}");
        if expected == 426 {
            assert!(
                head.to_ascii_lowercase()
                    .contains("sec-websocket-version: 13"),
                "{head}"
            );
        }
        wait_for_event(&[event, &peer]).await;
    }

    // Requests the http server itself refuses.
    let (mut stream, peer) = open(proxy.port).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(status(&response_head(&mut stream).await), 404, "no route");
    wait_for_event(&["HTTP_ROUTE_REJECTED", &peer]).await;

    let (mut stream, peer) = open(proxy.port).await;
    stream.write_all(b"GARBAGE\r\n\r\n").await.unwrap();
    assert_eq!(status(&response_head(&mut stream).await), 400, "malformed");
    wait_for_event(&["HTTP_REQUEST_MALFORMED", &peer]).await;

    let (mut stream, peer) = open(proxy.port).await;
    let oversize = upgrade_request(&[("X-Padding", &"p".repeat(64 * 1024))]);
    let _ = stream.write_all(oversize.as_bytes()).await;
    assert_eq!(
        status(&response_head(&mut stream).await),
        431,
        "oversize head"
    );
    wait_for_event(&["HTTP_HEADERS_TOO_LARGE", &peer]).await;

    // A handshake that never completes is cut at the header deadline.
    let (mut stream, peer) = open(proxy.port).await;
    stream
        .write_all(b"GET /mqtt HTTP/1.1\r\nHost: 1")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut rest))
        .await
        .expect("the slow handshake is closed")
        .ok();
    wait_for_event(&["HTTP_HEADER_TIMEOUT", &peer]).await;

    bystander.round_trip("bystander/handshakes").await;
    Bystander::connect(proxy.port, "newcomer-handshakes").await;
}

#[tokio::test]
async fn bad_frames_get_their_close_code_and_an_event() {
    let broker = Mosquitto::start().unwrap();
    let proxy = proxy(&broker).await;
    let mut bystander = Bystander::connect(proxy.port, "bystander-frames").await;

    let unmasked = {
        // A binary frame without the mask bit: clients must mask.
        let mut frame = vec![0x82, 2];
        frame.extend_from_slice(&[0xc0, 0x00]);
        frame
    };
    // A 1 GiB binary frame, announced by its header only: refused from the
    // header, nothing of it is buffered.
    let huge = {
        let mut frame = vec![0x82, 0x80 | 127];
        frame.extend_from_slice(&(1u64 << 30).to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4]);
        frame
    };
    let cases: [(&str, Vec<u8>, u16); 4] = [
        ("an unmasked frame", unmasked, 1002),
        ("reserved bits", frame(0x82 | 0x40, &[0xc0, 0x00]), 1002),
        ("a 1 GiB frame", huge, 1009),
        (
            "a text frame on an MQTT stream",
            frame(0x81, b"not binary"),
            1003,
        ),
    ];
    for (case, bytes, expected) in cases {
        let (mut stream, peer) = upgraded(proxy.port).await;
        stream.write_all(&bytes).await.unwrap();
        assert_eq!(close_code(&mut stream).await, Some(expected), "{case}");
        wait_for_event(&["WS_CLOSED_WITH_ERROR", &peer]).await;
    }

    bystander.round_trip("bystander/frames").await;
    Bystander::connect(proxy.port, "newcomer-frames").await;
}
