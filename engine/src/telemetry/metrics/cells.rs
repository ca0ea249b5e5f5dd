//! The cells a [`Block`](super::Block) is made of: counters, gauges and
//! histograms that one task writes and a scrape reads.
//!
//! Each cell is written by the one task that owns its block, so an update is
//! a relaxed load and a relaxed store: plain `mov`s on x86 and ARM, with no
//! locked read-modify-write and no cache line shared with another writer.
//! A scrape reads the cells concurrently with relaxed loads; it sees each
//! value as of some recent moment, which is all a counter needs. Writing one
//! cell from two tasks at once would lose updates (never memory safety):
//! blocks are handed out as a [`Recorder`](super::Recorder), one per task.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A count that only grows, written by one task.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        // One writer: load and store, no locked instruction.
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Adds one.
    #[inline]
    pub fn increment(&self) {
        self.add(1);
    }

    /// The count now.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A value that goes up and down, written by one task.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Sets the value.
    #[inline]
    pub fn set(&self, value: i64) {
        self.0.store(value, Relaxed);
    }

    /// Adds `delta` (which may be negative).
    #[inline]
    pub fn add(&self, delta: i64) {
        self.0
            .store(self.0.load(Relaxed).wrapping_add(delta), Relaxed);
    }

    /// The value now.
    #[inline]
    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// Durations over fixed buckets (in seconds), written by one task.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, then one for everything above the last (`+Inf`).
    counts: Box<[Counter]>,
    sum_nanos: Counter,
}

impl Histogram {
    /// An empty histogram over `bounds`, ascending upper bounds in seconds.
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| Counter::default()).collect(),
            sum_nanos: Counter::default(),
        }
    }

    /// Records one duration.
    #[inline]
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        // A dozen bounds: a scan beats a binary search's branches.
        let bucket = self
            .bounds
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(self.bounds.len());
        self.counts[bucket].increment();
        self.sum_nanos
            .add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX));
    }

    /// The upper bounds of the buckets.
    pub fn bounds(&self) -> &'static [f64] {
        self.bounds
    }

    /// How many observations fell in each bucket (not cumulative), the last
    /// being above every bound.
    pub fn counts(&self) -> impl Iterator<Item = u64> + '_ {
        self.counts.iter().map(Counter::get)
    }

    /// The sum of the observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        Duration::from_nanos(self.sum_nanos.get()).as_secs_f64()
    }
}
