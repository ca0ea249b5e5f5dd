//! The options as users write them in `zilla.yaml`, and the faults the
//! engine reports for them.

use zilla_engine::Engine;

use super::*;

/// A configuration in the shape of Zilla's guard.yaml for the x509 guard.
const ZILLA_CONFIG: &str = r#"
name: x509-test
guards:
  authn_x509:
    type: x509
    options:
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

fn errors(config: &str) -> String {
    match Engine::from_yaml(config).build() {
        Ok(_) => panic!("expected configuration errors"),
        Err(errors) => errors.to_string(),
    }
}

fn options_of(config: &str) -> X509Options {
    let document: serde_yaml::Value = serde_yaml::from_str(config).unwrap();
    serde_yaml::from_value(document["guards"]["authn_x509"]["options"].clone()).unwrap()
}

#[test]
fn a_zilla_shaped_configuration_builds() {
    Engine::from_yaml(ZILLA_CONFIG).build().unwrap();
    let options = options_of(ZILLA_CONFIG);
    assert_eq!(options.identity.as_deref(), Some("subject.cn"));
    assert_eq!(
        options.attributes.iter().collect::<Vec<_>>(),
        [
            (&"organization".to_owned(), &"subject.o".to_owned()),
            (&"tenant".to_owned(), &"san.uri".to_owned())
        ]
    );
    assert_eq!(
        options.roles.keys().collect::<Vec<_>>(),
        ["partner", "internal"]
    );
    let internal = &options.roles["internal"];
    assert_eq!(internal.len(), 2, "two alternatives");
    assert_eq!(internal[0].len(), 2, "two fields in the first");
    assert_eq!(internal[1]["san.dns"], "*.internal.example.com");

    let compiled = options.compile().unwrap();
    assert_eq!(compiled.identity.to_string(), "subject.cn");
    assert_eq!(compiled.roles.len(), 2);
}

#[test]
fn options_survive_a_yaml_round_trip() {
    let options = options_of(ZILLA_CONFIG);
    let text = serde_yaml::to_string(&options).unwrap();
    let again: X509Options = serde_yaml::from_str(&text).unwrap();
    assert_eq!(again, options);
    assert_eq!(
        serde_yaml::to_string(&X509Options::default()).unwrap(),
        "{}\n"
    );
}

#[test]
fn a_guard_without_options_identifies_by_subject_dn() {
    let config = "
name: x509-test
guards:
  authn_x509:
    type: x509
";
    Engine::from_yaml(config).build().unwrap();
    let compiled = X509Options::default().compile().unwrap();
    assert_eq!(compiled.identity.to_string(), "subject.dn");
    assert!(compiled.attributes.is_empty() && compiled.roles.is_empty());
}

#[test]
fn an_unknown_option_is_an_error_with_its_line() {
    let config = ZILLA_CONFIG.replace("identity:", "identiy:");
    let errors = errors(&config);
    assert!(
        errors.contains("line 7: guards.authn_x509.options.identiy: unknown field `identiy`"),
        "{errors}"
    );
}

#[test]
fn unknown_certificate_fields_are_errors_at_their_paths() {
    let config = ZILLA_CONFIG
        .replace("identity: subject.cn", "identity: subject.emailaddress")
        .replace(
            "organization: subject.o",
            "organization: subject.organization",
        )
        .replace("san.dns: \"*.internal", "san.dnsname: \"*.internal");
    let errors = errors(&config);
    assert!(
        errors.contains(
            "line 7: guards.authn_x509.options.identity: unknown certificate field \
             `subject.emailaddress`"
        ),
        "{errors}"
    );
    assert!(
        errors.contains("an e-mail address is usually in san.email"),
        "{errors}"
    );
    assert!(
        errors.contains(
            "line 9: guards.authn_x509.options.attributes.organization: unknown certificate \
             field `subject.organization`"
        ),
        "{errors}"
    );
    assert!(
        errors.contains(
            "line 18: guards.authn_x509.options.roles.internal[1].san.dnsname: unknown \
             certificate field `san.dnsname`"
        ),
        "{errors}"
    );
    assert!(errors.contains("3 configuration errors"), "{errors}");
}

#[test]
fn a_role_needs_a_match_and_a_match_needs_a_field() {
    let config = ZILLA_CONFIG.replace(
        "        partner:\n          - issuer.cn: \"Partner Issuing CA\"\n",
        "        partner: []\n        nobody:\n          - {}\n",
    );
    let errors = errors(&config);
    assert!(
        errors.contains(
            "line 12: guards.authn_x509.options.roles.partner: a role needs at least one match"
        ),
        "{errors}"
    );
    assert!(
        errors.contains(
            "line 14: guards.authn_x509.options.roles.nobody[0]: a match needs at least one \
             certificate field"
        ),
        "{errors}"
    );
}

#[test]
fn role_and_attribute_names_follow_zillas_schema() {
    let options: X509Options = serde_yaml::from_str(
        r#"
attributes:
  1st: subject.cn
roles:
  "mqtt:stream":
    - subject.cn: "*"
"#,
    )
    .unwrap();
    let errors = X509Guard::new(&options).unwrap_err();
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "attributes.1st: `1st` is not an attribute name Zilla accepts: a letter, then \
             letters, digits, `.`, `_` or `-`",
            "roles.mqtt:stream: `mqtt:stream` is not a role name Zilla accepts: a letter, then \
             letters, digits, `.`, `_` or `-`",
        ]
    );
}

#[test]
fn a_glob_must_be_a_string() {
    let config = ZILLA_CONFIG.replace("subject.ou: \"Platform\"", "subject.ou: [Platform]");
    let errors = errors(&config);
    assert!(
        errors.contains("guards.authn_x509.options.roles.internal[0].subject.ou"),
        "{errors}"
    );
}
