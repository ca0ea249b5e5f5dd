//! The schema part of model `json` for `zilla schema`: a reference naming
//! its schema in catalogs, as `JsonModelOptions` reads it.

use zilla_engine::register_schema;
use zilla_engine::schema::{self, json, Family, SchemaPart, Value};

register_schema!(SchemaPart {
    family: Family::Model,
    type_name: "json",
    part,
});

fn part() -> Value {
    schema::strict(json!({
        "model": schema::string(),
        "catalog": schema::catalog_references(),
    }))
}
