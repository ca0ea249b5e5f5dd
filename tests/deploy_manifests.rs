//! The deployment artefacts agree with the configuration they ship and with
//! the host that runs it, so that they cannot drift apart:
//!
//! - `kubectl kustomize deploy/kubernetes` renders, and the rendered
//!   Deployment, Services, ServiceMonitor, HorizontalPodAutoscaler and
//!   PodDisruptionBudget match the ConfigMap's `zilla.yaml` (ports, probes,
//!   paths, environment, drain timing) and the `Containerfile` (binary,
//!   command, configuration path, exposed ports);
//! - the ConfigMap's `zilla.yaml` builds with the real host, laid out as the
//!   kubelet lays out the pod's volume, with the Deployment's arguments and
//!   environment;
//! - a ConfigMap update, done as the kubelet does it (a new timestamped
//!   directory and an atomic swap of the `..data` symlink), reloads the host.
//!
//! kubectl is required: without it these tests fail, never skip. `.ci/run`
//! installs it (Debian's `kubernetes-client`); `KUBECTL=/path/to/kubectl`
//! picks another one.

#![cfg(unix)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_yaml::Value;
use zilla as _;
use zilla_testkit::clients::repo_root;
use zilla_testkit::ZillaProcess;

const ZILLA: &str = env!("CARGO_BIN_EXE_zilla");
const TIMEOUT: Duration = Duration::from_secs(15);

/// What the Secret `zilla-tls` holds in the tests (it is created out of band
/// in a cluster): the seed's keystore and its password.
const SECRET_FILES: &[(&str, &str)] =
    &[("localhost.p12", "examples/mqtt.proxy.jwt/tls/localhost.p12")];
const SECRET_LITERALS: &[(&str, &str)] = &[("keystore-password", "generated")];

/// Zilla's defaults for the drain timing when `-P` does not set them
/// (docs/configuration.md, "Health checks and shutdown").
const DEFAULT_SHUTDOWN_DELAY_WITH_HEALTH: f64 = 2.0;
const DEFAULT_SHUTDOWN_GRACE: f64 = 5.0;

// ---------------------------------------------------------------------------
// Rendering and reading the manifests

fn kubectl() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_owned())
}

/// `kubectl kustomize deploy/kubernetes`, one value per document.
fn render() -> Vec<Value> {
    let kubectl = kubectl();
    let output = Command::new(&kubectl)
        .arg("kustomize")
        .arg(repo_root().join("deploy/kubernetes"))
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run `{kubectl}` ({error}): these tests render deploy/kubernetes with \
                 `kubectl kustomize`; `bash .ci/run` installs kubectl (apt-get install kubernetes-client)"
            )
        });
    assert!(
        output.status.success(),
        "`{kubectl} kustomize deploy/kubernetes` failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("kustomize writes UTF-8");
    // Documents are separated by `---` lines; a `---` inside a block scalar
    // (the ConfigMap's zilla.yaml) is indented, so it is not one of them.
    let mut documents = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line == "---" {
            documents.push(std::mem::take(&mut current));
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    documents.push(current);
    documents
        .iter()
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml::from_str(d).unwrap_or_else(|e| panic!("{e}:\n{d}")))
        .collect()
}

fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("expected a string, found {value:?}"))
}

fn number(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("expected a number, found {value:?}"))
}

fn list(value: &Value) -> &[Value] {
    value.as_sequence().map(Vec::as_slice).unwrap_or(&[])
}

fn entries(value: &Value) -> Vec<(&str, &Value)> {
    value
        .as_mapping()
        .map(|m| m.iter().map(|(k, v)| (text(k), v)).collect())
        .unwrap_or_default()
}

fn labels(value: &Value) -> BTreeMap<String, String> {
    entries(value)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), text(v).to_owned()))
        .collect()
}

/// Every selector label is among `target`'s labels.
fn selects(selector: &BTreeMap<String, String>, target: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| target.get(k) == Some(v))
}

fn of_kind<'a>(documents: &'a [Value], kind: &str) -> Vec<&'a Value> {
    documents
        .iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

