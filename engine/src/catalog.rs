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
}
