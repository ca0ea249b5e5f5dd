//! `examples/mqtt.proxy.x509` as `tests/x509_devices.rs` runs it: a copy of
//! its `zilla.yaml` and `make-certs.sh` in a temporary folder, certificates
//! made there by the script (the openssl CLI), the `zilla` host started on
//! it in front of a mosquitto with only its fixed ports moved to free ones;
//! what the host prints (events) and serves (prometheus metrics); and the
//! real clients the tests drive: mosquitto_pub/mosquitto_sub with a client
//! certificate or a token, and a mosquitto_sub that watches topics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use zilla_testkit::{free_port, Mosquitto, ZillaProcess};

const ZILLA: &str = env!("CARGO_BIN_EXE_zilla");

/// How long a test waits for what a client or the proxy does.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// The example's namespace, in front of every event and metric.
pub(crate) const NAMESPACE: &str = "zilla-mqtt-proxy-x509";

/// The fixed ports of the example: MQTT/TLS, secure WebSocket, prometheus.
const PORTS: [u16; 3] = [7883, 7143, 7190];

/// The mqtt server of the devices (certificates).
pub(crate) const DEVICES: &str = "north_devices_mqtt_server";
/// The mqtt server of the applications (tokens).
pub(crate) const APPS: &str = "north_mqtt_server";

/// A fresh mosquitto and the example in front of it.
pub(crate) fn start() -> (Mosquitto, Example) {
    let broker = Mosquitto::start().unwrap_or_else(|error| panic!("{error}"));
    let example = Example::start(&broker);
    (broker, example)
}

/// `<namespace>.<binding> <EVENT>`, as the stdout exporter prints it.
pub(crate) fn event(binding: &str, name: &str) -> String {
    format!("{NAMESPACE}.{binding} {name}")
}

/// What a mosquitto client printed, both streams.
pub(crate) fn printed(run: &Run) -> String {
    format!("{}{}", run.stdout, run.stderr)
}

/// `examples/mqtt.proxy.x509`.
pub(crate) fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mqtt.proxy.x509")
}

/// A folder of certificates made by `make-certs.sh` (its `TLS_DIR`).
#[derive(Debug, Clone)]
pub(crate) struct Pki {
    script: PathBuf,
    /// The `TLS_DIR`.
    pub(crate) dir: PathBuf,
}

/// A device's certificate and key, as files (PEM).
#[derive(Debug, Clone)]
pub(crate) struct Device {
    /// Its CN.
    pub(crate) name: String,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

impl Pki {
    /// Runs `make-certs.sh init` into `dir`, with `CA_NAME` when given.
    fn init(script: &Path, dir: &Path, ca_name: Option<&str>) -> Self {
        let pki = Self {
            script: script.to_path_buf(),
            dir: dir.to_path_buf(),
        };
        let env: Vec<(&str, String)> = ca_name
            .map(|name| ("CA_NAME", name.to_owned()))
            .into_iter()
            .collect();
        pki.run(&["init"], &env);
        pki
    }

