//! One client connection: its CONNECT, the upstream sessions it is routed to,
//! and the relay between them until one side ends it.
//!
//! The client connection and all its upstream sessions are driven by this one
//! task: reads from every stream are polled together, packets are handled in
//! order, and each side's output is batched and written once per turn.
//!
//! Packet identifiers are mapped per upstream: a client's QoS 1/2 publish gets
//! a fresh id on the upstream it routes to and is acknowledged to the client
//! with its own id only when that upstream acknowledged it. Messages from
//! upstreams get ids from the client-side space, within the client's receive
//! maximum; the rest wait in order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use mqtt_bytes_v5::{
    ConnAck, ConnAckProperties, Connect, ConnectReturnCode, Disconnect, DisconnectProperties,
    DisconnectReasonCode, Filter, Packet, PingReq, PingResp, PubAck, PubAckReason, PubComp,
    PubCompReason, PubRec, PubRecReason, PubRel, Publish, QoS, SubAck, Subscribe,
    SubscribeReasonCode, UnsubAck, UnsubAckReason, Unsubscribe,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use zilla_engine::{Authorizations, ByteStream, GuardRejection, StreamInfo};

use crate::codec::{self, CodecError, Version};
use crate::options::{OnInvalid, Operation, RouteConditions};
use crate::port::{OpenError, OpenSession, SessionsPort, Upstream};
use crate::server::{Carried, Registration, ServerConfig};
use crate::topic;

/// Topic aliases a client may use toward the proxy; resolved here, never sent upstream.
const TOPIC_ALIAS_MAXIMUM: u16 = 64;
/// Upstream keep-alive when the client asked for none: the proxy still checks its brokers.
const DEFAULT_UPSTREAM_KEEP_ALIVE: u16 = 60;
/// The most a single read takes in (a busy connection's buffer size).
const READ_CHUNK: usize = 8 * 1024;
/// A quiet connection's read buffer: pings and small messages fit.
const SMALL_READ: usize = 512;
/// The first read of a connection, which holds the CONNECT and its token.
const CONNECT_READ: usize = 1024;

/// How long a client or broker may leave our writes unread before the session ends.
const WRITE_STALL: Duration = Duration::from_secs(30);

/// Room for the next read, sized to the traffic: a connection whose last
/// read was small (an idle device, a ping) keeps a small buffer, and one
/// whose reads fill the buffer grows to [`READ_CHUNK`]. An empty oversized
/// buffer is replaced, so tens of thousands of idle sessions do not each hold
/// a chunk that a burst once needed.
fn make_room(buf: &mut BytesMut, last_read: usize) {
    let want = last_read.saturating_mul(2).clamp(SMALL_READ, READ_CHUNK);
    if buf.is_empty() && buf.capacity() > 4 * want {
        *buf = BytesMut::with_capacity(want);
    } else if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
}

/// Serves one client connection until it ends.
pub(crate) async fn serve(config: Arc<ServerConfig>, mut client: ByteStream, info: StreamInfo) {
    let peer = info
        .peer
        .map(|p| p.to_string())
        .unwrap_or_else(|| "?".to_owned());
    // A CONNECT carrying a JWT is usually 600 to 1000 bytes: one read.
    let mut buf = BytesMut::with_capacity(CONNECT_READ);
    let handshake = tokio::select! {
        handshake = tokio::time::timeout(config.connect_timeout, read_connect(&config, &mut client, &mut buf)) => handshake,
        _ = config.shutdown.draining() => return,
    };
    let (version, connect) = match handshake {
        Ok(Ok(Some(accepted))) => accepted,
        // The client went away, or was already answered.
        Ok(Ok(None)) => return,
        Ok(Err(error)) => {
            config.events.warn(
                "MQTT_CONNECT_REJECTED",
                format!("client {peer}: {}", error.message),
            );
            return;
        }
        Err(_) => {
            config.events.warn(
                "MQTT_CONNECT_TIMEOUT",
                format!(
                    "client {peer} sent no CONNECT within {:?}; closed",
                    config.connect_timeout
                ),
            );
            return;
        }
    };
    let Some(session) = open_session(&config, version, connect, client, buf, &info, &peer).await
    else {
        return;
    };
    session.run().await;
}

/// Reads the CONNECT; refuses unsupported versions with the right CONNACK.
async fn read_connect(
    config: &ServerConfig,
    client: &mut ByteStream,
    buf: &mut BytesMut,
) -> Result<Option<(Version, Packet)>, CodecError> {
    let version = loop {
        match codec::connect_version(buf)? {
            Some(Ok(version)) if config.versions.contains(&version) => break version,
            Some(Ok(version)) => {
                let code = match version {
                    Version::V5 => ConnectReturnCode::UnsupportedProtocolVersion,
                    Version::V4 => ConnectReturnCode::RefusedProtocolVersion,
                };
                send_connack(
                    client,
                    version,
                    refused(code, "protocol version not enabled"),
                )
                .await;
                return Err(CodecError {
                    reason: DisconnectReasonCode::ProtocolError,
                    message: format!("MQTT {} is not enabled; CONNACK refused", version.as_str()),
                });
            }
            Some(Err(level)) => {
                let ack = refused(ConnectReturnCode::RefusedProtocolVersion, "");
                send_connack(client, Version::V4, ack).await;
                return Err(CodecError {
                    reason: DisconnectReasonCode::ProtocolError,
                    message: format!("unsupported protocol level {level}; CONNACK refused"),
                });
            }
            None => {}
        }
        if read_more(client, buf).await? == 0 {
            return Ok(None);
        }
    };
    loop {
        match codec::read(buf, version, config.maximum_packet_size as usize) {
            Ok(Some(packet @ Packet::Connect(..))) => return Ok(Some((version, packet))),
            Ok(Some(_)) => unreachable!("connect_version checked the packet type"),
            Ok(None) => {}
            Err(error) => {
                let code = match error.reason {
                    DisconnectReasonCode::PacketTooLarge => ConnectReturnCode::PacketTooLarge,
                    DisconnectReasonCode::ProtocolError => ConnectReturnCode::ProtocolError,
                    DisconnectReasonCode::TopicNameInvalid => ConnectReturnCode::TopicNameInvalid,
                    _ => ConnectReturnCode::MalformedPacket,
                };
                if version == Version::V5 {
                    send_connack(client, version, refused(code, &error.message)).await;
                }
                return Err(error);
            }
        }
        if read_more(client, buf).await? == 0 {
            return Ok(None);
        }
    }
}

async fn read_more(client: &mut ByteStream, buf: &mut BytesMut) -> Result<usize, CodecError> {
    make_room(buf, buf.len());
    client.read_buf(buf).await.map_err(|e| CodecError {
        reason: DisconnectReasonCode::UnspecifiedError,
        message: format!("read failed: {e}"),
    })
}

fn refused(code: ConnectReturnCode, reason: &str) -> ConnAck {
    let properties = (!reason.is_empty()).then(|| ConnAckProperties {
        reason_string: Some(reason.to_owned()),
        ..empty_connack_properties()
    });
    ConnAck {
        session_present: false,
        code,
        properties,
    }
}

fn empty_connack_properties() -> ConnAckProperties {
    ConnAckProperties {
        session_expiry_interval: None,
        receive_max: None,
        max_qos: None,
        retain_available: None,
        max_packet_size: None,
        assigned_client_identifier: None,
        topic_alias_max: None,
        reason_string: None,
        user_properties: Vec::new(),
        wildcard_subscription_available: None,
        subscription_identifiers_available: None,
        shared_subscription_available: None,
        server_keep_alive: None,
        response_information: None,
        server_reference: None,
        authentication_method: None,
        authentication_data: None,
    }
}

async fn send_connack(client: &mut ByteStream, version: Version, connack: ConnAck) {
    let mut out = BytesMut::new();
    if codec::write(&Packet::ConnAck(connack), version, &mut out).is_ok() {
        let _ = client.write_all(&out).await;
        let _ = client.flush().await;
    }
}

/// A fresh client identifier for a client that sent none.
fn assign_client_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "zilla-{:x}{:04x}{:x}",
        nanos,
        std::process::id() & 0xFFFF,
        count
    )
}

