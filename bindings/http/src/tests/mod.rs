//! Tests of the http server built through the engine from `zilla.yaml`, as
//! users configure it, and driven over in-memory streams with raw HTTP
//! bytes.
//!
//! Three test plugins stand in for the rest of a pipeline: `test-driver`
//! (a binding that routes byte streams to the http server and lets a test
//! get hold of it), `test-http-exit` (an [`HttpHandler`] that says who it
//! is and what was granted, and echoes bytes after a WebSocket-like
//! upgrade) and `test-guard` (credentials `good:<identity>:<roles>` are
//! valid, `down` makes it unavailable, anything else is invalid).

mod config;
mod security;
mod serving;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;
use zilla_engine::telemetry::EVENT_TARGET;
use zilla_engine::{
    async_trait, register_binding, register_guard, Binding, BindingContext, BindingFactory,
    BuildError, Engine, Guard, GuardFactory, GuardRejection, GuardSession, Kind, Ports,
    StreamHandler, StreamInfo,
};

use crate::port::{HttpAnswer, HttpHandler, HttpRequest};

/// The http servers the drivers lead to, by configuration name.
static SERVERS: Mutex<Option<HashMap<String, Arc<dyn StreamHandler>>>> = Mutex::new(None);

register_binding!(BindingFactory {
    type_name: "test-driver",
    kinds: &[Kind::Server],
    build: build_driver,
});

fn build_driver(cx: &mut BindingContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
    let exit = cx.default_exit::<dyn StreamHandler>()?;
    let exit = exit.ok_or_else(|| cx.error("exit", "a test driver needs an exit"))?;
    SERVERS
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(cx.namespace().to_owned(), exit.port);
    Ok(Arc::new(Driver))
}

struct Driver;

impl Binding for Driver {}

register_binding!(BindingFactory {
    type_name: "test-http-exit",
    kinds: &[Kind::Server],
    build: |cx| {
        cx.no_options()?;
        Ok(Arc::new(TestExit {
            name: cx.name().to_owned(),
        }))
    },
});

/// Answers `200 <name> <method> <path> granted=<identity>`; answers a
/// request with `Upgrade` with `101` and an upgrade that writes
/// `granted=<identity>\n` and then echoes; on `/no-takeover`, answers `101`
/// without an upgrade (an exit bug the server must not pass on).
struct TestExit {
    name: String,
}

impl Binding for TestExit {
    fn ports(self: Arc<Self>) -> Ports {
        Ports::new().with::<dyn HttpHandler>(self)
    }
}

fn granted(info: &StreamInfo) -> String {
    info.granted("test_guard")
        .and_then(|granted| granted.session.identity.clone())
        .unwrap_or_else(|| "-".into())
}

#[async_trait]
impl HttpHandler for TestExit {
    async fn handle(&self, request: HttpRequest, info: StreamInfo) -> HttpAnswer {
        if let Some(protocol) = request.headers.get(http::header::UPGRADE) {
            let response = http::Response::builder()
                .status(http::StatusCode::SWITCHING_PROTOCOLS)
                .header(http::header::UPGRADE, protocol)
                .header(http::header::CONNECTION, "Upgrade")
                .body(Bytes::new())
                .unwrap();
            if request.uri.path() == "/no-takeover" {
                return HttpAnswer::response(response);
            }
            return HttpAnswer {
                response,
                upgrade: Some(Box::new(|mut stream, info| {
                    Box::pin(async move {
                        let hello = format!("granted={}\n", granted(&info));
                        if stream.write_all(hello.as_bytes()).await.is_err() {
                            return;
                        }
                        let mut buffer = [0u8; 1024];
                        while let Ok(n) = stream.read(&mut buffer).await {
                            if n == 0 || stream.write_all(&buffer[..n]).await.is_err() {
                                break;
                            }
                        }
                    })
                })),
            };
        }
        let body = format!(
            "{} {} {} granted={}",
            self.name,
            request.method,
            request.uri.path_and_query().map_or("/", |p| p.as_str()),
            granted(&info)
        );
        let mut response = http::Response::new(Bytes::from(body));
        response
            .headers_mut()
            .insert("x-exit", self.name.parse().unwrap());
        HttpAnswer::response(response)
    }
}

register_guard!(GuardFactory {
    type_name: "test-guard",
    build: |cx| {
        cx.no_options()?;
        Ok(Arc::new(TestGuard))
    },
});

struct TestGuard;

