//! Admission: whether a CONNECT becomes a session, and on which upstreams.
//!
//! Pure decisions, in the order the driver takes them: the protocol version,
//! the CONNECT itself and where its credentials are ([`credentials`]), then,
//! with the guard's verdict and what guards granted at earlier layers (a
//! client certificate), the client id `options.client-id` binds, the routes
//! and the will ([`admit`]), then, with the upstreams' CONNACKs, the
//! client's CONNACK ([`merged_connack`]) or the refusal that relays a
//! broker's ([`upstream_refusal`]). Every refusal is a
//! [`Refusal`]: the CONNACK the client is told and what is logged. The driver
//! sends it; nothing here does I/O or reads the clock. Limits are checked in
//! two steps: CONNECTs per client id and source address before the guard is
//! asked ([`before_guard`]), the rest with its verdict (in [`admit`]); the
//! time is given (`now`).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use mqtt_bytes_v5::{
    ConnAck, ConnAckProperties, Connect, ConnectReturnCode, DisconnectReasonCode, LastWill,
};
use zilla_engine::telemetry::{identity, text};
use zilla_engine::{Authorizations, Granted, GuardRejection, GuardSession, StreamInfo};

use super::router::{self, Router};
use crate::codec::{CodecError, Reason, Version};
use crate::config::{ServerAuthorization, ServerConfig};
use crate::credentials::Login;
use crate::limits::{KeyHold, KeyValues, LimitHit, LimitKind, Phase, SessionLimits};
use crate::options::{CredentialsPattern, Operation, ParamSource, RouteConditions};
use crate::port::{OpenError, OpenSession, SessionsPort};

/// Topic aliases a client may use toward the proxy; resolved by the proxy,
/// never sent upstream.
pub(crate) const TOPIC_ALIAS_MAXIMUM: u16 = 64;
/// Upstream keep-alive when the client asked for none: the proxy still checks its brokers.
pub(crate) const DEFAULT_UPSTREAM_KEEP_ALIVE: u16 = 60;

/// A CONNECT the proxy refuses: what the client is told, and why (logged).
#[derive(Debug)]
pub(crate) struct Refusal {
    /// The version the CONNACK is encoded for.
    pub(crate) version: Version,
    pub(crate) connack: Box<ConnAck>,
    /// The client id as the CONNECT gave it.
    pub(crate) client_id: String,
    pub(crate) why: String,
    /// The limit refused it: logged as `MQTT_LIMIT_HIT` (rate-limited),
    /// not as every other refusal is.
    pub(crate) limit: Option<Box<LimitHit>>,
}

