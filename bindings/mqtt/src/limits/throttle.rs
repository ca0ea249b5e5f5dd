//! How a session waits for publish tokens: backpressure first, refusals
//! when the client stays over its rate.
//!
//! A publish without its tokens is held, and the driver stops reading from
//! the client until the tokens are due (TCP slows the client down). The time
//! reading stays paused is a budget of `limit-wait`: it drains while a
//! publish is held and refills as fast while none is. A session that used
//! its whole budget (it has been over its rate for `limit-wait`, net of the
//! time it was not) is refused instead of held: its held publish, and every
//! publish without tokens until the budget is full again. Then it is held
//! again. A client just above its rate for a moment never sees a refusal; a
//! client flooding gets a clear answer instead of a connection that looks
//! stuck, and its PINGREQs and acknowledgements are read again.

use std::time::{Duration, Instant};

/// What to do with a publish that lacks tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnLack {
    /// Hold it and stop reading from the client until its tokens are due.
    Hold,
    /// Refuse it now: the pause budget is used up.
    Refuse,
}

/// One session's pause budget and the publish it holds (`T`).
#[derive(Debug)]
pub(crate) struct Throttle<T> {
    /// `limit-wait`: the budget.
    wait: Duration,
    held: Option<T>,
    /// When the held publish's tokens are due.
    until: Option<Instant>,
    /// Time spent paused, net of the time not paused; at most `wait` counts.
    paused: Duration,
    /// When `paused` was last brought up to date.
    at: Instant,
    /// The budget ran out and has not refilled yet.
    refusing: bool,
}

impl<T> Throttle<T> {
    /// A full budget of `wait`, at `now`.
    pub(crate) fn new(wait: Duration, now: Instant) -> Self {
        Self {
            wait,
            held: None,
            until: None,
            paused: Duration::ZERO,
            at: now,
            refusing: false,
        }
    }

    /// Brings the budget up to `now`.
    fn settle(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at);
        self.at = self.at.max(now);
        if self.held.is_some() {
            self.paused = (self.paused + elapsed).min(self.wait);
        } else {
            self.paused = self.paused.saturating_sub(elapsed);
        }
        if self.refusing && self.paused.is_zero() {
            self.refusing = false;
        }
    }

    /// Whether a publish is held (the driver does not read from the client).
    pub(crate) fn is_holding(&self) -> bool {
        self.held.is_some()
    }

    /// Whether publishes without tokens are refused rather than held.
    #[cfg(test)]
    pub(crate) fn is_refusing(&self) -> bool {
        self.refusing
    }

    /// A publish lacks tokens at `now`: hold it, or refuse it.
    pub(crate) fn on_lack(&mut self, now: Instant) -> OnLack {
        self.settle(now);
        if self.refusing || self.paused >= self.wait {
            self.refusing = true;
            OnLack::Refuse
        } else {
            OnLack::Hold
        }
    }

    /// Holds `publish` from `now` until its tokens are due (`until`).
    pub(crate) fn hold(&mut self, publish: T, until: Instant, now: Instant) {
        self.settle(now);
        self.held = Some(publish);
        self.until = Some(until);
    }

    /// The held publish, taken back at `now` to be tried again (and held
    /// again, passed or refused by the caller).
    pub(crate) fn take_held(&mut self, now: Instant) -> Option<T> {
        self.settle(now);
        self.until = None;
        self.held.take()
    }

    /// When the held publish is to be tried again: when its tokens are due,
    /// or when the budget runs out, whichever comes first.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.held.as_ref()?;
        let out_of_budget = self.at + self.wait.saturating_sub(self.paused);
        Some(self.until?.min(out_of_budget))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::tests::clock;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_short_wait_holds_and_never_refuses() {
        let t0 = clock();
        let mut throttle = Throttle::new(5 * S, t0);
        assert_eq!(throttle.on_lack(t0), OnLack::Hold);
        throttle.hold("p1", t0 + S / 10, t0);
        assert!(throttle.is_holding());
        assert_eq!(throttle.deadline(), Some(t0 + S / 10));
        assert_eq!(throttle.take_held(t0 + S / 10), Some("p1"));
        assert!(!throttle.is_holding());
        assert_eq!(throttle.deadline(), None);
        assert_eq!(throttle.on_lack(t0 + S), OnLack::Hold);
    }

    #[test]
    fn a_client_over_its_rate_for_the_whole_wait_is_refused_until_the_budget_refills() {
        let t0 = clock();
        let mut throttle = Throttle::new(2 * S, t0);
        // Held back to back: each publish waits half a second.
        let mut now = t0;
        for n in 0..4 {
            assert_eq!(throttle.on_lack(now), OnLack::Hold, "publish {n}");
            throttle.hold(n, now + S / 2, now);
            now += S / 2;
            assert_eq!(throttle.deadline(), Some(now));
            assert_eq!(throttle.take_held(now), Some(n));
        }
        // Two seconds paused: the budget is used up.
        assert_eq!(throttle.on_lack(now), OnLack::Refuse);
        assert!(throttle.is_refusing());
        assert_eq!(throttle.on_lack(now + S), OnLack::Refuse);
        // Refilled after as long again without a hold.
        assert_eq!(throttle.on_lack(now + 2 * S), OnLack::Hold);
        assert!(!throttle.is_refusing());
    }

    #[test]
    fn a_held_publish_is_due_when_the_budget_runs_out() {
        let t0 = clock();
        let mut throttle = Throttle::new(S, t0);
        throttle.hold("slow", t0 + 10 * S, t0);
        assert_eq!(throttle.deadline(), Some(t0 + S));
        assert_eq!(throttle.take_held(t0 + S), Some("slow"));
        assert_eq!(throttle.on_lack(t0 + S), OnLack::Refuse);
    }

    #[test]
    fn pauses_with_room_in_between_do_not_add_up() {
        let t0 = clock();
        let mut throttle = Throttle::new(2 * S, t0);
        let mut now = t0;
        for _ in 0..20 {
            assert_eq!(throttle.on_lack(now), OnLack::Hold);
            throttle.hold((), now + S, now);
            now += S;
            throttle.take_held(now);
            // As long without a hold: the budget refills.
            now += S;
        }
    }

    #[test]
    fn no_wait_refuses_at_once() {
        let t0 = clock();
        let mut throttle: Throttle<()> = Throttle::new(Duration::ZERO, t0);
        assert_eq!(throttle.on_lack(t0), OnLack::Refuse);
        assert_eq!(throttle.on_lack(t0 + S), OnLack::Refuse);
    }
}
