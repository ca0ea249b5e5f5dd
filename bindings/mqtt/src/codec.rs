//! MQTT framing for both protocol versions, with MQTT 5 types as the model.
//!
//! Bytes in, packets out: incomplete input is `Ok(None)`, malformed input is a
//! [`CodecError`] that carries the reason code the peer is told. The fixed header
//! is checked here (remaining length, reserved flags, QoS 3, size limits) before
//! `mqtt-bytes-v5` (MQTT 5) or rumqttc's `mqttbytes::v4` (3.1.1) decode the rest;
//! 3.1.1 packets are translated to and from the MQTT 5 model (`codec/v311.rs`).
//!
//! What a client sends goes through [`read_from_client`], which also walks each
//! complete packet for what a server must refuse before any broker sees it
//! (`codec/conformance.rs`, decision 0016); packets from brokers go through
//! [`read`]. AUTH, which the codec crate has no type for, is decoded and
//! encoded by [`auth`]; a session takes it apart from other packets
//! (`take_auth`). The common packets skip the crates: a PUBLISH without
//! properties (`codec/publish.rs`, also seen in place for the session's
//! express lane, decision 0028) and an acknowledgement with only a packet
//! id (`codec/ack.rs`).

mod ack;
pub mod auth;
mod conformance;
mod properties;
mod publish;
mod reader;
mod reason;
mod v311;

#[cfg(test)]
mod conformance_tests;
#[cfg(test)]
mod proptests;

use bytes::BytesMut;
use mqtt_bytes_v5::{Disconnect, DisconnectReasonCode, Packet, PacketType, Publish, QoS};
use rumqttc::mqttbytes::v4;
use zilla_engine::telemetry::text;

pub(crate) use publish::{write_frame, PublishView};
pub(crate) use reason::{connack_code, reason_name, Reason};
pub use v311::connack_code_v4;
use v311::{from_v4, to_v4, write_v4};

use crate::topic;

/// The MQTT protocol version spoken on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V4,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

impl Version {
    /// The spelling in `options.versions`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V4 => "v3.1.1",
            Version::V5 => "v5",
        }
    }
}

/// Why input could not be decoded, and what the peer is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError {
    /// The DISCONNECT (or CONNACK) reason code.
    pub reason: DisconnectReasonCode,
    /// What was wrong, for the event log.
    pub message: String,
}

impl CodecError {
    fn malformed(message: impl Into<String>) -> Self {
        Self {
            reason: DisconnectReasonCode::MalformedPacket,
            message: message.into(),
        }
    }

    fn protocol(message: impl Into<String>) -> Self {
        Self {
            reason: DisconnectReasonCode::ProtocolError,
            message: message.into(),
        }
    }

    fn unencodable(message: &str) -> Self {
        Self {
            reason: DisconnectReasonCode::ImplementationSpecificError,
            message: format!("cannot encode: {message}"),
        }
    }
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (reason 0x{:02X})", self.message, self.reason as u8)
    }
}

impl std::error::Error for CodecError {}

/// The fixed header: type and flags, and the frame's full length.
pub(crate) struct FixedHeader {
    pub(crate) byte1: u8,
    pub(crate) header_len: usize,
    pub(crate) remaining_len: usize,
}

