//! The report of `cargo xtask bench`: one table a scenario, medians of the
//! rounds, ratios against direct mosquitto and HAProxy, CPU per message; for
//! the websocket scenario, each path over WebSocket against itself over TCP;
//! for the reconnect storm, the time until every session is back.

use std::collections::BTreeMap;
use std::process::Command;

/// One measured run.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub(crate) scenario: String,
    pub(crate) target: &'static str,
    pub(crate) result: serde_json::Value,
    /// CPU seconds spent during the run, by process.
    pub(crate) cpu: BTreeMap<&'static str, f64>,
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub(crate) fn metric(samples: &[Sample], scenario: &str, target: &str, key: &str) -> f64 {
    median(
        samples
            .iter()
            .filter(|s| s.scenario == scenario && s.target == target)
            .filter_map(|s| s.result[key].as_f64())
            .collect(),
    )
}

/// Median CPU seconds of `process` per million messages (or connections).
pub(crate) fn cpu_per_million(
    samples: &[Sample],
    scenario: &str,
    target: &str,
    process: &str,
) -> f64 {
    median(
        samples
            .iter()
            .filter(|s| s.scenario == scenario && s.target == target)
            .map(|s| {
                let units = s.result["received"]
                    .as_f64()
                    .or_else(|| s.result["connections"].as_f64())
                    .unwrap_or(f64::NAN);
                s.cpu.get(process).copied().unwrap_or(0.0) / units * 1e6
            })
            .collect(),
    )
}

/// `value / base` as `1.23x`, or `-` when either is missing.
pub(crate) fn ratio(value: f64, base: f64) -> String {
    let ratio = value / base;
    if ratio.is_finite() {
        format!("{ratio:.2}x")
    } else {
        "-".to_owned()
    }
}

/// The websocket scenario's tables: every path over WebSocket beside the
/// same path over TCP, all four on the scenario's own broker.
fn websocket_tables(out: &mut String, samples: &[Sample]) {
    use crate::bench::{WS_BROKER, WS_PROXY_TCP, WS_PROXY_WS};
    use std::fmt::Write as _;
    for (scenario, title) in [
        (
            "websocket-qos0",
            "MQTT over WebSocket vs TCP, QoS 0, 1 -> 1, 64 B",
        ),
        (
            "websocket-qos1",
            "MQTT over WebSocket vs TCP, QoS 1, 1 -> 1, 64 B, window 64",
        ),
    ] {
        if !samples.iter().any(|s| s.scenario == scenario) {
            continue;
        }
        let rate = |target: &str| metric(samples, scenario, target, "rate");
        let cpu = |target: &str, process: &str| cpu_per_million(samples, scenario, target, process);
        let _ = writeln!(out, "### {title}\n");
        let _ = writeln!(
            out,
            "| path | msg/s | vs the same path over TCP | vs mosquitto on the same transport | proxy CPU s per 1M | proxy CPU vs over TCP | mosquitto CPU s per 1M |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
        // (path, the same path over TCP, mosquitto on the same transport, proxy process)
        for (target, over_tcp, direct, front) in [
            ("direct", "direct", "direct", None),
            ("direct-ws", "direct", "direct-ws", None),
            ("proxy", "proxy", "direct", Some(WS_PROXY_TCP)),
            ("proxy-ws", "proxy", "direct-ws", Some(WS_PROXY_WS)),
        ] {
            let value = rate(target);
            if value.is_nan() {
                let _ = writeln!(
                    out,
                    "| {target} | failed: the path ended the load generator's connection | - | - | - | - | - |"
                );
                continue;
            }
            let (front_cpu, front_vs_tcp) = match front {
                None => ("-".to_owned(), "-".to_owned()),
                Some(front) => {
                    let spent = cpu(target, front);
                    (
                        format!("{spent:.2}"),
                        ratio(spent, cpu(over_tcp, WS_PROXY_TCP)),
                    )
                }
            };
            let _ = writeln!(
                out,
                "| {target} | {value:.0} | {} | {} | {front_cpu} | {front_vs_tcp} | {:.2} |",
                ratio(value, rate(over_tcp)),
                ratio(value, rate(direct)),
                cpu(target, WS_BROKER),
            );
        }
        let _ = writeln!(out);
    }
}

fn front_of(target: &str) -> &'static str {
    match target {
        "proxy" => "proxy",
        "proxy-json" => "proxy-json",
        "proxy-baseline" => "proxy-baseline",
        "proxy-metrics" => "proxy-metrics",
        "haproxy-l4" | "haproxy-jwt" => "haproxy",
        _ => "-",
    }
}

