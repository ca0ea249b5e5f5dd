//! The schema part of `type: tls` for `zilla schema`: options, route
//! conditions and a client route's `with.certificate`, as `options.rs` and
//! `select.rs` read them.

use zilla_engine::register_schema;
use zilla_engine::schema::{self, json, Family, SchemaPart, Value};

register_schema!(SchemaPart {
    family: Family::Binding,
    type_name: "tls",
    part,
});

fn part() -> Value {
    let names = || schema::list(schema::string());
    let options = schema::strict(json!({
        "keys": names(),
        "trust": names(),
        "trustcacerts": schema::boolean(),
        "sni": names(),
        "alpn": names(),
        "mutual": schema::one_of(&["required", "requested", "none"]),
        "signers": names(),
        "version": schema::one_of(&["TLSv1.2", "TLSv1.3"]),
        "authorization": schema::map_of(schema::strict(json!({
            "credentials": schema::strict(json!({
                "certificates": schema::one_of(&["pem"]),
            })),
        }))),
    }));
    let condition = schema::strict(json!({
        "authority": schema::string(),
        "alpn": schema::string(),
        "port": schema::integer_in(0, 65535),
    }));
    // Only a client presents a certificate, chosen by exactly one property.
    let with = schema::strict_required(
        json!({
            "certificate": {
                "type": "object",
                "properties": {
                    "subject.cn": schema::string(),
                    "subject.dn": schema::string(),
                },
                "additionalProperties": false,
                "minProperties": 1,
                "maxProperties": 1,
            },
        }),
        &["certificate"],
    );
    schema::all(vec![
        schema::options(options),
        schema::when_kind("client", schema::routes(condition.clone(), with)),
        schema::when_kind("server", schema::routes(condition.clone(), json!(false))),
        schema::when_kind("proxy", schema::routes(condition, json!(false))),
    ])
}
