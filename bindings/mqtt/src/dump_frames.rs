//! MQTT frames as `zilla dump` handles them: where one ends, the topic of
//! a PUBLISH, and where the secrets of a CONNECT or AUTH are (the password,
//! the Authentication Data), so that a dump can redact them in place.
//!
//! Works on raw bytes and never fails: a malformed frame is passed on as it
//! is (the session refuses it anyway), only what can be read is redacted.

use std::ops::Range;

const CONNECT: u8 = 1;
const PUBLISH: u8 = 3;
const AUTH: u8 = 15;
/// The Authentication Data property (MQTT 5, 3.1.2.11.10).
const AUTHENTICATION_DATA: u8 = 0x16;

/// The length of the first frame of `buf` when it is all there: `None`
/// while bytes are missing. A length field longer than four bytes (never
/// valid) counts the rest of `buf` as the frame.
pub(crate) fn frame_len(buf: &[u8]) -> Option<usize> {
    let (remaining, header) = remaining_length(buf.get(1..)?)?;
    let total = 1 + header + remaining;
    (buf.len() >= total).then_some(total)
}

/// A variable byte integer at the start of `buf`: (value, bytes it took).
/// `None` when incomplete; an overlong one reads as "everything".
fn remaining_length(buf: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (index, byte) in buf.iter().enumerate() {
        if index == 4 {
            return Some((buf.len() - 4, 4));
        }
        value |= usize::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((value, index + 1));
        }
    }
    None
}

/// The packet type of a frame.
pub(crate) fn packet_type(frame: &[u8]) -> u8 {
    frame.first().map_or(0, |b| b >> 4)
}

/// The topic of a PUBLISH frame (empty with a topic alias).
pub(crate) fn publish_topic(frame: &[u8]) -> Option<&[u8]> {
    if packet_type(frame) != PUBLISH {
        return None;
    }
    let (_, header) = remaining_length(frame.get(1..)?)?;
    let mut reader = Reader::new(frame, 1 + header);
    reader.binary().map(|range| &frame[range])
}

/// The byte ranges of `frame` that hold secrets: a CONNECT's password and
/// Authentication Data, an AUTH's Authentication Data.
pub(crate) fn secrets(frame: &[u8]) -> Vec<Range<usize>> {
    secrets_with(frame, false)
}

/// [`secrets`], and a CONNECT's user name too when `username` (it carried
/// the credentials a guard took, e.g. `Bearer <JWT>`).
pub(crate) fn secrets_with(frame: &[u8], username: bool) -> Vec<Range<usize>> {
    let mut found = Vec::new();
    let Some((_, header)) = frame.get(1..).and_then(remaining_length) else {
        return found;
    };
    let mut reader = Reader::new(frame, 1 + header);
    match packet_type(frame) {
        CONNECT => {
            // What could be read is found; a truncated rest has no more.
            let _ = connect_secrets(&mut reader, &mut found, username);
        }
        // Reason code, then properties (both absent in the short form).
        AUTH if reader.byte().is_some() => {
            let _ = properties(&mut reader, &mut found);
        }
        _ => {}
    }
    found
}

fn connect_secrets(
    reader: &mut Reader<'_>,
    found: &mut Vec<Range<usize>>,
    username: bool,
) -> Option<()> {
    reader.binary()?; // protocol name
    let level = reader.byte()?;
    let flags = reader.byte()?;
    reader.skip(2)?; // keep alive
    let v5 = level == 5;
    if v5 {
        properties(reader, found)?;
    }
    reader.binary()?; // client id
    if flags & 0x04 != 0 {
        if v5 {
            // Will properties: no secrets among them, but skipped as a block.
            let (length, _) = reader.varint()?;
            reader.skip(length)?;
        }
        reader.binary()?; // will topic
        reader.binary()?; // will payload
    }
    if flags & 0x80 != 0 {
        let name = reader.binary()?;
        if username {
            found.push(name);
        }
    }
    if flags & 0x40 != 0 {
        found.push(reader.binary()?);
    }
    Some(())
}

/// Walks an MQTT 5 property block, noting Authentication Data values.
fn properties(reader: &mut Reader<'_>, found: &mut Vec<Range<usize>>) -> Option<()> {
    let (length, _) = reader.varint()?;
    let end = reader.at.checked_add(length)?;
    while reader.at < end {
        let id = reader.byte()?;
        match id {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => reader.skip(1)?,
            0x13 | 0x21 | 0x22 | 0x23 => reader.skip(2)?,
            0x02 | 0x11 | 0x18 | 0x27 => reader.skip(4)?,
            0x0B => {
                reader.varint()?;
            }
            AUTHENTICATION_DATA => found.push(reader.binary()?),
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x1A | 0x1C | 0x1F => {
                reader.binary()?;
            }
            0x26 => {
                reader.binary()?;
                reader.binary()?;
            }
            // An unknown property: the rest cannot be read.
            _ => return None,
        }
    }
    Some(())
}

