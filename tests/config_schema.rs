//! `zilla schema` checked with a real validator: every zilla configuration in
//! the repository validates against what the host prints, and typical
//! mistakes fail it with a message that names them.
//!
//! The validator is check-jsonschema (Python), pinned in
//! `tests/tools/requirements.txt` and installed by `.ci/run` in
//! `tests/tools/.venv`: the validator editors' yaml-language-server agrees
//! with, not our own reading of the schema. Without it the test fails; it
//! never skips (docs/decisions/0029-configuration-schema.md).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use zilla_testkit::TCP_PROXY_YAML;

const ZILLA: &str = env!("CARGO_BIN_EXE_zilla");

const INSTALL: &str = "run bash .ci/run (or python3 -m venv tests/tools/.venv && \
                       tests/tools/.venv/bin/pip install -r tests/tools/requirements.txt) first";

fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// check-jsonschema from the tools' virtual environment, at the pinned version.
fn validator() -> PathBuf {
    let tools = repo_root().join("tests/tools");
    let requirements = std::fs::read_to_string(tools.join("requirements.txt"))
        .expect("tests/tools/requirements.txt is readable");
    let pinned = requirements
        .lines()
        .find_map(|line| line.trim().strip_prefix("check-jsonschema=="))
        .expect("tests/tools/requirements.txt pins `check-jsonschema==`")
        .trim()
        .to_owned();
    let validator = tools.join(".venv/bin/check-jsonschema");
    assert!(
        validator.is_file(),
        "{} is missing: {INSTALL}",
        validator.display()
    );
    let output = Command::new(&validator)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}: {INSTALL}", validator.display()));
    let version = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && version.trim().ends_with(&pinned),
        "{} is `{}`, not the pinned {pinned}: {INSTALL}",
        validator.display(),
        version.trim()
    );
    validator
}

/// Runs `zilla schema` and writes what it prints to `dir/zilla.schema.json`.
fn schema_file(dir: &Path) -> PathBuf {
    let output = Command::new(ZILLA).arg("schema").output().unwrap();
    assert!(
        output.status.success(),
        "zilla schema failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = dir.join("zilla.schema.json");
    std::fs::write(&path, &output.stdout).unwrap();
    path
}

fn validate(schema: &Path, files: &[PathBuf]) -> Output {
    assert!(!files.is_empty());
    Command::new(validator())
        .arg("--schemafile")
        .arg(schema)
        .args(files)
        .output()
        .expect("check-jsonschema runs")
}

fn report(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Directories that hold no configuration of ours: build output, installed
/// client libraries and tools, and the fuzzers' inputs (AsyncAPI documents).
fn skipped(name: &str) -> bool {
    name.starts_with('.') || matches!(name, "target" | "node_modules" | "fuzz")
}

/// Every zilla configuration in the repository: each `zilla.yaml`, and any
/// other YAML file whose top level has `bindings` (a fixture named otherwise).
fn configurations() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().unwrap().is_dir() {
                if !skipped(&name) {
                    walk(&path, found);
                }
            } else if name == "zilla.yaml" || is_configuration(&path, &name) {
                found.push(path);
            }
        }
    }
    fn is_configuration(path: &Path, name: &str) -> bool {
        if !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            return false;
        }
        let text = std::fs::read_to_string(path).unwrap_or_default();
        serde_yaml::from_str::<serde_yaml::Value>(&text)
            .ok()
            .and_then(|value| value.as_mapping().map(|m| m.contains_key("bindings")))
            .unwrap_or(false)
    }
    let mut found = Vec::new();
    walk(&repo_root(), &mut found);
    found.sort();
    found
}

