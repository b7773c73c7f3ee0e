//! OpenFlow tables over a packed flow key, and the megaflow cache in front
//! of them, in the manner of OVS's `lib/classifier.c` and `dpif-netdev`.
//!
//! A packet's key is packed into [`Words`]: fixed 64-bit words with
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

use super::conntrack::CtRequest;
pub use super::megaflow::{Cached, MegaflowCache, MAX_MEGAFLOWS};

/// Keys come from the wire: hashed with a per-process seed, and fast.
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;

/// Words 0..[`PACKET_WORDS`] hold what a lookup starts from: what the
/// packet says, its tunnel, and after `ct(table=...)` the connection
/// tracker's answer and the table to go on in (`recirc`). The rest is
/// pipeline state that starts at zero for every lookup (`metadata`,
/// `reg0`-`reg7`), so the exact-match cache keys on the first part only.
pub const WORDS: usize = 19;
pub const PACKET_WORDS: usize = 14;
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
    TunId,
    /// The outer IPv4 source and destination of a tunnelled packet;
    /// `tun_dst` also picks the remote end of a `remote_ip=flow` port.
    TunSrc,
    TunDst,
    CtMark,
    CtZone,
    CtState,
    /// 0 for a packet as received; table + 1 after `ct(table=...)`.
    Recirc,
    Metadata,
    Reg(u8),
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
            Field::TunId => (11, 0, 64),
            Field::TunSrc => (12, 32, 32),
            Field::TunDst => (12, 0, 32),
            Field::CtMark => (13, 32, 32),
            Field::CtZone => (13, 16, 16),
            Field::CtState => (13, 8, 8),
            Field::Recirc => (13, 0, 8),
            Field::Metadata => (14, 0, 64),
            // Two registers per word, reg0 in the high half.
            Field::Reg(n) => (15 + (n as usize & 7) / 2, if n % 2 == 0 { 32 } else { 0 }, 32),
        }
    }

    pub const ALL: [Field; 35] = [
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
        Field::TunId,
        Field::TunSrc,
        Field::TunDst,
        Field::CtMark,
        Field::CtZone,
        Field::CtState,
        Field::Recirc,
        Field::Metadata,
        Field::Reg(0),
        Field::Reg(1),
        Field::Reg(2),
        Field::Reg(3),
        Field::Reg(4),
        Field::Reg(5),
        Field::Reg(6),
        Field::Reg(7),
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
            Field::TunId => "tun_id",
            Field::TunSrc => "tun_src",
            Field::TunDst => "tun_dst",
            Field::CtMark => "ct_mark",
            Field::CtZone => "ct_zone",
            Field::CtState => "ct_state",
            Field::Recirc => "recirc",
            Field::Metadata => "metadata",
            Field::Reg(n) => ["reg0", "reg1", "reg2", "reg3", "reg4", "reg5", "reg6", "reg7"][n as usize & 7],
        }
    }

    /// Whether the field is in the frame's bytes (a rewrite edits the
    /// frame) rather than pipeline state or tunnel metadata.
    pub fn in_frame(self) -> bool {
        !matches!(
            self,
            Field::TunId
                | Field::TunSrc
                | Field::TunDst
                | Field::Metadata
                | Field::Reg(_)
                | Field::CtMark
                | Field::CtZone
                | Field::CtState
                | Field::Recirc
        )
    }

    /// Tunnel metadata: set by actions for the tunnel port a packet leaves
    /// by, so (unlike registers) the executor must see the writes.
    pub fn is_tunnel(self) -> bool {
        matches!(self, Field::TunId | Field::TunSrc | Field::TunDst)
    }

    pub fn bits(self) -> u32 {
        self.place().2
    }

    pub fn full_mask(self) -> u64 {
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

    /// ORs `mask` (in the field's own bit positions) into `words`.
    pub fn widen(self, words: &mut Words, mask: u64) {
        let (w, shift, _) = self.place();
        words[w] |= (mask & self.full_mask()) << shift;
    }
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

pub(crate) fn masked(key: &Words, mask: &Words) -> Words {
    std::array::from_fn(|i| key[i] & mask[i])
}

/// What the pipeline does to a packet, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    Output(u16),
    /// Switch as a learning L2 bridge (evaluated per packet: the MAC table
    /// changes without the cache being touched).
    Normal,
    /// Route as an IPv4 router between the bridge's gateway subnet and its
    /// uplinks (evaluated per packet: the ARP cache changes on its own).
    Route,
    Flood,
    All,
    InPort,
    SetField(Field, u64),
    /// `load:VALUE->FIELD[a..b]`: the bits of `mask` (in the field's own
    /// positions) take `value`'s. Translation turns it into `SetField`.
    Load {
        field: Field,
        value: u64,
        mask: u64,
    },
    /// `move:SRC[a..b]->DST[c..d]`: `bits` bits copied between fields.
    /// Translation reads the source and turns it into `SetField`.
    Move {
        src: Field,
        src_shift: u32,
        dst: Field,
        dst_shift: u32,
        bits: u32,
    },
    /// Sends the packet through the connection tracker; with `table`, the
    /// packet then goes on from that table with `ct_state`, `ct_zone` and
    /// `ct_mark` set (recirculation), while this action list goes on too.
    Ct {
        request: CtRequest,
        table: Option<u8>,
    },
    /// Pushes an outer VLAN tag with this TPID, copying the VID and
    /// priority of the tag already there (zero if none), as OpenFlow says.
    PushVlan(u16),
    /// Decrements the IPv4 TTL or IPv6 hop limit; a packet whose TTL runs
    /// out is dropped (evaluated per packet, like NORMAL).
    DecTtl,
    Resubmit(u8),
    GotoTable(u8),
}

