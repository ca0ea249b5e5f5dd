//! `mqtt-bench reauth`: sessions with short-lived tokens that either refresh
//! them in the session (MQTT 5 AUTH 0x19, `--mode auth`) or let the proxy end
//! the session at `exp` (DISCONNECT 0xA0) and reconnect with a new token
//! (`--mode reconnect`), while each publishes QoS 1 at a steady rate to a
//! topic that one subscriber, connected to the broker directly, counts.
//!
//! Each session CONNECTs with the Authentication Method `--method` (`jwt`)
//! and an RS256 token signed here with `--key` (the seed's private key) for
//! `sub` `reauth-<i>`. `--shape staggered` spreads the first expiries evenly
//! over one lifetime (a steady churn); `--shape herd` issues every token at
//! once, so they all expire together. Both modes sign the next token at the
//! same moment, `--margin` seconds before `exp`: `auth` sends it in AUTH
//! 0x19 then, `reconnect` keeps it for the reconnect after the 0xA0.
//!
//! Each payload carries the session, a sequence number and the moment the
//! message was due (publishes due while a session is down wait for its
//! reconnect, as a client's queue does). The report gives the delivery delay
//! (due -> received) p50/p99/max, how many were delayed over 100 ms and 1 s,
//! and losses: messages due but never received after a drain, and publishes
//! never acknowledged (those in flight at a drop are published again after
//! the reconnect, so a loss is a message the path dropped for good). The
//! `steady_*` figures leave out messages due in the opening and the first
//! `--warmup` seconds after it, when every session connects at once.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use clap::{Args, ValueEnum};
use mqtt_bytes_v5::{
    ConnectProperties, ConnectReturnCode, Filter, Packet, PubAck, Publish, QoS, RetainForwardRule,
    Subscribe,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Duration, Instant};

use crate::raw::encode;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// Refresh the token in the session with AUTH 0x19.
    Auth,
    /// Let the session end at `exp` and reconnect with a new token.
    Reconnect,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Shape {
    /// First expiries spread evenly over one lifetime.
    Staggered,
    /// Every token issued at once: they all expire together.
    Herd,
}

#[derive(Args)]
pub(crate) struct ReauthArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// The path's port (the proxy).
    #[arg(long)]
    port: u16,
    /// The broker's own port, where the counting subscriber connects.
    #[arg(long)]
    broker_port: u16,
    #[arg(long, value_enum)]
    mode: Mode,
    #[arg(long, value_enum, default_value = "staggered")]
    shape: Shape,
    #[arg(long, default_value_t = 2000)]
    sessions: usize,
    /// Seconds a token is valid.
    #[arg(long, default_value_t = 60)]
    token_lifetime: u64,
    /// Seconds the sessions publish.
    #[arg(long, default_value_t = 300)]
    duration: u64,
    /// Milliseconds between one session's publishes.
    #[arg(long, default_value_t = 1000)]
    publish_interval_ms: u64,
    /// Seconds before `exp` the next token is signed (and, in `auth`, sent).
    #[arg(long)]
    margin: Option<f64>,
    /// The Authentication Method the proxy's guard names.
    #[arg(long, default_value = "jwt")]
    method: String,
    /// The RSA private key (PEM) tokens are signed with.
    #[arg(long, default_value = "examples/mqtt.proxy.jwt/private.pem")]
    key: std::path::PathBuf,
    #[arg(long, default_value = "example")]
    kid: String,
    /// Seconds after the sessions opened before a message's delay counts
    /// as `steady` (the opening's CONNECT burst is not churn).
    #[arg(long, default_value_t = 10)]
    warmup: u64,
    /// Seconds to wait for the last acknowledgements and deliveries.
    #[arg(long, default_value_t = 5)]
    drain: u64,
}

/// What every session shares.
struct Plan {
    addr: (IpAddr, u16),
    mode: Mode,
    method: String,
    key: jsonwebtoken::EncodingKey,
    kid: String,
    lifetime: u64,
    margin: Duration,
    interval: Duration,
    /// The subscriber's clock: due times are measured from it.
    epoch: Instant,
    start: Instant,
    end: Instant,
    prefix: String,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    connects: AtomicU64,
    refused: AtomicU64,
    auth_ok: AtomicU64,
    expired: AtomicU64,
    other_drops: AtomicU64,
    published: AtomicU64,
    resent: AtomicU64,
    acked: AtomicU64,
    unacked: AtomicU64,
    due: AtomicU64,
    outage_ns: Mutex<Vec<u64>>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Plan {
    fn sign(&self, session: usize, exp: u64) -> Result<String> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        let claims = serde_json::json!({
            "iss": "https://auth.example.com",
            "aud": "https://api.example.com",
            "sub": format!("reauth-{session}"),
            "scope": "mqtt:stream",
            "exp": exp,
        });
        Ok(jsonwebtoken::encode(&header, &claims, &self.key)?)
    }
}

