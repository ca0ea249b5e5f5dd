//! The `store` scenario of `cargo xtask bench` (issue 28): the same proxy
//! configuration (the tenants example's jwt guard with its `tenant` claim,
//! limits per `{claim: tenant}` set so high that nothing is refused) with a
//! `memory` store and with a `redis` store, which counts the limits
//! fleet-wide in Redis (decision 0027), alternating memory, redis, memory,
//! redis... in one run against one mosquitto and one redis-server.
//!
//! Measured per run, on a proxy started afresh for it:
//! - CONNECT latency: CONNECTs with tokens of one tenant, 16 at a time (16
//!   threads of blocking sockets), each timed from the CONNECT written to
//!   its CONNACK read (the TCP handshake before is not counted; wall clock: `SystemTime`, as the
//!   workspace keeps `Instant` for tokio), then a
//!   DISCONNECT; p50, p99, max. With the redis store each CONNECT waits a
//!   round trip per limited count (sessions join, connects take).
//! - Publish CPU: one session of the tenant publishing QoS 1 (64-byte
//!   payloads, 64 in flight) for a number of seconds through the proxy, a
//!   QoS 0 subscriber on the broker directly; the proxy's CPU seconds
//!   (user and system, `/proc`) per million publishes acknowledged, and
//!   redis-server's, and the commands Redis processed meanwhile.
//!
//! The clients run in this process (the load generator has no per-CONNECT
//! latency and its throughput subscriber goes through the proxy too).
//!
//! A scenario: it uses only the shared helper [`super::proc`]; only the
//! runner ([`crate::bench`]) uses it, calling [`store`].

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use mqtt_bytes_v5::{Connect, Filter, Login, Packet, QoS, RetainForwardRule, Subscribe};
use zilla_testkit::tenants::tenants_guards;
use zilla_testkit::{Mosquitto, Redis};

use super::proc::{cpu_seconds, start_zilla, MOSQUITTO_TUNING};

/// CONNECTs in progress at once.
const CONCURRENCY: usize = 16;
/// CONNECTs made before the timed ones on each fresh proxy (not counted):
/// the first ones open the proxy's connections to the broker and to Redis.
const WARM_UP: u64 = 64;
/// QoS 1 publishes in flight.
const WINDOW: usize = 64;
const PAYLOAD: usize = 64;
/// The tenant of every token.
const TENANT: &str = "acme";
/// How long a socket read may wait.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the scenario needs from the bench.
pub(crate) struct Store<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) host: &'a Path,
    /// Timed CONNECTs per run.
    pub(crate) connects: u64,
    /// Seconds of publishing per run.
    pub(crate) duration: u64,
    /// Runs of each store.
    pub(crate) rounds: usize,
}

/// The proxy: tcp -> mqtt server (jwt at CONNECT, limits per tenant in
/// `store0`) -> mqtt client -> the broker. `store` is the body of `store0`.
fn store_yaml(guards: &str, store: &str, broker: u16) -> String {
    format!(
        "name: bench-store
stores:
  store0:
{store}guards:
{guards}bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: north_mqtt_server
  north_mqtt_server:
    type: mqtt
    kind: server
    options:
      store: store0
      authorization:
        authn_jwt:
          credentials:
            connect:
              username: Bearer {{credentials}}
      limits:
        - key: {{claim: tenant}}
          sessions: 100000
          connects: {{rate: 100000, burst: 100000}}
          publishes: {{rate: 10000000, burst: 10000000}}
          bytes: {{rate: 1000000000, burst: 1000000000}}
    routes:
      - guarded:
          authn_jwt:
            - mqtt:stream
        exit: south_mqtt_client
  south_mqtt_client:
    type: mqtt
    kind: client
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options:
      host: 127.0.0.1
      port: {broker}
"
    )
}

