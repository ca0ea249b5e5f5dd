//! `type: asyncapi`: the MQTT proxy generated from an AsyncAPI 2.6 or 3.0
//! document read from a catalog.
//!
//! Kind `server` becomes a tcp server (+ a tls server for `mqtts`) and an mqtt
//! server whose topics are the document's channels (`{param}` levels become
//! `+`), whose payloads are validated against each message's schema, and whose
//! routes allow publishing where an operation sends and subscribing where one
//! receives; it listens on the ports of the `servers` URLs (or of the
//! document's first server) and keeps its sessions in the spec's `store` or
//! in a memory store generated for it. Kind `client` becomes an mqtt client
//! and a tcp client toward its `servers` URL, the document's server, or
//! `options.tcp`. Kind `proxy` routes operations of one document to the
//! clients serving another's; it is realised as the routes of the asyncapi
//! server in front of it. Security schemes map to guards. The generated
//! bindings are ordinary bindings built by the engine (see them with
//! `zilla start --print-generated`).

#![forbid(unsafe_code)]

mod routes;
mod schema;
mod security;
mod servers;
pub mod spec;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};
use zilla_engine::config::{BindingConfig, PluginConfig, RouteConfig};
use zilla_engine::{
    register_generator, BindingContext, BuildError, Generated, GeneratorFactory, Kind,
    PluginContext, SchemaRef,
};

use routes::OperationRoute;
use servers::Selector;
use spec::Spec;

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
    /// Which servers: URLs (`mqtt://localhost:7183`; the server kind serves
    /// the document servers with that protocol and host:port, on that port;
    /// the client kind connects there) or names of the document's servers.
    /// The document's first mqtt server when absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// Names of the document's servers to use (Zilla's `names` selector).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// The store the generated mqtt server keeps session ownership in; a
    /// memory store of its own when absent (as Zilla). Unused by the client kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// Security scheme name (in `components.securitySchemes`) -> the guard
    /// that verifies it at CONNECT.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub security: IndexMap<String, String>,
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

/// Reads and parses the document labelled `label`.
fn load_spec(
    cx: &mut PluginContext<'_>,
    label: &str,
    spec: &SpecOptions,
) -> Result<Spec, BuildError> {
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
    spec::parse(&text).map_err(|error| {
        cx.error(
            &format!("options.specs.{label}"),
            format!("{}: {error}", subject.subject),
        )
    })
}

