//! `mqtt-bench storm`: the client side of a reconnect storm. A broker restart
//! drops every session at once and they all come back together; what users
//! feel is how long until the last one is back, which depends on the path's
//! ability to absorb thousands of simultaneous CONNECTs (and JWT checks).
//!
//! Opens `--connections` sessions (distinct client ids, clean start, the
//! keep-alive of real devices, the JWT in the user name), prints
//! `{"ready": n}` once every one has its CONNACK, and holds them. A session
//! that loses its connection (EOF, reset, DISCONNECT) reconnects at once; an
//! attempt that fails (refused, timed out, closed or refused at CONNACK)
//! retries after an exponential back-off with "equal jitter", as real
//! clients do: the n-th wait is d/2 + random(0..d/2) with d = min(max,
//! min * 2^n) (10 ms .. 1 s by default), so that retries spread out instead
//! of arriving in waves. The run ends when every session has dropped at least
//! once and all are connected again (or at `--deadline`), and reports the
//! seconds from the first drop to the last one back, each session's own
//! outage (its first drop to its last CONNACK) at p50/p99, and the attempts.
//!
//! The sessions keep their own socket rather than [`crate::raw::Conn`]'s,
//! which has no way to wait for a close: they only CONNECT, PINGREQ and read.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use clap::Args;
use mqtt_bytes_v5::{ConnectReturnCode, Login, Packet, PingReq};

use crate::raw::encode;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{timeout, timeout_at, Duration, Instant};

use crate::transport::Transport;
use crate::{Opening, Target};

#[derive(Args)]
pub(crate) struct StormArgs {
    #[command(flatten)]
    opening: Opening,
    /// CONNECT keep-alive in seconds; a PINGREQ goes out after this long quiet.
    #[arg(long, default_value_t = 60)]
    keep_alive: u16,
    /// The first back-off after a failed attempt, in milliseconds.
    #[arg(long, default_value_t = 10)]
    backoff_min_ms: u64,
    /// The longest back-off, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    backoff_max_ms: u64,
    /// Seconds one attempt (TCP connect to CONNACK) may take.
    #[arg(long, default_value_t = 10)]
    connect_timeout: u64,
    /// Seconds to wait for all sessions to open, and then for the first drop.
    #[arg(long, default_value_t = 600)]
    wait: u64,
    /// Seconds after the first drop to give up on sessions not yet back.
    #[arg(long, default_value_t = 120)]
    deadline: u64,
}

/// What the sessions tell the counting task.
enum Event {
    /// The session has a CONNACK.
    Up(usize, Instant),
    /// The session lost its connection, and why.
    Down(usize, Instant, &'static str),
    /// A connection attempt ended; `true` when it failed.
    Attempt(bool),
}

/// What every session shares.
struct Plan {
    target: Target,
    prefix: String,
    sources: u8,
    keep_alive: u16,
    backoff: (Duration, Duration),
    connect_timeout: Duration,
    opening: Arc<Semaphore>,
}

/// Exponential back-off with equal jitter.
struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
    rng: u64,
}

impl Backoff {
    fn new((min, max): (Duration, Duration), seed: u64) -> Self {
        Self {
            next: min,
            min,
            max,
            // xorshift must not start at 0.
            rng: seed | 1,
        }
    }

