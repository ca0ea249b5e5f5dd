//! The `reauth` scenario of `cargo xtask bench` (issue 27): sessions with
//! short-lived tokens through the proxy, refreshing them in the session with
//! MQTT 5 AUTH 0x19 (`auth`) vs letting the proxy end each session at the
//! token's `exp` (DISCONNECT 0xA0) and reconnecting with a new one
//! (`reconnect`), side by side in one run against the same proxy build and
//! mosquitto. Two shapes: expiries `staggered` evenly over one lifetime (a
//! steady churn) and a `herd` (every token issued at once, all expiring
//! together). A `no-expiry` run (tokens outliving the run) gives the CPU of
//! the same publishing without any churn.
//!
//! Measured per run: connections mosquitto accepted (its log, with
//! `connection_messages true`; less the counting subscriber's), the proxy's
//! and mosquitto's CPU seconds (`/proc`), the load generator's, and from
//! `mqtt-bench reauth` the delivery delay of every QoS 1 message (due ->
//! received by a subscriber on the broker) and the messages lost.
//!
//! A scenario: it uses only the shared helpers [`super::proc`] and
//! [`super::configs`]; only the runner ([`crate::bench`]) uses it, calling
//! [`reauth`].

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use zilla_testkit::{Mosquitto, ZillaProcess};

use super::configs::proxy_yaml;
use super::proc::{
    cpu_seconds, ended_children_cpu_seconds, start_zilla, LOADGEN, MOSQUITTO_TUNING,
};

/// What the scenario needs from the bench.
pub(crate) struct Reauth<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) host: &'a Path,
    pub(crate) guards: &'a str,
    pub(crate) sessions: u64,
    /// Seconds a token is valid.
    pub(crate) lifetime: u64,
    /// Seconds the sessions publish, per run.
    pub(crate) duration: u64,
    /// Milliseconds between one session's publishes.
    pub(crate) publish_interval_ms: u64,
    pub(crate) rounds: usize,
}

/// The seed's mqtt server with the Authentication Method `jwt` beside the
/// `Bearer` user name (docs/configuration.md, "Enhanced authentication and
/// re-authentication").
pub(crate) fn reauth_yaml(guards: &str, broker: u16) -> String {
    const CONNECT: &str = "              username: Bearer {credentials}\n";
    let yaml = proxy_yaml(guards, broker, false);
    assert!(yaml.contains(CONNECT), "proxy_yaml names a connect pattern");
    yaml.replacen(
        CONNECT,
        &format!("{CONNECT}            authentication:\n              method: jwt\n"),
        1,
    )
}

/// "New client connected" lines in mosquitto's log so far.
fn accepted(log: &Path) -> u64 {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("New client connected"))
        .count() as u64
}

