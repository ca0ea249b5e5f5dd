//! `zilla start` with a tcp server -> tcp client configuration is a layer-4
//! proxy: real MQTT clients talk to a real mosquitto through it, both ways.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use zilla_testkit::{Mosquitto, ZillaProcess, TCP_PROXY_YAML};

const ZILLA: &str = env!("CARGO_BIN_EXE_zilla");
const TIMEOUT: Duration = Duration::from_secs(10);

fn start_proxy(dir: &Path, broker: &Mosquitto) -> ZillaProcess {
    let config = dir.join("zilla.yaml");
    std::fs::write(&config, TCP_PROXY_YAML).unwrap();
    ZillaProcess::start(Path::new(ZILLA), &config, &broker.env(), &["-w", "2"])
        .expect("zilla starts")
}

/// A `mosquitto_sub` child, killed if a test fails before it exits.
struct Subscriber {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Subscriber {
    /// Starts `mosquitto_sub -d` and waits for its SUBACK, so a publish made
    /// after this returns is certain to be delivered.
    fn start(port: u16, topic: &str, count: u32) -> Self {
        // stdbuf: mosquitto_sub block-buffers a piped stdout, hiding the SUBACK line.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub", "-d", "-h", "127.0.0.1"])
            .args(["-p", &port.to_string(), "-t", topic])
            .args(["-C", &count.to_string(), "-W", "20", "-q", "1"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub is installed");
        let (sender, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let subscriber = Self { child, lines };
        loop {
            let line = subscriber
                .lines
                .recv_timeout(TIMEOUT)
                .expect("mosquitto_sub reports its SUBACK");
            if line.contains("received SUBACK") {
                return subscriber;
            }
        }
    }

    fn next_message(&self) -> String {
        next_message(&self.lines)
    }

    fn finished(mut self) -> bool {
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn next_message(received: &mpsc::Receiver<String>) -> String {
    loop {
        let line = received.recv_timeout(TIMEOUT).expect("a message arrives");
        // `-d` prints protocol lines such as "Client ... received PUBLISH"; the
        // payload is the line that is not one of them.
        if !line.starts_with("Client ") && !line.starts_with("Subscribed") {
            return line;
        }
    }
}

fn publish(port: u16, topic: &str, message: &str) {
    let status = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            topic,
            "-m",
            message,
            "-q",
            "1",
        ])
        .status()
        .expect("mosquitto_pub is installed");
    assert!(status.success(), "mosquitto_pub exited with {status}");
}

#[test]
fn mosquitto_clients_publish_and_subscribe_through_the_proxy() {
    let broker = Mosquitto::start().expect("mosquitto starts");
    let dir = tempfile::tempdir().unwrap();
    let mut zilla = start_proxy(dir.path(), &broker);
    let proxy = zilla.port("north_tcp_server");

    // Subscriber behind the proxy, publisher direct: broker -> proxy -> client.
    let sub = Subscriber::start(proxy, "zilla/down", 1);
    publish(broker.port(), "zilla/down", "Hello, downstream");
    assert_eq!(sub.next_message(), "Hello, downstream");
    assert!(sub.finished());

    // Subscriber direct, publisher behind the proxy: client -> proxy -> broker.
    let sub = Subscriber::start(broker.port(), "zilla/up", 1);
    publish(proxy, "zilla/up", "Hello, upstream");
    assert_eq!(sub.next_message(), "Hello, upstream");
    assert!(sub.finished());

    let (status, output) = zilla.terminate(TIMEOUT).unwrap();
    assert!(status.success(), "{output:?}");
}

#[test]
fn rumqttc_round_trip_through_the_proxy() {
    let broker = Mosquitto::start().expect("mosquitto starts");
    let dir = tempfile::tempdir().unwrap();
    let zilla = start_proxy(dir.path(), &broker);
    let proxy = zilla.port("north_tcp_server");

    let mut options = MqttOptions::new("through-proxy", "127.0.0.1", proxy);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = Client::new(options, 10);
    client.subscribe("zilla/echo", QoS::AtLeastOnce).unwrap();
    let mut payloads = Vec::new();
    let mut published = false;
    while payloads.len() < 3 {
        let event = connection
            .recv_timeout(TIMEOUT)
            .expect("the connection makes progress")
            .expect("the connection stays up");
        match event {
            Event::Incoming(Packet::SubAck(_)) if !published => {
                published = true;
                for i in 0..3u8 {
                    let payload = vec![i; 4096];
                    client
                        .publish("zilla/echo", QoS::AtLeastOnce, false, payload)
                        .unwrap();
                }
            }
            Event::Incoming(Packet::Publish(publish)) => payloads.push(publish.payload),
            _ => {}
        }
    }
    for (i, payload) in payloads.iter().enumerate() {
        assert_eq!(payload.as_ref(), vec![i as u8; 4096].as_slice());
    }
}
