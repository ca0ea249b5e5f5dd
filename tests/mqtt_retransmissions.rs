//! Retransmissions on one connection (issue 24), end to end. MQTT 3.1.1 lets
//! a sender resend an unacknowledged PUBLISH (DUP set, same packet id) or
//! PUBREL on the same connection; MQTT 5 tells senders not to, but tells the
//! receiver to answer a duplicate QoS 2 PUBLISH with PUBREC and deliver it
//! once ([MQTT-4.3.3-10]), and brokers (EMQX) resend anyway.
//!
//! From a client, through the proxy to a real mosquitto, with a subscriber
//! on mosquitto counting what arrives (up to a marker published after, so
//! the count is final): a resent QoS 2 PUBLISH is answered PUBREC, the
//! session goes on, and the message is delivered once; a resent PUBREL is
//! answered PUBCOMP; a resent QoS 1 PUBLISH is answered PUBACK; an MQTT 5
//! client that resends is reported (`MQTT_PUBLISH_RESENT`); a packet id
//! reused without DUP stays a protocol error.
//!
//! From a broker (a scripted stub in MQTT 5 and 3.1.1,
//! `support/broker_stub.rs`): a resent QoS 1 or 2 delivery reaches the
//! client behind the proxy once, a copy resent after the client's PUBREC is
//! answered PUBREC by the proxy, and a PUBREL resent after the client's
//! PUBCOMP is answered PUBCOMP by the proxy without reaching the client.

#[path = "support/broker_stub.rs"]
mod broker_stub;

use broker_stub::{
    grant_subscribe, puback, pubcomp, publish, pubrec, pubrel, BrokerStub, Version, Wire,
};
// Links every first-party plugin, as the host does.
use zilla as _;
use zilla_testkit::mqtt::packets::{
    DisconnectReasonCode, Packet, PubAckReason, PubComp, PubCompReason, PubRecReason, Publish, QoS,
};
use zilla_testkit::mqtt::subscribe_packet;
use zilla_testkit::proxy::{mqtt_proxy_yaml, wait_for_event, Proxy};
use zilla_testkit::Mosquitto;

/// The packet id the clients resend under.
const P: u16 = 42;
/// What the marker messages carry.
const MARKER: &[u8] = b"marker";

// ---------------------------------------------------------------------------
// Pickers for Wire::expect.

fn is_publish_of(payload: &'static [u8]) -> impl Fn(&Packet) -> bool {
    move |packet| matches!(packet, Packet::Publish(p) if p.payload.as_ref() == payload)
}

fn publish_of(payload: &'static [u8]) -> impl FnMut(&Packet) -> Option<Publish> {
    move |packet| match packet {
        Packet::Publish(p) if p.payload.as_ref() == payload => Some(p.clone()),
        _ => None,
    }
}

fn is_pubrec(pkid: u16) -> impl Fn(&Packet) -> bool {
    move |packet| matches!(packet, Packet::PubRec(r) if r.pkid == pkid)
}

/// A PUBREC for `pkid` that accepted the message.
fn accepted_pubrec(pkid: u16) -> impl FnMut(&Packet) -> Option<()> {
    move |packet| match packet {
        Packet::PubRec(rec) if rec.pkid == pkid => {
            assert!(
                matches!(
                    rec.reason,
                    PubRecReason::Success | PubRecReason::NoMatchingSubscribers
                ),
                "PUBREC {pkid} accepts: {rec:?}"
            );
            Some(())
        }
        _ => None,
    }
}

fn is_pubrel(pkid: u16) -> impl Fn(&Packet) -> bool {
    move |packet| matches!(packet, Packet::PubRel(r) if r.pkid == pkid)
}

fn is_pubcomp(pkid: u16) -> impl Fn(&Packet) -> bool {
    move |packet| matches!(packet, Packet::PubComp(c) if c.pkid == pkid)
}

fn pubcomp_of(pkid: u16) -> impl FnMut(&Packet) -> Option<PubComp> {
    move |packet| match packet {
        Packet::PubComp(comp) if comp.pkid == pkid => Some(comp.clone()),
        _ => None,
    }
}

fn is_puback(pkid: u16) -> impl Fn(&Packet) -> bool {
    move |packet| matches!(packet, Packet::PubAck(a) if a.pkid == pkid)
}

