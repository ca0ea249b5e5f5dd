//! `type: mqtt`: the MQTT proxy.
//!
//! Kind `server` terminates MQTT 3.1.1 and 5.0 sessions arriving as byte
//! streams (from tcp or tls), routes each session, publish and subscription by
//! client id and topic, and carries them to upstream sessions opened through
//! its exits. Kind `client` opens those upstream sessions as MQTT 5 over its
//! own exit (tcp or tls). QoS 1 and 2 publishes are acknowledged to the client
//! only after the broker acknowledged them.

#![forbid(unsafe_code)]

mod admin;
mod client;
pub mod codec;
mod config;
pub mod credentials;
mod dump_frames;
pub mod flow;
mod lazy_map;
mod limits;
mod metrics;
pub mod options;
mod packet_ids;
pub mod port;
mod schema;
mod server;
mod session;
mod shared_broker;
pub mod topic;
mod upstream;

pub use port::{MqttSessions, OpenError, OpenSession, Upstream};

/// Entry points for the fuzz targets in `fuzz/` (not an API).
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::session::fuzz::server_session;
}

use zilla_engine::{register_binding, BindingFactory, Kind};

register_binding!(BindingFactory {
    type_name: "mqtt",
    kinds: &[Kind::Server, Kind::Client],
    build: |cx| match cx.kind() {
        Kind::Server => server::build(cx),
        _ => client::build(cx),
    },
});
