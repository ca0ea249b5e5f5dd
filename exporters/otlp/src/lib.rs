//! `telemetry.exporters.<name>.type: otlp`: the engine's metrics and events
//! pushed to an OpenTelemetry collector over OTLP/HTTP (protobuf), with
//! Zilla's options:
//!
//! ```yaml
//! telemetry:
//!   exporters:
//!     otlp0:
//!       type: otlp
//!       options:
//!         interval: 30              # seconds between pushes (default 30)
//!         signals: [metrics, logs]  # default: both
//!         endpoint:
//!           protocol: http          # the only one
//!           location: http://otlp-collector:4318
//!           overrides:              # default /v1/metrics and /v1/logs
//!             metrics: /v1/metrics
//!             logs: /v1/logs
//! ```
//!
//! Metrics go as cumulative sums, gauges and explicit-bucket histograms
//! named as in `zilla.yaml` (`stream.opens.received`), with the
//! `namespace` and `binding` attributes; events go as log records. The
//! messages are `opentelemetry-proto`'s, encoded by `prost`; HTTP is hyper's.

#![forbid(unsafe_code)]

mod convert;
mod push;
mod schema;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use hyper::Uri;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use serde::Deserialize;
use zilla_engine::binding::StartError;
use zilla_engine::shutdown::Shutdown;
use zilla_engine::telemetry::metrics::Metrics;
use zilla_engine::telemetry::{Event, Exporter};
use zilla_engine::{register_exporter, BuildError, Events, ExporterFactory, PluginContext};