/// Reads the fixed header, or `None` when more bytes are needed.
#[inline(always)]
pub(crate) fn fixed_header(buf: &[u8]) -> Result<Option<FixedHeader>, CodecError> {
    // One or two length bytes, every packet under 16 KiB: read at once.
    match *buf {
        [byte1, len, ..] if len & 0x80 == 0 => {
            return Ok(Some(FixedHeader {
                byte1,
                header_len: 2,
                remaining_len: usize::from(len),
            }))
        }
        // A second byte of 0 is not the fewest bytes: the loop refuses it.
        [byte1, low, high, ..] if high & 0x80 == 0 && high != 0 => {
            return Ok(Some(FixedHeader {
                byte1,
                header_len: 3,
                remaining_len: usize::from(low & 0x7F) | usize::from(high) << 7,
            }))
        }
        _ => {}
    }
    let Some(&byte1) = buf.first() else {
        return Ok(None);
    };
    let mut remaining_len = 0usize;
    for (index, byte) in buf.iter().skip(1).take(4).enumerate() {
        remaining_len |= usize::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            // A last byte of 0 after a continuation adds nothing: the value
            // was not encoded in the fewest bytes ([MQTT-1.5.5-1]).
            if index > 0 && *byte == 0 {
                return Err(CodecError::malformed(
                    "remaining length not encoded in the fewest bytes",
                ));
            }
            return Ok(Some(FixedHeader {
                byte1,
                header_len: index + 2,
                remaining_len,
            }));
        }
    }
    if buf.len() >= 5 {
        return Err(CodecError::malformed(
            "remaining length longer than four bytes",
        ));
    }
    Ok(None)
}

const PUBLISH: u8 = PacketType::Publish as u8;
const PUBREL: u8 = PacketType::PubRel as u8;
const SUBSCRIBE: u8 = PacketType::Subscribe as u8;
const UNSUBSCRIBE: u8 = PacketType::Unsubscribe as u8;
const DISCONNECT: u8 = PacketType::Disconnect as u8;
/// AUTH, MQTT 5 only: the codec crate has no packet type for it.
const AUTH: u8 = 15;
/// Packet type 0 is reserved in both versions.
const RESERVED: u8 = 0;
/// The flags PUBREL, SUBSCRIBE and UNSUBSCRIBE must carry ([MQTT-3.6.1-1],
/// [MQTT-3.8.1-1], [MQTT-3.10.1-1]).
const FLAGS_0010: u8 = 0b0010;
/// PUBLISH flags: DUP and the QoS bits.
const DUP: u8 = 0b1000;
const QOS_BITS: u8 = 0b0110;
const RETAIN: u8 = 0b0001;

/// Checks the flags that MQTT reserves for each packet type
/// ([MQTT-2.1.3-1]; 3.1.1 [MQTT-2.2.2-1]).
fn check_flags(byte1: u8, version: Version) -> Result<(), CodecError> {
    let packet_type = byte1 >> 4;
    let flags = byte1 & 0x0F;
    match packet_type {
        PUBLISH => {
            let qos = (flags & QOS_BITS) >> 1;
            if qos == 3 {
                return Err(CodecError::malformed("PUBLISH with QoS 3"));
            }
            if qos == 0 && flags & DUP != 0 {
                return Err(CodecError::malformed("PUBLISH QoS 0 with DUP set"));
            }
            Ok(())
        }
        PUBREL | SUBSCRIBE | UNSUBSCRIBE if flags != FLAGS_0010 => Err(CodecError::malformed(
            format!("reserved flags of packet type {packet_type} must be 0010, found {flags:04b}"),
        )),
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => Ok(()),
        RESERVED => Err(CodecError::malformed("reserved packet type 0")),
        AUTH if version == Version::V4 => Err(CodecError::malformed("reserved packet type 15")),
        _ if flags != 0 => Err(CodecError::malformed(format!(
            "reserved flags of packet type {packet_type} must be 0000, found {flags:04b}"
        ))),
        _ => Ok(()),
    }
}

/// Whether a packet's first byte names a packet type with the flags it
/// must carry in `version`: [`check_flags`] without its messages, as a
/// table, so framing a packet checks its flags with one load.
const fn flags_valid(byte1: u8, v5: bool) -> bool {
    let flags = byte1 & 0x0F;
    match byte1 >> 4 {
        PUBLISH => {
            let qos = (flags & QOS_BITS) >> 1;
            qos != 3 && !(qos == 0 && flags & DUP != 0)
        }
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => flags == FLAGS_0010,
        RESERVED => false,
        AUTH if !v5 => false,
        _ => flags == 0,
    }
}

