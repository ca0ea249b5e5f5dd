//! What tests/mqtt_session_integrity.rs is made of: a raw MQTT client that
//! speaks 5.0 or 3.1.1 with a user name and password, mosquitto with a
//! password file, a TCP forwarder that can stop accepting, and the active
//! check that a connected device is still served.

use std::process::Command;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use zilla_testkit::mqtt::packets::{
    self as v5, ConnAck, DisconnectReasonCode, Login, Packet, PingReq, PubAck, PubAckReason, QoS,
};
use zilla_testkit::mqtt::{connect_packet, publish_packet, subscribe_packet, RECV_TIMEOUT};
use zilla_testkit::proxy::captured_events;
use zilla_testkit::{free_port, Mosquitto};

/// The MQTT version a client speaks to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    V5,
    V311,
}

impl Version {
    /// A suffix that keeps the client ids of the two versions' tests apart
    /// (tests run in parallel and share the captured events).
    pub(crate) fn tag(self) -> &'static str {
        match self {
            Version::V5 => "v5",
            Version::V311 => "v311",
        }
    }
}

/// A packet from the proxy or a broker, whichever version it came in.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// The CONNACK's reason code (5.0) or return code (3.1.1).
    ConnAck(u8),
    SubAck,
    PubAck,
    PingResp,
    Publish {
        topic: String,
        payload: Vec<u8>,
        pkid: u16,
        qos1: bool,
    },
    /// 5.0 only: 3.1.1 servers have no DISCONNECT.
    Disconnect(DisconnectReasonCode),
    /// Any other packet, as it decoded.
    Other(#[expect(dead_code, reason = "shown by Debug in failure messages")] String),
}

/// A raw MQTT client of either version over one TCP connection.
pub(crate) struct Client {
    version: Version,
    stream: TcpStream,
    buf: BytesMut,
    next_pkid: u16,
}

/// User name and password.
pub(crate) type Credentials<'a> = Option<(&'a str, &'a str)>;

