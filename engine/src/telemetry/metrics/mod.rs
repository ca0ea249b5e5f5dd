//! Metrics: what bindings count on the message path, and how exporters read it.
//!
//! A metric is declared once, as a static [`Metric`] in a [`MetricGroup`]
//! registered with [`register_metrics!`](crate::register_metrics) (the
//! engine's own `stream.*` group is in [`stream`]; the mqtt binding registers
//! `mqtt.*`). A configuration turns metrics on by name or `*` glob, at the top
//! level (`telemetry.metrics`) and per binding (`bindings.<name>.telemetry.metrics`);
//! as in Zilla, a binding records a metric when both lists name it.
//!
//! Counting costs no lock and writes no shared cache line per message: a
//! connection (or session) owns a *block* of counters ([`Block`]) that only its
//! own task writes, registered once when it starts in its binding's
//! [`Family`], the list a scrape walks. When it ends, its counts are folded
//! into the family's retired totals. A scrape ([`Metrics::collect`]) folds the
//! retired totals and every live block into [`Series`]; exporters turn those
//! into the Prometheus text format or OTLP.
//!
//! One [`Metrics`] registry spans an engine and the engines that replace it
//! by reloads (it travels in the [`Handover`](crate::Handover)), so counters
//! keep counting across a reload and sessions that stay on the old
//! configuration still show.

mod cells;
mod collect;
mod family;
mod select;
pub mod stream;

use std::sync::{Arc, Mutex};

pub use cells::{Counter, Gauge, Histogram};
pub use collect::{HistogramValue, Report, Series, Value};
pub use family::{Block, Family, Recorder};
pub use select::BindingMetrics;
pub(crate) use select::{configure, MetricsBuild};

use collect::Fold;

/// How a metric's values combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only ever grows (`_total` in Prometheus).
    Counter,
    /// Goes up and down: what is there now.
    Gauge,
    /// A distribution over fixed buckets.
    Histogram,
}

/// The unit of a metric's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A number of things.
    Count,
    /// Bytes (`_bytes` in Prometheus).
    Bytes,
    /// Seconds (`_seconds` in Prometheus).
    Seconds,
}

impl Unit {
    /// The unit's name as Prometheus and OTLP spell it; `None` for a count.
    pub fn as_str(self) -> Option<&'static str> {
        match self {
            Unit::Count => None,
            Unit::Bytes => Some("bytes"),
            Unit::Seconds => Some("seconds"),
        }
    }
}

/// One metric, declared as a `static`.
#[derive(Debug)]
pub struct Metric {
    /// The name configurations use, e.g. `stream.opens.received`.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// What its values count.
    pub unit: Unit,
    /// One line for `# HELP` and the reference documentation.
    pub description: &'static str,
    /// Labels beyond `namespace` and `binding`, in the order values are given.
    pub labels: &'static [&'static str],
    /// For histograms: the upper bounds of the buckets, in `unit`.
    pub buckets: &'static [f64],
}

impl Metric {
    /// The name without unit or `_total`: dots become underscores.
    pub fn base_name(&self) -> String {
        self.name.replace('.', "_")
    }

    /// The Prometheus name, as Zilla forms it: dots become underscores, then
    /// the unit (`_bytes`, `_seconds`), then `_total` for counters.
    pub fn exposition_name(&self) -> String {
        let mut name = self.base_name();
        if let Some(unit) = self.unit.as_str() {
            name.push('_');
            name.push_str(unit);
        }
        if self.kind == MetricKind::Counter {
            name.push_str("_total");
        }
        name
    }
}

/// Metrics are told apart by name, which is unique among those registered.
impl PartialEq for Metric {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Metric {}

/// A set of metrics registered together (`stream`, `mqtt`).
#[derive(Debug)]
pub struct MetricGroup {
    /// The group's name, the first part of its metrics' names.
    pub name: &'static str,
    /// Its metrics.
    pub metrics: &'static [Metric],
}

inventory::collect!(MetricGroup);

/// Registers a [`MetricGroup`] so configurations can name its metrics.
#[macro_export]
macro_rules! register_metrics {
    ($group:expr $(,)?) => {
        $crate::__private::inventory::submit! { $group }
    };
}

/// Every metric linked into this program, sorted by name.
pub fn registered_metrics() -> Vec<&'static Metric> {
    let mut metrics: Vec<&'static Metric> = inventory::iter::<MetricGroup>
        .into_iter()
        .flat_map(|group| group.metrics.iter())
        .collect();
    metrics.sort_unstable_by_key(|m| m.name);
    metrics
}

/// The metrics of an engine and of the engines that succeed it by reloads:
/// the families bindings registered, and the totals of those that are gone.
/// Cheap to clone (a shared handle).
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Registry>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let registry = self.lock();
        f.debug_struct("Metrics")
            .field("families", &registry.families.len())
            .finish_non_exhaustive()
    }
}

/// What a family offers a scrape, whatever its block type.
trait Collect: Send + Sync {
    fn collect(&self, fold: &mut Fold);
}

#[derive(Default)]
struct Registry {
    families: Vec<(u64, Arc<dyn Collect>)>,
    next_id: u64,
    /// Counters and histograms of families that are gone (a replaced
    /// configuration's bindings), so that no counter ever goes down.
    retired: Fold,
}

impl Metrics {
    /// A registry of its own (an engine built without a handover has one).
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value of every enabled metric now, sorted by name and labels.
    ///
    /// Consistent per binding shard: a session that ends during the scrape is
    /// counted either live or retired, never both and never neither.
    pub fn collect(&self) -> Vec<Series> {
        // Held throughout: a family that is dropped meanwhile moves its totals
        // into `retired` only once this scrape is done, never in between.
        let registry = self.lock();
        let mut fold = registry.retired.clone();
        for (_, family) in &registry.families {
            family.collect(&mut fold);
        }
        fold.into_series()
    }

    fn register(&self, family: Arc<dyn Collect>) -> u64 {
        let mut registry = self.lock();
        registry.next_id += 1;
        let id = registry.next_id;
        registry.families.push((id, family));
        id
    }

    /// Moves a family's totals into the registry's own, at once, under the
    /// lock a scrape holds. Gauges are left out: what is gone is not there.
    fn unregister(&self, id: u64) {
        let mut registry = self.lock();
        let Some(position) = registry.families.iter().position(|(i, _)| *i == id) else {
            return;
        };
        let (_, family) = registry.families.swap_remove(position);
        let mut gone = Fold::default();
        family.collect(&mut gone);
        registry.retired.absorb_without_gauges(gone);
    }
}

#[cfg(test)]
mod tests;
