//! Building an engine from a configuration, and running it.
//!
//! Vaults, guards, catalogs, stores and exporters are built first, then
//! bindings in dependency order (a binding's exits before the binding), so that
//! each binding can ask for its exits as the ports it needs. Every problem is collected and
//! reported together.

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
use crate::registry::{
    lookup, BindingFactory, CatalogFactory, ExporterFactory, GeneratorFactory, GuardFactory,
    StoreFactory, VaultFactory,
};
use crate::shutdown::{Drained, Shutdown};
use crate::store::Store;
use crate::telemetry::{self, ActiveGuard, Events, Exporter};
use crate::vault::Vault;

/// Engine property: seconds that open connections get to finish after shutdown begins.
pub const PROPERTY_SHUTDOWN_GRACE: &str = "zilla.engine.shutdown.grace";

/// Engine properties the engine itself reads; other `zilla.engine.*` names are errors.
const ENGINE_PROPERTIES: &[&str] = &[PROPERTY_SHUTDOWN_GRACE];

const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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
}

impl EngineBuilder {
    fn new(source: Source) -> Self {
        Self {
            source,
            base_dir: None,
            env: Box::new(|name| std::env::var(name).ok()),
            properties: Vec::new(),
        }
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
        let (source_name, document, default_dir) = match self.source {
            Source::File(path) => {
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
        build_engine(document, base_dir, self.properties).map_err(|errors| ConfigErrors {
            source: source_name,
            errors,
        })
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
    exporters: Vec<Arc<dyn Exporter>>,
    shutdown: Shutdown,
    grace: Duration,
    /// The configuration after generators ran.
    config: ZillaConfig,
    engine_id: u64,
    active: Mutex<Option<ActiveGuard>>,
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

    /// Starts guards, then bindings (exits first); returns what started where.
    /// On failure, whatever already started is shut down again.
    pub async fn start(&self) -> Result<Vec<StartedBinding>, EngineStartError> {
        *self.active.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(telemetry::activate(self.engine_id, self.exporters.clone()));
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
    let grace = check_properties(&properties, &mut errors);
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
    };

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
    state.stores = build_stores(&config.stores, &mut state)
        .into_iter()
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
        &mut state,
    );
    state.stores.extend(generated_stores);

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
    Ok(Engine {
        namespace: state.namespace,
        bindings,
        guards,
        catalogs: started_catalogs,
        exporters: exporters.into_iter().map(|(_, e)| e).collect(),
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

fn check_properties(properties: &[(String, String)], errors: &mut Vec<ConfigError>) -> Duration {
    let mut grace = DEFAULT_SHUTDOWN_GRACE;
    for (name, value) in properties {
        let path = format!("-P {name}");
        if name == PROPERTY_SHUTDOWN_GRACE {
            match value.parse::<f64>() {
                Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => {
                    grace = Duration::from_secs_f64(seconds)
                }
                _ => errors.push(ConfigError {
                    path,
                    line: None,
                    message: format!("expected a number of seconds, found `{value}`"),
                }),
            }
        } else if name.starts_with("zilla.engine.") {
            errors.push(ConfigError {
                path,
                line: None,
                message: format!(
                    "unknown engine property; known engine properties: {}",
                    quoted_list(ENGINE_PROPERTIES)
                ),
            });
        }
    }
    grace
}

/// Builds the `stores` entries (or those a generator added).
fn build_stores(
    entries: &IndexMap<String, PluginConfig>,
    state: &mut BuildState,
) -> Vec<(String, Arc<dyn Store>)> {
    build_plugins::<StoreFactory, dyn Store>(
        entries,
        "stores",
        "store",
        state,
        |f| f.type_name,
        |f, cx| (f.build)(cx),
    )
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

/// Orders bindings so each comes after its exits; reports exits that name no
/// binding and exit cycles.
fn binding_order(
    bindings: &IndexMap<String, BindingConfig>,
    state: &mut BuildState,
) -> Vec<String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
        Broken,
    }

    fn exits(entry: &BindingConfig) -> Vec<(String, &str)> {
        let mut exits: Vec<(String, &str)> = entry
            .routes
            .iter()
            .enumerate()
            .map(|(index, route)| (format!("routes[{index}].exit"), route.exit.as_str()))
            .collect();
        if let Some(exit) = &entry.exit {
            exits.push(("exit".to_owned(), exit.as_str()));
        }
        exits
    }

    fn visit(
        name: &str,
        bindings: &IndexMap<String, BindingConfig>,
        marks: &mut HashMap<String, Mark>,
        stack: &mut Vec<String>,
        order: &mut Vec<String>,
        state: &mut BuildState,
    ) -> Mark {
        match marks.get(name) {
            Some(Mark::Visiting) => return Mark::Visiting,
            Some(done) => return *done,
            None => {}
        }
        marks.insert(name.to_owned(), Mark::Visiting);
        stack.push(name.to_owned());
        let mut result = Mark::Done;
        for (relative, exit) in exits(&bindings[name]) {
            let path = format!("bindings.{name}.{relative}");
            if !bindings.contains_key(exit) {
                let known: Vec<_> = bindings.keys().collect();
                state.record(
                    path,
                    format!(
                        "exit `{exit}` is not a binding; the bindings are {}",
                        quoted_list(&known)
                    ),
                );
                result = Mark::Broken;
                continue;
            }
            match visit(exit, bindings, marks, stack, order, state) {
                Mark::Visiting => {
                    let start = stack.iter().position(|n| n == exit).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(exit.to_owned());
                    state.record(path, format!("exit cycle: {}", cycle.join(" -> ")));
                    result = Mark::Broken;
                }
                Mark::Broken => result = Mark::Broken,
                Mark::Done => {}
            }
        }
        stack.pop();
        marks.insert(name.to_owned(), result);
        // Broken bindings are still built, so their other problems are reported
        // too; their missing exits fail quietly, having been reported here.
        order.push(name.to_owned());
        result
    }

    let mut marks = HashMap::new();
    let mut order = Vec::new();
    for name in bindings.keys() {
        let mut stack = Vec::new();
        visit(name, bindings, &mut marks, &mut stack, &mut order, state);
    }
    order
}
