//! The `mtls` scenarios of `cargo xtask bench` (issue 25): full mutual-TLS
//! handshakes per second, and the CPU the process in front of the broker
//! spends on each, through our proxy and through HAProxy 2.6 terminating the
//! same TLS, side by side in one run, on a mosquitto of their own.
//!
//! **What one unit is.** A client connects, makes a full TLS 1.3 handshake
//! with a client certificate (the load generator never resumes a session),
//! sends CONNECT, reads CONNACK, sends DISCONNECT and closes
//! (`mqtt-bench connect --tls-cert --tls-key`). Stopping at the handshake
//! would flatter the proxy: HAProxy in `mode tcp` connects to its server as
//! soon as a handshake completes, while the proxy's mqtt server opens its
//! upstream only for a CONNECT; with the CONNECT both open one upstream
//! connection and carry one CONNECT/CONNACK per handshake.
//!
//! **The paths**, all in front of the same mosquitto:
//!
//! - `proxy`: one `zilla` process, tcp -> tls server (`mutual: required`,
//!   `trust` the bench CA, `options.authorization` with an `x509` guard
//!   granting the role `device` by issuer CN, the route `guarded` by it; the
//!   vault with `revocation: crl` and a local CRL) -> mqtt server -> mqtt
//!   client -> tcp client.
//! - `haproxy`: one HAProxy process (`nbthread 2`, as the other scenarios),
//!   `mode tcp`, `bind ... ssl crt ... ca-file ... verify required crl-file
//!   ...`, and `tcp-request session reject unless` the issuer CN is the
//!   bench CA's (what the x509 guard's role checks), forwarding to mosquitto.
//! - `haproxy-no-tickets`: the same frontend with `no-tls-tickets`, HAProxy
//!   at its cheapest here (see [`HAPROXY_NO_TICKETS`]).
//!
//! The proxy and HAProxy each run the same handshakes over plain TCP too (`mtls-tcp*`: the proxy's
//! tcp -> mqtt server without the tls layer, HAProxy's plain frontend), so
//! that the table can say how much of each connect is the TLS handshake.
//!
//! **Certificates**, made at bench time with the `openssl` CLI, once per key
//! type, every certificate of a chain with that type: a CA (`keyCertSign`,
//! `cRLSign`), a server certificate for `localhost`, a client certificate
//! (`device-1`, `clientAuth`), a revoked client certificate, and a version 2
//! CRL of the CA revoking that one and [`Mtls::revoked`] others. ECDSA P-256
//! (`mtls-ecdsa*`) and RSA-2048 (`mtls-rsa*`). Both paths read the same
//! files. Before measuring, each path must accept `device-1` and refuse the
//! revoked certificate, or the scenario stops: a path that skipped the CRL
//! would not be doing the same work.
//!
//! **Two load shapes**: 32 handshakes at once (`mtls-ecdsa`, `mtls-rsa`,
//! `mtls-tcp`: the rate the machine allows), and one at a time
//! (`*-seq`: a fifth as many, each waiting for the one before, so per
//! handshake the processes also pay their wake-ups).
//!
//! CPU is user + system time of each process from /proc, before and after
//! each run; the report gives the medians of the rounds. This module uses
//! only [`super::proc`], and returns its report as text.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use zilla_testkit::{free_port, Mosquitto};

use super::proc::{
    cpu_seconds, ended_children_cpu_seconds, start_haproxy, start_zilla, LOADGEN, MOSQUITTO_TUNING,
};

/// Every scenario here; `--only mtls` selects them all.
pub(crate) const MTLS_SCENARIOS: [&str; 6] = [
    "mtls-ecdsa",
    "mtls-rsa",
    "mtls-tcp",
    "mtls-ecdsa-seq",
    "mtls-rsa-seq",
    "mtls-tcp-seq",
];
/// The name the server certificates are for, and the clients send (SNI).
const SERVER_NAME: &str = "localhost";
/// The issuer CN of the client certificates, which grants the role.
const CA_NAME: &str = "Bench Devices CA";
/// The client certificates' serials: the one that connects, the revoked one.
const CLIENT_SERIAL: u32 = 0x2000;
const REVOKED_SERIAL: u32 = 0x2001;

/// What the scenarios are told by the bench's settings.
pub(crate) struct Mtls<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) host: &'a Path,
    pub(crate) haproxy: &'a Path,
    /// Connects per run with 32 at once (a fifth of them one at a time).
    pub(crate) connects: u64,
    pub(crate) rounds: usize,
    /// Certificates the CRL revokes besides the bench's revoked one.
    pub(crate) revoked: u32,
}

