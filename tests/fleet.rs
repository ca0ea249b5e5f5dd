//! The fleet: two proxy replicas (two `zilla` hosts, each `tcp server ->
//! mqtt server -> mqtt client (v3.1.1) -> tcp client`) in front of a real
//! clustered broker, a three-node NATS cluster whose MQTT sessions and QoS 1
//! messages live in JetStream streams replicated on every node. Clients speak
//! MQTT 5 and 3.1.1 to the replicas; NATS speaks MQTT 3.1.1 only.
//!
//! What the fleet promises: messages cross replicas at QoS 0 and 1, and a
//! PUBACK means the cluster has stored the message; a client id connecting
//! through the other replica ends the first session (NATS closes the first
//! upstream, the proxy closes its client); and a node killed outright loses
//! no acknowledged message of a persistent session, whose client reconnects
//! through its replica to a live node.
//!
//! Needs `nats-server` (`.ci/run` installs Debian's); without it these tests
//! fail, they never skip.

use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::{self, v4};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use zilla as _;
use zilla_testkit::mqtt::packets::{
    ConnAck, ConnectProperties, ConnectReturnCode, Disconnect, DisconnectReasonCode, Packet,
    PubAck, PubAckReason, QoS,
};
use zilla_testkit::mqtt::{connect_packet, publish_packet, subscribe_packet, RawMqtt};
use zilla_testkit::{wait_for, NatsCluster, ZillaProcess};

/// How long one expected packet may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long the cluster may take to elect new leaders after losing a node
/// (NATS's Raft election timeouts are a few seconds).
const RECOVERY: Duration = Duration::from_secs(30);
/// Replica A and replica B, as indexes into [`Fleet::ports`].
const A: usize = 0;
const B: usize = 1;

/// The NATS cluster and the two replicas in front of it.
struct Fleet {
    cluster: NatsCluster,
    replicas: [ZillaProcess; 2],
    /// The MQTT port of replica A and of replica B.
    ports: [u16; 2],
    _dir: tempfile::TempDir,
}

impl Fleet {
    /// Starts the cluster, then the replicas, each listing every node's
    /// MQTT port (A from `n0`, B from `n1`), which its tcp client takes in
    /// turn, skipping one that failed.
    fn start() -> Self {
        let cluster = NatsCluster::start().unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().expect("a temporary directory");
        let nodes = cluster.mqtt_ports();
        let replicas = [A, B].map(|replica| {
            let mut order = nodes.clone();
            order.rotate_left(replica);
            let config = dir.path().join(format!("replica-{replica}.yaml"));
            std::fs::write(&config, replica_yaml(replica, &order)).expect("config written");
            ZillaProcess::start(Path::new(env!("CARGO_BIN_EXE_zilla")), &config, &[], &[])
                .unwrap_or_else(|e| panic!("replica {replica} starts: {e}"))
        });
        let ports = [A, B].map(|r| replicas[r].port("north_tcp_server"));
        Self {
            cluster,
            replicas,
            ports,
            _dir: dir,
        }
    }

    /// What the replicas printed and the nodes logged, for failure messages.
    fn diagnostics(&self) -> String {
        let replicas = [A, B].map(|r| self.replicas[r].output().stdout.join("\n"));
        format!(
            "--- replica A ---\n{}\n--- replica B ---\n{}\n{}",
            replicas[A],
            replicas[B],
            self.cluster.logs()
        )
    }
}

/// One replica: MQTT 3.1.1 and 5 from clients, MQTT 3.1.1 to the nodes'
/// MQTT ports `nodes` (the tcp client's `hosts`).
fn replica_yaml(replica: usize, nodes: &[u16]) -> String {
    let name = ["a", "b"][replica];
    let hosts: Vec<String> = nodes
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    let hosts = hosts.join(", ");
    format!(
        "
name: fleet-{name}
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: {{ host: 127.0.0.1, port: 0 }}
    exit: north_mqtt_server
  north_mqtt_server:
    type: mqtt
    kind: server
    exit: south_mqtt_client
  south_mqtt_client:
    type: mqtt
    kind: client
    options:
      version: v3.1.1
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options:
      hosts: [{hosts}]
telemetry:
  exporters:
    stdout_logs_exporter:
      type: stdout
"
    )
}

