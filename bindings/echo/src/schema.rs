//! The schema part of `type: echo` for `zilla schema`: what `EchoOptions`
//! accepts, and no exits (the binding answers streams itself). A third-party
//! binding contributes its part the same way (docs/writing-a-binding.md).

use zilla_engine::register_schema;
use zilla_engine::schema::{self, json, Family, SchemaPart, Value};

register_schema!(SchemaPart {
    family: Family::Binding,
    type_name: "echo",
    part,
});

fn part() -> Value {
    schema::all(vec![
        schema::options(schema::strict(json!({
            "greeting": schema::string(),
            "max-bytes": schema::integer_from(0),
        }))),
        schema::no_exits(),
    ])
}