impl Client {
    /// Connects to `127.0.0.1:port` as `client_id` (clean start, keep-alive
    /// 30 s) with `login`; the client and the CONNACK's code.
    pub(crate) async fn connect(
        port: u16,
        version: Version,
        client_id: &str,
        login: Credentials<'_>,
    ) -> (Self, u8) {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("cannot reach 127.0.0.1:{port}: {e}"));
        let mut client = Self {
            version,
            stream,
            buf: BytesMut::new(),
            next_pkid: 0,
        };
        let Packet::Connect(connect, will, _) = connect_packet(client_id, true, None) else {
            unreachable!("connect_packet makes a CONNECT")
        };
        let v5_login = login.map(|(username, password)| Login {
            username: username.to_owned(),
            password: password.to_owned(),
        });
        let mut v311 = v4::Connect::new(client_id);
        v311.keep_alive = 30;
        if let Some((username, password)) = login {
            v311.set_login(username, password);
        }
        client
            .send_either(Packet::Connect(connect, will, v5_login), |out| {
                v311.write(out)
            })
            .await;
        match client.recv().await {
            Some(Incoming::ConnAck(code)) => (client, code),
            other => panic!("{client_id}: expected a CONNACK, got {other:?}"),
        }
    }

    /// Connects and fails the test unless the CONNACK accepts.
    pub(crate) async fn connected(
        port: u16,
        version: Version,
        client_id: &str,
        login: Credentials<'_>,
    ) -> Self {
        let (client, code) = Self::connect(port, version, client_id, login).await;
        assert_eq!(code, 0, "{client_id} ({version:?}) was refused");
        client
    }

    /// Sends `v5` to an MQTT 5 peer, or what `v311` writes to a 3.1.1 one.
    async fn send_either(
        &mut self,
        v5: Packet,
        v311: impl FnOnce(&mut BytesMut) -> Result<usize, rumqttc::mqttbytes::Error>,
    ) {
        let mut out = BytesMut::new();
        match self.version {
            Version::V5 => v5.write(&mut out).map(drop).expect("MQTT 5 packets encode"),
            Version::V311 => v311(&mut out).map(drop).expect("MQTT 3.1.1 packets encode"),
        }
        // The peer may have closed already: the next read tells.
        let _ = self.stream.write_all(&out).await;
    }

    fn pkid(&mut self) -> u16 {
        self.next_pkid = self.next_pkid % u16::MAX + 1;
        self.next_pkid
    }

    /// The next packet, or `None` once the connection is closed; fails the
    /// test after [`RECV_TIMEOUT`].
    pub(crate) async fn recv(&mut self) -> Option<Incoming> {
        tokio::time::timeout(RECV_TIMEOUT, async {
            loop {
                if !self.buf.is_empty() {
                    if let Some(packet) = self.decode() {
                        return Some(packet);
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

    /// A whole packet from the buffer, if one is there.
    fn decode(&mut self) -> Option<Incoming> {
        Some(match self.version {
            Version::V5 => match Packet::read(&mut self.buf, None) {
                Err(v5::Error::InsufficientBytes(_)) => return None,
                Err(error) => panic!("a malformed MQTT 5 packet: {error}"),
                Ok(Packet::ConnAck(ack)) => {
                    // Without properties the code is the fourth byte.
                    let mut out = BytesMut::new();
                    ConnAck {
                        properties: None,
                        ..ack
                    }
                    .write(&mut out)
                    .unwrap();
                    Incoming::ConnAck(out[3])
                }
                Ok(Packet::SubAck(_)) => Incoming::SubAck,
                Ok(Packet::PubAck(_)) => Incoming::PubAck,
                Ok(Packet::PingResp(_)) => Incoming::PingResp,
                Ok(Packet::Publish(message)) => Incoming::Publish {
                    topic: message.topic,
                    payload: message.payload.to_vec(),
                    pkid: message.pkid,
                    qos1: message.qos == QoS::AtLeastOnce,
                },
                Ok(Packet::Disconnect(disconnect)) => Incoming::Disconnect(disconnect.reason_code),
                Ok(other) => Incoming::Other(format!("{other:?}")),
            },
            Version::V311 => match v4::read(&mut self.buf, 1 << 20) {
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => return None,
                Err(error) => panic!("a malformed MQTT 3.1.1 packet: {error:?}"),
                Ok(v4::Packet::ConnAck(ack)) => {
                    let mut out = BytesMut::new();
                    ack.write(&mut out).unwrap();
                    Incoming::ConnAck(out[3])
                }
                Ok(v4::Packet::SubAck(_)) => Incoming::SubAck,
                Ok(v4::Packet::PubAck(_)) => Incoming::PubAck,
                Ok(v4::Packet::PingResp) => Incoming::PingResp,
                Ok(v4::Packet::Publish(message)) => Incoming::Publish {
                    topic: message.topic,
                    payload: message.payload.to_vec(),
                    pkid: message.pkid,
                    qos1: message.qos == rumqttc::mqttbytes::QoS::AtLeastOnce,
                },
                Ok(other) => Incoming::Other(format!("{other:?}")),
            },
        })
    }

    /// Sends a PINGREQ; an error unless the next packet is its PINGRESP.
    pub(crate) async fn ping(&mut self) -> Result<(), String> {
        self.send_either(Packet::PingReq(PingReq), |out| v4::PingReq.write(out))
            .await;
        match self.recv().await {
            Some(Incoming::PingResp) => Ok(()),
            None => Err("its PINGREQ was not answered: the connection was closed".into()),
            Some(other) => Err(format!("its PINGREQ was not answered: got {other:?}")),
        }
    }

    /// Subscribes to `filter` at QoS 1 and waits for the SUBACK.
    pub(crate) async fn subscribe(&mut self, filter: &str) {
        let pkid = self.pkid();
        let mut v311 = v4::Subscribe::new(filter, rumqttc::mqttbytes::QoS::AtLeastOnce);
        v311.pkid = pkid;
        let v5 = subscribe_packet(pkid, filter, QoS::AtLeastOnce);
        self.send_either(v5, |out| v311.write(out)).await;
        match self.recv().await {
            Some(Incoming::SubAck) => {}
            other => panic!("expected the SUBACK of {filter:?}, got {other:?}"),
        }
    }

    /// Publishes at QoS 1 and waits for the PUBACK.
    pub(crate) async fn publish(&mut self, topic: &str, payload: &[u8]) {
        let pkid = self.pkid();
        let mut v311 = v4::Publish::new(topic, rumqttc::mqttbytes::QoS::AtLeastOnce, payload);
        v311.pkid = pkid;
        let v5 = publish_packet(topic, QoS::AtLeastOnce, pkid, payload.to_vec());
        self.send_either(v5, |out| v311.write(out)).await;
        match self.recv().await {
            Some(Incoming::PubAck) => {}
            other => panic!("expected the PUBACK of a publish to {topic:?}, got {other:?}"),
        }
    }

    /// Fails the test unless the next packet is the message `payload` on
    /// `topic`, which it acknowledges.
    pub(crate) async fn receives(&mut self, who: &str, topic: &str, payload: &[u8]) {
        match self.recv().await {
            Some(Incoming::Publish {
                topic: got,
                payload: body,
                pkid,
                qos1,
            }) => {
                assert_eq!((got.as_str(), body.as_slice()), (topic, payload), "{who}");
                if qos1 {
                    let v5 = Packet::PubAck(PubAck {
                        pkid,
                        reason: PubAckReason::Success,
                        properties: None,
                    });
                    self.send_either(v5, |out| v4::PubAck::new(pkid).write(out))
                        .await;
                }
            }
            None => panic!("{who} expected a message on {topic:?}: its connection was closed"),
            Some(other) => panic!("{who} expected a message on {topic:?}, got {other:?}"),
        }
    }

    /// Waits for the connection to close, skipping what comes first; the
    /// last DISCONNECT's reason code, if any.
    pub(crate) async fn ended(&mut self) -> Option<DisconnectReasonCode> {
        let mut last = None;
        while let Some(packet) = self.recv().await {
            if let Incoming::Disconnect(reason) = packet {
                last = Some(reason);
            }
        }
        last
    }

    /// Fails the test unless the connection ends as a taken-over session
    /// does: DISCONNECT 0x8E (5.0), or closed (3.1.1, which has no DISCONNECT).
    pub(crate) async fn taken_over(&mut self, who: &str) {
        let reason = self.ended().await;
        let expected = match self.version {
            Version::V5 => Some(DisconnectReasonCode::SessionTakenOver),
            Version::V311 => None,
        };
        assert_eq!(reason, expected, "how {who}'s connection ended");
    }
}

/// The active check that `device`, connected as `client_id` and subscribed
/// to `topic` at the broker on `broker_port`, is still served: its PINGREQ is
/// answered, and a message that a third client publishes straight to the
/// broker (with `login`) reaches it. A failure shows the proxy's events
/// about the device.
pub(crate) async fn still_served(
    device: &mut Client,
    client_id: &str,
    broker_port: u16,
    login: Credentials<'_>,
    topic: &str,
) {
    let who = format!("the device {client_id:?}");
    if let Err(why) = device.ping().await {
        let named = id(client_id);
        let events: Vec<String> = captured_events()
            .into_iter()
            .filter(|line| line.contains(&named))
            .collect();
        panic!("{who} is no longer served: {why}; the proxy's events about it: {events:#?}");
    }
    let publisher_id = format!("{client_id}-publisher");
    let mut publisher = Client::connected(broker_port, Version::V5, &publisher_id, login).await;
    let payload = format!("for {client_id}");
    publisher.publish(topic, payload.as_bytes()).await;
    device.receives(&who, topic, payload.as_bytes()).await;
}

/// How the proxy's events name the session of `client_id`.
pub(crate) fn id(client_id: &str) -> String {
    format!("id {}:", zilla::engine::telemetry::text(client_id))
}

/// Fails the test if an `MQTT_SESSION_TAKEN_OVER` event names `client_id`.
pub(crate) fn assert_never_taken_over(client_id: &str) {
    let named = id(client_id);
    let taken: Vec<String> = captured_events()
        .into_iter()
        .filter(|line| line.contains("MQTT_SESSION_TAKEN_OVER") && line.contains(&named))
        .collect();
    assert!(taken.is_empty(), "{client_id} was taken over: {taken:#?}");
}

/// A mosquitto that admits only the users of its password file.
pub(crate) struct Secured {
    pub(crate) broker: Mosquitto,
    _passwords: TempDir,
}

impl Secured {
    /// Starts mosquitto with a password file holding `users` (user, password),
    /// written by `mosquitto_passwd`, and anonymous clients refused.
    pub(crate) fn start(users: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("passwords");
        for (index, (user, password)) in users.iter().enumerate() {
            let mut command = Command::new("mosquitto_passwd");
            command.arg("-b");
            if index == 0 {
                command.arg("-c");
            }
            let status = command
                .arg(&file)
                .args([user, password])
                .status()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run mosquitto_passwd ({e}); it comes with Debian's mosquitto \
                         package: {}",
                        zilla_testkit::MOSQUITTO_INSTALL
                    )
                });
            assert!(status.success(), "mosquitto_passwd failed: {status}");
        }
        // Mosquitto::start_with writes `allow_anonymous true` first; with
        // `per_listener_settings false` (the default) the last one wins.
        // Started as root, mosquitto 2 drops to the `mosquitto` user before
        // it reads the password file, which is in a directory only we may
        // read: `user root` keeps it who it was (no effect when not root).
        let config = format!(
            "user root\nallow_anonymous false\npassword_file {}\n",
            file.display()
        );
        let broker = Mosquitto::start_with(&config).unwrap();
        Self {
            broker,
            _passwords: dir,
        }
    }
}

/// A TCP forwarder on a free port that pipes each connection it accepts to
/// `127.0.0.1:target`, and that can stop accepting while the connections it
/// piped go on.
pub(crate) struct Forwarder {
    pub(crate) port: u16,
    accepting: JoinHandle<()>,
}

impl Forwarder {
    pub(crate) async fn start(target: u16) -> Self {
        let mut failure = None;
        for _ in 0..5 {
            let port = free_port();
            match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(listener) => {
                    let accepting = tokio::spawn(async move {
                        while let Ok((mut inbound, _)) = listener.accept().await {
                            tokio::spawn(async move {
                                if let Ok(mut outbound) =
                                    TcpStream::connect(("127.0.0.1", target)).await
                                {
                                    let _ =
                                        tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
                                            .await;
                                }
                            });
                        }
                    });
                    return Self { port, accepting };
                }
                // Another process took the port meanwhile: another one.
                Err(error) => failure = Some(error),
            }
        }
        panic!("no free port for the forwarder: {failure:?}");
    }

    /// Closes the listener (new connections are refused); the connections
    /// piped so far go on.
    pub(crate) async fn stop_accepting(self) {
        self.accepting.abort();
        // Once the task is gone, so is its listener.
        let _ = self.accepting.await;
        assert!(
            TcpStream::connect(("127.0.0.1", self.port)).await.is_err(),
            "the forwarder's port still accepts connections"
        );
    }
}
