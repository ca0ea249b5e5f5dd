//! tls server: terminates TLS, routes the decrypted stream.

use std::sync::Arc;
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;
use zilla_engine::{
    async_trait, Authorizations, Binding, BindingContext, BuildError, ByteStream, Events, Ports,
    Routes, StreamHandler, StreamInfo,
};

use crate::names::{certificate_names, certificate_subject, name_matches, SniResolver};
use crate::options::{Mutual, TlsCondition, TlsOptions, TlsVersion};
use crate::provider;

/// Engine property: seconds a client has to complete its TLS handshake.
pub const PROPERTY_HANDSHAKE_TIMEOUT: &str = "zilla.binding.tls.handshake.timeout";
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn build(cx: &mut BindingContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
    let options = cx.options::<TlsOptions>();
    let routes = cx.required_routes::<TlsCondition, dyn StreamHandler>();
    let vault = cx.binding_vault();
    let (options, routes, vault) = (options?, routes?, vault?);
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
    let mutual = options.mutual.unwrap_or(if options.trust.is_empty() {
        Mutual::None
    } else {
        Mutual::Required
    });
    let roots = trust_roots(cx, &options, false)?;
    if failed {
        return Err(cx.error("options", "the tls server's keys could not be loaded"));
    }

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(TlsVersion::versions(options.version))
        .map_err(|e| cx.error("options.version", e.to_string()))?;
    let builder = match mutual {
        Mutual::None => builder.with_no_client_auth(),
        mutual => {
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
            let verifier = verifier
                .build()
                .map_err(|e| cx.error("options.trust", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
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
        handshake_timeout,
        events: cx.events(),
    }))
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
    handshake_timeout: Duration,
    events: Events,
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
        let tls = match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream))
            .await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                self.events.error(
                    "TLS_HANDSHAKE_FAILED",
                    format!("client {peer}: handshake failed"),
                    &error,
                );
                return;
            }
            Err(_) => {
                self.events.warn(
                    "TLS_HANDSHAKE_TIMEOUT",
                    format!(
                        "client {peer}: no complete handshake within {:?}; closed",
                        self.handshake_timeout
                    ),
                );
                return;
            }
        };
        let (_, connection) = tls.get_ref();
        let sni = connection.server_name().map(str::to_owned);
        let alpn = connection
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        let identity = connection
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| certificate_subject(cert));
        let offered: Vec<&str> = alpn.iter().map(String::as_str).collect();
        let port = info.local.map(|l| l.port());
        let Some(resolved) = self.routes.resolve(&Authorizations::new(), |condition| {
            condition.matches(sni.as_deref(), &offered, port)
        }) else {
            self.events.warn(
                "TLS_ROUTE_REJECTED",
                format!("client {peer}: no route for server name {sni:?}, alpn {alpn:?}; closed"),
            );
            return;
        };
        let handler = resolved.exit.port.clone();
        let info = StreamInfo {
            authority: sni,
            alpn,
            identity,
            secure: true,
            ..info
        };
        handler.handle(Box::new(tls), info).await;
    }
}
