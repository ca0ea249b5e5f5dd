//! Real MQTT client libraries as child processes: MQTT.js run with node and
//! Eclipse paho-mqtt run with the virtual environment's python, both from
//! `tests/clients/`, installed there by `.ci/run`. A missing or stale install
//! is an error that says how to install, never a reason to skip.
//!
//! Also what they run against over WebSocket: [`WsExample`], the example
//! `examples/mqtt.proxy.ws` run by the `zilla` host on free ports in front of
//! a mosquitto, with tokens signed by the example's key.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use crate::{free_port, Mosquitto, ZillaProcess};

/// What to do when MQTT.js is missing.
pub const MQTTJS_INSTALL: &str = "run bash .ci/run (or npm ci in tests/clients/node) first";

/// What to do when paho-mqtt is missing.
pub const PAHO_INSTALL: &str = "run bash .ci/run (or python3 -m venv tests/clients/python/.venv && tests/clients/python/.venv/bin/pip install --require-hashes -r tests/clients/python/requirements.txt) first";

/// The oldest node that MQTT.js 5 supports (its `engines`); CI has node 20.
const NODE_MAJOR_MIN: u32 = 16;

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// `tests/clients/node`: MQTT.js's manifest, lockfile, scripts and node_modules.
pub fn node_dir() -> PathBuf {
    repo_root().join("tests/clients/node")
}

/// `tests/clients/python`: paho-mqtt's requirements, scripts and `.venv`.
pub fn python_dir() -> PathBuf {
    repo_root().join("tests/clients/python")
}

/// A client library the tests run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Library {
    /// MQTT.js (npm `mqtt`), run with node.
    MqttJs,
    /// Eclipse paho-mqtt for Python, run in `tests/clients/python/.venv`.
    Paho,
}

impl Library {
    /// The library's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Library::MqttJs => "MQTT.js",
            Library::Paho => "paho-mqtt",
        }
    }

    /// A command that runs `script` (a file name in the library's folder,
    /// without its extension) with `args`, after checking that the library is
    /// installed at its pinned version.
    pub fn command(self, script: &str, args: &[String]) -> Result<Command, String> {
        let mut command = match self {
            Library::MqttJs => {
                mqttjs_installed()?;
                let mut command = Command::new("node");
                command
                    .arg(node_dir().join(format!("{script}.mjs")))
                    .current_dir(node_dir());
                command
            }
            Library::Paho => {
                let python = paho_installed()?;
                let mut command = Command::new(python);
                command
                    .arg("-u")
                    .arg(python_dir().join(format!("{script}.py")))
                    .current_dir(python_dir())
                    .env("PYTHONDONTWRITEBYTECODE", "1");
                command
            }
        };
        command.args(args);
        Ok(command)
    }
}

/// Checks that node runs and that `node_modules/mqtt` is the version pinned in
/// `package.json`.
pub fn mqttjs_installed() -> Result<(), String> {
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| {
            format!(
                "node is not installed or not on PATH ({e}); MQTT.js needs it: {MQTTJS_INSTALL}"
            )
        })?;
    let version = String::from_utf8_lossy(&node.stdout).trim().to_owned();
    let major = version
        .strip_prefix('v')
        .and_then(|v| v.split('.').next())
        .and_then(|major| major.parse::<u32>().ok());
    if !node.status.success() || major.is_none_or(|major| major < NODE_MAJOR_MIN) {
        return Err(format!(
            "node {version} ({}) cannot run MQTT.js 5, which needs node {NODE_MAJOR_MIN} or later: \
             {MQTTJS_INSTALL}",
            node.status
        ));
    }
    let pinned = json_file(&node_dir().join("package.json"))?["dependencies"]["mqtt"]
        .as_str()
        .map(str::to_owned)
        .ok_or("tests/clients/node/package.json pins no `mqtt` dependency")?;
    let manifest = node_dir().join("node_modules/mqtt/package.json");
    if !manifest.is_file() {
        return Err(format!(
            "MQTT.js is not installed ({} is missing): {MQTTJS_INSTALL}",
            manifest.display()
        ));
    }
    let installed = json_file(&manifest)?["version"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_default();
    if installed != pinned {
        return Err(format!(
            "MQTT.js {installed} is installed but {pinned} is pinned: {MQTTJS_INSTALL}"
        ));
    }
    Ok(())
}

