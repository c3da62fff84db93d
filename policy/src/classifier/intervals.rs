//! Disjoint intervals of an ordered key space (IPv4, IPv6, ports), each mapped to a class: the set
//! of slots whose terms contain every key of the interval. Longest-prefix match over CIDRs (and
//! any mix of nested, overlapping or excepted ranges) reduces to one search here.

use std::collections::BTreeMap;
use std::hash::Hash;

use prefetch_index::prefetch_index;

/// Keys of a totally ordered, bounded space.
pub trait Key: Copy + Ord + std::fmt::Debug {
    const MIN: Self;
    const BITS: u32;
    fn successor(self) -> Option<Self>;
    fn to_u128(self) -> u128;
    /// The key of `value`'s low [`Key::BITS`] bits.
    fn from_u128(value: u128) -> Self;
}

impl Key for u32 {
    const MIN: Self = 0;
    const BITS: u32 = 32;
    fn successor(self) -> Option<Self> {
        self.checked_add(1)
    }
    #[inline]
    fn to_u128(self) -> u128 {
        u128::from(self)
    }
    fn from_u128(value: u128) -> Self {
        value as u32
    }
}

impl Key for u128 {
    const MIN: Self = 0;
    const BITS: u32 = 128;
    fn successor(self) -> Option<Self> {
        self.checked_add(1)
    }
    #[inline]
    fn to_u128(self) -> u128 {
        self
    }
    fn from_u128(value: u128) -> Self {
        value
    }
}

/// Gives each distinct value a number, in order of first appearance.
#[derive(Debug)]
pub struct Interner<T> {
    ids: ahash::AHashMap<T, u32>,
    values: Vec<T>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Interner {
            ids: ahash::AHashMap::new(),
            values: Vec::new(),
        }
    }
}

impl<T: Hash + Eq + Clone> Interner<T> {
    pub fn intern(&mut self, value: T) -> u32 {
        if let Some(&id) = self.ids.get(&value) {
            return id;
        }
        let id = self.values.len() as u32;
        self.ids.insert(value.clone(), id);
        self.values.push(value);
        id
    }

    /// The values, indexed by number.
    pub fn values(&self) -> &[T] {
        &self.values
    }

    pub fn into_values(self) -> Vec<T> {
        self.values
    }
}

/// Gives each distinct set of slots one class number; class 0 is the empty set.
#[derive(Debug)]
pub struct ClassInterner(Interner<Vec<u32>>);

impl Default for ClassInterner {
    fn default() -> Self {
        let mut sets = Interner::default();
        sets.intern(Vec::new());
        ClassInterner(sets)
    }
}

impl ClassInterner {
    pub fn intern(&mut self, slots: Vec<u32>) -> u32 {
        self.0.intern(slots)
    }

    /// The slot sets, indexed by class.
    pub fn into_classes(self) -> Vec<Vec<u32>> {
        self.0.into_values()
    }
}

/// A step function from keys to classes: steps that each hold a class.
pub type Intervals<K> = ByStart<K, Step<K>>;

impl<K: Key> Default for Intervals<K> {
    fn default() -> Self {
        ByStart::sorted(vec![Step {
            start: K::MIN,
            class: 0,
        }])
    }
}

/// Where an interval starts, and its class: side by side, so that the search ends on the line
/// that holds the answer instead of loading it from a second array. (An IPv6 step takes 32
/// bytes with the `u128`'s alignment, against 20 in two arrays: IPv6 maps are the smaller ones.)
#[derive(Debug, Clone, Copy)]
pub struct Step<K> {
    start: K,
    class: u32,
}

/// An item of a [`ByStart`] index: it holds for keys from its start up to the next item's.
pub trait Starting<K> {
    fn start(&self) -> K;
}

impl<K: Key> Starting<K> for Step<K> {
    #[inline]
    fn start(&self) -> K {
        self.start
    }
}

/// A key's bucket in a step index: see [`Intervals::bucket`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket(u32);

