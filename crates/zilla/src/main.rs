//! `zilla`: run a `zilla.yaml` (`zilla start -c zilla.yaml`), or print the version.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    zilla::cli::main()
}
