//! Sets of rule slots, stored sparse (sorted slot numbers) or dense (a bitset) — whichever is
//! smaller — and the one query the classifier needs: the lowest slot present in every set.
//!
//! Sparse sets keep memory proportional to what a class really contains, so 100k rules do not
//! cost 100k bits per peer class; dense sets make membership a single bit test.

/// An immutable set of slot numbers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SlotSet {
    #[default]
    Empty,
    Sparse(Box<[u32]>),
    Dense(DenseSet),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenseSet {
    words: Box<[u64]>,
    len: u32,
}

impl SlotSet {
    /// `slots` must be sorted and unique; `universe` is the number of slots of the table.
    pub fn from_sorted(slots: &[u32], universe: u32) -> SlotSet {
        debug_assert!(slots.windows(2).all(|w| w[0] < w[1]));
        if slots.is_empty() {
            return SlotSet::Empty;
        }
        // Four bytes per sparse entry against one bit per slot of the table.
        if (slots.len() as u64) * 32 <= u64::from(universe) {
            return SlotSet::Sparse(slots.into());
        }
        let mut words = vec![0u64; universe.div_ceil(64) as usize];
        for &s in slots {
            words[(s / 64) as usize] |= 1 << (s % 64);
        }
        SlotSet::Dense(DenseSet {
            words: words.into(),
            len: slots.len() as u32,
        })
    }

    pub fn len(&self) -> usize {
        match self {
            SlotSet::Empty => 0,
            SlotSet::Sparse(s) => s.len(),
            SlotSet::Dense(d) => d.len as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, SlotSet::Empty)
    }

    #[inline]
    pub fn contains(&self, slot: u32) -> bool {
        match self {
            SlotSet::Empty => false,
            SlotSet::Sparse(s) => s.binary_search(&slot).is_ok(),
            SlotSet::Dense(d) => d
                .words
                .get((slot / 64) as usize)
                .is_some_and(|w| w & (1 << (slot % 64)) != 0),
        }
    }

    pub fn heap_bytes(&self) -> usize {
        match self {
            SlotSet::Empty => 0,
            SlotSet::Sparse(s) => s.len() * 4,
            SlotSet::Dense(d) => d.words.len() * 8,
        }
    }

    pub fn iter(&self) -> Box<dyn Iterator<Item = u32> + '_> {
        match self {
            SlotSet::Empty => Box::new(std::iter::empty()),
            SlotSet::Sparse(s) => Box::new(s.iter().copied()),
            SlotSet::Dense(d) => Box::new(d.words.iter().enumerate().flat_map(|(i, &w)| {
                (0..64)
                    .filter(move |b| w & (1u64 << b) != 0)
                    .map(move |b| i as u32 * 64 + b)
            })),
        }
    }
}

/// The lowest slot in `[from, below)` that is in every set, if any.
#[inline]
pub fn first_common(sets: &[&SlotSet], from: u32, below: u32) -> Option<u32> {
    if from >= below || sets.iter().any(|s| s.is_empty()) {
        return None;
    }
    let driver = sets
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s {
            SlotSet::Sparse(list) => Some((i, list)),
            _ => None,
        })
        .min_by_key(|(_, list)| list.len());
    match driver {
        Some((d, list)) => {
            let start = list.partition_point(|&s| s < from);
            list[start..]
                .iter()
                .copied()
                .take_while(|&s| s < below)
                .find(|&s| {
                    sets.iter()
                        .enumerate()
                        .all(|(i, set)| i == d || set.contains(s))
                })
        }
        None => first_common_dense(sets, from, below),
    }
}

fn first_common_dense(sets: &[&SlotSet], from: u32, below: u32) -> Option<u32> {
    let dense: smallvec_like::Dense<'_> = smallvec_like::Dense::new(sets);
    let first_word = (from / 64) as usize;
    let last_word = (below.div_ceil(64) as usize).min(dense.words());
    for w in first_word..last_word {
        let mut word = dense.and(w);
        if w == first_word {
            word &= u64::MAX << (from % 64);
        }
        if word != 0 {
            let slot = w as u32 * 64 + word.trailing_zeros();
            return (slot < below).then_some(slot);
        }
    }
    None
}

/// Word access over up to three dense sets without allocating.
mod smallvec_like {
    use super::SlotSet;

    pub struct Dense<'a> {
        words: [&'a [u64]; 3],
        count: usize,
    }

    impl<'a> Dense<'a> {
        pub fn new(sets: &[&'a SlotSet]) -> Self {
            let mut words: [&[u64]; 3] = [&[], &[], &[]];
            let mut count = 0;
            for set in sets {
                if let SlotSet::Dense(d) = set {
                    words[count] = &d.words;
                    count += 1;
                }
            }
            Dense { words, count }
        }

        pub fn words(&self) -> usize {
            self.words[..self.count]
                .iter()
                .map(|w| w.len())
                .min()
                .unwrap_or(0)
        }

        #[inline]
        pub fn and(&self, i: usize) -> u64 {
            self.words[..self.count]
                .iter()
                .fold(u64::MAX, |acc, w| acc & w[i])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(sets: &[Vec<u32>], from: u32, below: u32) -> Option<u32> {
        (from..below).find(|s| sets.iter().all(|set| set.contains(s)))
    }

    proptest! {
        #[test]
        fn first_common_agrees_with_a_scan(
            universe in 1u32..300,
            raw in prop::collection::vec(prop::collection::btree_set(0u32..300, 0..200), 1..4),
            from in 0u32..300,
            span in 0u32..300,
        ) {
            let lists: Vec<Vec<u32>> = raw.iter()
                .map(|s| s.iter().copied().filter(|&x| x < universe).collect())
                .collect();
            let sets: Vec<SlotSet> = lists.iter().map(|l| SlotSet::from_sorted(l, universe)).collect();
            let refs: Vec<&SlotSet> = sets.iter().collect();
            let below = (from + span).min(universe);
            prop_assert_eq!(first_common(&refs, from, below), reference(&lists, from, below));
            for (set, list) in sets.iter().zip(&lists) {
                prop_assert_eq!(set.iter().collect::<Vec<_>>(), list.clone());
            }
        }
    }

    #[test]
    fn large_sets_become_dense_and_small_ones_stay_sparse() {
        let all: Vec<u32> = (0..1000).collect();
        assert!(matches!(
            SlotSet::from_sorted(&all, 1000),
            SlotSet::Dense(_)
        ));
        assert!(matches!(
            SlotSet::from_sorted(&[5, 900], 1000),
            SlotSet::Sparse(_)
        ));
    }
}
