//! The schema part of exporter `type: otlp` for `zilla schema`, as
//! `OtlpOptions` reads it.

use zilla_engine::register_schema;
use zilla_engine::schema::{self, json, Family, SchemaPart, Value};

register_schema!(SchemaPart {
    family: Family::Exporter,
    type_name: "otlp",
    part,
});

fn part() -> Value {
    schema::required_options(schema::strict_required(
        json!({
            "interval": schema::non_negative_number(),
            "signals": schema::list(schema::one_of(&["metrics", "logs"])),
            "endpoint": schema::strict_required(
                json!({
                    "protocol": schema::one_of(&["http"]),
                    "location": schema::string(),
                    "overrides": schema::strict(json!({
                        "metrics": schema::string(),
                        "logs": schema::string(),
                    })),
                }),
                &["location"],
            ),
        }),
        &["endpoint"],
    ))
}
