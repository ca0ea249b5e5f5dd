//! `mqtt-bench`: the load generator behind `cargo xtask bench`. It drives any
//! MQTT 5 endpoint (mosquitto, the proxy, HAProxy) the same way and prints
//! one JSON object per run, so the runner can compare them side by side.
//!
//! The default client speaks MQTT on raw sockets with the `mqtt-bytes-v5`
//! codec, encoding many packets per write; `--client rumqttc` runs the same
//! throughput scenario with rumqttc to show which client is the bottleneck.
//! `--ws-path /mqtt` makes the raw client speak MQTT over WebSocket
//! (subprotocol `mqtt`) instead of plain TCP; `--tls-ca ca.pem` puts TLS
//! under either (the `throughput`, `latency`, `connect` and `idle`
//! scenarios, on the raw client), with a client certificate for mutual TLS
//! when `--tls-cert` and `--tls-key` name one. `storm` holds sessions through
//! a broker restart and times their reconnection (see [`storm`]); `reauth`
//! refreshes short-lived tokens by AUTH or by reconnecting (see [`reauth`]).

mod raw;
mod reauth;
mod rumqttc_client;
mod storm;
mod transport;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use raw::{Conn, Pace};

#[derive(Parser)]
#[command(
    name = "mqtt-bench",
    about = "MQTT load generator for cargo xtask bench"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publishers -> one subscriber, as fast as the path allows.
    Throughput(ThroughputArgs),
    /// One publisher at a fixed rate -> one subscriber; latency percentiles.
    Latency(LatencyArgs),
    /// CONNECT -> CONNACK -> DISCONNECT, as many per second as the path allows.
    Connect(ConnectArgs),
    /// Opens idle sessions, prints `{"ready": n}` and holds them.
    Idle(IdleArgs),
    /// Holds sessions until they are dropped (a broker restart), reconnects
    /// them with back-off and times how long until all are back.
    Storm(storm::StormArgs),
    /// Sessions with short-lived tokens refreshed by AUTH or by reconnecting
    /// at expiry, publishing QoS 1; delivery delay and losses.
    Reauth(reauth::ReauthArgs),
}

/// Where to connect and with which credentials.
#[derive(Args, Clone)]
struct Target {
    /// Host to connect to.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to connect to.
    #[arg(long)]
    port: u16,
    /// CONNECT user name (e.g. `Bearer <jwt>`).
    #[arg(long)]
    username: Option<String>,
    /// Speak MQTT over WebSocket: the request path of the opening
    /// handshake (e.g. `/mqtt`), which offers the subprotocol `mqtt`.
    #[arg(long, value_name = "PATH", value_parser = ws_path)]
    ws_path: Option<String>,
    /// Speak MQTT over TLS (under the WebSocket with `--ws-path`), trusting
    /// the CA certificates in this PEM file; every connection makes a full
    /// handshake (no session resumption).
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// The server name sent (SNI) and verified with `--tls-ca`.
    #[arg(long, value_name = "NAME", default_value = "localhost")]
    tls_server_name: String,
    /// Mutual TLS: present the client certificate (chain, PEM, leaf first)
    /// in this file, with `--tls-key`.
    #[arg(long, value_name = "PEM", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

fn ws_path(path: &str) -> Result<String, String> {
    if path.starts_with('/') {
        Ok(path.to_owned())
    } else {
        Err(format!(
            "`{path}` is not a request path, which starts with `/`"
        ))
    }
}

/// Which client library publishes and subscribes.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ClientKind {
    /// Our codec on raw sockets, many packets per write.
    Raw,
    /// rumqttc (MQTT 3.1.1), one packet per request.
    Rumqttc,
}

#[derive(Args)]
struct ThroughputArgs {
    #[command(flatten)]
    target: Target,
    /// Number of publishers (each on its own connection and topic).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Number of subscribers (each receives every message).
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// QoS of publishes and of the subscription (0 or 1).
    #[arg(long, default_value_t = 0)]
    qos: u8,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// The payload, from a file (overrides `--size`), e.g. JSON for validation.
    #[arg(long)]
    payload_file: Option<PathBuf>,
    /// Messages in all, shared among the publishers.
    #[arg(long, default_value_t = 200_000)]
    messages: u64,
    /// Messages per second in all (0: as fast as the path takes them).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Publish for this many seconds at `--rate` (instead of `--messages`).
    #[arg(long)]
    seconds: Option<u64>,
    /// QoS 1 messages in flight per publisher (clamped to the receive maximum).
    #[arg(long, default_value_t = 64)]
    window: u16,
    /// Ignore the server's receive maximum, as MQTT.js and many 3.1.1
    /// clients do: the window alone bounds what is in flight.
    #[arg(long)]
    ignore_receive_maximum: bool,
    /// With `--rate` and QoS 1: count PUBACK 0x97 (a publish over a rate
    /// limit, refused) instead of failing, and report the accepted rate.
    #[arg(long)]
    refusals_ok: bool,
    /// The client library.
    #[arg(long, value_enum, default_value = "raw")]
    client: ClientKind,
}

