//! Stores: state that the bindings naming the same `stores.<name>` entry share.
//!
//! In Zilla a store holds what must be agreed on across bindings (and, for a
//! distributed store, across hosts): the mqtt server keeps session ownership
//! there. Here a store hands out shared in-process state by type: every
//! binding that names the same store and asks for the same type gets the same
//! value, so the engine needs to know nothing of what the state is (the mqtt
//! crate keeps its takeover registry there; decision 0013).
//!
//! A store that keeps counts outside the process, for every replica of a
//! fleet (the `redis` store), also offers [`SharedCounts`] ([`shared`]) and
//! counts its own work in [`StoreStats`] ([`stats`]).

pub mod shared;
pub mod stats;

use std::any::{Any, TypeId};
use std::sync::Arc;

pub use shared::{BucketRate, Lease, LeaseState, Membership, SharedCounts, Taken, Unavailable};
pub use stats::{StoreStats, StoreStatsBlock, STORE_METRICS};

/// Shared state, type-erased for [`Store::slot`].
pub type SharedState = Arc<dyn Any + Send + Sync>;

/// A store instance built from a `stores.<name>` entry.
pub trait Store: Send + Sync + 'static {
    /// The state kept under `key`, made with `init` the first time the key is
    /// asked for; every later call with the same key returns that same value.
    /// Implementations must return what `init` made for this key: callers
    /// rely on its type (see `shared`).
    fn slot(&self, key: TypeId, init: &mut dyn FnMut() -> SharedState) -> SharedState;

    /// Counts shared with the other replicas of a fleet, when the store
    /// keeps them outside this process; `None` (the default, the memory
    /// store) when what it holds is this process's alone.
    fn shared_counts(&self) -> Option<Arc<dyn SharedCounts>> {
        None
    }
}

impl dyn Store {
    /// The `T` kept in this store, made with `T::default()` the first time:
    /// one value per store and type, shared by every binding that names the
    /// store.
    ///
    /// `None` only when the store broke [`Store::slot`]'s contract (returned a
    /// value of another type for `T`'s key).
    pub fn shared<T: Any + Send + Sync + Default>(&self) -> Option<Arc<T>> {
        self.slot(TypeId::of::<T>(), &mut || Arc::new(T::default()))
            .downcast::<T>()
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    use super::*;

    /// The simplest conforming store: one value per key, kept forever.
    #[derive(Default)]
    struct Slots(Mutex<HashMap<TypeId, SharedState>>);

    impl Store for Slots {
        fn slot(&self, key: TypeId, init: &mut dyn FnMut() -> SharedState) -> SharedState {
            self.0
                .lock()
                .unwrap()
                .entry(key)
                .or_insert_with(init)
                .clone()
        }
    }

    /// A store that breaks the contract: always the same value, whatever the key.
    struct Confused;

    impl Store for Confused {
        fn slot(&self, _: TypeId, _: &mut dyn FnMut() -> SharedState) -> SharedState {
            Arc::new("not what was asked for")
        }
    }

    #[test]
    fn one_value_per_store_and_type() {
        let store: &dyn Store = &Slots::default();
        let first = store.shared::<AtomicU32>().unwrap();
        first.fetch_add(1, Ordering::Relaxed);
        let again = store.shared::<AtomicU32>().unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert!(store
            .shared::<Mutex<Vec<u8>>>()
            .unwrap()
            .lock()
            .unwrap()
            .is_empty());
        let other: &dyn Store = &Slots::default();
        assert_eq!(
            other.shared::<AtomicU32>().unwrap().load(Ordering::Relaxed),
            0
        );
    }

    #[test]
    fn a_store_returning_another_type_yields_none() {
        let store: &dyn Store = &Confused;
        assert!(store.shared::<AtomicU32>().is_none());
    }
}
