//! The proxy in-process for tests: configurations of the usual shape (also
//! for the `zilla` host as a child process), started on a free port, and the
//! telemetry events they emit, captured.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use zilla_engine::telemetry::{format_event, Event, Exporter};
use zilla_engine::{
    register_exporter, BuildError, Engine, EngineBuilder, ExporterFactory, PluginContext,
};

/// A started engine and the port its `north_tcp_server` listens on.
#[derive(Debug)]
pub struct Proxy {
    /// The running engine.
    pub engine: Engine,
    /// The port of `north_tcp_server`.
    pub port: u16,
}

impl Proxy {
    /// Builds and starts `yaml`, whose `north_tcp_server` listens on port 0.
    pub async fn start(yaml: &str) -> Self {
        Self::start_with(Engine::from_yaml(yaml)).await
    }

    /// Builds and starts a configured engine builder.
    pub async fn start_with(builder: EngineBuilder) -> Self {
        capture_events();
        let engine = builder
            .build()
            .unwrap_or_else(|errors| panic!("the test configuration is valid: {errors}"));
        let started = engine.start().await.expect("the proxy starts");
        let port = started
            .iter()
            .find(|b| b.name == "north_tcp_server")
            .expect("north_tcp_server started")
            .listening[0]
            .port();
        Self { engine, port }
    }
}

/// `tcp server -> mqtt server -> mqtt client(s) -> tcp client(s)`: `server`
/// is the mqtt server's body after `kind` (options, routes, exit), and each
/// `(name, port)` in `brokers` gets `mqtt_client_<name>` and `tcp_client_<name>`.
pub fn mqtt_proxy_yaml(server: &str, brokers: &[(&str, u16)]) -> String {
    mqtt_yaml("test-proxy", ("capture", "capture"), server, brokers)
}

/// [`mqtt_proxy_yaml`]'s configuration for the `zilla` host as a child
/// process ([`crate::ZillaProcess`]): named `name`, with the stdout exporter
/// (`stdout_logs_exporter`) instead of `capture`, which only the test process
/// registers.
pub fn mqtt_host_yaml(name: &str, server: &str, brokers: &[(&str, u16)]) -> String {
    mqtt_yaml(name, ("stdout_logs_exporter", "stdout"), server, brokers)
}

/// The configuration of [`mqtt_proxy_yaml`], named `proxy_name`, with one
/// exporter: `(exporter name, type)`.
fn mqtt_yaml(
    proxy_name: &str,
    (exporter, exporter_type): (&str, &str),
    server: &str,
    brokers: &[(&str, u16)],
) -> String {
    let mut yaml = format!(
        "
name: {proxy_name}
telemetry:
  exporters:
    {exporter}:
      type: {exporter_type}
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: {{ host: 127.0.0.1, port: 0 }}
    exit: north_mqtt_server
  north_mqtt_server:
    type: mqtt
    kind: server
{server}
"
    );
    for (name, port) in brokers {
        yaml.push_str(&format!(
            "
  mqtt_client_{name}:
    type: mqtt
    kind: client
    exit: tcp_client_{name}
  tcp_client_{name}:
    type: tcp
    kind: client
    options: {{ host: 127.0.0.1, port: {port} }}
"
        ));
    }
    yaml
}

/// Events exported by every engine in this process with the `capture` exporter.
pub fn captured_events() -> Vec<String> {
    events().lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Waits until at least `count` captured events contain every one of `needles`.
pub async fn wait_for_events(needles: &[&str], count: usize) -> Vec<String> {
    let matching = || {
        captured_events()
            .into_iter()
            .filter(|line| needles.iter().all(|n| line.contains(n)))
            .collect::<Vec<_>>()
    };
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let lines = matching();
            if lines.len() >= count {
                return lines;
            }
            // Polling interval; the condition decides.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!(
            "fewer than {count} events with {needles:?} in {:#?}",
            captured_events()
        )
    })
}

/// Waits until a captured event contains every one of `needles`.
pub async fn wait_for_event(needles: &[&str]) -> String {
    wait_for_events(needles, 1).await.remove(0)
}

fn events() -> &'static Arc<Mutex<Vec<String>>> {
    static EVENTS: OnceLock<Arc<Mutex<Vec<String>>>> = OnceLock::new();
    EVENTS.get_or_init(Default::default)
}

/// Installs the engine's event layer as this process's subscriber (once).
fn capture_events() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _ = tracing_subscriber::registry()
            .with(zilla_engine::EventLayer)
            .try_init();
    });
}

struct CaptureExporter;

impl Exporter for CaptureExporter {
    fn export(&self, event: &Event<'_>) {
        events()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format_event(event));
    }
}

fn build_capture(cx: &mut PluginContext<'_>) -> Result<Arc<dyn Exporter>, BuildError> {
    cx.no_options()?;
    Ok(Arc::new(CaptureExporter))
}

register_exporter!(ExporterFactory {
    type_name: "capture",
    build: build_capture,
});
