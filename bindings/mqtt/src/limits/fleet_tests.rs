//! Fleet-wide counting against a fake shared store (no sockets, a fake
//! clock): leases taken without waiting, asked for once and not before the
//! store said; session sets joined and left; and both policies while the
//! store is away.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use futures_util::FutureExt;
use zilla_engine::{async_trait, Membership, StoreStats, Taken, Unavailable};

use super::super::options::LimitOptions;
use super::super::registry::LimitRegistry;
use super::super::{KeyHold, KeyValues, LimitKind, Limits, Phase, Unsettled};
use super::*;
use crate::session::tests::clock;

const MS: Duration = Duration::from_millis(1);

/// A store in memory that answers at once, or not at all.
#[derive(Debug, Default)]
struct FakeCounts {
    down: AtomicBool,
    replicas: AtomicUsize,
    sets: Mutex<HashMap<String, HashSet<String>>>,
    /// (bucket, tokens) of every lease asked for.
    asked: Mutex<Vec<(String, u64)>>,
    /// Tokens `take` grants per call.
    connects: AtomicUsize,
}

/// Leaves the fake's set when dropped.
#[derive(Debug)]
struct Member(Arc<FakeCounts>, String, String);

impl Drop for Member {
    fn drop(&mut self) {
        let mut sets = self.0.sets.lock().unwrap();
        sets.get_mut(&self.1).map(|set| set.remove(&self.2));
    }
}

#[derive(Debug)]
struct Fake(Arc<FakeCounts>);

#[async_trait]
impl SharedCounts for Fake {
    fn available(&self) -> bool {
        !self.0.down.load(Ordering::Relaxed)
    }

    fn replicas(&self) -> usize {
        self.0.replicas.load(Ordering::Relaxed)
    }

    async fn join(
        &self,
        set: &str,
        member: &str,
        capacity: usize,
    ) -> Result<Option<Membership>, Unavailable> {
        if !self.available() {
            return Err(Unavailable("down".into()));
        }
        let mut sets = self.0.sets.lock().unwrap();
        let members = sets.entry(set.to_owned()).or_default();
        if !members.contains(member) && members.len() >= capacity {
            return Ok(None);
        }
        members.insert(member.to_owned());
        Ok(Some(self.hold_unlocked(set, member)))
    }

    fn hold(&self, set: &str, member: &str) -> Membership {
        let mut sets = self.0.sets.lock().unwrap();
        sets.entry(set.to_owned())
            .or_default()
            .insert(member.to_owned());
        self.hold_unlocked(set, member)
    }

    async fn take(&self, _: &str, _: BucketRate, tokens: u64) -> Result<Taken, Unavailable> {
        if !self.available() {
            return Err(Unavailable("down".into()));
        }
        let left = self.0.connects.load(Ordering::Relaxed) as u64;
        let granted = tokens.min(left);
        self.0
            .connects
            .store((left - granted) as usize, Ordering::Relaxed);
        Ok(Taken {
            granted,
            retry_after: Duration::from_secs(1),
        })
    }

    fn lease(&self, bucket: &str, _: BucketRate, tokens: u64, _: &Arc<Lease>) {
        self.0
            .asked
            .lock()
            .unwrap()
            .push((bucket.to_owned(), tokens));
    }

    fn stats(&self) -> Arc<StoreStats> {
        Arc::new(StoreStats::new("fake"))
    }
}

impl Fake {
    fn hold_unlocked(&self, set: &str, member: &str) -> Membership {
        Membership::new(Member(self.0.clone(), set.to_owned(), member.to_owned()))
    }
}

fn fake_fleet(policy: OnUnavailable) -> (Fleet, Arc<FakeCounts>) {
    let state = Arc::new(FakeCounts::default());
    state.replicas.store(3, Ordering::Relaxed);
    let fleet = Fleet {
        counts: Arc::new(Fake(state.clone())),
        policy,
    };
    (fleet, state)
}

fn bucket() -> SharedBucket {
    Leases::new("claim:tenant", "acme").publishes
}

