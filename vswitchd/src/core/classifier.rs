//! OpenFlow tables over a packed flow key, and the megaflow cache in front
//! of them, in the manner of OVS's `lib/classifier.c` and `dpif-netdev`.
//!
//! A packet's [`FlowKey`] is packed into [`Words`]: fixed 64-bit words with
//! every field at a fixed place. A rule matches when, word by word,
//! `key & mask == value` (its value is stored pre-masked). Rules with the
//! same mask share a subtable, a hash map from masked value to rules; a
//! lookup probes each subtable once (tuple space search), highest
//! priority first, and stops once no remaining subtable can beat the best
//! match found. Costs: one hash probe per distinct mask, not one per rule.
//!
//! Translation ([`Tables::translate`]) runs the pipeline from table 0 and
//! records in a wildcard mask every field any probed subtable looked at.
//! That mask is exactly what the decision depended on, so the decision
//! holds for every packet that agrees with this one on it: the megaflow
//! ([`MegaflowCache`]) installs (mask, masked key) -> actions, and later
//! packets hit it with one probe per megaflow mask. The cache is emptied on
//! any change to the tables, so it can never give a different answer than
//! the tables themselves.
//!
//! Ties between rules of equal priority that overlap go to the rule added
//! first, deterministically (OpenFlow leaves them undefined).

use std::collections::HashMap as StdHashMap;

use super::packet::FlowKey;

/// Keys come from the wire: hashed with a per-process seed, and fast.
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;

pub const WORDS: usize = 12;
pub type Words = [u64; WORDS];

/// A field's place in the packed key: word, shift and width in bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    InPort,
    DlType,
    VlanTci,
    NwProto,
    NwTos,
    DlDst,
    NwTtl,
    DlSrc,
    TcpFlags,
    NwSrc,
    NwDst,
    TpSrc,
    TpDst,
    Ipv6SrcHi,
    Ipv6SrcLo,
    Ipv6DstHi,
    Ipv6DstLo,
    ArpSha,
    ArpTha,
    Metadata,
}

impl Field {
    /// (word, shift, bits)
    pub const fn place(self) -> (usize, u32, u32) {
        match self {
            Field::InPort => (0, 48, 16),
            Field::DlType => (0, 32, 16),
            Field::VlanTci => (0, 16, 16),
            Field::NwProto => (0, 8, 8),
            Field::NwTos => (0, 0, 8),
            Field::DlDst => (1, 16, 48),
            Field::NwTtl => (1, 8, 8),
            Field::DlSrc => (2, 16, 48),
            Field::TcpFlags => (2, 0, 16),
            Field::NwSrc => (3, 32, 32),
            Field::NwDst => (3, 0, 32),
            Field::TpSrc => (4, 48, 16),
            Field::TpDst => (4, 32, 16),
            Field::Ipv6SrcHi => (5, 0, 64),
            Field::Ipv6SrcLo => (6, 0, 64),
            Field::Ipv6DstHi => (7, 0, 64),
            Field::Ipv6DstLo => (8, 0, 64),
            Field::ArpSha => (9, 16, 48),
            Field::ArpTha => (10, 16, 48),
            Field::Metadata => (11, 0, 64),
        }
    }

    pub const ALL: [Field; 20] = [
        Field::InPort,
        Field::DlType,
        Field::VlanTci,
        Field::NwProto,
        Field::NwTos,
        Field::DlDst,
        Field::NwTtl,
        Field::DlSrc,
        Field::TcpFlags,
        Field::NwSrc,
        Field::NwDst,
        Field::TpSrc,
        Field::TpDst,
        Field::Ipv6SrcHi,
        Field::Ipv6SrcLo,
        Field::Ipv6DstHi,
        Field::Ipv6DstLo,
        Field::ArpSha,
        Field::ArpTha,
        Field::Metadata,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::InPort => "in_port",
            Field::DlType => "dl_type",
            Field::VlanTci => "vlan_tci",
            Field::NwProto => "nw_proto",
            Field::NwTos => "nw_tos",
            Field::DlDst => "dl_dst",
            Field::NwTtl => "nw_ttl",
            Field::DlSrc => "dl_src",
            Field::TcpFlags => "tcp_flags",
            Field::NwSrc => "nw_src",
            Field::NwDst => "nw_dst",
            Field::TpSrc => "tp_src",
            Field::TpDst => "tp_dst",
            Field::Ipv6SrcHi => "ipv6_src_hi",
            Field::Ipv6SrcLo => "ipv6_src_lo",
            Field::Ipv6DstHi => "ipv6_dst_hi",
            Field::Ipv6DstLo => "ipv6_dst_lo",
            Field::ArpSha => "arp_sha",
            Field::ArpTha => "arp_tha",
            Field::Metadata => "metadata",
        }
    }

    fn full_mask(self) -> u64 {
        let (_, _, bits) = self.place();
        if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        }
    }

    pub fn get(self, words: &Words) -> u64 {
        let (w, shift, _) = self.place();
        (words[w] >> shift) & self.full_mask()
    }

    pub fn set(self, words: &mut Words, value: u64) {
        let (w, shift, _) = self.place();
        let m = self.full_mask() << shift;
        words[w] = (words[w] & !m) | ((value << shift) & m);
    }
}

