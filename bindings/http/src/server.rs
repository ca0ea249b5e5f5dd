//! http server: serves HTTP/1.1 and HTTP/2 with hyper on the byte streams
//! it is handed, and hands upgraded connections on.
//!
//! Each stream is served on the task that handed it over (no spawn per
//! connection). HTTP/1.1 requests are answered one after the other on that
//! task; a `101 Switching Protocols` ends hyper's part, and the exit's
//! [`Upgrade`] then runs on the same task with the upgraded stream. HTTP/2
//! is multiplexed, so hyper runs each HTTP/2 request on a task of its own
//! (its executor spawns them); HTTP/2 has no upgrades.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use zilla_engine::telemetry::duration;
use zilla_engine::{
    async_trait, Binding, BindingContext, BuildError, ByteStream, Events, Ports, Shutdown,
    StreamHandler, StreamInfo,
};

use crate::authorization::Authorization;
use crate::cors::Cors;
use crate::exchange::{peer, Exchange};
use crate::options::{HttpOptions, HttpVersion};
use crate::port::{HttpHandler, Upgrade};
use crate::preface::{sniff, Prefixed};
use crate::routes::HttpCondition;

/// Engine property: seconds a client has to send a complete request head
/// (default 10), counted from when the server starts reading it, so idle
/// keep-alive connections close after it too; slower connections are
/// closed. With `h2` served, the first bytes (which tell HTTP/2 from
/// HTTP/1.1) must also arrive within it, so a first HTTP/1.1 head may take
/// up to twice as long from connect.
pub const PROPERTY_HEADER_TIMEOUT: &str = "zilla.binding.http.header.timeout";
/// Engine property: the largest request head (request line and headers)
/// accepted, in bytes (default 16384); a larger one is answered `431`.
/// HTTP/2 advertises it as its maximum header list size.
pub const PROPERTY_HEADER_MAX_BYTES: &str = "zilla.binding.http.header.max.bytes";

const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_HEADER_MAX_BYTES: usize = 16 * 1024;
/// hyper refuses a smaller read buffer.
const MINIMUM_BUFFER: usize = 8192;

pub(crate) fn build(cx: &mut BindingContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
    let options = cx.options::<HttpOptions>();
    let routes = cx.required_routes::<HttpCondition, dyn HttpHandler>();
    let options = options?;
    let versions = options
        .versions
        .clone()
        .unwrap_or_else(|| vec![HttpVersion::Http11, HttpVersion::H2]);
    let mut failed = None;
    if versions.is_empty() {
        failed = Some(cx.error("options.versions", "list at least one of `http/1.1`, `h2`"));
    }
    let cors = match Cors::new(options.access_control.as_ref()) {
        Ok(cors) => cors,
        Err(problems) => {
            for (path, message) in problems {
                failed = Some(cx.error(&format!("options.access-control.{path}"), message));
            }
            Cors::default()
        }
    };
    let authorization = Authorization::build(cx, options.authorization.as_ref());
    let header_timeout = seconds_property(cx, PROPERTY_HEADER_TIMEOUT, DEFAULT_HEADER_TIMEOUT);
    let header_max = bytes_property(cx, PROPERTY_HEADER_MAX_BYTES, DEFAULT_HEADER_MAX_BYTES);
    let (routes, authorization) = (routes?, authorization?);
    let (header_timeout, header_max) = (header_timeout?, header_max?);
    if let Some(failed) = failed {
        return Err(failed);
    }

    let http1 = versions.contains(&HttpVersion::Http11).then(|| {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_header_size(header_max)
            .max_buf_size(header_max.max(MINIMUM_BUFFER));
        builder
    });
    let http2 = versions.contains(&HttpVersion::H2).then(|| {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(header_max).unwrap_or(u32::MAX));
        builder
    });
    let events = cx.events();
    Ok(Arc::new(HttpServer {
        exchange: Arc::new(Exchange {
            routes,
            cors,
            authorization,
            events: events.clone(),
        }),
        http1,
        http2,
        header_timeout,
        header_max,
        events,
        shutdown: cx.shutdown(),
    }))
}

