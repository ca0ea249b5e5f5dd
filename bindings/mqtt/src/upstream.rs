//! One upstream session as the server's session sees it, without its socket:
//! the broker's limits from its CONNACK (the CONNACK itself is not kept: it
//! is merged into the client's at admission), the packet ids of the proxy's
//! requests on it, its keep-alive, the bytes queued for it, and the client
//! publishes waiting for room in the broker's receive maximum.
//!
//! The mqtt client binding opens the session ([`crate::port::Upstream`]); the
//! session driver keeps the socket and hands the rest to this link.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mqtt_bytes_v5::{ConnAck, Packet, Publish, QoS};

use crate::codec::{self, PublishView, Version};
use crate::packet_ids::PacketIds;

/// What an upstream packet id stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A client publish with this client packet id.
    Publish(u16),
    /// A client SUBSCRIBE with this client packet id.
    Subscribe(u16),
    /// A client UNSUBSCRIBE with this client packet id.
    Unsubscribe(u16),
    /// The proxy's own UNSUBSCRIBE of a subscription a refreshed token no
    /// longer allows: its UNSUBACK answers nobody.
    Revoked,
}

/// Whether a ping is due, or the broker failed to answer the last one.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KeepAlive {
    /// Nothing to do yet.
    Fine,
    /// A PINGREQ was queued.
    Pinged,
    /// No PINGRESP arrived within the keep-alive.
    Lost(Duration),
}

/// A client publish waiting for room in a broker's window.
#[derive(Debug)]
pub(crate) enum Waiting {
    /// Decoded: it goes through the full path's encoder.
    Decoded(Publish),
    /// The frame it came in, from the express lane (`state/express.rs`):
    /// it goes as it is, under the packet id it gets then.
    Frame(Bytes, PublishView),
}

impl Waiting {
    pub(crate) fn qos(&self) -> QoS {
        match self {
            Waiting::Decoded(publish) => publish.qos,
            Waiting::Frame(_, view) => view.qos,
        }
    }
}

/// One upstream session's state.
#[derive(Debug)]
pub(crate) struct UpstreamLink {
    /// The exit it was opened through.
    pub(crate) name: Arc<str>,
    pub(crate) version: Version,
    /// The largest packet the broker accepts.
    pub(crate) maximum_packet_size: usize,
    /// The proxy's packet ids in use on this upstream.
    pub(crate) ids: PacketIds<Origin>,
    /// Encoded packets waiting to be written to the broker.
    pub(crate) out: BytesMut,
    /// How many QoS 1/2 publishes the broker accepts in flight (its Receive Maximum).
    window: usize,
    /// The proxy's QoS 1/2 publishes in flight on this upstream.
    in_flight: usize,
    /// Client publishes waiting for room in the window, in the client's
    /// order (a QoS 0 publish waits behind them too), with their sizes.
    queue: VecDeque<(Waiting, usize)>,
    keep_alive: Option<Duration>,
    last_sent: Instant,
    ping_sent: Option<Instant>,
}

impl UpstreamLink {
    /// A link for a session the broker just accepted with `connack`;
    /// `keep_alive` in seconds (0: none).
    pub(crate) fn new(
        name: Arc<str>,
        connack: &ConnAck,
        keep_alive: u16,
        version: Version,
        now: Instant,
    ) -> Self {
        Self {
            name,
            maximum_packet_size: connack
                .properties
                .as_ref()
                .and_then(|p| p.max_packet_size)
                .map_or(usize::MAX, |m| m as usize),
            window: usize::from(
                connack
                    .properties
                    .as_ref()
                    .and_then(|p| p.receive_max)
                    .unwrap_or(u16::MAX),
            ),
            version,
            ids: PacketIds::default(),
            out: BytesMut::new(),
            in_flight: 0,
            queue: VecDeque::new(),
            keep_alive: (keep_alive > 0).then(|| Duration::from_secs(u64::from(keep_alive))),
            last_sent: now,
            ping_sent: None,
        }
    }

    /// Queues `packet`; packets built by the proxy always encode.
    pub(crate) fn send(&mut self, packet: &Packet) {
        let _ = codec::write(packet, self.version, &mut self.out);
    }

