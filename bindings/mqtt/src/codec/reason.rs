//! MQTT 5 reason codes by name, for the metrics' labels and the events:
//! `0x87 not_authorized` as a label, `0x87 not authorized` in an event.

use std::fmt;

use mqtt_bytes_v5::ConnectReturnCode;

/// The MQTT 5 code of a CONNACK (3.1.1's own codes mapped to theirs).
pub(crate) fn connack_code(code: ConnectReturnCode) -> u8 {
    use ConnectReturnCode::*;
    match code {
        Success => 0x00,
        UnspecifiedError => 0x80,
        MalformedPacket => 0x81,
        ProtocolError => 0x82,
        ImplementationSpecificError => 0x83,
        UnsupportedProtocolVersion | RefusedProtocolVersion => 0x84,
        ClientIdentifierNotValid | BadClientId => 0x85,
        BadUserNamePassword => 0x86,
        NotAuthorized => 0x87,
        ServerUnavailable | ServiceUnavailable => 0x88,
        ServerBusy => 0x89,
        Banned => 0x8A,
        BadAuthenticationMethod => 0x8C,
        TopicNameInvalid => 0x90,
        PacketTooLarge => 0x95,
        QuotaExceeded => 0x97,
        PayloadFormatInvalid => 0x99,
        RetainNotSupported => 0x9A,
        QoSNotSupported => 0x9B,
        UseAnotherServer => 0x9C,
        ServerMoved => 0x9D,
        ConnectionRateExceeded => 0x9F,
    }
}

/// The name of an MQTT 5 reason code: the metrics' `reason` label, and
/// what events write after the code ([`Reason`]).
pub(crate) fn reason_name(code: u8) -> &'static str {
    match code {
        0x00 => "success",
        0x04 => "disconnect_with_will_message",
        0x80 => "unspecified_error",
        0x81 => "malformed_packet",
        0x82 => "protocol_error",
        0x83 => "implementation_specific_error",
        0x84 => "unsupported_protocol_version",
        0x85 => "client_identifier_not_valid",
        0x86 => "bad_user_name_or_password",
        0x87 => "not_authorized",
        0x88 => "server_unavailable",
        0x89 => "server_busy",
        0x8A => "banned",
        0x8B => "server_shutting_down",
        0x8C => "bad_authentication_method",
        0x8D => "keep_alive_timeout",
        0x8E => "session_taken_over",
        0x8F => "topic_filter_invalid",
        0x90 => "topic_name_invalid",
        0x91 => "packet_identifier_in_use",
        0x92 => "packet_identifier_not_found",
        0x93 => "receive_maximum_exceeded",
        0x94 => "topic_alias_invalid",
        0x95 => "packet_too_large",
        0x96 => "message_rate_too_high",
        0x97 => "quota_exceeded",
        0x98 => "administrative_action",
        0x99 => "payload_format_invalid",
        0x9A => "retain_not_supported",
        0x9B => "qos_not_supported",
        0x9C => "use_another_server",
        0x9D => "server_moved",
        0x9E => "shared_subscriptions_not_supported",
        0x9F => "connection_rate_exceeded",
        0xA0 => "maximum_connect_time",
        0xA1 => "subscription_identifiers_not_supported",
        0xA2 => "wildcard_subscriptions_not_supported",
        _ => "other",
    }
}

/// An MQTT 5 reason code as events write it: `0x87 not authorized`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reason(pub(crate) u8);

impl Reason {
    /// The code of a CONNACK.
    pub(crate) fn connack(code: ConnectReturnCode) -> Self {
        Self(connack_code(code))
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match reason_name(self.0) {
            "other" => write!(f, "0x{:02X}", self.0),
            name => write!(f, "0x{:02X} {}", self.0, name.replace('_', " ")),
        }
    }
}
