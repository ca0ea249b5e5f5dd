//! MQTT 5 enhanced authentication: a CONNECT that names the server's
//! Authentication Method, and every transition of re-authentication
//! (AUTH 0x19) with a fake clock. The guard's asynchrony is the driver's:
//! here the test takes the token (`take_reauth`) and feeds the verdict of
//! the test guard (`on_reauth`), as the driver does.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mqtt_bytes_v5::{
    ConnectReturnCode, DisconnectReasonCode, Packet, PubAckReason, QoS, SubAck,
    SubscribeReasonCode, UnsubAck, UnsubAckReason,
};

use super::admission::{admitted, refusal};
use super::{
    certificate, connect_properties, publish, refused, subscribe, verdict, Harness, Opening, Server,
};
use crate::codec::auth::{self, Auth};
use crate::codec::{self, Version};
use crate::config::ServerConfig;
use crate::session::end::End;

/// `north` for subscriptions with role `sub`, for publishes with role `pub`;
/// no default exit. `jwt0` names the method `jwt`.
fn config() -> Arc<ServerConfig> {
    Server {
        routes: r#"
- exit: north
  roles: [sub]
  when:
    - subscribe: [{topic: "north/#"}]
- exit: north
  roles: [pub]
  when:
    - publish: [{topic: "north/#"}]
"#,
        exit: None,
        guard: true,
        method: Some("jwt".into()),
        ..Server::default()
    }
    .build()
}

/// A 5.0 CONNECT naming `method` with `token` as its Authentication Data.
fn opening(config: Arc<ServerConfig>, method: &str, token: &str) -> Opening {
    let mut opening = Opening::new(config, Version::V5);
    opening.connect.properties = Some(mqtt_bytes_v5::ConnectProperties {
        authentication_method: Some(method.into()),
        authentication_data: Some(Bytes::copy_from_slice(token.as_bytes())),
        ..connect_properties()
    });
    opening
}

/// A session of `alice` with roles `sub,pub` and a token living 3 s; the
/// CONNACK drained (it must name the method).
fn started() -> Harness {
    let mut opening = opening(config(), "jwt", "alice:sub,pub");
    opening.expires_in = Some(Duration::from_secs(3));
    let mut h = opening.start();
    let ack = h.connack();
    let method = ack.properties.and_then(|p| p.authentication_method);
    assert_eq!(method.as_deref(), Some("jwt"));
    h
}

/// AUTH with `reason`, `method` and `token`.
fn auth(reason: u8, method: Option<&str>, token: Option<&str>) -> Auth {
    Auth {
        reason,
        method: method.map(str::to_owned),
        data: token.map(|t| Bytes::copy_from_slice(t.as_bytes())),
        reason_string: None,
    }
}

/// The client sends `packet`.
fn send_auth(h: &mut Harness, packet: &Auth) -> Result<(), End> {
    let mut buf = BytesMut::new();
    auth::write(packet, &mut buf);
    h.client_bytes(&buf)
}

/// AUTH 0x19 with the method `jwt` and `token`; the driver takes it.
fn refresh(h: &mut Harness, token: &str) {
    send_auth(h, &auth(auth::RE_AUTHENTICATE, Some("jwt"), Some(token))).expect("taken in");
    assert_eq!(h.session.take_reauth().as_deref(), Some(token));
    assert_eq!(h.session.take_reauth(), None, "taken once");
}

/// The guard's verdict on `token`, expiring `lives` after now, fed back.
fn verified(h: &mut Harness, token: &str, lives: Duration) -> Result<(), End> {
    let now = h.now;
    h.session.on_reauth(now, verdict(token), Some(now + lives))
}

/// What the client was sent: AUTH packets apart, the rest decoded.
fn client_auths(h: &mut Harness) -> (Vec<Auth>, Vec<Packet>) {
    let buf = h.session.client_transmit();
    let (mut auths, mut packets) = (Vec::new(), Vec::new());
    while let Some(header) = codec::next_frame(buf, Version::V5, usize::MAX).unwrap() {
        match codec::take_auth(buf, &header, Version::V5) {
            Some(auth) => auths.push(auth.unwrap()),
            None => packets.push(codec::take_packet(buf, &header, Version::V5, false).unwrap()),
        }
    }
    (auths, packets)
}

#[test]
fn a_connect_naming_the_method_carries_its_token_in_the_authentication_data() {
    // A user name that is no token is not read as one.
    let mut opening = opening(config(), "jwt", "alice:sub").token("bad");
    // The method and its token stay with the proxy.
    let admission = admitted(&mut opening);
    let upstream = admission.opens[0].2.connect.properties.clone().unwrap();
    assert_eq!(upstream.authentication_method, None);
    assert_eq!(upstream.authentication_data, None);
}

#[test]
fn a_method_no_guard_names_is_a_bad_authentication_method() {
    for config in [config(), super::two_brokers()] {
        let refusal = refusal(&mut opening(config, "SCRAM-SHA-1", "x"));
        assert_eq!(
            refusal.connack.code,
            ConnectReturnCode::BadAuthenticationMethod
        );
    }
}

