//! The session state machine: one admitted client and its upstream sessions.
//!
//! Bytes and the time come in ([`Session::on_client_bytes`],
//! [`Session::on_upstream_bytes`], [`Session::on_timeout`], each with `now`);
//! encoded packets go out, queued per side ([`Session::client_transmit`],
//! [`Session::upstream_transmit`]), with the next deadline
//! ([`Session::poll_timeout`]). An input that ends the session returns the
//! [`End`], and [`Session::finish`] queues what each side is told and says
//! how to close. Nothing here touches a socket, tokio or the clock, so every
//! behaviour is tested by feeding bytes and a fake clock (see `tests/`).
//!
//! Packet identifiers are mapped per upstream: a client's QoS 1/2 publish gets
//! a fresh id on the upstream it routes to and is acknowledged to the client
//! with its own id only when that upstream acknowledged it. Messages from
//! upstreams get ids from the client-side space, within the client's receive
//! maximum; the rest wait in order.
//!
//! Flow control is the proxy's own on each side: a client publish beyond
//! its broker's receive maximum waits in the upstream's queue, and the
//! driver stops reading from the client while those bytes exceed the
//! server's publish buffer ([`Session::wants_client_input`]); deliveries
//! beyond the client's receive maximum wait likewise, and the driver stops
//! reading the upstreams while they exceed the delivery buffer
//! ([`Session::wants_upstream_input`]).
//!
//! Limits (`options.limits`) hold a publish over its rate the same way:
//! reading from the client pauses until its tokens are due (a deadline of
//! [`Session::poll_timeout`]), then, after `limit-wait`, publishes over the
//! rate are refused (see `limited`).

mod express;
mod finish;
mod from_client;
mod from_upstream;
mod limited;
mod reauth;
mod resent;
mod runs;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mqtt_bytes_v5::{ConnAck, Connect, Packet, PubCompReason, Publish, QoS};
use zilla_engine::telemetry::{duration, text};

use super::acks::{without_properties, PendingAck};
use super::end::End;
use super::router::Router;
use super::takeover::Carried;
use crate::codec::{self, packet_name, Version};
use crate::config::ServerConfig;
use crate::lazy_map::LazyMap;
use crate::limits::SessionLimits;
use crate::metrics::SessionMetrics;
use crate::packet_ids::PacketIds;
use crate::upstream::{KeepAlive, UpstreamLink};
use reauth::Reauth;

/// What a session starts from: the admitted CONNECT, the open upstreams and
/// the CONNACK that answers the client.
pub(crate) struct Start {
    pub(crate) version: Version,
    pub(crate) connect: Connect,
    /// The CONNECT's client id (as assigned), shared with the session's
    /// registration: one copy per connected client, not one per holder.
    pub(crate) client_id: Arc<str>,
    /// The client's address, for events.
    pub(crate) peer: String,
    pub(crate) upstreams: Vec<UpstreamLink>,
    pub(crate) router: Router,
    pub(crate) connack: ConnAck,
    /// What the previous connection of a resumed session left.
    pub(crate) carried: Option<Carried>,
    /// When the credentials the session was authorized with expire.
    pub(crate) expires_at: Option<Instant>,
    /// When the grants of other guards than the server's expire: a
    /// re-authentication does not move the end past it.
    pub(crate) others_expire: Option<Instant>,
    /// What limits the session, if anything does.
    pub(crate) limits: Option<Box<SessionLimits>>,
}

/// What each side allows, from the CONNECT and the merged CONNACK.
struct Limits {
    /// How many QoS 1/2 messages the client accepts in flight.
    client_receive_maximum: usize,
    /// How many QoS 1/2 publishes a 5.0 client may have in flight toward
    /// the proxy (what the proxy advertised; a 3.1.1 client has no limit).
    receive_maximum: usize,
    client_maximum_packet_size: usize,
    server_maximum_packet_size: usize,
    maximum_qos: QoS,
    retain_available: bool,
    /// Topic aliases the proxy may assign on deliveries to the client (the
    /// fewer of what the client allows and the server's option; 0: none).
    client_topic_aliases: usize,
}

