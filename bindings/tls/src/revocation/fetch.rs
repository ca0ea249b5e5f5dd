//! CRLs fetched from the `http://` distribution points of client
//! certificates whose issuer has no local CRL.
//!
//! **Never on the handshake's thread.** rustls calls a verifier
//! synchronously, on the tokio worker that drives the handshake, so a fetch
//! there would stall every connection on that worker for as long as the CA's
//! server takes. A fetch runs on a thread of its own (plain `ureq`, at most
//! one per distribution point at a time, bounded by a 10 s timeout and a
//! 16 MiB body); handshakes go on meanwhile, unchecked for that issuer, as
//! when no CRL is available at all. Deployments that must check the very
//! first handshake give the vault a local `crl` store.
//!
//! **Cached until nextUpdate.** A fetched list serves until its nextUpdate;
//! the first handshake within the last tenth of its validity (at most five
//! minutes) fetches it again, so that a CA publishing on time never lets it
//! expire. A list that does expire is used as a local one is: it fails the
//! handshakes it decides, and each such handshake asks for it again (a
//! fetch at most once a minute per distribution point).
//!
//! **Only what verifies.** A fetched list is used only if it decides the
//! certificate that named it: its issuer, its scope and its signature are
//! checked by a trial verification with webpki. Plain HTTP can be tampered
//! with, and a list with a bad signature would otherwise make webpki refuse
//! every certificate of that issuer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::ClientCertVerifierBuilder;
use rustls::{CertificateError, Error};
use zilla_engine::telemetry::duration;
use zilla_engine::Events;

use super::ListInfo;

/// How long one fetch may take, connection to last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest CRL taken (large CAs publish lists of a few MiB).
const MAX_CRL_BYTES: u64 = 16 * 1024 * 1024;
/// The least time between two fetches from one distribution point.
const MIN_INTERVAL: Duration = Duration::from_secs(60);
/// The most distribution points followed; more are not fetched.
const MAX_DISTRIBUTION_POINTS: usize = 256;
/// The most a list is fetched again ahead of its nextUpdate.
const MAX_RENEW_AHEAD: i64 = 300;

/// One fetched list.
#[derive(Debug, Clone)]
pub(super) struct FetchedCrl {
    /// The distribution point it is kept under: the first `http://` one of
    /// the certificate that asked for it.
    pub(super) key: String,
    /// The URL that answered.
    pub(super) from: String,
    pub(super) der: CertificateRevocationListDer<'static>,
}

/// The fetched lists, versioned like a vault's.
#[derive(Debug, Default)]
pub(super) struct FetchedSet {
    pub(super) version: u64,
    pub(super) lists: Vec<FetchedCrl>,
}

/// A certificate a list must decide to be used: the one that asked for it.
#[derive(Debug, Clone)]
struct Probe {
    leaf: CertificateDer<'static>,
    intermediates: Vec<CertificateDer<'static>>,
}

#[derive(Debug)]
struct Entry {
    urls: Vec<String>,
    crl: Option<FetchedCrl>,
    in_flight: bool,
    /// When the next fetch may start.
    next_attempt: SystemTime,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, Entry>,
    lists: Arc<FetchedSet>,
    /// Whether the limit on distribution points was reported.
    full: bool,
}

impl State {
    fn publish(&mut self) {
        let mut lists: Vec<_> = self
            .entries
            .values()
            .filter_map(|e| e.crl.clone())
            .collect();
        lists.sort_by(|a, b| a.key.cmp(&b.key));
        self.lists = Arc::new(FetchedSet {
            version: self.lists.version + 1,
            lists,
        });
    }
}

/// The fetched lists of one tls server, and the fetches under way.
#[derive(Debug)]
pub(super) struct Fetcher {
    /// Roots and provider, for the trial verification.
    trial: ClientCertVerifierBuilder,
    events: Events,
    state: Arc<Mutex<State>>,
}

impl Fetcher {
    pub(super) fn new(builder: ClientCertVerifierBuilder, events: Events) -> Self {
        Self {
            // Unknown status is an error here, and expiry is not: the trial
            // asks whether the list decides the certificate, not whether
            // the list is current.
            trial: builder.only_check_end_entity_revocation(),
            events,
            state: Arc::default(),
        }
    }

    /// The lists fetched so far.
    pub(super) fn lists(&self) -> Arc<FetchedSet> {
        self.lock().lists.clone()
    }

