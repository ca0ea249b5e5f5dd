//! The schema part of vault `type: filesystem` for `zilla schema`: key,
//! trust and signer stores, and the revocation lists beyond Zilla, as
//! `lib.rs` and `crl.rs` read them.

use zilla_engine::register_schema;
use zilla_engine::schema::{self, json, Family, SchemaPart, Value};

register_schema!(SchemaPart {
    family: Family::Vault,
    type_name: "filesystem",
    part,
});

fn part() -> Value {
    // `jks` parses only to be refused with a conversion hint; the schema
    // refuses it up front.
    let store = || {
        schema::strict_required(
            json!({
                "store": schema::string(),
                "type": schema::one_of(&["pkcs12", "pem"]),
                "password": schema::string(),
            }),
            &["store"],
        )
    };
    schema::options(schema::strict(json!({
        "keys": store(),
        "trust": store(),
        "signers": store(),
        "revocation": schema::one_of(&["crl", "none"]),
        "crl": schema::strict_required(
            json!({
                "store": schema::string(),
                "type": schema::one_of(&["pem", "der"]),
            }),
            &["store"],
        ),
    })))
}
