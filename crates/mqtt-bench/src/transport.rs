//! The byte streams the raw client speaks MQTT over: a TCP socket, TLS on
//! one (`--tls-ca`, with a client certificate: `--tls-cert`), or a WebSocket (subprotocol `mqtt`, MQTT packets in
//! binary frames) on either, layered in that order by [`open`].
//!
//! An enum rather than a trait object so that the TCP path stays what it
//! was: `read_buf` straight into the client's buffer and one `write_all` per
//! batch, behind a branch the CPU predicts. The TLS path is the same with
//! rustls (ring, as the proxy uses) in between and a flush per batch. The
//! WebSocket path copies each received frame's payload into that buffer,
//! where a packet split over frames is decoded once its last part arrives,
//! and sends each packet in a binary frame of its own.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use anyhow::Context as _;
use bytes::BytesMut;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::Target;

type Tls = tokio_rustls::client::TlsStream<TcpStream>;
type Ws = WebSocketStream<Socket>;

/// Bytes gathered from frames already received before a WebSocket read
/// returns, so that one read (and one timer, one batch of acks) covers many
/// small frames as one TCP read covers many packets.
const WS_READ_BATCH: usize = 64 * 1024;

/// A connected stream, before it is split for a publisher.
pub(crate) enum Transport {
    Tcp(TcpStream),
    // Boxed: the TLS and WebSocket states are much larger than a socket.
    Tls(Box<Tls>),
    Ws(Box<Ws>),
}

/// What a WebSocket is opened on: TCP, or TLS on TCP.
pub(crate) enum Socket {
    Tcp(TcpStream),
    Tls(Box<Tls>),
}

impl From<TcpStream> for Socket {
    fn from(stream: TcpStream) -> Self {
        Self::Tcp(stream)
    }
}

/// Connects to `target` from `source` (any when `None`), without Nagle's
/// delay, and layers what `target` asks for on top ([`open`]).
pub(crate) async fn dial(
    target: &Target,
    source: Option<std::net::IpAddr>,
) -> anyhow::Result<Transport> {
    use anyhow::Context;
    let socket = tokio::net::TcpSocket::new_v4()?;
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let addr = SocketAddr::new(target.host, target.port);
    let stream = socket
        .connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    open(stream, addr, target).await
}

/// Layers TLS (`--tls-ca`) and then a WebSocket (`--ws-path`) on a TCP
/// stream connected to `addr`, as `target` asks.
pub(crate) async fn open(
    stream: TcpStream,
    addr: SocketAddr,
    target: &Target,
) -> anyhow::Result<Transport> {
    let socket = match &target.tls_ca {
        None => Socket::Tcp(stream),
        Some(ca) => {
            let name = ServerName::try_from(target.tls_server_name.clone())
                .with_context(|| format!("`{}` is not a server name", target.tls_server_name))?;
            let tls = connector(ca, target)?
                .connect(name, stream)
                .await
                .with_context(|| format!("the TLS handshake with {addr}"))?;
            Socket::Tls(Box::new(tls))
        }
    };
    match (&target.ws_path, socket) {
        (None, Socket::Tcp(stream)) => Ok(Transport::Tcp(stream)),
        (None, Socket::Tls(tls)) => Ok(Transport::Tls(tls)),
        (Some(path), socket) => Transport::websocket(socket, addr, path)
            .await
            .with_context(|| format!("the WebSocket handshake with {addr}{path}")),
    }
}