#[test]
fn zilla_schema_prints_draft_07_with_every_first_party_type() {
    let output = Command::new(ZILLA).arg("schema").output().unwrap();
    assert!(output.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    let definitions = &schema["definitions"];
    for plugin in zilla::FIRST_PARTY_PLUGINS {
        let (family, name) = plugin.split_once(':').unwrap();
        let types = match family {
            "model" => &definitions["model"]["then"]["enum"],
            _ => &definitions[family]["properties"]["type"]["enum"],
        };
        assert!(
            types.as_array().unwrap().iter().any(|t| t == name),
            "{plugin} is not in the schema"
        );
    }
}

#[test]
fn every_configuration_in_the_repository_validates() {
    let files = configurations();
    let root = repo_root();
    for expected in [
        "examples/mqtt.proxy/zilla.yaml",
        "examples/asyncapi.mqtt.proxy/zilla.yaml",
        "deploy/kubernetes/zilla.yaml",
        "deploy/kubernetes/components/redis/zilla.yaml",
        "tests/fixtures/asyncapi-proxy/zilla.yaml",
    ] {
        assert!(files.contains(&root.join(expected)), "{expected} not found");
    }
    for example in std::fs::read_dir(root.join("examples")).unwrap() {
        let config = example.unwrap().path().join("zilla.yaml");
        assert!(files.contains(&config), "{} not found", config.display());
    }
    let dir = tempfile::tempdir().unwrap();
    // The configuration most tests start from (inline in the testkit).
    let tcp_proxy = dir.path().join("tcp-proxy.yaml");
    std::fs::write(&tcp_proxy, TCP_PROXY_YAML).unwrap();
    let mut all = files.clone();
    all.push(tcp_proxy);
    let output = validate(&schema_file(dir.path()), &all);
    assert!(
        output.status.success(),
        "configurations fail `zilla schema`:\n{}",
        report(&output)
    );
    assert!(report(&output).contains("ok -- validation done"));
}

/// A mistake: the text replaced in the seed example, and what the
/// validator's message must say.
struct Mistake {
    name: &'static str,
    from: &'static str,
    to: &'static str,
    expected: &'static str,
}

const MISTAKES: &[Mistake] = &[
    Mistake {
        name: "misspelt-kind",
        from: "    type: tls\n    kind: server",
        to: "    type: tls\n    kind: sever",
        expected: "$.bindings.north_tls_server.kind: 'sever' is not one of",
    },
    Mistake {
        name: "exits",
        from: "    kind: client\n    exit: south_tcp_client",
        to: "    kind: client\n    exits: south_tcp_client",
        expected: "$.bindings.north_mqtt_client: Additional properties are not allowed ('exits' was unexpected)",
    },
    Mistake {
        name: "unknown-binding-type",
        from: "    type: tls\n",
        to: "    type: tsl\n",
        expected: "$.bindings.north_tls_server.type: 'tsl' is not one of",
    },
    Mistake {
        name: "misspelt-guard-option",
        from: "      issuer:",
        to: "      isuer:",
        expected: "$.guards.authn_jwt.options: Additional properties are not allowed ('isuer' was unexpected)",
    },
    Mistake {
        name: "exporter-without-type",
        from: "      type: stdout\n",
        to: "      options: {}\n",
        expected: "$.telemetry.exporters.stdout_logs_exporter: 'type' is a required property",
    },
    Mistake {
        name: "misspelt-mqtt-option",
        from: "      store: memory0",
        to: "      stor: memory0",
        expected: "$.bindings.north_mqtt_server.options: Additional properties are not allowed ('stor' was unexpected)",
    },
    Mistake {
        name: "unknown-top-level-key",
        from: "\nguards:\n",
        to: "\nguardz:\n",
        expected: "$: Additional properties are not allowed ('guardz' was unexpected)",
    },
    Mistake {
        name: "kind-of-another-type",
        from: "    type: mqtt\n    kind: client",
        to: "    type: mqtt\n    kind: proxy",
        expected: "$.bindings.north_mqtt_client.kind: 'proxy' is not one of ['server', 'client']",
    },
    Mistake {
        name: "port-not-a-number",
        from: "      port: ${{env.MOSQUITTO_BROKER_PORT}}",
        to: "      port: ${{env.MOSQUITTO_BROKER_PORT}}x",
        expected: "$.bindings.south_tcp_client.options.port",
    },
];

#[test]
fn typical_mistakes_fail_and_name_the_problem() {
    let seed = std::fs::read_to_string(repo_root().join("examples/mqtt.proxy.jwt/zilla.yaml"))
        .expect("the seed example is readable");
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = MISTAKES
        .iter()
        .map(|mistake| {
            assert_eq!(
                seed.matches(mistake.from).count(),
                1,
                "`{}` is not in the seed example exactly once",
                mistake.from
            );
            let path = dir.path().join(format!("{}.yaml", mistake.name));
            std::fs::write(&path, seed.replacen(mistake.from, mistake.to, 1)).unwrap();
            path
        })
        .collect();
    let output = validate(&schema_file(dir.path()), &files);
    assert!(!output.status.success(), "{}", report(&output));
    let report = report(&output);
    for (mistake, file) in MISTAKES.iter().zip(&files) {
        let prefix = format!("{}::", file.display());
        let lines: Vec<&str> = report
            .lines()
            .map(str::trim)
            .filter(|line| line.starts_with(&prefix))
            .collect();
        assert!(
            lines.iter().any(|line| line.contains(mistake.expected)),
            "{}: expected `{}` among:\n{}",
            mistake.name,
            mistake.expected,
            lines.join("\n")
        );
    }
}

#[test]
fn expressions_stand_for_any_scalar() {
    let yaml = "
name: expressions
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options:
      host: ${{env.HOST}}
      port: ${{env.PORT}}
      backlog: ${{ env.BACKLOG }}
      nodelay: ${{env.NODELAY}}
      proxy-protocol:
        mode: ${{env.PROXY_PROTOCOL_MODE}}
        from: [10.0.0.0/8]
    exit: north_mqtt_server
  north_mqtt_server:
    type: mqtt
    kind: server
    options:
      connect-timeout: ${{env.CONNECT_TIMEOUT}}
      limits:
        - key: session
          publishes: { rate: \"${{env.RATE}}\" }
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options: { host: broker, port: \"${{env.BROKER_PORT}}\" }
";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("expressions.yaml");
    std::fs::write(&file, yaml).unwrap();
    let output = validate(&schema_file(dir.path()), &[file]);
    assert!(output.status.success(), "{}", report(&output));
}