impl Bucket {
    /// Below the bucketed span: the first step's class.
    const BELOW: Bucket = Bucket(u32::MAX);
}

/// Where in the steps a key's answer lies: see [`Intervals::window`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    from: u32,
    to: u32,
}

/// From how many items a [`ByStart`] index keeps half the buckets per item. Such an index
/// (a 100k-rule product's rows) is past the caches anyway: at four bytes a bucket, ipc1's 100k
/// classifier took 16.2 MiB with two to four buckets per row, 14.2 MiB with one to two, and
/// its lookups took the same time (0.94–1.00 × in one process; BENCHMARKS.md, *A second
/// machine*). Smaller indexes keep the shorter windows.
const SPARSE_INDEX_FROM: usize = 1 << 15;

/// Items in the order of the key intervals they hold for: each from its start up to the next
/// one's, the first from the key space's minimum; the search ends on the item itself. Address
/// and port maps ([`Intervals`]) are steps that each hold a class; a steps product's IPv4 rows
/// (see `product.rs`) are records that each hold their start.
///
/// The items are sorted with a bucket index: the span from the second start to the last is cut
/// into two to four buckets per item (one to two from 32,768 items on), and each bucket
/// remembers the last item starting at or below the bucket's start. A lookup is one bucket
/// load and a search among the few items inside that bucket, instead of a binary search over
/// all of them (a chain of ~15 dependent loads at 20k items). Buckets cover the starts' real
/// span, so starts clustered in one part of the space (all of 10.0.0.0/8) still spread out.
#[derive(Debug, Clone)]
pub struct ByStart<K, S> {
    items: Box<[S]>,
    /// Start of the bucketed span (the second start; the first is the key space's minimum).
    low: u128,
    shift: u32,
    /// For each bucket, the index of the last item starting at or below the bucket's first key.
    buckets: Box<[u32]>,
    key: std::marker::PhantomData<K>,
}

impl<K: Key, S: Starting<K>> ByStart<K, S> {
    /// Panics unless the items start in increasing order, the first at `K::MIN`.
    pub fn new(items: Vec<S>) -> Self {
        assert!(
            items.first().is_some_and(|i| i.start() == K::MIN)
                && items.windows(2).all(|w| w[0].start() < w[1].start()),
            "items start in increasing order, the first at the key space's minimum"
        );
        Self::sorted(items)
    }

    /// [`ByStart::new`] of items known to be in order.
    fn sorted(items: Vec<S>) -> Self {
        debug_assert!(!items.is_empty() && items.windows(2).all(|w| w[0].start() < w[1].start()));
        let (low, high) = match items.len() {
            1 => (0, 0),
            n => (items[1].start().to_u128(), items[n - 1].start().to_u128()),
        };
        let span = high - low;
        let per_item_bits = u32::from(items.len() < SPARSE_INDEX_FROM);
        let bits = (usize::BITS - items.len().leading_zeros() + per_item_bits).min(20);
        let span_bits = 128 - span.leading_zeros();
        let shift = span_bits.saturating_sub(bits);
        let count = (span >> shift) as usize + 1;
        let mut buckets = Vec::with_capacity(count);
        let mut i = 0usize;
        for b in 0..count {
            let first_value = low + ((b as u128) << shift);
            while i + 1 < items.len() && items[i + 1].start().to_u128() <= first_value {
                i += 1;
            }
            buckets.push(i as u32);
        }
        ByStart {
            items: items.into(),
            low,
            shift,
            buckets: buckets.into(),
            key: std::marker::PhantomData,
        }
    }

    /// The item holding for `key`: the last starting at or below it.
    #[inline]
    pub fn at(&self, key: K) -> &S {
        &self.items[self.index_in(key, self.window(self.bucket(key)))]
    }

