//! Feeds arbitrary bytes to the MQTT server as one client connection, through
//! the whole path a connection takes (CONNECT decoding, admission, the session
//! state machine with its routes, flow control and topic aliases, its end), in
//! front of two simulated brokers that answer everything: it must never panic.
//! The first byte picks the chunk size and the brokers' version; seed inputs
//! start with a CONNECT after it.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    zilla_binding_mqtt::fuzzing::server_session(data);
});
