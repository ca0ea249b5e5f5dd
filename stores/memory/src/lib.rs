//! `type: memory` store: state shared in-process, for as long as the engine
//! that built it runs, by every binding that names the store.
//!
//! ```yaml
//! stores:
//!   memory0:
//!     type: memory
//! bindings:
//!   north_mqtt_server:
//!     type: mqtt
//!     kind: server
//!     options:
//!       store: memory0    # session ownership lives here
//! ```
//!
//! It takes no options, as in Zilla. Nothing is persisted: a restart starts
//! empty, which is what a memory store promises.

#![forbid(unsafe_code)]

mod schema;

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use zilla_engine::{register_store, BuildError, PluginContext, SharedState, Store, StoreFactory};

/// A memory store: one shared value per type asked for.
#[derive(Default)]
pub struct MemoryStore {
    // Asked for only while bindings are built, so a plain mutex is enough:
    // the values handed out do their own synchronisation.
    slots: Mutex<HashMap<TypeId, SharedState>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner()).len();
        f.debug_struct("MemoryStore")
            .field("slots", &slots)
            .finish()
    }
}

impl Store for MemoryStore {
    fn slot(&self, key: TypeId, init: &mut dyn FnMut() -> SharedState) -> SharedState {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert_with(init)
            .clone()
    }
}

fn build(cx: &mut PluginContext<'_>) -> Result<Arc<dyn Store>, BuildError> {
    cx.no_options()?;
    Ok(Arc::new(MemoryStore::default()))
}

register_store!(StoreFactory {
    type_name: "memory",
    build,
});

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn every_asker_of_a_type_shares_one_value() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let a = store.shared::<AtomicU32>().unwrap();
        let b = store.shared::<AtomicU32>().unwrap();
        a.fetch_add(7, Ordering::Relaxed);
        assert_eq!(b.load(Ordering::Relaxed), 7);
        let text = store.shared::<Mutex<String>>().unwrap();
        assert!(
            text.lock().unwrap().is_empty(),
            "another type, another value"
        );
    }

    #[test]
    fn is_registered_as_memory() {
        assert!(zilla_engine::registered().stores.contains(&"memory"));
    }
}
