//! Test and demo helpers shared by the end-to-end tests and `cargo xtask demo`:
//! a real mosquitto on a free loopback port, the `zilla` host as a child process
//! whose output is watched, real MQTT client libraries (MQTT.js, paho-mqtt) as
//! child processes, and waiting for a condition with a deadline.

#![forbid(unsafe_code)]

pub mod browser;
pub mod clients;
pub mod http;
mod mosquitto;
pub mod mqtt;
pub mod nats;
pub mod pki;
mod process;
pub mod proxy;
pub mod seed;

pub use mosquitto::{mosquitto_path, Mosquitto, MOSQUITTO_INSTALL};
pub use nats::{nats_server_path, NatsCluster, NATS_INSTALL};
pub use process::{Output, ZillaProcess};

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

/// A port nobody listens on right now. Another process may take it before the
/// caller binds it, so callers that pass it to a child process retry on failure.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("the loopback interface accepts a listener on port 0")
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
