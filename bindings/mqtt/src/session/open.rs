//! Opening an admitted session: the guard's verdict, the upstream sessions
//! and their CONNACKs, and only then the takeover of a connection with the
//! same client id.
//!
//! The order is the security property: a CONNECT that the proxy's guard,
//! its limits or routes, or any broker refuses never touches the connected
//! session it would have taken over. A broker that accepts takes its old
//! upstream session over itself (so where a session spans several brokers
//! and one refuses after another accepted, the old session loses that
//! upstream and ends with 0x8E: brokers that disagree on a credential are a
//! misconfiguration). See docs/configuration.md, "Session integrity".

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use mqtt_bytes_v5::{ConnectReturnCode, DisconnectReasonCode, Packet};
use tokio::io::AsyncWriteExt;
use zilla_engine::admin::sessions::epoch_seconds;
use zilla_engine::telemetry::{duration, text};
use zilla_engine::{GuardRejection, StreamInfo};

use super::admit::{self, Refusal, Request};
use super::end::disconnect;
use super::io::{now, UpstreamIo};
use super::state::{Session, Start};
use super::takeover::{Carried, Predecessor, Registration};
use crate::admin::{Hello, NewSeat, SeatUpstream, Seated};
use crate::codec::Version;
use crate::config::ServerConfig;
use crate::limits::Unsettled;
use crate::metrics::{AuthFailure, SessionMetrics};
use crate::upstream::UpstreamLink;

/// How long a new connection waits for the one it took over to leave its
/// open flows behind: usually no time at all; only a connection stuck
/// writing to a client that does not read takes longer, and then the new
/// one resumes without them rather than keep its client waiting.
const TAKEOVER_WAIT: Duration = Duration::from_secs(2);

/// A fresh client identifier for a client that sent none.
#[expect(
    clippy::disallowed_methods,
    reason = "the wall clock makes assigned ids unique across restarts"
)]
fn assign_client_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::UNIX_EPOCH;
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

/// The wall clock, for when a session was admitted (`zilla sessions`).
#[expect(
    clippy::disallowed_methods,
    reason = "operators read when a session began as a wall-clock time"
)]
fn wall_clock() -> SystemTime {
    SystemTime::now()
}

/// How far in the future the wall-clock time `at` is, as a monotonic instant.
#[expect(
    clippy::disallowed_methods,
    reason = "credentials expire at a wall-clock time; the session runs on a monotonic one"
)]
pub(super) fn instant_of(at: SystemTime, now: Instant) -> Instant {
    admit::instant_at(at, SystemTime::now(), now)
}

/// An admitted session with its upstreams open and its CONNACK queued.
pub(super) struct Opened {
    pub(super) session: Session,
    pub(super) upstreams: Vec<UpstreamIo>,
    pub(super) registration: Registration,
    pub(super) seated: Seated,
}

