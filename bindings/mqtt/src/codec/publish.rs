//! The PUBLISH fast path: the common PUBLISH (an ASCII topic, no
//! properties) decoded and encoded without the codec crates.
//!
//! Nearly every packet through the proxy is such a PUBLISH, and each one is
//! decoded on one side and encoded on the other, twice per message (the
//! publisher's session and the subscriber's). Through the codec crates that
//! costs a second framing, a walk of the conformance rules, a packet
//! dispatch and moves of the whole 392-byte `Packet`, and on 3.1.1 a
//! translation that copies the topic into a new `String` on every write.
//! Here a PUBLISH whose every check passes in one look (topic ASCII, no
//! U+0000 or wildcard, not empty; packet id not 0; property length 0 in
//! MQTT 5) becomes the same `Publish` the crates would make, and a `Publish`
//! without properties is written straight into the output buffer. Anything
//! else returns `None` with nothing consumed or written, and the full path
//! decodes, checks or refuses it as before, with its precise reason.

use bytes::{Buf, BufMut, BytesMut};
use mqtt_bytes_v5::{Publish, QoS};

use super::{CodecError, FixedHeader, Version, DUP, QOS_BITS, RETAIN};
use crate::topic;

/// The largest Remaining Length MQTT can encode (four bytes of 7 bits).
const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Where the parts of a fast-path PUBLISH are in its frame (offsets from
/// the frame's first byte), and what its fixed header says: enough to route
/// it and forward the frame itself, without decoding it into a `Publish`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublishView {
    pub(crate) qos: QoS,
    pub(crate) dup: bool,
    pub(crate) retain: bool,
    /// The topic: ASCII, not empty, without U+0000 or a wildcard.
    pub(crate) topic: std::ops::Range<usize>,
    /// The packet id (0 for QoS 0) and where its two bytes are.
    pub(crate) pkid: u16,
    pub(crate) pkid_at: usize,
    /// Where the payload starts; it runs to the end of the frame.
    pub(crate) payload_at: usize,
    /// The whole frame's length.
    pub(crate) size: usize,
}

impl PublishView {
    /// The payload's length.
    pub(crate) fn payload_len(&self) -> usize {
        self.size - self.payload_at
    }
}

/// The complete PUBLISH framed by `header` at the start of `buf`, when it
/// takes the fast path: every check the conformance walk and the decoder
/// apply to a PUBLISH has passed (the fixed header's flags and size were
/// checked as it was framed), and nothing is consumed.
// Inlined into the lanes and runs: the view's fields stay in registers.
#[inline(always)]
pub(crate) fn view(buf: &[u8], header: &FixedHeader, version: Version) -> Option<PublishView> {
    let size = header.header_len + header.remaining_len;
    let body = buf.get(header.header_len..size)?;
    let qos = match (header.byte1 & QOS_BITS) >> 1 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        _ => return None,
    };
    let topic_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let mut at = 2 + topic_len;
    let topic = body.get(2..at)?;
    // ASCII holds no non-character, so the string rules reduce to these.
    if !topic::is_plain_ascii_name(topic) {
        return None;
    }
    let pkid_at = at;
    let pkid = match qos {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce | QoS::ExactlyOnce => {
            let pkid = u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]);
            at += 2;
            if pkid == 0 {
                return None;
            }
            pkid
        }
    };
    if version == Version::V5 {
        if *body.get(at)? != 0 {
            return None;
        }
        at += 1;
    }
    let start = header.header_len;
    Some(PublishView {
        qos,
        dup: header.byte1 & DUP != 0,
        retain: header.byte1 & RETAIN != 0,
        topic: start + 2..start + 2 + topic_len,
        pkid,
        pkid_at: start + pkid_at,
        payload_at: start + at,
        size,
    })
}

/// The complete PUBLISH at the start of `buf`, decoded when it takes the
/// fast path ([`view`]). A `Some` has passed every rule the conformance
/// walk and the decoder's checks apply to a PUBLISH, so a client's PUBLISH
/// that gets one needs neither.
pub(super) fn decode(
    buf: &mut BytesMut,
    header: &FixedHeader,
    version: Version,
) -> Option<Publish> {
    let view = view(buf, header, version)?;
    // Checked in the new allocation, which is word-aligned, so the UTF-8
    // check takes its word-at-a-time ASCII path (byte by byte in place:
    // about 130 instructions for a 33-byte topic).
    let topic = String::from_utf8(buf[view.topic.clone()].to_vec()).ok()?;
    let mut packet = buf.split_to(view.size);
    packet.advance(view.payload_at);
    Some(Publish {
        dup: view.dup,
        qos: view.qos,
        retain: view.retain,
        topic,
        pkid: view.pkid,
        payload: packet.freeze(),
        properties: None,
    })
}

