//! The engine's one built-in plugin, the `stdout` exporter: its factory and
//! its part of the configuration schema. Apart from the registry and the
//! schema, which both serve every plugin, so neither imports the other; its
//! type lives with the rest of telemetry, which knows nothing of factories.

use std::sync::Arc;

use crate::registry::{ExporterFactory, PluginContext};
use crate::schema::{no_options, Family, SchemaPart};
use crate::telemetry::{Exporter, StdoutExporter};
use crate::BuildError;

fn build_stdout(cx: &mut PluginContext<'_>) -> Result<Arc<dyn Exporter>, BuildError> {
    cx.no_options()?;
    Ok(Arc::new(StdoutExporter))
}

crate::register_exporter!(ExporterFactory {
    type_name: "stdout",
    build: build_stdout,
});

crate::register_schema!(SchemaPart {
    family: Family::Exporter,
    type_name: "stdout",
    part: no_options,
});