fn varint(mut value: usize, out: &mut BytesMut) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if value == 0 {
            break;
        }
    }
}

/// AUTH 0x19 with the method and the token (written by hand: the codec has no AUTH).
fn auth_frame(method: &str, token: &str, out: &mut BytesMut) {
    let mut props = BytesMut::new();
    for (id, value) in [(0x15u8, method), (0x16, token)] {
        props.put_u8(id);
        props.put_u16(value.len() as u16);
        props.put_slice(value.as_bytes());
    }
    let mut body = BytesMut::new();
    body.put_u8(0x19);
    varint(props.len(), &mut body);
    body.put_slice(&props);
    out.put_u8(0xF0);
    varint(body.len(), out);
    out.put_slice(&body);
}

/// The length of the fixed header and of the rest, once both are buffered.
fn frame_len(buf: &[u8]) -> Option<(usize, usize)> {
    let mut len = 0usize;
    for (i, byte) in buf.iter().enumerate().skip(1).take(4) {
        len |= ((byte & 0x7F) as usize) << (7 * (i - 1));
        if byte & 0x80 == 0 {
            return (buf.len() >= i + 1 + len).then_some((i + 1, len));
        }
    }
    None
}

/// What a session reads.
// One at a time, moved out at once: boxing would cost an allocation per packet.
#[allow(clippy::large_enum_variant)]
enum Frame {
    Packet(Packet),
    /// AUTH with its reason.
    Auth(u8),
    /// DISCONNECT with its reason.
    Disconnect(u8),
}

fn next_frame(buf: &mut BytesMut) -> Result<Option<Frame>> {
    let Some((header, len)) = frame_len(buf) else {
        return Ok(None);
    };
    let reason = if len > 0 { buf[header] } else { 0 };
    match buf[0] >> 4 {
        15 => {
            buf.advance(header + len);
            Ok(Some(Frame::Auth(reason)))
        }
        14 => {
            buf.advance(header + len);
            Ok(Some(Frame::Disconnect(reason)))
        }
        _ => Packet::read(buf, None)
            .map(|p| Some(Frame::Packet(p)))
            .map_err(|e| anyhow::anyhow!("malformed packet: {e:?}")),
    }
}

