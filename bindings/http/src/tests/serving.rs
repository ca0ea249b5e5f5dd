//! Serving: routing by headers, the limits on request heads, upgrades and
//! HTTP/2.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::{capture, served, Served};
use crate::server::{PROPERTY_HEADER_MAX_BYTES, PROPERTY_HEADER_TIMEOUT};

/// A server routing WebSocket upgrades on `/mqtt*` to `ws_exit`, `/api/*`
/// to `api_exit`, and `localhost:*` (any path) to `local_exit`.
fn routed(name: &str, versions: &str, properties: &[(&str, &str)]) -> Served {
    served(
        &format!(
            r#"
name: {name}
bindings:
  driver:
    type: test-driver
    kind: server
    exit: http_server
  http_server:
    type: http
    kind: server
    options:
      versions: {versions}
    routes:
      - when:
          - headers:
              upgrade: websocket
              ":path": /mqtt*
        exit: ws_exit
      - when:
          - headers: {{ ":path": /api/*, ":method": GET }}
          - headers: {{ ":path": /api/*, ":method": HEAD }}
        exit: api_exit
      - when:
          - headers: {{ ":authority": "localhost:*", ":scheme": https }}
        exit: local_exit
  ws_exit: {{ type: test-http-exit, kind: server }}
  api_exit: {{ type: test-http-exit, kind: server }}
  local_exit: {{ type: test-http-exit, kind: server }}
"#
        ),
        properties,
    )
}

fn upgrade_request(path: &str, upgrade: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: {upgrade}\r\n\r\n"
    )
}

#[tokio::test]
async fn requests_are_routed_by_path_method_and_upgrade_header() {
    let server = routed("routes", "[http/1.1, h2]", &[]);
    let response = server
        .request("GET /api/items?x=1 HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(response.status(), 200, "{response:?}");
    assert_eq!(response.body(), "api_exit GET /api/items?x=1 granted=-");

    // `upgrade` compares case-insensitively: clients send both spellings.
    for spelling in ["websocket", "WebSocket"] {
        let (mut client, _task) = server.connect(false);
        let request = upgrade_request("/mqtt/v1", spelling);
        client.write_all(request.as_bytes()).await.unwrap();
        let head = read_head(&mut client).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    }

    // The same upgrade elsewhere, or a POST to /api, is not routed.
    let response = server
        .request(
            &upgrade_request("/other", "websocket")
                .replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n"),
        )
        .await;
    assert_eq!(response.status(), 404, "{response:?}");
    let response = server
        .request(
            "POST /api/items HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn scheme_and_authority_come_from_the_stream_and_host() {
    let server = routed("authority", "[http/1.1]", &[]);
    let request = "GET /anything HTTP/1.1\r\nHost: localhost:7114\r\nConnection: close\r\n\r\n";
    let (mut client, _task) = server.connect(true);
    client.write_all(request.as_bytes()).await.unwrap();
    let mut received = String::new();
    client.read_to_string(&mut received).await.unwrap();
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    assert!(received.ends_with("local_exit GET /anything granted=-"));

    // Not over TLS, `:scheme` is `http`: no route.
    let response = server.request(request).await;
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn a_request_no_route_takes_is_answered_404() {
    let events = capture();
    let server = routed("not-found", "[http/1.1]", &[]);
    let response = server
        .request("GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(response.status(), 404);
    let message = events.message("HTTP_ROUTE_REJECTED");
    assert!(message.contains("192.0.2.7:50000"), "{message}");
    assert!(message.contains("GET /nowhere"), "{message}");
}

#[tokio::test]
async fn garbage_is_answered_400() {
    let events = capture();
    let server = routed("garbage", "[http/1.1, h2]", &[]);
    let response = server.request("this is not http\r\n\r\n").await;
    assert_eq!(response.status(), 400, "{response:?}");
    assert!(events
        .message("HTTP_REQUEST_MALFORMED")
        .contains("192.0.2.7:50000"));
}

#[tokio::test]
async fn an_oversize_head_is_answered_431() {
    let events = capture();
    let server = routed("oversize", "[http/1.1, h2]", &[]);
    let big = "a".repeat(20 * 1024);
    let response = server
        .request(&format!(
            "GET /api/x HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n"
        ))
        .await;
    assert_eq!(response.status(), 431, "{response:?}");
    assert!(events
        .message("HTTP_HEADERS_TOO_LARGE")
        .contains("over 16384 bytes"));

    // The limit is an engine property; a head within it passes.
    let server = routed(
        "oversize-small",
        "[http/1.1]",
        &[(PROPERTY_HEADER_MAX_BYTES, "1024")],
    );
    let fits = "a".repeat(500);
    let response = server
        .request(&format!(
            "GET /api/x HTTP/1.1\r\nHost: x\r\nX-Big: {fits}\r\nConnection: close\r\n\r\n"
        ))
        .await;
    assert_eq!(response.status(), 200);
    let over = "a".repeat(2000);
    let response = server
        .request(&format!(
            "GET /api/x HTTP/1.1\r\nHost: x\r\nX-Big: {over}\r\n\r\n"
        ))
        .await;
    assert_eq!(response.status(), 431);
}

#[tokio::test(start_paused = true)]
async fn a_slow_head_is_closed_at_the_header_timeout() {
    let events = capture();
    for (name, versions) in [("slow-h1", "[http/1.1]"), ("slow-both", "[http/1.1, h2]")] {
        let server = routed(name, versions, &[]);
        let started = Instant::now();
        let (mut client, task) = server.connect(false);
        client
            .write_all(b"GET /api/x HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        task.await.unwrap();
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(10) && waited < Duration::from_secs(11),
            "{name}: closed after {waited:?}"
        );
    }
    assert_eq!(events.count("HTTP_HEADER_TIMEOUT"), 2);
    assert!(events
        .message("HTTP_HEADER_TIMEOUT")
        .contains("192.0.2.7:50000"));
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_closed_at_the_header_timeout() {
    let events = capture();
    // With h2, the server first waits for bytes telling the versions apart.
    let server = routed(
        "silent",
        "[http/1.1, h2]",
        &[(PROPERTY_HEADER_TIMEOUT, "2.5")],
    );
    let started = Instant::now();
    let (mut client, task) = server.connect(false);
    let mut received = Vec::new();
    client.read_to_end(&mut received).await.unwrap();
    task.await.unwrap();
    assert!(received.is_empty());
    assert_eq!(started.elapsed(), Duration::from_millis(2500));
    assert!(events.message("HTTP_HEADER_TIMEOUT").contains("2.5 s"));
}

#[tokio::test]
async fn an_upgraded_connection_carries_bytes_both_ways() {
    let server = routed("upgrade", "[http/1.1, h2]", &[]);
    let (mut client, task) = server.connect(false);
    client
        .write_all(upgrade_request("/mqtt", "websocket").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );

    // The exit's upgrade speaks first, then echoes.
    let mut hello = [0u8; 10];
    client.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"granted=-\n");
    client.write_all(b"\x10\x0cMQTT bytes").await.unwrap();
    let mut echoed = [0u8; 12];
    client.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"\x10\x0cMQTT bytes");
    drop(client);
    task.await.unwrap();
}

#[tokio::test]
async fn a_101_without_an_upgrade_is_answered_500() {
    let events = capture();
    let server = served(
        r#"
name: no-takeover-exit
bindings:
  driver: { type: test-driver, kind: server, exit: http_server }
  http_server: { type: http, kind: server, exit: ws_exit }
  ws_exit: { type: test-http-exit, kind: server }
"#,
        &[],
    );
    // `close` too, so that the connection ends after the 500.
    let request = upgrade_request("/no-takeover", "websocket")
        .replace("Connection: Upgrade", "Connection: Upgrade, close");
    let response = server.request(&request).await;
    assert_eq!(response.status(), 500, "{response:?}");
    assert!(events.message("HTTP_UPGRADE_FAILED").contains("ws_exit"));
}

#[tokio::test]
async fn http2_prior_knowledge_is_served_and_routed() {
    let server = routed("h2", "[http/1.1, h2]", &[]);
    let (client, _task) = server.connect(true);
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
            .await
            .unwrap();
    tokio::spawn(connection);
    for (uri, body) in [
        (
            "https://localhost:7143/any",
            "local_exit GET /any granted=-",
        ),
        ("https://example.com/api/x", "api_exit GET /api/x granted=-"),
    ] {
        let request = http::Request::get(uri).body(Empty::<Bytes>::new()).unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200, "{uri}");
        let received = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&received[..], body.as_bytes());
    }
}

/// Reads a response head, byte by byte so nothing after it is consumed.
async fn read_head(client: &mut tokio::io::DuplexStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if client.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}
