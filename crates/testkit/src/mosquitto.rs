//! A real mosquitto broker on a free loopback port, stopped on drop.

use std::io::Write as _;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_for};

/// How to install mosquitto when it is missing.
pub const MOSQUITTO_INSTALL: &str = "apt-get install -y mosquitto mosquitto-clients";

/// The `mosquitto` binary: on PATH, or where Debian installs it.
pub fn mosquitto_path() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("mosquitto"))
            .collect::<Vec<_>>()
    });
    on_path
        .chain([PathBuf::from("/usr/sbin/mosquitto")])
        .find(|candidate| candidate.is_file())
}

/// A running mosquitto, listening on `127.0.0.1:port()`.
#[derive(Debug)]
pub struct Mosquitto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts mosquitto on a free port (retrying if another process takes the
    /// port first) and waits until it accepts connections.
    pub fn start() -> Result<Self, String> {
        Self::start_with("")
    }

    /// Like [`start`](Self::start), with extra lines for mosquitto's config.
    pub fn start_with(extra_config: &str) -> Result<Self, String> {
        let binary = mosquitto_path().ok_or_else(|| {
            format!("mosquitto is not installed; install it with `{MOSQUITTO_INSTALL}`")
        })?;
        let mut last_error = String::new();
        for _ in 0..5 {
            match Self::try_start(&binary, extra_config) {
                Ok(broker) => return Ok(broker),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    fn try_start(binary: &PathBuf, extra_config: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_port();
        let config_path = dir.path().join("mosquitto.conf");
        let mut config = std::fs::File::create(&config_path).map_err(|e| e.to_string())?;
        writeln!(
            config,
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{extra_config}"
        )
        .map_err(|e| e.to_string())?;
        let listeners: Vec<u16> = std::iter::once(port)
            .chain(extra_config.lines().filter_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some("listener"))
                    .then(|| words.next()?.parse().ok())
                    .flatten()
            }))
            .collect();
        let mut child = Command::new(binary)
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        let ready = wait_for(
            "mosquitto to accept connections",
            Duration::from_secs(10),
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    return Some(Err(format!(
                        "mosquitto exited with {status} (port {port} taken?)"
                    )));
                }
                // Every listener, the extra ones (e.g. WebSocket, which
                // mosquitto opens after the plain one) included.
                listeners
                    .iter()
                    .all(|port| TcpStream::connect(("127.0.0.1", *port)).is_ok())
                    .then_some(Ok(()))
            },
        );
        match ready.and_then(|started| started) {
            Ok(()) => Ok(Self {
                child,
                port,
                _dir: dir,
            }),
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(error)
            }
        }
    }

    /// The port mosquitto listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's process id (for reading its CPU time and memory).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the broker (SIGKILL): no goodbye to its clients.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `MOSQUITTO_BROKER_HOST` and `MOSQUITTO_BROKER_PORT` for this broker, as
    /// the examples' configurations expect them.
    pub fn env(&self) -> [(&'static str, String); 2] {
        [
            ("MOSQUITTO_BROKER_HOST", "127.0.0.1".to_owned()),
            ("MOSQUITTO_BROKER_PORT", self.port.to_string()),
        ]
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
