//! tcp server routing by `port` and `cidr`, in-process: each connection reaches
//! the exit its route names, and an unroutable one is closed.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use zilla::engine::Engine;
use zilla_testkit::free_port;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A stand-in upstream that answers every connection with its own name.
async fn named_upstream(name: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = stream.write_all(name.as_bytes()).await;
            });
        }
    });
    port
}

async fn answer_from(stream: &mut TcpStream) -> String {
    let mut answer = String::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_string(&mut answer))
        .await
        .expect("the upstream answers or the proxy closes")
        .ok();
    answer
}

async fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

fn routing_config(first: u16, second: u16, alpha: u16, beta: u16, gamma: u16) -> String {
    format!(
        "
name: routing
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options:
      host: 0.0.0.0
      port: [{first}, {second}]
    routes:
      - when:
          - port: {first}
            cidr: 127.0.0.2/32
        exit: alpha
      - when:
          - port: {first}
        exit: beta
      - when:
          - cidr: 127.0.0.3
          - cidr: 127.0.0.4
        exit: gamma
  alpha:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {alpha} }}
  beta:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {beta} }}
  gamma:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {gamma} }}
"
    )
}

#[tokio::test]
async fn routes_by_port_and_cidr_with_first_match_and_any_of() {
    let (alpha, beta, gamma) = (
        named_upstream("alpha").await,
        named_upstream("beta").await,
        named_upstream("gamma").await,
    );
    let (first, second) = (free_port(), free_port());
    let engine = Engine::from_yaml(routing_config(first, second, alpha, beta, gamma))
        .build()
        .unwrap();
    let started = engine.start().await.unwrap();
    let server = started
        .iter()
        .find(|b| b.name == "north_tcp_server")
        .unwrap();
    assert_eq!(server.listening.len(), 2);
    let on = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));

    // First match wins: 127.0.0.2 on the first port takes the cidr route.
    assert_eq!(
        answer_from(&mut connect_from("127.0.0.2", on(first)).await).await,
        "alpha"
    );
    assert_eq!(
        answer_from(&mut connect_from("127.0.0.1", on(first)).await).await,
        "beta"
    );
    // Any one of a route's conditions selects it.
    assert_eq!(
        answer_from(&mut connect_from("127.0.0.3", on(second)).await).await,
        "gamma"
    );
    assert_eq!(
        answer_from(&mut connect_from("127.0.0.4", on(second)).await).await,
        "gamma"
    );
    // No route and no default exit: the connection is closed, nothing answers.
    assert_eq!(
        answer_from(&mut connect_from("127.0.0.1", on(second)).await).await,
        ""
    );
    // ...and the server keeps serving.
    assert_eq!(
        answer_from(&mut connect_from("127.0.0.1", on(first)).await).await,
        "beta"
    );

    engine.shutdown().await;
}

#[tokio::test]
async fn port_ranges_listen_on_every_port() {
    let upstream = named_upstream("upstream").await;
    // Find three consecutive free ports for the range.
    let base = loop {
        let base = free_port();
        if base < 65000
            && (1..3).all(|i| std::net::TcpListener::bind(("0.0.0.0", base + i)).is_ok())
        {
            break base;
        }
    };
    let yaml = format!(
        "
name: range
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: \"{base}-{}\"
    exit: south
  south:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {upstream} }}
",
        base + 2
    );
    let engine = Engine::from_yaml(yaml).build().unwrap();
    let started = engine.start().await.unwrap();
    let server = started
        .iter()
        .find(|b| b.name == "north_tcp_server")
        .unwrap();
    let ports: Vec<u16> = server.listening.iter().map(|a| a.port()).collect();
    assert_eq!(ports, vec![base, base + 1, base + 2]);
    for port in ports {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        assert_eq!(answer_from(&mut stream).await, "upstream");
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn relays_half_close_and_large_transfers_both_ways() {
    // An upstream that echoes everything and closes after the client's half-close.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let (mut read, mut write) = stream.split();
        tokio::io::copy(&mut read, &mut write).await.unwrap();
        write.shutdown().await.unwrap();
    });
    let yaml = format!(
        "
name: relay
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: {{ host: 127.0.0.1, port: 0 }}
    exit: south
  south:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {upstream} }}
"
    );
    let engine = Engine::from_yaml(yaml).build().unwrap();
    let started = engine.start().await.unwrap();
    let proxy = started
        .iter()
        .find(|b| b.name == "north_tcp_server")
        .unwrap()
        .listening[0];

    let payload: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        write.write_all(&sent).await.unwrap();
        write.shutdown().await.unwrap();
    });
    let mut echoed = Vec::new();
    tokio::time::timeout(TIMEOUT, read.read_to_end(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    writer.await.unwrap();
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload);
    engine.shutdown().await;
}
