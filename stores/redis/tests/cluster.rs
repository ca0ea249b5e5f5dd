//! The redis store against a real three-master Redis Cluster (Debian's
//! redis-server, formed with `redis-cli --cluster create`): the two keys of
//! a set share a slot so its scripts run there, sets spread over the
//! masters, and a master killed and restarted empty gets its members back.

mod common;

use std::time::Duration;

use common::{available, capture, eventually, number, store};
use zilla_engine::BucketRate;
use zilla_store_redis::RedisOptions;
use zilla_testkit::RedisCluster;

const SETS: [&str; 6] = [
    "tenant:a", "tenant:b", "tenant:c", "tenant:d", "tenant:e", "tenant:f",
];

fn zcard(cluster: &RedisCluster, set: &str) -> i64 {
    number(cluster.cli(&["zcard", &format!("zilla:{{{set}}}:members")]))
}

#[tokio::test]
async fn sets_and_buckets_over_a_cluster_survive_a_master_restarted_empty() {
    let events = capture();
    let mut cluster = RedisCluster::start().unwrap();
    let options = RedisOptions {
        cluster: Some(cluster.seed_urls()),
        ..RedisOptions::default()
    };
    let (_store, counts) = store(&options);
    available(&counts).await;

    let mut held = Vec::new();
    for set in SETS {
        held.push(counts.join(set, "device-1", 2).await.unwrap().unwrap());
        held.push(counts.join(set, "device-2", 2).await.unwrap().unwrap());
        assert!(
            counts.join(set, "device-3", 2).await.unwrap().is_none(),
            "{set} full"
        );
        held.push(counts.join(set, "device-1", 2).await.unwrap().unwrap());
        assert_eq!(zcard(&cluster, set), 2, "{set}");
    }
    let rate = BucketRate {
        per_second: 10.0,
        burst: 5.0,
    };
    assert_eq!(counts.take("connects:a", rate, 3).await.unwrap().granted, 3);
    let partial = counts.take("connects:a", rate, 5).await.unwrap();
    assert_eq!(partial.granted, 2);
    assert!(partial.retry_after > Duration::ZERO);

    // A master dies: the sets it holds do not answer, and nothing waits
    // longer than the command timeout (the margin is for a busy machine).
    cluster.node(0).kill();
    let bound = Duration::from_millis(250) + Duration::from_secs(1);
    let mut refused = 0;
    for set in SETS {
        let started = tokio::time::Instant::now();
        if counts.join(set, "device-9", 2).await.is_err() {
            refused += 1;
        }
        assert!(started.elapsed() < bound, "{:?}", started.elapsed());
    }
    assert!(refused > 0, "some set lives on the killed master");
    assert!(!counts.available());
    assert_eq!(events.named("REDIS_STORE_UNAVAILABLE").len(), 1);

    // Back, empty (its slots kept in nodes.conf): every member returns.
    cluster.node(0).restart().unwrap();
    cluster.wait_ok().unwrap();
    eventually(
        "every set's members re-registered",
        Duration::from_secs(30),
        || {
            let back = counts.available() && SETS.iter().all(|set| zcard(&cluster, set) == 2);
            async move { back }
        },
    )
    .await;
    for set in SETS {
        assert!(
            counts.join(set, "device-3", 2).await.unwrap().is_none(),
            "{set} full"
        );
    }
    drop(held);
}
