//! The counts shared by every session of one key value: the client ids it
//! has connected, its token buckets and when its hits were last logged.
//!
//! One registry per mqtt server, or one per store when the server names a
//! store (then every server naming it, and the servers a reload builds,
//! count together). Entries are found once per CONNECT under the registry's
//! lock; a session then keeps its entries (`Arc`) and locks only those,
//! per publish, so sessions of different keys never contend.
//!
//! Memory stays bounded whatever clients do: an entry no session holds is
//! dropped once its buckets are full again (it then says nothing a new entry
//! would not), swept whenever the map has doubled since the last sweep; and
//! when more than [`MAX_IDLE_ENTRIES`] entries no session holds are still
//! refilling (many source addresses connecting once), those closest to full
//! are forgotten first, which at worst gives such a key a full bucket early.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use zilla_engine::Membership;

use super::bucket::Bucket;
use super::fleet::Leases;
use super::hits::HitLogs;

/// Entries kept that no session holds (refilling buckets) before the
/// closest to full are forgotten; ~300 bytes each.
pub(crate) const MAX_IDLE_ENTRIES: usize = 65_536;
/// The map is never swept below this size: sweeping a small map each
/// CONNECT would cost more than the entries.
const MIN_SWEEP: usize = 1024;

/// The counts of every key value some session or recent CONNECT used.
#[derive(Debug, Default)]
pub(crate) struct LimitRegistry {
    entries: Mutex<Entries>,
}

/// The key as written (e.g. `claim:tenant`), and the key's value.
type EntryKey = (Arc<str>, String);

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<EntryKey, Arc<Mutex<KeyCounts>>>,
    /// The size at which the next insertion sweeps.
    sweep_at: usize,
}

/// What one key value has used.
#[derive(Debug, Default)]
pub(crate) struct KeyCounts {
    /// Client ids with a session under this key -> their connections
    /// (two while a newer connection takes a session over).
    pub(crate) sessions: HashMap<String, SessionEntry>,
    /// Counted here, or (with a shared store) while the store is away, at
    /// a divided rate.
    pub(crate) connects: Bucket,
    pub(crate) publishes: Bucket,
    pub(crate) bytes: Bucket,
    /// With a shared store: the tokens this replica leased from the
    /// fleet's publish and byte buckets of this key value.
    pub(crate) leases: Option<Box<Leases>>,
    pub(crate) hits: HitLogs,
}

/// One client id counted among a key value's sessions.
#[derive(Debug, Default)]
pub(crate) struct SessionEntry {
    /// This process's connections with that client id.
    pub(crate) connections: u32,
    /// With a shared store: its place in the fleet's set of the key value
    /// (left when the last connection ends).
    pub(crate) membership: Option<Membership>,
}

impl KeyCounts {
    /// When every bucket is full again (`None`: already full or never used).
    fn full_at(&self) -> Option<Instant> {
        [&self.connects, &self.publishes, &self.bytes]
            .into_iter()
            .filter_map(Bucket::full_at)
            .max()
    }
}

/// Locks `counts`; a session that panicked while holding it left counts
/// that are still counts.
pub(crate) fn lock(counts: &Mutex<KeyCounts>) -> MutexGuard<'_, KeyCounts> {
    counts
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LimitRegistry {
    /// The counts of `value` under the key written `scope`, made at `now`
    /// when new.
    pub(crate) fn counts(
        &self,
        scope: &Arc<str>,
        value: &str,
        now: Instant,
    ) -> Arc<Mutex<KeyCounts>> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let key = (scope.clone(), value.to_owned());
        if let Some(counts) = entries.map.get(&key) {
            return counts.clone();
        }
        if entries.map.len() >= entries.sweep_at {
            entries.sweep(now);
        }
        let counts = Arc::new(Mutex::new(KeyCounts::default()));
        entries.map.insert(key, counts.clone());
        counts
    }

    /// How many key values are kept (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().unwrap().map.len()
    }
}