fn one_of_kind<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(documents, kind);
    assert_eq!(
        found.len(),
        1,
        "expected one {kind} in the rendered manifests"
    );
    found[0]
}

fn named<'a>(documents: &'a [Value], kind: &str, name: &str) -> &'a Value {
    of_kind(documents, kind)
        .into_iter()
        .find(|d| d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} named {name} in the rendered manifests"))
}

// ---------------------------------------------------------------------------
// What the Deployment runs

/// `zilla start` arguments: the configuration path and the `-P` properties.
struct StartArgs {
    config: String,
    properties: BTreeMap<String, String>,
}

fn start_args(args: &[String]) -> StartArgs {
    assert_eq!(args.first().map(String::as_str), Some("start"), "{args:?}");
    let mut config = None;
    let mut properties = BTreeMap::new();
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "-c" | "--config" => config = rest.next().cloned(),
            "-P" | "--property" => {
                let property = rest.next().expect("-P takes NAME=VALUE");
                let (name, value) = property.split_once('=').expect("-P takes NAME=VALUE");
                properties.insert(name.to_owned(), value.to_owned());
            }
            _ => {}
        }
    }
    StartArgs {
        config: config.unwrap_or_else(|| "zilla.yaml".to_owned()),
        properties,
    }
}

fn strings(value: &Value) -> Vec<String> {
    list(value).iter().map(|v| text(v).to_owned()).collect()
}

/// The pod's one container.
fn container(deployment: &Value) -> &Value {
    let containers = list(&deployment["spec"]["template"]["spec"]["containers"]);
    assert_eq!(containers.len(), 1, "one container: the proxy");
    &containers[0]
}

/// Container port numbers by name.
fn container_ports(container: &Value) -> BTreeMap<String, u16> {
    list(&container["ports"])
        .iter()
        .map(|p| {
            assert_eq!(p["protocol"].as_str().unwrap_or("TCP"), "TCP");
            (
                text(&p["name"]).to_owned(),
                number(&p["containerPort"]) as u16,
            )
        })
        .collect()
}

/// A port given by name or number, as the container port it means.
fn resolve_port(port: &Value, ports: &BTreeMap<String, u16>) -> u16 {
    match port {
        Value::String(name) => *ports
            .get(name)
            .unwrap_or_else(|| panic!("no container port named {name}; the ports are {ports:?}")),
        other => number(other) as u16,
    }
}

/// The projected volume at the configuration's directory: what file each
/// item becomes (path relative to the mount) and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    ConfigMap { name: String, key: String },
    Secret { name: String, key: String },
}

fn mounted_files(deployment: &Value, container: &Value, dir: &str) -> BTreeMap<String, Source> {
    let mounts: Vec<&Value> = list(&container["volumeMounts"])
        .iter()
        .filter(|m| m["mountPath"].as_str() == Some(dir))
        .collect();
    assert_eq!(mounts.len(), 1, "one volume mounted at {dir}");
    assert!(
        mounts[0]["subPath"].is_null(),
        "no subPath: a subPath mount never sees the kubelet's updates, so the host would never reload"
    );
    let volume_name = text(&mounts[0]["name"]);
    let volume = list(&deployment["spec"]["template"]["spec"]["volumes"])
        .iter()
        .find(|v| v["name"].as_str() == Some(volume_name))
        .unwrap_or_else(|| panic!("no volume {volume_name}"));
    let mut files = BTreeMap::new();
    for source in list(&volume["projected"]["sources"]) {
        for kind in ["configMap", "secret"] {
            let source = &source[kind];
            if source.is_null() {
                continue;
            }
            let name = text(&source["name"]).to_owned();
            let items = list(&source["items"]);
            assert!(
                !items.is_empty(),
                "{kind} {name}: list its items, so each file's path is fixed here"
            );
            for item in items {
                let path = text(&item["path"]).to_owned();
                let key = text(&item["key"]).to_owned();
                let name = name.clone();
                let from = match kind {
                    "configMap" => Source::ConfigMap { name, key },
                    _ => Source::Secret { name, key },
                };
                assert!(
                    files.insert(path.clone(), from).is_none(),
                    "{path} is projected twice"
                );
            }
        }
    }
    assert!(
        !files.is_empty(),
        "the volume at {dir} is a projected volume of a ConfigMap and a Secret"
    );
    files
}

