//! What each field holds for a certificate.

use std::time::{Duration, UNIX_EPOCH};

use rcgen::string::{BmpString, PrintableString, TeletexString, UniversalString};
use rcgen::{CustomExtension, DnType, DnValue, SanType};

use super::der::{
    self, C, CN, DC, EMAIL_ADDRESS, IA5, L, O, OU, PRINTABLE, SERIAL_NUMBER, ST, STREET, T61, UID,
    UTF8,
};
use super::*;

fn cn(value: DnValue) -> String {
    let ca = Ca::new("Internal CA");
    let leaf = ca.issue(&[(DnType::CommonName, value)], Vec::new());
    leaf.pem()
}

#[test]
fn subject_dn_is_rfc2253_canonical_as_zilla_compares_it() {
    let (_, chain) = platform();
    assert_eq!(
        values(&chain, "subject.dn"),
        ["cn=platform.example.com,ou=platform,o=example inc,c=us"]
    );
}

#[test]
fn issuer_dn_and_issuer_fields_come_from_the_issuer_name() {
    let (_, chain) = platform();
    assert_eq!(
        values(&chain, "issuer.dn"),
        ["cn=internal ca,o=example inc,c=us"]
    );
    assert_eq!(values(&chain, "issuer.cn"), ["Internal CA"]);
    assert_eq!(values(&chain, "issuer.o"), ["Example Inc"]);
    assert_eq!(values(&chain, "issuer.c"), ["US"]);
    assert!(values(&chain, "issuer.ou").is_empty());
}

#[test]
fn subject_fields_keep_the_values_as_written() {
    let (_, chain) = platform();
    assert_eq!(values(&chain, "subject.cn"), ["platform.example.com"]);
    assert_eq!(values(&chain, "subject.o"), ["Example Inc"]);
    assert_eq!(values(&chain, "subject.ou"), ["Platform"]);
    assert_eq!(values(&chain, "subject.c"), ["US"]);
    assert!(values(&chain, "subject.l").is_empty(), "absent, not empty");
}

#[test]
fn every_rfc2253_keyword_attribute_is_a_field() {
    let chain = with_subject(&[
        &[(DC, IA5, b"com")],
        &[(DC, IA5, b"example")],
        &[(C, PRINTABLE, b"DE")],
        &[(ST, UTF8, b"Bayern")],
        &[(L, UTF8, b"Munich")],
        &[(STREET, UTF8, b"Main Street 1")],
        &[(O, UTF8, b"Example GmbH")],
        &[(UID, UTF8, b"u-1234")],
        &[(CN, UTF8, b"device-1")],
    ]);
    assert_eq!(values(&chain, "subject.dc"), ["com", "example"]);
    assert_eq!(values(&chain, "subject.c"), ["DE"]);
    assert_eq!(values(&chain, "subject.st"), ["Bayern"]);
    assert_eq!(values(&chain, "subject.l"), ["Munich"]);
    assert_eq!(values(&chain, "subject.street"), ["Main Street 1"]);
    assert_eq!(values(&chain, "subject.o"), ["Example GmbH"]);
    assert_eq!(values(&chain, "subject.uid"), ["u-1234"]);
    assert_eq!(values(&chain, "subject.cn"), ["device-1"]);
    // dc and uid are IA5String/UTF8String; the DN shows the IA5String in hex,
    // as Java's canonical form does for every type but Printable and UTF8.
    assert_eq!(
        values(&chain, "subject.dn"),
        [
            "cn=device-1,uid=u-1234,o=example gmbh,street=main street 1,l=munich,st=bayern,c=de,\
          dc=#16076578616d706c65,dc=#1603636f6d"
        ]
    );
}

#[test]
fn a_repeated_ou_has_both_values_in_certificate_order() {
    let chain = with_subject(&[
        &[(C, PRINTABLE, b"US")],
        &[(O, UTF8, b"Example Inc")],
        &[(OU, UTF8, b"Platform")],
        &[(OU, UTF8, b"Engineering")],
        &[(CN, UTF8, b"platform.example.com")],
    ]);
    assert_eq!(values(&chain, "subject.ou"), ["Platform", "Engineering"]);
    assert_eq!(
        values(&chain, "subject.dn"),
        ["cn=platform.example.com,ou=engineering,ou=platform,o=example inc,c=us"]
    );
}

