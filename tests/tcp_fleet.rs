//! The tcp binding in a fleet, in-process over real sockets: behind a load
//! balancer that speaks the PROXY protocol (v1 and v2, plain and with TLS
//! behind it), the client address the header names is the one `cidr` routes
//! and events see, and every bad header closes only its connection with
//! `TCP_PROXY_PROTOCOL_REJECTED`; in front of several brokers, a tcp client
//! fails over from a dead address and then leaves it alone while it backs off.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use zilla as _;
use zilla_engine::Engine;
use zilla_testkit::free_port;
use zilla_testkit::pki::TestCa;
use zilla_testkit::proxy::{captured_events, mqtt_proxy_yaml, wait_for_event, Proxy};
use zilla_testkit::Mosquitto;

const TIMEOUT: Duration = Duration::from_secs(10);

/// An upstream that answers each connection with its name, then echoes.
async fn named_echo(name: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.into_split();
                if writer.write_all(name.as_bytes()).await.is_ok() {
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                }
            });
        }
    });
    port
}

/// A connection to the proxy from `source` (any 127.0.0.0/8 address).
async fn connect_from(source: &str, port: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap()
}

/// A v1 header naming `client` as the source.
fn v1(client: &str) -> Vec<u8> {
    let client: SocketAddrV4 = client.parse().unwrap();
    format!(
        "PROXY TCP4 {} 127.0.0.1 {} 7183\r\n",
        client.ip(),
        client.port()
    )
    .into_bytes()
}

/// A v2 header naming `client` as the source, or a `LOCAL` one.
fn v2(client: Option<&str>) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    let Some(client) = client else {
        header.extend([0x20, 0x00, 0, 0]);
        return header;
    };
    let client: SocketAddrV4 = client.parse().unwrap();
    header.extend([0x21, 0x11, 0, 12]);
    header.extend(client.ip().octets());
    header.extend(Ipv4Addr::LOCALHOST.octets());
    header.extend(client.port().to_be_bytes());
    header.extend(7183u16.to_be_bytes());
    header
}

/// Sends `header` and `ping` in one write, then reads `answer` and the echo.
async fn through(source: &str, port: u16, header: &[u8]) -> String {
    let mut stream = connect_from(source, port).await;
    stream.write_all(&[header, b"ping"].concat()).await.unwrap();
    let mut answer = vec![0u8; 9];
    tokio::time::timeout(TIMEOUT, stream.read_exact(&mut answer))
        .await
        .expect("an answer in time")
        .expect("the upstream answers");
    String::from_utf8(answer).unwrap()
}

/// Whether the proxy closes `stream` without a byte of answer.
async fn closed_without_answer(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut rest))
        .await
        .expect("the proxy closes the connection in time");
    // A reset is a close too: the proxy may not have read all that was sent.
    read.map(|n| n == 0).unwrap_or(true)
}

fn count(needles: &[&str]) -> usize {
    captured_events()
        .iter()
        .filter(|line| needles.iter().all(|n| line.contains(n)))
        .count()
}

/// `north_tcp_server` with `proxy` as its `proxy-protocol`, routing 10.0.0.0/8
/// to `alpha` (`ten` decides which binding that is), 10.9.0.0/16 to a dead
/// address, and the rest to `beta`; `extra` adds bindings.
fn proxied(name: &str, proxy: &str, ten: &str, ports: (u16, u16), extra: &str) -> String {
    let (alpha, beta) = ports;
    let dead = free_port();
    format!(
        "
name: {name}
telemetry:
  exporters:
    capture:
      type: capture
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
      proxy-protocol: {proxy}
    routes:
      - when:
          - cidr: 10.9.0.0/16
        exit: dead
      - when:
          - cidr: 10.0.0.0/8
        exit: {ten}
    exit: beta
  alpha:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {alpha} }}
  beta:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {beta} }}
  dead:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {dead} }}
{extra}"
    )
}