    /// The next wait: half the current step plus up to half again at random.
    fn delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let unit = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        step / 2 + (step / 2).mul_f64(unit)
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// One session's connection.
struct Session {
    stream: Transport,
    buf: BytesMut,
}

impl Session {
    /// Connects from `source` (TCP, TLS or WebSocket), then CONNECT -> CONNACK.
    async fn open(plan: &Plan, client_id: &str, source: Option<IpAddr>) -> Result<Self> {
        let target = &plan.target;
        let stream = crate::transport::dial(target, source).await?;
        let mut session = Self {
            stream,
            buf: BytesMut::with_capacity(256),
        };
        let login = target.username.as_ref().map(|username| Login {
            username: username.clone(),
            password: String::new(),
        });
        let connect = mqtt_bytes_v5::Connect {
            keep_alive: plan.keep_alive,
            client_id: client_id.to_owned(),
            clean_start: true,
            properties: None,
        };
        let mut out = BytesMut::new();
        encode(&Packet::Connect(connect, None, login), &mut out)?;
        session.stream.write(&mut out).await?;
        loop {
            match Packet::read(&mut session.buf, None) {
                Ok(Packet::ConnAck(ack)) if ack.code == ConnectReturnCode::Success => {
                    return Ok(session)
                }
                Ok(Packet::ConnAck(ack)) => bail!("refused: {:?}", ack.code),
                Ok(other) => bail!("expected CONNACK, got {other:?}"),
                Err(mqtt_bytes_v5::Error::InsufficientBytes(_)) => {}
                Err(e) => bail!("malformed packet: {e:?}"),
            }
            if session.stream.read_buf(&mut session.buf).await? == 0 {
                bail!("closed before CONNACK");
            }
        }
    }

    /// Holds the session, pinging when quiet, until it is lost: why.
    async fn hold(&mut self, keep_alive: u16) -> &'static str {
        let quiet = Duration::from_secs(u64::from(keep_alive));
        loop {
            loop {
                match Packet::read(&mut self.buf, None) {
                    Ok(Packet::Disconnect(_)) => return "disconnect",
                    Ok(_) => {}
                    Err(mqtt_bytes_v5::Error::InsufficientBytes(_)) => break,
                    Err(_) => return "malformed",
                }
            }
            let read = self.stream.read_buf(&mut self.buf);
            let outcome = if keep_alive == 0 {
                read.await
            } else {
                match timeout(quiet, read).await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        let mut out = BytesMut::new();
                        let _ = encode(&Packet::PingReq(PingReq), &mut out);
                        if self.stream.write(&mut out).await.is_err() {
                            return "reset";
                        }
                        continue;
                    }
                }
            };
            match outcome {
                Ok(0) => return "eof",
                Ok(_) => {}
                Err(_) => return "reset",
            }
        }
    }
}

/// Connects, retrying with back-off until it succeeds.
async fn connect_retrying(
    plan: &Plan,
    id: &str,
    source: Option<IpAddr>,
    backoff: &mut Backoff,
    events: &mpsc::UnboundedSender<Event>,
) -> Session {
    loop {
        let attempt = timeout(plan.connect_timeout, Session::open(plan, id, source)).await;
        let _ = events.send(Event::Attempt(!matches!(attempt, Ok(Ok(_)))));
        if let Ok(Ok(session)) = attempt {
            backoff.reset();
            return session;
        }
        // The back-off itself: the only wait in the client.
        tokio::time::sleep(backoff.delay()).await;
    }
}

/// One session for the whole run: open, hold, reconnect when lost, forever.
async fn session(index: usize, plan: Arc<Plan>, events: mpsc::UnboundedSender<Event>) {
    let id = format!("{}-{index}", plan.prefix);
    let source = crate::source(index as u64, plan.sources);
    let seed = (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ std::process::id() as u64;
    let mut backoff = Backoff::new(plan.backoff, seed);
    let permit = plan.opening.clone().acquire_owned().await;
    let mut session = connect_retrying(&plan, &id, source, &mut backoff, &events).await;
    drop(permit);
    loop {
        if events.send(Event::Up(index, Instant::now())).is_err() {
            return;
        }
        let why = session.hold(plan.keep_alive).await;
        drop(session);
        let _ = events.send(Event::Down(index, Instant::now(), why));
        session = connect_retrying(&plan, &id, source, &mut backoff, &events).await;
    }
}

/// `p`-th percentile of sorted `values`.
fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values[((p / 100.0) * (values.len() - 1) as f64).round() as usize]
}

