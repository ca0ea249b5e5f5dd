//! The `storm` scenario of `cargo xtask bench`: a broker restart drops
//! `--storm N` authenticated sessions at once and they all reconnect. It
//! answers "how long until everyone is back" for mosquitto direct, through
//! our proxy (seed-style, JWT guard) and through HAProxy in plain TCP mode,
//! and what the storm costs the process in front.
//!
//! [`zilla_testkit::Mosquitto`] picks a fresh port on every start, but a
//! restart has to come back where the clients (and the proxies' configs)
//! point, so this scenario runs mosquitto itself from a config file with a
//! fixed port: SIGKILL (a crash, no goodbye to the clients), reap, start
//! again at once. For each path and round: start the load generator, let it
//! open N sessions (`mqtt-bench storm`, which prints a ready line), restart
//! the broker, read its result (first drop -> all back, per-session outage,
//! attempts), with the front process's CPU seconds over the storm and the new
//! broker's CPU seconds since its start.
//!
//! N is bounded by the open-file limit of one process: a session holds two
//! files in the proxy and in HAProxy (client and upstream sockets), one in
//! mosquitto and one in the load generator; see [`fd_note`].

use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use zilla_testkit::{free_port, mosquitto_path, wait_for, ZillaProcess};

use super::configs::{haproxy_cfg, proxy_yaml};
use super::proc::{cpu_seconds, start_haproxy, start_zilla, LOADGEN};
use super::report::{front_of, median, metric, ratio, Sample};

/// What the scenario needs from the bench.
pub(crate) struct Storm<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) host: &'a Path,
    /// Another build measured as `proxy-baseline`, when given.
    pub(crate) baseline: Option<&'a Path>,
    pub(crate) guards: &'a str,
    /// `Bearer <jwt>`.
    pub(crate) username: &'a str,
    pub(crate) haproxy: &'a Path,
    pub(crate) public_key: &'a Path,
    /// mosquitto config lines besides the listener.
    pub(crate) tuning: &'a str,
    pub(crate) sessions: u64,
    pub(crate) rounds: usize,
}

/// mosquitto on a port that stays the same over restarts.
struct Broker {
    binary: PathBuf,
    config: PathBuf,
    port: u16,
    child: Child,
}

impl Broker {
    fn start(dir: &Path, tuning: &str) -> Result<Self> {
        let binary = mosquitto_path().context("mosquitto is not installed")?;
        let port = free_port();
        let config = dir.join("storm-mosquitto.conf");
        std::fs::write(
            &config,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{tuning}"),
        )?;
        let child = Self::spawn(&binary, &config)?;
        let mut broker = Self {
            binary,
            config,
            port,
            child,
        };
        broker.wait_listening()?;
        Ok(broker)
    }

    fn spawn(binary: &Path, config: &Path) -> Result<Child> {
        Command::new(binary)
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mosquitto")
    }

    /// Until the broker accepts connections (or has exited: port taken?).
    fn wait_listening(&mut self) -> Result<()> {
        let (port, child) = (self.port, &mut self.child);
        wait_for("mosquitto to listen", Duration::from_secs(10), || {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(format!("mosquitto exited with {status}")));
            }
            std::net::TcpStream::connect(("127.0.0.1", port))
                .is_ok()
                .then_some(Ok(()))
        })
        .and_then(|started| started)
        .map_err(anyhow::Error::msg)
    }

    /// SIGKILL, reap (its sockets are closed then), start again on the port.
    fn restart(&mut self) -> Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(&self.binary, &self.config)?;
        Ok(())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The hard open-file limit of a process here (`ulimit -Hn`).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(4)?.parse().ok()
}

/// Why the storm has `sessions` and not the 20,000.
fn fd_note(sessions: u64) -> String {
    let Some(limit) = open_file_limit() else {
        return format!("{sessions} sessions (open-file limit unknown).");
    };
    format!(
        "{sessions} sessions: one process may hold {limit} open files here (`ulimit -Hn`), \
         and a session holds 2 in the proxy and in HAProxy (client + upstream socket), 1 in \
         mosquitto and 1 in the load generator. 20,000 sessions would need 40,000 in one proxy \
         or HAProxy process (and 20,000 plus listeners in mosquitto and the load generator), so \
         the largest N every path takes in one run is about {}, less some headroom \
         (HAProxy's config caps it at maxconn 9900).",
        limit.saturating_sub(100) / 2
    )
}

