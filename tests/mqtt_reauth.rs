//! MQTT 5 enhanced authentication against a real mosquitto: a CONNECT with
//! the Authentication Method `jwt` and its token as Authentication Data,
//! then AUTH 0x19 refreshing the token inside the session (issue 27).
//!
//! The client is raw: the codec crate of the testkit has no AUTH, and the
//! proxy's DISCONNECT 0x8C and 0xA0 have no name there either, so frames
//! are split here and AUTH and DISCONNECT read by hand. Every wait is for a
//! packet or an event, with a timeout; the only timed pauses are the token
//! refreshes, which are what is tested.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zilla as _;
use zilla_testkit::clients::{run_script, Library};
use zilla_testkit::mqtt::packets::{
    ConnAck, Connect, ConnectProperties, ConnectReturnCode, Login, Packet, PubAckReason, Publish,
    QoS, SubscribeReasonCode,
};
use zilla_testkit::proxy::{mqtt_proxy_yaml, wait_for_event, Proxy};
use zilla_testkit::seed::{guards_yaml, sign};
use zilla_testkit::Mosquitto;

#[path = "support/reauth_client.rs"]
mod reauth_client;
use reauth_client::*;

const TIMEOUT: Duration = Duration::from_secs(10);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A seed token for `sub` with `scope`, living `lives` seconds (negative:
/// expired).
fn token(sub: &str, scope: &str, lives: i64) -> String {
    token_of("https://auth.example.com", sub, scope, lives)
}

/// A token of issuer `iss`, signed with the seed's key.
fn token_of(iss: &str, sub: &str, scope: &str, lives: i64) -> String {
    let claims = json!({
        "iss": iss,
        "aud": "https://api.example.com",
        "sub": sub,
        "exp": (now() as i64 + lives),
        "scope": scope,
    });
    sign(&claims, "example")
}

/// The proxy in front of `broker`: the seed guard, its token as a
/// `Bearer` user name or as the Authentication Data of method `jwt`;
/// subscriptions need the role `sub`, publishes the role `pub`.
async fn proxy(broker: &Mosquitto) -> Proxy {
    let server = r#"
    options:
      authorization:
        authn_jwt:
          credentials:
            connect:
              username: Bearer {credentials}
            authentication:
              method: jwt
    routes:
      - guarded:
          authn_jwt: [sub]
        when:
          - subscribe: [{topic: "data/#"}]
        exit: mqtt_client_a
      - guarded:
          authn_jwt: [pub]
        when:
          - publish: [{topic: "data/#"}]
        exit: mqtt_client_a"#;
    let yaml = mqtt_proxy_yaml(server, &[("a", broker.port())]).replacen(
        "\nbindings:\n",
        &format!("\nguards:\n{}bindings:\n", guards_yaml()),
        1,
    );
    Proxy::start(&yaml).await
}

/// A mosquitto that logs every connection it accepts to `broker.log` in
/// `dir`: what the broker itself saw, beside the proxy's events.
fn logging_broker(dir: &tempfile::TempDir) -> Mosquitto {
    let log = dir.path().join("broker.log");
    // mosquitto started as root runs as the user `mosquitto`: the
    // directory must let it write.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    Mosquitto::start_with(&format!(
        "log_dest file {}\nconnection_messages true\n",
        log.display()
    ))
    .unwrap()
}

/// How many connections with client id `id` the broker logged in `dir`.
fn broker_connections(dir: &tempfile::TempDir, id: &str) -> usize {
    let log = std::fs::read_to_string(dir.path().join("broker.log")).unwrap_or_default();
    let needle = format!(" as {id} ");
    (log.lines())
        .filter(|line| line.contains("New client connected") && line.contains(&needle))
        .count()
}

/// What the proxy sent, as this test reads it.
#[derive(Debug)]
enum Frame {
    /// AUTH: its reason code and Authentication Method.
    Auth(u8, Option<String>),
    /// DISCONNECT: its reason code (any, 0x8C and 0xA0 included).
    Disconnect(u8),
    Packet(Box<Packet>),
}

