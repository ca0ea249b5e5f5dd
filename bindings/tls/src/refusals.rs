//! Why a tls server closed a connection before handing it on, what the
//! client was told, and how that is counted.
//!
//! A handshake fails inside rustls, which sends the alert belonging to the
//! error before tokio-rustls hands it back to us as an `io::Error` wrapping a
//! `rustls::Error`: a refused client certificate is
//! `InvalidCertificate(CertificateError::..)` (alert by rustls's mapping:
//! `unknown_ca`, `certificate_expired`, `certificate_revoked`,
//! `decrypt_error`, ...) and a missing one `NoCertificatesPresented`
//! (`certificate_required`). Each refusal, at the handshake or after it
//! (guard, routes), gets one event naming the peer and, where a certificate
//! was presented, its subject and issuer (never the certificate), and one
//! count in `tls.refusals{reason}`. Handshake refusals are
//! `TLS_HANDSHAKE_FAILED`, except a revoked certificate, whose event is the
//! revocation check's own (`TLS_CLIENT_CERTIFICATE_REVOKED`, with the serial
//! and the CRL). As with the tls server's other events there is no rate
//! limit: one event per refused connection.
//!
//! rustls keeps no trace of a certificate whose verification failed, and
//! the verifier is shared by every connection of the server; so
//! [`Recording`] wraps the verifier and leaves the names of a refused
//! certificate in a task-local slot that [`recorded`] sets up around one
//! handshake (rustls verifies synchronously, inside the poll of that
//! handshake's future, so the slot is that connection's).

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{AlertDescription, CertificateError, DigitallySignedStruct, DistinguishedName};
use rustls::{Error, SignatureScheme};
use zilla_engine::telemetry::duration;
use zilla_engine::telemetry::metrics::{
    BindingMetrics, Block, Counter, Family, Metric, MetricGroup, MetricKind, Report, Unit,
};
use zilla_engine::{register_metrics, Events};

use crate::names::CertificateNames;

/// Why a connection was refused; the metric's `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The client certificate chains to no `trust` CA.
    UnknownCa,
    /// The client certificate (or one of its chain) has expired.
    CertificateExpired,
    /// The client certificate (or one of its chain) is not valid yet.
    CertificateNotYetValid,
    /// No client certificate under `mutual: required`.
    CertificateRequired,
    /// A signature in the chain, or the client's CertificateVerify, does
    /// not verify (e.g. a certificate signed by another key with the CA's name).
    BadSignature,
    /// The client certificate is revoked (a CRL lists it).
    CertificateRevoked,
    /// Whether the certificate is revoked could not be told.
    RevocationUnknown,
    /// The certificate is not for client authentication (extended key usage).
    InvalidPurpose,
    /// Any other problem with the certificate (encoding, extensions, ...).
    BadCertificate,
    /// The handshake failed otherwise (an SNI not served, not TLS, ...).
    HandshakeFailed,
    /// No complete handshake in time.
    HandshakeTimeout,
    /// The guard refused the verified certificate chain.
    GuardRefused,
    /// The guard could not decide (or not in time).
    GuardUnavailable,
    /// Only guarded routes would take the stream, and no certificate was
    /// presented (`mutual: requested`).
    AuthorizationRequired,
    /// Only guarded routes would take the stream, and the guard's session
    /// lacks their roles.
    NoRole,
    /// No route takes the server name, ALPN and port.
    NoRoute,
}

impl Refusal {
    /// Every reason, in the order of the metric's counters.
    const ALL: [Refusal; 16] = [
        Refusal::UnknownCa,
        Refusal::CertificateExpired,
        Refusal::CertificateNotYetValid,
        Refusal::CertificateRequired,
        Refusal::BadSignature,
        Refusal::CertificateRevoked,
        Refusal::RevocationUnknown,
        Refusal::InvalidPurpose,
        Refusal::BadCertificate,
        Refusal::HandshakeFailed,
        Refusal::HandshakeTimeout,
        Refusal::GuardRefused,
        Refusal::GuardUnavailable,
        Refusal::AuthorizationRequired,
        Refusal::NoRole,
        Refusal::NoRoute,
    ];

