//! Unit tests of the session, one behaviour each: admission decided from a
//! CONNECT and a guard's verdict, and the state machine driven with bytes
//! and a fake clock, asserting the packets it queues for each side. No
//! socket, no runtime, no sleep.

mod admission;
mod certificates;
mod client_features;
mod express;
mod flow_control;
mod flows;
mod guards;
mod lifecycle;
mod limits;
mod metrics;
mod packets;
mod quotas;
mod rates;
mod reauth;
mod replicas;
mod resends;
mod routing_answers;
mod subscriptions;
mod timers;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use mqtt_bytes_v5::{
    ConnAck, ConnAckProperties, Connect, ConnectProperties, ConnectReturnCode,
    DisconnectReasonCode, LastWill, Packet, Publish, QoS,
};
use serde::Deserialize;
use zilla_engine::route::GuardRequirement;
use zilla_engine::{
    async_trait, Events, Exit, Granted, Guard, GuardRejection, GuardSession, Model, Route, Routes,
    Shutdown, StreamInfo, ValidationError,
};

use super::admit::{self, Admission, Refusal, Request};
use super::end::{Closing, End};
use super::state::{Session, Start};
use super::takeover::Carried;
use crate::codec::{self, Version};
use crate::config::{ServerAuthorization, ServerConfig, TopicValidation};
use crate::credentials::Login;
use crate::flow::Flow;
use crate::limits::Limits;
use crate::options::{
    ConnectCredentials, CredentialsPattern, MqttCondition, OnInvalid, ParamSource, RouteTemplate,
};
use crate::port::{MqttSessions, OpenError, OpenSession, Upstream};
use crate::upstream::UpstreamLink;
pub(crate) use packets::*;

/// The origin of the fake clock: the one clock read of these tests.
#[expect(
    clippy::disallowed_methods,
    reason = "tests need one real instant as the origin of their fake clock"
)]
pub(crate) fn clock() -> Instant {
    Instant::now()
}

/// The wall-clock time at the fake clock's origin: the tests' "now" for
/// expiry times such as a certificate's notAfter.
pub(super) fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

/// What an x509 guard grants for a client certificate: its CN as the
/// identity, `roles`, attributes, and its notAfter `expires_in` from [`wall`].
pub(super) fn certificate(
    identity: &str,
    roles: &[&str],
    attributes: &[(&str, &str)],
    expires_in: Option<Duration>,
) -> GuardSession {
    GuardSession {
        identity: Some(identity.to_owned()),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        attributes: (attributes.iter())
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        expires_at: expires_in.map(|d| wall() + d),
    }
}

/// The guard these tests name `jwt0`. A token reads `identity:role,role`;
/// `bad` is refused and `down` cannot be decided.
struct TokenGuard;

#[async_trait]
impl Guard for TokenGuard {
    async fn authorize(&self, token: &str) -> Result<GuardSession, GuardRejection> {
        Err(GuardRejection::InvalidCredentials(format!(
            "tests decide with verdict(), not {token}"
        )))
    }
}

/// What the guard of these tests decides for `token`, which reads
/// `identity[:role,role][@tenant]` (`tenant` becomes the `tenant` attribute).
pub(super) fn verdict(token: &str) -> Result<GuardSession, GuardRejection> {
    match token {
        "bad" => Err(GuardRejection::InvalidCredentials("signature".into())),
        "down" => Err(GuardRejection::Unavailable("keys unreachable".into())),
        token => {
            let (token, tenant) = match token.split_once('@') {
                Some((token, tenant)) => (token, Some(tenant)),
                None => (token, None),
            };
            let (identity, roles) = token.split_once(':').unwrap_or((token, ""));
            Ok(GuardSession {
                identity: Some(identity.to_owned()),
                roles: roles
                    .split(',')
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned)
                    .collect(),
                attributes: tenant
                    .map(|tenant| ("tenant".to_owned(), tenant.to_owned()))
                    .into_iter()
                    .collect(),
                ..GuardSession::default()
            })
        }
    }
}