fn seconds_property(
    cx: &mut BindingContext<'_>,
    name: &str,
    default: Duration,
) -> Result<Duration, BuildError> {
    let Some(value) = cx.property(name).map(str::to_owned) else {
        return Ok(default);
    };
    match value.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds.is_finite() => Ok(Duration::from_secs_f64(seconds)),
        _ => Err(cx.error("", format!("-P {name}: expected seconds, found `{value}`"))),
    }
}

fn bytes_property(
    cx: &mut BindingContext<'_>,
    name: &str,
    default: usize,
) -> Result<usize, BuildError> {
    let Some(value) = cx.property(name).map(str::to_owned) else {
        return Ok(default);
    };
    match value.parse::<usize>() {
        Ok(bytes) if bytes > 0 => Ok(bytes),
        _ => Err(cx.error(
            "",
            format!("-P {name}: expected a number of bytes, found `{value}`"),
        )),
    }
}

/// Runs a hyper connection to its end: gracefully once the engine drains
/// (in-flight requests finish, idle connections close), not at all once it
/// terminates (`None`).
///
/// A macro rather than a generic async fn: rustc cannot prove the latter's
/// future `Send` for hyper's HTTP/1.1 connection type inside the
/// `async_trait` handler ("implementation of `Send` is not general enough").
macro_rules! drive {
    ($connection:expr, $shutdown:expr) => {{
        let shutdown: &Shutdown = $shutdown;
        let mut connection = std::pin::pin!($connection);
        let ended = tokio::select! {
            output = connection.as_mut() => Some(output),
            () = shutdown.draining() => {
                connection.as_mut().graceful_shutdown();
                None
            }
        };
        match ended {
            Some(output) => Some(output),
            None => tokio::select! {
                output = connection => Some(output),
                () = shutdown.terminated() => None,
            },
        }
    }};
}

struct HttpServer {
    exchange: Arc<Exchange>,
    /// Set when `versions` has `http/1.1`.
    http1: Option<http1::Builder>,
    /// Set when `versions` has `h2`.
    http2: Option<http2::Builder<TokioExecutor>>,
    header_timeout: Duration,
    header_max: usize,
    events: Events,
    shutdown: Shutdown,
}

/// An upgrade the exit accepted, waiting for hyper to send the `101` and
/// let go of the connection.
struct PendingUpgrade {
    on_upgrade: OnUpgrade,
    upgrade: Upgrade,
    info: StreamInfo,
}

/// What the service returns for one request.
type AnswerFuture =
    Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static>>;

/// Where the service leaves an accepted upgrade for the connection's task.
type UpgradeSlot = Arc<Mutex<Option<PendingUpgrade>>>;

impl Binding for HttpServer {
    fn ports(self: Arc<Self>) -> Ports {
        Ports::new().with::<dyn StreamHandler>(self)
    }
}

#[async_trait]
impl StreamHandler for HttpServer {
    async fn handle(&self, stream: ByteStream, info: StreamInfo) {
        match (&self.http1, &self.http2) {
            (Some(http1), None) => {
                self.serve_http1(http1, Prefixed::new(Bytes::new(), stream), info)
                    .await
            }
            (http1, Some(http2)) => {
                let mut stream = stream;
                // Bounded, unlike hyper's own detection: see `preface`.
                let sniffed = tokio::time::timeout(self.header_timeout, sniff(&mut stream)).await;
                let (is_h2, read) = match sniffed {
                    Ok(Ok(sniffed)) => sniffed,
                    // The peer went away.
                    Ok(Err(_)) => return,
                    Err(_) => return self.header_timed_out(&info),
                };
                let stream = Prefixed::new(read, stream);
                match http1 {
                    _ if is_h2 => self.serve_http2(http2, stream, info).await,
                    Some(http1) => self.serve_http1(http1, stream, info).await,
                    None => self.events.warn(
                        "HTTP_REQUEST_MALFORMED",
                        format!(
                            "client {}: not HTTP/2, the only version served; closed",
                            peer(&info)
                        ),
                    ),
                }
            }
            (None, None) => {}
        }
    }
}

