//! Tokens the guard verified, so a reconnect storm (a broker restart, a
//! load balancer failing over) that presents the same tokens again costs a
//! SHA-256 and a lookup per CONNECT instead of a signature check and a JSON
//! parse.
//!
//! Entries are keyed by the token's SHA-256, so the cache holds no token, and
//! a different token cannot be taken for a cached one (that would need a
//! SHA-256 collision). An entry is used only while the token is still valid
//! (its `exp`, with the guard's leeway) and only with the key set it was
//! verified against: a JWKS refresh that changes the keys bumps the
//! generation, and entries of older generations are misses. Only successes
//! are cached; a refused token is checked again each time. The cache is
//! bounded: when full, expired and stale entries go first, then an eighth of
//! the rest.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use ring::digest::{digest, SHA256};
use zilla_engine::GuardSession;

/// Engine property: how many verified tokens a jwt guard remembers (0: none).
pub const PROPERTY_CACHE_SIZE: &str = "zilla.guard.jwt.cache.size";
/// Enough for a reconnect storm of tens of thousands of devices; an entry is
/// a few hundred bytes (the session's identity, roles and attributes).
pub(crate) const DEFAULT_CACHE_SIZE: usize = 65_536;

type Digest = [u8; 32];

struct Entry {
    session: GuardSession,
    /// The key set's generation it was verified with.
    generation: u64,
    /// When it stops being valid (`exp` plus leeway); `None`: no `exp`.
    valid_until: Option<SystemTime>,
}

impl Entry {
    fn usable(&self, generation: u64, now: SystemTime) -> bool {
        self.generation == generation && self.valid_until.is_none_or(|until| now < until)
    }
}

/// Verified tokens by their SHA-256.
pub(crate) struct VerifiedTokens {
    entries: Mutex<HashMap<Digest, Entry>>,
    capacity: usize,
}

impl VerifiedTokens {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    fn key(token: &str) -> Digest {
        let mut key = [0u8; 32];
        key.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
        key
    }

    /// The session `token` was granted, if it was verified with the key set
    /// of `generation` and is still valid at `now`.
    pub(crate) fn get(
        &self,
        token: &str,
        generation: u64,
        now: SystemTime,
    ) -> Option<GuardSession> {
        if self.capacity == 0 {
            return None;
        }
        let key = Self::key(token);
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(&key)
            .filter(|entry| entry.usable(generation, now))
            .map(|entry| entry.session.clone())
    }

    /// Remembers that `token` was verified, granting `session`.
    pub(crate) fn insert(
        &self,
        token: &str,
        generation: u64,
        session: &GuardSession,
        valid_until: Option<SystemTime>,
        now: SystemTime,
    ) {
        if self.capacity == 0 {
            return;
        }
        let key = Self::key(token);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, entry| entry.usable(generation, now));
            if entries.len() >= self.capacity {
                // Still full of valid tokens: forget an arbitrary eighth
                // (hash order), rather than all of them.
                let forget = (self.capacity / 8).max(1);
                let victims: Vec<Digest> = entries.keys().take(forget).copied().collect();
                for victim in victims {
                    entries.remove(&victim);
                }
            }
        }
        entries.insert(
            key,
            Entry {
                session: session.clone(),
                generation,
                valid_until,
            },
        );
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn session(identity: &str) -> GuardSession {
        GuardSession {
            identity: Some(identity.into()),
            ..GuardSession::default()
        }
    }

    #[test]
    fn a_verified_token_is_found_until_it_expires() {
        let cache = VerifiedTokens::new(4);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let until = now + Duration::from_secs(60);
        cache.insert("token-a", 1, &session("a"), Some(until), now);
        assert_eq!(cache.get("token-a", 1, now), Some(session("a")));
        assert_eq!(cache.get("token-b", 1, now), None, "another token");
        assert_eq!(cache.get("token-a", 1, until), None, "expired");
    }

    #[test]
    fn a_new_key_set_makes_every_entry_stale() {
        let cache = VerifiedTokens::new(4);
        let now = SystemTime::UNIX_EPOCH;
        cache.insert("token-a", 1, &session("a"), None, now);
        assert_eq!(cache.get("token-a", 2, now), None);
    }

    #[test]
    fn a_full_cache_forgets_stale_entries_first_and_stays_bounded() {
        let cache = VerifiedTokens::new(8);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let soon = now + Duration::from_secs(1);
        for i in 0..4 {
            cache.insert(&format!("old-{i}"), 1, &session("old"), Some(soon), now);
        }
        for i in 0..4 {
            cache.insert(&format!("live-{i}"), 1, &session("live"), None, now);
        }
        let later = now + Duration::from_secs(2);
        cache.insert("new", 1, &session("new"), None, later);
        assert_eq!(cache.len(), 5, "the four expired entries went");
        for i in 0..100 {
            cache.insert(&format!("flood-{i}"), 1, &session("f"), None, later);
            assert!(cache.len() <= 8);
        }
    }

    #[test]
    fn a_zero_capacity_cache_remembers_nothing() {
        let cache = VerifiedTokens::new(0);
        cache.insert("token-a", 1, &session("a"), None, SystemTime::UNIX_EPOCH);
        assert_eq!(cache.get("token-a", 1, SystemTime::UNIX_EPOCH), None);
    }
}
