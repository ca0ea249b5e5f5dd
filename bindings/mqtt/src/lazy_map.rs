//! A `HashMap` that takes 8 bytes until its first insert.
//!
//! An idle session keeps several maps (flows in progress, topic aliases,
//! acks waiting for upstreams) that stay empty for its whole life; a
//! `HashMap` with its hasher is 48 bytes even when empty. This one is an
//! `Option<Box<HashMap>>`, created on the first insert and kept afterwards
//! (with its capacity, as a `HashMap` keeps it).
//!
//! Hashed with foldhash, not std's SipHash: these maps are looked up on
//! every QoS 1/2 message (its packet id, in several maps), where SipHash
//! was a fifth of the proxy's instructions per QoS 1 message. foldhash is
//! seeded per map; what a client could make collide is bounded by the
//! session's in-flight limits (decision 0028).

use std::borrow::Borrow;
use std::collections::HashMap;

use foldhash::fast::RandomState;
use std::fmt;
use std::hash::Hash;

#[expect(
    clippy::box_collection,
    reason = "the box is the point: 8 bytes instead of 48 while the map is unused"
)]
pub(crate) struct LazyMap<K, V>(Option<Box<HashMap<K, V, RandomState>>>);

impl<K, V> Default for LazyMap<K, V> {
    fn default() -> Self {
        Self(None)
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for LazyMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Hash + Eq, V> LazyMap<K, V> {
    pub(crate) fn new() -> Self {
        Self(None)
    }

    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.0.get_or_insert_with(Box::default).insert(key, value)
    }

    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.as_ref()?.get(key)
    }

    pub(crate) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.as_mut()?.get_mut(key)
    }

    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.as_mut()?.remove(key)
    }

    pub(crate) fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.as_ref().is_some_and(|map| map.contains_key(key))
    }

    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |map| map.len())
    }
}

impl<K, V> LazyMap<K, V> {
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().flat_map(|map| map.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_on_first_insert_only() {
        let mut map = LazyMap::<String, u16>::new();
        assert_eq!(std::mem::size_of_val(&map), 8);
        assert!(map.0.is_none());
        assert_eq!(map.get("a"), None);
        assert_eq!(map.remove("a"), None);
        assert_eq!(map.len(), 0);
        assert!(map.0.is_none());
        assert_eq!(map.insert("a".into(), 1), None);
        *map.get_mut("a").expect("present") += 1;
        assert!(map.contains_key("a"));
        assert_eq!(map.iter().count(), 1);
        assert_eq!(map.remove("a"), Some(2));
        assert_eq!(map.len(), 0);
    }
}
