//! The session's side of `options.limits`: publishes charged to their
//! rates (held while tokens are due, refused once the pause budget is used
//! up), topics checked against the session's topic limits, subscriptions
//! against its quota; every hit counted and logged (rate-limited).
//!
//! What each client version is told:
//! - a publish over a rate: held first (reading from the client paused);
//!   then an MQTT 5 client gets PUBACK/PUBREC 0x97 (0x96, Message rate too
//!   high, exists only in DISCONNECT) with a reason string, and its QoS 0
//!   publish is dropped; a 3.1.1 client, which has no negative PUBACK, loses
//!   its connection (counted as DISCONNECT 0x96);
//! - a topic beyond the topic limits: PUBACK/PUBREC 0x90, or DISCONNECT
//!   0x90 at QoS 0 (3.1.1: the connection closes), as a topic no route
//!   could take; a filter beyond them: SUBACK 0x8F (3.1.1: 0x80);
//! - a filter beyond the subscriptions quota: SUBACK 0x97 (3.1.1: 0x80).

use std::time::Instant;

use mqtt_bytes_v5::{
    DisconnectReasonCode, Packet, PubAckProperties, PubRecProperties, Publish, QoS,
};
use zilla_engine::telemetry::text;

use super::Session;
use crate::codec::Version;
use crate::limits::{suppressed_note, Action, Lack, Lacking, LimitKind, OnLack};
use crate::session::acks::{refuse_publish, PublishRefusal};
use crate::session::end::End;

impl Session {
    /// Whether a publish waits for a limit's tokens (reading paused).
    pub(super) fn holds_publish(&self) -> bool {
        (self.limited.as_ref()).is_some_and(|limits| limits.throttle.is_holding())
    }

    /// When the publish waiting for tokens is to be tried again.
    pub(super) fn limits_deadline(&self) -> Option<Instant> {
        self.limited.as_ref()?.throttle.deadline()
    }

    /// Charges `publish` to its rates at the session's clock: `Some` to go
    /// on with, `None` when it waits for its tokens or was refused.
    #[inline]
    pub(super) fn charge_publish(&mut self, publish: Publish) -> Result<Option<Publish>, End> {
        let Some(limits) = self.limited.as_mut() else {
            return Ok(Some(publish));
        };
        let now = self.clock;
        let payload = publish.payload.len() as u64;
        match limits.take_publish(&self.config.limits, payload, now) {
            Ok(()) => Ok(Some(publish)),
            Err(lacking) => self.over_rate(publish, lacking, now, true).map(|()| None),
        }
    }

    /// Tries the publish waiting for tokens again, when it is due at `now`.
    pub(super) fn retry_held(&mut self, now: Instant) -> Result<(), End> {
        let Some(limits) = self.limited.as_mut() else {
            return Ok(());
        };
        if limits.throttle.deadline().is_none_or(|due| now < due) {
            return Ok(());
        }
        let Some(publish) = limits.throttle.take_held(now) else {
            return Ok(());
        };
        let payload = publish.payload.len() as u64;
        match limits.take_publish(&self.config.limits, payload, now) {
            Ok(()) => self.admitted_publish(publish),
            Err(lacking) => self.over_rate(publish, lacking, now, false),
        }
    }

    /// A publish without its tokens: held while the pause budget lasts,
    /// else refused. A retry (`fresh` false) is not another hit.
    fn over_rate(
        &mut self,
        publish: Publish,
        lacking: Lacking,
        now: Instant,
        fresh: bool,
    ) -> Result<(), End> {
        let Some(limits) = self.limited.as_mut() else {
            return Ok(());
        };
        let until = match lacking.lack {
            Lack::Never => return self.refuse_publish_over(publish, lacking, now, true),
            Lack::Until(until) => until,
        };
        match limits.throttle.on_lack(now) {
            OnLack::Hold => {
                limits.throttle.hold(publish, until, now);
                if fresh {
                    self.limit_hit(
                        lacking.rule,
                        lacking.kind,
                        Action::Delayed,
                        now,
                        "reading from the client paused until tokens are due",
                    );
                }
                Ok(())
            }
            OnLack::Refuse => self.refuse_publish_over(publish, lacking, now, false),
        }
    }

    /// Refuses a publish over a rate (or, `never`, larger than a bytes
    /// burst): PUBACK/PUBREC 0x97, QoS 0 dropped; 3.1.1: connection closed.
    fn refuse_publish_over(
        &mut self,
        publish: Publish,
        lacking: Lacking,
        now: Instant,
        never: bool,
    ) -> Result<(), End> {
        let consequence = match (self.version, publish.qos) {
            (Version::V4, _) => "connection closed (MQTT 3.1.1 has no negative PUBACK)",
            (_, QoS::AtMostOnce) => "QoS 0 publish dropped",
            (_, QoS::AtLeastOnce) => "PUBACK 0x97 quota exceeded",
            (_, QoS::ExactlyOnce) => "PUBREC 0x97 quota exceeded",
        };
        let why = self.limit_hit(
            lacking.rule,
            lacking.kind,
            Action::Refused,
            now,
            consequence,
        );
        let why = if never {
            format!("payload larger than the burst of the {why}")
        } else {
            why
        };
        if self.version == Version::V4 {
            let code = if never {
                DisconnectReasonCode::QuotaExceeded
            } else {
                DisconnectReasonCode::MessageRateTooHigh
            };
            return Err(End::Refuse(
                code,
                format!("publish to {}: {why}", text(&publish.topic)),
            ));
        }
        self.refuse_with_reason(&publish, PublishRefusal::QuotaExceeded, why);
        Ok(())
    }

