//! Sessions behind several proxy replicas: the broker ends a session that
//! the same client id reopened through another replica, and a draining
//! replica sends its clients elsewhere.

use mqtt_bytes_v5::{Disconnect, DisconnectProperties};

use super::*;
use crate::session::end::disconnect;

fn taken_over_by_the_broker() -> Disconnect {
    disconnect(
        DisconnectReasonCode::SessionTakenOver,
        Some("another connection".into()),
    )
}

/// A started session on an upstream speaking `upstream_version`.
fn started_on(version: Version, upstream_version: Version) -> Harness {
    let mut opening = Opening::new(Server::default().build(), version);
    opening.upstream_version = upstream_version;
    let mut h = opening.start();
    h.connack();
    h
}

#[test]
fn an_mqtt5_brokers_takeover_reaches_an_mqtt5_client_as_0x8e() {
    let mut h = started(Version::V5);
    let end = h.upstream(0, Packet::Disconnect(taken_over_by_the_broker()));
    let Err(end @ End::UpstreamDisconnected(0, _)) = end else {
        panic!("expected the broker's DISCONNECT, got {end:?}");
    };
    assert_eq!(h.finish(end), Closing::CloseClient);
    assert_eq!(
        h.take_client(),
        vec![Packet::Disconnect(taken_over_by_the_broker())]
    );
    assert!(h.take_upstream(0).is_empty(), "the broker already ended it");
}

#[test]
fn an_mqtt_3_1_1_brokers_close_tells_an_mqtt5_client_0x8e() {
    let mut h = started_on(Version::V5, Version::V4);
    assert_eq!(h.finish(End::UpstreamClosed(0)), Closing::CloseClient);
    assert_eq!(
        h.take_client(),
        vec![Packet::Disconnect(disconnect(
            DisconnectReasonCode::SessionTakenOver,
            Some("upstream north closed the session".into())
        ))]
    );
}

#[test]
fn an_mqtt_3_1_1_brokers_close_closes_an_mqtt_3_1_1_client() {
    let mut h = started_on(Version::V4, Version::V4);
    assert_eq!(h.finish(End::UpstreamClosed(0)), Closing::CloseClient);
    assert!(h.take_client().is_empty(), "3.1.1 has no server DISCONNECT");
}

#[test]
fn an_mqtt5_brokers_close_without_disconnect_is_a_lost_upstream() {
    let mut h = started(Version::V5);
    assert_eq!(h.finish(End::UpstreamClosed(0)), Closing::CloseClient);
    assert_eq!(
        h.take_client(),
        vec![Packet::Disconnect(disconnect(
            DisconnectReasonCode::UnspecifiedError,
            Some("upstream north unavailable".into())
        ))]
    );
}

#[test]
fn a_draining_proxy_names_where_to_reconnect() {
    let mut h = Opening::new(
        Server {
            server_reference: Some("mqtt.example.com:8883"),
            ..Server::default()
        }
        .build(),
        Version::V5,
    )
    .start();
    h.connack();
    assert_eq!(
        h.finish(End::Draining),
        Closing::FlushUpstreamsThenCloseClient
    );
    assert_eq!(
        h.take_client(),
        vec![Packet::Disconnect(Disconnect {
            reason_code: DisconnectReasonCode::ServerShuttingDown,
            properties: Some(DisconnectProperties {
                session_expiry_interval: None,
                reason_string: Some("server shutting down".into()),
                user_properties: Vec::new(),
                server_reference: Some("mqtt.example.com:8883".into()),
            }),
        })]
    );
}
