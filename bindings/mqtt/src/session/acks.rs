//! Acknowledgements the proxy builds rather than relays: a client SUBSCRIBE
//! or UNSUBSCRIBE split over several upstreams is answered with one SUBACK or
//! UNSUBACK merged from theirs, and a publish the proxy refuses itself gets
//! the PUBACK or PUBREC its QoS calls for.

use std::collections::HashMap;

use mqtt_bytes_v5::{
    ConnAck, ConnAckProperties, Disconnect, Packet, PubAck, PubAckReason, PubComp, PubRec,
    PubRecReason, PubRel, QoS, SubAck, SubAckProperties, SubscribeReasonCode, UnsubAck,
    UnsubAckProperties, UnsubAckReason,
};

/// Why the proxy refuses a publish itself; each names its PUBACK and PUBREC
/// reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PublishRefusal {
    /// 0x87: no route the session's authorizations allow takes the topic.
    NotAuthorized,
    /// 0x99: the payload or a user property fails the topic's model.
    PayloadFormatInvalid,
    /// 0x97: larger than the broker it routes to accepts.
    QuotaExceeded,
    /// 0x90: no route takes the topic, whatever the session's authorizations.
    TopicNameInvalid,
}

/// The acknowledgement that refuses a QoS 1 or 2 publish with packet id
/// `pkid`; `None` for QoS 0, which has none. For a 3.1.1 client the codec
/// drops the reason: the ack stops retransmission and the message is gone.
pub(crate) fn refuse_publish(qos: QoS, pkid: u16, refusal: PublishRefusal) -> Option<Packet> {
    let (puback, pubrec) = match refusal {
        PublishRefusal::NotAuthorized => (PubAckReason::NotAuthorized, PubRecReason::NotAuthorized),
        PublishRefusal::PayloadFormatInvalid => (
            PubAckReason::PayloadFormatInvalid,
            PubRecReason::PayloadFormatInvalid,
        ),
        PublishRefusal::QuotaExceeded => (PubAckReason::QuotaExceeded, PubRecReason::QuotaExceeded),
        PublishRefusal::TopicNameInvalid => (
            PubAckReason::TopicNameInvalid,
            PubRecReason::TopicNameInvalid,
        ),
    };
    match qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce => Some(Packet::PubAck(PubAck {
            pkid,
            reason: puback,
            properties: None,
        })),
        QoS::ExactlyOnce => Some(Packet::PubRec(PubRec {
            pkid,
            reason: pubrec,
            properties: None,
        })),
    }
}

/// The reason codes of a SUBACK or of an UNSUBACK, one per filter of the
/// client's request; `None` while its upstream has not answered.
#[derive(Debug)]
pub(crate) enum Codes {
    Subscribe(Vec<Option<SubscribeReasonCode>>),
    Unsubscribe(Vec<Option<UnsubAckReason>>),
}

/// A client SUBSCRIBE or UNSUBSCRIBE waiting for its upstreams' answers.
#[derive(Debug)]
pub(crate) struct PendingAck {
    codes: Codes,
    /// Upstream (index, packet id) -> positions in the client's filter list.
    waiting: HashMap<(usize, u16), Vec<usize>>,
    reason_string: Option<String>,
    user_properties: Vec<(String, String)>,
}

/// The reason codes of an upstream's SUBACK or UNSUBACK.
#[derive(Debug)]
pub(crate) enum Answers {
    Subscribe(Vec<SubscribeReasonCode>),
    Unsubscribe(Vec<UnsubAckReason>),
}

/// An upstream's SUBACK or UNSUBACK, as the merge takes it.
#[derive(Debug)]
pub(crate) struct UpstreamAck {
    pub(crate) codes: Answers,
    pub(crate) reason_string: Option<String>,
    pub(crate) user_properties: Vec<(String, String)>,
}

impl PendingAck {
    /// A request whose filters already decided by the proxy carry their code.
    pub(crate) fn new(codes: Codes) -> Self {
        Self {
            codes,
            waiting: HashMap::new(),
            reason_string: None,
            user_properties: Vec::new(),
        }
    }

    /// The filters at `positions` went to upstream `index` as request `pkid`.
    pub(crate) fn wait_for(&mut self, index: usize, pkid: u16, positions: Vec<usize>) {
        self.waiting.insert((index, pkid), positions);
    }

    /// Takes upstream `index`'s answer to request `pkid`.
    pub(crate) fn answer(&mut self, index: usize, pkid: u16, ack: UpstreamAck) {
        if let Some(positions) = self.waiting.remove(&(index, pkid)) {
            match (&mut self.codes, ack.codes) {
                (Codes::Subscribe(codes), Answers::Subscribe(answers)) => {
                    for (position, code) in positions.into_iter().zip(answers) {
                        codes[position] = Some(code);
                    }
                }
                (Codes::Unsubscribe(codes), Answers::Unsubscribe(answers)) => {
                    // A 3.1.1 broker's UNSUBACK has no reason codes: success.
                    let answers = if answers.is_empty() {
                        vec![UnsubAckReason::Success; positions.len()]
                    } else {
                        answers
                    };
                    for (position, code) in positions.into_iter().zip(answers) {
                        codes[position] = Some(code);
                    }
                }
                // Callers match the kinds; a mismatch leaves the codes unset.
                _ => {}
            }
        }
        if self.reason_string.is_none() {
            self.reason_string = ack.reason_string;
        }
        self.user_properties.extend(ack.user_properties);
    }

