//! The schema part of `type: tcp` for `zilla schema`: options by kind and the
//! server's route conditions, as `options.rs` reads them.

use zilla_engine::register_schema;
use zilla_engine::schema::{self, json, Family, SchemaPart, Value};

register_schema!(SchemaPart {
    family: Family::Binding,
    type_name: "tcp",
    part,
});

/// `7183`, `"7000-7010"`, or a list of either.
fn ports() -> Value {
    let one = json!({
        "anyOf": [
            { "type": "integer", "minimum": 0, "maximum": 65535 },
            { "type": "string", "pattern": r"^\s*\d+\s*(-\s*\d+\s*)?$" },
            schema::expression(),
        ]
    });
    schema::one_or_list(one)
}

fn part() -> Value {
    let common = json!({
        "host": schema::string(),
        "port": ports(),
        "nodelay": schema::boolean(),
        "keepalive": schema::boolean(),
    });
    let server = schema::with_properties(
        schema::strict(common.clone()),
        json!({
            "backlog": schema::integer_from(0),
            "proxy-protocol": schema::strict_required(
                json!({
                    "mode": schema::one_of(&["required", "optional"]),
                    "from": schema::non_empty_list(schema::string()),
                }),
                &["from"],
            ),
        }),
    );
    let client = schema::with_properties(
        schema::strict(common),
        json!({ "hosts": schema::non_empty_list(schema::string()) }),
    );
    let condition = schema::strict(json!({
        "cidr": schema::string(),
        "authority": schema::string(),
        "port": ports(),
    }));
    schema::all(vec![
        schema::when_kind("server", schema::required_options(server)),
        schema::when_kind(
            "client",
            schema::all(vec![schema::options(client), schema::no_exits()]),
        ),
        schema::routes(condition, json!(false)),
    ])
}