    /// [`ByStart::at`] in stages, for lookups that interleave many keys so that their memory
    /// accesses overlap: the key's `bucket` (arithmetic only), the `window` of items the
    /// bucket points to (one load), the search in the window (`index_in`); each `prefetch_*`
    /// asks for the line the next stage reads.
    #[inline]
    pub fn bucket(&self, key: K) -> Bucket {
        let value = key.to_u128();
        if value < self.low {
            return Bucket::BELOW;
        }
        // Clamped before the cast: an IPv6 key far above the last start is past `usize`.
        let last = self.buckets.len() as u128 - 1;
        Bucket(((value - self.low) >> self.shift).min(last) as u32)
    }

    #[inline]
    pub fn prefetch_bucket(&self, bucket: Bucket) {
        if bucket != Bucket::BELOW {
            prefetch_index(&self.buckets, bucket.0 as usize);
        }
    }

    /// The items among which the answer for a key of `bucket` lies (one load).
    #[inline]
    pub fn window(&self, bucket: Bucket) -> Window {
        if bucket == Bucket::BELOW {
            return Window { from: 0, to: 0 };
        }
        let b = bucket.0 as usize;
        let from = self.buckets[b];
        let to = self
            .buckets
            .get(b + 1)
            .map_or(self.items.len() as u32 - 1, |&next| next);
        Window { from, to }
    }

    #[inline]
    pub fn prefetch_window(&self, window: Window) {
        prefetch_index(&self.items, window.from as usize);
        prefetch_index(&self.items, window.to as usize);
    }

    /// Where in [`ByStart::items`] the item for `key` is, searched in its window: `items[from]`
    /// starts at or below the key, and items past `to` start after the key's bucket ends.
    /// Most windows hold at most two starts past `from` (a host's interval and the one after
    /// it): those are compared at once, so that their loads are not a chain.
    #[inline]
    pub fn index_in(&self, key: K, window: Window) -> usize {
        let (from, to) = (window.from as usize, window.to as usize);
        match to - from {
            n @ 0..=2 => {
                let (first, second) = (from + n.min(1), to);
                from + usize::from(n >= 1 && self.items[first].start() <= key)
                    + usize::from(n == 2 && self.items[second].start() <= key)
            }
            _ => from + self.items[from + 1..=to].partition_point(|s| s.start() <= key),
        }
    }

    pub fn items(&self) -> &[S] {
        &self.items
    }

    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.items) + self.buckets.len() * 4
    }
}

impl<K: Key> Intervals<K> {
    /// Builds the step function for `items` (inclusive `lo..=hi` ranges, each owned by a slot).
    pub fn build(items: &[(K, K, u32)], interner: &mut ClassInterner) -> Self {
        Self::sweep(items, 0, |active| {
            interner.intern(active.keys().copied().collect())
        })
    }

    /// Builds the step function from keys to the *lowest* slot whose range contains the key
    /// (`none` where no range does): what a lookup that wants the first matching rule needs,
    /// without the set of every matching slot. O(n log n), where the full classes of
    /// [`Intervals::build`] cost a set per boundary.
    pub fn build_first(items: &[(K, K, u32)], none: u32) -> Self {
        Self::sweep(items, none, |active| {
            active.keys().next().copied().unwrap_or(none)
        })
    }