/// One client connection's session, with its upstream sessions.
pub(crate) struct Session {
    config: Arc<ServerConfig>,
    version: Version,
    /// Shared with the registration (one allocation per connected client).
    client_id: Arc<str>,
    /// A boxed `str`, not a `String`: fixed for the session's life, 8 bytes
    /// smaller and without spare capacity.
    peer: Box<str>,
    /// Encoded packets waiting to be written to the client.
    client_out: BytesMut,
    upstreams: Vec<UpstreamLink>,
    router: Router,
    /// Client packet id of a QoS 1/2 publish from the client -> where it is.
    inbound: LazyMap<u16, Inbound>,
    /// Bytes of client publishes waiting in the upstreams' queues.
    publish_bytes: usize,
    /// Bytes of messages in `waiting`.
    waiting_bytes: usize,
    /// Client-side packet ids of messages to the client -> where each came
    /// from and how far its flow is.
    outbound: PacketIds<Delivery>,
    /// (upstream, upstream id) of messages to the client -> client-side packet id.
    delivering: LazyMap<(usize, u16), u16>,
    /// Messages waiting for a free slot in the client's receive maximum.
    waiting: VecDeque<(usize, Publish)>,
    pending_acks: LazyMap<u16, PendingAck>,
    aliases: LazyMap<u16, String>,
    /// Topics the proxy aliased toward the client -> alias.
    outgoing_aliases: LazyMap<String, u16>,
    limits: Limits,
    keep_alive: Option<Duration>,
    last_heard: Instant,
    /// When the session's credentials expire.
    expires_at: Option<Instant>,
    /// How long the brokers keep the session after the connection ends:
    /// zero for a clean session, `None` for "until a clean start".
    session_expiry: Option<Duration>,
    /// The latest `now` the session was given.
    clock: Instant,
    /// When a full buffer was last logged (one event a minute at most).
    paused_logged: Option<Instant>,
    /// Counters this session increments (none until the driver hands them over).
    metrics: SessionMetrics,
    /// Its places in its keys' counts, its own buckets and the publish it
    /// holds over a rate; `None` when no limit applies to it.
    limited: Option<Box<SessionLimits>>,
    /// Whether an MQTT 5 client's resend was logged (once per session).
    resend_logged: bool,
    /// The Authentication Method the CONNECT named, and what
    /// re-authentication keeps; `None` for most sessions.
    reauth: Option<Box<Reauth>>,
    /// Whether client publishes and deliveries may take the express lane
    /// (`state/express.rs`).
    express_in: bool,
    express_out: bool,
    /// How many PUBLISHes took an express lane (for the tests).
    #[cfg(test)]
    express_taken: u32,
}

/// Where a client's QoS 1/2 publish is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inbound {
    /// Waiting in upstream `.0`'s queue for room in the broker's window.
    Queued(usize),
    /// Sent to upstream `.0` with packet id `.1` on this connection.
    Sent(usize, u16),
    /// Sent to upstream `.0` with packet id `.1` by the previous connection
    /// of a resumed session: the broker may never have had it, so the
    /// client's resend goes to it again (then it is `Sent`).
    Resumed(usize, u16),
    /// QoS 2: the broker's PUBREC came and the proxy sent it PUBREL at once,
    /// so the broker's window does not wait for the client's PUBREL.
    Released(usize, u16),
    /// QoS 2: the client's PUBREL came too; its PUBCOMP waits for the broker's.
    AwaitingComp(usize, u16),
    /// QoS 2: the broker's PUBCOMP came (with this reason); the client's
    /// PUBREL is answered with it.
    Completed(PubCompReason),
}

/// A message to the client in flight: the upstream it came from, its packet
/// id there, and how far its flow is (which tells a broker's resend apart
/// from what the client still needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Delivery {
    upstream: usize,
    pkid: u16,
    stage: Stage,
}

/// How far a delivery to the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Written to the client on this connection; its answer is due.
    Sent,
    /// Left open by the previous connection of a resumed session: the
    /// client may never have had it, so the broker's resend goes to it.
    Resumed,
    /// QoS 2: the client's PUBREC went to the broker; its PUBREL is due.
    Received,
    /// QoS 2: the broker's PUBREL went to the client; its PUBCOMP is due.
    Released,
}

