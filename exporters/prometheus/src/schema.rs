//! The schema part of exporter `type: prometheus` for `zilla schema`, as
//! `PrometheusOptions` reads it.

use zilla_engine::register_schema;
use zilla_engine::schema::{self, json, Family, SchemaPart, Value};

register_schema!(SchemaPart {
    family: Family::Exporter,
    type_name: "prometheus",
    part,
});

fn part() -> Value {
    schema::required_options(schema::strict_required(
        json!({
            "endpoints": schema::non_empty_list(schema::strict_required(
                json!({
                    "scheme": schema::one_of(&["http"]),
                    "port": schema::integer_in(0, 65535),
                    "path": schema::string(),
                }),
                &["scheme", "port"],
            )),
        }),
        &["endpoints"],
    ))
}
