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

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
        })
    }
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
    /// Names of the security schemes the server lists (any one suffices).
    pub security: Vec<String>,
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

/// An operation: what clients may do on a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Its id: the key in 3.0 `operations`, `operationId` in 2.6.
    pub id: Option<String>,
    /// The channel's key in `channels`.
    pub channel: String,
    /// Publish or subscribe.
    pub action: Action,
}

/// A security scheme of `components.securitySchemes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityScheme {
    /// Its key in `components.securitySchemes`.
    pub name: String,
    /// `type`: `userPassword`, `http`, `httpApiKey`, `apiKey`, `X509`, ...
    pub kind: String,
    /// `scheme` of an `http` scheme (`bearer`, `basic`).
    pub scheme: Option<String>,
    /// `in` of an `apiKey` / `httpApiKey` scheme (`user`, `password`, `header`, ...).
    pub location: Option<String>,
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
    /// Operations.
    pub operations: Vec<Operation>,
    /// The security schemes the document declares.
    pub security_schemes: Vec<SecurityScheme>,
}

impl Spec {
    /// The operation with this id.
    pub fn operation(&self, id: &str) -> Option<&Operation> {
        self.operations.iter().find(|o| o.id.as_deref() == Some(id))
    }

    /// The channel with this key.
    pub fn channel(&self, name: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.name == name)
    }

    /// The schemes a client of `server` must satisfy (any one of them): the
    /// server's `security` when it lists some, otherwise every declared
    /// scheme, so that a document declaring security is never served open.
    pub fn required_security(&self, server: &Server) -> Vec<&SecurityScheme> {
        if server.security.is_empty() {
            self.security_schemes.iter().collect()
        } else {
            self.security_schemes
                .iter()
                .filter(|s| server.security.contains(&s.name))
                .collect()
        }
    }
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
                    operations.push(Operation {
                        id: operation
                            .get("operationId")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        channel: name.clone(),
                        action: op,
                    });
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
                operations.push(Operation {
                    id: key.as_str().map(str::to_owned),
                    channel: channel.to_owned(),
                    action,
                });
            }
        }
    }
    let security_schemes = security_schemes(&root)?;
    for server in &servers {
        for (index, name) in server.security.iter().enumerate() {
            if !security_schemes.iter().any(|s| &s.name == name) {
                return Err(at(
                    &format!("servers.{}.security[{index}]", server.name),
                    format!("security scheme `{name}` is not in components.securitySchemes"),
                ));
            }
        }
    }
    Ok(Spec {
        version,
        servers,
        channels,
        operations,
        security_schemes,
    })
}

fn security_schemes(root: &Value) -> Result<Vec<SecurityScheme>, SpecError> {
    let mut schemes = Vec::new();
    let Some(map) = root
        .get("components")
        .and_then(|c| c.get("securitySchemes"))
        .and_then(Value::as_mapping)
    else {
        return Ok(schemes);
    };
    for (key, scheme) in map {
        let name = key.as_str().unwrap_or_default().to_owned();
        let path = format!("components.securitySchemes.{name}");
        let scheme = resolve(root, scheme, &path)?;
        let text = |field: &str| scheme.get(field).and_then(Value::as_str).map(str::to_owned);
        let kind = text("type").ok_or_else(|| at(&format!("{path}.type"), "missing"))?;
        schemes.push(SecurityScheme {
            name,
            kind,
            scheme: text("scheme"),
            location: text("in"),
        });
    }
    Ok(schemes)
}