    /// `make-certs.sh <args>` with `env`; fails the test on an error.
    pub(crate) fn run(&self, args: &[&str], env: &[(&str, String)]) {
        let output = std::process::Command::new("sh")
            .arg(&self.script)
            .args(args)
            .env("TLS_DIR", &self.dir)
            .env("KEYSTORE_PASSWORD", "generated")
            .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
            .output()
            .expect("sh runs make-certs.sh");
        assert!(
            output.status.success(),
            "make-certs.sh {args:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// A certificate for `cn` issued by this folder's device CA, valid for a year.
    pub(crate) fn device(&self, cn: &str) -> Device {
        self.device_with(cn, &[])
    }

    /// A certificate for `cn` valid from `not_before` (default: now) until
    /// `not_after`.
    pub(crate) fn device_valid(
        &self,
        cn: &str,
        not_before: Option<SystemTime>,
        not_after: SystemTime,
    ) -> Device {
        let mut env = vec![("NOT_AFTER", openssl_time(not_after))];
        if let Some(not_before) = not_before {
            env.push(("NOT_BEFORE", openssl_time(not_before)));
        }
        self.device_with(cn, &env)
    }

    fn device_with(&self, cn: &str, env: &[(&str, String)]) -> Device {
        self.run(&["device", cn], env);
        Device {
            name: cn.to_owned(),
            cert: self.dir.join(format!("devices/{cn}.pem")),
            key: self.dir.join(format!("devices/{cn}.key")),
        }
    }

    /// `make-certs.sh revoke <cn>`: revoked, and the CRL file rewritten.
    pub(crate) fn revoke(&self, device: &Device) {
        self.run(&["revoke", &device.name], &[]);
    }
}

/// `time` as `openssl ca` takes it: `YYYYMMDDHHMMSSZ`, UTC.
pub(crate) fn openssl_time(time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    // Howard Hinnant's days-to-civil, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The example running in front of a broker.
#[derive(Debug)]
pub(crate) struct Example {
    pub(crate) zilla: ZillaProcess,
    /// MQTT over TLS (the example's 7883): devices and applications.
    pub(crate) mqtts: u16,
    /// MQTT over secure WebSocket (7143): devices.
    pub(crate) wss: u16,
    /// The prometheus endpoint (7190).
    pub(crate) metrics: u16,
    /// The example's own PKI (`tls/`).
    pub(crate) pki: Pki,
    dir: tempfile::TempDir,
}

impl Example {
    /// Copies the example, makes its certificates with its script and starts
    /// it in front of `broker`, retrying with other ports if another
    /// process takes one first.
    pub(crate) fn start(broker: &Mosquitto) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let source = example_dir();
        for file in ["zilla.yaml", "make-certs.sh"] {
            std::fs::copy(source.join(file), dir.path().join(file)).unwrap();
        }
        let script = dir.path().join("make-certs.sh");
        let pki = Pki::init(&script, &dir.path().join("tls"), None);
        let yaml = std::fs::read_to_string(source.join("zilla.yaml")).unwrap();
        let mut env: Vec<(&str, String)> = broker.env().into();
        env.push(("KEYSTORE_PASSWORD", "generated".into()));
        let mut failure = String::new();
        for _ in 0..3 {
            let mut ports: Vec<u16> = Vec::new();
            while ports.len() < PORTS.len() {
                let port = free_port();
                if !ports.contains(&port) {
                    ports.push(port);
                }
            }
            let config = dir.path().join("zilla.yaml");
            std::fs::write(&config, with_ports(&yaml, &ports)).unwrap();
            match ZillaProcess::start(Path::new(ZILLA), &config, &env, &[]) {
                Ok(zilla) => {
                    return Self {
                        zilla,
                        mqtts: ports[0],
                        wss: ports[1],
                        metrics: ports[2],
                        pki,
                        dir,
                    }
                }
                Err(error) => failure = error,
            }
        }
        panic!("examples/mqtt.proxy.x509 does not start: {failure}");
    }

    /// Another PKI in folder `name` beside the example's, made by the same
    /// script with `ca_name` as its device CA's name: the proxy does not
    /// trust it (even when its name is the trusted CA's).
    pub(crate) fn other_pki(&self, name: &str, ca_name: &str) -> Pki {
        let script = self.dir.path().join("make-certs.sh");
        Pki::init(&script, &self.dir.path().join(name), Some(ca_name))
    }

    /// The CA of the proxy's `localhost` certificate, which clients trust.
    pub(crate) fn server_ca(&self) -> PathBuf {
        self.pki.dir.join("server-ca.pem")
    }

    /// What the host printed, for failure messages.
    pub(crate) fn transcript(&self) -> String {
        let output = self.zilla.output();
        format!(
            "zilla stdout:\n{}\nzilla stderr:\n{}",
            output.stdout.join("\n"),
            output.stderr.join("\n")
        )
    }

    /// The events printed so far that contain every one of `needles`.
    pub(crate) fn events(&self, needles: &[&str]) -> Vec<String> {
        self.zilla
            .output()
            .stdout
            .into_iter()
            .filter(|line| needles.iter().all(|needle| line.contains(needle)))
            .collect()
    }

    /// Waits until `count` events contain every one of `needles`.
    pub(crate) async fn wait_events(&self, needles: &[&str], count: usize) -> Vec<String> {
        let found = tokio::time::timeout(TIMEOUT, async {
            loop {
                let lines = self.events(needles);
                if lines.len() >= count {
                    return lines;
                }
                // Polling interval; the condition decides.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "fewer than {count} events with {needles:?}\n{}",
                self.transcript()
            )
        })
    }

    /// Waits until an event contains every one of `needles`; returns it.
    pub(crate) async fn wait_event(&self, needles: &[&str]) -> String {
        self.wait_events(needles, 1).await.remove(0)
    }

    /// Every sample the prometheus endpoint serves now, of this example.
    pub(crate) async fn scrape(&self) -> Vec<Sample> {
        let port = self.metrics;
        let (status, body) =
            tokio::task::spawn_blocking(move || zilla_testkit::http::get(port, "/metrics"))
                .await
                .unwrap()
                .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(status, 200, "{body}");
        body.lines().filter_map(Sample::parse).collect()
    }

    /// The sum of metric `name` over its series whose labels include every
    /// one of `labels` (0 when there is none).
    pub(crate) async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        sum(&self.scrape().await, name, labels)
    }

    /// Waits until [`metric`](Self::metric) is `expected`: counters are
    /// counted as the proxy gets to them, which may be just after the
    /// client saw the outcome.
    /// Waits for each `(labels, expected)` of metric `name` in turn.
    pub(crate) async fn wait_metrics(&self, name: &str, each: &[(&[(&str, &str)], f64)]) {
        for (labels, expected) in each {
            self.wait_metric(name, labels, *expected).await;
        }
    }

    pub(crate) async fn wait_metric(&self, name: &str, labels: &[(&str, &str)], expected: f64) {
        let reached = tokio::time::timeout(TIMEOUT, async {
            loop {
                if self.metric(name, labels).await == expected {
                    return;
                }
                // Polling interval; the condition decides.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if reached.is_err() {
            let now = self.metric(name, labels).await;
            panic!(
                "{name}{labels:?} is {now}, not {expected}\n{}",
                self.transcript()
            );
        }
    }
}

/// One prometheus sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) value: f64,
}

impl Sample {
    fn parse(line: &str) -> Option<Self> {
        if line.starts_with('#') || line.trim().is_empty() {
            return None;
        }
        let (series, value) = line.rsplit_once(' ')?;
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|pair| !pair.is_empty())
            .filter_map(|pair| {
                let (key, value) = pair.split_once("=\"")?;
                Some((key.to_owned(), value.trim_end_matches('"').to_owned()))
            })
            .collect();
        Some(Self {
            name: name.to_owned(),
            labels,
            value: value.parse().ok()?,
        })
    }
}

/// The sum of `name` over `samples` whose labels include every one of `labels`.
pub(crate) fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name && s.labels.get("namespace").map(String::as_str) == Some(NAMESPACE)
        })
        .filter(|s| {
            labels
                .iter()
                .all(|(key, value)| s.labels.get(*key).map(String::as_str) == Some(*value))
        })
        .map(|s| s.value)
        .sum()
}