/// CONNECT with the token as Authentication Data; the socket after CONNACK.
async fn connect(plan: &Plan, session: usize, token: &str) -> Result<(TcpStream, BytesMut)> {
    let mut stream = TcpStream::connect(plan.addr).await?;
    stream.set_nodelay(true)?;
    let mut properties = ConnectProperties::new();
    properties.authentication_method = Some(plan.method.clone());
    properties.authentication_data = Some(Bytes::copy_from_slice(token.as_bytes()));
    let connect = mqtt_bytes_v5::Connect {
        keep_alive: 60,
        client_id: format!("reauth-{session}"),
        clean_start: true,
        properties: Some(properties),
    };
    let mut out = BytesMut::new();
    encode(&Packet::Connect(connect, None, None), &mut out)?;
    stream.write_all(&out).await?;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        match next_frame(&mut buf)? {
            Some(Frame::Packet(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {
                return Ok((stream, buf));
            }
            Some(Frame::Packet(Packet::ConnAck(ack))) => bail!("refused: {:?}", ack.code),
            Some(Frame::Disconnect(reason)) => bail!("DISCONNECT 0x{reason:02x} before CONNACK"),
            Some(_) => bail!("expected CONNACK"),
            None => {}
        }
        if stream.read_buf(&mut buf).await? == 0 {
            bail!("closed before CONNACK");
        }
    }
}

/// One message: session, sequence number, due time (ns since the start).
fn payload(session: usize, seq: u64, due_ns: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(20);
    out.put_u32(session as u32);
    out.put_u64(seq);
    out.put_u64(due_ns);
    out.freeze()
}

/// One session until the end of the run.
async fn session(plan: Arc<Plan>, i: usize, first_exp: u64) -> Result<()> {
    let c = &plan.counters;
    let topic = format!("{}/{i}", plan.prefix);
    let mut token = plan.sign(i, first_exp)?;
    let mut exp = first_exp;
    // Publishes due and not yet written, and those written and not acknowledged.
    let mut queue: VecDeque<(u64, u64)> = VecDeque::new();
    let mut inflight: HashMap<u16, (u64, u64)> = HashMap::new();
    let mut seq = 0u64;
    // Spread the sessions' publishes over one interval.
    let phase = plan.interval.mul_f64(i as f64 / 7919.0 % 1.0);
    let mut next_publish = plan.start + phase;
    let mut pkid = 0u16;
    let mut next_token: Option<(String, u64)> = None;
    let mut down_since: Option<Instant> = None;
    'connection: loop {
        if Instant::now() >= plan.end {
            break;
        }
        let (mut stream, mut buf) = match connect(&plan, i, &token).await {
            Ok(connected) => connected,
            Err(_) => {
                c.refused.fetch_add(1, Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        c.connects.fetch_add(1, Relaxed);
        if let Some(since) = down_since.take() {
            c.outage_ns
                .lock()
                .unwrap()
                .push(since.elapsed().as_nanos() as u64);
        }
        // Republish what was in flight at the drop, ahead of the queue.
        let mut again: Vec<_> = inflight.drain().map(|(_, m)| m).collect();
        again.sort_unstable();
        c.resent.fetch_add(again.len() as u64, Relaxed);
        for m in again.into_iter().rev() {
            queue.push_front(m);
        }
        loop {
            // When the next token is due: `margin` before exp (wall clock -> Instant).
            let until_exp = Duration::from_secs(exp).saturating_sub(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default(),
            );
            let refresh_at = Instant::now() + until_exp.saturating_sub(plan.margin);
            // Write what is due.
            let mut out = BytesMut::new();
            while next_publish <= Instant::now() && next_publish < plan.end {
                queue.push_back((seq, (next_publish - plan.epoch).as_nanos() as u64));
                c.due.fetch_add(1, Relaxed);
                seq += 1;
                next_publish += plan.interval;
            }
            while let Some((s, due)) = queue.pop_front() {
                pkid = pkid % u16::MAX + 1;
                let publish =
                    Publish::new(topic.clone(), QoS::AtLeastOnce, payload(i, s, due), None);
                let publish = Publish { pkid, ..publish };
                encode(&Packet::Publish(publish), &mut out)?;
                inflight.insert(pkid, (s, due));
                c.published.fetch_add(1, Relaxed);
            }
            if !out.is_empty() && stream.write_all(&out).await.is_err() {
                break;
            }
            if Instant::now() >= plan.end && inflight.is_empty() {
                let _ = stream.write_all(&[0xE0, 0x00]).await;
                break 'connection;
            }
            let wake = if Instant::now() >= plan.end {
                plan.end + Duration::from_secs(30)
            } else {
                next_publish.min(if next_token.is_none() {
                    refresh_at
                } else {
                    plan.end
                })
            };
            tokio::select! {
                read = stream.read_buf(&mut buf) => {
                    if !matches!(read, Ok(n) if n > 0) {
                        c.other_drops.fetch_add(1, Relaxed);
                        break;
                    }
                    let mut ended = false;
                    while let Some(frame) = next_frame(&mut buf)? {
                        match frame {
                            Frame::Packet(Packet::PubAck(ack)) => {
                                if inflight.remove(&ack.pkid).is_some() {
                                    c.acked.fetch_add(1, Relaxed);
                                }
                            }
                            Frame::Auth(0) => {
                                c.auth_ok.fetch_add(1, Relaxed);
                                if let Some((_, new_exp)) = next_token.take() {
                                    exp = new_exp;
                                }
                            }
                            Frame::Disconnect(0xA0) => {
                                c.expired.fetch_add(1, Relaxed);
                                ended = true;
                            }
                            Frame::Disconnect(_) | Frame::Auth(_) => {
                                c.other_drops.fetch_add(1, Relaxed);
                                ended = true;
                            }
                            Frame::Packet(_) => {}
                        }
                    }
                    if ended {
                        break;
                    }
                }
                () = sleep_until(wake) => {
                    if Instant::now() >= plan.end + Duration::from_secs(30) {
                        break 'connection;
                    }
                    if next_token.is_none() && Instant::now() >= refresh_at && Instant::now() < plan.end {
                        let new_exp = unix_now() + plan.lifetime;
                        let fresh = plan.sign(i, new_exp)?;
                        if plan.mode == Mode::Auth {
                            let mut out = BytesMut::new();
                            auth_frame(&plan.method, &fresh, &mut out);
                            if stream.write_all(&out).await.is_err() {
                                break;
                            }
                        }
                        next_token = Some((fresh, new_exp));
                    }
                }
            }
        }
        // The connection ended: reconnect with the next token (signed at the
        // margin), or sign one now if it ended before.
        down_since = Some(Instant::now());
        match next_token.take() {
            Some((fresh, new_exp)) => {
                token = fresh;
                exp = new_exp;
            }
            None => {
                exp = unix_now() + plan.lifetime;
                token = plan.sign(i, exp)?;
            }
        }
    }
    c.unacked
        .fetch_add(inflight.len() as u64 + queue.len() as u64, Relaxed);
    Ok(())
}

/// The subscriber on the broker: delays (ns) of first deliveries, duplicates.
struct Seen {
    delays: Vec<u64>,
    /// Delays of the messages due after the warm-up.
    steady: Vec<u64>,
    /// Due times (ns since the start) from which a delay counts as steady.
    steady_from: u64,
    seen: HashMap<(u32, u64), ()>,
    duplicates: u64,
}

async fn subscriber(
    addr: (IpAddr, u16),
    filter: String,
    start: Instant,
    seen: Arc<Mutex<Seen>>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    let connect = mqtt_bytes_v5::Connect {
        keep_alive: 60,
        client_id: format!("{filter}-counter").replace(['/', '#'], ""),
        clean_start: true,
        properties: None,
    };
    let mut out = BytesMut::new();
    encode(&Packet::Connect(connect, None, None), &mut out)?;
    let subscribe = Subscribe {
        pkid: 1,
        filters: vec![Filter {
            path: filter,
            qos: QoS::AtLeastOnce,
            nolocal: false,
            preserve_retain: false,
            retain_forward_rule: RetainForwardRule::OnEverySubscribe,
        }],
        properties: None,
    };
    encode(&Packet::Subscribe(subscribe), &mut out)?;
    stream.write_all(&out).await?;
    let mut ready = Some(ready);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            bail!("the subscriber's connection closed");
        }
        let mut acks = BytesMut::new();
        while let Some(frame) = next_frame(&mut buf)? {
            match frame {
                Frame::Packet(Packet::SubAck(_)) => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                }
                Frame::Packet(Packet::Publish(publish)) => {
                    let at = start.elapsed().as_nanos() as u64;
                    if publish.qos == QoS::AtLeastOnce {
                        encode(&Packet::PubAck(PubAck::new(publish.pkid, None)), &mut acks)?;
                    }
                    let mut p = publish.payload.clone();
                    if p.len() < 20 {
                        continue;
                    }
                    let (s, seq, due) = (p.get_u32(), p.get_u64(), p.get_u64());
                    let mut seen = seen.lock().unwrap();
                    if seen.seen.insert((s, seq), ()).is_none() {
                        seen.delays.push(at.saturating_sub(due));
                        if due >= seen.steady_from {
                            seen.steady.push(at.saturating_sub(due));
                        }
                    } else {
                        seen.duplicates += 1;
                    }
                }
                _ => {}
            }
        }
        if !acks.is_empty() {
            stream.write_all(&acks).await?;
        }
    }
}

fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize] as f64 / 1e6
}

pub(crate) async fn reauth(args: ReauthArgs) -> Result<serde_json::Value> {
    let pem = std::fs::read(&args.key)
        .with_context(|| format!("cannot read the signing key {}", args.key.display()))?;
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).context("not an RSA key in PEM")?;
    let margin = args
        .margin
        .unwrap_or((args.token_lifetime as f64 / 6.0).clamp(1.0, 10.0));
    let prefix = crate::run_prefix();
    // Sessions connect over the first second (or two for thousands).
    let opening = Duration::from_millis((args.sessions as u64).clamp(1000, 4000));
    let seen = Arc::new(Mutex::new(Seen {
        delays: Vec::new(),
        steady: Vec::new(),
        steady_from: (opening + Duration::from_secs(args.warmup)).as_nanos() as u64,
        seen: HashMap::new(),
        duplicates: 0,
    }));
    let start = Instant::now();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let counter = tokio::spawn(subscriber(
        (args.host, args.broker_port),
        format!("{prefix}/#"),
        start,
        seen.clone(),
        ready_tx,
    ));
    timeout(Duration::from_secs(10), ready_rx)
        .await
        .context("the subscriber's SUBACK")??;
    let plan = Arc::new(Plan {
        addr: (args.host, args.port),
        mode: args.mode,
        method: args.method.clone(),
        key,
        kid: args.kid.clone(),
        lifetime: args.token_lifetime,
        margin: Duration::from_secs_f64(margin),
        interval: Duration::from_millis(args.publish_interval_ms),
        epoch: start,
        start: start + opening,
        end: start + opening + Duration::from_secs(args.duration),
        prefix,
        counters: Counters::default(),
    });
    let issued = unix_now() + opening.as_secs();
    let mut tasks = Vec::with_capacity(args.sessions);
    for i in 0..args.sessions {
        let first_exp = match args.shape {
            Shape::Herd => issued + args.token_lifetime,
            // Expiries evenly over one lifetime, at least `margin` + 1 s away.
            Shape::Staggered => {
                let offset = args.token_lifetime * (i as u64 + 1) / args.sessions as u64;
                issued + offset.max(margin.ceil() as u64 + 1)
            }
        };
        let plan = plan.clone();
        tasks.push(tokio::spawn(session(plan, i, first_exp)));
        let gap = opening / args.sessions as u32;
        tokio::time::sleep(gap).await;
    }
    let mut failures = BTreeMap::<String, u64>::new();
    for task in tasks {
        if let Err(error) = task.await? {
            *failures.entry(format!("{error:#}")).or_default() += 1;
        }
    }
    tokio::time::sleep(Duration::from_secs(args.drain)).await;
    counter.abort();
    let c = &plan.counters;
    let seen = seen.lock().unwrap();
    let mut delays = seen.delays.clone();
    delays.sort_unstable();
    let mut outages = c.outage_ns.lock().unwrap().clone();
    outages.sort_unstable();
    let due = c.due.load(Relaxed);
    let over = |ms: u64| delays.iter().filter(|&&d| d > ms * 1_000_000).count();
    let mut steady = seen.steady.clone();
    steady.sort_unstable();
    let steady_over = |ms: u64| steady.iter().filter(|&&d| d > ms * 1_000_000).count();
    Ok(serde_json::json!({
        "scenario": "reauth",
        "mode": match args.mode { Mode::Auth => "auth", Mode::Reconnect => "reconnect" },
        "shape": match args.shape { Shape::Staggered => "staggered", Shape::Herd => "herd" },
        "sessions": args.sessions,
        "token_lifetime_s": args.token_lifetime,
        "duration_s": args.duration,
        "margin_s": margin,
        "connects": c.connects.load(Relaxed),
        "refused_attempts": c.refused.load(Relaxed),
        "auth_ok": c.auth_ok.load(Relaxed),
        "expired_0xa0": c.expired.load(Relaxed),
        "other_drops": c.other_drops.load(Relaxed),
        "due": due,
        "published": c.published.load(Relaxed),
        "republished": c.resent.load(Relaxed),
        "acked": c.acked.load(Relaxed),
        "never_acked": c.unacked.load(Relaxed),
        "received": delays.len(),
        "duplicates": seen.duplicates,
        "lost": due.saturating_sub(delays.len() as u64),
        "delay_p50_ms": percentile_ms(&delays, 50.0),
        "delay_p99_ms": percentile_ms(&delays, 99.0),
        "delay_max_ms": delays.last().map_or(f64::NAN, |&d| d as f64 / 1e6),
        "delayed_over_100ms": over(100),
        "delayed_over_1s": over(1000),
        "warmup_s": args.warmup,
        "steady_received": steady.len(),
        "steady_delay_p50_ms": percentile_ms(&steady, 50.0),
        "steady_delay_p99_ms": percentile_ms(&steady, 99.0),
        "steady_delay_max_ms": steady.last().map_or(f64::NAN, |&d| d as f64 / 1e6),
        "steady_delayed_over_100ms": steady_over(100),
        "steady_delayed_over_1s": steady_over(1000),
        "outages": outages.len(),
        "outage_p50_ms": percentile_ms(&outages, 50.0),
        "outage_max_ms": outages.last().map_or(f64::NAN, |&d| d as f64 / 1e6),
        "failures": failures,
    }))
}
