//! A tls client's `options.keys` and `routes[].with.certificate`, built
//! through the engine and connected over in-memory streams to a real rustls
//! server that reports the client certificate it saw.
//!
//! `test-tls-client-driver` lets a test get hold of the tls client's
//! connector; `test-tls-upstream` is the far end: it asks for a client
//! certificate (optional, so that "none presented" is observable rather than
//! a failed handshake), then writes `presented=<CN> not_before=<seconds>` or
//! `presented=-`, and `resumed=<whether the session was resumed>`, and
//! closes.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{HandshakeKind, RootCertStore, ServerConfig};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use x509_parser::prelude::{FromDer, X509Certificate};
use zilla_engine::{
    async_trait, register_binding, Binding, BindingContext, BindingFactory, BuildError, ByteStream,
    ConnectRequest, Engine, Granted, GuardSession, Kind, Ports, StreamConnector, StreamInfo,
};
use zilla_testkit::pki::Issued;

use super::{capture, config_errors, Pki};
use crate::provider;

/// The tls clients the drivers lead to, by configuration name.
static CLIENTS: Mutex<Option<HashMap<String, Arc<dyn StreamConnector>>>> = Mutex::new(None);

register_binding!(BindingFactory {
    type_name: "test-tls-client-driver",
    kinds: &[Kind::Server],
    build: build_driver,
});

fn build_driver(cx: &mut BindingContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
    let exit = cx.default_exit::<dyn StreamConnector>()?;
    let exit = exit.ok_or_else(|| cx.error("exit", "a test driver needs an exit"))?;
    CLIENTS
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(cx.namespace().to_owned(), exit.port);
    Ok(Arc::new(Driver))
}

struct Driver;

impl Binding for Driver {}

/// `options` of `test-tls-upstream`: its certificate and the client CA.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamOptions {
    cert: String,
    key: String,
    clientca: String,
}

register_binding!(BindingFactory {
    type_name: "test-tls-upstream",
    kinds: &[Kind::Client],
    build: |cx| {
        let options: UpstreamOptions = cx.options()?;
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(options.clientca.as_bytes()).unwrap())
            .unwrap();
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .unwrap();
        // One config for every connection, so that a client that resumes a
        // session can (and the test sees whose).
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(options.cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(options.key.as_bytes()).unwrap(),
            )
            .unwrap();
        Ok(Arc::new(Upstream(TlsAcceptor::from(Arc::new(config)))))
    },
});

struct Upstream(TlsAcceptor);

impl Binding for Upstream {
    fn ports(self: Arc<Self>) -> Ports {
        Ports::new().with::<dyn StreamConnector>(self)
    }
}

#[async_trait]
impl StreamConnector for Upstream {
    async fn connect(&self, _request: ConnectRequest) -> io::Result<ByteStream> {
        let (client_side, server_side) = tokio::io::duplex(64 * 1024);
        let acceptor = self.0.clone();
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(server_side).await else {
                return;
            };
            let connection = tls.get_ref().1;
            let resumed = connection.handshake_kind() == Some(HandshakeKind::Resumed);
            let presented = match connection.peer_certificates() {
                Some([leaf, ..]) => {
                    let (_, cert) = X509Certificate::from_der(leaf).unwrap();
                    let cn = cert.subject().iter_common_name().next().unwrap();
                    format!(
                        "presented={} not_before={}",
                        cn.as_str().unwrap(),
                        cert.validity().not_before.timestamp()
                    )
                }
                _ => "presented=-".to_owned(),
            };
            let said = format!("{presented} resumed={resumed}");
            let _ = tls.write_all(said.as_bytes()).await;
            let _ = tls.shutdown().await;
        });
        Ok(Box::new(client_side))
    }
}

/// A test's certificates: the upstream's, and the clients' by alias.
struct Keys {
    pki: Pki,
    clients: Vec<(String, Issued)>,
}

impl Keys {
    /// `aliases` with certificates whose CN is the alias.
    fn new(aliases: &[&str]) -> Self {
        let pki = Pki::new();
        let clients = (aliases.iter())
            .map(|alias| (alias.to_string(), pki.client_ca.client(alias)))
            .collect();
        Self { pki, clients }
    }

    fn with(mut self, alias: &str, issued: Issued) -> Self {
        self.clients.push((alias.to_owned(), issued));
        self
    }

