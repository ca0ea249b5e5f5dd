//! `type: ws` in a `zilla.yaml`: it is registered, its options are strict and
//! located, and a ws client in a running engine opens WebSockets upstream.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::server::{
    Callback, ErrorResponse, Request, Response,
};
use zilla_binding_echo as _;
use zilla_binding_tcp as _;
use zilla_binding_ws as _;
use zilla_engine::Engine;

const CONFIG: &str = r#"
name: ws-build
bindings:
  north_ws_server:
    type: ws
    kind: server
    options:
      max-frame-size: 65536
    routes:
      - when:
          - protocol: mqtt
          - protocol: mqttv3.1
        exit: echo_server
  echo_server:
    type: echo
    kind: server
  south_ws_client:
    type: ws
    kind: client
    options:
      defaults:
        protocol: mqtt
        authority: localhost:8080
        path: /mqtt
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options: { host: 127.0.0.1, port: 8080 }
"#;

fn errors(config: &str) -> zilla_engine::ConfigErrors {
    match Engine::from_yaml(config).build() {
        Ok(_) => panic!("the configuration should be refused"),
        Err(errors) => errors,
    }
}

#[test]
fn both_kinds_build_from_zilla_yaml() {
    let registered = zilla_engine::registered();
    assert!(registered.bindings.iter().any(|(name, _)| *name == "ws"));
    Engine::from_yaml(CONFIG).build().expect("config is valid");
}

#[test]
fn options_are_strict_and_located() {
    let found = errors(&CONFIG.replace("max-frame-size: 65536", "max-frame: 65536"));
    assert!(
        found.mentions("bindings.north_ws_server.options.max-frame: unknown field `max-frame`"),
        "{found}"
    );
    let found = errors(&CONFIG.replace("max-frame-size: 65536", "max-frame-size: 10"));
    assert!(
        found.mentions("bindings.north_ws_server.options.max-frame-size: at least 125"),
        "{found}"
    );
    let found = errors(&CONFIG.replace("max-frame-size: 65536", "defaults: { protocol: mqtt }"));
    assert!(
        found.mentions("`defaults` applies to ws clients"),
        "{found}"
    );
    let found = errors(&CONFIG.replace("- protocol: mqttv3.1", "- scheme: mqtt"));
    assert!(
        found.mentions("routes[0].when[1].scheme: expected http, https, ws or wss"),
        "{found}"
    );
    let found = errors(&CONFIG.replace("path: /mqtt", "path: mqtt"));
    assert!(found.mentions("options.defaults.path"), "{found}");
    let found = errors(&CONFIG.replace("    exit: south_tcp_client\n", ""));
    assert!(found.mentions("a ws client needs an `exit`"), "{found}");
}

#[test]
fn limits_come_from_engine_properties() {
    let found = match Engine::from_yaml(CONFIG)
        .property("zilla.binding.ws.max.message.bytes", "lots")
        .build()
    {
        Ok(_) => panic!("a bad property should be refused"),
        Err(errors) => errors,
    };
    assert!(
        found.mentions("-P zilla.binding.ws.max.message.bytes: expected a number of bytes"),
        "{found}"
    );
    Engine::from_yaml(CONFIG)
        .property("zilla.binding.ws.max.message.bytes", "4194304")
        .build()
        .expect("a number of bytes is fine");
}

/// Answers subprotocol `mqtt`, as mosquitto's websockets listener does.
struct AnswerMqtt;

impl Callback for AnswerMqtt {
    fn on_request(
        self,
        request: &Request,
        mut response: Response,
    ) -> Result<Response, ErrorResponse> {
        assert_eq!(request.uri().path(), "/mqtt");
        assert_eq!(request.headers()["sec-websocket-protocol"], "mqtt");
        response
            .headers_mut()
            .insert("sec-websocket-protocol", "mqtt".parse().unwrap());
        Ok(response)
    }
}

/// `tcp server -> ws client -> tcp client` in front of a WebSocket server
/// that, like mosquitto's websockets listener, answers subprotocol `mqtt`.
#[tokio::test]
async fn ws_client_in_an_engine_reaches_a_websocket_server() {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_port = upstream.local_addr().unwrap().port();
    let config = format!(
        r#"
name: ws-client
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: {{ host: 127.0.0.1, port: 0 }}
    exit: south_ws_client
  south_ws_client:
    type: ws
    kind: client
    options:
      defaults: {{ protocol: mqtt, path: /mqtt }}
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {upstream_port} }}
"#
    );
    let engine = Engine::from_yaml(config).build().expect("config is valid");
    let started = engine.start().await.expect("engine starts");
    let proxy = started
        .iter()
        .find(|b| b.name == "north_tcp_server")
        .unwrap()
        .listening[0];

    let server = tokio::spawn(async move {
        let (socket, _) = upstream.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_hdr_async(socket, AnswerMqtt)
            .await
            .unwrap();
        let packet = ws.next().await.unwrap().unwrap();
        assert!(packet.is_binary());
        ws.send(packet).await.unwrap();
        ws.close(None).await.unwrap();
    });

    let wait = std::time::Duration::from_secs(10);
    let mut client = tokio::net::TcpStream::connect(proxy).await.unwrap();
    client.write_all(&[0xc0, 0x00]).await.unwrap();
    let mut echoed = [0u8; 2];
    tokio::time::timeout(wait, client.read_exact(&mut echoed))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(echoed, [0xc0, 0x00]);
    tokio::time::timeout(wait, server)
        .await
        .expect("server done")
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(wait, client.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .unwrap();
    drop(client);
    engine.shutdown().await;
}
