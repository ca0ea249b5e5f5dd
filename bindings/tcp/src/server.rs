//! tcp server: listens, routes each accepted connection, hands it to its exit.
//!
//! Sockets come from the engine's listener pool: after a reload, a server
//! listening on an address the previous configuration listened on accepts
//! from that same socket, so no connection attempt is refused in between.
//!
//! With `options.proxy-protocol`, a connection is routed only once its
//! PROXY protocol header has been read (in its own task, so a slow header
//! holds up no other connection), by the client address the header names.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use zilla_engine::telemetry::duration;
use zilla_engine::telemetry::metrics::stream::{metered, stream_family, StreamFamily};
use zilla_engine::{
    async_trait, port::AsyncStream, Authorizations, Binding, BindingContext, BuildError,
    ByteStream, Events, ListenKey, Listeners, Routes, Shutdown, StartContext, StartError,
    StreamHandler, StreamInfo,
};

use crate::options::{TcpCondition, TcpOptions};
use crate::proxy_protocol::{self, ProxyProtocol, Refused};

const DEFAULT_HOST: &str = "0.0.0.0";
const DEFAULT_BACKLOG: u32 = 1024;
/// Accept errors such as EMFILE mean "try again later"; these bound the back-off.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

pub(crate) fn build(cx: &mut BindingContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
    let options = cx.options::<TcpOptions>();
    let routes = cx.required_routes::<TcpCondition, dyn StreamHandler>();
    let options = options?;
    let Some(ports) = options.port.clone() else {
        return Err(cx.error("options.port", "a tcp server needs `port`"));
    };
    if options.hosts.is_some() {
        return Err(cx.error("options.hosts", "`hosts` applies to tcp clients only"));
    }
    let proxy = match options.proxy_protocol.clone() {
        Some(proxy) => Some(Arc::new(ProxyProtocol {
            options: proxy,
            timeout: seconds_property(
                cx,
                proxy_protocol::PROPERTY_TIMEOUT,
                proxy_protocol::DEFAULT_TIMEOUT,
            )?,
        })),
        None => None,
    };
    Ok(Arc::new(TcpServer {
        name: cx.name().to_owned(),
        listeners: cx.listeners(),
        host: options
            .host
            .clone()
            .unwrap_or_else(|| DEFAULT_HOST.to_owned()),
        ports: ports.ports().collect(),
        backlog: options.backlog.unwrap_or(DEFAULT_BACKLOG),
        socket: SocketOptions::from(&options),
        routes: Arc::new(routes?),
        streams: stream_family(&cx.metrics()),
        proxy,
    }))
}

/// Engine property `name` in seconds (fractions allowed), or `default`.
pub(crate) fn seconds_property(
    cx: &mut BindingContext<'_>,
    name: &str,
    default: Duration,
) -> Result<Duration, BuildError> {
    let Some(value) = cx.property(name).map(str::to_owned) else {
        return Ok(default);
    };
    match value.parse::<f64>().map(Duration::try_from_secs_f64) {
        Ok(Ok(seconds)) if !seconds.is_zero() => Ok(seconds),
        _ => Err(cx.error("", format!("-P {name}: expected seconds, found `{value}`"))),
    }
}

/// Per-connection socket settings shared by server and client.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SocketOptions {
    nodelay: bool,
    keepalive: bool,
}

impl From<&TcpOptions> for SocketOptions {
    fn from(options: &TcpOptions) -> Self {
        Self {
            nodelay: options.nodelay.unwrap_or(true),
            keepalive: options.keepalive.unwrap_or(false),
        }
    }
}

impl SocketOptions {
    pub(crate) fn apply(self, stream: &TcpStream) -> io::Result<()> {
        stream.set_nodelay(self.nodelay)?;
        if self.keepalive {
            socket_keepalive(stream)?;
        }
        Ok(())
    }
}

fn socket_keepalive(stream: &TcpStream) -> io::Result<()> {
    // tokio has no keep-alive setter on a connected stream; socket2 borrows the
    // socket without taking it over.
    socket2::SockRef::from(stream).set_keepalive(true)
}

struct TcpServer {
    name: String,
    listeners: Listeners,
    host: String,
    ports: Vec<u16>,
    backlog: u32,
    socket: SocketOptions,
    routes: Arc<Routes<TcpCondition, dyn StreamHandler>>,
    /// Where accepted connections are counted (`stream.*`), if anywhere.
    streams: StreamFamily,
    proxy: Option<Arc<ProxyProtocol>>,
}

#[async_trait]
impl Binding for TcpServer {
    async fn start(self: Arc<Self>, cx: StartContext) -> Result<Vec<SocketAddr>, StartError> {
        let mut listeners = Vec::with_capacity(self.ports.len());
        for &port in &self.ports {
            let listener = self.listen(port).await?;
            let local = listener
                .local_addr()
                .map_err(|e| StartError::new("cannot read the listening address", e))?;
            listeners.push((listener, port, local));
        }
        let mut addresses = Vec::with_capacity(listeners.len());
        for (listener, configured_port, local) in listeners {
            addresses.push(local);
            // A configured port 0 means "any free port": route on the one bound.
            let listen_port = if configured_port == 0 {
                local.port()
            } else {
                configured_port
            };
            let acceptor = Acceptor {
                listener,
                serve: Arc::new(Serve {
                    listen_port,
                    socket: self.socket,
                    routes: self.routes.clone(),
                    events: cx.events.clone(),
                    shutdown: cx.shutdown.clone(),
                    streams: self.streams.clone(),
                    proxy: self.proxy.clone(),
                }),
            };
            cx.shutdown.spawn_listener(acceptor.run());
        }
        Ok(addresses)
    }
}

