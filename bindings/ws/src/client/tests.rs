//! The ws client against the ws server over an in-memory pipe: the client's
//! exit is a connector whose far end an http server hands to the ws server.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zilla_engine::{
    Authority, ConnectRequest, Exit, Routes, Shutdown, StreamConnector, StreamHandler, StreamInfo,
};

use super::WsClient;
use crate::options::Limits;
use crate::server::WsServer;
use crate::testing::{events, route, within, Echo, PipeConnector};

/// A ws server whose `mqtt` route (and only that) leads to an echo exit.
fn mqtt_echo_server() -> Arc<WsServer> {
    let routes = Routes::new(
        vec![route(&["protocol: mqtt"], "echo", Arc::new(Echo))],
        None,
    );
    Arc::new(WsServer::new(routes, Limits::default(), events()))
}

fn client(
    connector: Arc<PipeConnector>,
    protocol: Option<&str>,
    authority: Option<&str>,
) -> WsClient {
    WsClient {
        exit: Exit {
            name: "pipe".into(),
            port: connector,
        },
        protocol: protocol.map(str::to_owned),
        secure: false,
        authority: authority.map(str::to_owned),
        path: "/mqtt".into(),
        limits: Limits::default(),
        events: events(),
        shutdown: Shutdown::new(),
    }
}

fn to_broker() -> ConnectRequest {
    ConnectRequest {
        authority: Some(Authority {
            host: "broker".into(),
            port: 8080,
        }),
        origin: StreamInfo::default(),
        reached: None,
    }
}

#[tokio::test]
async fn client_kind_talks_to_server_kind() {
    let connector = PipeConnector::new(mqtt_echo_server());
    let client = client(connector.clone(), Some("mqtt"), None);
    let mut stream = within(client.connect(to_broker()))
        .await
        .expect("connected");
    // The caller's authority went down to the exit (and into `Host`).
    assert_eq!(
        connector.asked.lock().unwrap().as_slice(),
        [Some(Authority {
            host: "broker".into(),
            port: 8080
        })]
    );

    let pingreq = [0xc0, 0x00];
    within(stream.write_all(&pingreq)).await.unwrap();
    within(stream.flush()).await.unwrap();
    let mut echoed = [0u8; 2];
    within(stream.read_exact(&mut echoed)).await.unwrap();
    assert_eq!(echoed, pingreq);

    // A clean close both ways: the echo exit sees EOF and shuts down too.
    within(stream.shutdown()).await.unwrap();
    let mut rest = Vec::new();
    assert_eq!(within(stream.read_to_end(&mut rest)).await.unwrap(), 0);
}

#[tokio::test]
async fn client_fails_when_the_server_has_no_route_for_its_protocol() {
    let connector = PipeConnector::new(mqtt_echo_server());
    let client = client(connector, Some("echo"), Some("localhost:7114"));
    let error = match within(client.connect(to_broker())).await {
        Ok(_) => panic!("connected without a route"),
        Err(error) => error,
    };
    assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
    assert!(error.to_string().contains("400"), "{error}");
}

#[tokio::test]
async fn client_asks_for_localhost_when_nobody_names_an_authority() {
    // The server routes only requests whose `Host` is `localhost`.
    let routes = Routes::new(
        vec![route(
            &["{protocol: mqtt, authority: localhost}"],
            "echo",
            Arc::new(Echo),
        )],
        None,
    );
    let server = Arc::new(WsServer::new(routes, Limits::default(), events()));
    let connector = PipeConnector::new(server);
    let client = client(connector.clone(), Some("mqtt"), None);
    let stream = within(client.connect(ConnectRequest::default())).await;
    assert!(stream.is_ok(), "Host: localhost was routed");
    assert_eq!(connector.asked.lock().unwrap().as_slice(), [None]);

    let client = self::client(connector, Some("mqtt"), Some("broker:8080"));
    let refused = within(client.connect(ConnectRequest::default())).await;
    assert!(refused.is_err(), "Host: broker:8080 has no route");
}

#[tokio::test]
async fn client_relays_a_whole_stream_through_a_websocket() {
    let connector = PipeConnector::new(mqtt_echo_server());
    let client = Arc::new(client(connector, Some("mqtt"), Some("localhost:7114")));
    let (mut near, far) = tokio::io::duplex(64 * 1024);
    let relay = tokio::spawn({
        let client = client.clone();
        async move { client.handle(Box::new(far), StreamInfo::default()).await }
    });
    within(near.write_all(b"through")).await.unwrap();
    let mut echoed = [0u8; 7];
    within(near.read_exact(&mut echoed)).await.unwrap();
    assert_eq!(&echoed, b"through");
    within(near.shutdown()).await.unwrap();
    let mut rest = Vec::new();
    within(near.read_to_end(&mut rest)).await.unwrap();
    within(relay).await.unwrap();
}
