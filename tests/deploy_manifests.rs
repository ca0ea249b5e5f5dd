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

// The crate root is this file, so each submodule's path is given outright.
#[path = "deploy_manifests/configuration.rs"]
mod configuration;
#[path = "deploy_manifests/containerfile.rs"]
mod containerfile;
#[path = "deploy_manifests/deployment.rs"]
mod deployment;
#[path = "deploy_manifests/kubelet.rs"]
mod kubelet;
#[path = "deploy_manifests/render.rs"]
mod render;
#[path = "deploy_manifests/rendered.rs"]
mod rendered;
#[path = "deploy_manifests/yaml.rs"]
mod yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_yaml::Value;
use zilla as _;
use zilla_testkit::clients::repo_root;
use zilla_testkit::ZillaProcess;

use crate::containerfile::parse_containerfile;
use crate::deployment::{container, resolve_port, start_args, Source};
use crate::kubelet::{project, secret_value};
use crate::render::{named, one_of_kind};
use crate::rendered::{rendered, Rendered};
use crate::yaml::{entries, labels, list, number, selects, strings, text};

const ZILLA: &str = env!("CARGO_BIN_EXE_zilla");
const TIMEOUT: Duration = Duration::from_secs(15);

/// Zilla's defaults for the drain timing when `-P` does not set them
/// (docs/configuration.md, "Health checks and shutdown").
const DEFAULT_SHUTDOWN_DELAY_WITH_HEALTH: f64 = 2.0;
const DEFAULT_SHUTDOWN_GRACE: f64 = 5.0;

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
    builds_as_deployed(None, &[]);
}

/// The optional Redis component's zilla.yaml (it replaces the ConfigMap's;
/// deploy/kubernetes/components/redis) builds as the base's does, with the
/// password the component's patch adds. Debian's kubectl 1.20 cannot render
/// components (kustomize 2.0.3), so the file is read as it is.
#[test]
fn the_redis_components_configuration_builds_with_the_deployments_arguments() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/kubernetes/components/redis/zilla.yaml"
    );
    let yaml = std::fs::read(path).expect("the component's zilla.yaml");
    let generated = builds_as_deployed(Some(yaml), &[("REDIS_PASSWORD", "not-a-secret")]);
    let store = &generated["stores"]["fleet"];
    assert_eq!(store["type"].as_str(), Some("redis"), "{generated:?}");
    let server = &generated["bindings"]["north_mqtt_server"]["options"];
    assert_eq!(server["store"].as_str(), Some("fleet"), "{server:?}");
}

/// Builds the ConfigMap's zilla.yaml (or `replaced`) with the Deployment's
/// arguments and environment (and `env`), as the pod would; the built
/// configuration.
fn builds_as_deployed(replaced: Option<Vec<u8>>, env: &[(&str, &str)]) -> Value {
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
    if let Some(replaced) = replaced {
        // The kubelet's symlink to the ConfigMap's key, replaced.
        std::fs::remove_file(&config).unwrap();
        std::fs::write(&config, replaced).unwrap();
    }

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
    command.envs(env.iter().copied());
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
    generated
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