/// A PUBACK for `pkid` that accepted the message.
fn accepted_puback(pkid: u16) -> impl FnMut(&Packet) -> Option<()> {
    move |packet| match packet {
        Packet::PubAck(ack) if ack.pkid == pkid => {
            assert!(
                matches!(
                    ack.reason,
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                ),
                "PUBACK {pkid} accepts: {ack:?}"
            );
            Some(())
        }
        _ => None,
    }
}

fn picks(matches: impl Fn(&Packet) -> bool) -> impl FnMut(&Packet) -> Option<()> {
    move |packet| matches(packet).then_some(())
}

// ---------------------------------------------------------------------------
// From a client, through the proxy to mosquitto.

/// Mosquitto, the proxy in front of it, and a subscriber to `topic` on
/// mosquitto directly (QoS 0: it gets each message mosquitto accepted once,
/// in order).
async fn through_mosquitto(topic: &str) -> (Mosquitto, Proxy, Wire) {
    let broker = Mosquitto::start().unwrap();
    let proxy = Proxy::start(&mqtt_proxy_yaml(
        "    exit: mqtt_client_a",
        &[("a", broker.port())],
    ))
    .await;
    let mut watcher = Wire::connect(broker.port(), Version::V5, &format!("watch-{topic}")).await;
    watcher
        .send(&[subscribe_packet(1, topic, QoS::AtMostOnce)])
        .await;
    watcher
        .expect(
            "the watcher's SUBACK",
            picks(|p| matches!(p, Packet::SubAck(_))),
        )
        .await;
    (broker, proxy, watcher)
}

/// Publishes the marker at QoS 2 (after everything `client` sent on
/// `topic`), completes its flow, and waits until the watcher has it: what
/// the watcher counted before it is final.
async fn marker_after(client: &mut Wire, watcher: &mut Wire, topic: &str) {
    let marker = P + 1;
    client
        .send(&[publish(topic, QoS::ExactlyOnce, marker, MARKER, false)])
        .await;
    client
        .expect("the marker's PUBREC", accepted_pubrec(marker))
        .await;
    client.send(&[pubrel(marker)]).await;
    client
        .expect("the marker's PUBCOMP", picks(is_pubcomp(marker)))
        .await;
    watcher
        .expect("the marker at the subscriber", picks(is_publish_of(MARKER)))
        .await;
}

