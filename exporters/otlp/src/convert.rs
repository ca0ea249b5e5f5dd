//! Series and events as OTLP messages (`opentelemetry-proto`'s types).
//!
//! Counters become monotonic cumulative sums, gauges gauges, histograms
//! cumulative explicit-bucket histograms; each series is a data point with
//! its labels (`namespace`, `binding`, ...) as attributes. Units are UCUM, as
//! OpenTelemetry expects (`By`, `s`, `1`).

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use zilla_engine::telemetry::metrics::{Series, Unit, Value};
use zilla_engine::telemetry::Event;

/// The instrumentation scope of everything this exporter sends.
fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "zilla".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn resource(attributes: &[(String, String)]) -> Resource {
    Resource {
        attributes: attributes.iter().map(|(k, v)| attribute(k, v)).collect(),
        ..Default::default()
    }
}

pub(crate) fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn ucum(unit: Unit) -> &'static str {
    match unit {
        Unit::Count => "1",
        Unit::Bytes => "By",
        Unit::Seconds => "s",
    }
}

/// The series of one scrape as one export request; `start` and `now` are
/// the cumulative window's ends.
pub(crate) fn metrics_request(
    series: &[Series],
    attributes: &[(String, String)],
    start: SystemTime,
    now: SystemTime,
) -> ExportMetricsServiceRequest {
    let (start, now) = (unix_nanos(start), unix_nanos(now));
    let mut metrics: Vec<Metric> = Vec::new();
    // Series come sorted by metric: one OTLP metric per run.
    for one in series {
        let labels: Vec<KeyValue> = one.labels.iter().map(|(k, v)| attribute(k, v)).collect();
        let same = metrics.last().is_some_and(|m| m.name == one.metric.name);
        if !same {
            let data = match one.value {
                Value::Counter(_) => metric::Data::Sum(Sum {
                    data_points: Vec::new(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                }),
                Value::Gauge(_) => metric::Data::Gauge(Gauge {
                    data_points: Vec::new(),
                }),
                Value::Histogram(_) => metric::Data::Histogram(Histogram {
                    data_points: Vec::new(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                }),
            };
            metrics.push(Metric {
                name: one.metric.name.into(),
                description: one.metric.description.into(),
                unit: ucum(one.metric.unit).into(),
                data: Some(data),
                ..Default::default()
            });
        }
        let Some(data) = metrics.last_mut().and_then(|m| m.data.as_mut()) else {
            continue;
        };
        let number = |value| NumberDataPoint {
            attributes: labels.clone(),
            start_time_unix_nano: start,
            time_unix_nano: now,
            value: Some(value),
            ..Default::default()
        };
        match (data, &one.value) {
            (metric::Data::Sum(sum), Value::Counter(count)) => sum
                .data_points
                .push(number(number_data_point::Value::AsInt(*count as i64))),
            (metric::Data::Gauge(gauge), Value::Gauge(value)) => gauge
                .data_points
                .push(number(number_data_point::Value::AsInt(*value))),
            (metric::Data::Histogram(histogram), Value::Histogram(value)) => {
                histogram.data_points.push(HistogramDataPoint {
                    attributes: labels.clone(),
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    count: value.count(),
                    sum: Some(value.sum),
                    bucket_counts: value.counts.clone(),
                    explicit_bounds: value.bounds.to_vec(),
                    ..Default::default()
                })
            }
            // A metric has one kind: a series never meets another's data.
            _ => {}
        }
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource(attributes)),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// One event as a log record: its message as the body; its namespace,
/// binding and name as attributes (`event.name` as Zilla sends it).
pub(crate) fn log_record(event: &Event<'_>) -> LogRecord {
    let time = unix_nanos(event.timestamp);
    let (severity, text) = match event.level.as_str() {
        "ERROR" => (SeverityNumber::Error, "ERROR"),
        "WARN" => (SeverityNumber::Warn, "WARN"),
        _ => (SeverityNumber::Info, "INFO"),
    };
    LogRecord {
        time_unix_nano: time,
        observed_time_unix_nano: time,
        severity_number: severity as i32,
        severity_text: text.into(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(event.message.into())),
        }),
        attributes: vec![
            attribute("namespace", event.namespace),
            attribute("binding", event.component),
            attribute("event.name", event.name),
        ],
        event_name: event.name.into(),
        ..Default::default()
    }
}

/// Queued log records as one export request.
pub(crate) fn logs_request(
    records: Vec<LogRecord>,
    attributes: &[(String, String)],
) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource(attributes)),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope()),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use zilla_engine::telemetry::metrics::{Metric, MetricKind};

    use super::*;

    static OPENS: Metric = Metric {
        name: "stream.opens.received",
        kind: MetricKind::Counter,
        unit: Unit::Count,
        description: "Number of opened received streams",
        labels: &[],
        buckets: &[],
    };

    #[test]
    fn a_counter_becomes_a_cumulative_monotonic_sum_that_round_trips() {
        let series = vec![Series {
            metric: &OPENS,
            labels: vec![
                ("namespace", "example".into()),
                ("binding", "north_tcp_server".into()),
            ],
            value: Value::Counter(3),
        }];
        let request = metrics_request(
            &series,
            &[("service.name".into(), "zilla".into())],
            UNIX_EPOCH,
            SystemTime::now(),
        );
        let decoded =
            ExportMetricsServiceRequest::decode(request.encode_to_vec().as_slice()).unwrap();
        let metric = &decoded.resource_metrics[0].scope_metrics[0].metrics[0];
        assert_eq!(metric.name, "stream.opens.received");
        let Some(metric::Data::Sum(sum)) = &metric.data else {
            panic!("a sum");
        };
        assert!(sum.is_monotonic);
        assert_eq!(
            sum.data_points[0].value,
            Some(number_data_point::Value::AsInt(3))
        );
        assert_eq!(
            sum.data_points[0].attributes[1],
            attribute("binding", "north_tcp_server")
        );
    }
}
