//! Generations of a configuration: the one that accepts connections, and
//! those a reload replaced, which serve their connections until they end.
//!
//! A reload builds the changed configuration as a new engine that takes over
//! the running one's listeners and unchanged stores ([`Handover`]), starts
//! it, and only then tells the old engine to stop accepting. A listener on an
//! address both use is one socket throughout, so no connection attempt is
//! refused; the old engine's connections carry on on the pipeline they
//! started on; a listener the new configuration dropped closes when the old
//! engine stops accepting. A configuration that does not build, or does not
//! start, is reported with every error and changes nothing.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::task::{JoinHandle, JoinSet};
use zilla_engine::{ConfigErrors, Engine, Handover, StartedBinding};

use crate::watch::{fingerprint, Watch};

/// Reloaded: the new configuration accepts connections.
pub(crate) const CONFIG_RELOADED: &str = "CONFIG_RELOADED";
/// Not reloaded: the running configuration stays.
pub(crate) const CONFIG_RELOAD_FAILED: &str = "CONFIG_RELOAD_FAILED";
/// The component named in reload events.
const COMPONENT: &str = "engine";

/// What a host was started with, to build the configuration again.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The configuration file.
    pub(crate) config: PathBuf,
    /// `-P name=value`, in order.
    pub(crate) properties: Vec<(String, String)>,
    /// `-e`: errors with their chain of causes.
    pub(crate) exception_traces: bool,
}

impl Settings {
    /// Builds the configuration file, off the async workers (a catalog may
    /// fetch schemas while building).
    pub(crate) async fn build(&self, handover: Handover) -> Result<Engine, ConfigErrors> {
        let (config, properties) = (self.config.clone(), self.properties.clone());
        tokio::task::spawn_blocking(move || {
            let mut builder = Engine::from_file(config).handover(handover);
            for (name, value) in properties {
                builder = builder.property(name, value);
            }
            builder.build()
        })
        .await
        .unwrap_or_else(|panicked| std::panic::resume_unwind(panicked.into_panic()))
    }

    /// A start failure as the host prints it.
    pub(crate) fn describe(&self, error: zilla_engine::EngineStartError) -> String {
        if self.exception_traces {
            format!("{:#}", anyhow::Error::new(error))
        } else {
            error.to_string()
        }
    }
}

/// The running engine and the engines it replaced.
pub(crate) struct Generations {
    current: Arc<Engine>,
    listening: BTreeSet<SocketAddr>,
    generation: u64,
    /// Replaced engines, each with the task that shuts it down once its
    /// last connection has ended.
    retired: Vec<(Arc<Engine>, JoinHandle<()>)>,
}

impl Generations {
    /// The first engine, started.
    pub(crate) fn new(engine: Engine, started: &[StartedBinding]) -> Self {
        Self {
            current: Arc::new(engine),
            listening: addresses(started),
            generation: 1,
            retired: Vec::new(),
        }
    }

    /// The running configuration's `name`.
    pub(crate) fn namespace(&self) -> &str {
        self.current.namespace()
    }

    /// The files the running configuration was built from.
    pub(crate) fn files(&self) -> Vec<PathBuf> {
        self.current.files().to_vec()
    }

    /// Builds and starts the configuration file again, because of `why`; on
    /// success the new engine takes over, else the running one stays and the
    /// errors are reported (stderr as at startup, and an event).
    pub(crate) async fn reload(
        &mut self,
        why: &str,
        settings: &Settings,
        watch: Option<&mut Watch>,
    ) {
        // Read before building, so that a change made while building is a
        // change still to load.
        let before = match &watch {
            Some(watch) => Some(fingerprint(watch.files()).await),
            None => None,
        };
        if let Err(failure) = self.try_reload(why, settings).await {
            eprintln!("zilla: {failure}");
            eprintln!(
                "zilla: {} not reloaded on {why}; the running configuration stays",
                self.namespace()
            );
            self.current.events(COMPONENT).warn(
                CONFIG_RELOAD_FAILED,
                format!(
                    "reload on {why} failed; the running configuration stays: {}",
                    failure.replace("\n  ", "; ")
                ),
            );
        }
        // Whatever was tried counts as loaded: a configuration that failed is
        // not tried again until it changes.
        if let (Some(watch), Some(before)) = (watch, before) {
            watch.loaded(before, self.files()).await;
        }
    }

