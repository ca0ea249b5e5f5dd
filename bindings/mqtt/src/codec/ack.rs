//! The acknowledgement fast path: a PUBACK, PUBREC, PUBREL or PUBCOMP that
//! carries its packet id and nothing else, read and written without the
//! codec crates.
//!
//! Every QoS 1 message crosses the proxy with two such packets (the
//! broker's PUBACK to the publisher, the subscriber's PUBACK to the broker)
//! and a QoS 2 message with six. Through the crates each one was a second
//! framing, a walk of the conformance rules and a decode into the 392-byte
//! `Packet`, then an encode back through the crate's writer. A bare one is
//! four bytes: its type, a remaining length of 2, the packet id. In MQTT 5
//! that form means reason 0x00 (Success) and no properties
//! ([MQTT-3.4.2.1], 3.5.2.1, 3.6.2.1, 3.7.2.1); in 3.1.1 it is the only
//! form. Anything else (a reason code, properties, packet id 0) returns
//! `None` with nothing consumed, and the full path decodes, checks or
//! refuses it as before.

use bytes::{Buf, BytesMut};
use mqtt_bytes_v5::{
    Packet, PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason, PubRel,
    PubRelReason,
};

use super::FixedHeader;

const PUBACK: u8 = 0x40;
const PUBREC: u8 = 0x50;
/// PUBREL's reserved flags are 0010 ([MQTT-3.6.1-1]).
const PUBREL: u8 = 0x62;
const PUBCOMP: u8 = 0x70;

/// The bare acknowledgement framed by `header` at the start of `buf`, as
/// the `Packet` the codec crates would decode, consumed; `None`, with
/// nothing consumed, for anything else. A `Some` passed every rule the
/// conformance walk applies to these packets (flags were checked as it was
/// framed; its packet id is not 0).
pub(super) fn decode(buf: &mut BytesMut, header: &FixedHeader) -> Option<Packet> {
    if header.remaining_len != 2 || header.header_len != 2 {
        return None;
    }
    let pkid = u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]);
    if pkid == 0 {
        return None;
    }
    let packet = match header.byte1 {
        PUBACK => Packet::PubAck(PubAck {
            pkid,
            reason: PubAckReason::Success,
            properties: None,
        }),
        PUBREC => Packet::PubRec(PubRec {
            pkid,
            reason: PubRecReason::Success,
            properties: None,
        }),
        PUBREL => Packet::PubRel(PubRel {
            pkid,
            reason: PubRelReason::Success,
            properties: None,
        }),
        PUBCOMP => Packet::PubComp(PubComp {
            pkid,
            reason: PubCompReason::Success,
            properties: None,
        }),
        _ => return None,
    };
    buf.advance(4);
    Some(packet)
}

/// Writes `packet` when it is an acknowledgement with reason 0x00 and no
/// properties, in the four bytes either version reads; `None` (nothing
/// written) otherwise.
pub(super) fn write_bare(packet: &Packet, out: &mut BytesMut) -> Option<()> {
    let (byte1, pkid) = match packet {
        Packet::PubAck(PubAck {
            pkid,
            reason: PubAckReason::Success,
            properties: None,
        }) => (PUBACK, *pkid),
        Packet::PubRec(PubRec {
            pkid,
            reason: PubRecReason::Success,
            properties: None,
        }) => (PUBREC, *pkid),
        Packet::PubRel(PubRel {
            pkid,
            reason: PubRelReason::Success,
            properties: None,
        }) => (PUBREL, *pkid),
        Packet::PubComp(PubComp {
            pkid,
            reason: PubCompReason::Success,
            properties: None,
        }) => (PUBCOMP, *pkid),
        _ => return None,
    };
    let [high, low] = pkid.to_be_bytes();
    out.extend_from_slice(&[byte1, 2, high, low]);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::super::{conformance, fixed_header, from_v4, to_v4, validate, write_v4, Version};
    use super::*;
    use rumqttc::mqttbytes::v4;

    /// Every acknowledgement frame the tests try: each packet type and
    /// flag byte, remaining lengths 0 to 5 (with reason codes and property
    /// blocks), packet ids 0, 1 and 0xFFFF, and every truncation.
    fn wires() -> Vec<BytesMut> {
        let mut wires = Vec::new();
        for byte1 in [0x40, 0x41, 0x50, 0x60, 0x62, 0x70, 0x72, 0x30, 0xB0] {
            for id in [[0, 0], [0, 1], [0xFF, 0xFF]] {
                let bodies: [&[u8]; 6] = [
                    &[],
                    &id,
                    &[id[0], id[1], 0x00],
                    &[id[0], id[1], 0x10],
                    &[id[0], id[1], 0x00, 0x00],
                    &[id[0], id[1], 0x92, 0x00],
                ];
                for body in bodies {
                    for cut in 0..=body.len() {
                        let mut wire = BytesMut::new();
                        wire.extend_from_slice(&[byte1, cut as u8]);
                        wire.extend_from_slice(&body[..cut]);
                        wire.extend_from_slice(b"next");
                        wires.push(wire);
                    }
                }
            }
        }
        wires
    }

    fn theirs(wire: &mut BytesMut, version: Version) -> Option<Packet> {
        match version {
            Version::V5 => Packet::read(wire, None).ok(),
            Version::V4 => v4::read(wire, usize::MAX).ok().map(from_v4),
        }
    }

    /// The fast path decodes exactly what the crates decode, only packets
    /// that pass the conformance walk and `validate`, and consumes exactly
    /// the frame; everything else is left to the full path, untouched.
    #[test]
    fn decode_agrees_with_the_codec_crates_and_the_conformance_walk() {
        for version in [Version::V5, Version::V4] {
            let (mut fast, mut fallback) = (0, 0);
            for wire in wires() {
                let Ok(Some(header)) = fixed_header(&wire) else {
                    continue;
                };
                let size = header.header_len + header.remaining_len;
                let mut ours = wire.clone();
                let mut crates = wire.clone();
                let expected = theirs(&mut crates, version);
                match decode(&mut ours, &header) {
                    Some(packet) => {
                        fast += 1;
                        assert_eq!(Some(&packet), expected.as_ref(), "{wire:?}");
                        assert_eq!(ours, crates, "{wire:?}");
                        assert_eq!(&ours[..], b"next");
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
                fast >= 8 && fallback > 100,
                "{version:?}: {fast} {fallback}"
            );
        }
    }

    /// What the fast path writes decodes, with either version's crate, to
    /// the packet written; in 3.1.1 it is byte for byte the crate's form.
    #[test]
    fn write_agrees_with_the_codec_crates() {
        let mut written = 0;
        for wire in wires() {
            for version in [Version::V5, Version::V4] {
                let Some(packet) = theirs(&mut wire.clone(), version) else {
                    continue;
                };
                let mut ours = BytesMut::new();
                if write_bare(&packet, &mut ours).is_none() {
                    assert!(ours.is_empty());
                    continue;
                }
                written += 1;
                let mut decoded = ours.clone();
                assert_eq!(theirs(&mut decoded, version).as_ref(), Some(&packet));
                assert!(decoded.is_empty());
                if version == Version::V4 {
                    let mut crates = BytesMut::new();
                    write_v4(&to_v4(&packet).unwrap(), &mut crates).unwrap();
                    assert_eq!(ours, crates, "{packet:?}");
                }
            }
        }
        assert!(written >= 16, "{written}");
    }
}
