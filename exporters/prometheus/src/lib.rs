//! `telemetry.exporters.<name>.type: prometheus`: the engine's metrics in
//! the Prometheus text exposition format (0.0.4), served over HTTP for
//! Prometheus to scrape, with Zilla's options:
//!
//! ```yaml
//! telemetry:
//!   exporters:
//!     prometheus0:
//!       type: prometheus
//!       options:
//!         endpoints:
//!           - scheme: http
//!             port: 7190
//!             path: /metrics    # the default
//! ```
//!
//! Each scrape folds every binding's counters at that moment (see
//! `zilla_engine::telemetry::metrics`); nothing is computed between scrapes.
//! Names are Zilla's (`stream_opens_received_total`,
//! `stream_data_sent_bytes_total`), labelled `namespace` and `binding`.

#![forbid(unsafe_code)]

mod encode;
mod schema;
mod server;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use zilla_engine::binding::StartError;
use zilla_engine::shutdown::Shutdown;
use zilla_engine::telemetry::metrics::Metrics;
use zilla_engine::telemetry::{Event, Exporter};
use zilla_engine::{register_exporter, BuildError, ExporterFactory, Listeners, PluginContext};

pub use encode::{encode, CONTENT_TYPE};

/// Zilla's `prometheus` options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrometheusOptions {
    endpoints: Vec<EndpointOptions>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointOptions {
    scheme: Scheme,
    port: u16,
    path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Scheme {
    Http,
}

const DEFAULT_PATH: &str = "/metrics";

fn build(cx: &mut PluginContext<'_>) -> Result<Arc<dyn Exporter>, BuildError> {
    let options: PrometheusOptions = cx.options()?;
    if options.endpoints.is_empty() {
        return Err(cx.error("options.endpoints", "name at least one endpoint"));
    }
    // Paths by port: several endpoints may share a port.
    let mut ports: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for (index, endpoint) in options.endpoints.iter().enumerate() {
        let Scheme::Http = endpoint.scheme;
        let path = endpoint.path.clone().unwrap_or_else(|| DEFAULT_PATH.into());
        if !path.starts_with('/') {
            return Err(cx.error(
                &format!("options.endpoints[{index}].path"),
                format!("`{path}` is not a path; it must start with `/`"),
            ));
        }
        ports.entry(endpoint.port).or_default().push(path);
    }
    Ok(Arc::new(PrometheusExporter {
        name: cx.name().to_owned(),
        ports,
        metrics: cx.metrics_registry(),
        listeners: cx.listeners(),
        shutdown: cx.shutdown(),
    }))
}

register_exporter!(ExporterFactory {
    type_name: "prometheus",
    build,
});

/// Serves the metrics on its endpoints while its engine accepts connections.
struct PrometheusExporter {
    name: String,
    ports: BTreeMap<u16, Vec<String>>,
    metrics: Metrics,
    listeners: Listeners,
    shutdown: Shutdown,
}

impl Exporter for PrometheusExporter {
    fn export(&self, _: &Event<'_>) {
        // Events are for the exporters of logs (stdout, otlp).
    }

    fn start(&self) -> Result<(), StartError> {
        for (&port, paths) in &self.ports {
            let listener = server::listen(&self.listeners, &self.name, port)?;
            let endpoint = server::Endpoint {
                paths: paths.clone(),
                metrics: self.metrics.clone(),
            };
            self.shutdown
                .spawn_listener(server::serve(listener, endpoint, self.shutdown.clone()));
        }
        Ok(())
    }
}
