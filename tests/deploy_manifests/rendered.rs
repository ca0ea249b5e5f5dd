//! What the rendered manifests say, gathered once per test: the documents,
//! the Deployment, its `zilla start` arguments, the files in the
//! configuration's directory and the ConfigMap's `zilla.yaml`, with the ports
//! and Services derived from them.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;

use crate::configuration::Zilla;
use crate::deployment::{
    container, container_ports, mounted_files, resolve_port, start_args, Source, StartArgs,
};
use crate::render::{named, of_kind, one_of_kind, render};
use crate::yaml::{labels, list, strings, text};

/// What the rendered manifests say.
pub(crate) struct Rendered {
    pub(crate) documents: Vec<Value>,
    pub(crate) deployment: Value,
    pub(crate) args: StartArgs,
    pub(crate) config_dir: String,
    pub(crate) config_file: String,
    pub(crate) files: BTreeMap<String, Source>,
    pub(crate) zilla: Zilla,
}

pub(crate) fn rendered() -> Rendered {
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
    pub(crate) fn container(&self) -> &Value {
        container(&self.deployment)
    }

    pub(crate) fn ports(&self) -> BTreeMap<String, u16> {
        container_ports(self.container())
    }

    pub(crate) fn pod_labels(&self) -> BTreeMap<String, String> {
        labels(&self.deployment["spec"]["template"]["metadata"]["labels"])
    }

    pub(crate) fn health_port(&self) -> u16 {
        self.args
            .properties
            .get("zilla.engine.health.port")
            .expect("-P zilla.engine.health.port: the probes need the health endpoints")
            .parse()
            .expect("a port number")
    }

    /// The one prometheus endpoint: (port, path).
    pub(crate) fn metrics(&self) -> (u16, String) {
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
    pub(crate) fn listening(&self) -> BTreeSet<u16> {
        let mut ports = self.zilla.tcp_server_ports();
        ports.insert(self.metrics().0);
        ports.insert(self.health_port());
        ports
    }

    fn services(&self) -> Vec<&Value> {
        of_kind(&self.documents, "Service")
    }

    /// The one Service whose target is `port`.
    pub(crate) fn service_of(&self, port: u16) -> &Value {
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

    pub(crate) fn load_balancer(&self) -> &Value {
        let found: Vec<&Value> = self
            .services()
            .into_iter()
            .filter(|s| s["spec"]["type"].as_str() == Some("LoadBalancer"))
            .collect();
        assert_eq!(found.len(), 1, "one LoadBalancer Service");
        found[0]
    }
}
