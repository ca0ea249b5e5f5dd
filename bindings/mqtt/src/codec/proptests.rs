//! Properties of the codec over generated packets, in both versions:
//!
//! - encode then decode is the identity for every valid packet a client may
//!   send (and for the acknowledgements the proxy sends back);
//! - every mutation of a valid packet (bytes flipped, inserted, removed,
//!   cut) is either decoded to a packet that is valid in turn (it encodes,
//!   and decodes to itself) or refused with a reason code, never a panic.

use bytes::Bytes;
use mqtt_bytes_v5::{
    Connect, ConnectProperties, Disconnect, DisconnectProperties, DisconnectReasonCode, Filter,
    LastWill, LastWillProperties, Login, Packet, PingReq, PubAck, PubAckProperties, PubAckReason,
    PubComp, PubCompReason, PubRec, PubRecReason, PubRel, PubRelReason, Publish, PublishProperties,
    QoS, RetainForwardRule, SubAck, Subscribe, SubscribeProperties, SubscribeReasonCode, UnsubAck,
    UnsubAckReason, Unsubscribe, UnsubscribeProperties,
};
use proptest::prelude::*;

use super::*;
use crate::credentials;

/// Topic names: levels of letters, digits and non-ASCII text, no wildcards.
fn topic_name() -> impl Strategy<Value = String> {
    "[a-z0-9é€😀]{1,6}(/[a-z0-9é€😀]{0,6}){0,3}"
}

/// Topic filters: a name, with `+` levels or a trailing `#`.
fn topic_filter() -> impl Strategy<Value = String> {
    (topic_name(), 0..3u8).prop_map(|(name, form)| match form {
        0 => name,
        1 => format!("+/{name}"),
        _ => format!("{name}/#"),
    })
}

fn text() -> impl Strategy<Value = String> {
    "[ -~é€\n\t]{0,12}"
}

fn user_properties() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((text(), text()), 0..3)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn pkid() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn binary() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..16).prop_map(Bytes::from)
}

fn publish(version: Version) -> BoxedStrategy<Packet> {
    let properties = (
        prop::option::of(0..=1u8),
        prop::option::of(any::<u32>()),
        prop::option::of(1..=u16::MAX),
        prop::option::of(topic_name()),
        prop::option::of(binary()),
        user_properties(),
        prop::option::of(text()),
    )
        .prop_map(
            |(format, expiry, alias, response, correlation, user, content)| PublishProperties {
                payload_format_indicator: format,
                message_expiry_interval: expiry,
                topic_alias: alias,
                response_topic: response,
                correlation_data: correlation,
                user_properties: user,
                subscription_identifiers: Vec::new(),
                content_type: content,
            },
        );
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        pkid(),
        binary(),
        prop::option::of(properties),
    )
        .prop_map(
            move |(qos, dup, retain, topic, pkid, payload, properties)| {
                Packet::Publish(Publish {
                    dup: dup && qos != QoS::AtMostOnce,
                    qos,
                    retain,
                    topic,
                    pkid: if qos == QoS::AtMostOnce { 0 } else { pkid },
                    payload,
                    properties: properties.filter(|_| version == Version::V5).and_then(|p| {
                        // An empty block encodes as none.
                        let empty = p.payload_format_indicator.is_none()
                            && p.message_expiry_interval.is_none()
                            && p.topic_alias.is_none()
                            && p.response_topic.is_none()
                            && p.correlation_data.is_none()
                            && p.user_properties.is_empty()
                            && p.content_type.is_none();
                        (!empty).then_some(p)
                    }),
                })
            },
        )
        .boxed()
}

