//! The pod's configuration volume as the kubelet writes it: the atomic
//! writer's projection (a timestamped directory behind the `..data`
//! symlink), and what the out-of-band Secret holds in these tests.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use zilla_testkit::clients::repo_root;

/// What the Secret `zilla-tls` holds in the tests (it is created out of band
/// in a cluster): the seed's keystore and its password.
const SECRET_FILES: &[(&str, &str)] =
    &[("localhost.p12", "examples/mqtt.proxy.jwt/tls/localhost.p12")];
const SECRET_LITERALS: &[(&str, &str)] = &[("keystore-password", "generated")];

static GENERATION: AtomicU32 = AtomicU32::new(0);

/// Writes `files` into `dir` as the kubelet's atomic writer updates a
/// ConfigMap, Secret or projected volume: the files go into a new
/// `..<timestamp>` directory, a `..data_tmp` symlink to it is renamed over
/// `..data` (the one atomic step), each top-level name is a symlink into
/// `..data`, and the previous timestamped directory is removed.
pub(crate) fn project(dir: &Path, files: &[(&str, Vec<u8>)]) {
    let generation = format!(
        "..2026_01_01_00_00_00.{}",
        GENERATION.fetch_add(1, Ordering::Relaxed)
    );
    let payload = dir.join(&generation);
    for (path, content) in files {
        let file = payload.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, content).unwrap();
    }
    let previous = std::fs::read_link(dir.join("..data")).ok();
    let staged = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&generation, &staged).unwrap();
    std::fs::rename(&staged, dir.join("..data")).unwrap();
    for (path, _) in files {
        let top = Path::new(path).components().next().unwrap().as_os_str();
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(top), &link).unwrap();
        }
    }
    if let Some(previous) = previous {
        std::fs::remove_dir_all(dir.join(previous)).unwrap();
    }
}

/// What a Secret key holds in these tests.
pub(crate) fn secret_value(key: &str) -> Vec<u8> {
    if let Some((_, file)) = SECRET_FILES.iter().find(|(k, _)| *k == key) {
        return std::fs::read(repo_root().join(file)).unwrap();
    }
    if let Some((_, literal)) = SECRET_LITERALS.iter().find(|(k, _)| *k == key) {
        return literal.as_bytes().to_vec();
    }
    panic!("the Deployment reads Secret key `{key}`, which these tests do not know; add it to SECRET_FILES or SECRET_LITERALS")
}
