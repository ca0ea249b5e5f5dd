//! Where session ownership lives: the client ids connected through the mqtt
//! servers that share a store (or through one server without a store; a new
//! connection with the same id takes the session over), and what a
//! persistent session's connection leaves for the next one.
//!
//! Shared by every session task of those servers, so it is the one place of
//! the session that synchronises (a mutex and a notification per connection).
//!
//! A connection registers only once it is admitted by the proxy and by every
//! broker it needs (see `open`), so a refused CONNECT never signals the
//! connection it would have taken over. The one it takes over leaves what
//! its flows left open ([`Registration::leave`]) for its successor, which
//! waits for that ([`Predecessor::departed`]) before it resumes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
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
    /// per entry of a table sized for every connected client). Who else
    /// holds the signal tells the rest: a [`Predecessor`] handle of the
    /// connection that took it over, waiting for it to leave.
    sessions: Mutex<Table>,
    /// Packet-id state left by persistent sessions, until they resume or expire.
    carried: Mutex<HashMap<String, Carried>>,
    /// Woken whenever a connection leaves: what successors wait on.
    left: Notify,
}

/// The connected client ids, and those with a CONNECT being admitted.
#[derive(Debug, Default)]
struct Table {
    connected: HashMap<Arc<str>, Arc<Notify>>,
    /// Client ids whose CONNECTs wait for their brokers' CONNACKs, with how
    /// many: while one does, a broker may take the connected session's
    /// upstream over before the proxy knows whether the CONNECT is admitted.
    admitting: HashMap<Arc<str>, usize>,
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl SessionRegistry {
    /// Marks a CONNECT with `client_id` as being admitted, until the
    /// returned guard registers it or is dropped (refused).
    pub(crate) fn admitting(self: &Arc<Self>, client_id: &str) -> Admitting {
        let client_id: Arc<str> = client_id.into();
        *lock(&self.sessions)
            .admitting
            .entry(client_id.clone())
            .or_default() += 1;
        Admitting {
            registry: self.clone(),
            client_id,
        }
    }

    /// Registers `client_id` at once (see [`Admitting::register`]).
    #[cfg(test)]
    pub(crate) fn register(
        self: &Arc<Self>,
        client_id: &str,
    ) -> (Registration, Option<Predecessor>) {
        self.admitting(client_id).register()
    }

    /// Takes what `client_id`'s previous connection left, if still valid.
    pub(crate) fn resume(&self, client_id: &str, now: Instant) -> Option<Carried> {
        let carried = lock(&self.carried).remove(client_id)?;
        carried.expires.is_none_or(|at| at > now).then_some(carried)
    }
}

/// A CONNECT being admitted: its client id counts as challenged (see
/// [`Registration::superseded`]) until it registers or is refused.
#[derive(Debug)]
pub(crate) struct Admitting {
    registry: Arc<SessionRegistry>,
    client_id: Arc<str>,
}

impl Admitting {
    /// The CONNECT is admitted: registers it, taking over (signalling) any
    /// connection with its id, returned as the predecessor. The challenge
    /// ends in the same step, so a connected session never sees its id
    /// neither challenged nor taken.
    pub(crate) fn register(self) -> (Registration, Option<Predecessor>) {
        let taken_over = Arc::new(Notify::new());
        let previous = {
            let mut table = lock(&self.registry.sessions);
            // Removed first: `insert` would keep the old connection's key,
            // and the id would be held twice.
            let previous = table.connected.remove(&self.client_id);
            table
                .connected
                .insert(self.client_id.clone(), taken_over.clone());
            previous
        };
        let predecessor = previous.map(|signal| {
            signal.notify_one();
            Predecessor {
                registry: self.registry.clone(),
                signal: Some(signal),
            }
        });
        let registration = Registration {
            registry: self.registry.clone(),
            client_id: self.client_id.clone(),
            taken_over: Some(taken_over),
        };
        // `self` drops here, ending the challenge after the registration.
        (registration, predecessor)
    }

    /// The CONNECT is refused after a broker accepted its upstream CONNECT,
    /// which took the connected session's upstream there over: that session
    /// is told it was taken over, as the brokers will make it be.
    pub(crate) fn refused_after_a_broker_accepted(self) {
        if let Some(signal) = lock(&self.registry.sessions).connected.get(&self.client_id) {
            signal.notify_one();
        }
    }
}

impl Drop for Admitting {
    fn drop(&mut self) {
        let mut table = lock(&self.registry.sessions);
        if let Some(count) = table.admitting.get_mut(&self.client_id) {
            *count -= 1;
            if *count == 0 {
                table.admitting.remove(&self.client_id);
            }
        }
    }
}

/// A connection's place in the registry; leaving it on drop.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Arc<SessionRegistry>,
    /// The registry's key, shared.
    client_id: Arc<str>,
    /// Its signal; `None` once it left.
    taken_over: Option<Arc<Notify>>,
}