/// A CONNACK refusing with `code`, carrying `reason` as its reason string.
pub(crate) fn refused(code: ConnectReturnCode, reason: &str) -> ConnAck {
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

pub(super) fn refusal(
    version: Version,
    code: ConnectReturnCode,
    why: String,
    client_id: &str,
) -> Refusal {
    Refusal {
        version,
        connack: Box::new(refused(code, &why)),
        client_id: client_id.to_owned(),
        why,
        limit: None,
    }
}

/// The refusal of a CONNECT that hit a limit: CONNACK 0x9F for a connect
/// rate, 0x97 for a sessions quota, 0x90 for a will topic beyond the topic
/// limits (3.1.1: 0x03, server unavailable, for each).
pub(super) fn limit_refusal(version: Version, hit: LimitHit, client_id: &str) -> Refusal {
    let code = match hit.kind {
        LimitKind::Connects => ConnectReturnCode::ConnectionRateExceeded,
        LimitKind::Sessions => ConnectReturnCode::QuotaExceeded,
        _ => ConnectReturnCode::TopicNameInvalid,
    };
    let why = format!("{} exceeded", hit.why);
    Refusal {
        version,
        connack: Box::new(refused(code, &why)),
        client_id: client_id.to_owned(),
        why,
        limit: Some(Box::new(hit)),
    }
}

pub(crate) fn empty_connack_properties() -> ConnAckProperties {
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

/// The refusal of a protocol version the server does not serve: `Ok` is a
/// version it knows but has not enabled, `Err` an unknown protocol level
/// (answered as 3.1.1, the only form every client reads).
pub(crate) fn version_refusal(version: Result<Version, u8>) -> Refusal {
    match version {
        Ok(version) => {
            let code = match version {
                Version::V5 => ConnectReturnCode::UnsupportedProtocolVersion,
                Version::V4 => ConnectReturnCode::RefusedProtocolVersion,
            };
            Refusal {
                version,
                connack: Box::new(refused(code, "protocol version not enabled")),
                client_id: String::new(),
                why: format!("MQTT {} is not enabled; CONNACK refused", version.as_str()),
                limit: None,
            }
        }
        Err(level) => Refusal {
            version: Version::V4,
            connack: Box::new(refused(ConnectReturnCode::RefusedProtocolVersion, "")),
            client_id: String::new(),
            why: format!("unsupported protocol level {level}; CONNACK refused"),
            limit: None,
        },
    }
}

/// The CONNACK for a CONNECT that does not decode; `None` for 3.1.1, whose
/// CONNACK has no code for it (the connection just closes).
pub(crate) fn malformed_connect(version: Version, error: &CodecError) -> Option<ConnAck> {
    let code = match error.reason {
        DisconnectReasonCode::PacketTooLarge => ConnectReturnCode::PacketTooLarge,
        DisconnectReasonCode::ProtocolError => ConnectReturnCode::ProtocolError,
        DisconnectReasonCode::TopicNameInvalid => ConnectReturnCode::TopicNameInvalid,
        DisconnectReasonCode::PayloadFormatInvalid => ConnectReturnCode::PayloadFormatInvalid,
        _ => ConnectReturnCode::MalformedPacket,
    };
    (version == Version::V5).then(|| refused(code, &error.message))
}

/// A decoded CONNECT on its way to becoming a session.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) version: Version,
    pub(crate) connect: Connect,
    pub(crate) will: Option<LastWill>,
    pub(crate) login: Option<Login>,
    /// The client id the proxy gave a client that sent none.
    pub(crate) assigned: Option<String>,
    /// The session's own guard: the index in `ServerConfig::guards` of the
    /// guard the CONNECT's credentials go to ([`credentials`] finds it).
    pub(crate) guard: Option<usize>,
}

impl Request {
    /// The session's own guard, once [`credentials`] found it.
    pub(crate) fn own_guard<'a>(
        &self,
        config: &'a ServerConfig,
    ) -> Option<&'a ServerAuthorization> {
        self.guard.and_then(|index| config.guards.get(index))
    }
}

/// What the session's own guard (`request`'s) granted at an earlier layer
/// (a token in the WebSocket upgrade request), if it has one.
pub(crate) fn own_grant<'a>(
    config: &ServerConfig,
    request: &Request,
    origin: &'a StreamInfo,
) -> Option<&'a Granted> {
    (request.own_guard(config)).and_then(|a| origin.granted(&a.guard_name))
}

/// The first of the server's guards, in configuration order, that granted
/// a session at an earlier layer, with its index.
fn earlier_grant<'a>(
    config: &ServerConfig,
    origin: &'a StreamInfo,
) -> Option<(usize, &'a Granted)> {
    (config.guards.iter().enumerate())
        .find_map(|(index, g)| Some((index, origin.granted(&g.guard_name)?)))
}

