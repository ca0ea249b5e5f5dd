//! tls client: originates TLS over its exit and verifies the server.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio_rustls::TlsConnector;
use zilla_engine::{
    async_trait, Authority, Binding, BindingContext, BuildError, ByteStream, ConnectRequest,
    Events, Exit, Ports, Shutdown, StreamConnector, StreamHandler, StreamInfo,
};

use crate::options::{TlsOptions, TlsVersion};
use crate::provider;
use crate::server::trust_roots;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn build(cx: &mut BindingContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
    let options = cx.options::<TlsOptions>()?;
    if options.mutual.is_some() {
        return Err(cx.error(
            "options.mutual",
            "`mutual` applies to tls servers; a client presents `keys`",
        ));
    }
    if options.authorization.is_some() {
        return Err(cx.error(
            "options.authorization",
            "`authorization` applies to tls servers, whose guard decides on client certificates",
        ));
    }
    if options.keys.len() > 1 {
        return Err(cx.error("options.keys", "a tls client presents at most one key"));
    }
    if !cx.config().routes.is_empty() {
        return Err(cx.error("routes", "a tls client takes its `exit` only, no `routes`"));
    }
    let Some(exit) = cx.default_exit::<dyn StreamConnector>()? else {
        return Err(cx.error(
            "",
            "a tls client needs an `exit` that opens byte streams (a tcp client)",
        ));
    };
    let roots = trust_roots(cx, &options, true)?;
    if roots.is_empty() {
        return Err(cx.error(
            "options.trust",
            "nothing to verify the server with: set `trust` or `trustcacerts: true`",
        ));
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(TlsVersion::versions(options.version))
        .map_err(|e| cx.error("options.version", e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match options.keys.first() {
        Some(alias) => {
            let vault = cx.binding_vault()?;
            let entry = vault
                .key(alias)
                .map_err(|e| cx.error("options.keys[0]", e.to_string()))?;
            builder
                .with_client_auth_cert(entry.chain, entry.key)
                .map_err(|e| {
                    cx.error("options.keys[0]", format!("`{alias}` cannot be used: {e}"))
                })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = options.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let server_name =
        match options.sni.first() {
            Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| {
                cx.error("options.sni[0]", format!("`{name}` is not a server name"))
            })?),
            None => None,
        };
    Ok(Arc::new(TlsClient {
        connector: TlsConnector::from(Arc::new(config)),
        server_name,
        exit,
        events: cx.events(),
        shutdown: cx.shutdown(),
    }))
}

struct TlsClient {
    connector: TlsConnector,
    /// The name sent and verified; else the caller's requested authority.
    server_name: Option<ServerName<'static>>,
    exit: Exit<dyn StreamConnector>,
    events: Events,
    shutdown: Shutdown,
}

impl Binding for TlsClient {
    fn ports(self: Arc<Self>) -> Ports {
        Ports::new()
            .with::<dyn StreamConnector>(self.clone())
            .with::<dyn StreamHandler>(self)
    }
}

#[async_trait]
impl StreamConnector for TlsClient {
    async fn connect(&self, request: ConnectRequest) -> io::Result<ByteStream> {
        let server_name = match (&self.server_name, &request.authority) {
            (Some(name), _) => name.clone(),
            (None, Some(authority)) => ServerName::try_from(authority.host.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
            (None, None) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "tls client has no `options.sni` and the caller named no authority",
                ))
            }
        };
        let stream = self.exit.port.connect(request).await?;
        let handshake = self.connector.connect(server_name.clone(), stream);
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
            .map_err(|e| {
                io::Error::new(e.kind(), format!("TLS handshake with {server_name:?}: {e}"))
            })?;
        Ok(Box::new(tls))
    }

    /// TLS runs over the exit's stream, so it ends where the exit's does.
    fn destinations(&self) -> Vec<Authority> {
        self.exit.port.destinations()
    }
}

#[async_trait]
impl StreamHandler for TlsClient {
    /// Relays a whole stream over TLS: `tcp server -> tls client` originates TLS.
    async fn handle(&self, mut inbound: ByteStream, info: StreamInfo) {
        let peer = info
            .peer
            .map(|p| p.to_string())
            .unwrap_or_else(|| "?".into());
        let request = ConnectRequest {
            authority: None,
            origin: info,
        };
        let mut outbound = match self.connect(request).await {
            Ok(outbound) => outbound,
            Err(error) => {
                self.events.error(
                    "TLS_CONNECT_FAILED",
                    format!("relay for {peer} closed"),
                    &error,
                );
                return;
            }
        };
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
            _ = self.shutdown.terminated() => {}
        }
    }
}
