//! `type: inline` catalog: schemas written in `zilla.yaml` itself.
//!
//! ```yaml
//! catalogs:
//!   host_inline:
//!     type: inline
//!     options:
//!       subjects:
//!         items:
//!           schema: '{"type": "object", "required": ["id"]}'
//!           version: "1"
//! ```

#![forbid(unsafe_code)]

mod schema;

use std::sync::Arc;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use zilla_engine::{
    async_trait, register_catalog, BuildError, Catalog, CatalogError, CatalogFactory,
    PluginContext, Schema, SchemaRef,
};

/// `options` of an inline catalog.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlineOptions {
    /// Schemas by subject.
    #[serde(default)]
    pub subjects: IndexMap<String, InlineSubject>,
}

/// One inline subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlineSubject {
    /// The schema text.
    pub schema: String,
    /// Its version (default `latest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// A numeric id, for models that reference schemas by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
}

/// A built inline catalog.
#[derive(Debug)]
pub struct InlineCatalog {
    name: String,
    subjects: IndexMap<String, InlineSubject>,
}

impl InlineCatalog {
    fn find(&self, reference: &SchemaRef) -> Result<Schema, CatalogError> {
        let found = match reference {
            SchemaRef::Subject { subject, version } => self.subjects.get(subject).filter(|s| {
                version == "latest" || s.version.as_deref().unwrap_or("latest") == version
            }),
            SchemaRef::Id(id) => self.subjects.values().find(|s| s.id == Some(*id)),
        };
        found
            .map(|subject| Schema {
                id: subject.id,
                text: subject.schema.as_str().into(),
            })
            .ok_or_else(|| CatalogError(format!("catalog {} has no {reference}", self.name)))
    }
}

#[async_trait]
impl Catalog for InlineCatalog {
    async fn resolve(&self, reference: &SchemaRef) -> Result<Schema, CatalogError> {
        self.find(reference)
    }

    fn resolve_now(&self, reference: &SchemaRef) -> Option<Result<Schema, CatalogError>> {
        Some(self.find(reference))
    }
}

fn build(cx: &mut PluginContext<'_>) -> Result<Arc<dyn Catalog>, BuildError> {
    let options: InlineOptions = cx.options()?;
    Ok(Arc::new(InlineCatalog {
        name: cx.name().to_owned(),
        subjects: options.subjects,
    }))
}

register_catalog!(CatalogFactory {
    type_name: "inline",
    build,
});
