//! Idle sessions in `cargo xtask bench`: how much RSS the front process
//! gains per authenticated session held open, in one process (`idle`) and
//! spread over several proxy processes and brokers when one process cannot
//! hold them all under the open-file limit (`idle-sharded`).

use std::path::Path;

use anyhow::{bail, Result};
use zilla_testkit::Mosquitto;

use super::configs::proxy_yaml;
use super::proc::{open_idle, rss_kib, start_zilla, BENCH_DIR, MOSQUITTO_TUNING};

/// Opens `connections` idle sessions through `name` at `port` and returns the RSS
/// growth of `pid` per connection, in KiB.
pub(crate) fn idle_rss(
    name: &str,
    port: u16,
    token: &str,
    pid: u32,
    connections: u64,
) -> Result<f64> {
    let before = rss_kib(pid);
    let (mut child, held, failed) = open_idle(port, token, connections)?;
    let after = rss_kib(pid);
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "   idle           {:<12} {held} sessions ({failed} failed): RSS {before} KiB -> {after} KiB",
        name
    );
    if held == 0 {
        bail!("no idle session could be opened through {name}");
    }
    Ok((after.saturating_sub(before)) as f64 / held as f64)
}

/// Sessions one proxy process holds in the sharded idle run: two sockets
/// each, under a 20,000 open-file limit.
const SESSIONS_PER_PROXY: u64 = 8_000;
/// Sessions one broker holds in the sharded idle run.
const SESSIONS_PER_BROKER: u64 = 16_000;

/// The proxy's RSS growth per idle session at `total` sessions, spread over
/// as many proxy processes and brokers as the open-file limit requires:
/// (sessions held, proxy processes, KiB per session).
pub(crate) fn sharded_idle(guards: &str, token: &str, total: u64) -> Result<(u64, usize, f64)> {
    let shards = total.div_ceil(SESSIONS_PER_PROXY) as usize;
    let brokers = (0..total.div_ceil(SESSIONS_PER_BROKER))
        .map(|_| Mosquitto::start_with(MOSQUITTO_TUNING))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let mut proxies = Vec::new();
    for shard in 0..shards {
        let config = Path::new(BENCH_DIR).join(format!("proxy-shard-{shard}.yaml"));
        let broker = &brokers[shard % brokers.len()];
        std::fs::write(&config, proxy_yaml(guards, broker.port(), false))?;
        proxies.push(
            start_zilla(Path::new("target/release/zilla"), &config, &[])
                .map_err(anyhow::Error::msg)?,
        );
    }
    let before: u64 = proxies.iter().map(|p| rss_kib(p.pid())).sum();
    let mut generators = Vec::new();
    let mut opened = Ok(());
    for (shard, proxy) in proxies.iter().enumerate() {
        let share = total / shards as u64 + u64::from((shard as u64) < total % shards as u64);
        match open_idle(proxy.port("north_tcp_server"), token, share) {
            Ok(generator) => generators.push(generator),
            Err(error) => {
                opened = Err(error);
                break;
            }
        }
    }
    let after: u64 = proxies.iter().map(|p| rss_kib(p.pid())).sum();
    let held: u64 = generators.iter().map(|(_, held, _)| held).sum();
    let failed: u64 = generators.iter().map(|(_, _, failed)| failed).sum();
    for (mut child, _, _) in generators {
        let _ = child.kill();
        let _ = child.wait();
    }
    opened?;
    println!(
        "   idle           proxy        {held} sessions ({failed} failed) over {shards} processes: RSS {before} KiB -> {after} KiB"
    );
    if held == 0 {
        bail!("no idle session could be opened");
    }
    Ok((
        held,
        shards,
        after.saturating_sub(before) as f64 / held as f64,
    ))
}

/// The idle tables: RSS growth per session of each path's front process
/// (`idle`: `(path, KiB)`, `sessions` at once), and of the proxy over
/// several processes (`sharded`: sessions held, processes, KiB).
pub(crate) fn tables(
    out: &mut String,
    sessions: u64,
    idle: &[(&str, f64)],
    sharded: Option<(u64, usize, f64)>,
) {
    use std::fmt::Write as _;
    if !idle.is_empty() {
        let _ = writeln!(
            out,
            "\n### Idle authenticated sessions ({sessions} at once)\n"
        );
        let _ = writeln!(
            out,
            "| path | RSS growth per session (KiB) of the front process (mosquitto for direct) |"
        );
        let _ = writeln!(out, "|---|---:|");
        for (target, kib) in idle {
            let _ = writeln!(out, "| {target} | {kib:.1} |");
        }
    }
    if let Some((held, processes, kib)) = sharded {
        let _ = writeln!(
            out,
            "\n### Idle authenticated sessions through the proxy: {held} over {processes} processes\n\n\
             RSS growth per session, summed over the processes: {kib:.1} KiB"
        );
    }
}
