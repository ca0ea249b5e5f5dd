//! The `zilla.yaml` envelope: the strict outer shape shared by every configuration.
//!
//! Plugin `options` stay untyped here; each plugin deserializes its own strict
//! options struct from them at build time. Parsing reads every entry even after
//! one fails, so a single run reports all the envelope's problems.

mod error;
mod expr;
mod lines;

use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

pub use error::{BuildError, ConfigError, ConfigErrors};
pub use expr::EnvLookup;
pub use lines::LineIndex;

/// A whole `zilla.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZillaConfig {
    /// The namespace; `^[a-zA-Z]+[a-zA-Z0-9._-]*$`.
    pub name: String,
    /// Key and trust stores, by name.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub vaults: IndexMap<String, PluginConfig>,
    /// Authorization guards, by name.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub guards: IndexMap<String, PluginConfig>,
    /// Schema catalogs, by name.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub catalogs: IndexMap<String, PluginConfig>,
    /// Stores (e.g. where mqtt servers keep session ownership), by name.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub stores: IndexMap<String, PluginConfig>,
    /// The bindings that make up the pipeline, by name.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub bindings: IndexMap<String, BindingConfig>,
    /// Where events and metrics go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<TelemetryConfig>,
}

/// Top-level keys of `zilla.yaml`, for the message naming an unknown one.
const TOP_LEVEL_KEYS: &[&str] = &[
    "name",
    "vaults",
    "guards",
    "catalogs",
    "stores",
    "bindings",
    "telemetry",
];

/// A vault, guard, catalog or store entry: its registered `type` and its options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Registered plugin type, e.g. `filesystem` or `jwt`.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The plugin's own options, checked by the plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Value>,
}

/// The role a binding plays for its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Accepts streams from outside, or from a binding in front of it.
    Server,
    /// Originates streams toward something outside.
    Client,
    /// Routes streams without terminating their protocol.
    Proxy,
    /// Zilla's remote server kind (kafka-grpc); accepted for compatibility.
    RemoteServer,
    /// Zilla's cache client kind (kafka); accepted for compatibility.
    CacheClient,
    /// Zilla's cache server kind (kafka); accepted for compatibility.
    CacheServer,
}

impl Kind {
    /// The spelling used in `zilla.yaml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Server => "server",
            Kind::Client => "client",
            Kind::Proxy => "proxy",
            Kind::RemoteServer => "remote_server",
            Kind::CacheClient => "cache_client",
            Kind::CacheServer => "cache_server",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A binding entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingConfig {
    /// Registered binding type, e.g. `tcp`.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The binding's role.
    pub kind: Kind,
    /// The binding's own options, checked by the binding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Value>,
    /// Conditional routes, tried in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    /// The default exit when no route matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<String>,
    /// The vault holding this binding's keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<String>,
    /// Catalog references, for bindings that read schemas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<Value>,
    /// Which metrics this binding records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<BindingTelemetryConfig>,
}

/// A route: conditions, guard requirements and the exit taken when they hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Conditions; the route matches when any one of them holds (or when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Value>,
    /// The binding this route leads to.
    pub exit: String,
    /// Guards and the roles each requires; a failed guard falls through to the next route.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub guarded: IndexMap<String, Vec<String>>,
    /// Binding-specific overrides applied when this route is taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with: Option<Value>,
}

/// Per-binding telemetry selection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingTelemetryConfig {
    /// Metric name patterns this binding records.
    #[serde(default)]
    pub metrics: Vec<String>,
}

/// The `telemetry` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Attributes attached to every exported record.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub attributes: IndexMap<String, String>,
    /// Metric names collected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
    /// Exporters, by name.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub exporters: IndexMap<String, PluginConfig>,
}