/// Checks what the proxy itself requires of a CONNECT, gives a client without
/// an id one (`assign`; with `options.client-id`, [`admit`] gives it the
/// bound value once the guards decided), and finds the session's own guard
/// (`request.guard`) and the credentials it is to decide on: `Some(token)`
/// when the server has guards and there are any. A CONNECT with an
/// Authentication Method goes to the guard naming that method (none does:
/// 0x8C); otherwise its user name or password goes to the first guard, in
/// configuration order, whose `connect` pattern it matches. Credentials in
/// the CONNECT win; without them, what one of the server's guards (the
/// first in configuration order) granted at an earlier layer (a token in
/// the WebSocket upgrade request) stands in, and a session another guard
/// granted at an earlier layer (a tls server's x509 guard, for a client
/// certificate) is admitted without any (`None`): that guard authenticated
/// the client.
pub(crate) fn credentials(
    config: &ServerConfig,
    request: &mut Request,
    assign: impl FnOnce() -> String,
    origin: &StreamInfo,
) -> Result<Option<String>, Refusal> {
    let version = request.version;
    let connect = &mut request.connect;
    let refuse = |code, why: &str, id: &str| Err(refusal(version, code, why.to_owned(), id));
    let method = (connect.properties.as_ref()).and_then(|p| p.authentication_method.as_deref());
    let by_method = method
        .map(|method| (config.guards.iter()).position(|g| g.method.as_deref() == Some(method)));
    if let (Some(method), Some(None)) = (method, by_method) {
        return refuse(
            ConnectReturnCode::BadAuthenticationMethod,
            &format!(
                "the Authentication Method {} is not supported",
                text(method)
            ),
            &connect.client_id,
        );
    }
    if connect.client_id.is_empty() {
        let bound = config.client_id.is_some();
        // A random id cannot resume a session; a bound one (the device's
        // identity) can, and MQTT 5 lets the server assign an id without
        // clean start. 3.1.1 does not [MQTT-3.1.3-8].
        let may_resume = bound && version == Version::V5;
        if !connect.clean_start && !may_resume {
            return refuse(
                ConnectReturnCode::ClientIdentifierNotValid,
                "an empty client id needs clean start",
                &connect.client_id,
            );
        }
        if !bound {
            let id = assign();
            connect.client_id = id.clone();
            request.assigned = Some(id);
        }
    }
    if config.guards.is_empty() {
        return Ok(None);
    }
    if let Some(Some(index)) = by_method {
        // The method names this guard: its token is the Authentication
        // Data, and a user name is not read as one.
        request.guard = Some(index);
        return match enhanced_token(connect) {
            Some(token) => Ok(Some(token)),
            None => refuse(
                ConnectReturnCode::BadUserNamePassword,
                "the Authentication Data holds no token (text) for the Authentication Method",
                &connect.client_id,
            ),
        };
    }
    let field = |pattern: &CredentialsPattern| {
        request.login.as_ref().map(|l| {
            if pattern.in_password {
                // A password is binary data; credentials in it must be text.
                l.password_text()
            } else {
                Some(l.username.as_str())
            }
        })
    };
    let patterns = (config.guards.iter().enumerate())
        .filter_map(|(index, g)| Some((index, g.pattern.as_ref()?)));
    for (index, pattern) in patterns {
        if let Some(token) = field(pattern)
            .flatten()
            .and_then(|text| pattern.extract(text))
        {
            request.guard = Some(index);
            return Ok(Some(token.to_owned()));
        }
    }
    if let Some((index, granted)) = earlier_grant(config, origin) {
        request.guard = Some(index);
        return Ok(Some(granted.credentials.clone()));
    }
    if !origin.granted.is_empty() {
        // Authenticated at an earlier layer by another guard (a client
        // certificate): admitted without a session of the server's
        // guards, so routes guarded by them stay closed to this client.
        return Ok(None);
    }
    // Told as the first guard with a `connect` pattern reads credentials.
    let Some(pattern) = (config.guards.iter()).find_map(|g| g.pattern.as_ref()) else {
        return refuse(
            ConnectReturnCode::BadUserNamePassword,
            "no credentials: the CONNECT names no Authentication Method",
            &connect.client_id,
        );
    };
    let position = if pattern.in_password {
        "password"
    } else {
        "user name"
    };
    match field(pattern) {
        Some(None) => refuse(
            ConnectReturnCode::BadUserNamePassword,
            "the CONNECT password is binary, not the text the credentials need",
            &connect.client_id,
        ),
        Some(Some(_)) => refuse(
            ConnectReturnCode::BadUserNamePassword,
            &format!("the CONNECT {position} does not hold credentials in the expected form"),
            &connect.client_id,
        ),
        None => refuse(
            ConnectReturnCode::BadUserNamePassword,
            &format!("no credentials: the CONNECT has no {position}"),
            &connect.client_id,
        ),
    }
}

/// The token in the Authentication Data of a CONNECT that names the
/// server's Authentication Method: text, not empty.
fn enhanced_token(connect: &Connect) -> Option<String> {
    let data = connect.properties.as_ref()?.authentication_data.as_ref()?;
    let token = std::str::from_utf8(data).ok()?;
    (!token.is_empty()).then(|| token.to_owned())
}

