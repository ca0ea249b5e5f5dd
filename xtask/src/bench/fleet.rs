//! The fleet scenarios of `cargo xtask bench`, each on a mosquitto of its own:
//!
//! - `replicas`: one, two and three proxy processes side by side (each the
//!   bench's `proxy_yaml` on its own port, all in front of one mosquitto),
//!   with as many load generators running at once, one per replica, each with
//!   its share of the messages; beside them the same generators straight to
//!   mosquitto. Reports the aggregate rate and the proxies' CPU per message.
//! - `fairness` (issue 19): one proxy with a per-tenant publish limit
//!   (`{claim: tenant}`, `publishes: {rate: R, burst: R}`); tenant `b`
//!   publishes QoS 1 within its quota while tenant `a` is idle, then while
//!   `a` floods at ten times its quota. Reports `b`'s rate and latency in
//!   both phases and `a`'s accepted rate against R.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use zilla_testkit::{Mosquitto, ZillaProcess};

use super::configs::proxy_yaml;
use super::proc::{cpu_seconds, start_zilla, LOADGEN};

/// What `--only` selects here.
pub(crate) const FLEET_SCENARIOS: [&str; 2] = ["replicas", "fairness"];
/// The most proxy processes the replicas scenario runs side by side.
const MAX_REPLICAS: usize = 3;
/// Each tenant's publish quota in the fairness scenario (messages/s, and burst).
const QUOTA: u64 = 2_000;
/// What tenant `a` offers: ten times its quota.
const FLOOD: u64 = 10 * QUOTA;
/// What tenant `b` publishes, within its quota.
const WITHIN: u64 = 1_500;

/// What the fleet scenarios are told by the bench's settings.
pub(crate) struct Fleet<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) host: &'a Path,
    pub(crate) guards: &'a str,
    pub(crate) tuning: &'a str,
    pub(crate) qos0_messages: u64,
    pub(crate) qos1_messages: u64,
    /// Seconds tenant `b` publishes in each fairness phase.
    pub(crate) fairness_seconds: u64,
}

/// Load generators running at once; their last JSON lines, in order.
fn loadgens(runs: Vec<Vec<String>>) -> Result<Vec<serde_json::Value>> {
    let children = runs
        .iter()
        .map(|args| {
            Command::new(LOADGEN)
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .context("starting the load generator")
        })
        .collect::<Result<Vec<_>>>()?;
    children
        .into_iter()
        .zip(&runs)
        .map(|(child, args)| {
            let output = child.wait_with_output()?;
            if !output.status.success() {
                bail!("mqtt-bench {args:?} failed ({})", output.status);
            }
            let text = String::from_utf8_lossy(&output.stdout);
            let last = text.lines().last().unwrap_or_default();
            serde_json::from_str(last).with_context(|| format!("mqtt-bench printed `{last}`"))
        })
        .collect()
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

fn target(port: u16, token: &str) -> Vec<String> {
    vec![
        "--port".into(),
        port.to_string(),
        "--username".into(),
        format!("Bearer {token}"),
    ]
}

fn start_proxy(fleet: &Fleet<'_>, name: &str, yaml: String) -> Result<ZillaProcess> {
    let config = fleet.dir.join(format!("{name}.yaml"));
    std::fs::write(&config, yaml)?;
    start_zilla(fleet.host, &config, &[]).map_err(anyhow::Error::msg)
}

fn ratio(value: f64, base: f64) -> String {
    if value.is_finite() && base.is_finite() && base > 0.0 {
        format!("{:.2}x", value / base)
    } else {
        "-".into()
    }
}

fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return "-".into();
    }
    let digits = format!("{:.0}", value);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One measured row of the replicas scenario.
struct ReplicaRow {
    path: &'static str,
    replicas: usize,
    rate: f64,
    proxy_cpu_per_million: Option<f64>,
    broker_cpu_per_million: f64,
}

