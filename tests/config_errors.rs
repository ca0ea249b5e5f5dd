//! Every configuration mistake is reported with where it is and what was
//! expected, all at once, before anything starts.

use zilla::engine::{ConfigErrors, Engine};

fn errors_of(yaml: &str) -> ConfigErrors {
    Engine::from_yaml(yaml)
        .env(|name| (name == "SET").then(|| "1883".to_owned()))
        .build()
        .expect_err("the configuration must be rejected")
}

fn assert_reports(yaml: &str, expected: &[&str]) {
    let errors = errors_of(yaml);
    let report = errors.to_string();
    for line in expected {
        assert!(report.contains(line), "expected `{line}` in:\n{report}");
    }
    assert_eq!(errors.errors.len(), expected.len(), "{report}");
}

#[test]
fn unknown_top_level_key() {
    assert_reports(
        "name: t\nbinding: {}\n",
        &["line 2: binding: unknown top-level key `binding`, expected one of `name`, `vaults`, `guards`, `catalogs`, `stores`, `bindings`, `telemetry`"],
    );
}

#[test]
fn unknown_option_field_names_the_field_and_the_expected_ones() {
    assert_reports(
        "name: t
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      prot: 7183
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options: { host: 127.0.0.1, port: 1883 }
",
        &["line 8: bindings.north_tcp_server.options.prot: unknown field `prot`, expected one of `host`, `port`, `backlog`, `nodelay`, `keepalive`"],
    );
}

#[test]
fn invalid_option_value_is_located() {
    assert_reports(
        "name: t
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options:
      port:
        - 7183
        - \"7999-7000\"
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
",
        &["line 7: bindings.north_tcp_server.options.port: port range `7999-7000` runs backwards"],
    );
}

#[test]
fn missing_env_var_names_the_variable_and_where_it_is_used() {
    assert_reports(
        "name: t
bindings:
  south_tcp_client:
    type: tcp
    kind: client
    options:
      host: ${{env.MOSQUITTO_BROKER_HOST}}
      port: ${{env.SET}}
",
        &["line 7: bindings.south_tcp_client.options.host: environment variable `MOSQUITTO_BROKER_HOST` is not set (used as `${{env.MOSQUITTO_BROKER_HOST}}`)"],
    );
}

#[test]
fn unknown_binding_type_lists_the_registered_ones() {
    let errors = errors_of("name: t\nbindings:\n  a:\n    type: tpc\n    kind: server\n");
    let report = errors.to_string();
    assert!(
        report.contains(
            "line 4: bindings.a.type: unknown binding type `tpc`; registered binding types: "
        ),
        "{report}"
    );
    assert!(report.contains("`tcp`"), "{report}");
}

#[test]
fn unsupported_kind_lists_the_kinds() {
    assert_reports(
        "name: t\nbindings:\n  a:\n    type: tcp\n    kind: proxy\n",
        &["line 5: bindings.a.kind: binding type `tcp` has no kind `proxy`; its kinds are `server`, `client`"],
    );
}

#[test]
fn exit_to_a_binding_that_does_not_exist() {
    assert_reports(
        "name: t
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: { port: 0 }
    routes:
      - when: [{ port: 0 }]
        exit: south_tcp_clent
  south_tcp_client:
    type: tcp
    kind: client
",
        &["line 9: bindings.north_tcp_server.routes[0].exit: exit `south_tcp_clent` is not a binding; the bindings are `north_tcp_server`, `south_tcp_client`"],
    );
}

#[test]
fn exit_cycle() {
    assert_reports(
        "name: t
bindings:
  a:
    type: tcp
    kind: server
    options: { port: 0 }
    exit: b
  b:
    type: tcp
    kind: server
    options: { port: 0 }
    exit: a
",
        &["bindings.b.exit: exit cycle: a -> b -> a"],
    );
}

#[test]
fn exit_of_the_wrong_port_type_names_both_bindings() {
    assert_reports(
        "name: t
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: { port: 0 }
    exit: other_tcp_server
  other_tcp_server:
    type: tcp
    kind: server
    options: { port: 0 }
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
",
        &["line 7: bindings.north_tcp_server.exit: north_tcp_server routes to other_tcp_server, which does not accept byte streams; it cannot be routed to"],
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let errors = errors_of(
        "name: t
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: { port: 0, prot: 1 }
    exit: nowhere
  south_tcp_client:
    type: tcp
    kind: client
    options:
      host: ${{env.UNSET_HOST}}
      port: 1
  third:
    type: tpc
    kind: client
",
    );
    let report = errors.to_string();
    assert_eq!(errors.errors.len(), 4, "{report}");
    assert!(
        report.contains("line 6: bindings.north_tcp_server.options.prot: unknown field"),
        "{report}"
    );
    assert!(report.contains("UNSET_HOST"), "{report}");
    assert!(
        report.contains("exit `nowhere` is not a binding"),
        "{report}"
    );
    assert!(report.contains("unknown binding type `tpc`"), "{report}");
}

#[test]
fn unknown_engine_property_is_rejected() {
    let errors = Engine::from_yaml("name: t\n")
        .property("zilla.engine.shutdown.grase", "3")
        .build()
        .unwrap_err();
    assert!(
        errors.mentions("-P zilla.engine.shutdown.grase: unknown engine property; known engine properties: `zilla.engine.shutdown.grace`"),
        "{errors}"
    );
}

#[test]
fn a_store_that_is_not_declared_is_named_where_it_is_used() {
    assert_reports(
        "name: t
stores:
  memory0:
    type: memory
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: { port: 0 }
    exit: north_mqtt_server
  north_mqtt_server:
    type: mqtt
    kind: server
    options:
      store: memroy0
    exit: north_mqtt_client
  north_mqtt_client:
    type: mqtt
    kind: client
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options: { host: 127.0.0.1, port: 1883 }
",
        &["line 15: bindings.north_mqtt_server.options.store: no store named `memroy0` in `stores`"],
    );
}

/// An mqtt server whose `options.client-id` is `expression`.
fn client_id_config(expression: &str) -> String {
    format!(
        "name: t
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: {{ port: 0 }}
    exit: north_mqtt_server
  north_mqtt_server:
    type: mqtt
    kind: server
    options:
      client-id: \"{expression}\"
    exit: north_mqtt_client
  north_mqtt_client:
    type: mqtt
    kind: client
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: 1883 }}
"
    )
}