fn mac_u64(mac: &[u8; 6]) -> u64 {
    u64::from_be_bytes([0, 0, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]])
}

/// Packs a flow key. The VLAN field is the outer TCI with 0x1000 set when
/// a tag is present (OVS's CFI convention), so "no tag" and "VID 0" differ.
pub fn pack(key: &FlowKey, metadata: u64) -> Words {
    let mut w = [0u64; WORDS];
    let tci = key.vlans[0].map_or(0, |t| u64::from(t.tci) | 0x1000);
    Field::InPort.set(&mut w, key.in_port.into());
    Field::DlType.set(&mut w, key.dl_type.into());
    Field::VlanTci.set(&mut w, tci);
    Field::NwProto.set(&mut w, key.nw_proto.into());
    Field::NwTos.set(&mut w, key.nw_tos.into());
    Field::DlDst.set(&mut w, mac_u64(&key.dl_dst));
    Field::NwTtl.set(&mut w, key.nw_ttl.into());
    Field::DlSrc.set(&mut w, mac_u64(&key.dl_src));
    Field::TcpFlags.set(&mut w, key.tcp_flags.into());
    Field::NwSrc.set(&mut w, key.nw_src.into());
    Field::NwDst.set(&mut w, key.nw_dst.into());
    Field::TpSrc.set(&mut w, key.tp_src.into());
    Field::TpDst.set(&mut w, key.tp_dst.into());
    let half = |b: &[u8; 16], lo: bool| {
        let s = if lo { 8 } else { 0 };
        u64::from_be_bytes(b[s..s + 8].try_into().unwrap())
    };
    w[5] = half(&key.ipv6_src, false);
    w[6] = half(&key.ipv6_src, true);
    w[7] = half(&key.ipv6_dst, false);
    w[8] = half(&key.ipv6_dst, true);
    Field::ArpSha.set(&mut w, mac_u64(&key.arp_sha));
    Field::ArpTha.set(&mut w, mac_u64(&key.arp_tha));
    w[11] = metadata;
    w
}

/// A match: which bits of which fields must have which values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Match {
    pub value: Words,
    pub mask: Words,
}

impl Match {
    /// Adds `field == value` under `mask` (all ones: exact).
    pub fn with(mut self, field: Field, value: u64, mask: u64) -> Match {
        let mask = mask & field.full_mask();
        let old_mask = field.get(&self.mask);
        field.set(&mut self.mask, old_mask | mask);
        let old = field.get(&self.value) & !mask;
        field.set(&mut self.value, old | (value & mask));
        self
    }

    pub fn matches(&self, key: &Words) -> bool {
        (0..WORDS).all(|i| key[i] & self.mask[i] == self.value[i])
    }
}

fn masked(key: &Words, mask: &Words) -> Words {
    std::array::from_fn(|i| key[i] & mask[i])
}

/// What the pipeline does to a packet, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    Output(u16),
    /// Switch as a learning L2 bridge (evaluated per packet: the MAC table
    /// changes without the cache being touched).
    Normal,
    Flood,
    All,
    InPort,
    SetField(Field, u64),
    /// Decrements the IPv4 TTL or IPv6 hop limit; a packet whose TTL runs
    /// out is dropped (evaluated per packet, like NORMAL).
    DecTtl,
    Resubmit(u8),
    GotoTable(u8),
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Output(p) => write!(f, "output:{p}"),
            Action::Normal => f.write_str("NORMAL"),
            Action::Flood => f.write_str("FLOOD"),
            Action::All => f.write_str("ALL"),
            Action::InPort => f.write_str("IN_PORT"),
            Action::SetField(field, v) => write!(f, "set_field:{v:#x}->{}", field.name()),
            Action::DecTtl => f.write_str("dec_ttl"),
            Action::Resubmit(t) => write!(f, "resubmit(,{t})"),
            Action::GotoTable(t) => write!(f, "goto_table:{t}"),
        }
    }
}

