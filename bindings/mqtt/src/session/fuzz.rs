//! The server's whole path for one connection, driven without sockets, for
//! the fuzz targets in `fuzz/`: arbitrary client bytes go through CONNECT
//! decoding, admission, the session state machine and its end, in front of
//! two brokers that answer everything they are sent (acks, SUBACKs, and a
//! delivery back for each QoS 1 publish). Not an API: `#[doc(hidden)]`.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mqtt_bytes_v5::{
    ConnAck, ConnectReturnCode, Packet, PingResp, PubAck, PubAckReason, PubComp, PubCompReason,
    PubRec, PubRecReason, QoS, SubAck, SubscribeReasonCode, UnsubAck, UnsubAckReason,
};
use zilla_engine::{async_trait, Events, Exit, Route, Routes, Shutdown, StreamInfo};

use super::admit::{self, Request};
use super::end::End;
use super::state::{Session, Start};
use crate::codec::{self, Version};
use crate::config::ServerConfig;
use crate::credentials;
use crate::flow::Flow;
use crate::limits::Limits;
use crate::options::{MqttCondition, RouteTemplate};
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
/// small windows and buffers, so that flow control takes part.
fn config() -> Arc<ServerConfig> {
    static CONFIG: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let port: Arc<dyn MqttSessions> = Arc::new(NoBroker);
            let exit = |name: &str| Exit {
                name: name.into(),
                port: port.clone(),
            };
            let when: Vec<MqttCondition> = serde_yaml::from_str(
                "- publish: [{topic: \"north/#\"}]\n  subscribe: [{topic: \"north/#\"}]",
            )
            .expect("a valid condition");
            let templates = vec![RouteTemplate::new(&when).expect("a valid template")];
            let route = Route {
                when,
                guarded: Vec::new(),
                exit: exit("north"),
                with: None,
            };
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
                routes: Routes::new(vec![route], Some(exit("south"))),
                authorization: None,
                client_id: None,
                topics: Vec::new(),
                events: Events::new("fuzz", "mqtt_server0"),
                shutdown: Shutdown::new(),
                sessions: Arc::default(),
                limits: fuzz_limits(),
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
/// chunk size the bytes arrive in (1 to 64) and the brokers' protocol
/// version; the rest is what the client sends. Never panics on any input.
pub fn server_session(data: &[u8]) {
    let Some((&control, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(control & 0x3F) + 1;
    let upstream_version = if control & 0x40 == 0 {
        Version::V5
    } else {
        Version::V4
    };
    let config = config();
    let mut chunks = data.chunks(chunk);
    let mut buf = BytesMut::new();
    let version = loop {
        match codec::connect_version(&buf) {
            Ok(Some(Ok(version))) => break version,
            Ok(Some(Err(level))) => {
                let _ = admit::version_refusal(Err(level));
                return;
            }
            Ok(None) => {}
            Err(_) => return,
        }
        let Some(next) = chunks.next() else { return };
        buf.extend_from_slice(next);
    };
    let maximum = config.maximum_packet_size as usize;
    let packet = loop {
        match credentials::read_connect(&mut buf, version, maximum) {
            Ok(Some(packet)) => break packet,
            Ok(None) => {}
            Err(error) => {
                let _ = admit::malformed_connect(version, &error);
                return;
            }
        }
        let Some(next) = chunks.next() else { return };
        buf.extend_from_slice(next);
    };
    let mut request = Request {
        version,
        connect: packet.connect,
        will: packet.will,
        login: packet.login,
        assigned: None,
    };
    let info = StreamInfo::default();
    let Ok(token) = admit::credentials(&config, &mut request, || "zilla-fuzz".into(), &info) else {
        return;
    };
    let now = origin();
    let Ok(admission) = admit::admit(&config, request, token, None, &info, now) else {
        return;
    };
    let broker_ack = ConnAck {
        session_present: false,
        code: ConnectReturnCode::Success,
        properties: None,
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
        connect: admission.connect,
        peer: "fuzz".into(),
        upstreams: links,
        router: admission.router,
        connack,
        carried: None,
        expires_at: None,
        others_expire: None,
        limits: admission.limits,
    };
    let mut session = Session::new(config, start, now);
    let mut brokers = vec![Broker::default(); upstreams];
    let mut clock = now;
    let end = loop {
        if let Err(end) = session.on_client_bytes(clock, &mut buf) {
            break end;
        }
        session.client_transmit().clear();
        if let Err(end) = answer_brokers(&mut session, &mut brokers, upstream_version, clock) {
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
    let _ = session.finish(end);
    let _ = session.carried(clock);
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
) -> Result<(), End> {
    for (index, broker) in brokers.iter_mut().enumerate() {
        let mut sent = std::mem::take(session.upstream_transmit(index));
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
