//! Building an engine from a configuration, and running it.
//!
//! Vaults, guards, catalogs, stores and exporters are built first, then
//! bindings in dependency order (a binding's exits before the binding), so that
//! each binding can ask for its exits as the ports it needs. Every problem is collected and
//! reported together.
//!
//! A reload builds a successor engine with the [`Handover`] of the running one
//! (its listeners and unchanged stores), starts it, and tells the old one to
//! [stop accepting](Engine::stop_accepting): its connections carry on until
//! they end ([`Engine::connections_ended`]).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indexmap::IndexMap;

use crate::binding::{Binding, StartContext, StartError};
use crate::catalog::Catalog;
use crate::config::{
    check_name, quoted_list, BindingConfig, ConfigDocument, ConfigError, ConfigErrors, EnvLookup,
    Kind, LineIndex, PluginConfig, ZillaConfig,
};
use crate::context::{BindingContext, BuildState, BuiltBinding, PluginContext};
use crate::guard::Guard;
use crate::handover::Handover;
use crate::order::binding_order;
use crate::properties::EngineProperties;
use crate::registry::{
    lookup, BindingFactory, CatalogFactory, ExporterFactory, GeneratorFactory, GuardFactory,
    StoreFactory, VaultFactory,
};
use crate::shutdown::{Drained, Shutdown};
use crate::store::Store;
use crate::telemetry::{self, ActiveGuard, Events, Exporter};
use crate::vault::Vault;

enum Source {
    File(PathBuf),
    Text(String),
    Typed(Box<ZillaConfig>),
}

/// Configures and builds an [`Engine`].
pub struct EngineBuilder {
    source: Source,
    base_dir: Option<PathBuf>,
    env: Box<EnvLookup<'static>>,
    properties: Vec<(String, String)>,
    handover: Handover,
}

impl EngineBuilder {
    fn new(source: Source) -> Self {
        Self {
            source,
            base_dir: None,
            env: Box::new(|name| std::env::var(name).ok()),
            properties: Vec::new(),
            handover: Handover::default(),
        }
    }

    /// Builds the successor of a running engine: listeners on the addresses
    /// it listens on are shared rather than opened again, and stores whose
    /// entry is unchanged are the same stores.
    pub fn handover(mut self, handover: Handover) -> Self {
        self.handover = handover;
        self
    }

    /// Resolves `${{env.NAME}}` with `lookup` instead of the process environment.
    pub fn env(mut self, lookup: impl Fn(&str) -> Option<String> + 'static) -> Self {
        self.env = Box::new(lookup);
        self
    }

    /// Sets an engine property, as `zilla start -P name=value` does.
    pub fn property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((name.into(), value.into()));
        self
    }

    /// The directory that relative paths in options are resolved against;
    /// defaults to the config file's directory, else the working directory.
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = Some(dir.into());
        self
    }

    /// Reads, checks and builds the configuration; every problem is reported.
    ///
    /// Building may block briefly: catalogs that fetch schemas (a schema
    /// registry) do so here, bounded by their timeouts. Inside an async
    /// context, call it from `spawn_blocking` or a multi-threaded runtime.
    pub fn build(self) -> Result<Engine, ConfigErrors> {
        let mut files = Vec::new();
        let (source_name, document, default_dir) = match self.source {
            Source::File(path) => {
                files.push(path.clone());
                let name = path.display().to_string();
                let text = std::fs::read_to_string(&path).map_err(|error| ConfigErrors {
                    source: name.clone(),
                    errors: vec![ConfigError {
                        path: String::new(),
                        line: None,
                        message: format!("cannot read the configuration: {error}"),
                    }],
                })?;
                let document = ConfigDocument::parse(&text, &name, &*self.env)?;
                let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                (name, document, dir)
            }
            Source::Text(text) => {
                let name = "<string>".to_owned();
                let document = ConfigDocument::parse(&text, &name, &*self.env)?;
                (name, document, PathBuf::from("."))
            }
            Source::Typed(config) => {
                let config = *config;
                let name = format!("<config {}>", config.name);
                let mut errors = Vec::new();
                check_name(&config, &mut errors, &LineIndex::default());
                if !errors.is_empty() {
                    return Err(ConfigErrors {
                        source: name,
                        errors,
                    });
                }
                let document = ConfigDocument {
                    config,
                    lines: LineIndex::default(),
                    unresolved: Vec::new(),
                };
                (name, document, PathBuf::from("."))
            }
        };
        let base_dir = self.base_dir.unwrap_or(default_dir);
        let mut engine =
            build_engine(document, base_dir, self.properties, self.handover).map_err(|errors| {
                ConfigErrors {
                    source: source_name,
                    errors,
                }
            })?;
        files.append(&mut engine.files);
        engine.files = files;
        Ok(engine)
    }
}

