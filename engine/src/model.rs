//! Models: validators built once from a schema, applied to each payload.

use std::fmt;

/// Why a payload does not conform; `path` points into the payload, never
/// repeating the payload itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Where in the payload the problem is (e.g. a JSON pointer), if known.
    pub path: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{path}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for ValidationError {}

/// A model instance, e.g. a compiled JSON Schema.
pub trait Model: Send + Sync + 'static {
    /// Checks `payload` without copying it.
    fn validate(&self, payload: &[u8]) -> Result<(), ValidationError>;
}
