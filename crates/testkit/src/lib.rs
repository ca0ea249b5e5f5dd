//! Test and demo helpers shared by the end-to-end tests and `cargo xtask demo`:
//! a real mosquitto on a free loopback port, the `zilla` host as a child process
//! whose output is watched, real MQTT client libraries (MQTT.js, paho-mqtt) as
//! child processes, and waiting for a condition with a deadline.

#![forbid(unsafe_code)]

pub mod browser;
pub mod clients;
pub mod http;
pub mod limits_clients;
mod mosquitto;
pub mod mqtt;
pub mod nats;
pub mod pki;
mod process;
pub mod proxy;
pub mod redis;
pub mod seed;
pub mod tenants;

pub use mosquitto::{mosquitto_path, Mosquitto, MOSQUITTO_INSTALL};
pub use nats::{nats_server_path, NatsCluster, NATS_INSTALL};
pub use process::{Output, ZillaProcess};
pub use redis::{Redis, RedisCluster, REDIS_INSTALL};

use std::net::TcpListener;
use std::time::Duration;

/// A layer-4 proxy on a free loopback port in front of the broker named by
/// `MOSQUITTO_BROKER_HOST`/`MOSQUITTO_BROKER_PORT`, with the stdout exporter.
pub const TCP_PROXY_YAML: &str = "
name: tcp-proxy
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options:
      host: ${{env.MOSQUITTO_BROKER_HOST}}
      port: ${{env.MOSQUITTO_BROKER_PORT}}
telemetry:
  exporters:
    stdout_logs_exporter:
      type: stdout
";

/// Ports the examples listen on as they are; tests that run them unchanged
/// use these, so no other test may be given one.
const EXAMPLE_PORTS: [u16; 8] = [1883, 7114, 7143, 7183, 7883, 8080, 12345, 23456];

/// A port nobody listens on right now, outside the kernel's ephemeral range
/// when the range leaves room: a port the kernel hands out for `:0` is also
/// what it picks for the next outgoing connection of any test running
/// beside, which then takes it before the caller listens (`AddrInUse`, seen
/// on a busy CI machine). Ports are picked at random so that concurrent
/// callers rarely collide; another process may still take one before the
/// caller binds it, so callers that pass it to a child process retry.
/// Within one test process a port is never handed out twice: a second test
/// given a port that the first has not bound yet would otherwise find it free
/// too, and a mosquitto that then fails to bind it would look ready to a
/// probe that reaches the other test's listener (seen in CI as a reset).
pub fn free_port() -> u16 {
    let (low, high) = ephemeral_range();
    let outside: Vec<(u16, u16)> = [
        (1024, low.saturating_sub(1)),
        (high.saturating_add(1), 65535),
    ]
    .into_iter()
    .filter(|(from, to)| from < to && to - from >= 1000)
    .collect();
    let spans: u32 = outside
        .iter()
        .map(|(from, to)| u32::from(to - from) + 1)
        .sum();
    if spans > 0 {
        for attempt in 0..200u64 {
            let mut pick = (random(attempt) % u64::from(spans)) as u32;
            let port = outside
                .iter()
                .find_map(|(from, to)| {
                    let span = u32::from(to - from) + 1;
                    if pick < span {
                        Some(from + pick as u16)
                    } else {
                        pick -= span;
                        None
                    }
                })
                .expect("within the spans");
            if !EXAMPLE_PORTS.contains(&port)
                && TcpListener::bind(("0.0.0.0", port)).is_ok()
                && first_hand_out(port)
            {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("the loopback interface accepts a listener on port 0")
}

/// Records `port` as handed out by this process; false if it already was.
fn first_hand_out(port: u16) -> bool {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    HANDED_OUT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(port)
}

/// The kernel's ephemeral port range (Linux's default when unreadable).
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut bounds = text.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((bounds.next()??, bounds.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// A random number (std's per-process random hash keys, a counter and the clock).
fn random(salt: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u64(salt);
    hasher.write_u32(std::process::id());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    hasher.write_u32(nanos);
    hasher.finish()
}

/// Polls `condition` until it returns `Some`, or fails after `timeout` with `what`.
#[expect(
    clippy::disallowed_types,
    reason = "a test helper that polls from plain threads, outside any tokio runtime"
)]
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = condition() {
            return Ok(value);
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        // Polling interval, not synchronisation: the condition decides.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Awaits `condition` until it holds (the runtime runs meanwhile), or
/// panics after `timeout` naming `what`: [`wait_for`] for async tests.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        // Polling interval, not synchronisation: the condition decides.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
