//! Bursts: 10,000 QoS 1 and 10,000 QoS 2 publishes sent without waiting for
//! acknowledgements, through `tcp -> mqtt server -> mqtt client -> tcp` to a
//! mosquitto whose receive maximum (`max_inflight_messages`) is 20 or 1, by
//! the publishers that do this in the field: MQTT.js (a loop of un-awaited
//! `publish` calls, over 3.1.1 and 5), rumqttc over 3.1.1 with its default
//! in-flight setting (100), and a raw 3.1.1 client that pipelines every
//! publish while it reads the acknowledgements.
//!
//! Each test asserts that every publish is acknowledged, that a subscriber at
//! the broker receives every message once and in order, and that neither the
//! publisher nor the subscriber is disconnected. Each publisher ends with a
//! QoS 1 "end" marker, sent once every publish was acknowledged, so the
//! subscriber knows that nothing (not even a duplicate) follows.
//!
//! The `baseline_*` tests run the same bursts straight at a mosquitto without
//! a window (`max_inflight_messages 0`): they show that the publishers and the
//! subscriber are right, whatever the proxy does. With a window, mosquitto
//! itself refuses QoS 2 publishes beyond it (PUBREC 0x97, even to a 3.1.1
//! client, which cannot express it); that is why the proxy, which owns flow
//! control, must queue them instead.

use std::collections::HashSet;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout_at, Instant};

// Links every first-party plugin, as the host does.
use zilla as _;
use zilla_testkit::clients::{run_script, Library};
use zilla_testkit::mqtt::packets::{Packet, PubAck, PubAckReason, QoS};
use zilla_testkit::mqtt::{subscribe_packet, RawMqtt};
use zilla_testkit::proxy::{mqtt_proxy_yaml, Proxy};
use zilla_testkit::Mosquitto;

/// Publishes per burst.
const COUNT: usize = 10_000;
/// How long a publisher may take to have every publish acknowledged.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the subscriber may lag behind the publisher's last acknowledgement.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);
/// The payload that ends a burst.
const END: &[u8] = b"end";

/// Who sends the burst.
#[derive(Debug, Clone, Copy)]
enum Publisher {
    /// MQTT.js over MQTT 3.1.1 (4) or 5.
    MqttJs(u8),
    /// rumqttc over MQTT 3.1.1 with its default in-flight setting.
    Rumqttc,
    /// Raw MQTT 3.1.1 bytes.
    Raw311,
}

impl Publisher {
    fn name(self) -> String {
        match self {
            Publisher::MqttJs(4) => "MQTT.js over 3.1.1".into(),
            Publisher::MqttJs(v) => format!("MQTT.js over {v}"),
            Publisher::Rumqttc => "rumqttc over 3.1.1 (in flight: 100)".into(),
            Publisher::Raw311 => "a raw 3.1.1 client".into(),
        }
    }

    fn slug(self) -> String {
        match self {
            Publisher::MqttJs(v) => format!("mqttjs-v{v}"),
            Publisher::Rumqttc => "rumqttc".into(),
            Publisher::Raw311 => "raw311".into(),
        }
    }

    async fn burst(self, port: u16, topic: &str, qos: u8) -> PublisherReport {
        let client_id = format!("{}-burst-qos{qos}", self.slug());
        match self {
            Publisher::MqttJs(protocol) => {
                mqttjs_burst(port, protocol, topic, qos, &client_id).await
            }
            Publisher::Rumqttc => rumqttc_burst(port, topic, qos, &client_id).await,
            Publisher::Raw311 => raw311_burst(port, topic, qos, &client_id).await,
        }
    }
}

/// What a publisher saw.
#[derive(Debug, Default)]
struct PublisherReport {
    /// Publishes acknowledged (PUBACK for QoS 1, PUBCOMP for QoS 2), the end
    /// marker not included.
    acked: usize,
    /// Whether the end marker was acknowledged.
    end_acked: bool,
    /// Why the connection ended before the publisher ended it.
    disconnected: Option<String>,
    /// Anything else that went wrong: failure reason codes, duplicate or
    /// unexpected acknowledgements, timeouts.
    errors: Vec<String>,
}

