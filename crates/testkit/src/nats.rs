//! A real three-node NATS cluster with JetStream and MQTT on free loopback
//! ports, for end-to-end tests of the proxy in front of a clustered broker.
//! Every node is killed on drop.
//!
//! NATS speaks MQTT 3.1.1 only, keeps MQTT sessions and QoS 1 messages in
//! JetStream streams (`$MQTT_sess`, `$MQTT_msgs`, ...) and needs a JetStream
//! meta leader before its first MQTT client can connect; [`NatsCluster::start`]
//! waits for all of that by polling each node's monitoring endpoint and by
//! connecting one MQTT client to each node.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{free_port, http, wait_for};

/// How to install nats-server when it is missing (`.ci/run` does it).
pub const NATS_INSTALL: &str = "apt-get install -y nats-server";

/// The nodes in a [`NatsCluster`].
pub const NODES: usize = 3;

/// How long a cluster has to form, elect its JetStream meta leader and accept
/// an MQTT client on every node.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The `nats-server` binary: on PATH, or where Debian installs it.
pub fn nats_server_path() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nats-server"))
            .collect::<Vec<_>>()
    });
    on_path
        .chain([PathBuf::from("/usr/sbin/nats-server")])
        .find(|candidate| candidate.is_file())
}

/// One node's ports, all on 127.0.0.1.
#[derive(Debug, Clone, Copy)]
struct Ports {
    client: u16,
    mqtt: u16,
    cluster: u16,
    http: u16,
}

#[derive(Debug)]
struct Node {
    name: String,
    ports: Ports,
    /// `None` once killed.
    child: Option<Child>,
    log: PathBuf,
}

