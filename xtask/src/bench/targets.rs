//! The "Targets" table at the top of `target/bench/report.md`: every
//! target of issue 26 (speed round 3) as a ratio to its anchor measured in
//! the same run, for `proxy` and, with `--baseline`, `proxy-baseline` (the
//! build before). A summary over the scenarios' samples: it reads them by
//! scenario name and uses the shared report helpers only; a target whose
//! scenario did not run says so.

use std::fmt::Write as _;

use super::report::{added_p99, cpu_per_million, front_of, metric, Sample};

/// Which way a target goes.
#[derive(Clone, Copy)]
enum Goal {
    /// The figure should be at least this.
    AtLeast(f64),
    /// The figure should be at most this.
    AtMost(f64),
}

impl Goal {
    fn met(self, value: f64) -> &'static str {
        let met = match self {
            Goal::AtLeast(goal) => value >= goal,
            Goal::AtMost(goal) => value <= goal,
        };
        if met {
            "met"
        } else {
            "missed"
        }
    }
}

/// One figure for one path: the compared value (a ratio, or us or KiB
/// where the goal is absolute) and how it was made, or why there is none.
type Figure = Result<(f64, String), &'static str>;

const NOT_RUN: &str = "not run";

/// `value / anchor` as a figure, with both shown in `unit`.
fn ratio_figure(value: f64, anchor: f64, decimals: usize, unit: &str) -> Figure {
    let ratio = value / anchor;
    if value.is_nan() && anchor.is_nan() {
        return Err(NOT_RUN);
    }
    if !ratio.is_finite() || value.is_nan() {
        return Err("failed");
    }
    Ok((
        ratio,
        format!("{ratio:.2}x ({value:.decimals$} / {anchor:.decimals$} {unit})"),
    ))
}

/// The rate of `target` in `scenario` against direct's.
fn rate_vs_direct(samples: &[Sample], scenario: &str, target: &str) -> Figure {
    let rate = |t: &str| metric(samples, scenario, t, "rate");
    ratio_figure(rate(target), rate("direct"), 0, "msg/s")
}

/// The front CPU per million of `target` in `scenario` against HAProxy L4's.
fn cpu_vs_haproxy(samples: &[Sample], scenario: &str, target: &str) -> Figure {
    let ran = |t: &str| {
        samples
            .iter()
            .any(|s| s.scenario == scenario && s.target == t)
    };
    if !ran(target) || !ran("haproxy-l4") {
        return Err(NOT_RUN);
    }
    ratio_figure(
        cpu_per_million(samples, scenario, target, front_of(target)),
        cpu_per_million(samples, scenario, "haproxy-l4", "haproxy"),
        2,
        "CPU s per 1M",
    )
}

/// The p99 `target` adds at 10k msg/s against what HAProxy L4 adds.
fn added_p99_vs_haproxy(samples: &[Sample], target: &str) -> Figure {
    let added = added_p99(samples, "latency", target);
    let haproxy = added_p99(samples, "latency", "haproxy-l4");
    if added.is_nan() {
        return Err(NOT_RUN);
    }
    if haproxy.is_nan() || haproxy <= 0.0 {
        return Err("HAProxy L4 added no p99 to compare with");
    }
    Ok((
        added / haproxy,
        format!("{:.2}x ({added:+.0} / {haproxy:+.0} us)", added / haproxy),
    ))
}

/// The p99 `target` adds at 10k msg/s, pinned, in us.
fn pinned_added_p99(samples: &[Sample], target: &str) -> Figure {
    let added = added_p99(samples, "pinned", target);
    if added.is_nan() {
        return Err(NOT_RUN);
    }
    let haproxy = added_p99(samples, "pinned", "haproxy-l4");
    let haproxy = if haproxy.is_nan() {
        "-".to_owned()
    } else {
        format!("{haproxy:+.0} us")
    };
    Ok((added, format!("{added:+.0} us (HAProxy L4 {haproxy})")))
}

/// The RSS an idle authenticated session adds to `target`'s front, in KiB.
fn idle_kib(idle: &[(&str, f64)], target: &str) -> Figure {
    let kib = |t: &str| {
        idle.iter()
            .find(|(name, _)| *name == t)
            .map(|(_, kib)| *kib)
    };
    let value = kib(target).ok_or(NOT_RUN)?;
    let mosquitto = kib("direct").map_or("-".to_owned(), |k| format!("{k:.1}"));
    Ok((value, format!("{value:.2} KiB (mosquitto {mosquitto} KiB)")))
}

