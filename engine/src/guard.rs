//! Guards: authorize credentials into a session that routes can check roles on.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;

/// What a guard learned from valid credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardSession {
    /// Who the credentials belong to (for jwt, the `sub` claim by default).
    pub identity: Option<String>,
    /// Roles granted (for jwt, the `scope` claim by default).
    pub roles: Vec<String>,
    /// Named attributes taken from the credentials.
    pub attributes: BTreeMap<String, String>,
    /// When the credentials stop being valid.
    pub expires_at: Option<SystemTime>,
}

/// Why a guard refused credentials; each variant knows what the client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardRejection {
    /// Malformed, expired, not yet valid or unverifiable credentials.
    #[error("invalid credentials: {0}")]
    InvalidCredentials(String),
    /// The guard could not decide, e.g. its key source is unreachable.
    #[error("guard unavailable: {0}")]
    Unavailable(String),
}

/// A guard instance built from a `guards.<name>` entry.
#[async_trait]
pub trait Guard: Send + Sync + 'static {
    /// Checks `credentials` and returns the session they grant.
    async fn authorize(&self, credentials: &str) -> Result<GuardSession, GuardRejection>;

    /// Whether `session` holds every one of `roles`. A function of its
    /// arguments only: a binding may decide a route once per granted session
    /// and keep the answer until the session is granted again.
    fn verify(&self, session: &GuardSession, roles: &[String]) -> bool {
        roles.iter().all(|role| session.roles.contains(role))
    }

    /// Prepares the guard before traffic flows (e.g. fetching remote keys).
    async fn start(&self) -> Result<(), GuardRejection> {
        Ok(())
    }
}

/// The sessions granted to one stream, by guard name; consulted by `guarded` routes.
#[derive(Clone, Default)]
pub struct Authorizations {
    sessions: Vec<(Arc<str>, GuardSession)>,
}

impl Authorizations {
    /// No guard has authorized anything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records what guard `guard` granted.
    pub fn insert(&mut self, guard: impl Into<Arc<str>>, session: GuardSession) {
        let guard = guard.into();
        self.sessions.retain(|(name, _)| *name != guard);
        // Room for this entry only: a stream usually has one guard, and a
        // `Vec` grown by `push` starts with room for four (416 bytes, not
        // 104), held for as long as the stream (an mqtt session's router).
        self.sessions.reserve_exact(1);
        self.sessions.push((guard, session));
    }

    /// What guard `guard` granted, if it authorized this stream.
    pub fn get(&self, guard: &str) -> Option<&GuardSession> {
        self.sessions
            .iter()
            .find(|(name, _)| &**name == guard)
            .map(|(_, session)| session)
    }
}

impl fmt::Debug for Authorizations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.sessions.iter().map(|(name, s)| (name, &s.identity)))
            .finish()
    }
}
