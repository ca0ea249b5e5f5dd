//! Timers on the fake clock: the client's keep-alive, pings to the brokers,
//! and the expiry of the session's credentials.

use mqtt_bytes_v5::{Disconnect, DisconnectProperties, PingReq, PingResp};

use super::*;

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

/// A session of a `version` client whose CONNECT asks for `keep_alive`
/// seconds, before brokers that answer with `server_keep_alive` (if any) and
/// credentials that expire after `expires_in` (if any); the CONNACK is drained.
fn session(
    version: Version,
    keep_alive: u16,
    server_keep_alive: Option<u16>,
    expires_in: Option<Duration>,
) -> Harness {
    let mut opening = Opening::new(Server::default().build(), version);
    opening.connect.keep_alive = keep_alive;
    opening.broker = broker_ack(server_keep_alive.map(|seconds| ConnAckProperties {
        server_keep_alive: Some(seconds),
        ..broker_properties()
    }));
    opening.expires_in = expires_in;
    let mut h = opening.start();
    h.connack();
    h
}

/// Whether nothing is queued for the broker. Unlike `to_upstream`, this
/// does not count as a write, so the broker's keep-alive does not restart.
fn idle_upstream(h: &mut Harness) -> bool {
    h.session.upstream_transmit(0).is_empty()
}

/// The DISCONNECT the session ends a v5 client with on `reason`.
fn told(reason: DisconnectReasonCode, why: &str) -> Packet {
    Packet::Disconnect(Disconnect {
        reason_code: reason,
        properties: Some(DisconnectProperties {
            session_expiry_interval: None,
            reason_string: Some(why.into()),
            user_properties: Vec::new(),
            server_reference: None,
        }),
    })
}

#[test]
fn a_client_silent_for_one_and_a_half_keep_alives_is_refused_with_keep_alive_timeout() {
    let mut h = session(Version::V5, 10, None, None);
    h.advance(secs(14)).unwrap();
    assert_eq!(
        refused(h.advance(secs(1))),
        DisconnectReasonCode::KeepAliveTimeout
    );
}

#[test]
fn any_client_packet_pushes_the_client_deadline_and_a_pingreq_gets_a_pingresp() {
    let mut h = session(Version::V5, 10, None, None);
    let origin = h.now;
    // At 10 s the upstream (keep-alive 10 s, as asked) is pinged; it answers.
    h.advance(secs(10)).unwrap();
    assert_eq!(h.take_upstream(0), vec![Packet::PingReq(PingReq)]);
    h.upstream(0, Packet::PingResp(PingResp)).unwrap();
    assert_eq!(h.session.poll_timeout(), Some(origin + secs(15)));

    h.advance(secs(4)).unwrap();
    h.client(Packet::PingReq(PingReq)).unwrap();
    assert_eq!(h.take_client(), vec![Packet::PingResp(PingResp)]);
    // The next upstream ping (10 s after the last write) comes first now;
    // the client's deadline moved to 14 s + 15 s.
    assert_eq!(h.session.poll_timeout(), Some(origin + secs(20)));
    h.advance(secs(1)).unwrap();
    assert!(h.take_client().is_empty(), "15 s is no longer the deadline");
    h.advance(secs(5)).unwrap();
    assert_eq!(h.take_upstream(0), vec![Packet::PingReq(PingReq)]);
    h.upstream(0, Packet::PingResp(PingResp)).unwrap();
    assert_eq!(h.session.poll_timeout(), Some(origin + secs(29)));
    h.advance(secs(8)).unwrap();
    assert_eq!(
        refused(h.advance(secs(1))),
        DisconnectReasonCode::KeepAliveTimeout
    );
}

