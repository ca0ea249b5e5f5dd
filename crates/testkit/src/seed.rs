//! The seed example `examples/mqtt.proxy.jwt`: its directory, its `guards:`
//! section for tests that add the same guard to their own configuration, and
//! tokens signed with its private key.

use std::path::{Path, PathBuf};

/// `examples/mqtt.proxy.jwt` in this repository.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mqtt.proxy.jwt")
}

/// The body of the seed's `guards:` section (the `authn_jwt` guard), to be
/// placed under a `guards:` key.
pub fn guards_yaml() -> String {
    let seed = std::fs::read_to_string(dir().join("zilla.yaml")).expect("the seed config");
    seed.split("guards:\n")
        .nth(1)
        .and_then(|rest| rest.split("bindings:\n").next())
        .expect("the seed has guards before bindings")
        .to_owned()
}

/// An RS256 token over `claims`, signed with the seed's private key under `kid`.
pub fn sign(claims: &serde_json::Value, kid: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let key = std::fs::read(dir().join("private.pem")).expect("the seed's private key");
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&key).expect("an RSA key");
    jsonwebtoken::encode(&header, claims, &key).expect("signing")
}