#[test]
fn the_method_without_a_token_or_with_a_refused_one_is_refused() {
    let empty = refusal(&mut opening(config(), "jwt", ""));
    assert_eq!(empty.connack.code, ConnectReturnCode::BadUserNamePassword);
    let bad = refusal(&mut opening(config(), "jwt", "bad"));
    // As a refused user-name token is.
    assert_eq!(bad.connack.code, ConnectReturnCode::BadUserNamePassword);
}

#[test]
fn a_refresh_is_answered_with_success_and_moves_the_expiry() {
    let mut h = started();
    h.advance(Duration::from_secs(2)).unwrap();
    refresh(&mut h, "alice:sub,pub");
    // The relay goes on while the guard decides.
    h.client(Packet::Publish(publish(
        "north/1",
        QoS::AtMostOnce,
        0,
        b"m",
    )))
    .unwrap();
    assert_eq!(h.take_upstream(0).len(), 1);
    verified(&mut h, "alice:sub,pub", Duration::from_secs(3)).unwrap();
    let (auths, packets) = client_auths(&mut h);
    assert!(packets.is_empty(), "{packets:?}");
    assert_eq!(auths, vec![auth(auth::SUCCESS, Some("jwt"), None)]);
    // Past the first token's expiry (3 s), before the second's (5 s).
    h.advance(Duration::from_secs(2)).unwrap();
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.now + Duration::from_secs(1))
    );
    // Refreshed again, and again: the session outlives every token.
    for _ in 0..5 {
        refresh(&mut h, "alice:sub,pub");
        verified(&mut h, "alice:sub,pub", Duration::from_secs(3)).unwrap();
        h.advance(Duration::from_secs(2)).unwrap();
    }
    // Without a refresh it ends at the last token's expiry.
    assert!(matches!(
        h.advance(Duration::from_secs(1)),
        Err(End::Expired)
    ));
}

#[test]
fn a_token_of_another_identity_a_refused_or_an_expired_one_ends_the_session_with_0x87() {
    for (token, lives) in [
        ("bob:sub,pub", 3),
        ("bad", 3),
        ("down", 3),
        ("alice:sub,pub", 0),
    ] {
        let mut h = started();
        refresh(&mut h, token);
        let end = verified(&mut h, token, Duration::from_secs(lives));
        assert_eq!(refused(end), DisconnectReasonCode::NotAuthorized, "{token}");
    }
    let mut h = started();
    let empty = auth(auth::RE_AUTHENTICATE, Some("jwt"), None);
    assert_eq!(
        refused(send_auth(&mut h, &empty)),
        DisconnectReasonCode::NotAuthorized
    );
}

#[test]
fn another_method_ends_the_session_with_0x8c() {
    let mut h = started();
    let other = auth(auth::RE_AUTHENTICATE, Some("SCRAM-SHA-1"), Some("alice"));
    let end = send_auth(&mut h, &other).unwrap_err();
    assert!(matches!(end, End::BadAuthenticationMethod(_)), "{end:?}");
    h.finish(end);
    let out = h.session.client_transmit();
    assert_eq!((out[0], out[2]), (0xE0, 0x8C), "DISCONNECT 0x8C");
}

#[test]
fn out_of_place_auths_are_protocol_errors() {
    for packet in [
        auth(auth::RE_AUTHENTICATE, None, None),
        auth(auth::CONTINUE_AUTHENTICATION, Some("jwt"), Some("x")),
        auth(auth::SUCCESS, Some("jwt"), None),
        auth(auth::SUCCESS, None, None),
    ] {
        let mut h = started();
        let end = send_auth(&mut h, &packet);
        assert_eq!(
            refused(end),
            DisconnectReasonCode::ProtocolError,
            "{packet:?}"
        );
    }
    // A session whose CONNECT named no method.
    let mut h = Opening::new(config(), Version::V5)
        .token("alice:sub")
        .start();
    h.connack();
    let end = send_auth(&mut h, &auth(auth::RE_AUTHENTICATE, Some("jwt"), Some("a")));
    assert_eq!(refused(end), DisconnectReasonCode::ProtocolError);
    // One re-authentication at a time.
    let mut h = started();
    refresh(&mut h, "alice:sub,pub");
    let again = auth(auth::RE_AUTHENTICATE, Some("jwt"), Some("alice:sub,pub"));
    assert_eq!(
        refused(send_auth(&mut h, &again)),
        DisconnectReasonCode::ProtocolError
    );
}

