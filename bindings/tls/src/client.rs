//! tls client: originates TLS over its exit, verifies the server, and
//! presents the client certificate its route selects.
//!
//! Routes (`when`: `authority`, `alpn`, `port`; `guarded`) choose the exit
//! and, with `with.certificate`, which of `options.keys` to present, by the
//! identity of the stream the connection is for (see [`crate::select`]).
//! Without `with`, the first of `keys` is presented (none without keys).
//!
//! Every key has a `ClientConfig` of its own, built once, and a connection
//! takes the one of its key (a selection is a hash lookup). Not one config
//! with a certificate resolver that picks per connection: a resumed TLS
//! session keeps the client certificate of the handshake that made it, and
//! rustls resumes any session its config's cache holds for the server name
//! when the config (its resolver) is the same, so one device's connection
//! could resume another's session and be known upstream by the other's
//! identity. With a config per key, each key resumes only its own sessions,
//! and a connection presenting no certificate only those without one
//! (`tests::client_keys` checks both with an upstream that resumes).

use std::collections::BTreeSet;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use zilla_engine::telemetry::text;
use zilla_engine::{
    async_trait, Authority, Authorizations, Binding, BindingContext, BuildError, ByteStream,
    ConnectRequest, Events, Exit, Ports, Routes, Shutdown, StreamConnector, StreamHandler,
    StreamInfo,
};
use zilla_guard_x509::KeySubject;

use crate::options::{TlsCondition, TlsOptions, TlsVersion};
use crate::provider;
use crate::select::{quoted, CertificateConfig, KeyIndex, Selector, WithConfig};
use crate::server::trust_roots;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Events of a route's certificate selection (Zilla's
/// `binding.tls.client.certificate.not.resolved` / `.not.matched`).
const CERTIFICATE_NOT_RESOLVED: &str = "TLS_CLIENT_CERTIFICATE_NOT_RESOLVED";
const CERTIFICATE_NOT_MATCHED: &str = "TLS_CLIENT_CERTIFICATE_NOT_MATCHED";

pub(crate) fn build(cx: &mut BindingContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
    let options = cx.options::<TlsOptions>()?;
    if options.mutual.is_some() {
        return Err(cx.error(
            "options.mutual",
            "`mutual` applies to tls servers; a client presents `keys`",
        ));
    }
    if options.authorization.is_some() {
        return Err(cx.error(
            "options.authorization",
            "`authorization` applies to tls servers, whose guard decides on client certificates",
        ));
    }
    if cx.config().routes.is_empty() && cx.config().exit.is_none() {
        return Err(cx.error(
            "",
            "a tls client needs an `exit` that opens byte streams (a tcp client)",
        ));
    }
    let routes = cx.routes::<TlsCondition, dyn StreamConnector>();
    let selectors = selectors(cx);
    let (routes, selectors) = (routes?, selectors?);
    let roots = trust_roots(cx, &options, true)?;
    if roots.is_empty() {
        return Err(cx.error(
            "options.trust",
            "nothing to verify the server with: set `trust` or `trustcacerts: true`",
        ));
    }
    let selecting = selectors.iter().any(Option::is_some);
    let keys = ClientKeys::load(cx, &options, roots, selecting)?;
    if keys.configs.is_empty() {
        if let Some(at) = selectors.iter().position(Option::is_some) {
            return Err(cx.error(
                &format!("routes[{at}].with.certificate"),
                "selects one of `options.keys`, which names none",
            ));
        }
    }
    let server_name =
        match options.sni.first() {
            Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| {
                cx.error("options.sni[0]", format!("`{name}` is not a server name"))
            })?),
            None => None,
        };
    let guarded = routes.iter().any(|route| !route.guarded.is_empty());
    Ok(Arc::new(TlsClient {
        guarded,
        routes,
        selectors,
        keys,
        server_name,
        sni: options.sni.first().cloned(),
        alpn: options.alpn,
        events: cx.events(),
        shutdown: cx.shutdown(),
    }))
}

/// Each route's `with.certificate`, compiled (`None` without `with`); every
/// fault is reported at its path before failing.
fn selectors(cx: &mut BindingContext<'_>) -> Result<Vec<Option<Selector>>, BuildError> {
    let mut selectors = Vec::new();
    let mut failed = None;
    for (index, route) in cx.config().routes.iter().enumerate() {
        let Some(with) = &route.with else {
            selectors.push(None);
            continue;
        };
        let path = format!("routes[{index}].with");
        let compiled = cx
            .deserialize::<WithConfig>(with.clone(), &path)
            .and_then(|with| selector(cx, &path, &with.certificate));
        match compiled {
            Ok(selector) => selectors.push(Some(selector)),
            Err(error) => failed = Some(error),
        }
    }
    match failed {
        Some(error) => Err(error),
        None => Ok(selectors),
    }
}