/// The TLS client configuration, built once per process from the CA
/// certificates in `ca` and the client certificate of `target`, if any (a
/// process runs against one target). Session resumption is off, so that
/// every connection makes a full handshake.
fn connector(ca: &Path, target: &Target) -> anyhow::Result<TlsConnector> {
    static CONNECTOR: OnceLock<Result<TlsConnector, String>> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| build_connector(ca, target).map_err(|error| format!("{error:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_connector(ca: &Path, target: &Target) -> anyhow::Result<TlsConnector> {
    let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.with_context(|| format!("a certificate in {}", ca.display()))?)?;
    }
    anyhow::ensure!(!roots.is_empty(), "no certificate in {}", ca.display());
    // The one crypto provider of the workspace (the proxy's tls binding too).
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match (&target.tls_cert, &target.tls_key) {
        (Some(cert), Some(key)) => {
            let pem = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
            let chain = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("a certificate in {}", cert.display()))?;
            anyhow::ensure!(!chain.is_empty(), "no certificate in {}", cert.display());
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("a private key in {}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .context("the client certificate and its key")?
        }
        _ => builder.with_no_client_auth(),
    };
    config.resumption = rustls::client::Resumption::disabled();
    Ok(TlsConnector::from(Arc::new(config)))
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The receiving half of a split [`Transport`].
pub(crate) enum ReadHalf {
    Tcp(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<Tls>),
    Ws(SplitStream<Ws>),
}

/// The sending half of a split [`Transport`].
pub(crate) enum WriteHalf {
    Tcp(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<Tls>),
    Ws(SplitSink<Ws, Message>),
}

impl Transport {
    /// Completes the WebSocket opening handshake on `stream` (TCP, or TLS)
    /// for `path`, offering the `mqtt` subprotocol (which mosquitto and our
    /// ws binding route on).
    pub(crate) async fn websocket(
        stream: impl Into<Socket>,
        addr: SocketAddr,
        path: &str,
    ) -> Result<Self, WsError> {
        let stream = stream.into();
        let scheme = match stream {
            Socket::Tcp(_) => "ws",
            Socket::Tls(_) => "wss",
        };
        let mut request = format!("{scheme}://{addr}{path}").into_client_request()?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
        // The TCP path reads into 64 KiB; tungstenite's default of 128 KiB
        // is allocated up front for every connection.
        let config = WebSocketConfig::default().read_buffer_size(64 * 1024);
        let (ws, _response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
        Ok(Self::Ws(Box::new(ws)))
    }

    /// What TLS negotiated, e.g. `TLSv1_3 TLS13_AES_256_GCM_SHA384 X25519`
    /// (none on plain TCP and WebSocket).
    pub(crate) fn tls_summary(&self) -> Option<String> {
        let Self::Tls(tls) = self else { return None };
        let (_, connection) = tls.get_ref();
        let name = |value: Option<String>| value.unwrap_or_else(|| "-".into());
        Some(format!(
            "{} {} {}",
            name(connection.protocol_version().map(|v| format!("{v:?}"))),
            name(
                connection
                    .negotiated_cipher_suite()
                    .map(|s| format!("{:?}", s.suite()))
            ),
            name(
                connection
                    .negotiated_key_exchange_group()
                    .map(|g| format!("{:?}", g.name()))
            ),
        ))
    }

    /// Appends what arrives to `buf`; 0 when the peer closed.
    pub(crate) async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Self::Tcp(stream) => stream.read_buf(buf).await,
            Self::Tls(tls) => tls.read_buf(buf).await,
            Self::Ws(ws) => ws_read_buf(ws.as_mut(), buf).await,
        }
    }

    /// Sends `out` and leaves it empty.
    pub(crate) async fn write(&mut self, out: &mut BytesMut) -> io::Result<()> {
        match self {
            Self::Tcp(stream) => {
                stream.write_all(out).await?;
                out.clear();
                Ok(())
            }
            Self::Tls(tls) => tls_write(tls.as_mut(), out).await,
            Self::Ws(ws) => ws_write(ws.as_mut(), out).await,
        }
    }

    /// Closes the stream (a Close frame first on a WebSocket).
    pub(crate) async fn shutdown(&mut self) {
        match self {
            Self::Tcp(stream) => {
                let _ = stream.shutdown().await;
            }
            // close_notify, then the socket's FIN.
            Self::Tls(tls) => {
                let _ = tls.shutdown().await;
            }
            Self::Ws(ws) => {
                let _ = WebSocketStream::close(ws.as_mut(), None).await;
            }
        }
    }

    /// Separates reading (a publisher's ack counter) from writing.
    pub(crate) fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Self::Tcp(stream) => {
                let (read, write) = stream.into_split();
                (ReadHalf::Tcp(read), WriteHalf::Tcp(write))
            }
            Self::Tls(tls) => {
                let (read, write) = tokio::io::split(*tls);
                (ReadHalf::Tls(read), WriteHalf::Tls(write))
            }
            Self::Ws(ws) => {
                let (write, read) = (*ws).split();
                (ReadHalf::Ws(read), WriteHalf::Ws(write))
            }
        }
    }
}

