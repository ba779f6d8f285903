//! Bounded counting: the two structures that keep the report's memory flat however long the
//! log is.
//!
//! - [`Capped`]: exact counts for a set of keys that is small by nature (jurisdictions,
//!   classes, reasons, versions). The first `cap` distinct keys are kept; every later key is
//!   counted in one `other` bucket, so totals stay exact.
//! - [`TopN`]: the heavy hitters of an open set (host names, client networks), by the
//!   Space-Saving algorithm (Metwally, Agrawal and El Abbadi, "Efficient computation of
//!   frequent and top-k elements in data streams", 2005): `cap` counters; a new key when all
//!   are taken replaces the smallest, inheriting its count as its error bound. Every key whose
//!   true count exceeds `total / cap` is kept, and each kept count overstates the truth by at
//!   most its error. While fewer than `cap` distinct keys were seen the counts are exact.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

/// Exact counts for at most `cap` keys, the rest in `other`.
#[derive(Debug, Clone)]
pub(crate) struct Capped<V> {
    cap: usize,
    map: HashMap<String, V>,
    other: Option<V>,
}

impl<V: Default> Capped<V> {
    /// An empty map that keeps at most `cap` keys.
    pub(crate) fn new(cap: usize) -> Self {
        Capped {
            cap,
            map: HashMap::new(),
            other: None,
        }
    }

    /// The value of `key`, or of the `other` bucket when the map is full and `key` is new.
    pub(crate) fn entry(&mut self, key: &str) -> &mut V {
        if self.map.contains_key(key) {
            return self.map.get_mut(key).expect("present: checked just above");
        }
        if self.map.len() < self.cap {
            return self.map.entry(key.to_owned()).or_default();
        }
        self.other.get_or_insert_with(V::default)
    }

    /// Whether `key` has a bucket of its own (it is not counted in `other`).
    pub(crate) fn admits(&self, key: &str) -> bool {
        self.map.contains_key(key) || self.map.len() < self.cap
    }

    /// Every key with its value, then `("other", value)` if anything overflowed; unsorted.
    pub(crate) fn into_vec(self) -> Vec<(String, V)> {
        let mut v: Vec<(String, V)> = self.map.into_iter().collect();
        if let Some(o) = self.other {
            v.push((OTHER.to_owned(), o));
        }
        v
    }
}

/// The name of the bucket that collects keys past a cap.
pub(crate) const OTHER: &str = "other";

/// One kept key of a [`TopN`].
#[derive(Debug, Clone)]
struct Slot<V> {
    count: u64,
    error: u64,
    value: V,
}

/// The most frequent keys of a stream, in bounded memory (Space-Saving).
#[derive(Debug, Clone)]
pub(crate) struct TopN<K, V> {
    cap: usize,
    slots: HashMap<K, Slot<V>>,
    /// `(count, key)` of every slot, smallest first: the next to be replaced.
    by_count: BTreeSet<(u64, K)>,
}

/// A key of a [`TopN`] as reported: its count (an upper bound) and how much of it may belong
/// to keys it replaced.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Hitter<K, V> {
    pub(crate) key: K,
    pub(crate) count: u64,
    pub(crate) error: u64,
    pub(crate) value: V,
}

impl<K: Hash + Eq + Ord + Clone, V: Default> TopN<K, V> {
    /// Keep at most `cap` keys (at least one).
    pub(crate) fn new(cap: usize) -> Self {
        TopN {
            cap: cap.max(1),
            slots: HashMap::new(),
            by_count: BTreeSet::new(),
        }
    }

    /// Count `key` once more; the returned value is the key's own (fresh when it replaced
    /// another key).
    pub(crate) fn add(&mut self, key: K) -> &mut V {
        if let Some(slot) = self.slots.get_mut(&key) {
            self.by_count.remove(&(slot.count, key.clone()));
            slot.count += 1;
            self.by_count.insert((slot.count, key.clone()));
        } else if self.slots.len() < self.cap {
            self.slots.insert(
                key.clone(),
                Slot {
                    count: 1,
                    error: 0,
                    value: V::default(),
                },
            );
            self.by_count.insert((1, key.clone()));
        } else {
            let (min, evicted) = self
                .by_count
                .pop_first()
                .expect("full with cap >= 1: never empty");
            self.slots.remove(&evicted);
            self.slots.insert(
                key.clone(),
                Slot {
                    count: min + 1,
                    error: min,
                    value: V::default(),
                },
            );
            self.by_count.insert((min + 1, key.clone()));
        }
        &mut self.slots.get_mut(&key).expect("inserted above").value
    }

    /// Whether any count is an estimate (some key was replaced).
    pub(crate) fn approximate(&self) -> bool {
        self.slots.values().any(|s| s.error > 0)
    }

    /// The `n` most frequent keys, most frequent first (ties by key).
    pub(crate) fn top(self, n: usize) -> Vec<Hitter<K, V>> {
        let mut v: Vec<Hitter<K, V>> = self
            .slots
            .into_iter()
            .map(|(key, s)| Hitter {
                key,
                count: s.count,
                error: s.error,
                value: s.value,
            })
            .collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        v.truncate(n);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_counts_past_the_cap_in_other() {
        let mut c: Capped<u64> = Capped::new(2);
        for k in ["a", "b", "a", "c", "d", "b"] {
            *c.entry(k) += 1;
        }
        let mut v = c.into_vec();
        v.sort();
        assert_eq!(v, [("a".into(), 2), ("b".into(), 2), ("other".into(), 2)]);
    }

    #[test]
    fn topn_is_exact_below_its_capacity() {
        let mut t: TopN<String, ()> = TopN::new(8);
        for k in ["x", "y", "x", "z", "x", "y"] {
            t.add(k.to_owned());
        }
        assert!(!t.approximate());
        let top: Vec<(String, u64)> = t.top(2).into_iter().map(|h| (h.key, h.count)).collect();
        assert_eq!(top, [("x".into(), 3), ("y".into(), 2)]);
    }

    #[test]
    fn topn_keeps_a_heavy_hitter_among_many_rare_keys() {
        // 10,000 distinct rare keys interleaved with one key seen 2,000 times, 16 counters.
        let mut t: TopN<u32, ()> = TopN::new(16);
        for i in 0..10_000u32 {
            t.add(i + 1);
            if i % 5 == 0 {
                t.add(0);
            }
        }
        assert!(t.approximate());
        let top = t.top(1);
        assert_eq!(top[0].key, 0);
        // The count overstates by at most its error, and never understates.
        assert!(top[0].count >= 2_000 && top[0].count - top[0].error <= 2_000);
    }
}