/// A port that is never opened: the tests open upstreams themselves.
struct NoBroker;

#[async_trait]
impl MqttSessions for NoBroker {
    async fn open(&self, _: OpenSession) -> Result<Upstream, OpenError> {
        Err(OpenError::Failed("unit tests open no broker".into()))
    }
}

/// A model that refuses the payload `bad`.
struct NotBad;

impl Model for NotBad {
    fn validate(&self, payload: &[u8]) -> Result<(), ValidationError> {
        if payload == b"bad" {
            return Err(ValidationError {
                path: None,
                reason: "bad payload".into(),
            });
        }
        Ok(())
    }
}

/// One route of a test configuration: `roles` make it guarded by `jwt0`,
/// `guarded` by other guards (`{x509_0: [device]}`), as in `zilla.yaml`.
#[derive(Deserialize)]
struct RouteSpec {
    exit: String,
    #[serde(default)]
    when: Vec<MqttCondition>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    guarded: indexmap::IndexMap<String, Vec<String>>,
}

/// How a test's mqtt server is configured.
pub(super) struct Server {
    /// The routes, as YAML: `[{exit, when, roles}]`.
    pub(super) routes: &'static str,
    /// The plain `exit`.
    pub(super) exit: Option<&'static str>,
    /// Whether sessions must present a `jwt0` token as `Bearer {credentials}` user name.
    pub(super) guard: bool,
    /// Whether the guard's credentials are in the password instead.
    pub(super) in_password: bool,
    /// Topic filters validated with the [`NotBad`] model, and what an invalid publish gets.
    pub(super) validate: Vec<(&'static str, OnInvalid)>,
    pub(super) maximum_packet_size: u32,
    pub(super) flow: Flow,
    pub(super) server_keep_alive: Option<u16>,
    pub(super) client_topic_aliases: u16,
    /// The Server Reference a draining proxy sends.
    pub(super) server_reference: Option<&'static str>,
    /// `options.limits`, as YAML.
    pub(super) limits: &'static str,
    /// `options.limit-wait`.
    pub(super) limit_wait: Option<u32>,
    /// `options.client-id`, e.g. `${guarded['x509_0'].identity}`.
    pub(super) client_id: Option<&'static str>,
    /// `credentials.authentication.method` of `jwt0`.
    pub(super) method: Option<Arc<str>>,
    /// More guards after `jwt0` (the test guard under other names), in
    /// configuration order: name, `connect.username` pattern, method.
    pub(super) more_guards: Vec<(&'static str, Option<&'static str>, Option<&'static str>)>,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            routes: "[]",
            exit: Some("north"),
            guard: false,
            in_password: false,
            validate: Vec::new(),
            maximum_packet_size: 1024 * 1024,
            flow: Flow::default(),
            server_keep_alive: None,
            client_topic_aliases: 0,
            server_reference: None,
            limits: "[]",
            limit_wait: None,
            client_id: None,
            method: None,
            more_guards: Vec::new(),
        }
    }
}

