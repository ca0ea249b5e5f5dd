//! One client connection's `mqtt.*` counters, their totals, and the series
//! they become.
//!
//! What happens once per connection (its CONNACK, why it ended, how each
//! upstream fared) is one small slot each, not a counter per reason code:
//! a block stays a few hundred bytes however many codes MQTT has. The
//! per-message counts are plain [`Counter`]s. Totals, written only under
//! the family's lock or on a scrape's copy, hold the counts by code.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;

use zilla_engine::telemetry::metrics::{Block, Counter, Gauge, Histogram, HistogramValue, Report};

use super::*;

/// What every connection block of one mqtt server is sized by.
#[derive(Debug)]
pub(crate) struct Shape {
    /// The server's exits (route exits and the default exit), in order.
    pub(crate) exits: Vec<Arc<str>>,
    /// (topic filter, model) of every model in `options.topics`.
    pub(crate) validations: Vec<(String, String)>,
    /// Whether `mqtt.connect.duration` is recorded (the driver times CONNECTs).
    pub(crate) connect_timing: bool,
    /// Whether `mqtt.publish.ack.duration` is recorded (the session times publishes).
    pub(crate) ack_timing: bool,
    /// Whether `mqtt.subscriptions.active` is recorded (the session tracks filters).
    pub(crate) subscriptions: bool,
    /// (`key`, `limit`) of every limit in `options.limits`.
    pub(crate) limits: Vec<(String, &'static str)>,
}

/// Why a CONNECT's credentials were refused, for `mqtt.authentication.failures`.
pub(crate) const AUTH_REASONS: [&str; 5] = [
    "missing",
    "malformed",
    "invalid",
    "unavailable",
    "unsupported_method",
];

/// How an upstream fared, for `mqtt.upstream.failures` (after `OPEN`).
pub(crate) const UPSTREAM_FAILURES_REASONS: [&str; 4] =
    ["refused", "unreachable", "lost", "disconnected"];

pub(crate) const UPSTREAM_NONE: u8 = 0;
pub(crate) const UPSTREAM_OPEN: u8 = 1;
pub(crate) const UPSTREAM_REFUSED: u8 = 2;
pub(crate) const UPSTREAM_UNREACHABLE: u8 = 3;
pub(crate) const UPSTREAM_LOST: u8 = 4;
pub(crate) const UPSTREAM_DISCONNECTED: u8 = 5;

pub(crate) const CONNECTING: u8 = 0;
pub(crate) const ADMITTED: u8 = 1;
pub(crate) const ENDED: u8 = 2;

/// The refusals of a publish the proxy answers itself, by QoS and code.
pub(crate) const PUBLISH_REFUSAL_CODES: [u8; 4] = [0x87, 0x99, 0x97, 0x90];
/// The SUBACK codes the proxy decides itself.
pub(crate) const SUBSCRIBE_REFUSAL_CODES: [u8; 3] = [0x87, 0x8F, 0x97];
/// What a hit limit did, for `mqtt.limits.hits` (by slot, then this).
pub(crate) const LIMIT_ACTIONS: [&str; 2] = ["delayed", "refused"];
/// How a re-authentication ended, for `mqtt.reauthentications`.
pub(crate) const REAUTH_RESULTS: [&str; 2] = ["succeeded", "failed"];

/// One upstream of a connection.
#[derive(Debug)]
pub(crate) struct UpstreamCells {
    pub(crate) state: AtomicU8,
    pub(crate) ack: Option<Histogram>,
}

/// One client connection's counters, written by its own task only.
#[derive(Debug)]
pub(crate) struct ConnectionBlock {
    /// CONNACK reason code + 1; 0 until one is sent.
    pub(crate) connack: AtomicU16,
    /// CONNECT to CONNACK, in nanoseconds + 1; 0 when not measured.
    pub(crate) connect_nanos: AtomicU64,
    /// Index in `AUTH_REASONS` + 1; 0 when none.
    pub(crate) auth_failure: AtomicU8,
    /// `CONNECTING`, `ADMITTED` or `ENDED`.
    pub(crate) state: AtomicU8,
    /// DISCONNECT reason code of a session the proxy ended, + 1; 0 when none.
    pub(crate) disconnect: AtomicU16,
    pub(crate) taken_over: AtomicBool,
    pub(crate) will_released: AtomicBool,
    pub(crate) received: [Counter; 3],
    pub(crate) delivered: [Counter; 3],
    pub(crate) payload_received: Counter,
    pub(crate) payload_delivered: Counter,
    /// To brokers, to the client.
    pub(crate) queued: [Counter; 2],
    pub(crate) subscriptions: Gauge,
    /// By QoS (0, 1, 2) then position in `PUBLISH_REFUSAL_CODES`.
    pub(crate) publish_refusals: [Counter; 12],
    /// By position in `SUBSCRIBE_REFUSAL_CODES`.
    pub(crate) subscribe_refusals: [Counter; 3],
    /// By position in `Shape::validations`.
    pub(crate) validation: Box<[Counter]>,
    /// By position in `Shape::limits` times 2, plus the position in `LIMIT_ACTIONS`.
    pub(crate) limit_hits: Box<[Counter]>,
    /// By position in `Shape::exits`.
    pub(crate) upstreams: Box<[UpstreamCells]>,
    /// By position in `REAUTH_RESULTS`.
    pub(crate) reauthentications: [Counter; 2],
}

/// Sums of connection blocks.
#[derive(Debug, Clone)]
pub(crate) struct Totals {
    connacks: BTreeMap<u8, u64>,
    connect_duration: HistogramValue,
    auth_failures: [u64; 5],
    sessions: i64,
    received: [u64; 3],
    delivered: [u64; 3],
    payload_received: u64,
    payload_delivered: u64,
    queued: [u64; 2],
    subscriptions: i64,
    publish_refusals: [u64; 12],
    subscribe_refusals: [u64; 3],
    disconnects: BTreeMap<u8, u64>,
    validation: Vec<u64>,
    limit_hits: Vec<u64>,
    upstream_opens: Vec<u64>,
    upstream_active: Vec<i64>,
    upstream_failures: Vec<[u64; 4]>,
    ack: Vec<HistogramValue>,
    takeovers: u64,
    wills: u64,
    reauthentications: [u64; 2],
}

fn add<const N: usize>(into: &mut [u64; N], from: &[u64; N]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

fn add_counters<const N: usize>(into: &mut [u64; N], from: &[Counter; N]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a += b.get();
    }
}

impl Block for ConnectionBlock {
    type Shape = Shape;
    type Totals = Totals;

