//! Security: CORS and refused origins, credentials and guarded routes.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{capture, served, Served};

/// A server with `access-control` as given, authorization by `test_guard`
/// from a header, a query parameter or a cookie, `/private*` guarded by
/// role `read`, `/public*` open, and WebSocket upgrades on `/mqtt` open to
/// anyone authenticated.
fn secured(name: &str, access_control: &str) -> Served {
    served(
        &format!(
            r#"
name: {name}
guards:
  test_guard:
    type: test-guard
bindings:
  driver:
    type: test-driver
    kind: server
    exit: http_server
  http_server:
    type: http
    kind: server
    options:
      versions: [http/1.1]
      access-control: {access_control}
      authorization:
        test_guard:
          credentials:
            headers:
              authorization: Bearer {{credentials}}
            query:
              access_token: "{{credentials}}"
            cookies:
              access_token: "{{credentials}}"
    routes:
      - when:
          - headers: {{ ":path": /private* }}
        guarded:
          test_guard: [read]
        exit: private_exit
      - when:
          - headers: {{ ":path": /public* }}
        exit: public_exit
      - when:
          - headers: {{ ":path": /mqtt*, upgrade: websocket }}
        guarded:
          test_guard: []
        exit: ws_exit
  private_exit: {{ type: test-http-exit, kind: server }}
  public_exit: {{ type: test-http-exit, kind: server }}
  ws_exit: {{ type: test-http-exit, kind: server }}
"#
        ),
        &[],
    )
}

const CROSS_ORIGIN: &str = r#"
        policy: cross-origin
        allow:
          origins: [https://app.example.com]
          methods: [GET, POST]
          credentials: true
        max-age: 600
        expose:
          headers: [x-exit]"#;

fn get(path: &str, headers: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: api.example.com\r\n{headers}Connection: close\r\n\r\n")
}

#[tokio::test]
async fn a_preflight_is_answered_by_the_server() {
    let server = secured("preflight", CROSS_ORIGIN);
    let response = server
        .request(
            "OPTIONS /private/items HTTP/1.1\r\nHost: api.example.com\r\n\
             Origin: https://app.example.com\r\nAccess-Control-Request-Method: POST\r\n\
             Access-Control-Request-Headers: authorization\r\nConnection: close\r\n\r\n",
        )
        .await;
    assert_eq!(response.status(), 204, "{response:?}");
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        response.header("access-control-allow-methods"),
        Some("GET, POST")
    );
    assert_eq!(
        response.header("access-control-allow-headers"),
        Some("authorization")
    );
    assert_eq!(
        response.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(response.header("access-control-max-age"), Some("600"));
    assert_eq!(response.header("vary"), Some("Origin"));
}

#[tokio::test]
async fn responses_to_allowed_origins_carry_cors_headers() {
    let server = secured("cors-allowed", CROSS_ORIGIN);
    let response = server
        .request(&get("/public/x", "Origin: https://app.example.com\r\n"))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        response.header("access-control-expose-headers"),
        Some("x-exit")
    );
    // Refusals are readable by the page too.
    let response = server
        .request(&get("/private/x", "Origin: https://app.example.com\r\n"))
        .await;
    assert_eq!(response.status(), 401);
    assert!(response.header("access-control-allow-origin").is_some());
}

#[tokio::test]
async fn an_unlisted_origin_is_refused_even_for_a_websocket_upgrade() {
    let events = capture();
    let server = secured("cors-refused", CROSS_ORIGIN);
    let response = server
        .request(&get("/public/x", "Origin: https://evil.example\r\n"))
        .await;
    assert_eq!(response.status(), 403, "{response:?}");

    // Browsers send WebSocket handshakes cross-origin without a preflight,
    // with the user's cookies: the origin check is what stops hijacking.
    let response = server
        .request(&get(
            "/mqtt",
            "Origin: https://evil.example\r\nUpgrade: websocket\r\nCookie: access_token=good:alice:\r\n",
        ))
        .await;
    assert_eq!(response.status(), 403, "{response:?}");
    let message = events.message("HTTP_ORIGIN_REFUSED");
    assert!(message.contains("https://evil.example"), "{message}");
    assert!(message.contains("192.0.2.7:50000"), "{message}");
}