/// A raw MQTT 3.1.1 client (rumqttc's codec), for exact control of what is
/// sent and exact knowledge of what arrives, the end of the connection included.
struct V311 {
    stream: TcpStream,
    buf: BytesMut,
}

impl V311 {
    /// Connects through `port`; the connection and its CONNACK, or why not.
    async fn connect(
        port: u16,
        client_id: &str,
        clean: bool,
    ) -> Result<(Self, v4::ConnAck), String> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let mut client = Self {
            stream,
            buf: BytesMut::new(),
        };
        let mut connect = v4::Connect::new(client_id);
        connect.keep_alive = 30;
        connect.clean_session = clean;
        client.write(|out| connect.write(out)).await;
        match timeout(TIMEOUT, client.recv()).await {
            Ok(Some(v4::Packet::ConnAck(ack))) => Ok((client, ack)),
            other => Err(format!("{client_id}: expected CONNACK, got {other:?}")),
        }
    }

    async fn write(
        &mut self,
        encode: impl FnOnce(&mut BytesMut) -> Result<usize, mqttbytes::Error>,
    ) {
        let mut out = BytesMut::new();
        encode(&mut out).expect("test packets encode");
        // The peer may have closed already; the next recv tells.
        let _ = self.stream.write_all(&out).await;
    }

    async fn subscribe(&mut self, pkid: u16, filter: &str) {
        let mut subscribe = v4::Subscribe::new(filter, mqttbytes::QoS::AtLeastOnce);
        subscribe.pkid = pkid;
        self.write(|out| subscribe.write(out)).await;
        match timeout(TIMEOUT, self.recv()).await {
            Ok(Some(v4::Packet::SubAck(ack))) => assert_eq!(
                ack.return_codes,
                [v4::SubscribeReasonCode::Success(
                    mqttbytes::QoS::AtLeastOnce
                )]
            ),
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    async fn publish(&mut self, topic: &str, qos: mqttbytes::QoS, pkid: u16, payload: &str) {
        let mut publish = v4::Publish::new(topic, qos, payload);
        publish.pkid = pkid;
        self.write(|out| publish.write(out)).await;
    }

    /// The next packet, or `None` once the connection is closed; callers
    /// bound the wait with a timeout.
    async fn recv(&mut self) -> Option<v4::Packet> {
        loop {
            match v4::read(&mut self.buf, 1 << 20) {
                Ok(packet) => return Some(packet),
                Err(mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(error) => panic!("the proxy sent a malformed 3.1.1 packet: {error}"),
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }
}

/// An MQTT 5 CONNECT; persistent: clean start false and a session expiry.
fn connect_v5(client_id: &str, persistent: bool) -> Packet {
    let properties = persistent.then(|| ConnectProperties {
        session_expiry_interval: Some(300),
        ..ConnectProperties::new()
    });
    connect_packet(client_id, !persistent, properties)
}

/// Connects an MQTT 5 client through `port`; the connection and its CONNACK.
async fn connect_v5_through(port: u16, client_id: &str, persistent: bool) -> (RawMqtt, ConnAck) {
    let mut client = RawMqtt::open(port).await;
    client.send(&connect_v5(client_id, persistent)).await;
    match client.recv().await {
        Some(Packet::ConnAck(ack)) => (client, ack),
        other => panic!("{client_id}: expected CONNACK, got {other:?}"),
    }
}

/// A message as a subscriber saw it.
#[derive(Debug, Clone)]
struct Delivery {
    topic: String,
    payload: String,
    qos: u8,
}

/// A subscriber of either version; QoS 1 deliveries are acknowledged.
enum Subscriber {
    V5(RawMqtt),
    V311(V311),
}

impl Subscriber {
    /// The next delivery; `Ok(None)` when nothing came within `within`;
    /// `Err` naming the DISCONNECT, if any, when the connection ended.
    async fn next(&mut self, within: Duration) -> Result<Option<Delivery>, String> {
        let deadline = Instant::now() + within;
        loop {
            let Ok(packet) = tokio::time::timeout_at(deadline, self.recv()).await else {
                return Ok(None);
            };
            match packet {
                Received::Publish(delivery, pkid) => {
                    if delivery.qos == 1 {
                        self.ack(pkid).await;
                    }
                    return Ok(Some(delivery));
                }
                Received::Other => {}
                Received::Ended(why) => return Err(why),
            }
        }
    }

    async fn recv(&mut self) -> Received {
        match self {
            Subscriber::V5(client) => match client.recv().await {
                Some(Packet::Publish(p)) => Received::Publish(
                    Delivery {
                        topic: p.topic.to_string(),
                        payload: String::from_utf8_lossy(&p.payload).into(),
                        qos: p.qos as u8,
                    },
                    p.pkid,
                ),
                Some(Packet::Disconnect(d)) => Received::Ended(format!("DISCONNECT {d:?}")),
                Some(_) => Received::Other,
                None => Received::Ended("connection closed".into()),
            },
            Subscriber::V311(client) => match client.recv().await {
                Some(v4::Packet::Publish(p)) => Received::Publish(
                    Delivery {
                        topic: p.topic.clone(),
                        payload: String::from_utf8_lossy(&p.payload).into(),
                        qos: p.qos as u8,
                    },
                    p.pkid,
                ),
                Some(_) => Received::Other,
                None => Received::Ended("connection closed".into()),
            },
        }
    }

    async fn ack(&mut self, pkid: u16) {
        match self {
            Subscriber::V5(client) => {
                let ack = PubAck {
                    pkid,
                    reason: PubAckReason::Success,
                    properties: None,
                };
                client.send(&Packet::PubAck(ack)).await;
            }
            Subscriber::V311(client) => client.write(|out| v4::PubAck::new(pkid).write(out)).await,
        }
    }

    /// Receives until every payload of `missing` has arrived, removing each
    /// as it does and skipping others and duplicates; `Err` when the
    /// connection ends first; fails naming what is missing after `within`.
    async fn receive(
        &mut self,
        missing: &mut Vec<String>,
        within: Duration,
    ) -> Result<Vec<Delivery>, String> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        while !missing.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await? {
                Some(delivery) => {
                    if let Some(at) = missing.iter().position(|m| *m == delivery.payload) {
                        missing.remove(at);
                        seen.push(delivery);
                    }
                }
                None => panic!("missing {missing:?} after {within:?} (got {seen:?})"),
            }
        }
        Ok(seen)
    }

    /// Receives every payload of `expected` (see [`receive`](Self::receive)).
    async fn receive_all(&mut self, expected: &[String], within: Duration) -> Vec<Delivery> {
        let mut missing = expected.to_vec();
        self.receive(&mut missing, within)
            .await
            .unwrap_or_else(|why| panic!("{why} before {missing:?} arrived"))
    }

    /// Waits until the proxy ends the connection; what it said first. An
    /// MQTT 5 client must get a DISCONNECT before the close.
    async fn told(self) -> String {
        match self {
            Subscriber::V5(mut client) => match client.closed().await {
                Some(disconnect) => format!("DISCONNECT {disconnect:?}"),
                None => panic!("the connection closed without a DISCONNECT"),
            },
            Subscriber::V311(mut client) => {
                while timeout(TIMEOUT, client.recv())
                    .await
                    .expect("the connection closes in time")
                    .is_some()
                {}
                "connection closed".into()
            }
        }
    }
}

enum Received {
    Publish(Delivery, u16),
    Other,
    Ended(String),
}

/// Publishes QoS 0 probes on `topic` through `publisher` until `subscriber`
/// gets one: NATS tells other nodes of a subscription asynchronously, so a
/// QoS 0 message sent right after a SUBACK may meet a node that does not
/// know of it yet (QoS 1 goes through JetStream and needs no such wait).
async fn until_routed(subscriber: &mut Subscriber, publisher: &mut V311, topic: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        assert!(Instant::now() < deadline, "no probe on {topic} arrived");
        publisher
            .publish(topic, mqttbytes::QoS::AtMostOnce, 0, "probe")
            .await;
        // Polling interval: the probe's arrival decides.
        if let Ok(Some(d)) = subscriber.next(Duration::from_millis(100)).await {
            if d.topic == topic {
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_replicas_at_qos_0_and_1_and_are_stored_before_their_puback() {
    let started = Instant::now();
    let fleet = Fleet::start();
    println!("cluster and replicas ready in {:?}", started.elapsed());
    let topic = "fleet/cross/#";

    // A persistent session that subscribes and leaves: the cluster keeps
    // every QoS 1 message for it in `$MQTT_msgs` until it comes back.
    let (mut archive, _) = connect_v5_through(fleet.ports[A], "fleet-archive", true).await;
    archive
        .send(&subscribe_packet(1, topic, QoS::AtLeastOnce))
        .await;
    assert!(matches!(archive.recv().await, Some(Packet::SubAck(_))));
    archive
        .send(&Packet::Disconnect(Disconnect::new(
            DisconnectReasonCode::NormalDisconnection,
        )))
        .await;
    assert!(
        archive.recv().await.is_none(),
        "the proxy closes after DISCONNECT"
    );

    // An MQTT 5 subscriber through A, a 3.1.1 subscriber through B.
    let (mut v5, ack) = connect_v5_through(fleet.ports[A], "fleet-sub-5", false).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    v5.send(&subscribe_packet(1, topic, QoS::AtLeastOnce)).await;
    assert!(matches!(v5.recv().await, Some(Packet::SubAck(_))));
    let (mut v311, ack) = V311::connect(fleet.ports[B], "fleet-sub-3", true)
        .await
        .unwrap();
    assert_eq!(ack.code, v4::ConnectReturnCode::Success);
    v311.subscribe(1, topic).await;
    let mut subscribers = [Subscriber::V5(v5), Subscriber::V311(v311)];
    for (subscriber, through) in subscribers.iter_mut().zip([B, A]) {
        let (mut prober, _) = V311::connect(
            fleet.ports[through],
            &format!("fleet-prober-{through}"),
            true,
        )
        .await
        .unwrap();
        until_routed(subscriber, &mut prober, "fleet/cross/probe").await;
    }

    // rumqttc over 3.1.1 through B: QoS 0, then QoS 1, whose PUBACK means
    // the cluster has stored the message (the proxy relays NATS's PUBACK,
    // which NATS sends once JetStream has it).
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet as V4Packet};
    let options = MqttOptions::new("fleet-pub-3", "127.0.0.1", fleet.ports[B]);
    let (client, mut events) = AsyncClient::new(options, 10);
    let qos0 = rumqttc::QoS::AtMostOnce;
    client
        .publish("fleet/cross/3", qos0, false, "zero over 3.1.1")
        .await
        .unwrap();
    let qos1 = rumqttc::QoS::AtLeastOnce;
    client
        .publish("fleet/cross/3", qos1, false, "one over 3.1.1")
        .await
        .unwrap();
    loop {
        match timeout(TIMEOUT, events.poll()).await {
            Ok(Ok(Event::Incoming(V4Packet::PubAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!(
                "rumqttc: expected its PUBACK, got {other:?}\n{}",
                fleet.diagnostics()
            ),
        }
    }
    let stored = fleet.cluster.stream_messages("$MQTT_msgs").unwrap();
    assert_eq!(
        stored, 1,
        "the cluster stored the message before its PUBACK"
    );

    // A raw MQTT 5 client through A, the same way.
    let (mut publisher, _) = connect_v5_through(fleet.ports[A], "fleet-pub-5", false).await;
    let zero = publish_packet("fleet/cross/5", QoS::AtMostOnce, 0, &b"zero over 5"[..]);
    publisher.send(&zero).await;
    let one = publish_packet("fleet/cross/5", QoS::AtLeastOnce, 7, &b"one over 5"[..]);
    publisher.send(&one).await;
    match publisher.recv().await {
        Some(Packet::PubAck(ack)) => {
            assert_eq!((ack.pkid, ack.reason), (7, PubAckReason::Success))
        }
        other => panic!("expected the PUBACK, got {other:?}"),
    }
    let stored = fleet.cluster.stream_messages("$MQTT_msgs").unwrap();
    assert_eq!(
        stored, 2,
        "the cluster stored the message before its PUBACK"
    );

    // Both subscribers get all four, each at the QoS it was published with.
    let all = [
        "zero over 3.1.1",
        "one over 3.1.1",
        "zero over 5",
        "one over 5",
    ]
    .map(String::from);
    for (name, subscriber) in ["MQTT 5 via A", "3.1.1 via B"].iter().zip(&mut subscribers) {
        for delivery in subscriber.receive_all(&all, TIMEOUT).await {
            let expected_qos = u8::from(delivery.payload.starts_with("one"));
            assert_eq!(delivery.qos, expected_qos, "{name}: {delivery:?}");
        }
    }

    // The persistent session comes back through the other replica and gets
    // the QoS 1 messages the cluster kept for it.
    let (archive, ack) = connect_v5_through(fleet.ports[B], "fleet-archive", true).await;
    assert!(ack.session_present, "the cluster kept the session: {ack:?}");
    let kept = ["one over 3.1.1", "one over 5"].map(String::from);
    Subscriber::V5(archive).receive_all(&kept, TIMEOUT).await;
    println!("messages crossed replicas in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_connecting_through_the_other_replica_ends_the_first_session() {
    let started = Instant::now();
    let fleet = Fleet::start();

    // MQTT 3.1.1: the first connection is closed (3.1.1 has no DISCONNECT
    // from servers), the second works.
    let (mut first, _) = V311::connect(fleet.ports[A], "fleet-twin-3", true)
        .await
        .unwrap();
    let (mut second, ack) = V311::connect(fleet.ports[B], "fleet-twin-3", true)
        .await
        .unwrap();
    assert_eq!(ack.code, v4::ConnectReturnCode::Success);
    let mut before_close = Vec::new();
    loop {
        match timeout(TIMEOUT, first.recv()).await {
            Ok(Some(packet)) => before_close.push(packet),
            Ok(None) => break,
            Err(_) => panic!("the first 3.1.1 session lives on\n{}", fleet.diagnostics()),
        }
    }
    println!("3.1.1 session taken over: {before_close:?}, then the connection closed");
    second.subscribe(1, "fleet/twin/3").await;
    second
        .publish("fleet/twin/3", mqttbytes::QoS::AtLeastOnce, 2, "still here")
        .await;
    let mut second = Subscriber::V311(second);
    second.receive_all(&["still here".into()], TIMEOUT).await;

    // MQTT 5: the first client is told with a DISCONNECT before the close.
    let (mut first, _) = connect_v5_through(fleet.ports[A], "fleet-twin-5", false).await;
    let (mut second, ack) = connect_v5_through(fleet.ports[B], "fleet-twin-5", false).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let disconnect = first.closed().await;
    println!("MQTT 5 session taken over: {disconnect:?}");
    let reason = disconnect
        .unwrap_or_else(|| panic!("no DISCONNECT before the close\n{}", fleet.diagnostics()))
        .reason_code;
    assert!(
        matches!(
            reason,
            DisconnectReasonCode::SessionTakenOver | DisconnectReasonCode::UnspecifiedError
        ),
        "{reason:?}"
    );
    second
        .send(&subscribe_packet(1, "fleet/twin/5", QoS::AtLeastOnce))
        .await;
    assert!(matches!(second.recv().await, Some(Packet::SubAck(_))));
    let publish = publish_packet("fleet/twin/5", QoS::AtLeastOnce, 3, &b"still here"[..]);
    second.send(&publish).await;
    Subscriber::V5(second)
        .receive_all(&["still here".into()], TIMEOUT)
        .await;
    println!("takeovers checked in {:?}", started.elapsed());
}

/// Publishes each of `payloads` at QoS 1 as a 3.1.1 client, each on a
/// fresh connection through the next of `ports` in turn, connecting again
/// and sending again when the connection ends or no PUBACK comes within 5 s,
/// as a client does; prints what went wrong on the way.
async fn publish_through_failures(ports: &[u16], topic: &str, payloads: &[String]) {
    let deadline = Instant::now() + RECOVERY;
    let mut trouble = Vec::new();
    for (index, payload) in payloads.iter().enumerate() {
        let port = ports[index % ports.len()];
        let client_id = format!("fleet-publisher-{index}");
        while let Err(why) = publish_once(port, &client_id, topic, payload).await {
            trouble.push(format!("{payload}: {why}"));
            assert!(
                Instant::now() < deadline,
                "not acknowledged in {RECOVERY:?}: {trouble:?}"
            );
        }
    }
    println!("published {}; on the way: {trouble:?}", payloads.len());
}

/// One QoS 1 publish on a fresh 3.1.1 connection (clean session); `Ok`
/// once it is acknowledged.
async fn publish_once(
    port: u16,
    client_id: &str,
    topic: &str,
    payload: &str,
) -> Result<(), String> {
    let (mut client, ack) = V311::connect(port, client_id, true).await?;
    if ack.code != v4::ConnectReturnCode::Success {
        return Err(format!("CONNACK {:?}", ack.code));
    }
    client
        .publish(topic, mqttbytes::QoS::AtLeastOnce, 1, payload)
        .await;
    match timeout(Duration::from_secs(5), client.recv()).await {
        Ok(Some(v4::Packet::PubAck(ack))) if ack.pkid == 1 => {
            client.write(|out| v4::Disconnect.write(out)).await;
            Ok(())
        }
        other => Err(format!("{other:?}")),
    }
}

/// Connects a persistent MQTT 5 client through `port` until it gets CONNACK
/// 0 (while the cluster recovers, attempts may be refused or time out).
async fn reconnect_v5(port: u16, client_id: &str) -> (RawMqtt, ConnAck) {
    let deadline = Instant::now() + RECOVERY;
    let mut trouble = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "{client_id} did not reconnect: {trouble:?}"
        );
        let mut client = RawMqtt::open(port).await;
        client.send(&connect_v5(client_id, true)).await;
        match timeout(Duration::from_secs(5), client.recv()).await {
            Ok(Some(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {
                println!("{client_id} reconnected; on the way: {trouble:?}");
                return (client, ack);
            }
            other => trouble.push(format!("{other:?}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_no_acknowledged_message_of_a_persistent_session() {
    let started = Instant::now();
    let mut fleet = Fleet::start();
    let topic = "fleet/kill/data";

    // A persistent MQTT 5 subscriber through A, a persistent 3.1.1
    // subscriber through B; a message reaches both.
    let (mut keeper, ack) = connect_v5_through(fleet.ports[A], "fleet-keeper-5", true).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    keeper
        .send(&subscribe_packet(1, "fleet/kill/#", QoS::AtLeastOnce))
        .await;
    assert!(matches!(keeper.recv().await, Some(Packet::SubAck(_))));
    let (mut other, _) = V311::connect(fleet.ports[B], "fleet-keeper-3", false)
        .await
        .unwrap();
    other.subscribe(1, "fleet/kill/#").await;
    let (mut keeper, mut other) = (Subscriber::V5(keeper), Subscriber::V311(other));
    let before = ["before the kill".to_owned()];
    publish_through_failures(&[fleet.ports[B]], topic, &before).await;
    keeper.receive_all(&before, TIMEOUT).await;
    other.receive_all(&before, TIMEOUT).await;

    // SIGKILL the node carrying the MQTT 5 subscriber's upstream, made to
    // lead the streams of MQTT messages and sessions first: the cluster
    // then has to elect new leaders before it takes publishes again.
    let on = |fleet: &Fleet, id: &str| {
        wait_for(&format!("the node of {id}"), TIMEOUT, || {
            fleet.cluster.node_of_mqtt_client(id)
        })
        .unwrap()
    };
    let node = on(&fleet, "fleet-keeper-5");
    let other_told = on(&fleet, "fleet-keeper-3") == node;
    for stream in ["$MQTT_msgs", "$MQTT_sess"] {
        fleet.cluster.lead_stream(stream, node).unwrap();
    }
    println!(
        "killing n{node} (fleet-keeper-3 there too: {other_told}) after {:?}",
        started.elapsed()
    );
    let killed_at = Instant::now();
    fleet.cluster.kill(node);
    let told = timeout(TIMEOUT, keeper.told()).await.unwrap_or_else(|_| {
        panic!(
            "fleet-keeper-5 was not told of n{node}'s death\n{}",
            fleet.diagnostics()
        )
    });
    println!("fleet-keeper-5 told in {:?}: {told}", killed_at.elapsed());

    // Publish through both replicas while the cluster elects new leaders:
    // five connections each, so each tcp client's turn comes to the dead
    // node, whose address fails and is then skipped.
    let after: Vec<String> = (0..10).map(|i| format!("after the kill {i}")).collect();
    publish_through_failures(&fleet.ports, topic, &after).await;
    println!("all acknowledged {:?} after the kill", killed_at.elapsed());
    let dead = format!("127.0.0.1:{}", fleet.cluster.mqtt_port(node));
    for replica in &fleet.replicas {
        let failed = |line: &String| line.contains("TCP_CONNECT_FAILED") && line.contains(&dead);
        let line = wait_for("the dead node's address to fail", TIMEOUT, || {
            replica.output().stdout.into_iter().find(failed)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", fleet.diagnostics()));
        println!("{line}");
    }

    // The MQTT 5 subscriber comes back through its replica, A, whose tcp
    // client skips the dead node; its session and every acknowledged
    // message are there.
    let (keeper, ack) = reconnect_v5(fleet.ports[A], "fleet-keeper-5").await;
    assert!(ack.session_present, "the cluster kept the session: {ack:?}");
    assert_ne!(on(&fleet, "fleet-keeper-5"), node);
    Subscriber::V5(keeper).receive_all(&after, TIMEOUT).await;

    // The 3.1.1 subscriber was told if its node died (then it reconnects
    // through B); either way it gets every acknowledged message.
    let mut missing = after.clone();
    match other.receive(&mut missing, TIMEOUT).await {
        Ok(_) => assert!(!other_told, "fleet-keeper-3 was on n{node} but not told"),
        Err(why) => {
            assert!(other_told, "fleet-keeper-3 was on a live node: {why}");
            let (again, ack) = V311::connect(fleet.ports[B], "fleet-keeper-3", false)
                .await
                .unwrap();
            assert!(ack.session_present, "{ack:?}");
            let mut again = Subscriber::V311(again);
            again.receive(&mut missing, TIMEOUT).await.unwrap();
        }
    }
    println!("node kill survived in {:?}", started.elapsed());
}
