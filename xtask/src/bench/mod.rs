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
//! This module holds the settings (the command line) and the runner; the
//! rest is in modules of two kinds. Shared helpers, which use no scenario:
//! [`proc`] (CPU and RSS from /proc, HAProxy, where the load generator is),
//! [`configs`] (the proxies' and HAProxy's configurations), [`paths`] (the
//! main broker's paths, started, and [`paths::measure`]) and [`report`]
//! (samples, medians, ratios, the machine line, the shared tables).
//! Scenarios, one a module, each with its tables: [`qos`] (`qos0`, `qos1`,
//! `qos1-pipelined`, `fan-in`, `connect`, `metrics`, `validation`),
//! [`latency`], [`pinned`], [`fanout`], [`idle`] (`idle`, `idle-sharded`),
//! [`websocket`], [`tls`], [`storm`], and those on processes of their own:
//! [`mtls`], [`reauth`], [`store`], [`fleet`] (`replicas`, `fairness`).
//! [`targets`] sums issue 26's targets up from the scenarios' samples.
//! [`admin`] (run only when named) measures the admin socket's cost.
//!
//! `reauth` and `store` run only when named in `--only`, each writing a
//! report of its own (`reauth.md`, `store.md`); `replicas`, `fairness` and
//! the `mtls` scenarios run before the others (`mtls.md`; its tables are
//! also appended to `report.md`); `--only` with nothing but these runs them
//! alone. Every other scenario writes its tables to `report.md`, under the
//! Targets table.

mod admin;
mod configs;
mod fanout;
mod fleet;
mod idle;
mod latency;
mod mtls;
mod paths;
mod pinned;
mod proc;
mod qos;
mod reauth;
mod report;
mod store;
mod storm;
mod targets;
mod tls;
mod websocket;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use self::fanout::FANOUT_SCENARIOS;
use self::mtls::MTLS_SCENARIOS;
use self::paths::{measure, MainPaths, Scenario};
use self::proc::{ensure_haproxy, BENCH_DIR, MOSQUITTO_TUNING};
use self::report::{machine, write_report, Sample};
use self::tls::TLS_SCENARIOS;
use self::websocket::WEBSOCKET_SCENARIOS;
use crate::{cargo, run, token};

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
    /// Messages the fan-out publisher sends in each run (each delivered to
    /// 100 subscribers).
    fanout_messages: u64,
}

