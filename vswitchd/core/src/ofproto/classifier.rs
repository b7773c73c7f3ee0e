//! OpenFlow tables over the packed flow key, in the manner of OVS's
//! `lib/classifier.c`; the megaflow cache in front of them is
//! [`crate::dpif::megaflow`], the key and matches [`crate::ofproto::flow`], the actions
//! [`crate::ofproto::actions`].
//!
//! A rule matches when, word by word, `key & mask == value` (its value is
//! stored pre-masked). Rules with the same mask share a subtable, a
//! [`MaskedMap`] from masked value to rules; a lookup probes each subtable
//! once (tuple space search), highest priority first, and stops once no
//! remaining subtable can beat the best match found. Costs: one hash probe
//! per distinct mask, not one per rule.
//!
//! Translation ([`Tables::translate`]) runs the pipeline from table 0 and
//! records in a wildcard mask every field any probed subtable looked at.
//! That mask is exactly what the decision depended on, so the decision
//! holds for every packet that agrees with this one on it: the megaflow
//! cache installs (mask, masked key) -> actions, and later packets hit it
//! with one probe per megaflow mask. The cache is emptied on any change to
//! the tables ([`Tables::generation`]), so it can never give a different
//! answer than the tables themselves.
//!
//! Ties between rules of equal priority that overlap go to the rule added
//! first, deterministically (OpenFlow leaves them undefined). Tables are
//! plain data, `Send` and `Sync`: the control plane builds them and hands
//! them to the forwarding thread.

use std::collections::HashMap as StdHashMap;

use crate::ofproto::actions::{Action, DpAction};
use crate::ofproto::flow::{Field, Match, Words, WORDS};
use crate::ofproto::masked_map::MaskedMap;

/// Keys come from the wire: hashed with a per-process seed, and fast.
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;

pub type RuleId = u64;

#[derive(Debug, Clone)]
pub struct Rule {
    pub id: RuleId,
    pub table: u8,
    pub priority: u16,
    pub matcher: Match,
    pub actions: Vec<Action>,
}

#[derive(Debug)]
struct Subtable {
    max_priority: u16,
    /// How many rules have each priority, so removal keeps `max_priority`
    /// right without a scan.
    priorities: std::collections::BTreeMap<u16, usize>,
    /// Masked value -> rules, best first (priority descending, then oldest).
    rules: MaskedMap<Vec<(u16, RuleId)>>,
}

/// One OpenFlow table.
#[derive(Debug, Default)]
pub struct Classifier {
    /// Sorted by `max_priority`, highest first.
    subtables: Vec<Subtable>,
}

impl Classifier {
    fn insert(&mut self, rule: &Rule) {
        let mask = &rule.matcher.mask;
        let st = match self.subtables.iter().position(|s| s.rules.mask() == mask) {
            Some(i) => &mut self.subtables[i],
            None => {
                self.subtables.push(Subtable {
                    max_priority: 0,
                    priorities: Default::default(),
                    rules: MaskedMap::new(*mask),
                });
                self.subtables.last_mut().expect("just pushed")
            }
        };
        st.max_priority = st.max_priority.max(rule.priority);
        *st.priorities.entry(rule.priority).or_default() += 1;
        let list = st.rules.get_or_insert_with(&rule.matcher.value, Vec::new);
        let at = list.partition_point(|&(p, id)| {
            (p, std::cmp::Reverse(id)) > (rule.priority, std::cmp::Reverse(rule.id))
        });
        list.insert(at, (rule.priority, rule.id));
        self.sort();
    }

