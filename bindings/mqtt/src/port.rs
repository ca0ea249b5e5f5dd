//! The MQTT session port: how an mqtt server opens sessions on the brokers its
//! routes lead to. The mqtt client binding offers it; a future mqtt-kafka
//! binding would offer the same port.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use mqtt_bytes_v5::{ConnAck, Connect, LastWill};
use zilla_engine::{async_trait, Authority, ByteStream, Port, StreamInfo};

use crate::codec::{Reason, Version};
use crate::credentials::Login;

/// What the server asks of an upstream session: the client's CONNECT, the
/// will (only for the upstream the will topic routes to), and the credentials
/// to present.
#[derive(Debug, Clone)]
pub struct OpenSession {
    /// The CONNECT to send upstream (client id, clean start, keep-alive, properties).
    pub connect: Connect,
    /// The will to register upstream.
    pub will: Option<LastWill>,
    /// Credentials for the broker: the client's own (the password as the
    /// bytes it sent), when the server consumed none.
    pub login: Option<Login>,
    /// The credentials the server's guard accepted (e.g. the JWT), for a
    /// client binding that forwards them.
    pub credentials: Option<String>,
    /// What is known about the client's connection. Its `granted` holds
    /// every guard session the mqtt session was admitted with: those granted
    /// at earlier layers (a tls server's client certificate) and the one the
    /// server's own guard granted on the CONNECT (e.g. a JWT). A client
    /// binding passes it on in the `ConnectRequest` to its exit, so that a
    /// tls client there can present the certificate of the session's
    /// identity (`routes[].with.certificate`).
    pub origin: StreamInfo,
}

/// An open upstream session, after the broker's successful CONNACK. The
/// server's connection task drives it directly, so the client connection and
/// its upstreams live on one task.
pub struct Upstream {
    /// The byte stream to the broker.
    pub stream: ByteStream,
    /// Bytes read after the CONNACK, not yet decoded.
    pub read_buf: BytesMut,
    /// The broker's CONNACK.
    pub connack: ConnAck,
    /// The keep-alive the session runs with, in seconds (the broker's server
    /// keep-alive when it set one).
    pub keep_alive: u16,
    /// The protocol spoken with the broker.
    pub version: Version,
    /// The connection's (local, broker) addresses, when the socket under
    /// it told them: what `zilla dump` writes for this upstream.
    pub addresses: Option<(SocketAddr, SocketAddr)>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("connack", &self.connack)
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

/// Why an upstream session could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The broker answered with a failure CONNACK, relayed to the client.
    Refused(Box<ConnAck>),
    /// The broker could not be reached or misbehaved.
    Failed(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Refused(connack) => {
                write!(
                    f,
                    "broker refused the session: CONNACK {}",
                    Reason::connack(connack.code)
                )
            }
            OpenError::Failed(message) => f.write_str(message),
        }
    }
}

/// Port: "open an MQTT session upstream for this client".
#[async_trait]
pub trait MqttSessions: Send + Sync + 'static {
    /// Opens a session and completes its CONNECT/CONNACK exchange.
    async fn open(&self, request: OpenSession) -> Result<Upstream, OpenError>;

    /// The broker addresses these sessions reach, as configured at the end
    /// of the exit chain ([`StreamConnector::destinations`]); empty when
    /// unknown. The server compares its exits' at build time: two exits one
    /// session uses must not reach one broker (`MQTT_EXITS_SHARE_BROKER`).
    ///
    /// [`StreamConnector::destinations`]: zilla_engine::StreamConnector::destinations
    fn brokers(&self) -> Vec<Authority> {
        Vec::new()
    }
}

impl Port for dyn MqttSessions {
    const CAPABILITY: &'static str = "accept MQTT sessions";
}

/// Shorthand used by the server.
pub(crate) type SessionsPort = Arc<dyn MqttSessions>;
