//! Limits and quotas of an mqtt server (beyond Zilla): `options.limits`.
//!
//! Each `limits[]` entry names a key (client id, the guard's identity, a
//! claim of the guard's session, the source address, or the session itself)
//! and what each value of that key may use: concurrent sessions, CONNECTs
//! per second, PUBLISH packets and payload bytes per second, subscriptions
//! and topic sizes. What values of a key use is counted in the
//! [`registry::LimitRegistry`] (shared by every session of that value); what
//! one session uses, in its [`session::SessionLimits`].
//!
//! Where each limit applies:
//! - CONNECT ([`Limits::connect`], called by admission): connects per
//!   `client-id` and `source-address` before the guard is asked (a flood of
//!   CONNECTs costs no signature check), connects per `identity` and claim
//!   after it, then sessions per key (CONNACK 0x9F / 0x97; 3.1.1: 0x03).
//! - PUBLISH (the session): tokens per session and per key; without them the
//!   publish waits and reading pauses ([`throttle`]), then it is refused
//!   (PUBACK/PUBREC 0x97, QoS 0 dropped; 3.1.1: the connection closes).
//! - SUBSCRIBE and topics (the session): SUBACK 0x97 beyond the session's
//!   subscriptions, 0x8F/0x90 for a topic beyond its length or levels.
//!
//! Nothing here reads the clock or does I/O: buckets take `now`.

mod bucket;
mod fleet;
mod hits;
pub(crate) mod options;
pub(crate) mod registry;
mod session;
mod settle;
mod throttle;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use core::net::IpAddr;

use zilla_engine::telemetry::text;
use zilla_engine::GuardSession;

pub(crate) use bucket::{Lack, Rate};
use fleet::Leases;
pub(crate) use fleet::{Fleet, OnUnavailable};
use hits::HitLogs;
pub(crate) use hits::{suppressed_note, Action, LimitKind};
use options::{LimitKey, LimitOptions};
use registry::{lock, KeyCounts, LimitRegistry};
pub(crate) use session::{Lacking, SessionLimits};
pub(crate) use settle::Unsettled;
pub(crate) use throttle::OnLack;

/// How long a publish over its rate may keep reading paused before the
/// session's publishes are refused (`limit-wait`, seconds).
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(5);
/// The longest `limit-wait`: a client paused longer looks dead to itself.
const MAXIMUM_WAIT: Duration = Duration::from_secs(3600);

/// One `limits[]` entry, checked.
#[derive(Debug)]
pub(crate) struct Rule {
    key: LimitKey,
    /// The key as written: the registry's scope and the `key` label.
    scope: Arc<str>,
    sessions: Option<usize>,
    connects: Option<Rate>,
    publishes: Option<Rate>,
    bytes: Option<Rate>,
    subscriptions: Option<usize>,
    topic_length: Option<usize>,
    topic_levels: Option<usize>,
}

/// Where a limit does not belong, and why: (field, why).
const MISPLACED: [(&str, &str); 5] = [
    ("sessions", "counts the sessions of one key value, not of a session"),
    (
        "sessions",
        "a client id has one session at a time (a newer connection takes it over); count by another key",
    ),
    ("connects", "counts the CONNECTs of one key value; a session has one"),
    ("subscriptions", "applies to `key: session` only"),
    ("topic", "applies to `key: session` only"),
];

