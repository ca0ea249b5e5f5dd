//! The `zilla` host as a child process, with its output collected line by line.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::wait_for;

/// Everything a child wrote so far.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Lines written to stdout.
    pub stdout: Vec<String>,
    /// Lines written to stderr.
    pub stderr: Vec<String>,
}

/// A running `zilla start`, stopped with SIGTERM (or killed) on drop.
#[derive(Debug)]
pub struct ZillaProcess {
    child: Child,
    output: Arc<Mutex<Output>>,
    listening: HashMap<String, Vec<SocketAddr>>,
    /// Its admin socket: one of its own unless the arguments name one, so
    /// that hosts of tests running at once do not share `.zilla/admin.sock`.
    admin_socket: Option<PathBuf>,
}

/// The property that moves a host's admin socket.
const ADMIN_SOCKET: &str = "zilla.engine.admin.socket";

/// A fresh admin socket path for a host of this test process.
fn own_admin_socket() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("zilla-admin-{}-{n}.sock", std::process::id()))
}

impl ZillaProcess {
    /// Runs `zilla start -c config` with `env` and `args`, and waits until it
    /// reports ready (or fails, returning what it printed).
    pub fn start(
        binary: &Path,
        config: &Path,
        env: &[(&str, String)],
        args: &[&str],
    ) -> Result<Self, String> {
        let named = args.iter().any(|arg| arg.contains(ADMIN_SOCKET));
        Self::start_with(binary, config, env, args, !named)
    }

    /// [`ZillaProcess::start`] for a build of the host from before the
    /// admin socket (a benchmark's baseline), which refuses its property:
    /// runs it with the arguments as given.
    pub fn start_older(
        binary: &Path,
        config: &Path,
        env: &[(&str, String)],
        args: &[&str],
    ) -> Result<Self, String> {
        Self::start_with(binary, config, env, args, false)
    }

    fn start_with(
        binary: &Path,
        config: &Path,
        env: &[(&str, String)],
        args: &[&str],
        own_socket: bool,
    ) -> Result<Self, String> {
        let mut command = Command::new(binary);
        command.arg("start").arg("-c").arg(config).args(args);
        let admin_socket = own_socket.then(own_admin_socket);
        if let Some(path) = &admin_socket {
            command
                .arg("-P")
                .arg(format!("{ADMIN_SOCKET}={}", path.display()));
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        let output = Arc::new(Mutex::new(Output::default()));
        collect(child.stdout.take(), output.clone(), |o| &mut o.stdout);
        collect(child.stderr.take(), output.clone(), |o| &mut o.stderr);
        let mut process = Self {
            child,
            output,
            listening: HashMap::new(),
            admin_socket,
        };
        let ready = wait_for("zilla to report ready", Duration::from_secs(30), || {
            if process
                .output()
                .stdout
                .iter()
                .any(|l| l.starts_with("zilla ") && l.ends_with(" ready"))
            {
                return Some(Ok(()));
            }
            match process.child.try_wait() {
                Ok(Some(status)) => Some(Err(status)),
                _ => None,
            }
        });
        match ready {
            Ok(Ok(())) => {}
            Ok(Err(status)) => {
                let output = process.wait_for_output_end();
                return Err(format!(
                    "zilla exited with {status}\nstdout:\n{}\nstderr:\n{}",
                    output.stdout.join("\n"),
                    output.stderr.join("\n")
                ));
            }
            Err(timeout) => return Err(format!("{timeout}; output: {:?}", process.output())),
        }
        process.listening = parse_listening(&process.output().stdout);
        Ok(process)
    }

    /// The addresses binding `name` listens on, as `zilla start` reported them.
    pub fn listening(&self, name: &str) -> &[SocketAddr] {
        self.listening.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The first port binding `name` listens on.
    pub fn port(&self, name: &str) -> u16 {
        self.listening(name)
            .first()
            .unwrap_or_else(|| panic!("binding {name} reported no listening address"))
            .port()
    }

    /// The `-P` arguments that reach this host's admin socket (`zilla
    /// sessions`, `disconnect`, `dump`), when the test did not name one.
    pub fn admin_args(&self) -> Vec<String> {
        match &self.admin_socket {
            Some(path) => vec!["-P".into(), format!("{ADMIN_SOCKET}={}", path.display())],
            None => Vec::new(),
        }
    }

    /// The host's process id (for reading its CPU time and memory).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process printed so far.
    pub fn output(&self) -> Output {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until a stdout line contains `needle`; returns that line.
    pub fn wait_for_stdout(&self, needle: &str, timeout: Duration) -> Result<String, String> {
        wait_for(&format!("zilla to print `{needle}`"), timeout, || {
            self.output()
                .stdout
                .into_iter()
                .find(|line| line.contains(needle))
        })
        .map_err(|e| format!("{e}; output: {:?}", self.output()))
    }

    /// Sends SIGTERM and waits (up to `timeout`) for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Result<(ExitStatus, Output), String> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        if !sent.map(|s| s.success()).unwrap_or(false) {
            return Err("could not send SIGTERM".into());
        }
        let status = wait_for("zilla to exit after SIGTERM", timeout, || {
            self.child.try_wait().ok().flatten()
        })?;
        Ok((status, self.wait_for_output_end()))
    }

    /// Blocks until the process exits on its own (e.g. on Ctrl-C).
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait()
    }