/// One run of the load generator; its JSON with the processes' numbers added.
fn run_once(
    reauth: &Reauth<'_>,
    (broker, proxy): (&Mosquitto, &ZillaProcess),
    log: &Path,
    (mode, shape, lifetime): (&str, &str, u64),
) -> Result<serde_json::Value> {
    let (proxy_pid, broker_pid) = (proxy.pid(), broker.pid());
    let before = (
        accepted(log),
        cpu_seconds(proxy_pid),
        cpu_seconds(broker_pid),
        ended_children_cpu_seconds(),
    );
    let output = Command::new(LOADGEN)
        .args([
            "reauth",
            "--port",
            &proxy.port("north_tcp_server").to_string(),
        ])
        .args(["--broker-port", &broker.port().to_string()])
        .args(["--mode", mode, "--shape", shape])
        .args(["--sessions", &reauth.sessions.to_string()])
        .args(["--token-lifetime", &lifetime.to_string()])
        .args(["--duration", &reauth.duration.to_string()])
        .args([
            "--publish-interval-ms",
            &reauth.publish_interval_ms.to_string(),
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("running the load generator")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut result: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .with_context(|| format!("no result from the load generator: {stdout}"))?;
    // Let mosquitto write its log lines for the last connections.
    std::thread::sleep(std::time::Duration::from_millis(500));
    result["broker_accepted"] = accepted(log).saturating_sub(before.0 + 1).into();
    result["proxy_cpu_s"] = (cpu_seconds(proxy_pid) - before.1).into();
    result["mosquitto_cpu_s"] = (cpu_seconds(broker_pid) - before.2).into();
    result["loadgen_cpu_s"] = (ended_children_cpu_seconds() - before.3).into();
    Ok(result)
}

/// The runs of one round: per shape, both modes in rotating order; then the
/// run without expiry.
fn plan(round: usize, lifetime: u64, duration: u64) -> Vec<(&'static str, &'static str, u64)> {
    let mut runs = Vec::new();
    for shape in ["staggered", "herd"] {
        let modes = if round % 2 == 0 {
            ["auth", "reconnect"]
        } else {
            ["reconnect", "auth"]
        };
        runs.extend(modes.map(|mode| (mode, shape, lifetime)));
    }
    runs.push(("auth", "herd", 10 * (duration + 60)));
    runs
}

fn name(run: &serde_json::Value) -> String {
    if run["auth_ok"] == 0 && run["expired_0xa0"] == 0 && run["mode"] == "auth" {
        return "no-expiry".to_owned();
    }
    format!(
        "{} {}",
        run["shape"].as_str().unwrap_or("?"),
        run["mode"].as_str().unwrap_or("?")
    )
}

fn f(value: &serde_json::Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

/// The table of every run, and the reconnect/auth ratios per shape and round.
fn table(reauth: &Reauth<'_>, runs: &[serde_json::Value]) -> String {
    let mut out = format!(
        "### Re-authentication by AUTH vs reconnecting at expiry: {} sessions, {} s tokens, {} s, \
         one QoS 1 publish per session every {} ms\n\n\
         | run | broker accepted | CONNACKs | AUTH ok | 0xA0 | proxy CPU s | mosquitto CPU s | \
         load generator CPU s | due | lost | never acked | republished | delay p50 ms | \
         p99 ms | max ms | over 100 ms | over 1 s | steady p99 ms | steady max ms | steady over 100 ms |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        reauth.sessions, reauth.lifetime, reauth.duration, reauth.publish_interval_ms
    );
    for run in runs {
        if let Some(error) = run.get("failed") {
            out.push_str(&format!("| {} | failed: {error} |\n", run["run"]));
            continue;
        }
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {:.1} | {:.1} | {:.0} | {} | {} | {:.1} | {:.0} | {} |\n",
            name(run),
            run["broker_accepted"],
            run["connects"],
            run["auth_ok"],
            run["expired_0xa0"],
            f(&run["proxy_cpu_s"]),
            f(&run["mosquitto_cpu_s"]),
            f(&run["loadgen_cpu_s"]),
            run["due"],
            run["lost"],
            run["never_acked"],
            run["republished"],
            f(&run["delay_p50_ms"]),
            f(&run["delay_p99_ms"]),
            f(&run["delay_max_ms"]),
            run["delayed_over_100ms"],
            run["delayed_over_1s"],
            f(&run["steady_delay_p99_ms"]),
            f(&run["steady_delay_max_ms"]),
            run["steady_delayed_over_100ms"],
        ));
    }
    let baseline = runs
        .iter()
        .filter(|r| name(r) == "no-expiry")
        .map(|r| f(&r["proxy_cpu_s"]))
        .fold(f64::NAN, |a, b| if a.is_nan() { b } else { a.min(b) });
    out.push_str(
        "\n| shape | broker accepted reconnect/auth | proxy CPU reconnect/auth | \
         proxy CPU above no-expiry reconnect/auth | steady delay p99 reconnect/auth | \
         steady delayed over 100 ms (reconnect / auth) |\n|---|---:|---:|---:|---:|---|\n",
    );
    for shape in ["staggered", "herd"] {
        let pick = |mode: &str| {
            runs.iter()
                .filter(|r| name(r) == format!("{shape} {mode}"))
                .collect::<Vec<_>>()
        };
        for (a, r) in pick("auth").iter().zip(pick("reconnect")) {
            let ratio = |key: &str| f(&r[key]) / f(&a[key]);
            let above = (f(&r["proxy_cpu_s"]) - baseline) / (f(&a["proxy_cpu_s"]) - baseline);
            out.push_str(&format!(
                "| {shape} | {:.1}x | {:.2}x | {:.1}x | {:.1}x | {} / {} |\n",
                ratio("broker_accepted"),
                ratio("proxy_cpu_s"),
                above,
                ratio("steady_delay_p99_ms"),
                r["steady_delayed_over_100ms"],
                a["steady_delayed_over_100ms"],
            ));
        }
    }
    out
}

/// Runs the scenario; the markdown of its tables.
pub(crate) fn reauth(reauth: &Reauth<'_>) -> Result<String> {
    println!(
        "\n== reauth: {} sessions, {} s tokens, {} s per run, AUTH vs reconnect",
        reauth.sessions, reauth.lifetime, reauth.duration
    );
    let dir: PathBuf = std::fs::canonicalize(reauth.dir)?.join("reauth");
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("mosquitto.log");
    std::fs::write(&log, "")?;
    // mosquitto started as root writes as its own user.
    let _ = Command::new("chmod")
        .args(["a+rwx", &dir.display().to_string()])
        .status();
    let _ = Command::new("chmod")
        .args(["a+rw", &log.display().to_string()])
        .status();
    let broker = Mosquitto::start_with(&format!(
        "{MOSQUITTO_TUNING}connection_messages true\nlog_dest file {}\nlog_type notice\n",
        log.display()
    ))
    .map_err(anyhow::Error::msg)?;
    let config = dir.join("zilla.yaml");
    std::fs::write(&config, reauth_yaml(reauth.guards, broker.port()))?;
    let proxy = start_zilla(reauth.host, &config, &[]).map_err(anyhow::Error::msg)?;
    let mut runs = Vec::new();
    for round in 0..reauth.rounds {
        println!("   round {}/{}", round + 1, reauth.rounds);
        for (mode, shape, lifetime) in plan(round, reauth.lifetime, reauth.duration) {
            let run = run_once(reauth, (&broker, &proxy), &log, (mode, shape, lifetime))
                .unwrap_or_else(|error| {
                    serde_json::json!({
                        "run": format!("{shape} {mode}"),
                        "failed": format!("{error:#}"),
                    })
                });
            println!("   reauth {shape:<9} {mode:<9} {run}");
            runs.push(run);
        }
    }
    let out = table(reauth, &runs);
    std::fs::write(dir.join("runs.json"), serde_json::to_string_pretty(&runs)?)?;
    Ok(out)
}
