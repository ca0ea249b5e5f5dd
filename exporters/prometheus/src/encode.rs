//! Series to the Prometheus text exposition format (0.0.4), written by
//! `prometheus-client`: names, `# HELP`/`# TYPE`, escaping, histogram
//! buckets and float formatting are that crate's, not ours.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use zilla_engine::telemetry::metrics::{Metric, MetricKind, Metrics, Series, Value};

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The metrics now, in the Prometheus text format.
pub fn encode(metrics: &Metrics) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(metrics.collect())));
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
    text
}

/// One scrape's series, handed to `prometheus-client` as a collector.
#[derive(Debug)]
struct Scrape(Vec<Series>);

fn metric_type(metric: &Metric) -> MetricType {
    match metric.kind {
        MetricKind::Counter => MetricType::Counter,
        MetricKind::Gauge => MetricType::Gauge,
        MetricKind::Histogram => MetricType::Histogram,
    }
}

fn unit(metric: &Metric) -> Option<Unit> {
    match metric.unit.as_str()? {
        "bytes" => Some(Unit::Bytes),
        "seconds" => Some(Unit::Seconds),
        other => Some(Unit::Other(other.to_owned())),
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        // Series come sorted by metric name: one descriptor per run.
        let mut rest = self.0.as_slice();
        while let Some(first) = rest.first() {
            let run = rest
                .iter()
                .take_while(|s| s.metric.name == first.metric.name)
                .count();
            let (family, tail) = rest.split_at(run);
            rest = tail;
            let metric = first.metric;
            let name = metric.base_name();
            let unit = unit(metric);
            let mut descriptor = encoder.encode_descriptor(
                &name,
                metric.description,
                unit.as_ref(),
                metric_type(metric),
            )?;
            for series in family {
                let labels: Vec<(&str, &str)> = series
                    .labels
                    .iter()
                    .map(|(name, value)| (*name, value.as_str()))
                    .collect();
                let mut encoder = descriptor.encode_family(&labels)?;
                match &series.value {
                    Value::Counter(count) => {
                        encoder.encode_counter::<NoLabelSet, _, u64>(count, None)?
                    }
                    Value::Gauge(value) => encoder.encode_gauge(value)?,
                    Value::Histogram(histogram) => {
                        let buckets: Vec<(f64, u64)> = histogram
                            .bounds
                            .iter()
                            .copied()
                            .zip(histogram.counts.iter().copied())
                            .collect();
                        encoder.encode_histogram::<NoLabelSet>(
                            histogram.sum,
                            histogram.count(),
                            &buckets,
                            None,
                        )?
                    }
                }
            }
        }
        Ok(())
    }
}
