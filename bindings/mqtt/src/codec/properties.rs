//! MQTT 5 properties as a server receives them (2.2.2): which may appear on
//! which packet, which may appear once, and which values are out of range.
//!
//! The codec crate reads properties into `Option` fields, so a second Session
//! Expiry Interval silently replaces the first and a Receive Maximum of 0
//! reaches the broker. The walk here sees each property as it is on the wire:
//! an identifier not valid for the packet is a Malformed Packet (2.2.2.2); a
//! second copy of a property that may appear once, or a value the
//! specification rules out, is a Protocol Error, as each property's section
//! says. Duplicates are tracked in a bit set of identifiers: no allocation.

use mqtt_bytes_v5::DisconnectReasonCode;

use super::reader::{check_string, Reader};
use super::CodecError;
use crate::topic;

/// Property identifiers (2.2.2.2), named for the checks below.
pub(crate) mod id {
    pub(crate) const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub(crate) const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub(crate) const CONTENT_TYPE: u8 = 0x03;
    pub(crate) const RESPONSE_TOPIC: u8 = 0x08;
    pub(crate) const CORRELATION_DATA: u8 = 0x09;
    pub(crate) const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub(crate) const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub(crate) const AUTHENTICATION_METHOD: u8 = 0x15;
    pub(crate) const AUTHENTICATION_DATA: u8 = 0x16;
    pub(crate) const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub(crate) const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub(crate) const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub(crate) const SERVER_REFERENCE: u8 = 0x1C;
    pub(crate) const REASON_STRING: u8 = 0x1F;
    pub(crate) const RECEIVE_MAXIMUM: u8 = 0x21;
    pub(crate) const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub(crate) const TOPIC_ALIAS: u8 = 0x23;
    pub(crate) const USER_PROPERTY: u8 = 0x26;
    pub(crate) const MAXIMUM_PACKET_SIZE: u8 = 0x27;
}

/// The packet (or part of one) a property block belongs to, as a client
/// sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Block {
    Connect,
    Will,
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    Ack(&'static str),
    Subscribe,
    Unsubscribe,
    Disconnect,
    Auth,
}

impl Block {
    fn name(self) -> &'static str {
        match self {
            Block::Connect => "CONNECT",
            Block::Will => "the will",
            Block::Publish => "PUBLISH",
            Block::Ack(name) => name,
            Block::Subscribe => "SUBSCRIBE",
            Block::Unsubscribe => "UNSUBSCRIBE",
            Block::Disconnect => "DISCONNECT",
            Block::Auth => "AUTH",
        }
    }

    /// The identifiers valid in this block (2.2.2.2, each packet's
    /// properties section).
    fn allowed(self) -> &'static [u8] {
        use id::*;
        match self {
            Block::Connect => &[
                SESSION_EXPIRY_INTERVAL,
                RECEIVE_MAXIMUM,
                MAXIMUM_PACKET_SIZE,
                TOPIC_ALIAS_MAXIMUM,
                REQUEST_RESPONSE_INFORMATION,
                REQUEST_PROBLEM_INFORMATION,
                USER_PROPERTY,
                AUTHENTICATION_METHOD,
                AUTHENTICATION_DATA,
            ],
            Block::Will => &[
                WILL_DELAY_INTERVAL,
                PAYLOAD_FORMAT_INDICATOR,
                MESSAGE_EXPIRY_INTERVAL,
                CONTENT_TYPE,
                RESPONSE_TOPIC,
                CORRELATION_DATA,
                USER_PROPERTY,
            ],
            // The Subscription Identifier is valid on PUBLISH, but only from a
            // server: `check_value` refuses it from a client.
            Block::Publish => &[
                PAYLOAD_FORMAT_INDICATOR,
                MESSAGE_EXPIRY_INTERVAL,
                TOPIC_ALIAS,
                RESPONSE_TOPIC,
                CORRELATION_DATA,
                USER_PROPERTY,
                SUBSCRIPTION_IDENTIFIER,
                CONTENT_TYPE,
            ],
            Block::Ack(_) => &[REASON_STRING, USER_PROPERTY],
            Block::Subscribe => &[SUBSCRIPTION_IDENTIFIER, USER_PROPERTY],
            Block::Unsubscribe => &[USER_PROPERTY],
            Block::Disconnect => &[
                SESSION_EXPIRY_INTERVAL,
                REASON_STRING,
                USER_PROPERTY,
                SERVER_REFERENCE,
            ],
            Block::Auth => &[
                AUTHENTICATION_METHOD,
                AUTHENTICATION_DATA,
                REASON_STRING,
                USER_PROPERTY,
            ],
        }
    }
}

