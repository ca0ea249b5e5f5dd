//! `type: filesystem` vault: keys (with their certificate chains), trusted
//! certificates and signers, read at startup from PKCS#12 stores (including
//! Java-made ones with legacy RC2-40 / 3DES encryption) or PEM files.
//!
//! A PKCS#12 entry's alias is its friendly name. PEM has no aliases: a PEM
//! file holds one key with its chain (key store) or certificates (trust store)
//! under the file's stem (`tls/localhost.pem` -> `localhost`), and a PEM store
//! may be a directory, whose `*.pem` files are its entries. Errors name the
//! vault, the file and the alias, never the password.
//!
//! The vault reads its files once, when built. It reports them
//! ([`Vault::files`]) so that the host can watch them and build the
//! configuration again when one changes: a renewed certificate then serves
//! new handshakes without a restart.
//!
//! With `revocation: crl` (Zilla's option), client certificates verified
//! against the vault's trust are checked for revocation; `crl` (ours) names
//! local CRL files, which the vault keeps current on its own ([`crl`]'s
//! docs say how and why): the tls binding asks for them at every handshake
//! through [`Vault::revocation`].

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use p12_keystore::{KeyStore, KeyStoreEntry, Pkcs12ImportPolicy};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use zilla_engine::{
    register_vault, BuildError, CrlSet, Events, KeyEntry, PluginContext, RevocationLists, Vault,
    VaultError, VaultFactory,
};

pub mod crl;
mod schema;

use crl::CrlStore;
pub use crl::{CrlOptions, CrlType};

/// `options` of a filesystem vault.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemOptions {
    /// The store of private keys and their certificate chains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<StoreOptions>,
    /// The store of trusted (CA) certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<StoreOptions>,
    /// The store of signing keys (CAs that issue certificates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signers: Option<StoreOptions>,
    /// Whether client certificates are checked for revocation: `crl`, or
    /// `none` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<Revocation>,
    /// Local CRL files for `revocation: crl` (beyond Zilla). Not read with
    /// `revocation: none`, so that turning revocation off is a one-line
    /// change when a stale list locks devices out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl: Option<CrlOptions>,
}

/// `options.revocation` of a filesystem vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Revocation {
    /// Check the end-entity certificate against its issuer's CRL: from the
    /// `crl` store, or else fetched from its `http://` distribution point.
    Crl,
    /// No revocation checks.
    None,
}

/// One store file.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreOptions {
    /// The file, relative to `zilla.yaml`.
    pub store: String,
    /// `pkcs12` (default), `pem`, or `jks` (not supported).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub store_type: Option<StoreType>,
    /// The store password (PKCS#12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("store", &self.store)
            .field("store_type", &self.store_type)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The format of a store file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreType {
    /// PKCS#12 (`.p12`, `.pfx`).
    Pkcs12,
    /// PEM certificates and keys.
    Pem,
    /// Java KeyStore; recognised, refused with a clear message.
    Jks,
}

/// What one store file holds, by alias.
#[derive(Debug, Default)]
struct Store {
    path: PathBuf,
    keys: BTreeMap<String, KeyEntry>,
    certificates: BTreeMap<String, Vec<CertificateDer<'static>>>,
}

impl Store {
    fn load(vault: &str, role: &str, options: &StoreOptions, base: &Path) -> Result<Self, String> {
        let path = base.join(&options.store);
        let shown = path.display();
        let store_type = options.store_type.unwrap_or(StoreType::Pkcs12);
        if store_type == StoreType::Pem && path.is_dir() {
            return Self::pem_directory(vault, role, &path);
        }
        let data = std::fs::read(&path)
            .map_err(|e| format!("vault {vault}: cannot read {role} store {shown}: {e}"))?;
        match store_type {
            StoreType::Pkcs12 => Self::pkcs12(vault, role, &path, &data, options),
            StoreType::Pem => Self::pem(vault, role, &path, &data),
            StoreType::Jks => Err(format!(
                "vault {vault}: {role} store {shown} is a JKS store, which is not supported; convert it with `keytool -importkeystore -deststoretype pkcs12`"
            )),
        }
    }

