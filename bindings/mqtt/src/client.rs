//! mqtt client: opens MQTT 5 (or, as an option, 3.1.1) sessions to a broker
//! over its exit (tcp, or tls).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use bytes::BytesMut;
use mqtt_bytes_v5::{ConnectReturnCode, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zilla_engine::telemetry::duration;
use zilla_engine::{
    async_trait, Authority, Binding, BindingContext, BuildError, ConnectRequest, Exit, Ports,
    Reached, StreamConnector,
};

use crate::codec::{self, Version};
use crate::credentials::{write_connect, Login};
use crate::options::{CredentialsPattern, MqttClientOptions};
use crate::port::{MqttSessions, OpenError, OpenSession, Upstream};

const DEFAULT_CONNECT_TIMEOUT: u16 = 10;
/// Largest CONNACK we accept from a broker.
const MAX_CONNACK_SIZE: usize = 64 * 1024;

pub(crate) fn build(cx: &mut BindingContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
    let options = cx.options::<MqttClientOptions>()?;
    if !cx.config().routes.is_empty() {
        return Err(cx.error(
            "routes",
            "an mqtt client takes its `exit` only, no `routes`",
        ));
    }
    let Some(exit) = cx.default_exit::<dyn StreamConnector>()? else {
        return Err(cx.error(
            "",
            "an mqtt client needs an `exit` that opens byte streams (tcp or tls client)",
        ));
    };
    let forward = match options.authorization.len() {
        0 => None,
        1 => {
            let (name, authorization) = options.authorization.iter().next().expect("one entry");
            // A client forwards the CONNECT-time token; it never opens a
            // broker session with an Authentication Method.
            if authorization.credentials.authentication.is_some() {
                return Err(cx.error(
                    &format!("options.authorization.{name}.credentials.authentication"),
                    "enhanced authentication is for an mqtt server; a client forwards `connect` credentials",
                ));
            }
            let path = format!("options.authorization.{name}.credentials.connect");
            let Some(connect) = &authorization.credentials.connect else {
                return Err(cx.error(
                    &path,
                    "an mqtt client forwards `connect` credentials: name where",
                ));
            };
            let pattern =
                CredentialsPattern::new(connect).map_err(|message| cx.error(&path, message))?;
            Some(pattern)
        }
        _ => return Err(cx.error("options.authorization", "name exactly one guard")),
    };
    Ok(Arc::new(MqttClient {
        forward,
        version: options.version.map_or(Version::V5, |v| v.version()),
        exit,
        connect_timeout: Duration::from_secs(u64::from(
            options.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        )),
    }))
}

struct MqttClient {
    /// Where to put the client's accepted credentials in the upstream CONNECT.
    forward: Option<CredentialsPattern>,
    version: Version,
    exit: Exit<dyn StreamConnector>,
    connect_timeout: Duration,
}

impl Binding for MqttClient {
    fn ports(self: Arc<Self>) -> Ports {
        Ports::new().with::<dyn MqttSessions>(self)
    }
}

#[async_trait]
impl MqttSessions for MqttClient {
    async fn open(&self, request: OpenSession) -> Result<Upstream, OpenError> {
        let keep_alive = request.connect.keep_alive;
        let reached = Reached::default();
        let opening = async {
            let mut stream = self
                .exit
                .port
                .connect(ConnectRequest {
                    authority: None,
                    // With the session's grants: a tls client exit selects
                    // the certificate it presents by them.
                    origin: request.origin.clone(),
                    reached: Some(reached.clone()),
                })
                .await
                .map_err(|e| OpenError::Failed(format!("{}: {e}", self.exit.name)))?;
            let mut out = BytesMut::new();
            let login = match (&self.forward, &request.credentials) {
                (Some(pattern), Some(credentials)) => Some(if pattern.in_password {
                    Login {
                        username: String::new(),
                        password: pattern.wrap(credentials).into(),
                    }
                } else {
                    Login {
                        username: pattern.wrap(credentials),
                        password: Bytes::new(),
                    }
                }),
                _ => request.login,
            };
            write_connect(
                request.connect,
                request.will,
                login.as_ref(),
                self.version,
                &mut out,
            )
            .map_err(|e| OpenError::Failed(format!("cannot encode CONNECT: {e}")))?;
            stream
                .write_all(&out)
                .await
                .map_err(|e| OpenError::Failed(format!("{}: {e}", self.exit.name)))?;
            // Small: most sessions stay quiet; the session grows it under load.
            let mut read_buf = BytesMut::with_capacity(512);
            loop {
                match codec::read(&mut read_buf, self.version, MAX_CONNACK_SIZE) {
                    Ok(Some(Packet::ConnAck(connack))) => {
                        if connack.code != ConnectReturnCode::Success {
                            return Err(OpenError::Refused(Box::new(connack)));
                        }
                        let keep_alive = connack
                            .properties
                            .as_ref()
                            .and_then(|p| p.server_keep_alive)
                            .unwrap_or(keep_alive);
                        return Ok(Upstream {
                            stream,
                            read_buf,
                            connack,
                            keep_alive,
                            version: self.version,
                            addresses: reached.get().copied(),
                        });
                    }
                    Ok(Some(other)) => {
                        return Err(OpenError::Failed(format!(
                            "broker sent {} before CONNACK",
                            codec::packet_name(&other)
                        )))
                    }
                    Ok(None) => {}
                    Err(e) => {
                        return Err(OpenError::Failed(format!("broker sent a bad CONNACK: {e}")))
                    }
                }
                let read = stream
                    .read_buf(&mut read_buf)
                    .await
                    .map_err(|e| OpenError::Failed(format!("{}: {e}", self.exit.name)))?;
                if read == 0 {
                    return Err(OpenError::Failed(format!(
                        "{} closed the connection before CONNACK",
                        self.exit.name
                    )));
                }
            }
        };
        tokio::time::timeout(self.connect_timeout, opening)
            .await
            .unwrap_or_else(|_| {
                Err(OpenError::Failed(format!(
                    "no CONNACK from {} within {}",
                    self.exit.name,
                    duration(self.connect_timeout)
                )))
            })
    }

    fn brokers(&self) -> Vec<Authority> {
        self.exit.port.destinations()
    }
}
