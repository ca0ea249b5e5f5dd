//! The vault against the seed's Java-made keystore and generated PEM files.

use std::path::{Path, PathBuf};

use super::*;

fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mqtt.proxy.jwt")
}

fn p12(password: &str) -> FilesystemOptions {
    FilesystemOptions {
        keys: Some(StoreOptions {
            store: "tls/localhost.p12".into(),
            store_type: Some(StoreType::Pkcs12),
            password: Some(password.into()),
        }),
        ..FilesystemOptions::default()
    }
}

fn first_error(result: Result<FilesystemVault, Vec<(&'static str, String)>>) -> String {
    result.expect_err("loading must fail").remove(0).1
}

#[test]
fn loads_the_seed_keystore_with_legacy_encryption() {
    let vault = FilesystemVault::load("my_servers", &p12("generated"), &seed_dir()).unwrap();
    let key = vault.key("localhost").unwrap();
    assert_eq!(
        key.chain.len(),
        2,
        "the localhost certificate and the Test CA"
    );
}

#[test]
fn wrong_password_names_vault_and_file_but_not_the_password() {
    let error = first_error(FilesystemVault::load(
        "my_servers",
        &p12("s3cret-guess"),
        &seed_dir(),
    ));
    assert!(
        error.starts_with("vault my_servers: cannot open keys store "),
        "{error}"
    );
    assert!(
        error.contains("tls/localhost.p12: wrong password"),
        "{error}"
    );
    assert!(!error.contains("s3cret-guess"), "{error}");
}

#[test]
fn missing_file_and_missing_alias_are_explained() {
    let mut options = p12("generated");
    options.keys.as_mut().unwrap().store = "tls/nope.p12".into();
    let error = first_error(FilesystemVault::load("v", &options, &seed_dir()));
    assert!(
        error.contains("vault v: cannot read keys store") && error.contains("tls/nope.p12"),
        "{error}"
    );

    let vault = FilesystemVault::load("my_servers", &p12("generated"), &seed_dir()).unwrap();
    let error = vault.key("example.com").unwrap_err().to_string();
    assert!(error.contains("vault my_servers: keys store"), "{error}");
    assert!(
        error.contains("has no entry `example.com` (it has `localhost`)"),
        "{error}"
    );
    let error = vault.trusted("ca").unwrap_err().to_string();
    assert_eq!(
        error,
        "vault my_servers has no `trust` store, so it cannot provide `ca`"
    );
}

#[test]
fn pem_stores_use_the_file_stem_as_alias() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["broker.test".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(
        dir.path().join("broker.pem"),
        format!("{}{}", cert.pem(), key.serialize_pem()),
    )
    .unwrap();
    std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
    let options = FilesystemOptions {
        keys: Some(StoreOptions {
            store: "broker.pem".into(),
            store_type: Some(StoreType::Pem),
            password: None,
        }),
        trust: Some(StoreOptions {
            store: "ca.pem".into(),
            store_type: Some(StoreType::Pem),
            password: None,
        }),
        ..FilesystemOptions::default()
    };
    let vault = FilesystemVault::load("pem", &options, dir.path()).unwrap();
    assert_eq!(vault.key("broker").unwrap().chain.len(), 1);
    assert_eq!(vault.trusted("ca").unwrap().as_ref(), cert.der().as_ref());
    assert_eq!(vault.trusted_all().len(), 1);
    assert_eq!(
        vault.files(),
        vec![dir.path().join("broker.pem"), dir.path().join("ca.pem")],
        "the files a host watches for renewed certificates"
    );
}

#[test]
fn a_pkcs12_store_and_a_pem_directory_are_the_files_to_watch() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["ca.test".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::create_dir(dir.path().join("trusted")).unwrap();
    std::fs::write(dir.path().join("trusted/ca.pem"), cert.pem()).unwrap();
    let mut options = p12("generated");
    options.trust = Some(StoreOptions {
        store: dir.path().join("trusted").display().to_string(),
        store_type: Some(StoreType::Pem),
        password: None,
    });
    let vault = FilesystemVault::load("both", &options, &seed_dir()).unwrap();
    assert_eq!(
        vault.files(),
        vec![
            seed_dir().join("tls/localhost.p12"),
            dir.path().join("trusted")
        ]
    );
}

#[test]
fn jks_is_refused_clearly() {
    let options = FilesystemOptions {
        keys: Some(StoreOptions {
            store: "tls/localhost.p12".into(),
            store_type: Some(StoreType::Jks),
            password: Some("generated".into()),
        }),
        ..FilesystemOptions::default()
    };
    let error = first_error(FilesystemVault::load("v", &options, &seed_dir()));
    assert!(
        error.contains("is a JKS store, which is not supported"),
        "{error}"
    );
}

#[test]
fn options_round_trip_and_reject_unknown_fields() {
    let yaml = "keys:\n  store: tls/localhost.p12\n  type: pkcs12\n  password: generated\n";
    let options: FilesystemOptions = serde_yaml::from_str(yaml).unwrap();
    let again: FilesystemOptions =
        serde_yaml::from_str(&serde_yaml::to_string(&options).unwrap()).unwrap();
    assert_eq!(options, again);
    let error = serde_yaml::from_str::<FilesystemOptions>("keys:\n  stor: x\n").unwrap_err();
    assert!(
        error.to_string().contains("unknown field `stor`"),
        "{error}"
    );
    assert!(
        !format!("{options:?}").contains("generated"),
        "Debug never shows the password"
    );
}