// ---------------------------------------------------------------------------
// What the configuration says

struct Zilla {
    yaml: Value,
    text: String,
}

impl Zilla {
    fn parse(text: &str) -> Self {
        Self {
            yaml: serde_yaml::from_str(text).expect("the ConfigMap's zilla.yaml is YAML"),
            text: text.to_owned(),
        }
    }

    fn bindings(&self, kind: &str, kind_of: &str) -> Vec<(&str, &Value)> {
        entries(&self.yaml["bindings"])
            .into_iter()
            .filter(|(_, b)| {
                b["type"].as_str() == Some(kind) && b["kind"].as_str() == Some(kind_of)
            })
            .collect()
    }

    /// The ports the tcp servers listen on.
    fn tcp_server_ports(&self) -> BTreeSet<u16> {
        let mut ports = BTreeSet::new();
        for (name, binding) in self.bindings("tcp", "server") {
            let host = binding["options"]["host"].as_str().unwrap_or("0.0.0.0");
            assert!(
                host == "0.0.0.0" || host == "::",
                "{name} listens on {host}: in a pod, only an unspecified address is reachable from the Service"
            );
            let port = &binding["options"]["port"];
            let listed = match port {
                Value::Sequence(items) => items.clone(),
                other => vec![other.clone()],
            };
            for port in listed {
                match port.as_u64() {
                    Some(port) if port > 0 => {
                        ports.insert(port as u16);
                    }
                    _ => panic!("{name}: port {port:?} cannot be a container port (a fixed number is needed)"),
                }
            }
        }
        assert!(!ports.is_empty(), "the configuration has a tcp server");
        ports
    }

    /// The prometheus exporters' endpoints: (port, path).
    fn prometheus_endpoints(&self) -> Vec<(u16, String)> {
        entries(&self.yaml["telemetry"]["exporters"])
            .into_iter()
            .filter(|(_, e)| e["type"].as_str() == Some("prometheus"))
            .flat_map(|(_, e)| list(&e["options"]["endpoints"]).to_vec())
            .map(|endpoint| {
                (
                    number(&endpoint["port"]) as u16,
                    endpoint["path"].as_str().unwrap_or("/metrics").to_owned(),
                )
            })
            .collect()
    }

    /// The key and trust stores the filesystem vaults read, relative to the
    /// configuration's directory.
    fn vault_files(&self) -> Vec<String> {
        entries(&self.yaml["vaults"])
            .into_iter()
            .filter(|(_, v)| v["type"].as_str() == Some("filesystem"))
            .flat_map(|(_, v)| {
                ["keys", "trust", "signers"]
                    .into_iter()
                    .filter_map(|store| v["options"][store]["store"].as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The `${{env.NAME}}` names the configuration uses.
    fn env_names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let mut rest = self.text.as_str();
        while let Some(start) = rest.find("${{env.") {
            rest = &rest[start + "${{env.".len()..];
            let end = rest.find("}}").expect("an expression is closed");
            names.insert(rest[..end].trim().to_owned());
        }
        names
    }
}

// ---------------------------------------------------------------------------
// The Containerfile

const INSTRUCTIONS: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
    "MAINTAINER",
];

#[derive(Debug, Default)]
struct Stage {
    name: Option<String>,
    instructions: Vec<(String, String)>,
}

/// The stages of a Containerfile, each with its instructions (continuation
/// lines joined, comments dropped); panics on anything a builder would refuse
/// that is cheap to see here.
fn parse_containerfile(text: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    assert!(
        current.is_empty(),
        "the Containerfile ends inside a continued line"
    );
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let instruction = word.to_ascii_uppercase();
        assert!(
            INSTRUCTIONS.contains(&instruction.as_str()),
            "unknown instruction `{word}` in `{line}`"
        );
        let rest = rest.trim().to_owned();
        if instruction == "FROM" {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let name = match words.as_slice() {
                [_image] => None,
                [_image, as_, name] if as_.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
                _ => panic!("FROM takes an image and an optional `AS name`: `{line}`"),
            };
            stages.push(Stage {
                name,
                instructions: Vec::new(),
            });
        }
        let stage = stages
            .last_mut()
            .expect("the Containerfile starts with FROM");
        stage.instructions.push((instruction, rest));
    }
    stages
}

impl Stage {
    fn all(&self, instruction: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|(i, _)| i == instruction)
            .map(|(_, rest)| rest.as_str())
            .collect()
    }