/// Checks that the virtual environment's python imports paho-mqtt at the
/// version pinned in `requirements.txt`; returns that python.
pub fn paho_installed() -> Result<PathBuf, String> {
    let requirements = python_dir().join("requirements.txt");
    let requirements = std::fs::read_to_string(&requirements)
        .map_err(|e| format!("cannot read {}: {e}", requirements.display()))?;
    let pinned = requirements
        .lines()
        .find_map(|line| line.trim().strip_prefix("paho-mqtt=="))
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or("tests/clients/python/requirements.txt pins no `paho-mqtt==` version")?
        .to_owned();
    let python = python_dir().join(".venv/bin/python");
    if !python.is_file() {
        return Err(format!(
            "the paho-mqtt virtual environment is missing ({} does not exist): {PAHO_INSTALL}",
            python.display()
        ));
    }
    let version = std::process::Command::new(&python)
        .args(["-c", "import paho.mqtt; print(paho.mqtt.__version__)"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}: {PAHO_INSTALL}", python.display()))?;
    let installed = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    if !version.status.success() {
        return Err(format!(
            "paho-mqtt is not installed in {}: {}: {PAHO_INSTALL}",
            python.display(),
            String::from_utf8_lossy(&version.stderr).trim()
        ));
    }
    if installed != pinned {
        return Err(format!(
            "paho-mqtt {installed} is installed but {pinned} is pinned: {PAHO_INSTALL}"
        ));
    }
    Ok(python)
}

fn json_file(path: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))
}

/// What a script printed and how it ended.
#[derive(Debug, Clone)]
pub struct ScriptRun {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its stdout lines that are JSON objects, in order.
    pub reports: Vec<serde_json::Value>,
    /// Everything it wrote to stdout.
    pub stdout: Vec<String>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<String>,
    /// How long it ran.
    pub elapsed: Duration,
}

impl ScriptRun {
    /// Its output, for failure messages.
    pub fn transcript(&self) -> String {
        format!(
            "exit: {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout.join("\n"),
            self.stderr.join("\n")
        )
    }

    /// The last report with `"done": true`.
    pub fn done(&self) -> Option<&serde_json::Value> {
        self.reports.iter().rev().find(|r| r["done"] == true)
    }

    /// The names of the checks the script reported, in order.
    pub fn checks(&self) -> Vec<&str> {
        self.reports
            .iter()
            .filter_map(|r| r["check"].as_str())
            .collect()
    }

    /// `check: detail` of every check that failed.
    pub fn failures(&self) -> Vec<String> {
        self.reports
            .iter()
            .filter(|r| r["ok"] == false)
            .map(|r| format!("{}: {}", r["check"], r["detail"]))
            .collect()
    }
}

/// Runs `command` to its end, killing it and failing after `timeout`.
pub async fn run_script(mut command: Command, timeout: Duration) -> Result<ScriptRun, String> {
    let started = tokio::time::Instant::now();
    let description = format!("{:?}", command.as_std());
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {description}: {e}"))?;
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let readers = [
        collect(child.stdout.take(), stdout.clone()),
        collect(child.stderr.take(), stderr.clone()),
    ];
    let lines =
        |lines: &Arc<Mutex<Vec<String>>>| lines.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status.map_err(|e| format!("waiting for {description}: {e}"))?,
        Err(_) => {
            let _ = child.kill().await;
            return Err(format!(
                "{description} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                lines(&stdout).join("\n"),
                lines(&stderr).join("\n")
            ));
        }
    };
    for reader in readers {
        // The pipes close with the process; a grandchild holding them open
        // must not hang the test.
        let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
    }
    let stdout = lines(&stdout);
    let reports = stdout
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(serde_json::Value::is_object)
        .collect();
    Ok(ScriptRun {
        status,
        reports,
        stdout,
        stderr: lines(&stderr),
        elapsed: started.elapsed(),
    })
}

