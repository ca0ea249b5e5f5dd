//! The host's admin socket (issue 29): `zilla sessions` lists the live
//! sessions, `zilla disconnect` ends one (MQTT 5: DISCONNECT 0x98
//! Administrative action, after which the client reconnects; 3.1.1: the
//! connection closes), only the host's user may connect (a command run as
//! another uid with `setpriv` is refused, by the file's mode and by
//! `SO_PEERCRED`), and hosts in one working directory with their own
//! `-P zilla.engine.admin.socket` paths do not disturb each other; a live
//! host's socket is left alone and a stale one replaced.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, Packet};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError};
use zilla_testkit::mqtt::v311;
use zilla_testkit::proxy::mqtt_host_yaml;
use zilla_testkit::{wait_for, Mosquitto, ZillaProcess};

const ZILLA: &str = env!("CARGO_BIN_EXE_zilla");
const TIMEOUT: Duration = Duration::from_secs(10);

/// A plain proxy in front of `broker`, its configuration in `dir`.
fn start(dir: &Path, broker: &Mosquitto, args: &[&str]) -> ZillaProcess {
    let config = dir.join("zilla.yaml");
    let yaml = mqtt_host_yaml(
        "admin-test",
        "    exit: mqtt_client_a",
        &[("a", broker.port())],
    );
    std::fs::write(&config, yaml).unwrap();
    ZillaProcess::start(Path::new(ZILLA), &config, &[], args).unwrap()
}

/// Runs `zilla <args>` against the host reached by `host` (its `-P`).
fn zilla(args: &[&str], host: &[String]) -> Output {
    Command::new(ZILLA).args(args).args(host).output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The sessions `zilla sessions --json` lists with client ids matching `glob`.
fn sessions(host: &[String], glob: &str) -> Vec<serde_json::Value> {
    let output = zilla(&["sessions", "--json", "--client-id", glob], host);
    assert!(output.status.success(), "{}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn socket_arg(path: &Path) -> Vec<String> {
    vec![
        "-P".into(),
        format!("zilla.engine.admin.socket={}", path.display()),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn disconnect_gives_an_mqtt_5_client_0x98_and_it_reconnects() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), &broker, &[]);
    let admin = host.admin_args();
    let port = host.port("north_tcp_server");

    let mut options = MqttOptions::new("device-kick", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(10));
    let (_client, mut events) = AsyncClient::new(options, 10);
    let connected = async {
        loop {
            if let Event::Incoming(Packet::ConnAck(_)) = events.poll().await.unwrap() {
                return;
            }
        }
    };
    tokio::time::timeout(TIMEOUT, connected).await.unwrap();

    let listed = sessions(&admin, "device-*");
    assert_eq!(listed.len(), 1, "{listed:#?}");
    let session = &listed[0];
    assert_eq!(session["client_id"], "device-kick");
    assert_eq!(session["binding"], "north_mqtt_server");
    assert_eq!(session["protocol"], "MQTT 5.0");
    assert_eq!(session["upstreams"], serde_json::json!(["mqtt_client_a"]));
    assert!(session["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(session["inflight_in"], 0);
    assert!(sessions(&admin, "other-*").is_empty());
    let table = zilla(&["sessions"], &admin);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.contains("device-kick") && table.contains("MQTT 5.0"),
        "{table}"
    );
    assert!(table.contains("1 session(s)"), "{table}");

    let kicked = zilla(&["disconnect", "device-kick"], &admin);
    assert!(kicked.status.success(), "{}", text(&kicked));
    assert!(String::from_utf8_lossy(&kicked.stdout).contains("disconnected 1 session(s)"));
    // The client reads DISCONNECT 0x98, then reconnects on its own.
    let told = async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Disconnect(disconnect))) => {
                    return disconnect.reason_code
                }
                Ok(_) => {}
                Err(ConnectionError::MqttState(StateError::ServerDisconnect {
                    reason_code,
                    ..
                })) => return reason_code,
                Err(error) => panic!("closed without DISCONNECT: {error}"),
            }
        }
    };
    let reason = tokio::time::timeout(TIMEOUT, told).await.unwrap();
    assert_eq!(reason, DisconnectReasonCode::AdministrativeAction);
    let reconnected = async {
        loop {
            if let Ok(Event::Incoming(Packet::ConnAck(_))) = events.poll().await {
                return;
            }
        }
    };
    tokio::time::timeout(TIMEOUT, reconnected).await.unwrap();
    wait_for("the reconnected session listed", TIMEOUT, || {
        (sessions(&admin, "device-kick").len() == 1).then_some(())
    })
    .unwrap();
    host.wait_for_stdout("MQTT_SESSION_DISCONNECTED", TIMEOUT)
        .unwrap();

    // Nobody with that id: said so, exit code 1.
    let nobody = zilla(&["disconnect", "device-none"], &admin);
    assert_eq!(nobody.status.code(), Some(1), "{}", text(&nobody));
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("no session with client id"));
}

#[test]
fn disconnect_closes_an_mqtt_3_1_1_connection() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), &broker, &[]);
    let admin = host.admin_args();
    let (mut stream, connack) = v311::connect(host.port("north_tcp_server"), "legacy-1").unwrap();
    assert_eq!(connack, v311::ACCEPTED);
    let listed = sessions(&admin, "legacy-1");
    assert_eq!(listed[0]["protocol"], "MQTT 3.1.1");
    let kicked = zilla(&["disconnect", "legacy-1"], &admin);
    assert!(kicked.status.success(), "{}", text(&kicked));
    // 3.1.1 has no server DISCONNECT: the connection just closes.
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}