/// Runs one burst through the proxy to a broker whose receive maximum is
/// `window`, and asserts the outcome.
async fn burst(publisher: Publisher, qos: u8, window: u16) {
    let broker = mosquitto_with_window(window).await;
    let proxy = Proxy::start(&mqtt_proxy_yaml(
        "    exit: mqtt_client_a",
        &[("a", broker.port())],
    ))
    .await;
    let topic = format!("burst/{}/qos{qos}/window{window}", publisher.slug());
    let path = format!("through the proxy to a broker whose receive maximum is {window}");
    run(publisher, qos, &broker, proxy.port, &topic, &path).await;
    proxy.engine.shutdown().await;
}

/// Runs one burst straight at a mosquitto without a window, as a control.
async fn baseline(publisher: Publisher, qos: u8) {
    let broker = Mosquitto::start_with("max_inflight_messages 0\nmax_queued_messages 0").unwrap();
    let topic = format!("baseline/{}/qos{qos}", publisher.slug());
    let path = "straight to a mosquitto without a window";
    run(publisher, qos, &broker, broker.port(), &topic, path).await;
}

/// `publisher` sends the burst to `port` while a subscriber at `broker`
/// collects it; fails the test with every problem seen.
async fn run(
    publisher: Publisher,
    qos: u8,
    broker: &Mosquitto,
    port: u16,
    topic: &str,
    path: &str,
) {
    let subscriber = Subscriber::start(broker.port(), topic).await;
    let started = Instant::now();
    let report = publisher.burst(port, topic, qos).await;
    let published = started.elapsed();
    let delivered = if report.disconnected.is_none() && report.end_acked {
        subscriber.wait_for_end(DELIVERY_TIMEOUT).await
    } else {
        subscriber.snapshot()
    };
    eprintln!(
        "{}, QoS {qos}, {path}: {} of {COUNT} acknowledged in {published:?}, {} delivered after \
         {:?}",
        publisher.name(),
        report.acked,
        delivered.payloads.len(),
        started.elapsed()
    );
    let problems = problems(&report, &delivered);
    assert!(
        problems.is_empty(),
        "{} sending {COUNT} QoS {qos} publishes without waiting, {path}:\n - {}",
        publisher.name(),
        problems.join("\n - ")
    );
}

/// A mosquitto whose receive maximum is `window`, with no limit on the
/// messages it queues for the subscriber.
async fn mosquitto_with_window(window: u16) -> Mosquitto {
    let broker = Mosquitto::start_with(&format!(
        "max_inflight_messages {window}\nmax_queued_messages 0"
    ))
    .unwrap();
    let (_probe, connack) = RawMqtt::connect(broker.port(), "window-probe").await;
    assert_eq!(
        connack.properties.and_then(|p| p.receive_max),
        Some(window),
        "mosquitto advertises the configured receive maximum"
    );
    broker
}

fn problems(report: &PublisherReport, delivered: &Delivered) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(reason) = &report.disconnected {
        problems.push(format!("the publisher was disconnected: {reason}"));
    }
    if report.acked != COUNT {
        problems.push(format!(
            "{} of {COUNT} publishes acknowledged",
            report.acked
        ));
    }
    if !report.end_acked {
        problems.push("the end marker was not acknowledged".into());
    }
    problems.extend(report.errors.iter().map(|e| format!("publisher: {e}")));
    if let Some(reason) = &delivered.closed {
        problems.push(format!("the subscriber was disconnected: {reason}"));
    }
    if let Err(problem) = in_order_once(&delivered.payloads) {
        problems.push(problem);
    }
    problems
}

/// Checks that `payloads` are "0" .. "COUNT - 1" and then the end marker.
fn in_order_once(payloads: &[Bytes]) -> Result<(), String> {
    let ended = payloads.last().is_some_and(|p| p == END);
    let messages = &payloads[..payloads.len() - usize::from(ended)];
    let expected: Vec<Bytes> = (0..COUNT).map(|i| Bytes::from(i.to_string())).collect();
    if ended && messages == expected.as_slice() {
        return Ok(());
    }
    let distinct: HashSet<&Bytes> = messages.iter().collect();
    let missing = expected.iter().filter(|e| !distinct.contains(e)).count();
    let first_difference = messages
        .iter()
        .zip(&expected)
        .position(|(got, want)| got != want)
        .map(|i| {
            format!(
                "; first out of place at #{i}: {:?} instead of {:?}",
                messages[i], expected[i]
            )
        })
        .unwrap_or_default();
    Err(format!(
        "the subscriber received {} messages ({} distinct, {missing} missing, {} duplicates){}{}",
        messages.len(),
        distinct.len(),
        messages.len() - distinct.len(),
        first_difference,
        if ended {
            ""
        } else {
            ", and not the end marker"
        }
    ))
}

