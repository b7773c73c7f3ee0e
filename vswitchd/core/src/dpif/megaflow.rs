//! The fast path in front of the flow tables, as in OVS's `dpif-netdev`:
//! an exact-match cache (EMC), then the megaflow cache, then the slow path
//! ([`Tables::translate`]).
//!
//! - A **megaflow** is (mask, masked key) -> decision, where the mask is
//!   exactly what translation looked at. One [`MaskedMap`] per distinct
//!   mask; a lookup probes them in turn, hashing only the words each mask
//!   touches. Cost: one probe per megaflow mask.
//! - The **EMC** is a direct-mapped array keyed by the packet's whole key
//!   (the [`PACKET_WORDS`] that come from the packet): one hash, one slot,
//!   one compare, whatever the number of masks. It only ever points at
//!   megaflows, so it can be no more wrong than they are. It is consulted
//!   once there are at least two megaflow masks: with one, the megaflow
//!   probe is already a single probe over fewer words.
//!
//! Invariants: both caches belong to the tables' generation they were
//! filled from, and are emptied when it changes, so a cached decision is
//! always the one the tables would make now. Decisions that depend on
//! state outside the tables (NORMAL and the MAC table, `dec_ttl` and the
//! packet's TTL, output ports that may come and go) are cached as the
//! action, not its outcome, and are evaluated per packet.
//!
//! In front of both, the last megaflow hit is tried first: frames of one
//! stream arrive back to back and hit the same megaflow, which a masked
//! compare confirms without hashing. It is always right when it matches,
//! because any key that matches a megaflow gets that megaflow's decision.
//!
//! Idle megaflows go, as OVS's revalidators remove datapath flows idle for
//! `max-idle` (10 s): [`MegaflowCache::evict_idle`], called every second,
//! drops those without a hit for [`MAX_IDLE_MS`], so the cache holds what
//! traffic uses now, not every connection of the last hour. (Traffic that
//! makes a megaflow per packet still meets [`MAX_MEGAFLOWS`].)
//!
//! Counters: a hit adds the packet to its megaflow's unfolded packets and
//! bytes; [`MegaflowCache::fold`] credits them to the rules behind each
//! megaflow. Folding happens before anything reads the rules' counters or
//! changes the tables, so no per-packet lookup of a rule is needed.
//!
//! Owned by one thread (not `Send`): each datapath thread has its own.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::ofproto::actions::DpAction;
use crate::ofproto::classifier::{RuleId, Tables};
use crate::ofproto::flow::{masked, Words, PACKET_WORDS};
use crate::ofproto::masked_map::{mix, random_seed, MaskedMap};
use crate::Timestamp;

/// A cached decision: its actions and the rules behind them. Shared
/// between the megaflow and EMC entries, so a hit copies nothing.
#[derive(Debug)]
pub struct Cached {
    /// The megaflow's key, masked: what the last-hit check compares.
    masked: Words,
    pub actions: Vec<DpAction>,
    pub rules: Vec<RuleId>,
    hits: Cell<u64>,
    /// Packets, bytes and last use not yet credited to `rules`.
    unfolded: Cell<(u64, u64, Timestamp)>,
    last_hit: Cell<Timestamp>,
}

impl Cached {
    /// Counts one packet of `bytes` through this decision.
    #[inline]
    pub fn hit(&self, bytes: u64, now: Timestamp) {
        let (packets, total, _) = self.unfolded.get();
        self.unfolded.set((packets + 1, total + bytes, now));
        self.hits.set(self.hits.get() + 1);
        self.last_hit.set(now);
    }

    pub fn hits(&self) -> u64 {
        self.hits.get()
    }
}

pub type Megaflow = Rc<Cached>;

/// Beyond this many megaflows the cache starts over, so that traffic
/// crafted to make every packet its own megaflow cannot grow it unbounded.
pub const MAX_MEGAFLOWS: usize = 65_536;