/// `field=value/mask,...` for every field a mask looks at.
pub fn format_masked(value: &Words, mask: &Words) -> String {
    let parts: Vec<String> = Field::ALL
        .iter()
        .filter(|f| f.get(mask) != 0)
        .map(|f| format!("{}={:#x}/{:#x}", f.name(), f.get(value), f.get(mask)))
        .collect();
    if parts.is_empty() {
        "any".into()
    } else {
        parts.join(",")
    }
}

pub type RuleId = u64;

#[derive(Debug, Clone)]
pub struct Rule {
    pub id: RuleId,
    pub table: u8,
    pub priority: u16,
    pub matcher: Match,
    pub actions: Vec<Action>,
}

#[derive(Debug, Default)]
struct Subtable {
    mask: Words,
    max_priority: u16,
    /// How many rules have each priority, so removal keeps `max_priority`
    /// right without a scan.
    priorities: std::collections::BTreeMap<u16, usize>,
    /// Masked value -> rules, best first (priority descending, then oldest).
    rules: HashMap<Words, Vec<(u16, RuleId)>>,
}

/// One OpenFlow table.
#[derive(Debug, Default)]
pub struct Classifier {
    /// Sorted by `max_priority`, highest first.
    subtables: Vec<Subtable>,
}

impl Classifier {
    fn insert(&mut self, rule: &Rule) {
        let st = match self.subtables.iter_mut().position(|s| s.mask == rule.matcher.mask) {
            Some(i) => &mut self.subtables[i],
            None => {
                self.subtables.push(Subtable { mask: rule.matcher.mask, ..Subtable::default() });
                self.subtables.last_mut().unwrap()
            }
        };
        st.max_priority = st.max_priority.max(rule.priority);
        *st.priorities.entry(rule.priority).or_default() += 1;
        let list = st.rules.entry(rule.matcher.value).or_default();
        let at = list.partition_point(|&(p, id)| {
            (p, std::cmp::Reverse(id)) > (rule.priority, std::cmp::Reverse(rule.id))
        });
        list.insert(at, (rule.priority, rule.id));
        self.sort();
    }

    fn remove(&mut self, rule: &Rule) {
        if let Some(i) = self.subtables.iter().position(|s| s.mask == rule.matcher.mask) {
            let st = &mut self.subtables[i];
            if let Some(list) = st.rules.get_mut(&rule.matcher.value) {
                let before = list.len();
                list.retain(|&(_, id)| id != rule.id);
                if list.len() < before {
                    if let Some(n) = st.priorities.get_mut(&rule.priority) {
                        *n -= 1;
                        if *n == 0 {
                            st.priorities.remove(&rule.priority);
                        }
                    }
                }
                if list.is_empty() {
                    st.rules.remove(&rule.matcher.value);
                }
            }
            if st.rules.is_empty() {
                self.subtables.remove(i);
            } else {
                st.max_priority = st.priorities.keys().next_back().copied().unwrap_or(0);
            }
            self.sort();
        }
    }

    fn sort(&mut self) {
        self.subtables.sort_by_key(|s| std::cmp::Reverse(s.max_priority));
    }

    /// The best rule for `key`; ORs into `wildcards` every mask it probed.
    pub fn lookup(&self, key: &Words, wildcards: &mut Words) -> Option<RuleId> {
        let mut best: Option<(u16, RuleId)> = None;
        for st in &self.subtables {
            if best.is_some_and(|(p, _)| st.max_priority < p) {
                break;
            }
            for (w, m) in wildcards.iter_mut().zip(&st.mask) {
                *w |= m;
            }
            if let Some(&(p, id)) = st.rules.get(&masked(key, &st.mask)).and_then(|l| l.first()) {
                let better = match best {
                    None => true,
                    Some((bp, bid)) => p > bp || (p == bp && id < bid),
                };
                if better {
                    best = Some((p, id));
                }
            }
        }
        best.map(|(_, id)| id)
    }

    pub fn masks(&self) -> usize {
        self.subtables.len()
    }
}

