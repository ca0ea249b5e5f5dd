//! `type: filesystem` catalog: schemas (and AsyncAPI documents) read from
//! files, relative to `zilla.yaml`, at startup, and read again when a file
//! changes (checked every `-P zilla.catalog.filesystem.poll=1` seconds):
//! models recompile from the new text; a file that no longer reads or
//! compiles leaves the previous schema in force, with an event.
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

mod schema;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use zilla_engine::{
    async_trait, register_catalog, BuildError, Catalog, CatalogError, CatalogFactory, Events,
    PluginContext, Schema, SchemaRef, Shutdown,
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

/// Engine property: seconds between checks for changed schema files.
pub const PROPERTY_POLL: &str = "zilla.catalog.filesystem.poll";

/// A file's identity for change detection.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &PathBuf) -> Stamp {
    std::fs::metadata(path)
        .ok()
        .and_then(|m| m.modified().ok().map(|t| (t, m.len())))
}

/// One subject's file and its current text.
#[derive(Debug)]
struct SubjectFile {
    path: PathBuf,
    text: RwLock<Arc<str>>,
    stamp: Mutex<Stamp>,
}

/// A built filesystem catalog.
#[derive(Debug)]
pub struct FilesystemCatalog {
    shared: Arc<Files>,
}

#[derive(Debug)]
struct Files {
    name: String,
    subjects: IndexMap<String, SubjectFile>,
    generation: AtomicU64,
    poll: Duration,
    events: Events,
}

impl Files {
    /// Re-reads changed files; bumps the generation when any text changed.
    fn refresh(&self) {
        let mut changed = Vec::new();
        for (subject, file) in &self.subjects {
            let now = stamp(&file.path);
            let mut seen = file.stamp.lock().unwrap_or_else(|p| p.into_inner());
            if now == *seen {
                continue;
            }
            *seen = now;
            match std::fs::read_to_string(&file.path) {
                Ok(text) => {
                    let mut current = file.text.write().unwrap_or_else(|p| p.into_inner());
                    if **current != *text {
                        *current = text.into();
                        changed.push(format!(
                            "{}: subject `{subject}` reloaded from {}",
                            self.name,
                            file.path.display()
                        ));
                    }
                }
                Err(error) => self.events.warn(
                    "CATALOG_SCHEMA_UNREADABLE",
                    format!(
                        "{}: {}: {error}; keeping the previous schema",
                        self.name,
                        file.path.display()
                    ),
                ),
            }
        }
        if !changed.is_empty() {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        // Told only once in force: a validation after the event sees the
        // new generation, and so the new schema.
        for change in changed {
            self.events.info("CATALOG_SCHEMA_CHANGED", change);
        }
    }
}

impl Files {
    fn find(&self, reference: &SchemaRef) -> Result<Schema, CatalogError> {
        match reference {
            SchemaRef::Subject { subject, .. } => self
                .subjects
                .get(subject)
                .map(|file| Schema {
                    id: None,
                    text: file.text.read().unwrap_or_else(|p| p.into_inner()).clone(),
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
        self.shared.find(reference)
    }

    fn resolve_now(&self, reference: &SchemaRef) -> Option<Result<Schema, CatalogError>> {
        Some(self.shared.find(reference))
    }

    fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    async fn start(&self, shutdown: Shutdown) {
        let files = self.shared.clone();
        let watcher = shutdown.clone();
        shutdown.spawn(async move {
            let mut ticks = tokio::time::interval(files.poll);
            loop {
                tokio::select! {
                    _ = watcher.draining() => return,
                    _ = ticks.tick() => {}
                }
                // Reading files is blocking I/O; keep it off the async workers.
                let files = files.clone();
                let _ = tokio::task::spawn_blocking(move || files.refresh()).await;
            }
        });
    }
}

fn build(cx: &mut PluginContext<'_>) -> Result<Arc<dyn Catalog>, BuildError> {
    let options: FilesystemCatalogOptions = cx.options()?;
    let poll = match cx.property(PROPERTY_POLL).map(str::to_owned) {
        None => Duration::from_secs(1),
        Some(value) => match value.parse::<f64>() {
            Ok(seconds) if seconds > 0.0 && seconds.is_finite() => Duration::from_secs_f64(seconds),
            _ => {
                return Err(cx.error(
                    "",
                    format!("-P {PROPERTY_POLL}: expected seconds, found `{value}`"),
                ))
            }
        },
    };
    let mut subjects = IndexMap::new();
    let mut failed = None;
    for (subject, file) in options.subjects {
        let path = cx.resolve_path(&file.path);
        let seen = stamp(&path);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                subjects.insert(
                    subject,
                    SubjectFile {
                        path,
                        text: RwLock::new(text.into()),
                        stamp: Mutex::new(seen),
                    },
                );
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
        shared: Arc::new(Files {
            name: cx.name().to_owned(),
            subjects,
            generation: AtomicU64::new(0),
            poll,
            events: cx.events(),
        }),
    }))
}

register_catalog!(CatalogFactory {
    type_name: "filesystem",
    build,
});
