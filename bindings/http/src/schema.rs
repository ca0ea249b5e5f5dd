//! The schema part of `type: http` for `zilla schema`: options and route
//! conditions, as `options.rs` and `routes.rs` read them.

use zilla_engine::register_schema;
use zilla_engine::schema::{self, json, Family, SchemaPart, Value};

register_schema!(SchemaPart {
    family: Family::Binding,
    type_name: "http",
    part,
});

fn part() -> Value {
    let strings = || schema::list(schema::string());
    let options = schema::strict(json!({
        "versions": schema::list(schema::one_of(&["http/1.1", "h2"])),
        "access-control": schema::strict(json!({
            "policy": schema::one_of(&["same-origin", "cross-origin"]),
            "allow": schema::strict(json!({
                "origins": strings(),
                "methods": strings(),
                "headers": strings(),
                "credentials": schema::boolean(),
            })),
            "max-age": schema::integer_from(0),
            "expose": schema::strict(json!({ "headers": strings() })),
        })),
        "authorization": schema::map_of(schema::strict_required(
            json!({
                "credentials": schema::strict(json!({
                    "headers": schema::map_of(schema::string()),
                    "query": schema::map_of(schema::string()),
                    "cookies": schema::map_of(schema::string()),
                })),
            }),
            &["credentials"],
        )),
    }));
    let condition = schema::strict(json!({ "headers": schema::map_of(schema::string()) }));
    schema::all(vec![
        schema::options(options),
        schema::routes(condition, json!(false)),
    ])
}