/// The example's YAML with its fixed ports (the last word of a line)
/// replaced by `ports`, in the order of [`PORTS`]; nothing else changes.
fn with_ports(yaml: &str, ports: &[u16]) -> String {
    let moved: Vec<String> = yaml
        .lines()
        .map(|line| {
            let setting = !line.trim_start().starts_with('#');
            for (old, new) in PORTS.iter().zip(ports) {
                let old = format!(" {old}");
                if setting && line.ends_with(&old) {
                    return format!("{} {new}", &line[..line.len() - old.len()]);
                }
            }
            line.to_owned()
        })
        .collect();
    let changed = yaml
        .lines()
        .zip(&moved)
        .filter(|(before, after)| before != after)
        .count();
    // 7883 and 7143 each as a listener and in the tls routes (7883 twice),
    // 7190 once.
    assert_eq!(
        changed,
        6,
        "the example's ports moved:\n{}",
        moved.join("\n")
    );
    moved.join("\n") + "\n"
}

/// A token the example's jwt guard accepts for an hour (scope
/// `mqtt:stream`), signed with the seed's key, as `cargo xtask token` signs.
pub(crate) fn app_token(sub: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    zilla_testkit::seed::sign(
        &serde_json::json!({
            "iss": "https://auth.example.com",
            "aud": "https://api.example.com",
            "sub": sub,
            "exp": now + 3600,
            "scope": "mqtt:stream",
        }),
        "example",
    )
}

