//! `options.authorization` of a tls server (Zilla 2.1): one guard decides on
//! the client certificate chain the handshake verified, and `guarded` routes
//! on what it granted.
//!
//! The chain goes to the guard as Zilla hands it over: PEM `CERTIFICATE`
//! blocks, the client's own certificate first and then the rest as the
//! client presented it (base64 in 64-column lines). The guard is asked once,
//! after the handshake: rustls verifies the chain synchronously, where an
//! asynchronous guard cannot be awaited, and the routes that need its
//! verdict are chosen after the handshake anyway (SNI and ALPN arrive in
//! it). What it grants decides `guarded` routes and travels on with the
//! stream as `StreamInfo::granted`, so that an mqtt server behind (directly,
//! or behind http and ws for `wss`) admits the session with that identity
//! without asking again. A client without a certificate (`mutual:
//! requested`) is granted nothing. Certificates never appear in events.

use std::sync::Arc;

use base64::Engine as _;
use rustls::pki_types::CertificateDer;
use zilla_engine::{
    Authorizations, BindingContext, BuildError, Granted, Guard, GuardRejection, Route, Routes,
    StreamHandler,
};

use crate::options::{Mutual, TlsCondition, TlsOptions};

/// The guard of a tls server.
pub(crate) struct Authorization {
    guard_name: Arc<str>,
    guard: Arc<dyn Guard>,
}

impl Authorization {
    /// Reads `options.authorization` for a server asking for client
    /// certificates as `mutual` says; every problem is reported at its path.
    pub(crate) fn build(
        cx: &mut BindingContext<'_>,
        options: &TlsOptions,
        mutual: Mutual,
    ) -> Result<Option<Self>, BuildError> {
        let Some(entries) = &options.authorization else {
            return Ok(None);
        };
        let mut guards = entries.iter();
        let (name, authorization) = match (guards.next(), guards.next()) {
            (Some(entry), None) => entry,
            _ => {
                return Err(cx.error(
                    "options.authorization",
                    "name exactly one guard: `{<guard>: {credentials: {certificates: pem}}}`",
                ))
            }
        };
        let base = format!("options.authorization.{name}");
        let guard = cx.guard(name, &base);
        let mut failed = None;
        if authorization
            .credentials
            .as_ref()
            .and_then(|c| c.certificates)
            .is_none()
        {
            let path = match authorization.credentials {
                None => format!("{base}.credentials"),
                Some(_) => format!("{base}.credentials.certificates"),
            };
            failed = Some(cx.error(
                &path,
                "say how the guard gets the client's certificates: \
                 `credentials: {certificates: pem}`",
            ));
        }
        if mutual == Mutual::None {
            failed = Some(cx.error(
                "options.authorization",
                "the guard decides on client certificates, and this server asks for none \
                 (`mutual: none`, the default without `trust`): set `trust` and \
                 `mutual: required` or `requested`",
            ));
        }
        let guard = guard?;
        if let Some(failed) = failed {
            return Err(failed);
        }
        Ok(Some(Self {
            guard_name: name.as_str().into(),
            guard,
        }))
    }

    /// The guard's name in `guards`.
    pub(crate) fn guard_name(&self) -> &Arc<str> {
        &self.guard_name
    }

    /// Asks the guard about `chain`, verified and as the client presented it.
    pub(crate) async fn authorize(
        &self,
        chain: &[CertificateDer<'_>],
    ) -> Result<Granted, GuardRejection> {
        let credentials = pem_chain(chain);
        let session = self.guard.authorize(&credentials).await?;
        Ok(Granted {
            guard: self.guard_name.clone(),
            session,
            credentials,
        })
    }
}

/// `chain` as concatenated PEM `CERTIFICATE` blocks, in its order.
pub(crate) fn pem_chain(chain: &[CertificateDer<'_>]) -> String {
    const LINE: usize = 64;
    let mut pem = String::new();
    for cert in chain {
        let encoded = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        // Base64 is ASCII, so every 64-byte chunk is a whole line of text.
        for line in encoded.as_bytes().chunks(LINE) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem
}

/// Why no route took a stream whose facts meet `condition`.
pub(crate) enum Unrouted {
    /// No route's conditions hold: guards aside, there is nowhere to go.
    NotFound,
    /// Guarded routes would take it, and their guard granted nothing.
    Unauthenticated {
        /// The roles those routes need, e.g. `x509_0 [partner]`.
        needed: String,
    },
    /// Guarded routes would take it, and the session lacks their roles.
    Forbidden {
        /// The roles those routes need.
        needed: String,
    },
}

/// Tells why `routes` took nothing, as the http server does: only guards
/// kept routes from matching (then no grant, or not the roles), or nothing
/// matched at all.
pub(crate) fn unrouted(
    routes: &Routes<TlsCondition, dyn StreamHandler>,
    authorizations: &Authorizations,
    condition: impl Fn(&TlsCondition) -> bool,
) -> Unrouted {
    let (mut unauthenticated, mut forbidden) = (false, false);
    let mut needed = Vec::new();
    let guarded = routes.iter().filter(|route| {
        !route.guarded.is_empty() && (route.when.is_empty() || route.when.iter().any(&condition))
    });
    for route in guarded {
        needed.push(roles_needed(route));
        let granted_nothing = route
            .guarded
            .iter()
            .any(|requirement| authorizations.get(&requirement.guard_name).is_none());
        if granted_nothing {
            unauthenticated = true;
        } else {
            forbidden = true;
        }
    }
    let needed = needed.join(" or ");
    // A session that was granted but lacks roles is the more telling story.
    if forbidden {
        Unrouted::Forbidden { needed }
    } else if unauthenticated {
        Unrouted::Unauthenticated { needed }
    } else {
        Unrouted::NotFound
    }
}

/// One route's role requirements, e.g. `x509_0 [partner, admin]`.
fn roles_needed(route: &Route<TlsCondition, dyn StreamHandler>) -> String {
    route
        .guarded
        .iter()
        .map(|requirement| {
            format!(
                "{} [{}]",
                requirement.guard_name,
                requirement.roles.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join(" and ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_chains_are_leaf_first_in_64_column_lines() {
        let leaf = CertificateDer::from(vec![1u8; 100]);
        let ca = CertificateDer::from(vec![2u8; 3]);
        let pem = pem_chain(&[leaf, ca]);
        let blocks: Vec<&str> = pem.split("-----END CERTIFICATE-----\n").collect();
        assert_eq!(blocks.len(), 3, "{pem}");
        assert!(blocks[0].starts_with("-----BEGIN CERTIFICATE-----\nAQEB"));
        assert!(blocks[1].starts_with("-----BEGIN CERTIFICATE-----\nAgIC\n"));
        assert!(pem.lines().all(|line| line.len() <= 64), "{pem}");
        let first = blocks[0].lines().nth(1).unwrap();
        assert_eq!(first.len(), 64);
    }
}
