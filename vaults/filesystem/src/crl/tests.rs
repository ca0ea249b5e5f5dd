//! The `revocation` and `crl` options: parsing, the store as a file or a
//! directory, PEM and DER, errors with paths, and a rewritten file read again.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::{FilesystemOptions, FilesystemVault, Revocation};
use zilla_engine::Vault;

/// A CA that signs CRLs (Ed25519, so that two lists revoking serials of the
/// same size have the same length).
fn ca(name: &str) -> Issuer<'static, KeyPair> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Issuer::new(params, key)
}

/// A CRL from `ca` revoking `serials`, valid for a day.
fn crl(ca: &Issuer<'static, KeyPair>, serials: &[u64]) -> rcgen::CertificateRevocationList {
    let now = OffsetDateTime::now_utc();
    CertificateRevocationListParams {
        this_update: now - Duration::minutes(1),
        next_update: now + Duration::days(1),
        crl_number: SerialNumber::from(1),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|serial| RevokedCertParams {
                serial_number: SerialNumber::from(*serial),
                revocation_time: now - Duration::minutes(1),
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(ca)
    .unwrap()
}

fn options(yaml: &str) -> FilesystemOptions {
    serde_yaml::from_str(yaml).unwrap()
}

fn error(result: Result<FilesystemVault, Vec<(&'static str, String)>>) -> (&'static str, String) {
    result.expect_err("loading must fail").remove(0)
}

fn sources(vault: &FilesystemVault) -> Vec<String> {
    let lists = vault.revocation().expect("revocation: crl").current();
    lists.lists.iter().map(|l| l.source.clone()).collect()
}

#[test]
fn options_parse_and_round_trip() {
    let parsed = options("revocation: crl\ncrl:\n  store: crls\n  type: der\n");
    assert_eq!(parsed.revocation, Some(Revocation::Crl));
    let crl = parsed.crl.as_ref().unwrap();
    assert_eq!(
        (crl.store.as_str(), crl.store_type),
        ("crls", Some(super::CrlType::Der))
    );
    let again: FilesystemOptions =
        serde_yaml::from_str(&serde_yaml::to_string(&parsed).unwrap()).unwrap();
    assert_eq!(parsed, again);
    assert_eq!(
        options("revocation: none\n").revocation,
        Some(Revocation::None)
    );

    let bad = serde_yaml::from_str::<FilesystemOptions>("revocation: ocsp\n").unwrap_err();
    assert!(bad.to_string().contains("unknown variant `ocsp`"), "{bad}");
    let bad =
        serde_yaml::from_str::<FilesystemOptions>("crl:\n  store: a\n  type: p12\n").unwrap_err();
    assert!(bad.to_string().contains("unknown variant `p12`"), "{bad}");
    let bad = serde_yaml::from_str::<FilesystemOptions>("crl:\n  stor: a\n").unwrap_err();
    assert!(bad.to_string().contains("unknown field `stor`"), "{bad}");
}

#[test]
fn revocation_is_off_by_default_and_none_does_not_read_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let vault = FilesystemVault::load("v", &options("{}"), dir.path()).unwrap();
    assert!(vault.revocation().is_none());
    let off = options("revocation: none\ncrl: { store: nowhere.pem }\n");
    let vault = FilesystemVault::load("v", &off, dir.path()).unwrap();
    assert!(vault.revocation().is_none(), "`none` turns checks off");
}

#[test]
fn revocation_without_a_store_has_no_local_lists() {
    let dir = tempfile::tempdir().unwrap();
    let vault = FilesystemVault::load("v", &options("revocation: crl\n"), dir.path()).unwrap();
    let lists = vault.revocation().unwrap().current();
    assert!(
        lists.lists.is_empty(),
        "lists then come from distribution points"
    );
    assert!(vault.files().is_empty());
}

#[test]
fn a_pem_file_may_hold_several_lists_and_is_relative_to_zilla_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (ca("One CA"), ca("Two CA"));
    std::fs::create_dir(dir.path().join("pki")).unwrap();
    let pem = format!(
        "{}{}",
        crl(&one, &[1]).pem().unwrap(),
        crl(&two, &[]).pem().unwrap()
    );
    std::fs::write(dir.path().join("pki/ca.crl.pem"), pem).unwrap();
    let vault = FilesystemVault::load(
        "v",
        &options("revocation: crl\ncrl: { store: pki/ca.crl.pem }\n"),
        dir.path(),
    )
    .unwrap();
    let file = dir.path().join("pki/ca.crl.pem").display().to_string();
    assert_eq!(
        sources(&vault),
        vec![format!("{file} (list 1)"), format!("{file} (list 2)")]
    );
    assert!(vault.files().is_empty(), "the vault follows CRLs itself");
}

#[test]
fn a_directory_store_takes_its_crl_files_of_the_type() {
    let dir = tempfile::tempdir().unwrap();
    let crls = dir.path().join("crls");
    std::fs::create_dir(&crls).unwrap();
    let (one, two) = (ca("One CA"), ca("Two CA"));
    std::fs::write(crls.join("one.crl"), crl(&one, &[1]).der()).unwrap();
    std::fs::write(crls.join("two.der"), crl(&two, &[2]).der()).unwrap();
    // Neither a hidden entry (Kubernetes' `..data`) nor another extension.
    std::fs::write(crls.join(".old.crl"), b"junk").unwrap();
    std::fs::write(crls.join("README.txt"), b"junk").unwrap();
    std::fs::create_dir(crls.join("..data")).unwrap();
    let vault = FilesystemVault::load(
        "v",
        &options("revocation: crl\ncrl: { store: crls, type: der }\n"),
        dir.path(),
    )
    .unwrap();
    assert_eq!(
        sources(&vault),
        vec![
            crls.join("one.crl").display().to_string(),
            crls.join("two.der").display().to_string()
        ]
    );

    // PEM directories take `*.crl` and `*.pem`.
    let pems = dir.path().join("pems");
    std::fs::create_dir(&pems).unwrap();
    std::fs::write(pems.join("one.pem"), crl(&one, &[]).pem().unwrap()).unwrap();
    let vault = FilesystemVault::load(
        "v",
        &options("revocation: crl\ncrl: { store: pems, type: pem }\n"),
        dir.path(),
    )
    .unwrap();
    assert_eq!(sources(&vault).len(), 1);
}

#[test]
fn errors_name_the_vault_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let one = ca("One CA");
    let load = |yaml: &str| error(FilesystemVault::load("edge", &options(yaml), base));

    let (role, message) = load("revocation: crl\ncrl: { store: missing.crl }\n");
    assert_eq!(role, "crl");
    assert!(
        message.starts_with("vault edge: cannot read crl store ")
            && message.contains("missing.crl"),
        "{message}"
    );

    std::fs::write(base.join("pem.crl"), crl(&one, &[]).pem().unwrap()).unwrap();
    let (_, message) = load("revocation: crl\ncrl: { store: pem.crl, type: der }\n");
    assert!(
        message.ends_with("pem.crl is PEM, not DER; use `type: pem`"),
        "{message}"
    );

    std::fs::write(base.join("der.crl"), crl(&one, &[]).der()).unwrap();
    let (_, message) = load("revocation: crl\ncrl: { store: der.crl }\n");
    assert!(
        message.ends_with("der.crl holds no `X509 CRL` PEM block (a DER file? use `type: der`)"),
        "{message}"
    );

    std::fs::write(base.join("junk.crl"), b"\x30\x03\x02\x01\x01").unwrap();
    let (_, message) = load("revocation: crl\ncrl: { store: junk.crl, type: der }\n");
    assert!(
        message.starts_with("vault edge: crl store ")
            && message.contains("junk.crl: not a usable CRL"),
        "{message}"
    );

    std::fs::create_dir(base.join("empty")).unwrap();
    let (_, message) = load("revocation: crl\ncrl: { store: empty, type: der }\n");
    assert!(
        message.ends_with("holds no `*.crl` or `*.der` file"),
        "{message}"
    );
}

