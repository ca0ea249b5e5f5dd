//! Reading `serde_yaml` values: typed accessors that fail the test with
//! what they found, and label maps with selector matching.

use std::collections::BTreeMap;

use serde_yaml::Value;

pub(crate) fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("expected a string, found {value:?}"))
}

pub(crate) fn number(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("expected a number, found {value:?}"))
}

pub(crate) fn list(value: &Value) -> &[Value] {
    value.as_sequence().map(Vec::as_slice).unwrap_or(&[])
}

pub(crate) fn entries(value: &Value) -> Vec<(&str, &Value)> {
    value
        .as_mapping()
        .map(|m| m.iter().map(|(k, v)| (text(k), v)).collect())
        .unwrap_or_default()
}

pub(crate) fn labels(value: &Value) -> BTreeMap<String, String> {
    entries(value)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), text(v).to_owned()))
        .collect()
}

/// Every selector label is among `target`'s labels.
pub(crate) fn selects(
    selector: &BTreeMap<String, String>,
    target: &BTreeMap<String, String>,
) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| target.get(k) == Some(v))
}

pub(crate) fn strings(value: &Value) -> Vec<String> {
    list(value).iter().map(|v| text(v).to_owned()).collect()
}
