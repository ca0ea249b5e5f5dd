//! A scripted MQTT broker for tests that need a broker to do what mosquitto
//! will not on request (resend a delivery, resend a PUBREL): a listener on a
//! free port that accepts the proxy's upstream sessions in MQTT 5 or 3.1.1,
//! and [`Wire`], the raw connection both the stub and the tests' clients
//! use. Packets are `mqtt_bytes_v5`'s in either version; 3.1.1 goes through
//! rumqttc's v4 codec on the wire.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::{self as v4bytes, v4};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use zilla_testkit::free_port;
use zilla_testkit::mqtt::packets::{
    ConnAck, Connect, ConnectReturnCode, Disconnect, DisconnectReasonCode, Filter, Packet, PingReq,
    PingResp, PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason, PubRel,
    PubRelReason, Publish, QoS, RetainForwardRule, SubAck, Subscribe, SubscribeReasonCode,
};
use zilla_testkit::mqtt::{connect_packet, packets, RECV_TIMEOUT};

/// The MQTT version a [`Wire`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    V311,
    V5,
}

impl Version {
    /// A short label for client ids and topics.
    pub(crate) fn tag(self) -> &'static str {
        match self {
            Version::V311 => "v311",
            Version::V5 => "v5",
        }
    }
}

/// A raw MQTT connection to (or from) the proxy that keeps every packet it
/// received, in order, in `log`.
pub(crate) struct Wire {
    stream: TcpStream,
    buf: BytesMut,
    version: Version,
    /// Every packet received so far (PINGREQs, which are answered, aside).
    pub(crate) log: Vec<Packet>,
}

impl Wire {
    fn new(stream: TcpStream, version: Version) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            version,
            log: Vec::new(),
        }
    }

    /// Connects `client_id` (clean start, keep-alive 30 s) to
    /// `127.0.0.1:port` in `version` and waits for an accepting CONNACK.
    pub(crate) async fn connect(port: u16, version: Version, client_id: &str) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("the proxy accepts connections");
        let mut wire = Self::new(stream, version);
        wire.send(&[connect_packet(client_id, true, None)]).await;
        let ack = wire
            .expect("the CONNACK", |packet| match packet {
                Packet::ConnAck(ack) => Some(ack.code),
                _ => None,
            })
            .await;
        assert_eq!(ack, ConnectReturnCode::Success, "{client_id} is accepted");
        wire.log.clear();
        wire
    }

    /// Sends `packets` in one write.
    pub(crate) async fn send(&mut self, packets: &[Packet]) {
        let mut out = BytesMut::new();
        for packet in packets {
            let written = match self.version {
                Version::V5 => packet.write(&mut out).map_err(|e| e.to_string()),
                Version::V311 => write_v311(packet, &mut out).map_err(|e| format!("{e:?}")),
            };
            if let Err(error) = written {
                panic!("{packet:?} does not encode: {error}");
            }
        }
        // The peer may have closed already; the next read tells.
        let _ = self.stream.write_all(&out).await;
    }

    /// Reads until `pick` takes a packet, answering PINGREQs and logging
    /// everything else; fails the test if the connection ends, a DISCONNECT
    /// that `pick` does not take comes, or nothing comes within
    /// [`RECV_TIMEOUT`].
    pub(crate) async fn expect<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&Packet) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        loop {
            let packet = match tokio::time::timeout_at(deadline, self.next_packet()).await {
                Ok(Some(packet)) => packet,
                Ok(None) => panic!(
                    "the connection closed while waiting for {what}; received before: {:?}",
                    self.log
                ),
                Err(_) => panic!(
                    "timed out after {RECV_TIMEOUT:?} waiting for {what}; received: {:?}",
                    self.log
                ),
            };
            if let Packet::PingReq(_) = packet {
                self.send(&[Packet::PingResp(PingResp)]).await;
                continue;
            }
            self.log.push(packet.clone());
            if let Some(found) = pick(&packet) {
                return found;
            }
            if let Packet::Disconnect(disconnect) = &packet {
                panic!(
                    "disconnected ({:?}) while waiting for {what}; received: {:?}",
                    disconnect.reason_code, self.log
                );
            }
        }
    }

    /// Reads until at least `count` logged packets satisfy `matches`.
    pub(crate) async fn expect_count(
        &mut self,
        what: &str,
        matches: impl Fn(&Packet) -> bool,
        count: usize,
    ) {
        let mut have = self.count(&matches);
        if have >= count {
            return;
        }
        self.expect(what, |packet| {
            have += usize::from(matches(packet));
            (have >= count).then_some(())
        })
        .await;
    }

    /// How many logged packets satisfy `matches`.
    pub(crate) fn count(&self, matches: impl Fn(&Packet) -> bool) -> usize {
        self.log.iter().filter(|packet| matches(packet)).count()
    }

    /// Everything the peer sends until it closes the connection; fails the
    /// test if it stays open longer than [`RECV_TIMEOUT`].
    pub(crate) async fn until_closed(&mut self) -> Vec<Packet> {
        let mut packets = Vec::new();
        let closing = async {
            while let Some(packet) = self.next_packet().await {
                packets.push(packet);
            }
        };
        if tokio::time::timeout(RECV_TIMEOUT, closing).await.is_err() {
            panic!("the connection stayed open; received {packets:?}");
        }
        packets
    }

    /// The next packet, or `None` once the connection is closed.
    async fn next_packet(&mut self) -> Option<Packet> {
        loop {
            if !self.buf.is_empty() {
                if let Some(packet) = self.decode() {
                    return Some(packet);
                }
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// A whole packet from the buffer, if one is there.
    fn decode(&mut self) -> Option<Packet> {
        match self.version {
            Version::V5 => match Packet::read(&mut self.buf, None) {
                Ok(packet) => Some(packet),
                Err(packets::Error::InsufficientBytes(_)) => None,
                Err(error) => panic!("the proxy sent a malformed MQTT 5 packet: {error}"),
            },
            Version::V311 => match v4::read(&mut self.buf, 1 << 20) {
                Ok(packet) => Some(from_v311(packet)),
                Err(v4bytes::Error::InsufficientBytes(_)) => None,
                Err(error) => panic!("the proxy sent a malformed MQTT 3.1.1 packet: {error:?}"),
            },
        }
    }
}

/// A broker on a free loopback port that accepts the proxy's sessions.
pub(crate) struct BrokerStub {
    listener: TcpListener,
    port: u16,
    version: Version,
}

impl BrokerStub {
    /// Listens on a free port (another one if a process takes it first).
    pub(crate) async fn start(version: Version) -> Self {
        for _ in 0..20 {
            let port = free_port();
            if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)).await {
                return Self {
                    listener,
                    port,
                    version,
                };
            }
        }
        panic!("no free port for the broker stub");
    }

    /// The port it listens on.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Accepts the proxy's next session and answers its CONNECT with an
    /// accepting CONNACK.
    pub(crate) async fn accept(&self) -> Wire {
        let (stream, _) = tokio::time::timeout(RECV_TIMEOUT, self.listener.accept())
            .await
            .expect("the proxy opens a session to the stub in time")
            .expect("the stub accepts");
        let mut wire = Wire::new(stream, self.version);
        wire.expect("the proxy's CONNECT", |packet| match packet {
            Packet::Connect(..) => Some(()),
            _ => None,
        })
        .await;
        wire.send(&[Packet::ConnAck(ConnAck {
            session_present: false,
            code: ConnectReturnCode::Success,
            properties: None,
        })])
        .await;
        wire
    }
}