#[derive(Args)]
struct LatencyArgs {
    #[command(flatten)]
    target: Target,
    /// Messages per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds to publish for.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// QoS (0 or 1).
    #[arg(long, default_value_t = 0)]
    qos: u8,
    /// Payload size in bytes (at least 8: the send time).
    #[arg(long, default_value_t = 64)]
    size: usize,
}

#[derive(Args)]
struct ConnectArgs {
    #[command(flatten)]
    target: Target,
    /// Connections in all.
    #[arg(long, default_value_t = 5_000)]
    connections: u64,
    /// Connections in progress at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Source addresses 127.0.0.2 .. 127.0.0.(1+n), to spread ephemeral ports.
    #[arg(long, default_value_t = 8)]
    sources: u8,
}

/// How many sessions to open, how many at once, and from which addresses
/// (the `idle` and `storm` scenarios).
#[derive(Args)]
pub(crate) struct Opening {
    #[command(flatten)]
    target: Target,
    /// Sessions to open.
    #[arg(long)]
    connections: u64,
    /// Connections in progress at once (a storm's reconnects are not limited).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Source addresses 127.0.0.2 .. 127.0.0.(1+n).
    #[arg(long, default_value_t = 8)]
    sources: u8,
}

#[derive(Args)]
struct IdleArgs {
    #[command(flatten)]
    opening: Opening,
    /// Seconds to hold the sessions after they are all open.
    #[arg(long, default_value_t = 30)]
    hold: u64,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async move {
        match cli.command {
            Command::Throughput(args) => throughput(args).await,
            Command::Latency(args) => latency(args).await,
            Command::Connect(args) => connect_rate(args).await,
            Command::Idle(args) => idle(args).await,
            Command::Storm(args) => storm::storm(args).await,
            Command::Reauth(args) => reauth::reauth(args).await,
        }
    })?;
    println!("{report}");
    Ok(())
}

fn qos(level: u8) -> Result<mqtt_bytes_v5::QoS> {
    Ok(match level {
        0 => mqtt_bytes_v5::QoS::AtMostOnce,
        1 => mqtt_bytes_v5::QoS::AtLeastOnce,
        other => bail!("QoS {other} is not supported by the bench (0 or 1)"),
    })
}

/// A run-unique topic prefix, so runs against one broker never mix.
fn run_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("bench/{}-{nanos}", std::process::id())
}

async fn throughput(args: ThroughputArgs) -> Result<serde_json::Value> {
    let payload: Bytes = match &args.payload_file {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("reading {}", path.display()))?
            .into(),
        None => vec![b'x'; args.size].into(),
    };
    let level = qos(args.qos)?;
    let prefix = run_prefix();
    if args.client == ClientKind::Rumqttc {
        if args.target.ws_path.is_some() || args.target.tls_ca.is_some() {
            bail!("--ws-path and --tls-ca are for the raw client only");
        }
        return rumqttc_client::throughput(&args, &prefix, payload).await;
    }
    let messages = match args.seconds {
        Some(_) if args.rate == 0 => bail!("--seconds needs --rate"),
        Some(seconds) => args.rate * seconds,
        None => args.messages,
    };
    let publishers_count = args.publishers.max(1) as u64;
    let mut subscribers = Vec::new();
    for index in 0..args.subscribers.max(1) {
        let mut subscriber =
            Conn::connect(&args.target, &format!("{prefix}-sub{index}"), None, 60).await?;
        subscriber.subscribe(&format!("{prefix}/+"), level).await?;
        subscribers.push(subscriber);
    }
    let mut publishers = Vec::new();
    for index in 0..args.publishers {
        let conn = Conn::connect(&args.target, &format!("{prefix}-pub{index}"), None, 60).await?;
        publishers.push(conn);
    }
    let start = Instant::now();
    let receiving: Vec<_> = subscribers
        .into_iter()
        .map(|s| tokio::spawn(s.receive(messages, false, start)))
        .collect();
    let mut sending = Vec::new();
    for (index, conn) in publishers.into_iter().enumerate() {
        let topic = format!("{prefix}/{index}");
        let count = messages / publishers_count
            + if index == 0 {
                messages % publishers_count
            } else {
                0
            };
        sending.push(if args.rate > 0 {
            let rate = (args.rate / publishers_count).max(1);
            let pace = Pace {
                rate,
                count,
                start,
                stamp: false,
                refusals_ok: args.refusals_ok,
            };
            tokio::spawn(conn.publish_paced(topic, level, payload.clone(), pace))
        } else {
            tokio::spawn(conn.publish_all(
                topic,
                level,
                payload.clone(),
                count,
                args.window,
                args.ignore_receive_maximum,
            ))
        });
    }
    let mut accepted_at = Vec::new();
    let mut refused = 0;
    for task in sending {
        let acks = task.await??;
        accepted_at.extend(acks.accepted_at);
        refused += acks.refused;
    }
    let published = start.elapsed();
    let mut received = 0;
    let mut last = start;
    for task in receiving {
        let seen = task.await??;
        received += seen.count;
        last = last.max(seen.last);
    }
    let seconds = last.duration_since(start).as_secs_f64();
    // The accepted rate in the second half of the offering, past any burst.
    let offering = if args.rate > 0 {
        messages as f64 / args.rate as f64
    } else {
        published.as_secs_f64()
    };
    let late = accepted_at
        .iter()
        .filter(|t| **t >= offering / 2.0 && **t < offering)
        .count();
    Ok(serde_json::json!({
        "scenario": "throughput",
        "accepted": accepted_at.len(),
        "refused": refused,
        "accepted_rate_late": late as f64 / (offering / 2.0),
        "sent": messages,
        "subscribers": args.subscribers.max(1),
        "received": received,
        "publish_seconds": published.as_secs_f64(),
        "seconds": seconds,
        "rate": received as f64 / seconds,
    }))
}

