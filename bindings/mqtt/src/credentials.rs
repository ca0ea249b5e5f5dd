//! CONNECT credentials as MQTT defines them: a UTF-8 user name and a
//! password of Binary Data. The codec crates read and write passwords as
//! strings, so the password's bytes are taken from, and put into, the
//! packet here: a password that is not UTF-8 reaches the broker unchanged.
//!
//! The password is the last field of a CONNECT in both versions, which is
//! what lets [`write_connect`] encode a placeholder of the same length and
//! put the real bytes over it.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use mqtt_bytes_v5::{Connect, LastWill, Packet};

use crate::codec::{self, CodecError, Version};

/// A CONNECT's user name and password (either may be empty).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Login {
    /// The user name (UTF-8).
    pub username: String,
    /// The password, as the client sent it.
    pub password: Bytes,
}

impl Login {
    /// The password as text, for credentials that are text (a JWT).
    pub fn password_text(&self) -> Option<&str> {
        std::str::from_utf8(&self.password).ok()
    }
}

/// A decoded CONNECT, its password as the bytes the client sent.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectPacket {
    /// Client id, clean start, keep-alive and properties.
    pub connect: Connect,
    /// The will, if the client registered one.
    pub will: Option<LastWill>,
    /// User name and password, if the client sent either.
    pub login: Option<Login>,
}

/// Decodes the CONNECT at the start of `buf` like [`codec::read_from_client`]
/// (every check a server owes a client's packet included), keeping the
/// password's bytes; `Ok(None)` until it is complete.
pub fn read_connect(
    buf: &mut BytesMut,
    version: Version,
    max_size: usize,
) -> Result<Option<ConnectPacket>, CodecError> {
    let Some(header) = codec::fixed_header(buf)? else {
        return Ok(None);
    };
    let end = header.header_len + header.remaining_len;
    let mut password = None;
    if header.byte1 == 0x10 && buf.len() >= end && end <= max_size {
        if let Some(span) = password_span(&buf[..end], header.header_len, version) {
            password = Some(Bytes::copy_from_slice(&buf[span.clone()]));
            // The codec crates want text: they get a placeholder of the
            // same length, and the real bytes are kept above.
            if std::str::from_utf8(&buf[span.clone()]).is_err() {
                buf[span].fill(b'x');
            }
        }
    }
    match codec::read_from_client(buf, version, max_size)? {
        None => Ok(None),
        Some(Packet::Connect(connect, will, login)) => Ok(Some(ConnectPacket {
            connect,
            will,
            login: login.map(|login| Login {
                username: login.username,
                password: password.unwrap_or_else(|| Bytes::from(login.password.into_bytes())),
            }),
        })),
        Some(_) => Err(CodecError {
            reason: mqtt_bytes_v5::DisconnectReasonCode::ProtocolError,
            message: "the first packet is not a CONNECT".into(),
        }),
    }
}

/// Encodes a CONNECT whose password may be any bytes.
pub fn write_connect(
    connect: Connect,
    will: Option<LastWill>,
    login: Option<&Login>,
    version: Version,
    out: &mut BytesMut,
) -> Result<(), CodecError> {
    let placeholder = login.map(|login| mqtt_bytes_v5::Login {
        username: login.username.clone(),
        password: "x".repeat(login.password.len()),
    });
    codec::write(&Packet::Connect(connect, will, placeholder), version, out)?;
    if let Some(login) = login.filter(|l| !l.password.is_empty()) {
        let end = out.len();
        out[end - login.password.len()..].copy_from_slice(&login.password);
    }
    Ok(())
}

/// Where the password of the complete CONNECT `packet` is; `None` when it
/// has none or is malformed (which decoding then reports).
fn password_span(packet: &[u8], header_len: usize, version: Version) -> Option<Range<usize>> {
    let mut at = header_len;
    let u16_at = |at: usize| -> Option<usize> {
        Some(usize::from(u16::from_be_bytes([
            *packet.get(at)?,
            *packet.get(at + 1)?,
        ])))
    };
    let varint_at = |mut at: usize| -> Option<(usize, usize)> {
        let start = at;
        let mut value = 0usize;
        for shift in 0..4 {
            let byte = *packet.get(at)?;
            at += 1;
            value |= usize::from(byte & 0x7F) << (7 * shift);
            if byte & 0x80 == 0 {
                return Some((value, at - start));
            }
        }
        None
    };
    at += 2 + u16_at(at)?; // protocol name
    at += 1; // protocol level
    let flags = *packet.get(at)?;
    at += 1 + 2; // flags, keep-alive
    if version == Version::V5 {
        let (len, size) = varint_at(at)?;
        at += size + len;
    }
    at += 2 + u16_at(at)?; // client id
    if flags & 0x04 != 0 {
        if version == Version::V5 {
            let (len, size) = varint_at(at)?;
            at += size + len;
        }
        at += 2 + u16_at(at)?; // will topic
        at += 2 + u16_at(at)?; // will payload
    }
    if flags & 0x80 != 0 {
        at += 2 + u16_at(at)?;
    }
    if flags & 0x40 == 0 {
        return None;
    }
    let len = u16_at(at)?;
    let span = at + 2..at + 2 + len;
    (span.end == packet.len()).then_some(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect() -> Connect {
        Connect {
            keep_alive: 30,
            client_id: "device".into(),
            clean_start: true,
            properties: None,
        }
    }

    #[test]
    fn a_binary_password_round_trips_in_both_versions() {
        let login = Login {
            username: "user".into(),
            password: Bytes::from_static(&[0xFF, 0x00, 0xC3, 0x28, 0x80]),
        };
        for version in [Version::V4, Version::V5] {
            let will = LastWill {
                topic: Bytes::from_static(b"wills/device"),
                message: Bytes::from_static(b"gone"),
                qos: mqtt_bytes_v5::QoS::AtLeastOnce,
                retain: false,
                properties: None,
            };
            let mut out = BytesMut::new();
            write_connect(connect(), Some(will), Some(&login), version, &mut out).unwrap();
            assert!(out.ends_with(&login.password), "the real bytes on the wire");
            let packet = read_connect(&mut out, version, 1024).unwrap().unwrap();
            assert_eq!(packet.login.as_ref(), Some(&login), "{version:?}");
            assert_eq!(packet.login.unwrap().password_text(), None);
            assert!(packet.will.is_some());
            assert!(out.is_empty());
        }
    }

    #[test]
    fn a_text_password_reads_as_before() {
        let login = Login {
            username: "user".into(),
            password: Bytes::from_static(b"Bearer token"),
        };
        let mut out = BytesMut::new();
        write_connect(connect(), None, Some(&login), Version::V5, &mut out).unwrap();
        let packet = read_connect(&mut out, Version::V5, 1024).unwrap().unwrap();
        assert_eq!(packet.login.unwrap().password_text(), Some("Bearer token"));
    }

    #[test]
    fn an_incomplete_connect_waits_and_a_malformed_one_is_refused() {
        let login = Login {
            username: "u".into(),
            password: Bytes::from_static(&[0xFF]),
        };
        let mut out = BytesMut::new();
        write_connect(connect(), None, Some(&login), Version::V5, &mut out).unwrap();
        let mut partial = BytesMut::from(&out[..out.len() - 1]);
        assert_eq!(read_connect(&mut partial, Version::V5, 1024), Ok(None));
        // A password length that runs past the packet's end.
        let mut bad = out.clone();
        let len = bad.len();
        bad[len - 2] = 9;
        assert!(read_connect(&mut bad, Version::V5, 1024).is_err());
    }
}
