//! Packets from the client: publishes checked, validated and routed to their
//! upstream with a fresh packet id; acknowledgements of deliveries passed
//! back to the upstream they came from; subscriptions split by route.
//!
//! What no route takes is answered per packet wherever MQTT has an answer
//! for it: a SUBSCRIBE filter gets its own SUBACK failure code (0x87 when
//! another token could have been allowed it, else 0x8F; 0x80 in 3.1.1) and
//! the other filters and the session go on; a QoS 1/2 PUBLISH of a 5.0
//! client gets PUBACK/PUBREC 0x87 or 0x90. Only a publish with no failure
//! answer (QoS 0 in 5.0, any PUBLISH in 3.1.1) that no route could ever
//! take ends the session (0x90; 3.1.1 closes): dropping it silently would
//! hide a configuration gap, and 3.1.1 allows a server that does not take a
//! publish only a positive acknowledgement or a close ([MQTT-3.3.5-2]).

use std::collections::BTreeMap;
use std::time::Duration;

use mqtt_bytes_v5::{
    DisconnectReasonCode, Filter, Packet, PingResp, PubAck, PubComp, PubCompReason, PubRec,
    PubRecReason, PubRel, Publish, QoS, Subscribe, SubscribeReasonCode, UnsubAckReason,
    Unsubscribe,
};
use zilla_engine::telemetry::text;

use super::{packet_name, Delivery, Inbound, Session, Stage};
use crate::codec::Version;
use crate::flow::weight;
use crate::options::{OnInvalid, Operation};
use crate::session::acks::{refuse_publish, Codes, PendingAck, PublishRefusal};
use crate::session::admit::TOPIC_ALIAS_MAXIMUM;
use crate::session::end::End;
use crate::topic;
use crate::upstream::{Origin, Waiting};

impl Session {
    pub(super) fn on_client_packet(&mut self, packet: Packet) -> Result<(), End> {
        match packet {
            Packet::Publish(publish) => self.client_publish(publish),
            Packet::PubAck(ack) => {
                if let Some(Delivery { upstream, pkid, .. }) = self.outbound.remove(ack.pkid) {
                    self.delivering.remove(&(upstream, pkid));
                    self.upstreams[upstream].send(&Packet::PubAck(PubAck { pkid, ..ack }));
                    self.deliver_waiting();
                }
                Ok(())
            }
            Packet::PubRec(rec) => {
                if let Some(&Delivery { upstream, pkid, .. }) = self.outbound.get(rec.pkid) {
                    if rec.reason != PubRecReason::Success
                        && rec.reason != PubRecReason::NoMatchingSubscribers
                    {
                        self.outbound.remove(rec.pkid);
                        self.delivering.remove(&(upstream, pkid));
                        self.deliver_waiting();
                    } else {
                        self.delivery_reached(rec.pkid, Stage::Received);
                    }
                    self.upstreams[upstream].send(&Packet::PubRec(PubRec { pkid, ..rec }));
                }
                Ok(())
            }
            Packet::PubComp(comp) => {
                if let Some(Delivery { upstream, pkid, .. }) = self.outbound.remove(comp.pkid) {
                    self.delivering.remove(&(upstream, pkid));
                    self.upstreams[upstream].send(&Packet::PubComp(PubComp { pkid, ..comp }));
                    self.deliver_waiting();
                }
                Ok(())
            }
            Packet::PubRel(rel) => {
                match self.inbound.get(&rel.pkid).copied() {
                    Some(Inbound::Sent(index, pkid) | Inbound::Resumed(index, pkid)) => {
                        self.upstreams[index].send(&Packet::PubRel(PubRel { pkid, ..rel }));
                    }
                    Some(Inbound::Released(index, pkid)) => {
                        self.inbound
                            .insert(rel.pkid, Inbound::AwaitingComp(index, pkid));
                    }
                    // A PUBREL sent again while the broker's PUBCOMP is
                    // due: that PUBCOMP answers it, once (a second one
                    // could complete a later flow that reused the id).
                    Some(Inbound::AwaitingComp(..)) => {}
                    Some(Inbound::Completed(reason)) => {
                        self.inbound.remove(&rel.pkid);
                        self.send_client(&Packet::PubComp(PubComp {
                            pkid: rel.pkid,
                            reason,
                            properties: None,
                        }));
                    }
                    Some(Inbound::Queued(_)) | None => {
                        self.send_client(&Packet::PubComp(PubComp {
                            pkid: rel.pkid,
                            reason: PubCompReason::PacketIdentifierNotFound,
                            properties: None,
                        }));
                    }
                }
                Ok(())
            }
            Packet::Subscribe(subscribe) => self.client_subscribe(subscribe),
            Packet::Unsubscribe(unsubscribe) => self.client_unsubscribe(unsubscribe),
            Packet::PingReq(_) => {
                self.send_client(&Packet::PingResp(PingResp));
                Ok(())
            }
            Packet::Disconnect(disconnect) => {
                if let Some(seconds) = disconnect
                    .properties
                    .as_ref()
                    .and_then(|p| p.session_expiry_interval)
                {
                    // A session that was to end with the connection cannot be
                    // made to outlive it at DISCONNECT (3.14.2.2.2).
                    if seconds != 0 && self.session_expiry == Some(Duration::ZERO) {
                        return Err(End::Refuse(
                            DisconnectReasonCode::ProtocolError,
                            "a DISCONNECT sets a session expiry after a CONNECT with none".into(),
                        ));
                    }
                    self.session_expiry = match seconds {
                        u32::MAX => None,
                        seconds => Some(Duration::from_secs(u64::from(seconds))),
                    };
                }
                for link in &mut self.upstreams {
                    link.send(&Packet::Disconnect(disconnect.clone()));
                }
                Err(End::ClientDisconnected)
            }
            Packet::Connect(..) => Err(End::Refuse(
                DisconnectReasonCode::ProtocolError,
                "a second CONNECT".into(),
            )),
            other => Err(End::Refuse(
                DisconnectReasonCode::ProtocolError,
                format!("unexpected packet from a client: {}", packet_name(&other)),
            )),
        }
    }