/// The kernel's TCP counters that tell where a storm queued: SYNs dropped
/// at a full listen queue (the client retransmits after 1 s, then 3 s) and
/// SYN retransmissions. System-wide, from `/proc/net/netstat`.
const TCP_COUNTERS: [(&str, &str); 2] = [
    ("ListenOverflows", "listen_overflows"),
    ("TCPSynRetrans", "syn_retransmits"),
];

fn tcp_counters() -> [u64; 2] {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut rows = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (rows.next(), rows.next()) else {
        return [0; 2];
    };
    TCP_COUNTERS.map(|(wanted, _)| {
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(name, _)| *name == wanted)
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(0)
    })
}

/// One path to the broker: name, port, process in front (none for direct).
type Route = (&'static str, u16, Option<(&'static str, u32)>);

/// The load generator, killed if the storm is abandoned.
struct Loadgen(Child);

impl Drop for Loadgen {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The next line that is a JSON object with `key`.
fn line_with(lines: &mut Lines<BufReader<ChildStdout>>, key: &str) -> Result<serde_json::Value> {
    for line in lines {
        let value: serde_json::Value = match serde_json::from_str(&line?) {
            Ok(value) => value,
            Err(_) => continue,
        };
        if value.get(key).is_some() {
            return Ok(value);
        }
    }
    bail!("the load generator ended without a `{key}` line")
}

/// One storm through `path`: open, restart the broker, read the result.
fn storm_once(storm: &Storm<'_>, broker: &mut Broker, path: &Route) -> Result<Sample> {
    let (name, port, front) = *path;
    broker.wait_listening()?;
    let mut child = Loadgen(
        Command::new(LOADGEN)
            .args(["storm", "--port", &port.to_string(), "--username"])
            .arg(storm.username)
            .args(["--connections", &storm.sessions.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the load generator")?,
    );
    let stdout = child
        .0
        .stdout
        .take()
        .context("the load generator's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    line_with(&mut lines, "ready")?;
    let front_before = front.map(|(_, pid)| cpu_seconds(pid)).unwrap_or(0.0);
    let counted = tcp_counters();
    broker.restart()?;
    let mut result = line_with(&mut lines, "scenario")?;
    for ((before, after), (_, key)) in counted.iter().zip(tcp_counters()).zip(TCP_COUNTERS) {
        result[key] = after.saturating_sub(*before).into();
    }
    // Read before the load generator exits and the path closes N sessions.
    let broker_cpu = cpu_seconds(broker.child.id());
    let front_cpu = match front {
        Some((_, pid)) => cpu_seconds(pid) - front_before,
        None => broker_cpu,
    };
    let _ = child.0.wait();
    let mut cpu = std::collections::BTreeMap::from([("mosquitto", broker_cpu)]);
    cpu.insert(front.map_or("mosquitto", |(process, _)| process), front_cpu);
    Ok(Sample {
        scenario: "storm".to_owned(),
        target: name,
        result,
        cpu,
    })
}

/// Runs the scenario: `rounds` storms on every path, in rotating order.
pub(crate) fn storm(storm: &Storm<'_>) -> Result<Vec<Sample>> {
    println!("\n== reconnect storm: {}", fd_note(storm.sessions));
    if open_file_limit().is_some_and(|limit| 2 * storm.sessions + 100 > limit) {
        println!("   warning: the proxy and HAProxy paths will run out of open files");
    }
    let mut broker = Broker::start(storm.dir, storm.tuning)?;
    let start_proxy = |name: &str, binary: &Path| -> Result<ZillaProcess> {
        let config = storm.dir.join(format!("storm-{name}.yaml"));
        std::fs::write(&config, proxy_yaml(storm.guards, broker.port, false))?;
        start_zilla(binary, &config, &[]).map_err(anyhow::Error::msg)
    };
    let proxy = start_proxy("proxy", storm.host)?;
    let baseline = match storm.baseline {
        Some(binary) => Some(start_proxy("proxy-baseline", binary)?),
        None => None,
    };
    let (l4, jwt) = (free_port(), free_port());
    let haproxy_config = storm.dir.join("storm-haproxy.cfg");
    std::fs::write(
        &haproxy_config,
        haproxy_cfg(
            &[(broker.port, l4, jwt)],
            &std::fs::canonicalize(storm.public_key)?,
        ),
    )?;
    let mut haproxy = start_haproxy(storm.haproxy, &haproxy_config, l4)?;
    let mut paths: Vec<Route> = vec![
        ("direct", broker.port, None),
        (
            "proxy",
            proxy.port("north_tcp_server"),
            Some(("proxy", proxy.pid())),
        ),
        ("haproxy-l4", l4, Some(("haproxy", haproxy.id()))),
    ];
    if let Some(baseline) = &baseline {
        paths.push((
            "proxy-baseline",
            baseline.port("north_tcp_server"),
            Some(("proxy-baseline", baseline.pid())),
        ));
    }
    let mut samples = Vec::new();
    for round in 0..storm.rounds {
        println!("   round {}/{}", round + 1, storm.rounds);
        for offset in 0..paths.len() {
            let path = &paths[(offset + round) % paths.len()];
            let sample = storm_once(storm, &mut broker, path).unwrap_or_else(|error| Sample {
                scenario: "storm".to_owned(),
                target: path.0,
                result: serde_json::json!({ "failed": format!("{error:#}") }),
                cpu: Default::default(),
            });
            println!("   storm          {:<14} {}", path.0, sample.result);
            samples.push(sample);
        }
    }
    let _ = haproxy.kill();
    let _ = haproxy.wait();
    Ok(samples)
}

/// The reconnect storm: medians of the rounds, per path.
pub(crate) fn tables(out: &mut String, samples: &[Sample]) {
    use std::fmt::Write as _;
    let storms: Vec<&Sample> = samples.iter().filter(|s| s.scenario == "storm").collect();
    let Some(sessions) = storms.iter().find_map(|s| s.result["sessions"].as_u64()) else {
        return;
    };
    let _ = writeln!(
        out,
        "\n### Reconnect storm: {sessions} authenticated sessions, broker killed and restarted\n\n\
         {}\n\nClients reconnect at once, then back off 10 ms doubling to 1 s with equal jitter. \
         `all back`: first drop to last CONNACK; `drops seen`: first drop to the last session \
         noticing its own; `outage`: per session, its drop to its CONNACK; `listen overflows`: \
         SYNs the kernel dropped at a full listen queue (system-wide; mosquitto listens with a \
         backlog of 100), each costing its client a 1 s (then 3 s) SYN retransmission.\n",
        fd_note(sessions)
    );
    let _ = writeln!(
        out,
        "| path | all back s | vs direct | vs HAProxy L4 | drops seen s | outage p50 s | outage p99 s | attempts | failed attempts | listen overflows | lost by | front CPU s | mosquitto CPU s |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"
    );
    let value = |target: &str, key: &str| metric(samples, "storm", target, key);
    let mut targets: Vec<&str> = storms.iter().map(|s| s.target).collect();
    targets.sort_unstable();
    targets.dedup();
    for target in targets {
        let runs: Vec<&&Sample> = storms.iter().filter(|s| s.target == target).collect();
        let cpu = |process: &str| {
            let spent = runs.iter().filter_map(|s| s.cpu.get(process).copied());
            median(spent.collect())
        };
        let all_back = value(target, "all_back_s");
        if all_back.is_nan() {
            let why = runs
                .iter()
                .find_map(|s| s.result["failed"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "not every session came back before the deadline".to_owned());
            let dashes = "| - ".repeat(11);
            let _ = writeln!(out, "| {target} | failed: {why} {dashes}|");
            continue;
        }
        let lost_by = runs
            .last()
            .and_then(|s| s.result["drops"].as_object())
            .map(|reasons| {
                let shown: Vec<String> = reasons.iter().map(|(k, v)| format!("{k} {v}")).collect();
                shown.join(", ")
            })
            .unwrap_or_default();
        let front = match front_of(target) {
            "-" => "mosquitto",
            front => front,
        };
        let _ = writeln!(
            out,
            "| {target} | {all_back:.2} | {} | {} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {lost_by} | {:.2} | {:.2} |",
            ratio(all_back, value("direct", "all_back_s")),
            ratio(all_back, value("haproxy-l4", "all_back_s")),
            value(target, "drop_spread_s"),
            value(target, "p50_s"),
            value(target, "p99_s"),
            value(target, "attempts"),
            value(target, "failed_attempts"),
            value(target, "listen_overflows"),
            cpu(front),
            cpu("mosquitto"),
        );
    }
}
