//! What a server must refuse in a packet from a client, checked on the
//! packet's bytes before the codec crates decode it (decision 0016).
//!
//! The crates decode leniently: properties into `Option` fields (a duplicate
//! silently wins), reserved bits ignored, values passed through. This walk
//! reads each complete frame field by field, in the order the specification
//! lays it out, and refuses with the reason code the specification assigns:
//! 0x81 Malformed Packet when the bytes cannot be a packet of that type
//! (reserved bits, identifiers not valid for the packet, a length past the
//! end, U+0000 in a string), 0x82 Protocol Error when they parse but break a
//! rule ("It is a Protocol Error to ..."). It allocates nothing unless it
//! refuses: on a PUBLISH it reads the topic once, the packet id, and the
//! property block (usually its one length byte).
//!
//! The rules that depend on the session (topic aliases in use, receive
//! maximum, the session expiry at CONNECT) are the session's; those about
//! topic-filter syntax are answered per filter in the SUBACK.

use mqtt_bytes_v5::{DisconnectReasonCode, PacketType};

use super::properties::{self, id, Block};
use super::reader::Reader;
use super::{CodecError, Version};

const CONNECT: u8 = PacketType::Connect as u8;
const CONNACK: u8 = PacketType::ConnAck as u8;
const PUBLISH: u8 = PacketType::Publish as u8;
const PUBACK: u8 = PacketType::PubAck as u8;
const PUBREC: u8 = PacketType::PubRec as u8;
const PUBREL: u8 = PacketType::PubRel as u8;
const PUBCOMP: u8 = PacketType::PubComp as u8;
const SUBSCRIBE: u8 = PacketType::Subscribe as u8;
const SUBACK: u8 = PacketType::SubAck as u8;
const UNSUBSCRIBE: u8 = PacketType::Unsubscribe as u8;
const UNSUBACK: u8 = PacketType::UnsubAck as u8;
const PINGREQ: u8 = PacketType::PingReq as u8;
const PINGRESP: u8 = PacketType::PingResp as u8;
const DISCONNECT: u8 = PacketType::Disconnect as u8;
/// AUTH, which the codec crate has no packet type for.
const AUTH: u8 = 15;

/// Reason codes as they are on the wire (MQTT 5 2.4), for the ack and AUTH
/// reason-code sets the crates' enums do not number.
mod code {
    pub(super) const SUCCESS: u8 = 0x00;
    pub(super) const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
    pub(super) const CONTINUE_AUTHENTICATION: u8 = 0x18;
    pub(super) const RE_AUTHENTICATE: u8 = 0x19;
    pub(super) const UNSPECIFIED_ERROR: u8 = 0x80;
    pub(super) const IMPLEMENTATION_SPECIFIC_ERROR: u8 = 0x83;
    pub(super) const NOT_AUTHORIZED: u8 = 0x87;
    pub(super) const TOPIC_NAME_INVALID: u8 = 0x90;
    pub(super) const PACKET_IDENTIFIER_IN_USE: u8 = 0x91;
    pub(super) const PACKET_IDENTIFIER_NOT_FOUND: u8 = 0x92;
    pub(super) const QUOTA_EXCEEDED: u8 = 0x97;
    pub(super) const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
}

/// PUBACK and PUBREC reason codes (3.4.2.1, 3.5.2.1).
const PUBLISH_ACK_REASONS: &[u8] = &[
    code::SUCCESS,
    code::NO_MATCHING_SUBSCRIBERS,
    code::UNSPECIFIED_ERROR,
    code::IMPLEMENTATION_SPECIFIC_ERROR,
    code::NOT_AUTHORIZED,
    code::TOPIC_NAME_INVALID,
    code::PACKET_IDENTIFIER_IN_USE,
    code::QUOTA_EXCEEDED,
    code::PAYLOAD_FORMAT_INVALID,
];
/// PUBREL and PUBCOMP reason codes (3.6.2.1, 3.7.2.1).
const RELEASE_REASONS: &[u8] = &[code::SUCCESS, code::PACKET_IDENTIFIER_NOT_FOUND];
/// AUTH reason codes (3.15.2.1).
const AUTH_REASONS: &[u8] = &[
    code::SUCCESS,
    code::CONTINUE_AUTHENTICATION,
    code::RE_AUTHENTICATE,
];

/// CONNECT flag bits (3.1.2.3).
mod flag {
    pub(super) const RESERVED: u8 = 0x01;
    pub(super) const WILL: u8 = 0x04;
    pub(super) const WILL_QOS_SHIFT: u8 = 3;
    pub(super) const WILL_RETAIN: u8 = 0x20;
    pub(super) const PASSWORD: u8 = 0x40;
    pub(super) const USER_NAME: u8 = 0x80;
}