    /// Resolves a topic alias the client uses toward the proxy.
    fn resolve_alias(&mut self, publish: &mut Publish) -> Result<(), End> {
        let Some(alias) = publish
            .properties
            .as_mut()
            .and_then(|properties| properties.topic_alias.take())
        else {
            return Ok(());
        };
        if alias == 0 || alias > TOPIC_ALIAS_MAXIMUM {
            return Err(End::Refuse(
                DisconnectReasonCode::TopicAliasInvalid,
                format!("topic alias {alias} outside 1..={TOPIC_ALIAS_MAXIMUM}"),
            ));
        }
        if publish.topic.is_empty() {
            match self.aliases.get(&alias) {
                Some(topic) => publish.topic = topic.clone(),
                None => {
                    return Err(End::Refuse(
                        DisconnectReasonCode::ProtocolError,
                        format!("topic alias {alias} was never set"),
                    ))
                }
            }
        } else {
            self.aliases.insert(alias, publish.topic.clone());
        }
        Ok(())
    }

    pub(super) fn client_publish(&mut self, mut publish: Publish) -> Result<(), End> {
        self.metrics
            .publish_received(publish.qos, publish.payload.len());
        self.resolve_alias(&mut publish)?;
        if let Some(refused) = self.topic_over_limit(&publish) {
            return refused;
        }
        if publish.qos > self.limits.maximum_qos {
            return Err(End::Refuse(
                DisconnectReasonCode::QoSNotSupported,
                format!(
                    "QoS {} above the maximum {}",
                    publish.qos as u8, self.limits.maximum_qos as u8
                ),
            ));
        }
        if publish.retain && !self.limits.retain_available {
            return Err(End::Refuse(
                DisconnectReasonCode::RetainNotSupported,
                "retain is not available".into(),
            ));
        }
        let utf8_declared = publish
            .properties
            .as_ref()
            .is_some_and(|p| p.payload_format_indicator == Some(1));
        if utf8_declared && std::str::from_utf8(&publish.payload).is_err() {
            return Err(End::Refuse(
                DisconnectReasonCode::PayloadFormatInvalid,
                format!(
                    "payload on {} declared UTF-8 is not UTF-8",
                    text(&publish.topic)
                ),
            ));
        }
        // Rates are charged before anything costly (validation, routing):
        // a publish over its rate waits here, with reading paused.
        match self.charge_publish(publish)? {
            Some(publish) => self.admitted_publish(publish),
            None => Ok(()),
        }
    }