/// Waits for the wall clock's next whole second (plus a little, so that
/// `now()` has moved on).
async fn align_to_a_second() {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let to_next = Duration::from_secs(1) - Duration::from_nanos(u64::from(since.subsec_nanos()));
    tokio::time::sleep(to_next + Duration::from_millis(20)).await;
}

fn publish(topic: &str, pkid: u16, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic.into(),
        pkid,
        payload: Bytes::from_static(payload),
        properties: None,
    })
}

fn subscribe(pkid: u16, filter: &str) -> Packet {
    zilla_testkit::mqtt::subscribe_packet(pkid, filter, QoS::AtLeastOnce)
}

/// The broker's own subscriber on `filter`, straight to mosquitto.
async fn on_broker(broker: &Mosquitto, filter: &str) -> zilla_testkit::mqtt::RawMqtt {
    let (mut client, _) = zilla_testkit::mqtt::RawMqtt::connect(broker.port(), "").await;
    client.send(&subscribe(1, filter)).await;
    assert!(matches!(client.recv().await, Some(Packet::SubAck(_))));
    client
}

#[tokio::test]
async fn refreshed_tokens_keep_one_session_alive_past_their_lifetimes() {
    let logs = tempfile::tempdir().unwrap();
    let broker = logging_broker(&logs);
    let proxy = proxy(&broker).await;
    let mut watcher = on_broker(&broker, "data/#").await;
    // A token's `exp` is in whole seconds: starting on a second's boundary
    // gives each 3 s token its full 3 s, and each refresh at 2 s a second
    // to spare.
    align_to_a_second().await;
    let started = tokio::time::Instant::now();
    let (mut client, ack) = Client::connect(
        proxy.port,
        "refresher",
        Some("jwt"),
        &token("d1", "sub pub", 3),
    )
    .await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let method = ack.properties.and_then(|p| p.authentication_method);
    assert_eq!(
        method.as_deref(),
        Some("jwt"),
        "the CONNACK names the method"
    );
    client.send(&subscribe(1, "data/down")).await;
    assert!(matches!(client.packet().await, Packet::SubAck(_)));
    let mut round = 0u16;
    // Six refreshes of 3 s tokens, 2 s apart: 12 s, past every one of them.
    while started.elapsed() < Duration::from_secs(12) {
        round += 1;
        tokio::time::sleep_until(started + Duration::from_secs(2) * u32::from(round)).await;
        client.refresh(&token("d1", "sub pub", 3)).await;
        match client.recv().await {
            Some(Frame::Auth(0x00, method)) => assert_eq!(method.as_deref(), Some("jwt")),
            other => panic!("expected AUTH 0x00, got {other:?}"),
        }
        // Both ways: up to the broker, and down from it.
        client.send(&publish("data/up", round, b"up")).await;
        assert!(
            matches!(client.packet().await, Packet::PubAck(a) if a.reason == PubAckReason::Success)
        );
        // The watcher also hears its own messages and their PUBACKs.
        loop {
            match watcher.recv().await {
                Some(Packet::Publish(p)) if p.topic == "data/up" => break,
                Some(_) => {}
                None => panic!("the broker closed the watcher"),
            }
        }
        watcher.send(&publish("data/down", round, b"down")).await;
        loop {
            match client.packet().await {
                Packet::Publish(p) => {
                    assert_eq!(p.topic, "data/down");
                    client
                        .send(&Packet::PubAck(zilla_testkit::mqtt::packets::PubAck {
                            pkid: p.pkid,
                            reason: PubAckReason::Success,
                            properties: None,
                        }))
                        .await;
                    break;
                }
                Packet::PubAck(_) => {}
                other => panic!("expected the message, got {other:?}"),
            }
        }
    }
    // One session all along: started once, re-authenticated each round.
    let events = zilla_testkit::proxy::captured_events();
    let started_events = events
        .iter()
        .filter(|e| e.contains("MQTT_SESSION_STARTED") && e.contains("id refresher "))
        .count();
    assert_eq!(started_events, 1, "no reconnect");
    // And at the broker: one connection of the client's, in its log.
    assert_eq!(
        broker_connections(&logs, "refresher"),
        1,
        "the broker saw one connection"
    );
    let refreshed = events
        .iter()
        .filter(|e| e.contains("MQTT_REAUTHENTICATED") && e.contains("id refresher:"))
        .count();
    assert_eq!(refreshed, usize::from(round));
    assert!(
        !events.iter().any(|e| e.contains("eyJ")),
        "no token in any event"
    );
    // Without a refresh it still ends at exp, with 0xA0.
    assert_eq!(client.disconnected().await, 0xA0);
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn bad_refreshes_end_the_session_with_their_reason_codes() {
    let broker = Mosquitto::start().unwrap();
    let proxy = proxy(&broker).await;
    let cases: [(&str, Option<&str>, Option<String>, u8); 5] = [
        (
            "another-identity",
            Some("jwt"),
            Some(token("d2", "sub pub", 60)),
            0x87,
        ),
        ("garbage", Some("jwt"), Some("not.a.token".into()), 0x87),
        (
            "expired",
            Some("jwt"),
            Some(token("d1", "sub pub", -60)),
            0x87,
        ),
        (
            "another-method",
            Some("SCRAM-SHA-1"),
            Some(token("d1", "sub pub", 60)),
            0x8C,
        ),
        ("no-method", None, None, 0x82),
    ];
    for (name, method, refresh, code) in cases {
        let (mut client, ack) =
            Client::connect(proxy.port, name, Some("jwt"), &token("d1", "sub pub", 60)).await;
        assert_eq!(ack.code, ConnectReturnCode::Success, "{name}");
        client.auth(0x19, method, refresh.as_deref()).await;
        assert_eq!(client.disconnected().await, code, "{name}");
        if code != 0x82 {
            wait_for_event(&["MQTT_REAUTHENTICATION_FAILED", name]).await;
        }
    }
    // AUTH 0x18: no challenge-response method is offered.
    let (mut client, _) = Client::connect(
        proxy.port,
        "continue",
        Some("jwt"),
        &token("d1", "sub pub", 60),
    )
    .await;
    client.auth(0x18, Some("jwt"), Some("x")).await;
    assert_eq!(client.disconnected().await, 0x82);
    // AUTH in a session whose CONNECT named no method.
    let (mut client, ack) =
        Client::connect(proxy.port, "user-name", None, &token("d1", "sub pub", 60)).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    client.refresh(&token("d1", "sub pub", 60)).await;
    assert_eq!(client.disconnected().await, 0x82);
    // A method no guard names, at CONNECT.
    let (_, ack) = Client::connect(
        proxy.port,
        "unknown",
        Some("SCRAM-SHA-1"),
        &token("d1", "sub", 60),
    )
    .await;
    assert_eq!(ack.code, ConnectReturnCode::BadAuthenticationMethod);
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn a_refresh_with_fewer_roles_ends_a_subscription_and_refuses_publishes() {
    let broker = Mosquitto::start().unwrap();
    let proxy = proxy(&broker).await;
    let (mut client, _) = Client::connect(
        proxy.port,
        "narrowed",
        Some("jwt"),
        &token("d1", "sub pub", 60),
    )
    .await;
    client.send(&subscribe(1, "data/down")).await;
    assert!(matches!(client.packet().await, Packet::SubAck(_)));
    // Publishing only: the subscription ends upstream.
    client.refresh(&token("d1", "pub", 60)).await;
    assert!(matches!(client.recv().await, Some(Frame::Auth(0x00, _))));
    wait_for_event(&["MQTT_SUBSCRIPTION_REVOKED", "narrowed", "data/down"]).await;
    client.send(&subscribe(2, "data/down")).await;
    match client.packet().await {
        Packet::SubAck(ack) => {
            assert_eq!(ack.return_codes, vec![SubscribeReasonCode::NotAuthorized])
        }
        other => panic!("expected SUBACK 0x87, got {other:?}"),
    }
    // A message to the ended subscription no longer reaches the client:
    // the publish after it (to a topic it never subscribed) is what
    // proves the broker had nothing for it.
    let (mut sender, _) = zilla_testkit::mqtt::RawMqtt::connect(broker.port(), "").await;
    sender.send(&publish("data/down", 1, b"revoked")).await;
    assert!(matches!(sender.recv().await, Some(Packet::PubAck(_))));
    client.send(&publish("data/up", 3, b"still")).await;
    match client.packet().await {
        // 0x10 from mosquitto: nobody subscribes to data/up here.
        Packet::PubAck(ack) => assert_ne!(ack.reason, PubAckReason::NotAuthorized),
        other => panic!("expected PUBACK, not the revoked message: {other:?}"),
    }
    // Subscribing only: a publish is refused with 0x87, the session lives.
    client.refresh(&token("d1", "sub", 60)).await;
    assert!(matches!(client.recv().await, Some(Frame::Auth(0x00, _))));
    client.send(&publish("data/up", 4, b"refused")).await;
    match client.packet().await {
        Packet::PubAck(ack) => assert_eq!(ack.reason, PubAckReason::NotAuthorized),
        other => panic!("expected PUBACK 0x87, got {other:?}"),
    }
    client.send(&subscribe(5, "data/down")).await;
    assert!(
        matches!(client.packet().await, Packet::SubAck(a) if a.return_codes[0] != SubscribeReasonCode::NotAuthorized)
    );
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn user_name_tokens_work_as_before() {
    let broker = Mosquitto::start().unwrap();
    let proxy = proxy(&broker).await;
    let (mut client, ack) =
        Client::connect(proxy.port, "bearer-v5", None, &token("d1", "sub pub", 60)).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let method = ack.properties.and_then(|p| p.authentication_method);
    assert_eq!(method, None);
    client.send(&publish("data/up", 1, b"v5")).await;
    assert!(
        matches!(client.packet().await, Packet::PubAck(a) if a.reason != PubAckReason::NotAuthorized)
    );
    // 3.1.1, with the same kind of token.
    let mut connect = rumqttc::mqttbytes::v4::Connect::new("bearer-v4");
    connect.set_login(format!("Bearer {}", token("d1", "sub pub", 60)), "");
    let mut out = BytesMut::new();
    connect.write(&mut out).unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    stream.write_all(&out).await.unwrap();
    let mut connack = [0u8; 4];
    tokio::time::timeout(TIMEOUT, stream.read_exact(&mut connack))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn mqttjs_refreshes_its_token_in_its_session() {
    let logs = tempfile::tempdir().unwrap();
    let broker = logging_broker(&logs);
    let proxy = proxy(&broker).await;
    let key = zilla_testkit::seed::dir().join("private.pem");
    let target = ["--port".to_owned(), proxy.port.to_string()];
    refreshes_six_times_on_one_connection(&target, &key, "mqttjs", &logs).await;
    proxy.engine.shutdown().await;
}

/// The proxy in front of `broker` with two guards: the seed's `authn_jwt`
/// (issuer `auth.example.com`: `Bearer` user names and the method `jwt`)
/// and `authn_azure` (issuer `azure.example.com`, the same keys: the
/// method `CUSTOM-JWT` only). `data/#` is for `authn_jwt`'s roles,
/// `azure/#` for `authn_azure`'s.
async fn two_guard_proxy(broker: &Mosquitto) -> Proxy {
    let server = r#"
    options:
      authorization:
        authn_jwt:
          credentials:
            connect:
              username: Bearer {credentials}
            authentication:
              method: jwt
        authn_azure:
          credentials:
            authentication:
              method: CUSTOM-JWT
    routes:
      - guarded:
          authn_jwt: [sub]
        when:
          - subscribe: [{topic: "data/#"}]
        exit: mqtt_client_a
      - guarded:
          authn_jwt: [pub]
        when:
          - publish: [{topic: "data/#"}]
        exit: mqtt_client_a
      - guarded:
          authn_azure: [sub]
        when:
          - subscribe: [{topic: "azure/#"}]
        exit: mqtt_client_a
      - guarded:
          authn_azure: [pub]
        when:
          - publish: [{topic: "azure/#"}]
        exit: mqtt_client_a"#;
    let jwt = guards_yaml();
    let azure = jwt
        .replacen("authn_jwt:", "authn_azure:", 1)
        .replace("https://auth.example.com", "https://azure.example.com");
    let yaml = mqtt_proxy_yaml(server, &[("a", broker.port())]).replacen(
        "\nbindings:\n",
        &format!("\nguards:\n{jwt}{azure}bindings:\n"),
        1,
    );
    Proxy::start(&yaml).await
}

#[tokio::test]
async fn two_guards_each_take_their_own_method_and_refresh_through_it() {
    const AZURE: &str = "https://azure.example.com";
    let broker = Mosquitto::start().unwrap();
    let proxy = two_guard_proxy(&broker).await;
    // CUSTOM-JWT goes to authn_azure: its topics, not authn_jwt's.
    let (mut azure, ack) = Client::connect(
        proxy.port,
        "azure-device",
        Some("CUSTOM-JWT"),
        &token_of(AZURE, "d1", "sub pub", 60),
    )
    .await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let method = ack.properties.and_then(|p| p.authentication_method);
    assert_eq!(method.as_deref(), Some("CUSTOM-JWT"));
    azure.send(&publish("azure/up", 1, b"a")).await;
    assert!(
        matches!(azure.packet().await, Packet::PubAck(a) if a.reason != PubAckReason::NotAuthorized)
    );
    azure.send(&publish("data/up", 2, b"a")).await;
    assert!(
        matches!(azure.packet().await, Packet::PubAck(a) if a.reason == PubAckReason::NotAuthorized)
    );
    // Refreshed through the CONNECT's guard and method.
    azure
        .auth(
            0x19,
            Some("CUSTOM-JWT"),
            Some(&token_of(AZURE, "d1", "pub", 60)),
        )
        .await;
    match azure.recv().await {
        Some(Frame::Auth(0x00, method)) => assert_eq!(method.as_deref(), Some("CUSTOM-JWT")),
        other => panic!("expected AUTH 0x00, got {other:?}"),
    }
    // Another guard's method, even one a guard names, is not the CONNECT's.
    azure
        .auth(0x19, Some("jwt"), Some(&token("d1", "sub pub", 60)))
        .await;
    assert_eq!(azure.disconnected().await, 0x8C);
    // A token of the other issuer under CUSTOM-JWT: authn_azure refuses it.
    let (_, ack) = Client::connect(
        proxy.port,
        "wrong-issuer",
        Some("CUSTOM-JWT"),
        &token("d1", "sub pub", 60),
    )
    .await;
    assert_eq!(ack.code, ConnectReturnCode::BadUserNamePassword);
    // The method jwt and a Bearer user name go to authn_jwt, as before.
    for (id, method) in [("jwt-method", Some("jwt")), ("bearer", None)] {
        let (mut client, ack) =
            Client::connect(proxy.port, id, method, &token("d1", "sub pub", 60)).await;
        assert_eq!(ack.code, ConnectReturnCode::Success, "{id}");
        client.send(&publish("data/up", 1, b"j")).await;
        assert!(
            matches!(client.packet().await, Packet::PubAck(a) if a.reason != PubAckReason::NotAuthorized),
            "{id}"
        );
        client.send(&publish("azure/up", 2, b"j")).await;
        assert!(
            matches!(client.packet().await, Packet::PubAck(a) if a.reason == PubAckReason::NotAuthorized),
            "{id}"
        );
    }
    proxy.engine.shutdown().await;
}

/// [`proxy`]'s configuration behind WebSocket: `tcp -> http -> ws -> mqtt`,
/// the http server taking the `access_token` query parameter for the same
/// guard (as `examples/mqtt.proxy.ws` does).
async fn ws_proxy(broker: &Mosquitto) -> Proxy {
    let server = r#"
    options:
      authorization:
        authn_jwt:
          credentials:
            connect:
              username: Bearer {credentials}
            authentication:
              method: jwt
    routes:
      - guarded:
          authn_jwt: [sub]
        when:
          - subscribe: [{topic: "data/#"}]
        exit: mqtt_client_a
      - guarded:
          authn_jwt: [pub]
        when:
          - publish: [{topic: "data/#"}]
        exit: mqtt_client_a"#;
    let websocket = r#"    exit: north_http_server
  north_http_server:
    type: http
    kind: server
    options:
      versions: [http/1.1]
      authorization:
        authn_jwt:
          credentials:
            query:
              access_token: "{credentials}"
    routes:
      - when:
          - headers:
              upgrade: websocket
        exit: north_ws_server
  north_ws_server:
    type: ws
    kind: server
    routes:
      - when:
          - protocol: mqtt
          - protocol: mqttv3.1
        exit: north_mqtt_server
"#;
    let yaml = mqtt_proxy_yaml(server, &[("a", broker.port())])
        .replacen("    exit: north_mqtt_server\n", websocket, 1)
        .replacen(
            "\nbindings:\n",
            &format!("\nguards:\n{}bindings:\n", guards_yaml()),
            1,
        );
    Proxy::start(&yaml).await
}

/// Over WebSocket, with a 3 s token in the upgrade request's query and
/// another as the CONNECT's Authentication Data: MQTT.js refreshes its token
/// by AUTH every 2 s and its session outlives both first tokens (the upgrade
/// grant of the session's own guard is replaced by the CONNECT's token, so
/// its `exp` does not end the session), ending only when it stops
/// refreshing; the broker saw one connection.
#[tokio::test]
async fn mqttjs_over_websocket_refreshes_its_token_past_the_first_one() {
    let logs = tempfile::tempdir().unwrap();
    let broker = logging_broker(&logs);
    let proxy = ws_proxy(&broker).await;
    let key = zilla_testkit::seed::dir().join("private.pem");
    let url = format!(
        "ws://127.0.0.1:{}/mqtt?access_token={}",
        proxy.port,
        token("device1", "sub pub", 3)
    );
    let target = ["--url".to_owned(), url];
    refreshes_six_times_on_one_connection(&target, &key, "mqttjs-ws", &logs).await;
    proxy.engine.shutdown().await;
}

/// Runs MQTT.js's `reauth` script against `target` (`--port` or `--url`):
/// 3 s tokens refreshed every 2 s six times, then left to expire; the proxy
/// started one session for it and the broker saw one connection.
async fn refreshes_six_times_on_one_connection(
    target: &[String; 2],
    key: &std::path::Path,
    prefix: &str,
    logs: &tempfile::TempDir,
) {
    let mut args: Vec<String> = target.to_vec();
    args.extend(
        [
            "--key",
            &key.display().to_string(),
            "--sub",
            "device1",
            "--lifetime",
            "3",
            "--every",
            "2",
            "--rounds",
            "6",
            "--prefix",
            prefix,
        ]
        .map(str::to_owned),
    );
    let command = Library::MqttJs
        .command("reauth", &args)
        .unwrap_or_else(|error| panic!("{error}"));
    let run = run_script(command, Duration::from_secs(60))
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(run.failures().is_empty(), "{}", run.transcript());
    let mut expected = vec!["connect".to_owned(), "subscribe".to_owned()];
    expected.extend((1..=6).map(|round| format!("refresh_{round}")));
    expected.push("expiry".into());
    assert_eq!(run.checks(), expected, "{}", run.transcript());
    let client_id = format!("id {prefix}-refresher");
    let events = zilla_testkit::proxy::captured_events();
    let count = |kind: &str| {
        (events.iter())
            .filter(|e| e.contains(kind) && e.contains(&client_id))
            .count()
    };
    assert_eq!(count("MQTT_SESSION_STARTED"), 1, "no reconnect");
    assert_eq!(count("MQTT_REAUTHENTICATED"), 6);
    assert_eq!(
        broker_connections(logs, &format!("{prefix}-refresher")),
        1,
        "the broker saw one connection"
    );
}
