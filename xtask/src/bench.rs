//! `cargo xtask bench`: the proxy against mosquitto direct and HAProxy, in one
//! run, on loopback. One mosquitto serves every path: direct, through our
//! proxy (seed-style: JWT at CONNECT, one guarded route), through our proxy
//! with JSON validation, and through HAProxy in TCP mode (plain layer 4, and
//! parsing the MQTT CONNECT to verify the JWT with `jwt_verify`), and
//! through our proxy with every metric on (`proxy-metrics`). Each
//! scenario runs its targets in a rotating order every round so that drift
//! cancels out; the median of the rounds is reported, with the CPU seconds
//! each process spent (from /proc) per million messages.
//!
//! The `websocket` scenario (`websocket-qos0`, `websocket-qos1`) compares
//! MQTT over WebSocket with MQTT over TCP on a broker of its own, with a TCP
//! and a WebSocket listener (mosquitto's `protocol websockets`): mosquitto
//! 2.0 services its WebSocket listeners once per turn of its event loop,
//! which the other scenarios' broker should not pay for and all four of
//! these paths should. `direct` is mosquitto over TCP; `direct-ws`
//! mosquitto's own WebSocket listener, the reference for MQTT over WebSocket
//! terminated by the broker; `proxy` our proxy as in the other scenarios
//! (tcp -> mqtt); `proxy-ws` tcp -> http -> ws -> the same mqtt server, guard
//! and client. The load generator sends the JWT in the CONNECT user name on
//! both proxy paths, so both do the same JWT work, and one MQTT packet per
//! WebSocket frame, as browser clients do.
//!
//! The `tls` scenario (`tls-qos0`, `tls-qos1`, `tls-connect`) puts the proxy
//! with TLS terminated in front of its mqtt server (`proxy-tls`) beside the
//! plain-TCP `proxy`, on the same broker: see [`crate::bench_tls`].
//!
//! The `mtls` scenarios (full mutual-TLS handshakes with a CRL, through
//! the proxy and through HAProxy terminating the same TLS) run before the
//! others, on a broker, proxy and HAProxy of their own: see
//! [`crate::bench_mtls`]; `--only mtls` runs them alone.
//!
//! The `storm` scenario (a broker restart under `--storm N` sessions) runs
//! on a broker, proxies and HAProxy of its own: see [`crate::bench_storm`].
//!
//! The `reauth` scenario (issue 27: short-lived tokens refreshed by AUTH vs
//! reconnecting at expiry) runs first and only when named in `--only`, on a
//! broker and proxy of its own: see [`crate::bench_reauth`].
//!
//! The `store` scenario (issue 28: limits counted in a redis store vs the
//! memory store) runs only when named in `--only`, on a broker and Redis of
//! its own: see [`crate::bench_store`].
//!
//! The `replicas` and `fairness` scenarios run first, on brokers of their
//! own, when selected (see [`crate::bench_fleet`]); `--only` with nothing
//! else runs them alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use zilla_testkit::{Mosquitto, ZillaProcess};

use crate::bench_configs::{haproxy_cfg, proxy_ws_yaml, proxy_yaml, with_every_metric};
use crate::bench_mtls::MTLS_SCENARIOS;
use crate::bench_proc::{
    cpu_seconds, ended_children_cpu_seconds, ensure_haproxy, start_haproxy, BENCH_DIR, LOADGEN,
    LOADGEN_CPU, MOSQUITTO_TUNING,
};
use crate::bench_report::{machine, report, Sample};
use crate::bench_tls::{start_tls_path, TLS_PROXY, TLS_SCENARIOS};
use crate::{cargo, run, token};

/// The latency scenario's broker also sends without Nagle's delay, which
/// would otherwise add milliseconds to every path alike and hide what the
/// proxy itself adds (the proxy sets TCP_NODELAY on its own sockets).
const MOSQUITTO_NODELAY: &str = "set_tcp_nodelay true\n";

