//! Telemetry: events emitted by bindings, and the exporters that publish them.
//!
//! Bindings emit events through [`Events`], which are ordinary `tracing` events
//! with target [`EVENT_TARGET`]. The [`EventLayer`] (installed by the host, or by
//! an embedder in its own subscriber) hands them to the exporters of every
//! running engine; the built-in `stdout` exporter prints one line per event.
//!
//! Metrics are in [`metrics`]: bindings count in blocks of their own, and
//! exporters (`prometheus`, `otlp`) read them through [`metrics::Metrics`].
//!
//! Event messages are read by operators: values a client chose go in through
//! [`text`] (escaped, so no client can forge a line), durations through
//! [`duration`] (`1.5 s`), never through `{:?}`.
//!
//! This module knows nothing of the plugin registry: exporter factories,
//! including the one registering `stdout`, live there, so that the registry
//! depends on telemetry and not the other way round.

use std::error::Error;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

use crate::start_error::StartError;

pub mod metrics;
mod stdout;
mod text;

pub use stdout::{format_event, StdoutExporter};
pub use text::{duration, identity, text, Identity, Span, Text};

/// The `tracing` target of telemetry events.
pub const EVENT_TARGET: &str = "zilla::event";

static EXCEPTION_TRACES: AtomicBool = AtomicBool::new(false);

/// Makes error events carry their full chain of causes (`zilla start -e`).
pub fn set_exception_traces(enabled: bool) {
    EXCEPTION_TRACES.store(enabled, Ordering::Relaxed);
}

/// Emits events on behalf of one binding (or guard, vault, ...).
#[derive(Debug, Clone)]
pub struct Events {
    namespace: Arc<str>,
    component: Arc<str>,
    /// The engine whose exporters receive these events (0: every engine's).
    engine: u64,
}

impl Events {
    /// Events from `component` in configuration `namespace`, for the
    /// exporters of every running engine.
    pub fn new(namespace: impl Into<Arc<str>>, component: impl Into<Arc<str>>) -> Self {
        Self {
            namespace: namespace.into(),
            component: component.into(),
            engine: 0,
        }
    }

    /// Events for the exporters of engine `engine` only.
    pub(crate) fn for_engine(
        namespace: impl Into<Arc<str>>,
        component: impl Into<Arc<str>>,
        engine: u64,
    ) -> Self {
        Self {
            engine,
            ..Self::new(namespace, component)
        }
    }

    /// A routine event, e.g. a connection authorized.
    pub fn info(&self, name: &'static str, message: impl fmt::Display) {
        tracing::info!(target: EVENT_TARGET, namespace = %self.namespace, component = %self.component, engine = self.engine, event = name, "{message}");
    }

    /// A rejection or failure that concerns one stream, e.g. a refused token.
    pub fn warn(&self, name: &'static str, message: impl fmt::Display) {
        tracing::warn!(target: EVENT_TARGET, namespace = %self.namespace, component = %self.component, engine = self.engine, event = name, "{message}");
    }

    /// A failure caused by `error`; its causes are included with `-e`.
    pub fn error(&self, name: &'static str, message: impl fmt::Display, error: &dyn Error) {
        let mut text = format!("{message}: {error}");
        if EXCEPTION_TRACES.load(Ordering::Relaxed) {
            let mut source = error.source();
            while let Some(cause) = source {
                let _ = write!(text, "\n    caused by: {cause}");
                source = cause.source();
            }
        }
        tracing::warn!(target: EVENT_TARGET, namespace = %self.namespace, component = %self.component, engine = self.engine, event = name, "{text}");
    }
}

/// One event, as exporters see it.
#[derive(Debug)]
pub struct Event<'a> {
    /// When it happened.
    pub timestamp: SystemTime,
    /// `INFO` for routine events, `WARN` for rejections and failures.
    pub level: Level,
    /// The configuration's `name`.
    pub namespace: &'a str,
    /// The binding, guard or vault that emitted it.
    pub component: &'a str,
    /// The event's name, e.g. `TCP_ACCEPT_FAILED`.
    pub name: &'a str,
    /// What happened, never including secrets or payloads.
    pub message: &'a str,
}

/// Publishes events (and metrics) somewhere; built from a
/// `telemetry.exporters.<name>` entry.
pub trait Exporter: Send + Sync + 'static {
    /// Publishes one event; must not block for long.
    fn export(&self, event: &Event<'_>);

    /// Starts what the exporter runs on its own (an HTTP endpoint, a push
    /// loop), inside the engine's runtime, before any binding starts. Tasks
    /// it spawns end when the engine stops accepting or shuts down (the
    /// shutdown signal is at hand when the exporter is built).
    fn start(&self) -> Result<(), StartError> {
        Ok(())
    }
}

type ActiveExporters = RwLock<Vec<(u64, Arc<dyn Exporter>)>>;

static ACTIVE: ActiveExporters = RwLock::new(Vec::new());
static NEXT_ENGINE: AtomicU64 = AtomicU64::new(1);

/// Exporters of a running engine stay active until this is dropped.
#[derive(Debug)]
pub(crate) struct ActiveGuard(u64);

/// A fresh engine id for [`Events::for_engine`] and [`activate`].
pub(crate) fn next_engine_id() -> u64 {
    NEXT_ENGINE.fetch_add(1, Ordering::Relaxed)
}

pub(crate) fn activate(id: u64, exporters: Vec<Arc<dyn Exporter>>) -> ActiveGuard {
    let mut active = ACTIVE
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    active.extend(exporters.into_iter().map(|exporter| (id, exporter)));
    ActiveGuard(id)
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let mut active = ACTIVE
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        active.retain(|(id, _)| *id != self.0);
    }
}

/// A `tracing` layer that hands telemetry events to the running engines' exporters.
#[derive(Debug, Clone, Copy, Default)]
pub struct EventLayer;

impl<S: Subscriber> Layer<S> for EventLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _cx: Context<'_, S>) {
        if event.metadata().target() != EVENT_TARGET {
            return;
        }
        let active = ACTIVE
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if active.is_empty() {
            return;
        }
        let mut fields = EventFields::default();
        event.record(&mut fields);
        let exported = Event {
            timestamp: SystemTime::now(),
            level: *event.metadata().level(),
            namespace: &fields.namespace,
            component: &fields.component,
            name: &fields.name,
            message: &fields.message,
        };
        for (engine, exporter) in active.iter() {
            if fields.engine == 0 || fields.engine == *engine {
                exporter.export(&exported);
            }
        }
    }
}

#[derive(Default)]
struct EventFields {
    engine: u64,
    namespace: String,
    component: String,
    name: String,
    message: String,
}

impl Visit for EventFields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "engine" {
            self.engine = value;
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "event" {
            self.name = value.to_owned();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let slot = match field.name() {
            "namespace" => &mut self.namespace,
            "component" => &mut self.component,
            "message" => &mut self.message,
            "event" => &mut self.name,
            _ => return,
        };
        *slot = format!("{value:?}");
    }
}
