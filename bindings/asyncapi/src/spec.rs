//! An AsyncAPI 2.6 / 3.0 reader: servers, channels (addresses as MQTT topic
//! filters), messages with their payload schemas, and operations, with local
//! `$ref`s resolved. Errors point into the document.

use serde_yaml::Value;

/// What an operation lets clients do on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Clients publish (3.0 `send`; 2.6 `subscribe`, read the other way round).
    Publish,
    /// Clients subscribe (3.0 `receive`; 2.6 `publish`).
    Subscribe,
}

/// A server of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Its key in `servers`.
    pub name: String,
    /// Host name.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `mqtt` or `mqtts`.
    pub protocol: String,
}

/// A message and its payload schema.
#[derive(Debug, Clone)]
pub struct Message {
    /// Its key in the channel's `messages`.
    pub name: String,
    /// The payload's JSON Schema (or Avro schema), `$ref`s resolved.
    pub payload: Option<serde_json::Value>,
    /// The payload schema's format (`application/schema+json`, `...avro...`).
    pub schema_format: Option<String>,
    /// Header (MQTT user property) schemas by name, `$ref`s resolved.
    pub headers: Vec<(String, serde_json::Value)>,
}

/// A channel: an MQTT topic filter and its messages.
#[derive(Debug, Clone)]
pub struct Channel {
    /// Its key in `channels`.
    pub name: String,
    /// The address as a topic filter (`{param}` levels become `+`).
    pub topic: String,
    /// Its messages.
    pub messages: Vec<Message>,
}

/// What the document allows.
#[derive(Debug, Clone)]
pub struct Spec {
    /// `2.6.0`, `3.0.0`, ...
    pub version: String,
    /// Servers with an mqtt or mqtts protocol.
    pub servers: Vec<Server>,
    /// Channels.
    pub channels: Vec<Channel>,
    /// (channel name, action) pairs.
    pub operations: Vec<(String, Action)>,
    /// Security scheme types named by the servers' or document's security.
    pub security: Vec<String>,
}

/// An error located in the document.
pub type SpecError = String;

fn at(path: &str, message: impl std::fmt::Display) -> SpecError {
    format!("{path}: {message}")
}

