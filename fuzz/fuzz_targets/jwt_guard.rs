//! Feeds arbitrary credentials to the JWT guard. The first byte picks the
//! form: a raw token (header, base64, signature and JSON parsing), or claims
//! (any JSON) that the target signs with the guard's own HS256 key, so that
//! claim handling past the signature (expiry, roles, identity, attributes)
//! is reached too. It must decide, never panic.

#![no_main]

use std::sync::OnceLock;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use zilla_engine::{Events, Guard};
use zilla_guard_jwt::{JwtGuard, JwtOptions};

/// The secret of the guard's one key (`k` below is its base64url).
const SECRET: &[u8] = b"fuzzing-secret";

/// A guard with every option that shapes how claims are read.
fn guard() -> &'static JwtGuard {
    static GUARD: OnceLock<JwtGuard> = OnceLock::new();
    GUARD.get_or_init(|| {
        let options: JwtOptions = serde_json::from_value(serde_json::json!({
            "issuer": "https://issuer.example",
            "audience": "zilla",
            "roles": "scope",
            "identity": "sub",
            "attributes": { "tenant": "tenant", "nested": "a.b.c" },
            "leeway": 5,
            "keys": [{ "kty": "oct", "kid": "k1", "alg": "HS256", "k": "ZnV6emluZy1zZWNyZXQ" }]
        }))
        .expect("valid options");
        JwtGuard::new(options, Events::new("fuzz", "jwt0")).expect("a valid guard")
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&form, rest)) = data.split_first() else {
        return;
    };
    let token = if form % 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let Ok(claims) = serde_json::from_slice::<serde_json::Value>(rest) else {
            return;
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let Ok(token) = encode(&header, &claims, &EncodingKey::from_secret(SECRET)) else {
            return;
        };
        token
    };
    let _ = runtime().block_on(guard().authorize(&token));
});
