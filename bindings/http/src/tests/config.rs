//! Configuration mistakes are startup errors that say where and what.

use super::config_errors;
use crate::server::{PROPERTY_HEADER_MAX_BYTES, PROPERTY_HEADER_TIMEOUT};

/// A configuration whose http server has `options` and `when`.
fn config(options: &str, when: &str) -> String {
    format!(
        r#"
name: config-test
guards:
  test_guard: {{ type: test-guard }}
bindings:
  driver: {{ type: test-driver, kind: server, exit: http_server }}
  http_server:
    type: http
    kind: server
    options: {options}
    routes:
      - when: [{when}]
        exit: app
  app: {{ type: test-http-exit, kind: server }}
"#
    )
}

fn errors(options: &str, when: &str) -> String {
    config_errors(&config(options, when), &[])
}

const WHEN: &str = "{ headers: { \":path\": /x } }";

#[test]
fn a_full_configuration_builds() {
    let options = r#"
      versions: [http/1.1, h2]
      access-control:
        policy: cross-origin
        allow: { origins: ["https://*.example.com"], credentials: true }
      authorization:
        test_guard:
          credentials:
            headers: { authorization: "Bearer {credentials}" }"#;
    super::served(&config(options, WHEN), &[]);
}

#[test]
fn unknown_keys_are_errors() {
    let found = errors("{ version: [h2] }", WHEN);
    assert!(
        found.contains("bindings.http_server.options.version: unknown field `version`"),
        "{found}"
    );
    let found = errors("{}", "{ header: { a: b } }");
    assert!(
        found.contains("bindings.http_server.routes[0].when[0]")
            && found.contains("unknown field `header`"),
        "{found}"
    );
    let found = errors("{}", "{ headers: { \":host\": a } }");
    assert!(found.contains("not a pseudo header"), "{found}");
    let found = errors(
        "{ access-control: { policy: cross-origin, allow: { origin: [a] } } }",
        WHEN,
    );
    assert!(found.contains("unknown field `origin`"), "{found}");
}

#[test]
fn versions_must_not_be_empty() {
    let found = errors("{ versions: [] }", WHEN);
    assert!(
        found.contains("options.versions: list at least one"),
        "{found}"
    );
}

#[test]
fn cross_origin_settings_need_the_cross_origin_policy() {
    let found = errors("{ access-control: { allow: { origins: [a] } } }", WHEN);
    assert!(
        found.contains(
            "options.access-control.allow: `allow` applies only to `policy: cross-origin`"
        ),
        "{found}"
    );
}

#[test]
fn authorization_is_checked() {
    let two = "{ authorization: { a: { credentials: { query: { t: '{credentials}' } } }, \
               b: { credentials: { query: { t: '{credentials}' } } } } }";
    assert!(errors(two, WHEN).contains("name exactly one guard"));

    let unknown =
        "{ authorization: { nobody: { credentials: { query: { t: '{credentials}' } } } } }";
    let found = errors(unknown, WHEN);
    assert!(
        found.contains("options.authorization.nobody: no guard named `nobody`"),
        "{found}"
    );

    let no_placeholder =
        "{ authorization: { test_guard: { credentials: { headers: { authorization: Bearer } } } } }";
    let found = errors(no_placeholder, WHEN);
    assert!(
        found.contains(
            "credentials.headers.authorization: the pattern must contain `{credentials}`"
        ),
        "{found}"
    );

    let twice = "{ authorization: { test_guard: { credentials: { cookies: { t: '{credentials}{credentials}' } } } } }";
    assert!(errors(twice, WHEN).contains("may appear only once"));

    let nowhere = "{ authorization: { test_guard: { credentials: {} } } }";
    let found = errors(nowhere, WHEN);
    assert!(
        found.contains("options.authorization.test_guard.credentials: say where credentials are"),
        "{found}"
    );
}

#[test]
fn properties_are_checked() {
    let config = config("{}", WHEN);
    let found = config_errors(&config, &[(PROPERTY_HEADER_TIMEOUT, "soon")]);
    assert!(found.contains("expected seconds, found `soon`"), "{found}");
    let found = config_errors(&config, &[(PROPERTY_HEADER_MAX_BYTES, "0")]);
    assert!(found.contains("expected a number of bytes"), "{found}");
}