#[tokio::test]
async fn proxy_v1_and_v2_headers_route_by_the_client_they_name() {
    let ports = (named_echo("alpha").await, named_echo("beta_").await);
    let yaml = proxied(
        "pp-route",
        "{ mode: required, from: [127.0.0.1/32] }",
        "alpha",
        ports,
        "",
    );
    let proxy = Proxy::start(&yaml).await;
    let port = proxy.port;

    assert_eq!(
        through("127.0.0.1", port, &v1("10.1.2.3:5000")).await,
        "alphaping"
    );
    assert_eq!(
        through("127.0.0.1", port, &v2(Some("10.1.2.3:5000"))).await,
        "alphaping"
    );
    assert_eq!(
        through("127.0.0.1", port, &v1("192.0.2.9:5000")).await,
        "beta_ping"
    );
    // The balancer's own health check: LOCAL, routed by the socket's address.
    assert_eq!(through("127.0.0.1", port, &v2(None)).await, "beta_ping");

    // Events name the client from the header, not the balancer.
    for header in [v1("10.9.8.7:4001"), v2(Some("10.9.8.7:4002"))] {
        let mut stream = connect_from("127.0.0.1", port).await;
        stream.write_all(&header).await.unwrap();
        assert!(closed_without_answer(&mut stream).await);
    }
    wait_for_event(&[
        "pp-route.dead TCP_CONNECT_FAILED",
        "relay for 10.9.8.7:4001",
    ])
    .await;
    wait_for_event(&[
        "pp-route.dead TCP_CONNECT_FAILED",
        "relay for 10.9.8.7:4002",
    ])
    .await;
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn an_mqtt_session_behind_a_balancer_is_known_by_its_client_address() {
    let broker = Mosquitto::start().unwrap();
    let yaml = mqtt_proxy_yaml("    exit: mqtt_client_main", &[("main", broker.port())]).replace(
        "options: { host: 127.0.0.1, port: 0 }",
        "options: { host: 127.0.0.1, port: 0, proxy-protocol: { from: [127.0.0.1] } }",
    );
    let proxy = Proxy::start(&yaml).await;

    // MQTT 3.1.1 CONNECT, clean session, client id `pp-fleet`.
    let connect = [
        0x10, 20, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 8, b'p', b'p', b'-', b'f', b'l',
        b'e', b'e', b't',
    ];
    let mut stream = connect_from("127.0.0.1", proxy.port).await;
    stream
        .write_all(&[v2(Some("10.1.2.3:5000")), connect.to_vec()].concat())
        .await
        .unwrap();
    let mut connack = [0u8; 4];
    tokio::time::timeout(TIMEOUT, stream.read_exact(&mut connack))
        .await
        .expect("a CONNACK in time")
        .unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    wait_for_event(&["MQTT_SESSION_STARTED", "client 10.1.2.3:5000 id pp-fleet"]).await;
    drop(stream);
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn tls_behind_the_proxy_protocol_sees_the_client_from_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Test CA");
    std::fs::create_dir_all(dir.path().join("keys")).unwrap();
    ca.server(&["a.test"])
        .write_pem(&dir.path().join("keys/a.pem"));
    let ports = (named_echo("alpha").await, named_echo("beta_").await);
    let tls = "
vaults:
  server:
    type: filesystem
    options:
      keys: { store: keys, type: pem }
";
    let tls_server = "
  north_tls_server:
    type: tls
    kind: server
    vault: server
    options: { keys: [a], mutual: none }
    exit: alpha
";
    let yaml = proxied(
        "pp-tls",
        "{ from: [127.0.0.1] }",
        "north_tls_server",
        ports,
        tls_server,
    );
    let proxy =
        Proxy::start_with(Engine::from_yaml(format!("{yaml}{tls}")).base_dir(dir.path())).await;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.cert_der.clone()))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));

    // The balancer writes the header, then the client's TLS bytes follow.
    let mut tcp = connect_from("127.0.0.1", proxy.port).await;
    tcp.write_all(&v2(Some("10.1.2.3:5000"))).await.unwrap();
    let server_name = ServerName::try_from("a.test").unwrap();
    let mut tls = tokio::time::timeout(TIMEOUT, connector.connect(server_name, tcp))
        .await
        .expect("a handshake in time")
        .expect("the handshake succeeds");
    tls.write_all(b"ping").await.unwrap();
    let mut answer = [0u8; 9];
    tokio::time::timeout(TIMEOUT, tls.read_exact(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&answer, b"alphaping");
    drop(tls);

    // A failed handshake names the client from the header.
    let mut tcp = connect_from("127.0.0.1", proxy.port).await;
    tcp.write_all(&[v1("10.4.5.6:6000"), b"not a ClientHello".to_vec()].concat())
        .await
        .unwrap();
    // rustls may answer with an alert before it closes; the event says why.
    let mut alert = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, tcp.read_to_end(&mut alert))
        .await
        .expect("the proxy closes the connection in time");
    wait_for_event(&[
        "pp-tls.north_tls_server TLS_HANDSHAKE_FAILED",
        "client 10.4.5.6:6000",
    ])
    .await;
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn bad_headers_and_untrusted_peers_are_closed_with_an_event() {
    let ports = (named_echo("alpha").await, named_echo("beta_").await);
    let yaml = proxied("pp-bad", "{ from: [127.0.0.1/32] }", "alpha", ports, "");
    let proxy = Proxy::start_with(
        Engine::from_yaml(yaml).property("zilla.binding.tcp.proxy.protocol.timeout", "1"),
    )
    .await;
    let port = proxy.port;
    let rejected = "pp-bad.north_tcp_server TCP_PROXY_PROTOCOL_REJECTED";

    // No header: an MQTT CONNECT straight away.
    let mut stream = connect_from("127.0.0.1", port).await;
    let peer = stream.local_addr().unwrap().to_string();
    stream
        .write_all(&[0x10, 0x0c, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 0])
        .await
        .unwrap();
    assert!(closed_without_answer(&mut stream).await);
    wait_for_event(&[
        rejected,
        &format!("{peer} sent no PROXY protocol header; closed"),
    ])
    .await;

    // A malformed header.
    let mut stream = connect_from("127.0.0.1", port).await;
    let peer = stream.local_addr().unwrap().to_string();
    stream
        .write_all(b"PROXY TCP4 10.1.2.300 127.0.0.1 5000 7183\r\n")
        .await
        .unwrap();
    assert!(closed_without_answer(&mut stream).await);
    wait_for_event(&[
        rejected,
        &format!("{peer} sent a malformed PROXY protocol header"),
    ])
    .await;

    // From an address outside `from`, even with a well-formed header.
    let mut stream = connect_from("127.0.0.5", port).await;
    let peer = stream.local_addr().unwrap().to_string();
    let _ = stream.write_all(&v1("10.1.2.3:5000")).await;
    assert!(closed_without_answer(&mut stream).await);
    wait_for_event(&[rejected, &format!("{peer} is not a trusted proxy")]).await;

    // Half a header, then nothing: closed at the one-second deadline.
    let mut stream = connect_from("127.0.0.1", port).await;
    let peer = stream.local_addr().unwrap().to_string();
    stream.write_all(b"PROXY TCP4 10.1.").await.unwrap();
    assert!(closed_without_answer(&mut stream).await);
    wait_for_event(&[
        rejected,
        &format!("{peer} sent no complete PROXY protocol header within 1 s; closed"),
    ])
    .await;

    // None of it stopped the server.
    assert_eq!(
        through("127.0.0.1", port, &v1("10.1.2.3:5000")).await,
        "alphaping"
    );
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn optional_mode_serves_clients_with_and_without_a_header() {
    let ports = (named_echo("alpha").await, named_echo("beta_").await);
    let yaml = proxied(
        "pp-optional",
        "{ mode: optional, from: [127.0.0.1/32] }",
        "alpha",
        ports,
        "",
    );
    let proxy = Proxy::start(&yaml).await;
    let port = proxy.port;

    assert_eq!(through("127.0.0.1", port, b"").await, "beta_ping");
    assert_eq!(through("127.0.0.5", port, b"").await, "beta_ping");
    assert_eq!(
        through("127.0.0.1", port, &v1("10.1.2.3:5000")).await,
        "alphaping"
    );
    // Only trusted peers may name a client.
    let mut stream = connect_from("127.0.0.5", port).await;
    stream.write_all(&v2(Some("10.1.2.3:5000"))).await.unwrap();
    assert!(closed_without_answer(&mut stream).await);
    wait_for_event(&[
        "pp-optional.north_tcp_server TCP_PROXY_PROTOCOL_REJECTED",
        "but is not a trusted proxy",
    ])
    .await;
    proxy.engine.shutdown().await;
}

fn fleet(name: &str, hosts: &[String]) -> String {
    format!(
        "
name: {name}
telemetry:
  exporters:
    capture:
      type: capture
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: {{ host: 127.0.0.1, port: 0 }}
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options:
      hosts: [{}]
",
        hosts.join(", ")
    )
}

#[tokio::test]
async fn a_dead_broker_is_named_then_left_alone_while_it_backs_off() {
    let (dead, live) = (free_port(), named_echo("live_").await);
    let hosts = [format!("127.0.0.1:{dead}"), format!("127.0.0.1:{live}")];
    let proxy = Proxy::start(&fleet("fleet-failover", &hosts)).await;

    let connects = 10;
    for _ in 0..connects {
        assert_eq!(through("127.0.0.1", proxy.port, b"").await, "live_ping");
    }
    let failed =
        format!("connect to 127.0.0.1:{dead} failed; backing off 1 s; trying 127.0.0.1:{live}");
    wait_for_event(&[
        "fleet-failover.south_tcp_client TCP_CONNECT_FAILED",
        &failed,
    ])
    .await;
    // Connects start at each address in turn, so without back-off half of
    // them would try the dead one first; backing off (1 s, then longer) it
    // is tried once, or a few times on a slow machine.
    let tried = count(&[
        "TCP_CONNECT_FAILED",
        &format!("connect to 127.0.0.1:{dead} failed"),
    ]);
    assert!(
        (1..=3).contains(&tried),
        "the dead address was tried {tried} times in {connects} connects"
    );
    proxy.engine.shutdown().await;
}

#[tokio::test]
async fn when_every_broker_is_down_the_relay_closes_naming_each() {
    let (first, second) = (free_port(), free_port());
    let hosts = [format!("127.0.0.1:{first}"), format!("127.0.0.1:{second}")];
    let proxy = Proxy::start(&fleet("fleet-down", &hosts)).await;

    let mut stream = connect_from("127.0.0.1", proxy.port).await;
    let peer = stream.local_addr().unwrap().to_string();
    assert!(closed_without_answer(&mut stream).await);
    let events = "fleet-down.south_tcp_client TCP_CONNECT_FAILED";
    wait_for_event(&[events, &format!("connect to 127.0.0.1:{first} failed")]).await;
    wait_for_event(&[events, &format!("connect to 127.0.0.1:{second} failed")]).await;
    wait_for_event(&[events, "no address left"]).await;
    wait_for_event(&[
        events,
        &format!(
            "relay for {peer} closed: connect to none of {}",
            hosts.join(", ")
        ),
    ])
    .await;
    proxy.engine.shutdown().await;
}
