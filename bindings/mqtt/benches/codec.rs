//! The per-message work of the mqtt binding: decoding (as from a broker, and
//! as from a client, with the conformance checks) and encoding PUBLISH
//! (64 B and 4 KiB payloads, MQTT 5 and 3.1.1), checking a topic name and
//! matching topics against route conditions. Run:
//! `cargo bench -p zilla-binding-mqtt --bench codec`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput};
use mqtt_bytes_v5::{Packet, Publish, QoS};
use zilla_binding_mqtt::codec::{self, Version};
use zilla_binding_mqtt::options::{MqttCondition, Operation, RouteConditions};
use zilla_binding_mqtt::topic;

fn publish(size: usize) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "sensors/building-7/floor-3/room-12/temperature".into(),
        pkid: 42,
        payload: Bytes::from(vec![b'x'; size]),
        properties: None,
    })
}

fn encoded(packet: &Packet, version: Version, copies: usize) -> BytesMut {
    let mut out = BytesMut::new();
    for _ in 0..copies {
        codec::write(packet, version, &mut out).expect("encodes");
    }
    out
}

fn codec_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish");
    for size in [64usize, 4096] {
        for (version, label) in [(Version::V5, "v5"), (Version::V4, "v3.1.1")] {
            let packet = publish(size);
            // Decoding 64 packets from one buffer, as a read of a busy connection does.
            group.throughput(Throughput::Elements(64));
            let wire = encoded(&packet, version, 64);
            group.bench_function(format!("decode {label} {size} B x 64"), |b| {
                b.iter_batched(
                    || wire.clone(),
                    |mut buf| {
                        while let Some(packet) =
                            codec::read(&mut buf, version, usize::MAX).expect("decodes")
                        {
                            black_box(packet);
                        }
                    },
                    BatchSize::SmallInput,
                )
            });
            // The same, as the server reads a client: with the conformance walk.
            group.bench_function(format!("decode from client {label} {size} B x 64"), |b| {
                b.iter_batched(
                    || wire.clone(),
                    |mut buf| {
                        while let Some(packet) =
                            codec::read_from_client(&mut buf, version, usize::MAX).expect("decodes")
                        {
                            black_box(packet);
                        }
                    },
                    BatchSize::SmallInput,
                )
            });
            group.throughput(Throughput::Elements(1));
            let mut out = BytesMut::with_capacity(64 * (size + 64));
            group.bench_function(format!("encode {label} {size} B"), |b| {
                b.iter(|| {
                    out.clear();
                    codec::write(black_box(&packet), version, &mut out).expect("encodes");
                })
            });
        }
    }
    group.finish();
}

fn routing_benches(c: &mut Criterion) {
    let when: Vec<MqttCondition> = serde_yaml::from_str(
        "- publish:
    - topic: sensors/+/floor-3/+/temperature
    - topic: sensors/+/floor-3/+/humidity
    - topic: fleet/+/telemetry
- subscribe:
    - topic: sensors/#
",
    )
    .expect("conditions");
    let route = RouteConditions::new(&when);
    let name = "sensors/building-7/floor-3/room-12/temperature";
    let mut group = c.benchmark_group("routing");
    // Done for every PUBLISH on each side of the proxy (codec::validate).
    group.bench_function("topic name valid (no wildcard or U+0000)", |b| {
        b.iter(|| topic::is_valid_name(black_box(name)))
    });
    group.bench_function("topic match (1 filter)", |b| {
        b.iter(|| {
            topic::matches(
                black_box("sensors/+/floor-3/+/temperature"),
                black_box(name),
            )
        })
    });
    group.bench_function("route accepts publish (3 filters)", |b| {
        b.iter(|| route.accepts(Operation::Publish(black_box(name))))
    });
    group.bench_function("route accepts subscribe (covers)", |b| {
        b.iter(|| route.accepts(Operation::Subscribe(black_box("sensors/+/floor-3/#"))))
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    codec_benches(&mut criterion);
    routing_benches(&mut criterion);
    criterion.final_summary();
}
