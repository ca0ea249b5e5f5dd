//! `model: json`: payloads must be JSON valid against a JSON Schema from a
//! catalog. The schema is compiled once, at startup; each message is parsed
//! and checked. Errors name where in the payload and which schema rule
//! failed, never the payload's values.

#![forbid(unsafe_code)]

mod schema;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zilla_engine::{
    register_model, BuildError, CatalogReferences, LiveSchema, Model, ModelFactory, PluginContext,
    ValidationError,
};

/// A `model: json` reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonModelOptions {
    /// `json`.
    pub model: String,
    /// Where the JSON Schema is.
    #[serde(default)]
    pub catalog: CatalogReferences,
}

/// A compiled JSON Schema.
pub struct JsonModel {
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for JsonModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonModel").finish_non_exhaustive()
    }
}

impl JsonModel {
    /// Compiles `schema` (JSON Schema text).
    pub fn new(schema: &str) -> Result<Self, String> {
        let schema: serde_json::Value =
            serde_json::from_str(schema).map_err(|e| format!("the schema is not JSON: {e}"))?;
        let validator = jsonschema::validator_for(&schema)
            .map_err(|e| format!("the schema is not a valid JSON Schema: {e}"))?;
        Ok(Self { validator })
    }
}

impl Model for JsonModel {
    fn validate(&self, payload: &[u8]) -> Result<(), ValidationError> {
        let value: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| ValidationError {
                path: None,
                reason: format!("not JSON (line {}, column {})", e.line(), e.column()),
            })?;
        let first = self
            .validator
            .iter_errors(&value)
            .next()
            .map(|error| ValidationError {
                path: Some(match error.instance_path().to_string() {
                    path if path.is_empty() => "/".to_owned(),
                    path => path,
                }),
                reason: format!("fails schema rule {}", error.schema_path()),
            });
        match first {
            None => Ok(()),
            Some(error) => Err(error),
        }
    }
}

/// A JSON model whose schema follows its catalog (a rewritten schema file
/// is recompiled once, not per message).
struct CatalogJsonModel {
    live: LiveSchema<JsonModel>,
}

impl Model for CatalogJsonModel {
    fn validate(&self, payload: &[u8]) -> Result<(), ValidationError> {
        self.live.get().validate(payload)
    }
}

fn build(cx: &mut PluginContext<'_>) -> Result<Arc<dyn Model>, BuildError> {
    let options: JsonModelOptions =
        cx.deserialize(cx.raw_options().cloned().unwrap_or_default(), "")?;
    let live = cx.live_schema(
        &options.catalog,
        "catalog",
        Box::new(|schema| JsonModel::new(&schema.text)),
    )?;
    Ok(Arc::new(CatalogJsonModel { live }))
}

register_model!(ModelFactory {
    type_name: "json",
    build,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_without_repeating_the_payload() {
        let model = JsonModel::new(
            r#"{"type":"object","properties":{"id":{"type":"string"},"status":{"type":"string","enum":["on","off"]}},"required":["id","status"]}"#,
        )
        .unwrap();
        assert!(model.validate(br#"{"id":"1","status":"on"}"#).is_ok());
        let missing = model.validate(br#"{"id":"1","stat":"off"}"#).unwrap_err();
        assert_eq!(missing.to_string(), "/: fails schema rule /required");
        let wrong = model
            .validate(br#"{"id":"1","status":"secret-value"}"#)
            .unwrap_err();
        assert_eq!(wrong.path.as_deref(), Some("/status"));
        assert!(!wrong.to_string().contains("secret-value"));
        assert!(model
            .validate(b"not json")
            .unwrap_err()
            .reason
            .starts_with("not JSON"));
    }

    #[test]
    fn bad_schemas_are_refused() {
        assert!(JsonModel::new("{").unwrap_err().contains("not JSON"));
        assert!(JsonModel::new(r#"{"type": 7}"#)
            .unwrap_err()
            .contains("not a valid JSON Schema"));
    }
}
