//! Revocation of client certificates (`revocation: crl` on the vault).
//!
//! **Design.** [`client_verifier`] wraps rustls's own `WebPkiClientVerifier`
//! in a [`ClientCertVerifier`] of ours. The verdict is always webpki's, with
//! the policy HAProxy and nginx apply through OpenSSL:
//! `only_check_end_entity_revocation` (the leaf against its issuer's CRL),
//! `allow_unknown_revocation_status` (an issuer with no CRL is not checked)
//! and `enforce_revocation_expiration` (a CRL past its nextUpdate fails the
//! handshakes it decides, alert `unknown_ca`; a revoked certificate gets
//! `certificate_revoked`). The wrapper adds three things webpki cannot do:
//!
//! - *Current lists.* rustls's verifier holds a fixed set of CRLs. At every
//!   client certificate, the wrapper asks the vault for its lists
//!   ([`RevocationLists::current`]: a few `stat` calls; the vault reads a
//!   file again only when it changed) and rebuilds the inner verifier when
//!   their version, or that of the fetched lists, changed. So the next
//!   handshake after a CRL file is rewritten uses it, with no reload.
//! - *Fetching.* A leaf whose issuer has no local CRL and which names an
//!   `http://` distribution point gets its CRL fetched ([`fetch`]): in the
//!   background, never on the handshake's thread, and only for a leaf that
//!   verified against the trust (so a stranger's certificate cannot make
//!   the proxy send requests). Handshakes until it arrives are not checked.
//! - *Events* at the point of decision, where the leaf is at hand:
//!   `TLS_CLIENT_CERTIFICATE_REVOKED` (each refusal, with the serial, the
//!   issuer and the CRL), `TLS_CRL_EXPIRED` and `TLS_CRL_INVALID` (once per
//!   list), `TLS_CRL_MISSING` (once per issuer), and the fetcher's
//!   `TLS_CRL_FETCHED` / `TLS_CRL_FETCH_FAILED`. rustls gives a verifier no
//!   connection, so these do not name the peer; the `TLS_HANDSHAKE_FAILED`
//!   event the server emits for the same refusal does, right after.
//!
//! Lists are chosen before the inner verifier sees them, because webpki uses
//! the first CRL that covers a certificate: per issuer (and issuing
//! distribution point) the newest by thisUpdate; a local list for an issuer
//! hides fetched ones.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientCertVerifierBuilder, VerifierBuilderError};
use rustls::{
    CertRevocationListError, CertificateError, DigitallySignedStruct, DistinguishedName, Error,
    SignatureScheme,
};
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::X509Name;
use zilla_engine::telemetry::text;
use zilla_engine::{Events, RevocationLists};

mod fetch;

use fetch::Fetcher;

/// The client certificate verifier of a tls server: `builder` (roots,
/// provider, anonymous policy set) as is when the vault has no revocation,
/// else wrapped to check revocation as the module docs say.
pub(crate) fn client_verifier(
    builder: ClientCertVerifierBuilder,
    lists: Option<Arc<dyn RevocationLists>>,
    events: Events,
) -> Result<Arc<dyn ClientCertVerifier>, VerifierBuilderError> {
    match lists {
        None => builder.build(),
        Some(lists) => Ok(Arc::new(RevocationVerifier::new(builder, lists, events)?)),
    }
}

/// What events and list selection need to know of one CRL, read with
/// x509-parser (webpki keeps its fields to itself).
#[derive(Debug, Clone)]
pub(crate) struct ListInfo {
    /// The issuer's name, DER, as certificates name it.
    issuer_raw: Vec<u8>,
    /// The issuer's name, for events ([`shown`]).
    pub(crate) issuer: String,
    /// The issuing distribution point extension, DER (empty without).
    scope: Vec<u8>,
    this_update: i64,
    /// Seconds since the epoch; webpki refuses CRLs without one.
    pub(crate) next_update: i64,
    /// The nextUpdate as the CRL states it, for events.
    pub(crate) next_update_text: String,
    /// How many certificates it revokes.
    pub(crate) revoked: usize,
}