impl ReadHalf {
    /// Appends what arrives to `buf`; 0 when the peer closed.
    pub(crate) async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Self::Tcp(read) => read.read_buf(buf).await,
            Self::Tls(read) => read.read_buf(buf).await,
            Self::Ws(read) => ws_read_buf(read, buf).await,
        }
    }
}

impl WriteHalf {
    /// Sends `out` and leaves it empty.
    pub(crate) async fn write(&mut self, out: &mut BytesMut) -> io::Result<()> {
        match self {
            Self::Tcp(write) => {
                write.write_all(out).await?;
                out.clear();
                Ok(())
            }
            Self::Tls(write) => tls_write(write, out).await,
            Self::Ws(write) => ws_write(write, out).await,
        }
    }
}

/// Sends `out` as TLS records and leaves it empty; the flush sends what
/// rustls still holds, which a write alone may leave until the next one.
async fn tls_write<W: AsyncWrite + Unpin>(tls: &mut W, out: &mut BytesMut) -> io::Result<()> {
    tls.write_all(out).await?;
    tls.flush().await?;
    out.clear();
    Ok(())
}

/// Waits for a binary frame, then takes the frames already received without
/// waiting, up to [`WS_READ_BATCH`] bytes. Cancel-safe like
/// `TcpStream::read_buf`: it only waits while nothing has been taken.
async fn ws_read_buf<S>(ws: &mut S, buf: &mut BytesMut) -> io::Result<usize>
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let mut read = 0;
    loop {
        let item = if read == 0 {
            ws.next().await
        } else {
            match ws.next().now_or_never() {
                Some(item) => item,
                None => return Ok(read),
            }
        };
        match item {
            // The end: report what was read; the next call returns 0.
            None | Some(Ok(Message::Close(_))) => return Ok(read),
            Some(Ok(Message::Binary(data))) => {
                buf.extend_from_slice(&data);
                read += data.len();
            }
            Some(Ok(Message::Text(_))) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a text frame: MQTT over WebSocket is binary",
                ))
            }
            // Pings are answered by tungstenite.
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(io::Error::other(error)),
        }
        if read >= WS_READ_BATCH {
            return Ok(read);
        }
    }
}

/// Sends the MQTT packets in `out` one binary frame each, as browser
/// clients (MQTT.js, Paho JavaScript) do, so that what the path spends per
/// frame is measured per message; the frames of one batch leave in one
/// flush, as the TCP path's batch leaves in one write. Frames share `out`'s
/// bytes (tungstenite copies them once anyway, masking them, as a client
/// must).
async fn ws_write<S>(ws: &mut S, out: &mut BytesMut) -> io::Result<()>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    let mut packets = out.split().freeze();
    while !packets.is_empty() {
        let len = packet_len(&packets).unwrap_or(packets.len());
        ws.feed(Message::Binary(packets.split_to(len)))
            .await
            .map_err(io::Error::other)?;
    }
    ws.flush().await.map_err(io::Error::other)
}

/// The length of the MQTT packet at the start of `bytes` (fixed header
/// included), if `bytes` holds all of it.
fn packet_len(bytes: &[u8]) -> Option<usize> {
    let mut remaining = 0usize;
    for (index, byte) in bytes.iter().skip(1).take(4).enumerate() {
        remaining |= usize::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            let len = 2 + index + remaining;
            return (len <= bytes.len()).then_some(len);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::packet_len;

    #[test]
    fn packet_lengths_follow_the_remaining_length() {
        // PINGREQ: no body.
        assert_eq!(packet_len(&[0xc0, 0x00, 0x30]), Some(2));
        // A PUBLISH with a two-byte remaining length of 200.
        let mut publish = vec![0x30, 0xc8, 0x01];
        publish.resize(3 + 200, 0);
        assert_eq!(packet_len(&publish), Some(203));
        assert_eq!(packet_len(&publish[..100]), None);
        assert_eq!(packet_len(&[0x30]), None);
    }
}