/// The name of property `id`, for messages.
fn name(id: u8) -> &'static str {
    match id {
        id::PAYLOAD_FORMAT_INDICATOR => "Payload Format Indicator",
        id::MESSAGE_EXPIRY_INTERVAL => "Message Expiry Interval",
        id::CONTENT_TYPE => "Content Type",
        id::RESPONSE_TOPIC => "Response Topic",
        id::CORRELATION_DATA => "Correlation Data",
        id::SUBSCRIPTION_IDENTIFIER => "Subscription Identifier",
        id::SESSION_EXPIRY_INTERVAL => "Session Expiry Interval",
        id::AUTHENTICATION_METHOD => "Authentication Method",
        id::AUTHENTICATION_DATA => "Authentication Data",
        id::REQUEST_PROBLEM_INFORMATION => "Request Problem Information",
        id::WILL_DELAY_INTERVAL => "Will Delay Interval",
        id::REQUEST_RESPONSE_INFORMATION => "Request Response Information",
        id::SERVER_REFERENCE => "Server Reference",
        id::REASON_STRING => "Reason String",
        id::RECEIVE_MAXIMUM => "Receive Maximum",
        id::TOPIC_ALIAS_MAXIMUM => "Topic Alias Maximum",
        id::TOPIC_ALIAS => "Topic Alias",
        id::USER_PROPERTY => "User Property",
        id::MAXIMUM_PACKET_SIZE => "Maximum Packet Size",
        _ => "a property",
    }
}

/// What the walk of one property block saw, for checks that span fields.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Seen {
    /// Bit `n` is set when property `n` appeared.
    ids: u64,
    /// The Payload Format Indicator says UTF-8.
    pub(crate) utf8_payload: bool,
}

impl Seen {
    pub(crate) fn has(&self, property: u8) -> bool {
        self.ids & (1 << property) != 0
    }
}

/// The largest Subscription Identifier (3.8.2.1.2).
const SUBSCRIPTION_IDENTIFIER_MAXIMUM: usize = 268_435_455;

/// Walks the property block (its length, then the properties) at `reader`.
pub(crate) fn walk(reader: &mut Reader<'_>, block: Block) -> Result<Seen, CodecError> {
    let len = reader.varint("property length")?;
    let mut properties = reader.split(len, "the property block")?;
    let mut seen = Seen::default();
    while !properties.is_empty() {
        let property = properties.u8("property identifier")?;
        if !block.allowed().contains(&property) {
            return Err(CodecError::malformed(format!(
                "property 0x{property:02X} is not valid in {}",
                block.name()
            )));
        }
        let bit = 1u64 << property;
        if property != id::USER_PROPERTY && seen.ids & bit != 0 {
            return Err(CodecError::protocol(format!(
                "{} appears more than once in {}",
                name(property),
                block.name()
            )));
        }
        seen.ids |= bit;
        check_value(&mut properties, block, property, &mut seen)?;
    }
    if seen.has(id::AUTHENTICATION_DATA) && !seen.has(id::AUTHENTICATION_METHOD) {
        return Err(CodecError::protocol(format!(
            "Authentication Data without an Authentication Method in {}",
            block.name()
        )));
    }
    Ok(seen)
}