impl Rule {
    /// Checks one entry; errors name the field (`""`: the entry) and why.
    fn new(entry: &LimitOptions) -> Result<Self, (&'static str, String)> {
        let key = &entry.key;
        let session = *key == LimitKey::Session;
        let misplaced = [
            entry.sessions.is_some() && session,
            entry.sessions.is_some() && *key == LimitKey::ClientId,
            entry.connects.is_some() && session,
            entry.subscriptions.is_some() && !session,
            entry.topic.is_some() && !session,
        ];
        if let Some(at) = misplaced.iter().position(|wrong| *wrong) {
            let (field, why) = MISPLACED[at];
            return Err((field, why.to_owned()));
        }
        let at_least_one = |value: Option<u32>, field| match value {
            Some(0) => Err((field, "must be at least 1".to_owned())),
            value => Ok(value.map(|v| v as usize)),
        };
        let rate = |rate: Option<options::RateOptions>, field| {
            rate.map(|r| Rate::new(r.rate, r.burst.unwrap_or(r.rate.max(1.0))))
                .transpose()
                .map_err(|why| (field, why))
        };
        let topic = entry.topic.unwrap_or(options::TopicLimitOptions {
            length: None,
            levels: None,
        });
        if entry.topic.is_some() && topic.length.is_none() && topic.levels.is_none() {
            return Err(("topic", "sets neither `length` nor `levels`".into()));
        }
        let rule = Rule {
            key: key.clone(),
            scope: key.label().into(),
            sessions: at_least_one(entry.sessions, "sessions")?,
            connects: rate(entry.connects, "connects")?,
            publishes: rate(entry.publishes, "publishes")?,
            bytes: rate(entry.bytes, "bytes")?,
            subscriptions: at_least_one(entry.subscriptions, "subscriptions")?,
            topic_length: at_least_one(topic.length, "topic.length")?,
            topic_levels: at_least_one(topic.levels, "topic.levels")?,
        };
        if !LimitKind::ALL.iter().any(|&kind| rule.has(kind)) {
            return Err(("", "sets no limit".into()));
        }
        Ok(rule)
    }

    fn has(&self, kind: LimitKind) -> bool {
        match kind {
            LimitKind::Sessions => self.sessions.is_some(),
            LimitKind::Connects => self.connects.is_some(),
            LimitKind::Publishes => self.publishes.is_some(),
            LimitKind::Bytes => self.bytes.is_some(),
            LimitKind::Subscriptions => self.subscriptions.is_some(),
            LimitKind::TopicLength => self.topic_length.is_some(),
            LimitKind::TopicLevels => self.topic_levels.is_some(),
        }
    }

    /// "publishes limit (100/s, burst 200) of claim:tenant acme".
    fn describe(&self, kind: LimitKind, value: Option<&str>) -> String {
        let rate = |rate: &Option<Rate>| {
            rate.map_or(String::new(), |r| {
                format!("{}/s, burst {}", r.per_second(), r.burst())
            })
        };
        let amount = match kind {
            LimitKind::Sessions => self.sessions.unwrap_or_default().to_string(),
            LimitKind::Connects => rate(&self.connects),
            LimitKind::Publishes => rate(&self.publishes),
            LimitKind::Bytes => rate(&self.bytes),
            LimitKind::Subscriptions => self.subscriptions.unwrap_or_default().to_string(),
            LimitKind::TopicLength => format!("{} bytes", self.topic_length.unwrap_or_default()),
            LimitKind::TopicLevels => self.topic_levels.unwrap_or_default().to_string(),
        };
        let whose = match value {
            Some(value) => format!("{} {}", self.scope, text(value)),
            None => "the session".to_owned(),
        };
        format!("{} limit ({amount}) of {whose}", kind.name())
    }
}

/// The limits of one mqtt server.
#[derive(Debug)]
pub(crate) struct Limits {
    rules: Vec<Rule>,
    /// The `key: session` rule, if any.
    session_rule: Option<usize>,
    /// `limit-wait`.
    wait: Duration,
    registry: Arc<LimitRegistry>,
    /// (rule, limit) of each `mqtt.limits.hits` slot.
    slots: Vec<(usize, LimitKind)>,
    /// When `key: session` limits hit at CONNECT (a will topic) were last
    /// logged: before a session exists, they are logged per server.
    connect_hits: Mutex<HitLogs>,
    /// The store shared by the fleet, when the counts live there.
    fleet: Option<Fleet>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            session_rule: None,
            wait: DEFAULT_WAIT,
            registry: Arc::default(),
            slots: Vec::new(),
            connect_hits: Mutex::default(),
            fleet: None,
        }
    }
}