/// A megaflow without a hit for this long is evicted (OVS's `max-idle`).
pub const MAX_IDLE_MS: u64 = 10_000;

/// EMC slots (a power of two); OVS has 8192. Each holds a key and a pointer.
const EMC_SLOTS: usize = 4096;

#[derive(Default)]
struct EmcSlot {
    hash: u64,
    key: [u64; PACKET_WORDS],
    flow: Option<Megaflow>,
}

struct Emc {
    slots: Box<[EmcSlot]>,
    seed: u64,
}

impl Default for Emc {
    /// Empty until first used: a bridge whose traffic makes one megaflow
    /// mask never needs the slots.
    fn default() -> Self {
        Emc { slots: Box::default(), seed: random_seed() }
    }
}

impl Emc {
    #[inline]
    fn hash(&self, key: &Words) -> u64 {
        key[..PACKET_WORDS].iter().fold(self.seed, |h, w| mix(h, *w, self.seed))
    }

    #[inline]
    fn get(&self, hash: u64, key: &Words) -> Option<&Megaflow> {
        let slot = self.slots.get(hash as usize & (EMC_SLOTS - 1))?;
        let flow = slot.flow.as_ref()?;
        (slot.hash == hash && slot.key[..] == key[..PACKET_WORDS]).then_some(flow)
    }

    fn insert(&mut self, hash: u64, key: &Words, flow: &Megaflow) {
        if self.slots.is_empty() {
            self.slots = (0..EMC_SLOTS).map(|_| EmcSlot::default()).collect();
        }
        let slot = &mut self.slots[hash as usize & (EMC_SLOTS - 1)];
        slot.hash = hash;
        slot.key.copy_from_slice(&key[..PACKET_WORDS]);
        slot.flow = Some(flow.clone());
    }

    fn clear(&mut self) {
        for slot in self.slots.iter_mut() {
            slot.flow = None;
        }
    }
}

impl std::fmt::Debug for Emc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let used = self.slots.iter().filter(|s| s.flow.is_some()).count();
        write!(f, "Emc {{ used: {used} }}")
    }
}

/// Takes every megaflow's unfolded counters, handing them to `credit` for
/// each rule behind it.
fn take_unfolded(subtables: &[MaskedMap<Megaflow>], mut credit: impl FnMut(RuleId, u64, u64, Timestamp)) {
    for flows in subtables {
        for (_, flow) in flows.iter() {
            let (packets, bytes, last) = flow.unfolded.take();
            if packets == 0 {
                continue;
            }
            for rule in &flow.rules {
                credit(*rule, packets, bytes, last);
            }
        }
    }
}

/// Counters of rules whose megaflows were dropped before being folded.
type Spilled = HashMap<RuleId, (u64, u64, Timestamp), foldhash::fast::RandomState>;

fn spill(spilled: &mut Spilled, rule: RuleId, packets: u64, bytes: u64, last: Timestamp) {
    let e = spilled.entry(rule).or_insert((0, 0, last));
    *e = (e.0 + packets, e.1 + bytes, e.2.max(last));
}

/// The EMC and megaflow cache of one thread, for one bridge's tables.
#[derive(Debug, Default)]
pub struct MegaflowCache {
    generation: u64,
    subtables: Vec<MaskedMap<Megaflow>>,
    count: usize,
    emc: Emc,
    /// The last megaflow hit and its subtable.
    last: Option<(usize, Megaflow)>,
    spilled: Spilled,
    pub hits: u64,
    pub emc_hits: u64,
    pub misses: u64,
}

