//! Hot reload: a changed `zilla.yaml` (or SIGHUP) builds a new pipeline that
//! takes over new connections while existing sessions stay on the one they
//! started on; listeners that stay never refuse a connection; an invalid
//! edit changes nothing and is reported as at startup.
//!
//! The first test drives the engine's handover in process; the others run
//! the `zilla` host as a child process against real mosquitto brokers, with
//! `-P zilla.engine.config.poll=0.05` so that file changes are seen quickly.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zilla as _;
use zilla::engine::Engine;
use zilla_testkit::mqtt::packets::{Packet, QoS};
use zilla_testkit::mqtt::{publish_packet, subscribe_packet, v311, RawMqtt};
use zilla_testkit::proxy::mqtt_host_yaml;
use zilla_testkit::{free_port, wait_for, Mosquitto, ZillaProcess};

const ZILLA: &str = env!("CARGO_BIN_EXE_zilla");
const TIMEOUT: Duration = Duration::from_secs(10);
const FAST_POLL: &[&str] = &["-P", "zilla.engine.config.poll=0.05"];

/// A tcp server (port 0, kept across reloads) in front of an mqtt server
/// whose default exit is `mqtt_client_<exit>`, with a client for each broker.
fn mqtt_proxy(exit: &str, connect_timeout: u32, a: u16, b: u16) -> String {
    let server = format!(
        "    options: {{ connect-timeout: {connect_timeout} }}
    exit: mqtt_client_{exit}"
    );
    mqtt_host_yaml("reload-test", &server, &[("a", a), ("b", b)])
}

fn write(path: &Path, yaml: &str) {
    std::fs::write(path, yaml).unwrap();
}

fn start(dir: &Path, yaml: &str) -> (ZillaProcess, PathBuf) {
    let config = dir.join("zilla.yaml");
    write(&config, yaml);
    let zilla = ZillaProcess::start(Path::new(ZILLA), &config, &[], FAST_POLL).unwrap();
    (zilla, config)
}

/// An MQTT 3.1.1 CONNECT for `id` through `port`; the CONNACK's bytes.
fn mqtt_round_trip(port: u16, id: &str) -> std::io::Result<[u8; 4]> {
    let (mut stream, connack) = v311::connect(port, id)?;
    stream.write_all(&[0xE0, 0])?;
    Ok(connack)
}

