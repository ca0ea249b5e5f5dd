//! What one session is limited by: its places in its keys' counts, its own
//! buckets (`key: session`), its pause budget and its subscriptions.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use mqtt_bytes_v5::{Packet, Publish, SubscribeReasonCode, UnsubAckReason};

use super::bucket::{Bucket, Lack, Rate};
use super::hits::{Action, HitLogs, LimitKind};
use super::registry::{lock, KeyCounts};
use super::throttle::Throttle;
use super::{KeyHold, LimitHit, Limits};

/// A publish's tokens that are not there.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lacking {
    /// The rule and the limit that lacks them.
    pub(crate) rule: usize,
    pub(crate) kind: LimitKind,
    pub(crate) lack: Lack,
}

/// One session's limits.
#[derive(Debug)]
pub(crate) struct SessionLimits {
    /// Its keys' counts (rules other than `key: session`).
    pub(super) holds: Vec<KeyHold>,
    /// The `key: session` rule's buckets.
    publishes: Bucket,
    bytes: Bucket,
    /// The publish waiting for tokens, and the pause budget.
    pub(crate) throttle: Throttle<Publish>,
    pub(crate) subscriptions: Option<SubscriptionQuota>,
    /// When the `key: session` rule's hits were last logged.
    hits: HitLogs,
}

impl SessionLimits {
    pub(super) fn new(
        holds: Vec<KeyHold>,
        wait: Duration,
        subscriptions: Option<usize>,
        now: Instant,
    ) -> Self {
        Self {
            holds,
            publishes: Bucket::default(),
            bytes: Bucket::default(),
            throttle: Throttle::new(wait, now),
            subscriptions: subscriptions.map(SubscriptionQuota::new),
            hits: HitLogs::default(),
        }
    }

    /// Takes a publish's tokens (one message, `payload` bytes) from every
    /// bucket it is charged to, or none of them.
    pub(crate) fn take_publish(
        &mut self,
        limits: &Limits,
        payload: u64,
        now: Instant,
    ) -> Result<(), Lacking> {
        let charges = 2 + 2 * self.holds.len();
        for charge in 0..charges {
            if let Some(Err(lack)) = self.charge(limits, charge, payload, now, false) {
                // Give back what the earlier buckets gave, so a publish that
                // waits is not counted twice where it did fit.
                for earlier in 0..charge {
                    self.charge(limits, earlier, payload, now, true);
                }
                return Err(lack);
            }
        }
        Ok(())
    }

    /// Charge number `charge` (the session's publishes, its bytes, then
    /// each key's publishes and bytes): taken, or refunded when `refund`;
    /// `None` when that limit is not set.
    fn charge(
        &mut self,
        limits: &Limits,
        charge: usize,
        payload: u64,
        now: Instant,
        refund: bool,
    ) -> Option<Result<(), Lacking>> {
        let (rule, kind) = match charge {
            0 => (limits.session_rule?, LimitKind::Publishes),
            1 => (limits.session_rule?, LimitKind::Bytes),
            n => {
                let kind = [LimitKind::Publishes, LimitKind::Bytes][n % 2];
                (self.holds[n / 2 - 1].rule, kind)
            }
        };
        let spec = &limits.rules[rule];
        let (rate, tokens): (Rate, u64) = match kind {
            LimitKind::Publishes => (spec.publishes?, 1),
            _ => (spec.bytes?, payload),
        };
        let apply = |bucket: &mut Bucket| {
            if refund {
                bucket.refund(&rate, tokens);
                Ok(())
            } else {
                (bucket.take(&rate, tokens, now)).map_err(|lack| Lacking { rule, kind, lack })
            }
        };
        Some(match charge {
            0 => apply(&mut self.publishes),
            1 => apply(&mut self.bytes),
            n => {
                let mut counts = lock(&self.holds[n / 2 - 1].counts);
                let KeyCounts {
                    leases,
                    publishes,
                    bytes,
                    ..
                } = &mut *counts;
                let (local, shared) = match kind {
                    LimitKind::Publishes => (publishes, leases.as_ref().map(|l| &l.publishes)),
                    _ => (bytes, leases.as_ref().map(|l| &l.bytes)),
                };
                match (&limits.fleet, shared) {
                    // Counted by the fleet: leased tokens, or this
                    // replica's share while the store is away.
                    (Some(fleet), Some(shared)) if refund => {
                        fleet.refund(shared, local, &rate, tokens);
                        Ok(())
                    }
                    (Some(fleet), Some(shared)) => (fleet.take(shared, local, &rate, tokens, now))
                        .map_err(|lack| Lacking { rule, kind, lack }),
                    _ => apply(local),
                }
            }
        })
    }

