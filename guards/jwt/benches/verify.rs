//! What authenticating a CONNECT costs: verifying the seed's RS256 token
//! (signature, claims, roles) with the guard as configured in the seed, the
//! first time (no cache: every token is new) and again (a reconnect storm:
//! the token was verified before), side by side.
//! Run: `cargo bench -p zilla-guard-jwt --bench verify`.

use std::hint::black_box;
use std::path::Path;

use criterion::Criterion;
use zilla_engine::{Events, Guard};
use zilla_guard_jwt::{JwtGuard, JwtOptions};

fn seed() -> (JwtGuard, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mqtt.proxy.jwt");
    let config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("zilla.yaml")).expect("seed"))
            .expect("yaml");
    let options: JwtOptions =
        serde_yaml::from_value(config["guards"]["authn_jwt"]["options"].clone()).expect("options");
    let guard = JwtGuard::new(options, Events::new("bench", "authn_jwt")).expect("guard");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = serde_json::json!({
        "iss": "https://auth.example.com", "aud": "https://api.example.com",
        "sub": "device1", "exp": now + 86_400, "scope": "mqtt:stream",
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("example".into());
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(
        &std::fs::read(dir.join("private.pem")).expect("key"),
    )
    .expect("rsa");
    (
        guard,
        jsonwebtoken::encode(&header, &claims, &key).expect("token"),
    )
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let (guard, token) = seed();
    let roles = vec!["mqtt:stream".to_owned()];
    let uncached = guard.with_cache_size(0);
    criterion.bench_function("jwt authorize RS256 (seed guard), verified", |b| {
        b.iter(|| {
            let session = runtime
                .block_on(uncached.authorize(black_box(&token)))
                .expect("valid");
            black_box(uncached.verify(&session, &roles))
        })
    });
    let (guard, token) = seed();
    runtime.block_on(guard.authorize(&token)).expect("valid");
    criterion.bench_function("jwt authorize RS256 (seed guard), cached", |b| {
        b.iter(|| {
            let session = runtime
                .block_on(guard.authorize(black_box(&token)))
                .expect("valid");
            black_box(guard.verify(&session, &roles))
        })
    });
    criterion.final_summary();
}
