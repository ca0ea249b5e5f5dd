//! `stream.*` metrics of tcp bindings, through a running engine.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zilla_engine::telemetry::metrics::{Series, Value};
use zilla_engine::Engine;

fn config(upstream: u16) -> String {
    format!(
        "
name: metrics-test
telemetry:
  metrics: [stream.*]
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: {{ host: 127.0.0.1, port: 0 }}
    telemetry:
      metrics: [stream.*]
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {upstream} }}
"
    )
}

fn value(series: &[Series], name: &str, binding: &str) -> Option<Value> {
    series
        .iter()
        .find(|s| s.metric.name == name && s.label("binding") == Some(binding))
        .map(|s| s.value.clone())
}

#[tokio::test]
async fn a_tcp_server_counts_its_connections_and_bytes() {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    let engine = Engine::from_yaml(config(port)).build().unwrap();
    let started = engine.start().await.unwrap();
    let proxy = started
        .iter()
        .find(|b| b.name == "north_tcp_server")
        .unwrap()
        .listening[0];

    let mut client = tokio::net::TcpStream::connect(proxy).await.unwrap();
    client.write_all(b"hello").await.unwrap();
    let (mut accepted, _) = upstream.accept().await.unwrap();
    let mut hello = [0u8; 5];
    accepted.read_exact(&mut hello).await.unwrap();
    accepted.write_all(b"hi").await.unwrap();
    let mut hi = [0u8; 2];
    client.read_exact(&mut hi).await.unwrap();

    let series = engine.metrics().collect();
    let get = |name: &str| value(&series, name, "north_tcp_server");
    assert_eq!(get("stream.opens.sent"), Some(Value::Counter(1)));
    assert_eq!(get("stream.opens.received"), Some(Value::Counter(1)));
    assert_eq!(get("stream.active.received"), Some(Value::Gauge(1)));
    assert_eq!(
        get("stream.data.sent"),
        Some(Value::Counter(5)),
        "read from the client"
    );
    assert_eq!(
        get("stream.data.received"),
        Some(Value::Counter(2)),
        "written to the client"
    );
    // The client binding's telemetry selects nothing: it records nothing.
    assert!(series
        .iter()
        .all(|s| s.label("binding") != Some("south_tcp_client")));

    // The client closes first: the relay passes the end on, then ends.
    drop(client);
    let mut rest = Vec::new();
    let _ = accepted.read_to_end(&mut rest).await;
    drop(accepted);
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let series = engine.metrics().collect();
            if value(&series, "stream.active.received", "north_tcp_server") == Some(Value::Gauge(0))
            {
                return series;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the relay ends once both sides closed");
    assert_eq!(
        value(&closed, "stream.closes.sent", "north_tcp_server"),
        Some(Value::Counter(1)),
        "closed by the peer"
    );
    assert_eq!(
        value(&closed, "stream.errors.sent", "north_tcp_server"),
        Some(Value::Counter(0))
    );
    engine.shutdown().await;
}
