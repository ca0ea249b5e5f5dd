//! The server's whole path for one connection, driven without sockets, for
//! the fuzz targets in `fuzz/`: arbitrary client bytes go through CONNECT
//! decoding, admission, the session state machine and its end, in front of
//! two brokers that answer everything they are sent (acks, SUBACKs, and a
//! delivery back for each QoS 1 publish). Not an API: `#[doc(hidden)]`.
//!
//! With the first byte's top bit set, the server has two guards (`jwt0`:
//! `Bearer {credentials}` user names and the method `jwt`; `jwt1`: the
//! method `CUSTOM-JWT`) whose verdicts the tokens themselves choose (see
//! [`fuzz_verdict`]), and re-authentications (AUTH 0x19) are answered with
//! the verdict on their token after as many rounds as the token says: the
//! input picks success with another expiry or roles, another identity, a
//! refusal, and when each arrives among the client's packets.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mqtt_bytes_v5::{
    ConnAck, ConnectReturnCode, Packet, PingResp, PubAck, PubAckReason, PubComp, PubCompReason,
    PubRec, PubRecReason, QoS, SubAck, SubscribeReasonCode, UnsubAck, UnsubAckReason,
};
use zilla_engine::route::GuardRequirement;
use zilla_engine::{
    async_trait, Events, Exit, Guard, GuardRejection, GuardSession, Route, Routes, Shutdown,
    StreamInfo,
};

use super::admit::{self, Request};
use super::end::End;
use super::state::{Session, Start};
use crate::codec::{self, Version};
use crate::config::{ServerAuthorization, ServerConfig};
use crate::credentials;
use crate::flow::Flow;
use crate::limits::Limits;
use crate::options::{ConnectCredentials, CredentialsPattern, MqttCondition, RouteTemplate};
use crate::port::{MqttSessions, OpenError, OpenSession, Upstream};
use crate::upstream::UpstreamLink;

/// A port that is never opened: the brokers here are simulated.
struct NoBroker;

#[async_trait]
impl MqttSessions for NoBroker {
    async fn open(&self, _: OpenSession) -> Result<Upstream, OpenError> {
        Err(OpenError::Failed("the fuzz entry opens no broker".into()))
    }
}

/// The guard of the guarded configuration: [`fuzz_verdict`] on the token
/// (never asked: the entry feeds verdicts itself, synchronously).
struct FuzzGuard;

#[async_trait]
impl Guard for FuzzGuard {
    async fn authorize(&self, token: &str) -> Result<GuardSession, GuardRejection> {
        fuzz_verdict(token).0
    }
}

/// A verdict, the token's lifetime on the fake clock, and after how many
/// rounds it arrives.
type Verdict = (Result<GuardSession, GuardRejection>, Option<Duration>, u32);

/// The verdict on `token`, which reads
/// `identity[:role,role][+lifetime seconds][~rounds]`: `bad` is refused,
/// `down` is unavailable, anything else is the identity with its roles.
fn fuzz_verdict(token: &str) -> Verdict {
    fn number(token: &str, separator: char) -> (&str, Option<u32>) {
        match token.rsplit_once(separator) {
            Some((head, n)) => match n.parse::<u32>() {
                Ok(n) => (head, Some(n.min(1000))),
                Err(_) => (token, None),
            },
            None => (token, None),
        }
    }
    let (token, rounds) = number(token, '~');
    let (token, lives) = number(token, '+');
    let verdict = match token {
        "bad" => Err(GuardRejection::InvalidCredentials("fuzz".into())),
        "down" => Err(GuardRejection::Unavailable("fuzz".into())),
        token => {
            let (identity, roles) = token.split_once(':').unwrap_or((token, ""));
            Ok(GuardSession {
                identity: Some(identity.to_owned()),
                roles: (roles.split(',').filter(|r| !r.is_empty()))
                    .map(str::to_owned)
                    .collect(),
                ..GuardSession::default()
            })
        }
    };
    let lives = lives.map(|s| Duration::from_secs(u64::from(s)));
    (verdict, lives, rounds.unwrap_or(0))
}

