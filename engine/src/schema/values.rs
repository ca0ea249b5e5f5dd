//! Building blocks for schema parts: values that may also be an expression,
//! strict objects, and references to the shared definitions.
//!
//! `${{env.NAME}}` is resolved on the YAML tree before anything reads it
//! (`config/expr.rs`), so an integer option may be written as an expression
//! string. Parts describe such values with these helpers rather than
//! repeating the expression pattern, so the pattern lives in one place.

use serde_json::{json, Value};

/// A scalar that is exactly one `${{env.NAME}}` expression, as the resolver
/// replaces it with a typed value (see `config/expr.rs`).
pub const EXPRESSION_PATTERN: &str = r"^\s*\$\{\{\s*env\.[^{}\s]+\s*\}\}\s*$";

/// A string that is exactly one expression.
pub fn expression() -> Value {
    json!({ "type": "string", "pattern": EXPRESSION_PATTERN })
}

/// `schema`, or an expression standing for it.
pub fn or_expression(schema: Value) -> Value {
    json!({ "anyOf": [schema, expression()] })
}

/// Any string; expressions are strings already, spliced or whole.
pub fn string() -> Value {
    json!({ "type": "string" })
}

/// An integer, or an expression.
pub fn integer() -> Value {
    or_expression(json!({ "type": "integer" }))
}

/// An integer from `minimum` on, or an expression.
pub fn integer_from(minimum: i64) -> Value {
    or_expression(json!({ "type": "integer", "minimum": minimum }))
}

/// An integer in `minimum..=maximum`, or an expression.
pub fn integer_in(minimum: i64, maximum: i64) -> Value {
    or_expression(json!({ "type": "integer", "minimum": minimum, "maximum": maximum }))
}

/// A number (integer or not), or an expression.
pub fn number() -> Value {
    or_expression(json!({ "type": "number" }))
}

/// A non-negative number, or an expression.
pub fn non_negative_number() -> Value {
    or_expression(json!({ "type": "number", "minimum": 0 }))
}

/// A boolean, or an expression.
pub fn boolean() -> Value {
    or_expression(json!({ "type": "boolean" }))
}

/// One of `values`, or an expression (which may resolve to any of them).
pub fn one_of(values: &[&str]) -> Value {
    or_expression(json!({ "enum": values }))
}

/// A list of `items`.
pub fn list(items: Value) -> Value {
    json!({ "type": "array", "items": items })
}

/// A list of at least one of `items`.
pub fn non_empty_list(items: Value) -> Value {
    json!({ "type": "array", "items": items, "minItems": 1 })
}

/// `item`, or a list of them, as options that take either accept.
pub fn one_or_list(item: Value) -> Value {
    json!({ "anyOf": [item.clone(), { "type": "array", "items": item }] })
}

/// A mapping of any keys to `values`.
pub fn map_of(values: Value) -> Value {
    json!({ "type": "object", "additionalProperties": values })
}

/// An object with exactly these properties (any may be left out), as every
/// options struct we deserialize denies unknown fields.
pub fn strict(properties: Value) -> Value {
    json!({ "type": "object", "properties": properties, "additionalProperties": false })
}

/// Like [`strict`], with some properties required.
pub fn strict_required(properties: Value, required: &[&str]) -> Value {
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// A model reference (`model: json`, `{model: avro, catalog: ...}`), as the
/// registered models accept it; see [`super::Family::Model`].
pub fn model() -> Value {
    json!({ "$ref": "#/definitions/model" })
}

/// How a model reference names schemas in catalogs:
/// `{<catalog>: [{subject, version} | {id} | {strategy}]}`.
pub fn catalog_references() -> Value {
    map_of(list(strict(json!({
        "subject": string(),
        "version": string(),
        "id": integer_from(0),
        "strategy": string(),
    }))))
}

/// A part for a plugin entry (guard, vault, ...) that only constrains `options`.
pub fn options(options: Value) -> Value {
    json!({ "properties": { "options": options } })
}

/// A part for a plugin entry whose `options` must be present.
pub fn required_options(options: Value) -> Value {
    json!({ "properties": { "options": options }, "required": ["options"] })
}

/// A part for an entry that takes no options (null is what `options:` alone reads as).
pub fn no_options() -> Value {
    json!({ "properties": { "options": { "type": "null" } } })
}

/// A binding part constraining its routes: what each `when` condition and
/// the route's `with` may hold. `false` forbids one.
pub fn routes(when: Value, with: Value) -> Value {
    json!({
        "properties": {
            "routes": {
                "items": {
                    "properties": {
                        "when": { "items": when },
                        "with": with,
                    }
                }
            }
        }
    })
}

/// A binding part that takes no routes and no exit (it answers streams itself).
pub fn no_exits() -> Value {
    json!({ "properties": { "routes": { "maxItems": 0 }, "exit": false } })
}

/// All of `parts` (e.g. [`options`] and [`routes`]) at once.
pub fn all(parts: Vec<Value>) -> Value {
    json!({ "allOf": parts })
}

/// `schema` applied only to bindings of `kind`, for types whose options
/// differ by kind.
pub fn when_kind(kind: &str, schema: Value) -> Value {
    json!({
        "if": { "properties": { "kind": { "const": kind } }, "required": ["kind"] },
        "then": schema,
    })
}

/// Merges `extra` properties into a [`strict`] object schema, for options
/// shared by several kinds with a few of their own.
pub fn with_properties(mut schema: Value, extra: Value) -> Value {
    if let (Some(Value::Object(properties)), Value::Object(extra)) =
        (schema.get_mut("properties"), extra)
    {
        properties.extend(extra);
    }
    schema
}