/// The key type of every certificate of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Ecdsa,
    Rsa,
}

impl Key {
    const ALL: [Key; 2] = [Key::Ecdsa, Key::Rsa];

    fn name(self) -> &'static str {
        match self {
            Key::Ecdsa => "ecdsa",
            Key::Rsa => "rsa",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Key::Ecdsa => "ECDSA P-256",
            Key::Rsa => "RSA-2048",
        }
    }

    /// `openssl req` arguments for a new key of this type.
    fn newkey(self) -> &'static [&'static str] {
        match self {
            Key::Ecdsa => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
            Key::Rsa => &["-newkey", "rsa:2048"],
        }
    }
}

/// Each scenario: its name, the certificates (plain TCP when none) and
/// how many handshakes are in progress at once.
const SCENARIOS: [(&str, Option<Key>, usize); 6] = [
    (MTLS_SCENARIOS[0], Some(Key::Ecdsa), 32),
    (MTLS_SCENARIOS[1], Some(Key::Rsa), 32),
    (MTLS_SCENARIOS[2], None, 32),
    (MTLS_SCENARIOS[3], Some(Key::Ecdsa), 1),
    (MTLS_SCENARIOS[4], Some(Key::Rsa), 1),
    (MTLS_SCENARIOS[5], None, 1),
];

/// The paths of a mutual-TLS scenario, as the report names them; over plain
/// TCP only the first two run.
const PATHS: [&str; 3] = ["proxy", "haproxy", HAPROXY_NO_TICKETS];
/// HAProxy with `no-tls-tickets`: OpenSSL's stateless TLS 1.3 tickets off
/// (it then issues tickets that name sessions in HAProxy's cache), its best
/// case here, since the clients never resume. The proxy's tls server always
/// issues rustls's default, two tickets naming sessions in its memory.
const HAPROXY_NO_TICKETS: &str = "haproxy-no-tickets";

/// The files of one key type, under `mtls/<key>/` (absolute paths).
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The load generator's TLS arguments, with the client certificate
    /// `client` (`client` or `revoked`).
    fn client_args(&self, client: &str) -> Vec<String> {
        [
            "--tls-ca",
            &self.file("ca.pem"),
            "--tls-server-name",
            SERVER_NAME,
            "--tls-cert",
            &self.file(&format!("{client}.crt")),
            "--tls-key",
            &self.file(&format!("{client}.key")),
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

/// The `openssl` configuration: extensions of each certificate, and what
/// `openssl ca -gencrl` needs (a `crlnumber` file makes the CRL version 2,
/// which webpki requires).
const OPENSSL_CNF: &str = "[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused
[ ca_cert ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[ server_cert ]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ client_cert ]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ ca ]
default_ca = bench_ca
[ bench_ca ]
database = index.txt
crlnumber = crlnumber
default_md = sha256
default_crl_days = 3650
crl_extensions = crl_ext
[ crl_ext ]
authorityKeyIdentifier = keyid:always
";

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .context("running openssl")?;
    if !output.status.success() {
        bail!(
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Makes the CA, certificates and CRL of `key` in `dir/<key>`.
fn make_pki(dir: &Path, key: Key, revoked: u32) -> Result<Pki> {
    let dir = dir.join(key.name());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("keys"))?;
    let dir = std::fs::canonicalize(&dir)?;
    std::fs::write(dir.join("openssl.cnf"), OPENSSL_CNF)?;
    let cnf = ["-config", "openssl.cnf"];
    let ca_subject = format!("/CN={CA_NAME}");
    let mut ca = vec!["req", "-x509", "-new", "-nodes", "-sha256", "-days", "3650"];
    ca.extend(key.newkey());
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem", "-subj", &ca_subject]);
    ca.extend(cnf);
    ca.extend(["-extensions", "ca_cert"]);
    openssl(&dir, &ca)?;
    let issue = |name: &str, subject: &str, serial: u32, extensions: &str| -> Result<()> {
        let (key_file, csr) = (format!("{name}.key"), format!("{name}.csr"));
        let mut request = vec!["req", "-new", "-nodes", "-subj", subject];
        request.extend(key.newkey());
        request.extend(["-keyout", &key_file, "-out", &csr]);
        request.extend(cnf);
        openssl(&dir, &request)?;
        let serial = serial.to_string();
        let cert = format!("{name}.crt");
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-sha256",
                "-days",
                "3650",
                "-set_serial",
                &serial,
                "-extfile",
                "openssl.cnf",
                "-extensions",
                extensions,
                "-out",
                &cert,
            ],
        )
    };
    issue(
        "server",
        &format!("/CN={SERVER_NAME}"),
        0x1000,
        "server_cert",
    )?;
    issue("client", "/CN=device-1", CLIENT_SERIAL, "client_cert")?;
    issue(
        "revoked",
        "/CN=device-revoked",
        REVOKED_SERIAL,
        "client_cert",
    )?;
    // The key store of the vault (alias `localhost`) and HAProxy's `crt`:
    // the certificate, then its key.
    let server = [
        std::fs::read_to_string(dir.join("server.crt"))?,
        std::fs::read_to_string(dir.join("server.key"))?,
    ]
    .concat();
    std::fs::write(dir.join("keys").join(format!("{SERVER_NAME}.pem")), server)?;
    // The CA's database as `openssl ca` keeps it, with every revoked entry.
    let mut index = String::new();
    for serial in std::iter::once(REVOKED_SERIAL).chain((0..revoked).map(|i| 0x0010_0000 + i)) {
        let _ = writeln!(
            index,
            "R\t351231000000Z\t250101000000Z\t{serial:06X}\tunknown\t/CN=device-{serial}"
        );
    }
    std::fs::write(dir.join("index.txt"), index)?;
    std::fs::write(dir.join("crlnumber"), "01\n")?;
    let mut crl = vec!["ca", "-gencrl", "-keyfile", "ca.key", "-cert", "ca.pem"];
    crl.extend(cnf);
    crl.extend(["-out", "crl.pem"]);
    openssl(&dir, &crl)?;
    Ok(Pki { dir })
}

