//! The schema part of store `type: redis` (beyond Zilla) for `zilla
//! schema`, as `options.rs` reads it: exactly one of `url` and `cluster`.

use zilla_engine::register_schema;
use zilla_engine::schema::{self, json, Family, SchemaPart, Value};

register_schema!(SchemaPart {
    family: Family::Store,
    type_name: "redis",
    part,
});

fn part() -> Value {
    // Credentials are read as any scalar (a numeric password stays text).
    let scalar = || json!({ "type": ["string", "integer", "number", "boolean"] });
    let mut options = schema::strict(json!({
        "url": schema::string(),
        "cluster": schema::non_empty_list(schema::string()),
        "username": scalar(),
        "password": scalar(),
        "prefix": schema::string(),
        "connect-timeout": schema::non_negative_number(),
        "command-timeout": schema::non_negative_number(),
        "tls": schema::strict_required(json!({ "ca": schema::string() }), &["ca"]),
    }));
    options["oneOf"] = json!([{ "required": ["url"] }, { "required": ["cluster"] }]);
    schema::required_options(options)
}
