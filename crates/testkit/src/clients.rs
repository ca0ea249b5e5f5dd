//! Real MQTT client libraries as child processes: MQTT.js run with node and
//! Eclipse paho-mqtt run with the virtual environment's python, both from
//! `tests/clients/`, installed there by `.ci/run`. A missing or stale install
//! is an error that says how to install, never a reason to skip.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

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
