//! The `tls` scenario of `cargo xtask bench` (`tls-qos0`, `tls-qos1`,
//! `tls-connect`): what terminating TLS costs the proxy, per message and per
//! connect, next to the same proxy on plain TCP. Deployments put TLS in
//! front of MQTT as a rule, so the plain-TCP numbers alone understate what a
//! proxy spends.
//!
//! Two paths, both in front of the bench's one mosquitto: `proxy` (the
//! existing seed-style proxy, tcp -> mqtt) and `proxy-tls`, the same
//! configuration with a tls server between the tcp and mqtt servers
//! (tcp -> tls -> mqtt), serving a certificate for `localhost` from a
//! filesystem vault (PEM). The certificate and its CA are made at bench time
//! ([`zilla_testkit::pki::TestCa`]: ECDSA P-256); the load generator trusts
//! the CA (`mqtt-bench --tls-ca`), sends SNI `localhost`, negotiates TLS 1.3
//! on rustls with ring, as the proxy does, and never resumes a session, so
//! `tls-connect` pays a full handshake per connection.

use std::path::{Path, PathBuf};

use anyhow::Result;
use zilla_testkit::pki::TestCa;
use zilla_testkit::ZillaProcess;

use super::configs::proxy_yaml;
use super::paths::{words, Scenario, Target};
use super::proc::{start_zilla, LOADGEN_CPU};
use super::report::{cpu_per_million, metric, ratio, shown, Sample};

/// What `--only tls` selects (all three run on the same two paths).
pub(crate) const TLS_SCENARIOS: [&str; 3] = ["tls-qos0", "tls-qos1", "tls-connect"];
/// The TLS proxy, as its path and its CPU samples name it.
pub(crate) const TLS_PROXY: &str = "proxy-tls";
/// The name the certificate is for, and the load generator sends and checks.
const SERVER_NAME: &str = "localhost";

/// The running TLS proxy.
pub(crate) struct TlsPath {
    // Held so that it runs until the bench ends (dropping stops it).
    proxy: ZillaProcess,
    /// The CA certificate (PEM) the load generator trusts.
    ca: PathBuf,
}

impl TlsPath {
    /// The port of the proxy's tcp -> tls listener.
    pub(crate) fn port(&self) -> u16 {
        self.proxy.port("north_tcp_server")
    }

    /// The path through the TLS proxy.
    pub(crate) fn target(&self) -> Target {
        Target::tcp(TLS_PROXY, self.port(), Some(TLS_PROXY))
    }

    /// The process to measure.
    pub(crate) fn process(&self) -> (&'static str, u32) {
        (TLS_PROXY, self.proxy.pid())
    }

    /// The load generator's arguments for a path: TLS for `proxy-tls`.
    pub(crate) fn client_args(&self, front: Option<&str>) -> Vec<String> {
        if front == Some(TLS_PROXY) {
            vec![
                "--tls-ca".into(),
                self.ca.display().to_string(),
                "--tls-server-name".into(),
                SERVER_NAME.into(),
            ]
        } else {
            Vec::new()
        }
    }
}

/// The three scenarios on `proxy` and `proxy_tls`.
pub(crate) fn scenarios<'a>(
    proxy: &'a Target,
    proxy_tls: &'a Target,
    (qos0, qos1, connects): (u64, u64, u64),
) -> Vec<Scenario<'a>> {
    let [qos0_scenario, qos1_scenario, connect_scenario] = TLS_SCENARIOS;
    [
        (
            qos0_scenario,
            format!("throughput --qos 0 --messages {qos0}"),
        ),
        (
            qos1_scenario,
            format!("throughput --qos 1 --window 64 --messages {qos1}"),
        ),
        (
            connect_scenario,
            format!("connect --connections {connects}"),
        ),
    ]
    .into_iter()
    .map(|(name, args)| Scenario {
        name,
        targets: vec![proxy, proxy_tls],
        args: words(&args),
        pinned: false,
    })
    .collect()
}

/// [`proxy_yaml`] with TLS terminated in front of the mqtt server: a
/// filesystem vault with the PEM key store `tls/localhost.pem` (alias
/// `localhost`, relative to the configuration) and a tls server between the
/// tcp and mqtt servers, so the two differ by the tls layer alone.
pub(crate) fn proxy_tls_yaml(guards: &str, broker: u16) -> String {
    const NAME: &str = "name: bench\n";
    const TCP_TO_MQTT: &str = "    exit: north_mqtt_server\n  north_mqtt_server:\n";
    let yaml = proxy_yaml(guards, broker, false);
    assert!(
        yaml.starts_with(NAME) && yaml.contains(TCP_TO_MQTT),
        "proxy_yaml names the bench and its tcp server exits to its mqtt server"
    );
    yaml.replacen(
        NAME,
        "name: bench
vaults:
  bench_tls:
    type: filesystem
    options:
      keys:
        store: tls/localhost.pem
        type: pem
",
        1,
    )
    .replacen(
        TCP_TO_MQTT,
        &format!(
            "    exit: north_tls_server
  north_tls_server:
    type: tls
    kind: server
    vault: bench_tls
    options:
      keys:
        - {SERVER_NAME}
      sni:
        - {SERVER_NAME}
    exit: north_mqtt_server
  north_mqtt_server:
"
        ),
        1,
    )
}

