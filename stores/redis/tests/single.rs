//! The redis store against one real redis-server (Debian's, on a free
//! port, started per test): sets with a capacity shared by replicas (two
//! stores on one server are two replicas), token buckets, and what the
//! store does when Redis is killed and comes back empty.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{available, capture, eventually, number, store};
use zilla_engine::{BucketRate, Events, Lease, SharedCounts};
use zilla_store_redis::{RedisOptions, RedisStore};
use zilla_testkit::Redis;

/// Options for one server at `url`, every other option its default.
fn single(url: &str) -> RedisOptions {
    RedisOptions {
        url: Some(url.to_owned()),
        ..RedisOptions::default()
    }
}

fn zcard(redis: &Redis, set: &str) -> i64 {
    number(redis.cli(&["zcard", &format!("zilla:{{{set}}}:members")]))
}

fn owner(redis: &Redis, set: &str, member: &str) -> String {
    redis
        .cli(&["hget", &format!("zilla:{{{set}}}:owners"), member])
        .expect("redis-cli answers")
        .trim()
        .to_owned()
}

/// Waits until `counts` has had `n` LEAVEs answered (they are sent from a
/// spawned task when a membership is dropped).
async fn leaves_answered(counts: &Arc<dyn SharedCounts>, n: u64) {
    eventually("the LEAVE to be answered", Duration::from_secs(5), || {
        let stats = counts.stats();
        let done = stats.commands("leave") >= n;
        async move { done }
    })
    .await;
    assert_eq!(counts.stats().errors("leave"), 0);
}