/// `command` as uid and gid 65534 (nobody), through `setpriv` (as root) or
/// `sudo -n setpriv`.
fn as_nobody(command: &[&str]) -> Output {
    let root = std::fs::metadata("/proc/self").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    let mut run = if root.unwrap_or(false) {
        Command::new("setpriv")
    } else {
        let mut sudo = Command::new("sudo");
        sudo.args(["-n", "setpriv"]);
        sudo
    };
    run.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(command)
        .output()
        .unwrap_or_else(|e| panic!("setpriv (util-linux) is needed: {e}"))
}

#[test]
fn the_socket_refuses_another_user() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A socket in a directory anyone may enter, so only the socket decides.
    let open_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = open_dir.path().join("admin.sock");
    let property = format!("zilla.engine.admin.socket={}", socket.display());
    let host = start(dir.path(), &broker, &["-P", &property]);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");

    let refused = as_nobody(&[ZILLA, "sessions", "-P", &property]);
    assert!(!refused.status.success(), "{}", text(&refused));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("cannot reach a zilla host"), "{said}");
    assert!(said.contains("Permission denied"), "{said}");

    // Past the file's mode (as a careless chmod would let it), the host
    // still refuses by the peer's credentials.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let refused = as_nobody(&[ZILLA, "sessions", "-P", &property]);
    assert!(!refused.status.success(), "{}", text(&refused));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("refused: uid 65534 is not the host's user"),
        "{said}"
    );
    wait_for("the refusal on the host's stderr", TIMEOUT, || {
        let stderr = host.output().stderr;
        stderr
            .iter()
            .any(|l| l.contains("admin socket: refused a connection from uid 65534"))
            .then_some(())
    })
    .unwrap();
    // The host's own user is still served.
    let listed = zilla(&["sessions"], &socket_arg(&socket));
    assert!(listed.status.success(), "{}", text(&listed));
}

#[test]
fn hosts_with_their_own_sockets_do_not_disturb_each_other() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = ["a", "b", "c"]
        .iter()
        .map(|n| dir.path().join(format!("{n}.sock")))
        .collect();
    let properties: Vec<String> = paths
        .iter()
        .map(|p| format!("zilla.engine.admin.socket={}", p.display()))
        .collect();
    let configs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let hosts: Vec<ZillaProcess> = properties
        .iter()
        .zip(&configs)
        .map(|(property, config)| start(config.path(), &broker, &["-P", property]))
        .collect();
    let (_stream, connack) = v311::connect(hosts[1].port("north_tcp_server"), "only-b").unwrap();
    assert_eq!(connack, v311::ACCEPTED);
    let counts: Vec<usize> = paths
        .iter()
        .map(|p| sessions(&socket_arg(p), "*").len())
        .collect();
    assert_eq!(counts, [0, 1, 0]);

    // A fourth host naming a live host's socket runs without one, warned,
    // and leaves that host's socket answering.
    let fourth = start(configs[3].path(), &broker, &["-P", &properties[1]]);
    let warned = fourth
        .output()
        .stderr
        .iter()
        .any(|l| l.contains("another live host answers on it"));
    assert!(warned, "{:?}", fourth.output());
    assert_eq!(sessions(&socket_arg(&paths[1]), "*").len(), 1);
    drop(fourth);

    // A host killed outright leaves its socket file: the next replaces it.
    let mut hosts = hosts;
    let mut killed = hosts.remove(2);
    killed.signal("KILL").unwrap();
    killed.wait().unwrap();
    assert!(paths[2].exists());
    let mut replaced = start(configs[2].path(), &broker, &["-P", &properties[2]]);
    assert!(sessions(&socket_arg(&paths[2]), "*").is_empty());
    // A host that stops removes its socket.
    replaced.terminate(TIMEOUT).unwrap();
    assert!(!paths[2].exists());
}

#[test]
fn the_default_socket_is_under_the_working_directory() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("zilla.yaml");
    let yaml = mqtt_host_yaml(
        "admin-default",
        "    exit: mqtt_client_a",
        &[("a", broker.port())],
    );
    std::fs::write(&config, yaml).unwrap();
    let mut host = Command::new(ZILLA)
        .args(["start", "-c"])
        .arg(&config)
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let socket = dir.path().join(".zilla/admin.sock");
    wait_for("the default admin socket", TIMEOUT, || {
        socket.exists().then_some(())
    })
    .unwrap();
    let engine_dir = std::fs::metadata(dir.path().join(".zilla")).unwrap();
    assert_eq!(engine_dir.permissions().mode() & 0o777, 0o700);
    let listed = Command::new(ZILLA)
        .args(["sessions", "--json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(listed.status.success(), "{}", text(&listed));
    // Turned off by an empty value: the commands say so.
    let off = zilla(
        &["sessions"],
        &["-P".into(), "zilla.engine.admin.socket=".into()],
    );
    assert!(
        String::from_utf8_lossy(&off.stderr).contains("turned off"),
        "{}",
        text(&off)
    );
    host.kill().unwrap();
    host.wait().unwrap();
}