#[test]
fn a_client_keep_alive_of_zero_sets_no_client_deadline_but_upstreams_still_ping_at_60_s() {
    let mut h = session(Version::V5, 0, None, None);
    let origin = h.now;
    assert_eq!(
        h.opens[0].connect.keep_alive, 60,
        "the default upstream keep-alive"
    );
    assert_eq!(h.session.poll_timeout(), Some(origin + secs(60)));
    for _ in 0..10 {
        h.advance(secs(60)).unwrap();
        assert_eq!(h.take_upstream(0), vec![Packet::PingReq(PingReq)]);
        h.upstream(0, Packet::PingResp(PingResp)).unwrap();
    }
    assert!(h.take_client().is_empty(), "ten silent minutes end nothing");
    assert_eq!(h.session.poll_timeout(), Some(origin + secs(660)));
}

#[test]
fn the_broker_is_pinged_once_its_keep_alive_passes_without_a_write() {
    let mut h = session(Version::V5, 0, None, None);
    h.advance(secs(59)).unwrap();
    assert!(idle_upstream(&mut h));
    h.advance(secs(1)).unwrap();
    assert_eq!(h.take_upstream(0), vec![Packet::PingReq(PingReq)]);
    assert!(h.take_client().is_empty(), "pings are the proxy's own");
}

#[test]
fn a_pingresp_clears_the_ping_and_the_next_is_due_a_keep_alive_after_the_last_write() {
    let mut h = session(Version::V5, 0, None, None);
    let origin = h.now;
    h.advance(secs(60)).unwrap();
    assert_eq!(h.take_upstream(0), vec![Packet::PingReq(PingReq)]);
    h.upstream(0, Packet::PingResp(PingResp)).unwrap();
    assert_eq!(h.session.poll_timeout(), Some(origin + secs(120)));
    // A publish written at 90 s restarts the upstream's keep-alive.
    h.advance(secs(30)).unwrap();
    h.client(Packet::Publish(publish("a", QoS::AtMostOnce, 0, b"m")))
        .unwrap();
    assert_eq!(h.take_upstream(0).len(), 1);
    assert_eq!(h.session.poll_timeout(), Some(origin + secs(150)));
    h.advance(secs(59)).unwrap();
    assert!(idle_upstream(&mut h), "no ping 60 s after the last one");
    h.advance(secs(1)).unwrap();
    assert_eq!(h.take_upstream(0), vec![Packet::PingReq(PingReq)]);
}

#[test]
fn an_unanswered_ping_loses_the_upstream_and_tells_a_v5_client_unspecified_error() {
    let mut h = session(Version::V5, 0, None, None);
    h.advance(secs(60)).unwrap();
    assert_eq!(h.take_upstream(0), vec![Packet::PingReq(PingReq)]);
    h.advance(secs(59)).unwrap();
    let end = h.advance(secs(1));
    let Err(end @ End::UpstreamLost(0, _)) = end else {
        panic!("expected upstream 0 lost, got {end:?}");
    };
    assert_eq!(h.finish(end), Closing::CloseClient);
    assert_eq!(
        h.take_client(),
        vec![told(
            DisconnectReasonCode::UnspecifiedError,
            "upstream north unavailable"
        )]
    );
}

#[test]
fn a_3_1_1_client_is_closed_without_disconnect_when_an_unanswered_ping_loses_the_upstream() {
    let mut h = session(Version::V4, 0, None, None);
    h.advance(secs(60)).unwrap();
    assert_eq!(h.take_upstream(0), vec![Packet::PingReq(PingReq)]);
    let end = h.advance(secs(60));
    let Err(end @ End::UpstreamLost(0, _)) = end else {
        panic!("expected upstream 0 lost, got {end:?}");
    };
    assert_eq!(h.finish(end), Closing::CloseClient);
    assert!(h.take_client().is_empty(), "3.1.1 has no server DISCONNECT");
}