/// The limits on CONNECTs per client id and per source address, checked
/// at `now` before the guard is asked: a flood of CONNECTs is refused
/// without a signature check each. With a shared store, the holds say
/// what the fleet still decides (`Limits::settle`, by the caller).
pub(crate) fn before_guard(
    config: &ServerConfig,
    request: &Request,
    origin: &StreamInfo,
    now: Instant,
) -> Result<Vec<KeyHold>, Refusal> {
    let client_id = &request.connect.client_id;
    let keys = KeyValues {
        client_id,
        guarded: None,
        source: origin.peer.map(|peer| peer.ip()),
    };
    (config.limits.connect(Phase::BeforeGuard, &keys, now))
        .map_err(|hit| limit_refusal(request.version, hit, client_id))
}

/// The guard's verdict when it already decided on these very credentials at
/// an earlier layer (the WebSocket upgrade): no need to ask it again.
pub(crate) fn granted_verdict(
    granted: Option<&Granted>,
    token: Option<&str>,
) -> Option<Result<GuardSession, GuardRejection>> {
    granted
        .filter(|granted| Some(granted.credentials.as_str()) == token)
        .map(|granted| Ok(granted.session.clone()))
}

/// An admitted session, before its upstreams are open.
pub(crate) struct Admission {
    pub(crate) version: Version,
    /// The client's CONNECT (with the assigned id, if any).
    pub(crate) connect: Connect,
    pub(crate) assigned: Option<String>,
    pub(crate) router: Router,
    /// The upstream sessions to open: exit name, its port, and what to ask.
    pub(crate) opens: Vec<(Arc<str>, SessionsPort, OpenSession)>,
    /// When the first of its guard sessions expires (a token's `exp`, a
    /// certificate's notAfter): the session ends then.
    pub(crate) expires_at: Option<SystemTime>,
    /// When the first grant of another guard than the server's expires (a
    /// certificate's notAfter): a re-authentication cannot move the
    /// session's end past it.
    pub(crate) others_expire: Option<SystemTime>,
    /// What the guards decided, for the log: "guard authorized identity ...".
    pub(crate) authorized: Option<String>,
    /// What limits the session (its places in its keys' counts).
    pub(crate) limits: Option<Box<SessionLimits>>,
}

