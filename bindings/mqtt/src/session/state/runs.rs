//! Runs of QoS 0 PUBLISHes: the express lane for many messages at once.
//!
//! A QoS 0 PUBLISH the express lane takes goes out byte for byte as it came
//! (no packet id to patch), so consecutive ones that go the same way are a
//! run of bytes: each is framed and checked as the lane checks it
//! ([`codec::next_frame`], [`codec::view_publish`]) and routed, and the
//! whole run is copied with one copy and consumed with one advance, its
//! messages counted once. Per message that leaves the framing, the view and
//! the route: the copy, the advance and the lane's bookkeeping per message
//! were a third of the proxy's instructions per QoS 0 message.
//!
//! Between a 3.1.1 client and an MQTT 5 broker (the mqtt client binding's
//! default) each frame of a run is written anew as it is seen, its empty
//! property length added or dropped ([`codec::write_frame`]): still one
//! pass, without the full path's decode into a `Publish` and encode.
//!
//! A run stops at the first frame the lane would not forward as a QoS 0
//! PUBLISH to the same place (another packet, QoS 1 or 2, an incomplete or
//! bad frame, another upstream, a packet too large for the other side),
//! which the per-message paths then handle exactly as before; so a run only
//! does what the lane would have done one message at a time.

use bytes::{Buf, BytesMut};
use mqtt_bytes_v5::QoS;

use super::Session;
use crate::codec::{self, PublishView, Version};

/// The first byte of a QoS 0 PUBLISH, its RETAIN bit masked off (DUP and
/// the QoS bits 0).
const QOS0_PUBLISH: u8 = 0x30;
/// The bits of the first byte compared with [`QOS0_PUBLISH`].
const QOS0_PUBLISH_MASK: u8 = 0xFE;

/// How far a run goes and what it holds.
#[derive(Debug, Default, PartialEq, Eq)]
struct Run {
    /// Bytes from the start of the buffer: whole frames.
    end: usize,
    messages: u64,
    payload: u64,
}

/// Whether `buf` starts with what may be a QoS 0 PUBLISH: the cheap test
/// before a run is measured, so other packets pay one comparison.
#[inline]
fn starts_a_run(buf: &[u8]) -> bool {
    buf.first()
        .is_some_and(|&byte1| byte1 & QOS0_PUBLISH_MASK == QOS0_PUBLISH)
}

/// Measures the run of complete QoS 0 PUBLISHes at the start of `buf` that
/// the express lane takes (framed within `max_size`, seen in place) and
/// `accept` lets go the run's way.
#[inline]
fn measure(
    buf: &[u8],
    version: Version,
    max_size: usize,
    mut accept: impl FnMut(&[u8], &PublishView) -> bool,
) -> Run {
    let mut run = Run::default();
    loop {
        let rest = &buf[run.end..];
        if !starts_a_run(rest) {
            return run;
        }
        let Ok(Some(header)) = codec::next_frame(rest, version, max_size) else {
            return run;
        };
        let Some(view) = codec::view_publish(rest, &header, version) else {
            return run;
        };
        if !accept(rest, &view) {
            return run;
        }
        run.end += view.size;
        run.messages += 1;
        run.payload += view.payload_len() as u64;
    }
}

/// Consumes `run` from `buf`, copied whole into `out` when its frames go as
/// they came (one version on both sides; otherwise each was written anew
/// as it was measured).
fn take(run: &Run, buf: &mut BytesMut, out: &mut BytesMut, as_they_came: bool) {
    if as_they_came {
        codec::first_room(out);
        out.extend_from_slice(&buf[..run.end]);
    }
    buf.advance(run.end);
}