/// A running three-node NATS cluster (`n0`, `n1`, `n2`) whose nodes all serve
/// MQTT, with MQTT streams replicated on every node (`stream_replicas: 3`),
/// so its sessions and QoS 1 messages survive the loss of one node.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts three nodes on free ports, each with its own JetStream store
    /// directory, and waits until they route to each other, agree on a
    /// JetStream meta leader and each answer an MQTT CONNECT with CONNACK 0.
    /// Retries with new ports if another process takes one first.
    pub fn start() -> Result<Self, String> {
        let binary = nats_server_path().ok_or_else(|| {
            format!("nats-server is not installed; install it with `{NATS_INSTALL}` (.ci/run does)")
        })?;
        let mut last_error = String::new();
        for _ in 0..3 {
            match Self::try_start(&binary) {
                Ok(cluster) => return Ok(cluster),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    fn try_start(binary: &Path) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let ports = distinct_ports();
        let mut nodes = Vec::with_capacity(NODES);
        for (index, own) in ports.iter().enumerate() {
            let name = format!("n{index}");
            let store = dir.path().join(&name);
            let routes: Vec<String> = ports
                .iter()
                .filter(|other| other.cluster != own.cluster)
                .map(|other| format!("nats-route://127.0.0.1:{}", other.cluster))
                .collect();
            let config = format!(
                "server_name: {name}\n\
                 host: 127.0.0.1\n\
                 port: {client}\n\
                 http: \"127.0.0.1:{http}\"\n\
                 jetstream {{ store_dir: {store:?} }}\n\
                 mqtt {{ host: 127.0.0.1, port: {mqtt}, stream_replicas: {NODES} }}\n\
                 cluster {{ name: fleet, host: 127.0.0.1, port: {cluster}, routes: [{routes}] }}\n",
                client = own.client,
                http = own.http,
                mqtt = own.mqtt,
                cluster = own.cluster,
                routes = routes.join(", "),
            );
            let config_path = dir.path().join(format!("{name}.conf"));
            std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
            let log = dir.path().join(format!("{name}.log"));
            let out = File::create(&log).map_err(|e| e.to_string())?;
            let err = out.try_clone().map_err(|e| e.to_string())?;
            let child = Command::new(binary)
                .arg("-c")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
            nodes.push(Node {
                name,
                ports: *own,
                child: Some(child),
                log,
            });
        }
        let mut cluster = Self { nodes, _dir: dir };
        // Dropping the cluster on error kills whatever started.
        cluster.wait_ready()?;
        Ok(cluster)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let ready = wait_for(
            "the NATS cluster to form, elect a JetStream meta leader and serve MQTT",
            READY_TIMEOUT,
            || {
                if let Some(exited) = self.exited() {
                    return Some(Err(exited));
                }
                let formed = (0..NODES).all(|node| {
                    let routes = self.monitor(node, "/routez").ok();
                    let meta = self.monitor(node, "/jsz").ok();
                    routes.is_some_and(|r| r["num_routes"].as_u64() == Some(NODES as u64 - 1))
                        && meta.is_some_and(|m| {
                            m["meta_cluster"]["leader"]
                                .as_str()
                                .is_some_and(|leader| !leader.is_empty())
                        })
                });
                // The first MQTT client creates the MQTT streams (replicated
                // on every node); each node then answers CONNACK 0.
                let serving = formed
                    && (0..NODES).all(|node| {
                        mqtt_connack(self.mqtt_port(node), &format!("nats-ready-{node}")) == Some(0)
                    });
                serving.then_some(Ok(()))
            },
        );
        match ready {
            Ok(Ok(())) => Ok(()),
            Ok(Err(exited)) => Err(exited),
            Err(timeout) => Err(format!("{timeout}\n{}", self.logs())),
        }
    }

    /// `Some(why)` when a node that was not killed has exited.
    fn exited(&mut self) -> Option<String> {
        let mut exited = None;
        for node in &mut self.nodes {
            if let Some(child) = &mut node.child {
                if let Ok(Some(status)) = child.try_wait() {
                    exited = Some(format!("nats-server {} exited with {status}", node.name));
                }
            }
        }
        exited.map(|why| format!("{why} (a port taken?)\n{}", self.logs()))
    }

    /// The MQTT ports of the nodes, in node order.
    pub fn mqtt_ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.ports.mqtt).collect()
    }

    /// The MQTT port of `node` (0, 1 or 2).
    pub fn mqtt_port(&self, node: usize) -> u16 {
        self.nodes[node].ports.mqtt
    }

    /// The NATS client port of `node`.
    pub fn client_port(&self, node: usize) -> u16 {
        self.nodes[node].ports.client
    }

    /// The monitoring (`http`) port of `node`.
    pub fn http_port(&self, node: usize) -> u16 {
        self.nodes[node].ports.http
    }

    /// `node`'s monitoring endpoint `path` (`/connz`, `/jsz?streams=true`, ...) as JSON.
    pub fn monitor(&self, node: usize, path: &str) -> Result<Value, String> {
        let (status, body) = http::get(self.http_port(node), path)?;
        if status != 200 {
            return Err(format!(
                "GET {path} on {}: {status} {body}",
                self.nodes[node].name
            ));
        }
        serde_json::from_str(&body).map_err(|e| format!("GET {path}: {e}: {body}"))
    }

    /// Whether `node` is running (not killed).
    pub fn is_alive(&self, node: usize) -> bool {
        self.nodes[node].child.is_some()
    }

    /// The live node holding an MQTT connection of `client_id`, from each
    /// node's `/connz?mqtt_client=`.
    pub fn node_of_mqtt_client(&self, client_id: &str) -> Option<usize> {
        (0..NODES).filter(|&n| self.is_alive(n)).find(|&node| {
            self.monitor(node, &format!("/connz?mqtt_client={client_id}"))
                .is_ok_and(|connz| connz["num_connections"].as_u64().unwrap_or(0) > 0)
        })
    }

    /// The JetStream `stream`'s details (`config`, `state`, `cluster`) as
    /// `node` sees them, from its `/jsz?streams=true`.
    fn stream_detail(&self, node: usize, stream: &str) -> Result<Value, String> {
        let jsz = self.monitor(node, "/jsz?streams=true")?;
        jsz["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|account| account["stream_detail"].as_array().into_iter().flatten())
            .find(|s| s["name"] == stream)
            .cloned()
            .ok_or_else(|| format!("no stream {stream} on {}", self.nodes[node].name))
    }

    /// The live node leading the JetStream `stream` (`$MQTT_msgs`, `$MQTT_sess`, ...).
    pub fn stream_leader(&self, stream: &str) -> Result<usize, String> {
        let live = (0..NODES)
            .find(|&n| self.is_alive(n))
            .ok_or("every node is killed")?;
        let detail = self.stream_detail(live, stream)?;
        let leader = detail["cluster"]["leader"]
            .as_str()
            .ok_or_else(|| format!("stream {stream} has no leader: {detail}"))?;
        self.nodes
            .iter()
            .position(|n| n.name == leader && n.child.is_some())
            .ok_or_else(|| format!("stream {stream}'s leader {leader} is not running"))
    }

    /// How many messages the JetStream `stream` holds, as its leader reports
    /// it: what the cluster has committed.
    pub fn stream_messages(&self, stream: &str) -> Result<u64, String> {
        let detail = self.stream_detail(self.stream_leader(stream)?, stream)?;
        detail["state"]["messages"]
            .as_u64()
            .ok_or_else(|| format!("stream {stream} reports no message count: {detail}"))
    }

    /// Makes `node` the leader of the JetStream `stream`: asks the current
    /// leader to step down (JetStream's API, over NATS's own protocol) until
    /// the cluster elects `node`. Killing `node` afterwards makes the cluster
    /// elect a new leader for the stream, the hard case of a node failure.
    pub fn lead_stream(&self, stream: &str, node: usize) -> Result<(), String> {
        let mut steps = 0;
        loop {
            let leader = wait_for(&format!("a leader for {stream}"), READY_TIMEOUT, || {
                self.stream_leader(stream).ok()
            })?;
            if leader == node {
                return Ok(());
            }
            if steps == 10 {
                return Err(format!(
                    "{stream}: {steps} step-downs, never led by n{node}"
                ));
            }
            steps += 1;
            let subject = format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}");
            let answer = nats_request(self.client_port(leader), &subject)?;
            if !answer.contains("\"success\":true") {
                return Err(format!("{subject}: {answer}"));
            }
            wait_for(
                &format!("{stream}'s leader to step down"),
                READY_TIMEOUT,
                || self.stream_leader(stream).ok().filter(|&now| now != leader),
            )?;
        }
    }

    /// Kills `node` with SIGKILL: no goodbye to its clients or its peers.
    pub fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every node's log so far, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|node| {
                let text = std::fs::read_to_string(&node.log).unwrap_or_default();
                format!("--- nats-server {} ---\n{text}", node.name)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in 0..self.nodes.len() {
            self.kill(node);
        }
    }
}