    /// Reports a hit of `kind` of `rule` by this session at `now`: logged at
    /// most once per key value (or session), limit and action per interval.
    pub(crate) fn hit(
        &mut self,
        limits: &Limits,
        rule: usize,
        kind: LimitKind,
        action: Action,
        now: Instant,
    ) -> LimitHit {
        match self.holds.iter().find(|hold| hold.rule == rule) {
            Some(hold) => {
                let log = lock(&hold.counts).hits.hit(kind, action, now);
                limits.hit(rule, kind, Some(&hold.value), log)
            }
            None => {
                let log = self.hits.hit(kind, action, now);
                limits.hit(rule, kind, None, log)
            }
        }
    }
}

/// The topic filters a session holds (`subscriptions`): granted ones, and
/// new ones reserved while their SUBACK is due, so pipelined SUBSCRIBEs
/// cannot pass the quota either. Filters a resumed session holds at its
/// brokers from an earlier connection are not known to the proxy.
#[derive(Debug)]
pub(crate) struct SubscriptionQuota {
    maximum: usize,
    granted: HashSet<String>,
    /// SUBSCRIBEs not acknowledged yet, by packet id: (position in the
    /// request, filter, whether it was reserved as new).
    subscribing: HashMap<u16, Vec<(usize, String, bool)>>,
    /// UNSUBSCRIBEs not acknowledged yet, by packet id: (position, filter).
    unsubscribing: HashMap<u16, Vec<(usize, String)>>,
    /// New filters reserved in `subscribing`.
    reserved: usize,
}

impl SubscriptionQuota {
    fn new(maximum: usize) -> Self {
        Self {
            maximum,
            granted: HashSet::new(),
            subscribing: HashMap::new(),
            unsubscribing: HashMap::new(),
            reserved: 0,
        }
    }

    /// Whether `filter`, at `position` in SUBSCRIBE `pkid`, fits the quota;
    /// it is reserved when it does. A filter already held is replaced, not
    /// added.
    pub(crate) fn admit(&mut self, pkid: u16, position: usize, filter: &str) -> bool {
        let new = !self.granted.contains(filter);
        if new && self.granted.len() + self.reserved >= self.maximum {
            return false;
        }
        self.reserved += usize::from(new);
        (self.subscribing.entry(pkid).or_default()).push((position, filter.to_owned(), new));
        true
    }

    /// SUBSCRIBE `pkid` starts: what an earlier one with that id (never
    /// acknowledged) reserved is released.
    pub(crate) fn subscribe(&mut self, pkid: u16) {
        if let Some(stale) = self.subscribing.remove(&pkid) {
            self.reserved -= stale.iter().filter(|(_, _, new)| *new).count();
        }
    }

    /// UNSUBSCRIBE `pkid` asks for `filters` (with their positions).
    pub(crate) fn unsubscribe(&mut self, pkid: u16, filters: Vec<(usize, String)>) {
        self.unsubscribing.insert(pkid, filters);
    }

    /// The client is sent `packet`, the SUBACK or UNSUBACK of `pkid`.
    pub(crate) fn acknowledged(&mut self, pkid: u16, packet: &Packet) {
        match packet {
            Packet::SubAck(ack) => {
                for (position, filter, new) in self.subscribing.remove(&pkid).unwrap_or_default() {
                    self.reserved -= usize::from(new);
                    if matches!(
                        ack.return_codes.get(position),
                        Some(SubscribeReasonCode::Success(_))
                    ) {
                        self.granted.insert(filter);
                    }
                }
            }
            Packet::UnsubAck(ack) => {
                for (position, filter) in self.unsubscribing.remove(&pkid).unwrap_or_default() {
                    if matches!(
                        ack.reasons.get(position),
                        Some(UnsubAckReason::Success | UnsubAckReason::NoSubscriptionExisted)
                    ) {
                        self.granted.remove(&filter);
                    }
                }
            }
            _ => {}
        }
    }
}
