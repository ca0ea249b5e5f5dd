//! [`SessionMetrics`]: what a connection's driver and its session state
//! machine call as things happen; each call is a no-op when the server
//! records no `mqtt.*` metric.
//!
//! Times are given (`now`), never read here: the clock stays in the driver,
//! so the state machine calls these as freely as it does anything else.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use mqtt_bytes_v5::{
    ConnectReturnCode, DisconnectReasonCode, Filter, Packet, QoS, SubscribeReasonCode,
    UnsubAckReason,
};
use zilla_engine::telemetry::metrics::Recorder;

use super::block::*;
use super::MqttFamily;
use crate::codec::connack_code;
use crate::limits::Action;
use crate::port::{OpenError, Upstream};
use crate::session::acks::PublishRefusal;
use crate::session::end::End;

/// Why a CONNECT's credentials were refused.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AuthFailure {
    /// No user name (or password) where the credentials are expected.
    Missing,
    /// Not in the form the server expects (or a binary password).
    Malformed,
    /// The guard refused them (signature, expiry, issuer, ...).
    Invalid,
    /// The guard could not decide (e.g. its keys are unreachable).
    Unavailable,
    /// An MQTT 5 Authentication Method the server's guard does not name.
    UnsupportedMethod,
}

/// One connection's metrics, from its first byte to its end: nothing but
/// a null pointer in the session when the server records no `mqtt.*` metric.
#[derive(Debug, Default)]
pub(crate) struct SessionMetrics(Option<Box<Active>>);

/// The metrics of a connection whose server records some.
#[derive(Debug)]
struct Active {
    block: Recorder<ConnectionBlock>,
    /// When the complete CONNECT was read (with `connect_timing`).
    connect_read: Option<Instant>,
    has_will: bool,
    /// The exit slot of each of the session's upstreams, by upstream index.
    exits: Vec<usize>,
    /// When each QoS 1/2 publish went upstream, by (upstream, packet id);
    /// only when `mqtt.publish.ack.duration` is recorded.
    in_flight: HashMap<(usize, u16), Instant>,
    /// Filters granted on this connection (with `subscriptions`).
    subscribed: HashSet<String>,
    /// Filters of SUBSCRIBEs and UNSUBSCRIBEs not acknowledged yet, by packet id.
    pending: HashMap<u16, Vec<String>>,
}

impl Active {
    fn shape(&self) -> &Shape {
        self.block.family().shape()
    }

    fn exit_slot(&self, exit: &str) -> Option<usize> {
        self.shape().exits.iter().position(|e| &**e == exit)
    }
}

