//! `type: asyncapi`: the MQTT proxy generated from an AsyncAPI 2.6 or 3.0
//! document read from a catalog.
//!
//! Kind `server` becomes a tcp server (+ a tls server for `mqtts`) and an mqtt
//! server whose topics are the document's channels (`{param}` levels become
//! `+`), whose payloads are validated against each message's schema, and whose
//! routes allow publishing where an operation sends and subscribing where one
//! receives. Kind `client` becomes an mqtt client and a tcp client toward the
//! document's server or `options.tcp`. The generated bindings are ordinary
//! bindings built by the engine (see them with `zilla start --print-generated`).

#![forbid(unsafe_code)]

pub mod spec;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};
use zilla_engine::config::{BindingConfig, PluginConfig, RouteConfig};
use zilla_engine::{
    register_generator, BindingContext, BuildError, Generated, GeneratorFactory, Kind, SchemaRef,
};

use spec::{Action, Spec};

/// `options` of an asyncapi binding.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsyncApiOptions {
    /// The documents, by label.
    pub specs: IndexMap<String, SpecOptions>,
    /// tcp options overriding the document's server (host, port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<Value>,
    /// tls options for an `mqtts` server (keys, sni, ...); the binding's `vault` holds the keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Value>,
    /// mqtt server options passed on (e.g. `authorization`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<Mapping>,
}

/// One document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecOptions {
    /// Where the document is: `{<catalog>: {subject, version}}`.
    pub catalog: IndexMap<String, SpecSubject>,
    /// Which of the document's servers to use (by name); the first mqtt one when absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
}

/// A document's subject in a catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecSubject {
    /// The subject.
    pub subject: String,
    /// The version (default `latest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

fn read_spec(
    cx: &mut BindingContext<'_>,
    options: &AsyncApiOptions,
) -> Result<(Spec, Vec<String>), BuildError> {
    let Some((label, spec)) = options.specs.iter().next() else {
        return Err(cx.error("options.specs", "name one AsyncAPI document"));
    };
    let path = format!("options.specs.{label}.catalog");
    let Some((catalog_name, subject)) = spec.catalog.iter().next() else {
        return Err(cx.error(&path, "name the catalog holding the document"));
    };
    let catalog = cx.catalog(catalog_name, &path)?;
    let reference = SchemaRef::Subject {
        subject: subject.subject.clone(),
        version: subject.version.clone().unwrap_or_else(|| "latest".into()),
    };
    let text = match catalog.resolve_now(&reference) {
        Some(Ok(schema)) => schema.text,
        Some(Err(error)) => return Err(cx.error(&path, error.to_string())),
        None => {
            return Err(cx.error(
                &path,
                format!("catalog `{catalog_name}` cannot provide {reference} at startup"),
            ))
        }
    };
    let parsed = spec::parse(&text).map_err(|error| {
        cx.error(
            &format!("options.specs.{label}"),
            format!("{}: {error}", subject.subject),
        )
    })?;
    Ok((parsed, spec.servers.clone()))
}

fn binding(
    type_name: &str,
    kind: Kind,
    options: Option<Value>,
    exit: Option<String>,
) -> BindingConfig {
    BindingConfig {
        type_name: type_name.to_owned(),
        kind,
        options,
        routes: Vec::new(),
        exit,
        vault: None,
        catalog: None,
        telemetry: None,
    }
}

fn yaml(value: serde_json::Value) -> Value {
    serde_yaml::to_value(value).unwrap_or(Value::Null)
}

fn pick_server<'a>(
    cx: &mut BindingContext<'_>,
    spec: &'a Spec,
    wanted: &[String],
) -> Result<&'a spec::Server, BuildError> {
    let found = match wanted.first() {
        Some(name) => spec.servers.iter().find(|s| &s.name == name),
        None => spec.servers.first(),
    };
    found.ok_or_else(|| {
        cx.error(
            "options.specs",
            format!("the document has no mqtt server named {wanted:?}"),
        )
    })
}

