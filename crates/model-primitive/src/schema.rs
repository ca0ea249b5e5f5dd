//! The schema parts of the primitive models (`string`, `int32`, `int64`,
//! `float`, `double`, `boolean`) for `zilla schema`, as `PrimitiveOptions`
//! reads them; which options suit which model is checked at build time.

use zilla_engine::register_schema;
use zilla_engine::schema::{self, json, Family, SchemaPart, Value};

fn part() -> Value {
    schema::strict(json!({
        "model": schema::string(),
        "encoding": schema::string(),
        "minLength": schema::integer_from(0),
        "maxLength": schema::integer_from(0),
        "pattern": schema::string(),
        "format": schema::one_of(&["text", "binary"]),
        "range": schema::string(),
    }))
}

register_schema!(SchemaPart {
    family: Family::Model,
    type_name: "string",
    part,
});
register_schema!(SchemaPart {
    family: Family::Model,
    type_name: "int32",
    part,
});
register_schema!(SchemaPart {
    family: Family::Model,
    type_name: "int64",
    part,
});
register_schema!(SchemaPart {
    family: Family::Model,
    type_name: "float",
    part,
});
register_schema!(SchemaPart {
    family: Family::Model,
    type_name: "double",
    part,
});
register_schema!(SchemaPart {
    family: Family::Model,
    type_name: "boolean",
    part,
});
