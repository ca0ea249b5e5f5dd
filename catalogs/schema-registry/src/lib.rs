//! `type: schema-registry` (alias `karapace-schema-registry`): schemas from a
//! Confluent-compatible REST registry, `GET /subjects/{subject}/versions/{version}`
//! and `GET /schemas/ids/{id}`.
//!
//! Models compile their schemas at startup, so the registry must answer then
//! (a startup error names the registry and the schema otherwise). Answers are
//! cached for `max-age` seconds; when the registry is down, cached schemas keep
//! being served (with an event), so an outage never stops the proxy.

#![forbid(unsafe_code)]

mod schema;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use zilla_engine::{
    async_trait, register_catalog, BuildError, Catalog, CatalogError, CatalogFactory, Events,
    PluginContext, Schema, SchemaRef,
};

const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// `options` of a schema-registry catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryOptions {
    /// The registry's base URL, e.g. `http://localhost:8081`.
    pub url: String,
    /// A schema context (Confluent contexts); `default` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Seconds an answer is cached (default 300).
    #[serde(default, rename = "max-age", skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
    /// Credentials sent with every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<RegistryCredentials>,
}

/// `credentials`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryCredentials {
    /// HTTP headers; `authorization` is the one Zilla defines.
    pub headers: IndexMap<String, String>,
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Deserialize)]
struct RegistryAnswer {
    schema: String,
    #[serde(default)]
    id: Option<u32>,
}

/// A schema registry client with its cache.
pub struct RegistryCatalog {
    shared: Arc<Registry>,
}

struct Registry {
    name: String,
    url: String,
    context: Option<String>,
    max_age: Duration,
    headers: Vec<(String, String)>,
    cache: Mutex<HashMap<SchemaRef, (Schema, Instant)>>,
    events: Events,
}

impl std::fmt::Debug for RegistryCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCatalog")
            .field("name", &self.shared.name)
            .field("url", &self.shared.url)
            .finish_non_exhaustive()
    }
}

impl Registry {
    fn path(&self, reference: &SchemaRef) -> String {
        match reference {
            SchemaRef::Subject { subject, version } => {
                let subject = match self.context.as_deref() {
                    None | Some("default") => subject.clone(),
                    Some(context) => format!(":.{context}:{subject}"),
                };
                format!("/subjects/{subject}/versions/{version}")
            }
            SchemaRef::Id(id) => format!("/schemas/ids/{id}"),
        }
    }

    /// Fetches `reference` (blocking, bounded by a timeout).
    fn fetch(&self, reference: &SchemaRef) -> Result<Schema, String> {
        let url = format!("{}{}", self.url.trim_end_matches('/'), self.path(reference));
        let agent = ureq::Agent::new_with_config(
            ureq::config::Config::builder()
                .timeout_global(Some(FETCH_TIMEOUT))
                .http_status_as_error(true)
                .build(),
        );
        let mut request = agent.get(&url);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let body = request
            .call()
            .map_err(|e| format!("{url}: {e}"))?
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("{url}: {e}"))?;
        let answer: RegistryAnswer = serde_json::from_str(&body)
            .map_err(|e| format!("{url}: not a registry answer: {e}"))?;
        Ok(Schema {
            id: answer.id.or(match reference {
                SchemaRef::Id(id) => Some(*id),
                SchemaRef::Subject { .. } => None,
            }),
            text: answer.schema.into(),
        })
    }

    fn lookup(&self, reference: &SchemaRef) -> Result<Schema, CatalogError> {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(reference)
            .cloned();
        if let Some((schema, fetched)) = &cached {
            if fetched.elapsed() < self.max_age {
                return Ok(schema.clone());
            }
        }
        match self.fetch(reference) {
            Ok(schema) => {
                self.cache
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(reference.clone(), (schema.clone(), Instant::now()));
                Ok(schema)
            }
            Err(why) => match cached {
                Some((schema, _)) => {
                    self.events.warn(
                        "CATALOG_REGISTRY_UNAVAILABLE",
                        format!("{why}; serving the cached {reference}"),
                    );
                    Ok(schema)
                }
                None => Err(CatalogError(format!(
                    "catalog {} cannot get {reference}: {why}",
                    self.name
                ))),
            },
        }
    }
}

#[async_trait]
impl Catalog for RegistryCatalog {
    async fn resolve(&self, reference: &SchemaRef) -> Result<Schema, CatalogError> {
        // HTTP here is blocking: keep it off the async workers.
        let catalog = self.shared.clone();
        let reference = reference.clone();
        tokio::task::spawn_blocking(move || catalog.lookup(&reference))
            .await
            .map_err(|e| CatalogError(format!("registry lookup failed: {e}")))?
    }

    fn resolve_now(&self, reference: &SchemaRef) -> Option<Result<Schema, CatalogError>> {
        Some(self.shared.lookup(reference))
    }
}

fn build(cx: &mut PluginContext<'_>) -> Result<Arc<dyn Catalog>, BuildError> {
    let options: RegistryOptions = cx.options()?;
    if !(options.url.starts_with("http://") || options.url.starts_with("https://")) {
        return Err(cx.error(
            "options.url",
            format!("`{}` is not an http(s) URL", options.url),
        ));
    }
    Ok(Arc::new(RegistryCatalog {
        shared: Arc::new(Registry {
            name: cx.name().to_owned(),
            url: options.url,
            context: options.context,
            max_age: Duration::from_secs(options.max_age.unwrap_or(300)),
            headers: options
                .credentials
                .map(|c| c.headers.into_iter().collect())
                .unwrap_or_default(),
            cache: Mutex::new(HashMap::new()),
            events: cx.events(),
        }),
    }))
}

register_catalog!(CatalogFactory {
    type_name: "schema-registry",
    build,
});

register_catalog!(CatalogFactory {
    type_name: "karapace-schema-registry",
    build,
});
