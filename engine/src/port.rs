//! Ports: the typed interfaces a binding offers to the bindings that route to it.
//!
//! A binding's exits are resolved at build time as the port the binding needs
//! (`cx.exit::<dyn StreamHandler>(name)`), so a pipeline that plugs a binding
//! into something that cannot take its streams fails at startup, naming both.
//! The engine defines the byte-stream ports; protocol crates define their own.

use std::any::{Any, TypeId};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

/// A port type, implemented for the `dyn Trait` that bindings exchange.
pub trait Port: Send + Sync + 'static {
    /// What a binding offering this port does, as a verb phrase completing
    /// "which does not ...", e.g. `accept byte streams`.
    const CAPABILITY: &'static str;
}

/// The ports one binding offers, keyed by port type.
#[derive(Default)]
pub struct Ports {
    entries: Vec<PortEntry>,
}

struct PortEntry {
    type_id: TypeId,
    capability: &'static str,
    /// Holds an `Arc<P>` for the port type `P` named by `type_id`.
    port: Box<dyn Any + Send + Sync>,
}

impl Ports {
    /// No ports: the binding cannot be routed to.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `port` as the implementation of port type `P`.
    pub fn with<P: Port + ?Sized>(mut self, port: Arc<P>) -> Self {
        self.entries.push(PortEntry {
            type_id: TypeId::of::<P>(),
            capability: P::CAPABILITY,
            port: Box::new(port),
        });
        self
    }

    /// The implementation of port type `P`, when offered.
    pub fn get<P: Port + ?Sized>(&self) -> Option<Arc<P>> {
        self.entries
            .iter()
            .find(|entry| entry.type_id == TypeId::of::<P>())
            .and_then(|entry| entry.port.downcast_ref::<Arc<P>>())
            .cloned()
    }

    /// What the offered ports can do, for error messages.
    pub fn capabilities(&self) -> Vec<&'static str> {
        self.entries.iter().map(|entry| entry.capability).collect()
    }
}

impl fmt::Debug for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.capabilities()).finish()
    }
}

/// A bidirectional byte stream: a TCP connection, a TLS session over one, or an
/// in-memory pipe in tests.
pub trait AsyncStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> AsyncStream for T {}

/// A boxed byte stream, as bindings hand them to each other.
pub type ByteStream = Box<dyn AsyncStream>;

/// What is known about a stream as it travels down the pipeline.
#[derive(Debug, Clone, Default)]
pub struct StreamInfo {
    /// The remote peer's address, for accepted connections.
    pub peer: Option<SocketAddr>,
    /// The local address the connection arrived on.
    pub local: Option<SocketAddr>,
    /// The TLS server name (SNI) or requested authority.
    pub authority: Option<String>,
    /// The negotiated application protocol (ALPN).
    pub alpn: Option<String>,
    /// The authenticated peer identity, e.g. a client certificate subject.
    pub identity: Option<String>,
    /// Whether the stream arrived over TLS (an http server's `:scheme` is
    /// then `https`).
    pub secure: bool,
    /// What guards granted at an earlier layer, e.g. an http server's
    /// `authorization` on a WebSocket upgrade request; a later binding with
    /// the same guard uses it instead of asking for credentials again.
    pub granted: Vec<Granted>,
}

impl StreamInfo {
    /// What guard `guard` granted this stream at an earlier layer, if anything.
    pub fn granted(&self, guard: &str) -> Option<&Granted> {
        self.granted.iter().find(|granted| &*granted.guard == guard)
    }
}

/// A session a guard granted for credentials presented at an earlier layer.
#[derive(Clone, PartialEq, Eq)]
pub struct Granted {
    /// The guard's name in `guards`.
    pub guard: std::sync::Arc<str>,
    /// What the guard granted.
    pub session: crate::guard::GuardSession,
    /// The credentials it granted them for (e.g. the JWT), for a client
    /// binding that forwards them upstream.
    pub credentials: String,
}

impl fmt::Debug for Granted {
    // Credentials stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Granted")
            .field("guard", &self.guard)
            .field("identity", &self.session.identity)
            .finish_non_exhaustive()
    }
}

/// Inbound port: "here is an accepted byte stream; handle it".
///
/// `handle` owns the stream for its whole life; it runs on the task the stream
/// was accepted on, so one connection never hops between threads.
#[async_trait]
pub trait StreamHandler: Send + Sync + 'static {
    /// Serves `stream` until it ends.
    async fn handle(&self, stream: ByteStream, info: StreamInfo);
}

impl Port for dyn StreamHandler {
    const CAPABILITY: &'static str = "accept byte streams";
}

/// A destination a caller asks a client binding to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What a caller asks of an outbound connection.
#[derive(Debug, Clone, Default)]
pub struct ConnectRequest {
    /// Where to connect, when the caller chooses; otherwise the binding's options decide.
    pub authority: Option<Authority>,
    /// What is known about the stream this connection serves, if any.
    pub origin: StreamInfo,
    /// Where the connection ended up, filled in by the binding that opens
    /// the socket (a tcp client) when the caller asks: `zilla dump` writes
    /// a broker connection's real addresses. Bindings in between (tls, ws)
    /// pass it on with the request.
    pub reached: Option<Reached>,
}

/// The two ends of an opened connection, once known: (local, remote).
pub type Reached = Arc<std::sync::OnceLock<(SocketAddr, SocketAddr)>>;

/// Outbound port: "open a byte stream for me".
#[async_trait]
pub trait StreamConnector: Send + Sync + 'static {
    /// Opens a stream to the requested or configured destination.
    async fn connect(&self, request: ConnectRequest) -> io::Result<ByteStream>;

    /// Where the streams this connector opens end, as configured at the end
    /// of its chain: a tcp client's `host:port` (or every entry of its
    /// `hosts`), which a binding in between (tls, ws) passes on from its own
    /// exit. Empty when unknown or when the caller names the authority. Read
    /// at build time by checks that compare exits (see
    /// [`Authority::same_destination`]); never resolved here.
    fn destinations(&self) -> Vec<Authority> {
        Vec::new()
    }
}

impl Port for dyn StreamConnector {
    const CAPABILITY: &'static str = "open byte streams";
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sink;

    #[async_trait]
    impl StreamHandler for Sink {
        async fn handle(&self, _stream: ByteStream, _info: StreamInfo) {}
    }

    #[test]
    fn ports_are_found_by_type() {
        let ports = Ports::new().with::<dyn StreamHandler>(Arc::new(Sink));
        assert!(ports.get::<dyn StreamHandler>().is_some());
        assert!(ports.get::<dyn StreamConnector>().is_none());
        assert_eq!(ports.capabilities(), vec!["accept byte streams"]);
    }
}
