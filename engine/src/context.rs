//! The contexts plugins are built with, and the state every build shares.
//!
//! A factory in the [registry](crate::registry) receives a [`PluginContext`]
//! (guards, vaults, catalogs, stores, models, exporters) or a [`BindingContext`]
//! (bindings, generators). They live apart from the registry so that this
//! module depends on no factory: the registry imports the contexts, never the
//! other way round.

use std::collections::{HashMap, HashSet};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde_yaml::Value;

use crate::catalog::Catalog;
use crate::config::{deserialize_at, BindingConfig, ConfigError, Kind, LineIndex};
use crate::guard::Guard;
use crate::listeners::Listeners;
use crate::port::{Port, Ports};
use crate::route::{Exit, GuardRequirement, Route, Routes};
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::telemetry::Events;
use crate::vault::Vault;
use crate::BuildError;

/// What every build shares: where errors go and what has been built so far.
pub(crate) struct BuildState {
    pub(crate) engine_id: u64,
    pub(crate) namespace: Arc<str>,
    pub(crate) base_dir: PathBuf,
    pub(crate) lines: LineIndex,
    pub(crate) properties: HashMap<String, String>,
    pub(crate) shutdown: Shutdown,
    pub(crate) errors: Vec<ConfigError>,
    pub(crate) vaults: HashMap<String, Arc<dyn Vault>>,
    pub(crate) guards: HashMap<String, Arc<dyn Guard>>,
    pub(crate) catalogs: HashMap<String, Arc<dyn Catalog>>,
    pub(crate) stores: HashMap<String, Arc<dyn Store>>,
    /// Entries that failed to build; whoever refers to them stays quiet,
    /// since the root cause is already reported.
    pub(crate) failed: HashSet<String>,
    /// Listening sockets, shared with the engine this one succeeds.
    pub(crate) listeners: Listeners,
    /// The metrics registry and the metrics `telemetry.metrics` enables.
    pub(crate) metrics: crate::telemetry::metrics::MetricsBuild,
}

impl BuildState {
    pub(crate) fn record(&mut self, path: String, message: String) -> BuildError {
        self.errors.push(ConfigError {
            line: self.lines.line_of(&path),
            path,
            message,
        });
        BuildError(())
    }
}

/// What a guard, vault, catalog, store, model or exporter is built with.
pub struct PluginContext<'a> {
    name: &'a str,
    path: String,
    options: Option<&'a Value>,
    pub(crate) state: &'a mut BuildState,
}

impl<'a> PluginContext<'a> {
    pub(crate) fn new(
        name: &'a str,
        path: String,
        options: Option<&'a Value>,
        state: &'a mut BuildState,
    ) -> Self {
        Self {
            name,
            path,
            options,
            state,
        }
    }

    /// The entry's name (its key in `zilla.yaml`).
    pub fn name(&self) -> &str {
        self.name
    }

    /// The configuration's `name`.
    pub fn namespace(&self) -> &str {
        &self.state.namespace
    }

    /// The entry's dotted path, e.g. `bindings.north_tcp_server`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The directory relative paths in options are resolved against (the
    /// directory of `zilla.yaml`).
    pub fn base_dir(&self) -> &Path {
        &self.state.base_dir
    }

    /// Resolves `relative` against [`base_dir`](Self::base_dir).
    pub fn resolve_path(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.state.base_dir.join(relative)
    }

