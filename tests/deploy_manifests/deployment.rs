//! What the rendered Deployment runs: the `zilla start` arguments, the one
//! container and its ports, and the files projected into the configuration's
//! directory (from a ConfigMap or a Secret).

use std::collections::BTreeMap;

use serde_yaml::Value;

use crate::yaml::{list, number, text};

/// `zilla start` arguments: the configuration path and the `-P` properties.
pub(crate) struct StartArgs {
    pub(crate) config: String,
    pub(crate) properties: BTreeMap<String, String>,
}

pub(crate) fn start_args(args: &[String]) -> StartArgs {
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

/// The pod's one container.
pub(crate) fn container(deployment: &Value) -> &Value {
    let containers = list(&deployment["spec"]["template"]["spec"]["containers"]);
    assert_eq!(containers.len(), 1, "one container: the proxy");
    &containers[0]
}

/// Container port numbers by name.
pub(crate) fn container_ports(container: &Value) -> BTreeMap<String, u16> {
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
pub(crate) fn resolve_port(port: &Value, ports: &BTreeMap<String, u16>) -> u16 {
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
pub(crate) enum Source {
    ConfigMap { name: String, key: String },
    Secret { name: String, key: String },
}

pub(crate) fn mounted_files(
    deployment: &Value,
    container: &Value,
    dir: &str,
) -> BTreeMap<String, Source> {
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
