//! The ws server as the http server's exit: refusals, routing and
//! subprotocol negotiation, and the upgraded stream reaching the route's exit.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use http::header::{SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL};
use http::{HeaderValue, Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use zilla_binding_http::{HttpAnswer, HttpHandler};
use zilla_engine::route::GuardRequirement;
use zilla_engine::{
    async_trait, Exit, Granted, Guard, GuardRejection, GuardSession, Routes, StreamHandler,
    StreamInfo,
};

use super::WsServer;
use crate::handshake::tests::{head, upgrade_request};
use crate::options::Limits;
use crate::testing::{events, route, serve_upgrade, within, ws_client, Capture, Captured};

fn server(routes: Vec<zilla_engine::Route<crate::WsCondition, dyn StreamHandler>>) -> WsServer {
    WsServer::new(Routes::new(routes, None), Limits::default(), events())
}

/// Two capturing exits `a` and `b`, and where their streams arrive.
fn exits() -> (Arc<dyn StreamHandler>, Arc<dyn StreamHandler>, Captured) {
    let (exits, captured) = Capture::exits(&["a", "b"]);
    (exits[0].clone(), exits[1].clone(), captured)
}

async fn answer(server: &WsServer, protocols: Option<&str>, info: StreamInfo) -> HttpAnswer {
    within(server.handle(head(upgrade_request(protocols)), info)).await
}

fn answered_protocol(answer: &HttpAnswer) -> Option<&str> {
    answer
        .response
        .headers()
        .get(SEC_WEBSOCKET_PROTOCOL)
        .map(|value| value.to_str().unwrap())
}

/// Runs the answer's upgrade on a pipe; returns the exit that got the
/// stream, with what it got.
async fn upgrade(
    answer: HttpAnswer,
    info: StreamInfo,
    captured: &mut Captured,
) -> (
    &'static str,
    zilla_engine::ByteStream,
    StreamInfo,
    tokio::io::DuplexStream,
) {
    let upgrade = answer.upgrade.expect("an upgrade");
    let (raw, transport) = tokio::io::duplex(64 * 1024);
    tokio::spawn(upgrade(Box::new(transport), info));
    let (name, stream, info) = within(captured.recv()).await.expect("a stream");
    (name, stream, info, raw)
}

#[tokio::test]
async fn refused_handshakes_answer_without_upgrading() {
    let (a, _, _captured) = exits();
    let server = server(vec![route(&[], "a", a)]);

    let mut missing_key = head(upgrade_request(Some("mqtt")));
    missing_key.headers.remove(SEC_WEBSOCKET_KEY);
    let mut wrong_version = head(upgrade_request(Some("mqtt")));
    wrong_version
        .headers
        .insert("sec-websocket-version", HeaderValue::from_static("12"));
    let post = head(upgrade_request(Some("mqtt")).method(Method::POST));
    for (request, status) in [
        (missing_key, StatusCode::BAD_REQUEST),
        (wrong_version, StatusCode::UPGRADE_REQUIRED),
        (post, StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let answer = within(server.handle(request, StreamInfo::default())).await;
        assert_eq!(answer.response.status(), status);
        assert!(answer.upgrade.is_none());
    }
    let answer = answer(&server, Some("mqtt"), StreamInfo::default()).await;
    assert_eq!(answer.response.status(), StatusCode::SWITCHING_PROTOCOLS);
}

#[tokio::test]
async fn no_route_for_the_offered_protocols_is_400() {
    let (a, _, _captured) = exits();
    let server = server(vec![route(&["protocol: mqtt"], "a", a)]);
    for offered in [Some("echo, mqttv3.1"), None] {
        let answer = answer(&server, offered, StreamInfo::default()).await;
        assert_eq!(
            answer.response.status(),
            StatusCode::BAD_REQUEST,
            "{offered:?}"
        );
        assert!(answer.upgrade.is_none());
    }
}

#[tokio::test]
async fn subprotocol_is_chosen_by_route_order() {
    let (a, b, mut captured) = exits();
    // The client prefers `mqtt`, but the first route wins.
    let legacy_first = server(vec![
        route(&["protocol: mqttv3.1"], "a", a.clone()),
        route(&["protocol: mqtt"], "b", b.clone()),
    ]);
    let answer_ = answer(&legacy_first, Some("mqtt, mqttv3.1"), StreamInfo::default()).await;
    assert_eq!(answered_protocol(&answer_), Some("mqttv3.1"));
    let (name, ..) = upgrade(answer_, StreamInfo::default(), &mut captured).await;
    assert_eq!(name, "a");

    let mqtt_first = server(vec![
        route(&["protocol: mqtt"], "b", b),
        route(&["protocol: mqttv3.1"], "a", a),
    ]);
    let answer_ = answer(&mqtt_first, Some("mqttv3.1, mqtt"), StreamInfo::default()).await;
    assert_eq!(answered_protocol(&answer_), Some("mqtt"));
    let (name, ..) = upgrade(answer_, StreamInfo::default(), &mut captured).await;
    assert_eq!(name, "b");
}

#[tokio::test]
async fn a_route_without_protocol_answers_the_first_offer_it_matches() {
    let (a, _, _captured) = exits();
    let server = server(vec![route(&["path: /mqtt"], "a", a)]);
    let offered = answer(&server, Some("mqtt, mqttv3.1"), StreamInfo::default()).await;
    assert_eq!(answered_protocol(&offered), Some("mqtt"));
    let none = answer(&server, None, StreamInfo::default()).await;
    assert_eq!(none.response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(answered_protocol(&none), None);
}

#[tokio::test]
async fn routes_match_scheme_authority_and_path() {
    let (a, b, mut captured) = exits();
    let server = server(vec![
        route(&["{protocol: mqtt, scheme: https, path: /mqtt}"], "a", a),
        route(&["{authority: 'localhost:*', path: '/mq*'}"], "b", b),
    ]);
    let secure = StreamInfo {
        secure: true,
        ..StreamInfo::default()
    };
    let answer_ = answer(&server, Some("mqtt"), secure.clone()).await;
    assert_eq!(upgrade(answer_, secure, &mut captured).await.0, "a");
    let answer_ = answer(&server, Some("mqtt"), StreamInfo::default()).await;
    assert_eq!(
        upgrade(answer_, StreamInfo::default(), &mut captured)
            .await
            .0,
        "b"
    );

    let mut elsewhere = head(upgrade_request(Some("mqtt")));
    elsewhere
        .headers
        .insert("host", HeaderValue::from_static("example.com"));
    let answer = within(server.handle(elsewhere, StreamInfo::default())).await;
    assert_eq!(answer.response.status(), StatusCode::BAD_REQUEST);
}

struct Roles;

#[async_trait]
impl Guard for Roles {
    async fn authorize(&self, _: &str) -> Result<GuardSession, GuardRejection> {
        Err(GuardRejection::InvalidCredentials("unused".into()))
    }
}

#[tokio::test]
async fn guarded_routes_see_what_the_http_layer_granted() {
    let (a, b, mut captured) = exits();
    let mut admin = route(&[], "a", a);
    admin.guarded.push(GuardRequirement {
        guard_name: "jwt".into(),
        guard: Arc::new(Roles),
        roles: vec!["mqtt:admin".into()],
    });
    let server = WsServer::new(
        Routes::new(
            vec![admin],
            Some(Exit {
                name: "b".into(),
                port: b,
            }),
        ),
        Limits::default(),
        events(),
    );
    let granted = StreamInfo {
        granted: vec![Granted {
            guard: "jwt".into(),
            session: GuardSession {
                roles: vec!["mqtt:admin".into()],
                ..GuardSession::default()
            },
            credentials: "token".into(),
        }],
        ..StreamInfo::default()
    };
    let answer_ = answer(&server, Some("mqtt"), granted.clone()).await;
    let (name, _, info, _) = upgrade(answer_, granted, &mut captured).await;
    assert_eq!(name, "a");
    assert!(info.granted("jwt").is_some(), "the grant travels on");
    // Without the grant the default exit takes it, answering the first offer.
    let answer_ = answer(&server, Some("mqtt"), StreamInfo::default()).await;
    assert_eq!(answered_protocol(&answer_), Some("mqtt"));
    assert_eq!(
        upgrade(answer_, StreamInfo::default(), &mut captured)
            .await
            .0,
        "b"
    );
}

#[tokio::test]
async fn the_exit_gets_the_upgraded_stream_as_bytes() {
    let (a, _, mut captured) = exits();
    let server: Arc<dyn HttpHandler> = Arc::new(server(vec![route(&["protocol: mqtt"], "a", a)]));
    let (raw, transport) = tokio::io::duplex(64 * 1024);
    let peer = StreamInfo {
        peer: Some("10.0.0.7:51234".parse().unwrap()),
        ..StreamInfo::default()
    };
    let http = tokio::spawn(async move { serve_upgrade(&*server, transport, peer).await });

    let mut request = "ws://localhost:7114/mqtt".into_client_request().unwrap();
    request
        .headers_mut()
        .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("mqtt"));
    let (mut client, response) = within(tokio_tungstenite::client_async(request, raw))
        .await
        .expect("handshake");
    assert_eq!(response.headers()[SEC_WEBSOCKET_PROTOCOL], "mqtt");
    assert!(response.headers().contains_key(SEC_WEBSOCKET_ACCEPT));
    assert_eq!(within(http).await.unwrap(), StatusCode::SWITCHING_PROTOCOLS);

    let (_, mut stream, info) = within(captured.recv()).await.unwrap();
    assert_eq!(info.peer, Some("10.0.0.7:51234".parse().unwrap()));
    within(client.send(Message::binary(vec![0xc0, 0x00])))
        .await
        .unwrap();
    let mut pingreq = [0u8; 2];
    within(stream.read_exact(&mut pingreq)).await.unwrap();
    assert_eq!(pingreq, [0xc0, 0x00]);
    within(stream.write_all(&[0xd0, 0x00])).await.unwrap();
    within(stream.flush()).await.unwrap();
    let pingresp = within(client.next()).await.unwrap().unwrap();
    assert_eq!(pingresp, Message::binary(vec![0xd0, 0x00]));
}

#[tokio::test]
async fn text_on_the_mqtt_route_fails_but_echo_route_accepts_it() {
    let (a, b, mut captured) = exits();
    let server = server(vec![
        route(&["protocol: mqtt"], "a", a),
        route(&["protocol: echo"], "b", b),
    ]);
    for (protocol, accepted) in [("mqtt", false), ("echo", true)] {
        let answer_ = answer(&server, Some(protocol), StreamInfo::default()).await;
        let (_, mut stream, _, raw) = upgrade(answer_, StreamInfo::default(), &mut captured).await;
        let mut client = ws_client(raw).await;
        within(client.send(Message::text("hi"))).await.unwrap();
        let mut read = [0u8; 2];
        let result = within(stream.read_exact(&mut read)).await;
        assert_eq!(result.is_ok(), accepted, "{protocol}");
    }
}