/// How often a session logs that a buffer is full.
const PAUSE_EVENT_INTERVAL: Duration = Duration::from_secs(60);

impl Session {
    /// A session that has just been admitted at `now`; the CONNACK is queued.
    pub(crate) fn new(config: Arc<ServerConfig>, start: Start, now: Instant) -> Self {
        let Start {
            version,
            connect,
            client_id,
            peer,
            upstreams,
            router,
            connack,
            carried,
            expires_at,
            others_expire,
            limits: session_limits,
        } = start;
        let connect_properties = connect.properties.as_ref();
        // Admission let an Authentication Method through only when it names
        // one of the server's guards: the session's own, which verifies its
        // re-authentications.
        let reauth = connect_properties
            .and_then(|p| p.authentication_method.as_deref())
            .and_then(|method| Some((method, config.guard_of_method(method)?)))
            .map(|(method, authorization)| {
                let guard = authorization.guard_name.clone();
                let identity = (router.authorizations.get(&guard)).and_then(|g| g.identity.clone());
                Box::new(Reauth::new(method.into(), guard, identity, others_expire))
            });
        let mut connack = connack;
        if let Some(reauth) = &reauth {
            // The CONNACK names the method it agrees (3.2.2.3.17).
            connack
                .properties
                .get_or_insert_with(super::admit::empty_connack_properties)
                .authentication_method = Some(reauth.method.to_string());
        }
        let ack_properties = connack.properties.as_ref();
        // A 3.1.1 client cannot be told a server keep-alive: it keeps its own.
        let client_keep_alive = match version {
            Version::V5 => ack_properties
                .and_then(|p| p.server_keep_alive)
                .unwrap_or(connect.keep_alive),
            Version::V4 => connect.keep_alive,
        };
        let limits = Limits {
            client_receive_maximum: usize::from(
                connect_properties
                    .and_then(|p| p.receive_maximum)
                    .unwrap_or(u16::MAX),
            ),
            receive_maximum: match version {
                Version::V5 => usize::from(config.flow.receive_maximum),
                Version::V4 => usize::MAX,
            },
            client_maximum_packet_size: connect_properties
                .and_then(|p| p.max_packet_size)
                .map_or(usize::MAX, |m| m as usize),
            server_maximum_packet_size: ack_properties
                .and_then(|p| p.max_packet_size)
                .unwrap_or(config.maximum_packet_size)
                as usize,
            maximum_qos: match ack_properties.and_then(|p| p.max_qos) {
                Some(0) => QoS::AtMostOnce,
                Some(1) => QoS::AtLeastOnce,
                _ => QoS::ExactlyOnce,
            },
            retain_available: ack_properties.and_then(|p| p.retain_available) != Some(0),
            client_topic_aliases: match version {
                Version::V5 => usize::from(
                    connect_properties
                        .and_then(|p| p.topic_alias_max)
                        .unwrap_or(0)
                        .min(config.client_topic_aliases),
                ),
                Version::V4 => 0,
            },
        };
        let mut session = Self {
            version,
            client_id,
            peer: peer.into_boxed_str(),
            client_out: BytesMut::new(),
            upstreams,
            router,
            inbound: LazyMap::new(),
            publish_bytes: 0,
            waiting_bytes: 0,
            outbound: PacketIds::default(),
            delivering: LazyMap::new(),
            waiting: VecDeque::new(),
            pending_acks: LazyMap::new(),
            aliases: LazyMap::new(),
            outgoing_aliases: LazyMap::new(),
            limits,
            keep_alive: (client_keep_alive > 0)
                .then(|| Duration::from_secs(u64::from(client_keep_alive)) * 3 / 2),
            last_heard: now,
            expires_at,
            session_expiry: match connect_properties.and_then(|p| p.session_expiry_interval) {
                None => Some(Duration::ZERO),
                Some(u32::MAX) => None,
                Some(seconds) => Some(Duration::from_secs(u64::from(seconds))),
            },
            clock: now,
            paused_logged: None,
            metrics: SessionMetrics::default(),
            limited: session_limits,
            resend_logged: false,
            reauth,
            config,
            express_in: false,
            express_out: false,
            #[cfg(test)]
            express_taken: 0,
        };
        (session.express_in, session.express_out) = session.express_lanes();
        if let Some(carried) = carried {
            session.restore(carried);
        }
        session.send_client(&Packet::ConnAck(connack));
        session.config.events.info(
            "MQTT_SESSION_STARTED",
            format!(
                "client {} id {} (MQTT {}) via {}",
                session.peer,
                text(&session.client_id),
                version.as_str(),
                session
                    .upstreams
                    .iter()
                    .map(|l| &*l.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        session
    }

    #[cfg(test)]
    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Counts this session in `metrics` from now on (the driver's, which
    /// already hold its CONNECT and CONNACK).
    pub(crate) fn set_metrics(&mut self, metrics: SessionMetrics) {
        self.metrics = metrics;
    }

    pub(crate) fn upstream_count(&self) -> usize {
        self.upstreams.len()
    }

    /// Bytes to write to the client; the driver clears what it wrote.
    pub(crate) fn client_transmit(&mut self) -> &mut BytesMut {
        &mut self.client_out
    }

    /// Bytes to write to upstream `index`; the driver clears what it wrote.
    pub(crate) fn upstream_transmit(&mut self, index: usize) -> &mut BytesMut {
        &mut self.upstreams[index].out
    }

    /// Upstream `index`'s queued bytes were written at `now`.
    pub(crate) fn upstream_sent(&mut self, index: usize, now: Instant) {
        self.upstreams[index].sent(now);
    }

    /// Whether the driver should read from the client: not while the
    /// client's publishes waiting for their brokers fill the publish
    /// buffer, nor while a publish waits for a limit's tokens.
    pub(crate) fn wants_client_input(&self) -> bool {
        self.publish_bytes < self.config.flow.publish_buffer && !self.holds_publish()
    }

    /// Whether the driver should read from the upstreams: not while messages
    /// waiting for the client fill the delivery buffer.
    pub(crate) fn wants_upstream_input(&self) -> bool {
        self.waiting_bytes < self.config.flow.delivery_buffer
    }

    /// Bytes the session holds in its queues (publishes waiting for a
    /// broker, messages waiting for the client): what its buffers bound.
    pub(crate) fn buffered(&self) -> usize {
        self.publish_bytes + self.waiting_bytes
    }

    /// QoS 1/2 flows open: (client publishes the brokers have not
    /// acknowledged, deliveries the client has not), for `zilla sessions`.
    pub(crate) fn in_flight(&self) -> (usize, usize) {
        (self.inbound.len(), self.outbound.len())
    }

    /// Handles the client's bytes in `buf` that arrived at `now`, leaving an
    /// incomplete packet there. Packets are handled while the publish
    /// buffer has room; the rest stay in `buf` until it has again.
    pub(crate) fn on_client_bytes(&mut self, now: Instant, buf: &mut BytesMut) -> Result<(), End> {
        self.last_heard = now;
        self.clock = now;
        self.resume_client_input(buf)
    }

    /// Handles client packets left in `buf` while the publish buffer was
    /// full (nothing new was heard from the client).
    pub(crate) fn resume_client_input(&mut self, buf: &mut BytesMut) -> Result<(), End> {
        let refuse = |error: codec::CodecError| End::Refuse(error.reason, error.message);
        while self.wants_client_input() {
            let maximum = self.limits.server_maximum_packet_size;
            // Runs of QoS 0 PUBLISHes go on as one copy, the rest one by one.
            self.express_run_from_client(buf);
            let Some(header) = codec::next_frame(buf, self.version, maximum).map_err(refuse)?
            else {
                return Ok(());
            };
            // Most PUBLISHes go on as the frame they came in.
            if self.express_from_client(buf, &header) {
                continue;
            }
            // The common PUBLISH goes its own way, without a `Packet` around it.
            match codec::take_publish(buf, &header, self.version) {
                Some(publish) => self.client_publish(publish)?,
                // AUTH, which the codec crate has no `Packet` for, goes its
                // own way too (`state/reauth.rs`).
                None => match codec::take_auth(buf, &header, self.version) {
                    Some(auth) => self.client_auth(auth.map_err(refuse)?)?,
                    None => {
                        let packet =
                            codec::take_packet(buf, &header, self.version, true).map_err(refuse)?;
                        self.on_client_packet(packet)?;
                    }
                },
            }
        }
        if self.holds_publish() {
            // Logged as the limit's hit, not as a full buffer.
            return Ok(());
        }
        self.log_pause(
            "publish buffer",
            "brokers' windows are full; reading from the client paused",
        );
        Ok(())
    }

    /// Handles upstream `index`'s bytes in `buf` that arrived at `now`,
    /// leaving an incomplete packet there; like the client's, they wait in
    /// `buf` while the delivery buffer is full.
    pub(crate) fn on_upstream_bytes(
        &mut self,
        now: Instant,
        index: usize,
        buf: &mut BytesMut,
    ) -> Result<(), End> {
        self.clock = now;
        let version = self.upstreams[index].version;
        let lost = |error: codec::CodecError| {
            End::UpstreamLost(index, format!("sent a bad packet: {error}"))
        };
        while self.wants_upstream_input() {
            self.express_run_to_client(index, buf);
            let Some(header) = codec::next_frame(buf, version, usize::MAX).map_err(lost)? else {
                return Ok(());
            };
            if self.express_to_client(index, buf, &header) {
                continue;
            }
            match codec::take_publish(buf, &header, version) {
                Some(publish) => self.upstream_publish(index, publish),
                None => {
                    let packet = codec::take_packet(buf, &header, version, false).map_err(lost)?;
                    self.on_upstream_packet(index, packet)?;
                }
            }
        }
        self.log_pause(
            "delivery buffer",
            "the client's window is full; reading from the brokers paused",
        );
        Ok(())
    }

    /// Logs that a buffer is full, once a minute at most per session.
    fn log_pause(&mut self, buffer: &str, why: &str) {
        let now = self.clock;
        if self
            .paused_logged
            .is_some_and(|at| now < at + PAUSE_EVENT_INTERVAL)
        {
            return;
        }
        self.paused_logged = Some(now);
        self.config.events.info(
            "MQTT_FLOW_PAUSED",
            format!(
                "client {} id {}: {buffer} full ({} bytes waiting): {why}",
                self.peer,
                text(&self.client_id),
                self.buffered()
            ),
        );
    }

    /// When [`on_timeout`](Self::on_timeout) is next due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let client = self.keep_alive.map(|ka| self.last_heard + ka);
        self.upstreams
            .iter()
            .filter_map(UpstreamLink::ping_due)
            .chain(client)
            .chain(self.expires_at)
            .chain(self.limits_deadline())
            .min()
    }

    /// Expires credentials, ends a silent client, pings the brokers.
    pub(crate) fn on_timeout(&mut self, now: Instant) -> Result<(), End> {
        if self.expires_at.is_some_and(|at| now >= at) {
            return Err(End::Expired);
        }
        self.clock = now;
        if !self.wants_client_input() {
            // The client's packets wait unread because of the proxy, not it.
            self.last_heard = now;
        }
        self.retry_held(now)?;
        if let Some(keep_alive) = self.keep_alive {
            if now >= self.last_heard + keep_alive {
                return Err(End::Refuse(
                    mqtt_bytes_v5::DisconnectReasonCode::KeepAliveTimeout,
                    format!(
                        "nothing received for {} (1.5 x keep-alive)",
                        duration(keep_alive)
                    ),
                ));
            }
        }
        let reading = self.wants_upstream_input();
        for (index, link) in self.upstreams.iter_mut().enumerate() {
            if let KeepAlive::Lost(keep_alive) = link.on_timeout(now, reading) {
                return Err(End::UpstreamLost(
                    index,
                    format!("no PINGRESP within {}", duration(keep_alive)),
                ));
            }
        }
        Ok(())
    }

    /// Encodes `packet` for the client; returns false when it exceeds the
    /// client's maximum packet size and was not sent.
    fn send_client(&mut self, packet: &Packet) -> bool {
        let maximum = self.limits.client_maximum_packet_size;
        let start = self.client_out.len();
        let _ = codec::write(packet, self.version, &mut self.client_out);
        if self.client_out.len() - start <= maximum {
            return true;
        }
        self.client_out.truncate(start);
        // An acknowledgement must not be lost for its reason string.
        if let Some(bare) = without_properties(packet) {
            let _ = codec::write(&bare, self.version, &mut self.client_out);
            if self.client_out.len() - start <= maximum {
                return true;
            }
            self.client_out.truncate(start);
        }
        false
    }

    /// Queues the message `publish` for the client; false, with nothing
    /// queued, when it is larger than the client accepts. Taken by value so
    /// the common one is written without a `Packet` built around it.
    #[inline]
    pub(super) fn send_client_publish(&mut self, publish: Publish) -> bool {
        let start = self.client_out.len();
        let _ = codec::write_publish(publish, self.version, &mut self.client_out);
        if self.client_out.len() - start <= self.limits.client_maximum_packet_size {
            return true;
        }
        self.client_out.truncate(start);
        false
    }

    /// How many PUBLISHes took an express lane.
    #[cfg(test)]
    pub(crate) fn express_taken(&self) -> u32 {
        self.express_taken
    }

    /// Takes neither express lane (for the tests and the fuzz entry that
    /// compare the lanes with the full path on the same input).
    pub(crate) fn without_express(&mut self) {
        (self.express_in, self.express_out) = (false, false);
    }

    /// Puts back the packet-id state a previous connection of this persistent
    /// session left, for the upstreams it still has.
    fn restore(&mut self, carried: Carried) {
        let index_of = |upstreams: &[UpstreamLink], name: &Arc<str>| {
            upstreams.iter().position(|l| l.name == *name)
        };
        for (client_pkid, exit, pkid) in carried.inbound {
            if let Some(index) = index_of(&self.upstreams, &exit) {
                self.upstreams[index].restore_publish(pkid, client_pkid);
                self.inbound
                    .insert(client_pkid, Inbound::Resumed(index, pkid));
            }
        }
        for (client_pkid, exit, pkid) in carried.outbound {
            if let Some(index) = index_of(&self.upstreams, &exit) {
                let delivery = Delivery {
                    upstream: index,
                    pkid,
                    stage: Stage::Resumed,
                };
                self.outbound.insert(client_pkid, delivery);
                self.delivering.insert((index, pkid), client_pkid);
            }
        }
        for (exit, next) in carried.next_pkids {
            if let Some(index) = index_of(&self.upstreams, &exit) {
                self.upstreams[index].ids.set_last(next);
            }
        }
        for client_pkid in carried.completed {
            self.inbound
                .insert(client_pkid, Inbound::Completed(PubCompReason::Success));
        }
        self.outbound.set_last(carried.next_client_pkid);
    }

    /// The packet-id state to carry to the next connection of a persistent
    /// session that ends at `now`; `None` for a clean session.
    pub(crate) fn carried(&self, now: Instant) -> Option<Carried> {
        if self.session_expiry == Some(Duration::ZERO) {
            return None;
        }
        let name = |index: usize| self.upstreams[index].name.clone();
        Some(Carried {
            // Publishes still queued never reached a broker: the client
            // sends them again, as new, on its next connection.
            inbound: self
                .inbound
                .iter()
                .filter_map(|(&p, inbound)| match *inbound {
                    // The client sends PUBREL again and it goes upstream again.
                    Inbound::Sent(i, q)
                    | Inbound::Resumed(i, q)
                    | Inbound::Released(i, q)
                    | Inbound::AwaitingComp(i, q) => Some((p, name(i), q)),
                    // Never reached a broker (sent again as new), or over at
                    // the broker (in `completed`).
                    Inbound::Queued(_) | Inbound::Completed(_) => None,
                })
                .collect(),
            outbound: self
                .outbound
                .iter()
                .map(|(p, d)| (p, name(d.upstream), d.pkid))
                .collect(),
            next_pkids: self
                .upstreams
                .iter()
                .map(|l| (l.name.clone(), l.ids.last()))
                .collect(),
            completed: self
                .inbound
                .iter()
                .filter_map(|(&p, inbound)| matches!(inbound, Inbound::Completed(_)).then_some(p))
                .collect(),
            next_client_pkid: self.outbound.last(),
            expires: self.session_expiry.map(|after| now + after),
        })
    }
}