/// Waits for the proxy's SUBSCRIBE and grants every filter what it asked.
pub(crate) async fn grant_subscribe(broker: &mut Wire) {
    let (pkid, codes) = broker
        .expect("the proxy's SUBSCRIBE", |packet| match packet {
            Packet::Subscribe(subscribe) => Some((
                subscribe.pkid,
                subscribe
                    .filters
                    .iter()
                    .map(|filter| SubscribeReasonCode::Success(filter.qos))
                    .collect::<Vec<_>>(),
            )),
            _ => None,
        })
        .await;
    broker
        .send(&[Packet::SubAck(SubAck {
            pkid,
            return_codes: codes,
            properties: None,
        })])
        .await;
}

/// A PUBLISH without properties.
pub(crate) fn publish(topic: &str, qos: QoS, pkid: u16, payload: &[u8], dup: bool) -> Packet {
    Packet::Publish(Publish {
        dup,
        qos,
        retain: false,
        topic: topic.into(),
        pkid,
        payload: Bytes::copy_from_slice(payload),
        properties: None,
    })
}

pub(crate) fn puback(pkid: u16) -> Packet {
    Packet::PubAck(PubAck {
        pkid,
        reason: PubAckReason::Success,
        properties: None,
    })
}

pub(crate) fn pubrec(pkid: u16) -> Packet {
    Packet::PubRec(PubRec {
        pkid,
        reason: PubRecReason::Success,
        properties: None,
    })
}

pub(crate) fn pubrel(pkid: u16) -> Packet {
    Packet::PubRel(PubRel {
        pkid,
        reason: PubRelReason::Success,
        properties: None,
    })
}

pub(crate) fn pubcomp(pkid: u16) -> Packet {
    Packet::PubComp(PubComp {
        pkid,
        reason: PubCompReason::Success,
        properties: None,
    })
}

fn qos_v311(qos: QoS) -> v4bytes::QoS {
    match qos {
        QoS::AtMostOnce => v4bytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => v4bytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => v4bytes::QoS::ExactlyOnce,
    }
}

