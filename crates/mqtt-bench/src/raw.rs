//! An MQTT 5 client on a raw socket with the `mqtt-bytes-v5` codec: packets
//! are encoded in batches and written with one syscall, and acknowledgements
//! are read in bulk, so the client costs far less than the path it measures.
//! The socket is TCP, TLS on TCP with `--tls-ca`, and a WebSocket on either
//! with `--ws-path` (see [`crate::transport`]).

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::{bail, Result};
use bytes::{Bytes, BytesMut};
use mqtt_bytes_v5::{
    ConnectReturnCode, Disconnect, DisconnectReasonCode, Filter, Login, Packet, PubAck,
    PubAckReason, Publish, QoS, RetainForwardRule, Subscribe,
};
use tokio::sync::Semaphore;
use tokio::time::{Duration, Instant};

use crate::transport::{ReadHalf, Transport};
use crate::Target;

/// How long a subscriber waits without any message before it stops counting.
const IDLE_END: Duration = Duration::from_secs(3);
/// Packets encoded per write.
const BATCH: usize = 256;

/// One MQTT connection after a successful CONNACK.
pub(crate) struct Conn {
    stream: Transport,
    buf: BytesMut,
    /// The server's receive maximum (how many QoS 1 publishes may be in flight).
    receive_max: u16,
}

/// How a paced publisher sends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    /// Messages per second.
    pub(crate) rate: u64,
    /// Messages in all.
    pub(crate) count: u64,
    /// The run's start, which send times are measured from.
    pub(crate) start: Instant,
    /// Whether each message carries its send time (nanoseconds since
    /// `start`) in its first 8 bytes.
    pub(crate) stamp: bool,
    /// Whether a PUBACK 0x97 (Quota exceeded: a publish over a rate limit)
    /// is counted as refused instead of failing the run.
    pub(crate) refusals_ok: bool,
}

/// What a QoS 1 publisher's acknowledgements said.
#[derive(Debug, Default)]
pub(crate) struct Acks {
    /// When each successful PUBACK arrived, in seconds since the run's start.
    pub(crate) accepted_at: Vec<f64>,
    /// PUBACKs 0x97 (only with `refusals_ok`).
    pub(crate) refused: u64,
}

/// What a subscriber saw.
pub(crate) struct Received {
    pub(crate) count: u64,
    /// When the last message arrived.
    pub(crate) last: Instant,
    /// Publish-to-delivery times, when asked for.
    pub(crate) latencies_ns: Vec<u64>,
}

pub(crate) fn encode(packet: &Packet, out: &mut BytesMut) -> Result<()> {
    packet
        .write(out)
        .map_err(|e| anyhow::anyhow!("encoding: {e:?}"))?;
    Ok(())
}

impl Conn {
    /// Connects from `source` (any when `None`) and completes CONNECT/CONNACK.
    pub(crate) async fn connect(
        target: &Target,
        client_id: &str,
        source: Option<IpAddr>,
        keep_alive: u16,
    ) -> Result<Self> {
        let stream = crate::transport::dial(target, source).await?;
        let mut conn = Self {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            receive_max: u16::MAX,
        };
        let login = target.username.as_ref().map(|username| Login {
            username: username.clone(),
            password: String::new(),
        });
        let connect = mqtt_bytes_v5::Connect {
            keep_alive,
            client_id: client_id.to_owned(),
            clean_start: true,
            properties: None,
        };
        let mut out = BytesMut::new();
        encode(&Packet::Connect(connect, None, login), &mut out)?;
        conn.stream.write(&mut out).await?;
        match conn.next().await? {
            Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => {
                if let Some(max) = ack.properties.and_then(|p| p.receive_max) {
                    conn.receive_max = max;
                }
                Ok(conn)
            }
            Packet::ConnAck(ack) => bail!("refused: {:?}", ack.code),
            other => bail!("expected CONNACK, got {other:?}"),
        }
    }

    /// What TLS negotiated on this connection, if it is TLS.
    pub(crate) fn tls_summary(&self) -> Option<String> {
        self.stream.tls_summary()
    }

    async fn next(&mut self) -> Result<Packet> {
        loop {
            match Packet::read(&mut self.buf, None) {
                Ok(packet) => return Ok(packet),
                Err(mqtt_bytes_v5::Error::InsufficientBytes(_)) => {}
                Err(e) => bail!("malformed packet: {e:?}"),
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                bail!("connection closed");
            }
        }
    }