fn selector(
    cx: &mut BindingContext<'_>,
    path: &str,
    certificate: &CertificateConfig,
) -> Result<Selector, BuildError> {
    let at = format!("{path}.certificate");
    let selector = Selector::new(certificate).map_err(|(relative, message)| {
        let path = if relative.is_empty() {
            at.clone()
        } else {
            format!("{at}.{relative}")
        };
        cx.error(&path, message)
    })?;
    // As in Zilla, a guard that does not exist is an error here, rather
    // than a value that never resolves.
    let property = format!("{at}.{}", selector.property);
    let guards: BTreeSet<String> = selector.guards().map(str::to_owned).collect();
    for guard in guards {
        cx.guard(&guard, &property)?;
    }
    Ok(selector)
}

/// The keys of `options.keys`: a config presenting each, the index that
/// selects among them, and a config presenting none.
struct ClientKeys {
    aliases: Vec<String>,
    configs: Vec<Arc<ClientConfig>>,
    index: KeyIndex,
    anonymous: Arc<ClientConfig>,
}

impl ClientKeys {
    /// Loads every key of `options.keys` from the binding's vault; reads
    /// their certificates' subjects when some route selects by them
    /// (`selecting`), so that a certificate x509-parser cannot read stays
    /// usable where nothing selects.
    fn load(
        cx: &mut BindingContext<'_>,
        options: &TlsOptions,
        roots: RootCertStore,
        selecting: bool,
    ) -> Result<Self, BuildError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(TlsVersion::versions(options.version))
            .map_err(|e| cx.error("options.version", e.to_string()))?
            .with_root_certificates(Arc::new(roots));
        let alpn: Vec<Vec<u8>> = options.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        let finish = |mut config: ClientConfig| {
            config.alpn_protocols = alpn.clone();
            Arc::new(config)
        };
        let vault = match options.keys.is_empty() {
            true => None,
            false => Some(cx.binding_vault()?),
        };
        let mut configs = Vec::with_capacity(options.keys.len());
        let mut subjects = Vec::with_capacity(options.keys.len());
        let mut failed = None;
        for (index, alias) in options.keys.iter().enumerate() {
            let Some(vault) = &vault else { break };
            let at = format!("options.keys[{index}]");
            let entry = match vault.key(alias) {
                Ok(entry) => entry,
                Err(e) => {
                    failed = Some(cx.error(&at, e.to_string()));
                    continue;
                }
            };
            let subject = match entry.chain.first().map(|leaf| KeySubject::of(leaf)) {
                Some(Ok(subject)) => Some(subject),
                Some(Err(why)) if selecting => {
                    let message = format!("`{alias}`: its certificate cannot be read: {why}");
                    failed = Some(cx.error(&at, message));
                    None
                }
                _ => None,
            };
            match builder
                .clone()
                .with_client_auth_cert(entry.chain, entry.key)
            {
                Ok(config) => {
                    configs.push(finish(config));
                    subjects.push(subject);
                }
                Err(e) => {
                    failed = Some(cx.error(&at, format!("`{alias}` cannot be used: {e}")));
                }
            }
        }
        if let Some(error) = failed {
            return Err(error);
        }
        Ok(Self {
            aliases: options.keys.clone(),
            index: KeyIndex::new(&subjects),
            configs,
            anonymous: finish(builder.with_no_client_auth()),
        })
    }

    /// What a connection without `with.certificate` presents.
    fn default_config(&self) -> Arc<ClientConfig> {
        self.configs.first().unwrap_or(&self.anonymous).clone()
    }
}

struct TlsClient {
    routes: Routes<TlsCondition, dyn StreamConnector>,
    /// Each route's certificate selection, in route order.
    selectors: Vec<Option<Selector>>,
    /// Whether any route is guarded (else no authorizations are built).
    guarded: bool,
    keys: ClientKeys,
    /// The name sent and verified; else the caller's requested authority.
    server_name: Option<ServerName<'static>>,
    /// `options.sni[0]`, which routes match `authority` against when the
    /// caller names none.
    sni: Option<String>,
    /// The protocols offered, which routes match `alpn` against.
    alpn: Vec<String>,
    events: Events,
    shutdown: Shutdown,
}

impl Binding for TlsClient {
    fn ports(self: Arc<Self>) -> Ports {
        Ports::new()
            .with::<dyn StreamConnector>(self.clone())
            .with::<dyn StreamHandler>(self)
    }
}

