//! Which metrics a configuration turns on, and where: `telemetry.metrics` at
//! the top level and `bindings.<name>.telemetry.metrics`, names or `*`
//! globs, checked against the registered metrics at build time.
//!
//! As in Zilla, a binding records a metric when the top-level list names it
//! and the binding's own list does too; a binding that lists nothing records
//! nothing, and a configuration without `telemetry.metrics` costs nothing on
//! the message path (no block is even allocated).

use std::sync::Arc;

use super::family::{Block, Family};
use super::{registered_metrics, Metric, Metrics};
use crate::config::{quoted_list, ZillaConfig};
use crate::context::{BindingContext, BuildState, PluginContext};

/// What a build knows of metrics: the registry its bindings register in,
/// and the metrics the top-level list enables.
pub(crate) struct MetricsBuild {
    pub(crate) registry: Metrics,
    pub(crate) enabled: Vec<&'static Metric>,
    /// `telemetry.attributes`, for exporters that attach them (otlp).
    pub(crate) attributes: Vec<(String, String)>,
}

impl MetricsBuild {
    pub(crate) fn new(registry: Metrics) -> Self {
        Self {
            registry,
            enabled: Vec::new(),
            attributes: Vec::new(),
        }
    }
}

/// Zilla's metrics of protocols no binding here speaks (http, grpc, mcp):
/// a Zilla configuration naming them is accepted unchanged, and nothing
/// records them.
const ZILLA_ELSEWHERE: &[&str] = &[
    "http.active.requests",
    "http.duration",
    "http.request.size",
    "http.response.size",
    "grpc.active.requests",
    "grpc.duration",
    "grpc.request.size",
    "grpc.response.size",
    "grpc.requests.per.rpc",
    "grpc.responses.per.rpc",
    "mcp.initialize",
    "mcp.initialize.duration",
    "mcp.tools.list",
    "mcp.tools.list.duration",
    "mcp.tools.call",
    "mcp.tools.call.duration",
    "mcp.prompts.list",
    "mcp.prompts.list.duration",
    "mcp.prompts.get",
    "mcp.prompts.get.duration",
    "mcp.resources.list",
    "mcp.resources.list.duration",
    "mcp.resources.read",
    "mcp.resources.read.duration",
];

