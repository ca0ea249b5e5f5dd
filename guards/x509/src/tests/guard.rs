//! What `authorize` grants, and what it refuses.

use std::time::{Duration, UNIX_EPOCH};

use rcgen::{DnType, SanType};

use super::der::{self, C, CN, O, OU, PRINTABLE, UTF8};
use super::*;

/// Zilla's guard.yaml shape: identity, attributes, and roles whose matches
/// are alternatives of conjunctions.
const ROLES: &str = r#"
identity: subject.cn
attributes:
  organization: subject.o
  tenant: san.uri
roles:
  partner:
    - issuer.cn: "Partner Issuing CA"
  internal:
    - issuer.cn: "Internal CA"
      subject.ou: "Platform"
    - issuer.cn: "Internal CA"
      san.dns: "*.internal.example.com"
"#;

#[test]
fn the_identity_is_the_canonical_subject_dn_by_default() {
    let (_, chain) = platform();
    let session = guard("{}").session(&chain).unwrap();
    assert_eq!(
        session.identity.as_deref(),
        Some("cn=platform.example.com,ou=platform,o=example inc,c=us")
    );
    assert!(session.roles.is_empty());
    assert!(session.attributes.is_empty());
}

#[test]
fn the_identity_is_the_first_value_of_its_field() {
    let (_, chain) = platform();
    let identity = |field: &str| {
        guard(&format!("identity: {field}"))
            .session(&chain)
            .unwrap()
            .identity
            .unwrap()
    };
    assert_eq!(identity("subject.cn"), "platform.example.com");
    assert_eq!(
        identity("san.uri"),
        "spiffe://example.com/ns/prod/sa/platform"
    );
    assert_eq!(identity("san.dns"), "platform.internal.example.com");
    assert_eq!(identity("issuer.dn"), "cn=internal ca,o=example inc,c=us");
}

#[test]
fn a_certificate_lacking_the_identity_field_is_refused_naming_the_field() {
    let (_, chain) = platform();
    let why = rejected(guard("identity: subject.uid").session(&chain));
    assert_eq!(why, "the certificate has no subject.uid for the identity");
    let no_sans = Ca::new("Internal CA").issue(&platform_subject(), Vec::new());
    let why = rejected(guard("identity: san.uri").session(&no_sans.pem()));
    assert_eq!(why, "the certificate has no san.uri for the identity");
}

#[test]
fn an_empty_subject_is_refused_as_an_identity() {
    let leaf = Ca::new("Internal CA").issue(&[], vec![SanType::DnsName(ia5("a.example.com"))]);
    let why = rejected(guard("{}").session(&leaf.pem()));
    assert_eq!(why, "the certificate's subject.dn (the identity) is empty");
    let session = guard("identity: san.dns").session(&leaf.pem()).unwrap();
    assert_eq!(session.identity.as_deref(), Some("a.example.com"));
}

#[test]
fn attributes_take_the_first_value_and_leave_out_absent_fields() {
    let (leaf, chain) = platform();
    let guard = guard(
        "
attributes:
  organization: subject.o
  tenant: san.uri
  host: san.dns
  address: san.ip
  thumbprint: x5t.s256
  issuer: issuer.cn
  user: subject.uid
",
    );
    let session = guard.session(&chain).unwrap();
    let attribute = |name: &str| session.attributes.get(name).map(String::as_str);
    assert_eq!(attribute("organization"), Some("Example Inc"));
    assert_eq!(
        attribute("tenant"),
        Some("spiffe://example.com/ns/prod/sa/platform")
    );
    assert_eq!(attribute("host"), Some("platform.internal.example.com"));
    assert_eq!(attribute("address"), Some("10.1.2.3"));
    assert_eq!(attribute("issuer"), Some("Internal CA"));
    assert_eq!(attribute("user"), None);
    let digest = ring::digest::digest(&ring::digest::SHA256, leaf.der());
    assert_eq!(
        attribute("thumbprint"),
        Some(
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                digest.as_ref()
            )
            .as_str()
        )
    );
    assert_eq!(session.attributes.len(), 6);
}