fn collect(
    pipe: Option<impl AsyncRead + Unpin + Send + 'static>,
    into: Arc<Mutex<Vec<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(pipe) = pipe else { return };
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            into.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    })
}

/// `examples/mqtt.proxy.ws`: the seed's JWT proxy serving MQTT (7183), MQTT
/// over TLS (7883), MQTT over WebSocket (7114) and over secure WebSocket
/// (7143), the token in the `access_token` query parameter or cookie, or as
/// the CONNECT user name `Bearer <token>`.
pub fn ws_example_dir() -> PathBuf {
    repo_root().join("examples/mqtt.proxy.ws")
}

/// The ports `examples/mqtt.proxy.ws/zilla.yaml` listens on, in the order
/// of [`WsExample::ports`]: MQTT, MQTT over TLS, WebSocket, secure WebSocket.
const WS_EXAMPLE_PORTS: [u16; 4] = [7183, 7883, 7114, 7143];

/// The claims the example's guard accepts for an hour, with `scope`.
pub fn ws_example_claims(scope: &str) -> serde_json::Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    serde_json::json!({
        "iss": "https://auth.example.com",
        "aud": "https://api.example.com",
        "sub": "ws-client",
        "exp": now + 3600,
        "scope": scope,
    })
}

/// An RS256 token over `claims`, signed with the example's private key
/// (`examples/mqtt.proxy.ws/private.pem`) under its key id, `example`.
pub fn ws_example_sign(claims: &serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("example".to_owned());
    let key = std::fs::read(ws_example_dir().join("private.pem")).expect("the example's key");
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&key).expect("an RSA key");
    jsonwebtoken::encode(&header, claims, &key).expect("signing")
}

/// A token the example accepts for an hour: scope `mqtt:stream`.
pub fn ws_example_token() -> String {
    ws_example_sign(&ws_example_claims("mqtt:stream"))
}

/// `examples/mqtt.proxy.ws/zilla.yaml`, unmodified but for its four ports,
/// run by the `zilla` host from a copy in a temporary folder (with its
/// `tls/` files) in front of a broker; stopped on drop.
#[derive(Debug)]
pub struct WsExample {
    /// The running host.
    pub zilla: ZillaProcess,
    /// MQTT over TCP (the example's 7183).
    pub mqtt_port: u16,
    /// MQTT over TLS (7883).
    pub mqtts_port: u16,
    /// MQTT over WebSocket (7114).
    pub ws_port: u16,
    /// MQTT over secure WebSocket (7143).
    pub wss_port: u16,
    dir: tempfile::TempDir,
}