/// Limits of each session only (no key shared between inputs, so a run
/// depends on its input alone), small enough that inputs reach them.
fn fuzz_limits() -> Limits {
    let options: Vec<crate::options::LimitOptions> = serde_yaml::from_str(
        "- key: session
  publishes: {rate: 2, burst: 3}
  bytes: {rate: 64, burst: 256}
  subscriptions: 3
  topic: {length: 32, levels: 4}",
    )
    .expect("valid limits");
    Limits::new(&options, Some(2), Arc::default()).expect("valid limits")
}

/// `north/#` goes to `north`, everything else to the default exit `south`;
/// small windows and buffers, so that flow control takes part. `guarded`:
/// `north/#` needs the role `north` of either guard (see the module's
/// documentation). `limited`: each session has [`fuzz_limits`] (without,
/// client publishes may take the express lane).
fn config(guarded: bool, limited: bool) -> Arc<ServerConfig> {
    static CONFIGS: [OnceLock<Arc<ServerConfig>>; 4] = [const { OnceLock::new() }; 4];
    CONFIGS[usize::from(guarded) * 2 + usize::from(limited)]
        .get_or_init(|| {
            let guard: Arc<dyn Guard> = Arc::new(FuzzGuard);
            let port: Arc<dyn MqttSessions> = Arc::new(NoBroker);
            let exit = |name: &str| Exit {
                name: name.into(),
                port: port.clone(),
            };
            let when: Vec<MqttCondition> = serde_yaml::from_str(
                "- publish: [{topic: \"north/#\"}]\n  subscribe: [{topic: \"north/#\"}]",
            )
            .expect("a valid condition");
            let guard_names: &[&str] = if guarded { &["jwt0", "jwt1"] } else { &[""] };
            let routes: Vec<Route<MqttCondition, dyn MqttSessions>> = (guard_names.iter())
                .map(|name| Route {
                    when: when.clone(),
                    guarded: (!name.is_empty())
                        .then(|| GuardRequirement {
                            guard_name: (*name).into(),
                            guard: guard.clone(),
                            roles: vec!["north".into()],
                        })
                        .into_iter()
                        .collect(),
                    exit: exit("north"),
                    with: None,
                })
                .collect();
            let templates: Vec<RouteTemplate> = (routes.iter())
                .map(|route| RouteTemplate::new(&route.when).expect("a valid template"))
                .collect();
            let guards = if guarded {
                let bearer = ConnectCredentials {
                    username: Some("Bearer {credentials}".into()),
                    password: None,
                };
                vec![
                    ServerAuthorization {
                        guard_name: "jwt0".into(),
                        guard: guard.clone(),
                        pattern: Some(CredentialsPattern::new(&bearer).expect("a valid pattern")),
                        method: Some("jwt".into()),
                    },
                    ServerAuthorization {
                        guard_name: "jwt1".into(),
                        guard: guard.clone(),
                        pattern: None,
                        method: Some("CUSTOM-JWT".into()),
                    },
                ]
            } else {
                Vec::new()
            };
            let sessions: Arc<crate::session::takeover::SessionRegistry> = Arc::default();
            Arc::new(ServerConfig {
                versions: vec![Version::V4, Version::V5],
                maximum_packet_size: 64 * 1024,
                connect_timeout: Duration::from_secs(10),
                flow: Flow {
                    receive_maximum: 8,
                    publish_buffer: 512,
                    delivery_buffer: 512,
                },
                server_keep_alive: None,
                client_topic_aliases: 4,
                server_reference: None,
                unbound: templates.iter().map(RouteTemplate::unbound).collect(),
                templates,
                routes: Routes::new(routes, Some(exit("south"))),
                guards,
                client_id: None,
                topics: Vec::new(),
                events: Events::new("fuzz", "mqtt_server0"),
                shutdown: Shutdown::new(),
                sessions,
                seats: crate::admin::Seats::new("fuzz"),
                limits: if limited {
                    fuzz_limits()
                } else {
                    Limits::default()
                },
            })
        })
        .clone()
}

