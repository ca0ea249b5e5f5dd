//! `model: avro`: payloads must be Avro binary datums of a schema from a
//! catalog. When the schema comes with a registry id (the catalog is
//! referenced by id, or gives one), payloads carry Confluent's framing: magic
//! byte 0, the schema id (4 bytes, big-endian), then the datum.

#![forbid(unsafe_code)]

mod schema;

use std::io::Cursor;
use std::sync::Arc;

use apache_avro::Schema;
use serde::{Deserialize, Serialize};
use zilla_engine::{
    register_model, BuildError, CatalogReferences, LiveSchema, Model, ModelFactory, PluginContext,
    ValidationError,
};

/// A `model: avro` reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvroModelOptions {
    /// `avro`.
    pub model: String,
    /// Where the Avro schema is.
    #[serde(default)]
    pub catalog: CatalogReferences,
    /// `json` asks Zilla to convert; accepted, validation is the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<String>,
}

/// A parsed Avro schema.
#[derive(Debug)]
pub struct AvroModel {
    schema: Schema,
    /// The registry id payloads are framed with, if any.
    framed_id: Option<u32>,
}

impl AvroModel {
    /// Parses `schema`; payloads are framed with `framed_id` when given.
    pub fn new(schema: &str, framed_id: Option<u32>) -> Result<Self, String> {
        let schema = Schema::parse_str(schema).map_err(|e| format!("not an Avro schema: {e}"))?;
        Ok(Self { schema, framed_id })
    }
}

fn fail(reason: impl Into<String>) -> ValidationError {
    ValidationError {
        path: None,
        reason: reason.into(),
    }
}

impl Model for AvroModel {
    fn validate(&self, payload: &[u8]) -> Result<(), ValidationError> {
        let datum = match self.framed_id {
            Some(expected) => {
                let [0, a, b, c, d, datum @ ..] = payload else {
                    return Err(fail(
                        "missing the Confluent framing (magic byte 0 and schema id)",
                    ));
                };
                let id = u32::from_be_bytes([*a, *b, *c, *d]);
                if id != expected {
                    return Err(fail(format!(
                        "framed with schema id {id}, expected {expected}"
                    )));
                }
                datum
            }
            None => payload,
        };
        let mut reader = Cursor::new(datum);
        apache_avro::from_avro_datum(&self.schema, &mut reader, None)
            .map_err(|e| fail(format!("not a datum of the schema: {e}")))?;
        if (reader.position() as usize) != datum.len() {
            return Err(fail(format!(
                "{} bytes left after the datum",
                datum.len() - reader.position() as usize
            )));
        }
        Ok(())
    }
}

fn build(cx: &mut PluginContext<'_>) -> Result<Arc<dyn Model>, BuildError> {
    let options: AvroModelOptions =
        cx.deserialize(cx.raw_options().cloned().unwrap_or_default(), "")?;
    let by_id = options
        .catalog
        .values()
        .next()
        .and_then(|selectors| selectors.first())
        .is_some_and(|selector| selector.id.is_some());
    let live = cx.live_schema(
        &options.catalog,
        "catalog",
        Box::new(move |schema| AvroModel::new(&schema.text, if by_id { schema.id } else { None })),
    )?;
    Ok(Arc::new(CatalogAvroModel { live }))
}

/// An Avro model whose schema follows its catalog.
struct CatalogAvroModel {
    live: LiveSchema<AvroModel>,
}

impl Model for CatalogAvroModel {
    fn validate(&self, payload: &[u8]) -> Result<(), ValidationError> {
        self.live.get().validate(payload)
    }
}

register_model!(ModelFactory {
    type_name: "avro",
    build,
});

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value;

    const READING: &str = r#"{"type":"record","name":"Reading","fields":[{"name":"id","type":"string"},{"name":"celsius","type":"double"}]}"#;

    fn datum() -> Vec<u8> {
        let schema = Schema::parse_str(READING).unwrap();
        let value = Value::Record(vec![
            ("id".into(), Value::String("s1".into())),
            ("celsius".into(), Value::Double(21.5)),
        ]);
        apache_avro::to_avro_datum(&schema, value).unwrap()
    }

    #[test]
    fn plain_datums() {
        let model = AvroModel::new(READING, None).unwrap();
        assert!(model.validate(&datum()).is_ok());
        assert!(model.validate(&datum()[..3]).is_err());
        let mut extra = datum();
        extra.push(0);
        assert!(model
            .validate(&extra)
            .unwrap_err()
            .reason
            .contains("left after the datum"));
    }

    #[test]
    fn confluent_framing() {
        let model = AvroModel::new(READING, Some(7)).unwrap();
        let mut framed = vec![0, 0, 0, 0, 7];
        framed.extend(datum());
        assert!(model.validate(&framed).is_ok());
        framed[4] = 8;
        assert!(model
            .validate(&framed)
            .unwrap_err()
            .reason
            .contains("schema id 8, expected 7"));
        assert!(model.validate(&datum()).is_err());
    }

    #[test]
    fn bad_schema() {
        assert!(AvroModel::new("{\"type\":\"nope\"}", None)
            .unwrap_err()
            .contains("not an Avro schema"));
    }
}
