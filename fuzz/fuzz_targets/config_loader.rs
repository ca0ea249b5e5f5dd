//! Feeds arbitrary text to the configuration loader, as `zilla start -c` reads
//! a file: YAML parsing, `${{env.NAME}}` expressions, the envelope, and every
//! linked binding's options (tcp, mqtt). It must report errors, never panic.
//! Plugins that reach outside the process at build time (vaults reading
//! files, catalogs fetching schemas, guards fetching keys) are not linked.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zilla_binding_mqtt as _;
use zilla_binding_tcp as _;
use zilla_engine::Engine;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| (name == "PORT").then(|| "7183".to_owned());
    let _ = Engine::from_yaml(text).env(env).build();
});
