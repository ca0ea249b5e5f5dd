//! The `mqtt.*` metrics (beyond Zilla), modelled on what EMQX and HiveMQ
//! users graph: sessions, CONNACK reason codes, authentication failures,
//! publishes by QoS, payload bytes, subscriptions, validation failures,
//! refusals, upstream sessions per exit, flow control, takeovers, wills,
//! limit hits, and how long CONNACKs and broker acknowledgements take.
//!
//! Every client connection of an mqtt server owns one block of counters
//! ([`block::ConnectionBlock`]) that only its own task writes; the session
//! state machine is handed [`SessionMetrics`] and increments it with values
//! it is given (the clock stays in the driver). See `docs/metrics.md` for
//! the reference and decision 0018 for the design.

pub(crate) mod block;
mod session;

use std::sync::Arc;

use zilla_engine::telemetry::metrics::{
    BindingMetrics, Family, Metric, MetricGroup, MetricKind, Unit,
};
use zilla_engine::{register_metrics, Routes};

pub(crate) use session::{AuthFailure, SessionMetrics};

use crate::codec::reason_name;
use crate::config::TopicValidation;
use crate::limits::Limits;
use crate::options::MqttCondition;
use crate::port::MqttSessions;
use block::{ConnectionBlock, Shape};

/// Upper bounds of the duration histograms, in seconds: from half a
/// millisecond (a broker on the same host) to ten seconds (a connect timeout).
static DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const fn metric(
    name: &'static str,
    kind: MetricKind,
    unit: Unit,
    labels: &'static [&'static str],
    description: &'static str,
) -> Metric {
    Metric {
        name,
        kind,
        unit,
        description,
        labels,
        buckets: if matches!(kind, MetricKind::Histogram) {
            &DURATION_BUCKETS
        } else {
            &[]
        },
    }
}

use MetricKind::{Counter, Gauge, Histogram};
use Unit::{Bytes, Count, Seconds};

/// Every `mqtt.*` metric; the positions are the constants below.
pub(crate) static MQTT_METRICS: [Metric; 20] = [
    metric("mqtt.sessions.active", Gauge, Count, &[],
        "MQTT sessions admitted (CONNACK 0x00 sent) and not yet ended"),
    metric("mqtt.connects", Counter, Count, &["reason_code", "reason"],
        "CONNACKs sent to clients, by reason code (MQTT 5 codes, also for 3.1.1 clients)"),
    metric("mqtt.connect.duration", Histogram, Seconds, &[],
        "Time from a client's complete CONNECT to the CONNACK sent, refusals included"),
    metric("mqtt.authentication.failures", Counter, Count, &["reason"],
        "CONNECTs refused for their credentials: missing, malformed, invalid, unavailable (the guard could not decide), unsupported_method"),
    metric("mqtt.publishes.received", Counter, Count, &["qos"],
        "PUBLISH packets received from clients, by QoS"),
    metric("mqtt.publishes.delivered", Counter, Count, &["qos"],
        "PUBLISH packets delivered to clients, by QoS"),
    metric("mqtt.payload.received", Counter, Bytes, &[],
        "Payload bytes of the PUBLISH packets received from clients"),
    metric("mqtt.payload.delivered", Counter, Bytes, &[],
        "Payload bytes of the PUBLISH packets delivered to clients"),
    metric("mqtt.subscriptions.active", Gauge, Count, &[],
        "Topic filters granted to connected clients on their current connection"),
    metric("mqtt.validation.failures", Counter, Count, &["topic", "model"],
        "Publishes failing the model of a topic in options.topics, by topic filter and model"),
    metric("mqtt.refusals", Counter, Count, &["packet", "reason_code", "reason"],
        "Refusals decided by the proxy after CONNECT: DISCONNECT (session ended), PUBACK/PUBREC (publish refused), PUBLISH (QoS 0 publish dropped), SUBACK (filter refused)"),
    metric("mqtt.upstream.sessions", Counter, Count, &["exit"],
        "Upstream sessions opened on brokers (successful broker CONNACK), by exit"),
    metric("mqtt.upstream.sessions.active", Gauge, Count, &["exit"],
        "Upstream sessions open now, by exit"),
    metric("mqtt.upstream.failures", Counter, Count, &["exit", "reason"],
        "Upstream sessions that failed, by exit: refused (broker CONNACK), unreachable, lost (mid-session), disconnected (broker DISCONNECT)"),
    metric("mqtt.messages.queued", Counter, Count, &["direction"],
        "Publishes that waited for flow control: to_broker (broker receive maximum), to_client (client receive maximum)"),
    metric("mqtt.takeovers", Counter, Count, &[],
        "Sessions ended because a newer connection took over their client id"),
    metric("mqtt.wills.released", Counter, Count, &[],
        "Sessions with a will that ended other than by the client's DISCONNECT, so their brokers publish the will"),
    metric("mqtt.publish.ack.duration", Histogram, Seconds, &["exit"],
        "Time from a QoS 1/2 publish sent to a broker to its PUBACK (QoS 1) or PUBCOMP (QoS 2), by exit"),
    metric("mqtt.limits.hits", Counter, Count, &["key", "limit", "action"],
        "Limits of options.limits hit, by key (as configured) and limit: delayed (a publish waited for tokens) or refused (CONNACK, PUBACK/PUBREC, SUBACK code, QoS 0 dropped, 3.1.1 connection closed)"),
    metric("mqtt.reauthentications", Counter, Count, &["result"],
        "MQTT 5 re-authentications (AUTH 0x19) decided: succeeded (AUTH 0x00 sent) or failed (the session ended: 0x87 or 0x8C)"),
];