/// What the subscriber received.
#[derive(Debug, Default, Clone)]
struct Delivered {
    payloads: Vec<Bytes>,
    closed: Option<String>,
}

/// A QoS 1 subscriber straight at the broker, acknowledging as it reads.
struct Subscriber {
    progress: watch::Receiver<Delivered>,
}

impl Subscriber {
    async fn start(broker_port: u16, topic: &str) -> Self {
        let (mut client, _) = RawMqtt::connect(broker_port, "burst-subscriber").await;
        client
            .send(&subscribe_packet(1, topic, QoS::AtLeastOnce))
            .await;
        match client.recv().await {
            Some(Packet::SubAck(_)) => {}
            other => panic!("expected SUBACK, got {other:?}"),
        }
        let (sender, progress) = watch::channel(Delivered::default());
        let mut stream = client.into_stream();
        tokio::spawn(async move {
            let mut buf = BytesMut::new();
            loop {
                match stream.read_buf(&mut buf).await {
                    Ok(0) => {
                        sender.send_modify(|d| d.closed = Some("the broker closed".into()));
                        return;
                    }
                    Err(error) => {
                        sender.send_modify(|d| d.closed = Some(error.to_string()));
                        return;
                    }
                    Ok(_) => {}
                }
                let mut acks = BytesMut::new();
                loop {
                    match Packet::read(&mut buf, None) {
                        Ok(Packet::Publish(publish)) => {
                            if publish.qos != QoS::AtMostOnce {
                                Packet::PubAck(PubAck {
                                    pkid: publish.pkid,
                                    reason: PubAckReason::Success,
                                    properties: None,
                                })
                                .write(&mut acks)
                                .expect("PUBACK encodes");
                            }
                            sender.send_modify(|d| d.payloads.push(publish.payload));
                        }
                        Ok(other) => {
                            sender.send_modify(|d| {
                                d.closed = Some(format!("unexpected packet {other:?}"))
                            });
                            return;
                        }
                        Err(zilla_testkit::mqtt::packets::Error::InsufficientBytes(_)) => break,
                        Err(error) => {
                            sender.send_modify(|d| d.closed = Some(format!("malformed: {error}")));
                            return;
                        }
                    }
                }
                if stream.write_all(&acks).await.is_err() {
                    sender.send_modify(|d| d.closed = Some("cannot write PUBACK".into()));
                    return;
                }
            }
        });
        Self { progress }
    }

    /// Waits until the end marker arrives, the connection closes, or `timeout`.
    async fn wait_for_end(mut self, timeout: Duration) -> Delivered {
        let ended =
            |d: &Delivered| d.closed.is_some() || d.payloads.last().is_some_and(|p| p == END);
        let _ = tokio::time::timeout(timeout, self.progress.wait_for(ended)).await;
        self.snapshot()
    }

    fn snapshot(&self) -> Delivered {
        self.progress.borrow().clone()
    }
}

async fn mqttjs_burst(
    port: u16,
    protocol: u8,
    topic: &str,
    qos: u8,
    client_id: &str,
) -> PublisherReport {
    let args = [
        ("--port", port.to_string()),
        ("--protocol", protocol.to_string()),
        ("--qos", qos.to_string()),
        ("--count", COUNT.to_string()),
        ("--topic", topic.to_owned()),
        ("--client-id", client_id.to_owned()),
        ("--timeout-ms", PUBLISH_TIMEOUT.as_millis().to_string()),
    ]
    .into_iter()
    .flat_map(|(name, value)| [name.to_owned(), value])
    .collect::<Vec<_>>();
    let command = Library::MqttJs
        .command("burst", &args)
        .unwrap_or_else(|error| panic!("{error}"));
    let run = run_script(command, PUBLISH_TIMEOUT + Duration::from_secs(10))
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let Some(done) = run.done() else {
        panic!(
            "the MQTT.js burst ended without a result\n{}",
            run.transcript()
        );
    };
    let mut report = PublisherReport {
        acked: done["acked"].as_u64().unwrap_or(0) as usize,
        end_acked: done["ok"] == true,
        ..PublisherReport::default()
    };
    if done["closed_early"] == true {
        let reason = match done["disconnect"].as_u64() {
            Some(code) => format!("after DISCONNECT {code:#04x}"),
            None => "without DISCONNECT".to_owned(),
        };
        report.disconnected = Some(format!("the connection closed {reason}"));
    }
    if let Some(errors) = done["errors"].as_array() {
        report.errors.extend(
            errors
                .iter()
                .map(|e| e.as_str().unwrap_or_default().to_owned()),
        );
        let more = done["error_count"].as_u64().unwrap_or(0) as usize;
        if more > errors.len() {
            report.errors.push(format!("... {} errors in all", more));
        }
    }
    if !run.status.success() && report.errors.is_empty() && report.disconnected.is_none() {
        report.errors.push(run.transcript());
    }
    report
}

