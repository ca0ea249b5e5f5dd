//! The schema part of model `avro` for `zilla schema`: a reference naming
//! its schema in catalogs, and Zilla's `view`, as `AvroModelOptions` reads
//! it.

use zilla_engine::register_schema;
use zilla_engine::schema::{self, json, Family, SchemaPart, Value};

register_schema!(SchemaPart {
    family: Family::Model,
    type_name: "avro",
    part,
});

fn part() -> Value {
    schema::strict(json!({
        "model": schema::string(),
        "catalog": schema::catalog_references(),
        "view": schema::string(),
    }))
}