/// Subscription options (3.8.3.1); 3.1.1 has only the QoS bits.
mod option {
    pub(super) const QOS: u8 = 0x03;
    pub(super) const NO_LOCAL: u8 = 0x04;
    pub(super) const RETAIN_HANDLING_SHIFT: u8 = 4;
    pub(super) const RESERVED_V5: u8 = 0xC0;
}

/// The one QoS no field may carry.
const QOS_INVALID: u8 = 3;
/// The one Retain Handling value no subscription may carry.
const RETAIN_HANDLING_INVALID: u8 = 3;

/// Checks the complete packet `frame` (fixed header of `header_len` bytes
/// included) from a client speaking `version`; the fixed header's flags
/// were checked as it arrived.
pub(crate) fn check(frame: &[u8], header_len: usize, version: Version) -> Result<(), CodecError> {
    let byte1 = frame[0];
    let mut body = Reader::new(&frame[header_len..]);
    let v5 = version == Version::V5;
    match byte1 >> 4 {
        CONNECT => connect(&mut body, version),
        PUBLISH => publish(byte1, &mut body, v5),
        PUBACK => ack(&mut body, v5, "PUBACK", PUBLISH_ACK_REASONS),
        PUBREC => ack(&mut body, v5, "PUBREC", PUBLISH_ACK_REASONS),
        PUBREL => ack(&mut body, v5, "PUBREL", RELEASE_REASONS),
        PUBCOMP => ack(&mut body, v5, "PUBCOMP", RELEASE_REASONS),
        SUBSCRIBE => subscribe(&mut body, v5),
        UNSUBSCRIBE => unsubscribe(&mut body, v5),
        PINGREQ => finished(&body, "PINGREQ"),
        DISCONNECT => disconnect(&mut body, v5),
        AUTH => auth(&mut body),
        kind => Err(CodecError::protocol(format!(
            "unexpected packet from a client: {}",
            match kind {
                CONNACK => "CONNACK",
                SUBACK => "SUBACK",
                UNSUBACK => "UNSUBACK",
                PINGRESP => "PINGRESP",
                _ => "a reserved packet type",
            }
        ))),
    }
}

/// Refuses bytes left after a packet's last field.
fn finished(body: &Reader<'_>, packet: &str) -> Result<(), CodecError> {
    match body.remaining() {
        0 => Ok(()),
        extra => Err(CodecError::malformed(format!(
            "{packet} has {extra} bytes after its last field"
        ))),
    }
}

fn connect(body: &mut Reader<'_>, version: Version) -> Result<(), CodecError> {
    let name = body.utf8("the protocol name")?;
    let level = body.u8("the protocol level")?;
    let expected = match version {
        Version::V4 => 4,
        Version::V5 => 5,
    };
    if name != b"MQTT" || level != expected {
        return Err(CodecError::protocol(
            "a CONNECT for another protocol version than the connection's",
        ));
    }
    let flags = body.u8("the connect flags")?;
    if flags & flag::RESERVED != 0 {
        return Err(CodecError::malformed("the CONNECT reserved flag is set"));
    }
    let will = flags & flag::WILL != 0;
    let will_qos = (flags >> flag::WILL_QOS_SHIFT) & option::QOS;
    if !will && (will_qos != 0 || flags & flag::WILL_RETAIN != 0) {
        return Err(CodecError::malformed(
            "will QoS or will retain set without the will flag",
        ));
    }
    if will_qos == QOS_INVALID {
        return Err(CodecError::malformed("will QoS 3"));
    }
    let user_name = flags & flag::USER_NAME != 0;
    let password = flags & flag::PASSWORD != 0;
    // MQTT 5 allows a password without a user name; 3.1.1 does not.
    if version == Version::V4 && password && !user_name {
        return Err(CodecError::malformed(
            "the password flag is set without the user name flag",
        ));
    }
    body.u16("the keep alive")?;
    if version == Version::V5 {
        properties::walk(body, Block::Connect)?;
    }
    body.utf8("the client identifier")?;
    if will {
        let will_properties = match version {
            Version::V5 => properties::walk(body, Block::Will)?,
            Version::V4 => properties::Seen::default(),
        };
        body.utf8("the will topic")?;
        let payload = body.binary("the will payload")?;
        // The server MAY check the will payload against its format (3.1.3.2.3);
        // the proxy does, so that no broker refuses it later.
        if will_properties.utf8_payload && std::str::from_utf8(payload).is_err() {
            return Err(CodecError {
                reason: DisconnectReasonCode::PayloadFormatInvalid,
                message: "the will payload is declared UTF-8 and is not".into(),
            });
        }
    }
    if user_name {
        body.utf8("the user name")?;
    }
    if password {
        body.binary("the password")?;
    }
    finished(body, "CONNECT")
}

