//! Clients and packets shared by the limits tests (tests/mqtt_limits_*.rs):
//! raw MQTT 5 publishes and acknowledgements, a raw MQTT 3.1.1 client, and
//! the captured events. Here rather than in a file each test crate includes,
//! so that each imports what it uses and none carries the rest unused.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::mqtt::packets::{Packet, PubAckReason, Publish, QoS};
use crate::mqtt::{RawMqtt, RECV_TIMEOUT};
use crate::proxy::captured_events;

/// A QoS 1 PUBLISH of `payload` to `topic` with packet id `pkid`.
pub fn qos1(topic: &str, pkid: u16, payload: impl Into<Bytes>) -> Packet {
    publish(topic, QoS::AtLeastOnce, pkid, payload)
}

/// A PUBLISH of `payload` to `topic` at `qos` with packet id `pkid`.
pub fn publish(topic: &str, qos: QoS, pkid: u16, payload: impl Into<Bytes>) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        pkid,
        payload: payload.into(),
        properties: None,
    })
}

/// A broker's PUBACK: mosquitto says 0x10 when no one subscribed.
pub const ACCEPTED: [PubAckReason; 2] =
    [PubAckReason::Success, PubAckReason::NoMatchingSubscribers];

/// The next PUBACK: (packet id, reason, reason string).
pub async fn puback(client: &mut RawMqtt) -> (u16, PubAckReason, String) {
    match client.recv().await {
        Some(Packet::PubAck(ack)) => (
            ack.pkid,
            ack.reason,
            ack.properties
                .and_then(|p| p.reason_string)
                .unwrap_or_default(),
        ),
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

/// A raw MQTT 3.1.1 client.
#[derive(Debug)]
pub struct V311 {
    /// The connection to the proxy.
    pub stream: TcpStream,
    /// What was read and not yet decoded.
    pub buf: BytesMut,
}

impl V311 {
    /// Connects `id` with `username` as its user name, after `header` (a
    /// PROXY protocol header) when given; the CONNACK return code.
    pub async fn connect_with(
        port: u16,
        id: &str,
        username: String,
        header: Option<Vec<u8>>,
    ) -> (Self, u8) {
        let mut connect = v4::Connect::new(id);
        connect.keep_alive = 30;
        connect.set_login(username, "");
        let mut client = Self {
            stream: TcpStream::connect(("127.0.0.1", port)).await.unwrap(),
            buf: BytesMut::new(),
        };
        if let Some(header) = header {
            client.stream.write_all(&header).await.unwrap();
        }
        client.send(|out| connect.write(out)).await;
        match client.recv().await {
            Some(v4::Packet::ConnAck(ack)) => {
                let mut out = BytesMut::new();
                ack.write(&mut out).unwrap();
                (client, out[3])
            }
            other => panic!("expected a 3.1.1 CONNACK, got {other:?}"),
        }
    }

    /// Sends what `write` encodes; a closed connection is not an error here.
    pub async fn send(
        &mut self,
        write: impl FnOnce(&mut BytesMut) -> Result<usize, rumqttc::mqttbytes::Error>,
    ) {
        let mut out = BytesMut::new();
        write(&mut out).unwrap();
        let _ = self.stream.write_all(&out).await;
    }

    /// Sends a QoS 1 PUBLISH of `payload` to `topic` with packet id `pkid`.
    pub async fn publish(&mut self, topic: &str, pkid: u16, payload: &[u8]) {
        let mut publish = v4::Publish::new(topic, rumqttc::mqttbytes::QoS::AtLeastOnce, payload);
        publish.pkid = pkid;
        self.send(|out| publish.write(out)).await;
    }

    /// The next packet, or `None` once the proxy closed the connection.
    pub async fn recv(&mut self) -> Option<v4::Packet> {
        tokio::time::timeout(RECV_TIMEOUT, async {
            loop {
                match v4::read(&mut self.buf, 1 << 20) {
                    Ok(packet) => return Some(packet),
                    Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(error) => panic!("the proxy sent a malformed packet: {error:?}"),
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("a packet or the end of the connection arrives in time")
    }

    /// The next PUBACK's packet id.
    pub async fn puback(&mut self) -> u16 {
        match self.recv().await {
            Some(v4::Packet::PubAck(ack)) => ack.pkid,
            other => panic!("expected a 3.1.1 PUBACK, got {other:?}"),
        }
    }

    /// Whether the proxy closes the connection (after anything else it sends).
    pub async fn closed(&mut self) -> bool {
        while self.recv().await.is_some() {}
        true
    }
}

/// Captured events containing every one of `needles`.
pub fn events(needles: &[&str]) -> usize {
    captured_events()
        .iter()
        .filter(|line| needles.iter().all(|n| line.contains(n)))
        .count()
}