#[tokio::test]
async fn same_origin_policy_adds_nothing_and_refuses_nothing() {
    let server = secured("same-origin", "{ policy: same-origin }");
    let response = server
        .request(&get("/public/x", "Origin: https://elsewhere.example\r\n"))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn credentials_are_found_in_a_header_a_query_parameter_or_a_cookie() {
    let server = secured("credentials", "{ policy: same-origin }");
    let cases = [
        get("/private/a", "Authorization: Bearer good:alice:read\r\n"),
        get("/private/a?x=1&access_token=good%3Aalice%3Aread", ""),
        get(
            "/private/a",
            "Cookie: theme=dark; access_token=good:alice:read\r\n",
        ),
    ];
    for request in cases {
        let response = server.request(&request).await;
        assert_eq!(response.status(), 200, "{request}: {response:?}");
        assert!(
            response.body().starts_with("private_exit GET /private/a"),
            "{response:?}"
        );
        assert!(response.body().ends_with("granted=alice"), "{response:?}");
    }
    // Open routes see what was granted too.
    let response = server
        .request(&get("/public", "Authorization: Bearer good:bob:\r\n"))
        .await;
    assert!(response.body().ends_with("granted=bob"), "{response:?}");
}

#[tokio::test]
async fn an_invalid_token_is_answered_401() {
    let events = capture();
    let server = secured("invalid-token", "{ policy: same-origin }");
    let response = server
        .request(&get("/public/x", "Authorization: Bearer forged-secret\r\n"))
        .await;
    assert_eq!(response.status(), 401, "{response:?}");
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );
    let message = events.message("HTTP_AUTHORIZATION_FAILED");
    assert!(message.contains("signature does not verify"), "{message}");
    assert!(
        !events.all().contains("forged-secret"),
        "tokens are never logged"
    );
}

#[tokio::test]
async fn a_guarded_route_without_credentials_is_401_and_without_roles_403() {
    let events = capture();
    let server = secured("guarded", "{ policy: same-origin }");
    let response = server.request(&get("/private/x", "")).await;
    assert_eq!(response.status(), 401, "{response:?}");
    assert_eq!(response.header("www-authenticate"), Some("Bearer"));
    events.message("HTTP_AUTHORIZATION_REQUIRED");

    let response = server
        .request(&get(
            "/private/x",
            "Authorization: Bearer good:carol:write\r\n",
        ))
        .await;
    assert_eq!(response.status(), 403, "{response:?}");
    assert!(events
        .message("HTTP_AUTHORIZATION_DENIED")
        .contains("/private/x"));
}

#[tokio::test]
async fn an_unavailable_guard_is_answered_503() {
    let events = capture();
    let server = secured("guard-down", "{ policy: same-origin }");
    let response = server
        .request(&get("/public/x", "Authorization: Bearer down\r\n"))
        .await;
    assert_eq!(response.status(), 503, "{response:?}");
    assert!(events
        .message("HTTP_AUTHORIZATION_UNAVAILABLE")
        .contains("keys unreachable"));
}

#[tokio::test]
async fn an_upgrade_receives_what_the_guard_granted() {
    let server = secured("upgrade-granted", CROSS_ORIGIN);
    let (mut client, task) = server.connect(false);
    let request = "GET /mqtt?access_token=good:dave: HTTP/1.1\r\nHost: api.example.com\r\n\
                   Origin: https://app.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    client.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    while !received.ends_with(b"granted=dave\n") {
        let mut byte = [0u8; 1];
        assert_eq!(client.read(&mut byte).await.unwrap(), 1, "{received:?}");
        received.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    client.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    client.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping");
    drop(client);
    task.await.unwrap();

    // Without credentials, the guarded upgrade route asks for them.
    let response = server
        .request(&get(
            "/mqtt",
            "Origin: https://app.example.com\r\nUpgrade: websocket\r\n",
        ))
        .await;
    assert_eq!(response.status(), 401, "{response:?}");
}