    fn new(shape: &Shape) -> Self {
        let histogram = || shape.ack_timing.then(|| Histogram::new(&DURATION_BUCKETS));
        Self {
            connack: AtomicU16::new(0),
            connect_nanos: AtomicU64::new(0),
            auth_failure: AtomicU8::new(0),
            state: AtomicU8::new(CONNECTING),
            disconnect: AtomicU16::new(0),
            taken_over: AtomicBool::new(false),
            will_released: AtomicBool::new(false),
            received: Default::default(),
            delivered: Default::default(),
            payload_received: Counter::default(),
            payload_delivered: Counter::default(),
            queued: Default::default(),
            subscriptions: Gauge::default(),
            publish_refusals: Default::default(),
            subscribe_refusals: Default::default(),
            validation: shape
                .validations
                .iter()
                .map(|_| Counter::default())
                .collect(),
            limit_hits: (0..shape.limits.len() * LIMIT_ACTIONS.len())
                .map(|_| Counter::default())
                .collect(),
            upstreams: shape
                .exits
                .iter()
                .map(|_| UpstreamCells {
                    state: AtomicU8::new(UPSTREAM_NONE),
                    ack: histogram(),
                })
                .collect(),
            reauthentications: Default::default(),
        }
    }

    fn totals(shape: &Shape) -> Totals {
        Totals {
            connacks: BTreeMap::new(),
            connect_duration: HistogramValue::new(&DURATION_BUCKETS),
            auth_failures: [0; 5],
            sessions: 0,
            received: [0; 3],
            delivered: [0; 3],
            payload_received: 0,
            payload_delivered: 0,
            queued: [0; 2],
            subscriptions: 0,
            publish_refusals: [0; 12],
            subscribe_refusals: [0; 3],
            disconnects: BTreeMap::new(),
            validation: vec![0; shape.validations.len()],
            limit_hits: vec![0; shape.limits.len() * LIMIT_ACTIONS.len()],
            upstream_opens: vec![0; shape.exits.len()],
            upstream_active: vec![0; shape.exits.len()],
            upstream_failures: vec![[0; 4]; shape.exits.len()],
            ack: shape
                .exits
                .iter()
                .map(|_| HistogramValue::new(&DURATION_BUCKETS))
                .collect(),
            takeovers: 0,
            reauthentications: [0; 2],
            wills: 0,
        }
    }