#[test]
fn zilla_shaped_roles_grant_by_issuer_and_subject() {
    let guard = guard(ROLES);
    let (_, chain) = platform();
    let session = guard.session(&chain).unwrap();
    assert_eq!(session.identity.as_deref(), Some("platform.example.com"));
    assert_eq!(session.roles, ["internal"]);
    assert!(guard.verify(&session, &["internal".into()]));
    assert!(!guard.verify(&session, &["partner".into()]));
    assert_eq!(
        session.attributes.get("organization").map(String::as_str),
        Some("Example Inc")
    );

    let partner = Ca::new("Partner Issuing CA");
    let leaf = partner.issue(&[(DnType::CommonName, "partner-device".into())], Vec::new());
    let session = guard.session(&partner.chain(&leaf)).unwrap();
    assert_eq!(session.roles, ["partner"]);
    assert_eq!(session.attributes.get("tenant"), None);
}

#[test]
fn any_one_alternative_grants_a_role() {
    // The first alternative fails (no OU "Platform"), the second matches
    // on a DNS name.
    let ca = Ca::new("Internal CA");
    let leaf = ca.issue(
        &[
            (DnType::OrganizationalUnitName, "Finance".into()),
            (DnType::CommonName, "ledger".into()),
        ],
        vec![SanType::DnsName(ia5("ledger.internal.example.com"))],
    );
    let session = guard(ROLES).session(&ca.chain(&leaf)).unwrap();
    assert_eq!(session.roles, ["internal"]);
}

#[test]
fn every_field_of_one_match_must_match() {
    let ca = Ca::new("Internal CA");
    let leaf = ca.issue(
        &[
            (DnType::OrganizationalUnitName, "Finance".into()),
            (DnType::CommonName, "ledger".into()),
        ],
        vec![SanType::DnsName(ia5("ledger.example.com"))],
    );
    let session = guard(ROLES).session(&ca.chain(&leaf)).unwrap();
    assert!(session.roles.is_empty(), "{:?}", session.roles);
    // The same subject from another issuer: the OU alone is not enough.
    let other = Ca::new("Other CA");
    let leaf = other.issue(&platform_subject(), platform_sans());
    let session = guard(ROLES).session(&other.chain(&leaf)).unwrap();
    assert!(session.roles.is_empty(), "{:?}", session.roles);
}

#[test]
fn a_role_field_the_certificate_lacks_matches_nothing_and_is_no_error() {
    let ca = Ca::new("Internal CA");
    let leaf = ca.issue(&platform_subject(), Vec::new());
    let guard = guard(
        r#"
roles:
  anywhere:
    - san.ip: "*"
  addressed:
    - subject.l: "*"
"#,
    );
    let session = guard.session(&ca.chain(&leaf)).unwrap();
    assert!(session.roles.is_empty());
    let (_, chain) = platform();
    assert_eq!(guard.session(&chain).unwrap().roles, ["anywhere"]);
}

#[test]
fn a_field_with_several_values_matches_when_any_value_does() {
    let guard = guard(
        r#"
roles:
  events:
    - san.dns: "events.*"
  engineering:
    - subject.ou: engineering
  v6:
    - san.ip: "2001:db8:*"
"#,
    );
    let (_, chain) = platform();
    let session = guard.session(&chain).unwrap();
    assert_eq!(session.roles, ["events", "v6"]);
    let chain = with_subject(&[
        &[(C, PRINTABLE, b"US")],
        &[(O, UTF8, b"Example Inc")],
        &[(OU, UTF8, b"Platform")],
        &[(OU, UTF8, b"Engineering")],
        &[(CN, UTF8, b"platform.example.com")],
    ]);
    assert_eq!(guard.session(&chain).unwrap().roles, ["engineering"]);
}

#[test]
fn roles_are_the_union_of_every_role_matched_in_configuration_order() {
    let guard = guard(
        r#"
roles:
  zeta:
    - subject.o: Example*
  internal:
    - issuer.cn: Internal CA
  partner:
    - issuer.cn: Partner Issuing CA
  alpha:
    - subject.dn: "cn=platform.example.com,*"
  thumb:
    - x5t.s256: "*"
"#,
    );
    let (_, chain) = platform();
    let session = guard.session(&chain).unwrap();
    assert_eq!(session.roles, ["zeta", "internal", "alpha", "thumb"]);
    assert!(guard.verify(&session, &["internal".into(), "alpha".into()]));
    assert!(!guard.verify(&session, &["internal".into(), "partner".into()]));
}

