//! The schema part of catalog `type: inline` for `zilla schema`, as
//! `InlineOptions` reads it.

use zilla_engine::register_schema;
use zilla_engine::schema::{self, json, Family, SchemaPart, Value};

register_schema!(SchemaPart {
    family: Family::Catalog,
    type_name: "inline",
    part,
});

fn part() -> Value {
    schema::options(schema::strict(json!({
        "subjects": schema::map_of(schema::strict_required(
            json!({
                "schema": schema::string(),
                "version": schema::string(),
                "id": schema::integer_from(0),
            }),
            &["schema"],
        )),
    })))
}
