//! Certificate rotation: the vault's PEM key store rewritten in place (what
//! cert-manager does to a mounted secret) is served to the next TLS client,
//! without a restart, while a TLS session from before carries on; a
//! certificate written without its key is refused and the served one stays.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use zilla_testkit::pki::TestCa;
use zilla_testkit::ZillaProcess;

const ZILLA: &str = env!("CARGO_BIN_EXE_zilla");
const TIMEOUT: Duration = Duration::from_secs(10);

/// An upstream on a thread that echoes every connection.
fn echo_upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    if stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// A TLS client that trusts `ca`, connected through the proxy at `port`.
fn tls_client(ca: &TestCa, port: u16) -> StreamOwned<ClientConnection, TcpStream> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.cert_der.clone()))
        .unwrap();
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let mut connection = ClientConnection::new(Arc::new(config), name).unwrap();
    let mut socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    while connection.is_handshaking() {
        connection
            .complete_io(&mut socket)
            .expect("the handshake completes");
    }
    StreamOwned::new(connection, socket)
}

/// The certificate the proxy presents to a new client.
fn served(ca: &TestCa, port: u16) -> Vec<u8> {
    let client = tls_client(ca, port);
    client.conn.peer_certificates().unwrap()[0].to_vec()
}

fn echoes(client: &mut StreamOwned<ClientConnection, TcpStream>, text: &str) -> bool {
    client.write_all(text.as_bytes()).unwrap();
    let mut back = vec![0u8; text.len()];
    client.read_exact(&mut back).is_ok() && back == text.as_bytes()
}

fn config(dir: &Path, echo: u16) -> std::path::PathBuf {
    let path = dir.join("zilla.yaml");
    let yaml = format!(
        "
name: rotation
telemetry:
  exporters:
    stdout_logs_exporter:
      type: stdout
vaults:
  server:
    type: filesystem
    options:
      keys:
        store: tls/localhost.pem
        type: pem
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: {{ host: 127.0.0.1, port: 0 }}
    exit: north_tls_server
  north_tls_server:
    type: tls
    kind: server
    vault: server
    options:
      keys: [localhost]
    exit: echo_tcp_client
  echo_tcp_client:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {echo} }}
"
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn a_rewritten_pem_certificate_is_served_to_the_next_tls_client() {
    let ca = TestCa::new("Rotation CA");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tls")).unwrap();
    let store = dir.path().join("tls/localhost.pem");
    let first = ca.server(&["localhost"]);
    first.write_pem(&store);
    let config = config(dir.path(), echo_upstream());
    let zilla = ZillaProcess::start(
        Path::new(ZILLA),
        &config,
        &[],
        &["-P", "zilla.engine.config.poll=0.05"],
    )
    .unwrap();
    let port = zilla.port("north_tcp_server");

    let mut before = tls_client(&ca, port);
    assert_eq!(
        before.conn.peer_certificates().unwrap()[0].as_ref(),
        first.cert_der
    );
    assert!(echoes(&mut before, "before"));

    // Renewed: a new key and certificate, written over the same file.
    let renewed = ca.server(&["localhost"]);
    renewed.write_pem(&store);
    let reloaded = zilla
        .wait_for_stdout("zilla rotation reloaded on a change to", TIMEOUT)
        .unwrap();
    assert!(reloaded.contains("tls/localhost.pem"), "{reloaded}");
    assert_eq!(
        served(&ca, port),
        renewed.cert_der,
        "the next client gets the new one"
    );
    assert!(
        echoes(&mut before, "still there"),
        "the earlier session carries on"
    );

    // A certificate without its key (the key file not yet written) is refused.
    let unmatched = ca.server(&["localhost"]);
    std::fs::write(&store, format!("{}{}", unmatched.cert_pem, renewed.key_pem)).unwrap();
    let event = zilla
        .wait_for_stdout("CONFIG_RELOAD_FAILED", TIMEOUT)
        .unwrap();
    assert!(
        event.contains("key `localhost` is not the key of its certificate"),
        "{event}"
    );
    assert_eq!(
        served(&ca, port),
        renewed.cert_der,
        "the served certificate stays"
    );
}
