//! The guard against tokens signed with the seed's private key, and forgeries.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;

use super::*;

const SEED_KEY: &str = include_str!("../../../examples/mqtt.proxy.jwt/private.pem");
const SEED_GUARD: &str = "
issuer: https://auth.example.com
audience: https://api.example.com
keys:
  - kty: RSA
    n: qqEu50hX+43Bx4W1UYWnAVKwFm+vDbP0kuIOSLVNa+HKQdHTf+3Sei5UCnkskn796izA29D0DdCy3ET9oaKRHIJyKbqFl0rv6f516QzOoXKC6N01sXBHBE/ovs0wwDvlaW+gFGPgkzdcfUlyrWLDnLV7LcuQymhTND2uH0oR3wJnNENN/OFgM1KGPPDOe19YsIKdLqARgxrhZVsh06OurEviZTXOBFI5r+yac7haDwOQhLHXNv+Y9MNvxs5QLWPFIM3bNUWfYrJnLrs4hGJS+y/KDM9Si+HL30QAFXy4YNO33J8DHjZ7ddG5n8/FqplOKvRtUgjcKWlxoGY4VdVaDQ==
    e: AQAB
    alg: RS256
    kid: example
";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn guard(yaml: &str) -> JwtGuard {
    let options: JwtOptions = serde_yaml::from_str(yaml).unwrap();
    JwtGuard::new(options, Events::new("test", "authn_jwt")).unwrap()
}

fn sign(claims: serde_json::Value, kid: Option<&str>) -> String {
    let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(SEED_KEY.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn claims() -> serde_json::Value {
    json!({
        "iss": "https://auth.example.com",
        "aud": "https://api.example.com",
        "sub": "device1",
        "exp": now() + 3600,
        "scope": "mqtt:stream other",
        "tenant": {"id": "acme"},
    })
}

fn rejected(result: Result<GuardSession, GuardRejection>) -> String {
    match result {
        Err(GuardRejection::InvalidCredentials(why)) => why,
        other => panic!("expected an invalid-credentials rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn a_valid_seed_token_grants_roles_identity_and_attributes() {
    let guard = guard(&format!("{SEED_GUARD}attributes:\n  tenant: tenant.id\n"));
    let session = guard
        .authorize(&sign(claims(), Some("example")))
        .await
        .unwrap();
    assert_eq!(session.identity.as_deref(), Some("device1"));
    assert_eq!(session.roles, vec!["mqtt:stream", "other"]);
    assert_eq!(
        session.attributes.get("tenant").map(String::as_str),
        Some("acme")
    );
    assert!(session.expires_at.is_some());
    assert!(guard.verify(&session, &["mqtt:stream".into()]));
    assert!(!guard.verify(&session, &["admin".into()]));
}

#[tokio::test]
async fn roles_from_an_array_at_a_dotted_path() {
    let guard = guard(&format!(
        "{SEED_GUARD}roles: realm.roles\nidentity: client_id\n"
    ));
    let mut claims = claims();
    claims["realm"] = json!({"roles": ["reader", "writer"]});
    claims["client_id"] = json!("app-7");
    let session = guard
        .authorize(&sign(claims, Some("example")))
        .await
        .unwrap();
    assert_eq!(session.roles, vec!["reader", "writer"]);
    assert_eq!(session.identity.as_deref(), Some("app-7"));
}

#[tokio::test]
async fn bad_tokens_are_refused_with_their_reason() {
    let guard = guard(SEED_GUARD);
    let with = |key: &str, value: serde_json::Value| {
        let mut claims = claims();
        claims[key] = value;
        sign(claims, Some("example"))
    };
    assert_eq!(
        rejected(guard.authorize(&with("exp", json!(now() - 10))).await),
        "token expired"
    );
    assert_eq!(
        rejected(guard.authorize(&with("nbf", json!(now() + 600))).await),
        "token not valid yet (nbf)"
    );
    assert_eq!(
        rejected(guard.authorize(&with("iss", json!("https://evil"))).await),
        "wrong issuer"
    );
    assert_eq!(
        rejected(guard.authorize(&with("aud", json!("https://other"))).await),
        "wrong audience"
    );
    assert_eq!(
        rejected(guard.authorize(&sign(claims(), Some("rotated"))).await),
        "unknown key id rotated"
    );

    let token = sign(claims(), Some("example"));
    let (head, signature) = token.rsplit_once('.').unwrap();
    let mut forged = signature.to_owned().into_bytes();
    forged[10] = if forged[10] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{head}.{}", String::from_utf8(forged).unwrap());
    assert_eq!(rejected(guard.authorize(&tampered).await), "bad signature");

    // alg none: an unsigned token.
    use base64_url_encode as b64;
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT","kid":"example"}"#),
        b64(claims().to_string().as_bytes())
    );
    assert!(rejected(guard.authorize(&none).await).starts_with("not a signed JWT"));

    // HS256 "signed" with the RSA public key as the secret: algorithm confusion.
    let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("example".into());
    let confused = encode(
        &header,
        &claims(),
        &EncodingKey::from_secret(SEED_GUARD.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        rejected(guard.authorize(&confused).await),
        "token alg HS256 does not match key alg RS256"
    );
    assert!(rejected(guard.authorize("not-a-jwt").await).starts_with("not a signed JWT"));
}

/// base64url without padding, for hand-made tokens.
fn base64_url_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn options_round_trip_and_reject_none_keys() {
    let options: JwtOptions = serde_yaml::from_str(SEED_GUARD).unwrap();
    let again: JwtOptions =
        serde_yaml::from_str(&serde_yaml::to_string(&options).unwrap()).unwrap();
    assert_eq!(options, again);
    let none: JwtOptions =
        serde_yaml::from_str("keys:\n  - kty: oct\n    k: c2VjcmV0\n    alg: none\n    kid: x\n")
            .unwrap();
    let error = JwtGuard::new(none, Events::new("t", "g")).unwrap_err();
    assert_eq!(
        error,
        (
            "keys[0]".to_owned(),
            "`alg: none` is never accepted".to_owned()
        )
    );
    let url: JwtOptions = serde_yaml::from_str("keys: http://127.0.0.1:1/jwks.json\n").unwrap();
    assert_eq!(
        url.keys,
        Some(KeysOption::Url("http://127.0.0.1:1/jwks.json".into()))
    );
}

#[tokio::test]
async fn a_verified_token_is_remembered_and_a_tampered_one_is_not_taken_for_it() {
    let guard = guard(SEED_GUARD);
    let token = sign(claims(), Some("example"));
    let first = guard.authorize(&token).await.unwrap();
    assert_eq!(guard.verified.len(), 1);
    assert_eq!(guard.authorize(&token).await.unwrap(), first);
    // The same claims with a corrupted signature: not a cache hit.
    // A character in the middle of the signature: still valid base64url
    // (the last one also carries padding bits), so only the check refuses it.
    let at = token.rfind('.').unwrap() + 10;
    let mut tampered = token.clone();
    let swapped = if &token[at..=at] == "A" { "B" } else { "A" };
    tampered.replace_range(at..=at, swapped);
    assert!(rejected(guard.authorize(&tampered).await).contains("signature"));
    assert_eq!(guard.verified.len(), 1, "refusals are not remembered");
}

#[tokio::test]
async fn a_guard_without_a_cache_verifies_every_time() {
    let guard = guard(SEED_GUARD).with_cache_size(0);
    let token = sign(claims(), Some("example"));
    guard.authorize(&token).await.unwrap();
    guard.authorize(&token).await.unwrap();
    assert_eq!(guard.verified.len(), 0);
}