    /// Subscribes to `filter` and waits for a successful SUBACK.
    pub(crate) async fn subscribe(&mut self, filter: &str, qos: QoS) -> Result<()> {
        let subscribe = Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![Filter {
                path: filter.to_owned(),
                qos,
                nolocal: false,
                preserve_retain: false,
                retain_forward_rule: RetainForwardRule::OnEverySubscribe,
            }],
            properties: None,
        });
        let mut out = BytesMut::new();
        encode(&subscribe, &mut out)?;
        self.stream.write(&mut out).await?;
        match self.next().await? {
            Packet::SubAck(ack)
                if matches!(
                    ack.return_codes.first(),
                    Some(mqtt_bytes_v5::SubscribeReasonCode::Success(_))
                ) =>
            {
                Ok(())
            }
            other => bail!("expected a successful SUBACK, got {other:?}"),
        }
    }

    /// Counts deliveries until `expected` arrived or none came for a while,
    /// acknowledging QoS 1 ones in batches.
    pub(crate) async fn receive(
        mut self,
        expected: u64,
        latency: bool,
        start: Instant,
    ) -> Result<Received> {
        let mut received = Received {
            count: 0,
            last: Instant::now(),
            latencies_ns: Vec::with_capacity(if latency { expected as usize } else { 0 }),
        };
        let mut acks = BytesMut::new();
        while received.count < expected {
            loop {
                match Packet::read(&mut self.buf, None) {
                    Ok(Packet::Publish(publish)) => {
                        received.count += 1;
                        if latency && publish.payload.len() >= 8 {
                            let sent = u64::from_be_bytes(
                                publish.payload[..8].try_into().unwrap_or_default(),
                            );
                            let now = start.elapsed().as_nanos() as u64;
                            received.latencies_ns.push(now.saturating_sub(sent));
                        }
                        if publish.qos == QoS::AtLeastOnce {
                            let ack = PubAck {
                                pkid: publish.pkid,
                                reason: PubAckReason::Success,
                                properties: None,
                            };
                            encode(&Packet::PubAck(ack), &mut acks)?;
                        }
                    }
                    Ok(_) => {}
                    Err(mqtt_bytes_v5::Error::InsufficientBytes(_)) => break,
                    Err(e) => bail!("malformed packet: {e:?}"),
                }
            }
            received.last = Instant::now();
            if !acks.is_empty() {
                self.stream.write(&mut acks).await?;
            }
            if received.count >= expected {
                break;
            }
            match tokio::time::timeout(IDLE_END, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) => bail!("the subscriber's connection closed"),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => break,
            }
        }
        Ok(received)
    }

    fn publish_packet(topic: &str, qos: QoS, pkid: u16, payload: Bytes) -> Packet {
        Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.to_owned(),
            pkid,
            payload,
            properties: None,
        })
    }

    /// Publishes `count` messages as fast as the path takes them; QoS 1 with
    /// at most `window` unacknowledged (and no more than the server's receive
    /// maximum, unless `ignore_receive_maximum`).
    pub(crate) async fn publish_all(
        self,
        topic: String,
        qos: QoS,
        payload: Bytes,
        count: u64,
        window: u16,
        ignore_receive_maximum: bool,
    ) -> Result<Acks> {
        let window = match ignore_receive_maximum {
            true => window.max(1),
            false => window.min(self.receive_max).max(1),
        };
        let (read, mut write) = self.stream.into_split();
        let credit = Arc::new(Semaphore::new(usize::from(window)));
        let acking = (qos == QoS::AtLeastOnce).then(|| {
            let counting = Counting {
                count,
                start: Instant::now(),
                refusals_ok: false,
            };
            tokio::spawn(count_acks(read, self.buf, counting, credit.clone()))
        });
        let mut out = BytesMut::with_capacity(BATCH * (payload.len() + topic.len() + 8));
        let mut sent = 0u64;
        let mut pkid: u16 = 0;
        while sent < count {
            let mut batch = (count - sent).min(BATCH as u64) as usize;
            if qos == QoS::AtLeastOnce {
                // Wait for one credit, then take whatever else is free.
                credit.acquire().await?.forget();
                let more = batch - 1;
                let mut taken = 1;
                while taken <= more {
                    match credit.try_acquire() {
                        Ok(permit) => {
                            permit.forget();
                            taken += 1;
                        }
                        Err(_) => break,
                    }
                }
                batch = taken;
            }
            for _ in 0..batch {
                pkid = if pkid == u16::MAX { 1 } else { pkid + 1 };
                let id = if qos == QoS::AtMostOnce { 0 } else { pkid };
                encode(
                    &Self::publish_packet(&topic, qos, id, payload.clone()),
                    &mut out,
                )?;
            }
            write.write(&mut out).await?;
            sent += batch as u64;
        }
        let acks = match acking {
            Some(acking) => acking.await??,
            None => Acks::default(),
        };
        let mut out = BytesMut::new();
        encode(&disconnect_packet(), &mut out)?;
        let _ = write.write(&mut out).await;
        Ok(acks)
    }

    /// Publishes copies of `payload` as `pace` says.
    pub(crate) async fn publish_paced(
        self,
        topic: String,
        qos: QoS,
        payload: Bytes,
        pace: Pace,
    ) -> Result<Acks> {
        let Pace {
            rate,
            count,
            start,
            stamp,
            refusals_ok,
        } = pace;
        let (read, mut write) = self.stream.into_split();
        let credit = Arc::new(Semaphore::new(usize::from(self.receive_max)));
        let acking = (qos == QoS::AtLeastOnce).then(|| {
            let counting = Counting {
                count,
                start,
                refusals_ok,
            };
            tokio::spawn(count_acks(read, self.buf, counting, credit.clone()))
        });
        let mut out = BytesMut::new();
        let mut stamped = payload.to_vec();
        let mut sent = 0u64;
        let mut pkid: u16 = 0;
        let tick = Duration::from_micros(500);
        let begin = Instant::now();
        while sent < count {
            let due = ((begin.elapsed().as_secs_f64() * rate as f64) as u64).min(count);
            while sent < due {
                if qos == QoS::AtLeastOnce {
                    credit.acquire().await?.forget();
                }
                pkid = if pkid == u16::MAX { 1 } else { pkid + 1 };
                let id = if qos == QoS::AtMostOnce { 0 } else { pkid };
                let body = if stamp && stamped.len() >= 8 {
                    let now = start.elapsed().as_nanos() as u64;
                    stamped[..8].copy_from_slice(&now.to_be_bytes());
                    Bytes::copy_from_slice(&stamped)
                } else {
                    payload.clone()
                };
                encode(&Self::publish_packet(&topic, qos, id, body), &mut out)?;
                write.write(&mut out).await?;
                sent += 1;
            }
            tokio::time::sleep(tick).await;
        }
        match acking {
            Some(acking) => acking.await?,
            None => Ok(Acks::default()),
        }
    }

    /// Sends DISCONNECT and closes.
    pub(crate) async fn disconnect(mut self) {
        let mut out = BytesMut::new();
        if encode(&disconnect_packet(), &mut out).is_ok() {
            let _ = self.stream.write(&mut out).await;
        }
        self.stream.shutdown().await;
    }
}