/// Checks the CONNECT, routes the session, opens its upstreams and answers
/// with a CONNACK; `None` when the session was refused.
async fn open_session(
    config: &Arc<ServerConfig>,
    version: Version,
    connect: Packet,
    mut client: ByteStream,
    buf: BytesMut,
    info: &StreamInfo,
    peer: &str,
) -> Option<Session> {
    let Packet::Connect(mut connect, will, login) = connect else {
        return None;
    };
    let refuse = |code: ConnectReturnCode, reason: &str, client_id: &str| {
        config.events.warn(
            "MQTT_CONNECT_REJECTED",
            format!("client {peer} id {client_id:?}: {reason}"),
        );
        refused(code, reason)
    };
    if connect
        .properties
        .as_ref()
        .is_some_and(|p| p.authentication_method.is_some())
    {
        let ack = refuse(
            ConnectReturnCode::BadAuthenticationMethod,
            "enhanced authentication (AUTH) is not supported",
            &connect.client_id,
        );
        send_connack(&mut client, version, ack).await;
        return None;
    }
    let mut assigned = None;
    if connect.client_id.is_empty() {
        if !connect.clean_start {
            let ack = refuse(
                ConnectReturnCode::ClientIdentifierNotValid,
                "an empty client id needs clean start",
                &connect.client_id,
            );
            send_connack(&mut client, version, ack).await;
            return None;
        }
        let id = assign_client_id();
        connect.client_id = id.clone();
        assigned = Some(id);
    }

    let mut authorizations = Authorizations::new();
    let mut login = login;
    let mut credentials = None;
    let mut expires_at = None;
    if let Some(authorization) = &config.authorization {
        let pattern = &authorization.pattern;
        let field = login.as_ref().map(|l| {
            if pattern.in_password {
                l.password.as_str()
            } else {
                l.username.as_str()
            }
        });
        let position = if pattern.in_password {
            "password"
        } else {
            "user name"
        };
        let token = match field.map(|text| pattern.extract(text)) {
            Some(Some(token)) => token.to_owned(),
            Some(None) => {
                let why = format!(
                    "the CONNECT {position} does not hold credentials in the expected form"
                );
                let ack = refuse(
                    ConnectReturnCode::BadUserNamePassword,
                    &why,
                    &connect.client_id,
                );
                send_connack(&mut client, version, ack).await;
                return None;
            }
            None => {
                let why = format!("no credentials: the CONNECT has no {position}");
                let ack = refuse(
                    ConnectReturnCode::BadUserNamePassword,
                    &why,
                    &connect.client_id,
                );
                send_connack(&mut client, version, ack).await;
                return None;
            }
        };
        match authorization.guard.authorize(&token).await {
            Ok(session) => {
                expires_at = session.expires_at;
                config.events.info(
                    "MQTT_AUTHORIZATION_SUCCEEDED",
                    format!(
                        "client {peer} id {:?}: {} authorized identity {:?}",
                        connect.client_id, authorization.guard_name, session.identity
                    ),
                );
                authorizations.insert(authorization.guard_name.clone(), session);
                credentials = Some(token);
                // The credentials were for the proxy; they go upstream only
                // where an mqtt client forwards them.
                login = None;
            }
            Err(GuardRejection::InvalidCredentials(why)) => {
                let why = format!(
                    "{} refused the credentials: {why}",
                    authorization.guard_name
                );
                let ack = refuse(
                    ConnectReturnCode::BadUserNamePassword,
                    &why,
                    &connect.client_id,
                );
                send_connack(&mut client, version, ack).await;
                return None;
            }
            Err(GuardRejection::Unavailable(why)) => {
                let why = format!("{} cannot decide: {why}", authorization.guard_name);
                let ack = refuse(
                    ConnectReturnCode::ServerUnavailable,
                    &why,
                    &connect.client_id,
                );
                send_connack(&mut client, version, ack).await;
                return None;
            }
        }
    }
    let conditions: Vec<RouteConditions> = config
        .templates
        .iter()
        .map(|template| template.bind(&authorizations))
        .collect();
    // Every exit a route accepts this session on gets an upstream session.
    let mut exits: Vec<(Arc<str>, SessionsPort)> = Vec::new();
    for (index, route) in config.routes.iter().enumerate() {
        let guarded = route.guarded.iter().all(|g| g.is_met(&authorizations));
        if guarded
            && conditions[index].accepts(Operation::Session(&connect.client_id))
            && !exits.iter().any(|(name, _)| *name == route.exit.name)
        {
            exits.push((route.exit.name.clone(), route.exit.port.clone()));
        }
    }
    if let Some(default) = config.routes.default_exit() {
        if !exits.iter().any(|(name, _)| *name == default.name) {
            exits.push((default.name.clone(), default.port.clone()));
        }
    }
    if exits.is_empty() {
        let ack = refuse(
            ConnectReturnCode::NotAuthorized,
            "no route accepts this session",
            &connect.client_id,
        );
        send_connack(&mut client, version, ack).await;
        return None;
    }
    // Only an authorized, routable session takes over a connection with its id.
    let registration = config.sessions.register(&connect.client_id);
    let session = Operation::Session(&connect.client_id);
    let router = Router {
        config: config.clone(),
        session_accepted: conditions.iter().map(|c| c.accepts(session)).collect(),
        unbound_session_accepted: config.unbound.iter().map(|c| c.accepts(session)).collect(),
        authorizations,
        conditions,
        exits: exits.iter().map(|(name, _)| name.clone()).collect(),
    };
    let will_exit = match &will {
        Some(will) => {
            let will_topic = String::from_utf8_lossy(&will.topic).into_owned();
            match router.route(Operation::Publish(&will_topic)) {
                Some(index) => Some(index),
                None => {
                    let ack = refuse(
                        ConnectReturnCode::NotAuthorized,
                        &format!("no route for the will topic {will_topic:?}"),
                        &connect.client_id,
                    );
                    send_connack(&mut client, version, ack).await;
                    return None;
                }
            }
        }
        None => None,
    };

    let mut upstream_connect = connect.clone();
    if upstream_connect.keep_alive == 0 {
        upstream_connect.keep_alive = DEFAULT_UPSTREAM_KEEP_ALIVE;
    }
    if let Some(properties) = upstream_connect.properties.as_mut() {
        // Brokers must not alias topics: aliases from several brokers would
        // collide on the one client connection, and the proxy reorders QoS 0
        // ahead of queued QoS 1/2 messages.
        properties.topic_alias_max = None;
    }
    let opening = exits.iter().enumerate().map(|(index, (_, port))| {
        port.open(OpenSession {
            connect: upstream_connect.clone(),
            will: if will_exit == Some(index) {
                will.clone()
            } else {
                None
            },
            login: login.clone(),
            credentials: credentials.clone(),
            origin: info.clone(),
        })
    });
    let opened = futures_util::future::join_all(opening).await;

    let mut upstreams = Vec::with_capacity(opened.len());
    let mut failure = None;
    for ((name, _), result) in exits.iter().zip(opened) {
        match result {
            Ok(upstream) => upstreams.push(Link::new(name.clone(), upstream)),
            Err(error) if failure.is_none() => failure = Some((name.clone(), error)),
            Err(_) => {}
        }
    }
    if let Some((name, error)) = failure {
        let ack = match error {
            OpenError::Refused(ack) => {
                let ack = *ack;
                config.events.warn(
                    "MQTT_CONNECT_REJECTED",
                    format!(
                        "client {peer} id {:?}: broker behind {name} refused with {:?}",
                        connect.client_id, ack.code
                    ),
                );
                ack
            }
            OpenError::Failed(message) => refuse(
                ConnectReturnCode::ServerUnavailable,
                &format!("upstream {name} unavailable: {message}"),
                &connect.client_id,
            ),
        };
        send_connack(&mut client, version, ack).await;
        for mut link in upstreams {
            // Undo the half-made session without firing its will.
            link.send(&Packet::Disconnect(disconnect(
                DisconnectReasonCode::NormalDisconnection,
                None,
            )));
            let _ = link.flush().await;
        }
        return None;
    }

    let connack = merged_connack(&upstreams, assigned, config.maximum_packet_size);
    let mut session = Session::new(
        config.clone(),
        version,
        &connect,
        client,
        buf,
        upstreams,
        router,
        &connack,
        peer,
        registration,
    );
    if connect.clean_start {
        config.sessions.resume(&connect.client_id);
    } else if connack.session_present {
        if let Some(carried) = config.sessions.resume(&connect.client_id) {
            session.restore(carried);
        }
    }
    session.expires_at = expires_at.map(|at: std::time::SystemTime| {
        Instant::now()
            + at.duration_since(std::time::SystemTime::now())
                .unwrap_or_default()
    });
    session.send_client(&Packet::ConnAck(connack));
    config.events.info(
        "MQTT_SESSION_STARTED",
        format!(
            "client {peer} id {:?} (MQTT {}) via {}",
            session.client_id,
            version.as_str(),
            session
                .upstreams
                .iter()
                .map(|l| &*l.name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    Some(session)
}

/// The client's CONNACK: what every upstream allows, and what the proxy adds.
fn merged_connack(
    upstreams: &[Link],
    assigned: Option<String>,
    maximum_packet_size: u32,
) -> ConnAck {
    let first = upstreams[0].connack.properties.clone();
    let all = || upstreams.iter().map(|l| l.connack.properties.as_ref());
    let min_u16 =
        |get: fn(&ConnAckProperties) -> Option<u16>| all().filter_map(|p| p.and_then(get)).min();
    let flag =
        |get: fn(&ConnAckProperties) -> Option<u8>| all().filter_map(|p| p.and_then(get)).min();
    let broker_max_packet = all()
        .filter_map(|p| p.and_then(|p| p.max_packet_size))
        .min();
    let mut properties = first.unwrap_or_else(empty_connack_properties);
    properties.receive_max = min_u16(|p| p.receive_max);
    properties.max_qos = flag(|p| p.max_qos);
    properties.retain_available = flag(|p| p.retain_available);
    properties.wildcard_subscription_available = flag(|p| p.wildcard_subscription_available);
    properties.subscription_identifiers_available = flag(|p| p.subscription_identifiers_available);
    properties.shared_subscription_available = flag(|p| p.shared_subscription_available);
    properties.max_packet_size =
        Some(broker_max_packet.map_or(maximum_packet_size, |m| m.min(maximum_packet_size)));
    properties.topic_alias_max = Some(TOPIC_ALIAS_MAXIMUM);
    if assigned.is_some() {
        properties.assigned_client_identifier = assigned;
    }
    ConnAck {
        session_present: upstreams.iter().all(|l| l.connack.session_present),
        code: ConnectReturnCode::Success,
        properties: Some(properties),
    }
}

fn disconnect(reason: DisconnectReasonCode, message: Option<String>) -> Disconnect {
    Disconnect {
        reason_code: reason,
        properties: message.map(|reason_string| DisconnectProperties {
            session_expiry_interval: None,
            reason_string: Some(reason_string),
            user_properties: Vec::new(),
            server_reference: None,
        }),
    }
}

/// Routes the operations of one session to the index of its upstream.
struct Router {
    config: Arc<ServerConfig>,
    /// Whether each route accepts this session's client id, decided once.
    session_accepted: Vec<bool>,
    /// The same for the unbound conditions.
    unbound_session_accepted: Vec<bool>,
    authorizations: Authorizations,
    /// The routes' conditions with this session's params bound.
    conditions: Vec<RouteConditions>,
    /// Exit names, by upstream index.
    exits: Vec<Arc<str>>,
}

impl Router {
    fn route(&self, operation: Operation<'_>) -> Option<usize> {
        let conditions = &self.conditions;
        let resolved = self
            .config
            .routes
            .resolve_by(&self.authorizations, |index, _| {
                self.session_accepted[index] && conditions[index].accepts(operation)
            })?;
        self.exits
            .iter()
            .position(|name| *name == resolved.exit.name)
    }

    /// Whether some token could have been allowed `operation`: the difference
    /// between "not authorized" (0x87) and "not routable" (0x83).
    fn could_route(&self, operation: Operation<'_>) -> bool {
        self.config.routes.default_exit().is_some()
            || self
                .config
                .unbound
                .iter()
                .zip(&self.unbound_session_accepted)
                .any(|(conditions, accepted)| *accepted && conditions.accepts(operation))
    }
}

/// What an upstream packet id stands for.
#[derive(Debug, Clone, Copy)]
enum Origin {
    /// A client publish with this client packet id.
    Publish(u16),
    /// A client SUBSCRIBE with this client packet id.
    Subscribe(u16),
    /// A client UNSUBSCRIBE with this client packet id.
    Unsubscribe(u16),
}

/// One upstream session.
struct Link {
    name: Arc<str>,
    stream: ByteStream,
    read_buf: BytesMut,
    /// Bytes the last read from the broker brought (sizes the next one).
    last_read: usize,
    write_buf: BytesMut,
    connack: ConnAck,
    version: Version,
    /// The largest packet the broker accepts.
    maximum_packet_size: usize,
    /// Our packet ids in use on this upstream.
    used: HashMap<u16, Origin>,
    next_pkid: u16,
    keep_alive: Option<Duration>,
    last_sent: Instant,
    ping_sent: Option<Instant>,
}

impl Link {
    fn new(name: Arc<str>, upstream: Upstream) -> Self {
        let keep_alive =
            (upstream.keep_alive > 0).then(|| Duration::from_secs(u64::from(upstream.keep_alive)));
        Self {
            name,
            stream: upstream.stream,
            read_buf: upstream.read_buf,
            last_read: 0,
            write_buf: BytesMut::new(),
            maximum_packet_size: upstream
                .connack
                .properties
                .as_ref()
                .and_then(|p| p.max_packet_size)
                .map_or(usize::MAX, |m| m as usize),
            connack: upstream.connack,
            version: upstream.version,
            used: HashMap::new(),
            next_pkid: 0,
            keep_alive,
            last_sent: Instant::now(),
            ping_sent: None,
        }
    }

    fn allocate(&mut self, origin: Origin) -> Option<u16> {
        for _ in 0..u16::MAX {
            self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
            if !self.used.contains_key(&self.next_pkid) {
                self.used.insert(self.next_pkid, origin);
                return Some(self.next_pkid);
            }
        }
        None
    }

    /// Ends the flow of our publish `pkid`, returning the client's packet id;
    /// an id that stands for something else is left alone.
    fn take_publish(&mut self, pkid: u16) -> Option<u16> {
        match self.used.get(&pkid) {
            Some(Origin::Publish(client_pkid)) => {
                let client_pkid = *client_pkid;
                self.used.remove(&pkid);
                Some(client_pkid)
            }
            _ => None,
        }
    }

    /// Encodes `packet` unless it exceeds the broker's maximum packet size.
    fn send_bounded(&mut self, packet: &Packet) -> bool {
        let start = self.write_buf.len();
        let _ = codec::write(packet, self.version, &mut self.write_buf);
        if self.write_buf.len() - start > self.maximum_packet_size {
            self.write_buf.truncate(start);
            return false;
        }
        true
    }

    fn send(&mut self, packet: &Packet) {
        // Packets built by the proxy always encode; a failure would be a bug.
        let _ = codec::write(packet, self.version, &mut self.write_buf);
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.write_buf.is_empty() {
            return Ok(());
        }
        self.stream.write_all(&self.write_buf).await?;
        self.write_buf.clear();
        self.last_sent = Instant::now();
        Ok(())
    }

    fn ping_due(&self) -> Option<Instant> {
        let keep_alive = self.keep_alive?;
        Some(match self.ping_sent {
            Some(sent) => sent + keep_alive,
            None => self.last_sent + keep_alive,
        })
    }
}

/// The reason string and user properties of a SUBACK or UNSUBACK.
type AckProperties = (Option<String>, Vec<(String, String)>);

/// A client SUBSCRIBE or UNSUBSCRIBE waiting for its upstreams' answers.
struct PendingAck {
    codes: Vec<Option<u8>>,
    /// Upstream (index, packet id) -> positions in the client's filter list.
    waiting: HashMap<(usize, u16), Vec<usize>>,
    reason_string: Option<String>,
    user_properties: Vec<(String, String)>,
}

/// How a session ends.
enum End {
    /// The client sent DISCONNECT, forwarded upstream.
    ClientDisconnected,
    /// The client's connection ended without DISCONNECT: the brokers see an
    /// abrupt loss too, so wills fire.
    ClientLost(String),
    /// The proxy ends the session with this reason (protocol violation,
    /// keep-alive timeout, ...); upstreams are dropped so wills fire.
    Refuse(DisconnectReasonCode, String),
    /// An upstream failed or went away.
    UpstreamLost(usize, String),
    /// An upstream sent DISCONNECT; relayed to the client.
    UpstreamDisconnected(usize, Disconnect),
    /// Another connection with the same client id arrived.
    TakenOver,
    /// The credentials the session was authorized with expired.
    Expired,
    /// The engine is shutting down.
    Draining,
}

struct Session {
    config: Arc<ServerConfig>,
    version: Version,
    client_id: String,
    peer: String,
    client: ByteStream,
    client_in: BytesMut,
    /// Bytes the last read from the client brought (sizes the next one).
    client_last_read: usize,
    client_out: BytesMut,
    upstreams: Vec<Link>,
    router: Router,
    /// Client packet id of a QoS 1/2 publish from the client -> (upstream, upstream id).
    inbound: HashMap<u16, (usize, u16)>,
    /// Client-side packet id of a message to the client -> (upstream, upstream id).
    outbound: HashMap<u16, (usize, u16)>,
    /// (upstream, upstream id) of messages to the client -> client-side packet id.
    delivering: HashMap<(usize, u16), u16>,
    next_client_pkid: u16,
    /// Messages waiting for a free slot in the client's receive maximum.
    waiting: VecDeque<(usize, Publish)>,
    pending_acks: HashMap<u16, PendingAck>,
    aliases: HashMap<u16, String>,
    /// How many QoS 1/2 messages the client accepts in flight.
    client_receive_maximum: usize,
    /// How many QoS 1/2 publishes the client may have in flight toward us.
    server_receive_maximum: usize,
    client_maximum_packet_size: usize,
    server_maximum_packet_size: usize,
    maximum_qos: QoS,
    retain_available: bool,
    keep_alive: Option<Duration>,
    last_heard: Instant,
    /// When the session's credentials expire.
    expires_at: Option<Instant>,
    /// Rotates which upstream is read first.
    turn: usize,
    /// How long the brokers keep the session after the connection ends:
    /// zero for a clean session, `None` for "until a clean start".
    session_expiry: Option<Duration>,
    registration: Registration,
}

impl Session {
    #[expect(
        clippy::too_many_arguments,
        reason = "assembled once, from the CONNECT exchange"
    )]
    fn new(
        config: Arc<ServerConfig>,
        version: Version,
        connect: &Connect,
        client: ByteStream,
        client_in: BytesMut,
        upstreams: Vec<Link>,
        router: Router,
        connack: &ConnAck,
        peer: &str,
        registration: Registration,
    ) -> Self {
        let connect_properties = connect.properties.as_ref();
        let ack_properties = connack.properties.as_ref();
        // A 3.1.1 client cannot be told a server keep-alive: it keeps its own.
        let client_keep_alive = match version {
            Version::V5 => ack_properties
                .and_then(|p| p.server_keep_alive)
                .unwrap_or(connect.keep_alive),
            Version::V4 => connect.keep_alive,
        };
        Self {
            version,
            client_id: connect.client_id.clone(),
            peer: peer.to_owned(),
            client,
            client_in,
            client_last_read: 0,
            client_out: BytesMut::new(),
            upstreams,
            router,
            inbound: HashMap::new(),
            outbound: HashMap::new(),
            delivering: HashMap::new(),
            next_client_pkid: 0,
            waiting: VecDeque::new(),
            pending_acks: HashMap::new(),
            aliases: HashMap::new(),
            client_receive_maximum: usize::from(
                connect_properties
                    .and_then(|p| p.receive_maximum)
                    .unwrap_or(u16::MAX),
            ),
            server_receive_maximum: usize::from(
                ack_properties
                    .and_then(|p| p.receive_max)
                    .unwrap_or(u16::MAX),
            ),
            client_maximum_packet_size: connect_properties
                .and_then(|p| p.max_packet_size)
                .map_or(usize::MAX, |m| m as usize),
            server_maximum_packet_size: ack_properties
                .and_then(|p| p.max_packet_size)
                .unwrap_or(config.maximum_packet_size)
                as usize,
            maximum_qos: match ack_properties.and_then(|p| p.max_qos) {
                Some(0) => QoS::AtMostOnce,
                Some(1) => QoS::AtLeastOnce,
                _ => QoS::ExactlyOnce,
            },
            retain_available: ack_properties.and_then(|p| p.retain_available) != Some(0),
            keep_alive: (client_keep_alive > 0)
                .then(|| Duration::from_secs(u64::from(client_keep_alive)) * 3 / 2),
            last_heard: Instant::now(),
            expires_at: None,
            turn: 0,
            session_expiry: match connect_properties.and_then(|p| p.session_expiry_interval) {
                None => Some(Duration::ZERO),
                Some(u32::MAX) => None,
                Some(seconds) => Some(Duration::from_secs(u64::from(seconds))),
            },
            registration,
            config,
        }
    }

    async fn run(mut self) {
        let end = self.relay().await;
        self.finish(end).await;
    }

    /// Relays until something ends the session.
    async fn relay(&mut self) -> End {
        // Bytes that arrived with the CONNECT or the CONNACKs (a pipelining
        // client, a broker sending queued messages at once) are handled first.
        if let Err(end) = self.on_client_input() {
            return end;
        }
        for index in 0..self.upstreams.len() {
            if let Err(end) = self.on_upstream_input(index) {
                return end;
            }
        }
        loop {
            if let Err(end) = self.flush().await {
                return end;
            }
            let deadline = self.next_deadline();
            let Self {
                client,
                client_in,
                upstreams,
                config,
                registration,
                turn,
                client_last_read,
                ..
            } = self;
            make_room(client_in, *client_last_read);
            // Start each poll at a different upstream, so a busy broker cannot
            // starve the others (their PINGRESPs included).
            *turn = turn.wrapping_add(1);
            let count = upstreams.len();
            let first = *turn % count;
            let upstream_read = poll_fn(|cx| {
                for offset in 0..count {
                    let index = (first + offset) % count;
                    let link = &mut upstreams[index];
                    make_room(&mut link.read_buf, link.last_read);
                    if let Poll::Ready(result) = tokio_util::io::poll_read_buf(
                        Pin::new(&mut link.stream),
                        cx,
                        &mut link.read_buf,
                    ) {
                        if let Ok(n) = result {
                            link.last_read = n;
                        }
                        return Poll::Ready((index, result));
                    }
                }
                Poll::Pending
            });
            let outcome = tokio::select! {
                read = client.read_buf(client_in) => match read {
                    Ok(0) => Err(End::ClientLost("connection closed without DISCONNECT".into())),
                    Ok(n) => {
                        self.client_last_read = n;
                        self.on_client_input()
                    }
                    Err(e) => Err(End::ClientLost(format!("read failed: {e}"))),
                },
                (index, read) = upstream_read => match read {
                    Ok(0) => Err(End::UpstreamLost(index, "connection closed".into())),
                    Ok(_) => self.on_upstream_input(index),
                    Err(e) => Err(End::UpstreamLost(index, format!("read failed: {e}"))),
                },
                _ = sleep_until(deadline) => self.on_timer(),
                _ = config.shutdown.draining() => Err(End::Draining),
                _ = registration.taken_over.notified() => Err(End::TakenOver),
            };
            if let Err(end) = outcome {
                return end;
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let client = self.keep_alive.map(|ka| self.last_heard + ka);
        self.upstreams
            .iter()
            .filter_map(Link::ping_due)
            .chain(client)
            .chain(self.expires_at)
            .min()
    }

    fn on_timer(&mut self) -> Result<(), End> {
        let now = Instant::now();
        if self.expires_at.is_some_and(|at| now >= at) {
            return Err(End::Expired);
        }
        if let Some(keep_alive) = self.keep_alive {
            if now >= self.last_heard + keep_alive {
                return Err(End::Refuse(
                    DisconnectReasonCode::KeepAliveTimeout,
                    format!("nothing received for {keep_alive:?} (1.5 x keep-alive)"),
                ));
            }
        }
        for (index, link) in self.upstreams.iter_mut().enumerate() {
            let (Some(keep_alive), Some(due)) = (link.keep_alive, link.ping_due()) else {
                continue;
            };
            if now < due {
                continue;
            }
            if link.ping_sent.is_some() {
                return Err(End::UpstreamLost(
                    index,
                    format!("no PINGRESP within {keep_alive:?}"),
                ));
            }
            link.ping_sent = Some(now);
            link.send(&Packet::PingReq(PingReq));
        }
        Ok(())
    }

    /// Writes what each side has pending. A peer that stops reading for
    /// [`WRITE_STALL`] ends the session instead of holding it forever.
    async fn flush(&mut self) -> Result<(), End> {
        for index in 0..self.upstreams.len() {
            match tokio::time::timeout(WRITE_STALL, self.upstreams[index].flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(End::UpstreamLost(index, format!("write failed: {e}"))),
                Err(_) => {
                    return Err(End::UpstreamLost(
                        index,
                        format!("stopped reading for {WRITE_STALL:?}"),
                    ))
                }
            }
        }
        if !self.client_out.is_empty() {
            match tokio::time::timeout(WRITE_STALL, self.client.write_all(&self.client_out)).await {
                Ok(Ok(())) => self.client_out.clear(),
                Ok(Err(e)) => return Err(End::ClientLost(format!("write failed: {e}"))),
                Err(_) => {
                    return Err(End::ClientLost(format!(
                        "stopped reading for {WRITE_STALL:?}"
                    )))
                }
            }
        }
        Ok(())
    }

    fn on_client_input(&mut self) -> Result<(), End> {
        self.last_heard = Instant::now();
        loop {
            match codec::read(
                &mut self.client_in,
                self.version,
                self.server_maximum_packet_size,
            ) {
                Ok(Some(packet)) => self.on_client_packet(packet)?,
                Ok(None) => return Ok(()),
                Err(error) => return Err(End::Refuse(error.reason, error.message)),
            }
        }
    }

    fn on_upstream_input(&mut self, index: usize) -> Result<(), End> {
        loop {
            let link = &mut self.upstreams[index];
            match codec::read(&mut link.read_buf, link.version, usize::MAX) {
                Ok(Some(packet)) => self.on_upstream_packet(index, packet)?,
                Ok(None) => return Ok(()),
                Err(error) => {
                    return Err(End::UpstreamLost(
                        index,
                        format!("sent a bad packet: {error}"),
                    ))
                }
            }
        }
    }

    /// Encodes `packet` for the client; returns false when it exceeds the
    /// client's maximum packet size and was not sent.
    fn send_client(&mut self, packet: &Packet) -> bool {
        let start = self.client_out.len();
        let _ = codec::write(packet, self.version, &mut self.client_out);
        if self.client_out.len() - start <= self.client_maximum_packet_size {
            return true;
        }
        self.client_out.truncate(start);
        // Reason strings and user properties are the first thing MQTT lets a
        // sender drop to fit; an acknowledgement must not be lost for them.
        if let Some(bare) = without_properties(packet) {
            let _ = codec::write(&bare, self.version, &mut self.client_out);
            if self.client_out.len() - start <= self.client_maximum_packet_size {
                return true;
            }
            self.client_out.truncate(start);
        }
        false
    }

    fn on_client_packet(&mut self, packet: Packet) -> Result<(), End> {
        match packet {
            Packet::Publish(publish) => self.client_publish(publish),
            Packet::PubAck(ack) => {
                if let Some((index, pkid)) = self.outbound.remove(&ack.pkid) {
                    self.delivering.remove(&(index, pkid));
                    self.upstreams[index].send(&Packet::PubAck(PubAck { pkid, ..ack }));
                    self.deliver_waiting();
                }
                Ok(())
            }
            Packet::PubRec(rec) => {
                if let Some(&(index, pkid)) = self.outbound.get(&rec.pkid) {
                    if rec.reason != PubRecReason::Success
                        && rec.reason != PubRecReason::NoMatchingSubscribers
                    {
                        self.outbound.remove(&rec.pkid);
                        self.delivering.remove(&(index, pkid));
                        self.deliver_waiting();
                    }
                    self.upstreams[index].send(&Packet::PubRec(PubRec { pkid, ..rec }));
                }
                Ok(())
            }
            Packet::PubComp(comp) => {
                if let Some((index, pkid)) = self.outbound.remove(&comp.pkid) {
                    self.delivering.remove(&(index, pkid));
                    self.upstreams[index].send(&Packet::PubComp(PubComp { pkid, ..comp }));
                    self.deliver_waiting();
                }
                Ok(())
            }
            Packet::PubRel(rel) => {
                match self.inbound.get(&rel.pkid) {
                    Some(&(index, pkid)) => {
                        self.upstreams[index].send(&Packet::PubRel(PubRel { pkid, ..rel }));
                    }
                    None => {
                        self.send_client(&Packet::PubComp(PubComp {
                            pkid: rel.pkid,
                            reason: PubCompReason::PacketIdentifierNotFound,
                            properties: None,
                        }));
                    }
                }
                Ok(())
            }
            Packet::Subscribe(subscribe) => self.client_subscribe(subscribe),
            Packet::Unsubscribe(unsubscribe) => self.client_unsubscribe(unsubscribe),
            Packet::PingReq(_) => {
                self.send_client(&Packet::PingResp(PingResp));
                Ok(())
            }
            Packet::Disconnect(disconnect) => {
                if let Some(seconds) = disconnect
                    .properties
                    .as_ref()
                    .and_then(|p| p.session_expiry_interval)
                {
                    self.session_expiry = match seconds {
                        u32::MAX => None,
                        seconds => Some(Duration::from_secs(u64::from(seconds))),
                    };
                }
                for link in &mut self.upstreams {
                    link.send(&Packet::Disconnect(disconnect.clone()));
                }
                Err(End::ClientDisconnected)
            }
            Packet::Connect(..) => Err(End::Refuse(
                DisconnectReasonCode::ProtocolError,
                "a second CONNECT".into(),
            )),
            other => Err(End::Refuse(
                DisconnectReasonCode::ProtocolError,
                format!("unexpected packet from a client: {}", packet_name(&other)),
            )),
        }
    }

    fn client_publish(&mut self, mut publish: Publish) -> Result<(), End> {
        if let Some(properties) = publish.properties.as_mut() {
            if let Some(alias) = properties.topic_alias.take() {
                if alias == 0 || alias > TOPIC_ALIAS_MAXIMUM {
                    return Err(End::Refuse(
                        DisconnectReasonCode::TopicAliasInvalid,
                        format!("topic alias {alias} outside 1..={TOPIC_ALIAS_MAXIMUM}"),
                    ));
                }
                if publish.topic.is_empty() {
                    match self.aliases.get(&alias) {
                        Some(topic) => publish.topic = topic.clone(),
                        None => {
                            return Err(End::Refuse(
                                DisconnectReasonCode::ProtocolError,
                                format!("topic alias {alias} was never set"),
                            ))
                        }
                    }
                } else {
                    self.aliases.insert(alias, publish.topic.clone());
                }
            }
        }
        if publish.qos > self.maximum_qos {
            return Err(End::Refuse(
                DisconnectReasonCode::QoSNotSupported,
                format!(
                    "QoS {:?} above the maximum {:?}",
                    publish.qos, self.maximum_qos
                ),
            ));
        }
        if publish.retain && !self.retain_available {
            return Err(End::Refuse(
                DisconnectReasonCode::RetainNotSupported,
                "retain is not available".into(),
            ));
        }
        let utf8_declared = publish
            .properties
            .as_ref()
            .is_some_and(|p| p.payload_format_indicator == Some(1));
        if utf8_declared && std::str::from_utf8(&publish.payload).is_err() {
            return Err(End::Refuse(
                DisconnectReasonCode::PayloadFormatInvalid,
                format!("payload on {:?} declared UTF-8 is not UTF-8", publish.topic),
            ));
        }
        if let Some(refused) = self.validate(&publish) {
            return refused;
        }
        let Some(index) = self.router.route(Operation::Publish(&publish.topic)) else {
            if self.router.could_route(Operation::Publish(&publish.topic)) {
                self.config.events.warn(
                    "MQTT_PUBLISH_REJECTED",
                    format!(
                        "client {} id {:?}: publish to {:?} is not authorized",
                        self.peer, self.client_id, publish.topic
                    ),
                );
                // 3.1.1 has no failure acknowledgement: the ack (without its
                // reason) stops retransmission, and the message is dropped.
                match publish.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => {
                        self.send_client(&Packet::PubAck(PubAck {
                            pkid: publish.pkid,
                            reason: PubAckReason::NotAuthorized,
                            properties: None,
                        }));
                    }
                    QoS::ExactlyOnce => {
                        self.send_client(&Packet::PubRec(PubRec {
                            pkid: publish.pkid,
                            reason: PubRecReason::NotAuthorized,
                            properties: None,
                        }));
                    }
                }
                return Ok(());
            }
            return Err(End::Refuse(
                DisconnectReasonCode::ImplementationSpecificError,
                format!("no route for publish to {:?}", publish.topic),
            ));
        };
        if publish.qos != QoS::AtMostOnce {
            if let Some(&(mapped, upstream_pkid)) = self.inbound.get(&publish.pkid) {
                // A retransmission (after a reconnect, the only time MQTT
                // allows one): it goes again to where the first copy went,
                // with the same packet id, so the broker can recognise it.
                if publish.dup {
                    publish.pkid = upstream_pkid;
                    self.upstreams[mapped].send(&Packet::Publish(publish));
                    return Ok(());
                }
                return Err(End::Refuse(
                    DisconnectReasonCode::ProtocolError,
                    format!("packet id {} reused while in flight", publish.pkid),
                ));
            }
            if self.inbound.len() >= self.server_receive_maximum {
                return Err(End::Refuse(
                    DisconnectReasonCode::ReceiveMaximumExceeded,
                    format!(
                        "more than {} QoS 1/2 publishes in flight",
                        self.server_receive_maximum
                    ),
                ));
            }
            let client_pkid = publish.pkid;
            let Some(pkid) = self.upstreams[index].allocate(Origin::Publish(client_pkid)) else {
                return Err(End::Refuse(
                    DisconnectReasonCode::QuotaExceeded,
                    "no packet id free".into(),
                ));
            };
            self.inbound.insert(client_pkid, (index, pkid));
            publish.pkid = pkid;
        }
        let (qos, upstream_pkid) = (publish.qos, publish.pkid);
        let link = &mut self.upstreams[index];
        if !link.send_bounded(&Packet::Publish(publish)) {
            // Larger than this broker accepts (after alias expansion or 3.1.1
            // translation): refuse this publish rather than lose the session.
            let name = link.name.clone();
            if let Some(client_pkid) = link.take_publish(upstream_pkid) {
                self.inbound.remove(&client_pkid);
                let refused = match qos {
                    QoS::AtLeastOnce => Packet::PubAck(PubAck {
                        pkid: client_pkid,
                        reason: PubAckReason::QuotaExceeded,
                        properties: None,
                    }),
                    _ => Packet::PubRec(PubRec {
                        pkid: client_pkid,
                        reason: PubRecReason::QuotaExceeded,
                        properties: None,
                    }),
                };
                self.send_client(&refused);
            }
            self.config.events.warn(
                "MQTT_PUBLISH_REJECTED",
                format!(
                    "client {} id {:?}: publish larger than upstream {name} accepts",
                    self.peer, self.client_id
                ),
            );
        }
        Ok(())
    }

    /// Checks a publish against the first `topics` entry its topic matches;
    /// `Some` when it is refused (and answered) or ends the session.
    fn validate(&mut self, publish: &Publish) -> Option<Result<(), End>> {
        if self.config.topics.is_empty() {
            return None;
        }
        let config = self.config.clone();
        let topic = config
            .topics
            .iter()
            .find(|t| topic::matches(&t.filter, &publish.topic))?;
        let failure = topic
            .content
            .as_ref()
            .and_then(|(name, model)| {
                model
                    .validate(&publish.payload)
                    .err()
                    .map(|error| format!("payload fails model {name}: {error}"))
            })
            .or_else(|| {
                let properties = publish.properties.as_ref()?;
                topic
                    .user_properties
                    .iter()
                    .find_map(|(property, name, model)| {
                        properties
                            .user_properties
                            .iter()
                            .filter(|(key, _)| key == property)
                            .find_map(|(_, value)| model.validate(value.as_bytes()).err())
                            .map(|error| {
                                format!("user property {property:?} fails model {name}: {error}")
                            })
                    })
            })?;
        let why = format!("publish to {:?} {failure}", publish.topic);
        self.config.events.warn(
            "MQTT_VALIDATION_FAILED",
            format!("client {} id {:?}: {why}", self.peer, self.client_id),
        );
        Some(match topic.on_invalid {
            OnInvalid::Disconnect => {
                Err(End::Refuse(DisconnectReasonCode::PayloadFormatInvalid, why))
            }
            OnInvalid::Reject => {
                match publish.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => {
                        self.send_client(&Packet::PubAck(PubAck {
                            pkid: publish.pkid,
                            reason: PubAckReason::PayloadFormatInvalid,
                            properties: None,
                        }));
                    }
                    QoS::ExactlyOnce => {
                        self.send_client(&Packet::PubRec(PubRec {
                            pkid: publish.pkid,
                            reason: PubRecReason::PayloadFormatInvalid,
                            properties: None,
                        }));
                    }
                }
                Ok(())
            }
        })
    }

    fn client_subscribe(&mut self, subscribe: Subscribe) -> Result<(), End> {
        let mut codes = vec![None; subscribe.filters.len()];
        let mut groups: BTreeMap<usize, Vec<(usize, Filter)>> = BTreeMap::new();
        for (position, filter) in subscribe.filters.into_iter().enumerate() {
            if !topic::is_valid_filter(&filter.path) {
                codes[position] = Some(0x8F);
                continue;
            }
            match self.router.route(Operation::Subscribe(&filter.path)) {
                Some(index) => groups.entry(index).or_default().push((position, filter)),
                None if self.router.could_route(Operation::Subscribe(&filter.path)) => {
                    self.config.events.warn(
                        "MQTT_SUBSCRIBE_REJECTED",
                        format!(
                            "client {} id {:?}: subscription to {:?} is not authorized",
                            self.peer, self.client_id, filter.path
                        ),
                    );
                    codes[position] = Some(0x87);
                }
                None => {
                    return Err(End::Refuse(
                        DisconnectReasonCode::ImplementationSpecificError,
                        format!("no route for subscription to {:?}", filter.path),
                    ))
                }
            }
        }
        let properties = subscribe.properties;
        self.fan_out(
            subscribe.pkid,
            codes,
            groups,
            Origin::Subscribe,
            |pkid, filters| {
                Packet::Subscribe(Subscribe {
                    pkid,
                    filters,
                    properties: properties.clone(),
                })
            },
        )
    }

    fn client_unsubscribe(&mut self, unsubscribe: Unsubscribe) -> Result<(), End> {
        let mut codes = vec![None; unsubscribe.filters.len()];
        let mut groups: BTreeMap<usize, Vec<(usize, String)>> = BTreeMap::new();
        for (position, filter) in unsubscribe.filters.into_iter().enumerate() {
            match self.router.route(Operation::Subscribe(&filter)) {
                Some(index) => groups.entry(index).or_default().push((position, filter)),
                // Nothing could have been subscribed there.
                None => codes[position] = Some(0x11),
            }
        }
        let properties = unsubscribe.properties;
        self.fan_out(
            unsubscribe.pkid,
            codes,
            groups,
            Origin::Unsubscribe,
            |pkid, filters| {
                Packet::Unsubscribe(Unsubscribe {
                    pkid,
                    filters,
                    properties: properties.clone(),
                })
            },
        )
    }

    /// Sends each upstream its share of a client SUBSCRIBE or UNSUBSCRIBE
    /// (`groups`: upstream index -> (position in the client's list, filter)),
    /// and records what the client's acknowledgement waits for.
    fn fan_out<F>(
        &mut self,
        client_pkid: u16,
        codes: Vec<Option<u8>>,
        groups: BTreeMap<usize, Vec<(usize, F)>>,
        origin: fn(u16) -> Origin,
        packet: impl Fn(u16, Vec<F>) -> Packet,
    ) -> Result<(), End> {
        let subscribe = matches!(origin(client_pkid), Origin::Subscribe(_));
        let mut pending = PendingAck {
            codes,
            waiting: HashMap::new(),
            reason_string: None,
            user_properties: Vec::new(),
        };
        for (index, filters) in groups {
            let Some(pkid) = self.upstreams[index].allocate(origin(client_pkid)) else {
                return Err(End::Refuse(
                    DisconnectReasonCode::QuotaExceeded,
                    "no packet id free".into(),
                ));
            };
            let (positions, filters): (Vec<usize>, Vec<F>) = filters.into_iter().unzip();
            pending.waiting.insert((index, pkid), positions);
            self.upstreams[index].send(&packet(pkid, filters));
        }
        self.pending_acks.insert(client_pkid, pending);
        self.complete_ack(client_pkid, subscribe);
        Ok(())
    }

    /// Sends the client its SUBACK/UNSUBACK once every upstream answered.
    fn complete_ack(&mut self, pkid: u16, subscribe: bool) {
        let done = self
            .pending_acks
            .get(&pkid)
            .is_some_and(|pending| pending.waiting.is_empty());
        if !done {
            return;
        }
        let Some(pending) = self.pending_acks.remove(&pkid) else {
            return;
        };
        let codes = pending.codes.into_iter().map(|code| code.unwrap_or(0x80));
        let has_properties = pending.reason_string.is_some() || !pending.user_properties.is_empty();
        let (reason_string, user_properties) = (pending.reason_string, pending.user_properties);
        let packet = if subscribe {
            Packet::SubAck(SubAck {
                pkid,
                return_codes: codes.map(subscribe_reason).collect(),
                properties: has_properties.then_some(mqtt_bytes_v5::SubAckProperties {
                    reason_string,
                    user_properties,
                }),
            })
        } else {
            Packet::UnsubAck(UnsubAck {
                pkid,
                reasons: codes.map(unsubscribe_reason).collect(),
                properties: has_properties.then_some(mqtt_bytes_v5::UnsubAckProperties {
                    reason_string,
                    user_properties,
                }),
            })
        };
        self.send_client(&packet);
    }

    fn on_upstream_packet(&mut self, index: usize, packet: Packet) -> Result<(), End> {
        match packet {
            Packet::Publish(publish) => {
                self.upstream_publish(index, publish);
                Ok(())
            }
            Packet::PubAck(ack) => {
                if let Some(Origin::Publish(client_pkid)) =
                    self.upstreams[index].used.remove(&ack.pkid)
                {
                    self.inbound.remove(&client_pkid);
                    self.send_client(&Packet::PubAck(PubAck {
                        pkid: client_pkid,
                        ..ack
                    }));
                }
                Ok(())
            }
            Packet::PubRec(rec) => {
                let link = &mut self.upstreams[index];
                if let Some(&Origin::Publish(client_pkid)) = link.used.get(&rec.pkid) {
                    let failed = !matches!(
                        rec.reason,
                        PubRecReason::Success | PubRecReason::NoMatchingSubscribers
                    );
                    if failed {
                        link.used.remove(&rec.pkid);
                        self.inbound.remove(&client_pkid);
                    }
                    self.send_client(&Packet::PubRec(PubRec {
                        pkid: client_pkid,
                        ..rec
                    }));
                }
                Ok(())
            }
            Packet::PubComp(comp) => {
                if let Some(Origin::Publish(client_pkid)) =
                    self.upstreams[index].used.remove(&comp.pkid)
                {
                    self.inbound.remove(&client_pkid);
                    self.send_client(&Packet::PubComp(PubComp {
                        pkid: client_pkid,
                        ..comp
                    }));
                }
                Ok(())
            }
            Packet::PubRel(rel) => {
                match self.delivering.get(&(index, rel.pkid)) {
                    Some(&client_pkid) => {
                        self.send_client(&Packet::PubRel(PubRel {
                            pkid: client_pkid,
                            ..rel
                        }));
                    }
                    None => self.upstreams[index].send(&Packet::PubComp(PubComp {
                        pkid: rel.pkid,
                        reason: PubCompReason::PacketIdentifierNotFound,
                        properties: None,
                    })),
                }
                Ok(())
            }
            Packet::SubAck(ack) => {
                self.upstream_ack(
                    index,
                    ack.pkid,
                    ack.return_codes
                        .iter()
                        .map(|c| subscribe_code(*c))
                        .collect(),
                    ack.properties.map(|p| (p.reason_string, p.user_properties)),
                );
                Ok(())
            }
            Packet::UnsubAck(ack) => {
                let codes = ack.reasons.iter().map(|r| unsubscribe_code(*r)).collect();
                self.upstream_ack(
                    index,
                    ack.pkid,
                    codes,
                    ack.properties.map(|p| (p.reason_string, p.user_properties)),
                );
                Ok(())
            }
            Packet::PingResp(_) => {
                self.upstreams[index].ping_sent = None;
                Ok(())
            }
            Packet::Disconnect(disconnect) => Err(End::UpstreamDisconnected(index, disconnect)),
            other => Err(End::UpstreamLost(
                index,
                format!("unexpected packet from the broker: {}", packet_name(&other)),
            )),
        }
    }

    fn upstream_ack(
        &mut self,
        index: usize,
        pkid: u16,
        codes: Vec<u8>,
        properties: Option<AckProperties>,
    ) {
        let used = &mut self.upstreams[index].used;
        let (client_pkid, subscribe) = match used.get(&pkid) {
            Some(Origin::Subscribe(p)) => (*p, true),
            Some(Origin::Unsubscribe(p)) => (*p, false),
            // An acknowledgement of the wrong kind leaves the request pending.
            _ => return,
        };
        used.remove(&pkid);
        if let Some(pending) = self.pending_acks.get_mut(&client_pkid) {
            if let Some(positions) = pending.waiting.remove(&(index, pkid)) {
                // A 3.1.1 broker's UNSUBACK has no reason codes: success.
                let codes = if codes.is_empty() {
                    vec![0; positions.len()]
                } else {
                    codes
                };
                for (position, code) in positions.into_iter().zip(codes) {
                    pending.codes[position] = Some(code);
                }
            }
            if let Some((reason_string, user_properties)) = properties {
                if pending.reason_string.is_none() {
                    pending.reason_string = reason_string;
                }
                pending.user_properties.extend(user_properties);
            }
        }
        self.complete_ack(client_pkid, subscribe);
    }

    fn upstream_publish(&mut self, index: usize, publish: Publish) {
        if publish.qos == QoS::AtMostOnce {
            self.send_client(&Packet::Publish(publish));
            return;
        }
        if let Some(&client_pkid) = self.delivering.get(&(index, publish.pkid)) {
            // The broker resends what the client had not acknowledged when the
            // session resumed: the client gets it again under its own id.
            let mut publish = publish;
            publish.pkid = client_pkid;
            publish.dup = true;
            self.send_client(&Packet::Publish(publish));
            return;
        }
        self.waiting.push_back((index, publish));
        self.deliver_waiting();
    }

    /// Sends waiting messages while the client's receive maximum allows.
    fn deliver_waiting(&mut self) {
        while self.outbound.len() < self.client_receive_maximum {
            let Some((index, mut publish)) = self.waiting.pop_front() else {
                return;
            };
            let Some(client_pkid) = self.allocate_client_pkid() else {
                self.waiting.push_front((index, publish));
                return;
            };
            let upstream_pkid = publish.pkid;
            publish.pkid = client_pkid;
            let qos = publish.qos;
            if self.send_client(&Packet::Publish(publish)) {
                self.outbound.insert(client_pkid, (index, upstream_pkid));
                self.delivering.insert((index, upstream_pkid), client_pkid);
            } else {
                // Larger than the client accepts: MQTT says drop it; the broker
                // is told it was handled so it does not resend forever.
                let link = &mut self.upstreams[index];
                match qos {
                    QoS::AtLeastOnce => link.send(&Packet::PubAck(PubAck {
                        pkid: upstream_pkid,
                        reason: PubAckReason::Success,
                        properties: None,
                    })),
                    _ => link.send(&Packet::PubRec(PubRec {
                        pkid: upstream_pkid,
                        reason: PubRecReason::UnspecifiedError,
                        properties: None,
                    })),
                }
            }
        }
    }

    fn allocate_client_pkid(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            self.next_client_pkid = self.next_client_pkid.wrapping_add(1).max(1);
            if !self.outbound.contains_key(&self.next_client_pkid) {
                return Some(self.next_client_pkid);
            }
        }
        None
    }

    /// Puts back the packet-id state a previous connection of this persistent
    /// session left, for the upstreams it still has.
    fn restore(&mut self, carried: Carried) {
        let index_of =
            |upstreams: &[Link], name: &Arc<str>| upstreams.iter().position(|l| l.name == *name);
        for (client_pkid, exit, pkid) in carried.inbound {
            if let Some(index) = index_of(&self.upstreams, &exit) {
                self.upstreams[index]
                    .used
                    .insert(pkid, Origin::Publish(client_pkid));
                self.inbound.insert(client_pkid, (index, pkid));
            }
        }
        for (client_pkid, exit, pkid) in carried.outbound {
            if let Some(index) = index_of(&self.upstreams, &exit) {
                self.outbound.insert(client_pkid, (index, pkid));
                self.delivering.insert((index, pkid), client_pkid);
            }
        }
        for (exit, next) in carried.next_pkids {
            if let Some(index) = index_of(&self.upstreams, &exit) {
                self.upstreams[index].next_pkid = next;
            }
        }
        self.next_client_pkid = carried.next_client_pkid;
    }

    /// The packet-id state to carry to the next connection, for a persistent session.
    fn carried(&self) -> Option<Carried> {
        if self.session_expiry == Some(Duration::ZERO) {
            return None;
        }
        let name = |index: usize| self.upstreams[index].name.clone();
        Some(Carried {
            inbound: self
                .inbound
                .iter()
                .map(|(&p, &(i, q))| (p, name(i), q))
                .collect(),
            outbound: self
                .outbound
                .iter()
                .map(|(&p, &(i, q))| (p, name(i), q))
                .collect(),
            next_pkids: self
                .upstreams
                .iter()
                .map(|l| (l.name.clone(), l.next_pkid))
                .collect(),
            next_client_pkid: self.next_client_pkid,
            expires: self.session_expiry.map(|after| Instant::now() + after),
        })
    }

    /// Tells each side what it needs to know, then closes everything.
    async fn finish(mut self, end: End) {
        if let Some(carried) = self.carried() {
            self.config.sessions.carry(&self.client_id, carried);
        }
        let client_id = format!("{:?}", self.client_id);
        let events = self.config.events.clone();
        let peer = self.peer.clone();
        match end {
            End::ClientDisconnected => {
                let _ = self.flush().await;
                events.info(
                    "MQTT_SESSION_ENDED",
                    format!("client {peer} id {client_id} disconnected"),
                );
            }
            End::ClientLost(why) => {
                events.info(
                    "MQTT_SESSION_ENDED",
                    format!("client {peer} id {client_id} lost: {why}; upstreams closed abruptly so wills fire"),
                );
            }
            End::Refuse(reason, why) => {
                events.warn(
                    "MQTT_SESSION_REFUSED",
                    format!(
                        "client {peer} id {client_id}: {why}; DISCONNECT 0x{:02X}",
                        reason as u8
                    ),
                );
                self.disconnect_client(reason, why).await;
            }
            End::UpstreamLost(index, why) => {
                let name = self.upstreams[index].name.clone();
                events.warn(
                    "MQTT_UPSTREAM_LOST",
                    format!("client {peer} id {client_id}: upstream {name} {why}"),
                );
                self.disconnect_client(
                    DisconnectReasonCode::UnspecifiedError,
                    format!("upstream {name} unavailable"),
                )
                .await;
            }
            End::UpstreamDisconnected(index, disconnect) => {
                let name = self.upstreams[index].name.clone();
                events.info(
                    "MQTT_UPSTREAM_DISCONNECTED",
                    format!(
                        "client {peer} id {client_id}: upstream {name} sent DISCONNECT 0x{:02X}",
                        disconnect.reason_code as u8
                    ),
                );
                if self.version == Version::V5 {
                    self.send_client(&Packet::Disconnect(disconnect));
                }
                self.close_client().await;
            }
            End::TakenOver => {
                events.info(
                    "MQTT_SESSION_TAKEN_OVER",
                    format!(
                        "client {peer} id {client_id}: a newer connection took the session over"
                    ),
                );
                self.disconnect_client(
                    DisconnectReasonCode::SessionTakenOver,
                    "session taken over".into(),
                )
                .await;
            }
            End::Expired => {
                events.warn(
                    "MQTT_SESSION_EXPIRED",
                    format!("client {peer} id {client_id}: credentials expired; DISCONNECT 0xA0"),
                );
                if self.version == Version::V5 {
                    codec::write_disconnect(
                        0xA0,
                        Some("credentials expired"),
                        &mut self.client_out,
                    );
                }
                self.close_client().await;
            }
            End::Draining => {
                for link in &mut self.upstreams {
                    // The client did not choose to leave: its will is due.
                    link.send(&Packet::Disconnect(disconnect(
                        DisconnectReasonCode::DisconnectWithWillMessage,
                        None,
                    )));
                }
                let _ = self.flush_upstreams().await;
                self.disconnect_client(
                    DisconnectReasonCode::ServerShuttingDown,
                    "server shutting down".into(),
                )
                .await;
            }
        }
        // Dropping the upstream streams without DISCONNECT is an abrupt loss
        // for the brokers, unless a DISCONNECT was flushed above.
    }

    async fn flush_upstreams(&mut self) -> io::Result<()> {
        for link in &mut self.upstreams {
            link.flush().await?;
        }
        Ok(())
    }

    async fn disconnect_client(&mut self, reason: DisconnectReasonCode, why: String) {
        if self.version == Version::V5 {
            self.send_client(&Packet::Disconnect(disconnect(reason, Some(why))));
        }
        self.close_client().await;
    }

    async fn close_client(&mut self) {
        let out = std::mem::take(&mut self.client_out);
        let closing = async {
            let _ = self.client.write_all(&out).await;
            let _ = self.client.shutdown().await;
        };
        // A client that does not read must not hold the session open.
        let _ = tokio::time::timeout(Duration::from_secs(5), closing).await;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// An acknowledgement without its optional properties.
fn without_properties(packet: &Packet) -> Option<Packet> {
    Some(match packet {
        Packet::ConnAck(ack) => Packet::ConnAck(ConnAck {
            properties: ack.properties.clone().map(|p| ConnAckProperties {
                reason_string: None,
                user_properties: Vec::new(),
                ..p
            }),
            ..ack.clone()
        }),
        Packet::PubAck(ack) => Packet::PubAck(PubAck {
            properties: None,
            ..ack.clone()
        }),
        Packet::PubRec(ack) => Packet::PubRec(PubRec {
            properties: None,
            ..ack.clone()
        }),
        Packet::PubRel(ack) => Packet::PubRel(PubRel {
            properties: None,
            ..ack.clone()
        }),
        Packet::PubComp(ack) => Packet::PubComp(PubComp {
            properties: None,
            ..ack.clone()
        }),
        Packet::SubAck(ack) => Packet::SubAck(SubAck {
            properties: None,
            ..ack.clone()
        }),
        Packet::UnsubAck(ack) => Packet::UnsubAck(UnsubAck {
            properties: None,
            ..ack.clone()
        }),
        Packet::Disconnect(d) => Packet::Disconnect(Disconnect {
            properties: None,
            ..d.clone()
        }),
        _ => return None,
    })
}

fn packet_name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(..) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq(_) => "PINGREQ",
        Packet::PingResp(_) => "PINGRESP",
        Packet::Disconnect(_) => "DISCONNECT",
    }
}

