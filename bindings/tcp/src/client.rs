//! tcp client: opens connections upstream; relays whole streams routed to it.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use zilla_engine::telemetry::metrics::stream::{metered, stream_family, StreamFamily};
use zilla_engine::{
    async_trait, Authority, Binding, BindingContext, BuildError, ByteStream, ConnectRequest,
    Events, Ports, Shutdown, StreamConnector, StreamHandler, StreamInfo,
};

use crate::options::TcpOptions;
use crate::server::SocketOptions;

/// How long a connection attempt may take before the caller is told it failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
    let destination = match (&options.host, &options.port) {
        (Some(host), Some(port)) => {
            let mut ports = port.ports();
            match (ports.next(), ports.next()) {
                (Some(port), None) => Some(Authority {
                    host: host.clone(),
                    port,
                }),
                _ => {
                    return Err(
                        cx.error("options.port", "a tcp client connects to exactly one port")
                    )
                }
            }
        }
        (None, None) => None,
        (Some(_), None) => return Err(cx.error("options", "`host` needs a `port`")),
        (None, Some(_)) => return Err(cx.error("options", "`port` needs a `host`")),
    };
    Ok(Arc::new(TcpClient {
        destination,
        socket: SocketOptions::from(&options),
        events: cx.events(),
        shutdown: cx.shutdown(),
        streams: stream_family(&cx.metrics()),
    }))
}

struct TcpClient {
    /// Where to connect; `None` means the caller must name an authority.
    destination: Option<Authority>,
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

#[async_trait]
impl StreamConnector for TcpClient {
    async fn connect(&self, request: ConnectRequest) -> io::Result<ByteStream> {
        let authority = self
            .destination
            .as_ref()
            .or(request.authority.as_ref())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "tcp client has no `options.host`/`port` and the caller named no authority",
                )
            })?;
        let connecting = TcpStream::connect((authority.host.as_str(), authority.port));
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect to {authority} timed out after {CONNECT_TIMEOUT:?}"),
                )
            })?
            .map_err(|e| io::Error::new(e.kind(), format!("connect to {authority}: {e}")))?;
        self.socket.apply(&stream)?;
        Ok(metered(&self.streams, stream))
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
