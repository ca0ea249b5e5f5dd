//! `zilla metrics`: the current metrics of a running engine, as a table
//! (namespace, binding, metric, value), like Zilla's command.
//!
//! Zilla's command reads the engine's shared-memory counters; here the
//! counters live in the engine's process, so the command asks the engine
//! the way Prometheus does: it reads the configuration (`-c`, default
//! `zilla.yaml`, `${{env.*}}` resolved), finds its `prometheus` exporter
//! and scrapes that endpoint on the loopback interface. `--endpoint URL`
//! scrapes another address (a remote host, a container's published port).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use zilla_engine::config::ConfigDocument;
use zilla_engine::telemetry::metrics::{registered_metrics, Metric, MetricKind};

/// How long the scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// `zilla metrics [binding]`.
#[derive(Debug, clap::Args)]
pub(crate) struct MetricsArgs {
    /// The configuration of the running engine; its prometheus exporter is scraped.
    #[arg(short = 'c', long = "config", default_value = "zilla.yaml")]
    config: PathBuf,
    /// Scrape this URL instead, e.g. http://127.0.0.1:7190/metrics.
    #[arg(long)]
    endpoint: Option<String>,
    /// Only the metrics of this namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// Only the metrics of this binding.
    binding: Option<String>,
}

/// Prints the metrics; an error says how to point the command at the engine.
pub(crate) fn main(args: MetricsArgs) -> anyhow::Result<()> {
    let url = match &args.endpoint {
        Some(url) => url.clone(),
        None => endpoint_of(&args.config)?,
    };
    let text = scrape(&url)?;
    let rows = rows(&text, args.namespace.as_deref(), args.binding.as_deref());
    print!("{}", table(&rows));
    Ok(())
}

/// `http://127.0.0.1:<port><path>` of the configuration's first prometheus endpoint.
fn endpoint_of(config: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(config).with_context(|| {
        format!(
            "cannot read {}; name the running engine's configuration with -c, or its metrics URL with --endpoint",
            config.display()
        )
    })?;
    let source = config.display().to_string();
    let document = ConfigDocument::parse(&text, &source, &|name| std::env::var(name).ok())?;
    let endpoint = document
        .config
        .telemetry
        .iter()
        .flat_map(|t| t.exporters.values())
        .filter(|exporter| exporter.type_name == "prometheus")
        .filter_map(|exporter| exporter.options.as_ref()?.get("endpoints")?.get(0).cloned())
        .next();
    let Some(endpoint) = endpoint else {
        bail!(
            "{source} has no prometheus exporter with an endpoint; add one under telemetry.exporters, or pass --endpoint URL"
        );
    };
    let port = endpoint
        .get("port")
        .and_then(serde_yaml::Value::as_u64)
        .context("the prometheus endpoint has no port")?;
    let path = endpoint
        .get("path")
        .and_then(serde_yaml::Value::as_str)
        .unwrap_or("/metrics");
    Ok(format!("http://127.0.0.1:{port}{path}"))
}

fn scrape(url: &str) -> anyhow::Result<String> {
    let agent = ureq::Agent::new_with_config(
        ureq::config::Config::builder()
            .timeout_global(Some(SCRAPE_TIMEOUT))
            .build(),
    );
    let mut response = agent
        .get(url)
        .call()
        .with_context(|| format!("cannot scrape {url}; is the engine running?"))?;
    response
        .body_mut()
        .read_to_string()
        .with_context(|| format!("cannot read the metrics from {url}"))
}

/// One line of the table.
#[derive(Debug, PartialEq)]
struct Row {
    namespace: String,
    binding: String,
    /// The metric's configuration name, with its other labels.
    metric: String,
    value: String,
}

/// Label names and values, in order.
type Labels = Vec<(String, String)>;

/// A sample line: name, labels, value.
fn sample(line: &str) -> Option<(&str, Labels, f64)> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let Some((name, labels)) = series.split_once('{') else {
        return Some((series, Vec::new(), value));
    };
    let mut parsed = Vec::new();
    let mut rest = labels.strip_suffix('}')?;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut text = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => text.push('\n'),
                    other => text.push(other),
                },
                (at, '"') => break at,
                (_, c) => text.push(c),
            }
        };
        parsed.push((key.trim_start_matches(',').to_owned(), text));
        rest = &after[end + 1..];
    }
    Some((name, parsed, value))
}

/// The metric an exposition name belongs to, and the histogram part.
fn metric_of<'a>(name: &'a str, metrics: &[&'static Metric]) -> Option<(&'static Metric, &'a str)> {
    metrics.iter().find_map(|metric| {
        let exposed = metric.exposition_name();
        if name == exposed {
            return Some((*metric, ""));
        }
        let part = name.strip_prefix(exposed.as_str())?;
        (metric.kind == MetricKind::Histogram && matches!(part, "_bucket" | "_sum" | "_count"))
            .then_some((*metric, part))
    })
}