/// Where a started binding listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedBinding {
    /// The binding's name.
    pub name: String,
    /// Its `type`.
    pub type_name: String,
    /// Its `kind`.
    pub kind: Kind,
    /// The addresses it listens on (empty for bindings that do not listen).
    pub listening: Vec<SocketAddr>,
}

impl fmt::Display for StartedBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} {})", self.name, self.type_name, self.kind)?;
        if !self.listening.is_empty() {
            let addresses: Vec<_> = self.listening.iter().map(ToString::to_string).collect();
            write!(f, " listening on {}", addresses.join(", "))?;
        }
        Ok(())
    }
}

/// A binding failed to start.
#[derive(Debug, thiserror::Error)]
#[error("binding {binding} failed to start: {error}")]
pub struct EngineStartError {
    /// The binding's name.
    pub binding: String,
    /// What went wrong.
    #[source]
    pub error: StartError,
}

struct EngineBinding {
    name: String,
    type_name: String,
    kind: Kind,
    binding: Arc<dyn Binding>,
}

/// A built configuration, ready to start inside the caller's tokio runtime.
pub struct Engine {
    namespace: Arc<str>,
    bindings: Vec<EngineBinding>,
    guards: Vec<(String, Arc<dyn Guard>)>,
    catalogs: Vec<Arc<dyn Catalog>>,
    exporters: Vec<(String, Arc<dyn Exporter>)>,
    shutdown: Shutdown,
    grace: Duration,
    /// The configuration after generators ran.
    config: ZillaConfig,
    engine_id: u64,
    active: Mutex<Option<ActiveGuard>>,
    /// What a successor takes over.
    handover: Handover,
    /// The configuration file and the files its vaults read.
    files: Vec<PathBuf>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("namespace", &self.namespace)
            .field(
                "bindings",
                &self.bindings.iter().map(|b| &b.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine from a `zilla.yaml` file; relative paths resolve against its directory.
    pub fn from_file(path: impl Into<PathBuf>) -> EngineBuilder {
        EngineBuilder::new(Source::File(path.into()))
    }

    /// An engine from YAML text.
    pub fn from_yaml(text: impl Into<String>) -> EngineBuilder {
        EngineBuilder::new(Source::Text(text.into()))
    }

    /// An engine from a configuration built in code.
    pub fn from_config(config: ZillaConfig) -> EngineBuilder {
        EngineBuilder::new(Source::Typed(Box::new(config)))
    }

    /// The configuration's `name`.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The configuration as built: what generators (e.g. asyncapi) produced,
    /// in place of their entries (`zilla start --print-generated`).
    pub fn generated_config(&self) -> &ZillaConfig {
        &self.config
    }

    /// The shutdown signal shared with every binding.
    pub fn shutdown_signal(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// The files this engine was built from: the configuration file (when
    /// built from one) and the key and trust stores its vaults read. A
    /// change to any of them is a reason to build a successor.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Where events about the engine as a whole go (e.g. `component`
    /// `engine`), exported by this engine's exporters.
    pub fn events(&self, component: &str) -> Events {
        Events::for_engine(self.namespace.clone(), component, self.engine_id)
    }

    /// What a successor built with [`EngineBuilder::handover`] takes over.
    pub fn handover(&self) -> Handover {
        self.handover.clone()
    }

    /// Stops accepting connections, for a successor has taken over: accept
    /// loops end (a listener the successor shares stays open; one it does
    /// not closes), and open connections carry on on this engine's pipeline.
    pub fn stop_accepting(&self) {
        self.shutdown.stop_accepting();
    }

    /// Resolves once this engine has stopped accepting and its last
    /// connection has ended; then [`shutdown`](Self::shutdown) finds nothing
    /// left to drain but background tasks.
    pub async fn connections_ended(&self) {
        self.shutdown.connections_ended().await
    }

    /// Starts guards, then bindings (exits first); returns what started where.
    /// On failure, whatever already started is shut down again.
    pub async fn start(&self) -> Result<Vec<StartedBinding>, EngineStartError> {
        let exporters = self.exporters.iter().map(|(_, e)| e.clone()).collect();
        *self.active.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(telemetry::activate(self.engine_id, exporters));
        for (name, exporter) in &self.exporters {
            if let Err(error) = exporter.start() {
                self.shutdown().await;
                return Err(EngineStartError {
                    binding: format!("exporter {name}"),
                    error,
                });
            }
        }
        for (name, guard) in &self.guards {
            if let Err(rejection) = guard.start().await {
                self.shutdown().await;
                return Err(EngineStartError {
                    binding: format!("guard {name}"),
                    error: StartError::new("guard failed to start", rejection),
                });
            }
        }
        for catalog in &self.catalogs {
            catalog.start(self.shutdown.clone()).await;
        }
        let mut started = Vec::with_capacity(self.bindings.len());
        for entry in &self.bindings {
            let cx = StartContext {
                shutdown: self.shutdown.clone(),
                events: Events::for_engine(
                    self.namespace.clone(),
                    entry.name.as_str(),
                    self.engine_id,
                ),
            };
            match entry.binding.clone().start(cx).await {
                Ok(listening) => started.push(StartedBinding {
                    name: entry.name.clone(),
                    type_name: entry.type_name.clone(),
                    kind: entry.kind,
                    listening,
                }),
                Err(error) => {
                    self.shutdown().await;
                    return Err(EngineStartError {
                        binding: entry.name.clone(),
                        error,
                    });
                }
            }
        }
        Ok(started)
    }

    /// Stops listening, lets open connections finish within the grace period
    /// (property `zilla.engine.shutdown.grace`), then drops the rest.
    pub async fn shutdown(&self) -> Drained {
        let drained = self.shutdown.shut_down(self.grace).await;
        self.active.lock().unwrap_or_else(|p| p.into_inner()).take();
        drained
    }

    /// Starts, runs until `signal` resolves, then shuts down.
    pub async fn run_until(
        &self,
        signal: impl Future<Output = ()>,
    ) -> Result<Drained, EngineStartError> {
        self.start().await?;
        signal.await;
        Ok(self.shutdown().await)
    }
}

fn build_engine(
    document: ConfigDocument,
    base_dir: PathBuf,
    properties: Vec<(String, String)>,
    handover: Handover,
) -> Result<Engine, Vec<ConfigError>> {
    let ConfigDocument {
        config,
        lines,
        unresolved,
    } = document;
    // An entry holding an unresolved expression is not built (its options are
    // not what the user meant), but the rest of the configuration is checked.
    let unbuildable: HashSet<String> = unresolved
        .iter()
        .filter_map(|e| entry_of(&e.path))
        .collect();
    let mut errors = unresolved;
    let grace = match EngineProperties::parse(&properties) {
        Ok(parsed) => parsed.shutdown_grace,
        Err(mut invalid) => {
            errors.append(&mut invalid);
            Duration::ZERO
        }
    };
    let mut state = BuildState {
        engine_id: telemetry::next_engine_id(),
        namespace: config.name.as_str().into(),
        base_dir,
        lines,
        properties: properties.into_iter().collect(),
        shutdown: Shutdown::new(),
        errors,
        vaults: HashMap::new(),
        guards: HashMap::new(),
        catalogs: HashMap::new(),
        stores: HashMap::new(),
        failed: unbuildable,
        listeners: handover.listeners.clone(),
        metrics: telemetry::metrics::MetricsBuild::new(handover.metrics.clone()),
    };
    telemetry::metrics::configure(&config, &mut state);

    let exporters = config
        .telemetry
        .as_ref()
        .map(|telemetry| {
            build_plugins::<ExporterFactory, dyn Exporter>(
                &telemetry.exporters,
                "telemetry.exporters",
                "exporter",
                &mut state,
                |f| f.type_name,
                |f, cx| (f.build)(cx),
            )
        })
        .unwrap_or_default();
    let vaults = build_plugins::<VaultFactory, dyn Vault>(
        &config.vaults,
        "vaults",
        "vault",
        &mut state,
        |f| f.type_name,
        |f, cx| (f.build)(cx),
    );
    state.vaults = vaults.into_iter().collect();
    let guards = build_plugins::<GuardFactory, dyn Guard>(
        &config.guards,
        "guards",
        "guard",
        &mut state,
        |f| f.type_name,
        |f, cx| (f.build)(cx),
    );
    state.guards = guards.iter().cloned().collect();
    let catalogs = build_plugins::<CatalogFactory, dyn Catalog>(
        &config.catalogs,
        "catalogs",
        "catalog",
        &mut state,
        |f| f.type_name,
        |f, cx| (f.build)(cx),
    );
    let started_catalogs: Vec<Arc<dyn Catalog>> = catalogs.iter().map(|(_, c)| c.clone()).collect();
    state.catalogs = catalogs.into_iter().collect();
    let mut kept_stores = build_stores(&config.stores, &handover, &mut state);
    state.stores = kept_stores
        .iter()
        .map(|(name, _, store)| (name.clone(), store.clone()))
        .collect();

    // Generators (e.g. asyncapi) replace their entries with ordinary ones. A
    // generator that failed leaves nothing sound to build on: report now.
    let reported = state.errors.len();
    let config = generate(config, &mut state);
    if state.errors.len() > reported {
        return Err(std::mem::take(&mut state.errors));
    }
    let generated_catalogs = build_plugins::<CatalogFactory, dyn Catalog>(
        &config
            .catalogs
            .iter()
            .filter(|(name, _)| !state.catalogs.contains_key(*name))
            .map(|(n, c)| (n.clone(), c.clone()))
            .collect(),
        "catalogs",
        "catalog",
        &mut state,
        |f| f.type_name,
        |f, cx| (f.build)(cx),
    );
    let mut started_catalogs = started_catalogs;
    started_catalogs.extend(generated_catalogs.iter().map(|(_, c)| c.clone()));
    state.catalogs.extend(generated_catalogs);
    let generated_stores = build_stores(
        &config
            .stores
            .iter()
            .filter(|(name, _)| !state.stores.contains_key(*name))
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect(),
        &handover,
        &mut state,
    );
    state.stores.extend(
        generated_stores
            .iter()
            .map(|(name, _, store)| (name.clone(), store.clone())),
    );
    kept_stores.extend(generated_stores);

    let order = binding_order(&config.bindings, &mut state);
    let mut built: HashMap<String, BuiltBinding> = HashMap::new();
    let mut bindings = Vec::new();
    for name in order {
        if state.failed.contains(&format!("bindings.{name}")) {
            continue;
        }
        let entry = &config.bindings[&name];
        if let Some(binding) = build_binding(&name, entry, &mut state, &built) {
            let ports = binding.clone().ports();
            built.insert(name.clone(), BuiltBinding { ports });
            bindings.push(EngineBinding {
                name,
                type_name: entry.type_name.clone(),
                kind: entry.kind,
                binding,
            });
        } else {
            state.failed.insert(format!("bindings.{name}"));
        }
    }

    if !state.errors.is_empty() {
        let mut errors = state.errors;
        errors.sort_by_key(|e| (e.line.unwrap_or(usize::MAX), e.path.clone()));
        return Err(errors);
    }
    let files = state.vaults.values().flat_map(|v| v.files()).collect();
    Ok(Engine {
        handover: Handover {
            listeners: state.listeners,
            stores: kept_stores,
            metrics: state.metrics.registry,
        },
        files,
        namespace: state.namespace,
        bindings,
        guards,
        catalogs: started_catalogs,
        exporters,
        shutdown: state.shutdown,
        grace,
        config,
        engine_id: state.engine_id,
        active: Mutex::new(None),
    })
}

/// `bindings.a.options.host` -> `bindings.a`: the entry an error path is in.
fn entry_of(path: &str) -> Option<String> {
    let mut parts = path.splitn(3, '.');
    match (parts.next(), parts.next()) {
        (
            Some(section @ ("vaults" | "guards" | "catalogs" | "stores" | "bindings")),
            Some(name),
        ) => Some(format!("{section}.{name}")),
        (Some("telemetry"), _) => {
            let mut parts = path.splitn(4, '.');
            parts.next();
            match (parts.next(), parts.next()) {
                (Some("exporters"), Some(name)) => Some(format!("exporters.{name}")),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Replaces each binding whose type has a generator with what it generates.
fn generate(mut config: ZillaConfig, state: &mut BuildState) -> ZillaConfig {
    let names: Vec<String> = config.bindings.keys().cloned().collect();
    let configured = config.bindings.clone();
    let empty = HashMap::new();
    for name in names {
        let entry = config.bindings[&name].clone();
        let Some(generator) = inventory::iter::<GeneratorFactory>
            .into_iter()
            .find(|g| g.type_name == entry.type_name)
        else {
            continue;
        };
        let path = format!("bindings.{name}");
        if !generator.kinds.contains(&entry.kind) {
            let kinds: Vec<_> = generator.kinds.iter().map(|k| k.as_str()).collect();
            state.record(
                format!("{path}.kind"),
                format!(
                    "binding type `{}` has no kind `{}`; its kinds are {}",
                    entry.type_name,
                    entry.kind,
                    quoted_list(&kinds)
                ),
            );
            continue;
        }
        let plugin = PluginContext::new(&name, path.clone(), entry.options.as_ref(), state);
        let mut cx = BindingContext::for_generator(plugin, &entry, &empty, &configured);
        let Ok(generated) = (generator.generate)(&mut cx) else {
            continue;
        };
        if !generated.bindings.is_empty() && generated.bindings.keys().next() != Some(&name) {
            state.record(
                path,
                format!(
                    "generator `{}` must name its entry point `{name}`",
                    entry.type_name
                ),
            );
            continue;
        }
        let position = config.bindings.get_index_of(&name).unwrap_or(0);
        config.bindings.shift_remove(&name);
        for (offset, (generated_name, binding)) in generated.bindings.into_iter().enumerate() {
            if offset > 0 && config.bindings.contains_key(&generated_name) {
                state.record(
                    path.clone(),
                    format!("generated binding `{generated_name}` clashes with a configured one"),
                );
                continue;
            }
            config
                .bindings
                .shift_insert(position + offset, generated_name, binding);
        }
        for (catalog_name, catalog) in generated.catalogs {
            config.catalogs.entry(catalog_name).or_insert(catalog);
        }
        for (store_name, store) in generated.stores {
            config.stores.entry(store_name).or_insert(store);
        }
    }
    config
}

/// Builds the `stores` entries (or those a generator added), each with its
/// entry; a store the handover holds for an unchanged entry is taken over.
fn build_stores(
    entries: &IndexMap<String, PluginConfig>,
    handover: &Handover,
    state: &mut BuildState,
) -> Vec<(String, PluginConfig, Arc<dyn Store>)> {
    let mut stores = Vec::new();
    let mut fresh = IndexMap::new();
    for (name, entry) in entries {
        match handover.store(name, entry) {
            Some(store) => stores.push((name.clone(), entry.clone(), store)),
            None => {
                fresh.insert(name.clone(), entry.clone());
            }
        }
    }
    let built = build_plugins::<StoreFactory, dyn Store>(
        &fresh,
        "stores",
        "store",
        state,
        |f| f.type_name,
        |f, cx| (f.build)(cx),
    );
    stores.extend(
        built
            .into_iter()
            .map(|(name, store)| (name.clone(), fresh[&name].clone(), store)),
    );
    stores
}

/// Builds every entry of one plugin section, recording failures.
fn build_plugins<F: 'static, T: ?Sized>(
    entries: &IndexMap<String, PluginConfig>,
    section: &str,
    family: &str,
    state: &mut BuildState,
    name_of: fn(&F) -> &'static str,
    build: impl Fn(&F, &mut PluginContext<'_>) -> Result<Arc<T>, crate::BuildError>,
) -> Vec<(String, Arc<T>)>
where
    inventory::iter<F>: IntoIterator<Item = &'static F>,
{
    let mut built = Vec::new();
    for (name, entry) in entries {
        if state.failed.contains(&format!("{family}s.{name}")) {
            continue;
        }
        let path = format!("{section}.{name}");
        let factory = match lookup::<F>(&entry.type_name, family, name_of) {
            Ok(factory) => factory,
            Err(message) => {
                state.record(format!("{path}.type"), message);
                state.failed.insert(format!("{family}s.{name}"));
                continue;
            }
        };
        let mut cx = PluginContext::new(name, path, entry.options.as_ref(), state);
        match build(factory, &mut cx) {
            Ok(plugin) => built.push((name.clone(), plugin)),
            Err(_) => {
                state.failed.insert(format!("{family}s.{name}"));
            }
        }
    }
    built
}

fn build_binding(
    name: &str,
    entry: &BindingConfig,
    state: &mut BuildState,
    built: &HashMap<String, BuiltBinding>,
) -> Option<Arc<dyn Binding>> {
    let path = format!("bindings.{name}");
    let factory = match lookup::<BindingFactory>(&entry.type_name, "binding", |f| f.type_name) {
        Ok(factory) => factory,
        Err(message) => {
            state.record(format!("{path}.type"), message);
            return None;
        }
    };
    if !factory.kinds.contains(&entry.kind) {
        let kinds: Vec<_> = factory.kinds.iter().map(|k| k.as_str()).collect();
        state.record(
            format!("{path}.kind"),
            format!(
                "binding type `{}` has no kind `{}`; its kinds are {}",
                entry.type_name,
                entry.kind,
                quoted_list(&kinds)
            ),
        );
        return None;
    }
    let plugin = PluginContext::new(name, path, entry.options.as_ref(), state);
    let mut cx = BindingContext::new(plugin, entry, built);
    (factory.build)(&mut cx).ok()
}