    /// The `reason` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::UnknownCa => "unknown_ca",
            Refusal::CertificateExpired => "certificate_expired",
            Refusal::CertificateNotYetValid => "certificate_not_yet_valid",
            Refusal::CertificateRequired => "certificate_required",
            Refusal::BadSignature => "bad_signature",
            Refusal::CertificateRevoked => "certificate_revoked",
            Refusal::RevocationUnknown => "revocation_unknown",
            Refusal::InvalidPurpose => "invalid_purpose",
            Refusal::BadCertificate => "bad_certificate",
            Refusal::HandshakeFailed => "handshake_failed",
            Refusal::HandshakeTimeout => "handshake_timeout",
            Refusal::GuardRefused => "guard_refused",
            Refusal::GuardUnavailable => "guard_unavailable",
            Refusal::AuthorizationRequired => "authorization_required",
            Refusal::NoRole => "no_role",
            Refusal::NoRoute => "no_route",
        }
    }

    fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|r| *r == self)
            .expect("every refusal is in ALL")
    }

    /// Why a handshake failed, from the error rustls gave.
    pub(crate) fn of_tls(error: &Error) -> Self {
        use CertificateError as C;
        match error {
            Error::NoCertificatesPresented => Refusal::CertificateRequired,
            Error::InvalidCertRevocationList(_) => Refusal::RevocationUnknown,
            Error::InvalidCertificate(error) => match error {
                C::UnknownIssuer => Refusal::UnknownCa,
                C::Expired | C::ExpiredContext { .. } => Refusal::CertificateExpired,
                C::NotValidYet | C::NotValidYetContext { .. } => Refusal::CertificateNotYetValid,
                #[allow(deprecated)]
                C::BadSignature
                | C::UnsupportedSignatureAlgorithm
                | C::UnsupportedSignatureAlgorithmContext { .. }
                | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                    Refusal::BadSignature
                }
                C::Revoked => Refusal::CertificateRevoked,
                C::UnknownRevocationStatus
                | C::ExpiredRevocationList
                | C::ExpiredRevocationListContext { .. } => Refusal::RevocationUnknown,
                C::InvalidPurpose | C::InvalidPurposeContext { .. } => Refusal::InvalidPurpose,
                _ => Refusal::BadCertificate,
            },
            _ => Refusal::HandshakeFailed,
        }
    }

    /// Why a handshake failed, from what tokio-rustls returned.
    pub(crate) fn of_handshake(error: &io::Error) -> Self {
        tls_error(error).map_or(Refusal::HandshakeFailed, Self::of_tls)
    }

    /// Whether this is a client certificate refused (or missing) at the handshake.
    fn is_certificate(self) -> bool {
        matches!(
            self,
            Refusal::UnknownCa
                | Refusal::CertificateExpired
                | Refusal::CertificateNotYetValid
                | Refusal::CertificateRequired
                | Refusal::BadSignature
                | Refusal::CertificateRevoked
                | Refusal::RevocationUnknown
                | Refusal::InvalidPurpose
                | Refusal::BadCertificate
        )
    }
}

/// The rustls error inside an error tokio-rustls returned, if any.
pub(crate) fn tls_error(error: &io::Error) -> Option<&Error> {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>())
}

/// The alert rustls sent the client for `error`, when it is one of the
/// client-certificate errors (the alert of other failures is rustls's
/// business and not told here).
pub(crate) fn alert_sent(error: &Error) -> Option<AlertDescription> {
    match error {
        Error::NoCertificatesPresented => Some(AlertDescription::CertificateRequired),
        Error::InvalidCertificate(error) => Some(error.clone().into()),
        Error::InvalidCertRevocationList(_) => Some(AlertDescription::HandshakeFailure),
        _ => None,
    }
}

/// An alert's name as RFC 8446 §6 spells it (`unknown_ca`).
pub(crate) fn alert_name(alert: AlertDescription) -> String {
    let name = match alert {
        AlertDescription::UnknownCA => "unknown_ca",
        AlertDescription::CertificateExpired => "certificate_expired",
        AlertDescription::CertificateRequired => "certificate_required",
        AlertDescription::CertificateRevoked => "certificate_revoked",
        AlertDescription::CertificateUnknown => "certificate_unknown",
        AlertDescription::BadCertificate => "bad_certificate",
        AlertDescription::UnsupportedCertificate => "unsupported_certificate",
        AlertDescription::BadCertificateStatusResponse => "bad_certificate_status_response",
        AlertDescription::DecryptError => "decrypt_error",
        AlertDescription::AccessDenied => "access_denied",
        AlertDescription::HandshakeFailure => "handshake_failure",
        AlertDescription::IllegalParameter => "illegal_parameter",
        // Not one a client certificate earns; its number is all there is.
        other => return format!("alert {}", u8::from(other)),
    };
    name.to_owned()
}

