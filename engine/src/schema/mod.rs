//! The JSON Schema of `zilla.yaml` (`zilla schema`), assembled from what each
//! linked plugin contributes.
//!
//! The engine describes the envelope it reads (`config/mod.rs`): top-level
//! keys, entries, bindings, routes, telemetry. Each plugin crate describes
//! its own part with [`register_schema!`](crate::register_schema), next to its factory, so a
//! third-party crate that adds a type adds its schema the same way. The
//! document is draft-07, the draft yaml-language-server validates with; each
//! entry's `type` is an enum of the linked types (an unknown one fails
//! naming them), and each type's part applies through an `if type == X then
//! part` chain, so a mistake in one binding's options is reported against
//! that type alone instead of a `oneOf` that lists every type's complaints.
//! Decision 0029 records why.

mod values;

use serde_json::Map;

use crate::config::Kind;
use crate::registry::registered;

// Re-exported so a plugin crate writes its part without another dependency.
pub use serde_json::{json, Value};
pub use values::*;

/// Which section of `zilla.yaml` a part's type belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// `bindings`: the part constrains the whole binding entry (its
    /// `options`, `routes`, `exit`, ...), e.g. `options(...)` and `routes(...)`.
    Binding,
    /// `guards`: the part constrains the entry, usually with [`options`].
    Guard,
    /// `vaults`: as guards.
    Vault,
    /// `catalogs`: as guards.
    Catalog,
    /// `stores`: as guards.
    Store,
    /// Model references (`{model: json, ...}` inside binding options): the part
    /// describes the whole reference object, `model` included.
    Model,
    /// `telemetry.exporters`: as guards.
    Exporter,
}

/// One plugin type's contribution to the schema.
#[derive(Debug)]
pub struct SchemaPart {
    /// Where the type is configured.
    pub family: Family,
    /// The `type` (or `model`) it describes.
    pub type_name: &'static str,
    /// Builds the part: a draft-07 schema applied to entries of this type.
    pub part: fn() -> Value,
}

inventory::collect!(SchemaPart);

/// Registers a [`SchemaPart`], so `zilla schema` describes a plugin type.
///
/// ```
/// use zilla_engine::register_schema;
/// use zilla_engine::schema::{self, json, Family, SchemaPart};
///
/// register_schema!(SchemaPart {
///     family: Family::Binding,
///     type_name: "inert",
///     part: || schema::options(schema::strict(json!({
///         "greeting": schema::string(),
///         "max-bytes": schema::integer_from(0),
///     }))),
/// });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! register_schema {
    ($part:expr $(,)?) => {
        $crate::__private::inventory::submit! { $part }
    };
}

/// The part registered for `type_name` in `family`, if any.
pub fn part(family: Family, type_name: &str) -> Option<&'static SchemaPart> {
    inventory::iter::<SchemaPart>
        .into_iter()
        .find(|part| part.family == family && part.type_name == type_name)
}

/// Linked plugin types that registered no schema part (their entries are
/// checked for `type` and the envelope only), as `(family, type)`.
pub fn missing() -> Vec<(Family, &'static str)> {
    families()
        .into_iter()
        .flat_map(|(family, names)| names.into_iter().map(move |name| (family, name)))
        .filter(|(family, name)| part(*family, name).is_none())
        .collect()
}

/// The registered types of each family, sorted.
fn families() -> Vec<(Family, Vec<&'static str>)> {
    let registered = registered();
    vec![
        (
            Family::Binding,
            registered.bindings.iter().map(|(name, _)| *name).collect(),
        ),
        (Family::Guard, registered.guards),
        (Family::Vault, registered.vaults),
        (Family::Catalog, registered.catalogs),
        (Family::Store, registered.stores),
        (Family::Model, registered.models),
        (Family::Exporter, registered.exporters),
    ]
}

