//! The `crl` store of a vault with `revocation: crl`: certificate revocation
//! lists from a file or a directory, PEM or DER, kept current.
//!
//! The lists are read when the vault is built (so a missing or unreadable
//! store is a startup error naming the file) and again whenever the store's
//! files change, checked by the verifier on every handshake through
//! [`RevocationLists::current`]: the next handshake after a CRL file is
//! rewritten uses the new list. A change is seen by comparing each file's
//! metadata (size, modification time, inode), a few `stat` calls, so the
//! check costs next to nothing; the files are read only when it differs.
//! A rewrite that cannot be used (half written, not a CRL) keeps the lists
//! read before, with a `VAULT_CRL_UNREADABLE` event, just as a reload that
//! fails keeps the running configuration.
//!
//! Why not the host's reload (which watches [`Vault::files`] and rebuilds
//! the configuration): it acts only after two polls agree (a second or two),
//! it needs the whole configuration to build again (a JWKS URL that is down
//! would keep a new revocation from taking effect), and CRLs that are
//! published hourly would make a reload, with its events, every hour.
//!
//! [`Vault::files`]: zilla_engine::Vault::files

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateRevocationListDer;
use serde::{Deserialize, Serialize};
use zilla_engine::{Crl, CrlSet, Events, RevocationLists};

/// `options.crl` of a filesystem vault (beyond Zilla, whose PKIX checker
/// only fetches CRLs from the certificates' distribution points).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrlOptions {
    /// A CRL file, or a directory of them, relative to `zilla.yaml`.
    pub store: String,
    /// `pem` (default) or `der`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub store_type: Option<CrlType>,
}

/// The format of CRL files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrlType {
    /// `-----BEGIN X509 CRL-----` blocks, one or more per file (as `openssl
    /// ca -gencrl` writes them, and as nginx's `ssl_crl` reads them).
    Pem,
    /// One DER-encoded CRL per file (as CAs publish them over HTTP).
    Der,
}

impl CrlType {
    /// The file name extensions a directory store takes for this type.
    fn extensions(self) -> &'static [&'static str] {
        match self {
            CrlType::Pem => &["crl", "pem"],
            CrlType::Der => &["crl", "der"],
        }
    }
}

/// A file is "racy" while its modification time is this recent: it could be
/// rewritten with the same size within one timestamp tick (coarse on some
/// file systems), so its content is compared too until the window passes.
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    len: u64,
    modified: Option<SystemTime>,
    inode: (u64, u64),
}

impl Meta {
    fn of(path: &Path) -> Option<Self> {
        // `metadata` follows symlinks, so a Kubernetes mount whose `..data`
        // link is swapped shows the new file's inode.
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode: inode(&meta),
        })
    }
}

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

/// The store's files and their metadata; `None` for one that is gone.
type Stamp = Vec<(PathBuf, Option<Meta>)>;

#[derive(Debug)]
struct State {
    /// The stamp last looked at, whether its content was used or refused.
    seen: Stamp,
    /// A digest of the content last read, to tell a racy rewrite.
    digest: u64,
    /// Whether a file was modified too recently to trust the stamp alone.
    racy: bool,
    /// The refusal last reported, so that it is reported once.
    refused: Option<String>,
    lists: Arc<CrlSet>,
}

/// A vault's `crl` store.
#[derive(Debug)]
pub(crate) struct CrlStore {
    vault: String,
    path: PathBuf,
    format: CrlType,
    events: Events,
    state: Mutex<State>,
}

impl CrlStore {
    /// Reads the store `options` names, relative to `base`; an error names
    /// the vault and the file.
    pub(crate) fn open(
        vault: &str,
        options: &CrlOptions,
        base: &Path,
        events: Events,
    ) -> Result<Self, String> {
        let mut store = Self {
            vault: vault.to_owned(),
            path: base.join(&options.store),
            format: options.store_type.unwrap_or(CrlType::Pem),
            events,
            state: Mutex::new(State {
                seen: Vec::new(),
                digest: 0,
                racy: false,
                refused: None,
                lists: Arc::default(),
            }),
        };
        let stamp = store.stamp()?;
        let (lists, digest) = store.read(&stamp)?;
        let state = store.state.get_mut().unwrap_or_else(|p| p.into_inner());
        state.racy = racy(&stamp);
        state.seen = stamp;
        state.digest = digest;
        state.lists = Arc::new(CrlSet { version: 1, lists });
        Ok(store)
    }