/// A token of the tenant, signed with the seed's key (`kid: example`).
fn tenant_token() -> Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    Ok(zilla_testkit::seed::sign(
        &serde_json::json!({
            "iss": "https://auth.example.com",
            "aud": "https://api.example.com",
            "sub": "bench-device",
            "scope": "mqtt:stream",
            "tenant": TENANT,
            "exp": now + 86_400,
        }),
        "example",
    ))
}

/// A blocking MQTT 5 connection on raw packets.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    chunk: Vec<u8>,
}

impl Conn {
    fn open(port: u16) -> Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port)).context("connecting")?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        Ok(Self {
            stream,
            buf: BytesMut::new(),
            chunk: vec![0; 64 * 1024],
        })
    }

    fn send(&mut self, packets: &[Packet]) -> Result<()> {
        let mut out = BytesMut::new();
        for packet in packets {
            packet
                .write(&mut out)
                .map_err(|e| anyhow::anyhow!("encoding: {e:?}"))?;
        }
        self.stream.write_all(&out).context("writing")
    }

    /// The next packet; an error when the connection closes or times out.
    fn recv(&mut self) -> Result<Packet> {
        loop {
            if !self.buf.is_empty() {
                match Packet::read(&mut self.buf, None) {
                    Ok(packet) => return Ok(packet),
                    Err(mqtt_bytes_v5::Error::InsufficientBytes(_)) => {}
                    Err(error) => bail!("a malformed packet: {error:?}"),
                }
            }
            let read = self.stream.read(&mut self.chunk).context("reading")?;
            if read == 0 {
                bail!("the connection closed");
            }
            self.buf.extend_from_slice(&self.chunk[..read]);
        }
    }

    /// CONNECT (with `Bearer <token>` as user name when given) and CONNACK;
    /// the time between them and the receive maximum granted.
    fn connect(&mut self, client_id: &str, token: Option<&str>) -> Result<(Duration, u16)> {
        let login = token.map(|token| Login {
            username: format!("Bearer {token}"),
            password: "".into(),
        });
        let connect = Packet::Connect(
            Connect {
                keep_alive: 60,
                client_id: client_id.into(),
                clean_start: true,
                properties: None,
            },
            None,
            login,
        );
        let sent = SystemTime::now();
        self.send(&[connect])?;
        match self.recv()? {
            Packet::ConnAck(ack) if ack.code == mqtt_bytes_v5::ConnectReturnCode::Success => {
                let receive_max = ack
                    .properties
                    .and_then(|p| p.receive_max)
                    .unwrap_or(u16::MAX);
                Ok((sent.elapsed().unwrap_or_default(), receive_max))
            }
            other => bail!("CONNECT refused: {other:?}"),
        }
    }

    fn disconnect(mut self) {
        let _ = self.send(&[Packet::Disconnect(mqtt_bytes_v5::Disconnect {
            reason_code: mqtt_bytes_v5::DisconnectReasonCode::NormalDisconnection,
            properties: None,
        })]);
    }
}

/// CONNECT latency: `count` CONNECTs (after `warm_up` untimed ones),
/// `concurrency` at a time; the latencies in microseconds, sorted, and the
/// failures.
fn connects(
    port: u16,
    token: &str,
    (run, pass): (usize, &'static str),
    (count, warm_up, concurrency): (u64, u64, usize),
) -> (Vec<u64>, u64, Option<String>) {
    let next = Arc::new(AtomicU64::new(0));
    let total = warm_up + count;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let next = next.clone();
            let token = token.to_owned();
            std::thread::spawn(move || {
                let (mut latencies, mut failures, mut error) = (Vec::new(), 0u64, None);
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= total {
                        return (latencies, failures, error);
                    }
                    let attempt = Conn::open(port).and_then(|mut conn| {
                        let id = format!("bench-store-{run}-{pass}-{index}");
                        let (latency, _) = conn.connect(&id, Some(&token))?;
                        conn.disconnect();
                        Ok(latency)
                    });
                    match attempt {
                        Ok(latency) if index >= warm_up => {
                            latencies.push(latency.as_micros() as u64)
                        }
                        Ok(_) => {}
                        Err(why) => {
                            failures += 1;
                            error.get_or_insert_with(|| format!("{why:#}"));
                        }
                    }
                }
            })
        })
        .collect();
    let (mut all, mut failures, mut error) = (Vec::new(), 0, None);
    for worker in workers {
        let (latencies, failed, why) = worker.join().unwrap_or_default();
        all.extend(latencies);
        failures += failed;
        error = error.or(why);
    }
    all.sort_unstable();
    (all, failures, error)
}