    /// An engine property given with `-P name=value`.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.state.properties.get(name).map(String::as_str)
    }

    /// The engine's shutdown signal.
    pub fn shutdown(&self) -> Shutdown {
        self.state.shutdown.clone()
    }

    /// Where a binding that listens gets its sockets: those of the engine
    /// this one replaces, when they listen on the same address, so that a
    /// reload never closes a listener that stays.
    pub fn listeners(&self) -> Listeners {
        self.state.listeners.clone()
    }

    /// Where this entry's telemetry events go.
    pub fn events(&self) -> Events {
        Events::for_engine(
            self.state.namespace.clone(),
            self.name,
            self.state.engine_id,
        )
    }

    /// The raw options, if any were given.
    pub fn raw_options(&self) -> Option<&'a Value> {
        self.options
    }

    /// Deserializes the options into the plugin's own strict type; absent
    /// options read as an empty mapping, so all-optional types need none.
    pub fn options<T: DeserializeOwned>(&mut self) -> Result<T, BuildError> {
        let value = self
            .options
            .cloned()
            .unwrap_or_else(|| Value::Mapping(Default::default()));
        self.deserialize(value, "options")
    }

    /// Rejects options for a plugin that takes none.
    pub fn no_options(&mut self) -> Result<(), BuildError> {
        match self.options {
            None | Some(Value::Null) => Ok(()),
            Some(_) => Err(self.error("options", "this type takes no options")),
        }
    }

    /// Deserializes `value`, found at `<entry path>.<relative>`, recording a
    /// located error on failure.
    pub fn deserialize<T: DeserializeOwned>(
        &mut self,
        value: Value,
        relative: &str,
    ) -> Result<T, BuildError> {
        let path = self.child_path(relative);
        deserialize_at(value, &path, &self.state.lines, &mut self.state.errors)
            .ok_or(BuildError(()))
    }

    /// Records an error at `<entry path>.<relative>`.
    pub fn error(&mut self, relative: &str, message: impl Into<String>) -> BuildError {
        let path = self.child_path(relative);
        self.state.record(path, message.into())
    }

    /// Runs `f` with relative paths taken from `path` (e.g.
    /// `bindings.api_proxy`), for a generator reading another entry, so that
    /// errors point at the entry that holds the fault.
    pub fn within<R>(&mut self, path: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        let own = std::mem::replace(&mut self.path, path.to_owned());
        let result = f(self);
        self.path = own;
        result
    }

    fn child_path(&self, relative: &str) -> String {
        if relative.is_empty() {
            self.path.clone()
        } else if relative.starts_with('[') {
            format!("{}{relative}", self.path)
        } else {
            format!("{}.{relative}", self.path)
        }
    }

    /// The vault named `name`, or a recorded error at `relative`.
    pub fn vault(&mut self, name: &str, relative: &str) -> Result<Arc<dyn Vault>, BuildError> {
        let found = self.state.vaults.get(name).cloned();
        self.named(found, name, "vault", relative)
    }

    /// The guard named `name`, or a recorded error at `relative`.
    pub fn guard(&mut self, name: &str, relative: &str) -> Result<Arc<dyn Guard>, BuildError> {
        let found = self.state.guards.get(name).cloned();
        self.named(found, name, "guard", relative)
    }

    /// The catalog named `name`, or a recorded error at `relative`.
    pub fn catalog(&mut self, name: &str, relative: &str) -> Result<Arc<dyn Catalog>, BuildError> {
        let found = self.state.catalogs.get(name).cloned();
        self.named(found, name, "catalog", relative)
    }

    /// The store named `name`, or a recorded error at `relative`.
    pub fn store(&mut self, name: &str, relative: &str) -> Result<Arc<dyn Store>, BuildError> {
        let found = self.state.stores.get(name).cloned();
        self.named(found, name, "store", relative)
    }

    fn named<T: ?Sized>(
        &mut self,
        found: Option<Arc<T>>,
        name: &str,
        family: &str,
        relative: &str,
    ) -> Result<Arc<T>, BuildError> {
        if let Some(found) = found {
            return Ok(found);
        }
        if self.state.failed.contains(&format!("{family}s.{name}")) {
            return Err(BuildError(()));
        }
        Err(self.error(
            relative,
            format!("no {family} named `{name}` in `{family}s`"),
        ))
    }

    /// The schema text a model reference's `catalog` names, resolved now
    /// (the catalog must have it at hand: inline, filesystem, or cached).
    pub fn schema(
        &mut self,
        references: &crate::model::CatalogReferences,
        relative: &str,
    ) -> Result<crate::catalog::Schema, BuildError> {
        let Some((catalog_name, selectors)) = references.iter().next() else {
            return Err(self.error(relative, "a model with a schema needs `catalog`"));
        };
        let path = format!("{relative}.{catalog_name}");
        let catalog = self.catalog(catalog_name, &path)?;
        let Some(selector) = selectors.first() else {
            return Err(self.error(
                &path,
                "name a schema: `- subject: <subject>` or `- id: <id>`",
            ));
        };
        let reference = selector
            .reference()
            .map_err(|message| self.error(&format!("{path}[0]"), message))?;
        match catalog.resolve_now(&reference) {
            Some(Ok(schema)) => Ok(schema),
            Some(Err(error)) => Err(self.error(&format!("{path}[0]"), error.to_string())),
            None => Err(self.error(
                &format!("{path}[0]"),
                format!("catalog `{catalog_name}` cannot provide {reference} at startup"),
            )),
        }
    }

    /// A validator compiled from the schema `references` names, kept up to
    /// date when the catalog's schemas change (see [`LiveSchema`](crate::model::LiveSchema)).
    pub fn live_schema<T>(
        &mut self,
        references: &crate::model::CatalogReferences,
        relative: &str,
        compile: crate::model::Compile<T>,
    ) -> Result<crate::model::LiveSchema<T>, BuildError> {
        let schema = self.schema(references, relative)?;
        let (catalog_name, selectors) = references.iter().next().expect("schema() checked");
        let catalog = self.catalog(catalog_name, relative)?;
        let reference = selectors[0].reference().expect("schema() checked");
        let events = self.events();
        crate::model::LiveSchema::new(catalog, reference, &schema, compile, events)
            .map_err(|message| self.error(relative, message))
    }

    /// A context for a plugin nested in this entry (e.g. a model in a
    /// binding's options), at `<entry path>.<relative>` with `options`.
    pub(crate) fn nested<'b>(
        &'b mut self,
        relative: &str,
        options: &'b Value,
    ) -> PluginContext<'b> {
        let path = self.child_path(relative);
        PluginContext::new(self.name, path, Some(options), self.state)
    }
}

