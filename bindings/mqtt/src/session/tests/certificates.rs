//! Identities granted at an earlier layer by a guard the mqtt server does
//! not name (a tls server's x509 guard, for a client certificate): guarded
//! routes, topics bound to the identity, limits, expiry at notAfter,
//! `options.client-id`, and a certificate next to the server's own JWT.

use mqtt_bytes_v5::{PubAck, PubAckReason, SubAck, SubscribeReasonCode};

use super::admission::{admitted, exits, reason_string, refusal};
use super::*;

/// Devices, by the `device` role of their certificate, publish and
/// subscribe under `devices/<their CN>/`; no default exit.
const DEVICE_ROUTES: &str = r#"
- exit: devices
  guarded: {x509_0: [device]}
  when:
    - publish:
        - topic: "devices/{id}/#"
          params: {id: "${guarded['x509_0'].identity}"}
      subscribe:
        - topic: "devices/{id}/#"
          params: {id: "${guarded['x509_0'].identity}"}
"#;

fn devices() -> Arc<ServerConfig> {
    Server {
        routes: DEVICE_ROUTES,
        exit: None,
        ..Server::default()
    }
    .build()
}

/// The certificate of device `cn`, with the `device` role.
fn device(cn: &str) -> GuardSession {
    certificate(cn, &["device"], &[], None)
}

/// A `version` client `id` on `config` whose certificate x509_0 granted.
fn with_certificate(
    config: &Arc<ServerConfig>,
    version: Version,
    id: &str,
    session: GuardSession,
) -> Opening {
    let mut opening = Opening::new(config.clone(), version).grant("x509_0", session);
    opening.connect = connect(id);
    opening
}

/// The CONNACK code byte a refused client reads (MQTT 5 reason code,
/// 3.1.1 return code).
fn on_the_wire(refusal: &Refusal) -> u8 {
    let mut out = BytesMut::new();
    codec::write(
        &Packet::ConnAck(*refusal.connack.clone()),
        refusal.version,
        &mut out,
    )
    .expect("encodes");
    // After the remaining length (1 to 4 bytes) and the flags.
    let length = out[1..]
        .iter()
        .position(|b| b & 0x80 == 0)
        .expect("a length");
    out[length + 3]
}