async fn rumqttc_burst(port: u16, topic: &str, qos: u8, client_id: &str) -> PublisherReport {
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet as V4Packet};
    let qos = match qos {
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    };
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    // In flight stays at rumqttc's default: 100.
    let (client, mut events) = AsyncClient::new(options, 100);
    let publisher = {
        let (client, topic) = (client.clone(), topic.to_owned());
        tokio::spawn(async move {
            for i in 0..COUNT {
                client.publish(&topic, qos, false, i.to_string()).await?;
            }
            Ok::<(), rumqttc::ClientError>(())
        })
    };
    let deadline = Instant::now() + PUBLISH_TIMEOUT;
    let mut report = PublisherReport::default();
    let mut end_sent = false;
    loop {
        let event = match timeout_at(deadline, events.poll()).await {
            Err(_) => {
                report.errors.push(format!(
                    "timed out after {PUBLISH_TIMEOUT:?} with {} acknowledged",
                    report.acked
                ));
                break;
            }
            Ok(Err(error)) => {
                report.disconnected =
                    Some(format!("{error} after {} acknowledgements", report.acked));
                break;
            }
            Ok(Ok(event)) => event,
        };
        match event {
            Event::Incoming(V4Packet::PubAck(_)) if end_sent => {
                report.end_acked = true;
                let _ = client.try_disconnect();
            }
            Event::Incoming(V4Packet::PubAck(_)) if qos == rumqttc::QoS::AtLeastOnce => {
                report.acked += 1;
            }
            Event::Incoming(V4Packet::PubComp(_)) if qos == rumqttc::QoS::ExactlyOnce => {
                report.acked += 1;
            }
            Event::Incoming(
                packet @ (V4Packet::PubAck(_) | V4Packet::PubComp(_) | V4Packet::Disconnect),
            ) => {
                report.errors.push(format!("unexpected {packet:?}"));
            }
            Event::Outgoing(Outgoing::Disconnect) => break,
            _ => {}
        }
        if report.acked == COUNT && !end_sent {
            end_sent = true;
            if let Err(error) = client.try_publish(topic, rumqttc::QoS::AtLeastOnce, false, END) {
                report
                    .errors
                    .push(format!("cannot send the end marker: {error}"));
                break;
            }
        }
    }
    publisher.abort();
    report
}

