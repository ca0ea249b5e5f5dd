//! Admission: which CONNECTs become sessions, on which upstreams, with what
//! CONNACK, and the reason code of every refusal.

use crate::codec::CodecError;

use super::*;

/// A guarded server whose sessions need a `jwt0` token.
fn guarded() -> Arc<ServerConfig> {
    Server {
        guard: true,
        ..Server::default()
    }
    .build()
}

/// `north/#` publishes go to `north`, everything else to `south`.
fn north_and_south_server() -> Server {
    Server {
        routes: NORTH_ROUTES,
        exit: Some("south"),
        ..Server::default()
    }
}

/// [`north_and_south_server`], built.
fn north_and_south() -> Arc<ServerConfig> {
    north_and_south_server().build()
}

/// A will on `topic`.
fn will(topic: &'static str) -> LastWill {
    LastWill {
        topic: Bytes::from_static(topic.as_bytes()),
        message: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: None,
    }
}

/// The refusal of `opening`, which must be refused.
pub(super) fn refusal(opening: &mut Opening) -> Refusal {
    match opening.admit() {
        Err(refusal) => refusal,
        Ok(admission) => panic!("expected a refusal, admitted via {:?}", exits(&admission)),
    }
}

/// The admission of `opening`, which must be admitted.
pub(super) fn admitted(opening: &mut Opening) -> Admission {
    match opening.admit() {
        Ok(admission) => admission,
        Err(refusal) => panic!("expected an admission, refused: {}", refusal.why),
    }
}

/// The exit names an admission opens upstreams on, in order.
pub(super) fn exits(admission: &Admission) -> Vec<&str> {
    admission.opens.iter().map(|(name, _, _)| &**name).collect()
}

/// The reason string a refusal CONNACK carries.
pub(super) fn reason_string(refusal: &Refusal) -> Option<&str> {
    refusal
        .connack
        .properties
        .as_ref()
        .and_then(|p| p.reason_string.as_deref())
}

/// The bytes of a CONNACK encoded for a 3.1.1 client.
fn v4_bytes(connack: ConnAck) -> Vec<u8> {
    let mut out = BytesMut::new();
    codec::write(&Packet::ConnAck(connack), Version::V4, &mut out).expect("encodes");
    out.to_vec()
}

#[test]
fn enhanced_authentication_is_refused_as_a_bad_authentication_method() {
    let mut opening = Opening::new(Server::default().build(), Version::V5);
    opening.connect.properties = Some(ConnectProperties {
        authentication_method: Some("SCRAM-SHA-1".into()),
        ..connect_properties()
    });
    let refusal = refusal(&mut opening);
    assert_eq!(
        refusal.connack.code,
        ConnectReturnCode::BadAuthenticationMethod
    );
    assert_eq!(refusal.version, Version::V5);
    assert_eq!(refusal.client_id, "c1");
}

#[test]
fn an_empty_client_id_without_clean_start_is_not_a_valid_identifier() {
    let mut opening = Opening::new(Server::default().build(), Version::V5);
    opening.connect.client_id = String::new();
    opening.connect.clean_start = false;
    let refusal = refusal(&mut opening);
    assert_eq!(
        refusal.connack.code,
        ConnectReturnCode::ClientIdentifierNotValid
    );
    assert_eq!(
        reason_string(&refusal),
        Some("an empty client id needs clean start")
    );
}

#[test]
fn an_empty_client_id_with_clean_start_is_assigned_one_that_the_connack_names() {
    let mut opening = Opening::new(Server::default().build(), Version::V5);
    opening.connect.client_id = String::new();
    let mut h = opening.start();
    let ack = h.connack();
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let assigned = ack.properties.and_then(|p| p.assigned_client_identifier);
    assert_eq!(assigned.as_deref(), Some("zilla-assigned"));
    assert_eq!(h.session.client_id(), "zilla-assigned");
    assert_eq!(h.opens[0].connect.client_id, "zilla-assigned");
}