/// Decides, with the guard's `verdict` on `token`, whether the session is
/// admitted and which upstreams it gets (every exit a route accepts its client
/// id on, and the default exit), where its will goes, and (at `now`)
/// whether its keys' limits admit it.
pub(crate) fn admit(
    config: &Arc<ServerConfig>,
    request: Request,
    token: Option<String>,
    verdict: Option<Result<GuardSession, GuardRejection>>,
    origin: &StreamInfo,
    now: Instant,
) -> Result<Admission, Refusal> {
    let own_guard = request.own_guard(config).map(|g| &g.guard_name);
    let Request {
        version,
        mut connect,
        will,
        mut login,
        mut assigned,
        guard: _,
    } = request;
    let Authorized {
        authorizations,
        expires_at,
        others_expire,
        authorized,
    } = authorize(own_guard, verdict, origin)
        .map_err(|(code, why)| refusal(version, code, why, &connect.client_id))?;
    if !config.guards.is_empty() {
        // Credentials were for the proxy; they go upstream only where an
        // mqtt client forwards them.
        login = None;
    }
    let upstream_origin = upstream_origin(own_guard, origin, &authorizations, token.as_deref());
    if let Some(source) = &config.client_id {
        bind_client_id(source, &mut connect, &mut assigned, &authorizations)
            .map_err(|(code, why)| refusal(version, code, why, &connect.client_id))?;
    }
    let refuse = |code, why: String| Err(refusal(version, code, why, &connect.client_id));
    let conditions: Vec<RouteConditions> = config
        .templates
        .iter()
        .map(|template| template.bind(&authorizations))
        .collect();
    let session = Operation::Session(&connect.client_id);
    // Every exit a route accepts this session on gets an upstream session.
    let mut exits: Vec<(Arc<str>, SessionsPort)> = Vec::new();
    for (index, route) in config.routes.iter().enumerate() {
        let guarded = route.guarded.iter().all(|g| g.is_met(&authorizations));
        if guarded
            && conditions[index].accepts(session)
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
        return refuse(
            ConnectReturnCode::NotAuthorized,
            "no route accepts this session".into(),
        );
    }
    let mut router = Router {
        config: config.clone(),
        session_accepted: conditions.iter().map(|c| c.accepts(session)).collect(),
        unbound_session_accepted: config.unbound.iter().map(|c| c.accepts(session)).collect(),
        authorizations,
        conditions,
        exits: exits.iter().map(|(name, _)| name.clone()).collect(),
        any_publish: None,
    };
    router.any_publish = router::any_publish(&router);
    let will_exit = match &will {
        Some(will) => {
            let will_topic = String::from_utf8_lossy(&will.topic);
            if let Some((rule, kind)) = config.limits.topic_hit(&will_topic, false) {
                let hit = config.limits.connect_hit(rule, kind, now);
                return Err(limit_refusal(version, hit, &connect.client_id));
            }
            match router.route(Operation::Publish(&will_topic)) {
                Some(index) => Some(index),
                None => {
                    return refuse(
                        ConnectReturnCode::NotAuthorized,
                        format!("no route for the will topic {}", text(&will_topic)),
                    )
                }
            }
        }
        None => None,
    };
    let keys = KeyValues {
        client_id: &connect.client_id,
        guarded: limited_as(own_guard, &router.authorizations, origin),
        source: origin.peer.map(|peer| peer.ip()),
    };
    let holds = match config.limits.connect(Phase::AfterGuard, &keys, now) {
        Ok(holds) => holds,
        Err(hit) => return Err(limit_refusal(version, hit, &connect.client_id)),
    };
    let limits = config.limits.session(holds, now);
    let mut upstream_connect = connect.clone();
    if upstream_connect.keep_alive == 0 {
        upstream_connect.keep_alive = DEFAULT_UPSTREAM_KEEP_ALIVE;
    }
    if let Some(properties) = upstream_connect.properties.as_mut() {
        // Brokers must not alias topics: aliases from several brokers would
        // collide on the one client connection, and the proxy reorders QoS 0
        // ahead of queued QoS 1/2 messages.
        properties.topic_alias_max = None;
        // The method and its token were the proxy's: a broker never sees
        // AUTH, nor a method it would have to agree.
        properties.authentication_method = None;
        properties.authentication_data = None;
    }
    let opens = exits
        .into_iter()
        .enumerate()
        .map(|(index, (name, port))| {
            let open = OpenSession {
                connect: upstream_connect.clone(),
                will: if will_exit == Some(index) {
                    will.clone()
                } else {
                    None
                },
                login: login.clone(),
                credentials: token.clone(),
                origin: upstream_origin.clone(),
            };
            (name, port, open)
        })
        .collect();
    Ok(Admission {
        version,
        connect,
        assigned,
        router,
        opens,
        expires_at,
        others_expire,
        authorized,
        limits,
    })
}

/// What the guards granted a CONNECT.
struct Authorized {
    authorizations: Authorizations,
    expires_at: Option<SystemTime>,
    /// When the first grant of another guard than the server's expires.
    others_expire: Option<SystemTime>,
    authorized: Option<String>,
}