/// The `tls.*` metrics (beyond Zilla, which has none for tls).
pub(crate) static TLS_METRICS: [Metric; 1] = [Metric {
    name: "tls.refusals",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    description: "Connections a tls server closed before handing them on, by reason: \
        a client certificate refused at the handshake (unknown_ca, certificate_expired, \
        certificate_not_yet_valid, certificate_required, bad_signature, certificate_revoked, \
        revocation_unknown, invalid_purpose, bad_certificate), another handshake failure \
        (handshake_failed, handshake_timeout), or after it (guard_refused, guard_unavailable, \
        authorization_required, no_role, no_route)",
    labels: &["reason"],
    buckets: &[],
}];

register_metrics!(MetricGroup {
    name: "tls",
    metrics: &TLS_METRICS,
});

/// The refusal counters of one refused connection (blocks are opened only
/// when a connection is refused, so a served one costs nothing).
#[derive(Debug, Default)]
pub(crate) struct RefusalBlock {
    counts: [Counter; Refusal::ALL.len()],
}

impl Block for RefusalBlock {
    type Shape = ();
    type Totals = [u64; Refusal::ALL.len()];

    fn new(_: &()) -> Self {
        Self::default()
    }

    fn totals(_: &()) -> Self::Totals {
        [0; Refusal::ALL.len()]
    }

    fn fold(&self, _: &(), totals: &mut Self::Totals, _live: bool) {
        for (total, count) in totals.iter_mut().zip(&self.counts) {
            *total += count.get();
        }
    }

    fn merge(_: &(), into: &mut Self::Totals, from: &Self::Totals) {
        for (total, count) in into.iter_mut().zip(from) {
            *total += count;
        }
    }

    fn report(_: &(), totals: &Self::Totals, out: &mut Report<'_>) {
        // Every reason, zeros included, so that a rate over a reason that
        // has not happened yet is 0 rather than absent.
        for (refusal, total) in Refusal::ALL.iter().zip(totals) {
            out.counter(&TLS_METRICS[0], &[refusal.label()], *total);
        }
    }
}

/// Where a tls server reports refusals: events and `tls.refusals`.
pub(crate) struct Refusals {
    events: Events,
    family: Option<Arc<Family<RefusalBlock>>>,
}

impl Refusals {
    pub(crate) fn new(events: Events, metrics: &BindingMetrics) -> Self {
        Self {
            events,
            family: metrics.family::<RefusalBlock>(&TLS_METRICS, ()),
        }
    }

    /// Counts one refused connection.
    fn count(&self, refusal: Refusal) {
        if let Some(family) = &self.family {
            family.open().counts[refusal.index()].increment();
        }
    }

    /// A handshake that failed with `error`; `presented` names the client
    /// certificate whose verification failed, if one did.
    pub(crate) fn handshake_failed(
        &self,
        peer: &str,
        error: &io::Error,
        presented: Option<CertificateNames>,
    ) {
        let refusal = Refusal::of_handshake(error);
        self.count(refusal);
        // A revoked certificate also has `TLS_CLIENT_CERTIFICATE_REVOKED`
        // (revocation.rs, where the serial and the CRL are at hand but the
        // connection is not): this one names the client, which tells an
        // operator where a revoked, perhaps stolen, key is used from.
        let alert = tls_error(error).and_then(alert_sent).map(alert_name);
        // A refused certificate is told in words; rustls would add only its
        // error's enum name (`UnknownIssuer`) to what the reason says.
        let message = match (refusal, alert) {
            (Refusal::CertificateRequired, Some(alert)) => format!(
                "client {peer}: handshake failed: no client certificate, and one is required; \
                 alert {alert}"
            ),
            (refusal, Some(alert)) if refusal.is_certificate() => {
                let presented = presented
                    .map(|names| format!(" ({names})"))
                    .unwrap_or_default();
                format!(
                    "client {peer}: handshake failed: client certificate{presented} refused ({}); \
                     alert {alert}",
                    refusal.label()
                )
            }
            _ => {
                let message = format!("client {peer}: handshake failed");
                return self.events.error("TLS_HANDSHAKE_FAILED", message, error);
            }
        };
        self.events.warn("TLS_HANDSHAKE_FAILED", message);
    }