    /// The last `instruction` in exec (JSON) form.
    fn exec(&self, instruction: &str) -> Vec<String> {
        let all = self.all(instruction);
        let last = all
            .last()
            .unwrap_or_else(|| panic!("the image has no {instruction}"));
        serde_json::from_str(last).unwrap_or_else(|_| {
            panic!(
                "{instruction} `{last}` is not in exec form: in shell form /bin/sh is PID 1 and \
                 SIGTERM never reaches zilla, so it would not drain (and the runtime image has no shell)"
            )
        })
    }
}

// ---------------------------------------------------------------------------
// The kubelet's way of writing a ConfigMap or Secret volume

static GENERATION: AtomicU32 = AtomicU32::new(0);

/// Writes `files` into `dir` as the kubelet's atomic writer updates a
/// ConfigMap, Secret or projected volume: the files go into a new
/// `..<timestamp>` directory, a `..data_tmp` symlink to it is renamed over
/// `..data` (the one atomic step), each top-level name is a symlink into
/// `..data`, and the previous timestamped directory is removed.
fn project(dir: &Path, files: &[(&str, Vec<u8>)]) {
    let generation = format!(
        "..2026_01_01_00_00_00.{}",
        GENERATION.fetch_add(1, Ordering::Relaxed)
    );
    let payload = dir.join(&generation);
    for (path, content) in files {
        let file = payload.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, content).unwrap();
    }
    let previous = std::fs::read_link(dir.join("..data")).ok();
    let staged = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&generation, &staged).unwrap();
    std::fs::rename(&staged, dir.join("..data")).unwrap();
    for (path, _) in files {
        let top = Path::new(path).components().next().unwrap().as_os_str();
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(top), &link).unwrap();
        }
    }
    if let Some(previous) = previous {
        std::fs::remove_dir_all(dir.join(previous)).unwrap();
    }
}

/// What a Secret key holds in these tests.
fn secret_value(key: &str) -> Vec<u8> {
    if let Some((_, file)) = SECRET_FILES.iter().find(|(k, _)| *k == key) {
        return std::fs::read(repo_root().join(file)).unwrap();
    }
    if let Some((_, literal)) = SECRET_LITERALS.iter().find(|(k, _)| *k == key) {
        return literal.as_bytes().to_vec();
    }
    panic!("the Deployment reads Secret key `{key}`, which these tests do not know; add it to SECRET_FILES or SECRET_LITERALS")
}

// ---------------------------------------------------------------------------
// The tests

/// What the rendered manifests say.
struct Rendered {
    documents: Vec<Value>,
    deployment: Value,
    args: StartArgs,
    config_dir: String,
    config_file: String,
    files: BTreeMap<String, Source>,
    zilla: Zilla,
}

fn rendered() -> Rendered {
    let documents = render();
    let deployment = one_of_kind(&documents, "Deployment").clone();
    let container = container(&deployment);
    let args = start_args(&strings(&container["args"]));
    let (config_dir, config_file) = args
        .config
        .rsplit_once('/')
        .map(|(d, f)| (d.to_owned(), f.to_owned()))
        .expect("the configuration path is absolute");
    let files = mounted_files(&deployment, container, &config_dir);
    let zilla = match files.get(&config_file) {
        Some(Source::ConfigMap { name, key }) => {
            let config_map = named(&documents, "ConfigMap", name);
            Zilla::parse(text(&config_map["data"][key.as_str()]))
        }
        other => panic!("{config_file} in {config_dir} comes from a ConfigMap, not {other:?}"),
    };
    Rendered {
        documents,
        deployment,
        args,
        config_dir,
        config_file,
        files,
        zilla,
    }
}

