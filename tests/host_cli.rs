//! The `zilla` host binary: plugin registry, version, startup failures, signals,
//! draining, and an accept loop that survives running out of descriptors.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use zilla_testkit::{wait_for, Mosquitto, ZillaProcess, TCP_PROXY_YAML};

const ZILLA: &str = env!("CARGO_BIN_EXE_zilla");
const TIMEOUT: Duration = Duration::from_secs(10);

fn write_config(dir: &Path, yaml: &str) -> PathBuf {
    let path = dir.join("zilla.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// An MQTT CONNECT for client id "probe" and the CONNACK it should get back,
/// written by hand so the check depends on nothing but a socket.
fn mqtt_round_trip(port: u16) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let connect = [
        0x10, 17, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30, 0, 5, b'p', b'r', b'o', b'b', b'e',
    ];
    stream.write_all(&connect)?;
    let mut connack = vec![0u8; 4];
    stream.read_exact(&mut connack)?;
    Ok(connack)
}

#[test]
fn registry_lists_every_first_party_plugin() {
    let registered = zilla::engine::registered();
    for plugin in zilla::FIRST_PARTY_PLUGINS {
        let (family, name) = plugin.split_once(':').unwrap();
        let present = match family {
            "binding" => registered.bindings.iter().any(|(n, _)| *n == name),
            "guard" => registered.guards.contains(&name),
            "vault" => registered.vaults.contains(&name),
            "catalog" => registered.catalogs.contains(&name),
            "store" => registered.stores.contains(&name),
            "model" => registered.models.contains(&name),
            "exporter" => registered.exporters.contains(&name),
            other => panic!("unknown plugin family {other}"),
        };
        assert!(present, "{plugin} is not registered: {registered:?}");
    }
}

#[test]
fn version_prints_the_plugin_types() {
    let output = Command::new(ZILLA).arg("version").output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.starts_with(&format!("zilla {}", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "bindings: asyncapi (server, client, proxy), echo (server), http (server), mqtt (server, client), tcp (server, client), tls (server, client, proxy), ws (server, client)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("exporters: otlp, prometheus, stdout"),
        "{stdout}"
    );
    assert!(stdout.contains("stores: memory, redis"), "{stdout}");
}

#[test]
fn invalid_configuration_exits_non_zero_with_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "name: broken\nbindings:\n  a:\n    type: tcp\n    kind: server\n    options: { port: 0, prot: 1 }\n    exit: b\n",
    );
    let output = Command::new(ZILLA)
        .args(["start", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("2 configuration errors"), "{stderr}");
    assert!(
        stderr.contains("line 6: bindings.a.options.prot: unknown field `prot`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 7: bindings.a.exit: exit `b` is not a binding"),
        "{stderr}"
    );
}

#[test]
fn missing_config_file_is_reported() {
    let output = Command::new(ZILLA)
        .args(["start", "-c", "/nonexistent/zilla.yaml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("/nonexistent/zilla.yaml: cannot read the configuration: No such file"),
        "{stderr}"
    );
}

#[test]
fn port_in_use_fails_start_naming_the_binding() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let yaml = TCP_PROXY_YAML.replace("port: 0", &format!("port: {port}"));
    // SO_REUSEADDR does not let two listeners share a port that is listening.
    let config = write_config(dir.path(), &yaml);
    let output = Command::new(ZILLA)
        .args(["start", "-c"])
        .arg(&config)
        .envs([
            ("MOSQUITTO_BROKER_HOST", "127.0.0.1"),
            ("MOSQUITTO_BROKER_PORT", "1"),
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "binding north_tcp_server failed to start: cannot listen on 127.0.0.1:{port}"
        )),
        "{stderr}"
    );
}

#[test]
fn sigterm_closes_listeners_and_exits_cleanly() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), TCP_PROXY_YAML);
    let mut zilla =
        ZillaProcess::start(Path::new(ZILLA), &config, &broker.env(), &["-w", "1"]).unwrap();
    let port = zilla.port("north_tcp_server");
    assert!(zilla
        .output()
        .stdout
        .iter()
        .any(|l| l
            == &format!("started north_tcp_server (tcp server) listening on 127.0.0.1:{port}")));
    assert_eq!(mqtt_round_trip(port).unwrap(), vec![0x20, 2, 0, 0]);

    let (status, output) = zilla.terminate(TIMEOUT).unwrap();
    assert!(status.success(), "{output:?}");
    assert!(output
        .stdout
        .iter()
        .any(|l| l == "zilla tcp-proxy stopping on SIGTERM"));
    assert!(output.stdout.iter().any(|l| l == "zilla tcp-proxy stopped"));
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the listener is closed"
    );
}

