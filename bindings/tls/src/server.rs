//! tls server: terminates TLS, has a guard decide on the client certificate
//! (`options.authorization`), routes the decrypted stream.
//!
//! After the handshake, the verified client chain goes to the guard (see
//! [`crate::authorization`]); what it grants decides `guarded` routes and
//! goes on with the stream. Every connection refused on the way (at the
//! handshake, by the guard, for want of a route) is an event and a count
//! (see [`crate::refusals`]); one refused after a complete handshake is
//! closed with `close_notify`, as Zilla closes it.

use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore, ServerConfig};
use tokio::io::AsyncWriteExt;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use zilla_engine::telemetry::{duration, identity, text};
use zilla_engine::{
    async_trait, Authorizations, Binding, BindingContext, BuildError, ByteStream, Granted,
    GuardRejection, Ports, Routes, StreamHandler, StreamInfo,
};

use crate::authorization::{unrouted, Authorization, Unrouted};
use crate::names::{certificate_names, name_matches, CertificateNames, SniResolver};
use crate::options::{Mutual, TlsCondition, TlsOptions, TlsVersion};
use crate::provider;
use crate::refusals::{recorded, Recording, Refusal, Refusals};

/// Engine property: seconds a client has to complete its TLS handshake.
pub const PROPERTY_HANDSHAKE_TIMEOUT: &str = "zilla.binding.tls.handshake.timeout";
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn build(cx: &mut BindingContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
    let options = cx.options::<TlsOptions>();
    let routes = cx.required_routes::<TlsCondition, dyn StreamHandler>();
    let vault = cx.binding_vault();
    let with = crate::select::refuse_with(cx, "server");
    let (options, routes, vault, ()) = (options?, routes?, vault?, with?);
    if options.keys.is_empty() {
        return Err(cx.error(
            "options.keys",
            "a tls server needs `keys`: the aliases of its certificates in the vault",
        ));
    }
    let provider = provider();
    let mut keys = Vec::new();
    let mut failed = false;
    for (index, alias) in options.keys.iter().enumerate() {
        let loaded = vault
            .key(alias)
            .map_err(|e| e.to_string())
            .and_then(|entry| {
                let signing = provider
                    .key_provider
                    .load_private_key(entry.key)
                    .map_err(|e| format!("key `{alias}` cannot sign: {e}"))?;
                let names = certificate_names(&entry.chain[0]);
                let certified = CertifiedKey::new(entry.chain, signing);
                // A certificate renewed in place whose key was not (yet)
                // replaced must fail here rather than in every handshake.
                // Only a proven mismatch counts: webpki cannot parse some
                // Java-made certificates (X.509 v1, as the seed's), which
                // then go unchecked, as before.
                if let Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) =
                    certified.keys_match()
                {
                    return Err(format!(
                        "key `{alias}` is not the key of its certificate (their public keys differ)"
                    ));
                }
                Ok((names, Arc::new(certified)))
            });
        match loaded {
            Ok(key) => keys.push(key),
            Err(message) => {
                cx.error(&format!("options.keys[{index}]"), message);
                failed = true;
            }
        }
    }
    for (index, sni) in options.sni.iter().enumerate() {
        let served = keys
            .iter()
            .any(|(names, _)| names.iter().any(|pattern| name_matches(pattern, sni)));
        if !served && !failed {
            let names: Vec<_> = keys.iter().flat_map(|(n, _)| n.iter().cloned()).collect();
            cx.error(
                &format!("options.sni[{index}]"),
                format!(
                    "no certificate in `keys` serves `{sni}` (they serve {})",
                    names.join(", ")
                ),
            );
            failed = true;
        }
    }
    // Zilla's `signers` on a server choose its keys among the vault's by
    // the CA that issued them; a vault here cannot list keys by issuer, and
    // ignoring them would serve something else than configured.
    let signers = (!options.signers.is_empty()).then(|| {
        cx.error(
            "options.signers",
            "a tls server here serves the certificates named in `keys`; choosing them by \
             their issuer (`signers`) is not supported. Client certificates are accepted \
             from the CAs in `trust`",
        )
    });
    let mutual = options.mutual.unwrap_or(if options.trust.is_empty() {
        Mutual::None
    } else {
        Mutual::Required
    });
    let authorization = Authorization::build(cx, &options, mutual);
    let guarded = match &authorization {
        Ok(authorization) => check_guarded_routes(cx, &routes, authorization.as_ref()),
        // Its error says it all; the routes' guards are not to blame.
        Err(_) => Ok(()),
    };
    let roots = trust_roots(cx, &options, false)?;
    let (authorization, ()) = (authorization?, guarded?);
    if let Some(signers) = signers {
        return Err(signers);
    }
    if failed {
        return Err(cx.error("options", "the tls server's keys could not be loaded"));
    }

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(TlsVersion::versions(options.version))
        .map_err(|e| cx.error("options.version", e.to_string()))?;
    let builder = match client_verifier(cx, &options, roots, mutual, provider)? {
        None => builder.with_no_client_auth(),
        // Wrapped so that a refused certificate can be named in the event.
        Some(verifier) => builder.with_client_cert_verifier(Arc::new(Recording::new(verifier))),
    };
    let resolver = AcceptedNames {
        sni: options.sni.clone(),
        inner: SniResolver::new(keys),
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = options.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();

    let handshake_timeout = match cx.property(PROPERTY_HANDSHAKE_TIMEOUT).map(str::to_owned) {
        Some(value) => match value.parse::<f64>() {
            Ok(seconds) if seconds > 0.0 && seconds.is_finite() => Duration::from_secs_f64(seconds),
            _ => {
                return Err(cx.error(
                    "",
                    format!("-P {PROPERTY_HANDSHAKE_TIMEOUT}: expected seconds, found `{value}`"),
                ))
            }
        },
        None => DEFAULT_HANDSHAKE_TIMEOUT,
    };
    Ok(Arc::new(TlsServer {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        routes,
        authorization,
        handshake_timeout,
        refusals: Refusals::new(cx.events(), &cx.metrics()),
    }))
}