/// The `replicas` scenario: its markdown tables.
fn replicas(fleet: &Fleet<'_>, token: &str) -> Result<String> {
    let broker = Mosquitto::start_with(fleet.tuning).map_err(anyhow::Error::msg)?;
    let proxies = (0..MAX_REPLICAS)
        .map(|i| {
            start_proxy(
                fleet,
                &format!("proxy-replica-{i}"),
                proxy_yaml(fleet.guards, broker.port(), false),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let mut out = String::new();
    let scenarios = [
        (
            "QoS 0, 1 -> 1 per generator, 64 B",
            "throughput --qos 0",
            fleet.qos0_messages,
        ),
        (
            "QoS 1, 1 -> 1 per generator, 64 B, window 64",
            "throughput --qos 1 --window 64",
            fleet.qos1_messages,
        ),
    ];
    for (title, args, messages) in scenarios {
        println!("\n== replicas: {title}");
        let mut rows = Vec::new();
        for replicas in 1..=MAX_REPLICAS {
            for path in ["direct", "proxy"] {
                let share = messages / replicas as u64;
                let runs = (0..replicas)
                    .map(|i| {
                        let port = match path {
                            "direct" => broker.port(),
                            _ => proxies[i].port("north_tcp_server"),
                        };
                        let mut run = words(&format!("{args} --messages {share}"));
                        run.extend(target(port, token));
                        run
                    })
                    .collect();
                let pids: Vec<u32> = proxies[..replicas].iter().map(|p| p.pid()).collect();
                let proxy_cpu = || pids.iter().map(|pid| cpu_seconds(*pid)).sum::<f64>();
                let (proxy_before, broker_before) = (proxy_cpu(), cpu_seconds(broker.pid()));
                let results = loadgens(runs)?;
                let (proxy_spent, broker_spent) = (
                    proxy_cpu() - proxy_before,
                    cpu_seconds(broker.pid()) - broker_before,
                );
                let received: f64 = results.iter().filter_map(|r| r["received"].as_f64()).sum();
                let seconds = results
                    .iter()
                    .filter_map(|r| r["seconds"].as_f64())
                    .fold(0.0, f64::max);
                let row = ReplicaRow {
                    path,
                    replicas,
                    rate: received / seconds,
                    proxy_cpu_per_million: (path == "proxy").then(|| proxy_spent / received * 1e6),
                    broker_cpu_per_million: broker_spent / received * 1e6,
                };
                println!(
                    "   {path:<7} x{replicas}: {received} messages in {seconds:.2} s = {:.0}/s, proxy CPU {proxy_spent:.2} s, mosquitto CPU {broker_spent:.2} s",
                    row.rate
                );
                rows.push(row);
            }
        }
        out.push_str(&format!(
            "\n### {title}\n\n| path | replicas (generators) | msg/s in all | vs 1 replica | vs direct, same generators | proxy CPU s per 1M msgs (all replicas) | mosquitto CPU s per 1M |\n|---|---:|---:|---:|---:|---:|---:|\n"
        ));
        let find = |path: &str, n: usize| {
            rows.iter()
                .find(|r| r.path == path && r.replicas == n)
                .map_or(f64::NAN, |r| r.rate)
        };
        for row in &rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {:.2} |\n",
                row.path,
                row.replicas,
                thousands(row.rate),
                ratio(row.rate, find(row.path, 1)),
                ratio(row.rate, find("direct", row.replicas)),
                row.proxy_cpu_per_million
                    .map_or("-".into(), |c| format!("{c:.2}")),
                row.broker_cpu_per_million,
            ));
        }
    }
    Ok(out)
}

/// [`proxy_yaml`] with the guard's `tenant` attribute and a per-tenant
/// publish limit of `quota` messages per second (burst the same).
pub(crate) fn fairness_yaml(guards: &str, broker: u16, quota: u64) -> String {
    let guards = format!("{}      attributes:\n        tenant: tenant\n", guards);
    proxy_yaml(&guards, broker, false).replacen(
        "    kind: server\n    options:\n      authorization:",
        &format!(
            "    kind: server\n    options:\n      limits:\n        - key: {{claim: tenant}}\n          publishes: {{rate: {quota}, burst: {quota}}}\n      authorization:"
        ),
        1,
    )
}

