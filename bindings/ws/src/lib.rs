//! `type: ws`: WebSocket (RFC 6455) on tungstenite.
//!
//! Kind `server` sits behind an http server (`tcp server -> [tls server ->]
//! http server -> ws server -> mqtt server`): it checks each upgrade request,
//! routes it by subprotocol, scheme, authority and path, answers `101
//! Switching Protocols`, and hands the route's exit the connection as a byte
//! stream carried in data frames. Kind `client` opens a WebSocket over its
//! exit (a tcp or tls client) and hands back the same kind of byte stream,
//! e.g. for an mqtt client reaching mosquitto's `protocol websockets` listener.
//!
//! ```yaml
//! bindings:
//!   north_ws_server:
//!     type: ws
//!     kind: server
//!     routes:
//!       - when:
//!           - protocol: mqtt
//!           - protocol: mqttv3.1
//!         exit: north_mqtt_server
//!   south_ws_client:
//!     type: ws
//!     kind: client
//!     options:
//!       defaults: { protocol: mqtt, path: /mqtt }
//!     exit: south_tcp_client
//! ```
//!
//! # Options
//!
//! A server, as in Zilla, needs none; a client takes `defaults: {protocol,
//! scheme, authority, path}`. Both accept `max-frame-size` and
//! `max-message-size` (bytes, at least 125), which Zilla does not have: the
//! largest frame and the largest reassembled message a peer may send, refused
//! from the frame header with close code 1009. They default to the engine
//! properties `zilla.binding.ws.max.frame.bytes` and
//! `zilla.binding.ws.max.message.bytes`, else 1 MiB each (the mqtt server's
//! default maximum packet size); raise them together with the mqtt
//! server's `maximum-packet-size`.
//!
//! # Routes
//!
//! `when: [{protocol, scheme, authority, path}]`, every field optional, `*`
//! in `authority` and `path` matching any run of characters; `scheme` is
//! `http` or `https` (whether the upgrade arrived over TLS; `ws`/`wss` read
//! the same). Of the routes matching any subprotocol the client offers, the
//! first in route order wins and answers the first offer it matches; no
//! route answers `400` (`WS_ROUTE_REJECTED`).
//!
//! # Frames
//!
//! Binary frames carry the bytes. With an MQTT subprotocol (`mqtt`,
//! `mqttv3.1`), a text frame fails the connection with close code 1003 (MQTT
//! 5 §6.0); with any other, text frames are bytes too and writes are
//! answered in the frame type last received (Zilla's `ws.echo` example with
//! websocat). Protocol faults close with 1002, invalid UTF-8 with 1007, a
//! frame or message over the limit with 1009; each emits
//! `WS_CLOSED_WITH_ERROR`.
//!
//! # Events
//!
//! `WS_HANDSHAKE_REFUSED` (a request that is no valid upgrade: 405, 400 or
//! 426), `WS_ROUTE_REJECTED`, `WS_CLOSED_WITH_ERROR`, and for a client relaying
//! a whole stream, `WS_CONNECT_FAILED`.

#![forbid(unsafe_code)]

mod client;
mod close;
mod handshake;
mod options;
mod schema;
mod server;
mod stream;
#[cfg(test)]
mod testing;

pub use options::{
    Limits, WsCondition, WsDefaults, WsOptions, PROPERTY_MAX_FRAME_BYTES,
    PROPERTY_MAX_MESSAGE_BYTES,
};
pub use stream::{WsStream, MQTT_PROTOCOLS};

use zilla_engine::{register_binding, BindingFactory, Kind};

register_binding!(BindingFactory {
    type_name: "ws",
    kinds: &[Kind::Server, Kind::Client],
    build: |cx| match cx.kind() {
        Kind::Server => server::build(cx),
        _ => client::build(cx),
    },
});
