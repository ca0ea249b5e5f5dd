//! The schema part of guard `type: x509` for `zilla schema`, as
//! `options.rs` reads it; certificate field names are those `fields.rs`
//! parses, so a misspelt field fails validation too.

use zilla_engine::register_schema;
use zilla_engine::schema::{self, json, Family, SchemaPart, Value};

register_schema!(SchemaPart {
    family: Family::Guard,
    type_name: "x509",
    part,
});

/// `subject.dn`, `subject.cn`, `issuer.o`, `san.dns`, `x5t.s256`, ...
const FIELD: &str =
    r"^((subject|issuer)\.(dn|cn|c|l|st|o|ou|street|dc|uid)|san\.(dns|uri|email|ip)|x5t\.s256)$";

fn part() -> Value {
    let field = json!({ "type": "string", "pattern": FIELD });
    let role_match = json!({
        "type": "object",
        "propertyNames": { "pattern": FIELD },
        "additionalProperties": schema::string(),
    });
    schema::options(schema::strict(json!({
        "identity": field.clone(),
        "attributes": schema::map_of(field),
        "roles": schema::map_of(schema::non_empty_list(role_match)),
    })))
}
