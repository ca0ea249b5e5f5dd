//! ws client: opens a byte stream through its exit, performs the opening
//! handshake over it, and hands back the WebSocket as a byte stream; e.g. an
//! mqtt client reaching mosquitto's `protocol websockets` listener.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::header::SEC_WEBSOCKET_PROTOCOL;
use http::uri::{Authority as UriAuthority, Uri};
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::ClientRequestBuilder;
use zilla_engine::telemetry::{duration, text};
use zilla_engine::{
    async_trait, Authority, Binding, BindingContext, BuildError, ByteStream, ConnectRequest,
    Events, Exit, Ports, Shutdown, StreamConnector, StreamHandler, StreamInfo,
};

use crate::options::{resolve_limits, scheme_is_secure, Limits, WsOptions};
use crate::stream::WsStream;

/// The `Host` asked for when neither the options nor the caller name one.
const DEFAULT_AUTHORITY: &str = "localhost";

/// How long the opening handshake may take once the exit's stream is open.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn build(cx: &mut BindingContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
    let options = cx.options::<WsOptions>()?;
    if !cx.config().routes.is_empty() {
        return Err(cx.error("routes", "a ws client takes its `exit` only, no `routes`"));
    }
    let Some(exit) = cx.default_exit::<dyn StreamConnector>()? else {
        return Err(cx.error(
            "",
            "a ws client needs an `exit` that opens byte streams (a tcp or tls client)",
        ));
    };
    let defaults = options.defaults.clone().unwrap_or_default();
    let secure = match &defaults.scheme {
        None => false,
        Some(scheme) => scheme_is_secure(scheme).ok_or_else(|| {
            cx.error(
                "options.defaults.scheme",
                format!("expected http, https, ws or wss, found `{scheme}`"),
            )
        })?,
    };
    let path = defaults.path.unwrap_or_else(|| "/".into());
    if !path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err() {
        return Err(cx.error(
            "options.defaults.path",
            format!("expected an absolute path such as `/mqtt`, found `{path}`"),
        ));
    }
    if let Some(authority) = &defaults.authority {
        if authority.parse::<UriAuthority>().is_err() {
            return Err(cx.error(
                "options.defaults.authority",
                format!("expected host[:port], found `{authority}`"),
            ));
        }
    }
    if let Some(protocol) = &defaults.protocol {
        let token = !protocol.is_empty()
            && protocol
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b",;\"()<>@:/[]?={}\\".contains(&b));
        if !token {
            return Err(cx.error(
                "options.defaults.protocol",
                format!("`{protocol}` is not a subprotocol name (an HTTP token, e.g. `mqtt`)"),
            ));
        }
    }
    let limits = resolve_limits(cx, &options)?;
    Ok(Arc::new(WsClient {
        exit,
        protocol: defaults.protocol,
        secure,
        authority: defaults.authority,
        path,
        limits,
        events: cx.events(),
        shutdown: cx.shutdown(),
    }))
}

/// A ws client binding.
pub(crate) struct WsClient {
    pub(crate) exit: Exit<dyn StreamConnector>,
    /// The subprotocol asked for, which the server must answer.
    pub(crate) protocol: Option<String>,
    /// Whether the URI says `wss` (TLS itself is the exit's business).
    pub(crate) secure: bool,
    /// The `Host` asked for; else the caller's requested authority, else
    /// `localhost`.
    pub(crate) authority: Option<String>,
    pub(crate) path: String,
    pub(crate) limits: Limits,
    pub(crate) events: Events,
    pub(crate) shutdown: Shutdown,
}

impl Binding for WsClient {
    fn ports(self: Arc<Self>) -> Ports {
        Ports::new()
            .with::<dyn StreamConnector>(self.clone())
            .with::<dyn StreamHandler>(self)
    }
}

/// A subprotocol as events write it: `subprotocol mqtt`, `no subprotocol`.
fn subprotocol(protocol: Option<&str>) -> String {
    protocol.map_or("no subprotocol".into(), |p| {
        format!("subprotocol {}", text(p))
    })
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

#[async_trait]
impl StreamConnector for WsClient {
    async fn connect(&self, request: ConnectRequest) -> io::Result<ByteStream> {
        // `Host` is required (RFC 6455 §4.1) but callers such as the mqtt
        // client name no authority, and the exit's destination is its own
        // business; mosquitto, like most brokers, does not check it.
        let authority = match (&self.authority, &request.authority) {
            (Some(authority), _) => authority.clone(),
            (None, Some(authority)) => authority.to_string(),
            (None, None) => DEFAULT_AUTHORITY.to_owned(),
        };
        let scheme = if self.secure { "wss" } else { "ws" };
        let uri: Uri = format!("{scheme}://{authority}{}", self.path)
            .parse()
            .map_err(|e| {
                invalid(format!(
                    "`{authority}` cannot be a WebSocket's authority: {e}"
                ))
            })?;
        let mut opening = ClientRequestBuilder::new(uri);
        if let Some(protocol) = &self.protocol {
            opening = opening.with_sub_protocol(protocol.clone());
        }
        let stream = self.exit.port.connect(request).await?;
        let handshake = tokio_tungstenite::client_async_with_config(
            opening,
            stream,
            Some(self.limits.config()),
        );
        let (ws, response) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "WebSocket handshake with {authority} timed out after {}",
                        duration(HANDSHAKE_TIMEOUT)
                    ),
                )
            })?
            .map_err(|error| handshake_error(&authority, error))?;
        // tungstenite checks the answer is among the offers; with one offer,
        // that it is the one asked for. Checked again here because an MQTT
        // exit must not speak to a server that did not agree to MQTT.
        let answered = response
            .headers()
            .get(SEC_WEBSOCKET_PROTOCOL)
            .and_then(|value| value.to_str().ok());
        if answered != self.protocol.as_deref() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{authority} answered {}, not {}",
                    subprotocol(answered),
                    subprotocol(self.protocol.as_deref())
                ),
            ));
        }
        let stream = WsStream::new(ws, answered, self.limits.max_frame_size)
            .with_events(self.events.clone(), format!("server {authority}"));
        Ok(Box::new(stream))
    }

    /// The WebSocket runs over the exit's stream, so it ends where the
    /// exit's does (the `Host` it asks for is only a header).
    fn destinations(&self) -> Vec<Authority> {
        self.exit.port.destinations()
    }
}

/// A handshake failure, saying what the server answered when it did.
fn handshake_error(authority: &str, error: WsError) -> io::Error {
    match error {
        WsError::Io(error) => io::Error::new(
            error.kind(),
            format!("WebSocket handshake with {authority}: {error}"),
        ),
        WsError::Http(response) => io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!(
                "{authority} refused the WebSocket upgrade: {}",
                response.status()
            ),
        ),
        error => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("WebSocket handshake with {authority}: {error}"),
        ),
    }
}

#[async_trait]
impl StreamHandler for WsClient {
    /// Relays a whole byte stream through a WebSocket (e.g. `tcp server ->
    /// ws client`), as tcp and tls clients relay theirs.
    async fn handle(&self, mut inbound: ByteStream, info: StreamInfo) {
        let from = info
            .peer
            .map(|peer| peer.to_string())
            .unwrap_or_else(|| "?".into());
        let request = ConnectRequest {
            authority: None,
            origin: info,
            reached: None,
        };
        let mut outbound = match self.connect(request).await {
            Ok(outbound) => outbound,
            Err(error) => {
                self.events.error(
                    "WS_CONNECT_FAILED",
                    format!("relay for {from} closed"),
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

#[cfg(test)]
mod tests;