pub(crate) async fn storm(args: StormArgs) -> Result<serde_json::Value> {
    let n = usize::try_from(args.opening.connections)?;
    if n == 0 {
        bail!("--connections must be at least 1");
    }
    let plan = Arc::new(Plan {
        target: args.opening.target.clone(),
        prefix: crate::run_prefix().replace('/', "-"),
        sources: args.opening.sources,
        keep_alive: args.keep_alive,
        backoff: (
            Duration::from_millis(args.backoff_min_ms),
            Duration::from_millis(args.backoff_max_ms.max(args.backoff_min_ms)),
        ),
        connect_timeout: Duration::from_secs(args.connect_timeout),
        opening: Arc::new(Semaphore::new(args.opening.concurrency.max(1))),
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    for index in 0..n {
        tokio::spawn(session(index, plan.clone(), tx.clone()));
    }
    drop(tx);
    let wait = Duration::from_secs(args.wait);

    // All open.
    let mut up = vec![false; n];
    let mut ready = 0;
    let open_by = Instant::now() + wait;
    while ready < n {
        match timeout_at(open_by, rx.recv()).await {
            Ok(Some(Event::Up(index, _))) if !up[index] => {
                up[index] = true;
                ready += 1;
            }
            Ok(Some(Event::Down(index, ..))) if up[index] => {
                up[index] = false;
                ready -= 1;
            }
            Ok(Some(_)) => {}
            Ok(None) => bail!("the sessions ended"),
            Err(_) => bail!("only {ready} of {n} sessions opened within {wait:?}"),
        }
    }
    // The runner reads this line, then restarts the broker.
    println!("{}", serde_json::json!({ "ready": ready }));

    // The storm: from the first drop until every session dropped and is back.
    let mut first_down: Vec<Option<Instant>> = vec![None; n];
    let mut last_up: Vec<Option<Instant>> = vec![None; n];
    let (mut back, mut attempts, mut failed, mut reconnects) = (0usize, 0u64, 0u64, 0u64);
    let mut reasons: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut start: Option<Instant> = None;
    let mut deadline = Instant::now() + wait;
    let mut end = None;
    while back < n {
        let event = match timeout_at(deadline, rx.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => bail!("the sessions ended"),
            Err(_) if start.is_none() => bail!("no session was dropped within {wait:?}"),
            Err(_) => break,
        };
        match event {
            Event::Down(index, at, why) => {
                if start.is_none() {
                    start = Some(at);
                    deadline = at + Duration::from_secs(args.deadline);
                }
                *reasons.entry(why).or_default() += 1;
                if first_down[index].is_none() {
                    first_down[index] = Some(at);
                } else if up[index] {
                    back -= 1;
                }
                up[index] = false;
            }
            Event::Up(index, at) if first_down[index].is_some() => {
                reconnects += 1;
                up[index] = true;
                last_up[index] = Some(at);
                back += 1;
                end = Some(at);
            }
            Event::Up(..) => {}
            Event::Attempt(failure) if start.is_some() => {
                attempts += 1;
                failed += u64::from(failure);
            }
            Event::Attempt(_) => {}
        }
    }
    let start = start.context("no drop")?;
    let mut outages: Vec<f64> = first_down
        .iter()
        .zip(&last_up)
        .zip(&up)
        .filter_map(|((down, up_at), up)| match (down, up_at, up) {
            (Some(down), Some(up_at), true) => Some(up_at.duration_since(*down).as_secs_f64()),
            _ => None,
        })
        .collect();
    outages.sort_by(f64::total_cmp);
    let spread = first_down.iter().flatten().max().copied().unwrap_or(start);
    let complete = back == n;
    Ok(serde_json::json!({
        "scenario": "storm",
        "sessions": n,
        "complete": complete,
        "back": back,
        "all_back_s": if complete {
            end.map(|end| end.duration_since(start).as_secs_f64())
        } else {
            None
        },
        "drop_spread_s": spread.duration_since(start).as_secs_f64(),
        "p50_s": percentile(&outages, 50.0),
        "p99_s": percentile(&outages, 99.0),
        "max_s": outages.last().copied(),
        "attempts": attempts,
        "failed_attempts": failed,
        "reconnects": reconnects,
        "drops": reasons,
        "backoff_ms": [args.backoff_min_ms, args.backoff_max_ms],
        "keep_alive": args.keep_alive,
    }))
}