    /// A sweep over the ranges' ends with the live slots (and how many of their ranges are
    /// open) in an ordered map; `value` turns the live slots at each boundary into the value
    /// from there on (`empty` before any range), and neighbours with the same value merge.
    fn sweep(
        items: &[(K, K, u32)],
        empty: u32,
        mut value: impl FnMut(&BTreeMap<u32, u32>) -> u32,
    ) -> Self {
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
        let mut values = vec![empty];
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
            let here = value(&active);
            if *values.last().expect("never empty") == here {
                continue;
            }
            if *starts.last().expect("never empty") == at {
                *values.last_mut().expect("never empty") = here;
            } else {
                starts.push(at);
                values.push(here);
            }
        }
        let steps = starts
            .into_iter()
            .zip(values)
            .map(|(start, class)| Step { start, class })
            .collect();
        ByStart::sorted(steps)
    }

    /// The step function whose steps start at the given keys, in increasing order, the first
    /// at `K::MIN`; neighbours with the same class merge.
    pub fn from_steps(steps: impl IntoIterator<Item = (K, u32)>) -> Self {
        let mut merged: Vec<Step<K>> = Vec::new();
        for (start, class) in steps {
            match merged.last() {
                Some(last) if last.class == class => {}
                _ => merged.push(Step { start, class }),
            }
        }
        assert!(
            merged.first().is_some_and(|s| s.start == K::MIN),
            "steps start at the key space's minimum"
        );
        ByStart::sorted(merged)
    }

    /// Where each interval starts, and its class, in key order.
    pub fn steps(&self) -> impl Iterator<Item = (K, u32)> + '_ {
        self.items().iter().map(|s| (s.start, s.class))
    }

    /// How many intervals there are.
    pub fn intervals(&self) -> usize {
        self.items().len()
    }

    /// The class of each interval, in key order.
    pub fn classes(&self) -> impl Iterator<Item = u32> + '_ {
        self.items().iter().map(|s| s.class)
    }

    #[inline]
    pub fn class_of(&self, key: K) -> u32 {
        self.at(key).class
    }

    /// [`Intervals::class_of`] in a window: see [`ByStart::bucket`].
    #[inline]
    pub fn class_in(&self, key: K, window: Window) -> u32 {
        self.items()[self.index_in(key, window)].class
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn class_of_matches_a_linear_scan(
            raw in prop::collection::vec((0u32..5000, 0u32..50), 0..400),
            probes in prop::collection::vec(0u32..5100, 1..50),
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

    proptest! {
        #[test]
        fn build_first_gives_the_lowest_slot_of_a_linear_scan(
            raw in prop::collection::vec((0u32..5000, 0u32..50), 0..400),
            probes in prop::collection::vec(0u32..5100, 1..50),
        ) {
            let items: Vec<(u32, u32, u32)> = raw.iter().enumerate()
                .map(|(slot, &(lo, len))| (lo, lo + len, (slot as u32 * 7919) % 97))
                .collect();
            let map = Intervals::build_first(&items, u32::MAX);
            for key in probes {
                let expected = items.iter()
                    .filter(|(lo, hi, _)| *lo <= key && key <= *hi)
                    .map(|it| it.2)
                    .min()
                    .unwrap_or(u32::MAX);
                prop_assert_eq!(map.class_of(key), expected);
            }
        }
    }

    /// The index over steps starting at `keys`, step *i* of class *i*.
    fn numbered<K: Key>(keys: &[K]) -> Intervals<K> {
        let steps = keys
            .iter()
            .enumerate()
            .map(|(i, &start)| Step {
                start,
                class: i as u32,
            })
            .collect();
        ByStart::new(steps)
    }

    #[test]
    fn search_index_finds_the_last_key_at_or_below() {
        for n in [1usize, 2, 15, 16, 17, 255, 256, 257, 4097] {
            // Uneven gaps, so buckets hold zero, one or many keys.
            let keys: Vec<u32> = (0..n as u32)
                .scan(0u32, |at, i| {
                    *at += 1 + (i * 7) % 11 * (i % 3);
                    Some(*at)
                })
                .collect();
            let keys: Vec<u32> = std::iter::once(0).chain(keys).take(n).collect();
            let index = numbered(&keys);
            for probe in 0..(*keys.last().unwrap() + 5) {
                let want = keys.partition_point(|&k| k <= probe) - 1;
                assert_eq!(index.class_of(probe) as usize, want, "n {n} probe {probe}");
            }
            assert_eq!(index.class_of(u32::MAX) as usize, n - 1);
        }
    }

    #[test]
    fn search_index_handles_the_whole_u128_space() {
        let keys: Vec<u128> = vec![0, 5, u128::MAX / 2, u128::MAX - 1];
        let index = numbered(&keys);
        for (probe, want) in [
            (0, 0),
            (4, 0),
            (5, 1),
            (u128::MAX / 2, 2),
            (u128::MAX - 2, 2),
            (u128::MAX, 3),
        ] {
            assert_eq!(index.class_of(probe), want, "probe {probe}");
        }
    }

    #[test]
    fn an_ipv6_key_far_above_the_last_start_is_in_the_last_step() {
        // Starts a few apart near fd00::, so that a bucket is one key wide: a key 2^120 above
        // them is past `usize` buckets away, and must not wrap into a low bucket.
        let fd00 = 0xfd00_u128 << 112;
        let mut keys = vec![0];
        keys.extend((0..300u128).map(|i| fd00 + 1 + i * 3));
        let index = numbered(&keys);
        let last = keys.len() as u32 - 1;
        for probe in [
            fd00 + 2_000,
            0xff00_u128 << 112,
            (0xff00_u128 << 112) + 1,
            u128::MAX,
        ] {
            assert_eq!(index.class_of(probe), last, "probe {probe:#x}");
        }
        assert_eq!(index.class_of(fd00 + 3), 1);
        assert_eq!(index.class_of(fd00), 0);
    }

    /// An item that carries its own start, as product records do.
    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Named {
        from: u32,
        name: u32,
    }

    impl Starting<u32> for Named {
        fn start(&self) -> u32 {
            self.from
        }
    }

    proptest! {
        #[test]
        fn by_start_finds_the_item_of_the_last_start_at_or_below(
            gaps in prop::collection::vec(1u32..300, 0..300),
            probes in prop::collection::vec(any::<u32>(), 1..50),
        ) {
            let starts: Vec<u32> = std::iter::once(0)
                .chain(gaps.iter().scan(0u32, |at, &gap| {
                    *at += gap;
                    Some(*at)
                }))
                .collect();
            let items: Vec<Named> = starts
                .iter()
                .enumerate()
                .map(|(i, &from)| Named { from, name: i as u32 * 7 })
                .collect();
            let index = ByStart::new(items.clone());
            let near = starts.iter().flat_map(|&s| [s.saturating_sub(1), s, s + 1]);
            for key in probes.into_iter().chain(near) {
                let want = items[starts.partition_point(|&s| s <= key) - 1];
                prop_assert_eq!(*index.at(key), want);
                let window = index.window(index.bucket(key));
                prop_assert_eq!(index.items()[index.index_in(key, window)], want);
            }
        }
    }

    #[test]
    fn a_large_index_keeps_fewer_buckets_per_item_and_finds_every_item() {
        for n in [
            SPARSE_INDEX_FROM - 1,
            SPARSE_INDEX_FROM,
            3 * SPARSE_INDEX_FROM + 5,
        ] {
            // Clustered starts with uneven gaps, as addresses of rule lists are.
            let starts: Vec<u32> = (0..n as u32)
                .scan(0u32, |at, i| {
                    *at += if i % 1000 == 999 {
                        1 << 16
                    } else {
                        1 + (i * 7) % 13
                    };
                    Some(*at)
                })
                .collect();
            let starts: Vec<u32> = std::iter::once(0).chain(starts).take(n).collect();
            let items: Vec<Named> = starts
                .iter()
                .enumerate()
                .map(|(i, &from)| Named {
                    from,
                    name: i as u32,
                })
                .collect();
            let index = ByStart::new(items.clone());
            let buckets = index.buckets.len();
            if n < SPARSE_INDEX_FROM {
                assert!(buckets > n, "n {n}: {buckets} buckets");
            } else {
                assert!(buckets <= 2 * n, "n {n}: {buckets} buckets");
            }
            let near = starts.iter().flat_map(|&s| [s.saturating_sub(1), s, s + 1]);
            for key in near.chain([u32::MAX]) {
                let want = items[starts.partition_point(|&s| s <= key) - 1];
                assert_eq!(*index.at(key), want, "n {n} key {key}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "the first at the key space's minimum")]
    fn by_start_wants_a_first_item_at_the_minimum() {
        ByStart::new(vec![Named { from: 5, name: 0 }]);
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
