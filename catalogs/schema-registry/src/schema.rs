//! The schema parts of catalog types `schema-registry` and its alias
//! `karapace-schema-registry` for `zilla schema`, as `RegistryOptions` reads
//! them.

use zilla_engine::register_schema;
use zilla_engine::schema::{self, json, Family, SchemaPart, Value};

register_schema!(SchemaPart {
    family: Family::Catalog,
    type_name: "schema-registry",
    part,
});

register_schema!(SchemaPart {
    family: Family::Catalog,
    type_name: "karapace-schema-registry",
    part,
});

fn part() -> Value {
    schema::required_options(schema::strict_required(
        json!({
            "url": schema::string(),
            "context": schema::string(),
            "max-age": schema::integer_from(0),
            "credentials": schema::strict_required(
                json!({ "headers": schema::map_of(schema::string()) }),
                &["headers"],
            ),
        }),
        &["url"],
    ))
}
