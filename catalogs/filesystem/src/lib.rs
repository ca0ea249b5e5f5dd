//! `type: filesystem` catalog: schemas (and AsyncAPI documents) read from
//! files, relative to `zilla.yaml`, at startup.
//!
//! ```yaml
//! catalogs:
//!   host_filesystem:
//!     type: filesystem
//!     options:
//!       subjects:
//!         smartylighting:
//!           path: specs/mqtt-asyncapi.yaml
//! ```

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use zilla_engine::{
    async_trait, register_catalog, BuildError, Catalog, CatalogError, CatalogFactory,
    PluginContext, Schema, SchemaRef,
};

/// `options` of a filesystem catalog.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemCatalogOptions {
    /// Schema files by subject.
    #[serde(default)]
    pub subjects: IndexMap<String, FileSubject>,
}

/// One subject's file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSubject {
    /// The file, relative to `zilla.yaml`.
    pub path: String,
}

/// A built filesystem catalog: every file read once, at startup.
#[derive(Debug)]
pub struct FilesystemCatalog {
    name: String,
    subjects: IndexMap<String, (PathBuf, Arc<str>)>,
}

impl FilesystemCatalog {
    fn find(&self, reference: &SchemaRef) -> Result<Schema, CatalogError> {
        match reference {
            SchemaRef::Subject { subject, .. } => self
                .subjects
                .get(subject)
                .map(|(_, text)| Schema {
                    id: None,
                    text: text.clone(),
                })
                .ok_or_else(|| CatalogError(format!("catalog {} has no {reference}", self.name))),
            SchemaRef::Id(_) => Err(CatalogError(format!(
                "catalog {} has subjects, not ids ({reference})",
                self.name
            ))),
        }
    }
}

#[async_trait]
impl Catalog for FilesystemCatalog {
    async fn resolve(&self, reference: &SchemaRef) -> Result<Schema, CatalogError> {
        self.find(reference)
    }

    fn resolve_now(&self, reference: &SchemaRef) -> Option<Result<Schema, CatalogError>> {
        Some(self.find(reference))
    }
}

fn build(cx: &mut PluginContext<'_>) -> Result<Arc<dyn Catalog>, BuildError> {
    let options: FilesystemCatalogOptions = cx.options()?;
    let mut subjects = IndexMap::new();
    let mut failed = None;
    for (subject, file) in options.subjects {
        let path = cx.resolve_path(&file.path);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                subjects.insert(subject, (path, text.into()));
            }
            Err(error) => {
                failed = Some(cx.error(
                    &format!("options.subjects.{subject}.path"),
                    format!("cannot read {}: {error}", path.display()),
                ));
            }
        }
    }
    if let Some(error) = failed {
        return Err(error);
    }
    Ok(Arc::new(FilesystemCatalog {
        name: cx.name().to_owned(),
        subjects,
    }))
}

register_catalog!(CatalogFactory {
    type_name: "filesystem",
    build,
});
