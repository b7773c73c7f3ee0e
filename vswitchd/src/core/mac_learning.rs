//! The MAC learning table of one bridge.
//!
//! Maps (VLAN, MAC) to the port the MAC was last seen on. Entries live in
//! one hash map that also keeps them in least-recently-seen order, so:
//! - refreshing an entry moves it to the back, O(1);
//! - aging pops from the front while the front entry is older than the aging
//!   time, O(expired);
//! - a full table evicts the front entry, the one seen least recently, O(1).
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

use hashlink::LinkedHashMap;

use super::packet::{is_multicast, Mac};
use super::Timestamp;

pub const DEFAULT_AGING_SECS: u64 = 300;
pub const DEFAULT_CAPACITY: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacEntry {
    pub port: u16,
    pub last_seen: Timestamp,
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
    entries: LinkedHashMap<u64, MacEntry, foldhash::fast::RandomState>,
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

impl MacTable {
    pub fn new(capacity: usize, aging_secs: u64) -> MacTable {
        MacTable {
            entries: LinkedHashMap::with_hasher(foldhash::fast::RandomState::default()),
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
        while self.entries.len() > self.capacity {
            self.entries.pop_front();
            self.stats.evicted += 1;
        }
    }

    fn is_live(&self, entry: &MacEntry, now: Timestamp) -> bool {
        now.millis().saturating_sub(entry.last_seen.millis()) < self.aging_ms
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
        if let Some(entry) = self.entries.to_back(&k) {
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
            self.entries.pop_front();
            self.stats.evicted += 1;
        }
        self.entries.insert(k, MacEntry { port, last_seen: now });
        self.stats.learned += 1;
        Learned::New
    }

    pub fn lookup(&self, vlan: u16, mac: &Mac, now: Timestamp) -> Option<u16> {
        let entry = self.entries.get(&key(vlan, mac))?;
        self.is_live(entry, now).then_some(entry.port)
    }

    /// Removes entries older than the aging time; returns how many.
    pub fn expire(&mut self, now: Timestamp) -> usize {
        let mut n = 0;
        while let Some((_, front)) = self.entries.front() {
            if self.is_live(front, now) {
                break;
            }
            self.entries.pop_front();
            self.last_learned = None;
            n += 1;
        }
        self.stats.expired += n as u64;
        n
    }

    pub fn flush(&mut self) {
        self.entries.clear();
        self.last_learned = None;
    }

    pub fn flush_port(&mut self, port: u16) {
        self.entries.retain(|_, e| e.port != port);
        self.last_learned = None;
    }

    /// Live entries as (VLAN, MAC, entry), least recently seen first.
    pub fn entries(&self, now: Timestamp) -> impl Iterator<Item = (u16, Mac, MacEntry)> + '_ {
        self.entries.iter().filter(move |(_, e)| self.is_live(e, now)).map(|(&k, &e)| {
            let (vlan, mac) = unkey(k);
            (vlan, mac, e)
        })
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