    fn remove(&mut self, rule: &Rule) {
        let Some(i) = self.subtables.iter().position(|s| *s.rules.mask() == rule.matcher.mask) else {
            return;
        };
        let st = &mut self.subtables[i];
        let mut removed = false;
        if let Some(mut list) = st.rules.remove(&rule.matcher.value) {
            let before = list.len();
            list.retain(|&(_, id)| id != rule.id);
            removed = list.len() < before;
            if !list.is_empty() {
                *st.rules.get_or_insert_with(&rule.matcher.value, Vec::new) = list;
            }
        }
        if removed {
            if let Some(n) = st.priorities.get_mut(&rule.priority) {
                *n -= 1;
                if *n == 0 {
                    st.priorities.remove(&rule.priority);
                }
            }
        }
        if st.rules.is_empty() {
            self.subtables.remove(i);
        } else {
            st.max_priority = st.priorities.keys().next_back().copied().unwrap_or(0);
        }
        self.sort();
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
            for (w, m) in wildcards.iter_mut().zip(st.rules.mask()) {
                *w |= m;
            }
            if let Some(&(p, id)) = st.rules.get(key).and_then(|l| l.first()) {
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
    /// Only what touches the frame or its path: outputs, NORMAL, frame
    /// rewrites as `SetField`, `PushVlan`, `DecTtl`, and `SetField(TunId)`
    /// for tunnel outputs. Register and metadata writes were spent during
    /// translation.
    pub actions: Vec<DpAction>,
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
        self.trace_from(key, None).0
    }

    /// Where a lookup starts: table 0, or after `ct(table=T)`, table T.
    /// Either way the megaflow holds `recirc` exactly, so the first pass
    /// and a recirculated one never share a cache entry.
    fn start(key: &Words, d: &mut Decision) -> u8 {
        Field::Recirc.widen(&mut d.wildcards, u64::MAX);
        Field::Recirc.get(key).saturating_sub(1) as u8
    }

    /// Like [`Tables::translate`], also saying which table was visited at
    /// which depth and what matched there (for `vsctl trace`).
    pub fn trace(&self, key: &Words) -> (Decision, Vec<TraceStep>) {
        self.trace_from(key, Some(Vec::new()))
    }

    fn trace_from(&self, key: &Words, mut steps: Option<Vec<TraceStep>>) -> (Decision, Vec<TraceStep>) {
        let mut d = Decision { actions: Vec::new(), rules: Vec::new(), wildcards: [0; WORDS] };
        let mut working = *key;
        let table = Self::start(key, &mut d);
        self.run_table(table, &mut working, &mut d, 0, &mut steps);
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
                Action::SetField(field, value) => write_field(key, d, *field, *value, 0),
                Action::Load { field, value, mask } => {
                    let merged = (field.get(key) & !mask) | (value & mask);
                    write_field(key, d, *field, merged, !mask & field.full_mask());
                }
                Action::Move { src, src_shift, dst, dst_shift, bits } => {
                    let bits_mask = if *bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 };
                    // The value copied is read from the packet: the megaflow
                    // must hold it exactly.
                    src.widen(&mut d.wildcards, bits_mask << src_shift);
                    let value = (src.get(key) >> src_shift) & bits_mask;
                    let mask = (bits_mask << dst_shift) & dst.full_mask();
                    let merged = (dst.get(key) & !mask) | ((value << dst_shift) & mask);
                    write_field(key, d, *dst, merged, !mask & dst.full_mask());
                }
                Action::PushVlan(tpid) => {
                    // The new tag copies the old one's VID and priority.
                    Field::VlanTci.widen(&mut d.wildcards, 0xffff);
                    Field::VlanTci.set(key, Field::VlanTci.get(key) | 0x1000);
                    d.actions.push(DpAction::PushVlan(*tpid));
                }
                Action::Resubmit(t) => self.run_table(*t, key, d, depth + 1, trace),
                Action::GotoTable(t) => {
                    if *t > table {
                        self.run_table(*t, key, d, depth + 1, trace);
                    }
                    return;
                }
                other => d.actions.extend(DpAction::from_rule(other)),
            }
        }
    }
}