#[test]
fn one_relative_name_with_two_attributes_gives_both_fields() {
    let chain = with_subject(&[
        &[(C, PRINTABLE, b"US")],
        &[(O, UTF8, b"Example Inc")],
        &[(OU, UTF8, b"beta"), (CN, UTF8, b"alpha")],
    ]);
    assert_eq!(values(&chain, "subject.cn"), ["alpha"]);
    assert_eq!(values(&chain, "subject.ou"), ["beta"]);
    assert_eq!(
        values(&chain, "subject.dn"),
        ["cn=alpha+ou=beta,o=example inc,c=us"],
        "the values of one relative name sorted, keywords first"
    );
}

#[test]
fn a_multi_valued_relative_name_sorts_keywords_then_oids() {
    let chain = with_subject(&[&[
        (SERIAL_NUMBER, PRINTABLE, b"42"),
        (UID, UTF8, b"zed"),
        (EMAIL_ADDRESS, IA5, b"a@example.com"),
        (CN, UTF8, b"Zed"),
        (OU, UTF8, b"b"),
        (OU, UTF8, b"A"),
        (OU, UTF8, b"b"),
    ]]);
    assert_eq!(
        values(&chain, "subject.dn"),
        [
            "cn=zed+ou=a+ou=b+ou=b+uid=zed+1.2.840.113549.1.9.1=#160d61406578616d706c652e636f6d\
          +2.5.4.5=#13023432"
        ]
    );
    // Java's Rdn sorts one attribute's values ignoring case and keeps one of
    // equal values.
    assert_eq!(values(&chain, "subject.ou"), ["A", "b"]);
}

#[test]
fn attributes_outside_the_rfc2253_keywords_are_only_in_the_dn() {
    let chain = with_subject(&[
        &[(CN, UTF8, b"device-1")],
        &[(EMAIL_ADDRESS, IA5, b"d@example.com")],
        &[(SERIAL_NUMBER, PRINTABLE, b"SN1")],
    ]);
    assert_eq!(
        values(&chain, "subject.dn"),
        ["2.5.4.5=#1303534e31,1.2.840.113549.1.9.1=#160d64406578616d706c652e636f6d,cn=device-1"]
    );
}

#[test]
fn the_dn_escapes_special_characters_and_folds_spaces() {
    let chain = with_subject(&[
        &[(O, UTF8, b"  Example   Inc  ")],
        &[(OU, UTF8, b"#1+2<3>;\"\\")],
        &[(CN, UTF8, b"Doe, John")],
    ]);
    assert_eq!(values(&chain, "subject.cn"), ["Doe, John"]);
    assert_eq!(values(&chain, "subject.o"), ["  Example   Inc  "]);
    assert_eq!(
        values(&chain, "subject.dn"),
        ["cn=doe\\, john,ou=\\#1\\+2\\<3\\>\\;\\\"\\\\,o=example inc"]
    );
}

#[test]
fn utf8_printable_and_ia5_names_decode_as_written() {
    let utf8 = cn(DnValue::Utf8String("Zoë Ünïcödé 中文".into()));
    assert_eq!(values(&utf8, "subject.cn"), ["Zoë Ünïcödé 中文"]);
    let printable = cn(DnValue::PrintableString(
        PrintableString::try_from("Printable (Name) 1").unwrap(),
    ));
    assert_eq!(values(&printable, "subject.cn"), ["Printable (Name) 1"]);
    let ia5 = cn(DnValue::Ia5String(ia5("ia5@example.com")));
    assert_eq!(values(&ia5, "subject.cn"), ["ia5@example.com"]);
}

#[test]
fn bmp_and_universal_string_names_decode_as_utf16_and_utf32() {
    let bmp = cn(DnValue::BmpString(BmpString::try_from("Zoë 中文").unwrap()));
    assert_eq!(values(&bmp, "subject.cn"), ["Zoë 中文"]);
    // Java's canonical form writes types other than Printable and UTF8 in hex.
    assert_eq!(
        values(&bmp, "subject.dn"),
        ["cn=#1e0c005a006f00eb00204e2d6587"]
    );
    let universal = cn(DnValue::UniversalString(
        UniversalString::try_from("Zoë 😀").unwrap(),
    ));
    assert_eq!(values(&universal, "subject.cn"), ["Zoë 😀"]);
}

#[test]
fn teletex_names_decode_as_latin1() {
    let ascii = cn(DnValue::TeletexString(
        TeletexString::try_from("Teletex").unwrap(),
    ));
    assert_eq!(values(&ascii, "subject.cn"), ["Teletex"]);
    let latin1 = with_subject(&[&[(CN, T61, b"Caf\xe9 M\xfcller")]]);
    assert_eq!(values(&latin1, "subject.cn"), ["Café Müller"]);
    assert_eq!(
        values(&latin1, "subject.dn"),
        ["cn=#140b436166e9204dfc6c6c6572"]
    );
}

