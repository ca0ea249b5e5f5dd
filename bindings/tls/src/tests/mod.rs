//! Tests of the tls server's `options.authorization`, `guarded` routes and
//! refusals, built through the engine from `zilla.yaml` and driven over
//! in-memory streams by a real rustls client, with certificates made at
//! test time.
//!
//! Test plugins stand in for the rest of a pipeline: `test-tls-driver` (a
//! binding that routes byte streams to the tls server and lets a test get
//! hold of it), `test-tls-exit` (writes what it was handed: its name and
//! what the stream says was granted, then closes), `test-vault` (keys and
//! trusted certificates inline, PEM) and `test-x509` (a stand-in for the
//! x509 guard: the leaf's CN is the identity, roles by CN from its options,
//! CNs listed in `refuse` are refused, `unavailable: true` cannot decide).

mod authorization;
mod client_keys;
mod refusals;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{AlertDescription, ClientConfig, RootCertStore};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;
use x509_parser::pem::Pem;
use zilla_engine::telemetry::metrics::{Series, Value};
use zilla_engine::telemetry::EVENT_TARGET;
use zilla_engine::{
    async_trait, register_binding, register_guard, register_vault, Binding, BindingContext,
    BindingFactory, BuildError, ByteStream, Engine, Guard, GuardFactory, GuardRejection,
    GuardSession, KeyEntry, Kind, PluginContext, Ports, StreamHandler, StreamInfo, Vault,
    VaultError, VaultFactory,
};
use zilla_testkit::pki::{Issued, TestCa};

use crate::names::CertificateNames;
use crate::provider;

/// The tls servers the drivers lead to, by configuration name.
static SERVERS: Mutex<Option<HashMap<String, Arc<dyn StreamHandler>>>> = Mutex::new(None);

register_binding!(BindingFactory {
    type_name: "test-tls-driver",
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
    type_name: "test-tls-exit",
    kinds: &[Kind::Server],
    build: |cx| {
        cx.no_options()?;
        Ok(Arc::new(TestExit {
            name: cx.name().to_owned(),
        }))
    },
});

/// Writes `exit=<name> granted=<what x509_0 granted>` and closes.
struct TestExit {
    name: String,
}

impl Binding for TestExit {
    fn ports(self: Arc<Self>) -> Ports {
        Ports::new().with::<dyn StreamHandler>(self)
    }
}

#[async_trait]
impl StreamHandler for TestExit {
    async fn handle(&self, mut stream: ByteStream, info: StreamInfo) {
        let granted = match info.granted("x509_0") {
            None => "-".to_owned(),
            Some(granted) => format!(
                "{}|{}|{}|certificates={}",
                granted.session.identity.as_deref().unwrap_or("-"),
                granted.session.roles.join(","),
                granted
                    .session
                    .attributes
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
                granted
                    .credentials
                    .matches("-----BEGIN CERTIFICATE-----")
                    .count(),
            ),
        };
        let said = format!("exit={} granted={granted}", self.name);
        let _ = stream.write_all(said.as_bytes()).await;
        let _ = stream.shutdown().await;
    }
}

/// `options` of `test-vault`: PEM inline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestVaultOptions {
    #[serde(default)]
    keys: BTreeMap<String, TestKey>,
    #[serde(default)]
    trust: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestKey {
    cert: String,
    key: String,
}

register_vault!(VaultFactory {
    type_name: "test-vault",
    build: |cx| {
        let options: TestVaultOptions = cx.options()?;
        Ok(Arc::new(TestVault(options)))
    },
});

struct TestVault(TestVaultOptions);

impl Vault for TestVault {
    fn key(&self, alias: &str) -> Result<KeyEntry, VaultError> {
        let entry = self
            .0
            .keys
            .get(alias)
            .ok_or_else(|| VaultError(alias.into()))?;
        Ok(KeyEntry {
            chain: CertificateDer::pem_slice_iter(entry.cert.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| VaultError(e.to_string()))?,
            key: PrivateKeyDer::from_pem_slice(entry.key.as_bytes())
                .map_err(|e| VaultError(e.to_string()))?,
        })
    }

    fn trusted(&self, alias: &str) -> Result<CertificateDer<'static>, VaultError> {
        let pem = self
            .0
            .trust
            .get(alias)
            .ok_or_else(|| VaultError(alias.into()))?;
        CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| VaultError(e.to_string()))
    }
}

/// `options` of `test-x509`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestGuardOptions {
    #[serde(default)]
    roles: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    refuse: Vec<String>,
    #[serde(default)]
    unavailable: bool,
}

