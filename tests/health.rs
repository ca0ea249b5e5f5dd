//! Health endpoints of the `zilla` host (`-P zilla.engine.health.port`):
//! liveness and readiness for Kubernetes probes, and the shutdown sequence:
//! readiness turns 503 on SIGTERM while listeners still accept, then, after
//! `zilla.engine.shutdown.delay`, listeners close and sessions get DISCONNECT
//! 0x8B naming the `server-reference` to reconnect to: a rolling update.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use zilla_testkit::http::get;
use zilla_testkit::mqtt::packets::DisconnectReasonCode;
use zilla_testkit::mqtt::{v311, RawMqtt};
use zilla_testkit::proxy::mqtt_host_yaml;
use zilla_testkit::{free_port, wait_for, Mosquitto, ZillaProcess};

const ZILLA: &str = env!("CARGO_BIN_EXE_zilla");
const TIMEOUT: Duration = Duration::from_secs(10);

fn config(dir: &Path, broker: &Mosquitto) -> PathBuf {
    let path = dir.join("zilla.yaml");
    let server = "    options:
      server-reference: mqtt.example.com:8883
    exit: mqtt_client_a";
    let yaml = mqtt_host_yaml("health-test", server, &[("a", broker.port())]);
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Starts the host with health checks on a free port; returns it and the port.
fn start(config: &Path, properties: &[&str]) -> (ZillaProcess, u16) {
    let health = free_port();
    let mut args = vec![
        "-P".to_owned(),
        format!("zilla.engine.health.port={health}"),
        "-P".to_owned(),
        "zilla.engine.health.host=127.0.0.1".to_owned(),
    ];
    for property in properties {
        args.extend(["-P".to_owned(), (*property).to_owned()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let zilla = ZillaProcess::start(Path::new(ZILLA), config, &[], &args).unwrap();
    (zilla, health)
}

/// An MQTT 3.1.1 CONNECT through `port` answered with CONNACK 0.
fn mqtt_accepted(port: u16, id: &str) -> bool {
    v311::connect(port, id).is_ok_and(|(_, connack)| connack == v311::ACCEPTED)
}

#[test]
fn live_and_ready_answer_once_the_configuration_runs() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (zilla, health) = start(&config(dir.path(), &broker), &[]);
    assert!(zilla.output().stdout.contains(&format!(
        "health checks on http://127.0.0.1:{health}/health/live and /health/ready"
    )));
    assert_eq!(get(health, "/health/live").unwrap(), (200, "live\n".into()));
    assert_eq!(
        get(health, "/health/ready").unwrap(),
        (200, "ready\n".into())
    );
    assert_eq!(get(health, "/metrics").unwrap().0, 404);
}

#[tokio::test]
async fn readiness_turns_503_on_sigterm_before_listeners_close() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut zilla, health) = start(
        &config(dir.path(), &broker),
        &["zilla.engine.shutdown.delay=1.5"],
    );
    let port = zilla.port("north_tcp_server");
    let (mut session, _) = RawMqtt::connect(port, "open-at-sigterm").await;
    assert_eq!(get(health, "/health/ready").unwrap().0, 200);

    zilla.signal("TERM").unwrap();
    wait_for("readiness to fail", TIMEOUT, || {
        (get(health, "/health/ready").ok()? == (503, "draining\n".into())).then_some(())
    })
    .unwrap();
    // Not ready, yet still serving: the listener accepts and sessions work.
    assert!(mqtt_accepted(port, "during-delay"), "{:?}", zilla.output());
    assert_eq!(get(health, "/health/live").unwrap().0, 200);
    zilla
        .wait_for_stdout(
            "zilla health-test not ready; listeners close in 1.5 s",
            TIMEOUT,
        )
        .unwrap();

    // After the delay: the existing session is told, the listener closes.
    let disconnect = session
        .closed()
        .await
        .expect("a DISCONNECT before the close");
    assert_eq!(
        disconnect.reason_code,
        DisconnectReasonCode::ServerShuttingDown
    );
    // Where to reconnect: the load balancer in front of the other replicas.
    assert_eq!(
        disconnect
            .properties
            .and_then(|p| p.server_reference)
            .as_deref(),
        Some("mqtt.example.com:8883")
    );
    let (status, output) = zilla.wait_exit(TIMEOUT).unwrap();
    assert!(status.success(), "{output:?}");
    let stopping = output
        .stdout
        .iter()
        .position(|l| l == "zilla health-test stopping on SIGTERM");
    let stopped = output
        .stdout
        .iter()
        .position(|l| l == "zilla health-test stopped");
    assert!(stopping < stopped && stopping.is_some(), "{output:?}");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn a_second_signal_cuts_the_delay_short() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut zilla, health) = start(
        &config(dir.path(), &broker),
        &["zilla.engine.shutdown.delay=600"],
    );
    zilla.signal("TERM").unwrap();
    wait_for("readiness to fail", TIMEOUT, || {
        (get(health, "/health/ready").ok()?.0 == 503).then_some(())
    })
    .unwrap();
    zilla.signal("INT").unwrap();
    let (status, output) = zilla.wait_exit(TIMEOUT).unwrap();
    assert!(status.success(), "{output:?}");
    assert!(output
        .stdout
        .iter()
        .any(|l| l == "zilla health-test closing listeners now on SIGINT"));
}

#[test]
fn a_health_port_in_use_fails_startup() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(ZILLA)
        .args(["start", "-c"])
        .arg(config(dir.path(), &broker))
        .args(["-P", &format!("zilla.engine.health.port={port}")])
        .args(["-P", "zilla.engine.health.host=127.0.0.1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "zilla: cannot listen for health checks on 127.0.0.1:{port}"
        )),
        "{stderr}"
    );
}
