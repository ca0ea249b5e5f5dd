//! The schema part of `type: mqtt` for `zilla schema`: server and client
//! options (with our `limits`, `flow` and friends beyond Zilla) and route
//! conditions, as `options.rs`, `flow.rs` and `limits/options.rs` read them.

use zilla_engine::register_schema;
use zilla_engine::schema::{self, json, Family, SchemaPart, Value};

register_schema!(SchemaPart {
    family: Family::Binding,
    type_name: "mqtt",
    part,
});

fn authorization() -> Value {
    schema::map_of(schema::strict_required(
        json!({
            "credentials": schema::strict(json!({
                "connect": schema::strict(json!({
                    "username": schema::string(),
                    "password": schema::string(),
                })),
                "authentication": schema::strict_required(
                    json!({ "method": schema::string() }),
                    &["method"],
                ),
            })),
        }),
        &["credentials"],
    ))
}

fn rate() -> Value {
    schema::strict_required(
        json!({
            "rate": schema::non_negative_number(),
            "burst": schema::non_negative_number(),
        }),
        &["rate"],
    )
}

fn limit() -> Value {
    let key = json!({
        "anyOf": [
            schema::one_of(&["client-id", "identity", "source-address", "session"]),
            schema::strict_required(json!({ "claim": schema::string() }), &["claim"]),
        ]
    });
    schema::strict_required(
        json!({
            "key": key,
            "sessions": schema::integer_from(0),
            "connects": rate(),
            "publishes": rate(),
            "bytes": rate(),
            "subscriptions": schema::integer_from(0),
            "topic": schema::strict(json!({
                "length": schema::integer_from(0),
                "levels": schema::integer_from(0),
            })),
        }),
        &["key"],
    )
}

fn server() -> Value {
    let u16 = || schema::integer_in(0, 65535);
    let u32 = || schema::integer_in(0, 4_294_967_295);
    schema::strict(json!({
        "versions": schema::list(schema::one_of(&["v3.1.1", "v5"])),
        "maximum-packet-size": u32(),
        "connect-timeout": u16(),
        "authorization": authorization(),
        "store": schema::string(),
        "topics": schema::list(schema::strict_required(
            json!({
                "name": schema::string(),
                "content": schema::model(),
                "user-properties": schema::map_of(schema::model()),
                "on-invalid": schema::one_of(&["disconnect", "reject"]),
            }),
            &["name"],
        )),
        "flow": schema::strict(json!({
            "receive-maximum": u16(),
            "publish-buffer": u32(),
            "delivery-buffer": u32(),
        })),
        "server-keep-alive": u16(),
        "client-topic-aliases": u16(),
        "server-reference": schema::string(),
        "limits": schema::list(limit()),
        "limit-wait": u32(),
        "unavailable": schema::one_of(&["local", "refuse"]),
        "client-id": schema::string(),
    }))
}

fn client() -> Value {
    schema::strict(json!({
        "version": schema::one_of(&["v3.1.1", "v5"]),
        "connect-timeout": schema::integer_in(0, 65535),
        "authorization": authorization(),
    }))
}

fn part() -> Value {
    let topic = schema::strict_required(
        json!({
            "topic": schema::string(),
            "params": schema::map_of(schema::string()),
        }),
        &["topic"],
    );
    let condition = schema::strict(json!({
        "session": schema::list(schema::strict_required(
            json!({ "client-id": schema::string() }),
            &["client-id"],
        )),
        "publish": schema::list(topic.clone()),
        "subscribe": schema::list(topic),
    }));
    schema::all(vec![
        schema::when_kind("server", schema::options(server())),
        schema::when_kind("client", schema::options(client())),
        schema::routes(condition, json!({ "type": "object" })),
    ])
}