#[tokio::test]
async fn a_set_admits_up_to_its_capacity_and_a_member_again() {
    let redis = Redis::start().unwrap();
    let (_store, counts) = store(&single(&redis.url()));
    let first = counts.join("tenant:acme", "device-1", 2).await.unwrap();
    let second = counts.join("tenant:acme", "device-2", 2).await.unwrap();
    assert!(first.is_some() && second.is_some());
    assert!(
        counts
            .join("tenant:acme", "device-3", 2)
            .await
            .unwrap()
            .is_none(),
        "full"
    );
    let again = counts.join("tenant:acme", "device-1", 2).await.unwrap();
    assert!(again.is_some(), "a member re-joins a full set");
    assert_eq!(zcard(&redis, "tenant:acme"), 2);
    assert!(
        counts
            .join("tenant:other", "device-3", 2)
            .await
            .unwrap()
            .is_some(),
        "another set, another count"
    );
    assert_eq!(counts.stats().commands("join"), 5);
    drop(second);
    leaves_answered(&counts, 1).await;
    assert_eq!(zcard(&redis, "tenant:acme"), 1);
    assert!(counts
        .join("tenant:acme", "device-3", 2)
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn a_leave_by_an_old_membership_keeps_the_member_re_taken() {
    let redis = Redis::start().unwrap();
    let (_a, replica_a) = store(&single(&redis.url()));
    let (_b, replica_b) = store(&single(&redis.url()));
    let old = replica_a.join("s", "device-1", 1).await.unwrap().unwrap();
    // The device reconnects through the other replica: the full set takes it back.
    let new = replica_b.join("s", "device-1", 1).await.unwrap().unwrap();
    let owner_b = owner(&redis, "s", "device-1");
    drop(old);
    leaves_answered(&replica_a, 1).await;
    assert_eq!(zcard(&redis, "s"), 1, "the member stays");
    assert_eq!(owner(&redis, "s", "device-1"), owner_b);
    assert!(replica_a.join("s", "device-2", 1).await.unwrap().is_none());
    // The same on one replica: a second connection of the same member.
    let again = replica_b.join("s", "device-1", 1).await.unwrap().unwrap();
    drop(new);
    leaves_answered(&replica_b, 1).await;
    assert_eq!(zcard(&redis, "s"), 1);
    drop(again);
    leaves_answered(&replica_b, 2).await;
    assert_eq!(zcard(&redis, "s"), 0);
}

#[tokio::test]
async fn members_of_a_killed_replica_expire_and_a_live_one_keeps_its_own() {
    let redis = Redis::start().unwrap();
    let lease = Duration::from_secs(2);
    let short = |name: &str| {
        RedisStore::with_lease(
            name,
            &single(&redis.url()),
            std::path::Path::new("."),
            Events::new("test", name),
            lease,
            Duration::from_secs(1),
        )
        .unwrap()
    };
    let (killed, live) = (short("killed"), short("live"));
    let (killed_counts, live_counts) = (
        zilla_engine::Store::shared_counts(&killed).unwrap(),
        zilla_engine::Store::shared_counts(&live).unwrap(),
    );
    available(&killed_counts).await;
    let held = [
        killed_counts.join("s", "a", 3).await.unwrap().unwrap(),
        killed_counts.join("s", "b", 3).await.unwrap().unwrap(),
    ];
    let kept = live_counts.join("s", "c", 3).await.unwrap().unwrap();
    // Renewals keep every member past its first lease: wait for two
    // renewals answered after the lease the joins gave ran out.
    let joined = tokio::time::Instant::now();
    let stats = killed_counts.stats();
    let renewed =
        |stats: &zilla_engine::StoreStats| stats.commands("renew") - stats.errors("renew");
    let before = renewed(&stats);
    let mut past_lease = None;
    eventually("two renewals past the first lease", lease * 4, || {
        if past_lease.is_none() && joined.elapsed() > lease {
            past_lease = Some(renewed(&stats));
        }
        let done = past_lease.is_some_and(|at| renewed(&stats) >= at.max(before) + 2);
        async move { done }
    })
    .await;
    assert_eq!(zcard(&redis, "s"), 3, "renewed");
    assert!(live_counts.join("s", "d", 3).await.unwrap().is_none());
    // Killed: no renewals, no LEAVE.
    killed.halt();
    drop(held);
    assert!(live_counts.join("s", "d", 3).await.unwrap().is_none());
    eventually(
        "the killed replica's members to expire",
        lease * 3,
        || async { live_counts.join("s", "d", 3).await.unwrap().is_some() },
    )
    .await;
    assert_eq!(zcard(&redis, "s"), 2, "c and d");
    drop(kept);
}

#[tokio::test]
async fn a_bucket_grants_what_it_has_and_says_when_the_rest_is_due() {
    let redis = Redis::start().unwrap();
    let (_store, counts) = store(&single(&redis.url()));
    let rate = BucketRate {
        per_second: 10.0,
        burst: 5.0,
    };
    let first = counts.take("connects:acme", rate, 3).await.unwrap();
    assert_eq!((first.granted, first.retry_after), (3, Duration::ZERO));
    let second = counts.take("connects:acme", rate, 5).await.unwrap();
    assert_eq!(second.granted, 2, "the two left of the burst");
    // Three more at 10/s: 300 ms, less the time since the first take.
    assert!(
        second.retry_after > Duration::from_millis(150)
            && second.retry_after <= Duration::from_millis(300),
        "{second:?}"
    );
    let third = counts.take("connects:acme", rate, 1).await.unwrap();
    assert_eq!(third.granted, 0);
    assert!(third.retry_after <= Duration::from_millis(100), "{third:?}");
    // Refused takes move nothing: asked again until the token is there.
    let mut polled = 0;
    eventually("the token that was due", Duration::from_secs(2), || {
        polled += 1;
        let counts = counts.clone();
        async move { counts.take("connects:acme", rate, 1).await.unwrap().granted == 1 }
    })
    .await;

    let lease = Arc::new(Lease::default());
    assert!(lease.start_asking());
    counts.lease("bytes:acme", rate, 4, &lease);
    eventually("the lease to be filled", Duration::from_secs(5), || {
        let asking = lease.lock().asking;
        async move { !asking }
    })
    .await;
    let state = lease.lock().clone();
    assert_eq!((state.tokens, state.due, state.failed), (4, None, false));
    assert!(lease.start_asking());
    counts.lease("bytes:acme", rate, 4, &lease);
    eventually(
        "the lease to be filled again",
        Duration::from_secs(5),
        || {
            let asking = lease.lock().asking;
            async move { !asking }
        },
    )
    .await;
    let state = lease.lock().clone();
    assert_eq!(state.tokens, 5, "one more was left");
    assert!(state.due.is_some(), "the other three are due later");
    assert_eq!(counts.stats().commands("lease"), 2);
    assert_eq!(counts.stats().commands("take"), 3 + polled);
}

#[tokio::test]
async fn a_killed_redis_is_unavailable_at_once_and_a_restarted_one_gets_every_member_back() {
    let events = capture();
    let mut redis = Redis::start().unwrap();
    let (_store, counts) = store(&single(&redis.url()));
    available(&counts).await;
    assert_eq!(events.named("REDIS_STORE_AVAILABLE").len(), 1);
    let _one = counts.join("s", "device-1", 10).await.unwrap().unwrap();
    let _two = counts.join("s", "device-2", 10).await.unwrap().unwrap();
    assert_eq!(counts.replicas(), 1);

    redis.kill();
    let rate = BucketRate {
        per_second: 1.0,
        burst: 1.0,
    };
    // The command timeout (0.25 s) bounds every call; the margin is for a
    // busy machine, not a performance claim: what matters is that nothing hangs.
    let bound = Duration::from_millis(250) + Duration::from_secs(1);
    for _ in 0..3 {
        let started = tokio::time::Instant::now();
        let refused = counts.join("s", "device-3", 10).await;
        assert!(refused.is_err(), "{refused:?}");
        assert!(started.elapsed() < bound, "{:?}", started.elapsed());
        let started = tokio::time::Instant::now();
        assert!(counts.take("b", rate, 1).await.is_err());
        assert!(started.elapsed() < bound, "{:?}", started.elapsed());
    }
    assert!(!counts.available());
    let lease = Arc::new(Lease::default());
    assert!(lease.start_asking());
    counts.lease("b", rate, 1, &lease);
    eventually("the lease to fail", Duration::from_secs(5), || {
        let failed = lease.lock().failed;
        async move { failed }
    })
    .await;
    // Admitted while Redis was down: counted when it answers again.
    let _held = counts.hold("s", "device-3");
    let unavailable = events.named("REDIS_STORE_UNAVAILABLE");
    assert_eq!(unavailable.len(), 1, "once per outage: {unavailable:?}");
    assert!(unavailable[0].contains(&redis.url()), "{unavailable:?}");
    assert!(counts.stats().errors("join") >= 3);

    redis.restart().unwrap();
    assert_eq!(zcard(&redis, "s"), 0, "restarted empty");
    available(&counts).await;
    assert_eq!(zcard(&redis, "s"), 3, "re-registered, the held one too");
    let back = events.named("REDIS_STORE_AVAILABLE");
    assert_eq!(back.len(), 2, "{back:?}");
    assert!(back[1].contains("3 members re-registered"), "{back:?}");
    assert!(
        counts.join("s", "device-4", 3).await.unwrap().is_none(),
        "full again"
    );
}

#[tokio::test]
async fn a_redis_down_at_start_is_connected_to_when_it_comes() {
    let events = capture();
    let mut redis = Redis::start().unwrap();
    redis.kill();
    let (_store, counts) = store(&single(&redis.url()));
    eventually(
        "the store to say Redis is down",
        Duration::from_secs(10),
        || {
            let said = !events.named("REDIS_STORE_UNAVAILABLE").is_empty();
            async move { said }
        },
    )
    .await;
    assert!(!counts.available());
    redis.restart().unwrap();
    available(&counts).await;
    assert!(counts.join("s", "device-1", 1).await.unwrap().is_some());
}

#[tokio::test]
async fn replicas_count_every_store_alive_and_a_dropped_store_stops() {
    let redis = Redis::start().unwrap();
    let (_a, a) = store(&single(&redis.url()));
    let (b_store, b) = store(&single(&redis.url()));
    eventually("two replicas", Duration::from_secs(10), || {
        let two = a.replicas() == 2;
        async move { two }
    })
    .await;
    assert_eq!(number(redis.cli(&["zcard", "zilla:replicas"])), 2);
    let b_stats = b.stats();
    drop((b_store, b));
    let beats = b_stats.commands("heartbeat");
    // Two heartbeats of the live store, which beats as often: a task of
    // the dropped one still running would have beaten meanwhile.
    let a_stats = a.stats();
    let a_beats = a_stats.commands("heartbeat");
    eventually(
        "two heartbeats of the live store",
        Duration::from_secs(10),
        || {
            let two = a_stats.commands("heartbeat") >= a_beats + 2;
            async move { two }
        },
    )
    .await;
    assert_eq!(b_stats.commands("heartbeat"), beats, "its task stopped");
    assert!(a.available());
}

#[test]
fn a_store_built_outside_a_runtime_starts_beating_on_first_use() {
    let redis = Redis::start().unwrap();
    let (_store, counts) = store(&single(&redis.url()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        assert_eq!(counts.stats().commands("heartbeat"), 0, "no heartbeat yet");
        available(&counts).await;
        assert!(counts.stats().commands("heartbeat") >= 1);
    });
}