/// The fake clock's origin.
#[expect(
    clippy::disallowed_methods,
    reason = "the fuzz entry's fake clock needs one real instant as its origin"
)]
fn origin() -> Instant {
    Instant::now()
}

/// Serves `data` as one client connection: its first byte chooses the
/// chunk size the bytes arrive in (1 to 64; odd sizes with limits on each
/// session; sizes with bit 1 set, brokers with a window of 3), the
/// brokers' protocol version and whether the server has guards; the rest
/// is what the client sends.
/// Never panics on any input.
///
/// It is served twice, with the express lanes (`state/express.rs`) and
/// without: both must send the client and the brokers the same bytes and
/// end the same way, so the fuzzer also checks that the lanes only ever do
/// what the full path does.
pub fn server_session(data: &[u8]) {
    let express = serve(data, true);
    let full = serve(data, false);
    assert!(
        express == full,
        "the express lanes and the full path differ on {data:?}:\n{express:?}\n{full:?}"
    );
}

/// What a served connection sent the client, then each broker, in order,
/// and how it ended.
#[derive(Debug, Default, PartialEq, Eq)]
struct Transcript {
    client: Vec<u8>,
    brokers: Vec<Vec<u8>>,
    ended: String,
}

/// [`server_session`] with or without the `express` lanes: what the
/// session sent and how it ended (`End` as debugged), if it started.
fn serve(data: &[u8], express: bool) -> Option<Transcript> {
    let (&control, data) = data.split_first()?;
    let chunk = usize::from(control & 0x3F) + 1;
    let upstream_version = if control & 0x40 == 0 {
        Version::V5
    } else {
        Version::V4
    };
    // Odd chunk sizes: sessions with limits.
    let config = config(control & 0x80 != 0, control & 0x01 == 0);
    let mut chunks = data.chunks(chunk);
    let mut buf = BytesMut::new();
    let version = loop {
        match codec::connect_version(&buf) {
            Ok(Some(Ok(version))) => break version,
            Ok(Some(Err(level))) => {
                let _ = admit::version_refusal(Err(level));
                return None;
            }
            Ok(None) => {}
            Err(_) => return None,
        }
        let next = chunks.next()?;
        buf.extend_from_slice(next);
    };
    let maximum = config.maximum_packet_size as usize;
    let packet = loop {
        match credentials::read_connect(&mut buf, version, maximum) {
            Ok(Some(packet)) => break packet,
            Ok(None) => {}
            Err(error) => {
                let _ = admit::malformed_connect(version, &error);
                return None;
            }
        }
        let next = chunks.next()?;
        buf.extend_from_slice(next);
    };
    let mut request = Request {
        version,
        connect: packet.connect,
        will: packet.will,
        login: packet.login,
        assigned: None,
        guard: None,
    };
    let info = StreamInfo::default();
    let Ok(token) = admit::credentials(&config, &mut request, || "zilla-fuzz".into(), &info) else {
        return None;
    };
    let now = origin();
    let (verdict, lives) = match (request.own_guard(&config), &token) {
        (Some(_), Some(token)) => {
            let (verdict, lives, _) = fuzz_verdict(token);
            (Some(verdict), lives)
        }
        _ => (None, None),
    };
    let Ok(admission) = admit::admit(&config, request, token, verdict, &info, now) else {
        return None;
    };
    // Chunk sizes 3, 4, 7, 8, ... (bit 1): brokers with a window of 3, so
    // that client publishes wait for it.
    let broker_ack = ConnAck {
        session_present: false,
        code: ConnectReturnCode::Success,
        properties: (control & 0x02 != 0).then(|| mqtt_bytes_v5::ConnAckProperties {
            receive_max: Some(3),
            ..admit::empty_connack_properties()
        }),
    };
    let links: Vec<UpstreamLink> = admission
        .opens
        .iter()
        .map(|(name, _, open)| {
            UpstreamLink::new(
                name.clone(),
                &broker_ack,
                open.connect.keep_alive,
                upstream_version,
                now,
            )
        })
        .collect();
    let acks = vec![broker_ack; links.len()];
    let connack = admit::merged_connack(&acks, admission.assigned, &config);
    let upstreams = links.len();
    let start = Start {
        version,
        client_id: admission.connect.client_id.as_str().into(),
        connect: admission.connect,
        peer: "fuzz".into(),
        upstreams: links,
        router: admission.router,
        connack,
        carried: None,
        expires_at: lives.map(|lives| now + lives),
        others_expire: None,
        limits: admission.limits,
    };
    let mut session = Session::new(config, start, now);
    if !express {
        session.without_express();
    }
    let mut transcript = Transcript {
        brokers: vec![Vec::new(); upstreams],
        ..Transcript::default()
    };
    let mut brokers = vec![Broker::default(); upstreams];
    let mut clock = now;
    // A re-authentication being verified: its verdict arrives when its
    // rounds are down to 0, while the client's bytes go on.
    let mut verifying: Option<Verdict> = None;
    let end = loop {
        if let Err(end) = session.on_client_bytes(clock, &mut buf) {
            break end;
        }
        if verifying.is_none() {
            verifying = session.take_reauth().map(|token| fuzz_verdict(&token));
        }
        match verifying.as_mut() {
            Some((_, _, rounds)) if *rounds > 0 => *rounds -= 1,
            Some(_) => {
                let (verdict, lives, _) = verifying.take().expect("verifying");
                if let Err(end) = session.on_reauth(clock, verdict, lives.map(|d| clock + d)) {
                    break end;
                }
            }
            None => {}
        }
        let sent = session.client_transmit();
        transcript.client.extend_from_slice(sent);
        sent.clear();
        let answered = answer_brokers(
            &mut session,
            &mut brokers,
            upstream_version,
            clock,
            &mut transcript.brokers,
        );
        if let Err(end) = answered {
            break end;
        }
        clock += Duration::from_secs(1);
        if let Err(end) = session.on_timeout(clock) {
            break end;
        }
        match chunks.next() {
            Some(next) => buf.extend_from_slice(next),
            None => break End::ClientLost("the input ended".into()),
        }
    };
    transcript.ended = format!("{end:?}");
    let _ = session.finish(end);
    transcript
        .client
        .extend_from_slice(session.client_transmit());
    let _ = session.carried(clock);
    Some(transcript)
}