fn publish(byte1: u8, body: &mut Reader<'_>, v5: bool) -> Result<(), CodecError> {
    let qos = (byte1 >> 1) & option::QOS;
    let topic = body.utf8("the PUBLISH topic")?;
    if qos > 0 && body.u16("the packet identifier")? == 0 {
        return Err(CodecError::protocol(format!(
            "PUBLISH QoS {qos} with packet identifier 0"
        )));
    }
    let aliased = v5 && properties::walk(body, Block::Publish)?.has(id::TOPIC_ALIAS);
    if topic.is_empty() && !aliased {
        return Err(CodecError::protocol(
            "PUBLISH with an empty topic and no topic alias",
        ));
    }
    // The payload is the rest of the packet, any bytes.
    Ok(())
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP: a packet id, and in MQTT 5 optionally a
/// reason code and optionally properties (remaining length 2, 3 or more).
fn ack(
    body: &mut Reader<'_>,
    v5: bool,
    packet: &'static str,
    reasons: &[u8],
) -> Result<(), CodecError> {
    body.u16("the packet identifier")?;
    if !v5 || body.is_empty() {
        return finished(body, packet);
    }
    let reason = body.u8("the reason code")?;
    if !reasons.contains(&reason) {
        return Err(CodecError::malformed(format!(
            "{packet} with reason code 0x{reason:02X}"
        )));
    }
    if !body.is_empty() {
        properties::walk(body, Block::Ack(packet))?;
    }
    finished(body, packet)
}

fn subscribe(body: &mut Reader<'_>, v5: bool) -> Result<(), CodecError> {
    if body.u16("the packet identifier")? == 0 {
        return Err(CodecError::protocol("SUBSCRIBE with packet identifier 0"));
    }
    if v5 {
        properties::walk(body, Block::Subscribe)?;
    }
    if body.is_empty() {
        return Err(CodecError::protocol("SUBSCRIBE without topic filters"));
    }
    while !body.is_empty() {
        let filter = body.utf8("a topic filter")?;
        let options = body.u8("the subscription options")?;
        let qos = options & option::QOS;
        if !v5 {
            // 3.1.1 [MQTT-3-8.3-4]: reserved bits, or a QoS that is not 0, 1 or 2.
            if options & !option::QOS != 0 || qos == QOS_INVALID {
                return Err(CodecError::malformed(format!(
                    "requested QoS byte 0x{options:02X} has reserved bits set"
                )));
            }
            continue;
        }
        if options & option::RESERVED_V5 != 0 {
            return Err(CodecError::malformed(
                "reserved bits of the subscription options are set",
            ));
        }
        if qos == QOS_INVALID {
            return Err(CodecError::protocol("a subscription with maximum QoS 3"));
        }
        if options >> option::RETAIN_HANDLING_SHIFT == RETAIN_HANDLING_INVALID {
            return Err(CodecError::protocol(
                "a subscription with Retain Handling 3",
            ));
        }
        if options & option::NO_LOCAL != 0 && filter.starts_with(b"$share/") {
            return Err(CodecError::protocol("No Local on a shared subscription"));
        }
    }
    Ok(())
}

fn unsubscribe(body: &mut Reader<'_>, v5: bool) -> Result<(), CodecError> {
    if body.u16("the packet identifier")? == 0 {
        return Err(CodecError::protocol("UNSUBSCRIBE with packet identifier 0"));
    }
    if v5 {
        properties::walk(body, Block::Unsubscribe)?;
    }
    if body.is_empty() {
        return Err(CodecError::protocol("UNSUBSCRIBE without topic filters"));
    }
    while !body.is_empty() {
        body.utf8("a topic filter")?;
    }
    Ok(())
}

/// MQTT 5: nothing (normal disconnection), a reason code, or a reason code
/// and properties (3.14.2.1); 3.1.1: nothing.
fn disconnect(body: &mut Reader<'_>, v5: bool) -> Result<(), CodecError> {
    if !v5 || body.is_empty() {
        return finished(body, "DISCONNECT");
    }
    let reason = body.u8("the reason code")?;
    if DisconnectReasonCode::try_from(reason).is_err() {
        return Err(CodecError::malformed(format!(
            "DISCONNECT with reason code 0x{reason:02X}"
        )));
    }
    if !body.is_empty() {
        properties::walk(body, Block::Disconnect)?;
    }
    finished(body, "DISCONNECT")
}

/// MQTT 5 AUTH, every form of it (remaining length 0 means success and no
/// properties, 3.15.2.1). Whether it is in place (a method agreed at
/// CONNECT, [MQTT-4.12.0-7]) is the session's to decide.
fn auth(body: &mut Reader<'_>) -> Result<(), CodecError> {
    if !body.is_empty() {
        let reason = body.u8("the reason code")?;
        if !AUTH_REASONS.contains(&reason) {
            return Err(CodecError::malformed(format!(
                "AUTH with reason code 0x{reason:02X}"
            )));
        }
        if !body.is_empty() {
            properties::walk(body, Block::Auth)?;
        }
        finished(body, "AUTH")?;
    }
    Ok(())
}