/// Zilla's `otlp` options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OtlpOptions {
    interval: Option<f64>,
    signals: Option<Vec<Signal>>,
    endpoint: EndpointOptions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Signal {
    Metrics,
    Logs,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointOptions {
    protocol: Option<Protocol>,
    location: String,
    overrides: Option<Overrides>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Protocol {
    Http,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Overrides {
    metrics: Option<String>,
    logs: Option<String>,
}

const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Events kept while the collector is away; older ones are dropped first.
const LOG_QUEUE_LIMIT: usize = 10_000;

/// `reference` against `location` as a URL resolves it: absolute as is, a
/// path replacing the location's, anything else appended to it.
fn resolve(location: &Uri, reference: &str) -> Result<Uri, String> {
    let invalid = |e: hyper::http::uri::InvalidUri| format!("`{reference}`: {e}");
    if reference.contains("://") {
        return reference.parse().map_err(invalid);
    }
    let base = location.path().trim_end_matches('/');
    let path = if reference.starts_with('/') {
        reference.to_owned()
    } else {
        format!("{base}/{reference}")
    };
    let authority = location.authority().map(|a| a.as_str()).unwrap_or_default();
    let scheme = location.scheme_str().unwrap_or("http");
    format!("{scheme}://{authority}{path}")
        .parse()
        .map_err(invalid)
}

/// An `http://` URL with a host, or why not.
fn http_url(uri: Uri, path: &str) -> Result<Uri, (String, String)> {
    match (uri.scheme_str(), uri.host()) {
        (Some("http"), Some(_)) => Ok(uri),
        (Some("https"), _) => Err((
            path.to_owned(),
            format!("`{uri}`: https collectors are not supported yet; use http (e.g. a collector sidecar)"),
        )),
        _ => Err((path.to_owned(), format!("`{uri}` is not an http:// URL"))),
    }
}

fn build(cx: &mut PluginContext<'_>) -> Result<Arc<dyn Exporter>, BuildError> {
    let options: OtlpOptions = cx.options()?;
    let interval = match options.interval {
        None => DEFAULT_INTERVAL,
        Some(seconds) if seconds.is_finite() && seconds > 0.0 => Duration::from_secs_f64(seconds),
        Some(_) => {
            return Err(cx.error("options.interval", "expected a positive number of seconds"))
        }
    };
    let signals = options
        .signals
        .unwrap_or_else(|| vec![Signal::Metrics, Signal::Logs]);
    let Protocol::Http = options.endpoint.protocol.unwrap_or(Protocol::Http);
    let location: Uri = options
        .endpoint
        .location
        .parse()
        .map_err(|e| cx.error("options.endpoint.location", format!("not a URL: {e}")))?;
    let overrides = options.endpoint.overrides.unwrap_or_default();
    let mut target = |reference: Option<String>, default: &str, key: &str| {
        // An error is reported where the URL came from.
        let path = match &reference {
            Some(_) => format!("options.endpoint.overrides.{key}"),
            None => "options.endpoint.location".to_owned(),
        };
        resolve(&location, reference.as_deref().unwrap_or(default))
            .map_err(|message| (path.clone(), message))
            .and_then(|uri| http_url(uri, &path))
            .map_err(|(path, message)| cx.error(&path, message))
    };
    let metrics_url = target(overrides.metrics, "/v1/metrics", "metrics")?;
    let logs_url = target(overrides.logs, "/v1/logs", "logs")?;
    let mut attributes = cx.telemetry_attributes().to_vec();
    if !attributes.iter().any(|(name, _)| name == "service.name") {
        // Collectors group by service; without one they say "unknown_service".
        attributes.push(("service.name".into(), "zilla".into()));
    }
    Ok(Arc::new(OtlpExporter {
        shared: Arc::new(Shared {
            interval,
            metrics_url: signals.contains(&Signal::Metrics).then_some(metrics_url),
            logs_url: signals.contains(&Signal::Logs).then_some(logs_url),
            attributes,
            metrics: cx.metrics_registry(),
            logs: Mutex::new(VecDeque::new()),
            events: cx.events(),
            started: OnceLock::new(),
        }),
        shutdown: cx.shutdown(),
    }))
}

register_exporter!(ExporterFactory {
    type_name: "otlp",
    build,
});

/// What the exporter and its push loop share.
struct Shared {
    interval: Duration,
    /// Where metrics go; `None` when `signals` leaves them out.
    metrics_url: Option<Uri>,
    /// Where events go; `None` when `signals` leaves them out.
    logs_url: Option<Uri>,
    /// Resource attributes: `telemetry.attributes`, and a `service.name`.
    attributes: Vec<(String, String)>,
    metrics: Metrics,
    /// Events waiting for the next push.
    logs: Mutex<VecDeque<LogRecord>>,
    /// Where the exporter reports its own trouble.
    events: Events,
    /// The start of every cumulative series: when the exporter started.
    started: OnceLock<SystemTime>,
}

struct OtlpExporter {
    shared: Arc<Shared>,
    shutdown: Shutdown,
}

impl Exporter for OtlpExporter {
    fn export(&self, event: &Event<'_>) {
        if self.shared.logs_url.is_none() || event.name == push::EXPORT_FAILED {
            // Its own failures stay on the other exporters: they would
            // only queue up behind the collector that is failing.
            return;
        }
        let record = convert::log_record(event);
        let mut logs = self.shared.logs.lock().unwrap_or_else(|p| p.into_inner());
        if logs.len() >= LOG_QUEUE_LIMIT {
            logs.pop_front();
        }
        logs.push_back(record);
    }

    fn start(&self) -> Result<(), StartError> {
        let _ = self.shared.started.set(SystemTime::now());
        self.shutdown
            .spawn(push::run(self.shared.clone(), self.shutdown.clone()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_resolve_against_the_location_as_urls_do() {
        let location: Uri = "http://collector:4318".parse().unwrap();
        assert_eq!(
            resolve(&location, "/v1/metrics").unwrap().to_string(),
            "http://collector:4318/v1/metrics"
        );
        let based: Uri = "http://collector:4318/otlp/".parse().unwrap();
        assert_eq!(
            resolve(&based, "v1/logs").unwrap().to_string(),
            "http://collector:4318/otlp/v1/logs"
        );
        assert_eq!(
            resolve(&location, "http://other:9/x").unwrap().to_string(),
            "http://other:9/x"
        );
        assert!(http_url("https://c:1/v1/metrics".parse().unwrap(), "p").is_err());
    }
}