/// The session's authorizations: what the server's guard decided on the
/// CONNECT's credentials (`verdict`; a refusal is the CONNECT's: code and
/// why), and what every other guard granted at an earlier layer (a tls
/// server's x509 guard, for a client certificate). Each counts alike for
/// guarded routes, topic params and `client-id`; the session ends when the
/// first of them expires. The server's own guard's grant went through the
/// verdict, where the CONNECT's credentials win over it.
fn authorize(
    own_guard: Option<&Arc<str>>,
    verdict: Option<Result<GuardSession, GuardRejection>>,
    origin: &StreamInfo,
) -> Result<Authorized, (ConnectReturnCode, String)> {
    let mut authorizations = Authorizations::new();
    let mut expires_at: Option<SystemTime> = None;
    let mut told = Vec::new();
    let mut others_expire: Option<SystemTime> = None;
    let mut expire = |at: Option<SystemTime>| {
        expires_at = match (expires_at, at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    };
    if let (Some(guard_name), Some(verdict)) = (own_guard, verdict) {
        match verdict {
            Ok(session) => {
                expire(session.expires_at);
                let identity = identity(session.identity.as_deref());
                told.push(format!("{guard_name} authorized {identity}"));
                authorizations.insert(guard_name.clone(), session);
            }
            Err(GuardRejection::InvalidCredentials(why)) => {
                return Err((
                    ConnectReturnCode::BadUserNamePassword,
                    format!("{guard_name} refused the credentials: {why}"),
                ));
            }
            Err(GuardRejection::Unavailable(why)) => {
                return Err((
                    ConnectReturnCode::ServerUnavailable,
                    format!("{guard_name} cannot decide: {why}"),
                ));
            }
        }
    }
    for granted in &origin.granted {
        // A guard granting at two layers: the outermost grant counts.
        if own_guard == Some(&granted.guard) || authorizations.get(&granted.guard).is_some() {
            continue;
        }
        expire(granted.session.expires_at);
        others_expire = match (others_expire, granted.session.expires_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        told.push(format!(
            "{} granted {} at an earlier layer",
            granted.guard,
            identity(granted.session.identity.as_deref())
        ));
        authorizations.insert(granted.guard.clone(), granted.session.clone());
    }
    Ok(Authorized {
        authorizations,
        expires_at,
        others_expire,
        authorized: (!told.is_empty()).then(|| told.join("; ")),
    })
}

/// What the upstream sessions are told of the client's stream: `origin`,
/// whose `granted` already holds what guards granted at earlier layers (a
/// tls server's certificate), with the session the server's own guard
/// granted on the CONNECT's credentials added (in place of that guard's
/// earlier grant, as in the session's authorizations). A client binding
/// passes it to its exit, so that a tls client there can present the
/// certificate of any identity the session holds
/// (`routes[].with.certificate`).
fn upstream_origin(
    own_guard: Option<&Arc<str>>,
    origin: &StreamInfo,
    authorizations: &Authorizations,
    token: Option<&str>,
) -> StreamInfo {
    let mut upstream = origin.clone();
    let own = own_guard.and_then(|guard| Some((guard, authorizations.get(guard)?)));
    if let Some((guard, session)) = own {
        upstream.granted.retain(|granted| granted.guard != *guard);
        upstream.granted.push(Granted {
            guard: guard.clone(),
            session: session.clone(),
            credentials: token.unwrap_or_default().to_owned(),
        });
    }
    upstream
}

/// The guard session whose identity and attributes the limits' `identity`
/// and claim keys read: the server's own guard's when it authorized the
/// session, else the one granted at the outermost earlier layer (the first
/// in `StreamInfo::granted`: a tls server's client certificate before an
/// http server's token). One session, so that an identity and its claims
/// always come from the same credentials.
fn limited_as<'a>(
    own_guard: Option<&Arc<str>>,
    authorizations: &'a Authorizations,
    origin: &StreamInfo,
) -> Option<&'a GuardSession> {
    own_guard
        .and_then(|guard| authorizations.get(guard))
        .or_else(|| (origin.granted.iter()).find_map(|granted| authorizations.get(&granted.guard)))
}

/// `options.client-id`: the CONNECT's client id must be the guarded value
/// `source` (an empty id is given it, and the CONNACK names it). Refused
/// with 0x85 (3.1.1: return code 2) when the id differs, and with 0x87
/// (3.1.1: 5) when the session has no such value (no certificate, no
/// token): another id would not help, credentials would. Checked before
/// any upstream is opened, so a refused CONNECT never takes a session over.
fn bind_client_id(
    source: &ParamSource,
    connect: &mut Connect,
    assigned: &mut Option<String>,
    authorizations: &Authorizations,
) -> Result<(), (ConnectReturnCode, String)> {
    let identity = identity(
        (authorizations.get(source.guard())).and_then(|session| session.identity.as_deref()),
    );
    let Some(value) = source.value(authorizations).filter(|v| is_client_id(v)) else {
        return Err((
            ConnectReturnCode::NotAuthorized,
            format!(
                "options.client-id binds the client id to {source}, which this session has no usable value of ({identity})"
            ),
        ));
    };
    if connect.client_id.is_empty() {
        connect.client_id = value.to_owned();
        *assigned = Some(value.to_owned());
    } else if connect.client_id != value {
        return Err((
            ConnectReturnCode::ClientIdentifierNotValid,
            format!(
                "options.client-id binds the client id to {source}, {} ({identity}), not {}",
                text(value),
                text(&connect.client_id)
            ),
        ));
    }
    Ok(())
}