register_guard!(GuardFactory {
    type_name: "test-x509",
    build: build_guard,
});

fn build_guard(cx: &mut PluginContext<'_>) -> Result<Arc<dyn Guard>, BuildError> {
    let options: Option<TestGuardOptions> = match cx.raw_options() {
        None => None,
        Some(_) => Some(cx.options()?),
    };
    Ok(Arc::new(TestGuard(options.unwrap_or_default())))
}

struct TestGuard(TestGuardOptions);

#[async_trait]
impl Guard for TestGuard {
    /// Reads the chain as an x509 guard would: PEM, leaf first.
    async fn authorize(&self, credentials: &str) -> Result<GuardSession, GuardRejection> {
        if self.0.unavailable {
            return Err(GuardRejection::Unavailable("the test guard is down".into()));
        }
        let invalid = |why: &str| GuardRejection::InvalidCredentials(why.to_owned());
        let mut names = Vec::new();
        let mut expires_at = None;
        for pem in Pem::iter_from_buffer(credentials.as_bytes()) {
            let pem = pem.map_err(|_| invalid("not PEM"))?;
            let cert = pem.parse_x509().map_err(|_| invalid("not a certificate"))?;
            let der = pem.contents.clone();
            let cert_names = CertificateNames::of(&der).ok_or_else(|| invalid("no names"))?;
            if names.is_empty() {
                let seconds = cert.validity().not_after.timestamp();
                expires_at = u64::try_from(seconds)
                    .ok()
                    .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
            }
            names.push(cert_names);
        }
        let leaf = names.first().ok_or_else(|| invalid("no certificate"))?;
        if self.0.refuse.contains(&leaf.subject) {
            return Err(invalid(&format!("{} is not welcome", leaf.subject)));
        }
        // Leaf first: each certificate is issued by the next one.
        for pair in names.windows(2) {
            if pair[0].issuer != pair[1].subject {
                return Err(invalid("the chain is not in order"));
            }
        }
        let chain: Vec<&str> = names.iter().map(|n| n.subject.as_str()).collect();
        Ok(GuardSession {
            identity: Some(leaf.subject.clone()),
            roles: self.0.roles.get(&leaf.subject).cloned().unwrap_or_default(),
            attributes: BTreeMap::from([
                ("issuer".to_owned(), leaf.issuer.clone()),
                ("chain".to_owned(), chain.join("<")),
            ]),
            expires_at,
        })
    }
}

/// The CAs and the server certificate of a test.
pub(crate) struct Pki {
    /// Issues the server's certificate; the clients trust it.
    server_ca: TestCa,
    server: Issued,
    /// Issues client certificates; the server trusts it (`clientca`).
    pub(crate) client_ca: TestCa,
}

impl Pki {
    pub(crate) fn new() -> Self {
        let server_ca = TestCa::new("Server CA");
        let server = server_ca.server(&["localhost"]);
        Self {
            server_ca,
            server,
            client_ca: TestCa::new("Client CA"),
        }
    }
}

/// A built configuration and the tls server its driver leads to.
pub(crate) struct Served {
    engine: Engine,
    server: Arc<dyn StreamHandler>,
}

/// `tls_body` (the tls server's `options` and `routes`, indented four
/// spaces) in a configuration named `name` (unique among tests) with
/// `test-x509` as guard `x509_0` (options `guard_options`, a flow mapping)
/// and as `x509_1`,
/// the `test-vault` holding `pki`, and exits `partner_app` and `open_app`.
pub(crate) fn yaml(name: &str, pki: &Pki, guard_options: &str, tls_body: &str) -> String {
    format!(
        r#"
name: {name}
telemetry:
  metrics: [tls.*]
guards:
  x509_0:
    type: test-x509
    options: {guard_options}
  x509_1:
    type: test-x509
vaults:
  server:
    type: test-vault
    options:
      keys:
        localhost: {{ cert: {cert:?}, key: {key:?} }}
      trust:
        clientca: {clientca:?}
bindings:
  driver: {{ type: test-tls-driver, kind: server, exit: tls_server }}
  tls_server:
    type: tls
    kind: server
    vault: server
    telemetry: {{ metrics: [tls.*] }}
{tls_body}
  partner_app: {{ type: test-tls-exit, kind: server }}
  open_app: {{ type: test-tls-exit, kind: server }}
"#,
        cert = pki.server.cert_pem,
        key = pki.server.key_pem,
        clientca = pki.client_ca.cert_pem,
    )
}