    /// A client that did not complete its handshake within `timeout`.
    pub(crate) fn handshake_timeout(&self, peer: &str, timeout: std::time::Duration) {
        self.count(Refusal::HandshakeTimeout);
        self.events.warn(
            "TLS_HANDSHAKE_TIMEOUT",
            format!(
                "client {peer}: no complete handshake within {}; closed",
                duration(timeout)
            ),
        );
    }

    /// A refusal after the handshake, with the event that tells it.
    pub(crate) fn refused(&self, refusal: Refusal, event: &'static str, message: String) {
        self.count(refusal);
        self.events.warn(event, message);
    }
}

tokio::task_local! {
    /// The client certificate the handshake being polled presented, when
    /// verifying it failed.
    static PRESENTED: RefCell<Option<CertificateNames>>;
}

/// Runs `handshake` with a slot for [`Recording`] to name a refused client
/// certificate in; returns its output and what the slot got.
pub(crate) async fn recorded<F: Future>(handshake: F) -> (F::Output, Option<CertificateNames>) {
    PRESENTED
        .scope(RefCell::new(None), async move {
            let output = handshake.await;
            let presented = PRESENTED.with(|slot| slot.borrow_mut().take());
            (output, presented)
        })
        .await
}

fn record(end_entity: &CertificateDer<'_>) {
    // Outside `recorded` (no slot) there is nobody to tell.
    let _ = PRESENTED.try_with(|slot| *slot.borrow_mut() = CertificateNames::of(end_entity));
}

/// A client-certificate verifier that does what `inner` does and, when that
/// refuses a certificate, records its names for the event.
#[derive(Debug)]
pub(crate) struct Recording {
    inner: Arc<dyn ClientCertVerifier>,
}

impl Recording {
    pub(crate) fn new(inner: Arc<dyn ClientCertVerifier>) -> Self {
        Self { inner }
    }
}

impl ClientCertVerifier for Recording {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|_| record(end_entity))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner
            .verify_tls12_signature(message, cert, dss)
            .inspect_err(|_| record(cert))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner
            .verify_tls13_signature(message, cert, dss)
            .inspect_err(|_| record(cert))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every certificate error has the reason and the alert we document,
    /// and the alert is the one rustls sends for it.
    #[test]
    fn certificate_errors_map_to_reasons_and_rustls_alerts() {
        use CertificateError as C;
        let cases: [(Error, &str, &str); 9] = [
            (C::UnknownIssuer.into(), "unknown_ca", "unknown_ca"),
            (
                C::Expired.into(),
                "certificate_expired",
                "certificate_expired",
            ),
            (
                C::NotValidYet.into(),
                "certificate_not_yet_valid",
                "certificate_expired",
            ),
            (
                Error::NoCertificatesPresented,
                "certificate_required",
                "certificate_required",
            ),
            (C::BadSignature.into(), "bad_signature", "decrypt_error"),
            (
                C::Revoked.into(),
                "certificate_revoked",
                "certificate_revoked",
            ),
            (
                C::UnknownRevocationStatus.into(),
                "revocation_unknown",
                "unknown_ca",
            ),
            (
                C::InvalidPurpose.into(),
                "invalid_purpose",
                "unsupported_certificate",
            ),
            (C::BadEncoding.into(), "bad_certificate", "bad_certificate"),
        ];
        for (error, reason, alert) in cases {
            assert_eq!(Refusal::of_tls(&error).label(), reason, "{error}");
            assert!(Refusal::of_tls(&error).is_certificate(), "{error}");
            assert_eq!(alert_sent(&error).map(alert_name).as_deref(), Some(alert));
            let wrapped = io::Error::new(io::ErrorKind::InvalidData, error);
            assert_eq!(Refusal::of_handshake(&wrapped).label(), reason);
        }
        let other = io::Error::new(io::ErrorKind::InvalidData, Error::DecryptError);
        assert_eq!(Refusal::of_handshake(&other), Refusal::HandshakeFailed);
        assert!(!Refusal::HandshakeFailed.is_certificate());
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(Refusal::of_handshake(&eof), Refusal::HandshakeFailed);
    }

    #[test]
    fn labels_are_unique() {
        let mut labels: Vec<_> = Refusal::ALL.iter().map(|r| r.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Refusal::ALL.len());
    }
}