/// One session publishing QoS 1 through the proxy for `duration`, [`WINDOW`]
/// in flight; (acknowledged, refused).
fn publish(port: u16, token: &str, topic: &str, duration: Duration) -> Result<(u64, u64)> {
    let mut conn = Conn::open(port)?;
    let (_, receive_max) = conn.connect(&format!("{topic}-pub"), Some(token))?;
    let window = WINDOW.min(usize::from(receive_max));
    let payload = bytes::Bytes::from(vec![b'x'; PAYLOAD]);
    let (mut inflight, mut pkid, mut acked, mut refused) = (0usize, 0u16, 0u64, 0u64);
    let deadline = SystemTime::now() + duration;
    loop {
        if SystemTime::now() < deadline {
            let mut batch = Vec::new();
            while inflight + batch.len() < window {
                pkid = pkid.checked_add(1).unwrap_or(1);
                batch.push(Packet::Publish(mqtt_bytes_v5::Publish {
                    dup: false,
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    topic: topic.into(),
                    pkid,
                    payload: payload.clone(),
                    properties: None,
                }));
            }
            inflight += batch.len();
            conn.send(&batch)?;
        } else if inflight == 0 {
            break;
        }
        // At least one packet, then whatever else has arrived already.
        let mut packet = Some(conn.recv()?);
        while let Some(next) = packet.take() {
            if let Packet::PubAck(ack) = next {
                inflight -= 1;
                match ack.reason {
                    mqtt_bytes_v5::PubAckReason::Success
                    | mqtt_bytes_v5::PubAckReason::NoMatchingSubscribers => acked += 1,
                    _ => refused += 1,
                }
            }
            if !conn.buf.is_empty() {
                match Packet::read(&mut conn.buf, None) {
                    Ok(more) => packet = Some(more),
                    Err(mqtt_bytes_v5::Error::InsufficientBytes(_)) => {}
                    Err(error) => bail!("a malformed packet: {error:?}"),
                }
            }
        }
    }
    conn.disconnect();
    Ok((acked, refused))
}