/// Writes the fast-path PUBLISH `frame` (seen as `view`, in `from`'s
/// version) under packet id `pkid` for a peer speaking `to`: the frame as it
/// came, its two packet-id bytes replaced; between MQTT 3.1.1 and MQTT 5
/// also its empty property length added or dropped and its remaining length
/// written anew, which is exactly what decoding it and encoding the
/// `Publish` for `to` would write.
pub(crate) fn write_frame(
    frame: &[u8],
    view: &PublishView,
    pkid: u16,
    (from, to): (Version, Version),
    out: &mut BytesMut,
) {
    super::first_room(out);
    let start = out.len();
    let pkid_at = if from == to {
        out.extend_from_slice(&frame[..view.size]);
        start + view.pkid_at
    } else {
        let header_len = view.topic.start - 2;
        let ids_end = ids_end(view);
        let remaining =
            (ids_end - header_len) + usize::from(to == Version::V5) + view.payload_len();
        out.reserve(view.size + 1);
        out.put_u8(frame[0]);
        put_remaining_length(out, remaining);
        let body_at = out.len();
        out.extend_from_slice(&frame[header_len..ids_end]);
        if to == Version::V5 {
            out.put_u8(0);
        }
        out.extend_from_slice(&frame[view.payload_at..view.size]);
        body_at + (view.pkid_at - header_len)
    };
    if view.qos != QoS::AtMostOnce {
        out[pkid_at..pkid_at + 2].copy_from_slice(&pkid.to_be_bytes());
    }
}

/// Where the topic and packet id of the PUBLISH seen as `view` end (where
/// MQTT 5's property length is).
fn ids_end(view: &PublishView) -> usize {
    view.topic.end + if view.qos == QoS::AtMostOnce { 0 } else { 2 }
}

/// The remaining length, in the fewest bytes (1.5.5).
fn put_remaining_length(out: &mut BytesMut, mut length: usize) {
    loop {
        let byte = (length % 128) as u8;
        length /= 128;
        if length == 0 {
            out.put_u8(byte);
            return;
        }
        out.put_u8(byte | 0x80);
    }
}

impl PublishView {
    /// The PUBLISH's size written for a peer of `to`'s version
    /// ([`write_frame`]); `None` when MQTT cannot encode it (a 3.1.1
    /// PUBLISH of the largest size has no room for MQTT 5's property length).
    #[inline]
    pub(crate) fn size_as(&self, from: Version, to: Version) -> Option<usize> {
        if from == to {
            return Some(self.size);
        }
        let header_len = self.topic.start - 2;
        let remaining =
            (ids_end(self) - header_len) + usize::from(to == Version::V5) + self.payload_len();
        (remaining <= MAX_REMAINING_LENGTH).then(|| remaining + 1 + remaining_length_len(remaining))
    }
}