/// Whether `name` matches `pattern`, where `*` stands for any run of
/// characters (dots included: `stream.*` is every stream metric).
pub(crate) fn glob_matches(pattern: &str, name: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == name;
    };
    let Some(mut remaining) = name.strip_prefix(first) else {
        return false;
    };
    let mut parts: Vec<&str> = rest.split('*').collect();
    let last = parts.pop().unwrap_or_default();
    for part in parts {
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

/// Checks every metric name and glob of the configuration against the
/// registered metrics, and records which ones the top-level list enables.
pub(crate) fn configure(config: &ZillaConfig, state: &mut BuildState) {
    let known = registered_metrics();
    let names_something = |pattern: &str| {
        known.iter().any(|m| glob_matches(pattern, m.name))
            || ZILLA_ELSEWHERE
                .iter()
                .any(|name| glob_matches(pattern, name))
    };
    let unknown = |pattern: &str| {
        let names: Vec<&str> = known.iter().map(|m| m.name).collect();
        format!(
            "no metric is named `{pattern}`; the metrics are {}",
            quoted_list(&names)
        )
    };
    let mut enabled: Vec<&'static Metric> = Vec::new();
    if let Some(telemetry) = &config.telemetry {
        state.metrics.attributes = telemetry
            .attributes
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        for (index, pattern) in telemetry.metrics.iter().enumerate() {
            let matching: Vec<_> = known
                .iter()
                .filter(|m| glob_matches(pattern, m.name))
                .collect();
            if !names_something(pattern) {
                state.record(format!("telemetry.metrics[{index}]"), unknown(pattern));
            }
            for metric in matching {
                if !enabled.iter().any(|m| m.name == metric.name) {
                    enabled.push(metric);
                }
            }
        }
    }
    for (name, binding) in &config.bindings {
        let Some(telemetry) = &binding.telemetry else {
            continue;
        };
        for (index, pattern) in telemetry.metrics.iter().enumerate() {
            if !names_something(pattern) {
                state.record(
                    format!("bindings.{name}.telemetry.metrics[{index}]"),
                    unknown(pattern),
                );
            }
        }
    }
    enabled.sort_unstable_by_key(|m| m.name);
    state.metrics.enabled = enabled;
}

/// The metrics one binding records, and where it registers their blocks.
#[derive(Debug, Clone)]
pub struct BindingMetrics {
    registry: Metrics,
    namespace: Arc<str>,
    binding: Arc<str>,
    enabled: Vec<&'static Metric>,
}

impl BindingMetrics {
    /// Binding `binding` of `namespace` recording `enabled`, registering in
    /// `registry`: what [`BindingContext::metrics`] gives a binding being
    /// built, for tests and embedders that make bindings by hand.
    pub fn new(
        registry: &Metrics,
        namespace: &str,
        binding: &str,
        enabled: Vec<&'static Metric>,
    ) -> Self {
        Self {
            registry: registry.clone(),
            namespace: namespace.into(),
            binding: binding.into(),
            enabled,
        }
    }

    /// Whether the binding records `metric`.
    pub fn records(&self, metric: &Metric) -> bool {
        self.enabled.iter().any(|m| m.name == metric.name)
    }

    /// The metrics the binding records, sorted by name.
    pub fn enabled(&self) -> &[&'static Metric] {
        &self.enabled
    }

    /// A family of blocks `B` for the metrics of `group` this binding
    /// records; `None` when it records none of them, so that counting costs
    /// nothing at all.
    pub fn family<B: Block>(
        &self,
        group: &'static [Metric],
        shape: B::Shape,
    ) -> Option<Arc<Family<B>>> {
        let enabled: Vec<&'static Metric> = self
            .enabled
            .iter()
            .filter(|m| group.iter().any(|g| g.name == m.name))
            .copied()
            .collect();
        if enabled.is_empty() {
            return None;
        }
        Some(Family::new(
            &self.registry,
            self.namespace.clone(),
            self.binding.clone(),
            enabled,
            shape,
        ))
    }
}

impl BindingContext<'_> {
    /// The metrics this binding records: those both `telemetry.metrics`
    /// and the binding's own `telemetry.metrics` name.
    pub fn metrics(&self) -> BindingMetrics {
        let patterns: &[String] = self
            .config()
            .telemetry
            .as_ref()
            .map(|t| t.metrics.as_slice())
            .unwrap_or_default();
        let enabled = self
            .state
            .metrics
            .enabled
            .iter()
            .filter(|m| patterns.iter().any(|p| glob_matches(p, m.name)))
            .copied()
            .collect();
        BindingMetrics {
            registry: self.state.metrics.registry.clone(),
            namespace: self.state.namespace.clone(),
            binding: self.name().into(),
            enabled,
        }
    }
}

impl PluginContext<'_> {
    /// The engine's metrics, for exporters to read.
    pub fn metrics_registry(&self) -> Metrics {
        self.state.metrics.registry.clone()
    }

    /// `telemetry.attributes`: name and value of each, as configured.
    pub fn telemetry_attributes(&self) -> &[(String, String)] {
        &self.state.metrics.attributes
    }
}

impl crate::Engine {
    /// The metrics of this engine (shared with the engines that succeed it
    /// by reloads).
    pub fn metrics(&self) -> Metrics {
        self.handover().metrics
    }
}

#[cfg(test)]
mod tests {
    use super::glob_matches;

    #[test]
    fn globs_match_any_run_of_characters() {
        assert!(glob_matches("stream.*", "stream.opens.received"));
        assert!(glob_matches(
            "stream.opens.received",
            "stream.opens.received"
        ));
        assert!(glob_matches("*.received", "stream.opens.received"));
        assert!(glob_matches(
            "mqtt.*.active",
            "mqtt.upstream.sessions.active"
        ));
        assert!(glob_matches("*", "mqtt.takeovers"));
        assert!(!glob_matches("stream.*", "mqtt.sessions.active"));
        assert!(!glob_matches("stream.opens", "stream.opens.received"));
        assert!(!glob_matches("mqtt.*.active", "mqtt.sessions"));
        assert!(
            !glob_matches("a*aa", "aa"),
            "the suffix may not overlap the prefix"
        );
    }
}
