//! `zilla dump` (issue 29): a pcap of the MQTT bytes the mqtt server and
//! client bindings see, after TLS and WebSocket, read by Debian's `tshark`
//! (installed by `.ci/run`) with no settings: sessions over TLS and over
//! `wss` show their CONNECT, SUBSCRIBE and PUBLISH with topic and client
//! id; the password is not in the file; `--client-id` captures that client
//! only; and a dump whose reader does not read while another client floods
//! 50,000 QoS 0 messages loses packets (counted) instead of slowing the
//! flood, which arrives whole.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use zilla_testkit::clients::{run_script, ws_example_token, Library, WsExample};
use zilla_testkit::mqtt::v311;
use zilla_testkit::proxy::mqtt_host_yaml;
use zilla_testkit::{wait_for, Mosquitto, ZillaProcess};

const ZILLA: &str = env!("CARGO_BIN_EXE_zilla");
const TIMEOUT: Duration = Duration::from_secs(20);
const PASSWORD: &str = "dump-test-password-9f3a";

/// A running `zilla dump`, attached (it said so on stderr).
struct Dump {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

impl Dump {
    fn start(host: &[String], write: &str, filters: &[&str]) -> Self {
        let mut child = Command::new(ZILLA)
            .args(["dump", "-w", write])
            .args(filters)
            .args(host)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = lines(child.stderr.take().unwrap());
        let said = stderr
            .recv_timeout(TIMEOUT)
            .expect("zilla dump says it captures");
        assert!(said.contains("capturing to"), "{said}");
        Self { child, stderr }
    }

    /// Stops it as Ctrl-C would; its summary line.
    fn stop(self) -> String {
        self.stop_reading().0
    }

    /// Stops it as Ctrl-C would; its summary line and what it wrote to stdout.
    fn stop_reading(mut self) -> (String, Vec<u8>) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success());
        // Whatever it still writes to stdout is read, so it can finish.
        let mut stdout = self.child.stdout.take().unwrap();
        let drained = std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = stdout.read_to_end(&mut all);
            all
        });
        let summary = self.stderr.recv_timeout(TIMEOUT).expect("a summary");
        assert!(self.child.wait().unwrap().success(), "{summary}");
        (summary, drained.join().unwrap())
    }
}