    /// Validates, routes and forwards a publish its rates admitted.
    #[inline]
    pub(super) fn admitted_publish(&mut self, publish: Publish) -> Result<(), End> {
        if let Some(refused) = self.validate(&publish) {
            return refused;
        }
        let Some(index) = self.router.route(Operation::Publish(&publish.topic)) else {
            return self.unroutable_publish(&publish);
        };
        if publish.qos != QoS::AtMostOnce {
            if let Some(&inbound) = self.inbound.get(&publish.pkid) {
                return self.client_resent(publish, inbound);
            }
            // Only what the proxy advertised binds a 5.0 client; a 3.1.1
            // client has no receive maximum and is never refused for it.
            if self.inbound.len() >= self.limits.receive_maximum {
                return Err(End::Refuse(
                    DisconnectReasonCode::ReceiveMaximumExceeded,
                    format!(
                        "more than {} QoS 1/2 publishes in flight",
                        self.limits.receive_maximum
                    ),
                ));
            }
        }
        self.forward(index, publish)
    }

    /// Answers a publish no route takes (see the module's documentation).
    fn unroutable_publish(&mut self, publish: &Publish) -> Result<(), End> {
        let (refusal, why) = if self.router.could_route(Operation::Publish(&publish.topic)) {
            (PublishRefusal::NotAuthorized, "is not authorized")
        } else {
            (PublishRefusal::TopicNameInvalid, "has no route")
        };
        let answerable = self.version == Version::V5 && publish.qos != QoS::AtMostOnce;
        if refusal == PublishRefusal::TopicNameInvalid && !answerable {
            return Err(End::Refuse(
                DisconnectReasonCode::TopicNameInvalid,
                format!("no route for publish to {}", text(&publish.topic)),
            ));
        }
        self.config.events.warn(
            "MQTT_PUBLISH_REJECTED",
            format!(
                "client {} id {}: publish to {} {why}",
                self.peer,
                text(&self.client_id),
                text(&publish.topic)
            ),
        );
        // Not authorized, without a failure answer: QoS 0 is dropped, and a
        // 3.1.1 QoS 1/2 publish gets its positive acknowledgement.
        self.refuse_publish(publish, refusal);
        Ok(())
    }

    /// Sends a client publish to upstream `index`, or queues it there while
    /// the broker's window is full (or earlier publishes wait).
    #[inline]
    fn forward(&mut self, index: usize, publish: Publish) -> Result<(), End> {
        let link = &mut self.upstreams[index];
        if link.can_send(publish.qos) {
            return self.send_publish(index, publish);
        }
        if publish.qos != QoS::AtMostOnce {
            self.inbound.insert(publish.pkid, Inbound::Queued(index));
        }
        let size = weight(&publish);
        self.publish_bytes += size;
        link.enqueue(Waiting::Decoded(publish), size);
        self.metrics.queued_to_broker();
        Ok(())
    }

    /// Sends what upstream `index` queued while its window has room.
    pub(super) fn drain_queue(&mut self, index: usize) -> Result<(), End> {
        while let Some((waiting, size)) = self.upstreams[index].dequeue() {
            self.publish_bytes -= size;
            match waiting {
                Waiting::Decoded(publish) => {
                    if publish.qos != QoS::AtMostOnce {
                        self.inbound.remove(&publish.pkid);
                    }
                    self.send_publish(index, publish)?;
                }
                Waiting::Frame(frame, view) => {
                    if view.qos != QoS::AtMostOnce {
                        self.inbound.remove(&view.pkid);
                    }
                    self.send_frame(index, &frame, &view)?;
                }
            }
        }
        Ok(())
    }

