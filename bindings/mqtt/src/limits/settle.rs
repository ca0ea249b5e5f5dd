//! What the fleet decides of a CONNECT: with a shared store, the connect
//! tokens and the session counts of its keys are asked of the store once
//! [`Limits::connect`] has counted the CONNECT here, and its publish
//! leases are filled before the first publish needs them.
//!
//! The store answers within its command timeout or not at all; without an
//! answer `options.unavailable` decides (see `fleet`). A store already
//! known to be away is not asked: no CONNECT waits for a timeout that is
//! certain.

use std::time::Instant;

use zilla_engine::Unavailable;

use super::fleet::{set_name, shape, Fleet, OnUnavailable};
use super::hits::{Action, LimitKind};
use super::registry::lock;
use super::{KeyHold, LimitHit, Limits, SessionLimits};

/// Why the fleet did not admit a CONNECT.
#[derive(Debug)]
pub(crate) enum Unsettled {
    /// A limit of its keys was hit: 0x97 (3.1.1: 3).
    Limit(LimitHit),
    /// The store did not answer and `unavailable: refuse`: 0x88 (3.1.1: 3).
    Unavailable(String),
}

/// Whether to count locally after the store did not answer (`Ok`), or to
/// refuse the CONNECT.
fn fallback(fleet: &Fleet, why: Unavailable) -> Result<(), Unsettled> {
    match fleet.policy {
        OnUnavailable::Local => Ok(()),
        OnUnavailable::Refuse => Err(Unsettled::Unavailable(format!(
            "the store counting the limits does not answer ({why})"
        ))),
    }
}

impl Limits {
    /// Takes the fleet's connect tokens and joins the fleet's session sets
    /// that `holds` (of `client_id`, from [`Limits::connect`]) still need,
    /// at `now`; then fills their publish leases. Without a shared store,
    /// nothing is left to settle.
    pub(crate) async fn settle(
        &self,
        holds: &mut [KeyHold],
        client_id: &str,
        now: Instant,
    ) -> Result<(), Unsettled> {
        let Some(fleet) = &self.fleet else {
            return Ok(());
        };
        for hold in holds.iter_mut() {
            let rule = &self.rules[hold.rule];
            if std::mem::take(&mut hold.connect) {
                if let Some(rate) = rule.connects {
                    let bucket = super::fleet::bucket_name(&rule.scope, &hold.value, "connects");
                    let answer = match fleet.counts.available() {
                        true => fleet.counts.take(&bucket, shape(&rate), 1).await,
                        false => Err(Unavailable("unavailable since earlier".into())),
                    };
                    let admitted = match answer {
                        Ok(taken) => taken.granted == 1,
                        Err(why) => {
                            fallback(fleet, why)?;
                            let divided = fleet.divided_rate(&rate);
                            lock(&hold.counts).connects.take(&divided, 1, now).is_ok()
                        }
                    };
                    if !admitted {
                        return Err(self.refused(hold, LimitKind::Connects, now));
                    }
                }
            }
            if std::mem::take(&mut hold.join) {
                let maximum = rule.sessions.unwrap_or(usize::MAX);
                let set = set_name(&rule.scope, &hold.value);
                let answer = match fleet.counts.available() {
                    true => fleet.counts.join(&set, client_id, maximum).await,
                    false => Err(Unavailable("unavailable since earlier".into())),
                };
                let membership = match answer {
                    Ok(membership) => membership,
                    Err(why) => {
                        fallback(fleet, why)?;
                        let counts = lock(&hold.counts);
                        // This CONNECT is counted among the sessions already;
                        // another connection with its client id makes it a
                        // takeover, not another session.
                        let takeover = (counts.sessions.get(client_id)).is_some_and(|entry| {
                            entry.connections > 1 || entry.membership.is_some()
                        });
                        let fits = counts.sessions.len() <= fleet.divided_count(maximum);
                        (takeover || fits).then(|| fleet.counts.hold(&set, client_id))
                    }
                };
                let Some(membership) = membership else {
                    return Err(self.refused(hold, LimitKind::Sessions, now));
                };
                if let Some(entry) = lock(&hold.counts).sessions.get_mut(client_id) {
                    entry.membership = Some(membership);
                }
            }
            let counts = lock(&hold.counts);
            if let Some(leases) = &counts.leases {
                if let Some(rate) = rule.publishes {
                    fleet.prefetch(&leases.publishes, &rate);
                }
                if let Some(rate) = rule.bytes {
                    fleet.prefetch(&leases.bytes, &rate);
                }
            }
        }
        Ok(())
    }

    /// The refusal of a CONNECT by `kind` of `hold`'s rule at `now`.
    fn refused(&self, hold: &KeyHold, kind: LimitKind, now: Instant) -> Unsettled {
        let log = lock(&hold.counts).hits.hit(kind, Action::Refused, now);
        Unsettled::Limit(self.hit(hold.rule, kind, Some(&hold.value), log))
    }
}

impl SessionLimits {
    /// What the fleet still decides of the session's CONNECT (see
    /// [`Limits::settle`]), at `now`. Here, not with the session's other
    /// limits: those are the state machine's, which never waits.
    pub(crate) async fn settle(
        &mut self,
        limits: &Limits,
        client_id: &str,
        now: Instant,
    ) -> Result<(), Unsettled> {
        limits.settle(&mut self.holds, client_id, now).await
    }
}
