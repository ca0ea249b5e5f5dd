//! tcp client: opens connections upstream; relays whole streams routed to it.
//!
//! The destination is `options.host:port`, `options.hosts` (beyond Zilla), or
//! the authority the caller names. Every address a destination resolves to
//! is a candidate; [`Fleet`] decides the order and which ones back off.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use zilla_engine::telemetry::duration;
use zilla_engine::telemetry::metrics::stream::{metered, stream_family, StreamFamily};
use zilla_engine::{
    async_trait, Authority, Binding, BindingContext, BuildError, ByteStream, ConnectRequest,
    Events, Ports, Shutdown, StreamConnector, StreamHandler, StreamInfo,
};

use crate::fleet::{Candidate, Failure, Fleet, DEFAULT_CONNECT_TIMEOUT, PROPERTY_CONNECT_TIMEOUT};
use crate::options::TcpOptions;
use crate::server::{seconds_property, SocketOptions};

pub(crate) fn build(cx: &mut BindingContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
    let options = cx.options::<TcpOptions>()?;
    if !cx.config().routes.is_empty() || cx.config().exit.is_some() {
        return Err(cx.error(
            "",
            "a tcp client is the end of a pipeline; it takes no `routes` or `exit`",
        ));
    }
    if options.backlog.is_some() {
        return Err(cx.error("options.backlog", "`backlog` applies to tcp servers only"));
    }
    if options.proxy_protocol.is_some() {
        return Err(cx.error(
            "options.proxy-protocol",
            "`proxy-protocol` applies to tcp servers only",
        ));
    }
    let port = match &options.port {
        Some(spec) => {
            let mut ports = spec.ports();
            match (ports.next(), ports.next()) {
                (Some(port), None) => Some(port),
                _ => {
                    return Err(
                        cx.error("options.port", "a tcp client connects to exactly one port")
                    )
                }
            }
        }
        None => None,
    };
    let destinations = match (&options.host, &options.hosts, port) {
        (Some(_), Some(_), _) => {
            return Err(cx.error("options.hosts", "give `host` or `hosts`, not both"))
        }
        (Some(host), None, Some(port)) => vec![Authority {
            host: host.clone(),
            port,
        }],
        (Some(_), None, None) => return Err(cx.error("options", "`host` needs a `port`")),
        (None, Some(hosts), _) if hosts.is_empty() => {
            return Err(cx.error("options.hosts", "`hosts` needs at least one `host:port`"))
        }
        (None, Some(hosts), _) => {
            let mut destinations = Vec::with_capacity(hosts.len());
            for (index, entry) in hosts.iter().enumerate() {
                let Some(port) = entry.port.or(port) else {
                    return Err(cx.error(
                        &format!("options.hosts[{index}]"),
                        format!("`{entry}` names no port, and there is no `port`"),
                    ));
                };
                destinations.push(Authority {
                    host: entry.host.clone(),
                    port,
                });
            }
            destinations
        }
        (None, None, Some(_)) => return Err(cx.error("options", "`port` needs a `host`")),
        (None, None, None) => Vec::new(),
    };
    let timeout = seconds_property(cx, PROPERTY_CONNECT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT)?;
    Ok(Arc::new(TcpClient {
        destinations,
        timeout,
        fleet: Fleet::default(),
        socket: SocketOptions::from(&options),
        events: cx.events(),
        shutdown: cx.shutdown(),
        streams: stream_family(&cx.metrics()),
    }))
}

struct TcpClient {
    /// Where to connect, in the configured order; empty means the caller
    /// must name an authority.
    destinations: Vec<Authority>,
    /// How long one attempt, to one address, may take.
    timeout: Duration,
    fleet: Fleet,
    socket: SocketOptions,
    events: Events,
    shutdown: Shutdown,
    /// Where opened connections are counted (`stream.*`), if anywhere.
    streams: StreamFamily,
}

impl Binding for TcpClient {
    fn ports(self: Arc<Self>) -> Ports {
        Ports::new()
            .with::<dyn StreamConnector>(self.clone())
            .with::<dyn StreamHandler>(self)
    }
}