impl HttpServer {
    async fn serve_http1(
        &self,
        http1: &http1::Builder,
        stream: Prefixed<ByteStream>,
        info: StreamInfo,
    ) {
        let slot = UpgradeSlot::default();
        let service = self.service(info.clone(), slot.clone());
        let connection = http1
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let served = drive!(connection, &self.shutdown);
        match served {
            Some(Ok(())) => {}
            Some(Err(error)) => self.connection_failed(&error, &info),
            None => return,
        }
        // Taken out before awaiting, so that the lock is not held across it.
        let pending = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(pending) = pending else {
            return;
        };
        match pending.on_upgrade.await {
            Ok(upgraded) => {
                let stream: ByteStream = Box::new(TokioIo::new(upgraded));
                (pending.upgrade)(stream, pending.info).await;
            }
            // The connection ended before the 101 went out.
            Err(error) => self.events.warn(
                "HTTP_UPGRADE_FAILED",
                format!("client {}: upgrade not completed: {error}", peer(&info)),
            ),
        }
    }

    async fn serve_http2(
        &self,
        http2: &http2::Builder<TokioExecutor>,
        stream: Prefixed<ByteStream>,
        info: StreamInfo,
    ) {
        // HTTP/2 requests cannot upgrade; the slot stays empty.
        let service = self.service(info.clone(), UpgradeSlot::default());
        let connection = http2.serve_connection(TokioIo::new(stream), service);
        let served = drive!(connection, &self.shutdown);
        if let Some(Err(error)) = served {
            self.connection_failed(&error, &info);
        }
    }

    /// The hyper service answering the requests of one connection.
    fn service(&self, info: StreamInfo, slot: UpgradeSlot) -> ConnectionService {
        ConnectionService {
            exchange: self.exchange.clone(),
            info,
            slot,
        }
    }

    fn header_timed_out(&self, info: &StreamInfo) {
        self.events.warn(
            "HTTP_HEADER_TIMEOUT",
            format!(
                "client {}: no complete request head within {}; closed",
                peer(info),
                duration(self.header_timeout)
            ),
        );
    }

    /// Reports what ended a connection early; a peer that just went away
    /// is not news.
    fn connection_failed(&self, error: &hyper::Error, info: &StreamInfo) {
        let peer = peer(info);
        if error.is_timeout() {
            self.header_timed_out(info);
        } else if error.is_parse_too_large() {
            self.events.warn(
                "HTTP_HEADERS_TOO_LARGE",
                format!(
                    "client {peer}: request head over {} bytes (or too many header fields); answered 431",
                    self.header_max
                ),
            );
        } else if error.is_parse_version_h2() {
            self.events.warn(
                "HTTP_REQUEST_MALFORMED",
                format!("client {peer}: HTTP/2, which `versions` does not list; closed"),
            );
        } else if error.is_parse() {
            self.events.warn(
                "HTTP_REQUEST_MALFORMED",
                format!("client {peer}: malformed request ({error}); refused with 400 and closed"),
            );
        }
    }
}

/// Answers the requests of one connection.
#[derive(Clone)]
struct ConnectionService {
    exchange: Arc<Exchange>,
    info: StreamInfo,
    slot: UpgradeSlot,
}

impl Service<Request<Incoming>> for ConnectionService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = AnswerFuture;

    fn call(&self, mut request: Request<Incoming>) -> AnswerFuture {
        let (exchange, info, slot) = (self.exchange.clone(), self.info.clone(), self.slot.clone());
        Box::pin(async move {
            // Present only on an HTTP/1.1 request asking to upgrade.
            let on_upgrade = request.extensions_mut().remove::<OnUpgrade>();
            // Exits answer from the head; a body is not read.
            let (parts, _body) = request.into_parts();
            let answered = exchange.answer(parts, &info, on_upgrade.is_some()).await;
            if let (Some((upgrade, info)), Some(on_upgrade)) = (answered.upgrade, on_upgrade) {
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(PendingUpgrade {
                    on_upgrade,
                    upgrade,
                    info,
                });
            }
            Ok(answered.response.map(Full::new))
        })
    }
}
