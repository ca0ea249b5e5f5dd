//! What a scrape produces: [`Series`], each a metric, its labels and its
//! value; and [`Report`], through which a block type reports its totals.
//!
//! Values of the same metric and labels are summed as they are folded in: a
//! binding's shards, and the engines of several reloads that share a binding
//! name, make one series.

use std::collections::BTreeMap;

use super::cells::Histogram;
use super::{Metric, MetricKind};

/// A metric's value at a scrape.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A counter's count.
    Counter(u64),
    /// A gauge's value.
    Gauge(i64),
    /// A histogram's buckets.
    Histogram(HistogramValue),
}

impl Value {
    fn merge(&mut self, other: &Value) {
        match (self, other) {
            (Value::Counter(a), Value::Counter(b)) => *a = a.wrapping_add(*b),
            (Value::Gauge(a), Value::Gauge(b)) => *a = a.wrapping_add(*b),
            (Value::Histogram(a), Value::Histogram(b)) => a.merge(b),
            // One metric has one kind; nothing else can meet here.
            _ => {}
        }
    }
}

/// A histogram's totals.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramValue {
    /// Upper bounds of the buckets, ascending.
    pub bounds: &'static [f64],
    /// Observations per bucket, not cumulative: one per bound, then the
    /// count above the last bound.
    pub counts: Vec<u64>,
    /// Sum of the observations.
    pub sum: f64,
}

impl HistogramValue {
    /// No observations over `bounds`.
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    /// How many observations there are.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds what a live histogram holds.
    pub fn add(&mut self, histogram: &Histogram) {
        for (total, count) in self.counts.iter_mut().zip(histogram.counts()) {
            *total += count;
        }
        self.sum += histogram.sum_seconds();
    }

    /// Adds another total over the same bounds.
    pub fn merge(&mut self, other: &HistogramValue) {
        for (total, count) in self.counts.iter_mut().zip(&other.counts) {
            *total += count;
        }
        self.sum += other.sum;
    }

    /// Adds one observation of `seconds`.
    pub fn observe(&mut self, seconds: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(self.bounds.len());
        self.counts[bucket] += 1;
        self.sum += seconds;
    }
}

/// One time series at a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// What it measures.
    pub metric: &'static Metric,
    /// `namespace`, `binding`, then the metric's own labels, with values.
    pub labels: Vec<(&'static str, String)>,
    /// Its value.
    pub value: Value,
}

impl Series {
    /// The value of label `name`, if the series has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(label, _)| *label == name)
            .map(|(_, value)| value.as_str())
    }
}

type Key = (&'static str, Vec<(&'static str, String)>);

/// Series being summed up during a scrape.
#[derive(Clone, Default)]
pub(crate) struct Fold {
    series: BTreeMap<Key, (&'static Metric, Value)>,
}

impl Fold {
    fn add(&mut self, metric: &'static Metric, labels: Vec<(&'static str, String)>, value: Value) {
        match self.series.entry((metric.name, labels)) {
            std::collections::btree_map::Entry::Occupied(mut entry) => {
                entry.get_mut().1.merge(&value)
            }
            std::collections::btree_map::Entry::Vacant(entry) => {
                entry.insert((metric, value));
            }
        }
    }

    /// Adds `other`'s counters and histograms (the totals of a family that
    /// is gone); its gauges described what was there, and nothing is now.
    pub(crate) fn absorb_without_gauges(&mut self, other: Fold) {
        for ((_, labels), (metric, value)) in other.series {
            if metric.kind != MetricKind::Gauge {
                self.add(metric, labels, value);
            }
        }
    }

    pub(crate) fn into_series(self) -> Vec<Series> {
        self.series
            .into_iter()
            .map(|((_, labels), (metric, value))| Series {
                metric,
                labels,
                value,
            })
            .collect()
    }
}

/// Where a [`Block`](super::Block) type reports the totals of one binding;
/// metrics the binding does not record are left out here.
pub struct Report<'a> {
    pub(super) fold: &'a mut Fold,
    pub(super) namespace: &'a str,
    pub(super) binding: &'a str,
    pub(super) enabled: &'a [&'static Metric],
}

impl Report<'_> {
    /// Whether the binding records `metric`.
    pub fn is_enabled(&self, metric: &'static Metric) -> bool {
        self.enabled.iter().any(|m| m.name == metric.name)
    }

    fn put(&mut self, metric: &'static Metric, labels: &[&str], value: Value) {
        if !self.is_enabled(metric) {
            return;
        }
        debug_assert_eq!(
            labels.len(),
            metric.labels.len(),
            "label values of {}",
            metric.name
        );
        let mut all = Vec::with_capacity(2 + labels.len());
        all.push(("namespace", self.namespace.to_owned()));
        all.push(("binding", self.binding.to_owned()));
        all.extend(
            metric
                .labels
                .iter()
                .zip(labels)
                .map(|(name, value)| (*name, (*value).to_owned())),
        );
        self.fold.add(metric, all, value);
    }

    /// A counter's total, with values for the metric's own labels.
    pub fn counter(&mut self, metric: &'static Metric, labels: &[&str], value: u64) {
        self.put(metric, labels, Value::Counter(value));
    }

    /// A gauge's value, with values for the metric's own labels.
    pub fn gauge(&mut self, metric: &'static Metric, labels: &[&str], value: i64) {
        self.put(metric, labels, Value::Gauge(value));
    }

    /// A histogram's totals, with values for the metric's own labels.
    pub fn histogram(&mut self, metric: &'static Metric, labels: &[&str], value: &HistogramValue) {
        self.put(metric, labels, Value::Histogram(value.clone()));
    }
}
