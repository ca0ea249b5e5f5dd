//! [`StartError`]: why something the engine starts (a binding, an exporter)
//! could not start.
//!
//! It stands apart from [`binding`](crate::binding) so that telemetry, whose
//! exporters also start, need not import the binding module that imports it.

/// Why a binding (or an exporter) could not start, e.g. its port is taken.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StartError {
    /// What failed, e.g. `cannot listen on 0.0.0.0:7183`.
    pub message: String,
    /// The underlying cause.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StartError {
    /// A start failure described by `message`, caused by `source`.
    pub fn new(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}
