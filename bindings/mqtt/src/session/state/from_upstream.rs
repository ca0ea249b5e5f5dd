//! Packets from an upstream: acknowledgements of the client's publishes and
//! subscriptions mapped back to the client's packet ids, and messages for
//! the client delivered within its receive maximum.

use mqtt_bytes_v5::{
    Packet, PubAck, PubAckReason, PubComp, PubRec, PubRecReason, PubRel, PubRelReason, Publish,
    PublishProperties, QoS,
};

use super::{packet_name, Delivery, Inbound, Session, Stage};
use crate::flow::weight;
use crate::session::acks::{Answers, UpstreamAck};
use crate::session::end::End;
use crate::upstream::Origin;

impl Session {
    pub(super) fn on_upstream_packet(&mut self, index: usize, packet: Packet) -> Result<(), End> {
        match packet {
            Packet::Publish(publish) => self.upstream_publish(index, publish),
            Packet::PubAck(ack) => {
                if let Some(client_pkid) = self.upstreams[index].take_publish(ack.pkid) {
                    self.metrics
                        .publish_acknowledged(index, ack.pkid, self.clock);
                    self.inbound.remove(&client_pkid);
                    self.send_client(&Packet::PubAck(PubAck {
                        pkid: client_pkid,
                        ..ack
                    }));
                    self.drain_queue(index)?;
                }
            }
            Packet::PubRec(rec) => {
                let link = &mut self.upstreams[index];
                if let Some(&Origin::Publish(client_pkid)) = link.ids.get(rec.pkid) {
                    let failed = !matches!(
                        rec.reason,
                        PubRecReason::Success | PubRecReason::NoMatchingSubscribers
                    );
                    if failed {
                        link.take_publish(rec.pkid);
                        self.inbound.remove(&client_pkid);
                    } else if matches!(
                        self.inbound.get(&client_pkid),
                        Some(&Inbound::Sent(i, q) | &Inbound::Resumed(i, q))
                            if (i, q) == (index, rec.pkid)
                    ) {
                        // Released at once: the broker's window frees at its
                        // PUBCOMP, whatever the client does with its PUBREL
                        // (which may wait behind publishes the proxy cannot
                        // read yet). The client still gets PUBCOMP only after
                        // both its PUBREL and the broker's PUBCOMP.
                        link.send(&Packet::PubRel(PubRel {
                            pkid: rec.pkid,
                            reason: PubRelReason::Success,
                            properties: None,
                        }));
                        self.inbound
                            .insert(client_pkid, Inbound::Released(index, rec.pkid));
                    }
                    self.send_client(&Packet::PubRec(PubRec {
                        pkid: client_pkid,
                        ..rec
                    }));
                    if failed {
                        self.drain_queue(index)?;
                    }
                }
            }
            Packet::PubComp(comp) => {
                if let Some(client_pkid) = self.upstreams[index].take_publish(comp.pkid) {
                    self.metrics
                        .publish_acknowledged(index, comp.pkid, self.clock);
                    match self.inbound.get(&client_pkid) {
                        // The client's PUBREL is still to come.
                        Some(Inbound::Released(..)) => {
                            self.inbound
                                .insert(client_pkid, Inbound::Completed(comp.reason));
                        }
                        _ => {
                            self.inbound.remove(&client_pkid);
                            self.send_client(&Packet::PubComp(PubComp {
                                pkid: client_pkid,
                                ..comp
                            }));
                        }
                    }
                    self.drain_queue(index)?;
                }
            }
            Packet::PubRel(rel) => self.upstream_release(index, rel),
            Packet::SubAck(ack) => {
                let (reason_string, user_properties) = ack
                    .properties
                    .map(|p| (p.reason_string, p.user_properties))
                    .unwrap_or_default();
                let answer = UpstreamAck {
                    codes: Answers::Subscribe(ack.return_codes),
                    reason_string,
                    user_properties,
                };
                self.upstream_ack(index, ack.pkid, answer);
            }
            Packet::UnsubAck(ack) => {
                let (reason_string, user_properties) = ack
                    .properties
                    .map(|p| (p.reason_string, p.user_properties))
                    .unwrap_or_default();
                let answer = UpstreamAck {
                    codes: Answers::Unsubscribe(ack.reasons),
                    reason_string,
                    user_properties,
                };
                self.upstream_ack(index, ack.pkid, answer);
            }
            Packet::PingResp(_) => self.upstreams[index].pong(),
            Packet::Disconnect(disconnect) => {
                return Err(End::UpstreamDisconnected(index, Box::new(disconnect)))
            }
            other => {
                return Err(End::UpstreamLost(
                    index,
                    format!("unexpected packet from the broker: {}", packet_name(&other)),
                ))
            }
        }
        Ok(())
    }

