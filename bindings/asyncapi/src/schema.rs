//! The schema part of `type: asyncapi` for `zilla schema`: the documents
//! (`specs`), the options passed on to the generated tcp, tls and mqtt
//! bindings, and operation routes, as `lib.rs` and `routes.rs` read them.
//!
//! The passed-on options are checked as objects only: the generated
//! bindings check them in full when the configuration is built.

use zilla_engine::register_schema;
use zilla_engine::schema::{self, json, Family, SchemaPart, Value};

register_schema!(SchemaPart {
    family: Family::Binding,
    type_name: "asyncapi",
    part,
});

fn part() -> Value {
    let spec = schema::strict_required(
        json!({
            "catalog": schema::map_of(schema::strict_required(
                json!({ "subject": schema::string(), "version": schema::string() }),
                &["subject"],
            )),
            "servers": schema::list(schema::string()),
            "names": schema::list(schema::string()),
            "store": schema::string(),
            "security": schema::map_of(schema::string()),
        }),
        &["catalog"],
    );
    let options = schema::strict_required(
        json!({
            "specs": schema::map_of(spec),
            "tcp": { "type": "object" },
            "tls": { "type": "object" },
            "mqtt": { "type": "object" },
        }),
        &["specs"],
    );
    let operation = schema::strict_required(
        json!({ "api-id": schema::string(), "operation-id": schema::string() }),
        &["api-id"],
    );
    schema::all(vec![
        schema::required_options(options),
        schema::routes(operation.clone(), operation),
    ])
}
