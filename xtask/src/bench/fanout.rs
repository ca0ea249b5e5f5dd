//! The `fanout` scenario of `cargo xtask bench` (issue 26): one publisher,
//! 100 subscribers of its topic, each on a connection of its own through
//! the path (`mqtt-bench throughput --subscribers 100`), QoS 0
//! (`fanout-qos0`) and QoS 1 (`fanout-qos1`, window 64), on the main
//! broker's paths: direct, `proxy`, HAProxy L4 and `proxy-baseline` with
//! `--baseline`. Every message becomes 100 deliveries, one a subscriber
//! session, so the table gives the front process's CPU seconds per million
//! deliveries, beside HAProxy L4's (the goal: at most 1.0x).

use super::paths::{words, MainPaths, Scenario};
use super::report::{metric, path_table, targets_of, Sample};

/// What `--only fanout` selects.
pub(crate) const FANOUT_SCENARIOS: [&str; 2] = ["fanout-qos0", "fanout-qos1"];
/// Subscribers of the one topic.
pub(crate) const SUBSCRIBERS: u64 = 100;

/// Both scenarios, with `messages` published in each run (each delivered
/// [`SUBSCRIBERS`] times).
pub(crate) fn scenarios(paths: &MainPaths, messages: u64, baseline: bool) -> Vec<Scenario<'_>> {
    let mut targets = vec![&paths.direct, &paths.proxy, &paths.haproxy_l4];
    if baseline {
        targets.push(&paths.proxy_baseline);
    }
    let [qos0, qos1] = FANOUT_SCENARIOS;
    vec![
        Scenario {
            name: qos0,
            targets: targets.clone(),
            args: words(&format!(
                "throughput --subscribers {SUBSCRIBERS} --qos 0 --messages {messages}"
            )),
            pinned: false,
        },
        Scenario {
            name: qos1,
            targets,
            args: words(&format!(
                "throughput --subscribers {SUBSCRIBERS} --qos 1 --window 64 --messages {messages}"
            )),
            pinned: false,
        },
    ]
}

/// One table each, in deliveries per second and CPU per million deliveries.
pub(crate) fn tables(out: &mut String, samples: &[Sample]) {
    use std::fmt::Write as _;
    let [qos0, qos1] = FANOUT_SCENARIOS;
    for (scenario, title) in [
        (
            qos0,
            "Fan-out, 1 publisher -> 100 subscribers, QoS 0, 64 B (CPU per 1M deliveries)",
        ),
        (
            qos1,
            "Fan-out, 1 publisher -> 100 subscribers, QoS 1, 64 B, window 64 (CPU per 1M deliveries)",
        ),
    ] {
        let before = out.len();
        path_table(out, samples, (scenario, title, "rate", "deliveries/s"));
        if out.len() == before {
            continue;
        }
        let delivered: Vec<String> = targets_of(samples, scenario)
            .iter()
            .map(|target| {
                let received = metric(samples, scenario, target, "received");
                let expected = metric(samples, scenario, target, "sent") * SUBSCRIBERS as f64;
                format!("{target} {received:.0} of {expected:.0}")
            })
            .collect();
        let _ = writeln!(out, "Delivered (median run): {}.\n", delivered.join(", "));
    }
}