fn generate_server(cx: &mut BindingContext<'_>) -> Result<Generated, BuildError> {
    let options: AsyncApiOptions = cx.options()?;
    let (spec, wanted) = read_spec(cx, &options)?;
    let server = pick_server(cx, &spec, &wanted)?.clone();
    let name = cx.name().to_owned();
    let Some(exit) = cx.config().exit.clone() else {
        return Err(cx.error(
            "exit",
            "an asyncapi server needs an `exit` (an asyncapi client)",
        ));
    };
    let schemas = format!("{name}_schemas");
    let mqtt_name = format!("{name}_mqtt");
    let tls_name = format!("{name}_tls");
    let secure = server.protocol == "mqtts";

    let mut tcp_options = options
        .tcp
        .clone()
        .and_then(|v| v.as_mapping().cloned())
        .unwrap_or_default();
    tcp_options
        .entry("host".into())
        .or_insert_with(|| "0.0.0.0".into());
    tcp_options
        .entry("port".into())
        .or_insert_with(|| Value::from(server.port));
    let mut generated = Generated::default();
    generated.bindings.insert(
        name.clone(),
        binding(
            "tcp",
            Kind::Server,
            Some(Value::Mapping(tcp_options)),
            Some(if secure {
                tls_name.clone()
            } else {
                mqtt_name.clone()
            }),
        ),
    );
    if secure {
        let Some(tls) = options.tls.clone() else {
            return Err(cx.error(
                "options.tls",
                format!(
                    "server `{}` is mqtts: give `tls` options (keys) and a `vault`",
                    server.name
                ),
            ));
        };
        let mut tls_binding = binding("tls", Kind::Server, Some(tls), Some(mqtt_name.clone()));
        tls_binding.vault = cx.config().vault.clone();
        generated.bindings.insert(tls_name, tls_binding);
    }

    let mut subjects = serde_json::Map::new();
    let mut topics = Vec::new();
    for channel in &spec.channels {
        let Some(message) = channel.messages.iter().find(|m| m.payload.is_some()) else {
            continue;
        };
        let subject = format!("{}.{}", channel.name, message.name);
        let model = match message.schema_format.as_deref() {
            Some(format) if format.contains("avro") => "avro",
            _ => "json",
        };
        let schema_text =
            serde_json::to_string(message.payload.as_ref().expect("checked")).unwrap_or_default();
        subjects.insert(
            subject.clone(),
            serde_json::json!({ "schema": schema_text }),
        );
        let user_properties: serde_json::Map<String, serde_json::Value> = message
            .headers
            .iter()
            .filter_map(|(header, schema)| {
                header_model(schema).map(|model| (header.clone(), model))
            })
            .collect();
        let mut topic = serde_json::json!({
            "name": channel.topic,
            "content": { "model": model, "catalog": { schemas.clone(): [{ "subject": subject }] } }
        });
        if !user_properties.is_empty() {
            topic["user-properties"] = serde_json::Value::Object(user_properties);
        }
        topics.push(topic);
    }
    generated.catalogs.insert(
        schemas,
        PluginConfig {
            type_name: "inline".into(),
            options: Some(yaml(serde_json::json!({ "subjects": subjects }))),
        },
    );

    let topics_for = |action: Action| -> Vec<serde_json::Value> {
        spec.operations
            .iter()
            .filter(|(_, a)| *a == action)
            .filter_map(|(channel, _)| spec.channels.iter().find(|c| &c.name == channel))
            .map(|c| serde_json::json!({ "topic": c.topic }))
            .collect()
    };
    let mut when = Vec::new();
    let publish = topics_for(Action::Publish);
    let subscribe = topics_for(Action::Subscribe);
    if !publish.is_empty() {
        when.push(yaml(serde_json::json!({ "publish": publish })));
    }
    if !subscribe.is_empty() {
        when.push(yaml(serde_json::json!({ "subscribe": subscribe })));
    }
    if when.is_empty() {
        return Err(cx.error(
            "options.specs",
            "the document has no operations: nothing would be allowed",
        ));
    }
    let mut mqtt_options = options.mqtt.clone().unwrap_or_default();
    mqtt_options.insert("topics".into(), yaml(serde_json::Value::Array(topics)));
    let guarded = mqtt_options
        .get("authorization")
        .and_then(Value::as_mapping)
        .and_then(|a| a.keys().next())
        .and_then(Value::as_str)
        .map(|guard| IndexMap::from([(guard.to_owned(), Vec::new())]))
        .unwrap_or_default();
    if !spec.security.is_empty() && guarded.is_empty() {
        return Err(cx.error(
            "options.mqtt.authorization",
            format!(
                "the document requires security ({}): map it to a guard with `mqtt: {{authorization: ...}}`",
                spec.security.join(", ")
            ),
        ));
    }
    let mut mqtt = binding(
        "mqtt",
        Kind::Server,
        Some(Value::Mapping(mqtt_options)),
        None,
    );
    mqtt.routes.push(RouteConfig {
        when,
        exit,
        guarded,
        with: None,
    });
    generated.bindings.insert(mqtt_name, mqtt);
    Ok(generated)
}

