//! `type: tcp`: the edge of every pipeline.
//!
//! Kind `server` listens on `options.host` and one or more ports, routes each
//! accepted connection by `port` and `cidr`, and hands it to its exit as a byte
//! stream. Kind `client` opens connections to `options.host:port` (or to the
//! authority its caller asks for); routed a whole byte stream, it relays it, so
//! `tcp server -> tcp client` is a layer-4 proxy.

#![forbid(unsafe_code)]

mod client;
mod options;
mod server;

pub use options::{PortSpec, TcpCondition, TcpOptions};

use zilla_engine::{register_binding, BindingFactory, Kind};

register_binding!(BindingFactory {
    type_name: "tcp",
    kinds: &[Kind::Server, Kind::Client],
    build: |cx| match cx.kind() {
        Kind::Server => server::build(cx),
        _ => client::build(cx),
    },
});

#[cfg(test)]
mod metrics_tests;
