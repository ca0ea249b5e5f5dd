//! Retransmissions on one connection: a PUBLISH or PUBREL sent again with
//! the packet id of a flow still open, by the client or by a broker.
//!
//! MQTT 3.1.1 lets a sender retransmit on the same connection; MQTT 5 tells
//! it not to ([MQTT-4.4.0-1]) but still tells the receiver to answer a
//! duplicate QoS 2 PUBLISH with PUBREC and deliver it once
//! ([MQTT-4.3.3-10]). Old embedded clients with retry timers do it, and so
//! do brokers (EMQX resends unacknowledged deliveries every
//! `retry_interval`, even to 5.0 sessions). So a resend is answered, never
//! delivered a second time while its first copy's flow is open, and never
//! ends the session:
//!
//! - the first copy is still on its way (queued, or sent on this
//!   connection and not yet answered): the answer to that copy answers both;
//!   nothing goes onward again (at QoS 1 forwarding again would be allowed;
//!   not doing it keeps the message once);
//! - the QoS 2 flow is past the receiver's PUBREC: the proxy answers PUBREC
//!   again itself;
//! - the first copy went out on the previous connection of a resumed
//!   session: the receiver may never have had it, so the resend goes onward
//!   with the same packet id, which a QoS 2 receiver recognises.
//!
//! A PUBLISH with the id of an open flow but without DUP is a reused id, not
//! a resend: a protocol error, as before. So is a PUBLISH resent after its
//! PUBREL ([MQTT-4.3.3-6]: the sender may not resend it then).

use mqtt_bytes_v5::{
    DisconnectReasonCode, Packet, PubComp, PubCompReason, PubRec, PubRecReason, PubRel, Publish,
    QoS,
};
use zilla_engine::telemetry::text;

use super::{Inbound, Session, Stage};
use crate::codec::Version;
use crate::session::end::End;

impl Session {
    /// A client PUBLISH with the packet id of its publish in flight as
    /// `inbound` (see the module's documentation).
    pub(super) fn client_resent(
        &mut self,
        mut publish: Publish,
        inbound: Inbound,
    ) -> Result<(), End> {
        let client_pkid = publish.pkid;
        let reused = |why: &str| {
            Err(End::Refuse(
                DisconnectReasonCode::ProtocolError,
                format!("packet id {client_pkid} {why}"),
            ))
        };
        if !publish.dup {
            return reused("reused while in flight (a resend sets DUP)");
        }
        let qos2 = publish.qos == QoS::ExactlyOnce;
        match inbound {
            Inbound::Resumed(index, upstream_pkid) => {
                self.inbound
                    .insert(client_pkid, Inbound::Sent(index, upstream_pkid));
                publish.pkid = upstream_pkid;
                self.upstreams[index].send(&Packet::Publish(publish));
                // A resend after a reconnect is what MQTT 5 asks for: no event.
                return Ok(());
            }
            Inbound::Queued(_) | Inbound::Sent(..) => {}
            Inbound::Released(..) | Inbound::Completed(_) if qos2 => {
                self.send_client(&Packet::PubRec(PubRec {
                    pkid: client_pkid,
                    reason: PubRecReason::Success,
                    properties: None,
                }));
            }
            Inbound::Released(..) | Inbound::Completed(_) => {
                return reused("of a QoS 2 publish reused at QoS 1 while in flight");
            }
            Inbound::AwaitingComp(..) => return reused("resent after its PUBREL"),
        }
        self.log_resend(client_pkid);
        Ok(())
    }

    /// An MQTT 5 client resending on one connection breaks [MQTT-4.4.0-1];
    /// it is answered all the same, and logged once per session so a client
    /// that does it on a timer does not flood the log.
    fn log_resend(&mut self, client_pkid: u16) {
        if self.version != Version::V5 || self.resend_logged {
            return;
        }
        self.resend_logged = true;
        self.config.events.info(
            "MQTT_PUBLISH_RESENT",
            format!(
                "client {} id {}: PUBLISH {client_pkid} resent on the same connection \
                 (MQTT 5 allows that only after a reconnect); answered and delivered once; \
                 further resends of this session are not logged",
                self.peer,
                text(&self.client_id)
            ),
        );
    }

    /// Upstream `index` sent again its delivery that went to the client as
    /// `client_pkid` (see the module's documentation).
    pub(super) fn upstream_resent(&mut self, index: usize, client_pkid: u16, mut publish: Publish) {
        let Some(delivery) = self.outbound.get(client_pkid).copied() else {
            return;
        };
        match delivery.stage {
            Stage::Resumed => {
                self.delivery_reached(client_pkid, Stage::Sent);
                publish.pkid = client_pkid;
                publish.dup = true;
                self.send_delivery(publish);
            }
            // The client's answer to the first copy goes to the broker.
            Stage::Sent => {}
            // The client's PUBREC already went; the broker's resend crossed it.
            Stage::Received | Stage::Released => {
                self.upstreams[index].send(&Packet::PubRec(PubRec {
                    pkid: publish.pkid,
                    reason: PubRecReason::Success,
                    properties: None,
                }));
            }
        }
    }

    /// A PUBREL from upstream `index`: passed to the client once per flow;
    /// one the client cannot know of is completed by the proxy.
    pub(super) fn upstream_release(&mut self, index: usize, rel: PubRel) {
        let Some(&client_pkid) = self.delivering.get(&(index, rel.pkid)) else {
            self.upstreams[index].send(&Packet::PubComp(PubComp {
                pkid: rel.pkid,
                reason: PubCompReason::PacketIdentifierNotFound,
                properties: None,
            }));
            return;
        };
        let released = self
            .outbound
            .get(client_pkid)
            .is_some_and(|delivery| delivery.stage == Stage::Released);
        if released {
            // Resent: the client's PUBCOMP to the first one answers it.
            return;
        }
        self.delivery_reached(client_pkid, Stage::Released);
        self.send_client(&Packet::PubRel(PubRel {
            pkid: client_pkid,
            ..rel
        }));
    }

    /// Moves the delivery `client_pkid` on to `stage`.
    pub(super) fn delivery_reached(&mut self, client_pkid: u16, stage: Stage) {
        if let Some(mut delivery) = self.outbound.get(client_pkid).copied() {
            delivery.stage = stage;
            self.outbound.insert(client_pkid, delivery);
        }
    }

    /// Whether upstream `index`'s QoS 1/2 message `pkid` waits for the
    /// client's window. Looked for only when a broker resends, so the
    /// common path never scans the queue.
    pub(super) fn is_waiting(&self, index: usize, pkid: u16) -> bool {
        self.waiting.iter().any(|(i, waiting)| {
            *i == index && waiting.pkid == pkid && waiting.qos != QoS::AtMostOnce
        })
    }
}