    fn pem_directory(vault: &str, role: &str, dir: &Path) -> Result<Self, String> {
        let shown = dir.display();
        let entries = std::fs::read_dir(dir)
            .map_err(|e| format!("vault {vault}: cannot read {role} store {shown}: {e}"))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "pem"))
            .collect();
        files.sort();
        let mut store = Store {
            path: dir.to_path_buf(),
            ..Store::default()
        };
        for file in files {
            let data = std::fs::read(&file).map_err(|e| {
                format!(
                    "vault {vault}: cannot read {role} store {}: {e}",
                    file.display()
                )
            })?;
            let one = Self::pem(vault, role, &file, &data)?;
            store.keys.extend(one.keys);
            store.certificates.extend(one.certificates);
        }
        if store.certificates.is_empty() {
            return Err(format!(
                "vault {vault}: {role} store {shown} holds no `*.pem` file"
            ));
        }
        Ok(store)
    }

    fn pkcs12(
        vault: &str,
        role: &str,
        path: &Path,
        data: &[u8],
        options: &StoreOptions,
    ) -> Result<Self, String> {
        let shown = path.display();
        let password = options.password.as_deref().unwrap_or("");
        let keystore =
            KeyStore::from_pkcs12(data, password, Pkcs12ImportPolicy::Relaxed).map_err(|e| {
                let why = match e {
                    p12_keystore::error::Error::MacError(_) => {
                        "wrong password (MAC check failed)".to_owned()
                    }
                    other => format!("not a readable PKCS#12 store ({other})"),
                };
                format!("vault {vault}: cannot open {role} store {shown}: {why}")
            })?;
        let mut store = Store {
            path: path.to_path_buf(),
            ..Store::default()
        };
        for (alias, entry) in keystore.entries() {
            match entry {
                KeyStoreEntry::PrivateKeyChain(chain) => {
                    let certs: Vec<_> = chain
                        .certs()
                        .iter()
                        .map(|c| CertificateDer::from(c.as_der().to_vec()))
                        .collect();
                    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                        chain.key().as_der().to_vec(),
                    ));
                    store.certificates.insert(alias.to_owned(), certs.clone());
                    store
                        .keys
                        .insert(alias.to_owned(), KeyEntry { chain: certs, key });
                }
                KeyStoreEntry::Certificate(cert) => {
                    store.certificates.insert(
                        alias.to_owned(),
                        vec![CertificateDer::from(cert.as_der().to_vec())],
                    );
                }
                _ => {}
            }
        }
        Ok(store)
    }

    fn pem(vault: &str, role: &str, path: &Path, data: &[u8]) -> Result<Self, String> {
        let shown = path.display();
        let alias = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(data)
            .collect::<Result<_, _>>()
            .map_err(|e| {
                format!("vault {vault}: {role} store {shown}: bad PEM certificate: {e}")
            })?;
        let key = match PrivateKeyDer::from_pem_slice(data) {
            Ok(key) => Some(key),
            Err(rustls_pki_types::pem::Error::NoItemsFound) => None,
            Err(e) => {
                return Err(format!(
                    "vault {vault}: {role} store {shown}: bad PEM key: {e}"
                ))
            }
        };
        if certs.is_empty() {
            return Err(format!(
                "vault {vault}: {role} store {shown} holds no PEM certificate"
            ));
        }
        let mut store = Store {
            path: path.to_path_buf(),
            ..Store::default()
        };
        if let Some(key) = key {
            store.keys.insert(
                alias.clone(),
                KeyEntry {
                    chain: certs.clone(),
                    key,
                },
            );
        }
        store.certificates.insert(alias, certs);
        Ok(store)
    }

    fn aliases(&self) -> String {
        let aliases: Vec<_> = self.certificates.keys().map(|a| format!("`{a}`")).collect();
        if aliases.is_empty() {
            "none".into()
        } else {
            aliases.join(", ")
        }
    }
}

/// What a vault with `revocation: crl` provides.
#[derive(Debug)]
enum Crls {
    /// The `crl` store.
    Store(Arc<CrlStore>),
    /// No `crl` store: lists come from distribution points only.
    Fetched,
}

/// The lists of a vault without a `crl` store: none; the verifier fetches
/// them from the certificates' distribution points.
#[derive(Debug, Default)]
struct NoStore(Arc<CrlSet>);

impl RevocationLists for NoStore {
    fn current(&self) -> Arc<CrlSet> {
        self.0.clone()
    }
}

/// A loaded filesystem vault.
#[derive(Debug)]
pub struct FilesystemVault {
    name: String,
    keys: Option<Store>,
    trust: Option<Store>,
    signers: Option<Store>,
    crls: Option<Crls>,
}

impl FilesystemVault {
    /// Loads the stores `options` names, relative to `base`; an error is
    /// the option it concerns (`keys`, `trust`, `signers`, `crl`) and why.
    /// Events about the `crl` store go to every engine's exporters; the
    /// engine builds the vault with [`load_with_events`](Self::load_with_events).
    pub fn load(
        name: &str,
        options: &FilesystemOptions,
        base: &Path,
    ) -> Result<Self, Vec<(&'static str, String)>> {
        Self::load_with_events(name, options, base, Events::new("", name))
    }