impl Server {
    pub(super) fn build(self) -> Arc<ServerConfig> {
        let guard: Arc<dyn Guard> = Arc::new(TokenGuard);
        let port: Arc<dyn MqttSessions> = Arc::new(NoBroker);
        let exit = |name: &str| Exit {
            name: name.into(),
            port: port.clone(),
        };
        let specs: Vec<RouteSpec> = serde_yaml::from_str(self.routes).expect("routes YAML");
        let routes: Vec<Route<MqttCondition, dyn MqttSessions>> = specs
            .into_iter()
            .map(|spec| Route {
                guarded: (!spec.roles.is_empty())
                    .then(|| ("jwt0".to_owned(), spec.roles))
                    .into_iter()
                    .chain(spec.guarded)
                    .map(|(name, roles)| GuardRequirement {
                        guard_name: name.into(),
                        // Every guard of these tests holds roles alike.
                        guard: guard.clone(),
                        roles,
                    })
                    .collect(),
                when: spec.when,
                exit: exit(&spec.exit),
                with: None,
            })
            .collect();
        let templates: Vec<RouteTemplate> = routes
            .iter()
            .map(|route| RouteTemplate::new(&route.when).expect("route template"))
            .collect();
        let jwt0 = self.guard.then(|| ServerAuthorization {
            guard_name: "jwt0".into(),
            guard: guard.clone(),
            pattern: Some(
                CredentialsPattern::new(&if self.in_password {
                    ConnectCredentials {
                        username: None,
                        password: Some("{credentials}".into()),
                    }
                } else {
                    ConnectCredentials {
                        username: Some("Bearer {credentials}".into()),
                        password: None,
                    }
                })
                .expect("pattern"),
            ),
            method: self.method.clone(),
        });
        let more = self
            .more_guards
            .iter()
            .map(|&(name, username, method)| ServerAuthorization {
                guard_name: name.into(),
                guard: guard.clone(),
                pattern: username.map(|pattern| {
                    CredentialsPattern::new(&ConnectCredentials {
                        username: Some(pattern.into()),
                        password: None,
                    })
                    .expect("pattern")
                }),
                method: method.map(Into::into),
            });
        let guards = jwt0.into_iter().chain(more).collect();
        let topics = self
            .validate
            .into_iter()
            .map(|(filter, on_invalid)| TopicValidation {
                filter: filter.into(),
                content: Some(("not-bad".into(), Arc::new(NotBad) as Arc<dyn Model>)),
                user_properties: Vec::new(),
                on_invalid,
            })
            .collect();
        let limits: Vec<crate::options::LimitOptions> =
            serde_yaml::from_str(self.limits).expect("limits YAML");
        let limits = Limits::new(&limits, self.limit_wait, Arc::default())
            .unwrap_or_else(|(path, why)| panic!("options.{path}: {why}"));
        let sessions: Arc<crate::session::takeover::SessionRegistry> = Arc::default();
        Arc::new(ServerConfig {
            versions: vec![Version::V4, Version::V5],
            maximum_packet_size: self.maximum_packet_size,
            connect_timeout: Duration::from_secs(10),
            flow: self.flow,
            server_keep_alive: self.server_keep_alive,
            client_topic_aliases: self.client_topic_aliases,
            server_reference: self.server_reference.map(str::to_owned),
            unbound: templates.iter().map(RouteTemplate::unbound).collect(),
            templates,
            routes: Routes::new(routes, self.exit.map(exit)),
            guards,
            client_id: self
                .client_id
                .map(|expression| ParamSource::parse(expression).expect("client-id")),
            topics,
            events: Events::new("test", "mqtt_server0"),
            shutdown: Shutdown::new(),
            sessions,
            seats: crate::admin::Seats::new("test"),
            limits,
        })
    }
}

/// Routes to `north` for `north/#` (publish and subscribe).
pub(super) const NORTH_ROUTES: &str = r#"
- exit: north
  when:
    - publish: [{topic: "north/#"}]
      subscribe: [{topic: "north/#"}]
"#;

/// Two brokers: `north/#` goes to `north`, everything else to `south`.
pub(super) fn two_brokers() -> Arc<ServerConfig> {
    Server {
        routes: NORTH_ROUTES,
        exit: Some("south"),
        ..Server::default()
    }
    .build()
}

/// A `version` client `c1` before one broker (`north`), its CONNACK drained.
pub(super) fn started(version: Version) -> Harness {
    let mut h = Opening::new(Server::default().build(), version).start();
    h.connack();
    h
}