/// Histogram totals while reading: count and sum per series.
type Histograms = BTreeMap<(String, String, String), (f64, f64)>;

fn rows(text: &str, namespace: Option<&str>, binding: Option<&str>) -> Vec<Row> {
    let metrics = registered_metrics();
    let mut rows = Vec::new();
    let mut histograms = Histograms::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let Some((name, labels, value)) = sample(line) else {
            continue;
        };
        let Some((metric, part)) = metric_of(name, &metrics) else {
            continue;
        };
        let label = |key: &str| {
            labels
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let (ns, bound) = (label("namespace"), label("binding"));
        if namespace.is_some_and(|n| n != ns) || binding.is_some_and(|b| b != bound) {
            continue;
        }
        let others: Vec<String> = labels
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "namespace" | "binding" | "le"))
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        let mut shown = metric.name.to_owned();
        if !others.is_empty() {
            let _ = write!(shown, "{{{}}}", others.join(","));
        }
        match part {
            "" => rows.push(Row {
                namespace: ns,
                binding: bound,
                metric: shown,
                value: format!("{value}"),
            }),
            "_count" => histograms.entry((ns, bound, shown)).or_default().0 = value,
            "_sum" => histograms.entry((ns, bound, shown)).or_default().1 = value,
            _ => {}
        }
    }
    for ((namespace, binding, metric), (count, sum)) in histograms {
        let average = if count > 0.0 { sum / count * 1e3 } else { 0.0 };
        rows.push(Row {
            namespace,
            binding,
            metric,
            value: format!("[count: {count} | avg: {average:.3} ms]"),
        });
    }
    rows.sort_by(|a, b| {
        (&a.namespace, &a.binding, &a.metric).cmp(&(&b.namespace, &b.binding, &b.metric))
    });
    rows
}

fn table(rows: &[Row]) -> String {
    let width = |header: &str, get: fn(&Row) -> &str| {
        rows.iter()
            .map(|r| get(r).len())
            .chain([header.len()])
            .max()
            .unwrap_or(0)
    };
    let widths = [
        width("namespace", |r| &r.namespace),
        width("binding", |r| &r.binding),
        width("metric", |r| &r.metric),
        width("value", |r| &r.value),
    ];
    let mut out = String::new();
    let mut line = |cells: [&str; 4]| {
        let _ = writeln!(
            out,
            "{:<w0$}    {:<w1$}    {:<w2$}    {:>w3$}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
        );
    };
    line(["namespace", "binding", "metric", "value"]);
    for row in rows {
        line([&row.namespace, &row.binding, &row.metric, &row.value]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPED: &str = r#"# HELP stream_opens_received Number of opened received streams.
# TYPE stream_opens_received_total counter
stream_opens_received_total{namespace="example",binding="north_tcp_server"} 3
# TYPE mqtt_publishes_received_total counter
mqtt_publishes_received_total{namespace="example",binding="north_mqtt_server",qos="1"} 7
mqtt_publishes_received_total{namespace="other",binding="x",qos="1"} 1
# TYPE mqtt_connect_duration_seconds histogram
mqtt_connect_duration_seconds_bucket{namespace="example",binding="north_mqtt_server",le="0.001"} 1
mqtt_connect_duration_seconds_bucket{namespace="example",binding="north_mqtt_server",le="+Inf"} 2
mqtt_connect_duration_seconds_sum{namespace="example",binding="north_mqtt_server"} 0.004
mqtt_connect_duration_seconds_count{namespace="example",binding="north_mqtt_server"} 2
"#;

    #[test]
    fn the_scrape_reads_back_as_configuration_names() {
        let rows = rows(SCRAPED, Some("example"), None);
        let shown: Vec<(&str, &str, &str)> = rows
            .iter()
            .map(|r| (r.binding.as_str(), r.metric.as_str(), r.value.as_str()))
            .collect();
        assert_eq!(
            shown,
            vec![
                (
                    "north_mqtt_server",
                    "mqtt.connect.duration",
                    "[count: 2 | avg: 2.000 ms]"
                ),
                (
                    "north_mqtt_server",
                    "mqtt.publishes.received{qos=\"1\"}",
                    "7"
                ),
                ("north_tcp_server", "stream.opens.received", "3"),
            ]
        );
        let table = table(&rows);
        assert!(table.starts_with("namespace    binding"), "{table}");
        assert_eq!(rows_for_binding(), 1);
    }

    fn rows_for_binding() -> usize {
        rows(SCRAPED, None, Some("x")).len()
    }

    #[test]
    fn label_values_are_unescaped() {
        let (name, labels, value) =
            sample(r#"m_total{namespace="a\"b",binding="c\\d"} 5"#).unwrap();
        assert_eq!(name, "m_total");
        assert_eq!(
            labels,
            vec![
                ("namespace".to_owned(), "a\"b".to_owned()),
                ("binding".to_owned(), "c\\d".to_owned())
            ]
        );
        assert_eq!(value, 5.0);
    }
}
