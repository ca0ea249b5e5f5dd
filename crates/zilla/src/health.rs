//! Liveness and readiness over HTTP, for Kubernetes probes and load balancers.
//!
//! `GET /health/live` answers 200 while the process runs (the event loop that
//! answers is the one that runs the proxy, so a wedged process stops
//! answering). `GET /health/ready` answers 200 only once the configuration is
//! loaded and every listener is bound, and 503 again as soon as shutdown
//! begins, before listeners close (see `run.rs`), so traffic is sent
//! elsewhere while this process still serves it. The endpoint is the host's,
//! not an engine's: it stays up, on one port, across reloads that replace
//! the engine.
//!
//! HTTP is hyper's (decision 0017): the probes are simple, but parsing HTTP
//! from whoever can reach the port is not a thing to write by hand.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use zilla_engine::HealthEndpoint;

/// A probe that sends no complete request in this time is disconnected.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (e.g. out of descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

/// What readiness reports: starting, ready, or draining.
#[derive(Debug, Default)]
pub(crate) struct Health {
    state: AtomicU8,
}

impl Health {
    /// The configuration is loaded and every listener is bound.
    pub(crate) fn set_ready(&self) {
        // Never back from draining: shutdown is one way.
        let _ = self
            .state
            .compare_exchange(STARTING, READY, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Shutdown has begun: readiness fails from now on.
    pub(crate) fn set_draining(&self) {
        self.state.store(DRAINING, Ordering::Release);
    }

    fn readiness(&self) -> (StatusCode, &'static str) {
        match self.state.load(Ordering::Acquire) {
            READY => (StatusCode::OK, "ready\n"),
            DRAINING => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
            _ => (StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
        }
    }
}

/// Binds the health endpoint and serves it until the process ends; returns
/// the address it listens on.
pub(crate) async fn serve(
    endpoint: &HealthEndpoint,
    health: Arc<Health>,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((endpoint.host.as_str(), endpoint.port))
        .await
        .with_context(|| {
            format!(
                "cannot listen for health checks on {}:{}",
                endpoint.host, endpoint.port
            )
        })?;
    let address = listener.local_addr()?;
    tokio::spawn(accept_loop(listener, health));
    Ok(address)
}

async fn accept_loop(listener: TcpListener, health: Arc<Health>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let health = health.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = respond(&health, request.method(), request.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            // A probe that misbehaves only ends its own connection.
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(health: &Health, method: &Method, path: &str) -> Response<Full<Bytes>> {
    let (status, body) = match path {
        "/health/live" => (StatusCode::OK, "live\n"),
        "/health/ready" => health.readiness(),
        _ => (
            StatusCode::NOT_FOUND,
            "not found; try /health/live or /health/ready\n",
        ),
    };
    let (status, body) = match *method {
        Method::GET | Method::HEAD => (status, body),
        _ => (StatusCode::METHOD_NOT_ALLOWED, "use GET or HEAD\n"),
    };
    let body = if *method == Method::HEAD { "" } else { body };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(health: &Health, method: Method, path: &str) -> StatusCode {
        respond(health, &method, path).status()
    }

    #[test]
    fn readiness_follows_the_lifecycle_and_liveness_does_not() {
        let health = Health::default();
        assert_eq!(
            status(&health, Method::GET, "/health/ready"),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(status(&health, Method::GET, "/health/live"), StatusCode::OK);
        health.set_ready();
        assert_eq!(
            status(&health, Method::GET, "/health/ready"),
            StatusCode::OK
        );
        assert_eq!(
            status(&health, Method::HEAD, "/health/ready"),
            StatusCode::OK
        );
        health.set_draining();
        health.set_ready();
        assert_eq!(
            status(&health, Method::GET, "/health/ready"),
            StatusCode::SERVICE_UNAVAILABLE,
            "draining is final"
        );
        assert_eq!(status(&health, Method::GET, "/health/live"), StatusCode::OK);
    }

    #[test]
    fn other_paths_and_methods_are_refused() {
        let health = Health::default();
        assert_eq!(status(&health, Method::GET, "/"), StatusCode::NOT_FOUND);
        let response = respond(&health, &Method::POST, "/health/live");
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[ALLOW], "GET, HEAD");
    }
}