/// The `fairness` scenario: its markdown tables.
fn fairness(fleet: &Fleet<'_>) -> Result<String> {
    let broker = Mosquitto::start_with(fleet.tuning).map_err(anyhow::Error::msg)?;
    let yaml = fairness_yaml(fleet.guards, broker.port(), QUOTA);
    if !yaml.contains("limits:") {
        bail!("the fairness configuration has no limits");
    }
    let proxy = start_proxy(fleet, "proxy-fairness", yaml)?;
    let port = proxy.port("north_tcp_server");
    let tenant =
        |name: &str| crate::token(&words(&format!("--expires-in 86400 --claim tenant={name}")));
    let (a, b) = (tenant("a")?, tenant("b")?);
    let seconds = fleet.fairness_seconds;
    let b_run = || {
        let mut run = words(&format!(
            "latency --qos 1 --rate {WITHIN} --seconds {seconds}"
        ));
        run.extend(target(port, &b));
        run
    };
    let mut phases: Vec<(&str, serde_json::Value, f64)> = Vec::new();
    let mut flood = serde_json::Value::Null;
    for phase in ["a idle", "a flooding", "a idle again"] {
        let before = cpu_seconds(proxy.pid());
        let b_result = if phase == "a flooding" {
            // a starts first and ends after b, so b publishes under the flood.
            let mut a_run = words(&format!(
                "throughput --qos 1 --rate {FLOOD} --seconds {} --refusals-ok",
                seconds + 4
            ));
            a_run.extend(target(port, &a));
            let a_child = std::thread::spawn(move || loadgens(vec![a_run]));
            std::thread::sleep(Duration::from_secs(2));
            let b_result = loadgens(vec![b_run()]);
            let a_result = a_child
                .join()
                .map_err(|_| anyhow::anyhow!("the flood's thread panicked"))??;
            flood = a_result.into_iter().next().unwrap_or_default();
            println!("   fairness a flooding: {flood}");
            b_result?
        } else {
            loadgens(vec![b_run()])?
        };
        let b_result = b_result.into_iter().next().unwrap_or_default();
        let cpu = cpu_seconds(proxy.pid()) - before;
        println!("   fairness b, {phase}: {b_result} (proxy CPU {cpu:.2} s)");
        phases.push((phase, b_result, cpu));
    }
    let metric = |v: &serde_json::Value, key: &str| v[key].as_f64().unwrap_or(f64::NAN);
    let idle = &phases[0].1;
    let mut out = format!(
        "\n### Tenant b (QoS 1, {WITHIN} msg/s offered, quota {QUOTA}/s) with tenant a idle and flooding\n\n| phase | b msg/s | vs a idle | b p50 us | b p99 us | p99 vs a idle | b p99.9 us | proxy CPU s in the phase |\n|---|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for (phase, result, cpu) in &phases {
        out.push_str(&format!(
            "| {phase} | {} | {} | {:.0} | {:.0} | {} | {:.0} | {cpu:.2} |\n",
            thousands(metric(result, "rate")),
            ratio(metric(result, "rate"), metric(idle, "rate")),
            metric(result, "p50_us"),
            metric(result, "p99_us"),
            ratio(metric(result, "p99_us"), metric(idle, "p99_us")),
            metric(result, "p999_us"),
        ));
    }
    let late = metric(&flood, "accepted_rate_late");
    out.push_str(&format!(
        "\n### Tenant a (QoS 1, {FLOOD} msg/s offered for {} s, quota {QUOTA}/s)\n\n| offered | accepted (PUBACK 0) | refused (PUBACK 0x97) | delivered to a's subscriber | accepted msg/s, second half | vs quota |\n|---:|---:|---:|---:|---:|---:|\n| {} | {} | {} | {} | {} | {} |\n",
        seconds + 4,
        thousands(metric(&flood, "sent")),
        thousands(metric(&flood, "accepted")),
        thousands(metric(&flood, "refused")),
        thousands(metric(&flood, "received")),
        thousands(late),
        ratio(late, QUOTA as f64),
    ));
    Ok(out)
}

/// Runs the fleet scenarios `wants` selects; their report, or none.
pub(crate) fn fleet(fleet: &Fleet<'_>, wants: impl Fn(&str) -> bool) -> Result<Option<String>> {
    let mut sections = BTreeMap::new();
    if wants("replicas") {
        let token = crate::token(&words("--expires-in 86400"))?;
        sections.insert("replicas", replicas(fleet, &token)?);
    }
    if wants("fairness") {
        println!("\n== fairness");
        sections.insert("fairness", fairness(fleet)?);
    }
    if sections.is_empty() {
        return Ok(None);
    }
    let report: String = sections
        .iter()
        .map(|(name, text)| format!("\n## {name}\n{text}"))
        .collect();
    let path = fleet.dir.join("fleet.md");
    std::fs::write(&path, &report)?;
    println!("\n{report}\n== written to {}", path.display());
    Ok(Some(report))
}