/// How many bytes the remaining length `length` takes.
fn remaining_length_len(length: usize) -> usize {
    match length {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes `publish` when it has no properties, exactly as the codec crates
/// would for `version`; `None` (nothing written) otherwise.
pub(super) fn write_bare(
    publish: &Publish,
    version: Version,
    out: &mut BytesMut,
) -> Option<Result<(), CodecError>> {
    if publish.properties.is_some() {
        return None;
    }
    let with_id = publish.qos != QoS::AtMostOnce;
    if with_id && publish.pkid == 0 {
        return Some(Err(CodecError::unencodable(
            "PUBLISH QoS > 0 with packet id 0",
        )));
    }
    let topic = publish.topic.as_bytes();
    let Ok(topic_len) = u16::try_from(topic.len()) else {
        return Some(Err(CodecError::unencodable(
            "topic longer than 65,535 bytes",
        )));
    };
    let remaining = 2
        + topic.len()
        + if with_id { 2 } else { 0 }
        + usize::from(version == Version::V5)
        + publish.payload.len();
    if remaining > MAX_REMAINING_LENGTH {
        return Some(Err(CodecError::unencodable(
            "PUBLISH larger than MQTT allows",
        )));
    }
    out.reserve(5 + remaining);
    let flags = u8::from(publish.dup) << 3 | (publish.qos as u8) << 1 | u8::from(publish.retain);
    out.put_u8(0x30 | flags);
    put_remaining_length(out, remaining);
    out.put_u16(topic_len);
    out.put_slice(topic);
    if with_id {
        out.put_u16(publish.pkid);
    }
    if version == Version::V5 {
        out.put_u8(0);
    }
    out.put_slice(&publish.payload);
    Some(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::super::{conformance, fixed_header, from_v4, to_v4, validate, write_v4};
    use super::*;
    use mqtt_bytes_v5::Packet;
    use rumqttc::mqttbytes::v4;

    /// Every PUBLISH the tests build: each flag combination, topics good and
    /// bad, packet ids, property blocks, payloads, and every truncation.
    fn wires(version: Version) -> Vec<BytesMut> {
        let topics: [&[u8]; 7] = [
            b"",
            b"a/b",
            b"sensors/building-7/floor-3/room-12/temperature",
            "caf\u{e9}/\u{1f600}".as_bytes(),
            b"a\xff",
            b"a+\0",
            b"a/#",
        ];
        let ids: [&[u8]; 3] = [&[0, 0], &[0, 7], &[0xff, 0xff]];
        let properties: &[&[u8]] = match version {
            Version::V5 => &[&[], &[0], &[0x80, 0], &[2, 0x23, 0], &[5, 0x02, 0, 0, 0, 9]],
            Version::V4 => &[&[]],
        };
        let mut wires = Vec::new();
        for flags in 0..16u8 {
            for topic in topics {
                for id in ids {
                    for props in properties {
                        for payload in [&b""[..], b"x", &[7; 70]] {
                            let mut body = Vec::new();
                            body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
                            body.extend_from_slice(topic);
                            if flags & QOS_BITS != 0 {
                                body.extend_from_slice(id);
                            }
                            body.extend_from_slice(props);
                            body.extend_from_slice(payload);
                            for cut in 0..=body.len() {
                                let mut wire = BytesMut::new();
                                wire.extend_from_slice(&[0x30 | flags]);
                                wire.extend_from_slice(&[u8::try_from(cut).unwrap()]);
                                wire.extend_from_slice(&body[..cut]);
                                wire.extend_from_slice(b"next");
                                wires.push(wire);
                            }
                        }
                    }
                }
            }
        }
        wires
    }

    /// The crates' decoding of `wire`, as the full path makes it.
    fn theirs(wire: &mut BytesMut, version: Version) -> Option<Packet> {
        match version {
            Version::V5 => Packet::read(wire, None).ok(),
            Version::V4 => v4::read(wire, usize::MAX).ok().map(from_v4),
        }
    }

    /// The fast path decodes exactly what the codec crates decode, takes
    /// only packets that pass the conformance walk and the decoder's checks
    /// (so a client's PUBLISH may skip both), and leaves everything else
    /// untouched to them.
    #[test]
    fn decode_agrees_with_the_codec_crates_and_the_conformance_walk() {
        for version in [Version::V5, Version::V4] {
            let (mut fast, mut fallback) = (0, 0);
            for wire in wires(version) {
                let header = fixed_header(&wire).unwrap().unwrap();
                let size = header.header_len + header.remaining_len;
                let mut ours = wire.clone();
                let mut crates = wire.clone();
                let expected = theirs(&mut crates, version);
                match decode(&mut ours, &header, version).map(Packet::Publish) {
                    Some(packet) => {
                        fast += 1;
                        assert_eq!(Some(&packet), expected.as_ref(), "{wire:?}");
                        assert_eq!(ours, crates, "{wire:?}");
                        assert_eq!(
                            conformance::check(&wire[..size], header.header_len, version),
                            Ok(()),
                            "{wire:?}"
                        );
                        assert_eq!(validate(&packet, version), Ok(()), "{wire:?}");
                    }
                    None => {
                        fallback += 1;
                        assert_eq!(ours, wire, "{wire:?}");
                    }
                }
            }
            assert!(
                fast > 500 && fallback > 500,
                "{version:?}: {fast} {fallback}"
            );
        }
    }

    /// What the fast path writes is byte for byte what the crates write,
    /// for every PUBLISH it decodes and every one the crates decode.
    #[test]
    fn write_agrees_with_the_codec_crates() {
        for version in [Version::V5, Version::V4] {
            let mut written = 0;
            for mut wire in wires(version) {
                let Some(packet) = theirs(&mut wire, version) else {
                    continue;
                };
                let mut ours = BytesMut::new();
                let mut crates = BytesMut::new();
                let Packet::Publish(publish) = &packet else {
                    unreachable!("a PUBLISH was decoded")
                };
                let result = write_bare(publish, version, &mut ours);
                let expected = match version {
                    Version::V5 => packet.write(&mut crates).map(|_| ()).is_ok(),
                    Version::V4 => write_v4(&to_v4(&packet).unwrap(), &mut crates).is_ok(),
                };
                match result {
                    Some(Ok(())) => {
                        written += 1;
                        assert!(expected, "{packet:?}");
                        assert_eq!(ours, crates, "{packet:?}");
                    }
                    Some(Err(_)) => assert!(!expected && ours.is_empty(), "{packet:?}"),
                    None => assert!(ours.is_empty(), "{packet:?}"),
                }
            }
            assert!(written > 500, "{version:?}: {written}");
        }
    }

    /// The frame as forwarded (packet id patched, and between versions the
    /// property length added or dropped) is byte for byte what decoding it
    /// and writing the `Publish` for the other side writes, for every
    /// PUBLISH the view takes, every packet id and version pairing; its
    /// size is what `size_as` said.
    #[test]
    fn a_forwarded_frame_is_what_decoding_and_writing_would_send() {
        let mut checked = 0;
        for from in [Version::V5, Version::V4] {
            for wire in wires(from) {
                let header = fixed_header(&wire).unwrap().unwrap();
                let Some(view) = view(&wire, &header, from) else {
                    continue;
                };
                let mut decoded = wire.clone();
                let mut publish = decode(&mut decoded, &header, from).expect("the view took it");
                for to in [Version::V5, Version::V4] {
                    for pkid in [1, 0x1234, u16::MAX] {
                        let pkid = if view.qos == QoS::AtMostOnce { 0 } else { pkid };
                        publish.pkid = pkid;
                        let mut expected = BytesMut::new();
                        super::super::write(&Packet::Publish(publish.clone()), to, &mut expected)
                            .unwrap();
                        let mut ours = BytesMut::from(&b"before"[..]);
                        write_frame(&wire, &view, pkid, (from, to), &mut ours);
                        assert_eq!(&ours[6..], &expected[..], "{wire:?} {from:?} -> {to:?}");
                        assert_eq!(view.size_as(from, to), Some(expected.len()));
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 1000, "{checked}");
    }

    /// Lengths where the remaining length takes another byte: 127/128 and
    /// 16,383/16,384 either way, and the largest 3.1.1 PUBLISH, which MQTT 5
    /// cannot carry.
    #[test]
    fn a_forwarded_frame_crosses_remaining_length_boundaries() {
        for payload in [120, 121, 122, 123, 16_376, 16_377, 16_378] {
            for (from, to) in [(Version::V4, Version::V5), (Version::V5, Version::V4)] {
                let publish = Publish::new("a/b", QoS::AtLeastOnce, vec![7; payload], None);
                let mut publish = publish;
                publish.pkid = 3;
                let mut wire = BytesMut::new();
                super::super::write(&Packet::Publish(publish.clone()), from, &mut wire).unwrap();
                let header = fixed_header(&wire).unwrap().unwrap();
                let view = view(&wire, &header, from).unwrap();
                let mut expected = BytesMut::new();
                super::super::write(&Packet::Publish(publish), to, &mut expected).unwrap();
                let mut ours = BytesMut::new();
                write_frame(&wire, &view, 3, (from, to), &mut ours);
                assert_eq!(ours, expected, "{payload} {from:?} -> {to:?}");
                assert_eq!(view.size_as(from, to), Some(expected.len()));
            }
        }
        let largest = PublishView {
            qos: QoS::AtMostOnce,
            dup: false,
            retain: false,
            topic: 5..6,
            pkid: 0,
            pkid_at: 6,
            payload_at: 6,
            size: 5 + MAX_REMAINING_LENGTH,
        };
        assert_eq!(largest.size_as(Version::V4, Version::V5), None);
        assert_eq!(
            largest.size_as(Version::V4, Version::V4),
            Some(largest.size)
        );
    }

    #[test]
    fn write_refuses_what_mqtt_cannot_carry() {
        let publish = |qos, pkid, topic: String| Publish {
            dup: false,
            qos,
            retain: false,
            topic,
            pkid,
            payload: bytes::Bytes::new(),
            properties: None,
        };
        let mut out = BytesMut::new();
        for packet in [
            publish(QoS::AtLeastOnce, 0, "a".into()),
            publish(QoS::AtMostOnce, 0, "a".repeat(70_000)),
        ] {
            assert!(matches!(
                write_bare(&packet, Version::V5, &mut out),
                Some(Err(_))
            ));
            assert!(out.is_empty());
        }
    }
}
