//! The live sessions of every running engine, as `zilla sessions` lists
//! them and `zilla disconnect` ends them.
//!
//! A binding that keeps sessions registers a [`SessionSource`] once (weakly:
//! the registration ends with the binding's state) and answers for its
//! sessions when asked; the engine keeps no copy of them.

use std::sync::{Mutex, Weak};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// One live session, as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The binding serving it, e.g. `north_mqtt_server`.
    pub binding: String,
    /// The client identifier.
    pub client_id: String,
    /// Who the guard authorized, when the session was authorized.
    pub identity: Option<String>,
    /// The client's address.
    pub peer: Option<String>,
    /// `MQTT 3.1.1` or `MQTT 5.0`.
    pub protocol: String,
    /// The exits its upstream sessions go to.
    pub upstreams: Vec<String>,
    /// Client publishes (QoS 1/2) the brokers have not acknowledged yet.
    pub inflight_in: u32,
    /// Deliveries (QoS 1/2) the client has not acknowledged yet.
    pub inflight_out: u32,
    /// Seconds since the Unix epoch at which the session was admitted.
    pub since: u64,
}

/// A binding's live sessions.
pub trait SessionSource: Send + Sync + 'static {
    /// The binding's live sessions.
    fn sessions(&self) -> Vec<SessionInfo>;

    /// Ends the sessions with client id `client_id` as an administrative
    /// action; how many were told.
    fn disconnect(&self, client_id: &str) -> usize;
}

static SOURCES: Mutex<Vec<Weak<dyn SessionSource>>> = Mutex::new(Vec::new());

fn sources() -> Vec<std::sync::Arc<dyn SessionSource>> {
    let mut all = SOURCES.lock().unwrap_or_else(|p| p.into_inner());
    all.retain(|source| source.strong_count() > 0);
    all.iter().filter_map(Weak::upgrade).collect()
}

/// Makes `source`'s sessions visible to the admin socket for as long as it lives.
pub fn register_sessions(source: Weak<dyn SessionSource>) {
    let mut all = SOURCES.lock().unwrap_or_else(|p| p.into_inner());
    all.retain(|source| source.strong_count() > 0);
    all.push(source);
}

/// Every live session of every registered source, oldest first.
pub fn sessions() -> Vec<SessionInfo> {
    let mut all: Vec<SessionInfo> = sources().iter().flat_map(|s| s.sessions()).collect();
    all.sort_by(|a, b| (a.since, &a.client_id).cmp(&(b.since, &b.client_id)));
    all
}

/// Ends every session with client id `client_id`; how many were told.
pub fn disconnect(client_id: &str) -> usize {
    sources().iter().map(|s| s.disconnect(client_id)).sum()
}

/// Seconds since the Unix epoch of `at` (0 before it).
pub fn epoch_seconds(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
