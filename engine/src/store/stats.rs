//! The `store.*` metrics: what a store outside the process (redis) did —
//! its commands, their failures and latency, and whether it answers.
//!
//! A store is not a binding, so its metrics are reported by the bindings
//! that count in it (the mqtt servers naming it), each series labelled with
//! the store's name. Commands come from every session's task, so the
//! counts here are shared atomics rather than a binding's one-writer cells.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::register_metrics;
use crate::telemetry::metrics::{
    Block, HistogramValue, Metric, MetricGroup, MetricKind, Report, Unit,
};

/// Bounds of `store.latency`, in seconds: a loopback round trip is tens of
/// microseconds, a command timeout a second or so.
static LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Every `store.*` metric.
pub static STORE_METRICS: [Metric; 4] = [
    Metric {
        name: "store.commands",
        kind: MetricKind::Counter,
        unit: Unit::Count,
        description: "Commands a shared store (redis) was sent for the limits counted in it, \
            by store and command (join, leave, renew, take, lease, heartbeat)",
        labels: &["store", "command"],
        buckets: &[],
    },
    Metric {
        name: "store.errors",
        kind: MetricKind::Counter,
        unit: Unit::Count,
        description: "Commands to a shared store that failed or timed out, by store and command",
        labels: &["store", "command"],
        buckets: &[],
    },
    Metric {
        name: "store.latency",
        kind: MetricKind::Histogram,
        unit: Unit::Seconds,
        description: "Time from a command sent to a shared store to its answer, by store",
        labels: &["store"],
        buckets: &LATENCY_BUCKETS,
    },
    Metric {
        name: "store.available",
        kind: MetricKind::Gauge,
        unit: Unit::Count,
        description: "1 while a shared store answers, 0 while its limits are counted per replica \
            or refused (options.unavailable)",
        labels: &["store"],
        buckets: &[],
    },
];

register_metrics!(MetricGroup {
    name: "store",
    metrics: &STORE_METRICS,
});

/// The commands a store counts, each a `command` label.
pub const COMMANDS: [&str; 6] = ["join", "leave", "renew", "take", "lease", "heartbeat"];

/// What a store did, counted by whichever task sent each command.
#[derive(Debug)]
pub struct StoreStats {
    name: Arc<str>,
    commands: [AtomicU64; COMMANDS.len()],
    errors: [AtomicU64; COMMANDS.len()],
    latency: Mutex<HistogramValue>,
    available: AtomicBool,
}

impl StoreStats {
    /// Nothing counted yet for the store named `name`; available.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            commands: Default::default(),
            errors: Default::default(),
            latency: Mutex::new(HistogramValue::new(&LATENCY_BUCKETS)),
            available: AtomicBool::new(true),
        }
    }

    fn index(command: &str) -> usize {
        COMMANDS
            .iter()
            .position(|c| *c == command)
            .unwrap_or(COMMANDS.len() - 1)
    }

    /// One `command` answered after `took` (`ok`), or failed.
    pub fn record(&self, command: &str, took: Duration, ok: bool) {
        let index = Self::index(command);
        self.commands[index].fetch_add(1, Ordering::Relaxed);
        if ok {
            (self.latency.lock().unwrap_or_else(|p| p.into_inner())).observe(took.as_secs_f64());
        } else {
            self.errors[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the store answers.
    pub fn set_available(&self, available: bool) {
        self.available.store(available, Ordering::Relaxed);
    }

    /// Commands sent as `command` so far.
    pub fn commands(&self, command: &str) -> u64 {
        self.commands[Self::index(command)].load(Ordering::Relaxed)
    }

    /// Failures of `command` so far.
    pub fn errors(&self, command: &str) -> u64 {
        self.errors[Self::index(command)].load(Ordering::Relaxed)
    }
}

/// The block a binding reports a store's metrics with: it holds nothing of
/// its own, it reads the store's [`StoreStats`] at each scrape (and adds
/// nothing when retired: the counts live on in the store).
#[derive(Debug)]
pub struct StoreStatsBlock;

/// A scrape's copy of the stats.
#[derive(Debug)]
pub struct StoreTotals {
    commands: [u64; COMMANDS.len()],
    errors: [u64; COMMANDS.len()],
    latency: HistogramValue,
    available: i64,
}

impl Block for StoreStatsBlock {
    type Shape = Arc<StoreStats>;
    type Totals = StoreTotals;

    fn new(_: &Self::Shape) -> Self {
        Self
    }

    fn totals(_: &Self::Shape) -> Self::Totals {
        StoreTotals {
            commands: [0; COMMANDS.len()],
            errors: [0; COMMANDS.len()],
            latency: HistogramValue::new(&LATENCY_BUCKETS),
            available: 0,
        }
    }

    fn fold(&self, stats: &Self::Shape, totals: &mut Self::Totals, live: bool) {
        if !live {
            return;
        }
        for index in 0..COMMANDS.len() {
            totals.commands[index] += stats.commands[index].load(Ordering::Relaxed);
            totals.errors[index] += stats.errors[index].load(Ordering::Relaxed);
        }
        totals
            .latency
            .merge(&stats.latency.lock().unwrap_or_else(|p| p.into_inner()));
        totals.available += i64::from(stats.available.load(Ordering::Relaxed));
    }

    fn merge(_: &Self::Shape, into: &mut Self::Totals, from: &Self::Totals) {
        for index in 0..COMMANDS.len() {
            into.commands[index] += from.commands[index];
            into.errors[index] += from.errors[index];
        }
        into.latency.merge(&from.latency);
        into.available += from.available;
    }

    fn report(stats: &Self::Shape, totals: &Self::Totals, out: &mut Report<'_>) {
        let store = &*stats.name;
        for (index, command) in COMMANDS.iter().enumerate() {
            out.counter(&STORE_METRICS[0], &[store, command], totals.commands[index]);
            out.counter(&STORE_METRICS[1], &[store, command], totals.errors[index]);
        }
        out.histogram(&STORE_METRICS[2], &[store], &totals.latency);
        out.gauge(&STORE_METRICS[3], &[store], totals.available);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_errors_and_latency_are_counted_per_command() {
        let stats = StoreStats::new("fleet");
        stats.record("join", Duration::from_micros(80), true);
        stats.record("join", Duration::from_secs(1), false);
        stats.record("lease", Duration::from_micros(90), true);
        assert_eq!((stats.commands("join"), stats.errors("join")), (2, 1));
        assert_eq!((stats.commands("lease"), stats.errors("lease")), (1, 0));
        let stats = Arc::new(stats);
        let mut totals = StoreStatsBlock::totals(&stats);
        StoreStatsBlock.fold(&stats, &mut totals, true);
        assert_eq!(totals.latency.count(), 2, "failures have no latency");
        assert_eq!(totals.available, 1);
        let mut retired = StoreStatsBlock::totals(&stats);
        StoreStatsBlock.fold(&stats, &mut retired, false);
        assert_eq!(retired.commands, [0; COMMANDS.len()]);
    }
}
