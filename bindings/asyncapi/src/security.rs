//! The document's security, mapped to a guard: which scheme the mqtt server
//! checks at CONNECT and where in the CONNECT the credentials are.

use indexmap::IndexMap;
use serde_yaml::{Mapping, Value};
use zilla_engine::{BuildError, PluginContext};

use crate::spec::{SecurityScheme, Server, Spec};

/// Where a scheme's credentials travel in an MQTT CONNECT, as an mqtt
/// `authorization.<guard>.credentials.connect` entry; `None` for schemes a
/// guard cannot check at CONNECT (e.g. `X509`, which is mutual TLS).
fn connect_credentials(scheme: &SecurityScheme) -> Option<(&'static str, &'static str)> {
    match scheme.kind.as_str() {
        "http"
            if scheme
                .scheme
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("bearer")) =>
        {
            Some(("username", "Bearer {credentials}"))
        }
        "oauth2" | "openIdConnect" => Some(("username", "Bearer {credentials}")),
        "userPassword" => Some(("password", "{credentials}")),
        "apiKey" | "httpApiKey" if scheme.location.as_deref() == Some("password") => {
            Some(("password", "{credentials}"))
        }
        "apiKey" | "httpApiKey" => Some(("username", "{credentials}")),
        _ => None,
    }
}

fn describe(scheme: &SecurityScheme) -> String {
    match &scheme.scheme {
        Some(http) => format!("`{}` ({} {http})", scheme.name, scheme.kind),
        None => format!("`{}` ({})", scheme.name, scheme.kind),
    }
}

/// The guard the mqtt server uses and, unless `explicit` (the 1.x-style
/// `options.mqtt.authorization`) already says so, the `authorization` entry
/// to generate for it. `mapping` is `options.specs.<label>.security`.
pub(crate) fn authorization(
    cx: &mut PluginContext<'_>,
    label: &str,
    mapping: &IndexMap<String, String>,
    spec: &Spec,
    server: &Server,
    explicit: Option<&Mapping>,
) -> Result<Option<(String, Option<Value>)>, BuildError> {
    let path = format!("options.specs.{label}.security");
    for name in mapping.keys() {
        if !spec.security_schemes.iter().any(|s| &s.name == name) {
            let declared: Vec<_> = spec.security_schemes.iter().map(describe).collect();
            return Err(cx.error(
                &format!("{path}.{name}"),
                format!(
                    "the document has no security scheme `{name}` (it declares: {})",
                    if declared.is_empty() {
                        "none".to_owned()
                    } else {
                        declared.join(", ")
                    }
                ),
            ));
        }
    }
    if let Some(guard) = explicit
        .and_then(|m| m.get("authorization"))
        .and_then(Value::as_mapping)
        .and_then(|a| a.keys().next())
        .and_then(Value::as_str)
    {
        return Ok(Some((guard.to_owned(), None)));
    }
    let required = spec.required_security(server);
    if required.is_empty() {
        return Ok(None);
    }
    // The server's schemes are alternatives: the first mapped one is checked.
    let Some((scheme, guard)) = required
        .iter()
        .find_map(|s| mapping.get(&s.name).map(|guard| (*s, guard)))
    else {
        let names: Vec<_> = required.iter().map(|s| describe(s)).collect();
        return Err(cx.error(
            &path,
            format!(
                "the document requires security ({}): map a scheme to a guard, e.g. `security: {{{}: <guard>}}`, or give `mqtt.authorization`",
                names.join(", "),
                required[0].name
            ),
        ));
    };
    let Some((field, pattern)) = connect_credentials(scheme) else {
        return Err(cx.error(
            &format!("{path}.{}", scheme.name),
            format!(
                "scheme {} cannot be checked by a guard at CONNECT; supported: http bearer, userPassword, apiKey, httpApiKey, oauth2, openIdConnect",
                describe(scheme)
            ),
        ));
    };
    cx.guard(guard, &format!("{path}.{}", scheme.name))?;
    let mut connect = Mapping::new();
    connect.insert(field.into(), pattern.into());
    let mut credentials = Mapping::new();
    credentials.insert("connect".into(), Value::Mapping(connect));
    let mut entry = Mapping::new();
    entry.insert("credentials".into(), Value::Mapping(credentials));
    let mut authorization = Mapping::new();
    authorization.insert(guard.as_str().into(), Value::Mapping(entry));
    Ok(Some((guard.clone(), Some(Value::Mapping(authorization)))))
}
