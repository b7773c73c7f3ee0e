//! A hash map keyed by a flow key under one mask, and the word hashing the
//! caches share.
//!
//! Keys come from the wire, so every map hashes with its own random seed
//! (`random_seed`); `mix` is one multiply-and-fold per word, the
//! construction foldhash uses without its byte-stream buffering. Used by
//! the classifier's subtables and by the megaflow cache: one map per mask.
//! Owned data, `Send` and `Sync` when its values are.

use crate::ofproto::flow::{masked, Words, WORDS};

/// A hash map keyed by `key & mask` that hashes and compares only the
/// words the mask touches (OVS's miniflow idea): a subtable matching on
/// three words costs three words per probe, not [`WORDS`].
#[derive(Debug)]
pub struct MaskedMap<V> {
    mask: Words,
    /// Indices of the mask's non-zero words; the first `n_used` count.
    used: [u8; WORDS],
    n_used: u8,
    table: hashbrown::HashTable<(Words, V)>,
    /// Random per map: keys come from the wire.
    seed: u64,
}

impl<V> MaskedMap<V> {
    pub fn new(mask: Words) -> MaskedMap<V> {
        let mut used = [0u8; WORDS];
        let mut n_used = 0;
        for (i, m) in mask.iter().enumerate() {
            if *m != 0 {
                used[usize::from(n_used)] = i as u8;
                n_used += 1;
            }
        }
        MaskedMap { mask, used, n_used, table: hashbrown::HashTable::new(), seed: random_seed() }
    }

    pub fn mask(&self) -> &Words {
        &self.mask
    }

    fn used(&self) -> &[u8] {
        &self.used[..usize::from(self.n_used)]
    }

    /// The hash of `key & mask`; `key` need not be masked.
    #[inline]
    fn hash(&self, key: &Words) -> u64 {
        hash_used(self.seed, self.used(), &self.mask, key)
    }

    /// Whether `key & mask` is `stored` (a masked key of this map).
    #[inline]
    pub fn matches(&self, stored: &Words, key: &Words) -> bool {
        let (mask, used) = (&self.mask, self.used());
        used.iter().all(|&i| stored[usize::from(i)] == key[usize::from(i)] & mask[usize::from(i)])
    }

    /// The value stored for `key & mask`.
    #[inline]
    pub fn get(&self, key: &Words) -> Option<&V> {
        let hash = self.hash(key);
        self.table.find(hash, |(stored, _)| self.matches(stored, key)).map(|(_, v)| v)
    }

    /// The value for `key & mask`, inserted by `make` if absent.
    pub fn get_or_insert_with(&mut self, key: &Words, make: impl FnOnce() -> V) -> &mut V {
        let hash = self.hash(key);
        let value = masked(key, &self.mask);
        let MaskedMap { mask, used, n_used, table, seed } = self;
        let used = &used[..usize::from(*n_used)];
        let rehash = |(stored, _): &(Words, V)| hash_used(*seed, used, mask, stored);
        let entry =
            table.entry(hash, |(stored, _)| *stored == value, rehash).or_insert_with(|| (value, make()));
        &mut entry.into_mut().1
    }

    /// Removes what is stored for `key & mask`.
    pub fn remove(&mut self, key: &Words) -> Option<V> {
        let hash = self.hash(key);
        let value = masked(key, &self.mask);
        match self.table.find_entry(hash, |(stored, _)| *stored == value) {
            Ok(entry) => Some(entry.remove().0 .1),
            Err(_) => None,
        }
    }

    /// Every (masked key, value).
    /// Keeps the entries `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        self.table.retain(|(_, v)| keep(v));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Words, &V)> {
        self.table.iter().map(|(k, v)| (k, v))
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

/// A fresh random 64-bit seed (odd, so it works as a multiplier), for
/// hash tables whose keys come from the wire.
pub(crate) fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0u64) | 1
}

/// One round of word hashing: a 64x64->128 multiply by the secret seed,
/// folded (the construction foldhash uses, without its byte-stream
/// buffering, which cost a third of a cache probe here).
#[inline(always)]
pub(crate) fn mix(acc: u64, word: u64, seed: u64) -> u64 {
    let product = u128::from(acc ^ word) * u128::from(seed);
    (product as u64) ^ ((product >> 64) as u64)
}

/// Hashes the `used` words of `key & mask`.
#[inline]
fn hash_used(seed: u64, used: &[u8], mask: &Words, key: &Words) -> u64 {
    used.iter().fold(seed, |h, &i| mix(h, key[usize::from(i)] & mask[usize::from(i)], seed))
}
