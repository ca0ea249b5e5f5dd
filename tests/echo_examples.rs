//! Zilla's echo examples, `tcp.echo`, `tls.echo` and `ws.echo`, run unchanged
//! (only their fixed ports become free ones) and echo what their clients send,
//! the way Zilla's own example tests check them: plain TCP, TLS with ALPN
//! `echo` through openssl, and a WebSocket with subprotocol `echo` sending
//! text frames as websocat does.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use zilla_testkit::free_port;
use zilla_testkit::ZillaProcess;

const ZILLA: &str = env!("CARGO_BIN_EXE_zilla");
const TIMEOUT: Duration = Duration::from_secs(10);

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// Copies example `name` into a temporary directory with its fixed `port`
/// replaced by a free one, and starts it; returns the process, the port and
/// the directory (kept alive with it).
fn start_example(name: &str, port: &str) -> (ZillaProcess, u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let source = examples().join(name);
    let free = free_port();
    let yaml = std::fs::read_to_string(source.join("zilla.yaml"))
        .unwrap()
        .replace(port, &free.to_string());
    std::fs::write(dir.path().join("zilla.yaml"), yaml).unwrap();
    if source.join("tls").exists() {
        std::fs::create_dir(dir.path().join("tls")).unwrap();
        for entry in std::fs::read_dir(source.join("tls")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.path().join("tls").join(entry.file_name())).unwrap();
        }
    }
    let zilla = ZillaProcess::start(
        Path::new(ZILLA),
        &dir.path().join("zilla.yaml"),
        &[("KEYSTORE_PASSWORD", "generated".into())],
        &[],
    )
    .unwrap_or_else(|e| panic!("example {name} does not start: {e}"));
    (zilla, free, dir)
}

#[test]
fn tcp_echo_sends_every_byte_back() {
    let (_zilla, port, _dir) = start_example("tcp.echo", "12345");
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(b"Hello, world\n").unwrap();
    let mut echoed = [0u8; 13];
    stream.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"Hello, world\n");
}

#[test]
fn tls_echo_answers_alpn_echo_with_the_seed_certificate() {
    let (_zilla, port, dir) = start_example("tls.echo", "23456");
    // openssl, as Zilla's example test does: it verifies the certificate
    // against the Test CA and negotiates ALPN `echo`.
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-servername", "localhost", "-alpn", "echo", "-CAfile"])
        .arg(dir.path().join("tls/test-ca.pem"))
        .args(["-verify_return_error", "-quiet", "-no_ign_eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"Hello, world\n").unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut echoed = [0u8; 13];
        stdout.read_exact(&mut echoed).map(|_| echoed)
    });
    let echoed = zilla_testkit::wait_for("the echo over TLS", TIMEOUT, || {
        reader.is_finished().then_some(())
    });
    drop(stdin);
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    echoed.unwrap_or_else(|e| panic!("{e}: {stderr}"));
    let echoed = reader.join().unwrap();
    assert_eq!(
        &echoed.unwrap_or_else(|e| panic!("{e}: {stderr}")),
        b"Hello, world\n"
    );
}

#[tokio::test]
async fn ws_echo_answers_text_and_binary_frames_on_subprotocol_echo() {
    let (zilla, port, _dir) = start_example("ws.echo", "7114");
    let mut request = format!("ws://127.0.0.1:{port}/")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "echo".parse().unwrap());
    let (mut socket, response) =
        tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(request))
            .await
            .expect("the handshake completes")
            .unwrap_or_else(|e| panic!("handshake failed: {e}; {:?}", zilla.output()));
    assert_eq!(
        response.headers().get("Sec-WebSocket-Protocol").unwrap(),
        "echo"
    );
    // websocat, which Zilla's example test uses, sends text frames.
    socket.send(Message::text("Hello, world")).await.unwrap();
    let echoed = tokio::time::timeout(TIMEOUT, socket.next()).await.unwrap();
    assert_eq!(echoed.unwrap().unwrap(), Message::text("Hello, world"));
    socket
        .send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(TIMEOUT, socket.next()).await.unwrap();
    assert_eq!(
        echoed.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    socket.close(None).await.unwrap();
}