/// The values a session has for each kind of key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyValues<'a> {
    /// Empty while `options.client-id` has yet to give a CONNECT without
    /// one its id: then it has no `client-id` value.
    pub(crate) client_id: &'a str,
    /// The guard session the `identity` and claim keys read: the session's
    /// own guard's (the one of `options.authorization` its CONNECT's
    /// credentials went to), else one granted at an earlier layer (see
    /// `admit::limited_as`).
    pub(crate) guarded: Option<&'a GuardSession>,
    /// The client's address (the one a PROXY protocol header carried, if any).
    pub(crate) source: Option<IpAddr>,
}

impl KeyValues<'_> {
    /// This session's value of `key`; `None` when it has none (no guard,
    /// no such claim): then that entry's limits do not apply to it.
    fn value(&self, key: &LimitKey) -> Option<String> {
        match key {
            // Not every empty-id CONNECT in one bucket.
            LimitKey::ClientId => (!self.client_id.is_empty()).then(|| self.client_id.to_owned()),
            LimitKey::Identity => self.guarded?.identity.clone(),
            LimitKey::Claim(name) => self.guarded?.attributes.get(name).cloned(),
            LimitKey::SourceAddress => self.source.map(source_value),
            LimitKey::Session => None,
        }
    }
}

/// An address as a `source-address` value: IPv4 as is (also when mapped
/// into IPv6), IPv6 by its /64, the network one host or site is given and
/// picks addresses from at will.
fn source_value(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", core::net::Ipv6Addr::from(network))
        }
    }
}

/// When a CONNECT's limits are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Before the guard is asked: connects per client id and source address.
    BeforeGuard,
    /// With the guard's verdict: connects per identity and claim, then
    /// sessions per key.
    AfterGuard,
}

/// A limit that was hit, as the caller reports it.
#[derive(Debug)]
pub(crate) struct LimitHit {
    /// Its `mqtt.limits.hits` slot.
    pub(crate) slot: Option<usize>,
    pub(crate) kind: LimitKind,
    /// What was hit: "sessions limit (2) of claim:tenant \"acme\"".
    pub(crate) why: String,
    /// `Some(hits left unlogged since the last event)` when this hit is to
    /// be logged (one event per key value, limit and action per 10 s).
    pub(crate) log: Option<u64>,
}

/// A session's place in the counts of one key value: it is charged for
/// its publishes there, and counted among the value's sessions until it
/// ends (dropped).
#[derive(Debug)]
pub(crate) struct KeyHold {
    rule: usize,
    value: String,
    counts: Arc<Mutex<KeyCounts>>,
    /// The client id counted in `sessions`.
    session: Option<String>,
    /// With a shared store: a connect token still to take from the fleet's
    /// bucket ([`Limits::settle`]).
    connect: bool,
    /// With a shared store: the session still to join the fleet's set.
    join: bool,
}

impl Drop for KeyHold {
    fn drop(&mut self) {
        if let Some(client_id) = &self.session {
            let mut counts = lock(&self.counts);
            if let Some(entry) = counts.sessions.get_mut(client_id) {
                entry.connections -= 1;
                if entry.connections == 0 {
                    // Its membership goes with it: the fleet's set frees it.
                    counts.sessions.remove(client_id);
                }
            }
        }
    }
}