impl Registration {
    /// The client id this connection registered.
    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The client id, shared with the registry's key.
    pub(crate) fn shared_client_id(&self) -> Arc<str> {
        self.client_id.clone()
    }

    /// Notified when a newer connection took the session over (or an
    /// operator disconnected it); shared, so that the relay can wait on it
    /// across its turns while the registration stays with the driver.
    pub(crate) fn taken_over(&self) -> Arc<Notify> {
        self.taken_over
            .clone()
            .expect("a registration is in the registry until it leaves")
    }

    /// Whether this connection's client id was taken, or is being taken,
    /// by a newer CONNECT. A broker takes over its upstream session when
    /// it accepts that CONNECT, possibly before the proxy's own signal: an
    /// upstream that ends then is the takeover, not a failure.
    /// Also true when it was signalled and has not read the signal yet (a
    /// CONNECT refused after a broker accepted it signals without taking
    /// the id); that signal is consumed, the connection is ending anyway.
    pub(crate) fn superseded(&self) -> bool {
        let challenged = {
            let table = lock(&self.registry.sessions);
            let ours = match (&self.taken_over, table.connected.get(&self.client_id)) {
                (Some(signal), Some(entry)) => Arc::ptr_eq(signal, entry),
                _ => false,
            };
            !ours || table.admitting.contains_key(&self.client_id)
        };
        challenged || self.signalled()
    }

    /// Whether a takeover signal is waiting for this connection (the
    /// signal is consumed if so).
    pub(crate) fn signalled(&self) -> bool {
        self.taken_over.as_ref().is_some_and(|signal| {
            let notified = signal.notified();
            futures_util::pin_mut!(notified);
            futures_util::FutureExt::now_or_never(notified).is_some()
        })
    }

    /// Leaves the registry at `now`, keeping `carried` for the session's
    /// next connection: the one that took this one over and is waiting for
    /// it, or any later one when this connection simply ended. When this
    /// connection was taken over by one that no longer waits (it resumed
    /// without, or started clean), the state is stale and dropped.
    pub(crate) fn leave(&mut self, carried: Option<Carried>, now: Instant) {
        self.leave_with(carried.map(|carried| (carried, now)));
    }

    fn leave_with(&mut self, carried: Option<(Carried, Instant)>) {
        let Some(signal) = self.taken_over.take() else {
            return;
        };
        {
            let mut table = lock(&self.registry.sessions);
            let ours = table
                .connected
                .get(&self.client_id)
                .is_some_and(|entry| Arc::ptr_eq(entry, &signal));
            if ours {
                table.connected.remove(&self.client_id);
            }
            // Ours, or held by a successor's `Predecessor` besides us.
            let awaited = ours || Arc::strong_count(&signal) > 1;
            if let (Some((carried, now)), true) = (carried, awaited) {
                let mut all = lock(&self.registry.carried);
                // Expired sessions are gone at the brokers too; forget their state.
                all.retain(|_, c| c.expires.is_none_or(|at| at > now));
                all.insert(self.client_id.to_string(), carried);
            }
            // Dropped under the lock: a successor that sees it gone also
            // sees what it carried.
            drop(signal);
        }
        self.registry.left.notify_waiters();
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // A connection that never ran leaves without calling `leave`.
        self.leave_with(None);
    }
}

/// The connection a new one took over, until it has left the registry.
#[derive(Debug)]
pub(crate) struct Predecessor {
    registry: Arc<SessionRegistry>,
    /// The taken-over connection's signal; held so that it knows someone
    /// waits for what it leaves.
    signal: Option<Arc<Notify>>,
}

impl Predecessor {
    /// Waits until the connection taken over has left, and so has left what
    /// it carried (usually at once: its task wakes on the signal). The
    /// caller bounds the wait: a connection stuck writing to a client that
    /// does not read only notices the signal when that write ends.
    pub(crate) async fn departed(&self) {
        loop {
            let left = self.registry.left.notified();
            tokio::pin!(left);
            left.as_mut().enable();
            if self.alone() {
                return;
            }
            left.await;
        }
    }

    /// Whether the taken-over connection dropped its signal.
    fn alone(&self) -> bool {
        let _sessions = lock(&self.registry.sessions);
        self.signal
            .as_ref()
            .is_none_or(|signal| Arc::strong_count(signal) == 1)
    }
}

