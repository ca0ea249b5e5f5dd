//! tls proxy: routes by the ClientHello's SNI and ALPN without terminating TLS.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::Acceptor;
use tokio::io::AsyncReadExt;
use zilla_engine::telemetry::{duration, text};
use zilla_engine::{
    async_trait, Authorizations, Binding, BindingContext, BuildError, ByteStream, Events, Ports,
    Routes, StreamHandler, StreamInfo,
};

use crate::options::{TlsCondition, TlsOptions};
use crate::prefixed::Prefixed;

/// A ClientHello larger than this is refused (TLS records are at most 16 KiB;
/// post-quantum key shares make hellos grow, but not past a few records).
const MAX_HELLO: usize = 64 * 1024;
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn build(cx: &mut BindingContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
    let options = cx.options::<TlsOptions>();
    let routes = cx.required_routes::<TlsCondition, dyn StreamHandler>();
    let with = crate::select::refuse_with(cx, "proxy");
    let (options, routes, ()) = (options?, routes?, with?);
    if options != TlsOptions::default() {
        return Err(cx.error(
            "options",
            "a tls proxy does not terminate TLS; it takes no options",
        ));
    }
    Ok(Arc::new(TlsProxy {
        routes,
        events: cx.events(),
    }))
}

struct TlsProxy {
    routes: Routes<TlsCondition, dyn StreamHandler>,
    events: Events,
}

impl Binding for TlsProxy {
    fn ports(self: Arc<Self>) -> Ports {
        Ports::new().with::<dyn StreamHandler>(self)
    }
}

/// What the ClientHello says.
struct Hello {
    server_name: Option<String>,
    alpn: Vec<String>,
}

/// Reads until the ClientHello is complete; returns it and the bytes read.
async fn read_hello(stream: &mut ByteStream) -> Result<(Hello, Vec<u8>), String> {
    let mut seen = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let read = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        if read == 0 {
            return Err("closed before a complete ClientHello".into());
        }
        seen.extend_from_slice(&chunk[..read]);
        if seen.len() > MAX_HELLO {
            return Err(format!("ClientHello larger than {MAX_HELLO} bytes"));
        }
        // The acceptor only looks: the bytes are replayed to the exit as read.
        let mut acceptor = Acceptor::default();
        let mut cursor = Cursor::new(&seen[..]);
        while (cursor.position() as usize) < seen.len() {
            if acceptor.read_tls(&mut cursor).is_err() {
                break;
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let hello = accepted.client_hello();
                return Ok((
                    Hello {
                        server_name: hello.server_name().map(str::to_owned),
                        alpn: hello
                            .alpn()
                            .map(|protocols| {
                                protocols
                                    .map(|p| String::from_utf8_lossy(p).into_owned())
                                    .collect()
                            })
                            .unwrap_or_default(),
                    },
                    seen,
                ));
            }
            Ok(None) => {}
            Err((error, _)) => return Err(format!("not a TLS ClientHello: {error}")),
        }
    }
}

#[async_trait]
impl StreamHandler for TlsProxy {
    async fn handle(&self, mut stream: ByteStream, info: StreamInfo) {
        let peer = info
            .peer
            .map(|p| p.to_string())
            .unwrap_or_else(|| "?".into());
        let (hello, seen) = match tokio::time::timeout(HELLO_TIMEOUT, read_hello(&mut stream)).await
        {
            Ok(Ok(found)) => found,
            Ok(Err(why)) => {
                self.events
                    .warn("TLS_HANDSHAKE_FAILED", format!("client {peer}: {why}"));
                return;
            }
            Err(_) => {
                self.events.warn(
                    "TLS_HANDSHAKE_TIMEOUT",
                    format!(
                        "client {peer}: no ClientHello within {}; closed",
                        duration(HELLO_TIMEOUT)
                    ),
                );
                return;
            }
        };
        let offered: Vec<&str> = hello.alpn.iter().map(String::as_str).collect();
        let port = info.local.map(|l| l.port());
        let Some(resolved) = self.routes.resolve(&Authorizations::new(), |condition| {
            condition.matches(hello.server_name.as_deref(), &offered, port)
        }) else {
            self.events.warn(
                "TLS_ROUTE_REJECTED",
                match hello.server_name.as_deref() {
                    Some(name) => format!(
                        "client {peer}: no route for server name {}; closed",
                        text(name)
                    ),
                    None => format!(
                        "client {peer}: no route for a ClientHello without a server name; closed"
                    ),
                },
            );
            return;
        };
        let handler = resolved.exit.port.clone();
        let info = StreamInfo {
            authority: hello.server_name,
            alpn: hello.alpn.first().cloned(),
            ..info
        };
        handler
            .handle(Box::new(Prefixed::new(seen, stream)), info)
            .await;
    }
}