    /// Whether every upstream answered.
    pub(crate) fn is_complete(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The client's SUBACK or UNSUBACK with packet id `pkid`; a filter that
    /// got no answer reads as unspecified error.
    pub(crate) fn into_packet(self, pkid: u16) -> Packet {
        let has_properties = self.reason_string.is_some() || !self.user_properties.is_empty();
        let (reason_string, user_properties) = (self.reason_string, self.user_properties);
        match self.codes {
            Codes::Subscribe(codes) => Packet::SubAck(SubAck {
                pkid,
                return_codes: codes
                    .into_iter()
                    .map(|code| code.unwrap_or(SubscribeReasonCode::Unspecified))
                    .collect(),
                properties: has_properties.then_some(SubAckProperties {
                    reason_string,
                    user_properties,
                }),
            }),
            Codes::Unsubscribe(codes) => Packet::UnsubAck(UnsubAck {
                pkid,
                reasons: codes
                    .into_iter()
                    .map(|code| code.unwrap_or(UnsubAckReason::UnspecifiedError))
                    .collect(),
                properties: has_properties.then_some(UnsubAckProperties {
                    reason_string,
                    user_properties,
                }),
            }),
        }
    }
}

/// An acknowledgement without its optional properties: reason strings and
/// user properties are the first thing MQTT lets a sender drop to fit the
/// peer's maximum packet size.
pub(crate) fn without_properties(packet: &Packet) -> Option<Packet> {
    Some(match packet {
        Packet::ConnAck(ack) => Packet::ConnAck(ConnAck {
            properties: ack.properties.clone().map(|p| ConnAckProperties {
                reason_string: None,
                user_properties: Vec::new(),
                ..p
            }),
            ..ack.clone()
        }),
        Packet::PubAck(ack) => Packet::PubAck(PubAck {
            properties: None,
            ..ack.clone()
        }),
        Packet::PubRec(ack) => Packet::PubRec(PubRec {
            properties: None,
            ..ack.clone()
        }),
        Packet::PubRel(ack) => Packet::PubRel(PubRel {
            properties: None,
            ..ack.clone()
        }),
        Packet::PubComp(ack) => Packet::PubComp(PubComp {
            properties: None,
            ..ack.clone()
        }),
        Packet::SubAck(ack) => Packet::SubAck(SubAck {
            properties: None,
            ..ack.clone()
        }),
        Packet::UnsubAck(ack) => Packet::UnsubAck(UnsubAck {
            properties: None,
            ..ack.clone()
        }),
        Packet::Disconnect(d) => Packet::Disconnect(Disconnect {
            properties: None,
            ..d.clone()
        }),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(codes: Answers, reason: Option<&str>) -> UpstreamAck {
        UpstreamAck {
            codes,
            reason_string: reason.map(str::to_owned),
            user_properties: vec![("from".into(), "broker".into())],
        }
    }

    #[test]
    fn suback_merges_in_the_clients_order_with_the_proxys_own_codes() {
        let mut pending = PendingAck::new(Codes::Subscribe(vec![
            None,
            Some(SubscribeReasonCode::NotAuthorized),
            None,
        ]));
        pending.wait_for(0, 7, vec![2]);
        pending.wait_for(1, 7, vec![0]);
        pending.answer(
            1,
            7,
            upstream(
                Answers::Subscribe(vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]),
                Some("first"),
            ),
        );
        assert!(!pending.is_complete());
        pending.answer(
            0,
            7,
            upstream(
                Answers::Subscribe(vec![SubscribeReasonCode::QuotaExceeded]),
                Some("second"),
            ),
        );
        assert!(pending.is_complete());
        let Packet::SubAck(ack) = pending.into_packet(3) else {
            panic!("a SUBACK")
        };
        assert_eq!(ack.pkid, 3);
        assert_eq!(
            ack.return_codes,
            vec![
                SubscribeReasonCode::Success(QoS::AtLeastOnce),
                SubscribeReasonCode::NotAuthorized,
                SubscribeReasonCode::QuotaExceeded,
            ]
        );
        let properties = ack.properties.expect("properties merged");
        assert_eq!(properties.reason_string.as_deref(), Some("first"));
        assert_eq!(properties.user_properties.len(), 2);
    }

    #[test]
    fn a_3_1_1_unsuback_without_codes_is_success() {
        let mut pending = PendingAck::new(Codes::Unsubscribe(vec![None, None]));
        pending.wait_for(0, 1, vec![0, 1]);
        pending.answer(0, 1, upstream(Answers::Unsubscribe(vec![]), None));
        let Packet::UnsubAck(ack) = pending.into_packet(1) else {
            panic!("an UNSUBACK")
        };
        assert_eq!(ack.reasons, vec![UnsubAckReason::Success; 2]);
    }

    #[test]
    fn refusals_follow_the_qos() {
        assert_eq!(
            refuse_publish(QoS::AtMostOnce, 1, PublishRefusal::NotAuthorized),
            None
        );
        let Some(Packet::PubAck(ack)) =
            refuse_publish(QoS::AtLeastOnce, 4, PublishRefusal::PayloadFormatInvalid)
        else {
            panic!("a PUBACK")
        };
        assert_eq!(
            (ack.pkid, ack.reason),
            (4, PubAckReason::PayloadFormatInvalid)
        );
        let Some(Packet::PubRec(rec)) =
            refuse_publish(QoS::ExactlyOnce, 5, PublishRefusal::QuotaExceeded)
        else {
            panic!("a PUBREC")
        };
        assert_eq!((rec.pkid, rec.reason), (5, PubRecReason::QuotaExceeded));
    }
}