impl ListInfo {
    /// Reads `der`; `None` if x509-parser cannot (the list is still used).
    pub(crate) fn read(der: &[u8]) -> Option<Self> {
        let (_, crl) = x509_parser::parse_x509_crl(der).ok()?;
        let next = crl.next_update()?;
        let scope = crl
            .extensions()
            .iter()
            .find(|e| e.oid == x509_parser::oid_registry::OID_X509_EXT_ISSUER_DISTRIBUTION_POINT)
            .map(|e| e.value.to_vec())
            .unwrap_or_default();
        Some(Self {
            issuer_raw: crl.issuer().as_raw().to_vec(),
            issuer: shown(crl.issuer()),
            scope,
            this_update: crl.last_update().timestamp(),
            next_update: next.timestamp(),
            next_update_text: next.to_string(),
            revoked: crl.iter_revoked_certificates().count(),
        })
    }
}

/// One list the inner verifier uses.
#[derive(Debug, Clone)]
struct Chosen {
    der: CertificateRevocationListDer<'static>,
    /// The file it was read from, or the URL it was fetched from.
    source: String,
    /// For a fetched list, the first `http://` distribution point of the
    /// certificates that name it (the fetcher's key).
    fetched: Option<String>,
    info: Option<ListInfo>,
}

/// The inner verifier built for one version of the lists.
#[derive(Debug)]
struct Built {
    /// (vault lists version, fetched lists version).
    key: (u64, u64),
    verifier: Arc<dyn ClientCertVerifier>,
    /// The chosen lists by issuer name (DER).
    by_issuer: HashMap<Vec<u8>, Vec<Chosen>>,
}

struct RevocationVerifier {
    /// With the revocation policy applied, without CRLs.
    builder: ClientCertVerifierBuilder,
    /// Without CRLs: the hints, signatures and anonymous policy, which CRLs
    /// do not change.
    plain: Arc<dyn ClientCertVerifier>,
    lists: Arc<dyn RevocationLists>,
    fetcher: Fetcher,
    built: RwLock<Arc<Built>>,
    /// What was reported once already (missing issuers, expired lists).
    noticed: Mutex<HashSet<String>>,
    events: Events,
}

impl std::fmt::Debug for RevocationVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationVerifier")
            .field("built", &self.built)
            .finish_non_exhaustive()
    }
}

impl RevocationVerifier {
    fn new(
        builder: ClientCertVerifierBuilder,
        lists: Arc<dyn RevocationLists>,
        events: Events,
    ) -> Result<Self, VerifierBuilderError> {
        let fetcher = Fetcher::new(builder.clone(), events.clone());
        let builder = builder
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status()
            .enforce_revocation_expiration();
        let plain = builder.clone().build()?;
        let verifier = Self {
            built: RwLock::new(Arc::new(Built {
                // No version matches: the first look builds.
                key: (u64::MAX, u64::MAX),
                verifier: plain.clone(),
                by_issuer: HashMap::new(),
            })),
            builder,
            plain,
            lists,
            fetcher,
            noticed: Mutex::default(),
            events,
        };
        verifier.current();
        Ok(verifier)
    }

    /// The inner verifier for the lists as they are now.
    fn current(&self) -> Arc<Built> {
        let local = self.lists.current();
        let fetched = self.fetcher.lists();
        let key = (local.version, fetched.version);
        let built = self.built.read().unwrap_or_else(|p| p.into_inner()).clone();
        if built.key == key {
            return built;
        }
        let mut slot = self.built.write().unwrap_or_else(|p| p.into_inner());
        if slot.key == key {
            return slot.clone();
        }
        let local = local.lists.iter().map(|crl| Chosen {
            der: crl.der.clone(),
            source: crl.source.clone(),
            fetched: None,
            info: ListInfo::read(&crl.der),
        });
        let fetched = fetched.lists.iter().map(|crl| Chosen {
            der: crl.der.clone(),
            source: crl.from.clone(),
            fetched: Some(crl.key.clone()),
            info: ListInfo::read(&crl.der),
        });
        let chosen = choose(local, fetched);
        let ders: Vec<_> = chosen.iter().map(|c| c.der.clone()).collect();
        let verifier = match self.builder.clone().with_crls(ders).build() {
            Ok(verifier) => verifier,
            Err(error) => {
                // The vault and the fetcher check lists with webpki, so this
                // is not expected; the lists used before stay.
                self.events.warn(
                    "TLS_CRL_INVALID",
                    format!("the revocation lists cannot be used ({error}); those before stay"),
                );
                return slot.clone();
            }
        };
        let mut by_issuer: HashMap<Vec<u8>, Vec<Chosen>> = HashMap::new();
        for list in chosen {
            if let Some(info) = &list.info {
                by_issuer
                    .entry(info.issuer_raw.clone())
                    .or_default()
                    .push(list);
            }
        }
        *slot = Arc::new(Built {
            key,
            verifier,
            by_issuer,
        });
        slot.clone()
    }