pub(crate) fn report(
    rounds: usize,
    idle_sessions: u64,
    samples: &[Sample],
    idle: &[(&str, f64)],
    sharded: Option<(u64, usize, f64)>,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Machine: {}. Rounds: {} (median shown). Command: `cargo xtask bench`.\n",
        machine(),
        rounds
    );
    for (scenario, title, key, unit) in [
        ("qos0", "QoS 0 throughput, 1 -> 1, 64 B", "rate", "msg/s"),
        (
            "qos1",
            "QoS 1 throughput, 1 -> 1, 64 B, window 64",
            "rate",
            "msg/s",
        ),
        (
            "qos1-pipelined",
            "QoS 1 pipelined without a window (as MQTT.js does), 1 -> 1, 64 B",
            "rate",
            "msg/s",
        ),
        (
            "fan-in",
            "Fan-in, 100 publishers -> 1 subscriber, QoS 1, 64 B",
            "rate",
            "msg/s",
        ),
        (
            "connect",
            "Connect rate (CONNECT -> CONNACK, RS256 JWT), 32 at once",
            "rate",
            "connects/s",
        ),
        (
            "validation",
            "JSON validation off (proxy) vs on (proxy-json), QoS 1, 66 B JSON",
            "rate",
            "msg/s",
        ),
        (
            "metrics",
            "QoS 0 with every metric off (proxy) vs on (proxy-metrics), 1 -> 1, 64 B",
            "rate",
            "msg/s",
        ),
    ] {
        let targets: Vec<&str> = {
            let mut names: Vec<&str> = samples
                .iter()
                .filter(|s| s.scenario == scenario)
                .map(|s| s.target)
                .collect();
            names.dedup();
            names.sort_unstable();
            names.dedup();
            names
        };
        if targets.is_empty() {
            continue;
        }
        let baseline = |name: &str| metric(samples, scenario, name, key);
        let _ = writeln!(out, "### {title}\n");
        let _ = writeln!(
            out,
            "| path | {unit} | vs direct | vs HAProxy L4 | front CPU s per 1M | front CPU vs HAProxy L4's | front CPU vs direct mosquitto's | mosquitto CPU s per 1M |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
        let haproxy_cpu = cpu_per_million(samples, scenario, "haproxy-l4", "haproxy");
        let direct_mosquitto_cpu = cpu_per_million(samples, scenario, "direct", "mosquitto");
        for target in &targets {
            let value = baseline(target);
            if value.is_nan() {
                let _ = writeln!(
                    out,
                    "| {target} | failed: the path ended the load generator's connection | - | - | - | - | - | - |"
                );
                continue;
            }
            let front = front_of(target);
            let (front_cpu, vs_haproxy, vs_mosquitto) = if front == "-" {
                ("-".to_owned(), "-".to_owned(), "-".to_owned())
            } else {
                let cpu = cpu_per_million(samples, scenario, target, front);
                (
                    format!("{cpu:.2}"),
                    ratio(cpu, haproxy_cpu),
                    ratio(cpu, direct_mosquitto_cpu),
                )
            };
            let _ = writeln!(
                out,
                "| {target} | {value:.0} | {} | {} | {front_cpu} | {vs_haproxy} | {vs_mosquitto} | {:.2} |",
                ratio(value, baseline("direct")),
                ratio(value, baseline("haproxy-l4")),
                cpu_per_million(samples, scenario, target, "mosquitto"),
            );
        }
        let _ = writeln!(out);
    }
    websocket_tables(&mut out, samples);
    crate::bench_tls::tls_tables(&mut out, samples);
    if samples.iter().any(|s| s.scenario == "latency") {
        let _ = writeln!(
            out,
            "### Latency at 10,000 msg/s, QoS 0, 64 B (broker with TCP_NODELAY)\n"
        );
        let _ = writeln!(
            out,
            "| path | p50 us | p99 us | p99.9 us | p99 added over direct us |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|");
        let direct_p99 = metric(samples, "latency", "direct", "p99_us");
        for target in ["direct", "proxy", "proxy-w1", "haproxy-l4", "haproxy-jwt"] {
            if !samples
                .iter()
                .any(|s| s.scenario == "latency" && s.target == target)
            {
                continue;
            }
            let p99 = metric(samples, "latency", target, "p99_us");
            let _ = writeln!(
                out,
                "| {target} | {:.0} | {p99:.0} | {:.0} | {:.0} |",
                metric(samples, "latency", target, "p50_us"),
                metric(samples, "latency", target, "p999_us"),
                p99 - direct_p99,
            );
        }
    }
    if !idle.is_empty() {
        let _ = writeln!(
            out,
            "\n### Idle authenticated sessions ({} at once)\n",
            idle_sessions
        );
        let _ = writeln!(
            out,
            "| path | RSS growth per session (KiB) of the front process (mosquitto for direct) |"
        );
        let _ = writeln!(out, "|---|---:|");
        for (target, kib) in idle {
            let _ = writeln!(out, "| {target} | {kib:.1} |");
        }
    }
    if let Some((held, processes, kib)) = sharded {
        let _ = writeln!(
            out,
            "\n### Idle authenticated sessions through the proxy: {held} over {processes} processes\n\n\
             RSS growth per session, summed over the processes: {kib:.1} KiB"
        );
    }
    storm_table(&mut out, samples);
    out
}

/// The reconnect storm: medians of the rounds, per path.
fn storm_table(out: &mut String, samples: &[Sample]) {
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
        crate::bench_storm::fd_note(sessions)
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

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or_default().trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), Linux {kernel}")
}
