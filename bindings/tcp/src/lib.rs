//! `type: tcp`: the edge of every pipeline.
//!
//! Kind `server` listens on `options.host` and one or more ports, routes each
//! accepted connection by `port` and `cidr`, and hands it to its exit as a byte
//! stream. Kind `client` opens connections to `options.host:port` (or to the
//! authority its caller asks for); routed a whole byte stream, it relays it, so
//! `tcp server -> tcp client` is a layer-4 proxy.
//!
//! Beyond Zilla: a server with `options.proxy-protocol` takes the client's
//! address from the PROXY protocol header its load balancer sends
//! (module `proxy_protocol`), and a client with `options.hosts` (or a `host` that
//! resolves to several addresses) fails over between them (module `fleet`).

#![forbid(unsafe_code)]

mod client;
mod fleet;
mod options;
mod prefixed;
mod proxy_protocol;
mod schema;
mod server;

pub use options::{
    HostPort, PortSpec, ProxyProtocolMode, ProxyProtocolOptions, TcpCondition, TcpOptions,
};

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
mod config_tests;
#[cfg(test)]
mod metrics_tests;
#[cfg(test)]
mod proxy_protocol_tests;
