//! Where session ownership lives: the client ids connected through the mqtt
//! servers that share a store (or through one server without a store; a new
//! connection with the same id takes the session over), and what a
//! persistent session's connection leaves for the next one.
//!
//! Shared by every session task of those servers, so it is the one place of
//! the session that synchronises (a mutex and a notification per connection).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

/// The client ids connected through one mqtt server, each with the signal
/// that tells its connection it was taken over.
#[derive(Debug, Default)]
pub(crate) struct SessionRegistry {
    /// Keyed by the id its [`Registration`] holds too: one copy of each
    /// connected client id, not one per holder. A connection's signal is
    /// its own allocation as long as it is registered, so it also tells
    /// whose entry it is (no separate registration number: 8 bytes less
    /// per entry of a table sized for every connected client).
    sessions: Mutex<HashMap<Arc<str>, Arc<Notify>>>,
    /// Packet-id state left by persistent sessions, until they resume or expire.
    carried: Mutex<HashMap<String, Carried>>,
}

/// What a persistent session's connection leaves for the next one: the
/// packet ids of QoS 1/2 flows still open, by upstream exit name, so that a
/// resumed session can finish them (MQTT 4.4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Carried {
    /// Client publishes in flight: (client id, exit, upstream id).
    pub(crate) inbound: Vec<(u16, Arc<str>, u16)>,
    /// Messages to the client in flight: (client id, exit, upstream id).
    pub(crate) outbound: Vec<(u16, Arc<str>, u16)>,
    /// QoS 2 publishes the brokers completed while the client's PUBREL was
    /// still to come: answered with PUBCOMP when it comes (client id).
    pub(crate) completed: Vec<u16>,
    /// The last upstream packet id handed out, by exit.
    pub(crate) next_pkids: Vec<(Arc<str>, u16)>,
    /// The last client-side packet id handed out.
    pub(crate) next_client_pkid: u16,
    /// When the session expires at the brokers (`None`: never).
    pub(crate) expires: Option<Instant>,
}

impl SessionRegistry {
    /// Registers `client_id`, taking over (signalling) any connection that has it.
    pub(crate) fn register(self: &Arc<Self>, client_id: &str) -> Registration {
        let taken_over = Arc::new(Notify::new());
        let client_id: Arc<str> = client_id.into();
        let previous = {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            // Removed first: `insert` would keep the old connection's key,
            // and the id would be held twice.
            let previous = sessions.remove(&client_id);
            sessions.insert(client_id.clone(), taken_over.clone());
            previous
        };
        if let Some(previous) = previous {
            previous.notify_one();
        }
        Registration {
            registry: self.clone(),
            client_id,
            taken_over,
        }
    }

    /// Keeps `carried` for `client_id`'s next connection.
    pub(crate) fn carry(&self, client_id: &str, carried: Carried, now: Instant) {
        let mut all = self.carried.lock().unwrap_or_else(|p| p.into_inner());
        // Expired sessions are gone at the brokers too; forget their state.
        all.retain(|_, c| c.expires.is_none_or(|at| at > now));
        all.insert(client_id.to_owned(), carried);
    }

    /// Takes what `client_id`'s previous connection left, if still valid.
    pub(crate) fn resume(&self, client_id: &str, now: Instant) -> Option<Carried> {
        let carried = self
            .carried
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(client_id)?;
        carried.expires.is_none_or(|at| at > now).then_some(carried)
    }
}

/// A connection's place in the registry; leaving it on drop.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Arc<SessionRegistry>,
    /// The registry's key, shared.
    client_id: Arc<str>,
    pub(crate) taken_over: Arc<Notify>,
}

impl Registration {
    /// The client id this connection registered.
    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut sessions = self
            .registry
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if sessions
            .get(&self.client_id)
            .is_some_and(|signal| Arc::ptr_eq(signal, &self.taken_over))
        {
            sessions.remove(&self.client_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::session::tests::clock;

    fn signalled(registration: &Registration) -> bool {
        let notified = registration.taken_over.notified();
        futures_util::pin_mut!(notified);
        futures_util::FutureExt::now_or_never(notified).is_some()
    }

    #[test]
    fn a_second_registration_takes_the_first_over_and_outlives_it() {
        let registry = Arc::new(SessionRegistry::default());
        let first = registry.register("device");
        let second = registry.register("device");
        // The first connection was signalled: a permit is stored for it.
        assert!(signalled(&first));
        // The old connection leaving does not unregister the new one.
        drop(first);
        let third = registry.register("device");
        assert!(signalled(&second));
        assert!(!signalled(&third));
    }

    #[test]
    fn carried_state_resumes_once_and_not_after_it_expired() {
        let registry = SessionRegistry::default();
        let t0 = clock();
        let carried = Carried {
            next_client_pkid: 9,
            expires: Some(t0 + Duration::from_secs(10)),
            ..Carried::default()
        };
        registry.carry("a", carried.clone(), t0);
        assert_eq!(registry.resume("a", t0), Some(carried.clone()));
        assert_eq!(registry.resume("a", t0), None, "taken once");
        registry.carry("a", carried, t0);
        assert_eq!(registry.resume("a", t0 + Duration::from_secs(10)), None);
    }
}
