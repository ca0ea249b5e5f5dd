//! Catalogs: schema text by subject and version, or by id.

use std::sync::Arc;

use async_trait::async_trait;

/// How a model names the schema it wants.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SchemaRef {
    /// A subject and a version (`latest` when unspecified).
    Subject {
        /// The subject name.
        subject: String,
        /// The version, e.g. `latest` or `3`.
        version: String,
    },
    /// A registry-wide schema id.
    Id(u32),
}

/// A resolved schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    /// The registry id, when the catalog has ids.
    pub id: Option<u32>,
    /// The schema text (JSON Schema, Avro, AsyncAPI document, ...).
    pub text: Arc<str>,
}

/// Why a schema could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CatalogError(pub String);

/// A catalog instance built from a `catalogs.<name>` entry.
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// The schema `reference` names.
    async fn resolve(&self, reference: &SchemaRef) -> Result<Schema, CatalogError>;

    /// The schema, when the catalog has it at hand without I/O (inline,
    /// filesystem, or cached); models use it to compile at startup.
    fn resolve_now(&self, reference: &SchemaRef) -> Option<Result<Schema, CatalogError>> {
        let _ = reference;
        None
    }

    /// Changes whenever the catalog's schemas may have changed (a file was
    /// rewritten); models built from it recompile when they see a new value.
    fn generation(&self) -> u64 {
        0
    }

    /// Starts background work (watching files); tasks end when `shutdown`
    /// starts draining.
    async fn start(&self, shutdown: crate::Shutdown) {
        let _ = shutdown;
    }
}

impl std::fmt::Display for SchemaRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SchemaRef::Subject { subject, version } => {
                write!(f, "subject `{subject}` version `{version}`")
            }
            SchemaRef::Id(id) => write!(f, "schema id {id}"),
        }
    }
}
