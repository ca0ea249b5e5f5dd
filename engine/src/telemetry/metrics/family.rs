//! Families of blocks: how a binding's connections register their counters
//! once, and how a scrape finds them.
//!
//! A [`Family`] is built per binding and block type. [`Family::open`] gives
//! a connection its own [`Recorder`] (a block of cells that only that
//! connection's task writes) and lists it in one of the family's shards; the
//! shard is picked per worker thread, so connections that start at once on
//! different workers take different locks. Dropping the recorder folds the
//! block into its shard's retired totals. Both happen once per connection,
//! never per message.
//!
//! A scrape locks one shard at a time: the shard's retired totals and its
//! live blocks are read under the same lock a retiring block takes, so a
//! connection that ends during a scrape is counted once, either way.

use std::cell::Cell;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::collect::{Fold, Report};
use super::{Collect, Metric, Metrics};

/// The cells one connection (or session) writes, and how their values
/// become totals and series.
///
/// `Totals` are plain numbers, written only under a lock or on a scrape's
/// own copy; the block's cells are written only by the task that holds its
/// [`Recorder`].
pub trait Block: Send + Sync + Sized + 'static {
    /// What every block of a family shares and is sized by (e.g. the exits
    /// of a binding); fixed when the binding is built.
    type Shape: Send + Sync + 'static;
    /// Sums of many blocks.
    type Totals: Send + 'static;

    /// A fresh block: nothing counted yet.
    fn new(shape: &Self::Shape) -> Self;

    /// Totals of nothing.
    fn totals(shape: &Self::Shape) -> Self::Totals;

    /// Adds this block's values to `totals`. `live` is true during a scrape
    /// (gauges count what the block holds now) and false when the block is
    /// retired (gauges are left out: what it held is gone).
    fn fold(&self, shape: &Self::Shape, totals: &mut Self::Totals, live: bool);

    /// Adds `from` to `into`.
    fn merge(shape: &Self::Shape, into: &mut Self::Totals, from: &Self::Totals);

    /// Reports `totals` as series.
    fn report(shape: &Self::Shape, totals: &Self::Totals, out: &mut Report<'_>);
}

struct Shard<B: Block> {
    live: Vec<Option<Arc<B>>>,
    free: Vec<usize>,
    retired: B::Totals,
}

struct Shared<B: Block> {
    namespace: Arc<str>,
    binding: Arc<str>,
    enabled: Vec<&'static Metric>,
    shape: B::Shape,
    shards: Box<[Mutex<Shard<B>>]>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl<B: Block> Collect for Shared<B> {
    fn collect(&self, fold: &mut Fold) {
        let mut totals = B::totals(&self.shape);
        for shard in self.shards.iter() {
            let shard = lock(shard);
            B::merge(&self.shape, &mut totals, &shard.retired);
            for block in shard.live.iter().flatten() {
                block.fold(&self.shape, &mut totals, true);
            }
        }
        let mut report = Report {
            fold,
            namespace: &self.namespace,
            binding: &self.binding,
            enabled: &self.enabled,
        };
        B::report(&self.shape, &totals, &mut report);
    }
}

/// Shards per family: one per worker thread, up to a point, so that
/// connections starting on different workers rarely meet on a lock.
fn shard_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 64)
    })
}

/// The shard this thread registers its connections in.
fn this_threads_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    SHARD.with(|shard| *shard)
}

/// The blocks of one binding (one block type), registered with the engine's
/// [`Metrics`] for as long as the binding or any of its connections lives.
pub struct Family<B: Block> {
    shared: Arc<Shared<B>>,
    registry: Metrics,
    id: u64,
}

impl<B: Block> std::fmt::Debug for Family<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Family")
            .field("namespace", &self.shared.namespace)
            .field("binding", &self.shared.binding)
            .finish_non_exhaustive()
    }
}

impl<B: Block> Family<B> {
    pub(super) fn new(
        registry: &Metrics,
        namespace: Arc<str>,
        binding: Arc<str>,
        enabled: Vec<&'static Metric>,
        shape: B::Shape,
    ) -> Arc<Self> {
        let shards = (0..shard_count())
            .map(|_| {
                Mutex::new(Shard {
                    live: Vec::new(),
                    free: Vec::new(),
                    retired: B::totals(&shape),
                })
            })
            .collect();
        let shared = Arc::new(Shared {
            namespace,
            binding,
            enabled,
            shape,
            shards,
        });
        let id = registry.register(shared.clone());
        Arc::new(Self {
            shared,
            registry: registry.clone(),
            id,
        })
    }

    /// What the family's blocks are sized by.
    pub fn shape(&self) -> &B::Shape {
        &self.shared.shape
    }

    /// Whether the binding records `metric` (so a block may skip work, such
    /// as timing, that only it needs).
    pub fn records(&self, metric: &'static Metric) -> bool {
        self.shared.enabled.iter().any(|m| m.name == metric.name)
    }

    /// A block for one connection, listed for scrapes until it is dropped.
    pub fn open(self: &Arc<Self>) -> Recorder<B> {
        let block = Arc::new(B::new(&self.shared.shape));
        let shard = this_threads_shard() % self.shared.shards.len();
        let slot = {
            let mut shard = lock(&self.shared.shards[shard]);
            match shard.free.pop() {
                Some(slot) => {
                    shard.live[slot] = Some(block.clone());
                    slot
                }
                None => {
                    shard.live.push(Some(block.clone()));
                    shard.live.len() - 1
                }
            }
        };
        Recorder {
            block,
            family: self.clone(),
            shard,
            slot,
            not_sync: PhantomData,
        }
    }
}

impl<B: Block> Drop for Family<B> {
    fn drop(&mut self) {
        // Every recorder holds the family, so none is live now: the totals
        // are final and move to the registry.
        self.registry.unregister(self.id);
    }
}

/// One connection's block: write its cells through `Deref`; dropping it
/// folds them into the family's totals.
///
/// Not `Sync`: its cells assume one writer, so a recorder is not shared
/// between tasks (it moves with the one task that owns it).
pub struct Recorder<B: Block> {
    block: Arc<B>,
    family: Arc<Family<B>>,
    shard: usize,
    slot: usize,
    not_sync: PhantomData<Cell<()>>,
}

impl<B: Block> std::fmt::Debug for Recorder<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

impl<B: Block> Recorder<B> {
    /// The family this block belongs to.
    pub fn family(&self) -> &Arc<Family<B>> {
        &self.family
    }
}

impl<B: Block> Deref for Recorder<B> {
    type Target = B;

    fn deref(&self) -> &B {
        &self.block
    }
}

impl<B: Block> Drop for Recorder<B> {
    fn drop(&mut self) {
        let shared = &self.family.shared;
        let mut shard = lock(&shared.shards[self.shard]);
        shard.live[self.slot] = None;
        shard.free.push(self.slot);
        // Under the lock a scrape takes: counted live or retired, never both.
        self.block.fold(&shared.shape, &mut shard.retired, false);
    }
}
