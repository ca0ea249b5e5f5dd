//! `type: echo`, Zilla's echo server: every byte a stream brings is written
//! back, so Zilla's `tcp.echo`, `tls.echo` and `ws.echo` examples run
//! unchanged. It is also the model of a third-party binding: it depends on
//! `zilla-engine` only, registers itself, and is usable in any `zilla.yaml` as
//! the exit of a byte-stream binding (a tcp, tls or ws server). Its two
//! options are beyond Zilla's, which has none.
//!
//! ```yaml
//! bindings:
//!   north_tcp_server:
//!     type: tcp
//!     kind: server
//!     options: { host: 127.0.0.1, port: 7000 }
//!     exit: echo_server
//!   echo_server:
//!     type: echo
//!     kind: server
//!     options:
//!       greeting: "hello from echo\n"
//! ```

#![forbid(unsafe_code)]

mod schema;

use std::sync::Arc;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zilla_engine::{
    async_trait, register_binding, Binding, BindingContext, BindingFactory, BuildError, ByteStream,
    Events, Kind, Ports, StreamHandler, StreamInfo,
};

/// `options` of an echo binding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EchoOptions {
    /// Sent to every new stream before anything is echoed.
    #[serde(default)]
    pub greeting: Option<String>,
    /// Streams are cut off after echoing this many bytes (default: no limit).
    #[serde(default, rename = "max-bytes")]
    pub max_bytes: Option<u64>,
}

register_binding!(BindingFactory {
    type_name: "echo",
    kinds: &[Kind::Server],
    build: build_echo,
});

fn build_echo(cx: &mut BindingContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
    let options: EchoOptions = cx.options()?;
    if cx.config().exit.is_some() || !cx.config().routes.is_empty() {
        return Err(cx.error(
            "",
            "an echo binding answers streams itself; it takes no exit",
        ));
    }
    Ok(Arc::new(EchoBinding {
        options,
        events: cx.events(),
    }))
}

struct EchoBinding {
    options: EchoOptions,
    events: Events,
}

impl Binding for EchoBinding {
    /// Offers the inbound byte-stream port, so tcp (or tls) servers can route here.
    fn ports(self: Arc<Self>) -> Ports {
        Ports::new().with::<dyn StreamHandler>(self)
    }
}

#[async_trait]
impl StreamHandler for EchoBinding {
    async fn handle(&self, mut stream: ByteStream, info: StreamInfo) {
        let peer = info.peer.map(|p| p.to_string()).unwrap_or_default();
        self.events
            .info("ECHO_STARTED", format!("echoing for {peer}"));
        if let Some(greeting) = &self.options.greeting {
            if stream.write_all(greeting.as_bytes()).await.is_err() {
                return;
            }
        }
        let mut echoed = 0u64;
        let mut buffer = vec![0u8; 8192];
        loop {
            let read = match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            let allowed = match self.options.max_bytes {
                Some(max) => read.min(max.saturating_sub(echoed) as usize),
                None => read,
            };
            if stream.write_all(&buffer[..allowed]).await.is_err() {
                break;
            }
            echoed += allowed as u64;
            if allowed < read {
                break;
            }
        }
        let _ = stream.shutdown().await;
        self.events
            .info("ECHO_ENDED", format!("echoed {echoed} bytes for {peer}"));
    }
}