/// Translation's result: the actions to execute and the fields they
/// depended on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub actions: Vec<Action>,
    /// The rules that matched on the way, for their counters.
    pub rules: Vec<RuleId>,
    pub wildcards: Words,
}

/// One table visited by a traced translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceStep {
    pub table: u8,
    /// How many resubmits or goto_tables deep.
    pub depth: usize,
    /// The rule that matched; `None`: a miss (the packet stops here).
    pub rule: Option<RuleId>,
}

/// Nested resubmits deeper than this drop the packet (OVS uses 64).
pub const MAX_RESUBMIT_DEPTH: usize = 64;

/// All tables of a bridge.
#[derive(Debug, Default)]
pub struct Tables {
    tables: HashMap<u8, Classifier>,
    rules: HashMap<RuleId, Rule>,
    next_id: RuleId,
    /// Bumped on every change; caches compare it to know they are stale.
    pub generation: u64,
}

impl Tables {
    pub fn add(&mut self, table: u8, priority: u16, matcher: Match, actions: Vec<Action>) -> RuleId {
        self.next_id += 1;
        let rule = Rule { id: self.next_id, table, priority, matcher, actions };
        self.tables.entry(table).or_default().insert(&rule);
        self.rules.insert(rule.id, rule);
        self.generation += 1;
        self.next_id
    }

    pub fn remove(&mut self, id: RuleId) -> Option<Rule> {
        let rule = self.rules.remove(&id)?;
        if let Some(c) = self.tables.get_mut(&rule.table) {
            c.remove(&rule);
        }
        self.generation += 1;
        Some(rule)
    }

    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.values()
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rule(&self, id: RuleId) -> Option<&Rule> {
        self.rules.get(&id)
    }

    /// Runs the pipeline from table 0. Field rewrites apply to the key the
    /// later tables see; outputs are emitted in order. A miss in a table
    /// ends that table's processing (OpenFlow's table-miss drop).
    pub fn translate(&self, key: &Words) -> Decision {
        let mut d = Decision { actions: Vec::new(), rules: Vec::new(), wildcards: [0; WORDS] };
        let mut working = *key;
        self.run_table(0, &mut working, &mut d, 0, &mut None);
        d
    }

    /// Like [`Tables::translate`], also saying which table was visited at
    /// which depth and what matched there (for `vsctl trace`).
    pub fn trace(&self, key: &Words) -> (Decision, Vec<TraceStep>) {
        let mut d = Decision { actions: Vec::new(), rules: Vec::new(), wildcards: [0; WORDS] };
        let mut working = *key;
        let mut steps = Some(Vec::new());
        self.run_table(0, &mut working, &mut d, 0, &mut steps);
        (d, steps.unwrap_or_default())
    }

    fn run_table(
        &self,
        table: u8,
        key: &mut Words,
        d: &mut Decision,
        depth: usize,
        trace: &mut Option<Vec<TraceStep>>,
    ) {
        if depth > MAX_RESUBMIT_DEPTH {
            return;
        }
        let Some(classifier) = self.tables.get(&table) else {
            if let Some(steps) = trace {
                steps.push(TraceStep { table, depth, rule: None });
            }
            return;
        };
        // A field rewritten earlier is known, not looked at: only bits of
        // the original key may widen the megaflow. Rewrites are rare, so
        // the conservative union below (looked-at bits of the current key)
        // keeps correctness by un-wildcarding a little more than needed.
        let found = classifier.lookup(key, &mut d.wildcards);
        if let Some(steps) = trace {
            steps.push(TraceStep { table, depth, rule: found });
        }
        let Some(id) = found else { return };
        d.rules.push(id);
        let rule = &self.rules[&id];
        for action in &rule.actions {
            match action {
                Action::SetField(field, value) => {
                    field.set(key, *value);
                    d.actions.push(action.clone());
                }
                Action::Resubmit(t) => self.run_table(*t, key, d, depth + 1, trace),
                Action::GotoTable(t) => {
                    if *t > table {
                        self.run_table(*t, key, d, depth + 1, trace);
                    }
                    return;
                }
                other => d.actions.push(other.clone()),
            }
        }
    }
}

/// A cached decision: its actions and the rules behind them. Shared, so a
/// hit hands it out with one probe and no copy.
#[derive(Debug, PartialEq, Eq)]
pub struct Cached {
    pub actions: Vec<Action>,
    pub rules: Vec<RuleId>,
    hits: std::cell::Cell<u64>,
}

