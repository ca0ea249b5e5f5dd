//! The metrics core: families, retirement, selection, the stream wrapper.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::stream::{metered, STREAM_METRICS};
use super::*;
use crate::Engine;

static TEST_METRICS: [Metric; 2] = [
    Metric {
        name: "test.things",
        kind: MetricKind::Counter,
        unit: Unit::Count,
        description: "Things counted",
        labels: &["kind"],
        buckets: &[],
    },
    Metric {
        name: "test.open",
        kind: MetricKind::Gauge,
        unit: Unit::Count,
        description: "Things open",
        labels: &[],
        buckets: &[],
    },
];

#[derive(Default)]
struct TestBlock {
    things: [Counter; 2],
    open: Gauge,
}

impl Block for TestBlock {
    type Shape = ();
    type Totals = ([u64; 2], i64);

    fn new(_: &()) -> Self {
        Self::default()
    }

    fn totals(_: &()) -> Self::Totals {
        ([0; 2], 0)
    }

    fn fold(&self, _: &(), totals: &mut Self::Totals, live: bool) {
        totals.0[0] += self.things[0].get();
        totals.0[1] += self.things[1].get();
        if live {
            totals.1 += self.open.get();
        }
    }

    fn merge(_: &(), into: &mut Self::Totals, from: &Self::Totals) {
        into.0[0] += from.0[0];
        into.0[1] += from.0[1];
        into.1 += from.1;
    }

    fn report(_: &(), totals: &Self::Totals, out: &mut Report<'_>) {
        out.counter(&TEST_METRICS[0], &["a"], totals.0[0]);
        out.counter(&TEST_METRICS[0], &["b"], totals.0[1]);
        out.gauge(&TEST_METRICS[1], &[], totals.1);
    }
}

fn test_family(registry: &Metrics, binding: &str) -> Arc<Family<TestBlock>> {
    Family::new(
        registry,
        "ns".into(),
        binding.into(),
        TEST_METRICS.iter().collect(),
        (),
    )
}

fn value(series: &[Series], name: &str, binding: &str, kind: Option<&str>) -> Option<Value> {
    series
        .iter()
        .find(|s| {
            s.metric.name == name
                && s.label("binding") == Some(binding)
                && kind.is_none_or(|k| s.label("kind") == Some(k))
        })
        .map(|s| s.value.clone())
}

#[test]
fn live_blocks_and_retired_totals_add_up_and_never_go_down() {
    let registry = Metrics::new();
    let family = test_family(&registry, "north");
    let first = family.open();
    let second = family.open();
    first.things[0].add(3);
    first.open.set(1);
    second.things[1].increment();
    second.open.set(1);
    let series = registry.collect();
    assert_eq!(
        value(&series, "test.things", "north", Some("a")),
        Some(Value::Counter(3))
    );
    assert_eq!(
        value(&series, "test.open", "north", None),
        Some(Value::Gauge(2))
    );

    drop(first);
    let series = registry.collect();
    assert_eq!(
        value(&series, "test.things", "north", Some("a")),
        Some(Value::Counter(3)),
        "a retired block's counts stay"
    );
    assert_eq!(
        value(&series, "test.open", "north", None),
        Some(Value::Gauge(1)),
        "a retired block's gauges go"
    );

    // The binding goes (a reload replaced it) once its last connection ends:
    // its counters stay in the registry, its gauges do not.
    drop(family);
    second.things[1].increment();
    drop(second);
    let series = registry.collect();
    assert_eq!(
        value(&series, "test.things", "north", Some("b")),
        Some(Value::Counter(2))
    );
    assert_eq!(value(&series, "test.open", "north", None), None);

    // A successor binding of the same name continues the same series.
    let successor = test_family(&registry, "north");
    let block = successor.open();
    block.things[0].add(4);
    let series = registry.collect();
    assert_eq!(
        value(&series, "test.things", "north", Some("a")),
        Some(Value::Counter(7))
    );
}