/// Reads property `property`'s value and checks its range.
fn check_value(
    reader: &mut Reader<'_>,
    block: Block,
    property: u8,
    seen: &mut Seen,
) -> Result<(), CodecError> {
    let out_of_range = |value: &dyn std::fmt::Display| {
        Err(CodecError::protocol(format!(
            "{} of {value} in {}",
            name(property),
            block.name()
        )))
    };
    match property {
        // Byte properties whose only values are 0 and 1 (3.1.2.11.6,
        // 3.1.2.11.7, 3.3.2.3.2).
        id::PAYLOAD_FORMAT_INDICATOR
        | id::REQUEST_RESPONSE_INFORMATION
        | id::REQUEST_PROBLEM_INFORMATION => {
            let value = reader.u8(name(property))?;
            if value > 1 {
                return out_of_range(&value);
            }
            if property == id::PAYLOAD_FORMAT_INDICATOR {
                seen.utf8_payload = value == 1;
            }
        }
        // A Receive Maximum or Maximum Packet Size of 0 (3.1.2.11.3, 3.1.2.11.4).
        id::RECEIVE_MAXIMUM => {
            let value = reader.u16(name(property))?;
            if value == 0 {
                return out_of_range(&value);
            }
        }
        id::MAXIMUM_PACKET_SIZE => {
            let value = reader.u32(name(property))?;
            if value == 0 {
                return out_of_range(&value);
            }
        }
        // A Topic Alias of 0 is not permitted ([MQTT-3.3.2-8]); the
        // specification's code for a topic alias out of range is 0x94.
        id::TOPIC_ALIAS => {
            if reader.u16(name(property))? == 0 {
                return Err(CodecError {
                    reason: DisconnectReasonCode::TopicAliasInvalid,
                    message: "Topic Alias 0 in PUBLISH".into(),
                });
            }
        }
        id::TOPIC_ALIAS_MAXIMUM => {
            reader.u16(name(property))?;
        }
        id::MESSAGE_EXPIRY_INTERVAL | id::SESSION_EXPIRY_INTERVAL | id::WILL_DELAY_INTERVAL => {
            reader.u32(name(property))?;
        }
        id::SUBSCRIPTION_IDENTIFIER => {
            let value = reader.varint(name(property))?;
            if block == Block::Publish {
                return Err(CodecError::protocol(
                    "a Subscription Identifier in a PUBLISH from a client",
                ));
            }
            if value == 0 || value > SUBSCRIPTION_IDENTIFIER_MAXIMUM {
                return out_of_range(&value);
            }
        }
        // The Response Topic is a topic name: no wildcards ([MQTT-3.3.2-14])
        // and not empty ([MQTT-4.7.3-1]).
        id::RESPONSE_TOPIC => {
            let value = reader.utf8(name(property))?;
            let value = std::str::from_utf8(value)
                .map_err(|_| CodecError::malformed("Response Topic is not valid UTF-8"))?;
            if value.is_empty() || !topic::is_valid_name(value) {
                return Err(CodecError::protocol(format!(
                    "Response Topic in {} is not a valid topic name",
                    block.name()
                )));
            }
        }
        id::CONTENT_TYPE | id::AUTHENTICATION_METHOD | id::REASON_STRING | id::SERVER_REFERENCE => {
            reader.utf8(name(property))?;
        }
        id::CORRELATION_DATA | id::AUTHENTICATION_DATA => {
            reader.binary(name(property))?;
        }
        id::USER_PROPERTY => {
            check_string(
                reader.binary("a user property name")?,
                "a user property name",
            )?;
            check_string(
                reader.binary("a user property value")?,
                "a user property value",
            )?;
        }
        // `walk` lets only the identifiers above through.
        _ => {
            return Err(CodecError::malformed(format!(
                "property 0x{property:02X} is not valid in {}",
                block.name()
            )))
        }
    }
    Ok(())
}