/// What `--only websocket` selects (both run on the same four paths).
const WEBSOCKET_SCENARIOS: [&str; 2] = ["websocket-qos0", "websocket-qos1"];
/// The request path of the WebSocket handshakes (mosquitto takes any).
const WS_PATH: &str = "/mqtt";
/// The websocket scenario's processes, as its CPU samples name them.
pub(crate) const WS_BROKER: &str = "mosquitto-ws";
pub(crate) const WS_PROXY_TCP: &str = "proxy-tcp";
pub(crate) const WS_PROXY_WS: &str = "proxy-ws";

/// One way to reach the broker.
#[derive(Debug, Clone)]
struct Target {
    name: &'static str,
    port: u16,
    /// The process in front of mosquitto (none for direct).
    front: Option<&'static str>,
    /// MQTT over WebSocket, with this request path (plain TCP when none).
    ws_path: Option<&'static str>,
}

/// The running processes whose CPU is measured, by name.
struct Processes(Vec<(&'static str, u32)>);

impl Processes {
    /// With the load generator's (the children ended so far) as [`LOADGEN_CPU`].
    fn cpu(&self) -> BTreeMap<&'static str, f64> {
        self.0
            .iter()
            .map(|(name, pid)| (*name, cpu_seconds(*pid)))
            .chain([(LOADGEN_CPU, ended_children_cpu_seconds())])
            .collect()
    }

    fn pid(&self, name: &str) -> Option<u32> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, pid)| *pid)
    }
}

