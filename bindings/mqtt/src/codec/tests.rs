//! The codec's framing, flags and packet tests.
use super::*;

fn decode(bytes: &[u8], version: Version) -> Result<Option<Packet>, CodecError> {
    let mut buf = BytesMut::from(bytes);
    read(&mut buf, version, 1024)
}

#[test]
fn incomplete_input_needs_more_bytes() {
    assert_eq!(decode(&[0x30], Version::V5), Ok(None));
    assert_eq!(decode(&[0x30, 0x80], Version::V5), Ok(None));
    assert_eq!(decode(&[0x30, 0x05, 0x00], Version::V5), Ok(None));
}

#[test]
fn a_disconnect_with_a_reason_and_no_properties_takes_the_short_form() {
    // A reason code without a property length means no properties.
    let expected = Packet::Disconnect(Disconnect {
        reason_code: DisconnectReasonCode::DisconnectWithWillMessage,
        properties: None,
    });
    assert_eq!(
        decode(&[0xE0, 0x01, 0x04], Version::V5),
        Ok(Some(expected.clone()))
    );
    assert_eq!(
        decode(&[0xE0, 0x02, 0x04, 0x00], Version::V5),
        Ok(Some(expected.clone()))
    );
    let mut out = BytesMut::new();
    write(&expected, Version::V5, &mut out).unwrap();
    assert_eq!(&out[..], [0xE0, 0x01, 0x04]);
    let normal = Packet::Disconnect(Disconnect {
        reason_code: DisconnectReasonCode::NormalDisconnection,
        properties: None,
    });
    out.clear();
    write(&normal, Version::V5, &mut out).unwrap();
    assert_eq!(&out[..], [0xE0, 0x00]);
    assert!(
        decode(&[0xE0, 0x01, 0x05], Version::V5).is_err(),
        "0x05 is no reason"
    );
}

#[test]
fn the_first_byte_table_agrees_with_the_flag_checks() {
    for byte in 0..=255u8 {
        for version in [Version::V4, Version::V5] {
            let valid = VALID_FIRST_BYTE[usize::from(version == Version::V5)][usize::from(byte)];
            assert_eq!(
                valid,
                check_flags(byte, version).is_ok(),
                "{byte:#04X} {version:?}"
            );
        }
    }
}

/// The remaining length as the specification writes its decoder (1.5.5),
/// byte by byte, against the fixed header's shortcut for short lengths.
#[test]
fn fixed_header_shortcut_agrees_with_the_specification_decoder() {
    let reference = |buf: &[u8]| -> Result<Option<(usize, usize)>, ()> {
        let (mut value, mut multiplier) = (0usize, 1usize);
        for (index, &byte) in buf.iter().skip(1).take(4).enumerate() {
            value += usize::from(byte & 0x7F) * multiplier;
            multiplier *= 128;
            if byte & 0x80 == 0 {
                return if index > 0 && byte == 0 {
                    Err(())
                } else {
                    Ok(Some((index + 2, value)))
                };
            }
        }
        if buf.len() >= 5 {
            Err(())
        } else {
            Ok(None)
        }
    };
    let interesting = [0x00, 0x01, 0x7F, 0x80, 0x81, 0xFF];
    for &second in &interesting {
        for &third in &interesting {
            for &fourth in &interesting {
                for len in 1..=5 {
                    let buf = &[0x30, second, third, fourth, 0x01][..len];
                    let ours = fixed_header(buf)
                        .map(|h| h.map(|h| (h.header_len, h.remaining_len)))
                        .map_err(|_| ());
                    assert_eq!(ours, reference(buf), "{buf:02X?}");
                }
            }
        }
    }
}

#[test]
fn malformed_headers_have_reason_codes() {
    let bad_length = decode(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], Version::V5).unwrap_err();
    assert_eq!(bad_length.reason, DisconnectReasonCode::MalformedPacket);
    let qos3 = decode(&[0x36, 0x00], Version::V4).unwrap_err();
    assert_eq!(qos3.reason, DisconnectReasonCode::MalformedPacket);
    let subscribe_flags = decode(&[0x80, 0x00], Version::V5).unwrap_err();
    assert!(subscribe_flags.message.contains("reserved flags"));
    let too_large = decode(&[0x30, 0xFF, 0x7F], Version::V5).unwrap_err();
    assert_eq!(too_large.reason, DisconnectReasonCode::PacketTooLarge);
}

#[test]
fn wildcard_publish_topic_is_invalid() {
    // PUBLISH QoS 0, topic "a/+" and an empty property block.
    let error = decode(
        &[0x30, 0x06, 0x00, 0x03, b'a', b'/', b'+', 0x00],
        Version::V5,
    )
    .unwrap_err();
    assert_eq!(error.reason, DisconnectReasonCode::TopicNameInvalid);
}

#[test]
fn invalid_utf8_topic_is_malformed() {
    let error = decode(&[0x30, 0x05, 0x00, 0x02, 0xC3, 0x28, 0x00], Version::V5).unwrap_err();
    assert_eq!(error.reason, DisconnectReasonCode::MalformedPacket);
}

#[test]
fn v4_publish_round_trips_through_the_v5_model() {
    let publish = v4::Publish::new("a/b", rumqttc::mqttbytes::QoS::AtLeastOnce, b"hi".to_vec());
    let mut publish = publish;
    publish.pkid = 7;
    let mut wire = BytesMut::new();
    publish.write(&mut wire).unwrap();
    let original = wire.clone();
    let packet = read(&mut wire, Version::V4, 1024).unwrap().unwrap();
    let mut again = BytesMut::new();
    write(&packet, Version::V4, &mut again).unwrap();
    assert_eq!(again, original);
}

#[test]
fn raw_disconnects_decode() {
    let mut out = BytesMut::new();
    write_disconnect(0x87, Some("no"), &mut out);
    match Packet::read(&mut out, None).unwrap() {
        Packet::Disconnect(d) => {
            assert_eq!(d.reason_code, DisconnectReasonCode::NotAuthorized);
            assert_eq!(d.properties.unwrap().reason_string.as_deref(), Some("no"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn connect_version_is_detected() {
    let v5 = [0x10, 0x0A, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05];
    assert_eq!(connect_version(&v5), Ok(Some(Ok(Version::V5))));
    let v31 = [
        0x10, 0x0A, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03,
    ];
    assert_eq!(connect_version(&v31), Ok(Some(Err(3))));
    assert!(connect_version(&[0x30, 0x00]).is_err());
    assert_eq!(connect_version(&[0x10]), Ok(None));
}