    /// The files the store is made of now, with their metadata; for a
    /// directory, its `*.crl` files and those of the type's own extension,
    /// leaving out hidden entries (Kubernetes' `..data` and its siblings).
    fn stamp(&self) -> Result<Stamp, String> {
        if !self.path.is_dir() {
            return Ok(vec![(self.path.clone(), Meta::of(&self.path))]);
        }
        let entries = std::fs::read_dir(&self.path).map_err(|e| {
            format!(
                "vault {}: cannot read crl store {}: {e}",
                self.vault,
                self.path.display()
            )
        })?;
        let extensions = self.format.extensions();
        let mut files: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| {
                let hidden = path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'));
                let wanted = path
                    .extension()
                    .is_some_and(|ext| extensions.iter().any(|e| ext == *e));
                !hidden && wanted && path.is_file()
            })
            .collect();
        files.sort();
        if files.is_empty() {
            let patterns: Vec<_> = extensions.iter().map(|e| format!("`*.{e}`")).collect();
            return Err(format!(
                "vault {}: crl store {} holds no {} file",
                self.vault,
                self.path.display(),
                patterns.join(" or ")
            ));
        }
        Ok(files
            .into_iter()
            .map(|path| {
                let meta = Meta::of(&path);
                (path, meta)
            })
            .collect())
    }

    /// Reads and checks every file of `stamp`: the lists, and a digest of
    /// the bytes read. The stamp is taken before reading, so a file changed
    /// in between is read again at the next check rather than missed.
    fn read(&self, stamp: &Stamp) -> Result<(Vec<Crl>, u64), String> {
        let mut digest = std::hash::DefaultHasher::new();
        let mut lists = Vec::new();
        for (path, _) in stamp {
            let data = std::fs::read(path).map_err(|e| {
                format!(
                    "vault {}: cannot read crl store {}: {e}",
                    self.vault,
                    path.display()
                )
            })?;
            path.hash(&mut digest);
            data.hash(&mut digest);
            lists.extend(self.parse(path, data)?);
        }
        Ok((lists, digest.finish()))
    }

    fn parse(&self, path: &Path, data: Vec<u8>) -> Result<Vec<Crl>, String> {
        let shown = path.display();
        let vault = &self.vault;
        let looks_pem = data.trim_ascii_start().starts_with(b"-----BEGIN");
        let ders: Vec<CertificateRevocationListDer<'static>> = match self.format {
            CrlType::Pem => {
                let ders = CertificateRevocationListDer::pem_slice_iter(&data)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("vault {vault}: crl store {shown}: bad PEM: {e}"))?;
                if ders.is_empty() {
                    let hint = if looks_pem {
                        ""
                    } else {
                        " (a DER file? use `type: der`)"
                    };
                    return Err(format!(
                        "vault {vault}: crl store {shown} holds no `X509 CRL` PEM block{hint}"
                    ));
                }
                ders
            }
            CrlType::Der if looks_pem => {
                return Err(format!(
                    "vault {vault}: crl store {shown} is PEM, not DER; use `type: pem`"
                ))
            }
            CrlType::Der => vec![CertificateRevocationListDer::from(data)],
        };
        let several = ders.len() > 1;
        ders.into_iter()
            .enumerate()
            .map(|(index, der)| {
                let source = if several {
                    format!("{shown} (list {})", index + 1)
                } else {
                    shown.to_string()
                };
                // Checked with the parser rustls itself uses, so that what
                // the vault accepts is what the verifier can use: webpki
                // takes X.509 v2 CRLs with a nextUpdate, and no delta CRLs.
                webpki::OwnedCertRevocationList::from_der(&der).map_err(|e| {
                    // webpki takes version 2 only, and reads a version 1
                    // list (no version field) as bad DER: tell it apart.
                    let version_1 = x509_parser::parse_x509_crl(&der)
                        .is_ok_and(|(_, crl)| crl.version().is_none_or(|v| v.0 == 0));
                    let hint = match e {
                        _ if version_1 => {
                            " (a version 1 list; `openssl ca -gencrl` writes version 2 \
                             when its configuration names a `crlnumber` file)"
                        }
                        webpki::Error::UnsupportedDeltaCrl => " (a delta CRL; give the full list)",
                        _ => "",
                    };
                    format!("vault {vault}: crl store {source}: not a usable CRL: {e}{hint}")
                })?;
                Ok(Crl { der, source })
            })
            .collect()
    }
}

/// Whether any file of `stamp` was modified within [`RACY_WINDOW`].
fn racy(stamp: &Stamp) -> bool {
    let now = SystemTime::now();
    stamp.iter().any(|(_, meta)| {
        meta.and_then(|m| m.modified).is_some_and(|at| {
            // A time in the future (a clock step) counts as recent.
            now.duration_since(at)
                .ok()
                .is_none_or(|age| age < RACY_WINDOW)
        })
    })
}

impl RevocationLists for CrlStore {
    fn current(&self) -> Arc<CrlSet> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let stamp = match self.stamp() {
            Ok(stamp) => stamp,
            Err(why) => {
                self.refuse(&mut state, Vec::new(), why);
                return state.lists.clone();
            }
        };
        if stamp == state.seen && !state.racy {
            return state.lists.clone();
        }
        match self.read(&stamp) {
            Ok((lists, digest)) => {
                let unchanged = stamp == state.seen && digest == state.digest;
                state.racy = racy(&stamp);
                state.seen = stamp;
                if unchanged {
                    return state.lists.clone();
                }
                state.digest = digest;
                state.refused = None;
                let version = state.lists.version + 1;
                self.events.info(
                    "VAULT_CRL_RELOADED",
                    format!(
                        "crl store {}: read again, {} list(s)",
                        self.path.display(),
                        lists.len()
                    ),
                );
                state.lists = Arc::new(CrlSet { version, lists });
            }
            Err(why) => self.refuse(&mut state, stamp, why),
        }
        state.lists.clone()
    }
}

impl CrlStore {
    /// Keeps the lists read before and says so, once per change.
    fn refuse(&self, state: &mut State, stamp: Stamp, why: String) {
        let reported = state.seen == stamp && state.refused.as_ref() == Some(&why);
        state.racy = racy(&stamp);
        state.seen = stamp;
        if !reported {
            self.events.warn(
                "VAULT_CRL_UNREADABLE",
                format!(
                    "{why}; the {} list(s) read before stay",
                    state.lists.lists.len()
                ),
            );
            state.refused = Some(why);
        }
    }
}

#[cfg(test)]
mod tests;
