//! The admin socket's cost (issue 29), run when named (`--only admin`):
//! QoS 0 through the proxy holding idle authenticated sessions, with its
//! admin socket open and no dump attached, beside the build before the
//! socket (`--baseline`), and with `zilla dump` of one of the idle
//! sessions attached. Every dump-free session then pays one check per read
//! and write that finds no tap selecting it, which is what this measures.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::paths::{measure, MainPaths, Target};
use super::proc::open_idle;
use super::report::{cpu_per_million, metric, Sample};

/// The scenario's name in `--only` and in the samples.
pub(crate) const ADMIN_SCENARIO: &str = "admin";
/// Idle sessions held through each path while it is measured.
const IDLE: u64 = 1_000;

/// What the scenario runs with.
pub(crate) struct Admin<'a> {
    pub(crate) paths: &'a MainPaths,
    /// The host measured, whose `zilla dump` attaches.
    pub(crate) host: &'a Path,
    pub(crate) token: &'a str,
    pub(crate) messages: u64,
    pub(crate) rounds: usize,
    pub(crate) baseline: bool,
}

/// The proxy with a dump attached: its process is `proxy`'s.
fn dumping(proxy: &Target) -> Target {
    Target::tcp("proxy-dumping-1-of-1000", proxy.port, proxy.front)
}

/// Runs the rounds; the samples, scenario `admin`.
pub(crate) fn admin(
    admin: &Admin<'_>,
    common: &dyn Fn(&Target) -> Vec<String>,
) -> Result<Vec<Sample>> {
    let paths = admin.paths;
    let with_dump = dumping(&paths.proxy);
    let mut targets = vec![&paths.proxy, &with_dump];
    if admin.baseline {
        targets.push(&paths.proxy_baseline);
    }
    let mut held = Vec::new();
    for target in [&paths.proxy, &paths.proxy_baseline] {
        let (child, opened, failed) = open_idle(target.port, admin.token, IDLE)?;
        println!(
            "   admin          {:<12} {opened} idle sessions ({failed} failed)",
            target.name
        );
        held.push(child);
    }
    let args = format!("throughput --qos 0 --messages {}", admin.messages);
    let mut samples = Vec::new();
    for round in 0..admin.rounds {
        for offset in 0..targets.len() {
            let target = targets[(offset + round) % targets.len()];
            let mut run = super::paths::words(&args);
            run.extend(common(target));
            let dump = if target.name == with_dump.name {
                Some(attach(admin.host, &paths.admin_args())?)
            } else {
                None
            };
            samples.push(measure(&paths.processes, ADMIN_SCENARIO, target, run, None));
            if let Some(mut dump) = dump {
                let _ = Command::new("kill")
                    .args(["-INT", &dump.id().to_string()])
                    .status();
                let _ = dump.wait();
            }
        }
    }
    for mut child in held {
        let _ = child.kill();
        let _ = child.wait();
    }
    Ok(samples)
}

/// `zilla dump` of one idle session (its id ends in `-777`) to /dev/null,
/// once the host said it is attached.
fn attach(host: &Path, admin_args: &[String]) -> Result<std::process::Child> {
    let mut dump = Command::new(host)
        .args(["dump", "-w", "/dev/null", "--client-id", "*-777"])
        .args(admin_args)
        .stderr(Stdio::piped())
        .spawn()
        .context("running zilla dump")?;
    let stderr = dump.stderr.take().context("zilla dump's stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    match lines.next() {
        Some(Ok(line)) if line.contains("capturing") => {
            // The summary at its end is not needed; it may write it to a closed pipe.
            std::thread::spawn(move || lines.for_each(drop));
            Ok(dump)
        }
        other => bail!("zilla dump did not attach: {other:?}"),
    }
}

/// The scenario's table, when it ran.
pub(crate) fn tables(out: &mut String, samples: &[Sample]) {
    use std::fmt::Write as _;
    let rate = |target: &str| metric(samples, ADMIN_SCENARIO, target, "rate");
    let cpu = |target: &str| cpu_per_million(samples, ADMIN_SCENARIO, target, "proxy");
    let plain = cpu("proxy");
    if plain.is_nan() {
        return;
    }
    let _ = writeln!(
        out,
        "### The admin socket: QoS 0, 1 -> 1, 64 B, with {IDLE} idle sessions held\n"
    );
    let _ = writeln!(
        out,
        "| path | msg/s | proxy CPU s per 1M | vs proxy (socket open, no dump) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|");
    let baseline_cpu = cpu_per_million(samples, ADMIN_SCENARIO, "proxy-baseline", "proxy-baseline");
    let rows = [
        ("proxy", cpu("proxy")),
        ("proxy-dumping-1-of-1000", cpu("proxy-dumping-1-of-1000")),
        ("proxy-baseline", baseline_cpu),
    ];
    for (target, cpu) in rows {
        if cpu.is_nan() {
            continue;
        }
        let _ = writeln!(
            out,
            "| {target} | {:.0} | {cpu:.2} | {:.2}x |",
            rate(target),
            cpu / plain
        );
    }
    let _ = writeln!(out);
}
