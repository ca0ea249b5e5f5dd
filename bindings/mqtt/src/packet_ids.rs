//! One packet-identifier space: which ids are in use and what each stands for.
//!
//! The proxy keeps one space per upstream (ids of the proxy's own requests to
//! that broker) and one toward the client (ids of deliveries to it). Ids are
//! handed out in turn, skipping those still in use, the way MQTT clients do,
//! so an id is not reused soon after its flow ended.

use crate::lazy_map::LazyMap;

/// Packet ids in use, each with what it stands for.
#[derive(Debug)]
pub(crate) struct PacketIds<T> {
    used: LazyMap<u16, T>,
    /// The id handed out last (0 before the first).
    last: u16,
}

impl<T> Default for PacketIds<T> {
    fn default() -> Self {
        Self {
            used: LazyMap::new(),
            last: 0,
        }
    }
}

impl<T> PacketIds<T> {
    /// The next free id after the last one handed out, without taking it;
    /// `None` when all 65,535 are in use.
    pub(crate) fn next_free(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            self.last = self.last.wrapping_add(1).max(1);
            if !self.used.contains_key(&self.last) {
                return Some(self.last);
            }
        }
        None
    }

    /// Takes the next free id for `value`.
    pub(crate) fn allocate(&mut self, value: T) -> Option<u16> {
        let id = self.next_free()?;
        self.used.insert(id, value);
        Some(id)
    }

    /// Marks `id` as in use for `value` (a restored flow, or an id from
    /// [`next_free`](Self::next_free) once its packet was sent).
    pub(crate) fn insert(&mut self, id: u16, value: T) {
        self.used.insert(id, value);
    }

    pub(crate) fn get(&self, id: u16) -> Option<&T> {
        self.used.get(&id)
    }

    pub(crate) fn remove(&mut self, id: u16) -> Option<T> {
        self.used.remove(&id)
    }

    /// Ends the flow of `id` when `take` accepts what it stands for; an id
    /// that stands for something else is left alone.
    pub(crate) fn take_if<R>(&mut self, id: u16, take: impl FnOnce(&T) -> Option<R>) -> Option<R> {
        let taken = take(self.used.get(&id)?)?;
        self.used.remove(&id);
        Some(taken)
    }

    pub(crate) fn len(&self) -> usize {
        self.used.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u16, &T)> {
        self.used.iter().map(|(&id, value)| (id, value))
    }

    /// The id handed out last, carried to a resumed session so ids in use
    /// at the broker are not handed out again at once.
    pub(crate) fn last(&self) -> u16 {
        self.last
    }

    pub(crate) fn set_last(&mut self, last: u16) {
        self.last = last;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_go_round_skipping_those_in_use_and_never_zero() {
        let mut ids = PacketIds::default();
        assert_eq!(ids.allocate('a'), Some(1));
        assert_eq!(ids.allocate('b'), Some(2));
        ids.set_last(u16::MAX - 1);
        assert_eq!(ids.allocate('c'), Some(u16::MAX));
        // Wraps past 0 and skips 1 and 2, still in use.
        assert_eq!(ids.allocate('d'), Some(3));
        assert_eq!(ids.remove(1), Some('a'));
        assert_eq!(ids.take_if(2, |v| (*v == 'x').then_some(())), None);
        assert_eq!(ids.get(2), Some(&'b'), "an id of another kind stays");
        assert_eq!(ids.take_if(2, |v| (*v == 'b').then_some(7)), Some(7));
        assert_eq!(ids.len(), 2);
    }

    #[test]
    fn a_full_space_has_no_free_id() {
        let mut ids = PacketIds::default();
        for _ in 0..u16::MAX {
            assert!(ids.allocate(()).is_some());
        }
        assert_eq!(ids.allocate(()), None);
        assert_eq!(ids.next_free(), None);
    }
}