impl Entries {
    /// Drops what no session holds and is full again; then, past
    /// [`MAX_IDLE_ENTRIES`], the idle entries closest to full.
    fn sweep(&mut self, now: Instant) {
        // Sessions clone entries only under the registry's lock (held
        // here), so a count of 1 stays 1 while we look.
        let idle = |counts: &Arc<Mutex<KeyCounts>>| Arc::strong_count(counts) == 1;
        self.map.retain(|_, counts| {
            !idle(counts) || {
                let counts = lock(counts);
                !counts.sessions.is_empty() || counts.full_at().is_some_and(|at| at > now)
            }
        });
        let mut refilling: Vec<(Option<Instant>, EntryKey)> = self
            .map
            .iter()
            .filter(|(_, counts)| idle(counts))
            .map(|(key, counts)| (lock(counts).full_at(), key.clone()))
            .collect();
        if refilling.len() > MAX_IDLE_ENTRIES {
            refilling.sort_unstable_by_key(|(full_at, _)| *full_at);
            let excess = refilling.len() - MAX_IDLE_ENTRIES * 3 / 4;
            for (_, key) in refilling.into_iter().take(excess) {
                self.map.remove(&key);
            }
        }
        let len = self.map.len();
        self.sweep_at = (2 * len)
            .clamp(MIN_SWEEP, 2 * MAX_IDLE_ENTRIES)
            .max(len + MIN_SWEEP);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::limits::bucket::Rate;
    use crate::session::tests::clock;

    #[test]
    fn one_entry_per_scope_and_value() {
        let registry = LimitRegistry::default();
        let t0 = clock();
        let tenant: Arc<str> = "claim:tenant".into();
        let identity: Arc<str> = "identity".into();
        let a = registry.counts(&tenant, "acme", t0);
        assert!(Arc::ptr_eq(&a, &registry.counts(&tenant, "acme", t0)));
        assert!(!Arc::ptr_eq(&a, &registry.counts(&tenant, "globex", t0)));
        assert!(!Arc::ptr_eq(&a, &registry.counts(&identity, "acme", t0)));
        assert_eq!(registry.len(), 3);
    }

    #[test]
    fn memory_stays_bounded_whatever_keys_clients_bring() {
        let registry = LimitRegistry::default();
        let scope: Arc<str> = "source-address".into();
        let rate = Rate::new(1.0, 2.0).unwrap();
        let t0 = clock();
        // A session holds one entry throughout; it is never dropped.
        let held = registry.counts(&scope, "held", t0);
        lock(&held).sessions.insert(
            "c1".into(),
            SessionEntry {
                connections: 1,
                membership: None,
            },
        );
        drop(held);
        let held = registry.counts(&scope, "held", t0);
        // Twice the cap of addresses and more, each connecting once: their
        // buckets refill for a second after each CONNECT, so sweeps keep
        // them until the cap makes room.
        let mut now = t0;
        for n in 0..2 * MAX_IDLE_ENTRIES + 2 * MIN_SWEEP {
            now += Duration::from_micros(10);
            let counts = registry.counts(&scope, &format!("10.0.{n}"), now);
            lock(&counts).connects.take(&rate, 1, now).unwrap();
            assert!(registry.len() <= 2 * MAX_IDLE_ENTRIES + MIN_SWEEP + 1);
        }
        assert!(Arc::ptr_eq(&held, &registry.counts(&scope, "held", now)));
        // Once the buckets are full again, the next sweep forgets them all
        // but the held one.
        let later = now + Duration::from_secs(2);
        for n in 0..registry.len() {
            registry.counts(&scope, &format!("late.{n}"), later);
        }
        assert!(registry.len() <= MIN_SWEEP + 2, "{}", registry.len());
        assert!(Arc::ptr_eq(&held, &registry.counts(&scope, "held", later)));
    }

    #[test]
    fn an_entry_that_refills_is_kept_until_it_is_full() {
        let registry = LimitRegistry::default();
        let scope: Arc<str> = "client-id".into();
        let rate = Rate::new(1.0, 1.0).unwrap();
        let t0 = clock();
        let counts = registry.counts(&scope, "sensor", t0);
        lock(&counts).connects.take(&rate, 1, t0).unwrap();
        drop(counts);
        // A sweep before the bucket is full keeps it: a reconnecting client
        // cannot reset its rate by waiting for a sweep.
        for n in 0..MIN_SWEEP {
            registry.counts(&scope, &format!("other-{n}"), t0);
        }
        let counts = registry.counts(&scope, "sensor", t0);
        assert!(lock(&counts).connects.take(&rate, 1, t0).is_err());
    }
}