/// Whether `value` can be an MQTT client id as the proxy reads them from
/// clients: not empty, at most 65535 bytes, no U+0000 and no non-character.
/// Anything else would make a CONNACK (Assigned Client Identifier) or an
/// upstream CONNECT that clients and brokers refuse as malformed.
fn is_client_id(value: &str) -> bool {
    let noncharacter = |c: char| {
        let code = u32::from(c);
        (0xFDD0..=0xFDEF).contains(&code) || code & 0xFFFE == 0xFFFE
    };
    !value.is_empty()
        && value.len() <= usize::from(u16::MAX)
        && !value.chars().any(|c| c == '\0' || noncharacter(c))
}

/// When credentials that expire at the wall-clock time `at` expire on the
/// monotonic clock, given the same moment on both (`wall`, `now`); at once
/// when already past.
pub(crate) fn instant_at(at: SystemTime, wall: SystemTime, now: Instant) -> Instant {
    now + at.duration_since(wall).unwrap_or_default()
}

/// The refusal when the upstream behind exit `name` did not open: a broker's
/// own refusal is relayed as it is, anything else is "server unavailable".
pub(crate) fn upstream_refusal(
    version: Version,
    client_id: &str,
    name: &str,
    error: OpenError,
) -> Refusal {
    match error {
        OpenError::Refused(ack) => Refusal {
            version,
            why: format!(
                "broker behind {name} refused with {}",
                Reason::connack(ack.code)
            ),
            connack: ack,
            client_id: client_id.to_owned(),
            limit: None,
        },
        OpenError::Failed(message) => refusal(
            version,
            ConnectReturnCode::ServerUnavailable,
            format!("upstream {name} unavailable: {message}"),
            client_id,
        ),
    }
}

/// The client's CONNACK: what every upstream's CONNACK (`upstreams`, in the
/// order the upstreams were opened) allows, and what the proxy adds.
pub(crate) fn merged_connack(
    upstreams: &[ConnAck],
    assigned: Option<String>,
    config: &ServerConfig,
) -> ConnAck {
    let maximum_packet_size = config.maximum_packet_size;
    let first = upstreams[0].properties.clone();
    let all = || upstreams.iter().map(|ack| ack.properties.as_ref());
    let flag =
        |get: fn(&ConnAckProperties) -> Option<u8>| all().filter_map(|p| p.and_then(get)).min();
    let broker_max_packet = all()
        .filter_map(|p| p.and_then(|p| p.max_packet_size))
        .min();
    let mut properties = first.unwrap_or_else(empty_connack_properties);
    // The proxy's own window: publishes beyond a broker's wait in the session.
    properties.receive_max = Some(config.flow.receive_maximum);
    properties.max_qos = flag(|p| p.max_qos);
    properties.retain_available = flag(|p| p.retain_available);
    properties.wildcard_subscription_available = flag(|p| p.wildcard_subscription_available);
    properties.subscription_identifiers_available = flag(|p| p.subscription_identifiers_available);
    properties.shared_subscription_available = flag(|p| p.shared_subscription_available);
    properties.max_packet_size =
        Some(broker_max_packet.map_or(maximum_packet_size, |m| m.min(maximum_packet_size)));
    properties.topic_alias_max = Some(TOPIC_ALIAS_MAXIMUM);
    if config.server_keep_alive.is_some() {
        properties.server_keep_alive = config.server_keep_alive;
    }
    if assigned.is_some() {
        properties.assigned_client_identifier = assigned;
    }
    ConnAck {
        session_present: upstreams.iter().all(|ack| ack.session_present),
        code: ConnectReturnCode::Success,
        properties: Some(properties),
    }
}
