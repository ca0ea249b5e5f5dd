//! The plugin registry: the factories plugin crates register, and their lookup.
//!
//! Each plugin crate submits a factory with one of the `register_*!` macros;
//! the engine finds it by the `type` a configuration names. Nothing in the
//! engine lists plugin types, so a third-party crate extends it just by being
//! linked in. The contexts factories are called with live in their own module
//! (re-exported here), which never imports this one.

use std::sync::Arc;

use indexmap::IndexMap;
use serde_yaml::Value;

use crate::binding::Binding;
use crate::catalog::Catalog;
use crate::config::{quoted_list, BindingConfig, Kind};
use crate::guard::Guard;
use crate::model::Model;
use crate::store::Store;
use crate::telemetry::Exporter;
use crate::vault::Vault;
use crate::BuildError;

pub use crate::context::{BindingContext, PluginContext};

/// Builds bindings of one `type`.
#[derive(Debug)]
pub struct BindingFactory {
    /// The `type` in `zilla.yaml`.
    pub type_name: &'static str,
    /// The kinds this type supports.
    pub kinds: &'static [Kind],
    /// Builds one binding from its configuration.
    pub build: fn(&mut BindingContext<'_>) -> Result<Arc<dyn Binding>, BuildError>,
}

/// Builds guards of one `type`.
#[derive(Debug)]
pub struct GuardFactory {
    /// The `type` in `zilla.yaml`.
    pub type_name: &'static str,
    /// Builds one guard from its options.
    pub build: fn(&mut PluginContext<'_>) -> Result<Arc<dyn Guard>, BuildError>,
}

/// Builds vaults of one `type`.
#[derive(Debug)]
pub struct VaultFactory {
    /// The `type` in `zilla.yaml`.
    pub type_name: &'static str,
    /// Builds one vault from its options.
    pub build: fn(&mut PluginContext<'_>) -> Result<Arc<dyn Vault>, BuildError>,
}

/// Builds catalogs of one `type`.
#[derive(Debug)]
pub struct CatalogFactory {
    /// The `type` in `zilla.yaml`.
    pub type_name: &'static str,
    /// Builds one catalog from its options.
    pub build: fn(&mut PluginContext<'_>) -> Result<Arc<dyn Catalog>, BuildError>,
}

/// Builds stores of one `type`.
#[derive(Debug)]
pub struct StoreFactory {
    /// The `type` in `zilla.yaml`.
    pub type_name: &'static str,
    /// Builds one store from its options.
    pub build: fn(&mut PluginContext<'_>) -> Result<Arc<dyn Store>, BuildError>,
}

/// Builds models of one `model` name (`json`, `avro`, ...) from a model reference.
#[derive(Debug)]
pub struct ModelFactory {
    /// The `model` in a model reference.
    pub type_name: &'static str,
    /// Builds one model; its options are the whole model reference.
    pub build: fn(&mut PluginContext<'_>) -> Result<Arc<dyn Model>, BuildError>,
}

/// Builds telemetry exporters of one `type`.
#[derive(Debug)]
pub struct ExporterFactory {
    /// The `type` in `telemetry.exporters`.
    pub type_name: &'static str,
    /// Builds one exporter from its options.
    pub build: fn(&mut PluginContext<'_>) -> Result<Arc<dyn Exporter>, BuildError>,
}

/// Generates ordinary configuration entries from one binding entry (e.g. an
/// `asyncapi` binding from its document). Generated bindings are built by the
/// same engine code as any other; the first generated binding must take the
/// generating entry's name, so exits naming it keep working.
#[derive(Debug)]
pub struct GeneratorFactory {
    /// The `type` in `zilla.yaml`.
    pub type_name: &'static str,
    /// The kinds this type supports.
    pub kinds: &'static [Kind],
    /// Generates the entries that replace the binding.
    pub generate: fn(&mut BindingContext<'_>) -> Result<Generated, BuildError>,
}

/// What a generator produced.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    /// Catalogs the generated bindings use (e.g. inline schemas).
    pub catalogs: IndexMap<String, crate::config::PluginConfig>,
    /// Stores the generated bindings use (e.g. the memory store an asyncapi
    /// server's mqtt server keeps its sessions in).
    pub stores: IndexMap<String, crate::config::PluginConfig>,
    /// The bindings, the entry point first (named like the generating
    /// entry). Empty when the entry is absorbed by another generator (an
    /// asyncapi proxy, realised in the routes of the server in front of it).
    pub bindings: IndexMap<String, BindingConfig>,
}

inventory::collect!(BindingFactory);
inventory::collect!(GeneratorFactory);
inventory::collect!(GuardFactory);
inventory::collect!(VaultFactory);
inventory::collect!(CatalogFactory);
inventory::collect!(StoreFactory);
inventory::collect!(ModelFactory);
inventory::collect!(ExporterFactory);

/// Registers a [`BindingFactory`] so configurations can use its `type`.
///
/// ```
/// use std::sync::Arc;
/// use zilla_engine::{register_binding, Binding, BindingContext, BindingFactory, BuildError, Kind};
///
/// /// A binding that offers nothing and starts nothing.
/// struct Inert;
///
/// impl Binding for Inert {}
///
/// fn build_inert(cx: &mut BindingContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
///     cx.no_options()?;
///     Ok(Arc::new(Inert))
/// }
///
/// register_binding!(BindingFactory {
///     type_name: "inert",
///     kinds: &[Kind::Server],
///     build: build_inert,
/// });
///
/// # fn main() {
/// let registered = zilla_engine::registered();
/// assert!(registered.bindings.iter().any(|(name, _)| *name == "inert"));
/// # }
/// ```
#[macro_export]
macro_rules! register_binding {
    ($factory:expr $(,)?) => {
        $crate::__private::inventory::submit! { $factory }
    };
}

/// Registers a [`GeneratorFactory`].
#[macro_export]
macro_rules! register_generator {
    ($factory:expr $(,)?) => {
        $crate::__private::inventory::submit! { $factory }
    };
}

/// Registers a [`GuardFactory`].
#[macro_export]
macro_rules! register_guard {
    ($factory:expr $(,)?) => {
        $crate::__private::inventory::submit! { $factory }
    };
}

/// Registers a [`VaultFactory`].
#[macro_export]
macro_rules! register_vault {
    ($factory:expr $(,)?) => {
        $crate::__private::inventory::submit! { $factory }
    };
}

/// Registers a [`CatalogFactory`].
#[macro_export]
macro_rules! register_catalog {
    ($factory:expr $(,)?) => {
        $crate::__private::inventory::submit! { $factory }
    };
}

/// Registers a [`StoreFactory`].
#[macro_export]
macro_rules! register_store {
    ($factory:expr $(,)?) => {
        $crate::__private::inventory::submit! { $factory }
    };
}

/// Registers a [`ModelFactory`].
#[macro_export]
macro_rules! register_model {
    ($factory:expr $(,)?) => {
        $crate::__private::inventory::submit! { $factory }
    };
}

/// Registers an [`ExporterFactory`].
#[macro_export]
macro_rules! register_exporter {
    ($factory:expr $(,)?) => {
        $crate::__private::inventory::submit! { $factory }
    };
}

/// Every plugin type linked into this program, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// Binding types with their kinds.
    pub bindings: Vec<(&'static str, Vec<Kind>)>,
    /// Guard types.
    pub guards: Vec<&'static str>,
    /// Vault types.
    pub vaults: Vec<&'static str>,
    /// Catalog types.
    pub catalogs: Vec<&'static str>,
    /// Store types.
    pub stores: Vec<&'static str>,
    /// Model names.
    pub models: Vec<&'static str>,
    /// Telemetry exporter types.
    pub exporters: Vec<&'static str>,
}

/// Lists what the registry holds.
pub fn registered() -> Registered {
    fn names<T: 'static>(name: fn(&T) -> &'static str) -> Vec<&'static str>
    where
        inventory::iter<T>: IntoIterator<Item = &'static T>,
    {
        let mut names: Vec<_> = inventory::iter::<T>.into_iter().map(name).collect();
        names.sort_unstable();
        names
    }
    let mut bindings: Vec<_> = inventory::iter::<BindingFactory>
        .into_iter()
        .map(|f| (f.type_name, f.kinds.to_vec()))
        .chain(
            inventory::iter::<GeneratorFactory>
                .into_iter()
                .map(|f| (f.type_name, f.kinds.to_vec())),
        )
        .collect();
    bindings.sort_unstable_by_key(|(name, _)| *name);
    Registered {
        bindings,
        guards: names::<GuardFactory>(|f| f.type_name),
        vaults: names::<VaultFactory>(|f| f.type_name),
        catalogs: names::<CatalogFactory>(|f| f.type_name),
        stores: names::<StoreFactory>(|f| f.type_name),
        models: names::<ModelFactory>(|f| f.type_name),
        exporters: names::<ExporterFactory>(|f| f.type_name),
    }
}

/// Finds the factory registered for `type_name`, or explains what is registered.
pub(crate) fn lookup<T: 'static>(
    type_name: &str,
    family: &str,
    name_of: fn(&T) -> &'static str,
) -> Result<&'static T, String>
where
    inventory::iter<T>: IntoIterator<Item = &'static T>,
{
    let mut found = inventory::iter::<T>
        .into_iter()
        .filter(|factory| name_of(factory) == type_name);
    match (found.next(), found.next()) {
        (Some(factory), None) => Ok(factory),
        (Some(_), Some(_)) => Err(format!(
            "{family} type `{type_name}` is registered by more than one linked crate"
        )),
        (None, _) => {
            let mut known: Vec<_> = inventory::iter::<T>.into_iter().map(name_of).collect();
            known.sort_unstable();
            known.dedup();
            Err(if known.is_empty() {
                format!("unknown {family} type `{type_name}`; no {family} types are registered")
            } else {
                format!(
                    "unknown {family} type `{type_name}`; registered {family} types: {}",
                    quoted_list(&known)
                )
            })
        }
    }
}

// Building a model means finding its factory, so this part of `PluginContext`
// lives with the registry: the contexts then need nothing from it.
impl PluginContext<'_> {
    /// Builds the model a model reference (`{model: json, catalog: ...}`) at
    /// `relative` describes.
    pub fn model(
        &mut self,
        reference: &Value,
        relative: &str,
    ) -> Result<Arc<dyn Model>, BuildError> {
        let model_name = match reference {
            Value::String(name) => name.clone(),
            Value::Mapping(map) => match map.get("model").and_then(Value::as_str) {
                Some(name) => name.to_owned(),
                None => return Err(self.error(relative, "a model reference needs `model`")),
            },
            _ => return Err(self.error(relative, "expected a model name or a model reference")),
        };
        let factory = lookup::<ModelFactory>(&model_name, "model", |f| f.type_name)
            .map_err(|message| self.error(&format!("{relative}.model"), message))?;
        let mut cx = self.nested(relative, reference);
        (factory.build)(&mut cx)
    }
}