/// Four free ports per node, no two alike.
fn distinct_ports() -> Vec<Ports> {
    let mut taken = BTreeSet::new();
    let mut next = || loop {
        let port = free_port();
        if taken.insert(port) {
            return port;
        }
    };
    (0..NODES)
        .map(|_| Ports {
            client: next(),
            mqtt: next(),
            cluster: next(),
            http: next(),
        })
        .collect()
}

/// A request over NATS's client protocol with an empty body; the reply's body.
fn nats_request(port: u16, subject: &str) -> Result<String, String> {
    let failed = |e: std::io::Error| format!("NATS request {subject} on port {port}: {e}");
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(failed)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(failed)?;
    let request = format!(
        "CONNECT {{\"verbose\":false}}\r\nSUB _INBOX.testkit 1\r\nPUB {subject} _INBOX.testkit 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(failed)?;
    // INFO, then MSG with the reply; PING is answered in case the server asks.
    let mut received = String::new();
    let mut buf = [0u8; 4096];
    loop {
        let read = stream.read(&mut buf).map_err(failed)?;
        if read == 0 {
            return Err(format!("NATS closed the connection: {received}"));
        }
        received.push_str(&String::from_utf8_lossy(&buf[..read]));
        if received.contains("PING\r\n") {
            received = received.replace("PING\r\n", "");
            stream.write_all(b"PONG\r\n").map_err(failed)?;
        }
        if let Some((_, message)) = received.split_once("MSG _INBOX.testkit 1 ") {
            // `<size>\r\n<body>\r\n`
            if let Some((size, rest)) = message.split_once("\r\n") {
                let size: usize = size.trim().parse().map_err(|_| received.clone())?;
                if rest.len() >= size {
                    return Ok(rest[..size].to_owned());
                }
            }
        }
    }
}

/// Sends an MQTT 3.1.1 CONNECT (clean session) for `client_id` and returns the
/// CONNACK return code, or `None` when the node closes, stalls or is down.
fn mqtt_connack(port: u16, client_id: &str) -> Option<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let id = client_id.as_bytes();
    let id_len = u8::try_from(id.len()).ok().filter(|len| *len < 100)?;
    let mut connect = vec![0x10, 12 + id_len];
    connect.extend_from_slice(b"\x00\x04MQTT\x04\x02\x00\x1e\x00");
    connect.push(id_len);
    connect.extend_from_slice(id);
    stream.write_all(&connect).ok()?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).ok()?;
    // A DISCONNECT, as a well-behaved client would send it.
    let _ = stream.write_all(&[0xe0, 0x00]);
    (connack[..2] == [0x20, 0x02]).then_some(connack[3])
}