#[test]
fn a_client_id_bound_to_a_guard_that_does_not_exist_or_to_no_guard_is_refused() {
    // Otherwise every CONNECT would be refused.
    assert_reports(
        &client_id_config("${guarded['x509_0'].identity}"),
        &["line 12: bindings.north_mqtt_server.options.client-id: no guard named `x509_0` in `guards`"],
    );
    assert_reports(
        &client_id_config("device-${identity}"),
        &["line 12: bindings.north_mqtt_server.options.client-id: `device-${identity}` is not `${guarded['<guard>'].identity}`"],
    );
}

#[test]
fn unknown_store_type_lists_the_registered_ones() {
    assert_reports(
        "name: t
stores:
  memory0:
    type: memroy
  memory1:
    type: memory
    options:
      size: 10
",
        &[
            "line 4: stores.memory0.type: unknown store type `memroy`; registered store types: `memory`",
            "line 7: stores.memory1.options: this type takes no options",
        ],
    );
}

#[test]
fn unknown_store_keys_are_refused() {
    assert_reports(
        "name: t\nstores:\n  memory0:\n    type: memory\n    optoins: {}\n",
        &["line 5: stores.memory0.optoins: unknown field `optoins`, expected `type` or `options`"],
    );
}

/// An AsyncAPI document with one mqtt server, held in an inline catalog.
const INLINE_ASYNCAPI: &str = "
catalogs:
  specs:
    type: inline
    options:
      subjects:
        lights:
          schema: |
            asyncapi: 3.0.0
            info: { title: Lights, version: 1.0.0 }
            servers:
              plain: { host: 'localhost:7183', protocol: mqtt }
              secure: { host: 'localhost:7883', protocol: mqtts }
            channels:
              lights: { address: lights/+ }
            operations:
              sendLights: { action: send, channel: { $ref: '#/channels/lights' } }
";

#[test]
fn a_server_url_that_matches_no_document_server_names_both() {
    let yaml = format!(
        "name: t{INLINE_ASYNCAPI}bindings:
  api_server:
    type: asyncapi
    kind: server
    options:
      specs:
        lights_api:
          servers:
            - mqtt://localhost:7883
          catalog:
            specs: {{ subject: lights }}
    exit: api_client
  api_client:
    type: asyncapi
    kind: client
    options:
      specs:
        lights_api:
          servers:
            - mqtt://127.0.0.1:1883
          store: nowhere
          catalog:
            specs: {{ subject: lights }}
"
    );
    assert_reports(
        &yaml,
        &[
            "line 26: bindings.api_server.options.specs.lights_api.servers[0]: `mqtt://localhost:7883` matches no server of the document (by protocol and host:port); its mqtt servers: `plain` (mqtt://localhost:7183), `secure` (mqtts://localhost:7883)",
            "line 38: bindings.api_client.options.specs.lights_api.store: no store named `nowhere` in `stores`",
        ],
    );
}

/// An mqtt server whose `options.authorization` is `authorization` (guards
/// `jwt_a` and `jwt_b`, both declared).
fn authorization_config(authorization: &str) -> String {
    let guard = |name: &str| {
        format!(
            "  {name}:
    type: jwt
    options:
      issuer: https://auth.example.com
      audience: https://api.example.com
      keys:
        - {{kty: oct, k: c2VjcmV0, alg: HS256, kid: k1}}
"
        )
    };
    format!(
        "name: t
guards:
{}{}bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: {{ port: 0 }}
    exit: north_mqtt_server
  north_mqtt_server:
    type: mqtt
    kind: server
    options:
      authorization:
{authorization}
    exit: north_mqtt_client
  north_mqtt_client:
    type: mqtt
    kind: client
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: 1883 }}
",
        guard("jwt_a"),
        guard("jwt_b")
    )
}

#[test]
fn several_mqtt_guards_each_name_their_own_method() {
    // Two guards, each with its own method (and one with `connect`): fine.
    let fine = authorization_config(
        "        jwt_a:
          credentials:
            connect: {username: \"Bearer {credentials}\"}
            authentication: {method: jwt}
        jwt_b:
          credentials:
            authentication: {method: CUSTOM-JWT}",
    );
    Engine::from_yaml(&fine)
        .build()
        .expect("two guards with two methods");
    assert_reports(
        &authorization_config(
            "        jwt_a:
          credentials:
            authentication: {method: jwt}
        jwt_b:
          credentials:
            authentication: {method: jwt}",
        ),
        &["bindings.north_mqtt_server.options.authorization.jwt_b.credentials.authentication.method: the Authentication Method \"jwt\" is already guard jwt_a's"],
    );
    assert_reports(
        &authorization_config(
            "        jwt_a:
          credentials: {}",
        ),
        &["bindings.north_mqtt_server.options.authorization.jwt_a.credentials: name `connect` credentials, an `authentication` method, or both"],
    );
}
