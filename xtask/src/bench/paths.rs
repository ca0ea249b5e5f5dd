//! The paths to the bench's main broker, and running the load generator
//! over one of them: the brokers (one as users run it, one with
//! TCP_NODELAY for latency), our proxies in front of them (seed-style; with
//! JSON validation; with every metric; with one worker; the `--baseline`
//! build), HAProxy in TCP mode (plain layer 4, and checking the JWT), and
//! [`measure`], which runs `mqtt-bench` once and samples every measured
//! process's CPU seconds around it. A shared helper: it uses no scenario
//! module; the scenarios choose among its [`Target`]s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};
use zilla_testkit::{Mosquitto, ZillaProcess};

use super::configs::{haproxy_cfg, proxy_yaml, with_every_metric};
use super::proc::{
    cpu_seconds, ended_children_cpu_seconds, start_haproxy, start_zilla, LOADGEN, LOADGEN_CPU,
    MOSQUITTO_TUNING,
};
use super::report::Sample;
use crate::run;

/// The latency scenario's broker also sends without Nagle's delay, which
/// would otherwise add milliseconds to every path alike and hide what the
/// proxy itself adds (the proxy sets TCP_NODELAY on its own sockets).
const MOSQUITTO_NODELAY: &str = "set_tcp_nodelay true\n";

/// One way to reach the broker.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) name: &'static str,
    pub(crate) port: u16,
    /// The process in front of mosquitto (none for direct).
    pub(crate) front: Option<&'static str>,
    /// MQTT over WebSocket, with this request path (plain TCP when none).
    pub(crate) ws_path: Option<&'static str>,
}

impl Target {
    pub(crate) fn tcp(name: &'static str, port: u16, front: Option<&'static str>) -> Self {
        Self {
            name,
            port,
            front,
            ws_path: None,
        }
    }
}

/// One scenario of the rounds: the paths it runs on and the load
/// generator's arguments (the path's own are added per run).
pub(crate) struct Scenario<'a> {
    pub(crate) name: &'static str,
    pub(crate) targets: Vec<&'a Target>,
    pub(crate) args: Vec<String>,
    /// Run with the front process on core 0 and the broker, HAProxy and the
    /// load generator on core 1 (`taskset`).
    pub(crate) pinned: bool,
}

/// The words of `text`, as arguments.
pub(crate) fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// The running processes whose CPU is measured, by name.
pub(crate) struct Processes(pub(crate) Vec<(&'static str, u32)>);

impl Processes {
    /// With the load generator's (the children ended so far) as [`LOADGEN_CPU`].
    fn cpu(&self) -> BTreeMap<&'static str, f64> {
        self.0
            .iter()
            .map(|(name, pid)| (*name, cpu_seconds(*pid)))
            .chain([(LOADGEN_CPU, ended_children_cpu_seconds())])
            .collect()
    }

    pub(crate) fn pid(&self, name: &str) -> Option<u32> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, pid)| *pid)
    }
}

/// The first argument that picks the outside load tool instead of
/// mqtt-bench: raw 3.1.1 publishers in Python (`xtask/scripts/raw-qos0.py`).
pub(crate) const RAW_QOS0: &str = "raw-qos0";
const RAW_QOS0_SCRIPT: &str = "xtask/scripts/raw-qos0.py";