/// The Targets table, for `proxy` and (`baseline`) `proxy-baseline`.
pub(crate) fn table(out: &mut String, samples: &[Sample], idle: &[(&str, f64)], baseline: bool) {
    type Measure<'s> = Box<dyn Fn(&str) -> Figure + 's>;
    let rows: Vec<(&str, &str, Goal, Measure<'_>)> = vec![
        (
            "QoS 1 throughput vs mosquitto direct (`qos1`)",
            ">= 0.95x",
            Goal::AtLeast(0.95),
            Box::new(|t| rate_vs_direct(samples, "qos1", t)),
        ),
        (
            "Proxy CPU per QoS 1 message vs HAProxy L4's (`qos1`)",
            "<= 1.00x",
            Goal::AtMost(1.0),
            Box::new(|t| cpu_vs_haproxy(samples, "qos1", t)),
        ),
        (
            "Proxy CPU per QoS 0 message vs HAProxy L4's (`qos0`)",
            "<= 1.00x",
            Goal::AtMost(1.0),
            Box::new(|t| cpu_vs_haproxy(samples, "qos0", t)),
        ),
        (
            "Proxy CPU per QoS 0 message vs HAProxy L4's, outside tool (`qos0-raw`)",
            "<= 0.80x",
            Goal::AtMost(0.8),
            Box::new(|t| cpu_vs_haproxy(samples, "qos0-raw", t)),
        ),
        (
            "QoS 1 pipelined without a window (3.1.1-style) vs direct (`qos1-pipelined`)",
            ">= 0.90x",
            Goal::AtLeast(0.9),
            Box::new(|t| rate_vs_direct(samples, "qos1-pipelined", t)),
        ),
        (
            "Fan-out 1 -> 100, QoS 0: CPU per delivery vs HAProxy L4's (`fanout-qos0`)",
            "<= 1.00x",
            Goal::AtMost(1.0),
            Box::new(|t| cpu_vs_haproxy(samples, "fanout-qos0", t)),
        ),
        (
            "Fan-out 1 -> 100, QoS 1: CPU per delivery vs HAProxy L4's (`fanout-qos1`)",
            "<= 1.00x",
            Goal::AtMost(1.0),
            Box::new(|t| cpu_vs_haproxy(samples, "fanout-qos1", t)),
        ),
        (
            "p99 added at 10k msg/s vs HAProxy L4's added p99 (`latency`)",
            "<= 1.00x",
            Goal::AtMost(1.0),
            Box::new(|t| added_p99_vs_haproxy(samples, t)),
        ),
        (
            "p99 added at 10k msg/s, front on core 0, the rest on core 1 (`pinned`)",
            "<= +50 us",
            Goal::AtMost(50.0),
            Box::new(|t| pinned_added_p99(samples, t)),
        ),
        (
            "Idle authenticated session, front RSS per session (`idle`)",
            "<= 2.0 KiB",
            Goal::AtMost(2.0),
            Box::new(|t| idle_kib(idle, t)),
        ),
    ];
    let mut paths = vec!["proxy"];
    if baseline {
        paths.push("proxy-baseline");
    }
    let _ = writeln!(
        out,
        "### Targets (issue 26), each as a ratio to its anchor in this run\n"
    );
    let _ = writeln!(out, "| target | goal | {} |", paths.join(" | "));
    let _ = writeln!(out, "|---|---|{}", "---|".repeat(paths.len()));
    for (target, goal_text, goal, measure) in &rows {
        let cells: Vec<String> = paths
            .iter()
            .map(|path| match measure(path) {
                Ok((value, shown)) => format!("{shown}: {}", goal.met(value)),
                Err(why) => why.to_owned(),
            })
            .collect();
        let _ = writeln!(out, "| {target} | {goal_text} | {} |", cells.join(" | "));
    }
    let _ = writeln!(
        out,
        "\nAnchors: mosquitto direct for throughput, HAProxy 2.6 in TCP mode (`haproxy-l4`) for CPU and added latency, both measured in this run on the same broker; `--quick` runs are one round of short runs, indicative only.\n"
    );
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::table;
    use crate::bench::report::Sample;

    fn sample(scenario: &str, target: &'static str, result: serde_json::Value) -> Sample {
        let front = match target {
            "haproxy-l4" => "haproxy",
            other => other,
        };
        Sample {
            scenario: scenario.to_owned(),
            target,
            result,
            cpu: BTreeMap::from([(front, 1.0), ("mosquitto", 2.0)]),
        }
    }

    #[test]
    fn each_target_is_a_ratio_to_its_anchor_or_says_it_did_not_run() {
        let samples = [
            sample(
                "qos1",
                "direct",
                serde_json::json!({"rate": 100.0, "received": 1e6}),
            ),
            sample(
                "qos1",
                "proxy",
                serde_json::json!({"rate": 96.0, "received": 1e6}),
            ),
            sample(
                "qos1",
                "haproxy-l4",
                serde_json::json!({"rate": 99.0, "received": 2e6}),
            ),
            sample("pinned", "direct", serde_json::json!({"p99_us": 100.0})),
            sample("pinned", "proxy", serde_json::json!({"p99_us": 170.0})),
        ];
        let mut out = String::new();
        table(&mut out, &samples, &[("proxy", 1.5)], false);
        let row = |start: &str| {
            out.lines()
                .find(|l| l.starts_with(&format!("| {start}")))
                .unwrap_or_else(|| panic!("no row `{start}` in\n{out}"))
                .to_owned()
        };
        assert!(row("QoS 1 throughput").contains("0.96x (96 / 100 msg/s): met"));
        // 1 CPU s per 1M against HAProxy's 1 s per 2M.
        assert!(row("Proxy CPU per QoS 1").contains("2.00x (1.00 / 0.50 CPU s per 1M): missed"));
        assert!(row("Proxy CPU per QoS 0").ends_with("| not run |"));
        assert!(row("p99 added at 10k msg/s, front").contains("+70 us"));
        assert!(row("p99 added at 10k msg/s, front").contains("missed"));
        assert!(row("Idle").contains("1.50 KiB (mosquitto - KiB): met"));
    }
}
