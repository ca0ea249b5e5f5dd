//! The schema part of guard `type: jwt` for `zilla schema`, as `JwtOptions`
//! and `Jwk` read them: a misspelt option (`isuer`) fails validation.

use zilla_engine::register_schema;
use zilla_engine::schema::{self, json, Family, SchemaPart, Value};

register_schema!(SchemaPart {
    family: Family::Guard,
    type_name: "jwt",
    part,
});

fn part() -> Value {
    let text = schema::string;
    let jwk = schema::strict_required(
        json!({
            "kty": text(), "kid": text(), "alg": text(), "use": text(),
            "n": text(), "e": text(), "crv": text(), "x": text(), "y": text(), "k": text(),
            "key_ops": schema::list(text()),
            "x5c": schema::list(text()),
            "x5t": text(),
        }),
        &["kty"],
    );
    schema::options(schema::strict(json!({
        "issuer": text(),
        "audience": text(),
        "keys": { "anyOf": [schema::list(jwk), text()] },
        "roles": text(),
        "identity": text(),
        "attributes": schema::map_of(text()),
        "challenge": schema::integer_from(0),
        "leeway": schema::integer_from(0),
    })))
}
