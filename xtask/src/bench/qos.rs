//! The main message scenarios of `cargo xtask bench`, on the main broker's
//! paths (direct, `proxy`, HAProxy L4 and JWT, `proxy-baseline` with
//! `--baseline`): QoS 0 and QoS 1 throughput, QoS 1 pipelined without a
//! window, fan-in, the connect rate, and on the proxy alone with every
//! metric on (`metrics`) and with JSON validation (`validation`). Each table
//! gives the rate beside direct and HAProxy L4, and the front process's CPU
//! per million messages beside HAProxy L4's and direct mosquitto's.

use std::path::Path;

use super::paths::{words, MainPaths, Scenario, RAW_QOS0};
use super::report::{path_table, Sample};

/// How much each scenario sends.
pub(crate) struct Load<'a> {
    pub(crate) qos0_messages: u64,
    pub(crate) qos1_messages: u64,
    pub(crate) connects: u64,
    /// The JSON payload of the validation scenario.
    pub(crate) json_payload: &'a Path,
}

/// The scenarios, in the order each round runs them.
pub(crate) fn scenarios<'a>(
    paths: &'a MainPaths,
    load: &Load<'_>,
    baseline: bool,
) -> Vec<Scenario<'a>> {
    let targets = paths.message_targets(baseline);
    let (qos0, qos1) = (load.qos0_messages, load.qos1_messages);
    let scenario = |name, targets: Vec<_>, args: String| Scenario {
        name,
        targets,
        args: words(&args),
        pinned: false,
    };
    vec![
        scenario(
            "qos0",
            targets.clone(),
            format!("throughput --qos 0 --messages {qos0}"),
        ),
        // The same load from an outside tool: another shape (4 publishers
        // sending pre-built frames in large writes).
        scenario(
            "qos0-raw",
            targets.clone(),
            format!("{RAW_QOS0} --publishers 4 --messages {qos0}"),
        ),
        scenario(
            "qos1",
            targets.clone(),
            format!("throughput --qos 1 --window 64 --messages {qos1}"),
        ),
        scenario(
            "qos1-pipelined",
            targets.clone(),
            format!("throughput --qos 1 --window 65535 --ignore-receive-maximum --messages {qos1}"),
        ),
        scenario(
            "fan-in",
            targets.clone(),
            format!("throughput --publishers 100 --qos 1 --window 16 --messages {qos1}"),
        ),
        scenario(
            "connect",
            targets,
            format!("connect --connections {}", load.connects),
        ),
        scenario(
            "metrics",
            vec![&paths.proxy, &paths.proxy_metrics],
            format!("throughput --qos 0 --messages {qos0}"),
        ),
        scenario(
            "validation",
            vec![&paths.proxy, &paths.proxy_json],
            format!(
                "throughput --qos 1 --window 64 --messages {qos1} --payload-file {}",
                load.json_payload.display()
            ),
        ),
    ]
}

/// One table a scenario that ran.
pub(crate) fn tables(out: &mut String, samples: &[Sample]) {
    for table in [
        ("qos0", "QoS 0 throughput, 1 -> 1, 64 B", "rate", "msg/s"),
        (
            "qos0-raw",
            "QoS 0 from an outside tool: 4 raw 3.1.1 publishers (xtask/scripts/raw-qos0.py) -> 1, 64 B",
            "rate",
            "msg/s",
        ),
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
        path_table(out, samples, table);
    }
}
