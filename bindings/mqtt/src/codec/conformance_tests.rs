//! The conformance checks, table-driven: each case is the bytes a client
//! sends, the versions it is sent in, and what the proxy answers (decoded,
//! or refused with a reason code and a message that says why). The rows of
//! `docs/conformance.md` point here.

use mqtt_bytes_v5::DisconnectReasonCode as Reason;

use super::*;

/// A frame: `byte1`, the remaining length, `body`.
pub(crate) fn frame(byte1: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![byte1];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A length-prefixed string or binary field.
pub(crate) fn s(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// A property block: its length, then `bytes` (under 128 bytes).
pub(crate) fn props(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![bytes.len() as u8];
    out.extend_from_slice(bytes);
    out
}

/// A CONNECT of `version` with `flags`, CONNECT `properties` (5.0 only) and
/// the payload `fields` after the client id `c1`.
pub(crate) fn connect(version: Version, flags: u8, properties: &[u8], fields: &[u8]) -> Vec<u8> {
    let level = match version {
        Version::V4 => 4,
        Version::V5 => 5,
    };
    let mut body = s(b"MQTT");
    body.extend_from_slice(&[level, flags, 0, 30]);
    if version == Version::V5 {
        body.extend(props(properties));
    }
    body.extend(s(b"c1"));
    body.extend_from_slice(fields);
    frame(0x10, &body)
}

/// A PUBLISH to `topic` at `qos` (packet id 7), with `properties` in 5.0.
pub(crate) fn publish(version: Version, qos: u8, topic: &[u8], properties: &[u8]) -> Vec<u8> {
    let mut body = s(topic);
    if qos > 0 {
        body.extend_from_slice(&[0, 7]);
    }
    if version == Version::V5 {
        body.extend(props(properties));
    }
    body.extend_from_slice(b"payload");
    frame(0x30 | qos << 1, &body)
}

/// A SUBSCRIBE (packet id `pkid`) of `filters`, each with its options byte.
pub(crate) fn subscribe(
    version: Version,
    pkid: u16,
    properties: &[u8],
    filters: &[(&[u8], u8)],
) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    if version == Version::V5 {
        body.extend(props(properties));
    }
    for (filter, options) in filters {
        body.extend(s(filter));
        body.push(*options);
    }
    frame(0x82, &body)
}

/// Both versions, or one.
const BOTH: &[Version] = &[Version::V4, Version::V5];
const V5: &[Version] = &[Version::V5];
const V4: &[Version] = &[Version::V4];

/// What a case expects: decoded, or refused with this reason and message.
enum Expect {
    Decoded,
    Refused(Reason, &'static str),
}
use Expect::{Decoded, Refused};

/// One case: name, versions, bytes, expectation.
type Case = (&'static str, &'static [Version], Vec<u8>, Expect);

fn run(cases: Vec<Case>) {
    for (name, versions, bytes, expect) in cases {
        for &version in versions {
            let mut buf = BytesMut::from(&bytes[..]);
            let got = read_as_a_session(&mut buf, version);
            match (&expect, got) {
                (Decoded, Ok(Some(_))) => assert!(buf.is_empty(), "{name} {version:?}: left bytes"),
                (Refused(reason, message), Err(error)) => {
                    assert_eq!(
                        error.reason, *reason,
                        "{name} {version:?}: {}",
                        error.message
                    );
                    assert!(
                        error.message.contains(message),
                        "{name} {version:?}: {:?} does not say {message:?}",
                        error.message
                    );
                }
                (Decoded, other) => panic!("{name} {version:?}: expected a packet, got {other:?}"),
                (Refused(reason, _), other) => {
                    panic!("{name} {version:?}: expected {reason:?}, got {other:?}")
                }
            }
        }
    }
}

/// Reads a client's packet the way a session does: AUTH apart
/// ([`take_auth`]), every other packet as [`read_from_client`] does.
fn read_as_a_session(buf: &mut BytesMut, version: Version) -> Result<Option<()>, CodecError> {
    let Some(header) = next_frame(buf, version, 1024)? else {
        return Ok(None);
    };
    match take_auth(buf, &header, version) {
        Some(auth) => auth.map(|_| Some(())),
        None => take_packet(buf, &header, version, true).map(|_| Some(())),
    }
}

const MALFORMED: Reason = Reason::MalformedPacket;
const PROTOCOL: Reason = Reason::ProtocolError;

#[test]
#[rustfmt::skip]
fn connect_flags_and_fields() {
    let will = [s(b"wills/c1"), s(b"gone")].concat();
    let will_v5 = [props(&[]), s(b"wills/c1"), s(b"gone")].concat();
    run(vec![
        ("plain", V4, connect(Version::V4, 0x02, &[], &[]), Decoded),
        ("plain", V5, connect(Version::V5, 0x02, &[], &[]), Decoded),
        ("reserved flag", V4, connect(Version::V4, 0x03, &[], &[]), Refused(MALFORMED, "reserved flag")),
        ("reserved flag", V5, connect(Version::V5, 0x03, &[], &[]), Refused(MALFORMED, "reserved flag")),
        ("will QoS without will", V4, connect(Version::V4, 0x0A, &[], &[]), Refused(MALFORMED, "without the will flag")),
        ("will retain without will", V5, connect(Version::V5, 0x22, &[], &[]), Refused(MALFORMED, "without the will flag")),
        ("will QoS 3", V4, connect(Version::V4, 0x1E, &[], &will), Refused(MALFORMED, "will QoS 3")),
        ("will QoS 3", V5, connect(Version::V5, 0x1E, &[], &will_v5), Refused(MALFORMED, "will QoS 3")),
        ("will", V4, connect(Version::V4, 0x2E, &[], &will), Decoded),
        ("password without user name", V4, connect(Version::V4, 0x42, &[], &s(b"pw")), Refused(MALFORMED, "without the user name flag")),
        // MQTT 5 allows it (3.1.2.9).
        ("password without user name", V5, connect(Version::V5, 0x42, &[], &s(b"pw")), Decoded),
        ("user name and password", V4, connect(Version::V4, 0xC2, &[], &[s(b"u"), s(b"pw")].concat()), Decoded),
        ("user name flag without a user name", V4, connect(Version::V4, 0x82, &[], &[]), Refused(MALFORMED, "runs past the end")),
        ("bytes after the last field", V4, connect(Version::V4, 0x02, &[], &[0]), Refused(MALFORMED, "after its last field")),
        ("bytes after the last field", V5, connect(Version::V5, 0x02, &[], &[0, 0]), Refused(MALFORMED, "after its last field")),
        ("user name not UTF-8", V4, connect(Version::V4, 0x82, &[], &s(&[0xC3, 0x28])), Refused(MALFORMED, "the user name is not valid UTF-8")),
        ("will topic with U+0000", V5, connect(Version::V5, 0x06, &[], &[props(&[]), s(b"w\0"), s(b"x")].concat()), Refused(MALFORMED, "the will topic contains U+0000")),
        ("wildcard will topic", V4, connect(Version::V4, 0x06, &[], &[s(b"w/#"), s(b"x")].concat()), Refused(Reason::TopicNameInvalid, "will topic")),
        ("protocol level of the other version", V5, connect(Version::V4, 0x02, &[], &[]), Refused(PROTOCOL, "another protocol version")),
    ]);
}

#[test]
#[rustfmt::skip]
fn connect_strings() {
    let id = |id: &[u8], version| {
        let mut body = s(b"MQTT");
        body.extend_from_slice(&[if version == Version::V5 { 5 } else { 4 }, 0x02, 0, 30]);
        if version == Version::V5 {
            body.push(0);
        }
        body.extend(s(id));
        frame(0x10, &body)
    };
    for version in [Version::V4, Version::V5] {
        let only = if version == Version::V5 { V5 } else { V4 };
        run(vec![
            ("client id with U+0000", only, id(b"c\0", version), Refused(MALFORMED, "client identifier contains U+0000")),
            ("client id with U+FFFF", only, id("c\u{FFFF}".as_bytes(), version), Refused(MALFORMED, "non-character U+FFFF")),
            ("client id not UTF-8", only, id(&[0xC3, 0x28], version), Refused(MALFORMED, "not valid UTF-8")),
            ("client id with U+FEFF", only, id("\u{FEFF}c".as_bytes(), version), Decoded),
        ]);
    }
}

#[test]
#[rustfmt::skip]
fn connect_properties() {
    let v5 = |properties: &[u8]| connect(Version::V5, 0x02, properties, &[]);
    let will = |properties: &[u8], payload: &[u8]| {
        connect(
            Version::V5,
            0x06,
            &[],
            &[props(properties), s(b"wills/c1"), s(payload)].concat(),
        )
    };
    run(vec![
        ("every CONNECT property once", V5, v5(&[0x11, 0, 0, 0, 60, 0x21, 0, 10, 0x27, 0, 0, 4, 0, 0x22, 0, 5, 0x19, 1, 0x17, 0, 0x26, 0, 1, b'k', 0, 1, b'v', 0x26, 0, 1, b'k', 0, 1, b'w',]), Decoded),
        ("Session Expiry Interval twice", V5, v5(&[0x11, 0, 0, 0, 60, 0x11, 0, 0, 0, 1]), Refused(PROTOCOL, "Session Expiry Interval appears more than once")),
        ("Topic Alias Maximum twice", V5, v5(&[0x22, 0, 1, 0x22, 0, 2]), Refused(PROTOCOL, "Topic Alias Maximum appears more than once")),
        ("Receive Maximum twice", V5, v5(&[0x21, 0, 1, 0x21, 0, 2]), Refused(PROTOCOL, "more than once")),
        ("Receive Maximum 0", V5, v5(&[0x21, 0, 0]), Refused(PROTOCOL, "Receive Maximum of 0")),
        ("Maximum Packet Size 0", V5, v5(&[0x27, 0, 0, 0, 0]), Refused(PROTOCOL, "Maximum Packet Size of 0")),
        ("Request Problem Information 2", V5, v5(&[0x17, 2]), Refused(PROTOCOL, "Request Problem Information of 2")),
        ("Request Response Information 2", V5, v5(&[0x19, 2]), Refused(PROTOCOL, "Request Response Information of 2")),
        ("Authentication Data without a method", V5, v5(&[0x16, 0, 1, 9]), Refused(PROTOCOL, "without an Authentication Method")),
        ("a Topic Alias in CONNECT", V5, v5(&[0x23, 0, 1]), Refused(MALFORMED, "property 0x23 is not valid in CONNECT")),
        ("an unknown property", V5, v5(&[0x7F, 0]), Refused(MALFORMED, "property 0x7F is not valid")),
        ("a user property with U+0000", V5, v5(&[0x26, 0, 1, 0, 0, 1, b'v']), Refused(MALFORMED, "user property name contains U+0000")),
        ("a user property value with U+FFFE", V5, v5(&[[0x26, 0, 1, b'k', 0, 3].as_slice(), "\u{FFFE}".as_bytes()].concat()), Refused(MALFORMED, "non-character")),
        ("a property block past the end", V5, v5(&[0x11, 0, 0]), Refused(MALFORMED, "runs past the end")),
        ("will properties", V5, will(&[0x18, 0, 0, 0, 5, 0x01, 1, 0x03, 0, 1, b't', 0x08, 0, 1, b'r', 0x09, 0, 1, 0xFF,], b"gone"), Decoded),
        ("Content Type twice in the will", V5, will(&[0x03, 0, 1, b't', 0x03, 0, 1, b'u'], b"x"), Refused(PROTOCOL, "Content Type appears more than once in the will")),
        ("a will declared UTF-8 that is not", V5, will(&[0x01, 1], &[0xFF]), Refused(Reason::PayloadFormatInvalid, "declared UTF-8")),
        ("a will Response Topic with a wildcard", V5, will(&[0x08, 0, 3, b'r', b'/', b'#'], b"x"), Refused(PROTOCOL, "Response Topic")),
        ("a Subscription Identifier in the will", V5, will(&[0x0B, 1], b"x"), Refused(MALFORMED, "not valid in the will")),
    ]);
}

#[test]
#[rustfmt::skip]
fn publish_topics_ids_and_properties() {
    let p4 = |qos, topic: &[u8]| publish(Version::V4, qos, topic, &[]);
    let p5 = |qos, topic: &[u8], properties: &[u8]| publish(Version::V5, qos, topic, properties);
    let mut zero_id = p5(1, b"a", &[]);
    zero_id[6] = 0; // the packet id's low byte, after 0x32, length, "a"
    let mut zero_id_v4 = p4(1, b"a");
    zero_id_v4[6] = 0;
    run(vec![
        ("plain", V4, p4(1, b"a/b"), Decoded),
        ("plain", V5, p5(2, b"a/b", &[]), Decoded),
        ("U+0000 in the topic", V4, p4(0, b"a\0b"), Refused(MALFORMED, "PUBLISH topic contains U+0000")),
        ("U+0000 in the topic", V5, p5(0, b"a\0b", &[]), Refused(MALFORMED, "PUBLISH topic contains U+0000")),
        ("a non-character in the topic", V5, p5(0, "a\u{FDD0}".as_bytes(), &[]), Refused(MALFORMED, "non-character U+FDD0")),
        ("an empty topic without alias", V4, p4(0, b""), Refused(PROTOCOL, "empty topic and no topic alias")),
        ("an empty topic without alias", V5, p5(0, b"", &[]), Refused(PROTOCOL, "empty topic and no topic alias")),
        ("an empty topic with an alias", V5, p5(0, b"", &[0x23, 0, 1]), Decoded),
        ("a wildcard topic", V4, p4(0, b"a/+"), Refused(Reason::TopicNameInvalid, "contains a wildcard")),
        ("a wildcard topic", V5, p5(0, b"a/#", &[]), Refused(Reason::TopicNameInvalid, "contains a wildcard")),
        ("QoS 1 with packet id 0", V4, zero_id_v4, Refused(PROTOCOL, "packet identifier 0")),
        ("QoS 1 with packet id 0", V5, zero_id, Refused(PROTOCOL, "packet identifier 0")),
        ("Content Type twice", V5, p5(0, b"a", &[0x03, 0, 1, b't', 0x03, 0, 1, b't']), Refused(PROTOCOL, "Content Type appears more than once in PUBLISH")),
        ("Message Expiry Interval twice", V5, p5(0, b"a", &[0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 1]), Refused(PROTOCOL, "more than once")),
        ("a Subscription Identifier from a client", V5, p5(0, b"a", &[0x0B, 1]), Refused(PROTOCOL, "Subscription Identifier in a PUBLISH from a client")),
        ("Topic Alias 0", V5, p5(0, b"a", &[0x23, 0, 0]), Refused(Reason::TopicAliasInvalid, "Topic Alias 0")),
        ("Payload Format Indicator 2", V5, p5(0, b"a", &[0x01, 2]), Refused(PROTOCOL, "Payload Format Indicator of 2")),
        ("a Response Topic with a wildcard", V5, p5(0, b"a", &[0x08, 0, 1, b'+']), Refused(PROTOCOL, "Response Topic")),
        ("an empty Response Topic", V5, p5(0, b"a", &[0x08, 0, 0]), Refused(PROTOCOL, "Response Topic")),
        ("a Session Expiry Interval in PUBLISH", V5, p5(0, b"a", &[0x11, 0, 0, 0, 1]), Refused(MALFORMED, "property 0x11 is not valid in PUBLISH")),
        ("binary Correlation Data and user properties", V5, p5(1, b"a", &[0x09, 0, 2, 0x00, 0xFF, 0x26, 0, 1, b'k', 0, 1, b'v', 0x26, 0, 1, b'k', 0, 1, b'v',]), Decoded),
        ("a user property with U+0000", V5, p5(0, b"a", &[0x26, 0, 1, b'k', 0, 1, 0]), Refused(MALFORMED, "user property value contains U+0000")),
        ("a Content Type not UTF-8", V5, p5(0, b"a", &[0x03, 0, 1, 0xFF]), Refused(MALFORMED, "Content Type is not valid UTF-8")),
        ("a Response Topic not UTF-8", V5, p5(0, b"a", &[0x08, 0, 1, 0xFF]), Refused(MALFORMED, "Response Topic is not valid UTF-8")),
        ("a property identifier missing its value", V5, p5(0, b"a", &[0x02, 0, 0]), Refused(MALFORMED, "runs past the end")),
        ("a property length past the end", V5, frame(0x30, &[0, 1, b'a', 0x7F]), Refused(MALFORMED, "runs past the end")),
        ("a property length not in the fewest bytes", V5, frame(0x30, &[0, 1, b'a', 0x80, 0x00]), Refused(MALFORMED, "fewest bytes")),
    ]);
}

#[test]
#[rustfmt::skip]
fn acknowledgements_in_every_short_form() {
    run(vec![
        ("PUBACK, packet id only", BOTH, frame(0x40, &[0, 1]), Decoded),
        ("PUBACK with a reason", V5, frame(0x40, &[0, 1, 0x10]), Decoded),
        ("PUBACK with a reason and no properties", V5, frame(0x40, &[0, 1, 0x87, 0]), Decoded),
        ("PUBACK with a reason string", V5, frame(0x40, &[0, 1, 0x80, 4, 0x1F, 0, 1, b'x']), Decoded),
        ("PUBACK with a reason string twice", V5, frame(0x40, &[0, 1, 0x80, 8, 0x1F, 0, 1, b'x', 0x1F, 0, 1, b'y']), Refused(PROTOCOL, "Reason String appears more than once in PUBACK")),
        ("PUBACK with an unknown reason", V5, frame(0x40, &[0, 1, 0x05]), Refused(MALFORMED, "PUBACK with reason code 0x05")),
        ("PUBACK with a topic alias", V5, frame(0x40, &[0, 1, 0, 3, 0x23, 0, 1]), Refused(MALFORMED, "not valid in PUBACK")),
        ("PUBACK with bytes after its properties", V5, frame(0x40, &[0, 1, 0, 0, 9]), Refused(MALFORMED, "after its last field")),
        ("PUBACK longer than 2 bytes", V4, frame(0x40, &[0, 1, 0]), Refused(MALFORMED, "after its last field")),
        ("PUBACK shorter than 2 bytes", BOTH, frame(0x40, &[0]), Refused(MALFORMED, "runs past the end")),
        ("PUBREC with a reason", V5, frame(0x50, &[0, 1, 0x80]), Decoded),
        ("PUBREL, packet id only", BOTH, frame(0x62, &[0, 1]), Decoded),
        ("PUBREL with a reason", V5, frame(0x62, &[0, 1, 0x92]), Decoded),
        ("PUBREL with a PUBACK reason", V5, frame(0x62, &[0, 1, 0x87]), Refused(MALFORMED, "PUBREL with reason code 0x87")),
        ("PUBCOMP with a reason and no properties", V5, frame(0x70, &[0, 1, 0x92, 0]), Decoded),
        ("PUBCOMP with a PUBACK reason", V5, frame(0x70, &[0, 1, 0x10]), Refused(MALFORMED, "PUBCOMP with reason code 0x10")),
    ]);
}

#[test]
#[rustfmt::skip]
fn subscribe_and_unsubscribe() {
    let sub = |version, pkid, properties: &[u8], filters: &[(&[u8], u8)]| {
        subscribe(version, pkid, properties, filters)
    };
    run(vec![
        ("plain", V4, sub(Version::V4, 1, &[], &[(b"a/#", 1), (b"b", 2)]), Decoded),
        ("every option", V5, sub(Version::V5, 1, &[0x0B, 0xFF, 0xFF, 0xFF, 0x7F, 0x26, 0, 1, b'k', 0, 1, b'v'], &[(b"a/#", 0b0010_1110)]), Decoded),
        ("packet id 0", V4, sub(Version::V4, 0, &[], &[(b"a", 0)]), Refused(PROTOCOL, "SUBSCRIBE with packet identifier 0")),
        ("packet id 0", V5, sub(Version::V5, 0, &[], &[(b"a", 0)]), Refused(PROTOCOL, "SUBSCRIBE with packet identifier 0")),
        ("no filters", V4, sub(Version::V4, 1, &[], &[]), Refused(PROTOCOL, "SUBSCRIBE without topic filters")),
        ("no filters", V5, sub(Version::V5, 1, &[], &[]), Refused(PROTOCOL, "SUBSCRIBE without topic filters")),
        ("reserved option bits", V4, sub(Version::V4, 1, &[], &[(b"a", 0x04)]), Refused(MALFORMED, "reserved bits")),
        ("reserved option bits", V5, sub(Version::V5, 1, &[], &[(b"a", 0x40)]), Refused(MALFORMED, "reserved bits")),
        ("reserved option bits", V5, sub(Version::V5, 1, &[], &[(b"a", 0x80)]), Refused(MALFORMED, "reserved bits")),
        ("QoS 3", V4, sub(Version::V4, 1, &[], &[(b"a", 3)]), Refused(MALFORMED, "reserved bits")),
        ("QoS 3", V5, sub(Version::V5, 1, &[], &[(b"a", 3)]), Refused(PROTOCOL, "maximum QoS 3")),
        ("Retain Handling 3", V5, sub(Version::V5, 1, &[], &[(b"a", 0x30)]), Refused(PROTOCOL, "Retain Handling 3")),
        ("No Local on a shared subscription", V5, sub(Version::V5, 1, &[], &[(b"$share/g/a", 0x04)]), Refused(PROTOCOL, "No Local on a shared subscription")),
        ("No Local on a plain subscription", V5, sub(Version::V5, 1, &[], &[(b"a", 0x04)]), Decoded),
        ("Subscription Identifier 0", V5, sub(Version::V5, 1, &[0x0B, 0], &[(b"a", 0)]), Refused(PROTOCOL, "Subscription Identifier of 0")),
        ("Subscription Identifier twice", V5, sub(Version::V5, 1, &[0x0B, 1, 0x0B, 2], &[(b"a", 0)]), Refused(PROTOCOL, "more than once")),
        ("a Content Type in SUBSCRIBE", V5, sub(Version::V5, 1, &[0x03, 0, 0], &[(b"a", 0)]), Refused(MALFORMED, "not valid in SUBSCRIBE")),
        ("a filter with U+0000", V4, sub(Version::V4, 1, &[], &[(b"a\0", 0)]), Refused(MALFORMED, "topic filter contains U+0000")),
        ("a filter with U+0000", V5, sub(Version::V5, 1, &[], &[(b"a\0", 0)]), Refused(MALFORMED, "topic filter contains U+0000")),
        ("a filter without options", V5, frame(0x82, &[0, 1, 0, 0, 1, b'a']), Refused(MALFORMED, "runs past the end")),
        ("UNSUBSCRIBE", V4, frame(0xA2, &[[0, 1].as_slice(), &s(b"a")].concat()), Decoded),
        ("UNSUBSCRIBE", V5, frame(0xA2, &[[0, 1, 0].as_slice(), &s(b"a")].concat()), Decoded),
        ("UNSUBSCRIBE packet id 0", V4, frame(0xA2, &[[0, 0].as_slice(), &s(b"a")].concat()), Refused(PROTOCOL, "UNSUBSCRIBE with packet identifier 0")),
        ("UNSUBSCRIBE packet id 0", V5, frame(0xA2, &[[0, 0, 0].as_slice(), &s(b"a")].concat()), Refused(PROTOCOL, "UNSUBSCRIBE with packet identifier 0")),
        ("UNSUBSCRIBE without filters", V4, frame(0xA2, &[0, 1]), Refused(PROTOCOL, "UNSUBSCRIBE without topic filters")),
        ("UNSUBSCRIBE without filters", V5, frame(0xA2, &[0, 1, 0]), Refused(PROTOCOL, "UNSUBSCRIBE without topic filters")),
        ("UNSUBSCRIBE with a Subscription Identifier", V5, frame(0xA2, &[[0, 1, 2, 0x0B, 1].as_slice(), &s(b"a")].concat()), Refused(MALFORMED, "not valid in UNSUBSCRIBE")),
        ("UNSUBSCRIBE of a filter with U+0000", V4, frame(0xA2, &[[0, 1].as_slice(), &s(b"\0")].concat()), Refused(MALFORMED, "U+0000")),
        ("UNSUBSCRIBE of a filter with U+0000", V5, frame(0xA2, &[[0, 1, 0].as_slice(), &s(b"\0")].concat()), Refused(MALFORMED, "U+0000")),
    ]);
}

#[test]
#[rustfmt::skip]
fn pings_disconnects_auth_and_server_packets() {
    run(vec![
        ("PINGREQ", BOTH, frame(0xC0, &[]), Decoded),
        ("PINGREQ with a body", BOTH, frame(0xC0, &[0]), Refused(MALFORMED, "PINGREQ has 1 bytes after")),
        ("DISCONNECT", BOTH, frame(0xE0, &[]), Decoded),
        ("DISCONNECT with a body", V4, frame(0xE0, &[0]), Refused(MALFORMED, "after its last field")),
        ("DISCONNECT with a reason only", V5, frame(0xE0, &[0x04]), Decoded),
        ("DISCONNECT with a reason and no properties", V5, frame(0xE0, &[0x04, 0]), Decoded),
        ("DISCONNECT with a session expiry", V5, frame(0xE0, &[0x00, 5, 0x11, 0, 0, 0, 9]), Decoded),
        ("DISCONNECT with an unknown reason", V5, frame(0xE0, &[0x05]), Refused(MALFORMED, "DISCONNECT with reason code 0x05")),
        ("DISCONNECT with a reason string twice", V5, frame(0xE0, &[0x00, 8, 0x1F, 0, 1, b'a', 0x1F, 0, 1, b'b']), Refused(PROTOCOL, "Reason String appears more than once in DISCONNECT")),
        ("DISCONNECT with a topic alias", V5, frame(0xE0, &[0x00, 3, 0x23, 0, 1]), Refused(MALFORMED, "not valid in DISCONNECT")),
        ("AUTH, short form", V5, frame(0xF0, &[]), Decoded),
        ("AUTH with a reason", V5, frame(0xF0, &[0x18]), Decoded),
        ("AUTH with a reason and no properties", V5, frame(0xF0, &[0x00, 0]), Decoded),
        ("AUTH with properties", V5, frame(0xF0, &[0x19, 5, 0x15, 0, 2, b'm', b'1']), Decoded),
        ("AUTH with method, data, reason string, user property", V5, frame(0xF0, &[0x19, 19, 0x15, 0, 1, b'm', 0x16, 0, 1, b'd', 0x1F, 0, 1, b'r', 0x26, 0, 1, b'k', 0, 1, b'v']), Decoded),
        ("AUTH with data and no method", V5, frame(0xF0, &[0x19, 4, 0x16, 0, 1, b'd']), Refused(PROTOCOL, "Authentication Data without an Authentication Method in AUTH")),
        ("AUTH with the method twice", V5, frame(0xF0, &[0x19, 8, 0x15, 0, 1, b'm', 0x15, 0, 1, b'n']), Refused(PROTOCOL, "Authentication Method appears more than once in AUTH")),
        ("AUTH with a topic alias", V5, frame(0xF0, &[0x19, 3, 0x23, 0, 1]), Refused(MALFORMED, "not valid in AUTH")),
        ("AUTH with a method that is not UTF-8", V5, frame(0xF0, &[0x19, 4, 0x15, 0, 1, 0xFF]), Refused(MALFORMED, "not valid UTF-8")),
        ("AUTH with bytes after its properties", V5, frame(0xF0, &[0x19, 0, 7]), Refused(MALFORMED, "after its last field")),
        ("AUTH with an unknown reason", V5, frame(0xF0, &[0x05]), Refused(MALFORMED, "AUTH with reason code 0x05")),
        ("AUTH with reserved flags", V5, frame(0xF1, &[]), Refused(MALFORMED, "reserved flags")),
        ("AUTH in 3.1.1", V4, frame(0xF0, &[]), Refused(MALFORMED, "reserved packet type 15")),
        ("CONNACK from a client", BOTH, frame(0x20, &[0, 0]), Refused(PROTOCOL, "unexpected packet from a client: CONNACK")),
        ("SUBACK from a client", BOTH, frame(0x90, &[0, 1, 0]), Refused(PROTOCOL, "SUBACK")),
        ("UNSUBACK from a client", BOTH, frame(0xB0, &[0, 1]), Refused(PROTOCOL, "UNSUBACK")),
        ("PINGRESP from a client", BOTH, frame(0xD0, &[]), Refused(PROTOCOL, "PINGRESP")),
        ("reserved packet type 0", BOTH, frame(0x00, &[]), Refused(MALFORMED, "reserved packet type 0")),
        ("PUBLISH QoS 0 with DUP", BOTH, frame(0x38, &[0, 1, b'a', 0]), Refused(MALFORMED, "QoS 0 with DUP set")),
        ("PUBREL with flags 0000", BOTH, frame(0x60, &[0, 1]), Refused(MALFORMED, "must be 0010")),
        ("SUBSCRIBE with flags 0000", BOTH, frame(0x80, &[0, 1, 0, 1, b'a', 0]), Refused(MALFORMED, "must be 0010")),
        ("UNSUBSCRIBE with flags 0000", BOTH, frame(0xA0, &[0, 1, 0, 1, b'a']), Refused(MALFORMED, "must be 0010")),
        ("DISCONNECT with flags", BOTH, frame(0xE1, &[]), Refused(MALFORMED, "must be 0000")),
        ("PINGREQ with flags", BOTH, frame(0xC8, &[]), Refused(MALFORMED, "must be 0000")),
        ("a remaining length not in the fewest bytes", BOTH, vec![0xC0, 0x80, 0x00], Refused(MALFORMED, "fewest bytes")),
    ]);
}

#[test]
fn maximum_packet_size_counts_the_whole_packet() {
    for version in [Version::V4, Version::V5] {
        // 1024 bytes in all: 3 bytes of fixed header and 1021 of body.
        let topic = vec![b'a'; 1021 - 2 - usize::from(version == Version::V5) - 7];
        let packet = publish(version, 0, &topic, &[]);
        assert_eq!(packet.len(), 1024);
        let mut buf = BytesMut::from(&packet[..]);
        assert!(read_from_client(&mut buf, version, 1024).unwrap().is_some());
        // One byte too many: refused from the header on, before the body.
        let mut buf = BytesMut::from(&packet[..3]);
        let error = read_from_client(&mut buf, version, 1023).unwrap_err();
        assert_eq!(error.reason, Reason::PacketTooLarge);
        assert!(error
            .message
            .contains("1024 bytes exceeds the maximum of 1023"));
    }
}

#[test]
fn packets_from_brokers_are_not_held_to_a_clients_rules() {
    // A SUBACK is what a broker sends; `read` takes it, `read_from_client` not.
    let suback = frame(0x90, &[0, 1, 0, 1]);
    let mut buf = BytesMut::from(&suback[..]);
    assert!(read(&mut buf, Version::V5, usize::MAX).unwrap().is_some());
    let mut buf = BytesMut::from(&suback[..]);
    assert!(read_from_client(&mut buf, Version::V5, usize::MAX).is_err());
}
