//! The schema part of `type: ws` for `zilla schema`: options (Zilla's
//! `defaults` and our size limits) and route conditions, as `options.rs`
//! reads them.

use zilla_engine::register_schema;
use zilla_engine::schema::{self, json, Family, SchemaPart, Value};

register_schema!(SchemaPart {
    family: Family::Binding,
    type_name: "ws",
    part,
});

fn part() -> Value {
    let request = || {
        json!({
            "protocol": schema::string(),
            "scheme": schema::string(),
            "authority": schema::string(),
            "path": schema::string(),
        })
    };
    let options = schema::strict(json!({
        "defaults": schema::strict(request()),
        "max-frame-size": schema::integer_from(0),
        "max-message-size": schema::integer_from(0),
    }));
    schema::all(vec![
        schema::options(options),
        schema::routes(schema::strict(request()), json!(false)),
    ])
}