    fn fold(&self, _: &Shape, totals: &mut Totals, live: bool) {
        if let Some(code) = self.connack.load(Relaxed).checked_sub(1) {
            *totals.connacks.entry(code as u8).or_default() += 1;
        }
        if let Some(nanos) = self.connect_nanos.load(Relaxed).checked_sub(1) {
            totals
                .connect_duration
                .observe(std::time::Duration::from_nanos(nanos).as_secs_f64());
        }
        if let Some(reason) = self.auth_failure.load(Relaxed).checked_sub(1) {
            totals.auth_failures[usize::from(reason)] += 1;
        }
        let admitted = live && self.state.load(Relaxed) == ADMITTED;
        if admitted {
            totals.sessions += 1;
            totals.subscriptions += self.subscriptions.get();
        }
        add_counters(&mut totals.received, &self.received);
        add_counters(&mut totals.delivered, &self.delivered);
        totals.payload_received += self.payload_received.get();
        totals.payload_delivered += self.payload_delivered.get();
        add_counters(&mut totals.queued, &self.queued);
        add_counters(&mut totals.publish_refusals, &self.publish_refusals);
        add_counters(&mut totals.subscribe_refusals, &self.subscribe_refusals);
        if let Some(code) = self.disconnect.load(Relaxed).checked_sub(1) {
            *totals.disconnects.entry(code as u8).or_default() += 1;
        }
        for (total, counter) in totals.validation.iter_mut().zip(self.validation.iter()) {
            *total += counter.get();
        }
        for (total, counter) in totals.limit_hits.iter_mut().zip(self.limit_hits.iter()) {
            *total += counter.get();
        }
        for (slot, upstream) in self.upstreams.iter().enumerate() {
            let state = upstream.state.load(Relaxed);
            if matches!(state, UPSTREAM_OPEN | UPSTREAM_LOST | UPSTREAM_DISCONNECTED) {
                totals.upstream_opens[slot] += 1;
            }
            if state == UPSTREAM_OPEN && admitted {
                totals.upstream_active[slot] += 1;
            }
            if let Some(reason) = state.checked_sub(UPSTREAM_REFUSED) {
                totals.upstream_failures[slot][usize::from(reason)] += 1;
            }
            if let Some(ack) = &upstream.ack {
                totals.ack[slot].add(ack);
            }
        }
        totals.takeovers += u64::from(self.taken_over.load(Relaxed));
        totals.wills += u64::from(self.will_released.load(Relaxed));
        add_counters(&mut totals.reauthentications, &self.reauthentications);
    }

    fn merge(_: &Shape, into: &mut Totals, from: &Totals) {
        for (code, count) in &from.connacks {
            *into.connacks.entry(*code).or_default() += count;
        }
        into.connect_duration.merge(&from.connect_duration);
        add(&mut into.auth_failures, &from.auth_failures);
        into.sessions += from.sessions;
        add(&mut into.received, &from.received);
        add(&mut into.delivered, &from.delivered);
        into.payload_received += from.payload_received;
        into.payload_delivered += from.payload_delivered;
        add(&mut into.queued, &from.queued);
        into.subscriptions += from.subscriptions;
        add(&mut into.publish_refusals, &from.publish_refusals);
        add(&mut into.subscribe_refusals, &from.subscribe_refusals);
        for (code, count) in &from.disconnects {
            *into.disconnects.entry(*code).or_default() += count;
        }
        for (a, b) in into.validation.iter_mut().zip(&from.validation) {
            *a += b;
        }
        for (a, b) in into.limit_hits.iter_mut().zip(&from.limit_hits) {
            *a += b;
        }
        for (a, b) in into.upstream_opens.iter_mut().zip(&from.upstream_opens) {
            *a += b;
        }
        for (a, b) in into.upstream_active.iter_mut().zip(&from.upstream_active) {
            *a += b;
        }
        for (a, b) in into
            .upstream_failures
            .iter_mut()
            .zip(&from.upstream_failures)
        {
            add(a, b);
        }
        for (a, b) in into.ack.iter_mut().zip(&from.ack) {
            a.merge(b);
        }
        into.takeovers += from.takeovers;
        into.wills += from.wills;
        add(&mut into.reauthentications, &from.reauthentications);
    }