/// A QoS 0 subscriber to `filter` on the broker, counting what it receives
/// until `stop`.
fn subscribe(
    broker: u16,
    filter: &str,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<u64>> {
    let mut conn = Conn::open(broker)?;
    conn.connect(&format!("{filter}-sub").replace(['#', '/'], "-"), None)?;
    conn.send(&[Packet::Subscribe(Subscribe {
        pkid: 1,
        filters: vec![Filter {
            path: filter.into(),
            qos: QoS::AtMostOnce,
            nolocal: false,
            preserve_retain: false,
            retain_forward_rule: RetainForwardRule::OnEverySubscribe,
        }],
        properties: None,
    })])?;
    match conn.recv()? {
        Packet::SubAck(_) => {}
        other => bail!("expected SUBACK, got {other:?}"),
    }
    conn.stream
        .set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(std::thread::spawn(move || {
        let mut received = 0u64;
        loop {
            match conn.recv() {
                Ok(Packet::Publish(_)) => received += 1,
                Ok(_) => {}
                Err(_) if stop.load(Ordering::Relaxed) => return received,
                // A read timeout while publishes are still due.
                Err(_) => {}
            }
        }
    }))
}

/// redis-server's pid, from `INFO server`.
fn redis_pid(redis: &Redis) -> Result<u32> {
    let info = redis.cli(&["info", "server"]).map_err(anyhow::Error::msg)?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
        .context("redis-server's process_id")
}

/// Commands Redis has processed so far.
fn redis_commands(redis: &Redis) -> u64 {
    redis
        .cli(&["info", "stats"])
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("total_commands_processed:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// What one run of one store measured.
struct Run {
    store: &'static str,
    /// Sorted CONNECT latencies, microseconds.
    latencies: Vec<u64>,
    /// Sorted latencies of CONNECTs one at a time, microseconds.
    serial: Vec<u64>,
    connect_failures: u64,
    connect_error: Option<String>,
    connect_proxy_cpu: f64,
    connect_redis_cpu: f64,
    acked: u64,
    refused: u64,
    received: u64,
    publish_seconds: f64,
    publish_proxy_cpu: f64,
    publish_redis_cpu: f64,
    publish_redis_commands: u64,
}

/// Starts a proxy with `store0` as given and measures both.
fn run_once(
    store: &Store<'_>,
    (dir, broker, redis): (&Path, &Mosquitto, &Redis),
    (run, name): (usize, &'static str),
    token: &str,
) -> Result<Run> {
    let store_body = match name {
        "memory" => "    type: memory\n".to_owned(),
        _ => format!(
            "    type: redis\n    options:\n      url: {}\n      prefix: bench-{run}\n",
            redis.url()
        ),
    };
    let config = dir.join(format!("zilla-{run}-{name}.yaml"));
    std::fs::write(
        &config,
        store_yaml(&tenants_guards(), &store_body, broker.port()),
    )?;
    let proxy = start_zilla(store.host, &config, &[]).map_err(anyhow::Error::msg)?;
    let (port, pid, redis_pid) = (
        proxy.port("north_tcp_server"),
        proxy.pid(),
        redis_pid(redis)?,
    );

    let before = (cpu_seconds(pid), cpu_seconds(redis_pid));
    let (latencies, mut connect_failures, mut connect_error) = connects(
        port,
        token,
        (run, "c"),
        (store.connects, WARM_UP, CONCURRENCY),
    );
    let connect_proxy_cpu = cpu_seconds(pid) - before.0;
    let connect_redis_cpu = cpu_seconds(redis_pid) - before.1;
    // The same one at a time: the round trip without queueing behind others.
    let (serial, failures, error) =
        connects(port, token, (run, "s"), (serial_connects(store), 0, 1));
    connect_failures += failures;
    connect_error = connect_error.or(error);

    let topic = format!("bench/store/{run}");
    let stop = Arc::new(AtomicBool::new(false));
    let subscriber = subscribe(broker.port(), &format!("{topic}/#"), stop.clone())?;
    let before = (
        cpu_seconds(pid),
        cpu_seconds(redis_pid),
        redis_commands(redis),
        SystemTime::now(),
    );
    let published = publish(
        port,
        token,
        &format!("{topic}/0"),
        Duration::from_secs(store.duration),
    );
    let publish_seconds = before.3.elapsed().unwrap_or_default().as_secs_f64();
    let publish_proxy_cpu = cpu_seconds(pid) - before.0;
    let publish_redis_cpu = cpu_seconds(redis_pid) - before.1;
    let publish_redis_commands = redis_commands(redis).saturating_sub(before.2);
    // Let the last messages reach the subscriber.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let received = subscriber.join().unwrap_or_default();
    let (acked, refused) = published?;
    drop(proxy);
    Ok(Run {
        store: name,
        latencies,
        serial,
        connect_failures,
        connect_error,
        connect_proxy_cpu,
        connect_redis_cpu,
        acked,
        refused,
        received,
        publish_seconds,
        publish_proxy_cpu,
        publish_redis_cpu,
        publish_redis_commands,
    })
}

/// CONNECTs timed one at a time per run.
fn serial_connects(store: &Store<'_>) -> u64 {
    (store.connects / 4).max(50)
}

/// `p`-th percentile of sorted microseconds, in milliseconds.
fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank] as f64 / 1000.0
}

/// Every run of `name`'s latencies together, sorted.
fn pooled(runs: &[Run], name: &str, pick: fn(&Run) -> &Vec<u64>) -> Vec<u64> {
    let mut all: Vec<u64> = runs
        .iter()
        .filter(|r| r.store == name)
        .flat_map(|r| pick(r).iter().copied())
        .collect();
    all.sort_unstable();
    all
}

/// Sum of `value` over `name`'s runs.
fn total(runs: &[Run], name: &str, value: impl Fn(&Run) -> f64) -> f64 {
    runs.iter().filter(|r| r.store == name).map(value).sum()
}

fn tables(store: &Store<'_>, runs: &[Run]) -> String {
    let mut out = format!(
        "### Fleet-wide limits: the redis store vs the memory store\n\n\
         The same proxy (jwt guard, limits per `{{claim: tenant}}` that refuse nothing) with \
         `store0` of type `memory` or `redis`, a fresh proxy per run, alternating, {} round(s); \
         one mosquitto, one redis-server (loopback).\n\n\
         #### CONNECT latency: {} CONNECTs of one tenant per run, {CONCURRENCY} at a time \
         (CONNECT written -> CONNACK read; {WARM_UP} untimed first)\n\n\
         | run | store | CONNECTs | failures | p50 ms | p99 ms | max ms | \
         proxy CPU ms per CONNECT | redis-server CPU ms per CONNECT | \
         1 at a time ({}): p50 ms | p99 ms |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        store.rounds,
        store.connects,
        serial_connects(store)
    );
    for (index, run) in runs.iter().enumerate() {
        let n = run.latencies.len().max(1) as f64;
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.3} | {:.3} | {:.2} | {:.2} |\n",
            index + 1,
            run.store,
            run.latencies.len(),
            run.connect_failures,
            percentile_ms(&run.latencies, 50.0),
            percentile_ms(&run.latencies, 99.0),
            percentile_ms(&run.latencies, 100.0),
            run.connect_proxy_cpu * 1000.0 / n,
            run.connect_redis_cpu * 1000.0 / n,
            percentile_ms(&run.serial, 50.0),
            percentile_ms(&run.serial, 99.0),
        ));
    }
    let (memory, redis) = (
        pooled(runs, "memory", |r| &r.latencies),
        pooled(runs, "redis", |r| &r.latencies),
    );
    let serial = (
        pooled(runs, "memory", |r| &r.serial),
        pooled(runs, "redis", |r| &r.serial),
    );
    out.push_str("\n| all runs | memory | redis | redis - memory |\n|---|---:|---:|---:|\n");
    for (label, p) in [("p50 ms", 50.0), ("p99 ms", 99.0), ("max ms", 100.0)] {
        let (m, r) = (percentile_ms(&memory, p), percentile_ms(&redis, p));
        out.push_str(&format!("| {label} | {m:.2} | {r:.2} | {:+.2} |\n", r - m));
    }
    for (label, p) in [("1 at a time: p50 ms", 50.0), ("1 at a time: p99 ms", 99.0)] {
        let (m, r) = (percentile_ms(&serial.0, p), percentile_ms(&serial.1, p));
        out.push_str(&format!("| {label} | {m:.2} | {r:.2} | {:+.2} |\n", r - m));
    }
    let errors: Vec<String> = runs
        .iter()
        .filter_map(|r| {
            r.connect_error
                .as_ref()
                .map(|e| format!("{}: {e}", r.store))
        })
        .collect();
    if !errors.is_empty() {
        out.push_str(&format!(
            "\nFirst CONNECT failures: {}\n",
            errors.join("; ")
        ));
    }

    out.push_str(&format!(
        "\n#### Publish CPU: one session of the tenant, QoS 1, {PAYLOAD}-byte payloads, \
         {WINDOW} in flight, {} s per run; a QoS 0 subscriber on the broker\n\n\
         | run | store | publishes acked | refused | received | publishes/s | proxy CPU s | \
         proxy CPU s per million | redis-server CPU s per million | Redis commands |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        store.duration
    ));
    for (index, run) in runs.iter().enumerate() {
        let millions = run.acked.max(1) as f64 / 1e6;
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.3} | {} |\n",
            index + 1,
            run.store,
            run.acked,
            run.refused,
            run.received,
            run.acked as f64 / run.publish_seconds,
            run.publish_proxy_cpu,
            run.publish_proxy_cpu / millions,
            run.publish_redis_cpu / millions,
            run.publish_redis_commands,
        ));
    }
    let per_million = |name: &str, cpu: fn(&Run) -> f64| {
        total(runs, name, cpu) / (total(runs, name, |r| r.acked as f64) / 1e6)
    };
    let rate = |name: &str| {
        total(runs, name, |r| r.acked as f64) / total(runs, name, |r| r.publish_seconds)
    };
    let proxy = (
        per_million("memory", |r| r.publish_proxy_cpu),
        per_million("redis", |r| r.publish_proxy_cpu),
    );
    let redis_cpu = (
        per_million("memory", |r| r.publish_redis_cpu),
        per_million("redis", |r| r.publish_redis_cpu),
    );
    out.push_str(&format!(
        "\n| all runs | memory | redis | redis / memory |\n|---|---:|---:|---:|\n\
         | proxy CPU s per million publishes | {:.2} | {:.2} | {:.3}x |\n\
         | publishes/s | {:.0} | {:.0} | {:.3}x |\n\
         | redis-server CPU s per million publishes | {:.3} | {:.3} | |\n",
        proxy.0,
        proxy.1,
        proxy.1 / proxy.0,
        rate("memory"),
        rate("redis"),
        rate("redis") / rate("memory"),
        redis_cpu.0,
        redis_cpu.1,
    ));

    let p99 = percentile_ms(&redis, 99.0) - percentile_ms(&memory, 99.0);
    let serial_p99 = percentile_ms(&serial.1, 99.0) - percentile_ms(&serial.0, 99.0);
    let cpu = proxy.1 / proxy.0 - 1.0;
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    out.push_str(&format!(
        "\n#### Goals (issue 28)\n\n\
         - p99 CONNECT latency with redis at most 1 ms above memory, 16 at a time: \
         {:+.2} ms, {}; one at a time: {:+.2} ms, {}.\n\
         - Proxy CPU per publish with redis at most 10% above memory: {:+.1}%, {}.\n",
        p99,
        verdict(p99 <= 1.0),
        serial_p99,
        verdict(serial_p99 <= 1.0),
        cpu * 100.0,
        verdict(cpu <= 0.10),
    ));
    out
}

