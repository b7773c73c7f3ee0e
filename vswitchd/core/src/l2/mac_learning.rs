//! The MAC learning table of one bridge.
//!
//! Maps (VLAN, MAC) to the port the MAC was last seen on. Entries live in
//! a hash map, inline (one probe, no pointer to follow), and a queue of
//! their keys, oldest first, says which to age or evict next. The queue is
//! kept in order lazily, as a clock (second chance) does:
//! - refreshing an entry only stamps it, O(1), without touching the queue.
//!   Every frame refreshes its source; moving its entry to the back each
//!   time (a linked hash map: unlink, relink, two more cache lines) was a
//!   fifth of the cost of switching a 64-byte frame;
//! - aging looks at the front, and only at a record queued longer ago than
//!   the aging time (a younger record's entry was last seen when it was
//!   queued or later, so it is live): its entry goes if it has expired, or
//!   goes to the back, re-queued at its stamp, if it was refreshed since; a
//!   young front record ends the sweep. So the sweep that runs before every
//!   batch costs one look at the queue's front, no hash probe, and a busy
//!   entry is re-queued by it about once per aging time (at most twice),
//!   however often it is refreshed. Re-queueing at every stamp, as the
//!   sweep first did, cost a probe and a push per source per millisecond:
//!   an eighth of the in-memory cost of a 64-byte frame;
//! - a full table evicts the front entry after re-queueing, whatever their
//!   age, the entries at the front refreshed since they were queued (an
//!   expired entry met on the way goes instead), so the victim is expired
//!   or not seen since it was queued: the least recently seen, up to the
//!   order in which re-queued entries came back. O(1) amortised (one
//!   re-queue per refresh at most), but one eviction in a full table of
//!   busy hosts can walk many of them.
//!
//! Each entry has exactly one record in the queue, the one whose time is
//! the entry's `queued_at`; a record whose entry is gone or was re-queued
//! since is stale and skipped (only `flush_port` leaves such records, and
//! it drops them at once).
//!
//! The price of laziness: re-queued entries go to the back stamped with
//! when they were last seen, so the queue is only roughly in time order.
//! An entry that expired can wait behind a live one at the front until the
//! sweep reaches it (lookups never return it, and `entries` never lists
//! it, but it counts in `len` meanwhile), and when the table is full a live
//! entry at the front can be evicted while such an expired one stays.
//!
//! A frame from the source just learned, on the same port at the same
//! datapath time (a burst: one batch shares one timestamp), changes
//! nothing, so [`MacTable::learn`] remembers the last thing it learned and
//! returns at once for it. Any other change to the table forgets it.
//!
//! Invariants: the table never holds more than `capacity` entries; a lookup
//! never returns an entry older than the aging time, even before it is
//! swept; multicast and broadcast sources are never learned.
//!
//! The hasher is seeded per process (foldhash), since source MACs come from
//! the wire and a fixed hash would let a sender force collisions.
//!
//! Threads: a [`MacTable`] is plain data (`Send` and `Sync`), changed only
//! through `&mut`; each bridge owns one, on its forwarding thread.

use std::collections::{HashMap, VecDeque};

use crate::packet::{is_multicast, Mac};
use crate::Timestamp;

pub const DEFAULT_AGING_SECS: u64 = 300;
pub const DEFAULT_CAPACITY: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacEntry {
    pub port: u16,
    pub last_seen: Timestamp,
}

/// An entry and when it took its place in the queue.
#[derive(Debug, Clone, Copy)]
struct Queued {
    entry: MacEntry,
    queued_at: Timestamp,
}

/// What [`MacTable::learn`] did, for counters and cache invalidation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    Refreshed,
    New,
    /// The MAC moved here from another port.
    Moved {
        from: u16,
    },
    /// Not learned: a multicast or broadcast source.
    Refused,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MacStats {
    pub learned: u64,
    pub moved: u64,
    pub evicted: u64,
    pub expired: u64,
}

