//! Packets the session tests send and expect, built with every field the
//! tests do not care about at its neutral value.

use bytes::Bytes;
use mqtt_bytes_v5::{
    ConnAck, ConnAckProperties, Connect, ConnectProperties, ConnectReturnCode, Filter, Packet,
    Publish, QoS, RetainForwardRule, Subscribe,
};

use crate::session::admit;

/// A successful PUBREC for `pkid`.
pub(crate) fn pubrec(pkid: u16) -> Packet {
    pubrec_with(pkid, mqtt_bytes_v5::PubRecReason::Success)
}

pub(crate) fn pubrec_with(pkid: u16, reason: mqtt_bytes_v5::PubRecReason) -> Packet {
    Packet::PubRec(mqtt_bytes_v5::PubRec {
        pkid,
        reason,
        properties: None,
    })
}

/// A successful PUBREL for `pkid`.
pub(crate) fn pubrel(pkid: u16) -> Packet {
    Packet::PubRel(mqtt_bytes_v5::PubRel {
        pkid,
        reason: mqtt_bytes_v5::PubRelReason::Success,
        properties: None,
    })
}

/// A successful PUBCOMP for `pkid`.
pub(crate) fn pubcomp(pkid: u16) -> Packet {
    pubcomp_with(pkid, mqtt_bytes_v5::PubCompReason::Success)
}

pub(crate) fn pubcomp_with(pkid: u16, reason: mqtt_bytes_v5::PubCompReason) -> Packet {
    Packet::PubComp(mqtt_bytes_v5::PubComp {
        pkid,
        reason,
        properties: None,
    })
}

/// A successful PUBACK for `pkid`.
pub(crate) fn puback(pkid: u16) -> Packet {
    Packet::PubAck(mqtt_bytes_v5::PubAck {
        pkid,
        reason: mqtt_bytes_v5::PubAckReason::Success,
        properties: None,
    })
}

/// A CONNECT from client `id`: clean start, keep-alive 60 s, no properties.
pub(crate) fn connect(id: &str) -> Connect {
    Connect {
        keep_alive: 60,
        client_id: id.into(),
        clean_start: true,
        properties: None,
    }
}

/// CONNECT properties with every field unset.
pub(crate) fn connect_properties() -> ConnectProperties {
    ConnectProperties {
        session_expiry_interval: None,
        receive_maximum: None,
        max_packet_size: None,
        topic_alias_max: None,
        request_response_info: None,
        request_problem_info: None,
        user_properties: Vec::new(),
        authentication_method: None,
        authentication_data: None,
    }
}

/// A broker's successful CONNACK with `properties` (see [`broker_properties`]).
pub(crate) fn broker_ack(properties: Option<ConnAckProperties>) -> ConnAck {
    ConnAck {
        session_present: false,
        code: ConnectReturnCode::Success,
        properties,
    }
}

/// CONNACK properties with every field unset.
pub(crate) fn broker_properties() -> ConnAckProperties {
    admit::empty_connack_properties()
}

/// A publish to `topic` with packet id `pkid` (ignored for QoS 0).
pub(crate) fn publish(topic: &str, qos: QoS, pkid: u16, payload: &'static [u8]) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        pkid: if qos == QoS::AtMostOnce { 0 } else { pkid },
        payload: Bytes::from_static(payload),
        properties: None,
    }
}

/// A SUBSCRIBE of `filters` at QoS 1.
pub(crate) fn subscribe(pkid: u16, filters: &[&str]) -> Packet {
    Packet::Subscribe(Subscribe {
        pkid,
        filters: filters
            .iter()
            .map(|path| Filter {
                path: (*path).into(),
                qos: QoS::AtLeastOnce,
                nolocal: false,
                preserve_retain: false,
                retain_forward_rule: RetainForwardRule::OnEverySubscribe,
            })
            .collect(),
        properties: None,
    })
}
