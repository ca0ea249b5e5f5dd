//! The limits as configured: what each key accepts, the errors a user
//! sees, and the key values a session is counted by.

use std::sync::Arc;
use std::time::Duration;

use zilla_engine::GuardSession;

use super::*;
use crate::session::tests::clock;

fn build(yaml: &str) -> Result<Limits, (String, String)> {
    let options: Vec<LimitOptions> = serde_yaml::from_str(yaml).expect("limits YAML");
    Limits::new(&options, None, Arc::default())
}

fn error(yaml: &str) -> (String, String) {
    build(yaml).expect_err("refused")
}

#[test]
fn each_limit_is_accepted_where_it_means_something() {
    let limits = build(
        "
- key: {claim: tenant}
  sessions: 100
  connects: {rate: 10, burst: 20}
  publishes: {rate: 100, burst: 200}
  bytes: {rate: 1048576}
- key: source-address
  sessions: 10
  connects: {rate: 0.5}
- key: client-id
  connects: {rate: 1}
  publishes: {rate: 10}
- key: identity
  sessions: 5
- key: session
  publishes: {rate: 20}
  bytes: {rate: 65536}
  subscriptions: 50
  topic: {length: 256, levels: 8}
",
    )
    .unwrap();
    assert_eq!(limits.wait, DEFAULT_WAIT);
    assert_eq!(limits.session_rule(), Some(4));
    // A burst defaults to the rate (at least 1).
    assert_eq!(limits.rules[1].connects, Some(Rate::new(0.5, 1.0).unwrap()));
    let labels = limits.metric_labels();
    assert_eq!(labels[0], ("claim:tenant".into(), "sessions"));
    assert!(labels.contains(&("session".into(), "topic-levels")));
    assert_eq!(labels.len(), 4 + 2 + 2 + 1 + 5);
}

#[test]
fn misplaced_limits_say_why_at_their_path() {
    for (yaml, path, why) in [
        (
            "- {key: session, sessions: 1}",
            "limits[0].sessions",
            "not of a session",
        ),
        (
            "- {key: session, connects: {rate: 1}}",
            "limits[0].connects",
            "a session has one",
        ),
        (
            "- {key: client-id, sessions: 1}",
            "limits[0].sessions",
            "takes it over",
        ),
        (
            "- {key: identity, subscriptions: 1}",
            "limits[0].subscriptions",
            "`key: session` only",
        ),
        (
            "- {key: source-address, topic: {length: 9}}",
            "limits[0].topic",
            "`key: session` only",
        ),
        ("- {key: session}", "limits[0]", "sets no limit"),
        ("- {key: session, topic: {}}", "limits[0].topic", "neither"),
        (
            "- {key: session, subscriptions: 0}",
            "limits[0].subscriptions",
            "at least 1",
        ),
        (
            "- {key: session, topic: {levels: 0}}",
            "limits[0].topic.levels",
            "at least 1",
        ),
        (
            "- {key: identity, sessions: 0}",
            "limits[0].sessions",
            "at least 1",
        ),
        (
            "- {key: session, publishes: {rate: 0}}",
            "limits[0].publishes",
            "above 0",
        ),
        (
            "- {key: session, bytes: {rate: 10, burst: 0.5}}",
            "limits[0].bytes",
            "at least 1",
        ),
        (
            "- {key: session, subscriptions: 1}\n- {key: session, publishes: {rate: 1}}",
            "limits[1].key",
            "already has limits in limits[0]",
        ),
    ] {
        let (at, message) = error(yaml);
        assert_eq!(at, path, "{yaml}: {message}");
        assert!(message.contains(why), "{yaml}: {message}");
    }
}

#[test]
fn identity_and_claim_keys_need_no_authorization_of_the_server() {
    // A guard at an earlier layer (a tls server's x509 guard) may grant
    // the identity; the server learns it per connection.
    assert!(build("- {key: identity, sessions: 1}\n- {key: {claim: tenant}, sessions: 1}").is_ok());
}