pub struct MacTable {
    entries: HashMap<u64, Queued, foldhash::fast::RandomState>,
    /// (key, queued_at) records, oldest first.
    queue: VecDeque<(u64, Timestamp)>,
    capacity: usize,
    aging_ms: u64,
    /// (key, port, time) of the last learn, while it is still true.
    last_learned: Option<(u64, u16, Timestamp)>,
    pub stats: MacStats,
}

fn key(vlan: u16, mac: &Mac) -> u64 {
    let [v0, v1] = vlan.to_be_bytes();
    u64::from_be_bytes([v0, v1, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]])
}

fn unkey(k: u64) -> (u16, Mac) {
    let b = k.to_be_bytes();
    ((k >> 48) as u16, [b[2], b[3], b[4], b[5], b[6], b[7]])
}

impl Default for MacTable {
    fn default() -> Self {
        MacTable::new(DEFAULT_CAPACITY, DEFAULT_AGING_SECS)
    }
}

/// What the front of the queue holds, once stale records are skipped.
enum Front {
    Empty,
    /// Stamped since it was queued: it goes to the back (unless expired).
    Refreshed(u64, MacEntry),
    /// Not seen since it was queued.
    Settled(u64, MacEntry),
}

impl MacTable {
    pub fn new(capacity: usize, aging_secs: u64) -> MacTable {
        MacTable {
            entries: HashMap::with_hasher(foldhash::fast::RandomState::default()),
            queue: VecDeque::new(),
            capacity: capacity.max(1),
            aging_ms: aging_secs.saturating_mul(1000),
            last_learned: None,
            stats: MacStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn aging_secs(&self) -> u64 {
        self.aging_ms / 1000
    }

    /// Shrinking the table evicts the least recently seen entries at once.
    pub fn set_limits(&mut self, capacity: usize, aging_secs: u64) {
        self.capacity = capacity.max(1);
        self.aging_ms = aging_secs.saturating_mul(1000);
        self.last_learned = None;
        while self.entries.len() > self.capacity && self.evict_one(None).is_some() {
            self.stats.evicted += 1;
        }
    }

    fn is_live(&self, entry: &MacEntry, now: Timestamp) -> bool {
        now.millis().saturating_sub(entry.last_seen.millis()) < self.aging_ms
    }

    fn front(&mut self) -> Front {
        while let Some(&(key, queued_at)) = self.queue.front() {
            match self.entries.get(&key) {
                Some(q) if q.queued_at == queued_at => {
                    return if q.entry.last_seen > queued_at {
                        Front::Refreshed(key, q.entry)
                    } else {
                        Front::Settled(key, q.entry)
                    };
                }
                _ => {
                    self.queue.pop_front();
                }
            }
        }
        Front::Empty
    }

    /// Moves the front record, whose entry was refreshed, to the back.
    fn requeue_front(&mut self, key: u64) {
        self.queue.pop_front();
        let queued = self.entries.get_mut(&key).expect("the front record is current");
        queued.queued_at = queued.entry.last_seen;
        self.queue.push_back((key, queued.queued_at));
    }

    /// Removes the front record and its entry.
    fn remove_front(&mut self, key: u64) -> Option<MacEntry> {
        self.queue.pop_front();
        self.entries.remove(&key).map(|q| q.entry)
    }

    /// Removes the least recently seen entry, or an expired one met first
    /// (at `now`, if given), and returns it.
    fn evict_one(&mut self, now: Option<Timestamp>) -> Option<MacEntry> {
        loop {
            match self.front() {
                Front::Empty => return None,
                Front::Refreshed(key, entry) => {
                    if now.is_some_and(|now| !self.is_live(&entry, now)) {
                        return self.remove_front(key);
                    }
                    self.requeue_front(key);
                }
                Front::Settled(key, _) => return self.remove_front(key),
            }
        }
    }

    pub fn learn(&mut self, vlan: u16, mac: &Mac, port: u16, now: Timestamp) -> Learned {
        if is_multicast(mac) {
            return Learned::Refused;
        }
        let k = key(vlan, mac);
        if self.last_learned == Some((k, port, now)) {
            return Learned::Refreshed;
        }
        self.last_learned = Some((k, port, now));
        if let Some(queued) = self.entries.get_mut(&k) {
            let entry = &mut queued.entry;
            let from = entry.port;
            entry.last_seen = now;
            if from == port {
                return Learned::Refreshed;
            }
            entry.port = port;
            self.stats.moved += 1;
            return Learned::Moved { from };
        }
        if self.entries.len() >= self.capacity {
            match self.evict_one(Some(now)) {
                // Expired but not yet swept: it was going anyway.
                Some(gone) if !self.is_live(&gone, now) => self.stats.expired += 1,
                Some(_) => self.stats.evicted += 1,
                None => {}
            }
        }
        self.entries.insert(k, Queued { entry: MacEntry { port, last_seen: now }, queued_at: now });
        self.queue.push_back((k, now));
        self.stats.learned += 1;
        Learned::New
    }

    pub fn lookup(&self, vlan: u16, mac: &Mac, now: Timestamp) -> Option<u16> {
        let queued = self.entries.get(&key(vlan, mac))?;
        self.is_live(&queued.entry, now).then_some(queued.entry.port)
    }

    /// Removes entries older than the aging time that the sweep reaches
    /// (see the module's essay); returns how many.
    pub fn expire(&mut self, now: Timestamp) -> usize {
        let mut n = 0;
        while let Some(&(_, queued_at)) = self.queue.front() {
            if now.millis().saturating_sub(queued_at.millis()) < self.aging_ms {
                break;
            }
            match self.front() {
                Front::Empty => break,
                Front::Refreshed(key, entry) => {
                    if self.is_live(&entry, now) {
                        self.requeue_front(key);
                        continue;
                    }
                    self.remove_front(key);
                }
                Front::Settled(key, entry) => {
                    if self.is_live(&entry, now) {
                        break;
                    }
                    self.remove_front(key);
                }
            }
            self.last_learned = None;
            n += 1;
        }
        self.stats.expired += n as u64;
        n
    }

    pub fn flush(&mut self) {
        self.entries.clear();
        self.queue.clear();
        self.last_learned = None;
    }

    pub fn flush_port(&mut self, port: u16) {
        self.entries.retain(|_, q| q.entry.port != port);
        let entries = &self.entries;
        self.queue.retain(|(k, _)| entries.contains_key(k));
        self.last_learned = None;
    }

    /// Live entries as (VLAN, MAC, entry), least recently seen first.
    pub fn entries(&self, now: Timestamp) -> impl Iterator<Item = (u16, Mac, MacEntry)> + '_ {
        let mut live: Vec<(u16, Mac, MacEntry)> = self
            .queue
            .iter()
            .filter_map(|(k, queued_at)| {
                let q = self.entries.get(k).filter(|q| q.queued_at == *queued_at)?;
                let (vlan, mac) = unkey(*k);
                self.is_live(&q.entry, now).then_some((vlan, mac, q.entry))
            })
            .collect();
        // Stable: entries seen at the same time keep their queue order.
        live.sort_by_key(|(_, _, e)| e.last_seen);
        live.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> Mac {
        [0x02, 0, 0, 0, 0, n]
    }

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_millis(secs * 1000)
    }

    #[test]
    fn key_round_trips() {
        let m = [0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54];
        assert_eq!(unkey(key(4095, &m)), (4095, m));
    }

    #[test]
    fn learns_moves_and_keeps_vlans_apart() {
        let mut t = MacTable::default();
        assert_eq!(t.learn(0, &mac(1), 1, at(0)), Learned::New);
        assert_eq!(t.learn(0, &mac(1), 1, at(1)), Learned::Refreshed);
        assert_eq!(t.learn(0, &mac(1), 1, at(1)), Learned::Refreshed);
        assert_eq!(t.learn(0, &mac(1), 2, at(2)), Learned::Moved { from: 1 });
        assert_eq!(t.lookup(0, &mac(1), at(2)), Some(2));
        assert_eq!(t.lookup(10, &mac(1), at(2)), None);
        assert_eq!(t.learn(0, &[0x01, 0, 0x5e, 0, 0, 1], 1, at(2)), Learned::Refused);
        assert_eq!(t.learn(0, &[0xff; 6], 1, at(2)), Learned::Refused);
        assert_eq!(t.len(), 1);
        assert_eq!(t.stats.moved, 1);
    }

    #[test]
    fn ages_out_without_a_sweep_and_with_one() {
        let mut t = MacTable::new(16, 300);
        t.learn(0, &mac(1), 1, at(0));
        t.learn(0, &mac(2), 1, at(100));
        assert_eq!(t.lookup(0, &mac(1), at(299)), Some(1));
        assert_eq!(t.lookup(0, &mac(1), at(300)), None);
        assert_eq!(t.expire(at(300)), 1);
        assert_eq!(t.expire(at(399)), 0);
        assert_eq!(t.lookup(0, &mac(2), at(399)), Some(1));
    }

    #[test]
    fn full_table_evicts_the_least_recently_seen() {
        let mut t = MacTable::new(2, 300);
        t.learn(0, &mac(1), 1, at(0));
        t.learn(0, &mac(2), 1, at(1));
        t.learn(0, &mac(1), 1, at(2));
        t.learn(0, &mac(3), 1, at(3));
        assert_eq!(t.lookup(0, &mac(2), at(3)), None);
        assert_eq!(t.lookup(0, &mac(1), at(3)), Some(1));
        assert_eq!(t.stats.evicted, 1);
        t.set_limits(1, 300);
        assert_eq!(t.entries(at(3)).map(|(_, m, _)| m).collect::<Vec<_>>(), vec![mac(3)]);
    }

    #[test]
    fn a_refreshed_entry_is_requeued_by_the_sweep_and_the_stale_one_behind_it_goes() {
        let mut t = MacTable::new(16, 300);
        t.learn(0, &mac(1), 1, at(0));
        t.learn(0, &mac(2), 1, at(10));
        t.learn(0, &mac(1), 1, at(200));
        assert_eq!(t.expire(at(310)), 1, "mac 2 expired; mac 1, in front of it, was refreshed");
        assert_eq!(t.lookup(0, &mac(1), at(310)), Some(1));
        assert_eq!(t.lookup(0, &mac(2), at(310)), None);
        assert_eq!(t.expire(at(499)), 0);
        assert_eq!(t.expire(at(500)), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn a_sweep_within_the_aging_time_leaves_the_queue_alone() {
        let mut t = MacTable::new(16, 300);
        t.learn(0, &mac(1), 1, at(0));
        t.learn(0, &mac(2), 1, at(10));
        t.learn(0, &mac(1), 1, at(20));
        let before: Vec<_> = t.queue.iter().copied().collect();
        assert_eq!(t.expire(at(299)), 0);
        assert_eq!(
            t.queue.iter().copied().collect::<Vec<_>>(),
            before,
            "mac 1 was queued 299 s ago: not yet re-queued"
        );
        assert_eq!(t.expire(at(300)), 0);
        assert_eq!(t.queue.front(), Some(&(key(0, &mac(2)), at(10))), "at 300 s mac 1 goes to the back");
        assert_eq!(t.queue.back(), Some(&(key(0, &mac(1)), at(20))));
    }

    #[test]
    fn a_full_table_evicts_an_expired_refreshed_entry_before_a_live_one() {
        let mut t = MacTable::new(2, 60);
        t.learn(0, &mac(1), 1, at(0));
        t.learn(0, &mac(1), 1, at(5));
        t.learn(0, &mac(2), 1, at(10));
        // mac 1, at the front, was refreshed since it was queued but has
        // expired by 66; mac 2 is live: mac 1 must make room for mac 3.
        t.learn(0, &mac(3), 1, at(66));
        assert_eq!(t.lookup(0, &mac(2), at(66)), Some(1));
        assert_eq!(t.lookup(0, &mac(3), at(66)), Some(1));
        assert_eq!((t.stats.expired, t.stats.evicted), (1, 0));
    }

    #[test]
    fn entries_are_listed_least_recently_seen_first_whatever_the_queue_order() {
        let mut t = MacTable::new(16, 300);
        for n in 1..=3 {
            t.learn(0, &mac(n), 1, at(u64::from(n)));
        }
        t.learn(0, &mac(1), 1, at(10));
        let order: Vec<Mac> = t.entries(at(10)).map(|(_, m, _)| m).collect();
        assert_eq!(order, vec![mac(2), mac(3), mac(1)]);
    }

    proptest::proptest! {
        /// Without eviction, the lazy queue changes nothing that can be
        /// seen: lookups and listings agree with a plain map and a clock.
        #[test]
        fn agrees_with_a_plain_map(ops in proptest::collection::vec((0u8..3, 1u8..12, 1u16..4, 0u64..40), 1..200)) {
            let mut t = MacTable::new(64, 60);
            let mut model: std::collections::HashMap<u8, (u16, u64)> = Default::default();
            let mut now = 0;
            for (op, n, port, step) in ops {
                now += step;
                match op {
                    0 | 1 => {
                        t.learn(0, &mac(n), port, at(now));
                        model.insert(n, (port, now));
                    }
                    _ => {
                        t.expire(at(now));
                    }
                }
                for n in 1u8..12 {
                    let want = model.get(&n).filter(|(_, seen)| now - seen < 60).map(|(p, _)| *p);
                    proptest::prop_assert_eq!(t.lookup(0, &mac(n), at(now)), want);
                }
                let live = model.values().filter(|(_, seen)| now - seen < 60).count();
                proptest::prop_assert_eq!(t.entries(at(now)).count(), live);
                proptest::prop_assert!(t.len() >= live);
            }
        }

        /// Under eviction and port flushes: never more than the capacity,
        /// one queue record per entry, and a lookup returns the port last
        /// learned or nothing, never a stale port or an expired entry.
        #[test]
        fn stays_bounded_and_never_lies(ops in proptest::collection::vec((0u8..4, 1u8..12, 1u16..4, 0u64..40), 1..300)) {
            let mut t = MacTable::new(4, 60);
            let mut last: std::collections::HashMap<u8, (u16, u64)> = Default::default();
            let mut now = 0;
            for (op, n, port, step) in ops {
                now += step;
                match op {
                    0 | 1 => {
                        t.learn(0, &mac(n), port, at(now));
                        last.insert(n, (port, now));
                    }
                    2 => {
                        t.expire(at(now));
                    }
                    _ => {
                        t.flush_port(port);
                        last.retain(|_, (p, _)| *p != port);
                    }
                }
                proptest::prop_assert!(t.len() <= 4);
                proptest::prop_assert_eq!(t.queue.len(), t.entries.len());
                for n in 1u8..12 {
                    if let Some(p) = t.lookup(0, &mac(n), at(now)) {
                        let (want, seen) = last[&n];
                        proptest::prop_assert_eq!(p, want);
                        proptest::prop_assert!(now - seen < 60);
                    }
                }
            }
        }
    }

    #[test]
    fn a_repeated_learn_after_a_flush_learns_again() {
        let mut t = MacTable::default();
        t.learn(0, &mac(1), 1, at(0));
        t.flush_port(1);
        assert_eq!(t.learn(0, &mac(1), 1, at(0)), Learned::New);
        t.flush();
        assert_eq!(t.learn(0, &mac(1), 1, at(0)), Learned::New);
        assert_eq!(t.lookup(0, &mac(1), at(0)), Some(1));
    }
}