type Megaflow = std::rc::Rc<Cached>;

/// Beyond this many megaflows the cache starts over, so that traffic
/// crafted to make every packet its own megaflow cannot grow it unbounded.
pub const MAX_MEGAFLOWS: usize = 65_536;

/// The megaflow cache: (mask, masked key) -> actions, one hash map per
/// distinct mask. Valid only for the tables' generation it was filled
/// from; a change empties it. Owned by one thread (it is not `Send`).
#[derive(Debug, Default)]
pub struct MegaflowCache {
    generation: u64,
    subtables: Vec<(Words, HashMap<Words, Megaflow>)>,
    pub hits: u64,
    pub misses: u64,
}

impl MegaflowCache {
    /// The decision for `key`, from the cache (one probe per megaflow mask)
    /// or, on a miss, from the tables (then installed).
    pub fn decide(&mut self, tables: &Tables, key: &Words) -> Megaflow {
        if self.generation != tables.generation || self.len() >= MAX_MEGAFLOWS {
            self.subtables.clear();
            self.generation = tables.generation;
        }
        let hit = self.subtables.iter().find_map(|(mask, flows)| flows.get(&masked(key, mask)));
        if let Some(cached) = hit {
            cached.hits.set(cached.hits.get() + 1);
            let cached = cached.clone();
            self.hits += 1;
            return cached;
        }
        self.misses += 1;
        let decision = tables.translate(key);
        let cached = std::rc::Rc::new(Cached {
            actions: decision.actions,
            rules: decision.rules,
            hits: std::cell::Cell::new(1),
        });
        let i = match self.subtables.iter().position(|(m, _)| *m == decision.wildcards) {
            Some(i) => i,
            None => {
                self.subtables.push((decision.wildcards, HashMap::default()));
                self.subtables.len() - 1
            }
        };
        let (mask, flows) = &mut self.subtables[i];
        flows.insert(masked(key, mask), cached.clone());
        cached
    }

    /// Every megaflow as (mask, masked key, actions, packets).
    pub fn entries(&self) -> impl Iterator<Item = (&Words, &Words, &[Action], u64)> {
        self.subtables
            .iter()
            .flat_map(|(mask, flows)| flows.iter().map(move |(k, e)| (mask, k, &e.actions[..], e.hits.get())))
    }