#[test]
fn a_rewritten_file_is_read_again_and_a_broken_one_keeps_the_lists() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ca.crl");
    let one = ca("One CA");
    std::fs::write(&file, crl(&one, &[1]).der()).unwrap();
    let vault = FilesystemVault::load(
        "v",
        &options("revocation: crl\ncrl: { store: ca.crl, type: der }\n"),
        dir.path(),
    )
    .unwrap();
    let lists = vault.revocation().unwrap();
    let first = lists.current();
    assert_eq!(first.version, 1);
    assert!(
        std::sync::Arc::ptr_eq(&first, &lists.current()),
        "unchanged files are not read again"
    );

    // Same size (Ed25519, a one-byte serial), rewritten at once: within the
    // same timestamp tick on a coarse clock, caught by the content check.
    let second = crl(&one, &[2]);
    assert_eq!(second.der().len(), crl(&one, &[1]).der().len());
    std::fs::write(&file, second.der()).unwrap();
    let now = lists.current();
    assert_eq!(now.version, 2);
    assert_eq!(now.lists[0].der.as_ref(), second.der().as_ref());

    // Half written: the lists read before stay, until it is whole.
    std::fs::write(&file, &second.der()[..20]).unwrap();
    assert_eq!(lists.current().version, 2);
    assert_eq!(lists.current().lists[0].der.as_ref(), second.der().as_ref());
    let third = crl(&one, &[1, 2]);
    std::fs::write(&file, third.der()).unwrap();
    let now = lists.current();
    assert_eq!(now.version, 3);
    assert_eq!(now.lists[0].der.as_ref(), third.der().as_ref());
}