fn qos_index(qos: QoS) -> usize {
    match qos {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

impl SessionMetrics {
    /// Metrics for a new connection of the server with `family`.
    pub(crate) fn open(family: &MqttFamily) -> Self {
        Self(family.as_ref().map(|family| {
            Box::new(Active {
                block: family.open(),
                connect_read: None,
                has_will: false,
                exits: Vec::new(),
                in_flight: HashMap::new(),
                subscribed: HashSet::new(),
                pending: HashMap::new(),
            })
        }))
    }

    // --- The driver: CONNECT to CONNACK. ---

    /// A complete CONNECT was read at `now`.
    pub(crate) fn connect_read(&mut self, now: Instant, has_will: bool) {
        let Some(m) = &mut self.0 else { return };
        if m.shape().connect_timing {
            m.connect_read = Some(now);
        }
        m.has_will = has_will;
    }

    /// A CONNACK with `code` is sent at `now`.
    pub(crate) fn connack_sent(&mut self, code: ConnectReturnCode, now: Instant) {
        let Some(m) = &mut self.0 else { return };
        m.block
            .connack
            .store(u16::from(connack_code(code)) + 1, Relaxed);
        if let Some(read) = m.connect_read.take() {
            let nanos = u64::try_from(now.saturating_duration_since(read).as_nanos())
                .unwrap_or(u64::MAX - 1);
            m.block.connect_nanos.store(nanos + 1, Relaxed);
        }
    }

    /// The CONNECT was refused with `code` before the guard was asked;
    /// `had_login` tells missing credentials from malformed ones.
    pub(crate) fn credentials_refused(&self, code: ConnectReturnCode, had_login: bool) {
        let reason = match code {
            ConnectReturnCode::BadAuthenticationMethod => AuthFailure::UnsupportedMethod,
            ConnectReturnCode::BadUserNamePassword if had_login => AuthFailure::Malformed,
            ConnectReturnCode::BadUserNamePassword => AuthFailure::Missing,
            // Not about credentials (e.g. an empty client id without clean start).
            _ => return,
        };
        self.authentication_failed(reason);
    }

    /// The credentials were refused.
    pub(crate) fn authentication_failed(&self, reason: AuthFailure) {
        if let Some(m) = &self.0 {
            m.block.auth_failure.store(reason as u8 + 1, Relaxed);
        }
    }

    /// What opening the upstream behind `exit` gave.
    pub(crate) fn upstream_opened(&self, exit: &str, result: &Result<Upstream, OpenError>) {
        let Some(m) = &self.0 else { return };
        let Some(slot) = m.exit_slot(exit) else {
            return;
        };
        let state = match result {
            Ok(_) => UPSTREAM_OPEN,
            Err(OpenError::Refused(_)) => UPSTREAM_REFUSED,
            Err(OpenError::Failed(_)) => UPSTREAM_UNREACHABLE,
        };
        m.block.upstreams[slot].state.store(state, Relaxed);
    }

    /// The session was admitted with upstreams through `exits`, in the
    /// order the session indexes them.
    pub(crate) fn admitted<'a>(&mut self, exits: impl Iterator<Item = &'a str>) {
        let Some(m) = &mut self.0 else { return };
        m.exits = exits.map(|exit| m.exit_slot(exit).unwrap_or(0)).collect();
        m.block.state.store(ADMITTED, Relaxed);
    }

    // --- The session state machine: the message path. ---

    /// A PUBLISH with `bytes` of payload came from the client.
    #[inline]
    pub(crate) fn publish_received(&self, qos: QoS, bytes: usize) {
        if let Some(m) = &self.0 {
            m.block.received[qos_index(qos)].increment();
            m.block.payload_received.add(bytes as u64);
        }
    }

    /// `count` PUBLISHes with `bytes` of payload in all came from the
    /// client (a run of the express lane).
    #[inline]
    pub(crate) fn publishes_received(&self, qos: QoS, count: u64, bytes: u64) {
        if let Some(m) = &self.0 {
            m.block.received[qos_index(qos)].add(count);
            m.block.payload_received.add(bytes);
        }
    }

    /// `count` PUBLISHes with `bytes` of payload in all went to the client.
    #[inline]
    pub(crate) fn publishes_delivered(&self, qos: QoS, count: u64, bytes: u64) {
        if let Some(m) = &self.0 {
            m.block.delivered[qos_index(qos)].add(count);
            m.block.payload_delivered.add(bytes);
        }
    }

    /// A PUBLISH with `bytes` of payload went to the client.
    #[inline]
    pub(crate) fn publish_delivered(&self, qos: QoS, bytes: usize) {
        if let Some(m) = &self.0 {
            m.block.delivered[qos_index(qos)].increment();
            m.block.payload_delivered.add(bytes as u64);
        }
    }

    /// A client publish waits for a broker's receive maximum.
    pub(crate) fn queued_to_broker(&self) {
        if let Some(m) = &self.0 {
            m.block.queued[0].increment();
        }
    }

    /// A message waits for the client's receive maximum.
    pub(crate) fn queued_to_client(&self) {
        if let Some(m) = &self.0 {
            m.block.queued[1].increment();
        }
    }

    /// A publish went to upstream `index` under `pkid` at `now`.
    #[inline]
    pub(crate) fn publish_sent(&mut self, index: usize, qos: QoS, pkid: u16, now: Instant) {
        let Some(m) = &mut self.0 else { return };
        if qos != QoS::AtMostOnce && m.shape().ack_timing {
            m.in_flight.insert((index, pkid), now);
        }
    }

    /// Upstream `index` completed the publish `pkid` (PUBACK, PUBCOMP) at `now`.
    #[inline]
    pub(crate) fn publish_acknowledged(&mut self, index: usize, pkid: u16, now: Instant) {
        let Some(m) = &mut self.0 else { return };
        let Some(sent) = m.in_flight.remove(&(index, pkid)) else {
            return;
        };
        let histogram = m
            .exits
            .get(index)
            .and_then(|&slot| m.block.upstreams[slot].ack.as_ref());
        if let Some(histogram) = histogram {
            histogram.observe(now.saturating_duration_since(sent));
        }
    }

    /// The proxy refused a publish of `qos` (answered, or dropped for QoS 0).
    pub(crate) fn publish_refused(&self, qos: QoS, refusal: PublishRefusal) {
        let Some(m) = &self.0 else { return };
        let code = match refusal {
            PublishRefusal::NotAuthorized => 0,
            PublishRefusal::PayloadFormatInvalid => 1,
            PublishRefusal::QuotaExceeded => 2,
            PublishRefusal::TopicNameInvalid => 3,
        };
        m.block.publish_refusals[qos_index(qos) * 4 + code].increment();
    }

    /// The proxy's own answers to the filters of a SUBSCRIBE.
    pub(crate) fn subscriptions_refused(&self, codes: &[Option<SubscribeReasonCode>]) {
        let Some(m) = &self.0 else { return };
        for code in codes.iter().flatten() {
            match code {
                SubscribeReasonCode::NotAuthorized => m.block.subscribe_refusals[0].increment(),
                SubscribeReasonCode::TopicFilterInvalid => {
                    m.block.subscribe_refusals[1].increment()
                }
                SubscribeReasonCode::QuotaExceeded => m.block.subscribe_refusals[2].increment(),
                _ => {}
            }
        }
    }

    /// A re-authentication was decided: `succeeded`, or it ended the session.
    pub(crate) fn reauthenticated(&self, succeeded: bool) {
        if let Some(m) = &self.0 {
            m.block.reauthentications[usize::from(!succeeded)].increment();
        }
    }

    /// The limit in `mqtt.limits.hits` slot `slot` was hit and did `action`.
    pub(crate) fn limit_hit(&self, slot: Option<usize>, action: Action) {
        let (Some(m), Some(slot)) = (&self.0, slot) else {
            return;
        };
        let offset = match action {
            Action::Delayed => 0,
            Action::Refused => 1,
        };
        if let Some(counter) = m.block.limit_hits.get(slot * LIMIT_ACTIONS.len() + offset) {
            counter.increment();
        }
    }

    /// A publish to `filter` failed `model`.
    pub(crate) fn validation_failed(&self, filter: &str, model: &str) {
        let Some(m) = &self.0 else { return };
        let slot = m
            .shape()
            .validations
            .iter()
            .position(|(f, name)| f == filter && name == model);
        if let Some(slot) = slot {
            m.block.validation[slot].increment();
        }
    }

    /// The client subscribes to `filters` with packet id `pkid`.
    pub(crate) fn subscribing(&mut self, pkid: u16, filters: &[Filter]) {
        let Some(m) = &mut self.0 else { return };
        if m.shape().subscriptions {
            let paths = filters.iter().map(|f| f.path.clone()).collect();
            m.pending.insert(pkid, paths);
        }
    }

    /// The client unsubscribes from `filters` with packet id `pkid`.
    pub(crate) fn unsubscribing(&mut self, pkid: u16, filters: &[String]) {
        let Some(m) = &mut self.0 else { return };
        if m.shape().subscriptions {
            m.pending.insert(pkid, filters.to_vec());
        }
    }

    /// The client is sent `packet`, the SUBACK or UNSUBACK for `pkid`.
    pub(crate) fn acknowledged(&mut self, pkid: u16, packet: &Packet) {
        let Some(m) = &mut self.0 else { return };
        let Some(filters) = m.pending.remove(&pkid) else {
            return;
        };
        match packet {
            Packet::SubAck(ack) => {
                for (filter, code) in filters.into_iter().zip(&ack.return_codes) {
                    if matches!(code, SubscribeReasonCode::Success(_)) {
                        m.subscribed.insert(filter);
                    }
                }
            }
            Packet::UnsubAck(ack) => {
                for (filter, reason) in filters.iter().zip(&ack.reasons) {
                    if matches!(
                        reason,
                        UnsubAckReason::Success | UnsubAckReason::NoSubscriptionExisted
                    ) {
                        m.subscribed.remove(filter);
                    }
                }
            }
            _ => return,
        }
        m.block.subscriptions.set(m.subscribed.len() as i64);
    }

    /// The proxy ended the subscription to `filter` (a refreshed token no
    /// longer allows it).
    pub(crate) fn revoked(&mut self, filter: &str) {
        let Some(m) = &mut self.0 else { return };
        if m.subscribed.remove(filter) {
            m.block.subscriptions.set(m.subscribed.len() as i64);
        }
    }

    /// The session ends for `end`.
    pub(crate) fn session_ended(&mut self, end: &End) {
        let Some(m) = &mut self.0 else { return };
        let block = &m.block;
        block.state.store(ENDED, Relaxed);
        let refusal = match end {
            End::Refuse(code, _) => Some(*code),
            End::UpstreamLost(..) => Some(DisconnectReasonCode::UnspecifiedError),
            End::TakenOver | End::UpstreamClosed(_) => Some(DisconnectReasonCode::SessionTakenOver),
            End::Expired => Some(DisconnectReasonCode::MaximumConnectTime),
            End::Draining => Some(DisconnectReasonCode::ServerShuttingDown),
            End::Administrative => Some(DisconnectReasonCode::AdministrativeAction),
            End::ClientDisconnected | End::ClientLost(_) | End::UpstreamDisconnected(..) => None,
            // 0x8C has no name in the codec crate: stored as its code below.
            End::BadAuthenticationMethod(_) => None,
        };
        let code = match end {
            End::BadAuthenticationMethod(_) => Some(crate::codec::BAD_AUTHENTICATION_METHOD),
            _ => refusal.map(|code| code as u8),
        };
        if let Some(code) = code {
            block.disconnect.store(u16::from(code) + 1, Relaxed);
        }
        let failed = match end {
            End::UpstreamLost(index, _) => Some((*index, UPSTREAM_LOST)),
            End::UpstreamDisconnected(index, _) | End::UpstreamClosed(index) => {
                Some((*index, UPSTREAM_DISCONNECTED))
            }
            _ => None,
        };
        if let Some((index, state)) = failed {
            if let Some(&slot) = m.exits.get(index) {
                block.upstreams[slot].state.store(state, Relaxed);
            }
        }
        block.taken_over.store(
            matches!(end, End::TakenOver | End::UpstreamClosed(_)),
            Relaxed,
        );
        // Only the client's own DISCONNECT is passed on as one; every other
        // end leaves the brokers with a lost connection, or asks for the will.
        let released = m.has_will && !matches!(end, End::ClientDisconnected);
        block.will_released.store(released, Relaxed);
    }
}