    fn report(shape: &Shape, totals: &Totals, out: &mut Report<'_>) {
        let m = &MQTT_METRICS;
        let hex = |code: u8| format!("0x{code:02X}");
        out.gauge(&m[SESSIONS_ACTIVE], &[], totals.sessions);
        // Accepted CONNECTs are always shown, so a rate of refusals has a
        // denominator from the first scrape.
        let accepted = totals.connacks.get(&0).copied().unwrap_or(0);
        out.counter(&m[CONNECTS], &["0x00", reason_name(0)], accepted);
        for (&code, &count) in totals.connacks.iter().filter(|(code, _)| **code != 0) {
            out.counter(&m[CONNECTS], &[&hex(code), reason_name(code)], count);
        }
        out.histogram(&m[CONNECT_DURATION], &[], &totals.connect_duration);
        for (reason, count) in AUTH_REASONS.iter().zip(totals.auth_failures) {
            out.counter(&m[AUTHENTICATION_FAILURES], &[reason], count);
        }
        for (qos, (received, delivered)) in
            totals.received.iter().zip(&totals.delivered).enumerate()
        {
            let qos = qos.to_string();
            out.counter(&m[PUBLISHES_RECEIVED], &[&qos], *received);
            out.counter(&m[PUBLISHES_DELIVERED], &[&qos], *delivered);
        }
        out.counter(&m[PAYLOAD_RECEIVED], &[], totals.payload_received);
        out.counter(&m[PAYLOAD_DELIVERED], &[], totals.payload_delivered);
        out.gauge(&m[SUBSCRIPTIONS_ACTIVE], &[], totals.subscriptions);
        for ((topic, model), count) in shape.validations.iter().zip(&totals.validation) {
            out.counter(&m[VALIDATION_FAILURES], &[topic, model], *count);
        }
        for (&code, &count) in &totals.disconnects {
            out.counter(
                &m[REFUSALS],
                &["DISCONNECT", &hex(code), reason_name(code)],
                count,
            );
        }
        for (index, &count) in totals.publish_refusals.iter().enumerate() {
            let packet = ["PUBLISH", "PUBACK", "PUBREC"][index / 4];
            let code = PUBLISH_REFUSAL_CODES[index % 4];
            if count > 0 {
                out.counter(
                    &m[REFUSALS],
                    &[packet, &hex(code), reason_name(code)],
                    count,
                );
            }
        }
        for (&code, &count) in SUBSCRIBE_REFUSAL_CODES
            .iter()
            .zip(&totals.subscribe_refusals)
        {
            if count > 0 {
                out.counter(
                    &m[REFUSALS],
                    &["SUBACK", &hex(code), reason_name(code)],
                    count,
                );
            }
        }
        for (slot, exit) in shape.exits.iter().enumerate() {
            out.counter(&m[UPSTREAM_SESSIONS], &[exit], totals.upstream_opens[slot]);
            out.gauge(
                &m[UPSTREAM_SESSIONS_ACTIVE],
                &[exit],
                totals.upstream_active[slot],
            );
            for (reason, count) in UPSTREAM_FAILURES_REASONS
                .iter()
                .zip(totals.upstream_failures[slot])
            {
                out.counter(&m[UPSTREAM_FAILURES], &[exit, reason], count);
            }
            out.histogram(&m[PUBLISH_ACK_DURATION], &[exit], &totals.ack[slot]);
        }
        out.counter(&m[MESSAGES_QUEUED], &["to_broker"], totals.queued[0]);
        out.counter(&m[MESSAGES_QUEUED], &["to_client"], totals.queued[1]);
        out.counter(&m[TAKEOVERS], &[], totals.takeovers);
        out.counter(&m[WILLS_RELEASED], &[], totals.wills);
        for (result, &count) in REAUTH_RESULTS.iter().zip(&totals.reauthentications) {
            out.counter(&m[REAUTHENTICATIONS], &[result], count);
        }
        // Every configured limit and action from the first scrape, so a
        // rate of hits has a series to start from.
        for (slot, (key, limit)) in shape.limits.iter().enumerate() {
            for (offset, action) in LIMIT_ACTIONS.iter().enumerate() {
                let count = totals.limit_hits[slot * LIMIT_ACTIONS.len() + offset];
                out.counter(&m[LIMIT_HITS], &[key, limit, action], count);
            }
        }
    }
}