fn loadgen(args: &[String]) -> Result<serde_json::Value> {
    let output = Command::new(LOADGEN)
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

fn measure(
    processes: &Processes,
    scenario: &str,
    target: &Target,
    args: Vec<String>,
) -> Result<Sample> {
    let before = processes.cpu();
    // A path that cannot carry the scenario (an older proxy that disconnects
    // a client beyond the broker's receive maximum) is reported as failed.
    let result = loadgen(&args).unwrap_or_else(|error| {
        serde_json::json!({ "failed": format!("{error:#}").lines().next().unwrap_or_default() })
    });
    let after = processes.cpu();
    let cpu = after
        .iter()
        .map(|(name, end)| (*name, end - before.get(name).copied().unwrap_or(0.0)))
        .collect();
    println!("   {scenario:<14} {:<12} {result}", target.name);
    Ok(Sample {
        scenario: scenario.to_owned(),
        target: target.name,
        result,
        cpu,
    })
}

/// The running broker and proxies of the websocket scenario, and its paths.
struct WebSocketPaths {
    // Held so that they run until the bench ends (dropping stops them).
    _broker: Mosquitto,
    _proxies: [ZillaProcess; 2],
    /// The processes to measure: the broker and both proxies.
    processes: [(&'static str, u32); 3],
    /// `direct`, `direct-ws`, `proxy`, `proxy-ws`.
    targets: [Target; 4],
}

/// Starts the websocket scenario's broker (mosquitto `tuning` plus a WebSocket
/// listener) and its two proxies, from `host`, with configurations in `dir`.
fn start_websocket_paths(
    dir: &Path,
    host: &Path,
    guards: &str,
    tuning: &str,
) -> Result<WebSocketPaths> {
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
        ZillaProcess::start(host, &config, &[], &[]).map_err(anyhow::Error::msg)
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

struct Settings {
    /// Scenarios to run (all when empty).
    only: Vec<String>,
    /// Another build of the host, measured beside this one as `proxy-baseline`
    /// (e.g. the commit before an optimisation).
    baseline: Option<PathBuf>,
    /// The build of the host measured as `proxy` (`--host`), instead of
    /// building `target/release/zilla` from the working tree.
    host: Option<PathBuf>,
    rounds: usize,
    qos0_messages: u64,
    qos1_messages: u64,
    latency_seconds: u64,
    connects: u64,
    idle: u64,
    /// Idle sessions for the sharded run (several proxy processes).
    sharded_idle: u64,
    /// Sessions dropped and reconnected in the storm scenario.
    storm: u64,
    /// The reauth scenario: sessions, token lifetime (s), seconds per run, rounds.
    reauth: (u64, u64, u64, usize),
    /// The store scenario: CONNECTs, seconds of publishing, rounds.
    store: (u64, u64, usize),
}

impl Settings {
    fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }

    /// Whether to run `scenario`, which `websocket` selects too when it is
    /// one of [`WEBSOCKET_SCENARIOS`], `tls` when one of `TLS_SCENARIOS`,
    /// and `mtls` when one of `MTLS_SCENARIOS`.
    fn runs(&self, scenario: &str) -> bool {
        self.wants(scenario)
            || (WEBSOCKET_SCENARIOS.contains(&scenario) && self.wants("websocket"))
            || (TLS_SCENARIOS.contains(&scenario) && self.wants("tls"))
            || (MTLS_SCENARIOS.contains(&scenario) && self.wants("mtls"))
    }

    fn parse(args: &[String]) -> Result<Self> {
        let quick = args.iter().any(|a| a == "--quick");
        let mut settings = if quick {
            Self {
                only: Vec::new(),
                baseline: None,
                host: None,
                rounds: 1,
                qos0_messages: 100_000,
                qos1_messages: 50_000,
                latency_seconds: 3,
                connects: 2_000,
                idle: 2_000,
                sharded_idle: 10_000,
                storm: 2_000,
                reauth: (200, 10, 40, 1),
                store: (300, 5, 1),
            }
        } else {
            Self {
                only: Vec::new(),
                baseline: None,
                host: None,
                rounds: 3,
                qos0_messages: 1_000_000,
                qos1_messages: 300_000,
                latency_seconds: 10,
                connects: 5_000,
                idle: 9_000,
                sharded_idle: 50_000,
                storm: 9_000,
                reauth: (2_000, 60, 300, 1),
                store: (2_000, 20, 3),
            }
        };
        let mut iter = args.iter();
        while let Some(flag) = iter.next() {
            let mut value = || -> Result<u64> {
                iter.next()
                    .with_context(|| format!("{flag} needs a value"))?
                    .parse()
                    .with_context(|| format!("{flag} takes a number"))
            };
            if flag == "--baseline" {
                settings.baseline = Some(iter.next().context("--baseline needs a path")?.into());
                continue;
            }
            if flag == "--host" {
                settings.host = Some(iter.next().context("--host needs a path")?.into());
                continue;
            }
            if flag == "--only" {
                let list = iter.next().context("--only needs a list")?;
                settings.only = list.split(',').map(str::to_owned).collect();
                continue;
            }
            match flag.as_str() {
                "--quick" => {}
                "--rounds" => settings.rounds = value()? as usize,
                "--idle" => settings.idle = value()?,
                "--sharded-idle" => settings.sharded_idle = value()?,
                "--storm" => settings.storm = value()?,
                "--connects" => settings.connects = value()?,
                "--reauth" => settings.reauth.0 = value()?,
                "--reauth-lifetime" => settings.reauth.1 = value()?,
                "--reauth-duration" => settings.reauth.2 = value()?,
                "--reauth-rounds" => settings.reauth.3 = value()? as usize,
                "--store-connects" => settings.store.0 = value()?,
                "--store-duration" => settings.store.1 = value()?,
                "--store-rounds" => settings.store.2 = value()? as usize,
                other => bail!(
                    "unknown bench option `{other}` (--quick, --rounds N, --idle N, --sharded-idle N, --storm N, --connects N, --reauth N, --reauth-lifetime S, --reauth-duration S, --reauth-rounds N, --store-connects N, --store-duration S, --store-rounds N, --only a,b, --baseline ZILLA, --host ZILLA)"
                ),
            }
        }
        Ok(settings)
    }
}

/// Runs every scenario and writes `target/bench/report.md`.
pub(crate) fn bench(args: &[String]) -> Result<()> {
    let settings = Settings::parse(args)?;
    // The host to measure: `--host`, or built here from the working tree.
    let packages: &[&str] = match &settings.host {
        Some(_) => &["-p", "zilla-mqtt-bench"],
        None => &["-p", "zilla", "-p", "zilla-mqtt-bench"],
    };
    run(
        "build the host and the load generator",
        cargo().args(["build", "--release"]).args(packages),
    )?;
    let host = (settings.host.clone()).unwrap_or_else(|| PathBuf::from("target/release/zilla"));
    crate::ensure_mosquitto()?;
    std::fs::create_dir_all(BENCH_DIR)?;
    // Only when named: a full run takes 5 x `--reauth-duration`.
    if settings.only.iter().any(|s| s == "reauth") {
        let (sessions, lifetime, duration, rounds) = settings.reauth;
        let reauth = crate::bench_reauth::Reauth {
            dir: Path::new(BENCH_DIR),
            host: &host,
            guards: &zilla_testkit::seed::guards_yaml(),
            sessions,
            lifetime,
            duration,
            publish_interval_ms: 1_000,
            rounds,
        };
        let report = format!(
            "Machine: {}.\n\n{}",
            machine(),
            crate::bench_reauth::reauth(&reauth)?
        );
        let path = Path::new(BENCH_DIR).join("reauth.md");
        std::fs::write(&path, &report)?;
        println!("\n{report}\n== written to {}", path.display());
        if settings.only.iter().all(|s| s == "reauth") {
            return Ok(());
        }
    }
    // Only when named: the redis store beside the memory store (issue 28).
    if settings.only.iter().any(|s| s == "store") {
        let (connects, duration, rounds) = settings.store;
        let store = crate::bench_store::Store {
            dir: Path::new(BENCH_DIR),
            host: &host,
            connects,
            duration,
            rounds,
        };
        let report = format!(
            "Machine: {}.\n\n{}",
            machine(),
            crate::bench_store::store(&store)?
        );
        let path = Path::new(BENCH_DIR).join("store.md");
        std::fs::write(&path, &report)?;
        println!("\n{report}\n== written to {}", path.display());
        if settings.only.iter().all(|s| s == "reauth" || s == "store") {
            return Ok(());
        }
    }
    let fleet = crate::bench_fleet::Fleet {
        dir: Path::new(BENCH_DIR),
        host: &host,
        guards: &zilla_testkit::seed::guards_yaml(),
        tuning: MOSQUITTO_TUNING,
        qos0_messages: settings.qos0_messages,
        qos1_messages: settings.qos1_messages,
        fairness_seconds: (2 * settings.latency_seconds).max(6),
    };
    crate::bench_fleet::fleet(&fleet, |s| settings.wants(s))?;
    let fleet_only = |s: &String| crate::bench_fleet::FLEET_SCENARIOS.contains(&s.as_str());
    if !settings.only.is_empty() && settings.only.iter().all(fleet_only) {
        return Ok(());
    }
    let haproxy = ensure_haproxy()?;
    let mtls = crate::bench_mtls::Mtls {
        dir: Path::new(BENCH_DIR),
        host: &host,
        haproxy: &haproxy,
        connects: settings.connects,
        rounds: settings.rounds,
        revoked: 1_000,
    };
    let mtls = crate::bench_mtls::mtls(&mtls, |s| settings.runs(s))?
        .map(|tables| format!("Machine: {}.\n{tables}", machine()));
    if let Some(report) = &mtls {
        let path = Path::new(BENCH_DIR).join("mtls.md");
        std::fs::write(&path, report)?;
        println!("\n{report}\n== written to {}", path.display());
    }
    let apart = |s: &String| fleet_only(s) || s == "mtls" || MTLS_SCENARIOS.contains(&s.as_str());
    if !settings.only.is_empty() && settings.only.iter().all(apart) {
        return Ok(());
    }
    // Room for many connections from one address; best effort (needs root).
    let _ = std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "10240 65000");
    std::fs::create_dir_all(BENCH_DIR)?;
    let dir = Path::new(BENCH_DIR);

    let broker = Mosquitto::start_with(MOSQUITTO_TUNING).map_err(anyhow::Error::msg)?;
    let nodelay_broker = Mosquitto::start_with(&format!("{MOSQUITTO_TUNING}{MOSQUITTO_NODELAY}"))
        .map_err(anyhow::Error::msg)?;
    let guards = zilla_testkit::seed::guards_yaml();
    let mut proxies = Vec::new();
    let baseline = settings.baseline.clone().unwrap_or_else(|| host.clone());
    // `proxy-latency-w1` is the latency path with one worker thread
    // (`zilla start -w 1`): on a machine where the brokers, the proxies and
    // the load generator share the cores, whether the proxy's two workers
    // hand wake-ups to each other shows in the latency tail.
    for (name, binary, broker, validation, metrics) in [
        ("proxy", &host, &broker, false, false),
        ("proxy-json", &host, &broker, true, false),
        ("proxy-latency", &host, &nodelay_broker, false, false),
        ("proxy-baseline", &baseline, &broker, false, false),
        ("proxy-metrics", &host, &broker, false, true),
        ("proxy-latency-w1", &host, &nodelay_broker, false, false),
    ] {
        let workers: &[&str] = if name.ends_with("-w1") {
            &["-w", "1"]
        } else {
            &[]
        };
        let config = dir.join(format!("{name}.yaml"));
        let mut yaml = proxy_yaml(&guards, broker.port(), validation);
        if metrics {
            yaml = with_every_metric(&yaml, zilla_testkit::free_port());
        }
        std::fs::write(&config, yaml)?;
        let process =
            ZillaProcess::start(binary, &config, &[], workers).map_err(anyhow::Error::msg)?;
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
    let mut haproxy_process = start_haproxy(&haproxy, &haproxy_config, l4)?;

    let mut processes = Processes(vec![
        ("mosquitto", broker.pid()),
        ("mosquitto-nodelay", nodelay_broker.pid()),
        ("proxy", proxies[0].pid()),
        ("proxy-json", proxies[1].pid()),
        ("proxy-latency", proxies[2].pid()),
        ("proxy-baseline", proxies[3].pid()),
        ("proxy-metrics", proxies[4].pid()),
        ("proxy-latency-w1", proxies[5].pid()),
        ("haproxy", haproxy_process.id()),
    ]);
    // Only when asked for: one more broker and two more proxies, and the
    // other scenarios keep running on a host without the http and ws bindings.
    let websocket = if settings.wants("websocket") {
        let paths = start_websocket_paths(dir, &host, &guards, MOSQUITTO_TUNING)?;
        processes.0.extend(paths.processes);
        Some(paths)
    } else {
        None
    };
    // Likewise one more proxy, tcp -> tls -> mqtt, in front of the same broker.
    let tls = if settings.wants("tls") || TLS_SCENARIOS.iter().any(|s| settings.wants(s)) {
        let path = start_tls_path(dir, &host, &guards, broker.port())?;
        processes.0.push(path.process());
        Some(path)
    } else {
        None
    };
    let direct = Target {
        name: "direct",
        port: broker.port(),
        front: None,
        ws_path: None,
    };
    let proxy = Target {
        name: "proxy",
        port: proxies[0].port("north_tcp_server"),
        front: Some("proxy"),
        ws_path: None,
    };
    let proxy_json = Target {
        name: "proxy-json",
        port: proxies[1].port("north_tcp_server"),
        front: Some("proxy-json"),
        ws_path: None,
    };
    let proxy_metrics = Target {
        name: "proxy-metrics",
        port: proxies[4].port("north_tcp_server"),
        front: Some("proxy-metrics"),
        ws_path: None,
    };
    let haproxy_l4 = Target {
        name: "haproxy-l4",
        port: l4,
        front: Some("haproxy"),
        ws_path: None,
    };
    let haproxy_jwt = Target {
        name: "haproxy-jwt",
        port: jwt,
        front: Some("haproxy"),
        ws_path: None,
    };
    let token = token(&["--expires-in".to_owned(), "86400".to_owned()])?;
    let username = format!("Bearer {token}");
    let json_payload = dir.join("reading.json");
    std::fs::write(
        &json_payload,
        r#"{"id":"sensor-0042","temperature":21.5,"unit":"C","at":1764000000}"#,
    )?;

    let common = |t: &Target| -> Vec<String> {
        let mut args = vec![
            "--port".into(),
            t.port.to_string(),
            "--username".into(),
            username.clone(),
        ];
        if let Some(path) = t.ws_path {
            args.extend(["--ws-path".into(), path.into()]);
        }
        if let Some(tls) = &tls {
            args.extend(tls.client_args(t.front));
        }
        args
    };
    let proxy_baseline = Target {
        name: "proxy-baseline",
        port: proxies[3].port("north_tcp_server"),
        front: Some("proxy-baseline"),
        ws_path: None,
    };
    let mut message_targets = vec![&direct, &proxy, &haproxy_l4, &haproxy_jwt];
    if settings.baseline.is_some() {
        message_targets.push(&proxy_baseline);
    }
    let latency_targets = [
        Target {
            port: nodelay_broker.port(),
            ..direct.clone()
        },
        Target {
            port: proxies[2].port("north_tcp_server"),
            front: Some("proxy-latency"),
            ..proxy.clone()
        },
        Target {
            name: "proxy-w1",
            port: proxies[5].port("north_tcp_server"),
            front: Some("proxy-latency-w1"),
            ws_path: None,
        },
        Target {
            port: l4_nodelay,
            ..haproxy_l4.clone()
        },
        Target {
            port: jwt_nodelay,
            ..haproxy_jwt.clone()
        },
    ];
    type Scenario<'a> = (&'static str, Vec<&'a Target>, Vec<String>);
    let words =
        |text: String| -> Vec<String> { text.split_whitespace().map(str::to_owned).collect() };
    let (qos0, qos1) = (settings.qos0_messages, settings.qos1_messages);
    let mut scenarios: Vec<Scenario<'_>> = vec![
        (
            "qos0",
            message_targets.to_vec(),
            words(format!("throughput --qos 0 --messages {qos0}")),
        ),
        (
            "qos1",
            message_targets.to_vec(),
            words(format!("throughput --qos 1 --window 64 --messages {qos1}")),
        ),
        (
            "qos1-pipelined",
            message_targets.to_vec(),
            words(format!(
                "throughput --qos 1 --window 65535 --ignore-receive-maximum --messages {qos1}"
            )),
        ),
        (
            "fan-in",
            message_targets.to_vec(),
            words(format!(
                "throughput --publishers 100 --qos 1 --window 16 --messages {qos1}"
            )),
        ),
        (
            "latency",
            latency_targets.iter().collect(),
            words(format!(
                "latency --rate 10000 --seconds {}",
                settings.latency_seconds
            )),
        ),
        (
            "connect",
            message_targets.to_vec(),
            words(format!("connect --connections {}", settings.connects)),
        ),
        (
            "metrics",
            vec![&proxy, &proxy_metrics],
            words(format!("throughput --qos 0 --messages {qos0}")),
        ),
        (
            "validation",
            vec![&proxy, &proxy_json],
            words(format!(
                "throughput --qos 1 --window 64 --messages {qos1} --payload-file {}",
                json_payload.display()
            )),
        ),
    ];
    if let Some(websocket) = &websocket {
        let [qos0_scenario, qos1_scenario] = WEBSOCKET_SCENARIOS;
        scenarios.extend([
            (
                qos0_scenario,
                websocket.targets.iter().collect(),
                words(format!("throughput --qos 0 --messages {qos0}")),
            ),
            (
                qos1_scenario,
                websocket.targets.iter().collect(),
                words(format!("throughput --qos 1 --window 64 --messages {qos1}")),
            ),
        ]);
    }
    let proxy_tls = tls.as_ref().map(|path| Target {
        name: TLS_PROXY,
        port: path.port(),
        front: Some(TLS_PROXY),
        ws_path: None,
    });
    if let Some(proxy_tls) = &proxy_tls {
        let [qos0_scenario, qos1_scenario, connect_scenario] = TLS_SCENARIOS;
        let paths = vec![&proxy, proxy_tls];
        scenarios.extend([
            (
                qos0_scenario,
                paths.clone(),
                words(format!("throughput --qos 0 --messages {qos0}")),
            ),
            (
                qos1_scenario,
                paths.clone(),
                words(format!("throughput --qos 1 --window 64 --messages {qos1}")),
            ),
            (
                connect_scenario,
                paths,
                words(format!("connect --connections {}", settings.connects)),
            ),
        ]);
    }

    println!("\n== bench on {}", machine());
    // Idle sessions first, while no process has grown from earlier runs.
    println!("\n== idle sessions ({} each)", settings.idle);
    let mut idle = Vec::new();
    let idle_targets = if settings.wants("idle") {
        message_targets.clone()
    } else {
        Vec::new()
    };
    for target in idle_targets {
        let pid = match target.front {
            Some(front) => processes.pid(front),
            None => processes.pid("mosquitto"),
        }
        .context("a measured process")?;
        match crate::bench_idle::idle_rss(target.name, target.port, &token, pid, settings.idle) {
            Ok(per_connection) => idle.push((target.name, per_connection)),
            Err(error) => println!("   idle {}: {error:#}", target.name),
        }
    }
    let mut sharded = None;
    if settings.wants("idle-sharded") {
        println!(
            "\n== idle sessions through the proxy, {} over several processes",
            settings.sharded_idle
        );
        match crate::bench_idle::sharded_idle(&guards, &token, settings.sharded_idle) {
            Ok(result) => sharded = Some(result),
            Err(error) => println!("   sharded idle: {error:#}"),
        }
    }
    let mut samples = Vec::new();
    for round in 0..settings.rounds {
        println!("\n== round {}/{}", round + 1, settings.rounds);
        for (scenario, targets, args) in scenarios.iter().filter(|s| settings.runs(s.0)) {
            // Rotate the order every round so drift does not favour one path.
            let n = targets.len();
            for offset in 0..n {
                let target = targets[(offset + round) % n];
                let mut full = args.clone();
                full.extend(common(target));
                samples.push(measure(&processes, scenario, target, full)?);
            }
        }
    }
    if settings.wants("storm") {
        let storm = crate::bench_storm::Storm {
            dir,
            host: &host,
            baseline: settings.baseline.as_deref(),
            guards: &guards,
            username: &username,
            haproxy: &haproxy,
            public_key: &public_key,
            tuning: MOSQUITTO_TUNING,
            sessions: settings.storm,
            rounds: settings.rounds,
        };
        // A storm that cannot be set up costs its table, not the others.
        match crate::bench_storm::storm(&storm) {
            Ok(storms) => samples.extend(storms),
            Err(error) => println!("   storm: {error:#}"),
        }
    }
    let _ = haproxy_process.kill();
    let _ = haproxy_process.wait();

    let mut report = report(settings.rounds, settings.idle, &samples, &idle, sharded);
    report.push_str(mtls.as_deref().unwrap_or_default());
    let path = dir.join("report.md");
    std::fs::write(&path, &report)?;
    println!("\n{report}\n== written to {}", path.display());
    Ok(())
}