fn subscribe_code(code: SubscribeReasonCode) -> u8 {
    match code {
        SubscribeReasonCode::Success(qos) => qos as u8,
        SubscribeReasonCode::Unspecified => 0x80,
        SubscribeReasonCode::ImplementationSpecific => 0x83,
        SubscribeReasonCode::NotAuthorized => 0x87,
        SubscribeReasonCode::TopicFilterInvalid => 0x8F,
        SubscribeReasonCode::PkidInUse => 0x91,
        SubscribeReasonCode::QuotaExceeded => 0x97,
        SubscribeReasonCode::SharedSubscriptionsNotSupported => 0x9E,
        SubscribeReasonCode::SubscriptionIdNotSupported => 0xA1,
        SubscribeReasonCode::WildcardSubscriptionsNotSupported => 0xA2,
    }
}

fn subscribe_reason(code: u8) -> SubscribeReasonCode {
    match code {
        0 => SubscribeReasonCode::Success(QoS::AtMostOnce),
        1 => SubscribeReasonCode::Success(QoS::AtLeastOnce),
        2 => SubscribeReasonCode::Success(QoS::ExactlyOnce),
        0x83 => SubscribeReasonCode::ImplementationSpecific,
        0x87 => SubscribeReasonCode::NotAuthorized,
        0x8F => SubscribeReasonCode::TopicFilterInvalid,
        0x91 => SubscribeReasonCode::PkidInUse,
        0x97 => SubscribeReasonCode::QuotaExceeded,
        0x9E => SubscribeReasonCode::SharedSubscriptionsNotSupported,
        0xA1 => SubscribeReasonCode::SubscriptionIdNotSupported,
        0xA2 => SubscribeReasonCode::WildcardSubscriptionsNotSupported,
        _ => SubscribeReasonCode::Unspecified,
    }
}

