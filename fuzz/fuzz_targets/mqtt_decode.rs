//! Feeds arbitrary bytes to the MQTT decoder as both protocol versions, in
//! arbitrary chunks, as the server does (with the conformance checks a
//! client's packets get) and as the upstream side does: it must never panic,
//! and every packet it accepts must encode again.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use zilla_binding_mqtt::codec::{self, Version};

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    'versions: for (version, from_client) in [
        (Version::V4, true),
        (Version::V5, true),
        (Version::V4, false),
        (Version::V5, false),
    ] {
        let _ = codec::connect_version(data);
        let mut buf = BytesMut::new();
        let chunk = usize::from(split).max(1);
        for piece in data.chunks(chunk) {
            buf.extend_from_slice(piece);
            loop {
                let read = if from_client {
                    codec::read_from_client
                } else {
                    codec::read
                };
                match read(&mut buf, version, 64 * 1024) {
                    Ok(Some(packet)) => {
                        let mut out = BytesMut::new();
                        let _ = codec::write(&packet, version, &mut out);
                    }
                    Ok(None) => break,
                    // Refused: the connection would close; the next reading.
                    Err(_) => continue 'versions,
                }
            }
        }
    }
});
