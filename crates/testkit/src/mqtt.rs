//! A raw MQTT 5 client for tests that need exact control of the bytes on the
//! wire: malformed packets, topic aliases, packet ids, reason codes; and, in
//! [`v311`], a blocking MQTT 3.1.1 CONNECT.

use std::time::Duration;

use bytes::BytesMut;
use mqtt_bytes_v5::{ConnAck, Connect, ConnectProperties, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use mqtt_bytes_v5 as packets;

pub mod v311;

/// How long a test waits for a packet before failing.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// A raw MQTT connection.
#[derive(Debug)]
pub struct RawMqtt {
    stream: TcpStream,
    buf: BytesMut,
}

/// A CONNECT for `client_id` with MQTT 5 defaults.
pub fn connect_packet(
    client_id: &str,
    clean_start: bool,
    properties: Option<ConnectProperties>,
) -> Packet {
    Packet::Connect(
        Connect {
            keep_alive: 30,
            client_id: client_id.to_owned(),
            clean_start,
            properties,
        },
        None,
        None,
    )
}

/// An MQTT 5 CONNECT of a persistent session: clean start off, the session
/// kept `expiry` seconds after the connection ends.
pub fn persistent_connect_packet(client_id: &str, expiry: u32) -> Packet {
    connect_packet(
        client_id,
        false,
        Some(ConnectProperties {
            session_expiry_interval: Some(expiry),
            receive_maximum: None,
            max_packet_size: None,
            topic_alias_max: None,
            request_response_info: None,
            request_problem_info: None,
            user_properties: vec![],
            authentication_method: None,
            authentication_data: None,
        }),
    )
}

/// A SUBSCRIBE with one filter and default subscription options.
pub fn subscribe_packet(pkid: u16, filter: &str, qos: mqtt_bytes_v5::QoS) -> Packet {
    Packet::Subscribe(mqtt_bytes_v5::Subscribe {
        pkid,
        filters: vec![mqtt_bytes_v5::Filter {
            path: filter.into(),
            qos,
            nolocal: false,
            preserve_retain: false,
            retain_forward_rule: mqtt_bytes_v5::RetainForwardRule::OnEverySubscribe,
        }],
        properties: None,
    })
}

/// A PUBLISH without properties.
pub fn publish_packet(
    topic: &str,
    qos: mqtt_bytes_v5::QoS,
    pkid: u16,
    payload: impl Into<bytes::Bytes>,
) -> Packet {
    Packet::Publish(mqtt_bytes_v5::Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        pkid,
        payload: payload.into(),
        properties: None,
    })
}

impl RawMqtt {
    /// Opens a TCP connection to `127.0.0.1:port`.
    pub async fn open(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("the proxy accepts connections");
        Self {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Connects and returns the CONNACK.
    pub async fn connect(port: u16, client_id: &str) -> (Self, ConnAck) {
        let mut client = Self::open(port).await;
        client.send(&connect_packet(client_id, true, None)).await;
        match client.recv().await {
            Some(Packet::ConnAck(ack)) => (client, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Sends one packet.
    pub async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out).expect("test packets encode");
        self.send_bytes(&out).await;
    }

    /// Sends raw bytes, well-formed or not.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        // The peer may already have closed; the next recv tells.
        let _ = self.stream.write_all(bytes).await;
    }

    /// The next packet, or `None` once the connection is closed. Fails the
    /// test after [`RECV_TIMEOUT`].
    pub async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(RECV_TIMEOUT, self.recv_inner())
            .await
            .expect("a packet or the end of the connection arrives in time")
    }

    async fn recv_inner(&mut self) -> Option<Packet> {
        loop {
            if !self.buf.is_empty() {
                match Packet::read(&mut self.buf, None) {
                    Ok(packet) => return Some(packet),
                    Err(mqtt_bytes_v5::Error::InsufficientBytes(_)) => {}
                    Err(error) => panic!("the proxy sent a malformed packet: {error}"),
                }
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Exactly `count` bytes, undecoded (for MQTT 3.1.1 replies, which this
    /// client does not decode); `None` if the connection closes first. Fails
    /// the test after [`RECV_TIMEOUT`].
    pub async fn recv_bytes(&mut self, count: usize) -> Option<Vec<u8>> {
        tokio::time::timeout(RECV_TIMEOUT, async {
            while self.buf.len() < count {
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
            Some(self.buf.split_to(count).to_vec())
        })
        .await
        .expect("the bytes or the end of the connection arrive in time")
    }

    /// Every byte the peer sends until it closes the connection, undecoded.
    /// Fails the test after [`RECV_TIMEOUT`].
    pub async fn bytes_until_closed(&mut self) -> Vec<u8> {
        tokio::time::timeout(RECV_TIMEOUT, async {
            loop {
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return self.buf.split().to_vec(),
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("the connection closes in time")
    }

    /// The underlying stream, for reading raw bytes.
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// Waits for the connection to close, skipping whatever arrives first;
    /// returns the last DISCONNECT seen, if any.
    pub async fn closed(&mut self) -> Option<mqtt_bytes_v5::Disconnect> {
        let mut last = None;
        while let Some(packet) = self.recv().await {
            if let Packet::Disconnect(disconnect) = packet {
                last = Some(disconnect);
            }
        }
        last
    }
}
