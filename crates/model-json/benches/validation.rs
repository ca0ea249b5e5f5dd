//! What validation costs per message: a 1 KiB JSON payload against a JSON
//! Schema (beside parsing alone, the floor any JSON check pays), and a small
//! Avro record. Run: `cargo bench -p zilla-model-json --bench validation`.

use std::hint::black_box;

use criterion::{Criterion, Throughput};
use zilla_engine::Model;
use zilla_model_avro::AvroModel;
use zilla_model_json::JsonModel;

const SCHEMA: &str = r#"{
  "type": "object",
  "properties": {
    "id": {"type": "string"},
    "status": {"type": "string", "enum": ["on", "off"]},
    "readings": {"type": "array", "items": {
      "type": "object",
      "properties": {"at": {"type": "integer"}, "lux": {"type": "number", "minimum": 0}},
      "required": ["at", "lux"]
    }}
  },
  "required": ["id", "status", "readings"]
}"#;

/// A valid payload of about 1 KiB.
fn payload() -> Vec<u8> {
    let readings: Vec<String> = (0..30)
        .map(|i| format!(r#"{{"at":{},"lux":{}.5}}"#, 1_700_000_000 + i, i * 10))
        .collect();
    format!(
        r#"{{"id":"lamp-0001","status":"on","readings":[{}]}}"#,
        readings.join(",")
    )
    .into_bytes()
}

const READING: &str = r#"{"type":"record","name":"Reading","fields":[{"name":"id","type":"string"},{"name":"celsius","type":"double"},{"name":"at","type":"long"}]}"#;

fn validation(c: &mut Criterion) {
    let json = payload();
    assert!(
        (900..1200).contains(&json.len()),
        "about 1 KiB: {}",
        json.len()
    );
    let model = JsonModel::new(SCHEMA).unwrap();
    assert!(model.validate(&json).is_ok());

    let mut group = c.benchmark_group("json-1KiB");
    group.throughput(Throughput::Bytes(json.len() as u64));
    group.bench_function("parse only (baseline)", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&json)).unwrap())
    });
    group.bench_function("parse + schema", |b| {
        b.iter(|| model.validate(black_box(&json)).unwrap())
    });
    group.finish();

    use apache_avro::types::Value;
    let schema = apache_avro::Schema::parse_str(READING).unwrap();
    let datum = apache_avro::to_avro_datum(
        &schema,
        Value::Record(vec![
            ("id".into(), Value::String("sensor-17".into())),
            ("celsius".into(), Value::Double(21.5)),
            ("at".into(), Value::Long(1_700_000_000_000)),
        ]),
    )
    .unwrap();
    let avro = AvroModel::new(READING, None).unwrap();
    let mut group = c.benchmark_group("avro-record");
    group.throughput(Throughput::Bytes(datum.len() as u64));
    group.bench_function("decode + check", |b| {
        b.iter(|| avro.validate(black_box(&datum)).unwrap())
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    validation(&mut criterion);
    criterion.final_summary();
}
