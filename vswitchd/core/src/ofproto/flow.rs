//! The packed flow key and matches on it: what every lookup, cache and
//! flow table in the core works on, in the manner of OVS's `struct flow`
//! and `struct minimask` (`lib/flow.h`).
//!
//! A packet's key is packed into [`Words`]: fixed 64-bit words with every
//! field at a fixed place ([`Field`] knows its word, shift and width). A
//! [`Match`] is a value and a mask of the same shape; a key matches when,
//! word by word, `key & mask == value` (the value is stored pre-masked).
//! Fixed places make a match a few AND/compare instructions and let the
//! caches hash only the words a mask touches.
//!
//! This is a leaf module: it depends on nothing else in the core, so the
//! parser (`packet`), the tables (`classifier`), the caches (`megaflow`),
//! the actions, conntrack, rewrite and tunnels can all name fields without
//! importing one another. Plain data, `Send` and `Sync`.

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