#[test]
fn an_empty_client_id_waiting_for_its_bound_value_has_no_client_id_value() {
    let keys = KeyValues {
        client_id: "",
        guarded: None,
        source: None,
    };
    assert_eq!(keys.value(&LimitKey::ClientId), None);
}

#[test]
fn limit_wait_is_seconds_up_to_an_hour() {
    let options: Vec<LimitOptions> = Vec::new();
    let limits = Limits::new(&options, Some(0), Arc::default()).unwrap();
    assert_eq!(limits.wait, Duration::ZERO);
    let (path, why) = Limits::new(&options, Some(3601), Arc::default()).unwrap_err();
    assert_eq!(path, "limit-wait");
    assert!(why.contains("at most 3600"), "{why}");
}

#[test]
fn key_values_come_from_the_connect_the_guard_and_the_address() {
    let guarded = GuardSession {
        identity: Some("device1".into()),
        attributes: [("tenant".to_owned(), "acme".to_owned())].into(),
        ..GuardSession::default()
    };
    let keys = KeyValues {
        client_id: "c1",
        guarded: Some(&guarded),
        source: Some("192.0.2.7".parse().unwrap()),
    };
    assert_eq!(keys.value(&LimitKey::ClientId).as_deref(), Some("c1"));
    assert_eq!(keys.value(&LimitKey::Identity).as_deref(), Some("device1"));
    assert_eq!(
        keys.value(&LimitKey::Claim("tenant".into())).as_deref(),
        Some("acme")
    );
    assert_eq!(keys.value(&LimitKey::Claim("plan".into())), None);
    assert_eq!(
        keys.value(&LimitKey::SourceAddress).as_deref(),
        Some("192.0.2.7")
    );
    assert_eq!(keys.value(&LimitKey::Session), None);
    assert_eq!(
        source_value("2001:db8:1:2:3:4:5:6".parse().unwrap()),
        "2001:db8:1:2::/64"
    );
    assert_eq!(
        source_value("::ffff:192.0.2.7".parse().unwrap()),
        "192.0.2.7"
    );
}

#[test]
fn sessions_are_counted_until_their_holds_drop() {
    let limits = build("- {key: source-address, sessions: 1}").unwrap();
    let now = clock();
    let keys = |client_id| KeyValues {
        client_id,
        guarded: None,
        source: Some("192.0.2.7".parse().unwrap()),
    };
    let first = limits.connect(Phase::AfterGuard, &keys("a"), now).unwrap();
    let hit = limits
        .connect(Phase::AfterGuard, &keys("b"), now)
        .expect_err("over the quota");
    assert_eq!(hit.kind, LimitKind::Sessions);
    assert_eq!(hit.slot, Some(0));
    assert_eq!(hit.log, Some(0), "the first hit is logged");
    let again = limits
        .connect(Phase::AfterGuard, &keys("b"), now)
        .expect_err("still over");
    assert_eq!(again.log, None, "the next ones within 10 s are not");
    // A takeover of "a" is the same session.
    let takeover = limits.connect(Phase::AfterGuard, &keys("a"), now).unwrap();
    drop(first);
    assert!(limits.connect(Phase::AfterGuard, &keys("b"), now).is_err());
    drop(takeover);
    assert!(limits.connect(Phase::AfterGuard, &keys("b"), now).is_ok());
    // Sessions are not counted before the guard decided.
    let holds = limits.connect(Phase::BeforeGuard, &keys("c"), now).unwrap();
    assert!(holds.is_empty());
}

#[test]
fn servers_naming_one_store_count_together() {
    let registry = Arc::new(LimitRegistry::default());
    let options: Vec<LimitOptions> =
        serde_yaml::from_str("- {key: client-id, connects: {rate: 1, burst: 1}}").unwrap();
    let one = Limits::new(&options, None, registry.clone()).unwrap();
    let other = Limits::new(&options, None, registry).unwrap();
    let now = clock();
    let keys = KeyValues {
        client_id: "c1",
        guarded: None,
        source: None,
    };
    assert!(one.connect(Phase::BeforeGuard, &keys, now).is_ok());
    assert!(other.connect(Phase::BeforeGuard, &keys, now).is_err());
}