/// `FIELD[a..b]` in ovs-ofctl's notation (`FIELD[]` for all of it).
fn subfield(field: Field, shift: u32, bits: u32) -> String {
    if shift == 0 && bits == field.bits() {
        format!("{}[]", field.name())
    } else if bits <= 1 {
        format!("{}[{shift}]", field.name())
    } else {
        format!("{}[{}..{}]", field.name(), shift, shift + bits - 1)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Output(p) => write!(f, "output:{p}"),
            Action::Normal => f.write_str("NORMAL"),
            Action::Route => f.write_str("route"),
            Action::Flood => f.write_str("FLOOD"),
            Action::All => f.write_str("ALL"),
            Action::InPort => f.write_str("IN_PORT"),
            Action::SetField(field, v) => write!(f, "set_field:{v:#x}->{}", field.name()),
            Action::Load { field, value, mask } => {
                let shift = mask.trailing_zeros().min(63);
                let bits = (mask >> shift).trailing_ones();
                write!(f, "load:{:#x}->{}", (value & mask) >> shift, subfield(*field, shift, bits))
            }
            Action::Move { src, src_shift, dst, dst_shift, bits } => {
                write!(f, "move:{}->{}", subfield(*src, *src_shift, *bits), subfield(*dst, *dst_shift, *bits))
            }
            Action::PushVlan(tpid) => write!(f, "push_vlan:{tpid:#06x}"),
            Action::Ct { request, table } => {
                let mut args = Vec::new();
                if request.commit {
                    args.push("commit".to_owned());
                }
                if request.zone != 0 {
                    args.push(format!("zone={}", request.zone));
                }
                if let Some(t) = table {
                    args.push(format!("table={t}"));
                }
                if let Some((value, mask)) = request.set_mark {
                    args.push(format!("exec(set_field:{value:#x}/{mask:#x}->ct_mark)"));
                }
                if request.nat {
                    args.push(match request.nat_range {
                        None => "nat".to_owned(),
                        Some(nat) => format!("nat({})", super::conntrack::format_nat(&nat)),
                    });
                }
                write!(f, "ct({})", args.join(","))
            }
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
                Action::PushVlan(_) => {
                    // The new tag copies the old one's VID and priority.
                    Field::VlanTci.widen(&mut d.wildcards, 0xffff);
                    Field::VlanTci.set(key, Field::VlanTci.get(key) | 0x1000);
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

/// `field := value` in the working key; frame fields and the tunnel id
/// also become an action for the executor. `kept` are bits of the old
/// value the new one carries over (a partial load), which the megaflow
/// must then hold exactly.
fn write_field(key: &mut Words, d: &mut Decision, field: Field, value: u64, kept: u64) {
    if field.in_frame() || field.is_tunnel() {
        if kept != 0 {
            field.widen(&mut d.wildcards, kept);
        }
        d.actions.push(Action::SetField(field, value));
    }
    field.set(key, value);
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
