//! The schema part of catalog `type: filesystem` for `zilla schema`, as
//! `FilesystemCatalogOptions` reads it.

use zilla_engine::register_schema;
use zilla_engine::schema::{self, json, Family, SchemaPart, Value};

register_schema!(SchemaPart {
    family: Family::Catalog,
    type_name: "filesystem",
    part,
});

fn part() -> Value {
    schema::options(schema::strict(json!({
        "subjects": schema::map_of(schema::strict_required(
            json!({ "path": schema::string() }),
            &["path"],
        )),
    })))
}