impl Rendered {
    fn container(&self) -> &Value {
        container(&self.deployment)
    }

    fn ports(&self) -> BTreeMap<String, u16> {
        container_ports(self.container())
    }

    fn pod_labels(&self) -> BTreeMap<String, String> {
        labels(&self.deployment["spec"]["template"]["metadata"]["labels"])
    }

    fn health_port(&self) -> u16 {
        self.args
            .properties
            .get("zilla.engine.health.port")
            .expect("-P zilla.engine.health.port: the probes need the health endpoints")
            .parse()
            .expect("a port number")
    }

    /// The one prometheus endpoint: (port, path).
    fn metrics(&self) -> (u16, String) {
        let endpoints = self.zilla.prometheus_endpoints();
        assert_eq!(
            endpoints.len(),
            1,
            "one prometheus endpoint, scraped by the ServiceMonitor"
        );
        endpoints[0].clone()
    }

    /// What the pod must expose: the tcp servers', the exporter's and the
    /// health endpoints' ports.
    fn listening(&self) -> BTreeSet<u16> {
        let mut ports = self.zilla.tcp_server_ports();
        ports.insert(self.metrics().0);
        ports.insert(self.health_port());
        ports
    }

    fn services(&self) -> Vec<&Value> {
        of_kind(&self.documents, "Service")
    }

    /// The one Service whose target is `port`.
    fn service_of(&self, port: u16) -> &Value {
        let ports = self.ports();
        let found: Vec<&Value> = self
            .services()
            .into_iter()
            .filter(|s| {
                list(&s["spec"]["ports"])
                    .iter()
                    .any(|p| resolve_port(&p["targetPort"], &ports) == port)
            })
            .collect();
        assert_eq!(found.len(), 1, "one Service targets port {port}");
        found[0]
    }

    fn load_balancer(&self) -> &Value {
        let found: Vec<&Value> = self
            .services()
            .into_iter()
            .filter(|s| s["spec"]["type"].as_str() == Some("LoadBalancer"))
            .collect();
        assert_eq!(found.len(), 1, "one LoadBalancer Service");
        found[0]
    }
}