/// Raw MQTT 3.1.1: CONNECT, then every PUBLISH (ids 1..=COUNT) written in
/// batches while the acknowledgements are read; PUBRELs go out ahead of the
/// publishes not yet written, as a client's control packets would.
async fn raw311_burst(port: u16, topic: &str, qos: u8, client_id: &str) -> PublisherReport {
    let mut report = PublisherReport::default();
    let deadline = Instant::now() + PUBLISH_TIMEOUT;
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("the proxy accepts connections");
    let _ = stream.set_nodelay(true);
    stream
        .write_all(&v311::connect(client_id))
        .await
        .expect("CONNECT is written");
    let mut buf = BytesMut::new();
    match timeout_at(deadline, v311::read(&mut stream, &mut buf)).await {
        Ok(Some((0x20, body))) if body.len() == 2 && body[1] == 0 => {}
        other => {
            report.disconnected = Some(format!("no CONNACK 0: {other:?}"));
            return report;
        }
    }
    let (mut reader, mut writer) = stream.into_split();
    let (control, mut controls) = mpsc::unbounded_channel::<Control>();
    let end_id = u16::try_from(COUNT + 1).expect("COUNT fits packet ids");
    let topic = topic.to_owned();
    let writing = tokio::spawn(async move {
        let mut next = 0usize;
        let mut out = BytesMut::new();
        loop {
            // Control packets first, ahead of the publishes not yet written.
            while let Ok(message) = controls.try_recv() {
                message.encode_into(&mut out, &topic, end_id);
            }
            while next < COUNT && out.len() < 16 * 1024 {
                next += 1;
                let id = u16::try_from(next).expect("ids fit");
                out.extend_from_slice(&v311::publish(
                    &topic,
                    qos,
                    id,
                    (next - 1).to_string().as_bytes(),
                ));
            }
            if out.is_empty() {
                match controls.recv().await {
                    Some(message) => message.encode_into(&mut out, &topic, end_id),
                    None => return Ok::<(), std::io::Error>(()),
                }
            }
            writer.write_all(&out).await?;
            out.clear();
        }
    });
    let mut acked: HashSet<u16> = HashSet::new();
    let mut received: HashSet<u16> = HashSet::new();
    let mut disconnect_sent = false;
    loop {
        let packet = match timeout_at(deadline, v311::read(&mut reader, &mut buf)).await {
            Err(_) => {
                report.errors.push(format!(
                    "timed out after {PUBLISH_TIMEOUT:?} with {} acknowledged",
                    acked.len()
                ));
                break;
            }
            Ok(None) if disconnect_sent => break,
            Ok(None) => {
                report.disconnected = Some(format!(
                    "the connection closed after {} acknowledgements",
                    acked.len()
                ));
                break;
            }
            Ok(Some(packet)) => packet,
        };
        let id = match packet.1.as_ref() {
            [high, low] => u16::from_be_bytes([*high, *low]),
            _ => {
                report.errors.push(format!("unexpected packet {packet:?}"));
                continue;
            }
        };
        match (packet.0, qos) {
            (0x40, _) if id == end_id => {
                report.end_acked = true;
                disconnect_sent = true;
                let _ = control.send(Control::Disconnect);
            }
            (0x40, 1) | (0x70, 2) => {
                if !(1..end_id).contains(&id) || !acked.insert(id) {
                    report
                        .errors
                        .push(format!("unexpected or repeated acknowledgement of {id}"));
                }
                if acked.len() == COUNT {
                    let _ = control.send(Control::End);
                }
            }
            (0x50, 2) => {
                if !received.insert(id) {
                    report.errors.push(format!("repeated PUBREC for {id}"));
                }
                let _ = control.send(Control::PubRel(id));
            }
            (other, _) => report
                .errors
                .push(format!("unexpected packet type {other:#04x} for {id}")),
        }
    }
    report.acked = acked.len();
    drop(control);
    writing.abort();
    report
}

/// What the raw client's reader asks its writer to send.
#[derive(Debug)]
enum Control {
    PubRel(u16),
    End,
    Disconnect,
}

impl Control {
    fn encode_into(self, out: &mut BytesMut, topic: &str, end_id: u16) {
        match self {
            Control::PubRel(id) => {
                out.put_slice(&[0x62, 0x02]);
                out.put_u16(id);
            }
            Control::End => out.put_slice(&v311::publish(topic, 1, end_id, END)),
            Control::Disconnect => out.put_slice(&[0xE0, 0x00]),
        }
    }
}

/// Just enough MQTT 3.1.1 for a publisher.
mod v311 {
    use super::*;

    fn remaining_length(out: &mut BytesMut, mut length: usize) {
        loop {
            let mut byte = (length % 128) as u8;
            length /= 128;
            if length > 0 {
                byte |= 0x80;
            }
            out.put_u8(byte);
            if length == 0 {
                return;
            }
        }
    }

    fn string(out: &mut BytesMut, value: &[u8]) {
        out.put_u16(u16::try_from(value.len()).expect("short strings"));
        out.put_slice(value);
    }

    /// CONNECT with clean session and keep-alive 30.
    pub(super) fn connect(client_id: &str) -> BytesMut {
        let mut body = BytesMut::new();
        string(&mut body, b"MQTT");
        body.put_u8(4);
        body.put_u8(0x02);
        body.put_u16(30);
        string(&mut body, client_id.as_bytes());
        let mut out = BytesMut::new();
        out.put_u8(0x10);
        remaining_length(&mut out, body.len());
        out.put_slice(&body);
        out
    }

    /// PUBLISH at `qos` (1 or 2) with packet id `id`.
    pub(super) fn publish(topic: &str, qos: u8, id: u16, payload: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        out.put_u8(0x30 | (qos << 1));
        remaining_length(&mut out, 2 + topic.len() + 2 + payload.len());
        string(&mut out, topic.as_bytes());
        out.put_u16(id);
        out.put_slice(payload);
        out
    }