    /// A configuration named `name` whose tls client `tls_client` has
    /// `body` (its `options` and routes, indented four spaces).
    fn yaml(&self, name: &str, body: &str) -> String {
        let keys: String = (self.clients.iter())
            .map(|(alias, issued)| {
                format!(
                    "        {alias}: {{ cert: {:?}, key: {:?} }}\n",
                    issued.cert_pem, issued.key_pem
                )
            })
            .collect();
        format!(
            r#"
name: {name}
guards:
  x509_0:
    type: test-x509
vaults:
  client:
    type: test-vault
    options:
      keys:
{keys}      trust:
        serverca: {serverca:?}
bindings:
  driver: {{ type: test-tls-client-driver, kind: server, exit: tls_client }}
  tls_client:
    type: tls
    kind: client
    vault: client
{body}
  upstream:
    type: test-tls-upstream
    kind: client
    options: {{ cert: {cert:?}, key: {key:?}, clientca: {clientca:?} }}
  other_upstream:
    type: test-tls-upstream
    kind: client
    options: {{ cert: {cert:?}, key: {key:?}, clientca: {clientca:?} }}
"#,
            serverca = self.pki.server_ca.cert_pem,
            cert = self.pki.server.cert_pem,
            key = self.pki.server.key_pem,
            clientca = self.pki.client_ca.cert_pem,
        )
    }

    /// The built configuration's tls client.
    fn client(&self, name: &str, body: &str) -> (Engine, Arc<dyn StreamConnector>) {
        let engine = Engine::from_yaml(self.yaml(name, body))
            .build()
            .unwrap_or_else(|errors| panic!("{errors}"));
        let client = (CLIENTS.lock().unwrap().as_ref())
            .and_then(|clients| clients.get(name).cloned())
            .expect("the configuration has a test-tls-client-driver");
        (engine, client)
    }
}

/// A stream whose device `identity` guard `guard` granted.
fn granted(guard: &str, identity: &str) -> StreamInfo {
    StreamInfo {
        peer: Some("192.0.2.7:50000".parse().unwrap()),
        granted: vec![Granted {
            guard: guard.into(),
            session: GuardSession {
                identity: Some(identity.to_owned()),
                ..GuardSession::default()
            },
            credentials: String::new(),
        }],
        ..StreamInfo::default()
    }
}

/// What the upstream saw of a connection opened for `origin`: the
/// certificate, and whether the session was resumed.
async fn seen(client: &Arc<dyn StreamConnector>, origin: StreamInfo) -> (String, bool) {
    let request = ConnectRequest {
        authority: None,
        origin,
        reached: None,
    };
    let mut stream = client.connect(request).await.expect("connected");
    let mut said = String::new();
    stream.read_to_string(&mut said).await.unwrap();
    let (presented, resumed) = said.rsplit_once(" resumed=").expect("the upstream's words");
    (presented.to_owned(), resumed == "true")
}

/// The certificate the upstream saw.
async fn presented(client: &Arc<dyn StreamConnector>, origin: StreamInfo) -> String {
    seen(client, origin).await.0
}

/// Only the CN of what was presented.
async fn presented_cn(client: &Arc<dyn StreamConnector>, origin: StreamInfo) -> String {
    let said = presented(client, origin).await;
    said.split_whitespace().next().unwrap().to_owned()
}

const BY_IDENTITY: &str = r#"
    options:
      sni: [localhost]
      trust: [serverca]
      keys: [device-1, device-2, device-3]
    routes:
      - with:
          certificate:
            subject.cn: ${guarded['x509_0'].identity}
        exit: upstream
"#;

#[tokio::test]
async fn each_connection_presents_the_key_of_its_streams_identity() {
    let keys = Keys::new(&["device-1", "device-2", "device-3"]);
    let (_engine, client) = keys.client("client-keys-identity", BY_IDENTITY);
    let events = capture();
    // Alternating: the upstream resumes sessions (a key's second connection
    // is resumed), so a session resumed with another key's would show as
    // that key's certificate.
    let mut resumptions = 0;
    for device in ["device-2", "device-1", "device-2", "device-3", "device-1"] {
        let (presented, resumed) = seen(&client, granted("x509_0", device)).await;
        let cn = presented.split_whitespace().next().unwrap();
        assert_eq!(cn, format!("presented={device}"));
        resumptions += usize::from(resumed);
    }
    assert_eq!(resumptions, 2, "device-2 and device-1 resumed their own");
    // Without a certificate: a session of its own, never a key's.
    let (presented, resumed) = seen(&client, granted("x509_0", "device-9")).await;
    assert_eq!((presented.as_str(), resumed), ("presented=-", false));
    events.take();
    let (presented, _) = seen(&client, granted("x509_0", "device-1")).await;
    assert!(presented.starts_with("presented=device-1 "), "{presented}");
    assert!(events.take().is_empty(), "no event when a key is found");
}

