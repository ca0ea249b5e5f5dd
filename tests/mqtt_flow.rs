//! Flow control end to end: a subscriber that stops reading while a flood is
//! published to it holds a bounded amount in the proxy, and other clients'
//! round trips keep working meanwhile.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use zilla as _;
use zilla_testkit::mqtt::packets::{Packet, QoS};
use zilla_testkit::mqtt::{publish_packet, subscribe_packet, RawMqtt};
use zilla_testkit::proxy::{mqtt_proxy_yaml, wait_for_event, Proxy};
use zilla_testkit::Mosquitto;

/// The delivery buffer the proxy runs with in this test.
const DELIVERY_BUFFER: usize = 64 * 1024;

fn subscribe(filter: &str, qos: QoS) -> Packet {
    subscribe_packet(1, filter, qos)
}

async fn subscribed(port: u16, id: &str, filter: &str, qos: QoS) -> RawMqtt {
    let (mut client, _) = RawMqtt::connect(port, id).await;
    client.send(&subscribe(filter, qos)).await;
    assert!(matches!(client.recv().await, Some(Packet::SubAck(_))));
    client
}

/// Publishes `count` messages of 1 KiB to `topic` at the broker directly
/// with mosquitto_pub (one message per line, pipelined).
fn flood(broker: u16, topic: &str, qos: u8, count: usize) -> std::process::Child {
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.to_string(), "-t", topic])
        .args(["-q", &qos.to_string(), "-l", "-i", &format!("flood-{qos}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("mosquitto_pub runs (apt-get install mosquitto-clients)");
    let mut stdin = child.stdin.take().expect("piped");
    let line = format!("{}\n", "x".repeat(1023));
    std::thread::spawn(move || {
        for _ in 0..count {
            if stdin.write_all(line.as_bytes()).is_err() {
                return;
            }
        }
    });
    child
}

/// The numbers in a `MQTT_FLOW_PAUSED` event: bytes unwritten and queued.
fn held(event: &str) -> usize {
    let number = |after: &str| -> usize {
        let rest = &event[event.find(after).expect("field") + after.len()..];
        let digits: String = rest
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().expect("a number")
    };
    number("not reading;") + number("unwritten,")
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_holds_a_bounded_amount_in_the_proxy() {
    let broker = Mosquitto::start().unwrap();
    let proxy = Proxy::start(&mqtt_proxy_yaml(
        &format!(
            "    options:\n      flow:\n        delivery-buffer: {DELIVERY_BUFFER}\n    exit: mqtt_client_a"
        ),
        &[("a", broker.port())],
    ))
    .await;
    let before = rss_kib();
    // The slow subscriber: subscribes at QoS 1, then never reads again.
    let _slow = subscribed(proxy.port, "slow-1", "slow/#", QoS::AtLeastOnce).await;
    let mut qos0 = flood(broker.port(), "slow/0", 0, 50_000);
    let mut qos1 = flood(broker.port(), "slow/1", 1, 50_000);

    // The proxy notices, and says how much it holds for the session.
    let event = wait_for_event(&["MQTT_FLOW_PAUSED", "slow-1", "not reading"]).await;
    let holding = held(&event);
    assert!(
        holding <= DELIVERY_BUFFER + 16 * 1024,
        "the session holds {holding} bytes: {event}"
    );

    // Meanwhile another client's round trips work through the same proxy.
    let mut other = subscribed(proxy.port, "other-1", "other/#", QoS::AtLeastOnce).await;
    for n in 0..10u16 {
        other
            .send(&publish_packet(
                "other/x",
                QoS::AtLeastOnce,
                n + 1,
                vec![n as u8],
            ))
            .await;
        let mut got_message = false;
        let mut got_ack = false;
        while !(got_message && got_ack) {
            match other.recv().await {
                Some(Packet::Publish(p)) => {
                    assert_eq!(p.payload.as_ref(), &[n as u8]);
                    got_message = true;
                    other
                        .send(&Packet::PubAck(zilla_testkit::mqtt::packets::PubAck {
                            pkid: p.pkid,
                            reason: zilla_testkit::mqtt::packets::PubAckReason::Success,
                            properties: None,
                        }))
                        .await;
                }
                Some(Packet::PubAck(_)) => got_ack = true,
                other => panic!("round trip {n}: {other:?}"),
            }
        }
    }
    eprintln!(
        "slow consumer: proxy holds {holding} bytes for it; test process RSS {before} KiB before, {} KiB during the flood",
        rss_kib()
    );
    let _ = qos0.kill();
    let _ = qos1.kill();
    let _ = qos0.wait();
    let _ = qos1.wait();
    tokio::time::timeout(Duration::from_secs(10), proxy.engine.shutdown())
        .await
        .expect("the proxy shuts down with a stalled client");
}
