//! What every table of `cargo xtask bench` is made from: a measured run
//! ([`Sample`]), medians of the rounds, CPU per million messages, ratios,
//! which process is in front of a path, the machine line, and writing a
//! report file. A shared helper: it uses no scenario module; each scenario
//! module writes its own tables with these.

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
    median(rounds(samples, scenario, target, key))
}

/// `key` of every round of `target` in `scenario`, in run order.
fn rounds(samples: &[Sample], scenario: &str, target: &str, key: &str) -> Vec<f64> {
    samples
        .iter()
        .filter(|s| s.scenario == scenario && s.target == target)
        .filter_map(|s| s.result[key].as_f64())
        .collect()
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

/// The process in front of mosquitto on a path of the main broker, as its
/// CPU samples name it (`-` for direct).
pub(crate) fn front_of(target: &str) -> &'static str {
    match target {
        "proxy" => "proxy",
        "proxy-json" => "proxy-json",
        "proxy-baseline" => "proxy-baseline",
        "proxy-metrics" => "proxy-metrics",
        "haproxy-l4" | "haproxy-jwt" => "haproxy",
        _ => "-",
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

/// Writes `report` to `BENCH_DIR/name` and prints it.
pub(crate) fn write_report(name: &str, report: &str) -> anyhow::Result<()> {
    let path = std::path::Path::new(super::proc::BENCH_DIR).join(name);
    std::fs::write(&path, report)?;
    println!("\n{report}\n== written to {}", path.display());
    Ok(())
}

/// `value` with no decimals, or `failed` when the path did not carry the run.
pub(crate) fn shown(value: f64) -> String {
    if value.is_nan() {
        "failed".to_owned()
    } else {
        format!("{value:.0}")
    }
}

/// The names of the paths `scenario` ran on, sorted.
pub(crate) fn targets_of<'a>(samples: &'a [Sample], scenario: &str) -> Vec<&'a str> {
    let mut names: Vec<&str> = samples
        .iter()
        .filter(|s| s.scenario == scenario)
        .map(|s| s.target)
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// One scenario on the main broker's paths: `key` of each path with its
/// ratios to direct and to HAProxy L4, and the front process's CPU per
/// million (messages received, deliveries or connections) with its ratios
/// to HAProxy L4's and to direct mosquitto's.
pub(crate) fn path_table(
    out: &mut String,
    samples: &[Sample],
    (scenario, title, key, unit): (&str, &str, &str, &str),
) {
    use std::fmt::Write as _;
    let targets = targets_of(samples, scenario);
    if targets.is_empty() {
        return;
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

/// The paths of the latency tables, in their order.
const LATENCY_PATHS: [&str; 6] = [
    "direct",
    "proxy",
    "proxy-w1",
    "haproxy-l4",
    "haproxy-jwt",
    "proxy-baseline",
];

/// The p99 `target` adds over direct in `scenario`, in us.
pub(crate) fn added_p99(samples: &[Sample], scenario: &str, target: &str) -> f64 {
    metric(samples, scenario, target, "p99_us") - metric(samples, scenario, "direct", "p99_us")
}

/// The latency table of `scenario` (`latency`, `pinned`): p50, p99 and
/// p99.9 of each path, and the p99 it adds over direct, under `title`.
pub(crate) fn latency_table(out: &mut String, samples: &[Sample], scenario: &str, title: &str) {
    use std::fmt::Write as _;
    if !samples.iter().any(|s| s.scenario == scenario) {
        return;
    }
    let _ = writeln!(out, "### {title}\n");
    let _ = writeln!(
        out,
        "| path | p50 us | p99 us | p99 of each round us | p99.9 us | p99 added over direct us |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for target in LATENCY_PATHS {
        if !samples
            .iter()
            .any(|s| s.scenario == scenario && s.target == target)
        {
            continue;
        }
        let _ = writeln!(
            out,
            "| {target} | {:.0} | {:.0} | {} | {:.0} | {:.0} |",
            metric(samples, scenario, target, "p50_us"),
            metric(samples, scenario, target, "p99_us"),
            each_round(samples, scenario, target, "p99_us"),
            metric(samples, scenario, target, "p999_us"),
            added_p99(samples, scenario, target),
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "A p99 of one run moves by more between rounds than the targets' differences: the column of each round shows by how much (the p99 column is their median; of two rounds, the upper)."
    );
    let _ = writeln!(out);
}

/// Each round's `key`, as the table prints it: the spread a median hides.
fn each_round(samples: &[Sample], scenario: &str, target: &str, key: &str) -> String {
    let rounds = rounds(samples, scenario, target, key);
    let rounds: Vec<String> = rounds.iter().map(|value| format!("{value:.0}")).collect();
    rounds.join(", ")
}