impl WsExample {
    /// Starts the example with `binary` (the `zilla` host) in front of
    /// `broker` on four free ports, retrying with other ports if another
    /// process takes one first.
    pub fn start(binary: &Path, broker: &Mosquitto) -> Result<Self, String> {
        let mut last_error = String::new();
        for _ in 0..3 {
            match Self::try_start(binary, broker) {
                Ok(example) => return Ok(example),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    fn try_start(binary: &Path, broker: &Mosquitto) -> Result<Self, String> {
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < WS_EXAMPLE_PORTS.len() {
            let port = free_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let source = ws_example_dir();
        let yaml = std::fs::read_to_string(source.join("zilla.yaml"))
            .map_err(|e| format!("cannot read the example: {e}"))?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::create_dir(dir.path().join("tls")).map_err(|e| e.to_string())?;
        for file in ["tls/localhost.p12", "tls/test-ca.pem"] {
            std::fs::copy(source.join(file), dir.path().join(file))
                .map_err(|e| format!("cannot copy {file}: {e}"))?;
        }
        let config = dir.path().join("zilla.yaml");
        std::fs::write(&config, with_ports(&yaml, &ports)).map_err(|e| e.to_string())?;
        let mut env: Vec<(&str, String)> = broker.env().into();
        env.push(("KEYSTORE_PASSWORD", "generated".to_owned()));
        let zilla = ZillaProcess::start(binary, &config, &env, &[])?;
        Ok(Self {
            zilla,
            mqtt_port: ports[0],
            mqtts_port: ports[1],
            ws_port: ports[2],
            wss_port: ports[3],
            dir,
        })
    }

    /// The example's ports as this run has them: MQTT, MQTT over TLS,
    /// WebSocket, secure WebSocket.
    pub fn ports(&self) -> [u16; 4] {
        [self.mqtt_port, self.mqtts_port, self.ws_port, self.wss_port]
    }

    /// The CA that signed the example's `localhost` certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("tls/test-ca.pem")
    }

    /// `ws://127.0.0.1:<port>/mqtt`, with `?access_token=<token>` when given.
    pub fn ws_url(&self, token: Option<&str>) -> String {
        with_token(format!("ws://127.0.0.1:{}/mqtt", self.ws_port), token)
    }

    /// `wss://localhost:<port>/mqtt` (the certificate's name), with
    /// `?access_token=<token>` when given.
    pub fn wss_url(&self, token: Option<&str>) -> String {
        with_token(format!("wss://localhost:{}/mqtt", self.wss_port), token)
    }

    /// Sends a WebSocket upgrade request for `path` (subprotocol `mqtt`) to
    /// the plain WebSocket port and returns the response's head (status
    /// line and headers) as the proxy sent it.
    pub fn upgrade(&self, path: &str) -> Result<String, String> {
        let attempt = || -> std::io::Result<String> {
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.ws_port))?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            write!(
                stream,
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
                self.ws_port
            )?;
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if stream.read(&mut byte)? == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            Ok(String::from_utf8_lossy(&head).into_owned())
        };
        attempt().map_err(|e| format!("upgrade request for {path}: {e}"))
    }

    /// What the host printed so far, for failure messages.
    pub fn transcript(&self) -> String {
        let output = self.zilla.output();
        format!(
            "zilla stdout:\n{}\nzilla stderr:\n{}",
            output.stdout.join("\n"),
            output.stderr.join("\n")
        )
    }
}

fn with_token(url: String, token: Option<&str>) -> String {
    match token {
        Some(token) => format!("{url}?access_token={token}"),
        None => url,
    }
}

/// The example's YAML with its ports (each the last word of a line) replaced
/// by `ports`, in the order of [`WS_EXAMPLE_PORTS`].
fn with_ports(yaml: &str, ports: &[u16]) -> String {
    let mut lines: Vec<String> = Vec::new();
    for line in yaml.lines() {
        let mut line = line.to_owned();
        for (old, new) in WS_EXAMPLE_PORTS.iter().zip(ports) {
            let old = format!(" {old}");
            if !line.trim_start().starts_with('#') && line.ends_with(&old) {
                line.truncate(line.len() - old.len());
                line.push_str(&format!(" {new}"));
            }
        }
        lines.push(line);
    }
    lines.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_port_of_the_example_is_moved() {
        let yaml = std::fs::read_to_string(ws_example_dir().join("zilla.yaml")).unwrap();
        let moved = with_ports(&yaml, &[1, 2, 3, 4]);
        for (old, new) in WS_EXAMPLE_PORTS.iter().zip(1..) {
            let settings = moved
                .lines()
                .filter(|line| !line.trim_start().starts_with('#'))
                .collect::<Vec<_>>();
            assert!(
                !settings.iter().any(|line| line.contains(&old.to_string())),
                "{old} is left in\n{moved}"
            );
            assert!(
                settings
                    .iter()
                    .filter(|line| line.ends_with(&format!(" {new}")))
                    .count()
                    >= 2,
                "{old} became {new} in the listener and its route\n{moved}"
            );
        }
    }
}