register_metrics!(MetricGroup {
    name: "mqtt",
    metrics: &MQTT_METRICS,
});

// Positions in `MQTT_METRICS`.
pub(crate) const SESSIONS_ACTIVE: usize = 0;
pub(crate) const CONNECTS: usize = 1;
pub(crate) const CONNECT_DURATION: usize = 2;
pub(crate) const AUTHENTICATION_FAILURES: usize = 3;
pub(crate) const PUBLISHES_RECEIVED: usize = 4;
pub(crate) const PUBLISHES_DELIVERED: usize = 5;
pub(crate) const PAYLOAD_RECEIVED: usize = 6;
pub(crate) const PAYLOAD_DELIVERED: usize = 7;
pub(crate) const SUBSCRIPTIONS_ACTIVE: usize = 8;
pub(crate) const VALIDATION_FAILURES: usize = 9;
pub(crate) const REFUSALS: usize = 10;
pub(crate) const UPSTREAM_SESSIONS: usize = 11;
pub(crate) const UPSTREAM_SESSIONS_ACTIVE: usize = 12;
pub(crate) const UPSTREAM_FAILURES: usize = 13;
pub(crate) const MESSAGES_QUEUED: usize = 14;
pub(crate) const TAKEOVERS: usize = 15;
pub(crate) const WILLS_RELEASED: usize = 16;
pub(crate) const PUBLISH_ACK_DURATION: usize = 17;
pub(crate) const LIMIT_HITS: usize = 18;
pub(crate) const REAUTHENTICATIONS: usize = 19;

/// The connection blocks of one mqtt server, if it records any `mqtt.*` metric.
pub(crate) type MqttFamily = Option<Arc<Family<ConnectionBlock>>>;

/// The family for an mqtt server with these routes, topics and limits;
/// `None` (nothing counted, nothing allocated) when it records no `mqtt.*`
/// metric.
pub(crate) fn family(
    metrics: &BindingMetrics,
    routes: &Routes<MqttCondition, dyn MqttSessions>,
    topics: &[TopicValidation],
    limits: &Limits,
) -> MqttFamily {
    let mut exits: Vec<Arc<str>> = Vec::new();
    for exit in routes
        .iter()
        .map(|route| &route.exit)
        .chain(routes.default_exit())
    {
        if !exits.contains(&exit.name) {
            exits.push(exit.name.clone());
        }
    }
    let mut validations = Vec::new();
    for topic in topics {
        let models = topic
            .content
            .iter()
            .map(|(model, _)| model)
            .chain(topic.user_properties.iter().map(|(_, model, _)| model));
        for model in models {
            let slot = (topic.filter.clone(), model.clone());
            if !validations.contains(&slot) {
                validations.push(slot);
            }
        }
    }
    let shape = Shape {
        exits,
        validations,
        connect_timing: metrics.records(&MQTT_METRICS[CONNECT_DURATION]),
        ack_timing: metrics.records(&MQTT_METRICS[PUBLISH_ACK_DURATION]),
        subscriptions: metrics.records(&MQTT_METRICS[SUBSCRIPTIONS_ACTIVE]),
        limits: limits.metric_labels(),
    };
    metrics.family::<ConnectionBlock>(&MQTT_METRICS, shape)
}
