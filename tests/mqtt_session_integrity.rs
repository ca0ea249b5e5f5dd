//! Session integrity (issue 24): a CONNECT that is refused, by a broker, by
//! the guard, by a limit, or because its broker is unreachable, never knocks
//! the connected session with the same client id offline; one that is
//! accepted takes it over (DISCONNECT 0x8E; 3.1.1: closed). Each case for
//! MQTT 5 and 3.1.1, with real mosquitto brokers started on free ports.
//!
//! Without a guard the client's user name and password go through to the
//! broker, so it is the broker that accepts or refuses them; the proxy takes
//! the older session over only once the new one is admitted and every broker
//! it needs accepted it. That "nothing happened" to the device is checked
//! actively: after the refused CONNECT was answered, the device's PINGREQ is
//! answered and a message published by a third client on its subscribed
//! topic still reaches it.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;
use zilla as _;
use zilla_testkit::proxy::{mqtt_proxy_yaml, wait_for_event, Proxy};
use zilla_testkit::seed::{guards_yaml, sign};
use zilla_testkit::Mosquitto;

#[path = "support/integrity.rs"]
mod integrity;
use integrity::{
    assert_never_taken_over, id, still_served, Client, Credentials, Forwarder, Secured, Version,
};

const USER: &str = "device-user";
/// The device's credentials, in the brokers' password files.
const RIGHT: Credentials<'static> = Some((USER, "right-password"));
/// The same user name with a password no broker knows.
const WRONG: Credentials<'static> = Some((USER, "wrong-password"));

/// The codes a CONNACK may carry in a case: (MQTT 5 reason codes, MQTT 3.1.1
/// return codes).
type Codes = (&'static [u8], &'static [u8]);
/// A broker refusing a user name and password: 0x86 Bad user name or
/// password, or 0x87 Not authorized (what mosquitto 2 answers; 3.1.1: 4 or 5).
const BAD_LOGIN: Codes = (&[0x86, 0x87], &[4, 5]);
/// A broker the proxy cannot reach: 0x88 Server unavailable (3.1.1: 3).
const UNAVAILABLE: Codes = (&[0x88], &[3]);
/// A token the guard refuses: 0x86 Bad user name or password (3.1.1: 4).
const BAD_TOKEN: Codes = (&[0x86], &[4]);
/// A CONNECT over its rate: 0x9F Connection rate exceeded (3.1.1: 3).
const RATE_EXCEEDED: Codes = (&[0x9F], &[3]);

fn assert_code(version: Version, code: u8, (v5, v311): Codes, what: &str) {
    let expected = match version {
        Version::V5 => v5,
        Version::V311 => v311,
    };
    assert!(
        expected.contains(&code),
        "{what} ({version:?}): CONNACK code 0x{code:02X}, expected one of {expected:02X?}"
    );
}

/// A proxy in front of the one broker on `port`, routing every session to it.
async fn proxy_to(port: u16) -> Proxy {
    Proxy::start(&mqtt_proxy_yaml("    exit: mqtt_client_a", &[("a", port)])).await
}

/// The client id and topic of a case, apart from every other test's.
fn names(case: &str, version: Version) -> (String, String) {
    let tag = version.tag();
    (
        format!("integrity-{case}-{tag}"),
        format!("integrity/{case}/{tag}"),
    )
}

/// A device connected through the proxy on `port` and subscribed to `topic`.
async fn subscribed_device(
    port: u16,
    version: Version,
    client_id: &str,
    login: Credentials<'_>,
    topics: &[&str],
) -> Client {
    let mut device = Client::connected(port, version, client_id, login).await;
    for topic in topics {
        device.subscribe(topic).await;
    }
    device
}