/// The proxy: for each key type a tcp server -> tls server (mutual TLS,
/// the x509 guard, CRL) -> the one mqtt server; `plain_tcp_server` ->
/// the same mqtt server without TLS. Paths relative to `dir/zilla.yaml`.
fn proxy_yaml(broker: u16) -> String {
    let mut vaults = String::new();
    let mut bindings = String::new();
    for key in Key::ALL {
        let name = key.name();
        let _ = write!(
            vaults,
            "  {name}:
    type: filesystem
    options:
      keys: {{store: {name}/keys, type: pem}}
      trust: {{store: {name}/ca.pem, type: pem}}
      revocation: crl
      crl: {{store: {name}/crl.pem, type: pem}}
"
        );
        let _ = write!(
            bindings,
            "  {name}_tcp_server:
    type: tcp
    kind: server
    options: {{host: 127.0.0.1, port: 0}}
    exit: {name}_tls_server
  {name}_tls_server:
    type: tls
    kind: server
    vault: {name}
    options:
      keys: [{SERVER_NAME}]
      trust: [ca]
      mutual: required
      authorization:
        x509_0:
          credentials:
            certificates: pem
    routes:
      - guarded:
          x509_0: [device]
        exit: north_mqtt_server
"
        );
    }
    format!(
        "name: bench-mtls
guards:
  x509_0:
    type: x509
    options:
      identity: subject.cn
      roles:
        device:
          - issuer.cn: {CA_NAME}
vaults:
{vaults}bindings:
{bindings}  plain_tcp_server:
    type: tcp
    kind: server
    options: {{host: 127.0.0.1, port: 0}}
    exit: north_mqtt_server
  north_mqtt_server:
    type: mqtt
    kind: server
    exit: south_mqtt_client
  south_mqtt_client:
    type: mqtt
    kind: client
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options:
      host: 127.0.0.1
      port: {broker}
"
    )
}

/// HAProxy's ports: plain, then for each key type in [`Key::ALL`] order
/// the frontend with OpenSSL's default tickets and the one without.
type HaproxyPorts = [u16; 5];

fn haproxy_port(ports: &HaproxyPorts, key: Option<Key>, no_tickets: bool) -> u16 {
    match key {
        None => ports[0],
        Some(key) => ports[1 + 2 * (key as usize) + usize::from(no_tickets)],
    }
}