/// Reads a frame from a position, bounds-checked.
struct Reader<'a> {
    frame: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(frame: &'a [u8], at: usize) -> Self {
        Self { frame, at }
    }

    fn byte(&mut self) -> Option<u8> {
        let byte = *self.frame.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        let end = self.at.checked_add(n)?;
        (end <= self.frame.len()).then(|| self.at = end)
    }

    /// A two-byte length and that many bytes: their range.
    fn binary(&mut self) -> Option<Range<usize>> {
        let high = self.byte()?;
        let low = self.byte()?;
        let start = self.at;
        self.skip(usize::from(u16::from_be_bytes([high, low])))?;
        Some(start..self.at)
    }

    fn varint(&mut self) -> Option<(usize, usize)> {
        let (value, taken) = remaining_length(self.frame.get(self.at..)?)?;
        self.skip(taken)?;
        Some((value, taken))
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use mqtt_bytes_v5::ConnectProperties;

    use super::*;
    use crate::codec::{self, Version};
    use crate::credentials::Login;

    fn connect(version: Version, password: &[u8], auth_data: Option<&[u8]>, will: bool) -> Vec<u8> {
        let mut connect = mqtt_bytes_v5::Connect {
            keep_alive: 30,
            client_id: "device-1".into(),
            clean_start: true,
            properties: None,
        };
        if let Some(data) = auth_data {
            connect.properties = Some(ConnectProperties {
                authentication_method: Some("token".into()),
                authentication_data: Some(Bytes::copy_from_slice(data)),
                ..Default::default()
            });
        }
        let will = will.then(|| mqtt_bytes_v5::LastWill {
            topic: "will/topic".into(),
            message: Bytes::from_static(b"gone"),
            qos: mqtt_bytes_v5::QoS::AtLeastOnce,
            retain: false,
            properties: None,
        });
        let login = Login {
            username: "user".into(),
            password: Bytes::copy_from_slice(password),
        };
        let mut out = BytesMut::new();
        crate::credentials::write_connect(connect, will, Some(&login), version, &mut out).unwrap();
        out.to_vec()
    }

    fn redacted(frame: &[u8]) -> Vec<u8> {
        let mut frame = frame.to_vec();
        for range in secrets(&frame) {
            frame[range].fill(b'*');
        }
        frame
    }

    #[test]
    fn passwords_are_found_in_both_versions_with_and_without_a_will() {
        for version in [Version::V4, Version::V5] {
            for will in [false, true] {
                let frame = connect(version, b"s3cret-token", None, will);
                assert_eq!(frame_len(&frame), Some(frame.len()));
                let shown = redacted(&frame);
                assert_eq!(shown.len(), frame.len());
                let text = String::from_utf8_lossy(&shown);
                assert!(!text.contains("s3cret"), "{version:?} {will}: {text}");
                assert!(text.contains("************"), "{text}");
                assert!(text.contains("device-1") && text.contains("user"), "{text}");
                let cut: Vec<_> = secrets_with(&frame, true);
                assert_eq!(cut.len(), 2, "the user name and the password");
                assert_eq!(&frame[cut[0].clone()], b"user");
            }
        }
    }

    #[test]
    fn authentication_data_is_found_in_connect_and_auth() {
        let frame = connect(Version::V5, b"pw", Some(b"jwt-in-auth-data"), false);
        let text = String::from_utf8_lossy(&redacted(&frame)).into_owned();
        assert!(
            !text.contains("jwt-in-auth-data") && text.contains("token"),
            "{text}"
        );
        let auth = codec::auth::Auth {
            reason: codec::auth::RE_AUTHENTICATE,
            method: Some("token".into()),
            data: Some(Bytes::from_static(b"fresh-jwt")),
            reason_string: None,
        };
        let mut out = BytesMut::new();
        codec::auth::write(&auth, &mut out);
        let text = String::from_utf8_lossy(&redacted(&out)).into_owned();
        assert!(!text.contains("fresh-jwt"), "{text}");
    }

    #[test]
    fn frames_are_cut_where_they_end() {
        assert_eq!(frame_len(b""), None);
        assert_eq!(frame_len(b"\x30"), None);
        assert_eq!(frame_len(b"\x30\x80"), None);
        assert_eq!(frame_len(b"\xc0\x00"), Some(2));
        assert_eq!(frame_len(b"\x30\x03\x00\x01a\xff"), Some(5));
        assert_eq!(frame_len(b"\x30\x03\x00\x01"), None);
        // 200 bytes: a two-byte length.
        let mut long = vec![0x30, 0xC8, 0x01];
        long.resize(203, 0);
        assert_eq!(frame_len(&long), Some(203));
        assert_eq!(frame_len(&long[..202]), None);
        // Overlong lengths take the rest.
        assert_eq!(frame_len(b"\x30\xff\xff\xff\xff\x01zz"), Some(8));
    }

    #[test]
    fn publish_topics_are_read_and_truncations_are_harmless() {
        let frame = b"\x30\x0a\x00\x05a/b/cxyz";
        assert_eq!(publish_topic(frame), Some(&b"a/b/c"[..]));
        assert_eq!(publish_topic(b"\x30\x03\x00\x05a"), None);
        assert_eq!(publish_topic(b"\xc0\x00"), None);
        let frame = connect(Version::V5, b"pw", Some(b"data"), true);
        for cut in 0..frame.len() {
            let _ = secrets(&frame[..cut]);
            let _ = frame_len(&frame[..cut]);
        }
    }

    proptest::proptest! {
        /// Whatever a client or broker sends, the dump's reading of it
        /// never panics and never finds a secret outside the frame.
        #[test]
        fn any_bytes_are_read_without_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let length = frame_len(&bytes);
            proptest::prop_assert!(length.is_none_or(|n| n <= bytes.len()));
            let frame = &bytes[..length.unwrap_or(bytes.len())];
            for range in secrets(frame) {
                proptest::prop_assert!(range.end <= frame.len());
            }
            let _ = publish_topic(frame);
        }
    }
}