/// A binding built so far, with the ports it offers.
pub(crate) struct BuiltBinding {
    pub(crate) ports: Ports,
}

/// What a binding is built with: its configuration, its exits (already built)
/// and everything a [`PluginContext`] offers.
pub struct BindingContext<'a> {
    plugin: PluginContext<'a>,
    config: &'a BindingConfig,
    built: &'a HashMap<String, BuiltBinding>,
    configured: Option<&'a IndexMap<String, BindingConfig>>,
}

impl<'a> BindingContext<'a> {
    pub(crate) fn new(
        plugin: PluginContext<'a>,
        config: &'a BindingConfig,
        built: &'a HashMap<String, BuiltBinding>,
    ) -> Self {
        Self {
            plugin,
            config,
            built,
            configured: None,
        }
    }

    /// A generator's context: it also sees every binding as configured,
    /// before any generator ran.
    pub(crate) fn for_generator(
        plugin: PluginContext<'a>,
        config: &'a BindingConfig,
        built: &'a HashMap<String, BuiltBinding>,
        configured: &'a IndexMap<String, BindingConfig>,
    ) -> Self {
        Self {
            configured: Some(configured),
            ..Self::new(plugin, config, built)
        }
    }

    /// For generators: the bindings as written in `zilla.yaml`, before any
    /// generator replaced its entry, so that generators can compose (an
    /// asyncapi server reads the asyncapi proxy it exits to). Empty for
    /// ordinary bindings, which see their exits through ports instead.
    pub fn configured_bindings(&self) -> impl Iterator<Item = (&'a str, &'a BindingConfig)> {
        self.configured
            .into_iter()
            .flat_map(|bindings| bindings.iter().map(|(n, b)| (n.as_str(), b)))
    }

    /// The binding's kind.
    pub fn kind(&self) -> Kind {
        self.config.kind
    }

