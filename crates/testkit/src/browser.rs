//! A real browser for the end-to-end tests: Debian's headless Chromium
//! (`/usr/bin/chromium`, installed by `.ci/run`) opening one URL with a fresh
//! profile and no network beyond what the page asks for, killed with its whole
//! process group when dropped. A missing Chromium is an error that says how to
//! install it, never a reason to skip.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::wait_for;

/// Where Debian's `chromium` package installs the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// What to do when Chromium is missing.
pub const CHROMIUM_INSTALL: &str =
    "run bash .ci/run (it installs Debian's chromium when /usr/bin/chromium is missing) or apt-get install -y chromium";

/// `/usr/bin/chromium`, or how to install it.
pub fn chromium_path() -> Result<PathBuf, String> {
    let path = PathBuf::from(CHROMIUM);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{CHROMIUM} is missing: {CHROMIUM_INSTALL}"))
    }
}

/// A headless Chromium showing one page, in its own process group.
#[derive(Debug)]
pub struct Chromium {
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
    killed: bool,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// Starts headless Chromium on `url` with a new, empty profile, no
    /// sandbox (tests run as root in containers), no GPU, no QUIC and no
    /// background traffic (first-run, component updates, sync).
    pub fn open(url: &str) -> Result<Self, String> {
        let binary = chromium_path()?;
        let profile = tempfile::tempdir().map_err(|e| format!("a Chromium profile: {e}"))?;
        let mut child = Command::new(&binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that dropping it kills the renderer,
            // GPU and utility processes too.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        let output = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take(), output.clone());
        collect(child.stderr.take(), output.clone());
        Ok(Self {
            child,
            output,
            killed: false,
            _profile: profile,
        })
    }

    /// What Chromium printed so far (stdout and stderr, interleaved).
    pub fn output(&self) -> Vec<String> {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Its exit status, if it already exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills Chromium's process group and waits (up to 10 s) until no
    /// process of the group is left.
    pub fn close(mut self) -> Result<(), String> {
        self.kill_group();
        let group = format!("-{}", self.child.id());
        wait_for(
            "Chromium's processes to exit",
            Duration::from_secs(10),
            || {
                let alive = Command::new("kill")
                    .args(["-0", "--", &group])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|status| status.success());
                (!alive).then_some(())
            },
        )
    }

    fn kill_group(&mut self) {
        if std::mem::replace(&mut self.killed, true) {
            return;
        }
        // The group leader is not reaped before `wait` below, so its id
        // still names this group.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        self.kill_group();
    }
}

fn collect<R: Read + Send + 'static>(pipe: Option<R>, output: Arc<Mutex<Vec<String>>>) {
    let Some(pipe) = pipe else { return };
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            output.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    });
}
