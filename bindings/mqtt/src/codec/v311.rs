//! MQTT 3.1.1 packets in the MQTT 5 model, and back: rumqttc's
//! `mqttbytes::v4` reads and writes the bytes, and nothing 3.1.1 can express
//! is lost in the translation.

use bytes::BytesMut;
use mqtt_bytes_v5::{
    ConnAck, Connect, ConnectReturnCode, Disconnect, DisconnectReasonCode, LastWill, Login, Packet,
    PingReq, PingResp, PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason, PubRel,
    PubRelReason, Publish, QoS, SubAck, Subscribe, SubscribeReasonCode, UnsubAck, Unsubscribe,
};
use rumqttc::mqttbytes::v4;

fn qos_from_v4(qos: rumqttc::mqttbytes::QoS) -> QoS {
    match qos {
        rumqttc::mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
        rumqttc::mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
        rumqttc::mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

fn qos_to_v4(qos: QoS) -> rumqttc::mqttbytes::QoS {
    match qos {
        QoS::AtMostOnce => rumqttc::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::mqttbytes::QoS::ExactlyOnce,
    }
}

/// A 3.1.1 packet in the MQTT 5 model: nothing 3.1.1 can express is lost.
pub(super) fn from_v4(packet: v4::Packet) -> Packet {
    match packet {
        v4::Packet::Connect(connect) => {
            let will = connect.last_will.map(|will| LastWill {
                topic: will.topic.into_bytes().into(),
                message: will.message,
                qos: qos_from_v4(will.qos),
                retain: will.retain,
                properties: None,
            });
            let login = connect.login.map(|login| Login {
                username: login.username,
                password: login.password,
            });
            // 3.1.1 sessions without clean session last until the next clean
            // one; MQTT 5 says so with the largest session expiry.
            let properties = (!connect.clean_session).then(|| mqtt_bytes_v5::ConnectProperties {
                session_expiry_interval: Some(u32::MAX),
                receive_maximum: None,
                max_packet_size: None,
                topic_alias_max: None,
                request_response_info: None,
                request_problem_info: None,
                user_properties: Vec::new(),
                authentication_method: None,
                authentication_data: None,
            });
            Packet::Connect(
                Connect {
                    keep_alive: connect.keep_alive,
                    client_id: connect.client_id,
                    clean_start: connect.clean_session,
                    properties,
                },
                will,
                login,
            )
        }
        v4::Packet::Publish(publish) => Packet::Publish(Publish {
            dup: publish.dup,
            qos: qos_from_v4(publish.qos),
            retain: publish.retain,
            topic: publish.topic,
            pkid: publish.pkid,
            payload: publish.payload,
            properties: None,
        }),
        v4::Packet::PubAck(ack) => Packet::PubAck(PubAck {
            pkid: ack.pkid,
            reason: PubAckReason::Success,
            properties: None,
        }),
        v4::Packet::PubRec(ack) => Packet::PubRec(PubRec {
            pkid: ack.pkid,
            reason: PubRecReason::Success,
            properties: None,
        }),
        v4::Packet::PubRel(ack) => Packet::PubRel(PubRel {
            pkid: ack.pkid,
            reason: PubRelReason::Success,
            properties: None,
        }),
        v4::Packet::PubComp(ack) => Packet::PubComp(PubComp {
            pkid: ack.pkid,
            reason: PubCompReason::Success,
            properties: None,
        }),
        v4::Packet::Subscribe(subscribe) => Packet::Subscribe(Subscribe {
            pkid: subscribe.pkid,
            filters: subscribe
                .filters
                .into_iter()
                .map(|filter| mqtt_bytes_v5::Filter {
                    path: filter.path,
                    qos: qos_from_v4(filter.qos),
                    nolocal: false,
                    preserve_retain: false,
                    retain_forward_rule: mqtt_bytes_v5::RetainForwardRule::OnEverySubscribe,
                })
                .collect(),
            properties: None,
        }),
        v4::Packet::Unsubscribe(unsubscribe) => Packet::Unsubscribe(Unsubscribe {
            pkid: unsubscribe.pkid,
            filters: unsubscribe.topics,
            properties: None,
        }),
        v4::Packet::PingReq => Packet::PingReq(PingReq),
        v4::Packet::PingResp => Packet::PingResp(PingResp),
        v4::Packet::Disconnect => Packet::Disconnect(Disconnect {
            reason_code: DisconnectReasonCode::NormalDisconnection,
            properties: None,
        }),
        v4::Packet::ConnAck(ack) => Packet::ConnAck(ConnAck {
            session_present: ack.session_present,
            code: match ack.code {
                v4::ConnectReturnCode::Success => ConnectReturnCode::Success,
                v4::ConnectReturnCode::RefusedProtocolVersion => {
                    ConnectReturnCode::RefusedProtocolVersion
                }
                v4::ConnectReturnCode::BadClientId => ConnectReturnCode::BadClientId,
                v4::ConnectReturnCode::ServiceUnavailable => ConnectReturnCode::ServiceUnavailable,
                v4::ConnectReturnCode::BadUserNamePassword => {
                    ConnectReturnCode::BadUserNamePassword
                }
                v4::ConnectReturnCode::NotAuthorized => ConnectReturnCode::NotAuthorized,
            },
            properties: None,
        }),
        v4::Packet::SubAck(ack) => Packet::SubAck(SubAck {
            pkid: ack.pkid,
            return_codes: ack
                .return_codes
                .into_iter()
                .map(|code| match code {
                    v4::SubscribeReasonCode::Success(qos) => {
                        SubscribeReasonCode::Success(qos_from_v4(qos))
                    }
                    v4::SubscribeReasonCode::Failure => SubscribeReasonCode::Unspecified,
                })
                .collect(),
            properties: None,
        }),
        v4::Packet::UnsubAck(ack) => Packet::UnsubAck(UnsubAck {
            pkid: ack.pkid,
            reasons: Vec::new(),
            properties: None,
        }),
    }
}

/// The 3.1.1 CONNACK return code for an MQTT 5 reason code.
pub fn connack_code_v4(code: ConnectReturnCode) -> v4::ConnectReturnCode {
    use ConnectReturnCode as C;
    match code {
        C::Success => v4::ConnectReturnCode::Success,
        C::RefusedProtocolVersion | C::UnsupportedProtocolVersion => {
            v4::ConnectReturnCode::RefusedProtocolVersion
        }
        C::BadClientId | C::ClientIdentifierNotValid => v4::ConnectReturnCode::BadClientId,
        C::BadUserNamePassword | C::BadAuthenticationMethod => {
            v4::ConnectReturnCode::BadUserNamePassword
        }
        C::NotAuthorized | C::Banned => v4::ConnectReturnCode::NotAuthorized,
        _ => v4::ConnectReturnCode::ServiceUnavailable,
    }
}

/// The 3.1.1 form of an MQTT 5 packet; `None` when 3.1.1 has none (a server's
/// DISCONNECT, DISCONNECT with will, AUTH): the caller closes the connection.
pub(super) fn to_v4(packet: &Packet) -> Option<v4::Packet> {
    Some(match packet {
        Packet::ConnAck(ack) => v4::Packet::ConnAck(v4::ConnAck {
            session_present: ack.session_present,
            code: connack_code_v4(ack.code),
        }),
        Packet::Publish(publish) => v4::Packet::Publish(v4::Publish {
            dup: publish.dup,
            qos: qos_to_v4(publish.qos),
            retain: publish.retain,
            topic: publish.topic.clone(),
            pkid: publish.pkid,
            payload: publish.payload.clone(),
        }),
        Packet::PubAck(ack) => v4::Packet::PubAck(v4::PubAck { pkid: ack.pkid }),
        Packet::PubRec(ack) => v4::Packet::PubRec(v4::PubRec { pkid: ack.pkid }),
        Packet::PubRel(ack) => v4::Packet::PubRel(v4::PubRel { pkid: ack.pkid }),
        Packet::PubComp(ack) => v4::Packet::PubComp(v4::PubComp { pkid: ack.pkid }),
        Packet::SubAck(ack) => v4::Packet::SubAck(v4::SubAck {
            pkid: ack.pkid,
            return_codes: ack
                .return_codes
                .iter()
                .map(|code| match code {
                    SubscribeReasonCode::Success(qos) => {
                        v4::SubscribeReasonCode::Success(qos_to_v4(*qos))
                    }
                    _ => v4::SubscribeReasonCode::Failure,
                })
                .collect(),
        }),
        Packet::UnsubAck(ack) => v4::Packet::UnsubAck(v4::UnsubAck { pkid: ack.pkid }),
        Packet::PingResp(_) => v4::Packet::PingResp,
        Packet::PingReq(_) => v4::Packet::PingReq,
        Packet::Connect(connect, will, login) => v4::Packet::Connect(v4::Connect {
            protocol: rumqttc::mqttbytes::Protocol::V4,
            keep_alive: connect.keep_alive,
            client_id: connect.client_id.clone(),
            clean_session: connect.clean_start,
            last_will: will.as_ref().map(|will| v4::LastWill {
                topic: String::from_utf8_lossy(&will.topic).into_owned(),
                message: will.message.clone(),
                qos: qos_to_v4(will.qos),
                retain: will.retain,
            }),
            login: login.as_ref().map(|login| v4::Login {
                username: login.username.clone(),
                password: login.password.clone(),
            }),
        }),
        Packet::Subscribe(subscribe) => v4::Packet::Subscribe(v4::Subscribe {
            pkid: subscribe.pkid,
            filters: subscribe
                .filters
                .iter()
                .map(|filter| v4::SubscribeFilter {
                    path: filter.path.clone(),
                    qos: qos_to_v4(filter.qos),
                })
                .collect(),
        }),
        Packet::Unsubscribe(unsubscribe) => v4::Packet::Unsubscribe(v4::Unsubscribe {
            pkid: unsubscribe.pkid,
            topics: unsubscribe.filters.clone(),
        }),
        // 3.1.1 cannot ask for the will on DISCONNECT; closing without one does.
        Packet::Disconnect(disconnect)
            if disconnect.reason_code == DisconnectReasonCode::NormalDisconnection =>
        {
            v4::Packet::Disconnect
        }
        _ => return None,
    })
}

pub(super) fn write_v4(
    packet: &v4::Packet,
    out: &mut BytesMut,
) -> Result<(), rumqttc::mqttbytes::Error> {
    match packet {
        v4::Packet::ConnAck(p) => p.write(out),
        v4::Packet::Publish(p) => p.write(out),
        v4::Packet::PubAck(p) => p.write(out),
        v4::Packet::PubRec(p) => p.write(out),
        v4::Packet::PubRel(p) => p.write(out),
        v4::Packet::PubComp(p) => p.write(out),
        v4::Packet::SubAck(p) => p.write(out),
        v4::Packet::UnsubAck(p) => p.write(out),
        v4::Packet::PingResp => v4::PingResp.write(out),
        v4::Packet::PingReq => v4::PingReq.write(out),
        v4::Packet::Connect(p) => p.write(out),
        v4::Packet::Subscribe(p) => p.write(out),
        v4::Packet::Unsubscribe(p) => p.write(out),
        v4::Packet::Disconnect => v4::Disconnect.write(out),
    }
    .map(|_| ())
}