impl TcpClient {
    /// Every address `destinations` resolve to, in order and without
    /// repeats, and the destinations that resolved to none, with why.
    async fn resolve(
        &self,
        destinations: &[Authority],
    ) -> (Vec<Candidate>, Vec<(Authority, io::Error)>) {
        let mut candidates: Vec<Candidate> = Vec::new();
        let mut unresolved = Vec::new();
        for name in destinations {
            let lookup = tokio::net::lookup_host((name.host.as_str(), name.port));
            let found: io::Result<Vec<SocketAddr>> =
                match tokio::time::timeout(self.timeout, lookup).await {
                    Ok(found) => found.map(Iterator::collect),
                    Err(_) => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("name lookup timed out after {}", duration(self.timeout)),
                    )),
                };
            match found {
                Ok(addrs) if addrs.is_empty() => unresolved.push((
                    name.clone(),
                    io::Error::new(io::ErrorKind::NotFound, "the name has no address"),
                )),
                Ok(addrs) => {
                    for addr in addrs {
                        if candidates.iter().all(|c| c.addr != addr) {
                            candidates.push(Candidate {
                                name: name.clone(),
                                addr,
                            });
                        }
                    }
                }
                Err(error) => unresolved.push((name.clone(), error)),
            }
        }
        (candidates, unresolved)
    }

    /// `TCP_CONNECT_FAILED` for one address of several: which, and what next.
    fn report(&self, failure: &Failure<'_>) {
        let next = match failure.next {
            Some(next) => format!("trying {next}"),
            None => "no address left".to_owned(),
        };
        self.events.error(
            "TCP_CONNECT_FAILED",
            format!(
                "connect to {} failed; backing off {}; {next}",
                failure.candidate,
                duration(failure.backoff)
            ),
            failure.error,
        );
    }
}

#[async_trait]
impl StreamConnector for TcpClient {
    async fn connect(&self, request: ConnectRequest) -> io::Result<ByteStream> {
        let requested;
        let destinations = match (&self.destinations[..], request.authority) {
            ([], Some(authority)) => {
                requested = [authority];
                &requested[..]
            }
            ([], None) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "tcp client has no `options.host`/`port` and the caller named no authority",
                ))
            }
            (configured, _) => configured,
        };
        let (candidates, unresolved) = self.resolve(destinations).await;
        // One address fails as it always did: in the caller's event, with the
        // destination as configured. Of several, each failure is an event.
        let several = candidates.len() + unresolved.len() > 1;
        if several {
            for (name, error) in &unresolved {
                let next = if candidates.is_empty() {
                    "no address left"
                } else {
                    "trying the others"
                };
                self.events.error(
                    "TCP_CONNECT_FAILED",
                    format!("cannot resolve {name}; {next}"),
                    error,
                );
            }
        }
        if candidates.is_empty() {
            let (name, error) = unresolved.into_iter().next().ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "no destination to connect to")
            })?;
            return Err(io::Error::new(
                error.kind(),
                format!("connect to {name}: {error}"),
            ));
        }
        let connected = self
            .fleet
            .connect(&candidates, self.timeout, TcpStream::connect, |failure| {
                if several {
                    self.report(failure);
                }
            })
            .await;
        let stream = match connected {
            Ok((stream, _)) => stream,
            Err(error) if !several => {
                let name = &candidates[0].name;
                return Err(io::Error::new(
                    error.kind(),
                    format!("connect to {name}: {error}"),
                ));
            }
            Err(error) => {
                let names: Vec<String> = destinations.iter().map(ToString::to_string).collect();
                return Err(io::Error::new(
                    error.kind(),
                    format!(
                        "connect to none of {}; the last failed: {error}",
                        names.join(", ")
                    ),
                ));
            }
        };
        self.socket.apply(&stream)?;
        if let (Some(reached), Ok(local), Ok(remote)) =
            (&request.reached, stream.local_addr(), stream.peer_addr())
        {
            let _ = reached.set((local, remote));
        }
        Ok(metered(&self.streams, stream))
    }

    /// `host:port` or every entry of `hosts`, as configured.
    fn destinations(&self) -> Vec<Authority> {
        self.destinations.clone()
    }
}

#[async_trait]
impl StreamHandler for TcpClient {
    /// Relays a whole stream to the destination: the layer-4 proxy.
    async fn handle(&self, mut inbound: ByteStream, info: StreamInfo) {
        let peer = info.peer;
        let request = ConnectRequest {
            authority: None,
            origin: info,
            reached: None,
        };
        let mut outbound = match self.connect(request).await {
            Ok(outbound) => outbound,
            Err(e) => {
                let from = peer.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
                self.events
                    .error("TCP_CONNECT_FAILED", format!("relay for {from} closed"), &e);
                return;
            }
        };
        tokio::select! {
            // Half-closes are forwarded; the relay ends when both directions have.
            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
            _ = self.shutdown.terminated() => {}
        }
    }
}