    pub fn len(&self) -> usize {
        self.subtables.iter().map(|(_, f)| f.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(in_port: u64, nw_src: u64, nw_dst: u64, tp_dst: u64) -> Words {
        let mut w = [0; WORDS];
        Field::InPort.set(&mut w, in_port);
        Field::DlType.set(&mut w, 0x0800);
        Field::NwSrc.set(&mut w, nw_src);
        Field::NwDst.set(&mut w, nw_dst);
        Field::TpDst.set(&mut w, tp_dst);
        w
    }

    fn prefix(bits: u32) -> u64 {
        if bits == 0 {
            0
        } else {
            (u32::MAX << (32 - bits)) as u64
        }
    }

    #[test]
    fn higher_priority_wins_and_prefixes_match() {
        let mut t = Tables::default();
        t.add(0, 0, Match::default(), vec![Action::Normal]);
        let drop_subnet = Match::default().with(Field::NwSrc, 0xc612_0100, prefix(24));
        let acl = t.add(0, 100, drop_subnet, vec![]);
        assert_eq!(t.translate(&key(1, 0xc612_0105, 0, 80)).actions, vec![]);
        assert_eq!(t.translate(&key(1, 0xc612_0205, 0, 80)).actions, vec![Action::Normal]);
        t.remove(acl);
        assert_eq!(t.translate(&key(1, 0xc612_0105, 0, 80)).actions, vec![Action::Normal]);
    }

    #[test]
    fn pipeline_resubmits_and_goes_to_tables() {
        let mut t = Tables::default();
        t.add(
            0,
            10,
            Match::default().with(Field::InPort, 1, u64::MAX),
            vec![Action::SetField(Field::Metadata, 7), Action::GotoTable(1)],
        );
        t.add(
            1,
            10,
            Match::default().with(Field::Metadata, 7, u64::MAX),
            vec![Action::Output(2), Action::Resubmit(2)],
        );
        t.add(2, 0, Match::default(), vec![Action::Output(3)]);
        let d = t.translate(&key(1, 0, 0, 0));
        assert_eq!(
            d.actions,
            vec![Action::SetField(Field::Metadata, 7), Action::Output(2), Action::Output(3)]
        );
        assert!(t.translate(&key(2, 0, 0, 0)).actions.is_empty(), "table 0 has no rule for port 2");
    }

    #[test]
    fn megaflow_covers_only_what_was_looked_at() {
        let mut t = Tables::default();
        t.add(0, 10, Match::default().with(Field::TpDst, 22, u64::MAX), vec![]);
        t.add(0, 0, Match::default(), vec![Action::Normal]);
        let d = t.translate(&key(1, 5, 6, 80));
        assert_eq!(Field::TpDst.get(&d.wildcards), 0xffff);
        assert_eq!(Field::NwSrc.get(&d.wildcards), 0, "nw_src was never looked at");
        let mut cache = MegaflowCache::default();
        cache.decide(&t, &key(1, 5, 6, 80));
        cache.decide(&t, &key(3, 9, 9, 80));
        assert_eq!((cache.hits, cache.misses), (1, 1));
    }

    /// The naive reference: every rule of table 0 in priority order, the
    /// oldest first among equals; no pipeline (the rules here only output).
    fn reference(rules: &[(RuleId, u16, Match, u16)], key: &Words) -> Option<u16> {
        rules
            .iter()
            .filter(|(_, _, m, _)| m.matches(key))
            .max_by(|a, b| (a.1, std::cmp::Reverse(a.0)).cmp(&(b.1, std::cmp::Reverse(b.0))))
            .map(|r| r.3)
    }

    fn arb_match() -> impl Strategy<Value = Match> {
        (
            proptest::option::of(1u64..4),
            proptest::option::of((0u64..4, 0u32..=32)),
            proptest::option::of((0u64..4, 0u32..=32)),
            proptest::option::of((0u64..4, prop_oneof![Just(0xffffu64), Just(0xfffeu64), Just(0x0001u64)])),
        )
            .prop_map(|(port, src, dst, tp)| {
                let mut m = Match::default();
                if let Some(p) = port {
                    m = m.with(Field::InPort, p, u64::MAX);
                }
                // Values spread over the top bits so prefixes bite.
                if let Some((v, bits)) = src {
                    m = m.with(Field::NwSrc, v << 30, prefix(bits));
                }
                if let Some((v, bits)) = dst {
                    m = m.with(Field::NwDst, v << 30 | v, prefix(bits));
                }
                if let Some((v, mask)) = tp {
                    m = m.with(Field::TpDst, v, mask);
                }
                m
            })
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(u16, Match),
        Remove(usize),
        Packet(u64, u64, u64, u64),
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => (0u16..6, arb_match()).prop_map(|(p, m)| Op::Add(p, m)),
            1 => any::<usize>().prop_map(Op::Remove),
            6 => (1u64..4, 0u64..4, 0u64..4, 0u64..4).prop_map(|(i, s, d, t)| Op::Packet(i, s << 30, d << 30 | d, t)),
        ]
    }

    proptest! {
        // Acceptance 1 of the flow-table issue: through random rule sets and
        // changes between packets, with entries cached meanwhile, the fast
        // path always decides what the naive reference decides.
        #[test]
        fn fast_path_equals_naive_reference(ops in proptest::collection::vec(arb_op(), 1..200)) {
            let mut tables = Tables::default();
            let mut cache = MegaflowCache::default();
            let mut rules: Vec<(RuleId, u16, Match, u16)> = Vec::new();
            let mut next_port = 100u16;
            for op in ops {
                match op {
                    Op::Add(priority, m) => {
                        next_port += 1;
                        let id = tables.add(0, priority, m.clone(), vec![Action::Output(next_port)]);
                        rules.push((id, priority, m, next_port));
                    }
                    Op::Remove(i) if !rules.is_empty() => {
                        let (id, ..) = rules.remove(i % rules.len());
                        tables.remove(id);
                    }
                    Op::Remove(_) => {}
                    Op::Packet(i, s, d, t) => {
                        let k = key(i, s, d, t);
                        let expected: Vec<Action> = reference(&rules, &k).map(Action::Output).into_iter().collect();
                        prop_assert_eq!(cache.decide(&tables, &k).actions.clone(), expected.clone());
                        prop_assert_eq!(tables.translate(&k).actions, expected);
                    }
                }
            }
        }
    }
}
