//! The assembled document: every linked type present, expressions accepted
//! where a value stands, and the envelope strict.

use std::sync::Arc;

use super::*;
use crate::binding::Binding;
use crate::guard::Guard;
use crate::registry::{BindingFactory, GuardFactory};
use crate::{register_binding, register_guard, BindingContext, BuildError, PluginContext};

// Plugin crates link against their own copy of the engine, so this crate's
// tests register their own types: a binding with a part, and a guard
// without one.

fn never_built(cx: &mut BindingContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
    Err(cx.error("", "only described"))
}

fn never_guards(cx: &mut PluginContext<'_>) -> Result<Arc<dyn Guard>, BuildError> {
    Err(cx.error("", "only described"))
}

register_binding!(BindingFactory {
    type_name: "probe",
    kinds: &[Kind::Server, Kind::Client],
    build: never_built,
});

register_schema!(SchemaPart {
    family: Family::Binding,
    type_name: "probe",
    part: || {
        all(vec![
            options(strict(json!({
                "host": string(),
                "port": integer_in(0, 65535),
                "backlog": integer_from(0),
                "nodelay": boolean(),
            }))),
            routes(strict(json!({ "cidr": string() })), json!(false)),
        ])
    },
});

register_guard!(GuardFactory {
    type_name: "undescribed",
    build: never_guards,
});

fn validator() -> jsonschema::Validator {
    jsonschema::draft7::new(&document()).expect("the assembled schema compiles")
}

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).expect("test YAML parses")
}

fn errors(text: &str) -> Vec<String> {
    let validator = validator();
    let instance = yaml(text);
    let errors = validator
        .iter_errors(&instance)
        .map(|error| format!("{}: {error}", error.instance_path()))
        .collect();
    errors
}

const TCP_PROXY: &str = "
name: test
bindings:
  north_tcp_server:
    type: probe
    kind: server
    options: { host: 0.0.0.0, port: 7183 }
    routes:
      - when: [{ cidr: 10.0.0.0/8 }]
        exit: south_tcp_client
    exit: south_tcp_client
  south_tcp_client:
    type: probe
    kind: client
    options: { host: broker, port: 1883 }
telemetry:
  exporters:
    stdout0:
      type: stdout
";

#[test]
fn draft_07_and_every_registered_type_listed() {
    let document = document();
    assert_eq!(
        document["$schema"],
        "http://json-schema.org/draft-07/schema#"
    );
    let registered = registered();
    let binding_types = &document["definitions"]["binding"]["properties"]["type"]["enum"];
    let binding_names: Vec<&str> = registered.bindings.iter().map(|(name, _)| *name).collect();
    assert_eq!(binding_types, &json!(binding_names));
    assert!(binding_names.contains(&"probe"));
    for (key, names) in [
        ("guard", &registered.guards),
        ("exporter", &registered.exporters),
        ("store", &registered.stores),
    ] {
        assert_eq!(
            document["definitions"][key]["properties"]["type"]["enum"],
            json!(names),
            "{key}"
        );
    }
}

#[test]
fn types_without_a_part_are_listed_and_still_accepted() {
    assert_eq!(missing(), vec![(Family::Guard, "undescribed")]);
    let text =
        format!("{TCP_PROXY}guards:\n  g:\n    type: undescribed\n    options: {{any: 1}}\n");
    assert_eq!(errors(&text), Vec::<String>::new());
}

#[test]
fn a_valid_configuration_validates() {
    assert_eq!(errors(TCP_PROXY), Vec::<String>::new());
}

#[test]
fn expressions_stand_for_integers_and_booleans() {
    let text = TCP_PROXY.replace(
        "port: 1883",
        "port: \"${{env.PORT}}\", nodelay: \"${{ env.NODELAY }}\"",
    );
    assert_eq!(errors(&text), Vec::<String>::new());
    let integer = integer();
    let validator = jsonschema::draft7::new(&integer).unwrap();
    assert!(validator.is_valid(&json!(7)));
    assert!(validator.is_valid(&json!("${{env.PORT}}")));
    assert!(!validator.is_valid(&json!("seven")));
    assert!(!validator.is_valid(&json!("${{vault.PORT}}")));
    assert!(!validator.is_valid(&json!("x ${{env.PORT}}")));
}

#[test]
fn unknown_keys_and_types_fail() {
    let cases = [
        ("kind: server", "kind: sever", "\"sever\" is not one of"),
        ("    exit: south", "    exits: south", "exits"),
        ("type: stdout", "type: stdot", "\"stdot\" is not one of"),
        ("telemetry:", "telemetri:", "telemetri"),
        ("port: 7183 }", "port: 7183, bakclog: 5 }", "bakclog"),
    ];
    for (from, to, expected) in cases {
        assert!(TCP_PROXY.contains(from), "{from}");
        let errors = errors(&TCP_PROXY.replacen(from, to, 1));
        assert!(
            errors.iter().any(|error| error.contains(expected)),
            "{to}: {errors:?}"
        );
    }
}

#[test]
fn kinds_are_those_of_the_type() {
    let errors = errors(&TCP_PROXY.replacen("kind: server", "kind: proxy", 1));
    assert!(
        errors
            .iter()
            .any(|error| error.contains("\"proxy\" is not one of")),
        "{errors:?}"
    );
}

#[test]
fn an_exporter_needs_a_type() {
    let errors = errors(&TCP_PROXY.replace("      type: stdout\n", "      options: {}\n"));
    assert!(
        errors
            .iter()
            .any(|error| error.contains("\"type\" is a required property")),
        "{errors:?}"
    );
}
