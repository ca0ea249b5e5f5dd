//! What a reloaded configuration takes over from the one it replaces.
//!
//! A reload builds a whole new engine from the changed `zilla.yaml`; the old
//! one keeps serving the connections it has (see [`Engine::stop_accepting`]).
//! Two things must not start afresh, or clients would notice:
//!
//! - listening sockets, so that a listener that stays never refuses a
//!   connection attempt ([`Listeners`]);
//! - stores whose entry did not change, so that state shared through them
//!   (which client ids are connected, for MQTT takeovers) spans both.
//!
//! [`Engine::stop_accepting`]: crate::Engine::stop_accepting

use std::fmt;
use std::sync::Arc;

use crate::config::PluginConfig;
use crate::listeners::Listeners;
use crate::store::Store;

/// Taken from a running engine with [`Engine::handover`](crate::Engine::handover),
/// given to the builder of its successor with
/// [`EngineBuilder::handover`](crate::EngineBuilder::handover).
#[derive(Clone, Default)]
pub struct Handover {
    pub(crate) listeners: Listeners,
    /// Each store with the entry it was built from.
    pub(crate) stores: Vec<(String, PluginConfig, Arc<dyn Store>)>,
    /// Metrics, so counters keep counting across reloads.
    pub(crate) metrics: crate::telemetry::metrics::Metrics,
}

impl Handover {
    /// The store `name` was, if its entry is unchanged.
    pub(crate) fn store(&self, name: &str, entry: &PluginConfig) -> Option<Arc<dyn Store>> {
        self.stores
            .iter()
            .find(|(kept, config, _)| kept == name && config == entry)
            .map(|(_, _, store)| store.clone())
    }
}

impl fmt::Debug for Handover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handover")
            .field("listeners", &self.listeners)
            .field(
                "stores",
                &self.stores.iter().map(|(n, _, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}