    /// Answers a publish whose topic is beyond the session's topic limits;
    /// `None` when it is within them.
    pub(super) fn topic_over_limit(&mut self, publish: &Publish) -> Option<Result<(), End>> {
        let (rule, kind) = self.config.limits.topic_hit(&publish.topic, false)?;
        let answerable = self.version == Version::V5 && publish.qos != QoS::AtMostOnce;
        let consequence = match (answerable, publish.qos) {
            (false, _) if self.version == Version::V4 => "connection closed",
            (false, _) => "DISCONNECT 0x90 topic name invalid",
            (true, QoS::ExactlyOnce) => "PUBREC 0x90 topic name invalid",
            (true, _) => "PUBACK 0x90 topic name invalid",
        };
        let why = self.limit_hit(rule, kind, Action::Refused, self.clock, consequence);
        if !answerable {
            return Some(Err(End::Refuse(
                DisconnectReasonCode::TopicNameInvalid,
                format!("publish to {}: {why}", text(&publish.topic)),
            )));
        }
        self.refuse_with_reason(publish, PublishRefusal::TopicNameInvalid, why);
        Some(Ok(()))
    }

    /// Whether a SUBSCRIBE filter is within the session's topic limits
    /// (else it gets SUBACK 0x8F, logged here).
    pub(super) fn filter_within_limits(&mut self, filter: &str) -> bool {
        let Some((rule, kind)) = self.config.limits.topic_hit(filter, true) else {
            return true;
        };
        let consequence = "SUBACK 0x8F topic filter invalid";
        self.limit_hit(rule, kind, Action::Refused, self.clock, consequence);
        false
    }

    /// Whether `filter`, at `position` in SUBSCRIBE `pkid`, fits the
    /// session's subscriptions (else it gets SUBACK 0x97, logged here).
    pub(super) fn subscription_fits(&mut self, pkid: u16, position: usize, filter: &str) -> bool {
        let Some(quota) = (self.limited.as_mut()).and_then(|l| l.subscriptions.as_mut()) else {
            return true;
        };
        if quota.admit(pkid, position, filter) {
            return true;
        }
        if let Some(rule) = self.config.limits.session_rule() {
            let now = self.clock;
            self.limit_hit(
                rule,
                LimitKind::Subscriptions,
                Action::Refused,
                now,
                "SUBACK 0x97 quota exceeded",
            );
        }
        false
    }

    /// Counts a hit of `kind` of `rule`, logs it (at most once per key
    /// value, limit and action per interval) with its `consequence`, and
    /// returns what was hit, for the client's reason string.
    fn limit_hit(
        &mut self,
        rule: usize,
        kind: LimitKind,
        action: Action,
        now: Instant,
        consequence: &str,
    ) -> String {
        let Some(limits) = self.limited.as_mut() else {
            return String::new();
        };
        let hit = limits.hit(&self.config.limits, rule, kind, action, now);
        self.metrics.limit_hit(hit.slot, action);
        let verb = match action {
            Action::Delayed => "reached",
            Action::Refused => "exceeded",
        };
        if let Some(suppressed) = hit.log {
            let message = format!(
                "client {} id {}: {} {verb}; {consequence}{}",
                self.peer,
                text(&self.client_id),
                hit.why,
                suppressed_note(suppressed)
            );
            // A delay is flow control at work; a refusal is what the client
            // (or its operator) must act on.
            match action {
                Action::Delayed => self.config.events.info("MQTT_LIMIT_HIT", message),
                Action::Refused => self.config.events.warn("MQTT_LIMIT_HIT", message),
            }
        }
        format!("{} {verb}", hit.why)
    }

    /// Refuses a publish with `refusal`'s code and `why` as its reason string.
    fn refuse_with_reason(&mut self, publish: &Publish, refusal: PublishRefusal, why: String) {
        self.metrics.publish_refused(publish.qos, refusal);
        let answer = match refuse_publish(publish.qos, publish.pkid, refusal) {
            Some(Packet::PubAck(mut ack)) => {
                ack.properties = Some(PubAckProperties {
                    reason_string: Some(why),
                    user_properties: Vec::new(),
                });
                Packet::PubAck(ack)
            }
            Some(Packet::PubRec(mut rec)) => {
                rec.properties = Some(PubRecProperties {
                    reason_string: Some(why),
                    user_properties: Vec::new(),
                });
                Packet::PubRec(rec)
            }
            _ => return,
        };
        self.send_client(&answer);
    }
}