#[async_trait]
impl Guard for TestGuard {
    async fn authorize(&self, credentials: &str) -> Result<GuardSession, GuardRejection> {
        if credentials == "down" {
            return Err(GuardRejection::Unavailable("keys unreachable".into()));
        }
        let mut fields = credentials.splitn(3, ':');
        match (fields.next(), fields.next(), fields.next()) {
            (Some("good"), Some(identity), roles) => Ok(GuardSession {
                identity: Some(identity.to_owned()),
                roles: roles
                    .unwrap_or_default()
                    .split(',')
                    .filter(|role| !role.is_empty())
                    .map(str::to_owned)
                    .collect(),
                ..GuardSession::default()
            }),
            _ => Err(GuardRejection::InvalidCredentials(
                "signature does not verify".into(),
            )),
        }
    }
}

/// A built configuration and the http server its driver leads to.
pub(crate) struct Served {
    /// Kept so that nothing it owns is dropped while the test runs.
    _engine: Engine,
    server: Arc<dyn StreamHandler>,
}

/// Builds `yaml` (whose `name` must be unique among tests) with engine
/// `properties`; panics with the configuration errors if it is invalid.
pub(crate) fn served(yaml: &str, properties: &[(&str, &str)]) -> Served {
    let mut builder = Engine::from_yaml(yaml);
    for (name, value) in properties {
        builder = builder.property(*name, *value);
    }
    let engine = builder.build().unwrap_or_else(|errors| panic!("{errors}"));
    let server = SERVERS
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|servers| servers.get(engine.namespace()).cloned())
        .expect("the configuration has a test-driver");
    Served {
        _engine: engine,
        server,
    }
}

/// The message of every configuration error of `yaml`.
pub(crate) fn config_errors(yaml: &str, properties: &[(&str, &str)]) -> String {
    let mut builder = Engine::from_yaml(yaml);
    for (name, value) in properties {
        builder = builder.property(*name, *value);
    }
    match builder.build() {
        Ok(_) => panic!("the configuration is valid"),
        Err(errors) => errors.to_string(),
    }
}

impl Served {
    /// A client connected to the server, over TLS if `secure`.
    pub(crate) fn connect(&self, secure: bool) -> (DuplexStream, JoinHandle<()>) {
        let (client, server_side) = tokio::io::duplex(64 * 1024);
        let info = StreamInfo {
            peer: Some("192.0.2.7:50000".parse().unwrap()),
            secure,
            ..StreamInfo::default()
        };
        let server = self.server.clone();
        let task = tokio::spawn(async move { server.handle(Box::new(server_side), info).await });
        (client, task)
    }

    /// Sends `request` (which should say `Connection: close`) on a new
    /// connection and returns everything the server sent before closing.
    pub(crate) async fn request(&self, request: &str) -> Response {
        let (mut client, task) = self.connect(false);
        client.write_all(request.as_bytes()).await.unwrap();
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        task.await.unwrap();
        Response(String::from_utf8_lossy(&received).into_owned())
    }
}

/// A raw HTTP/1.1 response.
#[derive(Debug)]
pub(crate) struct Response(pub(crate) String);

impl Response {
    pub(crate) fn status(&self) -> u16 {
        self.0
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not a response: {:?}", self.0))
    }

    /// The value of header `name`, if present once or more (the first).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        let head = self.0.split("\r\n\r\n").next().unwrap_or_default();
        head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    pub(crate) fn body(&self) -> &str {
        self.0.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
    }
}

/// The telemetry events emitted on this thread while a [`Captured`] lives.
pub(crate) struct Captured {
    events: Arc<Mutex<Vec<(String, String)>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

/// Starts capturing events (the tests' runtimes are single-threaded, so
/// every task of the test runs on this thread).
pub(crate) fn capture() -> Captured {
    let events = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(CaptureLayer(events.clone()));
    Captured {
        events,
        _guard: tracing::subscriber::set_default(subscriber),
    }
}

impl Captured {
    /// The message of the first event named `name`; panics if there is none.
    pub(crate) fn message(&self, name: &str) -> String {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .find(|(event, _)| event == name)
            .map(|(_, message)| message.clone())
            .unwrap_or_else(|| panic!("no {name} event among {events:?}"))
    }

    /// How many events named `name` there were.
    pub(crate) fn count(&self, name: &str) -> usize {
        let events = self.events.lock().unwrap();
        events.iter().filter(|(event, _)| event == name).count()
    }

    /// Every message, for checking what never appears.
    pub(crate) fn all(&self) -> String {
        format!("{:?}", self.events.lock().unwrap())
    }
}

struct CaptureLayer(Arc<Mutex<Vec<(String, String)>>>);

impl<S: tracing::Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _cx: Context<'_, S>) {
        if event.metadata().target() != EVENT_TARGET {
            return;
        }
        let mut fields = EventFields::default();
        event.record(&mut fields);
        self.0.lock().unwrap().push((fields.name, fields.message));
    }
}

#[derive(Default)]
struct EventFields {
    name: String,
    message: String,
}

impl Visit for EventFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "event" {
            self.name = value.to_owned();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "event" => self.name = format!("{value:?}"),
            _ => {}
        }
    }
}