/// The verifier of client certificates, `None` when none are asked for
/// (`mutual: none`): rustls's WebPKI verifier over the `trust` roots,
/// optional under `mutual: requested`. It advertises the subjects of
/// `trust` as the acceptable CAs in its CertificateRequest.
///
/// This is where checks of client certificates belong (revocation lists
/// plug into the builder here); whatever such a check refuses is named in
/// the event and mapped to a reason and an alert by `refusals.rs`, e.g.
/// `CertificateError::Revoked` to `certificate_revoked`.
fn client_verifier(
    cx: &mut BindingContext<'_>,
    _options: &TlsOptions,
    roots: RootCertStore,
    mutual: Mutual,
    provider: Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, BuildError> {
    if mutual == Mutual::None {
        return Ok(None);
    }
    if roots.is_empty() {
        return Err(cx.error(
            "options.mutual",
            "client certificates need `trust` (or `trustcacerts: true`)",
        ));
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let verifier = if mutual == Mutual::Requested {
        verifier.allow_unauthenticated()
    } else {
        verifier
    };
    // `revocation: crl` on the vault: the same verifier, given the vault's
    // CRLs as they change and those fetched (see `revocation.rs`).
    let revocation = cx.binding_vault()?.revocation();
    let verifier = crate::revocation::client_verifier(verifier, revocation, cx.events())
        .map_err(|e| cx.error("options.trust", e.to_string()))?;
    Ok(Some(verifier))
}

/// `guarded` routes of a tls server can only be met by what its own guard
/// grants (nothing before a tls server grants anything): a route guarded by
/// another guard, or on a server without `authorization`, would never be
/// taken, so it is a configuration error rather than a silent dead end.
fn check_guarded_routes(
    cx: &mut BindingContext<'_>,
    routes: &Routes<TlsCondition, dyn StreamHandler>,
    authorization: Option<&Authorization>,
) -> Result<(), BuildError> {
    let mut failed = None;
    for (index, route) in routes.iter().enumerate() {
        for requirement in &route.guarded {
            let guard = &requirement.guard_name;
            let message = match authorization {
                Some(authorization) if authorization.guard_name() == guard => continue,
                Some(authorization) => format!(
                    "only the guard of `options.authorization` ({}) grants anything here, \
                     so a route guarded by `{guard}` would never be taken",
                    authorization.guard_name()
                ),
                None => format!(
                    "a route guarded by `{guard}` needs `options.authorization` naming it: \
                     `{{{guard}: {{credentials: {{certificates: pem}}}}}}`"
                ),
            };
            failed = Some(cx.error(&format!("routes[{index}].guarded.{guard}"), message));
        }
    }
    failed.map_or(Ok(()), Err)
}

/// The roots a binding trusts: its `trust` aliases, plus the system's CA
/// certificates when `trustcacerts` says so (by default only for clients
/// without `trust`).
pub(crate) fn trust_roots(
    cx: &mut BindingContext<'_>,
    options: &TlsOptions,
    client: bool,
) -> Result<RootCertStore, BuildError> {
    let mut roots = RootCertStore::empty();
    if !options.trust.is_empty() {
        let vault = cx.binding_vault()?;
        for (index, alias) in options.trust.iter().enumerate() {
            let added = vault
                .trusted(alias)
                .map_err(|e| e.to_string())
                .and_then(|cert| {
                    roots
                        .add(cert)
                        .map_err(|e| format!("`{alias}` is not a usable CA certificate: {e}"))
                });
            if let Err(message) = added {
                return Err(cx.error(&format!("options.trust[{index}]"), message));
            }
        }
    }
    let system = options
        .trustcacerts
        .unwrap_or(client && options.trust.is_empty());
    if system {
        let found = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(found.certs);
    }
    Ok(roots)
}

/// Accepts only the configured server names (any when none are configured).
#[derive(Debug)]
struct AcceptedNames {
    sni: Vec<String>,
    inner: SniResolver,
}

impl ResolvesServerCert for AcceptedNames {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            if !self.sni.is_empty() && !self.sni.iter().any(|p| name_matches(p, name)) {
                return None;
            }
        }
        self.inner.resolve(hello)
    }
}