#[test]
fn blocks_written_on_many_threads_are_all_counted() {
    let registry = Metrics::new();
    let family = test_family(&registry, "north");
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let family = family.clone();
            std::thread::spawn(move || {
                for _ in 0..100 {
                    let block = family.open();
                    for _ in 0..10 {
                        block.things[0].increment();
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(
        value(&registry.collect(), "test.things", "north", Some("a")),
        Some(Value::Counter(8_000))
    );
}

#[test]
fn exposition_names_follow_zilla_and_prometheus() {
    let names: Vec<String> = STREAM_METRICS.iter().map(Metric::exposition_name).collect();
    assert!(names.contains(&"stream_active_received".to_owned()));
    assert!(names.contains(&"stream_opens_sent_total".to_owned()));
    assert!(names.contains(&"stream_data_received_bytes_total".to_owned()));
}

#[test]
fn histograms_bucket_durations() {
    static BOUNDS: [f64; 3] = [0.001, 0.01, 0.1];
    let histogram = Histogram::new(&BOUNDS);
    histogram.observe(std::time::Duration::from_micros(500));
    histogram.observe(std::time::Duration::from_millis(5));
    histogram.observe(std::time::Duration::from_secs(1));
    assert_eq!(histogram.counts().collect::<Vec<_>>(), vec![1, 1, 0, 1]);
    assert!((histogram.sum_seconds() - 1.0055).abs() < 1e-9);
    let mut total = HistogramValue::new(&BOUNDS);
    total.add(&histogram);
    total.observe(0.05);
    assert_eq!(total.counts, vec![1, 1, 1, 1]);
    assert_eq!(total.count(), 4);
}

fn tcp_config(top: &str, binding: &str) -> String {
    format!(
        "
name: metrics-test
telemetry:
  metrics: {top}
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: {{ host: 127.0.0.1, port: 0 }}
    telemetry:
      metrics: {binding}
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: 9 }}
"
    )
}

#[test]
fn zilla_metrics_of_other_protocols_are_accepted_and_not_recorded() {
    // The tcp binding is not linked into the engine's own tests: only the
    // metric names are checked here (tcp's metrics_tests runs a binding).
    let built =
        Engine::from_yaml(tcp_config("[stream.*, http.duration, mcp.*]", "[http.*]")).build();
    if let Err(errors) = built {
        assert!(!errors.to_string().contains("metric"), "{errors}");
    }
}

#[test]
fn unknown_metric_names_are_configuration_errors() {
    let errors = Engine::from_yaml(tcp_config("[stream.opens.recieved]", "[stream.*, strem.*]"))
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("telemetry.metrics[0]")
            && errors.contains("no metric is named `stream.opens.recieved`"),
        "{errors}"
    );
    assert!(
        errors.contains("bindings.north_tcp_server.telemetry.metrics[1]")
            && errors.contains("`strem.*`"),
        "{errors}"
    );
}

#[tokio::test]
async fn metered_streams_count_and_unmetered_ones_are_untouched() {
    let registry = Metrics::new();
    let family = Family::new(
        &registry,
        "ns".into(),
        "b".into(),
        STREAM_METRICS.iter().collect(),
        (),
    );
    let (near, mut far) = tokio::io::duplex(64);
    let family = Some(family);
    let mut stream = metered(&family, near);
    stream.write_all(b"abc").await.unwrap();
    far.write_all(b"de").await.unwrap();
    let mut two = [0u8; 2];
    stream.read_exact(&mut two).await.unwrap();
    stream.shutdown().await.unwrap();
    drop(stream);
    let series = registry.collect();
    let get = |name: &str| value(&series, name, "b", None);
    assert_eq!(get("stream.data.received"), Some(Value::Counter(3)));
    assert_eq!(get("stream.data.sent"), Some(Value::Counter(2)));
    assert_eq!(get("stream.closes.received"), Some(Value::Counter(1)));
    assert_eq!(get("stream.active.sent"), Some(Value::Gauge(0)));
}
