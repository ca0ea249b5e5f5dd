//! Limits counted fleet-wide: when `options.store` names a store shared by
//! every replica (type `redis`), the sessions, connects, publishes and
//! bytes of each key value are counted there instead of in this process.
//!
//! - Sessions per key: a CONNECT joins the key value's set (the store
//!   leases each member to the replica holding it). A client id this
//!   replica already holds there is the same session (a takeover), and so
//!   is one another replica holds: the store admits a member it has.
//! - Connects per key: one token from the shared bucket, awaited (a
//!   CONNECT may wait a round trip, never longer than the store's command
//!   timeout).
//! - Publishes and bytes per key: tokens leased in small amounts
//!   ([`lease_size`]) into a [`Lease`] that publishes take from without
//!   waiting; a lease running low asks for more in the background.
//!
//! When the store does not answer, `options.unavailable` decides:
//! `local` counts in this process with every number divided by the
//! replicas last seen alive, `refuse` answers new CONNECTs 0x88 (3.1.1:
//! 3). Admitted sessions go on either way, their publishes counted locally
//! with divided rates until the store answers again (decision 0027).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zilla_engine::{BucketRate, Lease, SharedCounts};

use super::bucket::{Bucket, Lack, Rate};

/// `options.unavailable`: what a server does while its shared store does
/// not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnUnavailable {
    /// Count in this process, each limit divided by the replicas last seen
    /// alive (the default).
    #[default]
    Local,
    /// Refuse new CONNECTs with 0x88 Server unavailable (3.1.1: 3).
    Refuse,
}

/// How soon a publish waiting for a lease on its way tries again.
const POLL: Duration = Duration::from_millis(2);
/// How much of its rate a lease holds: a replica asks the store about a
/// hundred times a second at most per key, and holds at most this much of
/// the fleet's tokens unused.
const LEASE_SPAN: f64 = 0.01;

/// The tokens a replica leases at once from a bucket of `rate`: 10 ms of
/// the rate, at least one token, at most half the burst.
pub(crate) fn lease_size(rate: &Rate) -> u64 {
    let span = (rate.per_second() * LEASE_SPAN).ceil();
    let half_burst = (rate.burst() / 2.0).floor().max(1.0);
    span.clamp(1.0, half_burst) as u64
}

/// The shared store a server counts in, and its policy.
#[derive(Clone)]
pub(crate) struct Fleet {
    pub(crate) counts: Arc<dyn SharedCounts>,
    pub(crate) policy: OnUnavailable,
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// A limit as the store counts it.
pub(crate) fn shape(rate: &Rate) -> BucketRate {
    BucketRate {
        per_second: rate.per_second(),
        burst: rate.burst(),
    }
}

/// The set a key value's sessions join: `claim:tenant=acme`.
pub(crate) fn set_name(scope: &str, value: &str) -> String {
    format!("{scope}={value}")
}

/// The bucket of `what` (connects, publishes, bytes) of a key value.
pub(crate) fn bucket_name(scope: &str, value: &str, what: &str) -> String {
    format!("{scope}={value}/{what}")
}

impl Fleet {
    /// The replicas the store last saw alive (at least 1).
    fn replicas(&self) -> usize {
        self.counts.replicas().max(1)
    }

    /// A session limit's share of this replica while the store is away.
    pub(crate) fn divided_count(&self, maximum: usize) -> usize {
        (maximum / self.replicas()).max(1)
    }

    /// A rate's share of this replica while the store is away.
    pub(crate) fn divided_rate(&self, rate: &Rate) -> Rate {
        let replicas = self.replicas() as f64;
        Rate::new(
            rate.per_second() / replicas,
            (rate.burst() / replicas).max(1.0),
        )
        .unwrap_or(*rate)
    }

    /// Asks for a lease of `bucket` when none is on its way.
    fn ask(&self, bucket: &SharedBucket, rate: &Rate, tokens: u64) {
        if bucket.lease.start_asking() {
            (self.counts).lease(&bucket.name, shape(rate), tokens, &bucket.lease);
        }
    }

    /// Fills an empty lease before the first publish needs it.
    pub(crate) fn prefetch(&self, bucket: &SharedBucket, rate: &Rate) {
        if self.counts.available() && bucket.lease.lock().tokens == 0 {
            self.ask(bucket, rate, lease_size(rate));
        }
    }

    /// Takes `tokens` of `rate` for a publish at `now`: from the lease
    /// while the store answers, else from `local` at the divided rate.
    pub(crate) fn take(
        &self,
        bucket: &SharedBucket,
        local: &mut Bucket,
        rate: &Rate,
        tokens: u64,
        now: Instant,
    ) -> Result<(), Lack> {
        if tokens as f64 > rate.burst() {
            return Err(Lack::Never);
        }
        if !self.counts.available() {
            return local.take(&self.divided_rate(rate), tokens, now);
        }
        let size = lease_size(rate);
        let mut state = bucket.lease.lock();
        if state.tokens >= tokens {
            state.tokens -= tokens;
            let low = state.tokens < size.div_ceil(2);
            let due = state.due.is_some_and(|due| due > now);
            drop(state);
            if low && !due {
                self.ask(bucket, rate, size);
            }
            return Ok(());
        }
        if let Some(due) = state.due.filter(|due| *due > now) {
            // The store said when the tokens would be there: not before.
            return Err(Lack::Until(due));
        }
        let want = size.max(tokens - state.tokens);
        drop(state);
        self.ask(bucket, rate, want);
        Err(Lack::Until(now + POLL))
    }

    /// Gives back `tokens` a publish took (another bucket refused it).
    pub(crate) fn refund(
        &self,
        bucket: &SharedBucket,
        local: &mut Bucket,
        rate: &Rate,
        tokens: u64,
    ) {
        if self.counts.available() {
            bucket.lease.lock().tokens += tokens;
        } else {
            local.refund(&self.divided_rate(rate), tokens);
        }
    }
}

/// A bucket of the fleet's, and the tokens this replica leased from it.
#[derive(Debug)]
pub(crate) struct SharedBucket {
    pub(crate) name: Box<str>,
    pub(crate) lease: Arc<Lease>,
}

/// The shared publish and byte buckets of one key value.
#[derive(Debug)]
pub(crate) struct Leases {
    pub(crate) publishes: SharedBucket,
    pub(crate) bytes: SharedBucket,
}

impl Leases {
    /// The buckets of `value` of the key written `scope`, nothing leased.
    pub(crate) fn new(scope: &str, value: &str) -> Self {
        let bucket = |what| SharedBucket {
            name: bucket_name(scope, value, what).into(),
            lease: Arc::default(),
        };
        Self {
            publishes: bucket("publishes"),
            bytes: bucket("bytes"),
        }
    }
}

#[cfg(test)]
#[path = "fleet_tests.rs"]
mod tests;