    /// Takes upstream `index`'s SUBACK or UNSUBACK for our request `pkid`
    /// into the client's pending acknowledgement. An acknowledgement of the
    /// wrong kind leaves the request pending.
    fn upstream_ack(&mut self, index: usize, pkid: u16, answer: UpstreamAck) {
        let subscribe = matches!(answer.codes, Answers::Subscribe(_));
        let taken = self.upstreams[index]
            .ids
            .take_if(pkid, |origin| match origin {
                Origin::Subscribe(p) if subscribe => Some(Some(*p)),
                Origin::Unsubscribe(p) if !subscribe => Some(Some(*p)),
                Origin::Revoked if !subscribe => Some(None),
                _ => None,
            });
        let Some(Some(client_pkid)) = taken else {
            return;
        };
        if let Some(pending) = self.pending_acks.get_mut(&client_pkid) {
            pending.answer(index, pkid, answer);
        }
        self.complete_ack(client_pkid);
    }

    pub(super) fn upstream_publish(&mut self, index: usize, publish: Publish) {
        if publish.qos == QoS::AtMostOnce {
            self.send_delivery(publish);
            return;
        }
        if let Some(&client_pkid) = self.delivering.get(&(index, publish.pkid)) {
            self.upstream_resent(index, client_pkid, publish);
            return;
        }
        if publish.dup && self.is_waiting(index, publish.pkid) {
            // Resent while the first copy waits for the client's window:
            // that copy answers it.
            return;
        }
        self.waiting_bytes += weight(&publish);
        self.waiting.push_back((index, publish));
        self.deliver_waiting();
        if !self.waiting.is_empty() {
            // Still waiting (it is last in line): the client's window is full.
            self.metrics.queued_to_client();
        }
    }

    /// Sends a message to the client, under a topic alias where the client
    /// allows them and the server assigns them; false when it is larger than
    /// the client accepts and was dropped.
    #[inline]
    pub(super) fn send_delivery(&mut self, mut publish: Publish) -> bool {
        let mut assigned = None;
        if self.limits.client_topic_aliases > 0 {
            let alias = match self.outgoing_aliases.get(&publish.topic) {
                Some(&alias) => {
                    publish.topic.clear();
                    Some(alias)
                }
                None if self.outgoing_aliases.len() < self.limits.client_topic_aliases => {
                    let alias = self.outgoing_aliases.len() as u16 + 1;
                    assigned = Some(publish.topic.clone());
                    Some(alias)
                }
                // Every alias is taken: the topic goes in full.
                None => None,
            };
            if let Some(alias) = alias {
                publish
                    .properties
                    .get_or_insert_with(PublishProperties::default)
                    .topic_alias = Some(alias);
            }
        }
        let (qos, bytes) = (publish.qos, publish.payload.len());
        let sent = self.send_client_publish(publish);
        if sent {
            self.metrics.publish_delivered(qos, bytes);
        }
        // The client learns an alias only from a packet it gets.
        if let (true, Some(topic)) = (sent, assigned) {
            let alias = self.outgoing_aliases.len() as u16 + 1;
            self.outgoing_aliases.insert(topic, alias);
        }
        sent
    }

    /// Sends waiting messages while the client's receive maximum allows.
    pub(super) fn deliver_waiting(&mut self) {
        while self.outbound.len() < self.limits.client_receive_maximum {
            let Some((index, mut publish)) = self.waiting.pop_front() else {
                return;
            };
            let Some(client_pkid) = self.outbound.next_free() else {
                self.waiting.push_front((index, publish));
                return;
            };
            self.waiting_bytes -= weight(&publish);
            let upstream_pkid = publish.pkid;
            publish.pkid = client_pkid;
            let qos = publish.qos;
            if self.send_delivery(publish) {
                let delivery = Delivery {
                    upstream: index,
                    pkid: upstream_pkid,
                    stage: Stage::Sent,
                };
                self.outbound.insert(client_pkid, delivery);
                self.delivering.insert((index, upstream_pkid), client_pkid);
            } else {
                // Larger than the client accepts: MQTT says drop it; the broker
                // is told it was handled so it does not resend forever.
                let link = &mut self.upstreams[index];
                match qos {
                    QoS::AtLeastOnce => link.send(&Packet::PubAck(PubAck {
                        pkid: upstream_pkid,
                        reason: PubAckReason::Success,
                        properties: None,
                    })),
                    _ => link.send(&Packet::PubRec(PubRec {
                        pkid: upstream_pkid,
                        reason: PubRecReason::UnspecifiedError,
                        properties: None,
                    })),
                }
            }
        }
    }
}
