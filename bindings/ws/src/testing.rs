//! Test helpers: the http server's part in an upgrade, exits that capture or
//! echo the stream they are handed, a connector over an in-memory pipe, and
//! raw frames for faults tungstenite would never send.

use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{StatusCode, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use zilla_binding_http::HttpHandler;
use zilla_engine::{
    async_trait, Authority, ByteStream, ConnectRequest, Events, Exit, Route, StreamConnector,
    StreamHandler, StreamInfo,
};

use crate::options::{Limits, WsCondition};
use crate::stream::WsStream;

/// How long any one step of a test may take before it counts as hung.
const WAIT: Duration = Duration::from_secs(5);

/// Awaits `future`, failing the test if it takes longer than [`WAIT`].
pub(crate) async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(WAIT, future).await.expect("timed out")
}

/// Test events: nobody listens, but the code paths that emit run.
pub(crate) fn events() -> Events {
    Events::new("test", "ws")
}

/// A server-side adapter over one end of a pipe, and the client's raw end.
pub(crate) async fn server_pair(
    protocol: Option<&str>,
    limits: Limits,
) -> (WsStream<DuplexStream>, DuplexStream) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let ws = WebSocketStream::from_raw_socket(server, Role::Server, Some(limits.config())).await;
    let stream =
        WsStream::new(ws, protocol, limits.max_frame_size).with_events(events(), "client test");
    (stream, client)
}

/// A tungstenite client on a raw client end.
pub(crate) async fn ws_client(raw: DuplexStream) -> WebSocketStream<DuplexStream> {
    WebSocketStream::from_raw_socket(raw, Role::Client, None).await
}

/// A condition from its YAML.
pub(crate) fn when(yaml: &str) -> WsCondition {
    serde_yaml::from_str(yaml).expect("condition")
}

/// A route to `exit` under `conditions`.
pub(crate) fn route(
    conditions: &[&str],
    name: &str,
    exit: Arc<dyn StreamHandler>,
) -> Route<WsCondition, dyn StreamHandler> {
    Route {
        when: conditions.iter().map(|yaml| when(yaml)).collect(),
        guarded: Vec::new(),
        exit: Exit {
            name: name.into(),
            port: exit,
        },
        with: None,
    }
}

/// An exit that hands every stream to the test, with the name of its route.
pub(crate) struct Capture {
    name: &'static str,
    streams: mpsc::UnboundedSender<(&'static str, ByteStream, StreamInfo)>,
}

pub(crate) type Captured = mpsc::UnboundedReceiver<(&'static str, ByteStream, StreamInfo)>;

impl Capture {
    /// Exits named `names`, all handing their streams to one receiver.
    pub(crate) fn exits(names: &[&'static str]) -> (Vec<Arc<dyn StreamHandler>>, Captured) {
        let (streams, captured) = mpsc::unbounded_channel();
        let exits = names
            .iter()
            .map(|&name| {
                Arc::new(Capture {
                    name,
                    streams: streams.clone(),
                }) as Arc<dyn StreamHandler>
            })
            .collect();
        (exits, captured)
    }
}

#[async_trait]
impl StreamHandler for Capture {
    async fn handle(&self, stream: ByteStream, info: StreamInfo) {
        let _ = self.streams.send((self.name, stream, info));
    }
}

/// An exit that writes back what it reads, then shuts down at EOF.
pub(crate) struct Echo;

#[async_trait]
impl StreamHandler for Echo {
    async fn handle(&self, mut stream: ByteStream, _info: StreamInfo) {
        let mut buffer = vec![0u8; 8192];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => {
                    if stream.write_all(&buffer[..read]).await.is_err()
                        || stream.flush().await.is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = stream.shutdown().await;
    }
}

/// Plays the http server for one request on `stream`: reads the request
/// head, asks `handler`, writes the response, and after a `101` runs the
/// upgrade on the rest of the stream. Returns the status answered.
pub(crate) async fn serve_upgrade(
    handler: &dyn HttpHandler,
    mut stream: DuplexStream,
    info: StreamInfo,
) -> StatusCode {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.expect("request head"));
    }
    let head = String::from_utf8(head).expect("ASCII head");
    let mut lines = head.split("\r\n").filter(|line| !line.is_empty());
    let mut request_line = lines.next().expect("request line").split(' ');
    let (method, target) = (request_line.next().unwrap(), request_line.next().unwrap());
    let mut request = http::Request::builder()
        .method(method)
        .uri(target)
        .version(Version::HTTP_11);
    for line in lines {
        let (name, value) = line.split_once(':').expect("header line");
        request = request.header(name.trim(), value.trim());
    }
    let request = request.body(()).expect("request").into_parts().0;

    let answer = handler.handle(request, info.clone()).await;
    let status = answer.response.status();
    let mut response = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in answer.response.headers() {
        response += &format!("{name}: {}\r\n", value.to_str().expect("ASCII header"));
    }
    if status != StatusCode::SWITCHING_PROTOCOLS {
        response += &format!("content-length: {}\r\n", answer.response.body().len());
    }
    response += "\r\n";
    stream.write_all(response.as_bytes()).await.expect("write");
    stream
        .write_all(answer.response.body())
        .await
        .expect("write");
    match (status, answer.upgrade) {
        (StatusCode::SWITCHING_PROTOCOLS, Some(upgrade)) => upgrade(Box::new(stream), info).await,
        _ => {
            let _ = stream.shutdown().await;
        }
    }
    status
}

/// A connector whose streams are pipes to `server`, served as by an http
/// server in front of it; it records the authorities it was asked for.
pub(crate) struct PipeConnector {
    pub(crate) server: Arc<dyn HttpHandler>,
    pub(crate) asked: Mutex<Vec<Option<Authority>>>,
}

impl PipeConnector {
    pub(crate) fn new(server: Arc<dyn HttpHandler>) -> Arc<Self> {
        Arc::new(Self {
            server,
            asked: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait]
impl StreamConnector for PipeConnector {
    async fn connect(&self, request: ConnectRequest) -> io::Result<ByteStream> {
        self.asked.lock().unwrap().push(request.authority);
        let (client, server) = tokio::io::duplex(64 * 1024);
        let handler = self.server.clone();
        tokio::spawn(async move {
            serve_upgrade(&*handler, server, StreamInfo::default()).await;
        });
        Ok(Box::new(client))
    }
}

/// A client frame as raw bytes: `first` holds FIN, RSV and the opcode; the
/// payload is masked with `mask`, or sent unmasked (a fault) without one.
pub(crate) fn frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut out = vec![first];
    match payload.len() {
        len @ 0..=125 => out.push(mask_bit | len as u8),
        len @ 126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A mask for raw frames.
pub(crate) const MASK: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);

/// Reads server frames off `raw` until a Close frame, and returns its code.
pub(crate) async fn read_close_code(raw: &mut DuplexStream) -> u16 {
    loop {
        let first = raw.read_u8().await.expect("frame");
        let second = raw.read_u8().await.expect("frame");
        assert_eq!(second & 0x80, 0, "server frames are not masked");
        let len = match second & 0x7f {
            126 => u64::from(raw.read_u16().await.expect("length")),
            127 => raw.read_u64().await.expect("length"),
            len => u64::from(len),
        };
        let mut payload = vec![0u8; usize::try_from(len).expect("small frame")];
        raw.read_exact(&mut payload).await.expect("payload");
        if first & 0x0f == 0x8 {
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}