/// A QoS 2 PUBLISH sent again with DUP before the client's PUBREL: before
/// the client got the PUBREC (both copies in one write) or after.
async fn client_resends_qos2(version: Version, after_pubrec: bool) {
    let when = if after_pubrec { "after" } else { "before" };
    let topic = format!("retx/q2-{when}/{}", version.tag());
    let client_id = format!("retx-q2-{when}-pubrec-{}", version.tag());
    let (_broker, proxy, mut watcher) = through_mosquitto(&topic).await;
    let mut client = Wire::connect(proxy.port, version, &client_id).await;
    let first = publish(&topic, QoS::ExactlyOnce, P, b"once", false);
    let again = publish(&topic, QoS::ExactlyOnce, P, b"once", true);
    if after_pubrec {
        client.send(&[first]).await;
        client.expect("the PUBREC", accepted_pubrec(P)).await;
        client.send(&[again]).await;
        client
            .expect("a PUBREC again for the resent PUBLISH", accepted_pubrec(P))
            .await;
    } else {
        client.send(&[first, again]).await;
        client.expect("the PUBREC", accepted_pubrec(P)).await;
    }
    client.send(&[pubrel(P)]).await;
    let comp = client.expect("the PUBCOMP", pubcomp_of(P)).await;
    assert_eq!(comp.reason, PubCompReason::Success);
    // Besides: nothing but PUBRECs for the same id (one per copy, maybe).
    assert!(
        client
            .log
            .iter()
            .all(|p| is_pubrec(P)(p) || is_pubcomp(P)(p)),
        "only PUBREC/PUBCOMP {P} came: {:?}",
        client.log
    );
    marker_after(&mut client, &mut watcher, &topic).await;
    assert_eq!(
        watcher.count(is_publish_of(b"once")),
        1,
        "the subscriber got the message exactly once: {:?}",
        watcher.log
    );
    if version == Version::V5 {
        wait_for_event(&["MQTT_PUBLISH_RESENT", &client_id]).await;
    }
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn v5_qos2_publish_resent_before_its_pubrec_is_delivered_once() {
    client_resends_qos2(Version::V5, false).await;
}

#[tokio::test]
async fn v311_qos2_publish_resent_before_its_pubrec_is_delivered_once() {
    client_resends_qos2(Version::V311, false).await;
}

#[tokio::test]
async fn v5_qos2_publish_resent_after_its_pubrec_is_answered_pubrec_and_delivered_once() {
    client_resends_qos2(Version::V5, true).await;
}

#[tokio::test]
async fn v311_qos2_publish_resent_after_its_pubrec_is_answered_pubrec_and_delivered_once() {
    client_resends_qos2(Version::V311, true).await;
}

/// A PUBREL sent again after its PUBCOMP came is answered PUBCOMP again.
async fn client_resends_pubrel(version: Version) {
    let topic = format!("retx/pubrel/{}", version.tag());
    let client_id = format!("retx-pubrel-{}", version.tag());
    let (_broker, proxy, mut watcher) = through_mosquitto(&topic).await;
    let mut client = Wire::connect(proxy.port, version, &client_id).await;
    client
        .send(&[publish(&topic, QoS::ExactlyOnce, P, b"once", false)])
        .await;
    client.expect("the PUBREC", accepted_pubrec(P)).await;
    client.send(&[pubrel(P)]).await;
    let comp = client.expect("the PUBCOMP", pubcomp_of(P)).await;
    assert_eq!(comp.reason, PubCompReason::Success);

    client.send(&[pubrel(P)]).await;
    let again = client
        .expect("a PUBCOMP for the resent PUBREL", pubcomp_of(P))
        .await;
    // The flow is over: 5.0 may say 0x92 Packet Identifier not found.
    assert!(
        matches!(
            again.reason,
            PubCompReason::Success | PubCompReason::PacketIdentifierNotFound
        ),
        "{again:?}"
    );
    marker_after(&mut client, &mut watcher, &topic).await;
    assert_eq!(
        watcher.count(is_publish_of(b"once")),
        1,
        "the subscriber got the message once: {:?}",
        watcher.log
    );
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn v5_pubrel_resent_after_its_pubcomp_is_answered_pubcomp() {
    client_resends_pubrel(Version::V5).await;
}

#[tokio::test]
async fn v311_pubrel_resent_after_its_pubcomp_is_answered_pubcomp() {
    client_resends_pubrel(Version::V311).await;
}

/// A QoS 1 PUBLISH sent again with DUP before its PUBACK (in one write).
async fn client_resends_qos1(version: Version) {
    let topic = format!("retx/q1/{}", version.tag());
    let client_id = format!("retx-q1-{}", version.tag());
    let (_broker, proxy, mut watcher) = through_mosquitto(&topic).await;
    let mut client = Wire::connect(proxy.port, version, &client_id).await;
    client
        .send(&[
            publish(&topic, QoS::AtLeastOnce, P, b"at least once", false),
            publish(&topic, QoS::AtLeastOnce, P, b"at least once", true),
        ])
        .await;
    client.expect("a PUBACK", accepted_puback(P)).await;
    // The marker at QoS 1 too; any second PUBACK for P comes before its PUBACK.
    let marker = P + 1;
    client
        .send(&[publish(&topic, QoS::AtLeastOnce, marker, MARKER, false)])
        .await;
    client
        .expect("the marker's PUBACK", accepted_puback(marker))
        .await;
    assert!(
        client
            .log
            .iter()
            .all(|p| is_puback(P)(p) || is_puback(marker)(p)),
        "only PUBACKs came: {:?}",
        client.log
    );
    watcher
        .expect("the marker at the subscriber", picks(is_publish_of(MARKER)))
        .await;
    // At least once: a copy that came after the PUBACK went out is new.
    assert!(
        watcher.count(is_publish_of(b"at least once")) >= 1,
        "the subscriber got the message: {:?}",
        watcher.log
    );
    if version == Version::V5 {
        wait_for_event(&["MQTT_PUBLISH_RESENT", &client_id]).await;
    }
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn v5_qos1_publish_resent_before_its_puback_is_acknowledged() {
    client_resends_qos1(Version::V5).await;
}

#[tokio::test]
async fn v311_qos1_publish_resent_before_its_puback_is_acknowledged() {
    client_resends_qos1(Version::V311).await;
}

#[tokio::test]
async fn a_packet_id_reused_without_dup_while_in_flight_is_still_a_protocol_error() {
    let topic = "retx/reused";
    let (_broker, proxy, _watcher) = through_mosquitto(topic).await;
    for version in [Version::V5, Version::V311] {
        let client_id = format!("retx-reused-{}", version.tag());
        let mut client = Wire::connect(proxy.port, version, &client_id).await;
        client
            .send(&[publish(topic, QoS::ExactlyOnce, P, b"first", false)])
            .await;
        client.expect("the PUBREC", accepted_pubrec(P)).await;
        // Not a retransmission (no DUP), before the PUBREL: a new message
        // under an id still in flight.
        client
            .send(&[publish(topic, QoS::ExactlyOnce, P, b"second", false)])
            .await;
        let last = client.until_closed().await;
        match version {
            Version::V5 => assert!(
                matches!(
                    last.as_slice(),
                    [Packet::Disconnect(d)] if d.reason_code == DisconnectReasonCode::ProtocolError
                ),
                "5.0: DISCONNECT 0x82, got {last:?}"
            ),
            Version::V311 => assert!(last.is_empty(), "3.1.1: closed, got {last:?}"),
        }
    }
    proxy.engine.shutdown().await;
}

// ---------------------------------------------------------------------------
// From a broker (the stub), through the proxy to a client.

const TOPIC: &str = "stub/retx";
/// The packet id the stub delivers under.
const BROKER_PKID: u16 = 7;

/// The stub speaking `upstream`, the proxy in front of it (its mqtt client
/// in 3.1.1 when the stub is), and a client speaking `client` subscribed to
/// [`TOPIC`] at QoS 2: the client's connection and the stub's session.
async fn behind_stub(
    upstream: Version,
    client: Version,
    label: &str,
) -> (Proxy, BrokerStub, Wire, Wire) {
    let stub = BrokerStub::start(upstream).await;
    let mut yaml = mqtt_proxy_yaml("    exit: mqtt_client_a", &[("a", stub.port())]);
    if upstream == Version::V311 {
        yaml = yaml.replace(
            "    kind: client\n    exit: tcp_client_a",
            "    kind: client\n    options:\n      version: v3.1.1\n    exit: tcp_client_a",
        );
        assert!(yaml.contains("version: v3.1.1"));
    }
    let proxy = Proxy::start(&yaml).await;
    let client_id = format!("stub-{label}-{}-to-{}", upstream.tag(), client.tag());
    let (mut client, mut broker) =
        tokio::join!(Wire::connect(proxy.port, client, &client_id), stub.accept());
    client
        .send(&[subscribe_packet(1, TOPIC, QoS::ExactlyOnce)])
        .await;
    grant_subscribe(&mut broker).await;
    client
        .expect("the SUBACK", picks(|p| matches!(p, Packet::SubAck(_))))
        .await;
    client.log.clear();
    (proxy, stub, client, broker)
}

/// Sends the marker (QoS 0) from the stub and waits until the client has it.
async fn stub_marker(client: &mut Wire, broker: &mut Wire) {
    broker
        .send(&[publish(TOPIC, QoS::AtMostOnce, 0, MARKER, false)])
        .await;
    client
        .expect("the marker", picks(is_publish_of(MARKER)))
        .await;
}

async fn broker_resends_qos2(upstream: Version, client_version: Version) {
    let (proxy, _stub, mut client, mut broker) = behind_stub(upstream, client_version, "q2").await;
    let copy = |dup| publish(TOPIC, QoS::ExactlyOnce, BROKER_PKID, b"exactly once", dup);

    // Two copies before the client's PUBREC: the client gets one.
    broker.send(&[copy(false), copy(true)]).await;
    let delivery = client
        .expect("the delivery", publish_of(b"exactly once"))
        .await;
    assert_eq!(delivery.qos, QoS::ExactlyOnce);
    let id = delivery.pkid;
    client.send(&[pubrec(id)]).await;
    broker
        .expect("the client's PUBREC", picks(is_pubrec(BROKER_PKID)))
        .await;

    // A copy after the client's PUBREC: the proxy answers it PUBREC itself.
    let recs = broker.count(is_pubrec(BROKER_PKID));
    broker.send(&[copy(true)]).await;
    broker
        .expect_count(
            "a PUBREC for the copy resent after the client's PUBREC",
            is_pubrec(BROKER_PKID),
            recs + 1,
        )
        .await;

    // The release goes through to the client, its PUBCOMP back.
    broker.send(&[pubrel(BROKER_PKID)]).await;
    client.expect("the PUBREL", picks(is_pubrel(id))).await;
    let seen = client.log.len();
    client.send(&[pubcomp(id)]).await;
    broker
        .expect("the client's PUBCOMP", picks(is_pubcomp(BROKER_PKID)))
        .await;

    // A PUBREL resent after that: the proxy answers, the client sees nothing.
    let comps = broker.count(is_pubcomp(BROKER_PKID));
    broker.send(&[pubrel(BROKER_PKID)]).await;
    broker
        .expect_count(
            "a PUBCOMP for the resent PUBREL",
            is_pubcomp(BROKER_PKID),
            comps + 1,
        )
        .await;

    stub_marker(&mut client, &mut broker).await;
    assert_eq!(
        client.count(is_publish_of(b"exactly once")),
        1,
        "the client got the delivery exactly once: {:?}",
        client.log
    );
    assert!(
        matches!(&client.log[seen..], [p] if is_publish_of(MARKER)(p)),
        "after the PUBREL only the marker reached the client: {:?}",
        &client.log[seen..]
    );
    proxy.engine.shutdown().await;
}

async fn broker_resends_qos1(upstream: Version, client_version: Version) {
    let (proxy, _stub, mut client, mut broker) = behind_stub(upstream, client_version, "q1").await;
    let copy = |dup| publish(TOPIC, QoS::AtLeastOnce, BROKER_PKID, b"at least once", dup);
    // Two copies before the client's PUBACK: the client gets one.
    broker.send(&[copy(false), copy(true)]).await;
    let delivery = client
        .expect("the delivery", publish_of(b"at least once"))
        .await;
    assert_eq!(delivery.qos, QoS::AtLeastOnce);
    client.send(&[puback(delivery.pkid)]).await;
    broker
        .expect("the client's PUBACK", picks(is_puback(BROKER_PKID)))
        .await;
    stub_marker(&mut client, &mut broker).await;
    assert_eq!(
        client.count(is_publish_of(b"at least once")),
        1,
        "the client got the delivery once: {:?}",
        client.log
    );
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn a_v5_broker_resending_a_qos2_delivery_reaches_a_v5_client_once() {
    broker_resends_qos2(Version::V5, Version::V5).await;
}

#[tokio::test]
async fn a_v5_broker_resending_a_qos2_delivery_reaches_a_v311_client_once() {
    broker_resends_qos2(Version::V5, Version::V311).await;
}

#[tokio::test]
async fn a_v311_broker_resending_a_qos2_delivery_reaches_a_v5_client_once() {
    broker_resends_qos2(Version::V311, Version::V5).await;
}

#[tokio::test]
async fn a_v311_broker_resending_a_qos2_delivery_reaches_a_v311_client_once() {
    broker_resends_qos2(Version::V311, Version::V311).await;
}

#[tokio::test]
async fn a_v5_broker_resending_a_qos1_delivery_reaches_a_v5_client_once() {
    broker_resends_qos1(Version::V5, Version::V5).await;
}

#[tokio::test]
async fn a_v5_broker_resending_a_qos1_delivery_reaches_a_v311_client_once() {
    broker_resends_qos1(Version::V5, Version::V311).await;
}

#[tokio::test]
async fn a_v311_broker_resending_a_qos1_delivery_reaches_a_v5_client_once() {
    broker_resends_qos1(Version::V311, Version::V5).await;
}

#[tokio::test]
async fn a_v311_broker_resending_a_qos1_delivery_reaches_a_v311_client_once() {
    broker_resends_qos1(Version::V311, Version::V311).await;
}