#[test]
fn a_lease_holds_ten_milliseconds_of_the_rate_within_half_the_burst() {
    let rate = |per_second, burst| Rate::new(per_second, burst).unwrap();
    assert_eq!(lease_size(&rate(1000.0, 1000.0)), 10);
    assert_eq!(lease_size(&rate(1000.0, 4.0)), 2);
    assert_eq!(lease_size(&rate(1.0, 1.0)), 1);
    assert_eq!(lease_size(&rate(1_048_576.0, 1_048_576.0)), 10_486);
}

#[test]
fn publishes_take_leased_tokens_and_ask_before_they_run_out() {
    let (fleet, state) = fake_fleet(OnUnavailable::Local);
    let rate = Rate::new(1000.0, 1000.0).unwrap();
    let shared = bucket();
    let mut local = Bucket::default();
    let t0 = clock();
    // Nothing leased yet: the publish waits a moment, one request goes out.
    assert_eq!(
        fleet.take(&shared, &mut local, &rate, 1, t0),
        Err(Lack::Until(t0 + POLL))
    );
    assert_eq!(
        fleet.take(&shared, &mut local, &rate, 1, t0),
        Err(Lack::Until(t0 + POLL))
    );
    assert_eq!(
        *state.asked.lock().unwrap(),
        vec![("claim:tenant=acme/publishes".to_owned(), 10)],
        "asked once, for 10 ms of the rate"
    );
    let taken = |granted, retry_after| Taken {
        granted,
        retry_after,
    };
    shared.lease.fill(10, taken(10, Duration::ZERO), t0);
    for _ in 0..5 {
        assert_eq!(fleet.take(&shared, &mut local, &rate, 1, t0), Ok(()));
    }
    assert_eq!(state.asked.lock().unwrap().len(), 1, "5 left: enough");
    assert_eq!(fleet.take(&shared, &mut local, &rate, 1, t0), Ok(()));
    assert_eq!(state.asked.lock().unwrap().len(), 2, "4 left: ask ahead");
    // The fleet's bucket is empty: 3 granted, the rest due in 7 ms. No
    // request before then, whatever the flood.
    shared.lease.fill(10, taken(3, 7 * MS), t0);
    for _ in 0..7 {
        assert_eq!(fleet.take(&shared, &mut local, &rate, 1, t0), Ok(()));
    }
    for _ in 0..100 {
        assert_eq!(
            fleet.take(&shared, &mut local, &rate, 1, t0 + MS),
            Err(Lack::Until(t0 + 7 * MS))
        );
    }
    assert_eq!(state.asked.lock().unwrap().len(), 2);
    assert!(fleet
        .take(&shared, &mut local, &rate, 1, t0 + 7 * MS)
        .is_err());
    assert_eq!(state.asked.lock().unwrap().len(), 3, "asked again when due");
    // A refund goes back to the lease; more than the burst never fits.
    fleet.refund(&shared, &mut local, &rate, 2);
    assert_eq!(shared.lease.lock().tokens, 2);
    assert_eq!(
        fleet.take(&shared, &mut local, &rate, 1001, t0),
        Err(Lack::Never)
    );
}

#[test]
fn a_store_away_leaves_each_replica_its_share_of_the_rate() {
    let (fleet, state) = fake_fleet(OnUnavailable::Local);
    state.down.store(true, Ordering::Relaxed);
    let rate = Rate::new(30.0, 30.0).unwrap();
    let shared = bucket();
    let mut local = Bucket::default();
    let t0 = clock();
    // Three replicas: 10/s each, burst 10.
    for _ in 0..10 {
        assert_eq!(fleet.take(&shared, &mut local, &rate, 1, t0), Ok(()));
    }
    assert_eq!(
        fleet.take(&shared, &mut local, &rate, 1, t0),
        Err(Lack::Until(t0 + 100 * MS))
    );
    assert!(state.asked.lock().unwrap().is_empty(), "nobody asked");
    assert_eq!(fleet.divided_count(6), 2);
    assert_eq!(fleet.divided_count(2), 1, "never 0");
}

fn shared_limits(yaml: &str, fleet: Fleet) -> Limits {
    let options: Vec<LimitOptions> = serde_yaml::from_str(yaml).unwrap();
    let mut limits = Limits::new(&options, None, Arc::new(LimitRegistry::default())).unwrap();
    limits.share(fleet);
    limits
}

fn keys(client_id: &str) -> KeyValues<'_> {
    KeyValues {
        client_id,
        guarded: None,
        source: Some("192.0.2.7".parse().unwrap()),
    }
}