#[test]
fn a_token_with_fewer_roles_ends_subscriptions_and_refuses_publishes_it_no_longer_allows() {
    let mut h = started();
    h.client(subscribe(1, &["north/a"])).unwrap();
    assert_eq!(h.take_upstream(0).len(), 1);
    let granted = SubscribeReasonCode::Success(QoS::AtLeastOnce);
    h.upstream(
        0,
        Packet::SubAck(SubAck {
            pkid: 1,
            return_codes: vec![granted],
            properties: None,
        }),
    )
    .unwrap();
    client_auths(&mut h);
    // Publishing only.
    refresh(&mut h, "alice:pub");
    verified(&mut h, "alice:pub", Duration::from_secs(3)).unwrap();
    let unsubscribe = match super::one(h.take_upstream(0)) {
        Packet::Unsubscribe(unsubscribe) => unsubscribe,
        other => panic!("expected UNSUBSCRIBE, got {other:?}"),
    };
    assert_eq!(unsubscribe.filters, vec!["north/a".to_owned()]);
    // The broker's UNSUBACK answers the proxy, not the client.
    let unsuback = UnsubAck {
        pkid: unsubscribe.pkid,
        reasons: vec![UnsubAckReason::Success],
        properties: None,
    };
    h.upstream(0, Packet::UnsubAck(unsuback)).unwrap();
    let (auths, packets) = client_auths(&mut h);
    assert_eq!(auths.len(), 1);
    assert!(packets.is_empty(), "{packets:?}");
    // A new subscription is refused; publishing still goes.
    h.client(subscribe(2, &["north/b"])).unwrap();
    match client_auths(&mut h).1.as_slice() {
        [Packet::SubAck(ack)] => {
            assert_eq!(ack.return_codes, vec![SubscribeReasonCode::NotAuthorized])
        }
        other => panic!("{other:?}"),
    }
    h.client(Packet::Publish(publish(
        "north/1",
        QoS::AtLeastOnce,
        3,
        b"m",
    )))
    .unwrap();
    assert_eq!(h.take_upstream(0).len(), 1);
    // Subscribing only: a publish is refused with PUBACK 0x87, the session lives.
    refresh(&mut h, "alice:sub");
    verified(&mut h, "alice:sub", Duration::from_secs(3)).unwrap();
    client_auths(&mut h);
    h.client(Packet::Publish(publish(
        "north/1",
        QoS::AtLeastOnce,
        4,
        b"m",
    )))
    .unwrap();
    match client_auths(&mut h).1.as_slice() {
        [Packet::PubAck(ack)] => assert_eq!(ack.reason, PubAckReason::NotAuthorized),
        other => panic!("{other:?}"),
    }
}

#[test]
fn re_authentications_are_counted_by_result() {
    use zilla_engine::telemetry::metrics::{registered_metrics, BindingMetrics, Metrics, Value};

    use crate::metrics::{family, SessionMetrics};

    let config = config();
    let registry = Metrics::new();
    let mqtt = (registered_metrics().into_iter())
        .filter(|m| m.name.starts_with("mqtt."))
        .collect();
    let binding = BindingMetrics::new(&registry, "test", "mqtt_server0", mqtt);
    let family = family(&binding, &config.routes, &config.topics, &config.limits);
    let count = |result: &str| {
        let series = registry.collect();
        let found = series.iter().find(|s| {
            s.metric.name == "mqtt.reauthentications" && s.label("result") == Some(result)
        });
        match found.map(|s| &s.value) {
            Some(Value::Counter(count)) => *count,
            other => panic!("{result}: {other:?}"),
        }
    };
    let subscriptions = || {
        let series = registry.collect();
        let found = series
            .iter()
            .find(|s| s.metric.name == "mqtt.subscriptions.active");
        match found.map(|s| &s.value) {
            Some(Value::Gauge(value)) => *value,
            other => panic!("{other:?}"),
        }
    };
    let mut h = started();
    let mut metrics = SessionMetrics::open(&family);
    metrics.admitted(h.exits.iter().map(String::as_str));
    h.session.set_metrics(metrics);
    h.client(subscribe(1, &["north/a"])).unwrap();
    let granted = SubscribeReasonCode::Success(QoS::AtLeastOnce);
    let pkid = match super::one(h.take_upstream(0)) {
        Packet::Subscribe(subscribe) => subscribe.pkid,
        other => panic!("{other:?}"),
    };
    let suback = SubAck {
        pkid,
        return_codes: vec![granted],
        properties: None,
    };
    h.upstream(0, Packet::SubAck(suback)).unwrap();
    assert_eq!(subscriptions(), 1);
    refresh(&mut h, "alice:pub");
    verified(&mut h, "alice:pub", Duration::from_secs(3)).unwrap();
    assert_eq!(subscriptions(), 0, "the revoked subscription is gone");
    refresh(&mut h, "bob:sub,pub");
    assert!(verified(&mut h, "bob:sub,pub", Duration::from_secs(3)).is_err());
    assert_eq!((count("succeeded"), count("failed")), (1, 1));
}

#[test]
fn a_refresh_never_moves_the_end_past_a_client_certificates_not_after() {
    let mut opening = opening(config(), "jwt", "alice:sub,pub");
    let not_after = Some(Duration::from_secs(4));
    opening = opening.grant("x509_0", certificate("device-1", &[], &[], not_after));
    let mut h = opening.start();
    h.connack();
    refresh(&mut h, "alice:sub,pub");
    verified(&mut h, "alice:sub,pub", Duration::from_secs(60)).unwrap();
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.now + Duration::from_secs(4))
    );
    assert!(matches!(
        h.advance(Duration::from_secs(4)),
        Err(End::Expired)
    ));
}