async fn latency(args: LatencyArgs) -> Result<serde_json::Value> {
    let level = qos(args.qos)?;
    let prefix = run_prefix();
    let total = args.rate * args.seconds;
    let mut subscriber = Conn::connect(&args.target, &format!("{prefix}-sub"), None, 60).await?;
    subscriber.subscribe(&format!("{prefix}/+"), level).await?;
    let publisher = Conn::connect(&args.target, &format!("{prefix}-pub"), None, 60).await?;
    let start = Instant::now();
    let receiving = tokio::spawn(subscriber.receive(total, true, start));
    publisher
        .publish_paced(
            format!("{prefix}/0"),
            level,
            vec![0u8; args.size.max(8)].into(),
            Pace {
                rate: args.rate,
                count: total,
                start,
                stamp: true,
                refusals_ok: false,
            },
        )
        .await?;
    let received = receiving.await??;
    let seconds = received.last.duration_since(start).as_secs_f64();
    let mut samples = received.latencies_ns;
    samples.sort_unstable();
    let percentile = |p: f64| -> f64 {
        if samples.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
        samples[rank] as f64 / 1000.0
    };
    Ok(serde_json::json!({
        "scenario": "latency",
        "sent": total,
        "received": received.count,
        "rate": received.count as f64 / seconds,
        "p50_us": percentile(50.0),
        "p99_us": percentile(99.0),
        "p999_us": percentile(99.9),
        "max_us": samples.last().map(|n| *n as f64 / 1000.0),
    }))
}

fn source(index: u64, sources: u8) -> Option<IpAddr> {
    (sources > 0).then(|| IpAddr::from([127, 0, 0, 2 + (index % u64::from(sources)) as u8]))
}

async fn connect_rate(args: ConnectArgs) -> Result<serde_json::Value> {
    let prefix = run_prefix();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let next = next.clone();
        let target = args.target.clone();
        let prefix = prefix.clone();
        let (total, sources) = (args.connections, args.sources);
        workers.push(tokio::spawn(async move {
            let mut failures = 0u64;
            let mut tls = None;
            let mut error = None;
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if index >= total {
                    return (failures, tls, error);
                }
                let id = format!("{prefix}-{index}");
                match Conn::connect(&target, &id, source(index, sources), 60).await {
                    Ok(conn) => {
                        if tls.is_none() {
                            tls = conn.tls_summary();
                        }
                        conn.disconnect().await;
                    }
                    Err(why) => {
                        failures += 1;
                        error.get_or_insert_with(|| format!("{why:#}"));
                    }
                }
            }
        }));
    }
    let (mut failures, mut tls, mut error) = (0, None, None);
    for worker in workers {
        let (failed, negotiated, why) = worker.await?;
        failures += failed;
        tls = tls.or(negotiated);
        error = error.or(why);
    }
    let seconds = start.elapsed().as_secs_f64();
    let connected = args.connections - failures;
    // What TLS negotiated (the first connection that completed says) and the
    // first failure's reason, when there are any.
    Ok(serde_json::json!({
        "scenario": "connect",
        "connections": args.connections,
        "failures": failures,
        "seconds": seconds,
        "rate": connected as f64 / seconds,
        "tls": tls,
        "first_failure": error,
    }))
}

async fn idle(args: IdleArgs) -> Result<serde_json::Value> {
    let prefix = run_prefix();
    let limit = Arc::new(Semaphore::new(args.opening.concurrency));
    let mut opening = Vec::new();
    for index in 0..args.opening.connections {
        let permit = limit.clone().acquire_owned().await?;
        let target = args.opening.target.clone();
        let id = format!("{prefix}-{index}");
        let from = source(index, args.opening.sources);
        opening.push(tokio::spawn(async move {
            let conn = Conn::connect(&target, &id, from, 0).await;
            drop(permit);
            conn
        }));
    }
    let mut held = Vec::new();
    let mut failures = 0u64;
    for task in opening {
        match task.await? {
            Ok(conn) => held.push(conn),
            Err(_) => failures += 1,
        }
    }
    // The runner reads this line, measures, then lets the hold run out.
    println!(
        "{}",
        serde_json::json!({ "ready": held.len(), "failures": failures })
    );
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    Ok(serde_json::json!({
        "scenario": "idle",
        "held": held.len(),
        "failures": failures,
    }))
}