impl Limits {
    /// Checks `options.limits` (errors name the path under `options`).
    /// Counts live in `registry`.
    ///
    /// `identity` and claim keys are accepted without the server's own
    /// `options.authorization`: a guard at an earlier layer (a tls
    /// server's x509 guard) may grant the identity, which the server only
    /// learns per connection. A session without one is not limited by them.
    pub(crate) fn new(
        options: &[LimitOptions],
        wait: Option<u32>,
        registry: Arc<LimitRegistry>,
    ) -> Result<Self, (String, String)> {
        let mut rules: Vec<Rule> = Vec::new();
        for (index, entry) in options.iter().enumerate() {
            if let Some(other) = rules.iter().position(|rule| rule.key == entry.key) {
                return Err((
                    format!("limits[{index}].key"),
                    format!(
                        "`{}` already has limits in limits[{other}]; set them in one entry",
                        entry.key.label()
                    ),
                ));
            }
            let rule = Rule::new(entry).map_err(|(field, why)| match field {
                "" => (format!("limits[{index}]"), why),
                field => (format!("limits[{index}].{field}"), why),
            })?;
            rules.push(rule);
        }
        if wait.is_some_and(|seconds| u64::from(seconds) > MAXIMUM_WAIT.as_secs()) {
            return Err((
                "limit-wait".into(),
                format!("must be at most {} seconds", MAXIMUM_WAIT.as_secs()),
            ));
        }
        let slots = (rules.iter().enumerate())
            .flat_map(|(index, rule)| {
                (LimitKind::ALL.iter())
                    .filter(|&&kind| rule.has(kind))
                    .map(move |&kind| (index, kind))
            })
            .collect();
        Ok(Self {
            session_rule: rules.iter().position(|rule| rule.key == LimitKey::Session),
            rules,
            wait: wait.map_or(DEFAULT_WAIT, |seconds| {
                Duration::from_secs(u64::from(seconds))
            }),
            registry,
            slots,
            connect_hits: Mutex::default(),
            fleet: None,
        })
    }

    /// Counts the limits in the store the fleet shares, with `policy` for
    /// when it does not answer.
    pub(crate) fn share(&mut self, fleet: Fleet) {
        self.fleet = Some(fleet);
    }

    /// The store the fleet shares, when the counts live there.
    pub(crate) fn fleet(&self) -> Option<&Fleet> {
        self.fleet.as_ref()
    }

    /// The `key: session` rule, if any.
    pub(crate) fn session_rule(&self) -> Option<usize> {
        self.session_rule
    }

    /// The (`key`, `limit`) labels of each `mqtt.limits.hits` slot.
    pub(crate) fn metric_labels(&self) -> Vec<(String, &'static str)> {
        (self.slots.iter())
            .map(|&(rule, kind)| (self.rules[rule].scope.to_string(), kind.name()))
            .collect()
    }

    fn slot(&self, rule: usize, kind: LimitKind) -> Option<usize> {
        self.slots.iter().position(|&slot| slot == (rule, kind))
    }

    /// The hit of `kind` of `rule` (for `value`), logged or not.
    fn hit(&self, rule: usize, kind: LimitKind, value: Option<&str>, log: Option<u64>) -> LimitHit {
        LimitHit {
            slot: self.slot(rule, kind),
            kind,
            why: self.rules[rule].describe(kind, value),
            log,
        }
    }

    /// The hit of a `key: session` limit by a CONNECT at `now` (its will
    /// topic), logged once per interval for the whole server.
    pub(crate) fn connect_hit(&self, rule: usize, kind: LimitKind, now: Instant) -> LimitHit {
        let log = (self.connect_hits.lock().unwrap_or_else(|p| p.into_inner())).hit(
            kind,
            Action::Refused,
            now,
        );
        self.hit(rule, kind, None, log)
    }

