//! MQTT over WebSocket from a real browser: headless Chromium opens a page
//! served by the test (`tests/clients/browser/`, with MQTT.js's browser
//! bundle), which connects to the example `examples/mqtt.proxy.ws` run by the
//! `zilla` host in front of a real mosquitto, its JWT in the `access_token`
//! query parameter (a browser cannot set headers on a WebSocket). The page's
//! origin (the test's server) differs from the proxy's, which the example's
//! `access-control: cross-origin` allows.
//!
//! With a valid token the page subscribes, publishes, receives its own
//! message and reports the round trip; with an invalid one it reports that
//! the connection was refused. It reports with a `fetch` POST to the test's
//! server, which the test waits for with a deadline.
//!
//! Chromium is Debian's `/usr/bin/chromium`, installed by `.ci/run`; MQTT.js
//! comes from `tests/clients/node`. When either is missing the tests fail and
//! say how to install it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use zilla_testkit::browser::Chromium;
use zilla_testkit::clients::{
    mqttjs_installed, node_dir, repo_root, ws_example_token, WsExample, MQTTJS_INSTALL,
};
use zilla_testkit::Mosquitto;

const ZILLA: &str = env!("CARGO_BIN_EXE_zilla");

/// How long the page may take, Chromium's start included, to report.
const REPORT_TIMEOUT: Duration = Duration::from_secs(60);

/// The test's web server: the page, its script and MQTT.js's browser bundle
/// on GET; the page's report on `POST /report`.
struct PageServer {
    port: u16,
    reports: Receiver<Value>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl PageServer {
    fn start() -> Self {
        let bundle = node_dir().join("node_modules/mqtt/dist/mqtt.min.js");
        mqttjs_installed().unwrap_or_else(|error| panic!("{error}"));
        assert!(
            bundle.is_file(),
            "MQTT.js's browser bundle {} is missing: {MQTTJS_INSTALL}",
            bundle.display()
        );
        let page = repo_root().join("tests/clients/browser");
        let files: Arc<[(&str, PathBuf, &str)]> = Arc::new([
            ("/index.html", page.join("index.html"), "text/html"),
            ("/page.js", page.join("page.js"), "text/javascript"),
            ("/mqtt.min.js", bundle, "text/javascript"),
        ]);
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback listener");
        let port = listener.local_addr().expect("bound").port();
        let (sender, reports) = mpsc::channel();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let (files, sender, log) = (files.clone(), sender.clone(), log.clone());
                std::thread::spawn(move || {
                    if let Err(error) = serve(stream, &files, &sender, &log) {
                        log.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!("error: {error}"));
                    }
                });
            }
        });
        Self {
            port,
            reports,
            requests,
        }
    }

    /// What the server was asked so far, for failure messages.
    fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Answers one request (the connection is closed after it).
fn serve(
    stream: TcpStream,
    files: &[(&str, PathBuf, &str)],
    reports: &Sender<Value>,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        // Chromium opens spare connections it may close unused.
        return Ok(());
    }
    let mut length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut words = request_line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    log.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(format!("{method} {path}"));
    let (status, content_type, content) = match (method, path) {
        ("POST", "/report") => match serde_json::from_slice::<Value>(&body) {
            Ok(report) => {
                let _ = reports.send(report);
                ("204 No Content", "text/plain", Vec::new())
            }
            Err(error) => ("400 Bad Request", "text/plain", error.to_string().into()),
        },
        ("GET", path) => match files.iter().find(|(name, ..)| *name == path) {
            Some((_, file, content_type)) => ("200 OK", *content_type, std::fs::read(file)?),
            None => ("404 Not Found", "text/plain", b"not found".to_vec()),
        },
        _ => ("405 Method Not Allowed", "text/plain", Vec::new()),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nconnection: close\r\n\r\n",
        content.len()
    )?;
    stream.write_all(&content)?;
    stream.flush()
}