fn unsubscribe_code(reason: UnsubAckReason) -> u8 {
    match reason {
        UnsubAckReason::Success => 0x00,
        UnsubAckReason::NoSubscriptionExisted => 0x11,
        UnsubAckReason::UnspecifiedError => 0x80,
        UnsubAckReason::ImplementationSpecificError => 0x83,
        UnsubAckReason::NotAuthorized => 0x87,
        UnsubAckReason::TopicFilterInvalid => 0x8F,
        UnsubAckReason::PacketIdentifierInUse => 0x91,
    }
}

fn unsubscribe_reason(code: u8) -> UnsubAckReason {
    match code {
        0x00 => UnsubAckReason::Success,
        0x11 => UnsubAckReason::NoSubscriptionExisted,
        0x83 => UnsubAckReason::ImplementationSpecificError,
        0x87 => UnsubAckReason::NotAuthorized,
        0x8F => UnsubAckReason::TopicFilterInvalid,
        0x91 => UnsubAckReason::PacketIdentifierInUse,
        _ => UnsubAckReason::UnspecifiedError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_buffers_follow_the_traffic() {
        let mut buf = BytesMut::new();
        make_room(&mut buf, 0);
        assert!(buf.capacity() >= SMALL_READ && buf.capacity() < READ_CHUNK);
        // Reads that fill the buffer grow it to a full chunk.
        make_room(&mut buf, READ_CHUNK);
        assert!(buf.capacity() >= READ_CHUNK);
        // Once the burst is over and the buffer is drained, it shrinks back.
        make_room(&mut buf, 40);
        assert!(buf.capacity() < READ_CHUNK / 2, "{}", buf.capacity());
        // Bytes still waiting are never dropped.
        buf.extend_from_slice(b"partial packet");
        make_room(&mut buf, 0);
        assert_eq!(&buf[..], b"partial packet");
        assert!(buf.capacity() - buf.len() >= SMALL_READ);
    }
}