impl TcpServer {
    async fn listen(&self, port: u16) -> Result<Arc<TcpListener>, StartError> {
        let target = format!("{}:{port}", self.host);
        let cannot = |e: io::Error| StartError::new(format!("cannot listen on {target}"), e);
        let address = tokio::net::lookup_host((self.host.as_str(), port))
            .await
            .map_err(cannot)?
            .next()
            .ok_or_else(|| {
                cannot(io::Error::new(
                    io::ErrorKind::NotFound,
                    "host has no address",
                ))
            })?;
        let bind = || {
            let socket = if address.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }?;
            socket.set_reuseaddr(true)?;
            socket.bind(address)?;
            socket.listen(self.backlog)
        };
        let (listener, _shared) = self
            .listeners
            .listen(ListenKey::new(address, &self.name), bind)
            .map_err(cannot)?;
        Ok(listener)
    }
}

struct Acceptor {
    /// Shared with the configuration this one replaced, or its successor.
    listener: Arc<TcpListener>,
    serve: Arc<Serve>,
}

impl Acceptor {
    async fn run(self) {
        let serve = &self.serve;
        let mut backoff = ACCEPT_BACKOFF_MIN;
        loop {
            let accepted = tokio::select! {
                // Stopping wins over a connection that is ready at the same
                // time: once a successor has taken over, it gets them all.
                biased;
                _ = serve.shutdown.accepting_stopped() => return,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    serve.dispatch(stream, peer);
                }
                // The peer gave up between SYN and accept; nothing is wrong here.
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    serve.events.error(
                        "TCP_ACCEPT_FAILED",
                        format!(
                            "accept on port {} failed; retrying in {}",
                            serve.listen_port,
                            duration(backoff)
                        ),
                        &e,
                    );
                    // Out of descriptors (EMFILE/ENFILE) or memory: back off so the
                    // loop does not spin, and keep serving once resources free up.
                    tokio::select! {
                        _ = serve.shutdown.accepting_stopped() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            }
        }
    }
}

/// What a listener does with the connections it accepts.
struct Serve {
    listen_port: u16,
    socket: SocketOptions,
    routes: Arc<Routes<TcpCondition, dyn StreamHandler>>,
    events: Events,
    shutdown: Shutdown,
    streams: StreamFamily,
    proxy: Option<Arc<ProxyProtocol>>,
}

impl Serve {
    fn dispatch(self: &Arc<Self>, stream: TcpStream, socket_peer: SocketAddr) {
        let local = match stream.local_addr() {
            Ok(local) => local,
            Err(_) => return,
        };
        if let Err(e) = self.socket.apply(&stream) {
            self.events.error(
                "TCP_SOCKET_FAILED",
                format!("cannot configure connection from {socket_peer}"),
                &e,
            );
            return;
        }
        let Some(proxy) = self.proxy.clone() else {
            // No header to wait for: routed at once, by the socket's peer.
            if let Some((handler, stream, info)) =
                self.route(stream, socket_peer, socket_peer, local)
            {
                // An async block keeps what it captured for its whole life,
                // moved out or not: the stream and its 168-byte info would
                // take room in every connection's task until it ends (a
                // tokio task of 384 bytes instead of 256). Boxed, they cost
                // 8 bytes, and the box is freed at the task's first poll
                // (moved into the inner block, whose end drops it: emptied
                // in place, it would stay allocated until the task ends).
                let accepted = Box::new((stream, info));
                self.shutdown.spawn_connection(async move {
                    let (stream, info) = {
                        let accepted = accepted;
                        *accepted
                    };
                    handler.handle(stream, info).await
                });
            }
            return;
        };
        let serve = self.clone();
        self.shutdown.spawn_connection(async move {
            let admitted = tokio::select! {
                admitted = proxy.admit(stream, socket_peer) => admitted,
                // A header still awaited at the end of the grace period is
                // not worth waiting out its deadline for.
                _ = serve.shutdown.terminated() => return,
            };
            let admitted = match admitted {
                Ok(admitted) => admitted,
                Err(Refused(Some(why))) => {
                    serve.events.warn("TCP_PROXY_PROTOCOL_REJECTED", why);
                    return;
                }
                Err(Refused(None)) => return,
            };
            if let Some((handler, stream, info)) =
                serve.route(admitted.stream, admitted.peer, socket_peer, local)
            {
                handler.handle(stream, info).await;
            }
        });
    }

    /// The exit for a connection from `peer` (the client: the socket's peer,
    /// or the one its PROXY protocol header named), with the stream counted.
    fn route(
        &self,
        stream: impl AsyncStream,
        peer: SocketAddr,
        socket_peer: SocketAddr,
        local: SocketAddr,
    ) -> Option<(Arc<dyn StreamHandler>, ByteStream, StreamInfo)> {
        let resolved = self.routes.resolve(&Authorizations::new(), |condition| {
            condition.matches(peer, local, self.listen_port)
        });
        let Some(resolved) = resolved else {
            let from = if peer == socket_peer {
                peer.to_string()
            } else {
                format!("{peer} (via {socket_peer})")
            };
            self.events.warn(
                "TCP_ROUTE_REJECTED",
                format!(
                    "no route for {from} on port {}; connection closed",
                    self.listen_port
                ),
            );
            return None;
        };
        let info = StreamInfo {
            peer: Some(peer),
            local: Some(local),
            ..StreamInfo::default()
        };
        let handler = resolved.exit.port.clone();
        Some((handler, metered(&self.streams, stream), info))
    }
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