/// [`yaml`], built; panics with the configuration errors if it is invalid.
pub(crate) fn served(name: &str, pki: &Pki, guard_options: &str, tls_body: &str) -> Served {
    let engine = Engine::from_yaml(yaml(name, pki, guard_options, tls_body))
        .build()
        .unwrap_or_else(|errors| panic!("{errors}"));
    let server = SERVERS
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|servers| servers.get(engine.namespace()).cloned())
        .expect("the configuration has a test-tls-driver");
    Served { engine, server }
}

/// The message of every configuration error of `yaml`.
pub(crate) fn config_errors(yaml: &str) -> String {
    match Engine::from_yaml(yaml).build() {
        Ok(_) => panic!("the configuration is valid"),
        Err(errors) => errors.to_string(),
    }
}

/// What a client saw of its connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The exit's words, then a clean close.
    Served(String),
    /// A fatal alert; `after_handshake`: the client had finished its
    /// handshake (TLS 1.3 with client certificates) and read the alert on
    /// its first read.
    Alert {
        alert: AlertDescription,
        after_handshake: bool,
    },
    /// The handshake completed, then the server closed with `close_notify`
    /// without a byte.
    Closed,
    /// Something else: the error.
    Failed(String),
}

fn alert_of(error: &io::Error) -> Option<AlertDescription> {
    match crate::refusals::tls_error(error) {
        Some(rustls::Error::AlertReceived(alert)) => Some(*alert),
        _ => None,
    }
}

/// Which protocol versions a client offers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Version {
    Tls13,
    Tls12,
}

/// A client trusting the server's CA and presenting `identity` (with the
/// `extra` certificates of its chain after it), offering `version`.
pub(crate) fn client(
    pki: &Pki,
    identity: Option<&Issued>,
    extra: &[&[u8]],
    version: Version,
) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(pki.server_ca.cert_der.clone()))
        .unwrap();
    let versions: &[&rustls::SupportedProtocolVersion] = match version {
        Version::Tls13 => &[&rustls::version::TLS13],
        Version::Tls12 => &[&rustls::version::TLS12],
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some(issued) => {
            let mut chain = vec![CertificateDer::from(issued.cert_der.clone())];
            chain.extend(extra.iter().map(|der| CertificateDer::from(der.to_vec())));
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.key_der.clone()));
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

impl Served {
    /// Connects `connector` (SNI `localhost`) and tells what happened.
    pub(crate) async fn connect(&self, connector: &TlsConnector) -> Outcome {
        let (client_side, server_side) = tokio::io::duplex(64 * 1024);
        let info = StreamInfo {
            peer: Some("192.0.2.7:50000".parse().unwrap()),
            ..StreamInfo::default()
        };
        let server = self.server.clone();
        let task = tokio::spawn(async move { server.handle(Box::new(server_side), info).await });
        let name = ServerName::try_from("localhost").unwrap();
        let outcome = match connector.connect(name, client_side).await {
            Err(error) => match alert_of(&error) {
                Some(alert) => Outcome::Alert {
                    alert,
                    after_handshake: false,
                },
                None => Outcome::Failed(error.to_string()),
            },
            Ok(mut tls) => {
                let mut received = Vec::new();
                match tls.read_to_end(&mut received).await {
                    Ok(_) if received.is_empty() => Outcome::Closed,
                    Ok(_) => Outcome::Served(String::from_utf8_lossy(&received).into_owned()),
                    Err(error) => match alert_of(&error) {
                        Some(alert) => Outcome::Alert {
                            alert,
                            after_handshake: true,
                        },
                        None => Outcome::Failed(error.to_string()),
                    },
                }
            }
        };
        task.await.unwrap();
        outcome
    }

    /// `tls.refusals` of the tls server, by reason (zeros left out).
    pub(crate) fn refusals(&self) -> BTreeMap<String, u64> {
        self.engine
            .metrics()
            .collect()
            .iter()
            .filter(|s: &&Series| s.metric.name == "tls.refusals")
            .filter(|s| s.label("binding") == Some("tls_server"))
            .filter_map(|s| match s.value {
                Value::Counter(0) => None,
                Value::Counter(n) => Some((s.label("reason").unwrap_or("?").to_owned(), n)),
                _ => None,
            })
            .collect()
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
    /// Every event as `(name, message)`, and forgets them.
    pub(crate) fn take(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }

    /// The only event since the last `take`; panics unless there is exactly one.
    pub(crate) fn one(&self) -> (String, String) {
        let mut events = self.take();
        assert_eq!(events.len(), 1, "{events:#?}");
        events.remove(0)
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