/// What a test opens a session with; [`Opening::start`] admits it (without
/// sockets) and starts the state machine.
pub(super) struct Opening {
    pub(super) config: Arc<ServerConfig>,
    pub(super) version: Version,
    pub(super) connect: Connect,
    pub(super) will: Option<LastWill>,
    pub(super) login: Option<Login>,
    /// The CONNACK of every broker, unless `brokers` names one.
    pub(super) broker: ConnAck,
    pub(super) brokers: HashMap<&'static str, ConnAck>,
    /// The protocol spoken with the brokers.
    pub(super) upstream_version: Version,
    pub(super) carried: Option<Carried>,
    /// When the credentials expire, from the start.
    pub(super) expires_in: Option<Duration>,
    /// The client's connection, with what guards granted at earlier layers.
    pub(super) origin: StreamInfo,
}

impl Opening {
    /// A 3.1.1 or 5.0 client `c1` on `config`, in front of MQTT 5 brokers
    /// that set no limits.
    pub(super) fn new(config: Arc<ServerConfig>, version: Version) -> Self {
        Self {
            config,
            version,
            connect: connect("c1"),
            will: None,
            login: None,
            broker: broker_ack(None),
            brokers: HashMap::new(),
            upstream_version: Version::V5,
            carried: None,
            expires_in: None,
            origin: StreamInfo::default(),
        }
    }

    /// Presents `token` as the `Bearer {credentials}` user name.
    pub(super) fn token(mut self, token: &str) -> Self {
        self.login = Some(Login {
            username: format!("Bearer {token}"),
            password: Bytes::new(),
        });
        self
    }

    /// A connection on which `jwt0` granted `token` at an earlier layer (a
    /// WebSocket upgrade request); the guard's verdict is the test guard's.
    pub(super) fn granted(mut self, token: &str) -> Self {
        self.origin.granted.push(Granted {
            guard: "jwt0".into(),
            session: verdict(token).expect("a granted token"),
            credentials: token.into(),
        });
        self
    }

    /// A connection on which guard `guard` granted `session` at an earlier
    /// layer, e.g. a tls server's x509 guard for a client certificate (see
    /// [`certificate`]); the mqtt server does not name that guard.
    pub(super) fn grant(mut self, guard: &str, session: GuardSession) -> Self {
        self.origin.granted.push(Granted {
            guard: guard.into(),
            session,
            credentials: format!("certificate of {guard}"),
        });
        self
    }

    /// A connection from `peer` (the source address limits count by).
    pub(super) fn from(mut self, peer: &str) -> Self {
        self.origin.peer = Some(peer.parse().expect("a socket address"));
        self
    }

    /// Admission as the driver runs it, with the test guard's verdict.
    pub(super) fn admit(&mut self) -> Result<Admission, Refusal> {
        self.admit_at(clock())
    }

    /// Admission at `now` (for the limits' buckets).
    pub(super) fn admit_at(&mut self, now: Instant) -> Result<Admission, Refusal> {
        let mut request = Request {
            version: self.version,
            connect: self.connect.clone(),
            will: self.will.clone(),
            login: self.login.clone(),
            assigned: None,
            guard: None,
        };
        let token = admit::credentials(
            &self.config,
            &mut request,
            || "zilla-assigned".into(),
            &self.origin,
        )?;
        let granted = admit::own_grant(&self.config, &request, &self.origin);
        admit::before_guard(&self.config, &request, &self.origin, now)?;
        let verdict = admit::granted_verdict(granted, token.as_deref())
            .or_else(|| token.as_deref().map(verdict));
        admit::admit(&self.config, request, token, verdict, &self.origin, now)
    }

    /// Admits the session (it must be admitted) and starts it at the fake
    /// clock's origin; the CONNACK is the first packet queued for the client.
    pub(super) fn start(self) -> Harness {
        self.start_at(clock())
    }