/// The scheme names a server's `security` lists: 2.6 `[{name: [scopes]}]`,
/// 3.0 `[{$ref: '#/components/securitySchemes/name'}]`.
fn server_security(server: &Value, path: &str) -> Result<Vec<String>, SpecError> {
    let Some(items) = server.get("security").and_then(Value::as_sequence) else {
        return Ok(Vec::new());
    };
    let mut names = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let item_path = format!("{path}.security[{index}]");
        if let Some(reference) = item.get("$ref").and_then(Value::as_str) {
            let name = reference
                .strip_prefix("#/components/securitySchemes/")
                .ok_or_else(|| {
                    at(
                        &item_path,
                        format!("`{reference}` is not a security scheme"),
                    )
                })?;
            names.push(name.to_owned());
        } else if let Some(map) = item.as_mapping() {
            names.extend(map.keys().filter_map(Value::as_str).map(str::to_owned));
        } else {
            return Err(at(&item_path, "expected a security requirement"));
        }
    }
    Ok(names)
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
        let security = server_security(server, &path)?;
        servers.push(Server {
            name,
            host,
            port,
            protocol: protocol.to_owned(),
            security,
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

/// How deep a schema may nest once its `$ref`s are inlined: a `$ref` to an
/// enclosing node (a recursive schema) would otherwise inline forever.
const MAX_INLINE_DEPTH: usize = 64;

/// Resolves `$ref`s inside a schema, so it stands alone.
fn inline(root: &Value, value: &Value, path: &str) -> Result<Value, SpecError> {
    inline_within(root, value, path, 0)
}

fn inline_within(
    root: &Value,
    value: &Value,
    path: &str,
    depth: usize,
) -> Result<Value, SpecError> {
    if depth > MAX_INLINE_DEPTH {
        return Err(at(
            path,
            format!(
                "schema nested deeper than {MAX_INLINE_DEPTH} levels once its $refs are \
                 inlined (a $ref to an enclosing schema?)"
            ),
        ));
    }
    let inline = |value: &Value, path: &str| inline_within(root, value, path, depth + 1);
    let value = resolve(root, value, path)?;
    Ok(match value {
        Value::Mapping(map) => {
            let mut out = serde_yaml::Mapping::new();
            for (key, item) in map {
                let key_text = key.as_str().unwrap_or_default();
                out.insert(key.clone(), inline(item, &format!("{path}.{key_text}"))?);
            }
            Value::Mapping(out)
        }
        Value::Sequence(items) => Value::Sequence(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| inline(item, &format!("{path}[{i}]")))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ref_to_an_enclosing_schema_is_an_error_not_a_stack_overflow() {
        // Found by the asyncapi_reader fuzz target (fuzz/regressions/).
        let document = "asyncapi: 3.0.0
servers:
  plain:
    host: localhost:7183
    protocol: mqtt
channels:
  sensors:
    messages:
      reading:
        headers:
          $ref: \"#/channels/sensors\"
";
        let Err(error) = parse(document) else {
            panic!("a cyclic schema must be refused")
        };
        assert!(error.to_string().contains("nested deeper"), "{error}");
    }

    const TWO_SIX: &str = "
asyncapi: 2.6.0
servers:
  plain:
    url: localhost:1883
    protocol: mqtt
    security:
      - token: []
channels:
  lights/{id}:
    publish:
      operationId: reportLight
    subscribe:
      operationId: watchLight
components:
  securitySchemes:
    token:
      type: httpApiKey
      in: header
      name: authorization
";

    #[test]
    fn two_six_operations_carry_their_ids_and_inverted_actions() {
        let spec = parse(TWO_SIX).unwrap();
        assert_eq!(spec.channels[0].topic, "lights/+");
        let report = spec.operation("reportLight").unwrap();
        assert_eq!(
            report.action,
            Action::Subscribe,
            "2.6 `publish` is what clients receive"
        );
        assert_eq!(
            spec.operation("watchLight").unwrap().action,
            Action::Publish
        );
    }

    #[test]
    fn server_security_lists_scheme_names_in_both_versions() {
        let spec = parse(TWO_SIX).unwrap();
        assert_eq!(spec.servers[0].security, ["token"]);
        assert_eq!(
            spec.required_security(&spec.servers[0])[0].kind,
            "httpApiKey"
        );
        let three = "
asyncapi: 3.0.0
servers:
  plain:
    host: localhost:1883
    protocol: mqtt
    security:
      - $ref: '#/components/securitySchemes/user'
components:
  securitySchemes:
    user:
      type: userPassword
    other:
      type: X509
";
        let spec = parse(three).unwrap();
        let required = spec.required_security(&spec.servers[0]);
        assert_eq!(required.len(), 1, "only what the server lists");
        assert_eq!(required[0].name, "user");
    }

    #[test]
    fn a_json_document_reads_like_its_yaml() {
        let yaml: serde_json::Value = serde_yaml::from_str(TWO_SIX).unwrap();
        let json = serde_json::to_string_pretty(&yaml).unwrap();
        let spec = parse(&json).unwrap();
        assert_eq!(spec.channels[0].topic, "lights/+");
        assert_eq!(spec.operations.len(), 2);
        assert_eq!(spec.servers[0].security, ["token"]);
    }

    #[test]
    fn a_server_naming_an_undeclared_scheme_is_an_error() {
        let error = parse(&TWO_SIX.replace("- token: []", "- tokn: []")).unwrap_err();
        assert_eq!(
            error,
            "servers.plain.security[0]: security scheme `tokn` is not in components.securitySchemes"
        );
    }
}
