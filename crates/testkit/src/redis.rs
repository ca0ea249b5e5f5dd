//! A real redis-server (Debian's) on a free loopback port, plain or TLS, and
//! a three-master Redis Cluster, for the `redis` store's tests. Nothing is
//! persisted (`--save "" --appendonly no`): a restart starts empty, which
//! is what the store must survive. Every server is killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_for};

/// How to install redis-server and redis-cli when missing (`.ci/run` does it).
pub const REDIS_INSTALL: &str = "apt-get install -y redis-server redis-tools";

/// How long a server has to accept commands, or a cluster to be formed.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The binary `name` (`redis-server`, `redis-cli`): on PATH, or where
/// Debian installs it.
fn binary(name: &str) -> Result<PathBuf, String> {
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .collect::<Vec<_>>()
    });
    on_path
        .chain([PathBuf::from("/usr/bin").join(name)])
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("{name} is not installed; install it with `{REDIS_INSTALL}`"))
}

/// The files of a TLS server: CA, certificate and key, PEM.
#[derive(Debug, Clone)]
struct TlsFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// A running redis-server on `127.0.0.1:port()`.
#[derive(Debug)]
pub struct Redis {
    child: Option<Child>,
    port: u16,
    tls: Option<TlsFiles>,
    cluster: bool,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts redis-server on a free port (retrying when another process
    /// takes the port first) and waits until it answers PING.
    pub fn start() -> Result<Self, String> {
        Self::start_with(None, false)
    }

    /// Starts redis-server speaking TLS only (`rediss://`) with the
    /// server certificate `cert_pem` and key `key_pem` (paths to PEM files)
    /// issued by the CA in `ca_pem`; clients need no certificate.
    pub fn start_tls(ca_pem: &Path, cert_pem: &Path, key_pem: &Path) -> Result<Self, String> {
        let tls = TlsFiles {
            ca: ca_pem.to_path_buf(),
            cert: cert_pem.to_path_buf(),
            key: key_pem.to_path_buf(),
        };
        Self::start_with(Some(tls), false)
    }

    fn start_with(tls: Option<TlsFiles>, cluster: bool) -> Result<Self, String> {
        binary("redis-server")?;
        binary("redis-cli")?;
        let mut last_error = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let mut redis = Self {
                child: None,
                port: free_port(),
                tls: tls.clone(),
                cluster,
                dir,
            };
            match redis.spawn() {
                Ok(()) => return Ok(redis),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    /// Runs redis-server on `self.port` and waits until it answers PING.
    fn spawn(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let mut command = Command::new(binary("redis-server")?);
        command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        match &self.tls {
            Some(tls) => {
                command
                    .args(["--port", "0", "--tls-port", &port])
                    .arg("--tls-cert-file")
                    .arg(&tls.cert)
                    .arg("--tls-key-file")
                    .arg(&tls.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&tls.ca)
                    .args(["--tls-auth-clients", "no"]);
            }
            None => {
                command.args(["--port", &port]);
            }
        }
        if self.cluster {
            // The node's identity and slots survive a restart in this file
            // (the data does not): a restarted node rejoins empty.
            command
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .arg("--cluster-config-file")
                .arg(self.dir.path().join("nodes.conf"));
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        let ready = wait_for("redis-server to answer PING", READY_TIMEOUT, || {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(format!(
                    "redis-server exited with {status} (port {} taken?)",
                    self.port
                )));
            }
            self.cli(&["ping"])
                .ok()
                .filter(|answer| answer.trim() == "PONG")
                .map(|_| Ok(()))
        });
        match ready.and_then(|started| started) {
            Ok(()) => {
                self.child = Some(child);
                Ok(())
            }
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(error)
            }
        }
    }

    /// The port it listens on (TLS only for [`start_tls`](Self::start_tls)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:port`, or `rediss://` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` against this server with `args`; its output.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let mut command = Command::new(binary("redis-cli")?);
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(tls) = &self.tls {
            command.arg("--tls").arg("--cacert").arg(&tls.ca);
        }
        if self.cluster {
            // Follow MOVED redirections to the node holding the key.
            command.arg("-c");
        }
        let output = command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run redis-cli: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// Kills the server (SIGKILL): its clients see the connection drop.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty (after
    /// [`kill`](Self::kill), or killing it first).
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        // The port was ours a moment ago; another process may take it in
        // between, which fails the test rather than moving the server.
        self.spawn()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The masters of a [`RedisCluster`].
pub const CLUSTER_NODES: usize = 3;

/// A Redis Cluster of three masters (no replicas) on free loopback ports.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Redis>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, joins them with
    /// `redis-cli --cluster create` (the slots split in three) and waits
    /// until every node says `cluster_state:ok`.
    pub fn start() -> Result<Self, String> {
        let nodes = (0..CLUSTER_NODES)
            .map(|_| Redis::start_with(None, true))
            .collect::<Result<Vec<_>, _>>()?;
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addresses.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let output = Command::new(binary("redis-cli")?)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run redis-cli: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let cluster = Self { nodes };
        cluster.wait_ok()?;
        Ok(cluster)
    }

    /// Waits until every running node says `cluster_state:ok`.
    pub fn wait_ok(&self) -> Result<(), String> {
        wait_for("the redis cluster to be ok", READY_TIMEOUT, || {
            self.nodes
                .iter()
                .filter(|node| node.child.is_some())
                .all(|node| {
                    node.cli(&["cluster", "info"])
                        .is_ok_and(|info| info.contains("cluster_state:ok"))
                })
                .then_some(())
        })
    }

    /// `redis://127.0.0.1:port` of every node.
    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes.iter().map(Redis::url).collect()
    }

    /// Node `index` (to kill or restart it, or to ask it with `cli`, which
    /// follows redirections to the node holding a key).
    pub fn node(&mut self, index: usize) -> &mut Redis {
        &mut self.nodes[index]
    }

    /// Runs `redis-cli -c` against the first running node.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        self.nodes
            .iter()
            .find(|node| node.child.is_some())
            .ok_or_else(|| "no node is running".to_owned())?
            .cli(args)
    }
}