#[test]
fn container_ports_probes_and_drain_follow_the_configuration() {
    let rendered = rendered();
    let container = rendered.container();
    let ports = rendered.ports();
    let declared: BTreeSet<u16> = ports.values().copied().collect();
    assert_eq!(
        declared,
        rendered.listening(),
        "container ports = tcp server ports + prometheus port + health port"
    );

    for (probe, path) in [
        ("livenessProbe", "/health/live"),
        ("readinessProbe", "/health/ready"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(
            resolve_port(&get["port"], &ports),
            rendered.health_port(),
            "{probe} port"
        );
    }

    // The kubelet's SIGKILL comes after the host's delay and grace.
    let seconds = |name: &str, default: f64| -> f64 {
        rendered
            .args
            .properties
            .get(name)
            .map_or(default, |v| v.parse().expect("seconds"))
    };
    let drain = seconds(
        "zilla.engine.shutdown.delay",
        DEFAULT_SHUTDOWN_DELAY_WITH_HEALTH,
    ) + seconds("zilla.engine.shutdown.grace", DEFAULT_SHUTDOWN_GRACE);
    let pod = &rendered.deployment["spec"]["template"]["spec"];
    let termination = number(&pod["terminationGracePeriodSeconds"]) as f64;
    assert!(
        termination > drain,
        "terminationGracePeriodSeconds {termination} must exceed shutdown.delay + shutdown.grace = {drain}"
    );

    // The vaults' stores are projected beside zilla.yaml from a Secret, and
    // secret environment comes from that same Secret.
    let mut secrets = BTreeSet::new();
    for store in rendered.zilla.vault_files() {
        match rendered.files.get(&store) {
            Some(Source::Secret { name, .. }) => {
                secrets.insert(name.clone());
            }
            other => panic!(
                "vault store {store} must be projected from a Secret into {}, found {other:?}",
                rendered.config_dir
            ),
        }
    }
    let env: BTreeMap<&str, &Value> = list(&container["env"])
        .iter()
        .map(|e| (text(&e["name"]), e))
        .collect();
    for name in rendered.zilla.env_names() {
        let entry = env.get(name.as_str()).unwrap_or_else(|| {
            panic!("zilla.yaml uses ${{{{env.{name}}}}}, which the container does not set")
        });
        let from_secret = &entry["valueFrom"]["secretKeyRef"];
        if from_secret.is_null() {
            assert!(entry["value"].is_string(), "{name} has a value");
        } else {
            let secret = text(&from_secret["name"]);
            assert!(
                secrets.contains(secret),
                "{name} comes from Secret {secret}, not {secrets:?}"
            );
        }
    }
}

#[test]
fn the_image_runs_what_the_deployment_expects() {
    let rendered = rendered();
    let container = rendered.container();
    let stages = parse_containerfile(
        &std::fs::read_to_string(repo_root().join("Containerfile")).expect("the Containerfile"),
    );
    let runtime = stages.last().unwrap();
    let entrypoint = runtime.exec("ENTRYPOINT");
    let cmd = start_args(&runtime.exec("CMD"));
    // The tag `cargo xtask image` gives by default: the workspace version.
    assert_eq!(
        container["image"].as_str(),
        Some(concat!("zilla:", env!("CARGO_PKG_VERSION"))),
        "the base runs the image `cargo xtask image` builds (images: in kustomization.yaml)"
    );
    assert!(
        container["command"].is_null(),
        "no command: the image's ENTRYPOINT {entrypoint:?} runs"
    );
    assert_eq!(
        cmd.config, rendered.args.config,
        "the image's CMD reads the mounted configuration"
    );
    assert_eq!(
        cmd.properties.get("zilla.engine.health.port"),
        rendered.args.properties.get("zilla.engine.health.port"),
        "the image's default health port is the one probed"
    );

    // The entrypoint is the binary the build stage compiled.
    let binary = &entrypoint[0];
    let copied = runtime
        .all("COPY")
        .into_iter()
        .find_map(|copy| {
            let words: Vec<&str> = copy.split_whitespace().collect();
            (words.last() == Some(&binary.as_str())).then_some(words)
        })
        .unwrap_or_else(|| panic!("no COPY puts {binary} into the runtime image"));
    let from = copied
        .iter()
        .find_map(|w| w.strip_prefix("--from="))
        .expect("the binary comes from the build stage");
    let build = stages
        .iter()
        .find(|s| s.name.as_deref() == Some(from))
        .unwrap_or_else(|| panic!("no stage named {from}"));
    let source = copied[copied.len() - 2];
    let builds = build.all("RUN").join(" ");
    assert!(
        builds.contains("cargo build --release")
            && builds.contains("-p zilla")
            && builds.contains(source),
        "the {from} stage builds the release host into {source}: {builds}"
    );

    let user = runtime.all("USER");
    let user = user.last().expect("the runtime image sets USER");
    assert!(
        user.split(':')
            .next()
            .and_then(|u| u.parse::<u32>().ok())
            .is_some_and(|uid| uid != 0),
        "USER {user}: non-root, and numeric so that runAsNonRoot can verify it"
    );
    assert!(
        stages.iter().all(|s| s.all("HEALTHCHECK").is_empty()),
        "no HEALTHCHECK: Kubernetes probes the health endpoints itself"
    );
    let exposed: BTreeSet<u16> = runtime
        .all("EXPOSE")
        .iter()
        .flat_map(|e| e.split_whitespace())
        .map(|p| p.trim_end_matches("/tcp").parse().expect("a port"))
        .collect();
    assert_eq!(
        exposed,
        rendered.listening(),
        "EXPOSE lists the container ports"
    );
    let ignored =
        std::fs::read_to_string(repo_root().join(".dockerignore")).expect(".dockerignore");
    assert!(
        ignored.lines().any(|l| l.trim() == "target/"),
        "target/ stays out of the build context"
    );
}

#[test]
fn services_and_the_service_monitor_reach_the_right_ports() {
    let rendered = rendered();
    let ports = rendered.ports();
    let pod_labels = rendered.pod_labels();

    // The public Service reaches exactly the MQTT listeners.
    let public = rendered.load_balancer();
    assert!(
        selects(&labels(&public["spec"]["selector"]), &pod_labels),
        "the LoadBalancer selects the pods"
    );
    let targeted: BTreeSet<u16> = list(&public["spec"]["ports"])
        .iter()
        .map(|p| resolve_port(&p["targetPort"], &ports))
        .collect();
    assert_eq!(
        targeted,
        rendered.zilla.tcp_server_ports(),
        "the LoadBalancer targets the tcp server ports, and only those"
    );
    let proxy_protocol: Vec<&str> = entries(&public["metadata"]["annotations"])
        .into_iter()
        .filter(|(k, v)| k.contains("proxy-protocol") && v.as_str() != Some("false"))
        .map(|(k, _)| k)
        .collect();
    if !proxy_protocol.is_empty() {
        for (name, binding) in rendered.zilla.bindings("tcp", "server") {
            assert!(
                !binding["options"]["proxy-protocol"].is_null(),
                "{proxy_protocol:?} makes the load balancer send PROXY headers; \
                 {name} must accept them (options.proxy-protocol), or every connection fails"
            );
        }
    }

    // Metrics stay inside the cluster, scraped on the exporter's path.
    let (metrics_port, metrics_path) = rendered.metrics();
    let metrics = rendered.service_of(metrics_port);
    assert_ne!(
        metrics["spec"]["type"].as_str(),
        Some("LoadBalancer"),
        "metrics are not public"
    );
    assert!(selects(&labels(&metrics["spec"]["selector"]), &pod_labels));
    let monitor = one_of_kind(&rendered.documents, "ServiceMonitor");
    assert_eq!(
        monitor["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    let wanted = labels(&monitor["spec"]["selector"]["matchLabels"]);
    assert!(
        selects(&wanted, &labels(&metrics["metadata"]["labels"])),
        "it selects the metrics Service"
    );
    assert!(
        !selects(&wanted, &labels(&public["metadata"]["labels"])),
        "and not the public one"
    );
    let names: BTreeSet<&str> = list(&metrics["spec"]["ports"])
        .iter()
        .map(|p| text(&p["name"]))
        .collect();
    for endpoint in list(&monitor["spec"]["endpoints"]) {
        assert!(names.contains(text(&endpoint["port"])), "{endpoint:?}");
        assert_eq!(
            endpoint["path"].as_str(),
            Some(metrics_path.as_str()),
            "the ServiceMonitor scrapes the exporter's path"
        );
    }
}

#[test]
fn the_autoscaler_owns_the_replicas_and_disruptions_take_one_at_a_time() {
    let rendered = rendered();
    let deployment = &rendered.deployment;
    let pod_labels = rendered.pod_labels();
    assert!(selects(
        &labels(&deployment["spec"]["selector"]["matchLabels"]),
        &pod_labels
    ));
    let hpa = one_of_kind(&rendered.documents, "HorizontalPodAutoscaler");
    assert_eq!(hpa["apiVersion"].as_str(), Some("autoscaling/v2"));
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["kind"].as_str(),
        Some("Deployment")
    );
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    assert!(
        number(&hpa["spec"]["minReplicas"]) >= 3,
        "three replicas at least"
    );
    assert!(
        deployment["spec"]["replicas"].is_null(),
        "the HPA owns the replica count; `replicas` in the Deployment would be reapplied on every apply"
    );
    let pdb = one_of_kind(&rendered.documents, "PodDisruptionBudget");
    assert_eq!(pdb["apiVersion"].as_str(), Some("policy/v1"));
    assert!(selects(
        &labels(&pdb["spec"]["selector"]["matchLabels"]),
        &pod_labels
    ));
    assert_eq!(pdb["spec"]["maxUnavailable"].as_u64(), Some(1));
}

#[test]
fn the_configmap_builds_with_the_deployments_arguments_and_environment() {
    let Rendered {
        documents,
        deployment,
        config_file,
        files,
        ..
    } = rendered();
    let container = container(&deployment);
    // The pod's /etc/zilla, as the kubelet writes it.
    let dir = tempfile::tempdir().unwrap();
    let contents: Vec<(&str, Vec<u8>)> = files
        .iter()
        .map(|(path, source)| {
            let content = match source {
                Source::ConfigMap { name, key } => {
                    text(&named(&documents, "ConfigMap", name)["data"][key.as_str()])
                        .as_bytes()
                        .to_vec()
                }
                Source::Secret { key, .. } => secret_value(key),
            };
            (path.as_str(), content)
        })
        .collect();
    project(dir.path(), &contents);
    let config = dir.path().join(&config_file);

    let mut command = Command::new(ZILLA);
    let mut args = strings(&container["args"]);
    let at = args
        .iter()
        .position(|a| a == "-c" || a == "--config")
        .unwrap();
    args[at + 1] = config.display().to_string();
    args.insert(1, "--print-generated".to_owned());
    command.args(&args);
    for entry in list(&container["env"]) {
        let name = text(&entry["name"]);
        let value = match entry["value"].as_str() {
            Some(value) => value.to_owned(),
            None => String::from_utf8(secret_value(text(
                &entry["valueFrom"]["secretKeyRef"]["key"],
            )))
            .unwrap(),
        };
        command.env(name, value);
    }
    let output = command.output().expect("the zilla binary runs");
    assert!(
        output.status.success(),
        "the ConfigMap's zilla.yaml does not build with the Deployment's arguments {args:?}:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let generated: Value =
        serde_yaml::from_slice(&output.stdout).expect("the built configuration as YAML");
    assert!(
        !generated["bindings"]["north_tcp_server"].is_null(),
        "{generated:?}"
    );
}

/// A small configuration laid out like the Deployment's volume: zilla.yaml
/// beside tls/localhost.p12, read through the kubelet's symlinks.
fn swap_config(generation: u32) -> Vec<u8> {
    format!(
        "# generation {generation}
name: swap-test
vaults:
  my_servers:
    type: filesystem
    options:
      keys: {{ store: tls/localhost.p12, type: pkcs12, password: '${{{{env.KEYSTORE_PASSWORD}}}}' }}
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: {{ host: 127.0.0.1, port: 0 }}
    exit: north_tls_server
  north_tls_server:
    type: tls
    kind: server
    vault: my_servers
    options: {{ keys: [localhost], sni: [localhost] }}
    exit: north_echo_server
  north_echo_server:
    type: echo
    kind: server
telemetry:
  exporters:
    stdout_logs_exporter:
      type: stdout
"
    )
    .into_bytes()
}

#[test]
fn a_configmap_update_by_symlink_swap_reloads_the_host() {
    let keystore = secret_value("localhost.p12");
    let dir = tempfile::tempdir().unwrap();
    let files = |generation| {
        vec![
            ("zilla.yaml", swap_config(generation)),
            ("tls/localhost.p12", keystore.clone()),
        ]
    };
    project(dir.path(), &files(1));
    let config = dir.path().join("zilla.yaml");
    assert!(std::fs::symlink_metadata(&config)
        .unwrap()
        .file_type()
        .is_symlink());
    let zilla = ZillaProcess::start(
        Path::new(ZILLA),
        &config,
        &[(
            "KEYSTORE_PASSWORD",
            String::from_utf8(secret_value("keystore-password")).unwrap(),
        )],
        &["-P", "zilla.engine.config.poll=0.05"],
    )
    .unwrap();

    // Twice: the watch follows the path, not the directory it resolved to
    // first, which the first swap deleted.
    for generation in [2, 3] {
        project(dir.path(), &files(generation));
        zilla
            .wait_for_stdout(
                &format!(
                    "reloaded on a change to {} (generation {generation})",
                    config.display()
                ),
                TIMEOUT,
            )
            .unwrap_or_else(|e| panic!("{e}: {:#?}", zilla.output()));
    }
    let timestamped: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("..2026")
        })
        .collect();
    assert_eq!(
        timestamped.len(),
        1,
        "the kubelet keeps only the current payload: {timestamped:?}"
    );
    assert_eq!(
        zilla.count_stdout("CONFIG_RELOAD_FAILED"),
        0,
        "{:#?}",
        zilla.output()
    );
}