/// The whole schema of `zilla.yaml` for the plugins linked into this program.
pub fn document() -> Value {
    let registered = registered();
    let bindings = registered
        .bindings
        .iter()
        .map(|(name, kinds)| (*name, kinds.as_slice()))
        .collect::<Vec<_>>();
    let mut definitions = Map::new();
    definitions.insert("binding".into(), binding(&bindings));
    definitions.insert("route".into(), route());
    for (key, family, names) in [
        ("guard", Family::Guard, &registered.guards),
        ("vault", Family::Vault, &registered.vaults),
        ("catalog", Family::Catalog, &registered.catalogs),
        ("store", Family::Store, &registered.stores),
        ("exporter", Family::Exporter, &registered.exporters),
    ] {
        definitions.insert(key.into(), entry(family, names));
    }
    definitions.insert("model".into(), model_reference(&registered.models));
    let section = |definition: &str| {
        json!({
            "type": ["object", "null"],
            "additionalProperties": { "$ref": format!("#/definitions/{definition}") },
        })
    };
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "zilla.yaml",
        "description": "A zilla configuration, for the plugins linked into this zilla.",
        "type": "object",
        "required": ["name"],
        "additionalProperties": false,
        "properties": {
            "name": or_expression(json!({
                "type": "string",
                "pattern": "^[a-zA-Z]+[a-zA-Z0-9._-]*$",
            })),
            "vaults": section("vault"),
            "guards": section("guard"),
            "catalogs": section("catalog"),
            "stores": section("store"),
            "bindings": section("binding"),
            "telemetry": strict(json!({
                "attributes": map_of(string()),
                "metrics": list(string()),
                "exporters": section("exporter"),
            })),
        },
        "definitions": definitions,
    })
}

/// Every kind the envelope parses, for the base enum.
const ALL_KINDS: [Kind; 6] = [
    Kind::Server,
    Kind::Client,
    Kind::Proxy,
    Kind::RemoteServer,
    Kind::CacheClient,
    Kind::CacheServer,
];

fn kind_names(kinds: &[Kind]) -> Vec<&'static str> {
    kinds.iter().map(|kind| kind.as_str()).collect()
}

/// `if type == X then ...` for one type; `required` keeps an entry without
/// `type` from matching every `if` (it fails `required` at the entry instead).
fn when_type(key: &str, type_name: &str, then: Value) -> Value {
    json!({
        "if": { "properties": { key: { "const": type_name } }, "required": [key] },
        "then": then,
    })
}

fn binding(types: &[(&'static str, &[Kind])]) -> Value {
    let names: Vec<&str> = types.iter().map(|(name, _)| *name).collect();
    let chain: Vec<Value> = types
        .iter()
        .map(|(name, kinds)| {
            let mut then = json!({
                "properties": { "kind": { "enum": kind_names(kinds) } },
            });
            if let Some(part) = part(Family::Binding, name) {
                then["allOf"] = json!([(part.part)()]);
            }
            when_type("type", name, then)
        })
        .collect();
    let mut binding = json!({
        "type": "object",
        "required": ["type", "kind"],
        "additionalProperties": false,
        "properties": {
            "type": { "enum": names },
            "kind": { "enum": kind_names(&ALL_KINDS) },
            "options": {},
            "routes": list(json!({ "$ref": "#/definitions/route" })),
            "exit": string(),
            "vault": string(),
            "catalog": catalog_references(),
            "telemetry": strict(json!({ "metrics": list(string()) })),
        },
    });
    with_all_of(&mut binding, chain);
    binding
}

/// Adds `allOf` unless `chain` is empty (draft-07 wants at least one schema).
fn with_all_of(schema: &mut Value, chain: Vec<Value>) {
    if !chain.is_empty() {
        schema["allOf"] = Value::Array(chain);
    }
}

fn route() -> Value {
    strict_required(
        json!({
            "when": list(json!({ "type": "object" })),
            "exit": string(),
            "guarded": map_of(list(string())),
            "with": { "type": "object" },
        }),
        &["exit"],
    )
}

/// A guard, vault, catalog, store or exporter entry: `{type, options}`.
fn entry(family: Family, names: &[&'static str]) -> Value {
    let chain: Vec<Value> = names
        .iter()
        .filter_map(|name| part(family, name).map(|part| when_type("type", name, (part.part)())))
        .collect();
    let mut entry = json!({
        "type": "object",
        "required": ["type"],
        "additionalProperties": false,
        "properties": {
            "type": { "enum": names },
            "options": {},
        },
    });
    with_all_of(&mut entry, chain);
    entry
}

/// A model reference: a model's name alone, or `{model, ...}` as that model
/// describes it.
fn model_reference(names: &[&'static str]) -> Value {
    let chain: Vec<Value> = names
        .iter()
        .filter_map(|name| {
            part(Family::Model, name).map(|part| when_type("model", name, (part.part)()))
        })
        .collect();
    let mut reference = json!({
        "type": "object",
        "required": ["model"],
        "properties": { "model": { "enum": names } },
    });
    with_all_of(&mut reference, chain);
    json!({
        "if": { "type": "string" },
        "then": { "enum": names },
        "else": reference,
    })
}

#[cfg(test)]
mod tests;