/// The binding's first document with its label and options.
fn read_spec(
    cx: &mut PluginContext<'_>,
    options: &AsyncApiOptions,
) -> Result<(String, Spec, SpecOptions), BuildError> {
    let Some((label, spec_options)) = options.specs.iter().next() else {
        return Err(cx.error("options.specs", "name one AsyncAPI document"));
    };
    let spec = load_spec(cx, label, spec_options)?;
    Ok((label.clone(), spec, spec_options.clone()))
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

/// Applies `choose` to the label's `servers` and `names`, recording its
/// error at the entry it is about.
fn choose_servers<T>(
    cx: &mut PluginContext<'_>,
    label: &str,
    spec_options: &SpecOptions,
    choose: impl FnOnce(&[Selector]) -> Result<T, servers::Located>,
) -> Result<T, BuildError> {
    servers::selectors(&spec_options.servers, &spec_options.names)
        .and_then(|selectors| choose(&selectors))
        .map_err(|(at, message)| cx.error(&format!("options.specs.{label}.{at}"), message))
}

/// The store the generated mqtt server names: the spec's `store` (checked
/// here, so the error points at it), else a 1.x-style `mqtt.store`, else a
/// memory store generated for this server alone.
fn server_store(
    cx: &mut PluginContext<'_>,
    label: &str,
    spec_options: &SpecOptions,
    mqtt_options: &Mapping,
    generated: &mut Generated,
) -> Result<Option<Value>, BuildError> {
    if let Some(store) = &spec_options.store {
        cx.store(store, &format!("options.specs.{label}.store"))?;
        return Ok(Some(store.as_str().into()));
    }
    if mqtt_options.contains_key("store") {
        return Ok(None);
    }
    let name = format!("{}_store", cx.name());
    generated.stores.insert(
        name.clone(),
        PluginConfig {
            type_name: "memory".into(),
            options: None,
        },
    );
    Ok(Some(name.into()))
}

/// The generated tcp server: it listens where the chosen servers say (or
/// `options.tcp`) and hands the TLS ports to the tls server.
fn tcp_server(
    cx: &mut PluginContext<'_>,
    options: &AsyncApiOptions,
    served: &servers::Served,
    mqtt_name: &str,
    tls_name: &str,
) -> Result<BindingConfig, BuildError> {
    let mut tcp_options = options
        .tcp
        .clone()
        .and_then(|v| v.as_mapping().cloned())
        .unwrap_or_default();
    tcp_options
        .entry("host".into())
        .or_insert_with(|| "0.0.0.0".into());
    let overridden = tcp_options.contains_key("port");
    if !overridden {
        let mut ports: Vec<Value> = served
            .listeners
            .iter()
            .map(|l| Value::from(l.port))
            .collect();
        let port = if ports.len() == 1 {
            ports.remove(0)
        } else {
            Value::Sequence(ports)
        };
        tcp_options.insert("port".into(), port);
    }
    let secure: Vec<u16> = served
        .listeners
        .iter()
        .filter(|l| l.secure)
        .map(|l| l.port)
        .collect();
    let mut tcp = binding("tcp", Kind::Server, Some(Value::Mapping(tcp_options)), None);
    if secure.is_empty() {
        tcp.exit = Some(mqtt_name.to_owned());
    } else if secure.len() == served.listeners.len() {
        tcp.exit = Some(tls_name.to_owned());
    } else if overridden {
        return Err(cx.error(
            "options.tcp.port",
            "the servers chosen are both mqtt and mqtts: leave `tcp.port` out so each listens on its own port",
        ));
    } else {
        // Plain and TLS ports on one listener: TLS ports go through tls first.
        tcp.routes = vec![RouteConfig {
            when: secure
                .iter()
                .map(|port| yaml(serde_json::json!({ "port": port })))
                .collect(),
            exit: tls_name.to_owned(),
            guarded: IndexMap::new(),
            with: None,
        }];
        tcp.exit = Some(mqtt_name.to_owned());
    }
    Ok(tcp)
}

fn generate_server(cx: &mut BindingContext<'_>) -> Result<Generated, BuildError> {
    let options: AsyncApiOptions = cx.options()?;
    let (label, spec, spec_options) = read_spec(cx, &options)?;
    let served = choose_servers(cx, &label, &spec_options, |selectors| {
        servers::served(&spec, selectors)
    })?;
    let server = served.server.clone();
    let name = cx.name().to_owned();
    let operation_routes = server_routes(cx, &label, &spec)?;
    let schemas = format!("{name}_schemas");
    let mqtt_name = format!("{name}_mqtt");
    let tls_name = format!("{name}_tls");

    let mut generated = Generated::default();
    let tcp = tcp_server(cx, &options, &served, &mqtt_name, &tls_name)?;
    generated.bindings.insert(name.clone(), tcp);
    if served.listeners.iter().any(|l| l.secure) {
        let Some(tls) = options.tls.clone() else {
            return Err(cx.error(
                "options.tls",
                format!(
                    "`{}` is served over mqtts: give `tls` options (keys) and a `vault`",
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

    let mut mqtt_options = options.mqtt.clone().unwrap_or_default();
    mqtt_options.insert("topics".into(), yaml(serde_json::Value::Array(topics)));
    if let Some(store) = server_store(cx, &label, &spec_options, &mqtt_options, &mut generated)? {
        mqtt_options.insert("store".into(), store);
    }
    let authorization = security::authorization(
        cx,
        &label,
        &spec_options.security,
        &spec,
        &server,
        options.mqtt.as_ref(),
    )?;
    let guarded = match authorization {
        Some((guard, generated)) => {
            if let Some(generated) = generated {
                mqtt_options.insert("authorization".into(), generated);
            }
            IndexMap::from([(guard, Vec::new())])
        }
        None => IndexMap::new(),
    };
    let mut mqtt = binding(
        "mqtt",
        Kind::Server,
        Some(Value::Mapping(mqtt_options)),
        None,
    );
    mqtt.routes = operation_routes
        .into_iter()
        .map(|route| RouteConfig {
            when: route.when.into_iter().map(yaml).collect(),
            exit: route.exit,
            // A route's own roles (e.g. only operators may send commands)
            // replace the plain "authenticated" guard of the document.
            guarded: if route.guarded.is_empty() {
                guarded.clone()
            } else {
                route.guarded
            },
            with: None,
        })
        .collect();
    generated.bindings.insert(mqtt_name, mqtt);
    Ok(generated)
}

/// The mqtt routes of an asyncapi server: its own `routes` by operation;
/// else, when its `exit` is an asyncapi proxy, the proxy's routes resolved
/// against the proxy's documents (the proxy is realised here, in the routes
/// of the server in front of it); else every operation toward `exit`.
fn server_routes(
    cx: &mut BindingContext<'_>,
    label: &str,
    spec: &Spec,
) -> Result<Vec<OperationRoute>, BuildError> {
    let config = cx.config();
    let own = IndexMap::from([(label.to_owned(), spec.clone())]);
    if !config.routes.is_empty() {
        return routes::operation_routes(cx, &config.routes, config.exit.as_deref(), &own);
    }
    let Some(exit) = config.exit.as_deref() else {
        return Err(cx.error(
            "exit",
            "an asyncapi server needs an `exit` (an asyncapi client or proxy) or `routes`",
        ));
    };
    let proxy = cx
        .configured_bindings()
        .find(|(name, b)| *name == exit && b.type_name == "asyncapi" && b.kind == Kind::Proxy)
        .map(|(_, b)| b);
    let Some(proxy) = proxy else {
        let every = routes::all_operations(&own, exit);
        return every.map(|route| vec![route]).ok_or_else(|| {
            cx.error(
                "options.specs",
                "the document has no operations: nothing would be allowed",
            )
        });
    };
    cx.within(&format!("bindings.{exit}"), |cx| {
        let options: AsyncApiOptions =
            serde_yaml::from_value(proxy.options.clone().unwrap_or_default())
                .map_err(|e| cx.error("options", e.to_string()))?;
        let mut specs = IndexMap::new();
        for (label, spec_options) in &options.specs {
            specs.insert(label.clone(), load_spec(cx, label, spec_options)?);
        }
        if proxy.routes.is_empty() && proxy.exit.is_none() {
            return Err(cx.error("routes", "an asyncapi proxy needs `routes` or an `exit`"));
        }
        routes::operation_routes(cx, &proxy.routes, proxy.exit.as_deref(), &specs)
    })
}

/// An asyncapi proxy has no bindings of its own: the asyncapi server that
/// exits to it generates one mqtt route per operation the proxy routes. It
/// only checks that such a server exists.
fn generate_proxy(cx: &mut BindingContext<'_>) -> Result<Generated, BuildError> {
    let _: AsyncApiOptions = cx.options()?;
    let name = cx.name().to_owned();
    let referrers: Vec<(String, bool)> = cx
        .configured_bindings()
        .filter(|(_, b)| {
            b.exit.as_deref() == Some(name.as_str()) || b.routes.iter().any(|r| r.exit == name)
        })
        .map(|(n, b)| {
            (
                n.to_owned(),
                b.type_name == "asyncapi" && b.kind == Kind::Server && b.routes.is_empty(),
            )
        })
        .collect();
    if let Some((other, _)) = referrers.iter().find(|(_, server)| !server) {
        return Err(cx.error(
            "",
            format!("`{other}` leads here, but only the `exit` of an asyncapi server (without routes of its own) can be an asyncapi proxy"),
        ));
    }
    if referrers.is_empty() {
        return Err(cx.error(
            "",
            "an asyncapi proxy works as the `exit` of an asyncapi server; none leads here",
        ));
    }
    Ok(Generated::default())
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
    let (label, spec, spec_options) = read_spec(cx, &options)?;
    let target = choose_servers(cx, &label, &spec_options, |selectors| {
        servers::target(&spec, selectors)
    })?;
    if let Some(store) = &spec_options.store {
        // A client keeps no sessions, but a name that leads nowhere is still a mistake.
        cx.store(store, &format!("options.specs.{label}.store"))?;
    }
    let name = cx.name().to_owned();
    let tcp_name = format!("{name}_tcp");
    let mut tcp_options = options
        .tcp
        .clone()
        .and_then(|v| v.as_mapping().cloned())
        .unwrap_or_default();
    tcp_options
        .entry("host".into())
        .or_insert_with(|| target.host.clone().into());
    tcp_options
        .entry("port".into())
        .or_insert_with(|| Value::from(target.port));
    let mut generated = Generated::default();
    if target.secure {
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
                    .unwrap_or_else(|| yaml(serde_json::json!({ "sni": [target.host] }))),
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
    kinds: &[Kind::Server, Kind::Client, Kind::Proxy],
    generate: |cx| match cx.kind() {
        Kind::Server => generate_server(cx),
        Kind::Proxy => generate_proxy(cx),
        _ => generate_client(cx),
    },
});
