//! The listeners of a room, as a set that leaves cost nothing to.
//!
//! Every tick walks all of a room's listeners (each gets the program), so
//! they sit densely in a `Vec`. They also leave one at a time, and when a
//! rally ends tens of thousands leave at once: with `Vec::retain` every
//! leave was a scan of the whole audience, and ending a 50,000-listener
//! rally took O(N²), seconds of a stalled engine thread. A position index
//! makes a leave O(1) (`swap_remove`). The order of the listeners is not
//! kept: nothing depends on the order in which one tick's packets go out.

use std::collections::HashMap;

use crate::SessionId;

#[derive(Debug, Default)]
pub struct ListenerSet {
    ids: Vec<SessionId>,
    /// Where each id is in `ids`.
    position: HashMap<SessionId, u32>,
}

impl ListenerSet {
    /// Adds `id`; `false` if it was there already.
    pub fn insert(&mut self, id: SessionId) -> bool {
        if self.position.contains_key(&id) {
            return false;
        }
        // A room holds far fewer than 2³² listeners (the engine caps sessions).
        self.position.insert(id, self.ids.len() as u32);
        self.ids.push(id);
        true
    }

    /// Removes `id`; `false` if it was not there.
    pub fn remove(&mut self, id: SessionId) -> bool {
        let Some(at) = self.position.remove(&id) else {
            return false;
        };
        let at = at as usize;
        self.ids.swap_remove(at);
        if let Some(&moved) = self.ids.get(at) {
            self.position.insert(moved, at as u32);
        }
        true
    }

    pub fn iter(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.ids.iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Gives memory back once most of the listeners have left (allocates
    /// only when it shrinks).
    pub fn shrink(&mut self) {
        if self.ids.capacity() > 16 && self.ids.len() * 4 < self.ids.capacity() {
            self.ids.shrink_to(self.ids.len() * 2);
            self.position.shrink_to(self.ids.len() * 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn check(set: &ListenerSet, model: &BTreeSet<u64>) {
        let ids: BTreeSet<u64> = set.iter().map(|s| s.0).collect();
        assert_eq!(&ids, model);
        assert_eq!(set.ids.len(), model.len(), "no duplicates");
        for (i, id) in set.ids.iter().enumerate() {
            assert_eq!(set.position[id] as usize, i, "index of {id:?}");
        }
        assert_eq!(set.position.len(), set.ids.len());
    }

    proptest! {
        /// Any sequence of joins and leaves (repeats included) leaves the
        /// set equal to a model set, with its index pointing right.
        #[test]
        fn any_joins_and_leaves_match_a_set(ops in proptest::collection::vec((any::<bool>(), 0u64..40), 0..400)) {
            let mut set = ListenerSet::default();
            let mut model = BTreeSet::new();
            for (join, id) in ops {
                let changed = if join {
                    set.insert(SessionId(id))
                } else {
                    set.remove(SessionId(id))
                };
                let expected = if join { model.insert(id) } else { model.remove(&id) };
                prop_assert_eq!(changed, expected);
                check(&set, &model);
            }
            set.shrink();
            check(&set, &model);
        }
    }

    #[test]
    fn everyone_leaving_empties_it_and_gives_memory_back() {
        let mut set = ListenerSet::default();
        for id in 0..10_000 {
            set.insert(SessionId(id));
        }
        for id in (0..10_000).rev().step_by(2).chain((0..10_000).step_by(2)) {
            assert!(set.remove(SessionId(id)));
        }
        assert!(set.is_empty());
        set.shrink();
        assert!(set.ids.capacity() <= 16, "{}", set.ids.capacity());
    }
}
