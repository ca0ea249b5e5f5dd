//! The `websocket` scenario of `cargo xtask bench` (`websocket-qos0`,
//! `websocket-qos1`): MQTT over WebSocket beside MQTT over TCP, on a broker
//! of its own with a TCP and a WebSocket listener (mosquitto's `protocol
//! websockets`): mosquitto 2.0 services its WebSocket listeners once per
//! turn of its event loop, which the other scenarios' broker should not pay
//! for and all four of these paths should. `direct` is mosquitto over TCP;
//! `direct-ws` mosquitto's own WebSocket listener, the reference for MQTT
//! over WebSocket terminated by the broker; `proxy` our proxy as in the
//! other scenarios (tcp -> mqtt); `proxy-ws` tcp -> http -> ws -> the same
//! mqtt server, guard and client. The load generator sends the JWT in the
//! CONNECT user name on both proxy paths, so both do the same JWT work, and
//! one MQTT packet per WebSocket frame, as browser clients do.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use zilla_testkit::{Mosquitto, ZillaProcess};

use super::configs::{proxy_ws_yaml, proxy_yaml};
use super::paths::{words, Scenario, Target};
use super::proc::start_zilla;
use super::report::{cpu_per_million, metric, ratio, Sample};

/// What `--only websocket` selects (both run on the same four paths).
pub(crate) const WEBSOCKET_SCENARIOS: [&str; 2] = ["websocket-qos0", "websocket-qos1"];
/// The request path of the WebSocket handshakes (mosquitto takes any).
const WS_PATH: &str = "/mqtt";
/// The websocket scenario's processes, as its CPU samples name them.
const WS_BROKER: &str = "mosquitto-ws";
const WS_PROXY_TCP: &str = "proxy-tcp";
const WS_PROXY_WS: &str = "proxy-ws";

/// The running broker and proxies of the websocket scenario, and its paths.
pub(crate) struct WebSocketPaths {
    // Held so that they run until the bench ends (dropping stops them).
    _broker: Mosquitto,
    _proxies: [ZillaProcess; 2],
    /// The processes to measure: the broker and both proxies.
    pub(crate) processes: [(&'static str, u32); 3],
    /// `direct`, `direct-ws`, `proxy`, `proxy-ws`.
    targets: [Target; 4],
}

/// Starts the websocket scenario's broker (mosquitto `tuning` plus a WebSocket
/// listener) and its two proxies, from `host`, with configurations in `dir`.
pub(crate) fn start(dir: &Path, host: &Path, guards: &str, tuning: &str) -> Result<WebSocketPaths> {
    let ws_port = zilla_testkit::free_port();
    let broker = Mosquitto::start_with(&format!(
        "{tuning}listener {ws_port} 127.0.0.1\nprotocol websockets\n"
    ))
    .map_err(anyhow::Error::msg)?;
    // The broker was waited for on its TCP listener only.
    zilla_testkit::wait_for(
        "mosquitto's WebSocket listener",
        Duration::from_secs(10),
        || std::net::TcpStream::connect(("127.0.0.1", ws_port)).ok(),
    )
    .map_err(anyhow::Error::msg)?;
    let start_proxy = |name: &str, yaml: String| -> Result<ZillaProcess> {
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(&config, yaml)?;
        start_zilla(host, &config, &[]).map_err(anyhow::Error::msg)
    };
    let tcp = start_proxy(WS_PROXY_TCP, proxy_yaml(guards, broker.port(), false))?;
    let ws = start_proxy(WS_PROXY_WS, proxy_ws_yaml(guards, broker.port()))?;
    let targets = [
        Target {
            name: "direct",
            port: broker.port(),
            front: None,
            ws_path: None,
        },
        Target {
            name: "direct-ws",
            port: ws_port,
            front: None,
            ws_path: Some(WS_PATH),
        },
        Target {
            name: "proxy",
            port: tcp.port("north_tcp_server"),
            front: Some(WS_PROXY_TCP),
            ws_path: None,
        },
        Target {
            name: "proxy-ws",
            port: ws.port("north_tcp_server"),
            front: Some(WS_PROXY_WS),
            ws_path: Some(WS_PATH),
        },
    ];
    Ok(WebSocketPaths {
        processes: [
            (WS_BROKER, broker.pid()),
            (WS_PROXY_TCP, tcp.pid()),
            (WS_PROXY_WS, ws.pid()),
        ],
        _broker: broker,
        _proxies: [tcp, ws],
        targets,
    })
}

impl WebSocketPaths {
    /// Both scenarios on the four paths.
    pub(crate) fn scenarios(&self, qos0: u64, qos1: u64) -> Vec<Scenario<'_>> {
        let [qos0_scenario, qos1_scenario] = WEBSOCKET_SCENARIOS;
        vec![
            Scenario {
                name: qos0_scenario,
                targets: self.targets.iter().collect(),
                args: words(&format!("throughput --qos 0 --messages {qos0}")),
                pinned: false,
            },
            Scenario {
                name: qos1_scenario,
                targets: self.targets.iter().collect(),
                args: words(&format!("throughput --qos 1 --window 64 --messages {qos1}")),
                pinned: false,
            },
        ]
    }
}

/// The websocket scenario's tables: every path over WebSocket beside the
/// same path over TCP, all four on the scenario's own broker.
pub(crate) fn tables(out: &mut String, samples: &[Sample]) {
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
