//! Models: validators built once from a schema, applied to each payload.

use std::fmt;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::catalog::SchemaRef;

/// Why a payload does not conform; `path` points into the payload, never
/// repeating the payload itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Where in the payload the problem is (e.g. a JSON pointer), if known.
    pub path: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{path}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for ValidationError {}

/// A model instance, e.g. a compiled JSON Schema.
pub trait Model: Send + Sync + 'static {
    /// Checks `payload` without copying it.
    fn validate(&self, payload: &[u8]) -> Result<(), ValidationError>;
}

/// How a model reference names its schema in a catalog:
/// `catalog: {<catalog>: [{subject: items, version: latest}]}` or `[{id: 7}]`.
pub type CatalogReferences = IndexMap<String, Vec<CatalogSelector>>;

/// One schema selector in a model reference.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSelector {
    /// The subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The version (default `latest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// A schema id, instead of subject and version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    /// Zilla's subject strategy (`topic`); accepted, resolved as `subject`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
}

impl CatalogSelector {
    /// The schema reference this selector names.
    pub fn reference(&self) -> Result<SchemaRef, String> {
        match (&self.id, &self.subject) {
            (Some(id), None) => Ok(SchemaRef::Id(*id)),
            (None, Some(subject)) => Ok(SchemaRef::Subject {
                subject: subject.clone(),
                version: self.version.clone().unwrap_or_else(|| "latest".into()),
            }),
            _ => Err("a schema selector needs exactly one of `subject` and `id`".into()),
        }
    }
}