    /// Sends a client publish to upstream `index` under a packet id of
    /// that upstream's own.
    #[inline]
    fn send_publish(&mut self, index: usize, mut publish: Publish) -> Result<(), End> {
        let link = &mut self.upstreams[index];
        if publish.qos != QoS::AtMostOnce {
            let client_pkid = publish.pkid;
            let Some(pkid) = link.start_publish(client_pkid) else {
                return Err(End::Refuse(
                    DisconnectReasonCode::QuotaExceeded,
                    "no packet id free".into(),
                ));
            };
            self.inbound.insert(client_pkid, Inbound::Sent(index, pkid));
            publish.pkid = pkid;
        }
        let (qos, upstream_pkid) = (publish.qos, publish.pkid);
        self.metrics
            .publish_sent(index, qos, upstream_pkid, self.clock);
        if !link.send_publish(publish) {
            // Larger than this broker accepts (after alias expansion or 3.1.1
            // translation): refuse this publish rather than lose the session.
            let name = link.name.clone();
            if let Some(client_pkid) = link.take_publish(upstream_pkid) {
                self.inbound.remove(&client_pkid);
                self.metrics
                    .publish_refused(qos, PublishRefusal::QuotaExceeded);
                if let Some(refused) =
                    refuse_publish(qos, client_pkid, PublishRefusal::QuotaExceeded)
                {
                    self.send_client(&refused);
                }
            }
            self.config.events.warn(
                "MQTT_PUBLISH_REJECTED",
                format!(
                    "client {} id {}: publish larger than upstream {name} accepts",
                    self.peer,
                    text(&self.client_id)
                ),
            );
        }
        Ok(())
    }

    /// Answers a publish the proxy refuses itself (nothing for QoS 0).
    fn refuse_publish(&mut self, publish: &Publish, refusal: PublishRefusal) {
        self.metrics.publish_refused(publish.qos, refusal);
        if let Some(refused) = refuse_publish(publish.qos, publish.pkid, refusal) {
            self.send_client(&refused);
        }
    }

    /// Checks a publish against the first `topics` entry its topic matches;
    /// `Some` when it is refused (and answered) or ends the session.
    fn validate(&mut self, publish: &Publish) -> Option<Result<(), End>> {
        if self.config.topics.is_empty() {
            return None;
        }
        let config = self.config.clone();
        let topic = config
            .topics
            .iter()
            .find(|t| topic::matches(&t.filter, &publish.topic))?;
        let failure = topic.failure(publish)?;
        self.metrics.validation_failed(&topic.filter, failure.model);
        let why = format!("publish to {} {failure}", text(&publish.topic));
        self.config.events.warn(
            "MQTT_VALIDATION_FAILED",
            format!("client {} id {}: {why}", self.peer, text(&self.client_id)),
        );
        Some(match topic.on_invalid {
            OnInvalid::Disconnect => {
                Err(End::Refuse(DisconnectReasonCode::PayloadFormatInvalid, why))
            }
            OnInvalid::Reject => {
                self.refuse_publish(publish, PublishRefusal::PayloadFormatInvalid);
                Ok(())
            }
        })
    }

    fn client_subscribe(&mut self, subscribe: Subscribe) -> Result<(), End> {
        self.metrics.subscribing(subscribe.pkid, &subscribe.filters);
        if let Some(quota) = self.limited.as_mut().and_then(|l| l.subscriptions.as_mut()) {
            quota.subscribe(subscribe.pkid);
        }
        let mut codes = vec![None; subscribe.filters.len()];
        let mut groups: BTreeMap<usize, Vec<(usize, Filter)>> = BTreeMap::new();
        for (position, filter) in subscribe.filters.into_iter().enumerate() {
            if !topic::is_valid_filter(&filter.path) || !self.filter_within_limits(&filter.path) {
                codes[position] = Some(SubscribeReasonCode::TopicFilterInvalid);
                continue;
            }
            match self.router.route(Operation::Subscribe(&filter.path)) {
                Some(_) if !self.subscription_fits(subscribe.pkid, position, &filter.path) => {
                    codes[position] = Some(SubscribeReasonCode::QuotaExceeded);
                }
                Some(index) => {
                    self.subscribed(&filter.path, index);
                    groups.entry(index).or_default().push((position, filter));
                }
                None if self.router.could_route(Operation::Subscribe(&filter.path)) => {
                    self.config.events.warn(
                        "MQTT_SUBSCRIBE_REJECTED",
                        format!(
                            "client {} id {}: subscription to {} is not authorized",
                            self.peer,
                            text(&self.client_id),
                            text(&filter.path)
                        ),
                    );
                    codes[position] = Some(SubscribeReasonCode::NotAuthorized);
                }
                None => {
                    self.config.events.warn(
                        "MQTT_SUBSCRIBE_REJECTED",
                        format!(
                            "client {} id {}: no route for subscription to {}",
                            self.peer,
                            text(&self.client_id),
                            text(&filter.path)
                        ),
                    );
                    codes[position] = Some(SubscribeReasonCode::TopicFilterInvalid);
                }
            }
        }
        self.metrics.subscriptions_refused(&codes);
        let properties = subscribe.properties;
        self.fan_out(
            subscribe.pkid,
            PendingAck::new(Codes::Subscribe(codes)),
            groups,
            Origin::Subscribe,
            |pkid, filters| {
                Packet::Subscribe(Subscribe {
                    pkid,
                    filters,
                    properties: properties.clone(),
                })
            },
        )
    }