#[tokio::test]
async fn an_identity_without_a_key_or_a_stream_without_one_presents_none() {
    let keys = Keys::new(&["device-1", "device-2", "device-3"]);
    let (_engine, client) = keys.client("client-keys-none", BY_IDENTITY);
    let events = capture();
    assert_eq!(
        presented(&client, granted("x509_0", "device-9\n")).await,
        "presented=-"
    );
    let (name, message) = events.one();
    assert_eq!(name, "TLS_CLIENT_CERTIFICATE_NOT_MATCHED");
    assert_eq!(
        message,
        r#"client 192.0.2.7:50000: routes[0].with.certificate (subject.cn="device-9\n") matched no key of options.keys [device-1, device-2, device-3], so no client certificate is presented"#
    );
    // Granted by another guard only: the expression has no value.
    assert_eq!(
        presented(&client, granted("jwt0", "device-1")).await,
        "presented=-"
    );
    let (name, message) = events.one();
    assert_eq!(name, "TLS_CLIENT_CERTIFICATE_NOT_RESOLVED");
    assert_eq!(
        message,
        r#"client 192.0.2.7:50000: routes[0].with.certificate subject.cn: ${guarded['x509_0'].identity} resolved to no value (granted by jwt0), so no client certificate is presented"#
    );
    // A key after a miss is still its own.
    assert_eq!(
        presented_cn(&client, granted("x509_0", "device-1")).await,
        "presented=device-1"
    );
}

#[tokio::test]
async fn the_newest_of_several_matching_keys_is_presented_whatever_their_order() {
    let pki_keys = Keys::new(&[]);
    let ca = &pki_keys.pki.client_ca;
    let (old, new, other) = (
        ca.client_valid("device-1", (2020, 1, 1), (2099, 1, 1)),
        ca.client_valid("device-1", (2024, 6, 1), (2099, 1, 1)),
        ca.client("device-2"),
    );
    let keys = pki_keys
        .with("new", new)
        .with("old", old)
        .with("other", other);
    for (name, order) in [
        ("client-keys-newest-a", "[old, new, other]"),
        ("client-keys-newest-b", "[new, old, other]"),
    ] {
        let body = format!(
            r#"
    options:
      sni: [localhost]
      trust: [serverca]
      keys: {order}
    routes:
      - with:
          certificate:
            subject.dn: CN=device-1
        exit: upstream
"#
        );
        let (_engine, client) = keys.client(name, &body);
        assert_eq!(
            presented(&client, StreamInfo::default()).await,
            "presented=device-1 not_before=1717200000",
            "{order}"
        );
    }
}

#[tokio::test]
async fn routes_choose_the_exit_and_whether_to_select_and_the_first_key_is_the_default() {
    let keys = Keys::new(&["gateway", "device-1", "device-2"]);
    let body = r#"
    options:
      sni: [localhost]
      trust: [serverca]
      keys: [gateway, device-1, device-2]
    routes:
      - guarded:
          x509_0: [device]
        with:
          certificate:
            subject.cn: ${guarded['x509_0'].identity}
        exit: upstream
      - when:
          - authority: elsewhere.example.com
        exit: other_upstream
    exit: upstream
"#;
    let (_engine, client) = keys.client("client-keys-routes", body);
    let mut device = granted("x509_0", "device-2");
    device.granted[0].session.roles = vec!["device".into()];
    assert_eq!(presented_cn(&client, device).await, "presented=device-2");
    // Without the role: the default exit, presenting the first key.
    assert_eq!(
        presented_cn(&client, granted("x509_0", "device-2")).await,
        "presented=gateway"
    );
}

#[tokio::test]
async fn one_key_without_routes_is_presented_as_before() {
    let keys = Keys::new(&["client1"]);
    let body = r#"
    options:
      sni: [localhost]
      trust: [serverca]
      keys: [client1]
    exit: upstream
"#;
    let (_engine, client) = keys.client("client-keys-one", body);
    assert_eq!(
        presented_cn(&client, granted("x509_0", "device-1")).await,
        "presented=client1"
    );
}