async fn subscribed(port: u16, id: &str, filter: &str) -> RawMqtt {
    let (mut client, ack) = RawMqtt::connect(port, id).await;
    assert_eq!(
        ack.code,
        zilla_testkit::mqtt::packets::ConnectReturnCode::Success
    );
    client
        .send(&subscribe_packet(1, filter, QoS::AtLeastOnce))
        .await;
    match client.recv().await {
        Some(Packet::SubAck(_)) => client,
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

async fn publish_acked(client: &mut RawMqtt, topic: &str, pkid: u16) {
    client
        .send(&publish_packet(
            topic,
            QoS::AtLeastOnce,
            pkid,
            topic.to_owned(),
        ))
        .await;
    loop {
        match client.recv().await {
            Some(Packet::PubAck(ack)) if ack.pkid == pkid => return,
            Some(_) => {}
            None => panic!("the connection closed before PUBACK {pkid}"),
        }
    }
}

/// The topic of the next message `client` receives.
async fn next_topic(client: &mut RawMqtt) -> String {
    loop {
        match client.recv().await {
            Some(Packet::Publish(publish)) => {
                return publish.topic.to_string();
            }
            Some(_) => {}
            None => panic!("the connection closed while waiting for a message"),
        }
    }
}

#[tokio::test]
async fn a_successor_engine_shares_kept_listeners_and_closes_dropped_ones() {
    // Two plain upstreams that answer with their name, then echo.
    async fn upstream(name: &'static str) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = stream.write_all(name.as_bytes()).await;
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = stream.read(&mut buf).await {
                        let _ = stream.write_all(&buf[..n]).await;
                    }
                });
            }
        });
        port
    }
    async fn greeting(stream: &mut tokio::net::TcpStream) -> String {
        let mut buf = [0u8; 5];
        tokio::time::timeout(TIMEOUT, stream.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8(buf.to_vec()).unwrap()
    }
    let (alpha, beta) = (upstream("alpha").await, upstream("betaa").await);
    let yaml = |to: u16, extra: bool| {
        let mut yaml = format!(
            "
name: handover
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: {{ host: 127.0.0.1, port: 0 }}
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {to} }}
"
        );
        if extra {
            yaml.push_str(
                "  extra_tcp_server:
    type: tcp
    kind: server
    options: { host: 127.0.0.1, port: 0 }
    exit: south_tcp_client
",
            );
        }
        yaml
    };

    let first = Engine::from_yaml(yaml(alpha, true)).build().unwrap();
    let started = first.start().await.unwrap();
    let port_of = |name: &str| started.iter().find(|b| b.name == name).unwrap().listening[0];
    let (north, extra) = (port_of("north_tcp_server"), port_of("extra_tcp_server"));
    let mut before = tokio::net::TcpStream::connect(north).await.unwrap();
    assert_eq!(greeting(&mut before).await, "alpha");

    let second = Engine::from_yaml(yaml(beta, false))
        .handover(first.handover())
        .build()
        .unwrap();
    let restarted = second.start().await.unwrap();
    assert_eq!(
        restarted[restarted.len() - 1].listening,
        vec![north],
        "the kept listener is the same socket, on the same port"
    );
    first.stop_accepting();

    let mut after = tokio::net::TcpStream::connect(north).await.unwrap();
    assert_eq!(
        greeting(&mut after).await,
        "betaa",
        "new connections: new pipeline"
    );
    before.write_all(b"still").await.unwrap();
    assert_eq!(
        greeting(&mut before).await,
        "still",
        "the old one carries on"
    );
    let refused = wait_for("the dropped listener to close", TIMEOUT, || {
        std::net::TcpStream::connect(extra).err()
    });
    assert!(refused.is_ok());

    let ending = tokio::spawn(async move {
        first.connections_ended().await;
        first.shutdown().await
    });
    drop(before);
    let drained = tokio::time::timeout(TIMEOUT, ending)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(drained.abandoned, 0);
    drop(after);
    second.shutdown().await;
}

