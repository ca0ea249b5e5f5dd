//! A raw MQTT client over TLS 1.3 (rustls), for what the tests must see
//! exactly: the alert a refused handshake ends with, CONNACK, SUBACK,
//! PUBACK and DISCONNECT reason codes (MQTT 5, decoded by mqtt-bytes-v5)
//! and MQTT 3.1.1 return codes (as bytes); and the same MQTT 5 client over
//! secure WebSocket (tokio-tungstenite over that TLS connection).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::AlertDescription;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use zilla_testkit::mqtt::connect_packet;
use zilla_testkit::mqtt::packets::{ConnAck, Login, Packet};

use super::x509_example::{Device, TIMEOUT};

/// A TLS 1.3 client trusting `server_ca` and presenting `device`'s
/// certificate, if any.
pub(crate) fn connector(server_ca: &Path, device: Option<&Device>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(server_ca).expect("the server CA") {
        roots.add(cert.expect("a PEM certificate")).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots);
    let config = match device {
        Some(device) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(&device.cert)
                    .expect("the device's certificate")
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_file(&device.key).expect("the device's key"),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// An MQTT connection over TLS to `localhost`.
pub(crate) struct TlsMqtt {
    stream: TlsStream<TcpStream>,
    buf: BytesMut,
    /// The client's address, as the proxy's events name it.
    pub(crate) local: SocketAddr,
}

impl TlsMqtt {
    /// Connects to `127.0.0.1:port` (server name `localhost`) as `device`.
    /// TLS 1.3: the client's side of the handshake completes before the
    /// server checked its certificate, so a refusal is read afterwards.
    pub(crate) async fn open(port: u16, server_ca: &Path, device: Option<&Device>) -> Self {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let local = tcp.local_addr().unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let stream = tokio::time::timeout(TIMEOUT, connector(server_ca, device).connect(name, tcp))
            .await
            .expect("the handshake ends in time")
            .expect("TLS 1.3: the client's side of the handshake completes");
        Self {
            stream,
            buf: BytesMut::new(),
            local,
        }
    }

    /// [`open`](Self::open)s and sends an MQTT 5 CONNECT for `client_id`
    /// (clean start, `login` as user name and password); the CONNACK.
    pub(crate) async fn connect(
        port: u16,
        server_ca: &Path,
        device: Option<&Device>,
        client_id: &str,
        login: Option<Login>,
    ) -> (Self, ConnAck) {
        let mut client = Self::open(port, server_ca, device).await;
        let connect = match connect_packet(client_id, true, None) {
            Packet::Connect(connect, will, _) => Packet::Connect(connect, will, login),
            other => other,
        };
        client.send(&connect).await;
        match client.recv().await {
            Some(Packet::ConnAck(ack)) => (client, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Sends one MQTT 5 packet.
    pub(crate) async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out).expect("test packets encode");
        self.send_bytes(&out).await;
    }

    /// Sends raw bytes (an MQTT 3.1.1 packet).
    pub(crate) async fn send_bytes(&mut self, bytes: &[u8]) {
        // The peer may have closed; the next read tells.
        let _ = self.stream.write_all(bytes).await;
        let _ = self.stream.flush().await;
    }

    /// The next MQTT 5 packet, or `None` once the connection ends. Fails
    /// the test after [`TIMEOUT`].
    pub(crate) async fn recv(&mut self) -> Option<Packet> {
        self.recv_within(TIMEOUT).await
    }

    /// [`recv`](Self::recv), waiting at most `timeout`.
    pub(crate) async fn recv_within(&mut self, timeout: std::time::Duration) -> Option<Packet> {
        tokio::time::timeout(timeout, async {
            loop {
                if !self.buf.is_empty() {
                    match Packet::read(&mut self.buf, None) {
                        Ok(packet) => return Some(packet),
                        Err(zilla_testkit::mqtt::packets::Error::InsufficientBytes(_)) => {}
                        Err(error) => panic!("the proxy sent a malformed packet: {error}"),
                    }
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("a packet or the end of the connection arrives in time")
    }

    /// Exactly `count` bytes (an MQTT 3.1.1 reply), or `None` if the
    /// connection ends first. Fails the test after [`TIMEOUT`].
    pub(crate) async fn recv_bytes(&mut self, count: usize) -> Option<Vec<u8>> {
        tokio::time::timeout(TIMEOUT, async {
            while self.buf.len() < count {
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
            Some(self.buf.split_to(count).to_vec())
        })
        .await
        .expect("the bytes or the end of the connection arrive in time")
    }

    /// Every byte until the connection ends (within [`TIMEOUT`]).
    pub(crate) async fn rest(&mut self) -> Vec<u8> {
        tokio::time::timeout(TIMEOUT, async {
            loop {
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return self.buf.split().to_vec(),
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("the connection ends in time")
    }
}

/// How a refused connection ended for the client.
#[derive(Debug, PartialEq)]
pub(crate) enum Ending {
    /// The server's alert, on the first read.
    Alert(AlertDescription),
    /// `close_notify`: a clean end of the stream, nothing read.
    Closed,
}

/// Connects as `device` (TLS 1.3: the client's handshake completes) and
/// reads: how the connection ends, having read no byte of MQTT (so never
/// a CONNACK).
pub(crate) async fn refusal(port: u16, server_ca: &Path, device: Option<&Device>) -> Ending {
    refusal_from(port, server_ca, device).await.0
}

/// [`refusal`], and the client's address.
pub(crate) async fn refusal_from(
    port: u16,
    server_ca: &Path,
    device: Option<&Device>,
) -> (Ending, SocketAddr) {
    let mut client = TlsMqtt::open(port, server_ca, device).await;
    let local = client.local;
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(TIMEOUT, client.stream.read(&mut byte))
        .await
        .expect("the refusal arrives in time");
    let ending = match read {
        Ok(0) => Ending::Closed,
        Ok(_) => panic!("read {byte:?} from a connection that should have been refused"),
        Err(error) => match error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(rustls::Error::AlertReceived(alert)) => Ending::Alert(*alert),
            _ => panic!("not an alert: {error}"),
        },
    };
    (ending, local)
}

/// An MQTT 5 session over secure WebSocket (subprotocol `mqtt`) as
/// `device`.
pub(crate) struct WssMqtt {
    socket: tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>>,
    buf: BytesMut,
}

impl WssMqtt {
    /// Connects to the secure WebSocket port as `device`, upgrades and sends
    /// an MQTT 5 CONNECT for `client_id`; the CONNACK.
    pub(crate) async fn connect(
        port: u16,
        server_ca: &Path,
        device: &Device,
        client_id: &str,
    ) -> (Self, ConnAck) {
        let tls = TlsMqtt::open(port, server_ca, Some(device)).await.stream;
        let mut request = "wss://localhost/mqtt".into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
        let (socket, _) =
            tokio::time::timeout(TIMEOUT, tokio_tungstenite::client_async(request, tls))
                .await
                .expect("the upgrade is answered in time")
                .expect("upgraded");
        let mut client = Self {
            socket,
            buf: BytesMut::new(),
        };
        let mut out = BytesMut::new();
        connect_packet(client_id, true, None)
            .write(&mut out)
            .expect("a CONNECT encodes");
        client
            .socket
            .send(Message::binary(out.freeze()))
            .await
            .unwrap();
        match client.recv_within(TIMEOUT).await {
            Some(Packet::ConnAck(ack)) => (client, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// The next MQTT 5 packet, or `None` once the WebSocket ends.
    pub(crate) async fn recv_within(&mut self, timeout: std::time::Duration) -> Option<Packet> {
        tokio::time::timeout(timeout, async {
            loop {
                if !self.buf.is_empty() {
                    match Packet::read(&mut self.buf, None) {
                        Ok(packet) => return Some(packet),
                        Err(zilla_testkit::mqtt::packets::Error::InsufficientBytes(_)) => {}
                        Err(error) => panic!("the proxy sent a malformed packet: {error}"),
                    }
                }
                match self.socket.next().await {
                    Some(Ok(Message::Binary(data))) => self.buf.extend_from_slice(&data),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await
        .expect("a packet or the end of the WebSocket arrives in time")
    }
}
