//! `type: redis` store (beyond Zilla): counts shared by every replica of a
//! fleet, kept in Redis or a Redis Cluster, so that a tenant's limits hold
//! fleet-wide and not per replica.
//!
//! ```yaml
//! stores:
//!   fleet:
//!     type: redis
//!     options:
//!       url: redis://redis.internal:6379     # or cluster: [redis://a:7000, ...]
//!       password: ${{env.REDIS_PASSWORD}}
//! bindings:
//!   north_mqtt_server:
//!     type: mqtt
//!     kind: server
//!     options:
//!       store: fleet
//! ```
//!
//! It offers [`SharedCounts`] (sets with a
//! capacity, leased by the replica holding each member; GCRA token
//! buckets) and, like the memory store, in-process state shared by type
//! ([`Store::slot`]): what is not counted fleet-wide stays in the process.
//! Nothing connects while the configuration is built: a Redis that is down
//! at start leaves the store unavailable until it answers (events say so).
//! Options are in [`RedisOptions`]; the client is redis-rs
//! (docs/decisions/0026-redis-client.md).

#![forbid(unsafe_code)]

mod connection;
mod counts;
mod options;
mod schema;
mod scripts;

use std::any::TypeId;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zilla_engine::{
    register_store, BuildError, Events, PluginContext, SharedCounts, SharedState, Store,
    StoreFactory,
};

pub use options::{OptionsError, RedisOptions, Scalar, TlsOptions};

use counts::Counts;

/// A redis store: counts in Redis, and one in-process value per type.
pub struct RedisStore {
    // Asked for only while bindings are built, so a plain mutex is enough:
    // the values handed out do their own synchronisation.
    slots: Mutex<HashMap<TypeId, SharedState>>,
    counts: Arc<Counts>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner()).len();
        f.debug_struct("RedisStore")
            .field("slots", &slots)
            .field("counts", &self.counts)
            .finish()
    }
}

impl RedisStore {
    /// The store named `name` with `options` (a relative `tls.ca` is read
    /// from `base_dir`), emitting its events to `events`. Connects on first
    /// use; its background task starts now if a tokio runtime is at hand,
    /// else on first use.
    pub fn new(
        name: &str,
        options: &RedisOptions,
        base_dir: &Path,
        events: Events,
    ) -> Result<Self, OptionsError> {
        let settings = options.settings(base_dir)?;
        Ok(Self {
            slots: Mutex::default(),
            counts: Counts::new(name, settings, events),
        })
    }

    /// Like [`new`](Self::new) with memberships leased for `lease` and
    /// renewed every `renew_every` (tests of expiry, which would otherwise
    /// wait the 15 s lease out).
    #[doc(hidden)]
    pub fn with_lease(
        name: &str,
        options: &RedisOptions,
        base_dir: &Path,
        events: Events,
        lease: Duration,
        renew_every: Duration,
    ) -> Result<Self, OptionsError> {
        let mut settings = options.settings(base_dir)?;
        settings.lease = lease;
        settings.renew_every = renew_every;
        Ok(Self {
            slots: Mutex::default(),
            counts: Counts::new(name, settings, events),
        })
    }

    /// Stops as a replica killed with SIGKILL would: no more heartbeats or
    /// renewals, and no LEAVE for memberships dropped later (tests of lease
    /// expiry).
    #[doc(hidden)]
    pub fn halt(&self) {
        self.counts.halt();
    }
}

impl Store for RedisStore {
    fn slot(&self, key: TypeId, init: &mut dyn FnMut() -> SharedState) -> SharedState {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert_with(init)
            .clone()
    }

    fn shared_counts(&self) -> Option<Arc<dyn SharedCounts>> {
        Some(self.counts.clone())
    }
}

fn build(cx: &mut PluginContext<'_>) -> Result<Arc<dyn Store>, BuildError> {
    let options: RedisOptions = cx.options()?;
    let base_dir = cx.base_dir().to_path_buf();
    let name = cx.name().to_owned();
    let events = cx.events();
    match RedisStore::new(&name, &options, &base_dir, events) {
        Ok(store) => Ok(Arc::new(store)),
        Err(error) => Err(cx.error(&error.path, error.message)),
    }
}

register_store!(StoreFactory {
    type_name: "redis",
    build,
});

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn store() -> Arc<dyn Store> {
        let options = RedisOptions {
            url: Some("redis://127.0.0.1:1".into()),
            ..RedisOptions::default()
        };
        Arc::new(
            RedisStore::new("fleet", &options, Path::new("."), Events::new("t", "fleet")).unwrap(),
        )
    }

    #[test]
    fn every_asker_of_a_type_shares_one_value() {
        let store = store();
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
    fn offers_shared_counts_taken_to_answer_until_a_command_goes_unanswered() {
        let counts = store().shared_counts().expect("shared counts");
        // Outside a runtime nothing was sent: nothing went unanswered.
        assert!(counts.available());
        assert_eq!(counts.replicas(), 1);
    }

    #[test]
    fn is_registered_as_redis() {
        assert!(zilla_engine::registered().stores.contains(&"redis"));
    }

    #[test]
    fn bad_options_are_configuration_errors_at_their_path() {
        let yaml = "
name: test
stores:
  fleet:
    type: redis
    options:
      url: redis://127.0.0.1:6379
      cluster: [redis://127.0.0.1:7000]
bindings: {}
";
        let errors = zilla_engine::Engine::from_yaml(yaml).build().unwrap_err();
        let text = errors.to_string();
        assert!(text.contains("stores.fleet.options"), "{text}");
        assert!(text.contains("not both"), "{text}");
        let yaml = yaml.replace(
            "      cluster: [redis://127.0.0.1:7000]\n",
            "      tls: {ca: x.pem}\n",
        );
        let text = zilla_engine::Engine::from_yaml(yaml)
            .build()
            .unwrap_err()
            .to_string();
        assert!(text.contains("stores.fleet.options.tls"), "{text}");
    }

    #[test]
    fn a_password_from_the_environment_is_read() {
        let yaml = "
name: test
stores:
  fleet:
    type: redis
    options:
      url: redis://127.0.0.1:6379
      password: ${{env.REDIS_PASSWORD}}
      unknown: 1
bindings: {}
";
        let text = zilla_engine::Engine::from_yaml(yaml)
            .env(|name| (name == "REDIS_PASSWORD").then(|| "1234".to_owned()))
            .build()
            .unwrap_err()
            .to_string();
        // The expression resolved (no error about it); only the unknown field is refused.
        assert!(text.contains("unknown"), "{text}");
        assert!(!text.contains("REDIS_PASSWORD"), "{text}");
        let ok = zilla_engine::Engine::from_yaml(yaml.replace("      unknown: 1\n", ""))
            .env(|name| (name == "REDIS_PASSWORD").then(|| "1234".to_owned()))
            .build();
        assert!(ok.is_ok(), "{:?}", ok.err().map(|e| e.to_string()));
    }
}
