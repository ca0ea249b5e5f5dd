//! Feeds arbitrary text to the AsyncAPI reader (2.6 and 3.0 documents, local
//! `$ref`s, channels as topic filters): it must report errors, never panic,
//! and never loop on cyclic references.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zilla_binding_asyncapi::spec;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = spec::parse(text);
    }
});