/// [`flags_valid`] for every first byte, MQTT 3.1.1's and MQTT 5's.
static VALID_FIRST_BYTE: [[bool; 256]; 2] = {
    let mut table = [[false; 256]; 2];
    let mut byte = 0;
    while byte < 256 {
        table[0][byte] = flags_valid(byte as u8, false);
        table[1][byte] = flags_valid(byte as u8, true);
        byte += 1;
    }
    table
};

/// The framing both readers share: the fixed header, its flags and the size
/// limit, measured on the whole packet (fixed header included, as MQTT 5
/// defines Maximum Packet Size) as soon as the header arrives, before the
/// body is buffered. `Ok(None)` until the packet is complete.
#[inline(always)]
fn frame(buf: &[u8], version: Version, max_size: usize) -> Result<Option<FixedHeader>, CodecError> {
    let Some(header) = fixed_header(buf)? else {
        return Ok(None);
    };
    if !VALID_FIRST_BYTE[usize::from(version == Version::V5)][usize::from(header.byte1)] {
        check_flags(header.byte1, version)?;
    }
    let size = header.header_len + header.remaining_len;
    if size > max_size {
        return Err(CodecError {
            reason: DisconnectReasonCode::PacketTooLarge,
            message: format!("packet of {size} bytes exceeds the maximum of {max_size}"),
        });
    }
    Ok((buf.len() >= size).then_some(header))
}

/// Decodes the next packet from `buf`, or returns `Ok(None)` when it is not
/// complete yet. Packets larger than `max_size` bytes are refused as soon as
/// their header arrives, before their body is buffered.
#[inline]
pub fn read(
    buf: &mut BytesMut,
    version: Version,
    max_size: usize,
) -> Result<Option<Packet>, CodecError> {
    let Some(header) = frame(buf, version, max_size)? else {
        return Ok(None);
    };
    take_packet(buf, &header, version, false).map(Some)
}

/// Like [`read`], for what a client sends a server: each complete packet is
/// also checked for everything the specification makes a server refuse
/// (reserved bits, properties, values, packet ids, strings), with the reason
/// code it assigns, before it is decoded.
#[inline]
pub fn read_from_client(
    buf: &mut BytesMut,
    version: Version,
    max_size: usize,
) -> Result<Option<Packet>, CodecError> {
    let Some(header) = frame(buf, version, max_size)? else {
        return Ok(None);
    };
    take_packet(buf, &header, version, true).map(Some)
}

/// The framing of the next packet in `buf` ([`read`]'s first step, for a
/// reader that takes PUBLISHes apart from other packets): `Ok(None)` until
/// it is complete.
#[inline(always)]
pub(crate) fn next_frame(
    buf: &[u8],
    version: Version,
    max_size: usize,
) -> Result<Option<FixedHeader>, CodecError> {
    frame(buf, version, max_size)
}

/// The complete packet framed by `header` when it is a PUBLISH the fast
/// path takes (`codec/publish.rs`), which needs no further check; `None`,
/// with nothing consumed, for any other packet. A session handles the
/// `Publish` as it is, without the 392-byte `Packet` around it: moving that
/// through the readers was a sixth of the proxy's CPU per message.
#[inline]
pub(crate) fn take_publish(
    buf: &mut BytesMut,
    header: &FixedHeader,
    version: Version,
) -> Option<Publish> {
    if header.byte1 >> 4 != PUBLISH {
        return None;
    }
    publish::decode(buf, header, version)
}

/// The complete packet framed by `header` when it is a PUBLISH the fast
/// path takes, seen in place (`codec/publish.rs`); `None` otherwise.
/// Nothing is consumed either way.
#[inline]
pub(crate) fn view_publish(
    buf: &[u8],
    header: &FixedHeader,
    version: Version,
) -> Option<PublishView> {
    if header.byte1 >> 4 != PUBLISH {
        return None;
    }
    publish::view(buf, header, version)
}

