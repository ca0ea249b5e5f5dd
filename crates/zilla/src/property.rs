//! `-P NAME=VALUE` on the command line, shared by `zilla start` and the
//! commands that find a running host by its properties.

/// Reads one `NAME=VALUE`.
pub(crate) fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("expected NAME=VALUE, found `{text}`")),
    }
}