struct TlsServer {
    acceptor: TlsAcceptor,
    routes: Routes<TlsCondition, dyn StreamHandler>,
    authorization: Option<Authorization>,
    handshake_timeout: Duration,
    refusals: Refusals,
}

impl Binding for TlsServer {
    fn ports(self: Arc<Self>) -> Ports {
        Ports::new().with::<dyn StreamHandler>(self)
    }
}

#[async_trait]
impl StreamHandler for TlsServer {
    async fn handle(&self, stream: ByteStream, info: StreamInfo) {
        let peer = info
            .peer
            .map(|p| p.to_string())
            .unwrap_or_else(|| "?".into());
        let handshake = tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream));
        let (accepted, presented) = recorded(handshake).await;
        let tls = match accepted {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                self.refusals.handshake_failed(&peer, &error, presented);
                return;
            }
            Err(_) => {
                self.refusals
                    .handshake_timeout(&peer, self.handshake_timeout);
                return;
            }
        };
        let (_, connection) = tls.get_ref();
        let sni = connection.server_name().map(str::to_owned);
        let alpn = connection
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        // rustls keeps a client's chain only when it verified it; a copy is
        // taken only for a guard to see.
        let chain: Option<Vec<CertificateDer<'static>>> = connection
            .peer_certificates()
            .filter(|_| self.authorization.is_some())
            .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect());
        let names = (connection.peer_certificates())
            .and_then(|chain| chain.first())
            .and_then(|leaf| CertificateNames::of(leaf));
        let mut info = StreamInfo {
            authority: sni,
            alpn,
            identity: names.as_ref().map(|n| n.distinguished.clone()),
            secure: true,
            ..info
        };
        let mut authorizations = Authorizations::new();
        for granted in &info.granted {
            authorizations.insert(granted.guard.clone(), granted.session.clone());
        }
        if let (Some(authorization), Some(chain)) = (&self.authorization, chain) {
            let asked = self
                .grant(authorization, &chain, &peer, names.as_ref())
                .await;
            match asked {
                Ok(granted) => {
                    authorizations.insert(granted.guard.clone(), granted.session.clone());
                    info.granted
                        .retain(|earlier| earlier.guard != granted.guard);
                    info.granted.push(granted);
                }
                Err((refusal, message)) => {
                    self.refusals
                        .refused(refusal, "TLS_AUTHORIZATION_FAILED", message);
                    self.close(tls).await;
                    return;
                }
            }
        }
        let offered: Vec<&str> = info.alpn.iter().map(String::as_str).collect();
        let port = info.local.map(|l| l.port());
        let matches =
            |condition: &TlsCondition| condition.matches(info.authority.as_deref(), &offered, port);
        let Some(resolved) = self.routes.resolve(&authorizations, matches) else {
            self.unrouted(&peer, &info, &authorizations, names.as_ref(), matches);
            self.close(tls).await;
            return;
        };
        let handler = resolved.exit.port.clone();
        handler.handle(Box::new(tls), info).await;
    }
}

