//! Vaults: key and trust material by alias, for TLS bindings.

use std::path::PathBuf;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

/// A private key and the certificate chain that goes with it.
#[derive(Debug)]
pub struct KeyEntry {
    /// The end-entity certificate first, then its issuers.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key of the end-entity certificate.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for KeyEntry {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// Why a vault could not provide what was asked; the message names the vault,
/// the store and the alias, and never a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct VaultError(pub String);

/// A vault instance built from a `vaults.<name>` entry.
pub trait Vault: Send + Sync + 'static {
    /// The key (with its chain) stored under `alias` in the key store.
    fn key(&self, alias: &str) -> Result<KeyEntry, VaultError>;

    /// The certificate stored under `alias` in the trust store.
    fn trusted(&self, alias: &str) -> Result<CertificateDer<'static>, VaultError>;

    /// Every certificate in the trust store.
    fn trusted_all(&self) -> Vec<CertificateDer<'static>> {
        Vec::new()
    }

    /// The signer (CA key) stored under `alias` in the signers store.
    fn signer(&self, alias: &str) -> Result<KeyEntry, VaultError> {
        Err(VaultError(format!("no signer store holds `{alias}`")))
    }

    /// The files (or directories) this vault read its stores from. A host
    /// watches them: when one changes (a renewed certificate), it builds the
    /// configuration again, so new handshakes use what the files now hold.
    fn files(&self) -> Vec<PathBuf> {
        Vec::new()
    }

    /// Whether certificates verified against this vault's trust are checked
    /// for revocation (`revocation: crl`), and the certificate revocation
    /// lists it holds for that; `None` (the default) when they are not.
    fn revocation(&self) -> Option<Arc<dyn RevocationLists>> {
        None
    }
}

/// The certificate revocation lists (CRLs) a vault keeps current.
pub trait RevocationLists: Send + Sync + 'static {
    /// The lists as they are now. A verifier asks for every certificate it
    /// checks, so this is cheap when nothing changed; a vault whose files
    /// changed reads them again here, so the next handshake after a CRL file
    /// is rewritten uses the new list (no reload needed).
    fn current(&self) -> Arc<CrlSet>;
}

/// One version of a vault's revocation lists.
#[derive(Debug, Clone, Default)]
pub struct CrlSet {
    /// Changes whenever the lists do, so a verifier rebuilds only then.
    pub version: u64,
    /// Each list with where it came from.
    pub lists: Vec<Crl>,
}

/// One certificate revocation list.
#[derive(Debug, Clone)]
pub struct Crl {
    /// The list, DER.
    pub der: CertificateRevocationListDer<'static>,
    /// Where it was read from (a file), for events and errors.
    pub source: String,
}
