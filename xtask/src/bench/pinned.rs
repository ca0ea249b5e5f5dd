//! The `pinned` scenario of `cargo xtask bench` (issue 26): the latency
//! scenario's shape (10,000 QoS 0 messages a second, 64 B, the broker with
//! TCP_NODELAY) with the process in front pinned to core 0 and mosquitto,
//! HAProxy (when it is not the front) and the load generator pinned to
//! core 1, with `taskset` (util-linux): the p99 each front adds over direct
//! when it does not share a core with the broker or the load tool, where
//! the goal for the proxy is +50 us at most. Every pinned process
//! is given all cores back after each run.

use std::process::{Command, Stdio};

use super::paths::{words, MainPaths, Processes, Scenario, Target, LATENCY_FRONTS};
use super::report::{latency_table, Sample};

/// The core of the front process.
const FRONT_CORE: &str = "0";
/// The core of mosquitto, HAProxy and the load generator.
pub(crate) const BACK_CORE: &str = "1";

/// Whether `taskset` is installed and the machine has two cores to pin to.
pub(crate) fn available() -> bool {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let taskset = Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    cores >= 2 && taskset
}

/// The scenario, `seconds` of publishing on each path: direct, the proxy,
/// the proxy with one worker, HAProxy L4, and the baseline proxy when one
/// is given (HAProxy with the JWT check is left out: it adds little to L4).
pub(crate) fn scenario(paths: &MainPaths, seconds: u64) -> Scenario<'_> {
    Scenario {
        name: "pinned",
        targets: (paths.latency.iter())
            .filter(|t| t.name != "haproxy-jwt")
            .collect(),
        args: words(&format!("latency --rate 10000 --seconds {seconds}")),
        pinned: true,
    }
}

/// Sets the CPU affinity of every thread of `pid` (`taskset -a -p`).
fn set_affinity(pid: u32, cores: &str) {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cores, &pid.to_string()])
        .stdout(Stdio::null())
        .status();
    if !status.is_ok_and(|status| status.success()) {
        println!("   pinned: taskset could not set {pid} to cores {cores}");
    }
}

/// The processes a pinned run places: the broker with TCP_NODELAY,
/// HAProxy and the proxies in front of that broker.
fn placed(processes: &Processes) -> Vec<(&'static str, u32)> {
    (processes.0.iter())
        .filter(|(name, _)| {
            *name == "mosquitto-nodelay" || *name == "haproxy" || LATENCY_FRONTS.contains(name)
        })
        .copied()
        .collect()
}

/// Pins `target`'s front (if any) to core 0 and the broker, HAProxy and
/// the other proxies in front of the broker to core 1 (idle there).
pub(crate) fn pin(processes: &Processes, target: &Target) {
    for (name, pid) in placed(processes) {
        let core = if target.front == Some(name) {
            FRONT_CORE
        } else {
            BACK_CORE
        };
        set_affinity(pid, core);
    }
}

/// Gives every process [`pin`] placed all the machine's cores back.
pub(crate) fn unpin(processes: &Processes) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let all = format!("0-{}", cores - 1);
    for (_, pid) in placed(processes) {
        set_affinity(pid, &all);
    }
}

/// The pinned scenario's table.
pub(crate) fn tables(out: &mut String, samples: &[Sample]) {
    use std::fmt::Write as _;
    let before = out.len();
    latency_table(
        out,
        samples,
        "pinned",
        "Latency at 10,000 msg/s, QoS 0, 64 B, pinned: the front on core 0; mosquitto (TCP_NODELAY), HAProxy and the load generator on core 1",
    );
    if out.len() > before {
        let _ = writeln!(
            out,
            "`taskset -a -p -c` on every thread of the front (core 0) and of the broker and HAProxy (core 1); the load generator started with `taskset -c 1`. Goal of issue 26: the proxy adds at most 50 us of p99. Pinned processes cannot move away from other work on their core: on a machine that is not quiet (see the load average above) this table measures that work.\n"
        );
    }
}