/// A simulated broker's packet ids for its deliveries.
#[derive(Clone, Default)]
struct Broker {
    next_pkid: u16,
}

/// Each broker answers what the session sent it.
fn answer_brokers(
    session: &mut Session,
    brokers: &mut [Broker],
    version: Version,
    now: Instant,
    transcripts: &mut [Vec<u8>],
) -> Result<(), End> {
    for (index, broker) in brokers.iter_mut().enumerate() {
        let mut sent = std::mem::take(session.upstream_transmit(index));
        transcripts[index].extend_from_slice(&sent);
        session.upstream_sent(index, now);
        let mut replies = BytesMut::new();
        while let Ok(Some(packet)) = codec::read(&mut sent, version, usize::MAX) {
            for reply in broker.answer(packet) {
                let _ = codec::write(&reply, version, &mut replies);
            }
        }
        session.on_upstream_bytes(now, index, &mut replies)?;
    }
    Ok(())
}

impl Broker {
    fn answer(&mut self, packet: Packet) -> Vec<Packet> {
        match packet {
            Packet::Publish(publish) => {
                let mut replies = Vec::new();
                match publish.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => replies.push(Packet::PubAck(PubAck {
                        pkid: publish.pkid,
                        reason: PubAckReason::Success,
                        properties: None,
                    })),
                    QoS::ExactlyOnce => replies.push(Packet::PubRec(PubRec {
                        pkid: publish.pkid,
                        reason: PubRecReason::Success,
                        properties: None,
                    })),
                }
                // The client is subscribed to what it publishes at QoS 1.
                if publish.qos == QoS::AtLeastOnce {
                    self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
                    replies.push(Packet::Publish(mqtt_bytes_v5::Publish {
                        pkid: self.next_pkid,
                        dup: false,
                        ..publish
                    }));
                }
                replies
            }
            Packet::PubRel(rel) => vec![Packet::PubComp(PubComp {
                pkid: rel.pkid,
                reason: PubCompReason::Success,
                properties: None,
            })],
            Packet::Subscribe(subscribe) => vec![Packet::SubAck(SubAck {
                pkid: subscribe.pkid,
                return_codes: subscribe
                    .filters
                    .iter()
                    .map(|f| SubscribeReasonCode::Success(f.qos))
                    .collect(),
                properties: None,
            })],
            Packet::Unsubscribe(unsubscribe) => vec![Packet::UnsubAck(UnsubAck {
                pkid: unsubscribe.pkid,
                reasons: vec![UnsubAckReason::Success; unsubscribe.filters.len()],
                properties: None,
            })],
            Packet::PingReq(_) => vec![Packet::PingResp(PingResp)],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use mqtt_bytes_v5::{Connect, ConnectProperties, Filter, Packet, QoS, Subscribe};

    use super::serve;
    use crate::codec::auth::{self, Auth};
    use crate::codec::{self, Version};

    /// A guarded input, in 7-byte chunks: a CONNECT naming `method` with
    /// `token`, a subscription to `north/a`, then AUTH 0x19 with each of
    /// `refreshes` (a PINGREQ after each, so rounds pass).
    fn input(method: &str, token: &str, refreshes: &[&str]) -> Vec<u8> {
        let mut out = BytesMut::new();
        let connect = Connect {
            keep_alive: 0,
            client_id: "fuzz".into(),
            clean_start: true,
            properties: Some(ConnectProperties {
                authentication_method: Some(method.into()),
                authentication_data: Some(Bytes::copy_from_slice(token.as_bytes())),
                ..crate::session::tests::connect_properties()
            }),
        };
        codec::write(&Packet::Connect(connect, None, None), Version::V5, &mut out).unwrap();
        let subscribe = Subscribe {
            pkid: 1,
            filters: vec![Filter::new("north/a", QoS::AtLeastOnce)],
            properties: None,
        };
        codec::write(&Packet::Subscribe(subscribe), Version::V5, &mut out).unwrap();
        for token in refreshes {
            auth::write(
                &Auth {
                    reason: auth::RE_AUTHENTICATE,
                    method: Some(method.into()),
                    data: Some(Bytes::copy_from_slice(token.as_bytes())),
                    reason_string: None,
                },
                &mut out,
            );
            for _ in 0..8 {
                codec::write(
                    &Packet::PingReq(mqtt_bytes_v5::PingReq),
                    Version::V5,
                    &mut out,
                )
                .unwrap();
            }
        }
        let mut data = vec![0x80 | 6];
        data.extend_from_slice(&out);
        data
    }

    /// How the session of `data` ended (with the express lanes).
    fn serve_ended(data: &[u8]) -> Option<String> {
        serve(data, true).map(|transcript| transcript.ended)
    }

    #[test]
    fn the_input_chooses_re_authentication_verdicts_and_when_they_arrive() {
        // Refreshed twice (fewer roles, another lifetime), the second
        // verdict a round late: the session lives until the input ends.
        let end = serve_ended(&input(
            "CUSTOM-JWT",
            "alice:north+60",
            &["alice+30~1", "alice:north+90"],
        ));
        assert!(
            end.as_deref().is_some_and(|e| e.starts_with("ClientLost")),
            "{end:?}"
        );
        // Another identity, refused tokens: the session ends with 0x87.
        for refresh in ["bob:north", "bad", "down~2"] {
            let end = serve_ended(&input("jwt", "alice:north", &[refresh]));
            assert!(
                end.as_deref().is_some_and(|e| e.contains("NotAuthorized")),
                "{refresh}: {end:?}"
            );
        }
        // An expiry the verdict moved: the session ends at the new one.
        let end = serve_ended(&input("jwt", "alice:north+100", &["alice:north+1"]));
        assert_eq!(end.as_deref(), Some("Expired"));
    }
}