impl Drop for Predecessor {
    fn drop(&mut self) {
        // Under the lock, as the taken-over connection reads the count.
        let _sessions = lock(&self.registry.sessions);
        self.signal = None;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::FutureExt;

    use super::*;
    use crate::session::tests::clock;

    fn signalled(registration: &Registration) -> bool {
        let signal = registration.taken_over();
        let notified = signal.notified();
        futures_util::pin_mut!(notified);
        notified.now_or_never().is_some()
    }

    fn departed(predecessor: &Predecessor) -> bool {
        predecessor.departed().now_or_never().is_some()
    }

    fn left_open(next_client_pkid: u16) -> Carried {
        Carried {
            next_client_pkid,
            ..Carried::default()
        }
    }

    #[test]
    fn a_second_registration_takes_the_first_over_and_outlives_it() {
        let registry = Arc::new(SessionRegistry::default());
        let (first, none) = registry.register("device");
        assert!(none.is_none());
        let (second, predecessor) = registry.register("device");
        // The first connection was signalled: a permit is stored for it.
        assert!(signalled(&first));
        assert!(predecessor.is_some());
        // The old connection leaving does not unregister the new one.
        drop(first);
        let (third, _) = registry.register("device");
        assert!(signalled(&second));
        assert!(!signalled(&third));
    }

    #[test]
    fn carried_state_resumes_once_and_not_after_it_expired() {
        let registry = Arc::new(SessionRegistry::default());
        let t0 = clock();
        let carried = Carried {
            expires: Some(t0 + Duration::from_secs(10)),
            ..left_open(9)
        };
        let (mut first, _) = registry.register("a");
        first.leave(Some(carried.clone()), t0);
        assert_eq!(registry.resume("a", t0), Some(carried.clone()));
        assert_eq!(registry.resume("a", t0), None, "taken once");
        let (mut second, _) = registry.register("a");
        second.leave(Some(carried), t0);
        assert_eq!(registry.resume("a", t0 + Duration::from_secs(10)), None);
    }

    #[test]
    fn a_connected_id_is_challenged_while_a_connect_is_admitted_and_after_it_registered() {
        let registry = Arc::new(SessionRegistry::default());
        let (connected, _) = registry.register("device");
        assert!(!connected.superseded());
        let admitting = registry.admitting("device");
        assert!(connected.superseded(), "a broker may take it over now");
        assert!(!signalled(&connected), "but the proxy has not");
        // Refused before any broker accepted: nothing happened to it.
        drop(admitting);
        assert!(!connected.superseded());
        assert!(!signalled(&connected));
        // Admitted: taken over, with no moment unchallenged in between.
        let (_new, predecessor) = registry.admitting("device").register();
        assert!(predecessor.is_some());
        assert!(connected.superseded());
        assert!(signalled(&connected));
    }

    #[test]
    fn a_connect_refused_after_a_broker_accepted_tells_the_connected_session() {
        let registry = Arc::new(SessionRegistry::default());
        let (connected, _) = registry.register("device");
        registry
            .admitting("device")
            .refused_after_a_broker_accepted();
        // Read as a takeover even if the upstream's end is seen first.
        assert!(connected.superseded());
        assert!(!signalled(&connected), "the signal was read");
        // Not registered: the connected one still owns the id until it leaves.
        let (_next, predecessor) = registry.register("device");
        assert!(predecessor.is_some());
    }

    #[test]
    fn a_successor_waits_for_what_the_connection_it_took_over_leaves() {
        let registry = Arc::new(SessionRegistry::default());
        let t0 = clock();
        let (mut old, _) = registry.register("device");
        let (_new, predecessor) = registry.register("device");
        let predecessor = predecessor.expect("took a connection over");
        assert!(!departed(&predecessor), "the old connection is still there");
        // Taken over, it leaves its open flows for the one waiting.
        old.leave(Some(left_open(7)), t0);
        assert!(departed(&predecessor));
        drop(predecessor);
        assert_eq!(registry.resume("device", t0), Some(left_open(7)));
    }

    #[test]
    fn a_successor_that_stopped_waiting_gets_no_stale_state_later() {
        let registry = Arc::new(SessionRegistry::default());
        let t0 = clock();
        let (mut old, _) = registry.register("device");
        let (_new, predecessor) = registry.register("device");
        // The new connection gave up waiting (or started clean) and resumed.
        drop(predecessor);
        assert_eq!(registry.resume("device", t0), None);
        old.leave(Some(left_open(7)), t0);
        // What the old one carried would mislead a later connection.
        assert_eq!(registry.resume("device", t0), None);
    }

    #[test]
    fn a_connection_that_ends_unchallenged_leaves_its_state_for_the_next() {
        let registry = Arc::new(SessionRegistry::default());
        let t0 = clock();
        let (mut only, _) = registry.register("device");
        only.leave(Some(left_open(3)), t0);
        let (_next, predecessor) = registry.register("device");
        assert!(predecessor.is_none(), "it left the registry");
        assert_eq!(registry.resume("device", t0), Some(left_open(3)));
    }
}