/// Runs the scenario; the markdown of its tables.
pub(crate) fn store(store: &Store<'_>) -> Result<String> {
    println!(
        "\n== store: memory vs redis, {} CONNECTs and {} s of publishing per run, {} round(s)",
        store.connects, store.duration, store.rounds
    );
    let dir: PathBuf = std::fs::canonicalize(store.dir)?.join("store");
    std::fs::create_dir_all(&dir)?;
    let broker = Mosquitto::start_with(MOSQUITTO_TUNING).map_err(anyhow::Error::msg)?;
    let redis = Redis::start().map_err(anyhow::Error::msg)?;
    let token = tenant_token()?;
    let mut runs = Vec::new();
    for round in 0..store.rounds {
        for name in ["memory", "redis"] {
            let index = runs.len();
            let run = run_once(store, (&dir, &broker, &redis), (index, name), &token)
                .with_context(|| format!("round {} {name}", round + 1))?;
            println!(
                "   round {}/{} {name:<6} CONNECT p50 {:.2} ms p99 {:.2} ms max {:.2} ms ({} failed); \
                 {} publishes in {:.1} s, proxy CPU {:.2} s",
                round + 1,
                store.rounds,
                percentile_ms(&run.latencies, 50.0),
                percentile_ms(&run.latencies, 99.0),
                percentile_ms(&run.latencies, 100.0),
                run.connect_failures,
                run.acked,
                run.publish_seconds,
                run.publish_proxy_cpu,
            );
            runs.push(run);
        }
    }
    Ok(tables(store, &runs))
}