fn qos_v5(qos: v4bytes::QoS) -> QoS {
    match qos {
        v4bytes::QoS::AtMostOnce => QoS::AtMostOnce,
        v4bytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
        v4bytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// Encodes `packet` as MQTT 3.1.1 (what 3.1.1 has of it).
fn write_v311(packet: &Packet, out: &mut BytesMut) -> Result<usize, v4bytes::Error> {
    match packet {
        Packet::Connect(connect, _, _) => {
            let mut v311 = v4::Connect::new(connect.client_id.clone());
            v311.keep_alive = connect.keep_alive;
            v311.clean_session = connect.clean_start;
            v311.write(out)
        }
        Packet::ConnAck(ack) => {
            let code = match ack.code {
                ConnectReturnCode::Success => v4::ConnectReturnCode::Success,
                _ => v4::ConnectReturnCode::NotAuthorized,
            };
            v4::ConnAck::new(code, ack.session_present).write(out)
        }
        Packet::Publish(publish) => v4::Publish {
            dup: publish.dup,
            qos: qos_v311(publish.qos),
            retain: publish.retain,
            topic: publish.topic.clone(),
            pkid: publish.pkid,
            payload: publish.payload.clone(),
        }
        .write(out),
        Packet::PubAck(ack) => v4::PubAck::new(ack.pkid).write(out),
        Packet::PubRec(rec) => v4::PubRec::new(rec.pkid).write(out),
        Packet::PubRel(rel) => v4::PubRel::new(rel.pkid).write(out),
        Packet::PubComp(comp) => v4::PubComp::new(comp.pkid).write(out),
        Packet::Subscribe(subscribe) => {
            let mut v311 =
                v4::Subscribe::new_many(subscribe.filters.iter().map(|filter| {
                    v4::SubscribeFilter::new(filter.path.clone(), qos_v311(filter.qos))
                }));
            v311.pkid = subscribe.pkid;
            v311.write(out)
        }
        Packet::SubAck(ack) => {
            let codes = ack
                .return_codes
                .iter()
                .map(|code| match code {
                    SubscribeReasonCode::Success(qos) => {
                        v4::SubscribeReasonCode::Success(qos_v311(*qos))
                    }
                    _ => v4::SubscribeReasonCode::Failure,
                })
                .collect();
            v4::SubAck::new(ack.pkid, codes).write(out)
        }
        Packet::PingReq(_) => v4::PingReq.write(out),
        Packet::PingResp(_) => v4::PingResp.write(out),
        Packet::Disconnect(_) => v4::Disconnect.write(out),
        other => panic!("the tests send no {other:?} in 3.1.1"),
    }
}

/// A 3.1.1 packet as its MQTT 5 equivalent (success reasons, no properties).
fn from_v311(packet: v4::Packet) -> Packet {
    match packet {
        v4::Packet::Connect(connect) => Packet::Connect(
            Connect {
                keep_alive: connect.keep_alive,
                client_id: connect.client_id,
                clean_start: connect.clean_session,
                properties: None,
            },
            None,
            None,
        ),
        v4::Packet::ConnAck(ack) => Packet::ConnAck(ConnAck {
            session_present: ack.session_present,
            code: match ack.code {
                v4::ConnectReturnCode::Success => ConnectReturnCode::Success,
                _ => ConnectReturnCode::NotAuthorized,
            },
            properties: None,
        }),
        v4::Packet::Publish(p) => Packet::Publish(Publish {
            dup: p.dup,
            qos: qos_v5(p.qos),
            retain: p.retain,
            topic: p.topic,
            pkid: p.pkid,
            payload: p.payload,
            properties: None,
        }),
        v4::Packet::PubAck(ack) => puback(ack.pkid),
        v4::Packet::PubRec(rec) => pubrec(rec.pkid),
        v4::Packet::PubRel(rel) => pubrel(rel.pkid),
        v4::Packet::PubComp(comp) => pubcomp(comp.pkid),
        v4::Packet::Subscribe(subscribe) => Packet::Subscribe(Subscribe {
            pkid: subscribe.pkid,
            filters: subscribe
                .filters
                .into_iter()
                .map(|filter| Filter {
                    path: filter.path,
                    qos: qos_v5(filter.qos),
                    nolocal: false,
                    preserve_retain: false,
                    retain_forward_rule: RetainForwardRule::OnEverySubscribe,
                })
                .collect(),
            properties: None,
        }),
        v4::Packet::SubAck(ack) => Packet::SubAck(SubAck {
            pkid: ack.pkid,
            return_codes: ack
                .return_codes
                .into_iter()
                .map(|code| match code {
                    v4::SubscribeReasonCode::Success(qos) => {
                        SubscribeReasonCode::Success(qos_v5(qos))
                    }
                    v4::SubscribeReasonCode::Failure => SubscribeReasonCode::Unspecified,
                })
                .collect(),
            properties: None,
        }),
        v4::Packet::PingReq => Packet::PingReq(PingReq),
        v4::Packet::PingResp => Packet::PingResp(PingResp),
        v4::Packet::Disconnect => Packet::Disconnect(Disconnect {
            reason_code: DisconnectReasonCode::NormalDisconnection,
            properties: None,
        }),
        other => panic!("the proxy sent an unexpected 3.1.1 {other:?}"),
    }
}