impl Settings {
    fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }

    /// Whether to run `scenario`, which `websocket` selects too when it is
    /// one of [`WEBSOCKET_SCENARIOS`], `tls` when one of [`TLS_SCENARIOS`],
    /// `mtls` when one of [`MTLS_SCENARIOS`] and `fanout` when one of
    /// [`FANOUT_SCENARIOS`].
    fn runs(&self, scenario: &str) -> bool {
        self.wants(scenario)
            || (WEBSOCKET_SCENARIOS.contains(&scenario) && self.wants("websocket"))
            || (TLS_SCENARIOS.contains(&scenario) && self.wants("tls"))
            || (MTLS_SCENARIOS.contains(&scenario) && self.wants("mtls"))
            || (FANOUT_SCENARIOS.contains(&scenario) && self.wants("fanout"))
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
                fanout_messages: 5_000,
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
                fanout_messages: 20_000,
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
                "--fanout-messages" => settings.fanout_messages = value()?,
                other => bail!(
                    "unknown bench option `{other}` (--quick, --rounds N, --idle N, --sharded-idle N, --storm N, --connects N, --reauth N, --reauth-lifetime S, --reauth-duration S, --reauth-rounds N, --store-connects N, --store-duration S, --store-rounds N, --fanout-messages N, --only a,b, --baseline ZILLA, --host ZILLA)"
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
    let dir = Path::new(BENCH_DIR);
    // Only when named: a full run takes 5 x `--reauth-duration`.
    if settings.only.iter().any(|s| s == "reauth") {
        let (sessions, lifetime, duration, rounds) = settings.reauth;
        let reauth = reauth::Reauth {
            dir,
            host: &host,
            guards: &zilla_testkit::seed::guards_yaml(),
            sessions,
            lifetime,
            duration,
            publish_interval_ms: 1_000,
            rounds,
        };
        let tables = reauth::reauth(&reauth)?;
        write_report("reauth.md", &format!("Machine: {}.\n\n{tables}", machine()))?;
        if settings.only.iter().all(|s| s == "reauth") {
            return Ok(());
        }
    }
    // Only when named: the redis store beside the memory store (issue 28).
    if settings.only.iter().any(|s| s == "store") {
        let (connects, duration, rounds) = settings.store;
        let store = store::Store {
            dir,
            host: &host,
            connects,
            duration,
            rounds,
        };
        let tables = store::store(&store)?;
        write_report("store.md", &format!("Machine: {}.\n\n{tables}", machine()))?;
        if settings.only.iter().all(|s| s == "reauth" || s == "store") {
            return Ok(());
        }
    }
    let fleet = fleet::Fleet {
        dir,
        host: &host,
        guards: &zilla_testkit::seed::guards_yaml(),
        tuning: MOSQUITTO_TUNING,
        qos0_messages: settings.qos0_messages,
        qos1_messages: settings.qos1_messages,
        fairness_seconds: (2 * settings.latency_seconds).max(6),
    };
    fleet::fleet(&fleet, |s| settings.wants(s))?;
    let fleet_only = |s: &String| fleet::FLEET_SCENARIOS.contains(&s.as_str());
    if !settings.only.is_empty() && settings.only.iter().all(fleet_only) {
        return Ok(());
    }
    let haproxy = ensure_haproxy()?;
    let mtls = mtls::Mtls {
        dir,
        host: &host,
        haproxy: &haproxy,
        connects: settings.connects,
        rounds: settings.rounds,
        revoked: 1_000,
    };
    let mtls = mtls::mtls(&mtls, |s| settings.runs(s))?
        .map(|tables| format!("Machine: {}.\n{tables}", machine()));
    if let Some(report) = &mtls {
        write_report("mtls.md", report)?;
    }
    let apart = |s: &String| fleet_only(s) || s == "mtls" || MTLS_SCENARIOS.contains(&s.as_str());
    if !settings.only.is_empty() && settings.only.iter().all(apart) {
        return Ok(());
    }
    // Room for many connections from one address; best effort (needs root).
    let _ = std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "10240 65000");

    let guards = zilla_testkit::seed::guards_yaml();
    let with_baseline = settings.baseline.is_some();
    let mut paths = MainPaths::start(dir, &host, settings.baseline.as_deref(), &guards, &haproxy)?;
    // Only when asked for: one more broker and two more proxies, and the
    // other scenarios keep running on a host without the http and ws bindings.
    let websocket = if settings.wants("websocket") {
        let ws = websocket::start(dir, &host, &guards, MOSQUITTO_TUNING)?;
        paths.processes.0.extend(ws.processes);
        Some(ws)
    } else {
        None
    };
    // Likewise one more proxy, tcp -> tls -> mqtt, in front of the same broker.
    let tls = if settings.wants("tls") || TLS_SCENARIOS.iter().any(|s| settings.wants(s)) {
        let path = tls::start_tls_path(dir, &host, &guards, paths.broker.port())?;
        paths.processes.0.push(path.process());
        Some(path)
    } else {
        None
    };
    let pinned_runs = settings.wants("pinned") && pinned::available();
    if settings.wants("pinned") && !pinned_runs {
        println!("   pinned: skipped (needs taskset and two cores)");
    }
    let token = token(&["--expires-in".to_owned(), "86400".to_owned()])?;
    let username = format!("Bearer {token}");
    let json_payload = dir.join("reading.json");
    std::fs::write(
        &json_payload,
        r#"{"id":"sensor-0042","temperature":21.5,"unit":"C","at":1764000000}"#,
    )?;
    let common = |t: &paths::Target| -> Vec<String> {
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

    let load = qos::Load {
        qos0_messages: settings.qos0_messages,
        qos1_messages: settings.qos1_messages,
        connects: settings.connects,
        json_payload: &json_payload,
    };
    let (qos0, qos1) = (settings.qos0_messages, settings.qos1_messages);
    let mut scenarios: Vec<Scenario<'_>> = qos::scenarios(&paths, &load, with_baseline);
    // After fan-in, as before the scenarios had modules of their own.
    scenarios.insert(4, latency::scenario(&paths, settings.latency_seconds));
    if let Some(websocket) = &websocket {
        scenarios.extend(websocket.scenarios(qos0, qos1));
    }
    let proxy_tls = tls.as_ref().map(tls::TlsPath::target);
    if let Some(proxy_tls) = &proxy_tls {
        let load = (qos0, qos1, settings.connects);
        scenarios.extend(tls::scenarios(&paths.proxy, proxy_tls, load));
    }
    scenarios.extend(fanout::scenarios(
        &paths,
        settings.fanout_messages,
        with_baseline,
    ));
    if pinned_runs {
        scenarios.push(pinned::scenario(&paths, settings.latency_seconds));
    }

    println!("\n== bench on {}", machine());
    // Idle sessions first, while no process has grown from earlier runs.
    println!("\n== idle sessions ({} each)", settings.idle);
    let mut idle = Vec::new();
    let idle_targets = if settings.wants("idle") {
        paths.message_targets(with_baseline)
    } else {
        Vec::new()
    };
    for target in idle_targets {
        let pid = (paths.processes)
            .pid(target.front.unwrap_or("mosquitto"))
            .context("a measured process")?;
        match idle::idle_rss(target.name, target.port, &token, pid, settings.idle) {
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
        match idle::sharded_idle(&guards, &token, settings.sharded_idle) {
            Ok(result) => sharded = Some(result),
            Err(error) => println!("   sharded idle: {error:#}"),
        }
    }
    // Other work on the machine shows in every path's CPU and tail alike.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("-").to_owned();
    let mut samples = Vec::new();
    for round in 0..settings.rounds {
        println!("\n== round {}/{}", round + 1, settings.rounds);
        for scenario in scenarios.iter().filter(|s| settings.runs(s.name)) {
            samples.extend(run_scenario(&paths.processes, scenario, round, &common));
        }
    }
    if settings.wants("storm") {
        let storm = storm::Storm {
            dir,
            host: &host,
            baseline: settings.baseline.as_deref(),
            guards: &guards,
            username: &username,
            haproxy: &haproxy,
            public_key: &paths.public_key,
            tuning: MOSQUITTO_TUNING,
            sessions: settings.storm,
            rounds: settings.rounds,
        };
        // A storm that cannot be set up costs its table, not the others.
        match storm::storm(&storm) {
            Ok(storms) => samples.extend(storms),
            Err(error) => println!("   storm: {error:#}"),
        }
    }
    if settings.only.iter().any(|s| s == admin::ADMIN_SCENARIO) {
        let admin = admin::Admin {
            paths: &paths,
            host: &host,
            token: &token,
            messages: settings.qos0_messages,
            rounds: settings.rounds,
            baseline: with_baseline,
        };
        match admin::admin(&admin, &common) {
            Ok(admin) => samples.extend(admin),
            Err(error) => println!("   admin: {error:#}"),
        }
    }
    drop(paths);

    let mut report = format!(
        "Machine: {}. Rounds: {} (median shown). Command: `cargo xtask bench`. \
         Load average (1 min) when the rounds began: {load}.\n\n",
        machine(),
        settings.rounds
    );
    targets::table(&mut report, &samples, &idle, with_baseline);
    qos::tables(&mut report, &samples);
    fanout::tables(&mut report, &samples);
    websocket::tables(&mut report, &samples);
    tls::tls_tables(&mut report, &samples);
    latency::tables(&mut report, &samples);
    pinned::tables(&mut report, &samples);
    idle::tables(&mut report, settings.idle, &idle, sharded);
    storm::tables(&mut report, &samples);
    admin::tables(&mut report, &samples);
    report.push_str(mtls.as_deref().unwrap_or_default());
    write_report("report.md", &report)
}

/// One round of `scenario`: every path once, in an order rotated by
/// `round` so that drift does not favour one path; pinned first when the
/// scenario is, and unpinned after.
fn run_scenario(
    processes: &paths::Processes,
    scenario: &Scenario<'_>,
    round: usize,
    common: &dyn Fn(&paths::Target) -> Vec<String>,
) -> Vec<Sample> {
    let n = scenario.targets.len();
    let mut samples = Vec::new();
    for offset in 0..n {
        let target = scenario.targets[(offset + round) % n];
        let mut args = scenario.args.clone();
        args.extend(common(target));
        let cpu = if scenario.pinned {
            pinned::pin(processes, target);
            Some(pinned::BACK_CORE)
        } else {
            None
        };
        samples.push(measure(processes, scenario.name, target, args, cpu));
    }
    if scenario.pinned {
        pinned::unpin(processes);
    }
    samples
}