/// The complete packet framed by `header`, decoded; checked first for what
/// a server must refuse when it comes `from_client`.
#[inline]
pub(crate) fn take_packet(
    buf: &mut BytesMut,
    header: &FixedHeader,
    version: Version,
    from_client: bool,
) -> Result<Packet, CodecError> {
    // The fast path's PUBLISH has passed every check of the walk and of
    // `validate`.
    if let Some(publish) = take_publish(buf, header, version) {
        return Ok(Packet::Publish(publish));
    }
    // So has a bare acknowledgement's (`codec/ack.rs`).
    if let Some(ack) = ack::decode(buf, header) {
        return Ok(ack);
    }
    if from_client {
        let size = header.header_len + header.remaining_len;
        conformance::check(&buf[..size], header.header_len, version)?;
    }
    decode(buf, header, version)
}

/// The complete packet framed by `header` when it is an MQTT 5 AUTH from a
/// client: checked as [`take_packet`] checks a client's packets, then
/// decoded; `None`, with nothing consumed, for any other packet.
pub(crate) fn take_auth(
    buf: &mut BytesMut,
    header: &FixedHeader,
    version: Version,
) -> Option<Result<auth::Auth, CodecError>> {
    if header.byte1 >> 4 != AUTH || version != Version::V5 {
        return None;
    }
    let size = header.header_len + header.remaining_len;
    Some(
        conformance::check(&buf[..size], header.header_len, version).and_then(|()| {
            let packet = buf.split_to(size);
            auth::decode(&packet[header.header_len..])
        }),
    )
}

/// Decodes the complete packet at the start of `buf` with the codec crates.
fn decode(
    buf: &mut BytesMut,
    header: &FixedHeader,
    version: Version,
) -> Result<Packet, CodecError> {
    let packet_type = header.byte1 >> 4;
    let packet = match version {
        // Not a packet type of the codec crate: a session takes AUTH with
        // [`take_auth`] before it gets here; anywhere else (a broker's
        // AUTH, which the proxy never asks for, or the first packet) it is
        // out of place ([MQTT-4.12.0-7]).
        Version::V5 if packet_type == AUTH => {
            return Err(CodecError::protocol("AUTH is not expected here"))
        }
        Version::V5 if packet_type == DISCONNECT && header.remaining_len == 1 => {
            short_disconnect(buf, header.header_len)?
        }
        Version::V5 => Packet::read(buf, None).map_err(decode_error)?,
        Version::V4 => from_v4(v4::read(buf, usize::MAX).map_err(decode_error_v4)?),
    };
    validate(&packet, version)?;
    Ok(packet)
}

/// The protocol version a CONNECT at the start of `buf` asks for: `Ok(None)`
/// until enough bytes have arrived.
pub fn connect_version(buf: &[u8]) -> Result<Option<Result<Version, u8>>, CodecError> {
    let Some(header) = fixed_header(buf)? else {
        return Ok(None);
    };
    if header.byte1 != 0x10 {
        return Err(CodecError::protocol(format!(
            "the first packet must be CONNECT, found packet type {}",
            header.byte1 >> 4
        )));
    }
    let body = &buf[header.header_len..];
    if body.len() < 2 {
        return Ok(None);
    }
    let name_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
    if body.len() < 2 + name_len + 1 {
        return Ok(None);
    }
    let name = &body[2..2 + name_len];
    let level = body[2 + name_len];
    Ok(Some(match (name, level) {
        (b"MQTT", 4) => Ok(Version::V4),
        (b"MQTT", 5) => Ok(Version::V5),
        (b"MQTT" | b"MQIsdp", level) => Err(level),
        _ => {
            return Err(CodecError::protocol(format!(
                "unknown protocol name {}",
                text(&String::from_utf8_lossy(name))
            )))
        }
    }))
}

/// A packet's name as the specification writes it, for events.
pub(crate) fn packet_name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(..) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq(_) => "PINGREQ",
        Packet::PingResp(_) => "PINGRESP",
        Packet::Disconnect(_) => "DISCONNECT",
    }
}