    /// Queues the message `publish` unless it exceeds the broker's maximum
    /// packet size. Taken by value so the common one is written without a
    /// `Packet` built around it.
    #[inline]
    pub(crate) fn send_publish(&mut self, publish: Publish) -> bool {
        let start = self.out.len();
        let _ = codec::write_publish(publish, self.version, &mut self.out);
        if self.out.len() - start > self.maximum_packet_size {
            self.out.truncate(start);
            return false;
        }
        true
    }

    /// Starts the flow of the client's publish `client_pkid` on this
    /// upstream: its packet id here, or `None` when every id is in use.
    pub(crate) fn start_publish(&mut self, client_pkid: u16) -> Option<u16> {
        let pkid = self.ids.allocate(Origin::Publish(client_pkid))?;
        self.in_flight += 1;
        Some(pkid)
    }

    /// A flow a previous connection of the session left open.
    pub(crate) fn restore_publish(&mut self, pkid: u16, client_pkid: u16) {
        if self.ids.get(pkid).is_none() {
            self.in_flight += 1;
        }
        self.ids.insert(pkid, Origin::Publish(client_pkid));
    }

    /// Ends the flow of our publish `pkid`, returning the client's packet id;
    /// an id that stands for something else is left alone.
    pub(crate) fn take_publish(&mut self, pkid: u16) -> Option<u16> {
        let client_pkid = self.ids.take_if(pkid, |origin| match origin {
            Origin::Publish(client_pkid) => Some(*client_pkid),
            _ => None,
        })?;
        self.in_flight -= 1;
        Some(client_pkid)
    }

    /// Whether a publish of `qos` may go now: nothing waits before it, and
    /// for QoS 1/2 the broker's window has room.
    pub(crate) fn can_send(&self, qos: QoS) -> bool {
        self.queue.is_empty() && (qos == QoS::AtMostOnce || self.in_flight < self.window)
    }

    /// Keeps `publish` (of `size` bytes) until the window has room.
    pub(crate) fn enqueue(&mut self, publish: Waiting, size: usize) {
        self.queue.push_back((publish, size));
    }

    /// The next waiting publish that may go now, with its size.
    pub(crate) fn dequeue(&mut self) -> Option<(Waiting, usize)> {
        let (front, _) = self.queue.front()?;
        if front.qos() != QoS::AtMostOnce && self.in_flight >= self.window {
            return None;
        }
        self.queue.pop_front()
    }

    /// The queued bytes were written at `now`: the keep-alive restarts.
    pub(crate) fn sent(&mut self, now: Instant) {
        self.last_sent = now;
    }

    /// A PINGRESP arrived.
    pub(crate) fn pong(&mut self) {
        self.ping_sent = None;
    }

    /// When the next ping is due, or the last one times out.
    pub(crate) fn ping_due(&self) -> Option<Instant> {
        let keep_alive = self.keep_alive?;
        Some(match self.ping_sent {
            Some(sent) => sent + keep_alive,
            None => self.last_sent + keep_alive,
        })
    }

    /// Pings the broker when it is time, and notices an unanswered ping.
    /// While the proxy is not `reading` this upstream (its deliveries wait
    /// for the client), an answer may be sitting unread: the ping waits.
    pub(crate) fn on_timeout(&mut self, now: Instant, reading: bool) -> KeepAlive {
        let (Some(keep_alive), Some(due)) = (self.keep_alive, self.ping_due()) else {
            return KeepAlive::Fine;
        };
        if now < due {
            return KeepAlive::Fine;
        }
        if !reading {
            // Postponed by a keep-alive, so the deadline moves on.
            match self.ping_sent {
                Some(_) => self.ping_sent = Some(now),
                None => self.last_sent = now,
            }
            return KeepAlive::Fine;
        }
        if self.ping_sent.is_some() {
            return KeepAlive::Lost(keep_alive);
        }
        self.ping_sent = Some(now);
        self.send(&Packet::PingReq(mqtt_bytes_v5::PingReq));
        KeepAlive::Pinged
    }
}
