//! Disjoint intervals of an ordered key space (IPv4, IPv6, ports), each mapped to a class: the set
//! of slots whose terms contain every key of the interval. Longest-prefix match over CIDRs (and
//! any mix of nested, overlapping or excepted ranges) reduces to one search here.

use std::collections::{BTreeMap, HashMap};

/// Keys of a totally ordered, bounded space.
pub trait Key: Copy + Ord + std::fmt::Debug {
    const MIN: Self;
    fn successor(self) -> Option<Self>;
}

impl Key for u32 {
    const MIN: Self = 0;
    fn successor(self) -> Option<Self> {
        self.checked_add(1)
    }
}

impl Key for u128 {
    const MIN: Self = 0;
    fn successor(self) -> Option<Self> {
        self.checked_add(1)
    }
}

/// Gives each distinct set of slots one class number; class 0 is the empty set.
#[derive(Debug)]
pub struct ClassInterner {
    ids: HashMap<Vec<u32>, u32>,
    classes: Vec<Vec<u32>>,
}

impl Default for ClassInterner {
    fn default() -> Self {
        ClassInterner {
            ids: HashMap::from([(Vec::new(), 0)]),
            classes: vec![Vec::new()],
        }
    }
}

impl ClassInterner {
    pub fn intern(&mut self, slots: Vec<u32>) -> u32 {
        if let Some(&id) = self.ids.get(&slots) {
            return id;
        }
        let id = self.classes.len() as u32;
        self.classes.push(slots.clone());
        self.ids.insert(slots, id);
        id
    }

    /// The slot sets, indexed by class.
    pub fn into_classes(self) -> Vec<Vec<u32>> {
        self.classes
    }
}

/// A step function from keys to classes.
#[derive(Debug, Clone)]
pub struct Intervals<K> {
    starts: Box<[K]>,
    classes: Box<[u32]>,
}

impl<K: Key> Default for Intervals<K> {
    fn default() -> Self {
        Intervals {
            starts: Box::new([K::MIN]),
            classes: Box::new([0]),
        }
    }
}

impl<K: Key> Intervals<K> {
    /// Builds the step function for `items` (inclusive `lo..=hi` ranges, each owned by a slot).
    pub fn build(items: &[(K, K, u32)], interner: &mut ClassInterner) -> Self {
        let mut events: Vec<(K, bool, u32)> = Vec::with_capacity(items.len() * 2);
        for &(lo, hi, slot) in items {
            debug_assert!(lo <= hi);
            events.push((lo, true, slot));
            if let Some(after) = hi.successor() {
                events.push((after, false, slot));
            }
        }
        events.sort_unstable_by_key(|e| e.0);

        let mut starts = vec![K::MIN];
        let mut classes = vec![0u32];
        let mut active: BTreeMap<u32, u32> = BTreeMap::new();
        let mut i = 0;
        while i < events.len() {
            let at = events[i].0;
            while i < events.len() && events[i].0 == at {
                let (_, add, slot) = events[i];
                if add {
                    *active.entry(slot).or_default() += 1;
                } else if let Some(count) = active.get_mut(&slot) {
                    *count -= 1;
                    if *count == 0 {
                        active.remove(&slot);
                    }
                }
                i += 1;
            }
            let class = interner.intern(active.keys().copied().collect());
            if *classes.last().expect("never empty") == class {
                continue;
            }
            if *starts.last().expect("never empty") == at {
                *classes.last_mut().expect("never empty") = class;
            } else {
                starts.push(at);
                classes.push(class);
            }
        }
        Intervals {
            starts: starts.into(),
            classes: classes.into(),
        }
    }

    #[inline]
    pub fn class_of(&self, key: K) -> u32 {
        let i = self.starts.partition_point(|&s| s <= key);
        self.classes[i - 1]
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    pub fn heap_bytes(&self) -> usize {
        self.starts.len() * std::mem::size_of::<K>() + self.classes.len() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn class_of_matches_a_linear_scan(
            raw in prop::collection::vec((0u32..1000, 0u32..50), 0..40),
            probes in prop::collection::vec(0u32..1100, 1..50),
        ) {
            let items: Vec<(u32, u32, u32)> = raw.iter().enumerate()
                .map(|(slot, &(lo, len))| (lo, lo + len, slot as u32 / 2))
                .collect();
            let mut interner = ClassInterner::default();
            let map = Intervals::build(&items, &mut interner);
            let classes = interner.into_classes();
            for key in probes {
                let mut expected: Vec<u32> = items.iter()
                    .filter(|(lo, hi, _)| *lo <= key && key <= *hi)
                    .map(|it| it.2)
                    .collect();
                expected.sort_unstable();
                expected.dedup();
                prop_assert_eq!(&classes[map.class_of(key) as usize], &expected);
            }
        }
    }

    #[test]
    fn the_top_of_the_key_space_is_covered() {
        let mut interner = ClassInterner::default();
        let map = Intervals::build(&[(u32::MAX - 1, u32::MAX, 7)], &mut interner);
        let classes = interner.into_classes();
        assert_eq!(classes[map.class_of(u32::MAX) as usize], vec![7]);
        assert!(classes[map.class_of(0) as usize].is_empty());
    }
}