    /// Sends the signal `name` (`HUP`, `TERM`, `INT`) without waiting.
    pub fn signal(&self, name: &str) -> Result<(), String> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status();
        match sent {
            Ok(status) if status.success() => Ok(()),
            _ => Err(format!("could not send SIG{name}")),
        }
    }

    /// Waits (up to `timeout`) for the process to exit, e.g. after
    /// [`signal`](Self::signal); returns its status and everything it printed.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<(ExitStatus, Output), String> {
        let status = wait_for("zilla to exit", timeout, || {
            self.child.try_wait().ok().flatten()
        })?;
        Ok((status, self.wait_for_output_end()))
    }

    /// How many stdout lines so far contain `needle`.
    pub fn count_stdout(&self, needle: &str) -> usize {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stdout
            .iter()
            .filter(|line| line.contains(needle))
            .count()
    }

    /// Waits until at least `count` stdout lines contain `needle`.
    pub fn wait_for_stdout_count(
        &self,
        needle: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<(), String> {
        wait_for(
            &format!("{count} lines with `{needle}` on zilla's stdout"),
            timeout,
            || (self.count_stdout(needle) >= count).then_some(()),
        )
        .map_err(|e| format!("{e}; output: {:?}", self.output()))
    }

    fn wait_for_output_end(&mut self) -> Output {
        // The reader threads finish shortly after the pipes close.
        let _ = wait_for("output pipes to close", Duration::from_secs(2), || {
            (Arc::strong_count(&self.output) == 1).then_some(())
        });
        self.output()
    }
}

impl Drop for ZillaProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect<R: Read + Send + 'static>(
    pipe: Option<R>,
    output: Arc<Mutex<Output>>,
    stream: fn(&mut Output) -> &mut Vec<String>,
) {
    let Some(pipe) = pipe else { return };
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            stream(&mut output.lock().unwrap_or_else(|p| p.into_inner())).push(line);
        }
    });
}

/// Reads `started <name> (<type> <kind>) listening on <addr>, <addr>` lines.
fn parse_listening(stdout: &[String]) -> HashMap<String, Vec<SocketAddr>> {
    stdout
        .iter()
        .filter_map(|line| {
            let rest = line.strip_prefix("started ")?;
            let (name, rest) = rest.split_once(' ')?;
            let (_, addresses) = rest.split_once(" listening on ")?;
            let addresses = addresses
                .split(", ")
                .filter_map(|a| a.parse().ok())
                .collect();
            Some((name.to_owned(), addresses))
        })
        .collect()
}