/// Opens the page in Chromium with `proxy` (a ws:// URL) and `token`, and
/// waits for its report; returns it with how long the whole load took.
fn load_page(
    server: &PageServer,
    example: &WsExample,
    token: &str,
    name: &str,
) -> (Value, Duration) {
    let url = format!(
        "http://127.0.0.1:{}/index.html?proxy=ws://127.0.0.1:{}/mqtt&token={token}\
         &topic=browser/{name}&client=chromium-{name}&protocol=5",
        server.port, example.ws_port
    );
    let started = tokio::time::Instant::now();
    let mut chromium = Chromium::open(&url).unwrap_or_else(|error| panic!("{error}"));
    let transcript = |chromium: &Chromium| {
        format!(
            "page server requests: {:#?}\nchromium output (last lines, D-Bus noise left out):\n{}\n{}",
            server.requests(),
            last_lines(&chromium.output(), 40),
            example.transcript()
        )
    };
    let report = loop {
        match server.reports.recv_timeout(Duration::from_millis(200)) {
            Ok(report) => break report,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => panic!("the page server stopped"),
        }
        if let Some(status) = chromium.exited() {
            panic!(
                "Chromium exited with {status} before the page reported\n{}",
                transcript(&chromium)
            );
        }
        if started.elapsed() > REPORT_TIMEOUT {
            panic!(
                "the page did not report within {REPORT_TIMEOUT:?}\n{}",
                transcript(&chromium)
            );
        }
    };
    let elapsed = started.elapsed();
    eprintln!("the page reported after {elapsed:?} (Chromium's start included): {report}");
    if report["ok"] != true {
        // Shown when the test then fails.
        eprintln!("{}", transcript(&chromium));
    }
    chromium
        .close()
        .unwrap_or_else(|error| panic!("Chromium did not stop: {error}"));
    (report, elapsed)
}

/// The last `count` of Chromium's `lines`, without its complaints about the
/// missing system bus (a container has none).
fn last_lines(lines: &[String], count: usize) -> String {
    let lines: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .filter(|line| !line.contains(":ERROR:dbus/"))
        .collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// The example in front of a fresh mosquitto, and the test's page server.
fn start() -> (Mosquitto, WsExample, PageServer) {
    let server = PageServer::start();
    let broker = Mosquitto::start().unwrap_or_else(|error| panic!("{error}"));
    let example = WsExample::start(Path::new(ZILLA), &broker)
        .unwrap_or_else(|error| panic!("examples/mqtt.proxy.ws does not start: {error}"));
    (broker, example, server)
}

fn events(report: &Value) -> Vec<&str> {
    report["events"]
        .as_array()
        .map(|events| events.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn a_browser_round_trips_a_message_over_websocket_with_its_token_in_the_query() {
    let (_broker, example, server) = start();
    let (report, elapsed) = load_page(&server, &example, &ws_example_token(), "valid");
    assert_eq!(
        report["ok"],
        true,
        "the page's message made the round trip through the proxy: {report:#}\n{}",
        example.transcript()
    );
    assert_eq!(report["stage"], "receive", "{report:#}");
    let events = events(&report);
    for expected in [
        "connected (CONNACK 0)",
        "subscribed",
        "published",
        "message on browser/valid",
    ] {
        assert!(
            events.iter().any(|event| event.contains(expected)),
            "the page saw `{expected}`: {report:#}"
        );
    }
    let page_ms = report["elapsed_ms"].as_u64().unwrap_or(u64::MAX);
    assert!(
        page_ms <= elapsed.as_millis() as u64,
        "the page's own time ({page_ms} ms) is within the load ({elapsed:?}): {report:#}"
    );
    eprintln!("round trip in the page: {page_ms} ms; the whole load: {elapsed:?}");
}

#[test]
fn a_browser_with_an_invalid_token_is_refused() {
    let (_broker, example, server) = start();
    let token = "not-a-jwt";
    let (report, elapsed) = load_page(&server, &example, token, "invalid");
    assert_eq!(
        report["ok"],
        false,
        "the page with an invalid token is refused: {report:#}\n{}",
        example.transcript()
    );
    assert_eq!(
        report["stage"], "connect",
        "the refusal comes before any CONNACK: {report:#}"
    );
    let detail = report["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("closed") || detail.contains("error"),
        "the page saw the connection close or fail (not a timeout): {report:#}"
    );
    let events = events(&report);
    assert!(
        events.iter().any(|e| e.contains("connecting to"))
            && !events.iter().any(|e| e.contains("connected (")),
        "the page tried to connect and never got a CONNACK: {report:#}"
    );
    // A browser does not expose the status of a failed WebSocket handshake;
    // the proxy's answer to the same request is 401.
    let head = example
        .upgrade(&format!("/mqtt?access_token={token}"))
        .unwrap();
    assert!(
        head.starts_with("HTTP/1.1 401"),
        "the proxy refuses that upgrade with 401:\n{head}"
    );
    eprintln!(
        "refused after {} ms in the page ({elapsed:?} in all)",
        report["elapsed_ms"]
    );
}