impl MegaflowCache {
    /// The decision for `key`, from the EMC, the megaflows (one probe per
    /// mask) or, on a miss, the tables (then installed).
    #[inline]
    pub fn decide(&mut self, tables: &Tables, key: &Words) -> Megaflow {
        if self.generation != tables.generation {
            self.clear();
            self.generation = tables.generation;
        }
        if let Some((i, flow)) = &self.last {
            if self.subtables[*i].matches(&flow.masked, key) {
                self.hits += 1;
                return flow.clone();
            }
        }
        let use_emc = self.subtables.len() > 1;
        let emc_hash = if use_emc { self.emc.hash(key) } else { 0 };
        if use_emc {
            if let Some(flow) = self.emc.get(emc_hash, key) {
                self.emc_hits += 1;
                return flow.clone();
            }
        }
        let hit =
            self.subtables.iter().enumerate().find_map(|(i, flows)| flows.get(key).map(|f| (i, f.clone())));
        if let Some((i, flow)) = hit {
            self.hits += 1;
            if use_emc {
                self.emc.insert(emc_hash, key, &flow);
            }
            self.last = Some((i, flow.clone()));
            return flow;
        }
        self.misses += 1;
        if self.count >= MAX_MEGAFLOWS {
            self.clear();
        }
        let decision = tables.translate(key);
        let flow = Rc::new(Cached {
            masked: masked(key, &decision.wildcards),
            actions: decision.actions,
            rules: decision.rules,
            hits: Cell::new(0),
            unfolded: Cell::new((0, 0, Timestamp::default())),
            last_hit: Cell::new(Timestamp::default()),
        });
        let i = match self.subtables.iter().position(|m| *m.mask() == decision.wildcards) {
            Some(i) => i,
            None => {
                self.subtables.push(MaskedMap::new(decision.wildcards));
                self.subtables.len() - 1
            }
        };
        // Every mask was probed and missed, so this inserts.
        self.subtables[i].get_or_insert_with(key, || flow.clone());
        self.count += 1;
        self.last = Some((i, flow.clone()));
        flow
    }

    /// Empties both caches, keeping the counters they had not yet folded.
    fn clear(&mut self) {
        let spilled = &mut self.spilled;
        take_unfolded(&self.subtables, |rule, packets, bytes, last| {
            spill(spilled, rule, packets, bytes, last)
        });
        self.subtables.clear();
        self.count = 0;
        self.emc.clear();
        self.last = None;
    }

    /// Drops the megaflows without a hit in the last [`MAX_IDLE_MS`] before
    /// `now` (keeping their unfolded counters), and masks left without a
    /// megaflow; returns how many went. The EMC and the last hit are emptied
    /// if any did, so no hit lands on a megaflow that is gone.
    pub fn evict_idle(&mut self, now: Timestamp) -> usize {
        let before = self.count;
        let spilled = &mut self.spilled;
        for flows in &mut self.subtables {
            flows.retain(|flow| {
                let idle = now.millis().saturating_sub(flow.last_hit.get().millis()) >= MAX_IDLE_MS;
                if idle {
                    let (packets, bytes, last) = flow.unfolded.take();
                    if packets > 0 {
                        for rule in &flow.rules {
                            spill(spilled, *rule, packets, bytes, last);
                        }
                    }
                }
                !idle
            });
        }
        self.subtables.retain(|flows| !flows.is_empty());
        self.count = self.subtables.iter().map(|flows| flows.len()).sum();
        let evicted = before - self.count;
        if evicted > 0 {
            self.emc.clear();
            self.last = None;
        }
        evicted
    }

    /// Hands every rule's unfolded (packets, bytes, last use) to `credit`
    /// and zeroes them here.
    pub fn fold(&mut self, mut credit: impl FnMut(RuleId, u64, u64, Timestamp)) {
        for (rule, (packets, bytes, last)) in self.spilled.drain() {
            credit(rule, packets, bytes, last);
        }
        take_unfolded(&self.subtables, credit);
    }

    /// Every megaflow as (mask, masked key, actions, packets).
    pub fn entries(&self) -> impl Iterator<Item = (&Words, Words, &[DpAction], u64)> {
        self.subtables.iter().flat_map(|flows| {
            flows.iter().map(move |(k, e)| (flows.mask(), masked(k, flows.mask()), &e.actions[..], e.hits()))
        })
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}