/// Runs the load generator once (on core `cpu` when given) and returns
/// the JSON line it printed last.
fn loadgen(args: &[String], cpu: Option<&str>) -> Result<serde_json::Value> {
    let (program, args): (&[&str], &[String]) = match args.split_first() {
        Some((first, rest)) if first == RAW_QOS0 => (&["python3", RAW_QOS0_SCRIPT], rest),
        _ => (&[LOADGEN], args),
    };
    let mut command = match cpu {
        Some(cpu) => {
            let mut command = Command::new("taskset");
            command.args(["-c", cpu]).args(program);
            command
        }
        None => {
            let mut command = Command::new(program[0]);
            command.args(&program[1..]);
            command
        }
    };
    let output = command
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .context("running the load generator")?;
    if !output.status.success() {
        bail!("mqtt-bench {args:?} failed ({})", output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("mqtt-bench printed `{last}`"))
}

/// Runs the load generator once on `target` (on core `cpu` when given)
/// and samples every process's CPU seconds around the run.
pub(crate) fn measure(
    processes: &Processes,
    scenario: &str,
    target: &Target,
    args: Vec<String>,
    cpu: Option<&str>,
) -> Sample {
    let before = processes.cpu();
    // A path that cannot carry the scenario (an older proxy that disconnects
    // a client beyond the broker's receive maximum) is reported as failed.
    let result = loadgen(&args, cpu).unwrap_or_else(|error| {
        serde_json::json!({ "failed": format!("{error:#}").lines().next().unwrap_or_default() })
    });
    let after = processes.cpu();
    let cpu = after
        .iter()
        .map(|(name, end)| (*name, end - before.get(name).copied().unwrap_or(0.0)))
        .collect();
    println!("   {scenario:<14} {:<12} {result}", target.name);
    Sample {
        scenario: scenario.to_owned(),
        target: target.name,
        result,
        cpu,
    }
}

/// The main broker's paths, running: dropping this stops them.
pub(crate) struct MainPaths {
    pub(crate) broker: Mosquitto,
    // Held so that they run until the bench ends.
    _nodelay_broker: Mosquitto,
    proxies: Vec<ZillaProcess>,
    haproxy: Child,
    /// The seed's public key (PEM), as HAProxy's `jwt_verify` reads it.
    pub(crate) public_key: PathBuf,
    pub(crate) processes: Processes,
    pub(crate) direct: Target,
    pub(crate) proxy: Target,
    pub(crate) proxy_json: Target,
    pub(crate) proxy_metrics: Target,
    pub(crate) proxy_baseline: Target,
    pub(crate) haproxy_l4: Target,
    pub(crate) haproxy_jwt: Target,
    /// `direct`, `proxy`, `proxy-w1`, `haproxy-l4`, `haproxy-jwt` (and
    /// `proxy-baseline` with a baseline), on the broker with TCP_NODELAY.
    pub(crate) latency: Vec<Target>,
}

impl Drop for MainPaths {
    fn drop(&mut self) {
        let _ = self.haproxy.kill();
        let _ = self.haproxy.wait();
    }
}

/// The processes in front of the broker with TCP_NODELAY, as their CPU
/// samples name them.
pub(crate) const LATENCY_FRONTS: [&str; 3] = [
    "proxy-latency",
    "proxy-latency-w1",
    "proxy-latency-baseline",
];

impl MainPaths {
    /// Starts both brokers, the proxies from `host` (and `baseline`, which
    /// is `host` when none is given, so that its path runs either way) and
    /// HAProxy, with configurations in `dir`.
    pub(crate) fn start(
        dir: &Path,
        host: &Path,
        baseline: Option<&Path>,
        guards: &str,
        haproxy: &Path,
    ) -> Result<Self> {
        let broker = Mosquitto::start_with(MOSQUITTO_TUNING).map_err(anyhow::Error::msg)?;
        let nodelay_broker =
            Mosquitto::start_with(&format!("{MOSQUITTO_TUNING}{MOSQUITTO_NODELAY}"))
                .map_err(anyhow::Error::msg)?;
        let baseline_host = baseline.unwrap_or(host);
        let mut proxies = Vec::new();
        // `proxy-latency-w1` is the latency path with one worker thread
        // (`zilla start -w 1`): on a machine where the brokers, the proxies
        // and the load generator share the cores, whether the proxy's two
        // workers hand wake-ups to each other shows in the latency tail.
        let mut started = vec![
            ("proxy", host, &broker, false, false),
            ("proxy-json", host, &broker, true, false),
            ("proxy-latency", host, &nodelay_broker, false, false),
            ("proxy-baseline", baseline_host, &broker, false, false),
            ("proxy-metrics", host, &broker, false, true),
            ("proxy-latency-w1", host, &nodelay_broker, false, false),
        ];
        if baseline.is_some() {
            started.push((
                "proxy-latency-baseline",
                baseline_host,
                &nodelay_broker,
                false,
                false,
            ));
        }
        let mut processes = Processes(vec![
            ("mosquitto", broker.pid()),
            ("mosquitto-nodelay", nodelay_broker.pid()),
        ]);
        for (name, binary, broker, validation, metrics) in started {
            let workers: &[&str] = if name.ends_with("-w1") {
                &["-w", "1"]
            } else {
                &[]
            };
            let config = dir.join(format!("{name}.yaml"));
            let mut yaml = proxy_yaml(guards, broker.port(), validation);
            if metrics {
                yaml = with_every_metric(&yaml, zilla_testkit::free_port());
            }
            std::fs::write(&config, yaml)?;
            let process = start_zilla(binary, &config, workers).map_err(anyhow::Error::msg)?;
            processes.0.push((name, process.pid()));
            proxies.push(process);
        }
        let public_key = dir.join("seed-public.pem");
        run(
            "derive the seed's public key",
            Command::new("openssl").args([
                "rsa",
                "-in",
                "examples/mqtt.proxy.jwt/private.pem",
                "-pubout",
                "-out",
                &public_key.display().to_string(),
            ]),
        )?;
        let (l4, jwt) = (zilla_testkit::free_port(), zilla_testkit::free_port());
        let (l4_nodelay, jwt_nodelay) = (zilla_testkit::free_port(), zilla_testkit::free_port());
        let haproxy_config = dir.join("haproxy.cfg");
        std::fs::write(
            &haproxy_config,
            haproxy_cfg(
                &[
                    (broker.port(), l4, jwt),
                    (nodelay_broker.port(), l4_nodelay, jwt_nodelay),
                ],
                &std::fs::canonicalize(&public_key)?,
            ),
        )?;
        let haproxy = start_haproxy(haproxy, &haproxy_config, l4)?;
        processes.0.push(("haproxy", haproxy.id()));
        let port = |index: usize| proxies[index].port("north_tcp_server");
        let direct = Target::tcp("direct", broker.port(), None);
        let proxy = Target::tcp("proxy", port(0), Some("proxy"));
        let haproxy_l4 = Target::tcp("haproxy-l4", l4, Some("haproxy"));
        let haproxy_jwt = Target::tcp("haproxy-jwt", jwt, Some("haproxy"));
        let mut latency = vec![
            Target::tcp("direct", nodelay_broker.port(), None),
            Target::tcp("proxy", port(2), Some(LATENCY_FRONTS[0])),
            Target::tcp("proxy-w1", port(5), Some(LATENCY_FRONTS[1])),
            Target::tcp("haproxy-l4", l4_nodelay, Some("haproxy")),
            Target::tcp("haproxy-jwt", jwt_nodelay, Some("haproxy")),
        ];
        if baseline.is_some() {
            latency.push(Target::tcp(
                "proxy-baseline",
                port(6),
                Some(LATENCY_FRONTS[2]),
            ));
        }
        Ok(Self {
            proxy_json: Target::tcp("proxy-json", port(1), Some("proxy-json")),
            proxy_baseline: Target::tcp("proxy-baseline", port(3), Some("proxy-baseline")),
            proxy_metrics: Target::tcp("proxy-metrics", port(4), Some("proxy-metrics")),
            broker,
            _nodelay_broker: nodelay_broker,
            proxies,
            haproxy,
            public_key,
            processes,
            direct,
            proxy,
            haproxy_l4,
            haproxy_jwt,
            latency,
        })
    }

    /// The `-P` arguments that reach `proxy`'s admin socket.
    pub(crate) fn admin_args(&self) -> Vec<String> {
        self.proxies[0].admin_args()
    }

    /// The paths of the message scenarios: direct, proxy, HAProxy L4 and
    /// JWT, and the baseline proxy when one is given.
    pub(crate) fn message_targets(&self, baseline: bool) -> Vec<&Target> {
        let mut targets = vec![
            &self.direct,
            &self.proxy,
            &self.haproxy_l4,
            &self.haproxy_jwt,
        ];
        if baseline {
            targets.push(&self.proxy_baseline);
        }
        targets
    }
}