/// A CONNECT of `client_id` through `limits`: its holds, or why not.
fn connect(limits: &Limits, client_id: &str) -> Result<Vec<KeyHold>, Unsettled> {
    let now = clock();
    let mut holds =
        (limits.connect(Phase::AfterGuard, &keys(client_id), now)).map_err(Unsettled::Limit)?;
    let settled = limits.settle(&mut holds, client_id, now).now_or_never();
    settled.expect("the fake answers at once")?;
    Ok(holds)
}

#[test]
fn sessions_join_the_fleets_set_and_leave_it_with_their_last_connection() {
    let (fleet, state) = fake_fleet(OnUnavailable::Local);
    let limits = shared_limits("- {key: source-address, sessions: 2}", fleet);
    let members = || state.sets.lock().unwrap()["source-address=192.0.2.7"].len();
    let a = connect(&limits, "a").unwrap();
    let b = connect(&limits, "b").unwrap();
    assert_eq!(members(), 2);
    match connect(&limits, "c") {
        Err(Unsettled::Limit(hit)) => assert_eq!(hit.kind, LimitKind::Sessions),
        other => panic!("expected the quota, got {other:?}"),
    }
    // "a" again is a takeover here, not another session.
    let again = connect(&limits, "a").unwrap();
    drop(a);
    assert_eq!(members(), 2, "one connection of a is left");
    drop(again);
    assert_eq!(members(), 1);
    // Another replica's member counts too: "z" takes the last place.
    state
        .sets
        .lock()
        .unwrap()
        .get_mut("source-address=192.0.2.7")
        .unwrap()
        .insert("z".into());
    assert!(connect(&limits, "c").is_err());
    drop(b);
    assert!(connect(&limits, "c").is_ok());
}

#[test]
fn without_the_store_local_divides_and_refuse_refuses() {
    let (fleet, state) = fake_fleet(OnUnavailable::Local);
    let limits = shared_limits("- {key: source-address, sessions: 6}", fleet);
    let early = connect(&limits, "early").unwrap();
    state.down.store(true, Ordering::Relaxed);
    // 6 over 3 replicas: 2 here, "early" included.
    let second = connect(&limits, "second").unwrap();
    assert!(matches!(
        connect(&limits, "third"),
        Err(Unsettled::Limit(_))
    ));
    let takeover = connect(&limits, "early").unwrap();
    // Back: what was admitted meanwhile is counted in the fleet's set.
    state.down.store(false, Ordering::Relaxed);
    assert!(state.sets.lock().unwrap()["source-address=192.0.2.7"].contains("second"));
    drop((early, second, takeover));

    let (fleet, state) = fake_fleet(OnUnavailable::Refuse);
    let limits = shared_limits(
        "- {key: source-address, sessions: 6, connects: {rate: 100}}",
        fleet,
    );
    state.connects.store(100, Ordering::Relaxed);
    let admitted = connect(&limits, "one").unwrap();
    state.down.store(true, Ordering::Relaxed);
    assert!(matches!(
        connect(&limits, "two"),
        Err(Unsettled::Unavailable(_))
    ));
    drop(admitted);
}

#[test]
fn connect_rates_take_from_the_fleets_bucket() {
    let (fleet, state) = fake_fleet(OnUnavailable::Local);
    let limits = shared_limits("- {key: {claim: tenant}, connects: {rate: 1}}", fleet);
    let guarded = zilla_engine::GuardSession {
        attributes: [("tenant".to_owned(), "acme".to_owned())].into(),
        ..Default::default()
    };
    let keys = KeyValues {
        client_id: "a",
        guarded: Some(&guarded),
        source: None,
    };
    let now = clock();
    state.connects.store(1, Ordering::Relaxed);
    let settle = |limits: &Limits| {
        let mut holds = limits.connect(Phase::AfterGuard, &keys, now).unwrap();
        let settled = limits.settle(&mut holds, "a", now).now_or_never().unwrap();
        settled.map(|()| holds)
    };
    assert!(settle(&limits).is_ok());
    match settle(&limits) {
        Err(Unsettled::Limit(hit)) => assert_eq!(hit.kind, LimitKind::Connects),
        other => panic!("expected the connect rate, got {other:?}"),
    }
}