/// A configuration read from YAML text, with what is needed to locate errors.
#[derive(Debug, Clone)]
pub struct ConfigDocument {
    /// The parsed and expression-resolved envelope.
    pub config: ZillaConfig,
    /// Lines of the source, for error messages.
    pub lines: LineIndex,
    /// Expressions that could not be resolved; the entries holding them are
    /// not built, but the rest of the configuration is still checked.
    pub unresolved: Vec<ConfigError>,
}

impl ConfigDocument {
    /// Parses `text`, resolving `${{env.NAME}}` with `env`; every problem found
    /// is reported at once. `source` names the text in the error report.
    pub fn parse(text: &str, source: &str, env: &EnvLookup<'_>) -> Result<Self, ConfigErrors> {
        let fail = |errors| ConfigErrors {
            source: source.to_owned(),
            errors,
        };
        let mut value: Value = serde_yaml::from_str(text).map_err(|error| {
            fail(vec![ConfigError {
                path: String::new(),
                line: error.location().map(|l| l.line()),
                message: format!("not valid YAML: {error}"),
            }])
        })?;
        let lines = LineIndex::new(text);
        let mut unresolved = expr::resolve(&mut value, env);
        for error in &mut unresolved {
            error.line = lines.line_of(&error.path);
        }
        let mut errors = Vec::new();
        let config = read_envelope(value, &lines, &mut errors);
        match config {
            Some(config) if errors.is_empty() => Ok(Self {
                config,
                lines,
                unresolved,
            }),
            _ => {
                unresolved.extend(errors);
                Err(fail(unresolved))
            }
        }
    }
}

/// Checks a configuration given as a typed value (no source lines).
pub(crate) fn check_name(config: &ZillaConfig, errors: &mut Vec<ConfigError>, lines: &LineIndex) {
    let name = &config.name;
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid {
        errors.push(ConfigError {
            path: "name".into(),
            line: lines.line_of("name"),
            message: format!(
                "`{name}` is not a valid name; expected a letter followed by letters, digits, `.`, `_` or `-`"
            ),
        });
    }
}

fn read_envelope(
    value: Value,
    lines: &LineIndex,
    errors: &mut Vec<ConfigError>,
) -> Option<ZillaConfig> {
    let Value::Mapping(top) = value else {
        errors.push(ConfigError {
            path: String::new(),
            line: Some(1),
            message: "expected a mapping with `name` and `bindings`".into(),
        });
        return None;
    };
    let mut config = ZillaConfig {
        name: String::new(),
        vaults: IndexMap::new(),
        guards: IndexMap::new(),
        catalogs: IndexMap::new(),
        stores: IndexMap::new(),
        bindings: IndexMap::new(),
        telemetry: None,
    };
    let mut has_name = false;
    for (key, value) in top {
        let Some(key) = key.as_str().map(str::to_owned) else {
            errors.push(ConfigError {
                path: String::new(),
                line: None,
                message: format!("top-level keys must be strings, found `{key:?}`"),
            });
            continue;
        };
        match key.as_str() {
            "name" => {
                has_name = true;
                if let Some(name) = deserialize_at(value, "name", lines, errors) {
                    config.name = name;
                }
            }
            "vaults" => config.vaults = read_entries(value, "vaults", lines, errors),
            "guards" => config.guards = read_entries(value, "guards", lines, errors),
            "catalogs" => config.catalogs = read_entries(value, "catalogs", lines, errors),
            "stores" => config.stores = read_entries(value, "stores", lines, errors),
            "bindings" => config.bindings = read_entries(value, "bindings", lines, errors),
            "telemetry" => config.telemetry = deserialize_at(value, "telemetry", lines, errors),
            unknown => errors.push(ConfigError {
                path: unknown.to_owned(),
                line: lines.line_of(unknown),
                message: format!(
                    "unknown top-level key `{unknown}`, expected one of {}",
                    quoted_list(TOP_LEVEL_KEYS)
                ),
            }),
        }
    }
    if !has_name {
        errors.push(ConfigError {
            path: "name".into(),
            line: None,
            message: "missing required key `name`".into(),
        });
    } else {
        check_name(&config, errors, lines);
    }
    Some(config)
}

