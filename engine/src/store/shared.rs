//! Counts a fleet shares: what a store that lives outside the process (the
//! `redis` store) offers for limits that hold across every replica.
//!
//! Two shapes cover every limit the mqtt server has:
//! - sets with a capacity ([`SharedCounts::join`]): the client ids holding a
//!   session under one key value, each member leased by the replica that
//!   holds it, so a replica that dies frees its members;
//! - token buckets ([`SharedCounts::take`] for an answer to wait for, at
//!   CONNECT; [`SharedCounts::lease`] for tokens a replica keeps at hand so
//!   that a publish never waits for a round trip).
//!
//! Nothing here says what is counted: names of sets and buckets are the
//! caller's, the store only keeps them apart from other callers' (its key
//! prefix). Nothing here decides what happens when the store does not
//! answer: every call says so ([`Unavailable`]) within the store's command
//! timeout, and the caller applies its policy.

#![expect(
    clippy::disallowed_types,
    reason = "a lease is read by the mqtt state machine, which is given std Instants as `now`; \
              stores fill it with tokio's clock converted by `into_std`"
)]

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::stats::StoreStats;

/// A token bucket's shape: `per_second` tokens a second, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketRate {
    /// The sustained rate.
    pub per_second: f64,
    /// The most tokens at once (the bucket's size), at least 1.
    pub burst: f64,
}

/// What a bucket gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// Tokens taken, at most what was asked for.
    pub granted: u64,
    /// When fewer were granted than asked: how long until the rest would be
    /// there (if nobody else takes them).
    pub retry_after: Duration,
}

/// The store did not answer (unreachable, or not within its command
/// timeout); why, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

/// A member's place in a shared set: the replica keeps it leased while it
/// holds this, and gives it up when this is dropped.
pub struct Membership(Box<dyn Send + Sync + fmt::Debug>);

impl Membership {
    /// A membership that does `on_leave` (the store's) when dropped.
    pub fn new(on_leave: impl Send + Sync + fmt::Debug + 'static) -> Self {
        Self(Box::new(on_leave))
    }
}

impl fmt::Debug for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Membership").field(&self.0).finish()
    }
}

/// Tokens of a shared bucket that this replica leased and has at hand.
///
/// The caller takes from it without waiting ([`Lease::lock`]); the store
/// fills it when an answer to [`SharedCounts::lease`] comes.
#[derive(Debug, Default)]
pub struct Lease(Mutex<LeaseState>);

/// What a [`Lease`] holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LeaseState {
    /// Tokens at hand.
    pub tokens: u64,
    /// A request is on its way: do not ask again.
    pub asking: bool,
    /// When the bucket said the tokens asked for would be there (a request
    /// granted less than it asked).
    pub due: Option<Instant>,
    /// The last request got no answer: count locally until one does.
    pub failed: bool,
}

impl Lease {
    /// The state, locked; a panic while it was held left numbers that are
    /// still numbers.
    pub fn lock(&self) -> MutexGuard<'_, LeaseState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks a request as on its way; false when one already is (then the
    /// caller does not ask).
    pub fn start_asking(&self) -> bool {
        let mut state = self.lock();
        !std::mem::replace(&mut state.asking, true)
    }

    /// The store's answer at `now` to a request for `asked` tokens.
    pub fn fill(&self, asked: u64, taken: Taken, now: Instant) {
        let mut state = self.lock();
        state.tokens += taken.granted;
        state.asking = false;
        state.failed = false;
        state.due = (taken.granted < asked).then(|| now + taken.retry_after);
    }

    /// The store did not answer a request.
    pub fn fail(&self) {
        let mut state = self.lock();
        state.asking = false;
        state.failed = true;
    }
}

/// Counts shared by every replica naming the same store (see the module).
#[async_trait]
pub trait SharedCounts: Send + Sync + fmt::Debug {
    /// Called by each binding counting in the store as it starts (in the
    /// runtime): a store with background work (heartbeats, renewals)
    /// starts it then if it could not when it was built.
    fn start(&self) {}

    /// Whether the store answered its last command or heartbeat.
    fn available(&self) -> bool;

    /// How many replicas counting in this store were alive when the store
    /// last said (this one included; at least 1): what a limit is divided
    /// by while the store is unavailable.
    fn replicas(&self) -> usize;

    /// Admits `member` to `set` when the set has fewer than `capacity`
    /// live members, or has `member` already (the same member through
    /// another connection or replica is not another one): `Some` with its
    /// membership; `None` when the set is full.
    async fn join(
        &self,
        set: &str,
        member: &str,
        capacity: usize,
    ) -> Result<Option<Membership>, Unavailable>;

    /// Counts `member` in `set` whatever its size: a member admitted while
    /// the store was unavailable, registered as soon as it answers again.
    fn hold(&self, set: &str, member: &str) -> Membership;

    /// Takes up to `tokens` from `bucket` now (what a CONNECT waits for).
    async fn take(&self, bucket: &str, rate: BucketRate, tokens: u64)
        -> Result<Taken, Unavailable>;

    /// Asks `bucket` for `tokens` into `lease`, without waiting: the answer
    /// fills the lease (or fails it) when it comes. The caller marked the
    /// lease as asking ([`Lease::start_asking`]).
    fn lease(&self, bucket: &str, rate: BucketRate, tokens: u64, lease: &Arc<Lease>);

    /// What the store counts of its own work, for metrics.
    fn stats(&self) -> Arc<StoreStats>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_asks_once_and_notes_when_the_rest_is_due() {
        let lease = Lease::default();
        assert!(lease.start_asking());
        assert!(!lease.start_asking(), "one request at a time");
        let now = Instant::now();
        let wait = Duration::from_millis(7);
        lease.fill(
            10,
            Taken {
                granted: 4,
                retry_after: wait,
            },
            now,
        );
        let state = lease.lock().clone();
        assert_eq!(state.tokens, 4);
        assert!(!state.asking && !state.failed);
        assert_eq!(state.due, Some(now + wait));
        assert!(lease.start_asking());
        lease.fail();
        assert!(lease.lock().failed);
        lease.fill(
            2,
            Taken {
                granted: 2,
                retry_after: Duration::ZERO,
            },
            now,
        );
        let state = lease.lock().clone();
        assert_eq!((state.tokens, state.due, state.failed), (6, None, false));
    }
}
