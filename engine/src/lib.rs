//! `zilla-engine`: runs `zilla.yaml` configurations made of pluggable bindings,
//! guards, vaults, catalogs, stores and models.
//!
//! The engine knows no protocol. It reads the configuration envelope, finds the
//! plugin registered for each `type`, builds the pipeline in dependency order
//! (each binding gets its exits as the typed [ports](port) it needs), and runs it
//! with a shared shutdown signal.
//!
//! # Embedding
//!
//! Build an engine from a file ([`Engine::from_file`]), a string
//! ([`Engine::from_yaml`]) or a typed [`ZillaConfig`] ([`Engine::from_config`]) and
//! run it in your own tokio runtime. Link the plugin crates you want; naming
//! them keeps the linker from dropping their registrations.
//!
//! ```
//! use zilla_binding_tcp as _; // registers `type: tcp`
//! use zilla_engine::Engine;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let upstream_port = upstream.local_addr()?.port();
//! // A layer-4 proxy from a free local port to an upstream server.
//! let engine = Engine::from_yaml(
//!     r#"
//! name: embedded
//! bindings:
//!   north_tcp_server:
//!     type: tcp
//!     kind: server
//!     options: { host: 127.0.0.1, port: 0 }
//!     exit: south_tcp_client
//!   south_tcp_client:
//!     type: tcp
//!     kind: client
//!     options:
//!       host: 127.0.0.1
//!       port: ${{env.UPSTREAM_PORT}}
//! "#,
//! )
//! .env(move |name| (name == "UPSTREAM_PORT").then(|| upstream_port.to_string()))
//! .build()?;
//!
//! let started = engine.start().await?;
//! let proxy = started[started.len() - 1].listening[0];
//! assert_eq!(started[started.len() - 1].name, "north_tcp_server");
//!
//! // Bytes written to the proxy arrive upstream.
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! let mut client = tokio::net::TcpStream::connect(proxy).await?;
//! client.write_all(b"ping").await?;
//! let (mut accepted, _) = upstream.accept().await?;
//! let mut received = [0u8; 4];
//! accepted.read_exact(&mut received).await?;
//! assert_eq!(&received, b"ping");
//!
//! drop(client);
//! engine.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Reloading
//!
//! To replace a running engine without refusing a connection, build its
//! successor with [`EngineBuilder::handover`]`(running.handover())`, start it,
//! then call [`Engine::stop_accepting`] on the running one: listeners on the
//! same address are shared sockets ([`Listeners`]), unchanged stores are the
//! same stores, and the old engine's connections carry on until
//! [`Engine::connections_ended`] resolves. The `zilla` host does this on
//! SIGHUP and when its files change (docs/decisions/0017).
//!
//! # Extending
//!
//! A third-party crate implements [`Binding`] (or [`Guard`], [`Vault`],
//! [`Catalog`], [`Model`], [`Store`]) and registers a factory with
//! [`register_binding!`] (or its siblings), and describes its options for
//! `zilla schema` with [`register_schema!`] ([`schema`]); see
//! `docs/writing-a-binding.md`.

#![forbid(unsafe_code)]

pub mod admin;
pub mod binding;
mod builtin;
pub mod catalog;
pub mod config;
mod context;
pub mod destination;
mod engine;
pub mod guard;
mod handover;
pub mod listeners;
pub mod model;
mod order;
pub mod port;
pub mod properties;
pub mod registry;
pub mod route;
pub mod schema;
pub mod shutdown;
mod start_error;
pub mod store;
pub mod telemetry;
pub mod vault;

pub use binding::{Binding, StartContext, StartError};
pub use catalog::{Catalog, CatalogError, Schema, SchemaRef};
pub use config::{BuildError, ConfigError, ConfigErrors, Kind, ZillaConfig};
pub use context::{BindingContext, PluginContext};
pub use destination::HostKey;
pub use engine::{Engine, EngineBuilder, EngineStartError, StartedBinding};
pub use guard::{Authorizations, Guard, GuardRejection, GuardSession};
pub use handover::Handover;
pub use listeners::{ListenKey, Listeners};
pub use model::{CatalogReferences, CatalogSelector, Compile, LiveSchema, Model, ValidationError};
pub use port::{
    Authority, ByteStream, ConnectRequest, Granted, Port, Ports, Reached, StreamConnector,
    StreamHandler, StreamInfo,
};
pub use properties::{EngineProperties, HealthEndpoint, PROPERTY_SHUTDOWN_GRACE};
pub use registry::{
    registered, BindingFactory, CatalogFactory, ExporterFactory, Generated, GeneratorFactory,
    GuardFactory, ModelFactory, Registered, StoreFactory, VaultFactory,
};
pub use route::{Exit, Resolved, Route, Routes};
pub use shutdown::{Drained, Shutdown};
pub use store::{
    BucketRate, Lease, LeaseState, Membership, SharedCounts, SharedState, Store, StoreStats,
    StoreStatsBlock, Taken, Unavailable,
};
pub use telemetry::{EventLayer, Events, Exporter};
pub use vault::{Crl, CrlSet, KeyEntry, RevocationLists, Vault, VaultError};

/// What plugin crates need from the engine's dependencies, so they depend on
/// `zilla-engine` alone. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use async_trait::async_trait;
    pub use inventory;
}

/// Re-exported so plugin crates implement async traits without another dependency.
pub use async_trait::async_trait;