/// Reads `text` (YAML or JSON).
pub fn parse(text: &str) -> Result<Spec, SpecError> {
    let root: Value =
        serde_yaml::from_str(text).map_err(|e| format!("not a YAML or JSON document: {e}"))?;
    let version = root
        .get("asyncapi")
        .and_then(Value::as_str)
        .ok_or_else(|| at("asyncapi", "missing: the document's AsyncAPI version"))?
        .to_owned();
    let major = if version.starts_with("3.") {
        3
    } else if version.starts_with("2.") {
        2
    } else {
        return Err(at(
            "asyncapi",
            format!("version `{version}` is not supported; expected 2.x or 3.x"),
        ));
    };
    let servers = servers(&root, major)?;
    if servers.is_empty() {
        return Err(at("servers", "no server with protocol `mqtt` or `mqtts`"));
    }
    let mut channels = Vec::new();
    let mut operations = Vec::new();
    let empty = serde_yaml::Mapping::new();
    let channel_map = root
        .get("channels")
        .and_then(Value::as_mapping)
        .unwrap_or(&empty);
    for (key, channel) in channel_map {
        let name = key.as_str().unwrap_or_default().to_owned();
        let path = format!("channels.{name}");
        let channel = resolve(&root, channel, &path)?;
        let address = if major == 3 {
            channel
                .get("address")
                .and_then(Value::as_str)
                .unwrap_or(&name)
                .to_owned()
        } else {
            name.clone()
        };
        let topic = address
            .split('/')
            .map(|level| {
                if level.starts_with('{') && level.ends_with('}') {
                    "+"
                } else {
                    level
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let mut messages = Vec::new();
        if major == 3 {
            if let Some(map) = channel.get("messages").and_then(Value::as_mapping) {
                for (key, message) in map {
                    let message_name = key.as_str().unwrap_or_default().to_owned();
                    let message_path = format!("{path}.messages.{message_name}");
                    messages.push(read_message(&root, message, &message_name, &message_path)?);
                }
            }
        } else {
            for (action, op) in [
                ("publish", Action::Subscribe),
                ("subscribe", Action::Publish),
            ] {
                if let Some(operation) = channel.get(action) {
                    operations.push((name.clone(), op));
                    if let Some(message) = operation.get("message") {
                        let message_path = format!("{path}.{action}.message");
                        let message_name = action.to_owned();
                        let read = read_message(&root, message, &message_name, &message_path)?;
                        if !messages.iter().any(|m: &Message| m.payload == read.payload) {
                            messages.push(read);
                        }
                    }
                }
            }
        }
        channels.push(Channel {
            name,
            topic,
            messages,
        });
    }
    if major == 3 {
        if let Some(map) = root.get("operations").and_then(Value::as_mapping) {
            for (key, operation) in map {
                let path = format!("operations.{}", key.as_str().unwrap_or_default());
                let action = match operation.get("action").and_then(Value::as_str) {
                    Some("send") => Action::Publish,
                    Some("receive") => Action::Subscribe,
                    other => {
                        return Err(at(
                            &format!("{path}.action"),
                            format!("expected `send` or `receive`, found {other:?}"),
                        ))
                    }
                };
                let reference = operation
                    .get("channel")
                    .and_then(|c| c.get("$ref"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| at(&format!("{path}.channel"), "needs a `$ref` to a channel"))?;
                let channel = reference
                    .strip_prefix("#/channels/")
                    .filter(|name| channels.iter().any(|c| c.name == *name))
                    .ok_or_else(|| {
                        at(
                            &format!("{path}.channel.$ref"),
                            format!("`{reference}` does not exist"),
                        )
                    })?;
                operations.push((channel.to_owned(), action));
            }
        }
    }
    let security = root
        .get("components")
        .and_then(|c| c.get("securitySchemes"))
        .and_then(Value::as_mapping)
        .map(|schemes| {
            schemes
                .values()
                .filter_map(|s| s.get("type").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok(Spec {
        version,
        servers,
        channels,
        operations,
        security,
    })
}

fn servers(root: &Value, major: u8) -> Result<Vec<Server>, SpecError> {
    let mut servers = Vec::new();
    let Some(map) = root.get("servers").and_then(Value::as_mapping) else {
        return Ok(servers);
    };
    for (key, server) in map {
        let name = key.as_str().unwrap_or_default().to_owned();
        let path = format!("servers.{name}");
        let protocol = server
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if protocol != "mqtt" && protocol != "mqtts" {
            continue;
        }
        let location = if major == 3 {
            server.get("host").and_then(Value::as_str)
        } else {
            server.get("url").and_then(Value::as_str)
        }
        .ok_or_else(|| {
            at(
                &path,
                if major == 3 {
                    "needs `host`"
                } else {
                    "needs `url`"
                },
            )
        })?;
        let location = location.split("://").last().unwrap_or(location);
        let (host, port) = match location.rsplit_once(':') {
            Some((host, port)) => (
                host.to_owned(),
                port.parse::<u16>()
                    .map_err(|_| at(&path, format!("`{port}` is not a port")))?,
            ),
            None => (
                location.to_owned(),
                if protocol == "mqtts" { 8883 } else { 1883 },
            ),
        };
        servers.push(Server {
            name,
            host,
            port,
            protocol: protocol.to_owned(),
        });
    }
    Ok(servers)
}

/// Follows a local `$ref` (`#/components/...`), once or repeatedly.
fn resolve<'a>(root: &'a Value, value: &'a Value, path: &str) -> Result<&'a Value, SpecError> {
    let mut current = value;
    for _ in 0..16 {
        let Some(reference) = current.get("$ref").and_then(Value::as_str) else {
            return Ok(current);
        };
        let pointer = reference.strip_prefix("#/").ok_or_else(|| {
            at(
                path,
                format!("only local `$ref`s are supported, found `{reference}`"),
            )
        })?;
        current = pointer
            .split('/')
            .try_fold(root, |node, segment| node.get(segment))
            .ok_or_else(|| at(path, format!("$ref `{reference}` does not exist")))?;
    }
    Err(at(path, "$ref chain too long (a cycle?)"))
}

/// Resolves `$ref`s inside a schema, so it stands alone.
fn inline(root: &Value, value: &Value, path: &str) -> Result<Value, SpecError> {
    let value = resolve(root, value, path)?;
    Ok(match value {
        Value::Mapping(map) => {
            let mut out = serde_yaml::Mapping::new();
            for (key, item) in map {
                let key_text = key.as_str().unwrap_or_default();
                out.insert(
                    key.clone(),
                    inline(root, item, &format!("{path}.{key_text}"))?,
                );
            }
            Value::Mapping(out)
        }
        Value::Sequence(items) => Value::Sequence(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| inline(root, item, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

fn read_message(
    root: &Value,
    message: &Value,
    name: &str,
    path: &str,
) -> Result<Message, SpecError> {
    let message = resolve(root, message, path)?;
    let mut headers = Vec::new();
    if let Some(schema) = message.get("headers") {
        let schema = inline(root, schema, &format!("{path}.headers"))?;
        if let Some(properties) = schema.get("properties").and_then(Value::as_mapping) {
            for (key, property) in properties {
                let json = serde_json::to_value(property)
                    .map_err(|e| at(&format!("{path}.headers"), e))?;
                headers.push((key.as_str().unwrap_or_default().to_owned(), json));
            }
        }
    }
    let payload = match message.get("payload") {
        Some(payload) => {
            let inlined = inline(root, payload, &format!("{path}.payload"))?;
            // A 3.0 multi-format schema: {schemaFormat, schema}.
            let (format, schema) = match (inlined.get("schemaFormat"), inlined.get("schema")) {
                (Some(format), Some(schema)) => {
                    (format.as_str().map(str::to_owned), schema.clone())
                }
                _ => (None, inlined),
            };
            let json =
                serde_json::to_value(&schema).map_err(|e| at(&format!("{path}.payload"), e))?;
            return Ok(Message {
                name: name.to_owned(),
                payload: Some(json),
                schema_format: format.or_else(|| {
                    message
                        .get("schemaFormat")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                }),
                headers,
            });
        }
        None => None,
    };
    Ok(Message {
        name: name.to_owned(),
        payload,
        schema_format: None,
        headers,
    })
}