/// Case 1: the broker refuses a second CONNECT's password; the device that
/// connected with the right one is not touched.
async fn a_wrong_password_leaves_the_device_connected(version: Version) {
    let secured = Secured::start(&[(USER, "right-password")]);
    let broker = secured.broker.port();
    let proxy = proxy_to(broker).await;
    let (client_id, topic) = names("password", version);
    let mut device = subscribed_device(proxy.port, version, &client_id, RIGHT, &[&topic]).await;

    let (_attacker, code) = Client::connect(proxy.port, version, &client_id, WRONG).await;
    assert_code(version, code, BAD_LOGIN, "the wrong password");
    wait_for_event(&["MQTT_CONNECT_REJECTED", &id(&client_id), "mqtt_client_a"]).await;

    still_served(&mut device, &client_id, broker, RIGHT, &topic).await;
    assert_never_taken_over(&client_id);
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn a_wrong_password_leaves_the_device_connected_v5() {
    a_wrong_password_leaves_the_device_connected(Version::V5).await;
}

#[tokio::test]
async fn a_wrong_password_leaves_the_device_connected_v311() {
    a_wrong_password_leaves_the_device_connected(Version::V311).await;
}

/// Case 2: a second CONNECT whose broker cannot be reached (the forwarder in
/// front of it stopped accepting) is refused; the device, whose connection
/// through the forwarder goes on, is not touched.
async fn an_unreachable_broker_leaves_the_device_connected(version: Version) {
    let broker = Mosquitto::start().unwrap();
    let forwarder = Forwarder::start(broker.port()).await;
    let proxy = proxy_to(forwarder.port).await;
    let (client_id, topic) = names("unreachable", version);
    let mut device = subscribed_device(proxy.port, version, &client_id, None, &[&topic]).await;

    forwarder.stop_accepting().await;
    let (_second, code) = Client::connect(proxy.port, version, &client_id, None).await;
    assert_code(version, code, UNAVAILABLE, "the unreachable broker");
    wait_for_event(&["MQTT_CONNECT_REJECTED", &id(&client_id), "mqtt_client_a"]).await;

    still_served(&mut device, &client_id, broker.port(), None, &topic).await;
    assert_never_taken_over(&client_id);
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_broker_leaves_the_device_connected_v5() {
    an_unreachable_broker_leaves_the_device_connected(Version::V5).await;
}

#[tokio::test]
async fn an_unreachable_broker_leaves_the_device_connected_v311() {
    an_unreachable_broker_leaves_the_device_connected(Version::V311).await;
}

/// Case 3: a second CONNECT the broker accepts takes the device over, and
/// the new connection is served.
async fn an_accepted_connect_takes_the_device_over(version: Version) {
    let secured = Secured::start(&[(USER, "right-password")]);
    let broker = secured.broker.port();
    let proxy = proxy_to(broker).await;
    let (client_id, topic) = names("takeover", version);
    let mut device = subscribed_device(proxy.port, version, &client_id, RIGHT, &[&topic]).await;

    let (mut successor, code) = Client::connect(proxy.port, version, &client_id, RIGHT).await;
    assert_eq!(code, 0, "the right password ({version:?}) is accepted");
    device.taken_over("the device").await;
    wait_for_event(&["MQTT_SESSION_TAKEN_OVER", &id(&client_id)]).await;

    successor.subscribe(&topic).await;
    still_served(&mut successor, &client_id, broker, RIGHT, &topic).await;
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn an_accepted_connect_takes_the_device_over_v5() {
    an_accepted_connect_takes_the_device_over(Version::V5).await;
}

#[tokio::test]
async fn an_accepted_connect_takes_the_device_over_v311() {
    an_accepted_connect_takes_the_device_over(Version::V311).await;
}

/// A `Bearer` user name with a token of the seed's key, `exp` seconds from now.
fn bearer(exp_from_now: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({
        "iss": "https://auth.example.com",
        "aud": "https://api.example.com",
        "sub": "device1",
        "exp": now + exp_from_now,
        "scope": "mqtt:stream",
    });
    format!("Bearer {}", sign(&claims, "example"))
}

/// Case 4: the JWT guard refuses a second CONNECT's token (expired); the
/// device with a valid token is not touched.
async fn a_refused_token_leaves_the_device_connected(version: Version) {
    let broker = Mosquitto::start().unwrap();
    let server = "    options:
      authorization:
        authn_jwt:
          credentials:
            connect:
              username: Bearer {credentials}
    routes:
      - guarded:
          authn_jwt: [mqtt:stream]
        exit: mqtt_client_a";
    let yaml = mqtt_proxy_yaml(server, &[("a", broker.port())]).replacen(
        "\nbindings:\n",
        &format!("\nguards:\n{}bindings:\n", guards_yaml()),
        1,
    );
    assert!(yaml.contains("type: jwt"), "the guard is in: {yaml}");
    let proxy = Proxy::start(&yaml).await;
    let (client_id, topic) = names("token", version);
    let valid = bearer(3600);
    let mut device = subscribed_device(
        proxy.port,
        version,
        &client_id,
        Some((&valid, "")),
        &[&topic],
    )
    .await;

    let expired = bearer(-60);
    let (_attacker, code) =
        Client::connect(proxy.port, version, &client_id, Some((&expired, ""))).await;
    assert_code(version, code, BAD_TOKEN, "the expired token");
    wait_for_event(&["MQTT_CONNECT_REJECTED", &id(&client_id), "authn_jwt"]).await;

    still_served(&mut device, &client_id, broker.port(), None, &topic).await;
    assert_never_taken_over(&client_id);
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn a_refused_token_leaves_the_device_connected_v5() {
    a_refused_token_leaves_the_device_connected(Version::V5).await;
}

#[tokio::test]
async fn a_refused_token_leaves_the_device_connected_v311() {
    a_refused_token_leaves_the_device_connected(Version::V311).await;
}

/// Case 5: a limit refuses a second CONNECT (one CONNECT per client id per
/// 1000 s: the device's took it); the device is not touched.
async fn a_limit_refusal_leaves_the_device_connected(version: Version) {
    let broker = Mosquitto::start().unwrap();
    let server = "    options:
      limits:
        - key: client-id
          connects: {rate: 0.001, burst: 1}
    exit: mqtt_client_a";
    let proxy = Proxy::start(&mqtt_proxy_yaml(server, &[("a", broker.port())])).await;
    let (client_id, topic) = names("limit", version);
    let mut device = subscribed_device(proxy.port, version, &client_id, None, &[&topic]).await;

    let (_second, code) = Client::connect(proxy.port, version, &client_id, None).await;
    assert_code(version, code, RATE_EXCEEDED, "the CONNECT over its rate");
    wait_for_event(&["MQTT_LIMIT_HIT", &id(&client_id), "connects limit"]).await;

    still_served(&mut device, &client_id, broker.port(), None, &topic).await;
    assert_never_taken_over(&client_id);
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn a_limit_refusal_leaves_the_device_connected_v5() {
    a_limit_refusal_leaves_the_device_connected(Version::V5).await;
}

#[tokio::test]
async fn a_limit_refusal_leaves_the_device_connected_v311() {
    a_limit_refusal_leaves_the_device_connected(Version::V311).await;
}

/// Case 6: a session spans broker A (anonymous clients allowed, so any
/// password passes) and broker B (a password file). A second CONNECT with a
/// wrong password is refused with B's code, but A accepted it and took the
/// device's upstream session there over itself: the device's session ends as
/// taken over. Brokers that disagree on a credential are a misconfiguration;
/// this documents what it costs. The device then reconnects and is served
/// on both brokers.
async fn brokers_that_disagree_end_the_device_session(version: Version) {
    let broker_a = Mosquitto::start().unwrap();
    let secured_b = Secured::start(&[(USER, "right-password")]);
    let broker_b = secured_b.broker.port();
    let server = "    routes:
      - when:
          - publish:
              - topic: a/#
          - subscribe:
              - topic: a/#
        exit: mqtt_client_a
      - when:
          - publish:
              - topic: b/#
          - subscribe:
              - topic: b/#
        exit: mqtt_client_b";
    let yaml = mqtt_proxy_yaml(server, &[("a", broker_a.port()), ("b", broker_b)]);
    let proxy = Proxy::start(&yaml).await;
    let (client_id, topic) = names("partial", version);
    let (topic_a, topic_b) = (format!("a/{topic}"), format!("b/{topic}"));
    let topics = [topic_a.as_str(), topic_b.as_str()];
    let mut device = subscribed_device(proxy.port, version, &client_id, RIGHT, &topics).await;

    let (_attacker, code) = Client::connect(proxy.port, version, &client_id, WRONG).await;
    assert_code(version, code, BAD_LOGIN, "the password broker B refuses");
    wait_for_event(&["MQTT_CONNECT_REJECTED", &id(&client_id), "mqtt_client_b"]).await;
    device.taken_over("the device").await;
    wait_for_event(&["MQTT_SESSION_TAKEN_OVER", &id(&client_id)]).await;

    let mut device = subscribed_device(proxy.port, version, &client_id, RIGHT, &topics).await;
    still_served(&mut device, &client_id, broker_a.port(), None, &topic_a).await;
    still_served(&mut device, &client_id, broker_b, RIGHT, &topic_b).await;
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn brokers_that_disagree_end_the_device_session_v5() {
    brokers_that_disagree_end_the_device_session(Version::V5).await;
}

#[tokio::test]
async fn brokers_that_disagree_end_the_device_session_v311() {
    brokers_that_disagree_end_the_device_session(Version::V311).await;
}