/// The model a header's JSON Schema asks of an MQTT user property (a string
/// on the wire): `string` (with its length and pattern), numbers, booleans.
fn header_model(schema: &serde_json::Value) -> Option<serde_json::Value> {
    let mut model = match schema.get("type")?.as_str()? {
        "string" => serde_json::json!({ "model": "string" }),
        "integer" => serde_json::json!({ "model": "int64" }),
        "number" => serde_json::json!({ "model": "double" }),
        "boolean" => serde_json::json!({ "model": "boolean" }),
        _ => return None,
    };
    for (from, to) in [
        ("minLength", "minLength"),
        ("maxLength", "maxLength"),
        ("pattern", "pattern"),
    ] {
        if let Some(value) = schema.get(from) {
            model[to] = value.clone();
        }
    }
    Some(model)
}

fn generate_client(cx: &mut BindingContext<'_>) -> Result<Generated, BuildError> {
    let options: AsyncApiOptions = cx.options()?;
    let (spec, wanted) = read_spec(cx, &options)?;
    let server = pick_server(cx, &spec, &wanted)?.clone();
    let name = cx.name().to_owned();
    let tcp_name = format!("{name}_tcp");
    let mut tcp_options = options
        .tcp
        .clone()
        .and_then(|v| v.as_mapping().cloned())
        .unwrap_or_default();
    tcp_options
        .entry("host".into())
        .or_insert_with(|| server.host.clone().into());
    tcp_options
        .entry("port".into())
        .or_insert_with(|| Value::from(server.port));
    let mut generated = Generated::default();
    if server.protocol == "mqtts" {
        let tls_name = format!("{name}_tls");
        generated.bindings.insert(
            name.clone(),
            binding("mqtt", Kind::Client, None, Some(tls_name.clone())),
        );
        let mut tls = binding(
            "tls",
            Kind::Client,
            Some(
                options
                    .tls
                    .clone()
                    .unwrap_or_else(|| yaml(serde_json::json!({ "sni": [server.host] }))),
            ),
            Some(tcp_name.clone()),
        );
        tls.vault = cx.config().vault.clone();
        generated.bindings.insert(tls_name, tls);
    } else {
        generated.bindings.insert(
            name.clone(),
            binding("mqtt", Kind::Client, None, Some(tcp_name.clone())),
        );
    }
    generated.bindings.insert(
        tcp_name,
        binding("tcp", Kind::Client, Some(Value::Mapping(tcp_options)), None),
    );
    Ok(generated)
}

register_generator!(GeneratorFactory {
    type_name: "asyncapi",
    kinds: &[Kind::Server, Kind::Client],
    generate: |cx| match cx.kind() {
        Kind::Server => generate_server(cx),
        _ => generate_client(cx),
    },
});
