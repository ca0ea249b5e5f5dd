//! How a session ends: why ([`End`]) and how the driver closes the
//! connections ([`Closing`]); the state machine decides both.

use mqtt_bytes_v5::{Disconnect, DisconnectProperties, DisconnectReasonCode};

/// Why a session ends.
#[derive(Debug)]
pub(crate) enum End {
    /// The client sent DISCONNECT, forwarded upstream.
    ClientDisconnected,
    /// The client's connection ended without DISCONNECT: the brokers see an
    /// abrupt loss too, so wills fire.
    ClientLost(String),
    /// The proxy ends the session with this reason (protocol violation,
    /// keep-alive timeout, ...); upstreams are dropped so wills fire.
    Refuse(DisconnectReasonCode, String),
    /// An upstream failed or went away.
    UpstreamLost(usize, String),
    /// An upstream's connection ended cleanly without DISCONNECT. From an
    /// MQTT 3.1.1 broker that is how a session taken over through another
    /// proxy replica ends (3.1.1 has no server DISCONNECT).
    UpstreamClosed(usize),
    /// An upstream sent DISCONNECT; relayed to the client. Boxed: an
    /// `End` is held across an await by every session's future, and the
    /// packet (88 bytes) would more than double it for a rare ending.
    UpstreamDisconnected(usize, Box<Disconnect>),
    /// Another connection with the same client id arrived.
    TakenOver,
    /// The credentials the session was authorized with expired.
    Expired,
    /// A re-authentication named another Authentication Method than the
    /// CONNECT (DISCONNECT 0x8C, which the codec crate has no name for).
    BadAuthenticationMethod(String),
    /// The engine is shutting down.
    Draining,
    /// An operator ended the session (`zilla disconnect`): DISCONNECT 0x98
    /// to an MQTT 5 client; upstreams dropped so wills fire.
    Administrative,
}

/// How the driver closes the connections once `Session::finish` queued
/// the last packets. Upstreams that are not flushed are dropped without
/// DISCONNECT: an abrupt loss for the brokers, so wills fire.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Closing {
    /// Write everything queued on both sides, then close.
    FlushAll,
    /// Close at once; nothing more is written.
    Abort,
    /// Write what the client is owed (its DISCONNECT), then close.
    CloseClient,
    /// Write the upstreams' DISCONNECTs, then close the client as above.
    FlushUpstreamsThenCloseClient,
}

/// A DISCONNECT with `reason`, and `message` as its reason string.
pub(crate) fn disconnect(reason: DisconnectReasonCode, message: Option<String>) -> Disconnect {
    Disconnect {
        reason_code: reason,
        properties: message.map(|reason_string| DisconnectProperties {
            session_expiry_interval: None,
            reason_string: Some(reason_string),
            user_properties: Vec::new(),
            server_reference: None,
        }),
    }
}