#[test]
fn the_dn_is_case_folded_and_nfkd_normalized_as_java_does() {
    let chain = cn(DnValue::Utf8String("Straße Zoë ﬁ".into()));
    assert_eq!(values(&chain, "subject.dn"), ["cn=strasse zoe\u{308} fi"]);
    assert_eq!(
        values(&chain, "subject.cn"),
        ["Straße Zoë ﬁ"],
        "fields stay as written"
    );
}

#[test]
fn every_subject_alt_name_kind_in_extension_order() {
    let (_, chain) = platform();
    assert_eq!(
        values(&chain, "san.dns"),
        [
            "platform.internal.example.com",
            "events.internal.example.com"
        ]
    );
    assert_eq!(
        values(&chain, "san.uri"),
        ["spiffe://example.com/ns/prod/sa/platform"]
    );
    assert_eq!(values(&chain, "san.email"), ["platform@example.com"]);
    assert_eq!(
        values(&chain, "san.ip"),
        ["10.1.2.3", "2001:db8:0:0:0:0:0:1"]
    );
}

#[test]
fn a_certificate_without_subject_alt_names_has_no_san_fields() {
    let chain = cn("no-sans".into());
    for field in ["san.dns", "san.uri", "san.email", "san.ip"] {
        assert!(values(&chain, field).is_empty(), "{field}");
    }
}

#[test]
fn an_unreadable_subject_alt_name_extension_is_read_as_java_reads_it() {
    let ca = Ca::new("Internal CA");
    let subject = [(DnType::CommonName, DnValue::from("odd-sans"))];
    // An OCTET STRING where the GeneralNames SEQUENCE belongs.
    let broken = || CustomExtension::from_oid_content(&[2, 5, 29, 17], vec![0x04, 0x00]);
    let lenient = ca.issue_with(&subject, Vec::new(), vec![broken()]);
    assert!(
        values(&lenient.pem(), "san.dns").is_empty(),
        "non-critical: no names"
    );
    assert_eq!(values(&lenient.pem(), "subject.cn"), ["odd-sans"]);
    let guard = guard("identity: subject.cn\nattributes: {host: san.dns}");
    assert!(guard.session(&lenient.pem()).is_ok());

    let mut critical = broken();
    critical.set_criticality(true);
    let strict = ca.issue_with(&subject, Vec::new(), vec![critical]);
    assert_eq!(
        rejected(guard.session(&strict.pem())),
        "unable to parse certificate chain: the leaf's critical subjectAltName does not parse"
    );

    let twice = ca.issue_with(
        &subject,
        vec![SanType::DnsName(ia5("a.example.com"))],
        vec![CustomExtension::from_oid_content(
            &[2, 5, 29, 17],
            vec![0x30, 0x00],
        )],
    );
    assert_eq!(
        rejected(guard.session(&twice.pem())),
        "unable to parse certificate chain: the leaf has more than one subjectAltName extension"
    );
    // Refused whatever the guard reads.
    assert!(super::guard("{}").session(&twice.pem()).is_err());
    assert!(super::guard("{}").session(&strict.pem()).is_err());
}

#[test]
fn x5t_s256_of_a_fixed_certificate_is_its_known_thumbprint() {
    // Computed outside Rust from the same bytes (encoded again in Python):
    // sha256sum gives 8894d5de29098ab05f08823c759d4b2da47c750ed02fcf537f91ff14771b8106,
    // as `openssl x509 -fingerprint -sha256` does, and base64url of that
    // digest without padding is the value below.
    let chain = der::pem(&der::fixed_certificate());
    assert_eq!(
        values(&chain, "x5t.s256"),
        ["iJTV3ikJirBfCII8dZ1LLaR8dQ7QL89Tf5H_FHcbgQY"]
    );
    let session = guard("identity: x5t.s256").session(&chain).unwrap();
    assert_eq!(
        session.identity.as_deref(),
        Some("iJTV3ikJirBfCII8dZ1LLaR8dQ7QL89Tf5H_FHcbgQY")
    );
    assert_eq!(
        session.expires_at,
        Some(UNIX_EPOCH + Duration::from_secs(NOT_AFTER))
    );
}

#[test]
fn x5t_s256_is_the_sha256_of_the_leaf_not_the_chain() {
    let (leaf, chain) = platform();
    let digest = ring::digest::digest(&ring::digest::SHA256, leaf.der());
    let expected = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        digest.as_ref(),
    );
    assert_eq!(expected.len(), 43);
    assert!(!expected.contains(['=', '+', '/']));
    assert_eq!(values(&chain, "x5t.s256"), [expected]);
}
