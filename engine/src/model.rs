//! Models: validators built once from a schema, applied to each payload.

use std::fmt;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::catalog::{Catalog, Schema, SchemaRef};
use crate::telemetry::Events;

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

/// Compiles schema text into a validator.
pub type Compile<T> = Box<dyn Fn(&Schema) -> Result<T, String> + Send + Sync>;

/// A validator compiled from a catalog's schema, recompiled when the catalog
/// says its schemas changed. Reading it costs an atomic load on the message
/// path; recompiling happens once per change.
pub struct LiveSchema<T> {
    catalog: Arc<dyn Catalog>,
    reference: SchemaRef,
    compile: Compile<T>,
    seen: AtomicU64,
    current: ArcSwap<T>,
    events: Events,
}

impl<T> std::fmt::Debug for LiveSchema<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveSchema")
            .field("reference", &self.reference)
            .finish_non_exhaustive()
    }
}

impl<T> LiveSchema<T> {
    /// Compiles `schema` (already resolved from `catalog` as `reference`).
    pub fn new(
        catalog: Arc<dyn Catalog>,
        reference: SchemaRef,
        schema: &Schema,
        compile: Compile<T>,
        events: Events,
    ) -> Result<Self, String> {
        let seen = catalog.generation();
        let first = compile(schema)?;
        Ok(Self {
            catalog,
            reference,
            compile,
            seen: AtomicU64::new(seen),
            current: ArcSwap::from_pointee(first),
            events,
        })
    }

    /// The validator for the catalog's current schema.
    pub fn get(&self) -> arc_swap::Guard<Arc<T>> {
        let generation = self.catalog.generation();
        if generation != self.seen.load(Ordering::Acquire) {
            self.reload(generation);
        }
        self.current.load()
    }

    fn reload(&self, generation: u64) {
        // Only the first caller to see a new generation recompiles.
        let previous = self.seen.swap(generation, Ordering::AcqRel);
        if previous == generation {
            return;
        }
        let compiled = match self.catalog.resolve_now(&self.reference) {
            Some(Ok(schema)) => (self.compile)(&schema),
            Some(Err(error)) => Err(error.to_string()),
            None => Err("the catalog cannot provide it now".into()),
        };
        match compiled {
            Ok(validator) => {
                self.current.store(Arc::new(validator));
                self.events.info(
                    "MODEL_SCHEMA_RELOADED",
                    format!("{} recompiled", self.reference),
                );
            }
            Err(why) => self.events.warn(
                "MODEL_SCHEMA_RELOAD_FAILED",
                format!(
                    "{}: {why}; the previous schema stays in force",
                    self.reference
                ),
            ),
        }
    }
}