    fn client_unsubscribe(&mut self, unsubscribe: Unsubscribe) -> Result<(), End> {
        self.metrics
            .unsubscribing(unsubscribe.pkid, &unsubscribe.filters);
        if let Some(quota) = self.limited.as_mut().and_then(|l| l.subscriptions.as_mut()) {
            let filters = unsubscribe.filters.iter().cloned().enumerate().collect();
            quota.unsubscribe(unsubscribe.pkid, filters);
        }
        let mut codes = vec![None; unsubscribe.filters.len()];
        let mut groups: BTreeMap<usize, Vec<(usize, String)>> = BTreeMap::new();
        for (position, filter) in unsubscribe.filters.into_iter().enumerate() {
            self.unsubscribed(&filter);
            match self.router.route(Operation::Subscribe(&filter)) {
                Some(index) => groups.entry(index).or_default().push((position, filter)),
                // Nothing could have been subscribed there.
                None => codes[position] = Some(UnsubAckReason::NoSubscriptionExisted),
            }
        }
        let properties = unsubscribe.properties;
        self.fan_out(
            unsubscribe.pkid,
            PendingAck::new(Codes::Unsubscribe(codes)),
            groups,
            Origin::Unsubscribe,
            |pkid, filters| {
                Packet::Unsubscribe(Unsubscribe {
                    pkid,
                    filters,
                    properties: properties.clone(),
                })
            },
        )
    }

    /// Sends each upstream its share of a client SUBSCRIBE or UNSUBSCRIBE
    /// (`groups`: upstream index -> (position in the client's list, filter)),
    /// and records what the client's acknowledgement waits for.
    fn fan_out<F>(
        &mut self,
        client_pkid: u16,
        mut pending: PendingAck,
        groups: BTreeMap<usize, Vec<(usize, F)>>,
        origin: fn(u16) -> Origin,
        packet: impl Fn(u16, Vec<F>) -> Packet,
    ) -> Result<(), End> {
        for (index, filters) in groups {
            let Some(pkid) = self.upstreams[index].ids.allocate(origin(client_pkid)) else {
                return Err(End::Refuse(
                    DisconnectReasonCode::QuotaExceeded,
                    "no packet id free".into(),
                ));
            };
            let (positions, filters): (Vec<usize>, Vec<F>) = filters.into_iter().unzip();
            pending.wait_for(index, pkid, positions);
            self.upstreams[index].send(&packet(pkid, filters));
        }
        self.pending_acks.insert(client_pkid, pending);
        self.complete_ack(client_pkid);
        Ok(())
    }

    /// Sends the client its SUBACK/UNSUBACK once every upstream answered.
    pub(super) fn complete_ack(&mut self, pkid: u16) {
        let done = self
            .pending_acks
            .get(&pkid)
            .is_some_and(PendingAck::is_complete);
        if let Some(pending) = done.then(|| self.pending_acks.remove(&pkid)).flatten() {
            let packet = pending.into_packet(pkid);
            self.metrics.acknowledged(pkid, &packet);
            if let Some(quota) = self.limited.as_mut().and_then(|l| l.subscriptions.as_mut()) {
                quota.acknowledged(pkid, &packet);
            }
            self.send_client(&packet);
        }
    }
}