    /// [`load`](Self::load), with the vault's events going to `events`.
    pub fn load_with_events(
        name: &str,
        options: &FilesystemOptions,
        base: &Path,
        events: Events,
    ) -> Result<Self, Vec<(&'static str, String)>> {
        let mut errors = Vec::new();
        let mut load = |role: &'static str, options: &Option<StoreOptions>| {
            options
                .as_ref()
                .and_then(|o| match Store::load(name, role, o, base) {
                    Ok(store) => Some(store),
                    Err(e) => {
                        errors.push((role, e));
                        None
                    }
                })
        };
        let keys = load("keys", &options.keys);
        let trust = load("trust", &options.trust);
        let signers = load("signers", &options.signers);
        let crls = match (options.revocation, &options.crl) {
            (None | Some(Revocation::None), _) => None,
            (Some(Revocation::Crl), None) => Some(Crls::Fetched),
            (Some(Revocation::Crl), Some(crl)) => match CrlStore::open(name, crl, base, events) {
                Ok(store) => Some(Crls::Store(Arc::new(store))),
                Err(e) => {
                    errors.push(("crl", e));
                    None
                }
            },
        };
        let vault = Self {
            name: name.to_owned(),
            keys,
            trust,
            signers,
            crls,
        };
        if errors.is_empty() {
            Ok(vault)
        } else {
            Err(errors)
        }
    }

    fn missing(&self, role: &str, store: Option<&Store>, alias: &str) -> VaultError {
        VaultError(match store {
            None => format!(
                "vault {} has no `{role}` store, so it cannot provide `{alias}`",
                self.name
            ),
            Some(store) => format!(
                "vault {}: {role} store {} has no entry `{alias}` (it has {})",
                self.name,
                store.path.display(),
                store.aliases()
            ),
        })
    }

    fn key_from(
        &self,
        role: &str,
        store: Option<&Store>,
        alias: &str,
    ) -> Result<KeyEntry, VaultError> {
        store
            .and_then(|s| s.keys.get(alias))
            .cloned()
            .ok_or_else(|| self.missing(role, store, alias))
    }
}

impl Vault for FilesystemVault {
    fn key(&self, alias: &str) -> Result<KeyEntry, VaultError> {
        self.key_from("keys", self.keys.as_ref(), alias)
    }

    fn trusted(&self, alias: &str) -> Result<CertificateDer<'static>, VaultError> {
        // A trust entry may also be read from the key store's chains (a CA
        // that came with a key), as Java keystores are often used both ways.
        let found = self
            .trust
            .as_ref()
            .and_then(|s| s.certificates.get(alias))
            .and_then(|certs| certs.first().cloned());
        found.ok_or_else(|| self.missing("trust", self.trust.as_ref(), alias))
    }

    fn trusted_all(&self) -> Vec<CertificateDer<'static>> {
        self.trust
            .iter()
            .flat_map(|s| s.certificates.values().flatten().cloned())
            .collect()
    }

    fn signer(&self, alias: &str) -> Result<KeyEntry, VaultError> {
        self.key_from("signers", self.signers.as_ref(), alias)
    }

    fn files(&self) -> Vec<PathBuf> {
        // Not the `crl` store: the vault follows it itself, at every
        // handshake, rather than through a reload (see [`crl`]).
        [&self.keys, &self.trust, &self.signers]
            .into_iter()
            .flatten()
            .map(|store| store.path.clone())
            .collect()
    }

    fn revocation(&self) -> Option<Arc<dyn RevocationLists>> {
        match self.crls.as_ref()? {
            Crls::Store(store) => Some(store.clone()),
            Crls::Fetched => Some(Arc::new(NoStore::default())),
        }
    }
}

fn build(cx: &mut PluginContext<'_>) -> Result<Arc<dyn Vault>, BuildError> {
    let options: FilesystemOptions = cx.options()?;
    let base = cx.base_dir().to_path_buf();
    let name = cx.name().to_owned();
    match FilesystemVault::load_with_events(&name, &options, &base, cx.events()) {
        Ok(vault) => Ok(Arc::new(vault)),
        Err(errors) => {
            let mut last = None;
            for (role, message) in errors {
                last = Some(cx.error(&format!("options.{role}.store"), message));
            }
            Err(last.expect("errors are not empty"))
        }
    }
}

register_vault!(VaultFactory {
    type_name: "filesystem",
    build,
});

#[cfg(test)]
mod tests;
