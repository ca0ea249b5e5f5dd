//! What a limit did when it was hit, and how often that is logged: at most
//! one event per key value, limit and action every [`EVENT_INTERVAL`], with
//! the number of hits left unlogged in between. A client that floods a
//! limit costs a counter increment per hit, never an event per message.

use std::time::{Duration, Instant};

/// How often the same key value, limit and action is logged at most.
pub(crate) const EVENT_INTERVAL: Duration = Duration::from_secs(10);

/// Each limit a `limits[]` entry can set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitKind {
    Sessions,
    Connects,
    Publishes,
    Bytes,
    Subscriptions,
    TopicLength,
    TopicLevels,
}

impl LimitKind {
    /// Every kind, in the order metric slots are numbered.
    pub(crate) const ALL: [LimitKind; 7] = [
        LimitKind::Sessions,
        LimitKind::Connects,
        LimitKind::Publishes,
        LimitKind::Bytes,
        LimitKind::Subscriptions,
        LimitKind::TopicLength,
        LimitKind::TopicLevels,
    ];

    /// The `limit` label, and the name in events.
    pub(crate) fn name(self) -> &'static str {
        match self {
            LimitKind::Sessions => "sessions",
            LimitKind::Connects => "connects",
            LimitKind::Publishes => "publishes",
            LimitKind::Bytes => "bytes",
            LimitKind::Subscriptions => "subscriptions",
            LimitKind::TopicLength => "topic-length",
            LimitKind::TopicLevels => "topic-levels",
        }
    }
}

/// What a hit limit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// A publish waited for tokens (reading from the client paused).
    Delayed,
    /// The client was refused: CONNACK, PUBACK/PUBREC or SUBACK code, a
    /// QoS 0 publish dropped, or (3.1.1) the connection closed.
    Refused,
}

/// When each (limit, action) of one key value (or session) was last logged,
/// and the hits since. Empty until a limit is hit, so an idle key costs
/// nothing here.
#[derive(Debug, Default)]
pub(crate) struct HitLogs(Vec<(LimitKind, Action, Instant, u64)>);

impl HitLogs {
    /// Records a hit at `now`: `Some(hits not logged since the last event)`
    /// when this one is to be logged.
    pub(crate) fn hit(&mut self, kind: LimitKind, action: Action, now: Instant) -> Option<u64> {
        let Some((_, _, last, suppressed)) =
            (self.0.iter_mut()).find(|(k, a, _, _)| *k == kind && *a == action)
        else {
            self.0.push((kind, action, now, 0));
            return Some(0);
        };
        if now >= *last + EVENT_INTERVAL {
            *last = now;
            Some(std::mem::take(suppressed))
        } else {
            *suppressed += 1;
            None
        }
    }
}

/// " (N more since the last event)", or nothing when none were left out.
pub(crate) fn suppressed_note(suppressed: u64) -> String {
    match suppressed {
        0 => String::new(),
        n => format!(" ({n} more since the last event)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::tests::clock;

    #[test]
    fn one_event_per_interval_with_the_hits_in_between() {
        let mut logs = HitLogs::default();
        let t0 = clock();
        assert_eq!(logs.hit(LimitKind::Publishes, Action::Delayed, t0), Some(0));
        for _ in 0..1000 {
            assert_eq!(logs.hit(LimitKind::Publishes, Action::Delayed, t0), None);
        }
        // Another action or limit has its own interval.
        assert_eq!(logs.hit(LimitKind::Publishes, Action::Refused, t0), Some(0));
        assert_eq!(logs.hit(LimitKind::Bytes, Action::Delayed, t0), Some(0));
        let later = t0 + EVENT_INTERVAL;
        assert_eq!(
            logs.hit(LimitKind::Publishes, Action::Delayed, later),
            Some(1000)
        );
        assert_eq!(logs.hit(LimitKind::Publishes, Action::Delayed, later), None);
        assert_eq!(suppressed_note(0), "");
        assert_eq!(suppressed_note(3), " (3 more since the last event)");
    }
}