impl TlsServer {
    /// Asks the guard about the client's verified `chain`; a refusal comes
    /// with the message of its event.
    async fn grant(
        &self,
        authorization: &Authorization,
        chain: &[CertificateDer<'static>],
        peer: &str,
        names: Option<&CertificateNames>,
    ) -> Result<Granted, (Refusal, String)> {
        let guard = authorization.guard_name();
        let certificate = match names {
            Some(names) => format!("the client certificate ({names})"),
            None => "the client certificate".to_owned(),
        };
        // The guard's answer belongs to the handshake: it gets no more
        // time than the client had to complete it.
        let asked = tokio::time::timeout(self.handshake_timeout, authorization.authorize(chain));
        match asked.await {
            Ok(Ok(granted)) => Ok(granted),
            Ok(Err(GuardRejection::InvalidCredentials(why))) => Err((
                Refusal::GuardRefused,
                format!("client {peer}: guard {guard} refused {certificate}: {why}; closed"),
            )),
            Ok(Err(GuardRejection::Unavailable(why))) => Err((
                Refusal::GuardUnavailable,
                format!(
                    "client {peer}: guard {guard} could not decide on {certificate}: {why}; closed"
                ),
            )),
            Err(_) => Err((
                Refusal::GuardUnavailable,
                format!(
                    "client {peer}: guard {guard} did not decide on {certificate} within {}; \
                     closed",
                    duration(self.handshake_timeout)
                ),
            )),
        }
    }

    /// Tells why no route took the stream: nowhere to go, or only guarded
    /// routes whose roles the client was not granted.
    fn unrouted(
        &self,
        peer: &str,
        info: &StreamInfo,
        authorizations: &Authorizations,
        names: Option<&CertificateNames>,
        matches: impl Fn(&TlsCondition) -> bool,
    ) {
        let server_name = (info.authority.as_deref()).map_or("no server name".into(), |name| {
            format!("server name {}", text(name))
        });
        let alpn =
            (info.alpn.as_deref()).map_or("no alpn".into(), |alpn| format!("alpn {}", text(alpn)));
        let facts = format!("{server_name}, {alpn}");
        match unrouted(&self.routes, authorizations, matches) {
            Unrouted::NotFound => self.refusals.refused(
                Refusal::NoRoute,
                "TLS_ROUTE_REJECTED",
                format!("client {peer}: no route for {facts}; closed"),
            ),
            Unrouted::Unauthenticated { needed } => {
                let presented = match names {
                    None => "no client certificate".to_owned(),
                    Some(names) => format!("nothing granted for the client certificate ({names})"),
                };
                self.refusals.refused(
                    Refusal::AuthorizationRequired,
                    "TLS_AUTHORIZATION_REQUIRED",
                    format!(
                        "client {peer}: {presented}, and the routes for {facts} need {needed}; \
                         closed"
                    ),
                );
            }
            Unrouted::Forbidden { needed } => {
                let held: Vec<String> = info
                    .granted
                    .iter()
                    .map(|granted| {
                        format!(
                            "{} granted {} roles [{}]",
                            granted.guard,
                            identity(granted.session.identity.as_deref()),
                            granted.session.roles.join(", ")
                        )
                    })
                    .collect();
                let names = names.map(|n| format!(" ({n})")).unwrap_or_default();
                self.refusals.refused(
                    Refusal::NoRole,
                    "TLS_AUTHORIZATION_DENIED",
                    format!(
                        "client {peer}{names}: {}; the routes for {facts} need {needed}; closed",
                        held.join("; ")
                    ),
                );
            }
        }
    }

    /// Ends a refused stream whose handshake completed: `close_notify`, as
    /// Zilla closes it, sent within the handshake timeout.
    async fn close(&self, mut tls: TlsStream<ByteStream>) {
        let _ = tokio::time::timeout(self.handshake_timeout, tls.shutdown()).await;
    }
}
