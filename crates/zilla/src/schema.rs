//! `zilla schema`: prints the JSON Schema of `zilla.yaml` for every plugin
//! linked into this host, for editors (yaml-language-server) and CI checks.
//!
//! The document is assembled by the engine from the parts the plugin crates
//! register (`zilla_engine::schema`); this host only prints it, so a host
//! built with a third-party binding prints that binding's part too.

use std::io::Write;
use std::process::ExitCode;

/// Prints the schema as pretty JSON on stdout.
pub(crate) fn main() -> ExitCode {
    // `{:#}` is serde_json's pretty form.
    let text = format!("{:#}", zilla_engine::schema::document());
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`zilla schema | head`) is the reader's choice, not a failure.
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("zilla: cannot write the schema: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every first-party type describes its configuration: none is left to
    /// the envelope's checks alone.
    #[test]
    fn every_linked_type_has_a_part() {
        assert_eq!(zilla_engine::schema::missing(), Vec::new());
    }

    #[test]
    fn every_first_party_type_is_in_the_schema() {
        let document = zilla_engine::schema::document();
        for plugin in crate::FIRST_PARTY_PLUGINS {
            let (family, name) = plugin.split_once(':').unwrap();
            let types = match family {
                "model" => &document["definitions"]["model"]["then"]["enum"],
                _ => &document["definitions"][family]["properties"]["type"]["enum"],
            };
            assert!(
                types.as_array().unwrap().iter().any(|t| t == name),
                "{plugin} missing from the schema"
            );
        }
    }
}