    /// The binding's whole configuration entry.
    pub fn config(&self) -> &'a BindingConfig {
        self.config
    }

    /// The binding's `vault`, which must be set.
    pub fn binding_vault(&mut self) -> Result<Arc<dyn Vault>, BuildError> {
        match &self.config.vault {
            Some(name) => self.plugin.vault(name, "vault"),
            None => Err(self.plugin.error("vault", "this binding needs a `vault`")),
        }
    }

    /// The binding named `exit`, as the port `P` this binding needs; `relative`
    /// locates the reference for the error message.
    pub fn exit<P: Port + ?Sized>(
        &mut self,
        exit: &str,
        relative: &str,
    ) -> Result<Exit<P>, BuildError> {
        let Some(target) = self.built.get(exit) else {
            // The graph already reported a missing exit or a failed build.
            return Err(BuildError(()));
        };
        match target.ports.get::<P>() {
            Some(port) => Ok(Exit {
                name: exit.into(),
                port,
            }),
            None => {
                let offers = target.ports.capabilities();
                let offers = if offers.is_empty() {
                    "it cannot be routed to".to_owned()
                } else {
                    format!("it can {}", offers.join(" and "))
                };
                let message = format!(
                    "{} routes to {exit}, which does not {}; {offers}",
                    self.plugin.name,
                    P::CAPABILITY
                );
                Err(self.plugin.error(relative, message))
            }
        }
    }

    /// The default `exit`, if configured, as port `P`.
    pub fn default_exit<P: Port + ?Sized>(&mut self) -> Result<Option<Exit<P>>, BuildError> {
        match &self.config.exit {
            Some(exit) => self.exit::<P>(exit, "exit").map(Some),
            None => Ok(None),
        }
    }

    /// The routes and default exit, with `when` conditions parsed as `W` and
    /// exits resolved as port `P`. Reports every problem before failing.
    pub fn routes<W: DeserializeOwned, P: Port + ?Sized>(
        &mut self,
    ) -> Result<Routes<W, P>, BuildError> {
        let mut routes = Vec::new();
        let mut failed = false;
        for (index, route) in self.config.routes.iter().enumerate() {
            let mut when = Vec::new();
            for (at, condition) in route.when.iter().enumerate() {
                match self
                    .plugin
                    .deserialize::<W>(condition.clone(), &format!("routes[{index}].when[{at}]"))
                {
                    Ok(condition) => when.push(condition),
                    Err(_) => failed = true,
                }
            }
            let mut guarded = Vec::new();
            for (guard_name, roles) in &route.guarded {
                match self
                    .plugin
                    .guard(guard_name, &format!("routes[{index}].guarded.{guard_name}"))
                {
                    Ok(guard) => guarded.push(GuardRequirement {
                        guard_name: guard_name.as_str().into(),
                        guard,
                        roles: roles.clone(),
                    }),
                    Err(_) => failed = true,
                }
            }
            match self.exit::<P>(&route.exit, &format!("routes[{index}].exit")) {
                Ok(exit) if !failed => routes.push(Route {
                    when,
                    guarded,
                    exit,
                    with: route.with.clone(),
                }),
                _ => failed = true,
            }
        }
        let default = self.default_exit::<P>();
        match (failed, default) {
            (false, Ok(default)) => Ok(Routes::new(routes, default)),
            _ => Err(BuildError(())),
        }
    }

    /// Routes that must lead somewhere: reports a binding with neither routes
    /// nor `exit`.
    pub fn required_routes<W: DeserializeOwned, P: Port + ?Sized>(
        &mut self,
    ) -> Result<Routes<W, P>, BuildError> {
        if self.config.routes.is_empty() && self.config.exit.is_none() {
            return Err(self
                .plugin
                .error("", "needs `exit` or `routes` to say where streams go"));
        }
        self.routes()
    }
}

impl<'a> Deref for BindingContext<'a> {
    type Target = PluginContext<'a>;

    fn deref(&self) -> &Self::Target {
        &self.plugin
    }
}

impl DerefMut for BindingContext<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.plugin
    }
}
