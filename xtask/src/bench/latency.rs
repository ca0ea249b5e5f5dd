//! The `latency` scenario of `cargo xtask bench`: one publisher paced at
//! 10,000 QoS 0 messages a second and one subscriber, on the broker with
//! TCP_NODELAY, directly and through each front (`proxy`, `proxy-w1` with
//! one worker thread, HAProxy L4 and JWT, `proxy-baseline` with
//! `--baseline`): p50, p99 and p99.9 of publish -> delivery, and the p99
//! each front adds over direct.

use super::paths::{words, MainPaths, Scenario};
use super::report::{latency_table, Sample};

/// The scenario, `seconds` of publishing on each path.
pub(crate) fn scenario(paths: &MainPaths, seconds: u64) -> Scenario<'_> {
    Scenario {
        name: "latency",
        targets: paths.latency.iter().collect(),
        args: words(&format!("latency --rate 10000 --seconds {seconds}")),
        pinned: false,
    }
}

/// The latency scenario's table.
pub(crate) fn tables(out: &mut String, samples: &[Sample]) {
    latency_table(
        out,
        samples,
        "latency",
        "Latency at 10,000 msg/s, QoS 0, 64 B (broker with TCP_NODELAY)",
    );
}
