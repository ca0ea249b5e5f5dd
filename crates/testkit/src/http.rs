//! A tiny HTTP/1.1 stub server on a free loopback port: answers GETs from a
//! table the test changes as it goes (JWKS documents, schema registries).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Path -> (status, JSON body); unknown paths answer 404.
type Routes = Arc<Mutex<HashMap<String, (u16, String)>>>;

/// A running stub.
#[derive(Debug, Clone)]
pub struct HttpStub {
    /// The port it listens on, at 127.0.0.1.
    pub port: u16,
    routes: Routes,
    requests: Arc<Mutex<Vec<String>>>,
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
        };
        let (routes, requests) = (stub.routes.clone(), stub.requests.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (routes, requests) = (routes.clone(), requests.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
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

    /// The request heads received so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
