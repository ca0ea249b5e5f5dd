//! What the ConfigMap's `zilla.yaml` says: its tcp servers' ports, its
//! prometheus endpoints, the stores its vaults read and the environment it
//! uses.

use std::collections::BTreeSet;

use serde_yaml::Value;

use crate::yaml::{entries, list, number};

/// The ConfigMap's `zilla.yaml`, parsed and as text.
pub(crate) struct Zilla {
    yaml: Value,
    text: String,
}

impl Zilla {
    pub(crate) fn parse(text: &str) -> Self {
        Self {
            yaml: serde_yaml::from_str(text).expect("the ConfigMap's zilla.yaml is YAML"),
            text: text.to_owned(),
        }
    }

    pub(crate) fn bindings(&self, kind: &str, kind_of: &str) -> Vec<(&str, &Value)> {
        entries(&self.yaml["bindings"])
            .into_iter()
            .filter(|(_, b)| {
                b["type"].as_str() == Some(kind) && b["kind"].as_str() == Some(kind_of)
            })
            .collect()
    }

    /// The ports the tcp servers listen on.
    pub(crate) fn tcp_server_ports(&self) -> BTreeSet<u16> {
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
    pub(crate) fn prometheus_endpoints(&self) -> Vec<(u16, String)> {
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
    pub(crate) fn vault_files(&self) -> Vec<String> {
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
    pub(crate) fn env_names(&self) -> BTreeSet<String> {
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