#[test]
fn the_session_expires_at_the_leafs_not_after() {
    let (_, chain) = platform();
    let session = guard("{}").session(&chain).unwrap();
    assert_eq!(
        session.expires_at,
        Some(UNIX_EPOCH + Duration::from_secs(NOT_AFTER))
    );
}

#[test]
fn the_leaf_is_the_first_certificate_and_may_come_alone() {
    let ca = Ca::new("Internal CA");
    let leaf = ca.issue(&platform_subject(), Vec::new());
    let guard = guard("identity: subject.cn");
    let alone = guard.session(&leaf.pem()).unwrap();
    assert_eq!(alone.identity.as_deref(), Some("platform.example.com"));
    let reversed = format!("{}{}", ca.pem, leaf.pem());
    let session = guard.session(&reversed).unwrap();
    assert_eq!(session.identity.as_deref(), Some("Internal CA"));
}

#[test]
fn a_chain_with_escaped_newlines_is_accepted_as_zilla_accepts_it() {
    let (_, chain) = platform();
    let escaped = format!("  {}  ", chain.replace('\n', "\\n"));
    let session = guard("identity: subject.cn").session(&escaped).unwrap();
    assert_eq!(session.identity.as_deref(), Some("platform.example.com"));
    let crlf = chain.replace('\n', "\r\n");
    assert!(guard("{}").session(&crlf).is_ok());
}

#[test]
fn what_is_not_a_certificate_chain_is_refused_without_echoing_it() {
    let guard = guard("{}");
    assert_eq!(rejected(guard.session("")), "empty certificate chain");
    assert_eq!(rejected(guard.session("  \n ")), "empty certificate chain");
    assert_eq!(
        rejected(guard.session("not-a-certificate-chain")),
        "unable to parse certificate chain: it holds no certificate"
    );
    let why =
        rejected(guard.session(
            "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
        ));
    assert_eq!(
        why,
        "unable to parse certificate chain: it is not well-formed PEM"
    );
    let why = rejected(guard.session("-----BEGIN CERTIFICATE-----\nMIIB\n"));
    assert_eq!(
        why,
        "unable to parse certificate chain: it is not well-formed PEM"
    );
    let why = rejected(guard.session(&der::pem(b"\x30\x03\x02\x01\x01")));
    assert!(
        why.starts_with("unable to parse certificate chain: certificate 0 is not an X.509"),
        "{why}"
    );
}

#[test]
fn a_private_key_in_the_chain_is_refused_by_kind_only() {
    let key = rcgen::KeyPair::generate().unwrap();
    let (_, chain) = platform();
    let with_key = format!("{chain}{}", key.serialize_pem());
    let why = rejected(guard("{}").session(&with_key));
    assert_eq!(
        why,
        "unable to parse certificate chain: it holds a PRIVATE KEY section, which is not a certificate"
    );
}

#[test]
fn a_broken_intermediate_refuses_the_chain() {
    let (leaf, _) = platform();
    let chain = format!("{}{}", leaf.pem(), der::pem(&[0x30, 0x00]));
    let why = rejected(guard("{}").session(&chain));
    assert!(
        why.starts_with("unable to parse certificate chain: certificate 1 "),
        "{why}"
    );
    let mut trailing = leaf.der().to_vec();
    trailing.push(0);
    let why = rejected(guard("{}").session(&der::pem(&trailing)));
    assert_eq!(
        why,
        "unable to parse certificate chain: certificate 0 has bytes after its end"
    );
}

#[tokio::test]
async fn authorize_answers_what_session_does() {
    let guard: Arc<dyn Guard> = Arc::new(guard(ROLES));
    let (_, chain) = platform();
    let session = guard.authorize(&chain).await.unwrap();
    assert_eq!(session.identity.as_deref(), Some("platform.example.com"));
    assert!(guard.verify(&session, &["internal".into()]));
    assert!(guard.authorize("garbage").await.is_err());
}