fn lines(stderr: ChildStderr) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// (message type, topic, client id) of every MQTT packet tshark decodes.
fn tshark(file: &Path) -> Vec<(String, String, String)> {
    let output = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(["-Y", "mqtt", "-T", "fields"])
        .args([
            "-e",
            "mqtt.msgtype",
            "-e",
            "mqtt.topic",
            "-e",
            "mqtt.clientid",
        ])
        .args(["-E", "aggregator=;"])
        .output()
        .unwrap_or_else(|e| panic!("tshark (Debian's tshark package) is needed: {e}"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut packets = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let column = |i: usize| -> Vec<&str> {
            fields
                .get(i)
                .map(|f| f.split(';').collect())
                .unwrap_or_default()
        };
        let (types, topics, ids) = (column(0), column(1), column(2));
        for (i, kind) in types.iter().enumerate() {
            let topic = topics.get(i).copied().unwrap_or_default();
            let id = ids.get(i).copied().unwrap_or_default();
            packets.push((kind.to_string(), topic.to_owned(), id.to_owned()));
        }
    }
    packets
}

#[derive(Debug, Clone, Copy)]
enum Transport {
    Tls,
    Wss,
}

async fn dump_of(transport: Transport) {
    let broker = Mosquitto::start().unwrap();
    let example = WsExample::start(Path::new(ZILLA), &broker).unwrap();
    let host = example.zilla.admin_args();
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("dump-{transport:?}").to_lowercase();
    let all = dir.path().join("all.pcap");
    let one = dir.path().join("one.pcap");
    let all_dump = Dump::start(&host, all.to_str().unwrap(), &[]);
    let pub_id = format!("{prefix}-pub");
    let one_dump = Dump::start(&host, one.to_str().unwrap(), &["--client-id", &pub_id]);

    let token = ws_example_token();
    let url = match transport {
        Transport::Tls => format!("mqtts://localhost:{}", example.mqtts_port),
        Transport::Wss => example.wss_url(Some(&token)),
    };
    let args: Vec<String> = [
        ("url", url),
        ("ca", example.ca().display().to_string()),
        ("username", format!("Bearer {token}")),
        ("password", PASSWORD.to_owned()),
        ("protocol", "5".to_owned()),
        ("prefix", prefix.clone()),
    ]
    .into_iter()
    .flat_map(|(name, value)| [format!("--{name}"), value])
    .collect();
    let command = Library::Paho.command("conformance", &args).unwrap();
    let run = run_script(command, Duration::from_secs(60)).await.unwrap();
    assert!(run.failures().is_empty(), "{}", run.transcript());

    let sub_id = format!("{prefix}-sub");
    let topic = format!("{prefix}/qos/1");
    // Captured as they happen; the dump writes them within moments.
    let packets = wait_for("the session's packets in the dump", TIMEOUT, || {
        let packets = tshark(&all);
        let seen = |kind: &str, topic: &str, id: &str| {
            packets.iter().any(|p| {
                p.0 == kind && (topic.is_empty() || p.1 == topic) && (id.is_empty() || p.2 == id)
            })
        };
        (seen("1", "", &sub_id)
            && seen("8", "", "")
            && seen("3", &topic, "")
            && seen("1", "", &pub_id))
        .then_some(packets)
    })
    .unwrap_or_else(|e| panic!("{e}: {:#?}", tshark(&all)));
    let summary = all_dump.stop();
    assert!(summary.contains("packets captured"), "{summary}");
    let bytes = std::fs::read(&all).unwrap();
    let secret = PASSWORD.as_bytes();
    assert!(
        !bytes.windows(secret.len()).any(|w| w == secret),
        "the password is in the dump"
    );
    eprintln!("{transport:?}: {} MQTT packets, {summary}", packets.len());

    wait_for("the client's own packets", TIMEOUT, || {
        tshark(&one).iter().any(|p| p.0 == "3").then_some(())
    })
    .unwrap();
    one_dump.stop();
    let ids: Vec<String> = tshark(&one)
        .into_iter()
        .filter(|p| p.0 == "1")
        .map(|p| p.2)
        .collect();
    assert!(
        !ids.is_empty() && ids.iter().all(|id| *id == pub_id),
        "{ids:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_over_tls_is_dumped_decrypted() {
    dump_of(Transport::Tls).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_over_secure_websocket_is_dumped_unwrapped() {
    dump_of(Transport::Wss).await;
}

const FLOOD: usize = 50_000;
const TOPIC: &[u8] = b"flood/t";
const PAYLOAD: usize = 64;

/// One QoS 0 PUBLISH of the flood.
fn publish_frame() -> Vec<u8> {
    let mut frame = vec![
        0x30,
        (2 + TOPIC.len() + PAYLOAD) as u8,
        0,
        TOPIC.len() as u8,
    ];
    frame.extend_from_slice(TOPIC);
    frame.extend_from_slice(&[b'x'; PAYLOAD]);
    frame
}

/// Floods `FLOOD` messages from a new publisher through `port` to a
/// subscriber there; how long until the subscriber had them all.
fn flood(port: u16, round: usize) -> Duration {
    let (mut subscriber, connack) = v311::connect(port, &format!("flood-sub-{round}")).unwrap();
    assert_eq!(connack, v311::ACCEPTED);
    let mut subscribe = vec![0x82, (5 + TOPIC.len()) as u8, 0, 1, 0, TOPIC.len() as u8];
    subscribe.extend_from_slice(TOPIC);
    subscribe.push(0);
    subscriber.write_all(&subscribe).unwrap();
    let mut suback = [0u8; 5];
    subscriber.read_exact(&mut suback).unwrap();
    assert_eq!(suback, [0x90, 3, 0, 1, 0]);
    let frame = publish_frame();
    let all: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * FLOOD)
        .collect();
    let (mut publisher, connack) = v311::connect(port, &format!("flood-pub-{round}")).unwrap();
    assert_eq!(connack, v311::ACCEPTED);
    let started = std::time::SystemTime::now();
    let writer = std::thread::spawn(move || {
        publisher.write_all(&all).unwrap();
        publisher
    });
    let mut received = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while received < frame.len() * FLOOD {
        let n = subscriber.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "the subscriber's connection closed after {received} bytes"
        );
        received += n;
    }
    let elapsed = started.elapsed().unwrap();
    drop(writer.join().unwrap());
    assert_eq!(received, frame.len() * FLOOD);
    elapsed
}

#[test]
fn a_slow_dump_reader_loses_packets_instead_of_slowing_a_flood() {
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("zilla.yaml");
    let yaml = mqtt_host_yaml(
        "dump-flood",
        "    exit: mqtt_client_a",
        &[("a", broker.port())],
    );
    std::fs::write(&config, yaml).unwrap();
    let host = ZillaProcess::start(Path::new(ZILLA), &config, &[], &[]).unwrap();
    let port = host.port("north_tcp_server");
    let alone = flood(port, 0);
    // Its stdout is a pipe nobody reads until the flood is over.
    let dump = Dump::start(&host.admin_args(), "-", &[]);
    let dumped = flood(port, 1);
    let (summary, capture) = dump.stop_reading();
    eprintln!(
        "{FLOOD} messages: {alone:?} without a dump, {dumped:?} with a stalled one; {summary}"
    );
    let dropped: u64 = summary
        .split(", ")
        .nth(1)
        .and_then(|part| part.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no drop count in {summary}"));
    assert!(dropped > 0, "{summary}");
    // What was kept is whole frames on streams whose sequence numbers run
    // on: tshark sees no gap, and decodes MQTT.
    let file = dir.path().join("flood.pcap");
    std::fs::write(&file, &capture).unwrap();
    let gaps = Command::new("tshark")
        .arg("-r")
        .arg(&file)
        .args([
            "-Y",
            "tcp.analysis.lost_segment || tcp.analysis.ack_lost_segment",
        ])
        .output()
        .unwrap();
    assert!(gaps.status.success() && gaps.stdout.is_empty(), "{gaps:?}");
    let publishes = tshark(&file).iter().filter(|p| p.0 == "3").count();
    assert!(
        publishes > 0,
        "no PUBLISH decoded in the kept part of the dump"
    );
    let _ = TcpStream::connect(("127.0.0.1", port)).unwrap();
}