    /// Checks a CONNECT's limits in `phase` at `now`: takes its connect
    /// tokens, and after the guard counts it among its keys' sessions. The
    /// holds are the session's place in its keys' counts (released when
    /// dropped, e.g. with a refused CONNECT). With a shared store, what the
    /// fleet counts is left to [`Limits::settle`], marked in the holds.
    pub(crate) fn connect(
        &self,
        phase: Phase,
        keys: &KeyValues<'_>,
        now: Instant,
    ) -> Result<Vec<KeyHold>, LimitHit> {
        let shared = self.fleet.is_some();
        let mut holds = Vec::new();
        // Connect tokens first: an attempt counts, whether or not the
        // session limit then admits it.
        for (index, rule) in self.rules.iter().enumerate() {
            let due = match phase {
                Phase::BeforeGuard => {
                    matches!(rule.key, LimitKey::ClientId | LimitKey::SourceAddress)
                }
                Phase::AfterGuard => matches!(rule.key, LimitKey::Identity | LimitKey::Claim(_)),
            };
            let (Some(rate), true, Some(value)) = (rule.connects, due, keys.value(&rule.key))
            else {
                continue;
            };
            let counts = self.registry.counts(&rule.scope, &value, now);
            if shared {
                holds.push(KeyHold {
                    rule: index,
                    value,
                    counts,
                    session: None,
                    connect: true,
                    join: false,
                });
                continue;
            }
            let mut counts = lock(&counts);
            if counts.connects.take(&rate, 1, now).is_err() {
                let log = counts.hits.hit(LimitKind::Connects, Action::Refused, now);
                return Err(self.hit(index, LimitKind::Connects, Some(&value), log));
            }
        }
        if phase == Phase::BeforeGuard {
            return Ok(holds);
        }
        for (index, rule) in self.rules.iter().enumerate() {
            if rule.sessions.is_none() && rule.publishes.is_none() && rule.bytes.is_none() {
                continue;
            }
            let Some(value) = keys.value(&rule.key) else {
                continue;
            };
            let counts = self.registry.counts(&rule.scope, &value, now);
            let mut session = None;
            let mut join = false;
            if let Some(maximum) = rule.sessions {
                let mut locked = lock(&counts);
                let entry = locked.sessions.get(keys.client_id);
                // A client id already counted is a takeover (or a second
                // connection racing one): the same session, not another.
                // With a shared store, one this replica holds there is
                // (else the fleet decides, in `settle`).
                let held = entry.is_some_and(|entry| !shared || entry.membership.is_some());
                if !shared && !held && locked.sessions.len() >= maximum {
                    let log = locked.hits.hit(LimitKind::Sessions, Action::Refused, now);
                    return Err(self.hit(index, LimitKind::Sessions, Some(&value), log));
                }
                join = shared && !held;
                (locked
                    .sessions
                    .entry(keys.client_id.to_owned())
                    .or_default())
                .connections += 1;
                session = Some(keys.client_id.to_owned());
            }
            if shared && (rule.publishes.is_some() || rule.bytes.is_some()) {
                (lock(&counts).leases)
                    .get_or_insert_with(|| Box::new(Leases::new(&rule.scope, &value)));
            }
            let connect = holds
                .iter()
                .position(|hold| hold.rule == index && hold.connect);
            if let Some(at) = connect {
                // The connect token's hold is this rule's hold too.
                let mut hold = holds.remove(at);
                hold.session = session;
                hold.join = join;
                holds.push(hold);
                continue;
            }
            holds.push(KeyHold {
                rule: index,
                value,
                counts,
                session,
                connect: false,
                join,
            });
        }
        Ok(holds)
    }

    /// What a session admitted at `now` with `holds` is limited by; `None`
    /// when nothing limits it (no cost on its message path).
    pub(crate) fn session(&self, holds: Vec<KeyHold>, now: Instant) -> Option<Box<SessionLimits>> {
        if holds.is_empty() && self.session_rule.is_none() {
            return None;
        }
        let subscriptions = self
            .session_rule
            .and_then(|rule| self.rules[rule].subscriptions);
        Some(Box::new(SessionLimits::new(
            holds,
            self.wait,
            subscriptions,
            now,
        )))
    }

    /// The topic limit `topic` (a name, or a filter when `filter`) exceeds:
    /// the `key: session` rule and which of its limits.
    pub(crate) fn topic_hit(&self, topic: &str, filter: bool) -> Option<(usize, LimitKind)> {
        let index = self.session_rule?;
        let rule = &self.rules[index];
        if rule
            .topic_length
            .is_some_and(|maximum| topic.len() > maximum)
        {
            return Some((index, LimitKind::TopicLength));
        }
        let levels = if filter {
            crate::topic::effective_filter(topic)
        } else {
            topic
        };
        let too_deep = rule
            .topic_levels
            .is_some_and(|maximum| levels.split('/').nth(maximum).is_some());
        too_deep.then_some((index, LimitKind::TopicLevels))
    }
}

#[cfg(test)]
mod tests;