#[test]
fn a_brokers_server_keep_alive_sets_a_v5_clients_keep_alive() {
    let mut h = session(Version::V5, 60, Some(4), None);
    let origin = h.now;
    // The broker pings at 4 s; the client's deadline is 1.5 x 4 s.
    assert_eq!(h.session.poll_timeout(), Some(origin + secs(4)));
    h.advance(secs(4)).unwrap();
    assert_eq!(h.take_upstream(0), vec![Packet::PingReq(PingReq)]);
    h.upstream(0, Packet::PingResp(PingResp)).unwrap();
    assert_eq!(h.session.poll_timeout(), Some(origin + secs(6)));
    assert_eq!(
        refused(h.advance(secs(2))),
        DisconnectReasonCode::KeepAliveTimeout
    );
}

#[test]
fn a_3_1_1_client_keeps_its_own_keep_alive_whatever_the_broker_says() {
    let mut h = session(Version::V4, 10, Some(100), None);
    let origin = h.now;
    assert_eq!(h.session.poll_timeout(), Some(origin + secs(15)));
    h.advance(secs(14)).unwrap();
    assert_eq!(
        refused(h.advance(secs(1))),
        DisconnectReasonCode::KeepAliveTimeout
    );
}

#[test]
fn poll_timeout_is_the_earliest_of_client_deadline_upstream_ping_and_expiry() {
    // A 3.1.1 client keeps its own keep-alive, so the three vary apart.
    let cases = [
        // (client keep-alive, broker keep-alive, expiry, earliest)
        (10, 20, 30, 15),
        (20, 12, 30, 12),
        (20, 20, 7, 7),
    ];
    for (keep_alive, server_keep_alive, expires_in, earliest) in cases {
        let h = session(
            Version::V4,
            keep_alive,
            Some(server_keep_alive),
            Some(secs(expires_in)),
        );
        assert_eq!(
            h.session.poll_timeout(),
            Some(h.now + secs(earliest)),
            "keep-alive {keep_alive} s, broker's {server_keep_alive} s, expiry {expires_in} s"
        );
    }
}

#[test]
fn credentials_end_the_session_when_they_expire() {
    let mut h = session(Version::V5, 60, None, Some(secs(30)));
    assert_eq!(h.session.poll_timeout(), Some(h.now + secs(30)));
    h.advance(secs(29)).unwrap();
    assert!(matches!(h.advance(secs(1)), Err(End::Expired)));
}

#[test]
fn a_v5_client_whose_credentials_expired_gets_disconnect_maximum_connect_time() {
    let mut h = session(Version::V5, 60, None, Some(secs(30)));
    assert!(matches!(h.advance(secs(30)), Err(End::Expired)));
    assert_eq!(h.finish(End::Expired), Closing::CloseClient);
    // 0xA0 has no name in the codec crate: compare the raw bytes.
    let sent = h.session.client_transmit().split().freeze();
    let mut expected = BytesMut::new();
    codec::write_disconnect(
        codec::MAXIMUM_CONNECT_TIME,
        Some("credentials expired"),
        &mut expected,
    );
    assert_eq!(sent, expected.freeze());
    assert_eq!(sent[2], codec::MAXIMUM_CONNECT_TIME, "the reason code");
    assert!(sent.ends_with(b"credentials expired"), "the reason string");
}

#[test]
fn a_3_1_1_client_whose_credentials_expired_is_closed_without_disconnect() {
    let mut h = session(Version::V4, 60, None, Some(secs(30)));
    assert!(matches!(h.advance(secs(30)), Err(End::Expired)));
    assert_eq!(h.finish(End::Expired), Closing::CloseClient);
    assert!(h.session.client_transmit().is_empty());
}

#[test]
fn timers_before_they_are_due_do_nothing() {
    let mut h = session(Version::V5, 10, None, Some(secs(12)));
    let due = h.session.poll_timeout().expect("a deadline");
    assert_eq!(due, h.now + secs(10), "the upstream ping comes first");
    h.advance(due - h.now - Duration::from_millis(1)).unwrap();
    assert!(h.take_client().is_empty());
    assert!(idle_upstream(&mut h));
    assert_eq!(h.session.poll_timeout(), Some(due), "nothing moved");
}
