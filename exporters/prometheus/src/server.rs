//! The HTTP endpoint Prometheus scrapes: GET on a configured path answers
//! the metrics; anything else is 404 or 405.
//!
//! The socket comes from the engine's listener pool, like a tcp server's: a
//! reloaded configuration with the same endpoint takes over the very socket,
//! so a reload neither fails on "address in use" nor refuses a scrape. The
//! accept loop ends when its engine stops accepting; scrape connections end
//! when it drains. HTTP parsing is hyper's.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};
use zilla_engine::binding::StartError;
use zilla_engine::shutdown::Shutdown;
use zilla_engine::telemetry::metrics::Metrics;
use zilla_engine::{ListenKey, Listeners};

/// A scraper that sends no complete request in this time is disconnected.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (e.g. out of descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What one port serves.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub(crate) paths: Vec<String>,
    pub(crate) metrics: Metrics,
}

/// The listening socket for `port` on every interface (as Zilla), shared
/// with the engine this one replaces when it listened there too.
pub(crate) fn listen(
    listeners: &Listeners,
    exporter: &str,
    port: u16,
) -> Result<Arc<TcpListener>, StartError> {
    let address = SocketAddr::from(([0, 0, 0, 0], port));
    let cannot = |e: io::Error| {
        StartError::new(format!("exporter {exporter} cannot listen on {address}"), e)
    };
    let bind = || {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(address)?;
        socket.listen(128)
    };
    let (listener, _shared) = listeners
        .listen(ListenKey::new(address, exporter), bind)
        .map_err(cannot)?;
    Ok(listener)
}

/// Accepts scrapes until the engine stops accepting.
pub(crate) async fn serve(listener: Arc<TcpListener>, endpoint: Endpoint, shutdown: Shutdown) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.accepting_stopped() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                tokio::select! {
                    _ = shutdown.accepting_stopped() => return,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let endpoint = endpoint.clone();
        let draining = shutdown.clone();
        // Not a tracked connection: a scraper's keep-alive connection must
        // not hold a replaced configuration open, and ends when it drains.
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = respond(&endpoint, request.method(), request.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                _ = draining.draining() => {}
            }
        });
    }
}

fn respond(endpoint: &Endpoint, method: &Method, path: &str) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    };
    if !endpoint.paths.iter().any(|p| p == path) {
        return text(
            StatusCode::NOT_FOUND,
            format!("not found; metrics are at {}\n", endpoint.paths.join(", ")),
        );
    }
    if *method != Method::GET && *method != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into());
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let body = if *method == Method::HEAD {
        String::new()
    } else {
        crate::encode(&endpoint.metrics)
    };
    let mut response = text(StatusCode::OK, body);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(crate::CONTENT_TYPE));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_paths_answer_and_only_to_get() {
        let endpoint = Endpoint {
            paths: vec!["/metrics".into()],
            metrics: Metrics::new(),
        };
        let ok = respond(&endpoint, &Method::GET, "/metrics");
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[CONTENT_TYPE], crate::CONTENT_TYPE);
        assert_eq!(
            respond(&endpoint, &Method::GET, "/other").status(),
            StatusCode::NOT_FOUND
        );
        let post = respond(&endpoint, &Method::POST, "/metrics");
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[ALLOW], "GET, HEAD");
    }
}