    /// Says once what `key` names.
    fn once(&self, key: String) -> bool {
        self.noticed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key)
    }

    /// Events, and fetches, for what the inner verifier decided.
    fn observe(
        &self,
        built: &Built,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        result: &Result<ClientCertVerified, Error>,
    ) {
        let Ok((_, leaf)) = X509Certificate::from_der(end_entity) else {
            return;
        };
        let issuer = shown(leaf.issuer());
        let lists = built
            .by_issuer
            .get(leaf.issuer().as_raw())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let urls = http_distribution_points(&leaf);
        match result {
            Err(Error::InvalidCertificate(CertificateError::Revoked)) => {
                let by = lists
                    .iter()
                    .map(|l| l.source.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                self.events.warn(
                    "TLS_CLIENT_CERTIFICATE_REVOKED",
                    format!(
                        "client certificate {} serial {} issued by {issuer} is revoked (CRL {by}); handshake refused with certificate_revoked",
                        shown(leaf.subject()),
                        serial(leaf.raw_serial())
                    ),
                );
            }
            Err(Error::InvalidCertificate(
                CertificateError::ExpiredRevocationList
                | CertificateError::ExpiredRevocationListContext { .. },
            )) => {
                let now = unix_now();
                for list in lists {
                    let Some(info) = &list.info else { continue };
                    if info.next_update > now {
                        continue;
                    }
                    if let Some(key) = &list.fetched {
                        // Fetched before, for a verified chain: try again.
                        self.fetcher
                            .poke(std::slice::from_ref(key), end_entity, intermediates);
                    }
                    if self.once(format!("expired {} {}", list.source, info.next_update)) {
                        self.events.warn(
                            "TLS_CRL_EXPIRED",
                            format!(
                                "the CRL of {issuer} from {} is past its nextUpdate ({}): the certificates it issued are refused until the list is renewed",
                                list.source, info.next_update_text
                            ),
                        );
                    }
                }
            }
            Err(Error::InvalidCertRevocationList(why)) => {
                let by = lists
                    .iter()
                    .map(|l| l.source.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                if self.once(format!("invalid {by} {:?}", built.key)) {
                    self.events.warn(
                        "TLS_CRL_INVALID",
                        format!(
                            "the CRL of {issuer} from {by} cannot be used ({}): the certificates it issued are refused until it is replaced",
                            crl_problem(why)
                        ),
                    );
                }
            }
            Ok(_) => {
                let local = lists.iter().any(|l| l.fetched.is_none());
                if !local && !urls.is_empty() {
                    // Also when a fetched list covers it: the fetcher renews
                    // it ahead of its nextUpdate.
                    self.fetcher.poke(&urls, end_entity, intermediates);
                }
                let covered = lists.iter().any(|l| {
                    l.fetched.as_ref().is_none_or(|url| urls.contains(url))
                        || l.info.as_ref().is_some_and(|i| i.scope.is_empty())
                });
                if !covered && self.once(format!("missing {issuer}")) {
                    let how = match urls.first() {
                        Some(url) => format!("fetching {url}; until it arrives, "),
                        None => String::new(),
                    };
                    self.events.warn(
                        "TLS_CRL_MISSING",
                        format!(
                            "no CRL for issuer {issuer}: {how}the certificates it issued are not checked for revocation"
                        ),
                    );
                }
            }
            Err(_) => {}
        }
    }
}

impl ClientCertVerifier for RevocationVerifier {
    fn offer_client_auth(&self) -> bool {
        self.plain.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.plain.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.plain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let built = self.current();
        let result = built
            .verifier
            .verify_client_cert(end_entity, intermediates, now);
        self.observe(&built, end_entity, intermediates, &result);
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.plain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.plain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.plain.supported_verify_schemes()
    }
}

/// Local lists first, then fetched ones for issuers no local list names;
/// per issuer and scope, the newest (webpki would take the first).
fn choose(
    local: impl Iterator<Item = Chosen>,
    fetched: impl Iterator<Item = Chosen>,
) -> Vec<Chosen> {
    fn add(chosen: &mut Vec<Chosen>, list: Chosen) {
        let Some(info) = &list.info else {
            chosen.push(list);
            return;
        };
        let same = chosen.iter_mut().find(|c| {
            c.info
                .as_ref()
                .is_some_and(|i| i.issuer_raw == info.issuer_raw && i.scope == info.scope)
        });
        match same {
            Some(older) if older.info.as_ref().map(|i| i.this_update) < Some(info.this_update) => {
                *older = list;
            }
            Some(_) => {}
            None => chosen.push(list),
        }
    }
    let mut chosen = Vec::new();
    for list in local {
        add(&mut chosen, list);
    }
    let local_issuers: HashSet<Vec<u8>> = chosen
        .iter()
        .filter_map(|c| c.info.as_ref().map(|i| i.issuer_raw.clone()))
        .collect();
    for list in fetched {
        if list
            .info
            .as_ref()
            .is_some_and(|i| !local_issuers.contains(&i.issuer_raw))
        {
            add(&mut chosen, list);
        }
    }
    chosen
}

/// The `http://` URIs of a certificate's CRL distribution points, in order.
pub(crate) fn http_distribution_points(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut urls = Vec::new();
    for extension in cert.extensions() {
        let ParsedExtension::CRLDistributionPoints(points) = extension.parsed_extension() else {
            continue;
        };
        for point in points.iter() {
            let Some(DistributionPointName::FullName(names)) = &point.distribution_point else {
                continue;
            };
            for name in names {
                if let GeneralName::URI(uri) = name {
                    let scheme = uri.get(..7);
                    // Printable ASCII only: the URL goes into requests and
                    // events as it is.
                    let printable = uri.bytes().all(|b| b.is_ascii_graphic());
                    if printable && scheme.is_some_and(|s| s.eq_ignore_ascii_case("http://")) {
                        urls.push((*uri).to_owned());
                    }
                }
            }
        }
    }
    urls
}

/// Longest name an event quotes.
const MAX_NAME: usize = 256;

/// A distinguished name as events show it: quoted and escaped, so that a
/// name with control characters cannot forge an event line, and shortened.
fn shown(name: &X509Name<'_>) -> String {
    let mut name = name.to_string();
    if name.len() > MAX_NAME {
        let mut end = MAX_NAME;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
        name.push('…');
    }
    text(&name).to_string()
}

/// What is wrong with a CRL, in words (rustls prints only its enum's names).
fn crl_problem(why: &CertRevocationListError) -> String {
    use CertRevocationListError as E;
    let said = match why {
        E::BadSignature => "its signature does not verify",
        E::InvalidCrlNumber => "its CRL number is invalid",
        E::InvalidRevokedCertSerialNumber => "a revoked serial number is invalid",
        E::IssuerInvalidForCrl => "its issuer may not sign CRLs (no cRLSign key usage)",
        E::Other(other) => return other.to_string(),
        E::ParseError => "it is not a well-formed CRL",
        E::UnsupportedCrlVersion => "it is not a v2 CRL",
        E::UnsupportedCriticalExtension => "it has an unsupported critical extension",
        E::UnsupportedDeltaCrl => "it is a delta CRL, which is not supported",
        E::UnsupportedIndirectCrl => "it is an indirect CRL, which is not supported",
        E::UnsupportedRevocationReason => "it has an unsupported revocation reason",
        _ => "its signature algorithm is not supported",
    };
    said.to_owned()
}

/// A serial number as OpenSSL prints it: hexadecimal, without leading
/// zero bytes (DER's sign byte).
fn serial(raw: &[u8]) -> String {
    let start = raw
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    raw[start..].iter().map(|b| format!("{b:02X}")).collect()
}

/// Seconds since the epoch, as CRL times are compared.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
