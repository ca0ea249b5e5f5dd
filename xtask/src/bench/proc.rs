//! What every scenario of `cargo xtask bench` uses to run and measure its
//! processes: where the load generator is, how mosquitto is tuned, CPU
//! seconds and RSS from `/proc`, and HAProxy (installed with apt when
//! missing). A shared helper and a leaf of the bench: it uses no other
//! module of it, so each of them can use it without a cycle.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::{run, which};

/// Where the bench writes its configurations and reports.
pub(crate) const BENCH_DIR: &str = "target/bench";
/// The load generator (`crates/mqtt-bench`), built in release mode.
pub(crate) const LOADGEN: &str = "target/release/mqtt-bench";

/// mosquitto for benchmarks, as users run it (Nagle on its sockets, its
/// default) with room for a QoS 1 window and no queue limit that would drop
/// messages mid-run.
pub(crate) const MOSQUITTO_TUNING: &str = "max_inflight_messages 100
max_queued_messages 1000000
max_connections -1
";

/// CPU seconds (user + system) a process has used so far.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    // utime and stime are fields 14 and 15 of the line; 12 and 13 after `)` and the state.
    stat_seconds(&format!("/proc/{pid}/stat"), 11)
}

/// The process name the load generator's CPU is sampled under.
pub(crate) const LOADGEN_CPU: &str = "mqtt-bench";

/// CPU seconds (user + system) of this process's children that have ended
/// and been waited for: around one run, the load generator's.
pub(crate) fn ended_children_cpu_seconds() -> f64 {
    // cutime and cstime, fields 16 and 17.
    stat_seconds("/proc/self/stat", 13)
}

/// Two fields of a `/proc/*/stat` line, from the `index`th after the state, in seconds.
fn stat_seconds(path: &str, index: usize) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(index) + ticks(index + 1)) / clock_ticks()
}

/// Asked once: every `getconf` run would be a child whose CPU counts as the
/// load generator's.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// HAProxy 2.6 from Debian, installed with apt-get when missing.
pub(crate) fn ensure_haproxy() -> Result<PathBuf> {
    if !which("haproxy") && which("apt-get") {
        run(
            "install haproxy",
            Command::new("apt-get").args(["install", "-y", "-qq", "haproxy"]),
        )?;
    }
    if !which("haproxy") {
        bail!("haproxy is not installed: apt-get install -y haproxy");
    }
    Ok(PathBuf::from("haproxy"))
}

/// Starts HAProxy in the foreground (`-db`) with `config` and waits until
/// it listens on `l4`.
pub(crate) fn start_haproxy(binary: &Path, config: &Path, l4: u16) -> Result<Child> {
    let child = Command::new(binary)
        .arg("-db")
        .arg("-f")
        .arg(config)
        .stdout(Stdio::null())
        .spawn()
        .context("starting haproxy")?;
    let deadline = std::time::SystemTime::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", l4)).is_err() {
        if std::time::SystemTime::now() > deadline {
            bail!("haproxy did not listen on {l4}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(child)
}

/// Starts a load generator that opens `connections` idle sessions on `port`
/// and waits until they are all open: the running generator (kill it to
/// close them), the sessions held and those that failed.
pub(crate) fn open_idle(port: u16, token: &str, connections: u64) -> Result<(Child, u64, u64)> {
    let mut child = Command::new(LOADGEN)
        .args([
            "idle",
            "--port",
            &port.to_string(),
            "--username",
            &format!("Bearer {token}"),
            "--connections",
            &connections.to_string(),
            "--hold",
            "600",
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("the load generator's stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if line.contains("\"ready\"") {
            let ready: serde_json::Value = serde_json::from_str(&line)?;
            let held = ready["ready"].as_u64().unwrap_or(0);
            let failed = ready["failures"].as_u64().unwrap_or(0);
            return Ok((child, held, failed));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!("the idle run on port {port} ended before all sessions were open")
}

/// Starts `binary` with `config`: the working tree's build with an admin
/// socket of its own (the admin scenario dumps through it), any other build
/// (a `--baseline` or `--host` from before the socket, which would refuse
/// its property) with the arguments as given.
pub(crate) fn start_zilla(
    binary: &Path,
    config: &Path,
    args: &[&str],
) -> std::result::Result<zilla_testkit::ZillaProcess, String> {
    if binary == Path::new("target/release/zilla") {
        zilla_testkit::ZillaProcess::start(binary, config, &[], args)
    } else {
        zilla_testkit::ZillaProcess::start_older(binary, config, &[], args)
    }
}
