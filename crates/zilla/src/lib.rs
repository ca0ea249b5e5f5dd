//! The `zilla` host: every first-party plugin linked in, and the command line.
//!
//! Embedders who want all built-in types depend on this crate and use
//! [`engine`]; those who want a chosen few depend on `zilla-engine` and the
//! plugin crates directly.

#![forbid(unsafe_code)]

mod admin;
pub mod cli;
mod health;
mod metrics;
mod property;
mod reload;
mod run;
mod schema;
mod watch;

pub use zilla_engine as engine;

// Naming each plugin crate keeps the linker from dropping its registration;
// `tests/host_cli.rs` checks that the registry lists every one of them.
use zilla_binding_asyncapi as _;
use zilla_binding_echo as _;
use zilla_binding_http as _;
use zilla_binding_mqtt as _;
use zilla_binding_tcp as _;
use zilla_binding_tls as _;
use zilla_binding_ws as _;
use zilla_catalog_filesystem as _;
use zilla_catalog_inline as _;
use zilla_catalog_schema_registry as _;
use zilla_exporter_otlp as _;
use zilla_exporter_prometheus as _;
use zilla_guard_jwt as _;
use zilla_guard_x509 as _;
use zilla_model_avro as _;
use zilla_model_json as _;
use zilla_model_primitive as _;
use zilla_store_memory as _;
use zilla_store_redis as _;
use zilla_vault_filesystem as _;

/// Every plugin type this host must offer, as `family:type`; the registry is
/// checked against it at test time.
pub const FIRST_PARTY_PLUGINS: &[&str] = &[
    "binding:asyncapi",
    "binding:mqtt",
    "binding:tcp",
    "binding:tls",
    "catalog:filesystem",
    "catalog:inline",
    "catalog:karapace-schema-registry",
    "catalog:schema-registry",
    "guard:jwt",
    "guard:x509",
    "model:avro",
    "model:boolean",
    "model:double",
    "model:float",
    "model:int32",
    "model:int64",
    "model:json",
    "model:string",
    "store:memory",
    "store:redis",
    "vault:filesystem",
    "exporter:otlp",
    "exporter:prometheus",
    "exporter:stdout",
];