    async fn try_reload(&mut self, why: &str, settings: &Settings) -> Result<(), String> {
        let engine = settings
            .build(self.current.handover())
            .await
            .map_err(|errors| errors.to_string())?;
        let started = engine
            .start()
            .await
            .map_err(|error| settings.describe(error))?;
        self.generation += 1;
        let listening = addresses(&started);
        let summary = summary(why, self.generation, &self.listening, &listening);
        {
            use std::io::Write as _;
            let mut stdout = std::io::stdout().lock();
            for binding in &started {
                let _ = writeln!(stdout, "started {binding}");
            }
            let _ = writeln!(stdout, "zilla {} {summary}", engine.namespace());
            let _ = stdout.flush();
        }
        engine.events(COMPONENT).info(CONFIG_RELOADED, &summary);

        let old = std::mem::replace(&mut self.current, Arc::new(engine));
        self.listening = listening;
        // Only now: until the new engine accepted, the old one did.
        old.stop_accepting();
        let finishing = old.clone();
        let shutdown = tokio::spawn(async move {
            finishing.connections_ended().await;
            finishing.shutdown().await;
        });
        self.retired.retain(|(_, task)| !task.is_finished());
        self.retired.push((old, shutdown));
        Ok(())
    }

    /// Drains every generation at once (listeners close, sessions are told);
    /// returns how many connections did not finish within the grace period.
    pub(crate) async fn shutdown(self) -> usize {
        let mut drains = JoinSet::new();
        let engines = std::iter::once(self.current).chain(
            self.retired
                .into_iter()
                .filter(|(_, task)| !task.is_finished())
                .map(|(engine, _)| engine),
        );
        for engine in engines {
            drains.spawn(async move { engine.shutdown().await.abandoned });
        }
        let mut abandoned = 0;
        while let Some(drained) = drains.join_next().await {
            abandoned += drained.unwrap_or(0);
        }
        abandoned
    }
}

fn addresses(started: &[StartedBinding]) -> BTreeSet<SocketAddr> {
    started
        .iter()
        .flat_map(|b| b.listening.iter().copied())
        .collect()
}

/// `reloaded on SIGHUP (generation 2); listeners kept: a; opened: b; closed: c`
fn summary(
    why: &str,
    generation: u64,
    before: &BTreeSet<SocketAddr>,
    after: &BTreeSet<SocketAddr>,
) -> String {
    let mut text = format!("reloaded on {why} (generation {generation})");
    for (label, set) in [
        (
            "listeners kept",
            after.intersection(before).collect::<Vec<_>>(),
        ),
        ("opened", after.difference(before).collect()),
        ("closed", before.difference(after).collect()),
    ] {
        if !set.is_empty() {
            let list: Vec<String> = set.iter().map(ToString::to_string).collect();
            let _ = write!(text, "; {label}: {}", list.join(", "));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_kept_opened_and_closed_listeners() {
        let set = |list: &[&str]| -> BTreeSet<SocketAddr> {
            list.iter().map(|a| a.parse().unwrap()).collect()
        };
        assert_eq!(
            summary(
                "SIGHUP",
                3,
                &set(&["127.0.0.1:1", "127.0.0.1:2"]),
                &set(&["127.0.0.1:1", "127.0.0.1:3"])
            ),
            "reloaded on SIGHUP (generation 3); listeners kept: 127.0.0.1:1; opened: 127.0.0.1:3; closed: 127.0.0.1:2"
        );
        assert_eq!(
            summary("SIGHUP", 2, &set(&[]), &set(&[])),
            "reloaded on SIGHUP (generation 2)"
        );
    }
}