#[test]
fn open_connections_get_a_bounded_grace_period() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), TCP_PROXY_YAML);
    let mut zilla = ZillaProcess::start(
        Path::new(ZILLA),
        &config,
        &broker.env(),
        &["-P", "zilla.engine.shutdown.grace=0.5"],
    )
    .unwrap();
    let port = zilla.port("north_tcp_server");
    // An idle relayed connection never finishes on its own.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.write_all(&[
        0x10, 17, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 30, 0, 5, b'i', b'd', b'l', b'e', b'1',
    ])
    .unwrap();
    idle.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut connack = [0u8; 4];
    idle.read_exact(&mut connack).unwrap();

    let (status, output) = zilla.terminate(TIMEOUT).unwrap();
    assert!(status.success(), "{output:?}");
    assert!(
        output.stdout.iter().any(|l| l
            == "zilla tcp-proxy stopped; 1 connection(s) did not finish within the grace period"),
        "{output:?}"
    );
    // The relayed connection was dropped, so the client sees the end of the stream.
    let mut rest = Vec::new();
    assert_eq!(idle.read_to_end(&mut rest).unwrap_or(0), 0);
}

#[test]
fn accept_loop_survives_running_out_of_file_descriptors() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), TCP_PROXY_YAML);
    // A small descriptor limit that the test can exhaust with a few connections.
    let wrapper = dir.path().join("zilla-limited");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nulimit -n 48\nexec {ZILLA} \"$@\"\n"),
    )
    .unwrap();
    let chmod = Command::new("chmod")
        .arg("+x")
        .arg(&wrapper)
        .status()
        .unwrap();
    assert!(chmod.success());
    let zilla = ZillaProcess::start(&wrapper, &config, &broker.env(), &["-w", "1"]).unwrap();
    let port = zilla.port("north_tcp_server");

    let mut hogs = Vec::new();
    let exhausted =
        wait_for("accept to fail with EMFILE", TIMEOUT, || {
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
                hogs.push(stream);
            }
            zilla.output().stdout.into_iter().find(|line| {
                line.contains("TCP_ACCEPT_FAILED") || line.contains("TCP_CONNECT_FAILED")
            })
        });
    let event = exhausted.expect("descriptors run out");
    assert!(
        event.contains("tcp-proxy.north_tcp_server TCP_ACCEPT_FAILED")
            || event.contains("TCP_CONNECT_FAILED"),
        "{event}"
    );

    drop(hogs);
    // Once descriptors are free again the proxy serves as before.
    let connack = wait_for(
        "a connection through the proxy to work again",
        TIMEOUT,
        || mqtt_round_trip(port).ok(),
    )
    .unwrap();
    assert_eq!(connack, vec![0x20, 2, 0, 0]);
}

#[test]
fn print_generated_shows_what_an_asyncapi_document_became() {
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/asyncapi.mqtt.proxy/zilla.yaml");
    let output = Command::new(ZILLA)
        .args(["start", "--print-generated", "-c"])
        .arg(&example)
        .envs([
            ("MOSQUITTO_BROKER_HOST", "127.0.0.1"),
            ("MOSQUITTO_BROKER_PORT", "1883"),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    for expected in [
        "mqtt_proxy_server:\n    type: tcp",
        "mqtt_proxy_server_mqtt:\n    type: mqtt",
        "mqtt_proxy_client:\n    type: mqtt\n    kind: client",
        "mqtt_proxy_client_tcp:\n    type: tcp",
        "mqtt_proxy_server_schemas:\n    type: inline",
        "mqtt_proxy_server_store:\n    type: memory",
    ] {
        assert!(
            stdout.contains(expected),
            "missing `{expected}` in:\n{stdout}"
        );
    }
}
