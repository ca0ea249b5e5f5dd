//! A configuration using the third-party `echo` type runs next to first-party `tcp`.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zilla_binding_echo as _;
use zilla_binding_tcp as _;
use zilla_engine::Engine;

const CONFIG: &str = r#"
name: echo-example
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: { host: 127.0.0.1, port: 0 }
    exit: echo_server
  echo_server:
    type: echo
    kind: server
    options:
      greeting: "hello\n"
"#;

#[tokio::test]
async fn third_party_type_is_registered_and_serves_streams() {
    let registered = zilla_engine::registered();
    assert!(registered.bindings.iter().any(|(name, _)| *name == "echo"));

    let engine = Engine::from_yaml(CONFIG).build().expect("config is valid");
    let started = engine.start().await.expect("engine starts");
    let server = started
        .iter()
        .find(|b| b.name == "north_tcp_server")
        .unwrap();

    let mut client = tokio::net::TcpStream::connect(server.listening[0])
        .await
        .unwrap();
    let mut greeting = [0u8; 6];
    client.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"hello\n");
    client.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    client.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping");

    drop(client);
    let drained = engine.shutdown().await;
    assert_eq!(drained.abandoned, 0);
}

#[tokio::test]
async fn echo_options_are_strict() {
    let config = CONFIG.replace("greeting:", "greetin:");
    let errors = Engine::from_yaml(config).build().unwrap_err();
    assert!(
        errors.mentions("line 13: bindings.echo_server.options.greetin: unknown field `greetin`, expected `greeting` or `max-bytes`"),
        "{errors}"
    );
}