#[tokio::test]
async fn a_changed_route_sends_new_sessions_to_the_new_broker_while_old_ones_stay() {
    let (a, b) = (Mosquitto::start().unwrap(), Mosquitto::start().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let (zilla, config) = start(dir.path(), &mqtt_proxy("a", 10, a.port(), b.port()));
    let port = zilla.port("north_tcp_server");

    let mut watch_a = subscribed(a.port(), "watch-a", "reload/#").await;
    let mut watch_b = subscribed(b.port(), "watch-b", "reload/#").await;
    let mut old = subscribed(port, "old-session", "reload/to-old").await;
    publish_acked(&mut old, "reload/old-before", 1).await;
    assert_eq!(next_topic(&mut watch_a).await, "reload/old-before");

    write(&config, &mqtt_proxy("b", 10, a.port(), b.port()));
    zilla
        .wait_for_stdout("zilla reload-test reloaded on a change to", TIMEOUT)
        .unwrap();
    assert_eq!(zilla.port("north_tcp_server"), port);

    let (mut new, _) = RawMqtt::connect(port, "new-session").await;
    publish_acked(&mut new, "reload/new", 1).await;
    assert_eq!(
        next_topic(&mut watch_b).await,
        "reload/new",
        "new sessions go to B"
    );

    // The old session is still on A, both ways. Had the new session's
    // publish (acknowledged before) gone to A, A would have delivered it first.
    publish_acked(&mut old, "reload/old-after", 2).await;
    assert_eq!(next_topic(&mut watch_a).await, "reload/old-after");
    publish_acked(&mut watch_a, "reload/to-old", 7).await;
    assert_eq!(next_topic(&mut old).await, "reload/to-old");
    let output = zilla.output();
    assert!(
        output.stdout.iter().any(|l| l
            .contains("reload-test.engine CONFIG_RELOADED reloaded on a change to")
            && l.contains("(generation 2); listeners kept: 127.0.0.1:")),
        "{output:?}"
    );
}

#[test]
fn no_connection_attempt_fails_during_twenty_reloads() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (zilla, config) = start(
        dir.path(),
        &mqtt_proxy("a", 10, broker.port(), broker.port()),
    );
    let port = zilla.port("north_tcp_server");
    // A session that lives through every reload.
    let mut lasting = TcpStream::connect(("127.0.0.1", port)).unwrap();
    lasting.set_read_timeout(Some(TIMEOUT)).unwrap();
    lasting
        // Keep-alive 0: no timeout however long the reloads take.
        .write_all(&v311::connect_bytes("laster", 0))
        .unwrap();
    let mut connack = [0u8; 4];
    lasting.read_exact(&mut connack).unwrap();
    assert_eq!(connack, v311::ACCEPTED);

    let stop = Arc::new(AtomicBool::new(false));
    let succeeded = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let stream: Vec<_> = (0..2)
        .map(|thread| {
            let (stop, succeeded, failures) = (stop.clone(), succeeded.clone(), failures.clone());
            std::thread::spawn(move || {
                // Bounded: stops when told, or after this many attempts.
                for n in 0..200_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match mqtt_round_trip(port, &format!("c{thread}-{n}")) {
                        Ok(v311::ACCEPTED) => {
                            succeeded.fetch_add(1, Ordering::Relaxed);
                        }
                        other => failures.lock().unwrap().push(format!("{other:?}")),
                    }
                }
            })
        })
        .collect();

    for reload in 1..=20 {
        let done = succeeded.load(Ordering::Relaxed);
        if reload % 2 == 0 {
            zilla.signal("HUP").unwrap();
        } else {
            let timeout = 10 + reload as u32;
            write(
                &config,
                &mqtt_proxy("a", timeout, broker.port(), broker.port()),
            );
        }
        zilla
            .wait_for_stdout_count("zilla reload-test reloaded on", reload, TIMEOUT)
            .unwrap();
        // Connections keep arriving before the next reload.
        wait_for("connections after the reload", TIMEOUT, || {
            (succeeded.load(Ordering::Relaxed) >= done + 5).then_some(())
        })
        .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for thread in stream {
        thread.join().unwrap();
    }

    let failures = failures.lock().unwrap();
    let succeeded = succeeded.load(Ordering::Relaxed);
    println!(
        "{succeeded} connections through 20 reloads, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(succeeded >= 100, "{succeeded}");
    assert_eq!(
        zilla.count_stdout("zilla reload-test reloaded on SIGHUP"),
        10
    );
    // The session from before the first reload still gets answers.
    lasting.write_all(&[0xC0, 0]).unwrap();
    let mut pingresp = [0u8; 2];
    lasting.read_exact(&mut pingresp).unwrap();
    assert_eq!(pingresp, [0xD0, 0]);
}

#[test]
fn an_invalid_edit_keeps_the_running_configuration_and_reports_every_error() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let valid = mqtt_proxy("a", 10, broker.port(), broker.port());
    let (zilla, config) = start(dir.path(), &valid);
    let port = zilla.port("north_tcp_server");

    let invalid = valid
        .replace(
            "connect-timeout: 10",
            "connect-timeout: 10, conect-timeout: 3",
        )
        // The mqtt server's exit, the first one to `mqtt_client_a`.
        .replacen("exit: mqtt_client_a\n", "exit: mqtt_client_c\n", 1);
    // What `zilla start` says about this file, to compare with the reload.
    let at_startup = dir.path().join("invalid.yaml");
    write(&at_startup, &invalid);
    let refused = std::process::Command::new(ZILLA)
        .args(["start", "-c"])
        .arg(&at_startup)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let expected: Vec<String> = String::from_utf8(refused.stderr)
        .unwrap()
        .replace(
            &at_startup.display().to_string(),
            &config.display().to_string(),
        )
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(
        expected[0].ends_with("2 configuration errors"),
        "{expected:?}"
    );

    write(&config, &invalid);
    let event = zilla
        .wait_for_stdout("CONFIG_RELOAD_FAILED", TIMEOUT)
        .unwrap();
    assert!(
        event.contains("reload-test.engine CONFIG_RELOAD_FAILED reload on a change to"),
        "{event}"
    );
    assert!(event.contains("unknown field `conect-timeout`"), "{event}");
    assert!(
        event.contains("exit `mqtt_client_c` is not a binding"),
        "{event}"
    );
    let stderr = wait_for("the errors on stderr", TIMEOUT, || {
        let stderr = zilla.output().stderr;
        stderr
            .iter()
            .any(|l| l.ends_with("the running configuration stays"))
            .then_some(stderr)
    })
    .unwrap();
    for line in &expected {
        assert!(
            stderr.contains(line),
            "`{line}` is reported as at startup: {stderr:#?}"
        );
    }

    // The running configuration still serves, on the same listener.
    assert_eq!(
        mqtt_round_trip(port, "after-invalid").unwrap(),
        v311::ACCEPTED
    );
    // SIGHUP tries the same file again, and fails again.
    zilla.signal("HUP").unwrap();
    zilla
        .wait_for_stdout_count("CONFIG_RELOAD_FAILED reload on SIGHUP failed", 1, TIMEOUT)
        .unwrap();
    // A fixed file is loaded: the watch goes on after a failure.
    write(&config, &mqtt_proxy("a", 12, broker.port(), broker.port()));
    zilla
        .wait_for_stdout("zilla reload-test reloaded on a change to", TIMEOUT)
        .unwrap();
    assert_eq!(mqtt_round_trip(port, "after-fix").unwrap(), v311::ACCEPTED);
    assert_eq!(zilla.count_stdout("CONFIG_RELOADED"), 1);
}

