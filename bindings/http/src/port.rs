//! The port an http server hands requests to: one request head in, one
//! response out, and for a protocol upgrade (WebSocket) what to do with the
//! upgraded byte stream once the response has been sent.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use zilla_engine::{async_trait, ByteStream, Port, StreamInfo};

/// A request as the exit sees it: the head only. The http server has already
/// routed it, checked its origin and authorized its credentials; what a guard
/// granted is in the accompanying `StreamInfo::granted`.
pub type HttpRequest = http::request::Parts;

/// What runs on the upgraded byte stream after a `101 Switching Protocols`.
pub type Upgrade =
    Box<dyn FnOnce(ByteStream, StreamInfo) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The exit's answer to one request.
pub struct HttpAnswer {
    /// The response to send (status, headers, a small body).
    pub response: http::Response<Bytes>,
    /// With a `101` response: what takes over the connection once the
    /// response is on the wire. Ignored for any other status.
    pub upgrade: Option<Upgrade>,
}

impl HttpAnswer {
    /// A plain response without upgrade.
    pub fn response(response: http::Response<Bytes>) -> Self {
        Self {
            response,
            upgrade: None,
        }
    }

    /// A bodiless response with `status` and a short text reason.
    pub fn status(status: http::StatusCode, reason: &str) -> Self {
        let mut response = http::Response::new(Bytes::from(format!("{reason}\n")));
        *response.status_mut() = status;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Self::response(response)
    }
}

/// Inbound port of request handlers: "answer this HTTP request".
#[async_trait]
pub trait HttpHandler: Send + Sync + 'static {
    /// Answers `request`, which arrived on a stream described by `info`.
    async fn handle(&self, request: HttpRequest, info: StreamInfo) -> HttpAnswer;
}

impl Port for dyn HttpHandler {
    const CAPABILITY: &'static str = "answer HTTP requests";
}
