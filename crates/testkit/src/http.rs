//! A tiny HTTP/1.1 stub server on a free loopback port: answers GETs from a
//! table the test changes as it goes (JWKS documents, schema registries),
//! keeping the bodies of POSTs (an OTLP collector); and [`get`], a blocking
//! GET for checking what the proxy serves (health, metrics).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Path -> (status, JSON body); unknown paths answer 404.
type Routes = Arc<Mutex<HashMap<String, (u16, String)>>>;
/// (path, body) of every request that had a body.
type Bodies = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A running stub.
#[derive(Debug, Clone)]
pub struct HttpStub {
    /// The port it listens on, at 127.0.0.1.
    pub port: u16,
    routes: Routes,
    requests: Arc<Mutex<Vec<String>>>,
    bodies: Bodies,
}

impl HttpStub {
    /// Starts answering on a free port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("loopback listener");
        let port = listener.local_addr().expect("bound").port();
        let stub = Self {
            port,
            routes: Arc::default(),
            requests: Arc::default(),
            bodies: Arc::default(),
        };
        let (routes, requests) = (stub.routes.clone(), stub.requests.clone());
        let bodies = stub.bodies.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (routes, requests) = (routes.clone(), requests.clone());
                let bodies = bodies.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = head
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map_or(head.len(), |at| at + 4);
                    let mut body = head.split_off(end);
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let length = head
                        .lines()
                        .find_map(|line| {
                            let (name, value) = line.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    while body.len() < length {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => body.extend_from_slice(&chunk[..n]),
                        }
                    }
                    if length > 0 {
                        bodies
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((path.clone(), body));
                    }
                    requests
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(head);
                    let (status, body) = routes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&path)
                        .cloned()
                        .unwrap_or((404, "{\"error_code\":40401}".into()));
                    let response = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        stub
    }

    /// Answers `path` with `status` and `body` from now on.
    pub fn set(&self, path: &str, status: u16, body: impl Into<String>) {
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.to_owned(), (status, body.into()));
    }

    /// Answers every path with 503, as a registry in an outage.
    pub fn go_down(&self) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        for answer in routes.values_mut() {
            *answer = (503, "{}".into());
        }
    }

    /// The bodies of the requests to `path` so far (e.g. OTLP exports), oldest first.
    pub fn bodies(&self, path: &str) -> Vec<Vec<u8>> {
        self.bodies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(at, _)| at == path)
            .map(|(_, body)| body.clone())
            .collect()
    }

    /// The request heads received so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A blocking `GET http://127.0.0.1:{port}{path}`: the status and the body,
/// whatever the status (a 503 is an answer, not an error).
pub fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    let agent = ureq::Agent::new_with_config(
        ureq::config::Config::builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(5)))
            .build(),
    );
    let mut response = agent
        .get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
        .map_err(|e| format!("GET {path} on port {port}: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("GET {path} on port {port}: {e}"))?;
    Ok((status, body))
}