#[tokio::test]
async fn a_connection_no_route_takes_is_refused_with_an_event() {
    let keys = Keys::new(&["device-1"]);
    let body = r#"
    options:
      sni: [localhost]
      trust: [serverca]
      keys: [device-1]
    routes:
      - when:
          - authority: elsewhere.example.com
        exit: upstream
"#;
    let (_engine, client) = keys.client("client-keys-unrouted", body);
    let events = capture();
    let request = ConnectRequest {
        authority: None,
        origin: StreamInfo::default(),
        reached: None,
    };
    let error = match client.connect(request).await {
        Ok(_) => panic!("connected without a route"),
        Err(error) => error,
    };
    assert_eq!(error.kind(), io::ErrorKind::PermissionDenied);
    let (name, message) = events.one();
    assert_eq!(name, "TLS_ROUTE_REJECTED");
    assert_eq!(
        message,
        r#"no route for authority localhost, no port, and no exit; not connected"#
    );
}

#[test]
fn with_certificate_errors_are_reported_at_their_paths() {
    let keys = Keys::new(&["device-1"]);
    let client = |certificate: &str| {
        format!(
            r#"
    options:
      sni: [localhost]
      trust: [serverca]
      keys: [device-1]
    routes:
      - when:
          - authority: localhost
        with:
          certificate: {certificate}
        exit: upstream
"#
        )
    };
    for (name, certificate, expected) in [
        (
            "client-keys-empty",
            "{}",
            "bindings.tls_client.routes[0].with.certificate: name the key to present by one property",
        ),
        (
            "client-keys-multiple",
            "{ subject.cn: client1, subject.dn: \"CN=client1,O=Aklivity,C=US\" }",
            "bindings.tls_client.routes[0].with.certificate: name one property, `subject.cn` or `subject.dn`, not both",
        ),
        (
            "client-keys-property",
            "{ san.dns: client1.example.com }",
            "unknown field `san.dns`, expected `subject.cn` or `subject.dn`",
        ),
        (
            "client-keys-dn",
            "{ subject.dn: client1 }",
            "bindings.tls_client.routes[0].with.certificate.subject.dn: `client1` is not a distinguished name",
        ),
        (
            "client-keys-guard",
            "{ subject.cn: \"${guarded['x509_9'].identity}\" }",
            "bindings.tls_client.routes[0].with.certificate.subject.cn",
        ),
        (
            "client-keys-expression",
            "{ subject.cn: \"${guarded['x509_0'].roles}\" }",
            "is not `${guarded['<guard>'].identity}`",
        ),
    ] {
        let found = config_errors(&keys.yaml(name, &client(certificate)));
        assert!(found.contains(expected), "{name}: {found}");
        if name == "client-keys-guard" {
            assert!(found.contains("x509_9"), "{found}");
        }
    }
    let no_keys = r#"
    options:
      sni: [localhost]
      trust: [serverca]
    routes:
      - with:
          certificate:
            subject.cn: client1
        exit: upstream
"#;
    let found = config_errors(&keys.yaml("client-keys-no-keys", no_keys));
    assert!(
        found.contains(
            "bindings.tls_client.routes[0].with.certificate: selects one of `options.keys`, which names none"
        ),
        "{found}"
    );
    let missing = r#"
    options:
      trust: [serverca]
      keys: [device-1, device-7]
    exit: upstream
"#;
    let found = config_errors(&keys.yaml("client-keys-missing", missing));
    assert!(
        found.contains("bindings.tls_client.options.keys[1]"),
        "{found}"
    );
}

#[test]
fn servers_and_proxies_take_no_with() {
    let pki = Pki::new();
    let server = super::yaml(
        "client-keys-server-with",
        &pki,
        "{}",
        r#"    options:
      keys: [localhost]
    routes:
      - with:
          certificate:
            subject.cn: client1
        exit: open_app
"#,
    );
    let found = config_errors(&server);
    assert!(
        found.contains("bindings.tls_server.routes[0].with: a tls server takes no `with`"),
        "{found}"
    );
    let proxy = r#"
name: client-keys-proxy-with
bindings:
  net0:
    type: tls
    kind: proxy
    routes:
      - with:
          certificate:
            subject.cn: client1
        exit: net1
  net1: { type: test-tls-exit, kind: server }
"#;
    let found = config_errors(proxy);
    assert!(
        found.contains("bindings.net0.routes[0].with: a tls proxy takes no `with`"),
        "{found}"
    );
}