/// Who a mosquitto client is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Who<'a> {
    /// A device: `--cert` and `--key`.
    Device(&'a Device),
    /// An application: no certificate, `-u "Bearer <token>"`.
    App(&'a str),
    /// Neither.
    Nobody,
}

/// `program` (mosquitto_pub or mosquitto_sub) over TLS to the example's
/// MQTT/TLS port, as `who`, with client id `id` and MQTT `version`
/// (`mqttv5`, `mqttv311`). `-d` (debug) makes them print the packets they
/// send and receive, with their reason codes.
pub(crate) fn mosquitto(
    program: &str,
    example: &Example,
    version: &str,
    id: &str,
    who: Who<'_>,
) -> Command {
    let mut command = Command::new(program);
    command
        .arg("--cafile")
        .arg(example.server_ca())
        .args(["-h", "localhost", "-p", &example.mqtts.to_string()])
        .args(["-V", version, "-i", id])
        .kill_on_drop(true);
    match who {
        Who::Device(device) => {
            command.arg("--cert").arg(&device.cert);
            command.arg("--key").arg(&device.key);
        }
        Who::App(token) => {
            command.args(["-u", &format!("Bearer {token}")]);
        }
        Who::Nobody => {}
    }
    command
}

/// What a finished mosquitto client printed.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) success: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "success: {}\nstdout:\n{}\nstderr:\n{}",
            self.success, self.stdout, self.stderr
        )
    }
}

/// Runs `command` to its end (within [`TIMEOUT`]).
pub(crate) async fn run(command: &mut Command) -> Run {
    let output = tokio::time::timeout(TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{command:?} did not end in time"))
        .expect("mosquitto's clients are installed");
    Run {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A mosquitto_sub (`-v`: each message as `<topic> <payload>`) running as
/// an application, collecting what it receives.
#[derive(Debug)]
pub(crate) struct Watcher {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Watcher {
    /// Subscribes to `filter` with the application's token and waits until
    /// the subscription is in place: it receives a retained message that
    /// the application published on `devices/ready` first.
    pub(crate) async fn start(example: &Example, id: &str, filter: &str) -> Self {
        let token = app_token(id);
        let ready = run(mosquitto(
            "mosquitto_pub",
            example,
            "mqttv5",
            &format!("{id}-ready"),
            Who::App(&token),
        )
        .args(["-t", "devices/ready", "-m", "ready", "-r", "-q", "1"]))
        .await;
        assert!(ready.success, "the retained ready message\n{ready}");
        let mut command = mosquitto("mosquitto_sub", example, "mqttv5", id, Who::App(&token));
        command
            .args(["-v", "-q", "1", "-t", filter])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("mosquitto_sub runs");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let into = lines.clone();
        let stdout = child.stdout.take().unwrap();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                into.lock().unwrap().push(line);
            }
        });
        let watcher = Self { child, lines };
        watcher.wait_line("devices/ready ready").await;
        watcher
    }

    /// Every `<topic> <payload>` line so far.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until the watcher received `line`; returns every line so far.
    pub(crate) async fn wait_line(&self, line: &str) -> Vec<String> {
        let found = tokio::time::timeout(TIMEOUT, async {
            loop {
                let lines = self.lines();
                if lines.iter().any(|l| l == line) {
                    return lines;
                }
                // Polling interval; the condition decides.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("the watcher never got {line:?}: {:?}", self.lines()))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
