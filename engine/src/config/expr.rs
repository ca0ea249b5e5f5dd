//! `${{env.NAME}}` expressions, resolved on the YAML tree before anything reads it.
//!
//! Zilla substitutes the text before parsing, so `port: ${{env.PORT}}` is a number
//! when `PORT=1883`. A scalar that is exactly one expression is therefore re-read
//! as a YAML scalar after substitution; an expression inside a longer string is
//! spliced in as text.

use serde_yaml::Value;

use super::error::ConfigError;

/// Looks up the value of an environment variable.
pub type EnvLookup<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// Replaces every expression in `value`; returns one error per unresolvable
/// expression, with the path of the scalar it appears in.
pub(crate) fn resolve(value: &mut Value, env: &EnvLookup<'_>) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    resolve_at(value, String::new(), env, &mut errors);
    errors
}

fn resolve_at(value: &mut Value, path: String, env: &EnvLookup<'_>, errors: &mut Vec<ConfigError>) {
    match value {
        Value::String(text) if text.contains("${{") => match substitute(text, env) {
            Ok(Substituted::Whole(resolved)) => *value = retype(resolved),
            Ok(Substituted::Spliced(resolved)) => *text = resolved,
            Err(message) => errors.push(ConfigError {
                path,
                line: None,
                message,
            }),
        },
        Value::Sequence(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                resolve_at(item, format!("{path}[{index}]"), env, errors);
            }
        }
        Value::Mapping(entries) => {
            for (key, item) in entries.iter_mut() {
                let key = match key {
                    Value::String(key) => key.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                };
                let child = if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                };
                resolve_at(item, child, env, errors);
            }
        }
        Value::Tagged(tagged) => resolve_at(&mut tagged.value, path, env, errors),
        _ => {}
    }
}

enum Substituted {
    /// The scalar was one expression and nothing else.
    Whole(String),
    /// The expression(s) were part of a longer string.
    Spliced(String),
}

fn substitute(text: &str, env: &EnvLookup<'_>) -> Result<Substituted, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut expressions = 0;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unterminated expression in `{text}` (expected `}}}}`)"))?;
        let expression = after[..end].trim();
        out.push_str(&evaluate(expression, env)?);
        expressions += 1;
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    let whole = expressions == 1 && text.trim().starts_with("${{") && text.trim().ends_with("}}");
    Ok(if whole {
        Substituted::Whole(out)
    } else {
        Substituted::Spliced(out)
    })
}

fn evaluate(expression: &str, env: &EnvLookup<'_>) -> Result<String, String> {
    match expression.split_once('.') {
        Some(("env", name)) if !name.is_empty() => env(name).ok_or_else(|| {
            format!("environment variable `{name}` is not set (used as `${{{{env.{name}}}}}`)")
        }),
        _ => Err(format!(
            "unsupported expression `${{{{{expression}}}}}`; expected `${{{{env.NAME}}}}`"
        )),
    }
}

/// Re-reads a substituted scalar so numbers and booleans keep their YAML type;
/// anything that would not be a plain scalar stays the string it was.
fn retype(resolved: String) -> Value {
    match serde_yaml::from_str::<Value>(&resolved) {
        Ok(scalar @ (Value::Number(_) | Value::Bool(_))) => scalar,
        _ => Value::String(resolved),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("1883".into()),
            "HOST" => Some("127.0.0.1".into()),
            "MAP" => Some("{a: 1}".into()),
            _ => None,
        }
    }

    fn resolved(yaml: &str) -> (Value, Vec<ConfigError>) {
        let mut value: Value = serde_yaml::from_str(yaml).unwrap();
        let errors = resolve(&mut value, &env);
        (value, errors)
    }

    #[test]
    fn whole_expression_keeps_numbers_numeric() {
        let (value, errors) = resolved("port: ${{env.PORT}}\nhost: ${{ env.HOST }}");
        assert!(errors.is_empty());
        assert_eq!(value["port"], Value::Number(1883.into()));
        assert_eq!(value["host"], Value::String("127.0.0.1".into()));
    }

    #[test]
    fn spliced_expression_stays_text() {
        let (value, _) = resolved("url: \"tcp://${{env.HOST}}:${{env.PORT}}\"");
        assert_eq!(value["url"], Value::String("tcp://127.0.0.1:1883".into()));
    }

    #[test]
    fn substituted_text_is_never_parsed_as_structure() {
        let (value, _) = resolved("x: ${{env.MAP}}");
        assert_eq!(value["x"], Value::String("{a: 1}".into()));
    }

    #[test]
    fn missing_variable_names_it_and_where_it_is_used() {
        let (_, errors) = resolved("bindings:\n  b:\n    options:\n      host: ${{env.NOPE}}");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "bindings.b.options.host");
        assert!(errors[0]
            .message
            .contains("environment variable `NOPE` is not set"));
    }

    #[test]
    fn unknown_namespace_is_an_error() {
        let (_, errors) = resolved("x: ${{vault.secret}}");
        assert!(errors[0].message.contains("unsupported expression"));
    }
}
