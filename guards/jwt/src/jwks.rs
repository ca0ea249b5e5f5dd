//! Where the guard's keys come from: inline, or a JWKS URL fetched at startup,
//! refreshed when a token names an unknown `kid` (rate limited) and
//! periodically.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;
use zilla_engine::telemetry::text;
use zilla_engine::{Events, GuardRejection, Shutdown};

use crate::jwk::{Jwk, Key};

/// Seconds between refreshes triggered by unknown `kid`s (default 10).
pub const PROPERTY_REFRESH_MIN: &str = "zilla.guard.jwt.refresh.min";
/// Seconds between periodic refreshes (default 300).
pub const PROPERTY_REFRESH_PERIOD: &str = "zilla.guard.jwt.refresh.period";
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) enum KeySource {
    Inline(Vec<Key>),
    Remote(Arc<Remote>),
}

pub(crate) struct Remote {
    url: String,
    keys: RwLock<Arc<Vec<Key>>>,
    /// Bumped when a refresh brings a different JWKS document, so tokens
    /// verified with the previous keys are checked again.
    generation: AtomicU64,
    /// The last JWKS document fetched, to tell a change from a refresh.
    document: Mutex<String>,
    last_fetch: Mutex<Option<Instant>>,
    pub(crate) refresh_min: Duration,
    pub(crate) refresh_period: Duration,
    events: Events,
    shutdown: Mutex<Option<Shutdown>>,
}

#[derive(Deserialize)]
struct JwksDocument {
    keys: Vec<serde_json::Value>,
}

impl KeySource {
    pub(crate) fn inline(keys: Vec<Key>) -> Self {
        KeySource::Inline(keys)
    }

    pub(crate) fn remote(url: String, events: Events) -> Self {
        KeySource::Remote(Arc::new(Remote {
            url,
            keys: RwLock::new(Arc::new(Vec::new())),
            generation: AtomicU64::new(0),
            document: Mutex::new(String::new()),
            last_fetch: Mutex::new(None),
            refresh_min: Duration::from_secs(10),
            refresh_period: Duration::from_secs(300),
            events,
            shutdown: Mutex::new(None),
        }))
    }

    /// Sets refresh intervals and the shutdown that ends periodic refresh.
    pub(crate) fn configure(
        &mut self,
        refresh_min: Option<Duration>,
        refresh_period: Option<Duration>,
        shutdown: Shutdown,
    ) {
        if let KeySource::Remote(remote) = self {
            if let Some(remote) = Arc::get_mut(remote) {
                if let Some(min) = refresh_min {
                    remote.refresh_min = min;
                }
                if let Some(period) = refresh_period {
                    remote.refresh_period = period;
                }
                *remote.shutdown.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(shutdown);
            }
        }
    }

    /// Fetches remote keys (bounded by a timeout) and starts periodic refresh.
    pub(crate) async fn start(&self) -> Result<(), GuardRejection> {
        let KeySource::Remote(remote) = self else {
            return Ok(());
        };
        remote
            .refresh()
            .await
            .map_err(GuardRejection::Unavailable)?;
        let shutdown = remote
            .shutdown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(shutdown) = shutdown {
            let periodic = remote.clone();
            let watcher = shutdown.clone();
            shutdown.spawn(async move {
                loop {
                    tokio::select! {
                        _ = watcher.draining() => return,
                        _ = tokio::time::sleep(periodic.refresh_period) => {}
                    }
                    if let Err(why) = periodic.refresh().await {
                        periodic.events.warn(
                            "JWT_KEYS_REFRESH_FAILED",
                            format!("{}: {why}; keeping the cached keys", periodic.url),
                        );
                    }
                }
            });
        }
        Ok(())
    }

    /// Which key set is in use: changes whenever the keys do (inline keys
    /// never change).
    pub(crate) fn generation(&self) -> u64 {
        match self {
            KeySource::Inline(_) => 0,
            KeySource::Remote(remote) => remote.generation.load(Ordering::Acquire),
        }
    }

    /// The key for `kid` (or the only key, for a token without `kid`).
    pub(crate) async fn find(&self, kid: Option<&str>) -> Result<Key, GuardRejection> {
        match self {
            KeySource::Inline(keys) => select(keys, kid),
            KeySource::Remote(remote) => {
                let cached = remote
                    .keys
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                match select(&cached, kid) {
                    Ok(key) => Ok(key),
                    Err(unknown) => {
                        if !remote.may_refresh() {
                            return Err(unknown);
                        }
                        if let Err(why) = remote.refresh().await {
                            remote
                                .events
                                .warn("JWT_KEYS_REFRESH_FAILED", format!("{}: {why}", remote.url));
                            return Err(unknown);
                        }
                        let fresh = remote
                            .keys
                            .read()
                            .unwrap_or_else(|p| p.into_inner())
                            .clone();
                        select(&fresh, kid)
                    }
                }
            }
        }
    }
}

fn select(keys: &[Key], kid: Option<&str>) -> Result<Key, GuardRejection> {
    let found = match kid {
        Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
        None if keys.len() == 1 => keys.first(),
        None => None,
    };
    found.cloned().ok_or_else(|| {
        GuardRejection::InvalidCredentials(match kid {
            // The token names it: escaped, it cannot forge an event line.
            Some(kid) => format!("unknown key id {}", text(kid)),
            None => "token has no `kid` and the guard has several keys".into(),
        })
    })
}

impl Remote {
    fn may_refresh(&self) -> bool {
        let last = *self.last_fetch.lock().unwrap_or_else(|p| p.into_inner());
        last.is_none_or(|at| at.elapsed() >= self.refresh_min)
    }

    async fn refresh(&self) -> Result<(), String> {
        *self.last_fetch.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let url = self.url.clone();
        let body = tokio::task::spawn_blocking(move || {
            let agent = ureq::Agent::new_with_config(
                ureq::config::Config::builder()
                    .timeout_global(Some(FETCH_TIMEOUT))
                    .build(),
            );
            agent
                .get(&url)
                .call()
                .map_err(|e| format!("cannot fetch: {e}"))?
                .body_mut()
                .read_to_string()
                .map_err(|e| format!("cannot read: {e}"))
        })
        .await
        .map_err(|e| format!("fetch task failed: {e}"))??;
        let document: JwksDocument =
            serde_json::from_str(&body).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = Vec::new();
        for value in document.keys {
            let usable = serde_json::from_value::<Jwk>(value)
                .map_err(|e| e.to_string())
                .and_then(|jwk| jwk.decoding_key());
            match usable {
                Ok(key) => keys.push(key),
                Err(why) => self
                    .events
                    .warn("JWT_KEY_IGNORED", format!("{}: {why}", self.url)),
            }
        }
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        let mut document = self.document.lock().unwrap_or_else(|p| p.into_inner());
        if *document != body {
            *document = body;
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }
}
