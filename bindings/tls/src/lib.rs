//! `type: tls` on rustls (ring provider; TLS 1.2 and 1.3 only).
//!
//! Kind `server` terminates TLS with keys from its vault, choosing the
//! certificate by SNI, and routes the decrypted stream by `authority` (SNI),
//! `alpn` and `port`. Kind `client` originates TLS over its exit and verifies
//! the server, presenting the client certificate of the stream's identity
//! when a route's `with.certificate` selects one among its keys. Kind
//! `proxy` reads the ClientHello's SNI and ALPN and routes the
//! still-encrypted stream. What the handshake established (SNI, ALPN, the
//! client certificate's subject) travels on with the stream.

#![forbid(unsafe_code)]

mod authorization;
mod client;
mod names;
mod options;
mod prefixed;
mod proxy;
mod refusals;
mod revocation;
mod schema;
mod select;
mod server;
#[cfg(test)]
mod tests;

pub use options::{
    CertificatesFormat, Mutual, TlsAuthorization, TlsCondition, TlsCredentials, TlsOptions,
};
pub use server::PROPERTY_HANDSHAKE_TIMEOUT;

use std::sync::Arc;

use zilla_engine::{register_binding, BindingFactory, Kind};

register_binding!(BindingFactory {
    type_name: "tls",
    kinds: &[Kind::Server, Kind::Client, Kind::Proxy],
    build: |cx| match cx.kind() {
        Kind::Server => server::build(cx),
        Kind::Proxy => proxy::build(cx),
        _ => client::build(cx),
    },
});

/// The one crypto provider of the workspace (see docs/decisions).
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
