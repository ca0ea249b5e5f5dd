//! Configuration errors: each names where it is, and they are reported together.

use std::fmt;

/// One problem in a configuration, located by its dotted path and, when the
/// YAML source is known, by its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending node, e.g. `bindings.north_tcp_server.options.port`.
    pub path: String,
    /// 1-based line in the source file, when the configuration came from YAML text.
    pub line: Option<usize>,
    /// What is wrong and, where it helps, what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one configuration; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// Where the configuration came from (a file path, or `<string>`).
    pub source: String,
    /// The problems, in the order they were found.
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// Whether any error's rendered text contains `needle`; handy in tests.
    pub fn mentions(&self, needle: &str) -> bool {
        self.errors.iter().any(|e| e.to_string().contains(needle))
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.errors.len();
        let noun = if count == 1 { "error" } else { "errors" };
        write!(f, "{}: {count} configuration {noun}", self.source)?;
        for error in &self.errors {
            write!(f, "\n  {}: {error}", self.source)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A plugin's build failed; what went wrong has already been recorded in the
/// build context, so this marker carries nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildError(pub(crate) ());

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("build failed; see the recorded configuration errors")
    }
}

impl std::error::Error for BuildError {}