fn disconnect_packet() -> Packet {
    Packet::Disconnect(Disconnect {
        reason_code: DisconnectReasonCode::NormalDisconnection,
        properties: None,
    })
}

/// What [`count_acks`] waits for.
struct Counting {
    /// PUBACKs in all.
    count: u64,
    /// What ack times are measured from.
    start: Instant,
    /// Whether PUBACK 0x97 is counted rather than fatal.
    refusals_ok: bool,
}

/// Reads PUBACKs until `count` arrived, returning one credit per ack.
async fn count_acks(
    mut read: ReadHalf,
    mut buf: BytesMut,
    counting: Counting,
    credit: Arc<Semaphore>,
) -> Result<Acks> {
    let Counting {
        count,
        start,
        refusals_ok,
    } = counting;
    let mut acks = Acks::default();
    let mut acked = 0u64;
    while acked < count {
        let mut freed = 0;
        let now = start.elapsed().as_secs_f64();
        loop {
            match Packet::read(&mut buf, None) {
                Ok(Packet::PubAck(ack)) => {
                    if ack.reason == PubAckReason::QuotaExceeded && refusals_ok {
                        acks.refused += 1;
                    } else if ack.reason != PubAckReason::Success
                        && ack.reason != PubAckReason::NoMatchingSubscribers
                    {
                        bail!("PUBACK {:?}", ack.reason);
                    } else {
                        acks.accepted_at.push(now);
                    }
                    freed += 1;
                }
                Ok(Packet::Disconnect(d)) => bail!("disconnected: {:?}", d.reason_code),
                Ok(_) => {}
                Err(mqtt_bytes_v5::Error::InsufficientBytes(_)) => break,
                Err(e) => bail!("malformed packet: {e:?}"),
            }
        }
        acked += freed;
        credit.add_permits(freed as usize);
        if acked >= count {
            break;
        }
        if read.read_buf(&mut buf).await? == 0 {
            bail!("the publisher's connection closed after {acked} acks");
        }
    }
    Ok(acks)
}