    /// Admits the session (it must be admitted) and starts it at `now`.
    pub(super) fn start_at(mut self, now: Instant) -> Harness {
        let admission = self.admit_at(now).expect("admitted");
        let acks: Vec<ConnAck> = admission
            .opens
            .iter()
            .map(|(name, _, _)| self.brokers.get(&**name).unwrap_or(&self.broker).clone())
            .collect();
        let links: Vec<UpstreamLink> = admission
            .opens
            .iter()
            .zip(&acks)
            .map(|((name, _, open), ack)| {
                let keep_alive = ack
                    .properties
                    .as_ref()
                    .and_then(|p| p.server_keep_alive)
                    .unwrap_or(open.connect.keep_alive);
                UpstreamLink::new(name.clone(), ack, keep_alive, self.upstream_version, now)
            })
            .collect();
        let connack = admit::merged_connack(&acks, admission.assigned.clone(), &self.config);
        let exits = links.iter().map(|l| l.name.to_string()).collect();
        let opens = admission.opens.iter().map(|(_, _, o)| o.clone()).collect();
        let start = Start {
            version: self.version,
            client_id: admission.connect.client_id.as_str().into(),
            connect: admission.connect,
            peer: "127.0.0.1:50000".into(),
            upstreams: links,
            router: admission.router,
            connack,
            carried: self.carried,
            // Either a fixed expiry, or what the guards granted, on the wall
            // clock of these tests.
            expires_at: (self.expires_in.map(|d| now + d))
                .or_else(|| (admission.expires_at).map(|at| admit::instant_at(at, wall(), now))),
            others_expire: (admission.others_expire).map(|at| admit::instant_at(at, wall(), now)),
            limits: admission.limits,
        };
        Harness {
            session: Session::new(self.config, start, now),
            now,
            version: self.version,
            upstream_version: self.upstream_version,
            exits,
            opens,
        }
    }
}

/// A running session and its fake clock.
pub(super) struct Harness {
    pub(super) session: Session,
    pub(super) now: Instant,
    pub(super) version: Version,
    pub(super) upstream_version: Version,
    /// Exit names, by upstream index.
    pub(super) exits: Vec<String>,
    /// What was asked of each upstream at admission.
    pub(super) opens: Vec<OpenSession>,
}

impl Harness {
    /// The client sends `packet`.
    pub(super) fn client(&mut self, packet: Packet) -> Result<(), End> {
        let mut buf = BytesMut::new();
        codec::write(&packet, self.version, &mut buf).expect("encodes");
        self.client_bytes(&buf)
    }

    /// The client sends raw bytes.
    pub(super) fn client_bytes(&mut self, bytes: &[u8]) -> Result<(), End> {
        let mut buf = BytesMut::from(bytes);
        self.session.on_client_bytes(self.now, &mut buf)
    }

    /// Upstream `index` sends `packet`.
    pub(super) fn upstream(&mut self, index: usize, packet: Packet) -> Result<(), End> {
        let mut buf = BytesMut::new();
        codec::write(&packet, self.upstream_version, &mut buf).expect("encodes");
        self.session.on_upstream_bytes(self.now, index, &mut buf)
    }

    /// The packets queued for the client since the last call (taken as written).
    pub(super) fn take_client(&mut self) -> Vec<Packet> {
        decode_all(self.session.client_transmit(), self.version)
    }

    /// The packets queued for upstream `index` since the last call; like
    /// the driver, a write (when there was something to write) restarts the
    /// upstream's keep-alive.
    pub(super) fn take_upstream(&mut self, index: usize) -> Vec<Packet> {
        let packets = decode_all(self.session.upstream_transmit(index), self.upstream_version);
        if !packets.is_empty() {
            self.session.upstream_sent(index, self.now);
        }
        packets
    }

    /// The fake clock moves on by `by`, and due timers run.
    pub(super) fn advance(&mut self, by: Duration) -> Result<(), End> {
        self.now += by;
        self.session.on_timeout(self.now)
    }

    /// Ends the session with `end`, as the driver does.
    pub(super) fn finish(&mut self, end: End) -> Closing {
        self.session.finish(end)
    }

    /// Drains the CONNACK the session starts with.
    pub(super) fn connack(&mut self) -> ConnAck {
        match self.take_client().as_slice() {
            [Packet::ConnAck(ack)] => ack.clone(),
            other => panic!("expected a CONNACK, got {other:?}"),
        }
    }
}

