//! The express lane: a PUBLISH forwarded as the frame it came in, with
//! only its packet id changed.
//!
//! Most messages through the proxy need nothing but a new packet id: the
//! PUBLISH has no properties (so no topic alias to resolve or assign, no
//! payload format to check), and the session has no limits or validation
//! that read it. Such a PUBLISH is seen in place ([`codec::view_publish`],
//! which has run every check the full decode and the conformance walk
//! would), routed by its topic as it lies in the read buffer, and copied
//! into the other side's output with its two packet-id bytes patched: no
//! `String` for the topic, no `Publish` moved through the handlers, no
//! re-encoding. Between a 3.1.1 side and an MQTT 5 side the frame is
//! written anew with its empty property length added or dropped, byte for
//! byte what the full path's decode and encode would write
//! (`codec::write_frame`).
//!
//! A client's PUBLISH that must wait for room in its broker's window waits
//! as its frame too, and goes as one when the window opens (`send_frame`).
//! Anything the lane does not take (a resend, a delivery that must wait for
//! the client's window, a packet too large for the other side, no route) is
//! left unconsumed for the full path, which decides exactly as before; so
//! the lane only ever does what the full path would have done, and the
//! tests compare the two on the same input (`session/tests/express.rs`).

use bytes::{Buf, BytesMut};
use mqtt_bytes_v5::{DisconnectReasonCode, QoS};

use super::{Delivery, Inbound, Session, Stage};
use crate::codec::{self, FixedHeader, PublishView};
use crate::session::end::End;
use crate::upstream::Waiting;

impl Session {
    /// Which lanes this session may use, fixed when it starts: client
    /// publishes when no limit or validation reads them, deliveries when no
    /// topic alias is assigned to them.
    pub(super) fn express_lanes(&self) -> (bool, bool) {
        let inbound = self.limited.is_none()
            && self.config.limits.session_rule().is_none()
            && self.config.topics.is_empty();
        (inbound, self.limits.client_topic_aliases == 0)
    }

    /// Forwards the client's PUBLISH framed by `header` at the start of
    /// `buf` to the upstream its topic routes to, when the express lane
    /// takes it; false, with nothing consumed, when the full path must.
    #[inline]
    pub(super) fn express_from_client(&mut self, buf: &mut BytesMut, header: &FixedHeader) -> bool {
        if !self.express_in {
            return false;
        }
        let Some(view) = codec::view_publish(buf, header, self.version) else {
            return false;
        };
        let qos = view.qos;
        if qos > self.limits.maximum_qos || (view.retain && !self.limits.retain_available) {
            return false;
        }
        let Some(index) = self.router.route_publish(&buf[view.topic.clone()]) else {
            return false;
        };
        if qos != QoS::AtMostOnce
            && (self.inbound.get(&view.pkid).is_some()
                || self.inbound.len() >= self.limits.receive_maximum)
        {
            return false;
        }
        let link = &mut self.upstreams[index];
        let versions = (self.version, link.version);
        if (view.size_as(versions.0, versions.1)).is_none_or(|size| size > link.maximum_packet_size)
        {
            return false;
        }
        if !link.can_send(qos) {
            // The broker's window is full (or others wait before it): the
            // frame waits in the queue, as the full path's `Publish` would.
            self.metrics.publish_received(qos, view.payload_len());
            if qos != QoS::AtMostOnce {
                self.inbound.insert(view.pkid, Inbound::Queued(index));
            }
            // What `flow::weight` counts for the same PUBLISH.
            let size = view.topic.len() + view.payload_len() + 8;
            self.publish_bytes += size;
            let frame = buf.split_to(view.size).freeze();
            link.enqueue(Waiting::Frame(frame, view), size);
            self.metrics.queued_to_broker();
            self.count_express();
            return true;
        }
        let upstream_pkid = match qos {
            QoS::AtMostOnce => 0,
            _ => match link.start_publish(view.pkid) {
                Some(pkid) => pkid,
                None => return false,
            },
        };
        codec::write_frame(buf, &view, upstream_pkid, versions, &mut link.out);
        if qos != QoS::AtMostOnce {
            (self.inbound).insert(view.pkid, Inbound::Sent(index, upstream_pkid));
        }
        self.metrics.publish_received(qos, view.payload_len());
        (self.metrics).publish_sent(index, qos, upstream_pkid, self.clock);
        buf.advance(view.size);
        self.count_express();
        true
    }

    /// Sends a frame that waited in upstream `index`'s queue, under a
    /// packet id of that upstream's own (the full path's `send_publish`
    /// for a frame, whose size was checked when it was queued).
    pub(super) fn send_frame(
        &mut self,
        index: usize,
        frame: &[u8],
        view: &PublishView,
    ) -> Result<(), End> {
        let link = &mut self.upstreams[index];
        let pkid = match view.qos {
            QoS::AtMostOnce => 0,
            _ => {
                let Some(pkid) = link.start_publish(view.pkid) else {
                    return Err(End::Refuse(
                        DisconnectReasonCode::QuotaExceeded,
                        "no packet id free".into(),
                    ));
                };
                self.inbound.insert(view.pkid, Inbound::Sent(index, pkid));
                pkid
            }
        };
        (self.metrics).publish_sent(index, view.qos, pkid, self.clock);
        codec::write_frame(
            frame,
            view,
            pkid,
            (self.version, link.version),
            &mut link.out,
        );
        Ok(())
    }

    /// Counts a PUBLISH the lanes took (for the tests).
    #[inline]
    fn count_express(&mut self) {
        #[cfg(test)]
        {
            self.express_taken += 1;
        }
    }

    /// Delivers upstream `index`'s PUBLISH framed by `header` at the start
    /// of `buf` to the client, when the express lane takes it; false, with
    /// nothing consumed, when the full path must.
    #[inline]
    pub(super) fn express_to_client(
        &mut self,
        index: usize,
        buf: &mut BytesMut,
        header: &FixedHeader,
    ) -> bool {
        if !self.express_out {
            return false;
        }
        let versions = (self.upstreams[index].version, self.version);
        let Some(view) = codec::view_publish(buf, header, versions.0) else {
            return false;
        };
        let maximum = self.limits.client_maximum_packet_size;
        if (view.size_as(versions.0, versions.1)).is_none_or(|size| size > maximum) {
            return false;
        }
        let client_pkid = match view.qos {
            QoS::AtMostOnce => 0,
            _ => {
                // A resend, a message that must wait behind others, or a
                // full window: the full path decides.
                if view.dup
                    || !self.waiting.is_empty()
                    || self.delivering.get(&(index, view.pkid)).is_some()
                    || self.outbound.len() >= self.limits.client_receive_maximum
                {
                    return false;
                }
                match self.outbound.next_free() {
                    Some(pkid) => pkid,
                    None => return false,
                }
            }
        };
        codec::write_frame(buf, &view, client_pkid, versions, &mut self.client_out);
        self.metrics.publish_delivered(view.qos, view.payload_len());
        if view.qos != QoS::AtMostOnce {
            let delivery = Delivery {
                upstream: index,
                pkid: view.pkid,
                stage: Stage::Sent,
            };
            self.outbound.insert(client_pkid, delivery);
            self.delivering.insert((index, view.pkid), client_pkid);
        }
        buf.advance(view.size);
        self.count_express();
        true
    }
}
