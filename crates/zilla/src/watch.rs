//! Watching `zilla.yaml` and the vaults' key and trust stores for changes.
//!
//! The files are polled (`-P zilla.engine.config.poll`, 1 s by default) and
//! compared by content, rather than watched with inotify (decision 0017):
//! Kubernetes updates a mounted ConfigMap or Secret by swapping a symlinked
//! directory, which silently ends inotify watches on the files; inotify
//! instances are a small per-user budget on a node shared by containers; some
//! volume types deliver no events at all; and the kubelet refreshes mounts
//! every minute or so, so sub-second notice gains nothing. Comparing content
//! (not modification times) also sees a file rewritten twice within one
//! timestamp tick.
//!
//! A change counts once the files read the same on two polls in a row, so a
//! file caught half-written is not loaded (and reported as broken) before
//! the writer has finished.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What each watched file held: a hash of its content, `None` when unreadable.
pub(crate) type Fingerprint = BTreeMap<PathBuf, Option<u64>>;

/// The watched files and what they held when last loaded.
#[derive(Debug)]
pub(crate) struct Watch {
    poll: Duration,
    loaded: Fingerprint,
    /// A change seen on the last poll, loaded once the next poll agrees.
    pending: Option<Fingerprint>,
}

impl Watch {
    /// Watches the files of `loaded`, as they were when loaded.
    pub(crate) fn new(loaded: Fingerprint, poll: Duration) -> Self {
        Self {
            poll,
            loaded,
            pending: None,
        }
    }

    /// The watched files.
    pub(crate) fn files(&self) -> Vec<PathBuf> {
        self.loaded.keys().cloned().collect()
    }

    /// Resolves once the files differ from what was loaded and have stayed
    /// so for one poll; returns the files that changed. Cancel-safe: dropped
    /// in a `select!`, it loses nothing.
    pub(crate) async fn changed(&mut self) -> Vec<PathBuf> {
        loop {
            tokio::time::sleep(self.poll).await;
            let now = fingerprint(self.files()).await;
            if now == self.loaded {
                self.pending = None;
            } else if self.pending.as_ref() == Some(&now) {
                self.pending = None;
                return now
                    .into_iter()
                    .filter(|(path, hash)| self.loaded.get(path) != Some(hash))
                    .map(|(path, _)| path)
                    .collect();
            } else {
                self.pending = Some(now);
            }
        }
    }

    /// Records what was loaded (or tried and refused, so the same content is
    /// not tried again): `before` as read before loading, with `files` not in
    /// it read now.
    pub(crate) async fn loaded(&mut self, mut before: Fingerprint, files: Vec<PathBuf>) {
        let new: Vec<PathBuf> = files
            .iter()
            .filter(|f| !before.contains_key(*f))
            .cloned()
            .collect();
        before.extend(fingerprint(new).await);
        before.retain(|path, _| files.contains(path));
        self.loaded = before;
        self.pending = None;
    }
}

/// Reads `files` (a directory: every file in it, by name) off the async
/// workers, since reading files blocks.
pub(crate) async fn fingerprint(files: Vec<PathBuf>) -> Fingerprint {
    tokio::task::spawn_blocking(move || {
        files
            .into_iter()
            .map(|path| {
                let hash = hash_path(&path);
                (path, hash)
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

fn hash_path(path: &Path) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .ok()?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        entries.sort();
        for entry in entries {
            entry.file_name().hash(&mut hasher);
            std::fs::read(&entry).ok()?.hash(&mut hasher);
        }
    } else {
        std::fs::read(path).ok()?.hash(&mut hasher);
    }
    Some(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_counts_once_it_holds_for_a_poll() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("zilla.yaml");
        std::fs::write(&config, "name: one\n").unwrap();
        let stores = dir.path().join("tls");
        std::fs::create_dir(&stores).unwrap();
        std::fs::write(stores.join("a.pem"), "A").unwrap();
        let files = vec![config.clone(), stores.clone()];
        let mut watch = Watch::new(fingerprint(files.clone()).await, Duration::from_millis(5));

        std::fs::write(stores.join("a.pem"), "B").unwrap();
        let changed = tokio::time::timeout(Duration::from_secs(10), watch.changed())
            .await
            .expect("a changed file in a watched directory is seen");
        assert_eq!(changed, vec![stores.clone()]);
        let before = fingerprint(files.clone()).await;
        watch.loaded(before, files.clone()).await;

        std::fs::write(&config, "name: two\n").unwrap();
        tokio::time::timeout(Duration::from_secs(10), watch.changed())
            .await
            .expect("a rewritten configuration is seen");
    }

    #[tokio::test]
    async fn loaded_keeps_only_the_files_still_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "a").unwrap();
        std::fs::write(&b, "b").unwrap();
        let mut watch = Watch::new(fingerprint(vec![a.clone()]).await, Duration::from_secs(1));
        let before = fingerprint(vec![a.clone()]).await;
        watch.loaded(before, vec![b.clone()]).await;
        assert_eq!(watch.files(), vec![b.clone()]);
        assert!(fingerprint(vec![dir.path().join("missing")])
            .await
            .values()
            .all(Option::is_none));
    }
}