#[test]
fn a_guarded_server_refuses_a_connect_without_credentials() {
    let refusal = refusal(&mut Opening::new(guarded(), Version::V5));
    assert_eq!(refusal.connack.code, ConnectReturnCode::BadUserNamePassword);
    assert_eq!(
        reason_string(&refusal),
        Some("no credentials: the CONNECT has no user name")
    );
}

#[test]
fn a_token_granted_at_the_websocket_upgrade_admits_a_connect_without_credentials() {
    let admission =
        admitted(&mut Opening::new(guarded(), Version::V5).granted("alice:mqtt:stream"));
    assert_eq!(exits(&admission), vec!["north"]);
    assert_eq!(
        admission.authorized.as_deref(),
        Some(r#"jwt0 authorized identity alice"#)
    );
    // A client that forwards credentials upstream forwards the granted token.
    assert_eq!(
        admission.opens[0].2.credentials.as_deref(),
        Some("alice:mqtt:stream")
    );
}

#[test]
fn credentials_in_the_connect_win_over_a_token_granted_at_the_upgrade() {
    let mut opening = Opening::new(guarded(), Version::V5)
        .granted("alice:mqtt:stream")
        .token("bad");
    let refusal = refusal(&mut opening);
    assert_eq!(refusal.connack.code, ConnectReturnCode::BadUserNamePassword);
    assert_eq!(refusal.why, "jwt0 refused the credentials: signature");
}

#[test]
fn a_granted_token_takes_guarded_routes_only_with_their_roles() {
    let config = Server {
        routes: r#"
- exit: admin
  roles: [admin]
"#,
        guard: true,
        ..Server::default()
    }
    .build();
    let mut with_role = Opening::new(config.clone(), Version::V5).granted("alice:admin");
    assert_eq!(exits(&admitted(&mut with_role)), vec!["admin", "north"]);
    let mut without = Opening::new(config, Version::V5).granted("bob:mqtt");
    assert_eq!(exits(&admitted(&mut without)), vec!["north"]);
}

#[test]
fn a_user_name_not_in_the_bearer_form_is_a_bad_user_name() {
    let mut opening = Opening::new(guarded(), Version::V5);
    opening.login = Some(Login {
        username: "alice".into(),
        password: "secret".into(),
    });
    let refusal = refusal(&mut opening);
    assert_eq!(refusal.connack.code, ConnectReturnCode::BadUserNamePassword);
    assert_eq!(
        reason_string(&refusal),
        Some("the CONNECT user name does not hold credentials in the expected form")
    );
}

#[test]
fn credentials_the_guard_refuses_are_a_bad_user_name_or_password() {
    let refusal = refusal(&mut Opening::new(guarded(), Version::V5).token("bad"));
    assert_eq!(refusal.connack.code, ConnectReturnCode::BadUserNamePassword);
    assert_eq!(refusal.why, "jwt0 refused the credentials: signature");
}

#[test]
fn a_guard_that_cannot_decide_makes_the_server_unavailable() {
    let refusal = refusal(&mut Opening::new(guarded(), Version::V5).token("down"));
    assert_eq!(refusal.connack.code, ConnectReturnCode::ServerUnavailable);
    assert_eq!(refusal.why, "jwt0 cannot decide: keys unreachable");
}

#[test]
fn a_good_token_is_admitted_and_the_log_names_its_identity() {
    let admission = admitted(&mut Opening::new(guarded(), Version::V5).token("alice:mqtt:stream"));
    assert_eq!(exits(&admission), vec!["north"]);
    assert_eq!(
        admission.authorized.as_deref(),
        Some(r#"jwt0 authorized identity alice"#)
    );
}

#[test]
fn the_proxys_credentials_go_upstream_as_a_token_and_not_as_a_login() {
    let admission = admitted(&mut Opening::new(guarded(), Version::V5).token("alice:mqtt:stream"));
    let (_, _, open) = &admission.opens[0];
    assert_eq!(open.login, None);
    assert_eq!(open.credentials.as_deref(), Some("alice:mqtt:stream"));
}

#[test]
fn a_session_no_route_accepts_without_a_default_exit_is_not_authorized() {
    let config = Server {
        routes: r#"
- exit: sensors
  when:
    - session: [{client-id: "sensor-*"}]
"#,
        exit: None,
        ..Server::default()
    }
    .build();
    let refusal = refusal(&mut Opening::new(config, Version::V5));
    assert_eq!(refusal.connack.code, ConnectReturnCode::NotAuthorized);
    assert_eq!(refusal.why, "no route accepts this session");
}

#[test]
fn a_session_gets_every_exit_a_route_accepts_its_client_id_on_and_the_default() {
    let config = Server {
        routes: r#"
- exit: sensors
  when:
    - session: [{client-id: "sensor-*"}]
"#,
        ..Server::default()
    }
    .build();
    let mut opening = Opening::new(config.clone(), Version::V5);
    opening.connect.client_id = "sensor-7".into();
    assert_eq!(exits(&admitted(&mut opening)), vec!["sensors", "north"]);
    let other = admitted(&mut Opening::new(config, Version::V5));
    assert_eq!(exits(&other), vec!["north"]);
}

#[test]
fn a_guarded_route_is_taken_only_with_its_role() {
    let config = Server {
        routes: r#"
- exit: admin
  roles: [admin]
"#,
        guard: true,
        ..Server::default()
    }
    .build();
    let with_role = admitted(&mut Opening::new(config.clone(), Version::V5).token("alice:admin"));
    assert_eq!(exits(&with_role), vec!["admin", "north"]);
    let without = admitted(&mut Opening::new(config, Version::V5).token("bob:mqtt"));
    assert_eq!(exits(&without), vec!["north"]);
}

#[test]
fn a_will_goes_only_to_the_upstream_its_topic_routes_to() {
    let mut opening = Opening::new(north_and_south(), Version::V5);
    opening.will = Some(will("north/status"));
    let admission = admitted(&mut opening);
    assert_eq!(exits(&admission), vec!["north", "south"]);
    let wills: Vec<Option<LastWill>> = admission
        .opens
        .iter()
        .map(|(_, _, open)| open.will.clone())
        .collect();
    assert_eq!(wills, vec![Some(will("north/status")), None]);
}

#[test]
fn a_will_topic_no_route_takes_is_not_authorized() {
    let config = Server {
        routes: r#"
- exit: north
  when:
    - publish: [{topic: "north/#"}]
"#,
        exit: None,
        ..Server::default()
    }
    .build();
    let mut opening = Opening::new(config, Version::V5);
    opening.will = Some(will("south/status"));
    let refusal = refusal(&mut opening);
    assert_eq!(refusal.connack.code, ConnectReturnCode::NotAuthorized);
    assert_eq!(refusal.why, r#"no route for the will topic south/status"#);
}

#[test]
fn a_client_without_keep_alive_still_gets_an_upstream_keep_alive() {
    let mut opening = Opening::new(Server::default().build(), Version::V5);
    opening.connect.keep_alive = 0;
    let admission = admitted(&mut opening);
    assert_eq!(admission.connect.keep_alive, 0, "the client's own stays");
    let (_, _, open) = &admission.opens[0];
    assert_eq!(open.connect.keep_alive, admit::DEFAULT_UPSTREAM_KEEP_ALIVE);
    assert_eq!(open.connect.keep_alive, 60);
}

#[test]
fn brokers_are_not_offered_topic_aliases() {
    let mut opening = Opening::new(Server::default().build(), Version::V5);
    opening.connect.properties = Some(ConnectProperties {
        topic_alias_max: Some(10),
        receive_maximum: Some(5),
        ..connect_properties()
    });
    let admission = admitted(&mut opening);
    let (_, _, open) = &admission.opens[0];
    assert_eq!(
        open.connect.properties,
        Some(ConnectProperties {
            receive_maximum: Some(5),
            ..connect_properties()
        })
    );
}

#[test]
fn a_version_that_is_not_enabled_is_refused_in_its_own_terms() {
    let v5 = admit::version_refusal(Ok(Version::V5));
    assert_eq!(v5.version, Version::V5);
    assert_eq!(
        v5.connack.code,
        ConnectReturnCode::UnsupportedProtocolVersion
    );
    let v4 = admit::version_refusal(Ok(Version::V4));
    assert_eq!(v4.version, Version::V4);
    assert_eq!(v4.connack.code, ConnectReturnCode::RefusedProtocolVersion);
}

#[test]
fn an_unknown_protocol_level_is_refused_as_3_1_1() {
    let refusal = admit::version_refusal(Err(3));
    assert_eq!(refusal.version, Version::V4);
    assert_eq!(
        refusal.connack.code,
        ConnectReturnCode::RefusedProtocolVersion
    );
    assert_eq!(refusal.why, "unsupported protocol level 3; CONNACK refused");
    assert_eq!(v4_bytes(*refusal.connack), [0x20, 0x02, 0x00, 0x01]);
}

#[test]
fn a_malformed_connect_gets_a_connack_with_its_reason_only_on_mqtt5() {
    let error = |reason| CodecError {
        reason,
        message: "bad".into(),
    };
    let code = |reason| {
        admit::malformed_connect(Version::V5, &error(reason))
            .expect("a CONNACK")
            .code
    };
    assert_eq!(
        code(DisconnectReasonCode::PacketTooLarge),
        ConnectReturnCode::PacketTooLarge
    );
    assert_eq!(
        code(DisconnectReasonCode::ProtocolError),
        ConnectReturnCode::ProtocolError
    );
    assert_eq!(
        code(DisconnectReasonCode::UnspecifiedError),
        ConnectReturnCode::MalformedPacket
    );
    let v4 = admit::malformed_connect(Version::V4, &error(DisconnectReasonCode::ProtocolError));
    assert_eq!(v4, None);
}

#[test]
fn a_brokers_refusal_is_relayed_to_the_client_as_it_is() {
    let ack = ConnAck {
        session_present: false,
        code: ConnectReturnCode::Banned,
        properties: Some(ConnAckProperties {
            reason_string: Some("go away".into()),
            ..broker_properties()
        }),
    };
    let refusal = admit::upstream_refusal(
        Version::V5,
        "c1",
        "north",
        OpenError::Refused(Box::new(ack.clone())),
    );
    assert_eq!(*refusal.connack, ack);
    assert_eq!(refusal.client_id, "c1");
    assert_eq!(refusal.why, "broker behind north refused with 0x8A banned");
}

#[test]
fn an_upstream_that_does_not_open_makes_the_server_unavailable() {
    let refusal = admit::upstream_refusal(
        Version::V5,
        "c1",
        "north",
        OpenError::Failed("connection refused".into()),
    );
    assert_eq!(refusal.connack.code, ConnectReturnCode::ServerUnavailable);
    assert_eq!(
        refusal.why,
        "upstream north unavailable: connection refused"
    );
}

#[test]
fn the_connack_offers_only_what_every_broker_allows_and_the_proxys_own_window() {
    let config = Server {
        maximum_packet_size: 4000,
        ..north_and_south_server()
    };
    let mut opening = Opening::new(config.build(), Version::V5);
    let north = ConnAck {
        session_present: true,
        ..broker_ack(Some(ConnAckProperties {
            receive_max: Some(10),
            max_qos: Some(1),
            max_packet_size: Some(3000),
            ..broker_properties()
        }))
    };
    let south = broker_ack(Some(ConnAckProperties {
        receive_max: Some(20),
        max_qos: Some(0),
        max_packet_size: Some(5000),
        topic_alias_max: Some(5),
        ..broker_properties()
    }));
    opening.brokers = HashMap::from([("north", north), ("south", south)]);
    let mut h = opening.start();
    let ack = h.connack();
    assert_eq!(
        ack,
        ConnAck {
            session_present: false,
            code: ConnectReturnCode::Success,
            properties: Some(ConnAckProperties {
                receive_max: Some(u16::MAX),
                max_qos: Some(0),
                max_packet_size: Some(3000),
                topic_alias_max: Some(admit::TOPIC_ALIAS_MAXIMUM),
                ..broker_properties()
            }),
        }
    );
}

#[test]
fn the_servers_maximum_packet_size_caps_the_brokers() {
    let mut opening = Opening::new(
        Server {
            maximum_packet_size: 4000,
            ..Server::default()
        }
        .build(),
        Version::V5,
    );
    opening.broker = broker_ack(Some(ConnAckProperties {
        max_packet_size: Some(5000),
        ..broker_properties()
    }));
    let properties = opening.start().connack().properties.expect("properties");
    assert_eq!(properties.max_packet_size, Some(4000));
    assert_eq!(properties.topic_alias_max, Some(64));
}

#[test]
fn a_session_is_present_only_when_every_broker_had_it() {
    let mut opening = Opening::new(north_and_south(), Version::V5);
    opening.broker = ConnAck {
        session_present: true,
        ..broker_ack(None)
    };
    assert!(opening.start().connack().session_present);
    let mut opening = Opening::new(north_and_south(), Version::V5);
    opening.brokers = HashMap::from([(
        "north",
        ConnAck {
            session_present: true,
            ..broker_ack(None)
        },
    )]);
    assert!(!opening.start().connack().session_present);
}

#[test]
fn a_refusal_reads_as_its_3_1_1_return_code() {
    let bad = refusal(&mut Opening::new(guarded(), Version::V4).token("bad"));
    assert_eq!(bad.version, Version::V4);
    assert_eq!(v4_bytes(*bad.connack), [0x20, 0x02, 0x00, 0x04]);
    let down = refusal(&mut Opening::new(guarded(), Version::V4).token("down"));
    assert_eq!(v4_bytes(*down.connack), [0x20, 0x02, 0x00, 0x03]);
    let config = Server {
        exit: None,
        ..Server::default()
    }
    .build();
    let unrouted = refusal(&mut Opening::new(config, Version::V4));
    assert_eq!(unrouted.connack.code, ConnectReturnCode::NotAuthorized);
    assert_eq!(v4_bytes(*unrouted.connack), [0x20, 0x02, 0x00, 0x05]);
}

#[test]
fn a_binary_password_goes_upstream_as_the_bytes_the_client_sent() {
    let mut opening = Opening::new(Server::default().build(), Version::V5);
    let login = Login {
        username: "device".into(),
        password: Bytes::from_static(&[0xFF, 0xFE, 0x00, 0x80]),
    };
    opening.login = Some(login.clone());
    let admission = admitted(&mut opening);
    let (_, _, open) = &admission.opens[0];
    assert_eq!(open.login.as_ref(), Some(&login));
}

#[test]
fn a_binary_password_where_the_guard_needs_text_is_a_bad_user_name_or_password() {
    let config = Server {
        guard: true,
        in_password: true,
        ..Server::default()
    }
    .build();
    let mut opening = Opening::new(config, Version::V5);
    opening.login = Some(Login {
        username: String::new(),
        password: Bytes::from_static(&[0xFF, 0xFE]),
    });
    let refusal = refusal(&mut opening);
    assert_eq!(refusal.connack.code, ConnectReturnCode::BadUserNamePassword);
    assert_eq!(
        reason_string(&refusal),
        Some("the CONNECT password is binary, not the text the credentials need")
    );
    // The same guard takes a text password.
    opening.login = Some(Login {
        username: String::new(),
        password: Bytes::from_static(b"alice:mqtt"),
    });
    assert!(opening.admit().is_ok());
}