/// Reads a map of named entries, deserializing each one on its own so that one
/// bad entry does not hide the problems of the next.
fn read_entries<T: DeserializeOwned>(
    value: Value,
    section: &str,
    lines: &LineIndex,
    errors: &mut Vec<ConfigError>,
) -> IndexMap<String, T> {
    let mut entries = IndexMap::new();
    match value {
        Value::Mapping(map) => {
            for (name, entry) in map {
                let name = match name {
                    Value::String(name) => name,
                    other => {
                        errors.push(ConfigError {
                            path: section.into(),
                            line: lines.line_of(section),
                            message: format!("entry names must be strings, found `{other:?}`"),
                        });
                        continue;
                    }
                };
                let path = format!("{section}.{name}");
                if let Some(entry) = deserialize_at(entry, &path, lines, errors) {
                    entries.insert(name, entry);
                }
            }
        }
        Value::Null => {}
        _ => errors.push(ConfigError {
            path: section.into(),
            line: lines.line_of(section),
            message: format!("`{section}` must be a mapping of names to entries"),
        }),
    }
    entries
}

/// Deserializes `value` found at `path`, recording a located error on failure.
pub(crate) fn deserialize_at<T: DeserializeOwned>(
    value: Value,
    path: &str,
    lines: &LineIndex,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(parsed) => Some(parsed),
        Err(error) => {
            let inner = error.path().to_string();
            let full = match inner.as_str() {
                "." | "" => path.to_owned(),
                _ if path.is_empty() => inner,
                _ if inner.starts_with('[') => format!("{path}{inner}"),
                _ => format!("{path}.{inner}"),
            };
            errors.push(ConfigError {
                line: lines.line_of(&full),
                path: full,
                message: error.into_inner().to_string(),
            });
            None
        }
    }
}

/// `a`, `b`, `c` for messages that list what was expected.
pub(crate) fn quoted_list<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|item| format!("`{}`", item.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn seed_shaped_config_round_trips() {
        let yaml = "name: test\nbindings:\n  tcp0:\n    type: tcp\n    kind: server\n    options:\n      port: 0\n    routes:\n      - when:\n          - port: 0\n        exit: b\n        guarded:\n          g: [r]\n";
        let document = ConfigDocument::parse(yaml, "test.yaml", &no_env).unwrap();
        let text = serde_yaml::to_string(&document.config).unwrap();
        let again = ConfigDocument::parse(&text, "again.yaml", &no_env).unwrap();
        assert_eq!(document.config, again.config);
        assert_eq!(document.config.bindings["tcp0"].kind, Kind::Server);
    }

    #[test]
    fn reports_every_envelope_error_with_lines() {
        let yaml = "name: test\nbindngs: {}\nbindings:\n  a:\n    type: tcp\n    kind: sever\n  b:\n    type: tcp\n    kind: client\n    exitt: c\n";
        let errors = ConfigDocument::parse(yaml, "z.yaml", &no_env).unwrap_err();
        assert_eq!(errors.errors.len(), 3, "{errors}");
        let text = errors.to_string();
        assert!(
            text.contains("line 2: bindngs: unknown top-level key `bindngs`"),
            "{text}"
        );
        assert!(
            text.contains("line 6: bindings.a.kind: unknown variant `sever`"),
            "{text}"
        );
        assert!(
            text.contains(
                "line 10: bindings.b.exitt: unknown field `exitt`, expected one of `type`, `kind`"
            ),
            "{text}"
        );
    }

    #[test]
    fn rejects_invalid_names() {
        let errors = ConfigDocument::parse("name: 9lives\n", "z.yaml", &no_env).unwrap_err();
        assert!(errors.mentions("`9lives` is not a valid name"), "{errors}");
    }
}
