//! Three proxy replicas (three `zilla` processes) in front of one mosquitto,
//! counting one tenant's limits in a shared store, and the clients the
//! fleet-wide limits tests use: raw MQTT 5 and 3.1.1 devices of a tenant
//! with signed tokens, a flooding publisher, and a counting subscriber.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use zilla_testkit::mqtt::packets::{
    ConnAck, ConnectReturnCode, Login, Packet, PubAck, PubAckReason, QoS,
};
use zilla_testkit::mqtt::{connect_packet, publish_packet, subscribe_packet, RawMqtt};
use zilla_testkit::seed::sign;
use zilla_testkit::tenants::{tenant_bindings, tenants_guards};
use zilla_testkit::{Mosquitto, ZillaProcess};

/// The tenant every test counts.
pub(crate) const TENANT: &str = "acme";

/// The replicas, all naming the same store.
pub(crate) struct Replicas {
    pub(crate) hosts: Vec<ZillaProcess>,
    _dir: tempfile::TempDir,
}

/// A replica's configuration: the store `fleet0` as `store` (indented for
/// `fleet0:`), the mqtt server's `options` (indented for `options:`)
/// besides its authorization and store, the broker on `broker`.
pub(crate) fn config(broker: u16, store: &str, options: &str) -> String {
    let guards = tenants_guards();
    let bindings = tenant_bindings(&format!("      store: fleet0\n{options}"), broker);
    format!(
        r#"
name: fleet-limits-test
stores:
  fleet0:
{store}
guards:
{guards}
telemetry:
  exporters:
    stdout_logs_exporter:
      type: stdout
{bindings}"#
    )
}

/// A redis store at `url` with its own key prefix (tests share no keys).
pub(crate) fn redis_store(url: &str) -> String {
    format!(
        "    type: redis\n    options:\n      url: {url}\n      prefix: {}\n",
        prefix()
    )
}

/// A key prefix no other test uses.
pub(crate) fn prefix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test-{}-{nanos}", std::process::id())
}

impl Replicas {
    /// Three replicas of [`config`], started and ready.
    pub(crate) fn start(broker: &Mosquitto, store: &str, options: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zilla.yaml");
        std::fs::write(&path, config(broker.port(), store, options)).unwrap();
        let binary = Path::new(env!("CARGO_BIN_EXE_zilla"));
        let hosts = (0..3)
            .map(|_| ZillaProcess::start(binary, &path, &[], &[]).expect("a replica starts"))
            .collect();
        Self { hosts, _dir: dir }
    }

    /// Where replica `index` listens for clients.
    pub(crate) fn port(&self, index: usize) -> u16 {
        self.hosts[index].port("north_tcp_server")
    }

    /// How many lines with `needle` (an event) each replica printed so far.
    pub(crate) fn printed(&self, needle: &str) -> Vec<usize> {
        self.hosts
            .iter()
            .map(|host| host.count_stdout(needle))
            .collect()
    }

    /// Waits until every replica printed `needle` once more than `before`
    /// (from [`Replicas::printed`]).
    pub(crate) fn wait_all(&self, needle: &str, before: &[usize], timeout: Duration) {
        for (host, count) in self.hosts.iter().zip(before) {
            host.wait_for_stdout_count(needle, count + 1, timeout)
                .unwrap();
        }
    }
}

/// `Bearer <token>` for a device of `tenant`, signed like the example's.
pub(crate) fn bearer(tenant: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let claims = json!({
        "iss": "https://auth.example.com",
        "aud": "https://api.example.com",
        "sub": format!("device-of-{tenant}"),
        "exp": exp,
        "scope": format!("mqtt:stream tenant:{tenant}"),
        "tenant": tenant,
    });
    format!("Bearer {}", sign(&claims, "example"))
}