/// Decodes and clears what `buf` holds.
fn decode_all(buf: &mut BytesMut, version: Version) -> Vec<Packet> {
    let mut packets = Vec::new();
    while let Some(packet) = codec::read(buf, version, usize::MAX).expect("well-formed output") {
        packets.push(packet);
    }
    assert!(buf.is_empty(), "a partial packet was queued");
    packets
}

/// The one packet of `packets`.
pub(super) fn one(packets: Vec<Packet>) -> Packet {
    match <[Packet; 1]>::try_from(packets) {
        Ok([packet]) => packet,
        Err(packets) => panic!("expected one packet, got {packets:?}"),
    }
}

/// The one packet of `packets`, a PUBLISH.
pub(super) fn one_publish(packets: Vec<Packet>) -> Publish {
    match one(packets) {
        Packet::Publish(publish) => publish,
        other => panic!("expected a PUBLISH, got {other:?}"),
    }
}

/// The reason of an ending that refuses the client.
pub(super) fn refused(end: Result<(), End>) -> DisconnectReasonCode {
    match end {
        Err(End::Refuse(reason, _)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Source files of the state machine and its pure parts: no socket, no
/// runtime, no clock (the clippy configuration also forbids clock reads).
#[test]
fn the_state_machine_touches_no_socket_runtime_or_clock() {
    let files = [
        ("session/state.rs", include_str!("../state.rs")),
        (
            "session/state/express.rs",
            include_str!("../state/express.rs"),
        ),
        (
            "session/state/finish.rs",
            include_str!("../state/finish.rs"),
        ),
        ("session/end.rs", include_str!("../end.rs")),
        (
            "session/state/from_client.rs",
            include_str!("../state/from_client.rs"),
        ),
        (
            "session/state/from_upstream.rs",
            include_str!("../state/from_upstream.rs"),
        ),
        ("session/admit.rs", include_str!("../admit.rs")),
        ("session/acks.rs", include_str!("../acks.rs")),
        ("session/router.rs", include_str!("../router.rs")),
        (
            "session/state/limited.rs",
            include_str!("../state/limited.rs"),
        ),
        (
            "session/state/resent.rs",
            include_str!("../state/resent.rs"),
        ),
        (
            "session/state/reauth.rs",
            include_str!("../state/reauth.rs"),
        ),
        ("codec/auth.rs", include_str!("../../codec/auth.rs")),
        ("limits/mod.rs", include_str!("../../limits/mod.rs")),
        ("limits/bucket.rs", include_str!("../../limits/bucket.rs")),
        ("limits/hits.rs", include_str!("../../limits/hits.rs")),
        (
            "limits/registry.rs",
            include_str!("../../limits/registry.rs"),
        ),
        ("limits/session.rs", include_str!("../../limits/session.rs")),
        (
            "limits/throttle.rs",
            include_str!("../../limits/throttle.rs"),
        ),
        ("upstream.rs", include_str!("../../upstream.rs")),
        ("packet_ids.rs", include_str!("../../packet_ids.rs")),
        (
            "metrics/session.rs",
            include_str!("../../metrics/session.rs"),
        ),
        ("metrics/block.rs", include_str!("../../metrics/block.rs")),
    ];
    for (file, source) in files {
        for (number, line) in source.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for forbidden in [
                "tokio",
                "ByteStream",
                "::now(",
                "async ",
                ".await",
                "std::net",
                "std::io",
            ] {
                assert!(
                    !code.contains(forbidden),
                    "{file}:{}: `{forbidden}` in the state machine: {line}",
                    number + 1
                );
            }
        }
    }
}

#[test]
fn a_session_starts_with_its_connack() {
    let mut h = Opening::new(Server::default().build(), Version::V5).start();
    let ack = h.connack();
    assert_eq!(ack.code, ConnectReturnCode::Success);
    assert!(
        h.take_upstream(0).is_empty(),
        "the upstream CONNECT is the client binding's"
    );
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.now + Duration::from_secs(60))
    );
}
