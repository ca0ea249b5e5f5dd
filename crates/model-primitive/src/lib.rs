//! Primitive models: `string` (`encoding`, `minLength`, `maxLength`,
//! `pattern`), `int32`, `int64`, `float`, `double` (`format: text|binary`,
//! `range`) and `boolean` (`format`).
//!
//! `range` is interval notation: `[0,100]`, `(0,1]`, `[10,)` (open end).
//! Binary numbers are big-endian, as Kafka's serializers write them.

#![forbid(unsafe_code)]

mod schema;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zilla_engine::{
    register_model, BuildError, Model, ModelFactory, PluginContext, ValidationError,
};

/// A primitive model reference.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrimitiveOptions {
    /// The model name.
    pub model: String,
    /// `string`: `utf_8` (default) or `utf_16`... only UTF-8 is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// `string`: fewest characters.
    #[serde(default, rename = "minLength", skip_serializing_if = "Option::is_none")]
    pub min_length: Option<usize>,
    /// `string`: most characters.
    #[serde(default, rename = "maxLength", skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// `string`: a regular expression the whole value must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Numbers and booleans: `text` (default) or `binary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// Numbers: allowed interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
}

/// How numbers and booleans are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Decimal text (`42`, `3.5`, `true`).
    Text,
    /// Fixed-size big-endian bytes.
    Binary,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Bound {
    value: f64,
    inclusive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Range {
    low: Option<Bound>,
    high: Option<Bound>,
}

impl Range {
    fn parse(text: &str) -> Result<Self, String> {
        let invalid = || format!("`{text}` is not an interval such as `[0,100]` or `(0,)`");
        let text = text.trim();
        let low_inclusive = match text.chars().next() {
            Some('[') => true,
            Some('(') => false,
            _ => return Err(invalid()),
        };
        let high_inclusive = match text.chars().last() {
            Some(']') => true,
            Some(')') => false,
            _ => return Err(invalid()),
        };
        let (low, high) = text[1..text.len() - 1]
            .split_once(',')
            .ok_or_else(invalid)?;
        let bound = |part: &str, inclusive| -> Result<Option<Bound>, String> {
            match part.trim() {
                "" => Ok(None),
                number => number
                    .parse::<f64>()
                    .map(|value| Some(Bound { value, inclusive }))
                    .map_err(|_| invalid()),
            }
        };
        Ok(Self {
            low: bound(low, low_inclusive)?,
            high: bound(high, high_inclusive)?,
        })
    }

    fn contains(&self, value: f64) -> bool {
        self.low.is_none_or(|b| {
            if b.inclusive {
                value >= b.value
            } else {
                value > b.value
            }
        }) && self.high.is_none_or(|b| {
            if b.inclusive {
                value <= b.value
            } else {
                value < b.value
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Int32,
    Int64,
    Float,
    Double,
    Boolean,
}

/// A built primitive model.
#[derive(Debug)]
pub struct PrimitiveModel {
    kind: Kind,
    format: Format,
    min_length: Option<usize>,
    max_length: Option<usize>,
    pattern: Option<regex::Regex>,
    range: Range,
}

fn fail(reason: impl Into<String>) -> ValidationError {
    ValidationError {
        path: None,
        reason: reason.into(),
    }
}

impl PrimitiveModel {
    /// A model from its reference.
    pub fn new(options: &PrimitiveOptions) -> Result<Self, (String, String)> {
        let kind = match options.model.as_str() {
            "string" => Kind::String,
            "int32" => Kind::Int32,
            "int64" => Kind::Int64,
            "float" => Kind::Float,
            "double" => Kind::Double,
            "boolean" => Kind::Boolean,
            other => {
                return Err((
                    "model".into(),
                    format!("`{other}` is not a primitive model"),
                ))
            }
        };
        if let Some(encoding) = &options.encoding {
            if !matches!(
                encoding.to_ascii_lowercase().as_str(),
                "utf_8" | "utf-8" | "utf8"
            ) {
                return Err((
                    "encoding".into(),
                    format!("only UTF-8 is supported, not `{encoding}`"),
                ));
            }
        }
        let pattern = match &options.pattern {
            Some(pattern) => Some(regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                (
                    "pattern".to_owned(),
                    format!("not a regular expression: {e}"),
                )
            })?),
            None => None,
        };
        let range = match &options.range {
            Some(range) => Range::parse(range).map_err(|e| ("range".to_owned(), e))?,
            None => Range::default(),
        };
        Ok(Self {
            kind,
            format: options.format.unwrap_or(Format::Text),
            min_length: options.min_length,
            max_length: options.max_length,
            pattern,
            range,
        })
    }

    fn number(&self, payload: &[u8]) -> Result<f64, ValidationError> {
        let expected = match self.kind {
            Kind::Int32 | Kind::Float => 4,
            _ => 8,
        };
        match self.format {
            Format::Binary => {
                if payload.len() != expected {
                    return Err(fail(format!(
                        "expected {expected} bytes, found {}",
                        payload.len()
                    )));
                }
                Ok(match self.kind {
                    Kind::Int32 => {
                        f64::from(i32::from_be_bytes(payload.try_into().unwrap_or_default()))
                    }
                    Kind::Float => {
                        f64::from(f32::from_be_bytes(payload.try_into().unwrap_or_default()))
                    }
                    Kind::Int64 => {
                        i64::from_be_bytes(payload.try_into().unwrap_or_default()) as f64
                    }
                    _ => f64::from_be_bytes(payload.try_into().unwrap_or_default()),
                })
            }
            Format::Text => {
                let text = std::str::from_utf8(payload).map_err(|_| fail("not UTF-8 text"))?;
                let parsed = match self.kind {
                    Kind::Int32 => text.parse::<i32>().map(f64::from).ok(),
                    Kind::Int64 => text.parse::<i64>().map(|v| v as f64).ok(),
                    _ => text.parse::<f64>().ok().filter(|v| v.is_finite()),
                };
                parsed.ok_or_else(|| fail(format!("not {}", self.describe())))
            }
        }
    }

    fn describe(&self) -> &'static str {
        match self.kind {
            Kind::Int32 => "a 32-bit integer",
            Kind::Int64 => "a 64-bit integer",
            Kind::Float | Kind::Double => "a number",
            Kind::Boolean => "a boolean",
            Kind::String => "a string",
        }
    }
}

impl Model for PrimitiveModel {
    fn validate(&self, payload: &[u8]) -> Result<(), ValidationError> {
        match self.kind {
            Kind::String => {
                let text = std::str::from_utf8(payload).map_err(|_| fail("not UTF-8"))?;
                let length = text.chars().count();
                if self.min_length.is_some_and(|min| length < min) {
                    return Err(fail(format!(
                        "shorter than minLength {}",
                        self.min_length.unwrap_or(0)
                    )));
                }
                if self.max_length.is_some_and(|max| length > max) {
                    return Err(fail(format!(
                        "longer than maxLength {}",
                        self.max_length.unwrap_or(0)
                    )));
                }
                if self.pattern.as_ref().is_some_and(|p| !p.is_match(text)) {
                    return Err(fail("does not match the pattern"));
                }
                Ok(())
            }
            Kind::Boolean => {
                let valid = match self.format {
                    Format::Text => matches!(payload, b"true" | b"false"),
                    Format::Binary => matches!(payload, [0] | [1]),
                };
                valid.then_some(()).ok_or_else(|| fail("not a boolean"))
            }
            _ => {
                let value = self.number(payload)?;
                if self.range.contains(value) {
                    Ok(())
                } else {
                    Err(fail("outside the range"))
                }
            }
        }
    }
}

fn build(cx: &mut PluginContext<'_>) -> Result<Arc<dyn Model>, BuildError> {
    let options: PrimitiveOptions = match cx.raw_options() {
        Some(serde_yaml::Value::String(name)) => PrimitiveOptions {
            model: name.clone(),
            ..PrimitiveOptions::default()
        },
        other => cx.deserialize(other.cloned().unwrap_or_default(), "")?,
    };
    PrimitiveModel::new(&options)
        .map(|model| Arc::new(model) as Arc<dyn Model>)
        .map_err(|(field, message)| cx.error(&field, message))
}

register_model!(ModelFactory {
    type_name: "string",
    build
});
register_model!(ModelFactory {
    type_name: "int32",
    build
});
register_model!(ModelFactory {
    type_name: "int64",
    build
});
register_model!(ModelFactory {
    type_name: "float",
    build
});
register_model!(ModelFactory {
    type_name: "double",
    build
});
register_model!(ModelFactory {
    type_name: "boolean",
    build
});

#[cfg(test)]
mod tests {
    use super::*;

    fn model(yaml: &str) -> PrimitiveModel {
        PrimitiveModel::new(&serde_yaml::from_str(yaml).unwrap()).unwrap()
    }

    #[test]
    fn strings() {
        let m = model("model: string\nminLength: 2\nmaxLength: 4\npattern: '[a-z]+'\n");
        assert!(m.validate(b"abc").is_ok());
        assert!(m.validate(b"a").is_err());
        assert!(m.validate(b"abcde").is_err());
        assert!(m.validate(b"AB").is_err());
        assert!(m.validate(&[0xC3, 0x28]).is_err());
    }

    #[test]
    fn numbers_in_text_and_binary_with_ranges() {
        let m = model("model: int32\nrange: '[0,100]'\n");
        assert!(m.validate(b"42").is_ok());
        assert!(m.validate(b"101").is_err());
        assert!(m.validate(b"4.2").is_err());
        let b = model("model: int64\nformat: binary\nrange: '(0,)'\n");
        assert!(b.validate(&7i64.to_be_bytes()).is_ok());
        assert!(b.validate(&0i64.to_be_bytes()).is_err());
        assert!(b.validate(&[1, 2]).is_err());
        let d = model("model: double\nrange: '[-1.5,1.5)'\n");
        assert!(d.validate(b"-1.5").is_ok());
        assert!(d.validate(b"1.5").is_err());
        assert!(d.validate(b"NaN").is_err());
        assert!(model("model: boolean\n").validate(b"true").is_ok());
        assert!(model("model: boolean\nformat: binary\n")
            .validate(&[2])
            .is_err());
    }

    #[test]
    fn bad_options_are_refused() {
        let bad =
            |yaml: &str| PrimitiveModel::new(&serde_yaml::from_str(yaml).unwrap()).unwrap_err();
        assert_eq!(bad("model: int32\nrange: '0..100'\n").0, "range");
        assert_eq!(bad("model: string\npattern: '('\n").0, "pattern");
        assert_eq!(bad("model: string\nencoding: utf_16\n").0, "encoding");
    }
}