/// An MQTT 5 device `id` of [`TENANT`] through `port`, and its CONNACK.
pub(crate) async fn v5(port: u16, id: &str) -> (RawMqtt, ConnAck) {
    let mut client = RawMqtt::open(port).await;
    let Packet::Connect(connect, will, _) = connect_packet(id, true, None) else {
        unreachable!()
    };
    let login = Login {
        username: bearer(TENANT),
        password: String::new(),
    };
    client
        .send(&Packet::Connect(connect, will, Some(login)))
        .await;
    match client.recv().await {
        Some(Packet::ConnAck(ack)) => (client, ack),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// An MQTT 5 device that must be admitted.
pub(crate) async fn admitted(port: u16, id: &str) -> RawMqtt {
    let (client, ack) = v5(port, id).await;
    assert_eq!(ack.code, ConnectReturnCode::Success, "{id}: {ack:?}");
    client
}

/// The CONNACK code of an MQTT 5 device `id` through `port` (its
/// connection closed).
pub(crate) async fn v5_code(port: u16, id: &str) -> ConnectReturnCode {
    v5(port, id).await.1.code
}

/// The return code an MQTT 3.1.1 device `id` of [`TENANT`] gets.
pub(crate) async fn v311_code(port: u16, id: &str) -> u8 {
    zilla_testkit::limits_clients::V311::connect_with(port, id, bearer(TENANT), None)
        .await
        .1
}

/// A publish that the proxy and the broker accept, acknowledged.
pub(crate) async fn publishes(client: &mut RawMqtt, pkid: u16) {
    let topic = format!("tenants/{TENANT}/t");
    client
        .send(&publish_packet(&topic, QoS::AtLeastOnce, pkid, "x"))
        .await;
    match client.recv().await {
        Some(Packet::PubAck(ack)) => assert!(
            matches!(
                ack.reason,
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers
            ),
            "{ack:?}"
        ),
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

/// What a flood got: publishes accepted and refused (0x97).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Flooded {
    pub(crate) accepted: u64,
    pub(crate) refused: u64,
}

/// Floods QoS 1 publishes through `port` as device `id` until `until`,
/// with up to 64 in flight, then waits for every acknowledgement.
pub(crate) async fn flood(port: u16, id: &str, until: Instant) -> Flooded {
    let client = admitted(port, id).await;
    let (mut reader, mut writer) = client.into_stream().into_split();
    let window = std::sync::Arc::new(Semaphore::new(64));
    let sending = window.clone();
    let topic = format!("tenants/{TENANT}/flood");
    let send = tokio::spawn(async move {
        let mut sent = 0u64;
        let mut out = BytesMut::new();
        while Instant::now() < until {
            sending.acquire().await.unwrap().forget();
            let pkid = (sent % 60_000) as u16 + 1;
            publish_packet(&topic, QoS::AtLeastOnce, pkid, "flood")
                .write(&mut out)
                .unwrap();
            writer.write_all(&out).await.unwrap();
            out.clear();
            sent += 1;
        }
        (sent, writer)
    });
    let mut flooded = Flooded::default();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut sending = Some(send);
    // The sender's result: how many were sent, and the write half, kept
    // open until every acknowledgement came.
    let mut done = None;
    loop {
        if let Some((sent, _)) = &done {
            if flooded.accepted + flooded.refused == *sent {
                break;
            }
        } else if sending.as_ref().is_some_and(|send| send.is_finished()) {
            done = Some(sending.take().unwrap().await.unwrap());
            continue;
        }
        while let Ok(packet) = Packet::read(&mut buf, None) {
            match packet {
                Packet::PubAck(PubAck { reason, .. }) => {
                    match reason {
                        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => {
                            flooded.accepted += 1
                        }
                        PubAckReason::QuotaExceeded => flooded.refused += 1,
                        other => panic!("{id}: unexpected PUBACK {other:?}"),
                    }
                    window.add_permits(1);
                }
                other => panic!("{id}: unexpected {other:?}"),
            }
        }
        let read = tokio::time::timeout(Duration::from_millis(100), reader.read_buf(&mut buf));
        if let Ok(read) = read.await {
            assert!(read.unwrap() > 0, "{id}: the proxy closed the flood");
        }
    }
    flooded
}

/// A subscriber of the tenant's topics straight at the broker.
pub(crate) async fn subscriber(broker: &Mosquitto) -> RawMqtt {
    let (mut client, ack) = RawMqtt::connect(broker.port(), "fleet-counter").await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let filter = format!("tenants/{TENANT}/#");
    client
        .send(&subscribe_packet(1, &filter, QoS::AtLeastOnce))
        .await;
    assert!(matches!(client.recv().await, Some(Packet::SubAck(_))));
    client
}

/// Counts what `subscriber` receives until nothing more comes for 3 s;
/// acknowledges each.
pub(crate) async fn received(subscriber: &mut RawMqtt) -> u64 {
    let mut count = 0;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(3), subscriber.recv()).await;
        match next {
            Ok(Some(Packet::Publish(publish))) => {
                count += 1;
                let ack = PubAck {
                    pkid: publish.pkid,
                    reason: PubAckReason::Success,
                    properties: None,
                };
                subscriber.send(&Packet::PubAck(ack)).await;
            }
            Ok(other) => panic!("expected PUBLISH, got {other:?}"),
            Err(_) => return count,
        }
    }
}
