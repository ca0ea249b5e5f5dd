//! The push loop: every `interval`, the metrics and the queued events go to
//! the collector as OTLP/HTTP protobuf POSTs.
//!
//! After a reload the engine this exporter belongs to stops accepting and a
//! successor's exporter takes over the (shared) metrics; this one keeps
//! sending the events of the connections it still serves. On shutdown it
//! waits for its connections to end (they log their end), then pushes once
//! more. A collector that is away costs a warning event a minute at most;
//! events wait (up to a limit) for the next push, and metrics, being
//! cumulative, lose nothing.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio::net::TcpStream;
use tokio::time::MissedTickBehavior;
use zilla_engine::shutdown::Shutdown;
use zilla_engine::telemetry::duration;

use crate::{convert, Shared, LOG_QUEUE_LIMIT};

/// The event that says a push failed.
pub(crate) const EXPORT_FAILED: &str = "OTLP_EXPORT_FAILED";
/// How long one POST (connect included) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a collector that stays away is reported.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Pushes every interval until the engine shuts down.
pub(crate) async fn run(shared: Arc<Shared>, shutdown: Shutdown) {
    let mut ticks = tokio::time::interval(shared.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is immediate: the first push is one interval in.
    ticks.tick().await;
    let mut pusher = Pusher {
        shared,
        owns_metrics: true,
        failure_logged: None,
    };
    loop {
        tokio::select! {
            _ = ticks.tick() => pusher.push().await,
            _ = shutdown.accepting_stopped(), if pusher.owns_metrics => {
                if !shutdown.is_draining() {
                    // Replaced by a reload: the successor pushes the metrics.
                    pusher.owns_metrics = false;
                    continue;
                }
                break;
            }
            _ = shutdown.draining(), if !pusher.owns_metrics => break,
        }
    }
    // Shutting down: the last sessions end (and say so), then a last push.
    tokio::select! {
        _ = shutdown.connections_ended() => {}
        _ = shutdown.terminated() => {}
    }
    pusher.push().await;
}

struct Pusher {
    shared: Arc<Shared>,
    /// False once a successor exports the metrics.
    owns_metrics: bool,
    failure_logged: Option<tokio::time::Instant>,
}

impl Pusher {
    async fn push(&mut self) {
        let shared = self.shared.clone();
        if let (true, Some(url)) = (self.owns_metrics, &shared.metrics_url) {
            let start = shared
                .started
                .get()
                .copied()
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let series = shared.metrics.collect();
            let request =
                convert::metrics_request(&series, &shared.attributes, start, SystemTime::now());
            if let Err(why) = post(url, request.encode_to_vec()).await {
                self.failed(url, &why);
            }
        }
        if let Some(url) = &shared.logs_url {
            let records: Vec<_> = {
                let mut queue = shared.logs.lock().unwrap_or_else(|p| p.into_inner());
                queue.drain(..).collect()
            };
            if records.is_empty() {
                return;
            }
            let request = convert::logs_request(records, &shared.attributes);
            if let Err(why) = post(url, request.encode_to_vec()).await {
                self.failed(url, &why);
                // Back in line for the next push, behind nothing newer.
                let mut queue = shared.logs.lock().unwrap_or_else(|p| p.into_inner());
                let records = request
                    .resource_logs
                    .into_iter()
                    .flat_map(|r| r.scope_logs)
                    .flat_map(|s| s.log_records);
                for (index, record) in records.enumerate() {
                    queue.insert(index, record);
                }
                while queue.len() > LOG_QUEUE_LIMIT {
                    queue.pop_front();
                }
            }
        }
    }

    fn failed(&mut self, url: &Uri, why: &str) {
        let now = tokio::time::Instant::now();
        if self
            .failure_logged
            .is_some_and(|at| now < at + FAILURE_LOG_INTERVAL)
        {
            return;
        }
        self.failure_logged = Some(now);
        self.shared
            .events
            .warn(EXPORT_FAILED, format!("push to {url} failed: {why}"));
    }
}

/// POSTs `body` as `application/x-protobuf` to `url`; any 2xx is success.
async fn post(url: &Uri, body: Vec<u8>) -> Result<(), String> {
    let attempt = async {
        let host = url.host().unwrap_or_default();
        let port = url.port_u16().unwrap_or(80);
        let stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        // Drives the connection; it ends once the response is read.
        tokio::spawn(connection);
        let path = url.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let authority = url.authority().map(|a| a.as_str()).unwrap_or(host);
        let request = Request::post(path)
            .header(HOST, authority)
            .header(CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        // Read the answer so the connection closes cleanly.
        let _ = response.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the collector answered {status}"))
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}", duration(REQUEST_TIMEOUT))))
}