    /// The next packet's first byte and body, or `None` at the end of the
    /// connection.
    pub(super) async fn read(
        stream: &mut (impl AsyncReadExt + Unpin),
        buf: &mut BytesMut,
    ) -> Option<(u8, Bytes)> {
        loop {
            if let Some((header, length)) = header(buf) {
                if buf.len() >= header + length {
                    let first = buf[0];
                    buf.advance(header);
                    return Some((first, buf.split_to(length).freeze()));
                }
            }
            match stream.read_buf(buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The fixed header's length and the remaining length, once complete.
    fn header(buf: &[u8]) -> Option<(usize, usize)> {
        let mut length = 0usize;
        for (i, byte) in buf.iter().enumerate().skip(1).take(4) {
            length |= usize::from(byte & 0x7F) << (7 * (i - 1));
            if byte & 0x80 == 0 {
                return Some((i + 1, length));
            }
        }
        None
    }
}

macro_rules! bursts {
    ($($name:ident: $publisher:expr, qos $qos:literal, window $window:literal;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                burst($publisher, $qos, $window).await;
            }
        )*
    };
}

bursts! {
    mqttjs_3_1_1_qos1_to_a_broker_window_of_20: Publisher::MqttJs(4), qos 1, window 20;
    mqttjs_3_1_1_qos1_to_a_broker_window_of_1: Publisher::MqttJs(4), qos 1, window 1;
    mqttjs_3_1_1_qos2_to_a_broker_window_of_20: Publisher::MqttJs(4), qos 2, window 20;
    mqttjs_3_1_1_qos2_to_a_broker_window_of_1: Publisher::MqttJs(4), qos 2, window 1;
    mqttjs_5_qos1_to_a_broker_window_of_20: Publisher::MqttJs(5), qos 1, window 20;
    mqttjs_5_qos1_to_a_broker_window_of_1: Publisher::MqttJs(5), qos 1, window 1;
    mqttjs_5_qos2_to_a_broker_window_of_20: Publisher::MqttJs(5), qos 2, window 20;
    mqttjs_5_qos2_to_a_broker_window_of_1: Publisher::MqttJs(5), qos 2, window 1;
    rumqttc_qos1_to_a_broker_window_of_20: Publisher::Rumqttc, qos 1, window 20;
    rumqttc_qos1_to_a_broker_window_of_1: Publisher::Rumqttc, qos 1, window 1;
    rumqttc_qos2_to_a_broker_window_of_20: Publisher::Rumqttc, qos 2, window 20;
    rumqttc_qos2_to_a_broker_window_of_1: Publisher::Rumqttc, qos 2, window 1;
    raw_3_1_1_qos1_to_a_broker_window_of_20: Publisher::Raw311, qos 1, window 20;
    raw_3_1_1_qos1_to_a_broker_window_of_1: Publisher::Raw311, qos 1, window 1;
    raw_3_1_1_qos2_to_a_broker_window_of_20: Publisher::Raw311, qos 2, window 20;
    raw_3_1_1_qos2_to_a_broker_window_of_1: Publisher::Raw311, qos 2, window 1;
}

macro_rules! baselines {
    ($($name:ident: $publisher:expr, qos $qos:literal;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                baseline($publisher, $qos).await;
            }
        )*
    };
}

baselines! {
    baseline_mqttjs_3_1_1_qos1_straight_to_mosquitto: Publisher::MqttJs(4), qos 1;
    baseline_mqttjs_3_1_1_qos2_straight_to_mosquitto: Publisher::MqttJs(4), qos 2;
    baseline_mqttjs_5_qos1_straight_to_mosquitto: Publisher::MqttJs(5), qos 1;
    baseline_mqttjs_5_qos2_straight_to_mosquitto: Publisher::MqttJs(5), qos 2;
    baseline_rumqttc_qos1_straight_to_mosquitto: Publisher::Rumqttc, qos 1;
    baseline_rumqttc_qos2_straight_to_mosquitto: Publisher::Rumqttc, qos 2;
    baseline_raw_3_1_1_qos1_straight_to_mosquitto: Publisher::Raw311, qos 1;
    baseline_raw_3_1_1_qos2_straight_to_mosquitto: Publisher::Raw311, qos 2;
}
