//! The redis store over TLS (`rediss://`) to a real redis-server with a
//! certificate from a private CA: verified with `options.tls.ca`, and
//! refused without it (the system's roots do not know the CA).

mod common;

use std::time::Duration;

use common::{available, capture, eventually, number, store, store_in};
use zilla_engine::Engine;
use zilla_store_redis::{RedisOptions, TlsOptions};
use zilla_testkit::pki::TestCa;
use zilla_testkit::Redis;

/// Options for one server at `url`, every other option its default.
fn single(url: &str) -> RedisOptions {
    RedisOptions {
        url: Some(url.to_owned()),
        ..RedisOptions::default()
    }
}

#[tokio::test]
async fn rediss_with_a_private_ca_is_verified_with_options_tls_ca() {
    let events = capture();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("redis test ca");
    let server = ca.server(&["127.0.0.1"]);
    let (ca_pem, cert_pem, key_pem) = (
        dir.path().join("ca.pem"),
        dir.path().join("redis.pem"),
        dir.path().join("redis.key"),
    );
    std::fs::write(&ca_pem, &ca.cert_pem).unwrap();
    std::fs::write(&cert_pem, &server.cert_pem).unwrap();
    std::fs::write(&key_pem, &server.key_pem).unwrap();
    let redis = Redis::start_tls(&ca_pem, &cert_pem, &key_pem).unwrap();
    assert!(redis.url().starts_with("rediss://"));

    let options = RedisOptions {
        tls: Some(TlsOptions {
            ca: "ca.pem".into(),
        }),
        ..single(&redis.url())
    };
    let (_store, counts) = store_in(&options, dir.path());
    available(&counts).await;
    let _member = counts.join("s", "device-1", 1).await.unwrap().unwrap();
    assert!(counts.join("s", "device-2", 1).await.unwrap().is_none());
    assert_eq!(number(redis.cli(&["zcard", "zilla:{s}:members"])), 1);

    // The system's roots do not know the test CA: never available.
    let (_untrusted, untrusting) = store(&single(&redis.url()));
    assert!(untrusting.join("s", "device-3", 5).await.is_err());
    eventually(
        "the untrusting store to say so",
        Duration::from_secs(10),
        || {
            let said = events
                .named("REDIS_STORE_UNAVAILABLE")
                .iter()
                .any(|message| message.contains(&redis.url()));
            async move { said }
        },
    )
    .await;
    assert!(!untrusting.available());

    // The same options in zilla.yaml: the CA path is the configuration's.
    let yaml = format!(
        "
name: test
stores:
  fleet:
    type: redis
    options:
      url: {}
      tls:
        ca: ca.pem
bindings: {{}}
",
        redis.url()
    );
    let built = Engine::from_yaml(yaml).base_dir(dir.path()).build();
    assert!(built.is_ok(), "{:?}", built.err().map(|e| e.to_string()));
}