    /// Whether no fetch is under way.
    #[cfg(test)]
    pub(super) fn idle(&self) -> bool {
        self.lock().entries.values().all(|e| !e.in_flight)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fetches the list at `urls` (tried in order) in the background if it
    /// is not there yet, or due again; returns at once. Only for a leaf
    /// that verified against the trust.
    pub(super) fn poke(
        &self,
        urls: &[String],
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) {
        let Some(key) = urls.first() else { return };
        let now = SystemTime::now();
        let mut state = self.lock();
        if !state.entries.contains_key(key) && state.entries.len() >= MAX_DISTRIBUTION_POINTS {
            if !state.full {
                state.full = true;
                self.events.warn(
                    "TLS_CRL_FETCH_FAILED",
                    format!("{key}: not fetched, {MAX_DISTRIBUTION_POINTS} CRL distribution points are followed already"),
                );
            }
            return;
        }
        let entry = state.entries.entry(key.clone()).or_insert_with(|| Entry {
            urls: urls.to_vec(),
            crl: None,
            in_flight: false,
            next_attempt: SystemTime::UNIX_EPOCH,
        });
        if entry.in_flight || now < entry.next_attempt {
            return;
        }
        entry.in_flight = true;
        let job = Job {
            key: key.clone(),
            urls: entry.urls.clone(),
            // The leaf at hand (copied only now that a fetch starts): one
            // that asked earlier may have expired since.
            probe: Probe {
                leaf: leaf.clone().into_owned(),
                intermediates: intermediates
                    .iter()
                    .map(|c| c.clone().into_owned())
                    .collect(),
            },
            trial: self.trial.clone(),
            events: self.events.clone(),
            state: self.state.clone(),
        };
        drop(state);
        let spawned = std::thread::Builder::new()
            .name("zilla-crl-fetch".into())
            .spawn(move || job.run());
        if let Err(error) = spawned {
            let mut state = self.lock();
            if let Some(entry) = state.entries.get_mut(key) {
                entry.in_flight = false;
                entry.next_attempt = now + MIN_INTERVAL;
            }
            self.events.warn(
                "TLS_CRL_FETCH_FAILED",
                format!("{key}: cannot start a fetch: {error}"),
            );
        }
    }
}

/// One fetch, on its own thread.
struct Job {
    key: String,
    urls: Vec<String>,
    probe: Probe,
    trial: ClientCertVerifierBuilder,
    events: Events,
    state: Arc<Mutex<State>>,
}

impl Job {
    fn run(self) {
        let outcome = self.fetch();
        let now = SystemTime::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = state.entries.get_mut(&self.key) else {
            return;
        };
        entry.in_flight = false;
        match outcome {
            Ok((from, der, info)) => {
                let ahead = ((info.next_update - info.this_update) / 10).clamp(0, MAX_RENEW_AHEAD);
                let renew = at(info.next_update - ahead);
                entry.next_attempt = renew.max(now + MIN_INTERVAL);
                let changed = entry.crl.as_ref().is_none_or(|old| old.der != der);
                entry.crl = Some(FetchedCrl {
                    key: self.key.clone(),
                    from: from.clone(),
                    der,
                });
                if changed {
                    state.publish();
                    self.events.info(
                        "TLS_CRL_FETCHED",
                        format!(
                            "the CRL of {} from {from}: {} revoked, next update {}",
                            info.issuer, info.revoked, info.next_update_text
                        ),
                    );
                }
            }
            Err(why) => {
                entry.next_attempt = now + MIN_INTERVAL;
                let kept = if entry.crl.is_some() {
                    "the list fetched before stays; "
                } else {
                    ""
                };
                self.events.warn(
                    "TLS_CRL_FETCH_FAILED",
                    format!(
                        "{why}; {kept}tried again at the next handshake after {}",
                        duration(MIN_INTERVAL)
                    ),
                );
            }
        }
    }

    /// The first list among the URLs that decides the probe.
    fn fetch(&self) -> Result<(String, CertificateRevocationListDer<'static>, ListInfo), String> {
        let mut failures = Vec::new();
        for url in &self.urls {
            match get(url).and_then(|body| self.check(body)) {
                Ok((der, info)) => return Ok((url.clone(), der, info)),
                Err(why) => failures.push(format!("{url}: {why}")),
            }
        }
        Err(format!("cannot fetch a CRL: {}", failures.join("; ")))
    }

    /// Decodes a fetched body (DER, as RFC 5280 says; PEM accepted) and
    /// checks, by a trial verification, that it decides the probe.
    fn check(
        &self,
        body: Vec<u8>,
    ) -> Result<(CertificateRevocationListDer<'static>, ListInfo), String> {
        let der = if body.trim_ascii_start().starts_with(b"-----BEGIN") {
            CertificateRevocationListDer::from_pem_slice(&body)
                .map_err(|e| format!("not a PEM CRL: {e}"))?
        } else {
            CertificateRevocationListDer::from(body)
        };
        let verifier = self
            .trial
            .clone()
            .with_crls([der.clone()])
            .build()
            .map_err(|e| format!("not a usable CRL: {e}"))?;
        let decided = verifier.verify_client_cert(
            &self.probe.leaf,
            &self.probe.intermediates,
            UnixTime::now(),
        );
        match decided {
            Ok(_) | Err(Error::InvalidCertificate(CertificateError::Revoked)) => {}
            Err(Error::InvalidCertificate(CertificateError::UnknownRevocationStatus)) => {
                return Err("the list does not cover the certificate that names it (another issuer or scope)".into())
            }
            Err(error) => return Err(format!("the list does not verify: {error}")),
        }
        let info = ListInfo::read(&der).ok_or("the list cannot be read")?;
        Ok((der, info))
    }
}

/// `GET url`: the body of a 2xx answer.
fn get(url: &str) -> Result<Vec<u8>, String> {
    let agent = ureq::Agent::new_with_config(
        ureq::config::Config::builder()
            .timeout_global(Some(FETCH_TIMEOUT))
            .http_status_as_error(true)
            .build(),
    );
    let mut response = agent.get(url).call().map_err(|e| e.to_string())?;
    response
        .body_mut()
        .with_config()
        .limit(MAX_CRL_BYTES)
        .read_to_vec()
        .map_err(|e| e.to_string())
}

/// A `SystemTime` from seconds since the epoch.
fn at(seconds: i64) -> SystemTime {
    let seconds = u64::try_from(seconds).unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}