/// Admits the CONNECT (asking the guard), opens its upstreams and starts the
/// session; a refusal is for the caller to send.
pub(super) async fn open_session(
    config: &Arc<ServerConfig>,
    mut request: Request,
    raw_connect: Bytes,
    info: &StreamInfo,
    peer: &str,
    metrics: &mut SessionMetrics,
) -> Result<Opened, Refusal> {
    let has_login = request.login.is_some();
    let token = admit::credentials(config, &mut request, assign_client_id, info)
        .inspect_err(|refusal| metrics.credentials_refused(refusal.connack.code, has_login))?;
    let granted = admit::own_grant(config, &request, info);
    let mut holds = admit::before_guard(config, &request, info, now())?;
    let client_id = &request.connect.client_id;
    // What the fleet counts (a store shared by the replicas).
    let settled = config.limits.settle(&mut holds, client_id, now()).await;
    settled.map_err(|unsettled| unsettled_refusal(request.version, unsettled, client_id))?;
    let verdict = match (request.own_guard(config), &token) {
        (Some(authorization), Some(token)) => match admit::granted_verdict(granted, Some(token)) {
            Some(verdict) => Some(verdict),
            None => Some(authorization.guard.authorize(token).await),
        },
        _ => None,
    };
    match &verdict {
        Some(Err(GuardRejection::InvalidCredentials(_))) => {
            metrics.authentication_failed(AuthFailure::Invalid)
        }
        Some(Err(GuardRejection::Unavailable(_))) => {
            metrics.authentication_failed(AuthFailure::Unavailable)
        }
        _ => {}
    }
    let identity = verdict
        .as_ref()
        .and_then(|verdict| verdict.as_ref().ok())
        .and_then(|session| session.identity.clone())
        .or_else(|| info.granted.iter().find_map(|g| g.session.identity.clone()))
        .or_else(|| info.identity.clone());
    // Credentials from the CONNECT: its user name may be a bearer token.
    let took_credentials = token.is_some();
    let mut admission = admit::admit(config, request, token, verdict, info, now())?;
    let client_id = admission.connect.client_id.clone();
    if let Some(limits) = admission.limits.as_mut() {
        // What the fleet counts (a store shared by the replicas).
        let settled = limits.settle(&config.limits, &client_id, now()).await;
        settled.map_err(|unsettled| unsettled_refusal(admission.version, unsettled, &client_id))?;
    }
    if let Some(authorized) = &admission.authorized {
        config.events.info(
            "MQTT_AUTHORIZATION_SUCCEEDED",
            format!("client {peer} id {}: {authorized}", text(&client_id)),
        );
    }
    // From the first upstream CONNECT on, a broker may take the connected
    // session's upstream over: that session reads its upstream's end as
    // the takeover it is (`Registration::superseded`).
    let admitting = config.sessions.admitting(&client_id);
    let (names, opening): (Vec<_>, Vec<_>) = admission
        .opens
        .into_iter()
        .map(|(name, port, open)| (name, async move { port.open(open).await }))
        .unzip();
    let opened = futures_util::future::join_all(opening).await;
    let started = now();
    let mut links = Vec::with_capacity(opened.len());
    // The brokers' CONNACKs, merged into the client's and then dropped.
    let mut acks = Vec::with_capacity(opened.len());
    let mut upstreams = Vec::with_capacity(opened.len());
    let mut seat_upstreams = Vec::with_capacity(opened.len());
    let mut failure = None;
    for (name, result) in names.into_iter().zip(opened) {
        metrics.upstream_opened(&name, &result);
        match result {
            Ok(upstream) => {
                seat_upstreams.push(SeatUpstream {
                    exit: name.clone(),
                    version: upstream.version,
                    addresses: upstream.addresses,
                });
                links.push(UpstreamLink::new(
                    name,
                    &upstream.connack,
                    upstream.keep_alive,
                    upstream.version,
                    started,
                ));
                acks.push(upstream.connack);
                upstreams.push(UpstreamIo {
                    stream: upstream.stream,
                    read_buf: upstream.read_buf,
                    last_read: 0,
                });
            }
            Err(error) if failure.is_none() => failure = Some((name, error)),
            Err(_) => {}
        }
    }
    if let Some((name, error)) = failure {
        if !links.is_empty() {
            // Those brokers took the connected session's upstreams over.
            admitting.refused_after_a_broker_accepted();
        }
        for (mut link, mut io) in links.into_iter().zip(upstreams) {
            // Undo the half-made session without firing its will.
            link.send(&Packet::Disconnect(disconnect(
                DisconnectReasonCode::NormalDisconnection,
                None,
            )));
            let _ = io.stream.write_all(&link.out).await;
        }
        return Err(admit::upstream_refusal(
            admission.version,
            &client_id,
            &name,
            error,
        ));
    }
    metrics.admitted(links.iter().map(|link| &*link.name));
    let connack = admit::merged_connack(&acks, admission.assigned, config);
    // Admitted by the proxy and by every broker: only now does the session
    // take over a connection with its client id.
    let (registration, predecessor) = admitting.register();
    let resuming = !admission.connect.clean_start && connack.session_present;
    let carried = resumed(config, &client_id, predecessor, resuming).await;
    let admitted = now();
    let version = admission.version;
    let start = Start {
        version: admission.version,
        connect: admission.connect,
        client_id: registration.shared_client_id(),
        peer: peer.to_owned(),
        upstreams: links,
        router: admission.router,
        connack,
        carried,
        expires_at: admission.expires_at.map(|at| instant_of(at, admitted)),
        others_expire: admission.others_expire.map(|at| instant_of(at, admitted)),
        limits: admission.limits,
    };
    let mut session = Session::new(config.clone(), start, admitted);
    let seated = config.seats.seat(NewSeat {
        client_id: registration.shared_client_id(),
        identity,
        peer: info.peer,
        local: info.local,
        version,
        upstreams: seat_upstreams,
        since: epoch_seconds(wall_clock()),
        // Session::new queued the CONNACK: the client's first write.
        hello: Hello::new(&raw_connect, session.client_transmit(), took_credentials),
        signal: registration.taken_over(),
    });
    Ok(Opened {
        session,
        upstreams,
        registration,
        seated,
    })
}

/// What the session's previous connection left for it, when it resumes:
/// once the connection it took over (`predecessor`) has left, within
/// [`TAKEOVER_WAIT`]. A session that does not resume forgets what an
/// earlier connection left, and lets its predecessor know nobody waits.
async fn resumed(
    config: &ServerConfig,
    client_id: &str,
    predecessor: Option<Predecessor>,
    resuming: bool,
) -> Option<Carried> {
    if let (Some(predecessor), true) = (&predecessor, resuming) {
        if tokio::time::timeout(TAKEOVER_WAIT, predecessor.departed())
            .await
            .is_err()
        {
            config.events.warn(
                "MQTT_SESSION_TAKEN_OVER",
                format!(
                    "id {}: the connection taken over did not leave within {}; \
                     the session resumes without the QoS 1/2 flows it had open",
                    text(client_id),
                    duration(TAKEOVER_WAIT)
                ),
            );
        }
    }
    // Dropped first: a predecessor that leaves later drops its state.
    drop(predecessor);
    let carried = config.sessions.resume(client_id, now());
    carried.filter(|_| resuming)
}

/// The refusal of a CONNECT the fleet's counts did not admit: a limit hit,
/// or 0x88 when the store does not answer and `unavailable: refuse`
/// (3.1.1: 0x03, server unavailable).
fn unsettled_refusal(version: Version, unsettled: Unsettled, client_id: &str) -> Refusal {
    match unsettled {
        Unsettled::Limit(hit) => admit::limit_refusal(version, hit, client_id),
        Unsettled::Unavailable(why) => admit::refusal(
            version,
            ConnectReturnCode::ServerUnavailable,
            why,
            client_id,
        ),
    }
}