/// `field := value` in the working key; frame fields and the tunnel id
/// also become an action for the executor. `kept` are bits of the old
/// value the new one carries over (a partial load), which the megaflow
/// must then hold exactly.
fn write_field(key: &mut Words, d: &mut Decision, field: Field, value: u64, kept: u64) {
    if field.in_frame() || field.is_tunnel() {
        if kept != 0 {
            field.widen(&mut d.wildcards, kept);
        }
        d.actions.push(DpAction::SetField(field, value));
    }
    field.set(key, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dpif::megaflow::MegaflowCache;
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
        assert_eq!(t.translate(&key(1, 0xc612_0105, 0, 80)).actions, Vec::<DpAction>::new());
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
        // The metadata write is spent in translation: only outputs remain.
        assert_eq!(d.actions, vec![Action::Output(2), Action::Output(3)]);
        assert!(t.translate(&key(2, 0, 0, 0)).actions.is_empty(), "table 0 has no rule for port 2");
    }

    #[test]
    fn registers_load_and_move_steer_later_tables() {
        let mut t = Tables::default();
        // Table 0 copies in_port into reg1[16..31] and loads 5 into reg0's low byte.
        t.add(
            0,
            10,
            Match::default(),
            vec![
                Action::Move {
                    src: Field::InPort,
                    src_shift: 0,
                    dst: Field::Reg(1),
                    dst_shift: 16,
                    bits: 16,
                },
                Action::Load { field: Field::Reg(0), value: 5, mask: 0xff },
                Action::Resubmit(1),
            ],
        );
        t.add(1, 10, Match::default().with(Field::Reg(1), 3 << 16, 0xffff_0000), vec![Action::Output(9)]);
        t.add(1, 5, Match::default().with(Field::Reg(0), 5, u64::MAX), vec![Action::Output(7)]);
        let d = t.translate(&key(3, 0, 0, 0));
        assert_eq!(d.actions, vec![Action::Output(9)]);
        assert_eq!(Field::InPort.get(&d.wildcards), 0xffff, "the moved source is part of the megaflow");
        assert_eq!(t.translate(&key(2, 0, 0, 0)).actions, vec![Action::Output(7)]);
    }

    #[test]
    fn partial_load_of_a_frame_field_becomes_a_whole_set_field() {
        let mut t = Tables::default();
        t.add(0, 1, Match::default(), vec![Action::Load { field: Field::NwDst, value: 0x09, mask: 0xff }]);
        let d = t.translate(&key(1, 0, 0xc612_0002, 0));
        assert_eq!(d.actions, vec![Action::SetField(Field::NwDst, 0xc612_0009)]);
        assert_eq!(Field::NwDst.get(&d.wildcards), 0xffff_ff00, "the kept bits were read");
        let d = t.translate(&key(1, 0, 0, 0));
        assert_eq!(d.actions, vec![Action::SetField(Field::NwDst, 0x09)]);
    }

    #[test]
    fn push_vlan_marks_a_tag_present_for_later_tables() {
        let mut t = Tables::default();
        t.add(0, 1, Match::default(), vec![Action::PushVlan(0x8100), Action::Resubmit(1)]);
        t.add(1, 1, Match::default().with(Field::VlanTci, 0x1000, 0x1000), vec![Action::Output(2)]);
        let d = t.translate(&key(1, 0, 0, 0));
        assert_eq!(d.actions, vec![Action::PushVlan(0x8100), Action::Output(2)]);
        assert_eq!(Action::PushVlan(0x88a8).to_string(), "push_vlan:0x88a8");
        let mv =
            Action::Move { src: Field::InPort, src_shift: 0, dst: Field::Reg(1), dst_shift: 16, bits: 16 };
        assert_eq!(mv.to_string(), "move:in_port[]->reg1[16..31]");
        assert_eq!(
            Action::Load { field: Field::Reg(0), value: 5, mask: 0xff }.to_string(),
            "load:0x5->reg0[0..7]"
        );
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
        Add(u16, Box<Match>),
        Remove(usize),
        Packet(u64, u64, u64, u64),
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => (0u16..6, arb_match()).prop_map(|(p, m)| Op::Add(p, Box::new(m))),
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
                        let id = tables.add(0, priority, (*m).clone(), vec![Action::Output(next_port)]);
                        rules.push((id, priority, *m, next_port));
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