/// HAProxy: for each key type two frontends terminating the same mutual
/// TLS (CA, CRL, the issuer's CN checked as the x509 guard's role does), by
/// default and with `no-tls-tickets`, and a plain one; all forward to
/// `broker`.
fn haproxy_cfg(pki: &[(Key, Pki)], ports: &HaproxyPorts, broker: u16) -> String {
    let mut config = format!(
        "global
    maxconn 9900
    nbthread 2
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
backend mosquitto
    server broker 127.0.0.1:{broker}
frontend plain
    bind 127.0.0.1:{}
    default_backend mosquitto
",
        ports[0]
    );
    for (key, pki) in pki {
        for (suffix, options) in [("", ""), ("_no_tickets", " no-tls-tickets")] {
            let _ = write!(
                config,
                "frontend mtls_{name}{suffix}
    bind 127.0.0.1:{port} ssl crt {crt} ca-file {ca} verify required crl-file {crl}{options}
    tcp-request session reject unless {{ ssl_c_i_dn(CN) -m str \"{CA_NAME}\" }}
    default_backend mosquitto
",
                name = key.name(),
                port = haproxy_port(ports, Some(*key), !suffix.is_empty()),
                crt = pki.file(&format!("keys/{SERVER_NAME}.pem")),
                ca = pki.file("ca.pem"),
                crl = pki.file("crl.pem"),
            );
        }
    }
    config
}

/// The last JSON line of a load generator run.
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

/// One path of a scenario: where to connect, the process in front (its
/// pid), the load generator's TLS arguments.
struct Route {
    name: &'static str,
    port: u16,
    front: u32,
    tls: Vec<String>,
}

/// One measured run.
struct Run {
    scenario: &'static str,
    path: &'static str,
    result: serde_json::Value,
    /// CPU seconds of the front process, mosquitto and the load generator.
    cpu: [f64; 3],
}

/// Each mutual-TLS path must let `client` in and keep `revoked` out.
fn check_paths(paths: &[Route], pki: &Pki) -> Result<()> {
    for path in paths {
        for (client, failures) in [("client", 0), ("revoked", 1)] {
            let mut args = connect_args(path.port, 1, 1);
            args.extend(pki.client_args(client));
            let result = loadgen(&args)?;
            println!("   check {:<18} {client:<8} {result}", path.name);
            if result["failures"].as_u64() != Some(failures) {
                bail!(
                    "{} {} the {client} certificate of {}: the comparison needs both paths \
                     to verify the chain and check the CRL",
                    path.name,
                    if failures == 0 { "refused" } else { "accepted" },
                    pki.dir.display()
                );
            }
        }
    }
    Ok(())
}

fn connect_args(port: u16, connections: u64, concurrency: usize) -> Vec<String> {
    format!("connect --port {port} --connections {connections} --concurrency {concurrency}")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Runs the scenarios `wants` selects; their report (tables), or none.
pub(crate) fn mtls(mtls: &Mtls<'_>, wants: impl Fn(&str) -> bool) -> Result<Option<String>> {
    let chosen: Vec<_> = SCENARIOS.iter().filter(|s| wants(s.0)).collect();
    if chosen.is_empty() {
        return Ok(None);
    }
    println!("\n== mutual TLS handshakes: proxy vs HAProxy");
    let dir = mtls.dir.join("mtls");
    std::fs::create_dir_all(&dir)?;
    let dir = std::fs::canonicalize(&dir)?;
    let pki = Key::ALL
        .iter()
        .map(|key| Ok((*key, make_pki(&dir, *key, mtls.revoked)?)))
        .collect::<Result<Vec<_>>>()?;
    let broker = Mosquitto::start_with(MOSQUITTO_TUNING).map_err(anyhow::Error::msg)?;
    let config = dir.join("zilla.yaml");
    std::fs::write(&config, proxy_yaml(broker.port()))?;
    let proxy = start_zilla(mtls.host, &config, &[]).map_err(anyhow::Error::msg)?;
    let ports: HaproxyPorts = std::array::from_fn(|_| free_port());
    let haproxy_config = dir.join("haproxy.cfg");
    std::fs::write(&haproxy_config, haproxy_cfg(&pki, &ports, broker.port()))?;
    let mut haproxy = start_haproxy(mtls.haproxy, &haproxy_config, ports[0])?;
    let paths = |key: Option<Key>| -> Vec<Route> {
        let (proxy_port, tls) = match key {
            None => (proxy.port("plain_tcp_server"), Vec::new()),
            Some(key) => (
                proxy.port(&format!("{}_tcp_server", key.name())),
                pki[key as usize].1.client_args("client"),
            ),
        };
        let route = |name, port, front| Route {
            name,
            port,
            front,
            tls: tls.clone(),
        };
        let mut paths = vec![
            route(PATHS[0], proxy_port, proxy.pid()),
            route(PATHS[1], haproxy_port(&ports, key, false), haproxy.id()),
        ];
        if key.is_some() {
            paths.push(route(
                PATHS[2],
                haproxy_port(&ports, key, true),
                haproxy.id(),
            ));
        }
        paths
    };
    let checked = pki
        .iter()
        .try_for_each(|(key, pki)| check_paths(&paths(Some(*key)), pki));
    if let Err(error) = checked {
        let _ = haproxy.kill();
        let _ = haproxy.wait();
        return Err(error);
    }
    let mut runs = Vec::new();
    for round in 0..mtls.rounds {
        println!("   round {}/{}", round + 1, mtls.rounds);
        for (scenario, key, concurrency) in &chosen {
            let paths = paths(*key);
            let connects = match concurrency {
                1 => (mtls.connects / 5).max(1),
                _ => mtls.connects,
            };
            for offset in 0..paths.len() {
                let path = &paths[(offset + round) % paths.len()];
                let mut args = connect_args(path.port, connects, *concurrency);
                args.extend(path.tls.iter().cloned());
                let cpu = || {
                    [
                        cpu_seconds(path.front),
                        cpu_seconds(broker.pid()),
                        ended_children_cpu_seconds(),
                    ]
                };
                let before = cpu();
                let result = loadgen(&args)
                    .unwrap_or_else(|error| serde_json::json!({ "failed": format!("{error:#}") }));
                let after = cpu();
                println!("   {scenario:<16} {:<18} {result}", path.name);
                runs.push(Run {
                    scenario,
                    path: path.name,
                    result,
                    cpu: [0, 1, 2].map(|i| after[i] - before[i]),
                });
            }
        }
    }
    let _ = haproxy.kill();
    let _ = haproxy.wait();
    Ok(Some(tables(&runs, mtls)))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// `value / base` as `1.23x`, or `-`.
fn ratio(value: f64, base: f64) -> String {
    let ratio = value / base;
    if ratio.is_finite() {
        format!("{ratio:.2}x")
    } else {
        "-".to_owned()
    }
}

/// Medians over the rounds of one scenario and path.
struct Medians {
    rate: f64,
    /// CPU seconds per 1,000 connects (= ms per connect): front, broker,
    /// load generator.
    per_1000: [f64; 3],
    failures: f64,
    tls: String,
}

fn medians(runs: &[Run], scenario: &str, path: &str) -> Medians {
    let mine: Vec<&Run> = runs
        .iter()
        .filter(|r| r.scenario == scenario && r.path == path)
        .collect();
    let value = |key: &str| median(mine.iter().filter_map(|r| r.result[key].as_f64()).collect());
    let per_1000 = [0, 1, 2].map(|i| {
        median(
            mine.iter()
                .filter_map(|r| {
                    let done = r.result["connections"].as_f64()?
                        - r.result["failures"].as_f64().unwrap_or(0.0);
                    Some(r.cpu[i] / done * 1000.0)
                })
                .collect(),
        )
    });
    let tls = mine
        .iter()
        .find_map(|r| r.result["tls"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "plain TCP".to_owned());
    Medians {
        rate: value("rate"),
        per_1000,
        failures: value("failures"),
        tls,
    }
}

/// The report: per load shape, each key type and plain TCP, the proxy
/// beside HAProxy (by default and without stateless tickets).
fn tables(runs: &[Run], mtls: &Mtls<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n### Mutual TLS: full handshakes (TLS 1.3, client certificate, CRL) + CONNECT -> CONNACK + DISCONNECT, proxy vs HAProxy\n"
    );
    let _ = writeln!(
        out,
        "| load | certificates | path | connects/s | vs HAProxy | front CPU s per 1,000 | front CPU vs HAProxy's | vs HAProxy no-tickets' | TLS part of it (minus plain TCP) | TLS part vs HAProxy's | mosquitto CPU s per 1,000 | load generator CPU s per 1,000 | failures | negotiated |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    let shown = |v: f64| {
        if v.is_finite() {
            format!("{v:.3}")
        } else {
            "-".to_owned()
        }
    };
    for (scenario, key, concurrency) in &SCENARIOS {
        let load = match concurrency {
            1 => "1 at a time".to_owned(),
            n => format!("{n} at once"),
        };
        let certificates = key.map_or("none (plain TCP)", Key::title);
        let plain = if *concurrency == 1 {
            MTLS_SCENARIOS[5]
        } else {
            MTLS_SCENARIOS[2]
        };
        // CPU per 1,000 connects less the same path's over plain TCP.
        let tls_part = |path: &str, front: f64| match key {
            None => f64::NAN,
            // HAProxy's plain frontend for both HAProxy paths.
            Some(_) => {
                front - medians(runs, plain, PATHS[usize::from(path != PATHS[0])]).per_1000[0]
            }
        };
        let haproxy = medians(runs, scenario, PATHS[1]);
        let no_tickets = medians(runs, scenario, PATHS[2]).per_1000[0];
        let haproxy_tls = tls_part(PATHS[1], haproxy.per_1000[0]);
        for path in PATHS {
            if !runs
                .iter()
                .any(|r| r.scenario == *scenario && r.path == path)
            {
                continue;
            }
            let m = medians(runs, scenario, path);
            let tls = tls_part(path, m.per_1000[0]);
            let _ = writeln!(
                out,
                "| {load} | {certificates} | {path} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} |",
                m.rate,
                ratio(m.rate, haproxy.rate),
                shown(m.per_1000[0]),
                ratio(m.per_1000[0], haproxy.per_1000[0]),
                ratio(m.per_1000[0], no_tickets),
                shown(tls),
                ratio(tls, haproxy_tls),
                shown(m.per_1000[1]),
                shown(m.per_1000[2]),
                m.failures,
                m.tls,
            );
        }
    }
    let connects = mtls.connects;
    let _ = writeln!(
        out,
        "\nMedians of {} rounds; {connects} connects per run at 32 at once, {} one at a time. \
         CPU s per 1,000 connects is also ms of CPU per connect. Every certificate of a chain \
         has the row's key type; the CRL revokes {} certificates. The load generator never \
         resumes a session; the proxy and `haproxy` send their default TLS 1.3 session \
         tickets, `{HAPROXY_NO_TICKETS}` is HAProxy with `no-tls-tickets`. The load \
         generator, both fronts and mosquitto share the machine's cores.\n",
        mtls.rounds,
        (connects / 5).max(1),
        mtls.revoked + 1,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::{haproxy_cfg, proxy_yaml, Key, Pki};

    #[test]
    fn the_proxy_terminates_mutual_tls_with_the_guard_and_the_crl_for_each_key_type() {
        let yaml = proxy_yaml(1883);
        for key in ["ecdsa", "rsa"] {
            assert!(yaml.contains(&format!(
                "  {key}_tls_server:\n    type: tls\n    kind: server\n    vault: {key}\n"
            )));
            assert!(yaml.contains(&format!(
                "      trust: {{store: {key}/ca.pem, type: pem}}\n      revocation: crl\n"
            )));
        }
        assert!(yaml.contains("      mutual: required\n      authorization:\n        x509_0:\n"));
        assert!(yaml.contains("      - guarded:\n          x509_0: [device]\n"));
        assert!(yaml.contains("  plain_tcp_server:\n"));
        assert!(yaml.contains("      port: 1883\n"));
    }

    #[test]
    fn haproxy_verifies_the_same_chain_and_crl_with_and_without_tickets() {
        let pki = [Key::Ecdsa, Key::Rsa].map(|key| {
            let dir = format!("/b/{}", key.name()).into();
            (key, Pki { dir })
        });
        let config = haproxy_cfg(&pki, &[1, 2, 3, 4, 5], 1883);
        assert!(config.contains("frontend plain\n    bind 127.0.0.1:1\n"));
        assert!(config.contains(
            "bind 127.0.0.1:2 ssl crt /b/ecdsa/keys/localhost.pem ca-file /b/ecdsa/ca.pem \
             verify required crl-file /b/ecdsa/crl.pem\n"
        ));
        assert!(config.contains("bind 127.0.0.1:3 ssl crt /b/ecdsa/keys/localhost.pem"));
        assert!(config.contains("crl-file /b/ecdsa/crl.pem no-tls-tickets\n"));
        assert!(config.contains("bind 127.0.0.1:5 ssl crt /b/rsa/keys/localhost.pem"));
        assert!(config.contains("server broker 127.0.0.1:1883\n"));
    }
}