fn subscribe(version: Version) -> BoxedStrategy<Packet> {
    let filter = (topic_filter(), qos(), any::<bool>(), any::<bool>(), 0..3u8).prop_map(
        move |(path, qos, nolocal, preserve_retain, rule)| {
            let v5 = version == Version::V5;
            Filter {
                path,
                qos,
                nolocal: nolocal && v5,
                preserve_retain: preserve_retain && v5,
                retain_forward_rule: match rule {
                    1 if v5 => RetainForwardRule::OnNewSubscribe,
                    2 if v5 => RetainForwardRule::Never,
                    _ => RetainForwardRule::OnEverySubscribe,
                },
            }
        },
    );
    let properties = (prop::option::of(1..=268_435_455usize), user_properties())
        .prop_filter("not empty", |(id, user)| id.is_some() || !user.is_empty())
        .prop_map(|(id, user_properties)| SubscribeProperties {
            id,
            user_properties,
        });
    (
        pkid(),
        prop::collection::vec(filter, 1..4),
        prop::option::of(properties),
    )
        .prop_map(move |(pkid, filters, properties)| {
            Packet::Subscribe(Subscribe {
                pkid,
                filters,
                properties: properties.filter(|_| version == Version::V5),
            })
        })
        .boxed()
}

fn unsubscribe(version: Version) -> BoxedStrategy<Packet> {
    (
        pkid(),
        prop::collection::vec(topic_filter(), 1..4),
        user_properties(),
    )
        .prop_map(move |(pkid, filters, user)| {
            Packet::Unsubscribe(Unsubscribe {
                pkid,
                filters,
                properties: (version == Version::V5 && !user.is_empty()).then_some(
                    UnsubscribeProperties {
                        user_properties: user,
                    },
                ),
            })
        })
        .boxed()
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP, with their reasons in 5.0.
fn acks(version: Version) -> BoxedStrategy<Packet> {
    let v5 = version == Version::V5;
    let properties = (prop::option::of(text()), user_properties())
        .prop_filter("not empty", |(reason, user)| {
            reason.is_some() || !user.is_empty()
        })
        .prop_map(|(reason_string, user_properties)| PubAckProperties {
            reason_string,
            user_properties,
        });
    (pkid(), 0..9usize, 0..4u8, prop::option::of(properties))
        .prop_map(move |(pkid, reason, kind, properties)| {
            let properties = properties.filter(|_| v5);
            let reason = if v5 { reason } else { 0 };
            let ack_reasons = [
                PubAckReason::Success,
                PubAckReason::NoMatchingSubscribers,
                PubAckReason::UnspecifiedError,
                PubAckReason::ImplementationSpecificError,
                PubAckReason::NotAuthorized,
                PubAckReason::TopicNameInvalid,
                PubAckReason::PacketIdentifierInUse,
                PubAckReason::QuotaExceeded,
                PubAckReason::PayloadFormatInvalid,
            ];
            let rec_reasons = [
                PubRecReason::Success,
                PubRecReason::NoMatchingSubscribers,
                PubRecReason::UnspecifiedError,
                PubRecReason::ImplementationSpecificError,
                PubRecReason::NotAuthorized,
                PubRecReason::TopicNameInvalid,
                PubRecReason::PacketIdentifierInUse,
                PubRecReason::QuotaExceeded,
                PubRecReason::PayloadFormatInvalid,
            ];
            let found = reason % 2 == 1;
            match kind {
                0 => Packet::PubAck(PubAck {
                    pkid,
                    reason: ack_reasons[reason],
                    properties,
                }),
                1 => Packet::PubRec(PubRec {
                    pkid,
                    reason: rec_reasons[reason],
                    properties: properties.map(|p| mqtt_bytes_v5::PubRecProperties {
                        reason_string: p.reason_string,
                        user_properties: p.user_properties,
                    }),
                }),
                2 => Packet::PubRel(PubRel {
                    pkid,
                    reason: if found {
                        PubRelReason::PacketIdentifierNotFound
                    } else {
                        PubRelReason::Success
                    },
                    properties: properties.map(|p| mqtt_bytes_v5::PubRelProperties {
                        reason_string: p.reason_string,
                        user_properties: p.user_properties,
                    }),
                }),
                _ => Packet::PubComp(PubComp {
                    pkid,
                    reason: if found {
                        PubCompReason::PacketIdentifierNotFound
                    } else {
                        PubCompReason::Success
                    },
                    properties: properties.map(|p| mqtt_bytes_v5::PubCompProperties {
                        reason_string: p.reason_string,
                        user_properties: p.user_properties,
                    }),
                }),
            }
        })
        .boxed()
}

fn disconnect(version: Version) -> BoxedStrategy<Packet> {
    let v5 = version == Version::V5;
    let properties = (
        prop::option::of(any::<u32>()),
        prop::option::of(text()),
        user_properties(),
    )
        .prop_filter("not empty", |(expiry, reason, user)| {
            expiry.is_some() || reason.is_some() || !user.is_empty()
        })
        .prop_map(
            |(session_expiry_interval, reason_string, user_properties)| DisconnectProperties {
                session_expiry_interval,
                reason_string,
                user_properties,
                server_reference: None,
            },
        );
    (
        prop_oneof![
            Just(DisconnectReasonCode::NormalDisconnection),
            Just(DisconnectReasonCode::DisconnectWithWillMessage),
            Just(DisconnectReasonCode::UnspecifiedError),
            Just(DisconnectReasonCode::QuotaExceeded),
        ],
        prop::option::of(properties),
    )
        .prop_map(move |(reason_code, properties)| {
            Packet::Disconnect(if v5 {
                Disconnect {
                    reason_code,
                    properties,
                }
            } else {
                Disconnect {
                    reason_code: DisconnectReasonCode::NormalDisconnection,
                    properties: None,
                }
            })
        })
        .boxed()
}

fn connect(version: Version) -> BoxedStrategy<Packet> {
    let v5 = version == Version::V5;
    let properties = (
        prop::option::of(any::<u32>()),
        prop::option::of(1..=u16::MAX),
        prop::option::of(1..=u32::MAX),
        prop::option::of(any::<u16>()),
        prop::option::of(0..=1u8),
        prop::option::of(0..=1u8),
        user_properties(),
    )
        .prop_map(
            |(expiry, receive, packet, aliases, response, problem, user)| ConnectProperties {
                session_expiry_interval: expiry,
                receive_maximum: receive,
                max_packet_size: packet,
                topic_alias_max: aliases,
                request_response_info: response,
                request_problem_info: problem,
                user_properties: user,
                authentication_method: None,
                authentication_data: None,
            },
        );
    let will_properties = (
        prop::option::of(any::<u32>()),
        prop::option::of(text()),
        user_properties(),
    )
        .prop_map(|(delay, content, user)| LastWillProperties {
            delay_interval: delay,
            payload_format_indicator: None,
            message_expiry_interval: None,
            content_type: content,
            response_topic: None,
            correlation_data: None,
            user_properties: user,
        });
    let will = (
        topic_name(),
        binary(),
        qos(),
        any::<bool>(),
        prop::option::of(will_properties),
    )
        .prop_map(move |(topic, message, qos, retain, properties)| LastWill {
            topic: Bytes::from(topic.into_bytes()),
            message,
            qos,
            retain,
            properties: properties.filter(|_| v5).filter(|p| {
                p.delay_interval.is_some()
                    || p.content_type.is_some()
                    || !p.user_properties.is_empty()
            }),
        });
    let login =
        ("[a-z]{1,8}", "[ -~]{1,8}").prop_map(|(username, password)| Login { username, password });
    (
        "[a-zA-Z0-9é-]{1,12}",
        any::<u16>(),
        any::<bool>(),
        prop::option::of(properties),
        prop::option::of(will),
        prop::option::of(login),
    )
        .prop_map(
            move |(client_id, keep_alive, clean_start, properties, will, login)| {
                let properties = if v5 {
                    properties.filter(|p| *p != ConnectProperties::new())
                } else {
                    // 3.1.1 says "keep the session" as the largest expiry.
                    (!clean_start).then(|| ConnectProperties {
                        session_expiry_interval: Some(u32::MAX),
                        ..ConnectProperties::new()
                    })
                };
                Packet::Connect(
                    Connect {
                        keep_alive,
                        client_id,
                        clean_start,
                        properties,
                    },
                    will,
                    login,
                )
            },
        )
        .boxed()
}

/// Any packet a client may send, valid for `version`.
fn client_packet(version: Version) -> BoxedStrategy<Packet> {
    prop_oneof![
        4 => publish(version),
        2 => subscribe(version),
        1 => unsubscribe(version),
        2 => acks(version),
        1 => Just(Packet::PingReq(PingReq)),
        1 => disconnect(version),
        2 => connect(version),
    ]
    .boxed()
}

/// SUBACK and UNSUBACK, which the proxy writes itself (merged).
fn server_ack(version: Version) -> BoxedStrategy<Packet> {
    let v5 = version == Version::V5;
    (pkid(), prop::collection::vec(0..4u8, 1..4), any::<bool>())
        .prop_map(move |(pkid, codes, unsuback)| {
            if unsuback {
                return Packet::UnsubAck(UnsubAck {
                    pkid,
                    reasons: if v5 {
                        codes
                            .iter()
                            .map(|c| match c {
                                0 => UnsubAckReason::Success,
                                1 => UnsubAckReason::NoSubscriptionExisted,
                                2 => UnsubAckReason::NotAuthorized,
                                _ => UnsubAckReason::TopicFilterInvalid,
                            })
                            .collect()
                    } else {
                        Vec::new()
                    },
                    properties: None,
                });
            }
            Packet::SubAck(SubAck {
                pkid,
                return_codes: codes
                    .iter()
                    .map(|c| match c {
                        0 => SubscribeReasonCode::Success(QoS::AtMostOnce),
                        1 => SubscribeReasonCode::Success(QoS::ExactlyOnce),
                        2 if v5 => SubscribeReasonCode::NotAuthorized,
                        _ => SubscribeReasonCode::Unspecified,
                    })
                    .collect(),
                properties: None,
            })
        })
        .boxed()
}

fn encode(packet: &Packet, version: Version) -> BytesMut {
    let mut out = BytesMut::new();
    write(packet, version, &mut out).expect("a valid packet encodes");
    out
}

/// Decodes every packet of `buf` as a server reads a client, CONNECTs with
/// their binary passwords as the driver reads them; stops at the first
/// refusal, which must carry a reason code of the error range.
fn decode_all(mut buf: BytesMut, version: Version) -> Vec<Packet> {
    let mut packets = Vec::new();
    loop {
        let connect = buf.first().is_some_and(|&b| b == 0x10);
        let next = if connect {
            credentials::read_connect(&mut buf, version, usize::MAX).map(|c| {
                c.map(|c| {
                    let login = c.login.and_then(|l| {
                        Some(Login {
                            username: l.username,
                            password: String::from_utf8(l.password.to_vec()).ok()?,
                        })
                    });
                    Packet::Connect(c.connect, c.will, login)
                })
            })
        } else {
            read_from_client(&mut buf, version, usize::MAX)
        };
        match next {
            Ok(Some(packet)) => packets.push(packet),
            Ok(None) => return packets,
            Err(error) => {
                assert!(error.reason as u8 >= 0x80, "refused with {error}");
                return packets;
            }
        }
    }
}

/// A client packet and an acknowledgement of the proxy's, with their version.
fn versioned() -> impl Strategy<Value = (Version, Packet, Packet)> {
    prop_oneof![
        (client_packet(Version::V4), server_ack(Version::V4)).prop_map(|(packet, ack)| (
            Version::V4,
            packet,
            ack
        )),
        (client_packet(Version::V5), server_ack(Version::V5)).prop_map(|(packet, ack)| (
            Version::V5,
            packet,
            ack
        )),
    ]
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1024,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn encode_then_decode_is_the_identity((version, packet, ack) in versioned()) {
        let decoded = decode_all(encode(&packet, version), version);
        prop_assert_eq!(decoded, vec![packet]);
        let mut buf = encode(&ack, version);
        prop_assert_eq!(read(&mut buf, version, usize::MAX).unwrap(), Some(ack));
    }

    #[test]
    fn a_mutated_packet_is_decoded_validly_or_refused(
        (version, packet, _) in versioned(),
        mutations in prop::collection::vec((0..4u8, any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = encode(&packet, version).to_vec();
        for (kind, index, byte) in mutations {
            let at = index.index(bytes.len().max(1));
            match kind {
                0 if !bytes.is_empty() => bytes[at] ^= byte.max(1),
                1 => bytes.insert(at.min(bytes.len()), byte),
                2 if !bytes.is_empty() => {
                    bytes.remove(at);
                }
                _ => bytes.truncate(at),
            }
        }
        // Decoded packets are valid: they encode, and decode to themselves.
        for decoded in decode_all(BytesMut::from(&bytes[..]), version) {
            let again = decode_all(encode(&decoded, version), version);
            prop_assert_eq!(again, vec![decoded]);
        }
    }
}