#[test]
fn a_file_added_to_a_directory_store_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (ca("One CA"), ca("Two CA"));
    std::fs::write(dir.path().join("one.crl"), crl(&one, &[]).pem().unwrap()).unwrap();
    let vault = FilesystemVault::load(
        "v",
        &options("revocation: crl\ncrl: { store: . }\n"),
        dir.path(),
    )
    .unwrap();
    let lists = vault.revocation().unwrap();
    assert_eq!(lists.current().lists.len(), 1);
    // Renamed into place, as a careful writer does.
    let temporary = dir.path().join(".two.crl.tmp");
    std::fs::write(&temporary, crl(&two, &[]).pem().unwrap()).unwrap();
    std::fs::rename(&temporary, dir.path().join("two.crl")).unwrap();
    assert_eq!(lists.current().lists.len(), 2);
    std::fs::remove_file(dir.path().join("one.crl")).unwrap();
    assert_eq!(lists.current().lists.len(), 1);
    assert!(Path::new(&lists.current().lists[0].source).ends_with("two.crl"));
}

/// Lists made by `openssl ca -gencrl`, as operators make them: version 2
/// (with a `crlnumber` file) loads; version 1 is refused with the fix.
#[test]
fn lists_made_by_openssl_load_and_version_1_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
    };
    let made = run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=OpenSSL CA",
        "-days",
        "30",
    ]);
    if !made.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: no usable `openssl` ({made:?})");
        return;
    }
    let config = "[ca]\ndefault_ca = ca\n[ca]\ndatabase = index.txt\ncertificate = ca.pem\n\
                  private_key = ca.key\ndefault_md = sha256\ndefault_crl_days = 7\n";
    std::fs::write(dir.path().join("index.txt"), "").unwrap();
    std::fs::write(dir.path().join("v1.cnf"), config).unwrap();
    std::fs::write(
        dir.path().join("v2.cnf"),
        format!("{config}crlnumber = crlnumber\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("crlnumber"), "01\n").unwrap();
    for version in ["v1", "v2"] {
        let cnf = format!("{version}.cnf");
        let out = format!("{version}.crl");
        let made = run(&["ca", "-config", &cnf, "-gencrl", "-out", &out]).unwrap();
        assert!(made.status.success(), "{made:?}");
    }

    let vault = FilesystemVault::load(
        "v",
        &options("revocation: crl\ncrl: { store: v2.crl }\n"),
        dir.path(),
    )
    .unwrap();
    assert_eq!(sources(&vault).len(), 1);
    let (_, message) = error(FilesystemVault::load(
        "v",
        &options("revocation: crl\ncrl: { store: v1.crl }\n"),
        dir.path(),
    ));
    assert!(
        message.contains("v1.crl: not a usable CRL: BadDer (a version 1 list;"),
        "{message}"
    );
}