impl TlsClient {
    /// The exit and the config (so the key) for `request`.
    ///
    /// Routes match what the connection is for: `authority` the caller's
    /// authority (else `options.sni`), `port` the caller's port, `alpn`
    /// one of the protocols offered; `guarded` the grants of the stream it
    /// serves.
    fn route(
        &self,
        request: &ConnectRequest,
    ) -> io::Result<(Exit<dyn StreamConnector>, Arc<ClientConfig>)> {
        let authority = (request.authority.as_ref())
            .map(|authority| authority.host.as_str())
            .or(self.sni.as_deref());
        let port = request.authority.as_ref().map(|authority| authority.port);
        let offered: Vec<&str> = self.alpn.iter().map(String::as_str).collect();
        let mut authorizations = Authorizations::new();
        if self.guarded {
            for granted in &request.origin.granted {
                authorizations.insert(granted.guard.clone(), granted.session.clone());
            }
        }
        let mut chosen = None;
        let resolved = self.routes.resolve_by(&authorizations, |index, route| {
            let matches = route.when.is_empty()
                || (route.when.iter()).any(|when| when.matches(authority, &offered, port));
            if matches {
                chosen = Some(index);
            }
            matches
        });
        let Some(resolved) = resolved else {
            let authority = authority.map_or("no authority".into(), |host| {
                format!("authority {}", text(host))
            });
            let port = port.map_or("no port".into(), |port| format!("port {port}"));
            let message = format!(
                "{}no route for {authority}, {port}, and no exit; not connected",
                who(&request.origin)
            );
            self.events.warn("TLS_ROUTE_REJECTED", &message);
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, message));
        };
        let config = match chosen.and_then(|index| Some((index, self.selectors[index].as_ref()?))) {
            Some((index, selector)) => self.selected(index, selector, &request.origin),
            None => self.keys.default_config(),
        };
        Ok((resolved.exit.clone(), config))
    }

    /// The config of the key route `index` selects for `origin`; the one
    /// presenting no certificate, with an event, when its value resolves to
    /// nothing or no key matches it. Never another key: presenting an
    /// identity the stream was not granted would be worse than none.
    fn selected(
        &self,
        index: usize,
        selector: &Selector,
        origin: &StreamInfo,
    ) -> Arc<ClientConfig> {
        let Some(value) = selector.resolve(&origin.granted) else {
            let granted: Vec<&str> = origin.granted.iter().map(|g| &*g.guard).collect();
            let granted = match granted.join(", ") {
                none if none.is_empty() => "granted by no guard".to_owned(),
                guards => format!("granted by {guards}"),
            };
            self.events.warn(
                CERTIFICATE_NOT_RESOLVED,
                format!(
                    "{}routes[{index}].with.certificate {selector} resolved to no value \
                     ({granted}), so no client certificate is presented",
                    who(origin)
                ),
            );
            return self.keys.anonymous.clone();
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
            });
        match self.keys.index.select(selector.property, &value, now) {
            Some(key) => self.keys.configs[key].clone(),
            None => {
                self.events.warn(
                    CERTIFICATE_NOT_MATCHED,
                    format!(
                        "{}routes[{index}].with.certificate ({}={}) matched no key of \
                         options.keys [{}], so no client certificate is presented",
                        who(origin),
                        selector.property,
                        quoted(&value),
                        self.keys.aliases.join(", "),
                    ),
                );
                self.keys.anonymous.clone()
            }
        }
    }
}

/// `client <address>: ` for events, when the stream's peer is known.
fn who(origin: &StreamInfo) -> String {
    origin
        .peer
        .map(|peer| format!("client {peer}: "))
        .unwrap_or_default()
}

#[async_trait]
impl StreamConnector for TlsClient {
    async fn connect(&self, request: ConnectRequest) -> io::Result<ByteStream> {
        let server_name = match (&self.server_name, &request.authority) {
            (Some(name), _) => name.clone(),
            (None, Some(authority)) => ServerName::try_from(authority.host.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
            (None, None) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "tls client has no `options.sni` and the caller named no authority",
                ))
            }
        };
        let (exit, config) = self.route(&request)?;
        let stream = exit.port.connect(request).await?;
        let handshake = TlsConnector::from(config).connect(server_name.clone(), stream);
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("TLS handshake with {}: {e}", text(&server_name.to_str())),
                )
            })?;
        Ok(Box::new(tls))
    }

    /// TLS runs over the exits' streams, so it ends where theirs do.
    fn destinations(&self) -> Vec<Authority> {
        let mut destinations: Vec<Authority> = Vec::new();
        let exits = (self.routes.iter().map(|route| &route.exit)).chain(self.routes.default_exit());
        for exit in exits {
            for destination in exit.port.destinations() {
                if !destinations.contains(&destination) {
                    destinations.push(destination);
                }
            }
        }
        destinations
    }
}

#[async_trait]
impl StreamHandler for TlsClient {
    /// Relays a whole stream over TLS: `tcp server -> tls client` originates
    /// TLS (and `tls server -> tls client` presents, by a route's
    /// `with.certificate`, the key of the identity the server's guard granted).
    async fn handle(&self, mut inbound: ByteStream, info: StreamInfo) {
        let peer = info
            .peer
            .map(|p| p.to_string())
            .unwrap_or_else(|| "?".into());
        let request = ConnectRequest {
            authority: None,
            origin: info,
            reached: None,
        };
        let mut outbound = match self.connect(request).await {
            Ok(outbound) => outbound,
            Err(error) => {
                self.events.error(
                    "TLS_CONNECT_FAILED",
                    format!("relay for {peer} closed"),
                    &error,
                );
                return;
            }
        };
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
            _ = self.shutdown.terminated() => {}
        }
    }
}