/// Makes a CA and a certificate for `localhost` in `dir/tls`, and starts the
/// TLS proxy from `host` in front of `broker`.
pub(crate) fn start_tls_path(
    dir: &Path,
    host: &Path,
    guards: &str,
    broker: u16,
) -> Result<TlsPath> {
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls)?;
    let ca = TestCa::new("Bench CA");
    ca.server(&[SERVER_NAME])
        .write_pem(&tls.join(format!("{SERVER_NAME}.pem")));
    let ca_pem = std::fs::canonicalize(&tls)?.join("ca.pem");
    std::fs::write(&ca_pem, &ca.cert_pem)?;
    let config = dir.join(format!("{TLS_PROXY}.yaml"));
    std::fs::write(&config, proxy_tls_yaml(guards, broker))?;
    let proxy = start_zilla(host, &config, &[]).map_err(anyhow::Error::msg)?;
    Ok(TlsPath { proxy, ca: ca_pem })
}

/// The tls scenario's table: each measure on `proxy-tls` next to `proxy`.
pub(crate) fn tls_tables(out: &mut String, samples: &[Sample]) {
    use std::fmt::Write as _;
    let [qos0, qos1, connect] = TLS_SCENARIOS;
    let rows = [
        (qos0, "QoS 0, 1 -> 1, 64 B", "msg/s"),
        (qos1, "QoS 1, 1 -> 1, 64 B, window 64", "msg/s"),
        (
            connect,
            "connect (TCP + full TLS handshake + CONNECT -> CONNACK with RS256 JWT + DISCONNECT), 32 at once",
            "connects/s",
        ),
    ];
    if !rows
        .iter()
        .any(|(scenario, _, _)| samples.iter().any(|s| s.scenario == *scenario))
    {
        return;
    }
    let _ = writeln!(
        out,
        "### TLS (tcp -> tls -> mqtt) vs plain TCP (tcp -> mqtt), same proxy configuration and broker\n"
    );
    let _ = writeln!(
        out,
        "| scenario | unit | proxy | proxy-tls | TLS vs TCP | proxy CPU s per 1M | proxy-tls CPU s per 1M | CPU TLS vs TCP | mosquitto CPU s per 1M (TCP / TLS) | load generator CPU s per 1M (TCP / TLS) |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (scenario, title, unit) in rows {
        if !samples.iter().any(|s| s.scenario == scenario) {
            continue;
        }
        let rate = |target: &str| metric(samples, scenario, target, "rate");
        let cpu = |target: &str, process: &str| cpu_per_million(samples, scenario, target, process);
        let (tcp_cpu, tls_cpu) = (cpu("proxy", "proxy"), cpu(TLS_PROXY, TLS_PROXY));
        let _ = writeln!(
            out,
            "| {title} | {unit} | {} | {} | {} | {tcp_cpu:.2} | {tls_cpu:.2} | {} | {:.2} / {:.2} | {:.2} / {:.2} |",
            shown(rate("proxy")),
            shown(rate(TLS_PROXY)),
            ratio(rate(TLS_PROXY), rate("proxy")),
            ratio(tls_cpu, tcp_cpu),
            cpu("proxy", "mosquitto"),
            cpu(TLS_PROXY, "mosquitto"),
            cpu("proxy", LOADGEN_CPU),
            cpu(TLS_PROXY, LOADGEN_CPU),
        );
    }
    let _ = writeln!(
        out,
        "\nCPU s per 1M connects is also µs of CPU per connect. ECDSA P-256 certificate, TLS 1.3 \
         (X25519), no session resumption. The load generator, the proxy and mosquitto share the machine's cores.\n"
    );
}

#[cfg(test)]
mod tests {
    use super::proxy_tls_yaml;

    #[test]
    fn the_tls_proxy_differs_from_the_tcp_one_by_a_vault_and_a_tls_server() {
        let yaml = proxy_tls_yaml("  authn_jwt:\n    type: jwt\n", 1883);
        assert!(yaml.contains("vaults:\n  bench_tls:\n    type: filesystem\n"));
        assert!(yaml.contains(
            "    exit: north_tls_server\n  north_tls_server:\n    type: tls\n    kind: server\n    vault: bench_tls\n"
        ));
        assert!(yaml.contains("    exit: north_mqtt_server\n  north_mqtt_server:\n"));
        assert!(yaml.contains("      port: 1883\n"));
    }
}
