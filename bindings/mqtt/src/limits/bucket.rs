//! A token bucket kept as one instant (the generic cell rate algorithm):
//! the bucket is full when its theoretical arrival time (TAT) is not in the
//! future, and taking `n` tokens moves the TAT `n / rate` seconds on; the
//! take is allowed while the TAT stays within `burst / rate` of `now`.
//!
//! One `Option<Instant>` per bucket (no float level to refill, no drift),
//! and the time a refused take would succeed is exact, which is what a
//! session that waits for tokens sleeps until. `now` is always a parameter.

use std::time::{Duration, Instant};

/// The longest a bucket may take to refill (`burst / rate`): a year keeps
/// every instant computed from it far from overflow.
const LONGEST_REFILL: f64 = 365.0 * 24.0 * 3600.0;

/// A sustained rate in tokens per second, and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rate {
    per_second: f64,
    burst: f64,
}

impl Rate {
    /// `per_second` tokens a second, `burst` at once; why not, when they
    /// cannot be used.
    pub(crate) fn new(per_second: f64, burst: f64) -> Result<Self, String> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err(format!("rate {per_second} must be a number above 0"));
        }
        if !(burst.is_finite() && burst >= 1.0) {
            return Err(format!("burst {burst} must be at least 1"));
        }
        if burst / per_second > LONGEST_REFILL {
            return Err(format!(
                "burst {burst} at rate {per_second} takes more than a year to refill"
            ));
        }
        Ok(Self { per_second, burst })
    }

    pub(crate) fn per_second(&self) -> f64 {
        self.per_second
    }

    pub(crate) fn burst(&self) -> f64 {
        self.burst
    }

    /// How long `tokens` take to come back.
    fn cost(&self, tokens: u64) -> Duration {
        // `tokens <= burst` here, so this is at most a year (see `new`).
        Duration::from_secs_f64(tokens as f64 / self.per_second)
    }

    /// How far ahead of `now` the TAT may be: the whole burst.
    fn tolerance(&self) -> Duration {
        Duration::from_secs_f64(self.burst / self.per_second)
    }
}

/// Why tokens could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lack {
    /// Enough tokens will be there at this instant (if nothing else takes them).
    Until(Instant),
    /// More tokens than the burst: never.
    Never,
}

/// One bucket's state; full when new.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Bucket {
    /// The theoretical arrival time; `None` or a past instant: full.
    tat: Option<Instant>,
}

impl Bucket {
    /// Takes `tokens` at `now`, or says when they will be there.
    pub(crate) fn take(&mut self, rate: &Rate, tokens: u64, now: Instant) -> Result<(), Lack> {
        if tokens as f64 > rate.burst {
            return Err(Lack::Never);
        }
        let start = self.tat.map_or(now, |tat| tat.max(now));
        let next = start + rate.cost(tokens);
        let tolerance = rate.tolerance();
        if next <= now + tolerance {
            self.tat = Some(next);
            Ok(())
        } else {
            // `next - tolerance` is after `now`, and at that instant the same
            // take fits exactly (the TAT has not moved).
            Err(Lack::Until(next - tolerance))
        }
    }

    /// Gives back `tokens` taken earlier (a take that another bucket refused).
    pub(crate) fn refund(&mut self, rate: &Rate, tokens: u64) {
        if let Some(tat) = self.tat {
            self.tat = tat.checked_sub(rate.cost(tokens.min(rate.burst as u64)));
        }
    }

    /// Whether the bucket holds its whole burst again at `now`: then it
    /// carries no information and may be forgotten.
    #[cfg(test)]
    pub(crate) fn is_full(&self, now: Instant) -> bool {
        self.tat.is_none_or(|tat| tat <= now)
    }

    /// When the bucket is full again.
    pub(crate) fn full_at(&self) -> Option<Instant> {
        self.tat
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::tests::clock;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_full_bucket_gives_its_burst_then_one_token_per_interval() {
        let rate = Rate::new(10.0, 3.0).unwrap();
        let t0 = clock();
        let mut bucket = Bucket::default();
        for _ in 0..3 {
            assert_eq!(bucket.take(&rate, 1, t0), Ok(()));
        }
        // The fourth waits exactly one interval (100 ms).
        assert_eq!(bucket.take(&rate, 1, t0), Err(Lack::Until(t0 + 100 * MS)));
        assert_eq!(
            bucket.take(&rate, 1, t0 + 99 * MS),
            Err(Lack::Until(t0 + 100 * MS))
        );
        assert_eq!(bucket.take(&rate, 1, t0 + 100 * MS), Ok(()));
        assert!(bucket.take(&rate, 1, t0 + 100 * MS).is_err());
        // After a pause, the burst is back, and never more than it.
        let later = t0 + Duration::from_secs(10);
        assert!(bucket.is_full(later));
        for _ in 0..3 {
            assert_eq!(bucket.take(&rate, 1, later), Ok(()));
        }
        assert!(bucket.take(&rate, 1, later).is_err());
    }

    #[test]
    fn byte_buckets_take_many_tokens_and_refuse_more_than_the_burst() {
        let rate = Rate::new(1000.0, 1500.0).unwrap();
        let t0 = clock();
        let mut bucket = Bucket::default();
        assert_eq!(bucket.take(&rate, 1000, t0), Ok(()));
        // 500 left: 1000 more are there after half a second.
        assert_eq!(
            bucket.take(&rate, 1000, t0),
            Err(Lack::Until(t0 + 500 * MS))
        );
        assert_eq!(bucket.take(&rate, 1000, t0 + 500 * MS), Ok(()));
        assert_eq!(bucket.take(&rate, 1501, t0), Err(Lack::Never));
    }

    #[test]
    fn a_refund_gives_the_tokens_back() {
        let rate = Rate::new(1.0, 2.0).unwrap();
        let t0 = clock();
        let mut bucket = Bucket::default();
        bucket.take(&rate, 2, t0).unwrap();
        assert!(bucket.take(&rate, 1, t0).is_err());
        bucket.refund(&rate, 1);
        assert_eq!(bucket.take(&rate, 1, t0), Ok(()));
        bucket.refund(&rate, 2);
        assert!(bucket.is_full(t0));
    }

    #[test]
    fn fractional_rates_and_invalid_ones() {
        let rate = Rate::new(0.5, 1.0).unwrap();
        let t0 = clock();
        let mut bucket = Bucket::default();
        bucket.take(&rate, 1, t0).unwrap();
        assert_eq!(
            bucket.take(&rate, 1, t0),
            Err(Lack::Until(t0 + Duration::from_secs(2)))
        );
        assert!(Rate::new(0.0, 1.0).is_err());
        assert!(Rate::new(f64::NAN, 1.0).is_err());
        assert!(Rate::new(1.0, 0.5).is_err());
        assert!(Rate::new(1e-9, 1.0).unwrap_err().contains("a year"));
    }
}
