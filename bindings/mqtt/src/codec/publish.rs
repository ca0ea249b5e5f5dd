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
#[inline]
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

/// Writes the fast-path PUBLISH `frame` (seen as `view`) under packet id
/// `pkid` to a peer speaking the frame's own version: the frame as it
/// came, its two packet-id bytes replaced.
pub(crate) fn write_frame(frame: &[u8], view: &PublishView, pkid: u16, out: &mut BytesMut) {
    super::first_room(out);
    let start = out.len();
    out.extend_from_slice(&frame[..view.size]);
    if view.qos != QoS::AtMostOnce {
        let at = start + view.pkid_at;
        out[at..at + 2].copy_from_slice(&pkid.to_be_bytes());
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
    let mut length = remaining;
    loop {
        let byte = (length % 128) as u8;
        length /= 128;
        if length == 0 {
            out.put_u8(byte);
            break;
        }
        out.put_u8(byte | 0x80);
    }
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