impl Session {
    /// Forwards the run of QoS 0 PUBLISHes at the start of `buf` that the
    /// express lane would forward one by one to the same upstream
    /// ([`Session::express_from_client`]), consuming it.
    #[inline]
    pub(super) fn express_run_from_client(&mut self, buf: &mut BytesMut) {
        if !self.express_in || !starts_a_run(buf) {
            return;
        }
        let retain_available = self.limits.retain_available;
        let version = self.version;
        let mut way = None;
        let (router, upstreams) = (&self.router, &mut self.upstreams);
        let run = measure(
            buf,
            version,
            self.limits.server_maximum_packet_size,
            |frame, view| {
                if view.retain && !retain_available {
                    return false;
                }
                let Some(index) = router.route_publish(&frame[view.topic.clone()]) else {
                    return false;
                };
                if *way.get_or_insert(index) != index {
                    return false;
                }
                let link = &mut upstreams[index];
                let versions = (version, link.version);
                let size = view.size_as(versions.0, versions.1);
                if !link.can_send(QoS::AtMostOnce)
                    || size.is_none_or(|size| size > link.maximum_packet_size)
                {
                    return false;
                }
                // Another version: each frame written anew, as it is seen.
                if versions.0 != versions.1 {
                    codec::write_frame(frame, view, 0, versions, &mut link.out);
                }
                true
            },
        );
        let Some(index) = way.filter(|_| run.messages > 0) else {
            return;
        };
        let link = &mut self.upstreams[index];
        take(&run, buf, &mut link.out, link.version == version);
        (self.metrics).publishes_received(QoS::AtMostOnce, run.messages, run.payload);
        self.count_express_run(run.messages);
    }

    /// Delivers the run of QoS 0 PUBLISHes at the start of upstream
    /// `index`'s `buf` that the express lane would deliver one by one
    /// ([`Session::express_to_client`]), consuming it.
    #[inline]
    pub(super) fn express_run_to_client(&mut self, index: usize, buf: &mut BytesMut) {
        if !self.express_out || !starts_a_run(buf) {
            return;
        }
        let versions = (self.upstreams[index].version, self.version);
        let maximum = self.limits.client_maximum_packet_size;
        let client_out = &mut self.client_out;
        let run = measure(buf, versions.0, usize::MAX, |frame, view| {
            let size = view.size_as(versions.0, versions.1);
            if size.is_none_or(|size| size > maximum) {
                return false;
            }
            if versions.0 != versions.1 {
                codec::write_frame(frame, view, 0, versions, client_out);
            }
            true
        });
        if run.messages == 0 {
            return;
        }
        take(&run, buf, &mut self.client_out, versions.0 == versions.1);
        (self.metrics).publishes_delivered(QoS::AtMostOnce, run.messages, run.payload);
        self.count_express_run(run.messages);
    }

    /// Counts the PUBLISHes a run took (for the tests).
    #[inline]
    fn count_express_run(&mut self, messages: u64) {
        #[cfg(test)]
        {
            self.express_taken += messages as u32;
        }
        #[cfg(not(test))]
        let _ = messages;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(byte1: u8, topic: &str, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![byte1, 0];
        frame.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        frame.extend_from_slice(topic.as_bytes());
        frame.push(0); // no properties (MQTT 5)
        frame.extend_from_slice(payload);
        frame[1] = (frame.len() - 2) as u8;
        frame
    }

    #[test]
    fn a_run_ends_at_the_first_frame_the_lane_would_not_take() {
        let a = publish(0x30, "a/b", b"one");
        let b = publish(0x31, "a/c", b"two");
        let wildcard = publish(0x30, "a/+", b"no");
        let qos1 = [0x32, 0x08, 0, 1, b'a', 0, 7, 0, b'x', b'y'];
        for (tail, what) in [(&wildcard[..], "wildcard"), (&qos1[..], "QoS 1")] {
            let buf = [&a[..], &b[..], tail].concat();
            let run = measure(&buf, Version::V5, usize::MAX, |_, _| true);
            let expected = Run {
                end: a.len() + b.len(),
                messages: 2,
                payload: 6,
            };
            assert_eq!(run, expected, "{what}");
        }
        // An incomplete frame, a frame over the size, a refusal: not taken.
        let buf = [&a[..], &b[..b.len() - 1]].concat();
        assert_eq!(
            measure(&buf, Version::V5, usize::MAX, |_, _| true).messages,
            1
        );
        assert_eq!(
            measure(&buf, Version::V5, a.len() - 1, |_, _| true).messages,
            0
        );
        let buf = [&a[..], &b[..]].concat();
        let mut seen = 0;
        let refused = measure(&buf, Version::V5, usize::MAX, |_, _| {
            seen += 1;
            seen < 2
        });
        assert_eq!(refused.messages, 1);
    }

    #[test]
    fn only_a_qos0_publish_starts_a_run() {
        for byte1 in 0..=255u8 {
            let expected = byte1 == 0x30 || byte1 == 0x31;
            assert_eq!(starts_a_run(&[byte1]), expected, "{byte1:#04X}");
        }
        assert!(!starts_a_run(&[]));
    }
}