fn decode_error(error: mqtt_bytes_v5::Error) -> CodecError {
    match error {
        mqtt_bytes_v5::Error::TopicNotUtf8 | mqtt_bytes_v5::Error::PayloadNotUtf8(_) => {
            CodecError::malformed("a string is not valid UTF-8")
        }
        other => CodecError::malformed(other.to_string()),
    }
}

fn decode_error_v4(error: rumqttc::mqttbytes::Error) -> CodecError {
    CodecError::malformed(error.to_string())
}

/// Checks what the decoders accept but MQTT forbids, in packets from either
/// side (a client's were walked by [`conformance`] already).
fn validate(packet: &Packet, version: Version) -> Result<(), CodecError> {
    match packet {
        Packet::Publish(publish) => {
            let has_alias = publish
                .properties
                .as_ref()
                .is_some_and(|p| p.topic_alias.is_some());
            // Without an alias there is no topic to publish to: a Protocol
            // Error (3.3.2.3.4), not an invalid topic name.
            if publish.topic.is_empty() && !(version == Version::V5 && has_alias) {
                return Err(CodecError::protocol(
                    "PUBLISH with an empty topic and no topic alias",
                ));
            }
            // One pass for the common case; which of the two it is only
            // when one of them is there (U+0000 is Malformed first).
            if topic::has_wildcard_or_nul(publish.topic.as_bytes()) {
                if publish.topic.contains('\0') {
                    return Err(CodecError::malformed("the PUBLISH topic contains U+0000"));
                }
                return Err(CodecError {
                    reason: DisconnectReasonCode::TopicNameInvalid,
                    message: format!("PUBLISH topic {} contains a wildcard", text(&publish.topic)),
                });
            }
            if publish.qos != QoS::AtMostOnce && publish.pkid == 0 {
                return Err(CodecError::protocol(
                    "PUBLISH QoS > 0 with packet identifier 0",
                ));
            }
            Ok(())
        }
        Packet::Subscribe(subscribe) if subscribe.filters.is_empty() => {
            Err(CodecError::protocol("SUBSCRIBE without topic filters"))
        }
        Packet::Unsubscribe(unsubscribe) if unsubscribe.filters.is_empty() => {
            Err(CodecError::protocol("UNSUBSCRIBE without topic filters"))
        }
        Packet::Connect(connect, will, _) => {
            if let Some(will) = will {
                let topic = std::str::from_utf8(&will.topic)
                    .map_err(|_| CodecError::malformed("will topic is not valid UTF-8"))?;
                if topic.is_empty() || !topic::is_valid_name(topic) {
                    return Err(CodecError {
                        reason: DisconnectReasonCode::TopicNameInvalid,
                        message: format!("will topic {} is not a valid topic name", text(topic)),
                    });
                }
            }
            if connect.client_id.contains('\0') {
                return Err(CodecError::malformed("client identifier contains U+0000"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// An MQTT 5 DISCONNECT whose remaining length is 1: a reason code without a
/// property length, which means no properties (MQTT 5 3.14.2.2.1). The codec
/// crate refuses this form, which libmosquitto sends for 0x04.
fn short_disconnect(buf: &mut BytesMut, header_len: usize) -> Result<Packet, CodecError> {
    let packet = buf.split_to(header_len + 1);
    let reason_code = DisconnectReasonCode::try_from(packet[header_len])
        .map_err(|_| CodecError::malformed("unknown DISCONNECT reason code"))?;
    Ok(Packet::Disconnect(Disconnect {
        reason_code,
        properties: None,
    }))
}

/// Encodes `packet` for a peer speaking `version`.
pub fn write(packet: &Packet, version: Version, out: &mut BytesMut) -> Result<(), CodecError> {
    first_room(out);
    // The codec crate writes a remaining length of 1 followed by two bytes
    // for a DISCONNECT with a reason and no properties.
    if let (Version::V5, Packet::Disconnect(disconnect)) = (version, packet) {
        if disconnect.properties.is_none()
            && disconnect.reason_code != DisconnectReasonCode::NormalDisconnection
        {
            out.extend_from_slice(&[0xE0, 0x01, disconnect.reason_code as u8]);
            return Ok(());
        }
    }
    if let Packet::Publish(publish) = packet {
        if let Some(written) = publish::write_bare(publish, version, out) {
            return written;
        }
    }
    if let Some(()) = ack::write_bare(packet, out) {
        return Ok(());
    }
    let written = match version {
        Version::V5 => packet.write(out).map(|_| ()).map_err(decode_error),
        Version::V4 => match to_v4(packet) {
            Some(packet) => write_v4(&packet, out).map_err(decode_error_v4),
            // Packets 3.1.1 has no form for (e.g. DISCONNECT from a server) are
            // expressed by closing the connection, which the caller does.
            None => Ok(()),
        },
    };
    written.map_err(|error| CodecError {
        reason: DisconnectReasonCode::ImplementationSpecificError,
        message: format!("cannot encode: {}", error.message),
    })
}

/// Encodes the message `publish` for a peer speaking `version`: straight
/// from the `Publish` when it has no properties, else as [`write()`] does.
#[inline]
pub fn write_publish(
    publish: Publish,
    version: Version,
    out: &mut BytesMut,
) -> Result<(), CodecError> {
    first_room(out);
    match publish::write_bare(&publish, version, out) {
        Some(written) => written,
        None => write(&Packet::Publish(publish), version, out),
    }
}

/// Room a released output buffer gets at its first packet: a session's
/// output buffers are released after each small write (an idle session
/// holds none), and growing one again from nothing, packet by packet, was
/// several reallocations per turn of a QoS 1 flow.
const FIRST_ROOM: usize = 256;

/// Gives an output buffer without room [`FIRST_ROOM`] before its first packet.
#[inline]
pub(crate) fn first_room(out: &mut BytesMut) {
    if out.capacity() == 0 {
        out.reserve(FIRST_ROOM);
    }
}

/// DISCONNECT reason 0xA0, Maximum connect time, which the codec crate has
/// no name for: the proxy sends it when a session's credentials expire.
pub const MAXIMUM_CONNECT_TIME: u8 = 0xA0;

/// DISCONNECT reason 0x8C, Bad authentication method, which the codec
/// crate has no name for either: a re-authentication named another method.
pub const BAD_AUTHENTICATION_METHOD: u8 = 0x8C;

/// An MQTT 5 DISCONNECT with any reason `code`, including those the codec
/// crate has no name for (0xA0 Maximum connect time).
pub fn write_disconnect(code: u8, reason: Option<&str>, out: &mut BytesMut) {
    fn varint(mut value: usize, out: &mut BytesMut) {
        loop {
            let mut byte = (value % 128) as u8;
            value /= 128;
            if value > 0 {
                byte |= 0x80;
            }
            out.extend_from_slice(&[byte]);
            if value == 0 {
                return;
            }
        }
    }
    let reason = reason.map(|r| &r.as_bytes()[..r.len().min(u16::MAX as usize)]);
    let properties_len = reason.map_or(0, |r| 3 + r.len());
    let mut properties_len_bytes = BytesMut::new();
    varint(properties_len, &mut properties_len_bytes);
    out.extend_from_slice(&[0xE0]);
    varint(1 + properties_len_bytes.len() + properties_len, out);
    out.extend_from_slice(&[code]);
    out.extend_from_slice(&properties_len_bytes);
    if let Some(reason) = reason {
        out.extend_from_slice(&[0x1F]);
        out.extend_from_slice(&(reason.len() as u16).to_be_bytes());
        out.extend_from_slice(reason);
    }
}

/// The size `packet` takes on the wire, for maximum-packet-size checks.
pub fn encoded_len(packet: &Packet, version: Version) -> usize {
    let mut scratch = BytesMut::new();
    let _ = write(packet, version, &mut scratch);
    scratch.len()
}

#[cfg(test)]
mod tests;