#[test]
fn a_route_guarded_by_x509_roles_is_met_by_the_granted_certificate() {
    let config = devices();
    let admission = admitted(&mut with_certificate(
        &config,
        Version::V5,
        "dev-1",
        device("dev-1"),
    ));
    assert_eq!(exits(&admission), vec!["devices"]);
    assert_eq!(
        admission.authorized.as_deref(),
        Some(r#"x509_0 granted identity dev-1 at an earlier layer"#)
    );
    // No certificate, or one without the role: no route, as for a missing
    // token (0x87; 3.1.1 return code 5).
    for version in [Version::V5, Version::V4] {
        let mut no_certificate = Opening::new(config.clone(), version);
        let mut no_role =
            with_certificate(&config, version, "c1", certificate("dev-1", &[], &[], None));
        for opening in [&mut no_certificate, &mut no_role] {
            let refused = refusal(opening);
            assert_eq!(refused.connack.code, ConnectReturnCode::NotAuthorized);
            assert_eq!(refused.why, "no route accepts this session");
            let code = if version == Version::V5 { 0x87 } else { 0x05 };
            assert_eq!(on_the_wire(&refused), code, "{version:?}");
        }
    }
}

#[test]
fn topics_bound_to_the_certificate_identity_allow_a_device_its_own_only() {
    let config = devices();
    // MQTT 5: the other device's topic gets PUBACK 0x87 and SUBACK 0x87.
    let mut h = with_certificate(&config, Version::V5, "c1", device("dev-1")).start();
    h.connack();
    let own = publish("devices/dev-1/temp", QoS::AtLeastOnce, 1, b"21");
    h.client(Packet::Publish(own)).unwrap();
    assert_eq!(h.take_upstream(0).len(), 1, "its own topic is forwarded");
    let other = publish("devices/dev-2/temp", QoS::AtLeastOnce, 2, b"21");
    h.client(Packet::Publish(other)).unwrap();
    assert_eq!(
        h.take_client(),
        vec![Packet::PubAck(PubAck {
            pkid: 2,
            reason: PubAckReason::NotAuthorized,
            properties: None,
        })]
    );
    h.client(subscribe(3, &["devices/dev-2/#"])).unwrap();
    assert_eq!(
        h.take_client(),
        vec![Packet::SubAck(SubAck {
            pkid: 3,
            return_codes: vec![SubscribeReasonCode::NotAuthorized],
            properties: None,
        })]
    );
    h.client(subscribe(4, &["devices/dev-1/#"])).unwrap();
    assert_eq!(h.take_upstream(0).len(), 1, "its own filter is forwarded");
    // 3.1.1: acknowledged and dropped, SUBACK 0x80.
    let mut h = with_certificate(&config, Version::V4, "c1", device("dev-1")).start();
    h.connack();
    let other = publish("devices/dev-2/temp", QoS::AtLeastOnce, 2, b"21");
    h.client(Packet::Publish(other)).unwrap();
    assert_eq!(
        h.take_client(),
        vec![Packet::PubAck(PubAck {
            pkid: 2,
            reason: PubAckReason::Success,
            properties: None,
        })]
    );
    let other = publish("devices/dev-2/temp", QoS::AtMostOnce, 0, b"21");
    h.client(Packet::Publish(other)).unwrap();
    h.client(subscribe(3, &["devices/dev-2/#"])).unwrap();
    assert_eq!(
        h.take_client(),
        vec![Packet::SubAck(SubAck {
            pkid: 3,
            return_codes: vec![SubscribeReasonCode::Unspecified],
            properties: None,
        })]
    );
    assert!(h.take_upstream(0).is_empty(), "nothing reached the broker");
}

#[test]
fn topics_bind_to_a_certificate_attribute_too() {
    let config = Server {
        routes: r#"
- exit: north
  when:
    - publish:
        - topic: "sites/{site}/#"
          params: {site: "${guarded['x509_0'].attributes.site}"}
"#,
        exit: None,
        ..Server::default()
    }
    .build();
    let cert = certificate("dev-1", &[], &[("site", "lyon")], None);
    let mut h = with_certificate(&config, Version::V5, "c1", cert).start();
    h.connack();
    let own = publish("sites/lyon/dev-1", QoS::AtMostOnce, 0, b"m");
    h.client(Packet::Publish(own)).unwrap();
    assert_eq!(h.take_upstream(0).len(), 1);
    let other = publish("sites/nantes/dev-1", QoS::AtMostOnce, 0, b"m");
    h.client(Packet::Publish(other)).unwrap();
    assert!(h.take_upstream(0).is_empty(), "dropped: another site");
}

#[test]
fn limits_by_identity_count_the_certificate_identity_without_authorization() {
    let config = Server {
        limits: "- {key: identity, sessions: 1}\n- {key: {claim: site}, sessions: 2}",
        ..Server::default()
    }
    .build();
    let cert = |cn: &str| certificate(cn, &[], &[("site", "lyon")], None);
    let _d1 = with_certificate(&config, Version::V5, "c1", cert("dev-1")).start();
    let refused = with_certificate(&config, Version::V4, "c2", cert("dev-1"))
        .admit()
        .err()
        .expect("a second session of dev-1");
    assert_eq!(refused.connack.code, ConnectReturnCode::QuotaExceeded);
    assert!(
        refused
            .why
            .contains(r#"sessions limit (1) of identity dev-1"#),
        "{}",
        refused.why
    );
    let _d2 = with_certificate(&config, Version::V5, "c3", cert("dev-2")).start();
    let refused = with_certificate(&config, Version::V5, "c4", cert("dev-3"))
        .admit()
        .err()
        .expect("a third session of the site");
    assert!(
        refused.why.contains(r#"of claim:site lyon"#),
        "{}",
        refused.why
    );
    // Without a certificate, nothing to count by.
    let mut anonymous = Opening::new(config.clone(), Version::V5);
    let _a1 = admitted(&mut anonymous);
    let _a2 = admitted(&mut anonymous);
}

#[test]
fn limits_count_the_servers_own_guard_first_then_the_certificate() {
    let config = Server {
        routes: "[{exit: north, guarded: {x509_0: [device]}}]",
        guard: true,
        limits: "- {key: identity, sessions: 1}",
        ..Server::default()
    }
    .build();
    let both = |id: &str, cn: &str| with_certificate(&config, Version::V5, id, device(cn));
    // A token and a certificate: the token's identity counts.
    let _alice = both("s1", "dev-1").token("alice").start();
    let refused = both("s2", "dev-2").token("alice").admit().err();
    let refused = refused.expect("alice counted once");
    assert!(
        refused.why.contains(r#"of identity alice"#),
        "{}",
        refused.why
    );
    // A certificate alone: its identity counts (dev-1 was not counted above).
    let _dev1 = both("s3", "dev-1").start();
    let refused = both("s4", "dev-1").admit().err().expect("dev-1 counted");
    assert!(
        refused.why.contains(r#"of identity dev-1"#),
        "{}",
        refused.why
    );
}

#[test]
fn without_authorization_the_outermost_grant_is_the_limited_identity() {
    let config = Server {
        limits: "- {key: identity, sessions: 1}",
        ..Server::default()
    }
    .build();
    // The tls server's certificate, then an http server's token.
    let token = verdict("alice").expect("a session");
    let _first = with_certificate(&config, Version::V5, "c1", device("dev-1"))
        .grant("jwt1", token.clone())
        .start();
    let mut token_only = Opening::new(config.clone(), Version::V5).grant("jwt1", token);
    token_only.connect = connect("c2");
    let _second = admitted(&mut token_only);
    let refused = with_certificate(&config, Version::V5, "c3", device("dev-1"))
        .admit()
        .err()
        .expect("dev-1 counted");
    assert!(
        refused.why.contains(r#"of identity dev-1"#),
        "{}",
        refused.why
    );
}

#[test]
fn a_certificate_ends_the_session_at_its_not_after() {
    let config = devices();
    let cert = certificate("dev-1", &["device"], &[], Some(Duration::from_secs(30)));
    let mut opening = with_certificate(&config, Version::V5, "c1", cert.clone());
    assert_eq!(
        admitted(&mut opening).expires_at,
        Some(wall() + Duration::from_secs(30))
    );
    for version in [Version::V5, Version::V4] {
        let mut h = with_certificate(&config, version, "c1", cert.clone()).start();
        h.connack();
        assert_eq!(
            h.session.poll_timeout(),
            Some(h.now + Duration::from_secs(30))
        );
        h.advance(Duration::from_secs(29)).unwrap();
        assert!(matches!(
            h.advance(Duration::from_secs(1)),
            Err(End::Expired)
        ));
        assert_eq!(h.finish(End::Expired), Closing::CloseClient);
        let told = h.session.client_transmit().split().freeze();
        if version == Version::V5 {
            assert_eq!(told[2], codec::MAXIMUM_CONNECT_TIME, "DISCONNECT 0xA0");
            assert!(told.ends_with(b"credentials expired"));
        } else {
            assert!(told.is_empty(), "3.1.1: closed");
        }
    }
}

#[test]
fn the_first_expiry_of_the_sessions_guards_ends_it() {
    let config = Server {
        guard: true,
        ..Server::default()
    }
    .build();
    let token = GuardSession {
        expires_at: Some(wall() + Duration::from_secs(20)),
        ..verdict("alice").expect("a session")
    };
    let cert = certificate("dev-1", &[], &[], Some(Duration::from_secs(30)));
    // jwt0's token, granted at the WebSocket upgrade, expires first.
    let mut h = with_certificate(&config, Version::V5, "c1", cert)
        .grant("jwt0", token)
        .start();
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.now + Duration::from_secs(20))
    );
    assert!(matches!(
        h.advance(Duration::from_secs(20)),
        Err(End::Expired)
    ));
}

/// A server whose client ids are the certificates' CNs.
fn bound(expression: &'static str, guard: bool) -> Arc<ServerConfig> {
    Server {
        client_id: Some(expression),
        guard,
        ..Server::default()
    }
    .build()
}

const BY_CN: &str = "${guarded['x509_0'].identity}";

#[test]
fn a_client_id_bound_to_the_certificate_must_be_its_identity() {
    let config = bound(BY_CN, false);
    let mut h = with_certificate(&config, Version::V5, "dev-1", device("dev-1")).start();
    let ack = h.connack();
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let assigned = ack.properties.and_then(|p| p.assigned_client_identifier);
    assert_eq!(assigned, None, "the client chose its id");
    for (version, code) in [(Version::V5, 0x85), (Version::V4, 0x02)] {
        let refused = refusal(&mut with_certificate(
            &config,
            version,
            "dev-2",
            device("dev-1"),
        ));
        assert_eq!(
            refused.connack.code,
            ConnectReturnCode::ClientIdentifierNotValid
        );
        assert_eq!(on_the_wire(&refused), code, "{version:?}");
        // Logged with the client id and the identity, not the certificate.
        assert_eq!(refused.client_id, "dev-2");
        assert_eq!(
            refused.why,
            r#"options.client-id binds the client id to guarded['x509_0'].identity, dev-1 (identity dev-1), not dev-2"#
        );
        assert!(!refused.why.contains("certificate of"), "no credentials");
    }
}

#[test]
fn a_client_id_bound_to_a_missing_certificate_is_not_authorized() {
    let config = bound(BY_CN, false);
    for (version, code) in [(Version::V5, 0x87), (Version::V4, 0x05)] {
        for id in ["dev-1", ""] {
            let mut opening = Opening::new(config.clone(), version);
            opening.connect = connect(id);
            let refused = refusal(&mut opening);
            assert_eq!(refused.connack.code, ConnectReturnCode::NotAuthorized);
            assert_eq!(on_the_wire(&refused), code, "{version:?} {id:?}");
            assert_eq!(
                reason_string(&refused).filter(|_| version == Version::V5),
                (version == Version::V5).then_some(
                    "options.client-id binds the client id to guarded['x509_0'].identity, \
                     which this session has no usable value of (no identity)"
                )
            );
        }
    }
    // An identity no client id can be (U+0000) is no value either.
    let refused = refusal(&mut with_certificate(
        &config,
        Version::V5,
        "",
        device("dev\0"),
    ));
    assert_eq!(refused.connack.code, ConnectReturnCode::NotAuthorized);
}

#[test]
fn an_empty_client_id_is_given_the_bound_value() {
    let config = bound(BY_CN, false);
    // MQTT 5, clean start or not: the CONNACK assigns it
    // (Assigned Client Identifier, [MQTT-3.2.2-16]).
    for clean_start in [true, false] {
        let mut opening = with_certificate(&config, Version::V5, "", device("dev-1"));
        opening.connect.clean_start = clean_start;
        let mut h = opening.start();
        let ack = h.connack();
        let assigned = ack.properties.and_then(|p| p.assigned_client_identifier);
        assert_eq!(assigned.as_deref(), Some("dev-1"));
        assert_eq!(h.session.client_id(), "dev-1");
        assert_eq!(h.opens[0].connect.client_id, "dev-1");
        assert_eq!(h.opens[0].connect.clean_start, clean_start);
    }
    // 3.1.1 with CleanSession 1 gets it; without, an empty id is refused
    // ([MQTT-3.1.3-8]: return code 2).
    let mut h = with_certificate(&config, Version::V4, "", device("dev-1")).start();
    assert_eq!(h.connack().code, ConnectReturnCode::Success);
    assert_eq!(h.session.client_id(), "dev-1");
    let mut opening = with_certificate(&config, Version::V4, "", device("dev-1"));
    opening.connect.clean_start = false;
    let refused = refusal(&mut opening);
    assert_eq!(on_the_wire(&refused), 0x02);
    assert_eq!(refused.why, "an empty client id needs clean start");
}

#[test]
fn empty_client_ids_waiting_for_their_value_share_no_connect_rate() {
    let config = Server {
        client_id: Some(BY_CN),
        limits: "- {key: client-id, connects: {rate: 1, burst: 1}}",
        ..Server::default()
    }
    .build();
    let _d1 = with_certificate(&config, Version::V5, "", device("dev-1")).start();
    let _d2 = with_certificate(&config, Version::V5, "", device("dev-2")).start();
}

#[test]
fn a_client_id_binds_to_an_attribute_or_to_the_servers_own_guard() {
    let config = bound("${guarded['x509_0'].attributes.thing}", false);
    let cert = |thing| certificate("dev-1", &[], &[("thing", thing)], None);
    let mut opening = with_certificate(&config, Version::V5, "thermo-7", cert("thermo-7"));
    assert_eq!(admitted(&mut opening).connect.client_id, "thermo-7");
    let refused = refusal(&mut with_certificate(
        &config,
        Version::V5,
        "dev-1",
        cert("thermo-7"),
    ));
    assert_eq!(
        refused.connack.code,
        ConnectReturnCode::ClientIdentifierNotValid
    );
    let config = bound("${guarded['jwt0'].identity}", true);
    let mut alice = Opening::new(config.clone(), Version::V5).token("alice");
    alice.connect = connect("alice");
    assert_eq!(admitted(&mut alice).connect.client_id, "alice");
    let refused = refusal(&mut Opening::new(config, Version::V5).token("alice"));
    assert_eq!(
        refused.connack.code,
        ConnectReturnCode::ClientIdentifierNotValid
    );
}

/// Devices by certificate, applications by the server's own JWT.
fn devices_and_apps() -> Arc<ServerConfig> {
    Server {
        routes: r#"
- exit: devices
  guarded: {x509_0: [device]}
- exit: apps
  roles: [app]
"#,
        exit: None,
        guard: true,
        ..Server::default()
    }
    .build()
}

#[test]
fn certificates_for_devices_and_tokens_for_applications_in_one_server() {
    let config = devices_and_apps();
    // A device: no token needed, its certificate authenticated it.
    let mut device_only = with_certificate(&config, Version::V5, "d1", device("dev-1"));
    assert_eq!(exits(&admitted(&mut device_only)), vec!["devices"]);
    // An application without a certificate reaches the JWT check as today.
    let mut app = Opening::new(config.clone(), Version::V5).token("alice:app");
    assert_eq!(exits(&admitted(&mut app)), vec!["apps"]);
    let refused = refusal(&mut Opening::new(config.clone(), Version::V5));
    assert_eq!(refused.connack.code, ConnectReturnCode::BadUserNamePassword);
    // Both: both sessions are in the authorizations.
    let mut both = with_certificate(&config, Version::V5, "d1", device("dev-1")).token("alice:app");
    let admission = admitted(&mut both);
    assert_eq!(exits(&admission), vec!["devices", "apps"]);
    assert_eq!(
        admission.authorized.as_deref(),
        Some(
            r#"jwt0 authorized identity alice; x509_0 granted identity dev-1 at an earlier layer"#
        )
    );
    assert_eq!(
        admission
            .router
            .authorizations
            .get("jwt0")
            .and_then(|s| s.identity.as_deref()),
        Some("alice")
    );
    // Credentials presented must be valid, certificate or not.
    let refused =
        refusal(&mut with_certificate(&config, Version::V5, "d1", device("dev-1")).token("bad"));
    assert_eq!(refused.why, "jwt0 refused the credentials: signature");
}

#[test]
fn a_device_login_not_meant_for_the_guard_never_reaches_the_broker() {
    let mut opening = with_certificate(&devices_and_apps(), Version::V5, "d1", device("dev-1"));
    opening.login = Some(Login {
        username: "dev-1".into(),
        password: "secret".into(),
    });
    let admission = admitted(&mut opening);
    assert_eq!(exits(&admission), vec!["devices"]);
    let open = &admission.opens[0].2;
    assert!(
        open.login.is_none(),
        "the server has a guard: no pass-through"
    );
    assert_eq!(open.credentials, None, "no token to forward");
}

#[test]
fn upstreams_are_told_every_identity_the_session_holds() {
    // What an mqtt client passes to its exit (a tls client choosing its
    // certificate by identity): the earlier layer's certificate and the
    // server's own guard's session on the CONNECT.
    let granted = |open: &OpenSession| -> Vec<(String, Option<String>, String)> {
        (open.origin.granted.iter())
            .map(|g| {
                let identity = g.session.identity.clone();
                (g.guard.to_string(), identity, g.credentials.clone())
            })
            .collect()
    };
    let config = devices_and_apps();
    let mut both = with_certificate(&config, Version::V5, "d1", device("dev-1")).token("alice:app");
    let admission = admitted(&mut both);
    assert_eq!(exits(&admission), vec!["devices", "apps"]);
    for (_, _, open) in &admission.opens {
        assert_eq!(
            granted(open),
            [
                (
                    "x509_0".to_owned(),
                    Some("dev-1".to_owned()),
                    "certificate of x509_0".to_owned()
                ),
                (
                    "jwt0".to_owned(),
                    Some("alice".to_owned()),
                    "alice:app".to_owned()
                ),
            ]
        );
    }
    // The CONNECT's token replaces what the same guard granted before (a
    // token in the WebSocket upgrade), as in the session's authorizations.
    let mut upgraded = Opening::new(config.clone(), Version::V5)
        .granted("bob:app")
        .token("alice:app");
    let admission = admitted(&mut upgraded);
    assert_eq!(
        granted(&admission.opens[0].2),
        [(
            "jwt0".to_owned(),
            Some("alice".to_owned()),
            "alice:app".to_owned()
        )]
    );
    // Without the server's own guard: what the earlier layers granted.
    let mut device_only = with_certificate(&devices(), Version::V5, "dev-1", device("dev-1"));
    let admission = admitted(&mut device_only);
    assert_eq!(
        granted(&admission.opens[0].2),
        [(
            "x509_0".to_owned(),
            Some("dev-1".to_owned()),
            "certificate of x509_0".to_owned()
        )]
    );
}