#[test]
fn listeners_open_and_close_with_the_configuration() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let base = mqtt_proxy("a", 10, broker.port(), broker.port());
    let (zilla, config) = start(dir.path(), &base);
    let port = zilla.port("north_tcp_server");
    let second = free_port();
    let with_second = format!(
        "{base}  second_tcp_server:
    type: tcp
    kind: server
    options: {{ host: 127.0.0.1, port: {second} }}
    exit: north_mqtt_server
"
    );

    write(&config, &with_second);
    let reloaded = zilla
        .wait_for_stdout("zilla reload-test reloaded", TIMEOUT)
        .unwrap();
    assert!(
        reloaded.contains(&format!("opened: 127.0.0.1:{second}")),
        "{reloaded}"
    );
    assert_eq!(
        mqtt_round_trip(second, "on-second").unwrap(),
        v311::ACCEPTED
    );

    write(&config, &base);
    zilla
        .wait_for_stdout_count("zilla reload-test reloaded", 2, TIMEOUT)
        .unwrap();
    assert!(zilla.count_stdout(&format!("closed: 127.0.0.1:{second}")) >= 1);
    let closed = wait_for("the removed listener to close", TIMEOUT, || {
        TcpStream::connect(("127.0.0.1", second)).err()
    });
    assert!(closed.is_ok());
    assert_eq!(mqtt_round_trip(port, "on-first").unwrap(), v311::ACCEPTED);
}

#[tokio::test]
async fn a_session_in_an_unchanged_store_is_taken_over_across_a_reload() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let with_store = |timeout: u32| {
        mqtt_proxy("a", timeout, broker.port(), broker.port())
            .replace(
                "bindings:\n",
                "stores:\n  memory0:\n    type: memory\nbindings:\n",
            )
            .replace(
                &format!("connect-timeout: {timeout} }}"),
                &format!("connect-timeout: {timeout}, store: memory0 }}"),
            )
    };
    let (zilla, config) = start(dir.path(), &with_store(10));
    let port = zilla.port("north_tcp_server");
    let (mut first, _) = RawMqtt::connect(port, "same-id").await;

    write(&config, &with_store(11));
    zilla
        .wait_for_stdout("zilla reload-test reloaded on a change to", TIMEOUT)
        .unwrap();
    let (_second, _) = RawMqtt::connect(port, "same-id").await;
    let disconnect = first.closed().await.expect("a DISCONNECT");
    assert_eq!(
        disconnect.reason_code,
        zilla_testkit::mqtt::packets::DisconnectReasonCode::SessionTakenOver
    );
    // The proxy's own registry, carried over in the store, took it over,
    // not the broker behind it.
    zilla
        .wait_for_stdout("MQTT_SESSION_TAKEN_OVER", TIMEOUT)
        .unwrap();
}
