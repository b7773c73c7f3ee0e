//! Frame parsing: an Ethernet/VLAN header view and the flow key.
//!
//! The switch must decide where a frame goes from its L2 header alone, so that
//! part is parsed here by hand over byte ranges (`mod field`) with one length
//! check up front: it is also what egress re-tagging edits. Everything above
//! (ARP, IPv4, IPv6 and its extension headers, TCP, UDP, ICMP) is read through
//! etherparse's checked header slices, one header at a time, which never copy
//! the frame; a header that fails its checks stops parsing there and the key
//! keeps what came before. (etherparse's whole-packet `LaxSlicedPacket` does
//! the same but builds a large value per frame: it cost half the L2 path.)
//!
//! A frame whose L2 header is cut short cannot be switched and is dropped with
//! a [`DropReason`]. A frame whose L3 or L4 header is malformed is still an
//! Ethernet frame: NORMAL forwards it, as OVS and the Linux bridge do, and the
//! flow key simply holds the fields that parsed ([`FlowKey::malformed`] says
//! where parsing stopped, and the port counts it).

use etherparse::{
    ArpPacketSlice, Ipv4HeaderSlice, Ipv6ExtensionsSlice, Ipv6HeaderSlice, TcpHeaderSlice, UdpHeaderSlice,
};

use super::DropReason;
use crate::ofproto::flow::{Field, Words, WORDS};

pub type Mac = [u8; 6];

pub const ETH_HEADER_LEN: usize = 14;
pub const VLAN_TAG_LEN: usize = 4;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
pub const ETHERTYPE_QINQ_OLD: u16 = 0x9100;
/// What OVS calls a frame without an Ethernet II type (an 802.3 length).
pub const ETHERTYPE_NONE: u16 = 0x05ff;

mod field {
    use std::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
}

pub fn is_multicast(mac: &Mac) -> bool {
    mac[0] & 1 != 0
}

/// 01:80:c2:00:00:00 to 01:80:c2:00:00:0f: STP, LACP, 802.1X and friends,
/// which a bridge must not forward (IEEE 802.1D 7.12.6).
pub fn is_reserved_multicast(mac: &Mac) -> bool {
    mac[..5] == [0x01, 0x80, 0xc2, 0x00, 0x00] && mac[5] & 0xf0 == 0
}

pub fn format_mac(mac: &Mac) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5])
}

pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn is_vlan_ethertype(t: u16) -> bool {
    matches!(t, ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VlanTag {
    pub tpid: u16,
    pub tci: u16,
}

impl VlanTag {
    pub fn vid(self) -> u16 {
        self.tci & 0x0fff
    }

    pub fn pcp(self) -> u8 {
        (self.tci >> 13) as u8
    }
}

/// A checked view of an Ethernet header and its outer VLAN tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2Header {
    pub dst: Mac,
    pub src: Mac,
    /// The outer tag first; a third and deeper tags stay in the payload.
    pub vlans: [Option<VlanTag>; 2],
    /// The type after the tags read.
    pub ether_type: u16,
    /// Offset of the first byte after the tags read.
    pub payload_offset: usize,
}

impl L2Header {
    #[inline]
    pub fn parse(frame: &[u8]) -> Result<L2Header, DropReason> {
        if frame.len() < ETH_HEADER_LEN {
            return Err(DropReason::Runt);
        }
        let dst: Mac = frame[field::DST].try_into().unwrap();
        let src: Mac = frame[field::SRC].try_into().unwrap();
        let mut ether_type = u16::from_be_bytes(frame[field::ETHERTYPE].try_into().unwrap());
        let mut offset = ETH_HEADER_LEN;
        let mut vlans = [None; 2];
        for slot in &mut vlans {
            if !is_vlan_ethertype(ether_type) {
                break;
            }
            let Some(tag) = frame.get(offset..offset + VLAN_TAG_LEN) else {
                return Err(DropReason::TruncatedVlan);
            };
            *slot = Some(VlanTag { tpid: ether_type, tci: u16::from_be_bytes([tag[0], tag[1]]) });
            ether_type = u16::from_be_bytes([tag[2], tag[3]]);
            offset += VLAN_TAG_LEN;
        }
        Ok(L2Header { dst, src, vlans, ether_type, payload_offset: offset })
    }

    pub fn outer_vlan(&self) -> Option<VlanTag> {
        self.vlans[0]
    }

    /// Offset of the outer tag's TPID, which is where a tag is pushed or popped.
    pub const TAG_OFFSET: usize = 12;
}

/// Where lax parsing above L2 stopped: the frame is forwarded, the port
/// counts it, and flows cannot match the fields that did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Malformation {
    Arp,
    Ipv4,
    Ipv6,
    Ipv6Extension,
    Transport,
}

impl Malformation {
    pub const ALL: [Malformation; 5] = [
        Malformation::Arp,
        Malformation::Ipv4,
        Malformation::Ipv6,
        Malformation::Ipv6Extension,
        Malformation::Transport,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Malformation::Arp => "malformed_arp",
            Malformation::Ipv4 => "malformed_ipv4",
            Malformation::Ipv6 => "malformed_ipv6",
            Malformation::Ipv6Extension => "malformed_ipv6_ext",
            Malformation::Transport => "malformed_l4",
        }
    }
}

/// The fields a flow can match, extracted once per frame (OVS's `struct flow`),
/// written straight into the classifier's packed layout ([`Words`], see
/// [`Field::place`]) so that the cache looks the key up as extracted.
/// ARP reuses the IP fields as OVS does: `nw_src`/`nw_dst` hold the sender
/// and target protocol addresses and `nw_proto` the opcode's low byte; ICMP
/// type and code live in `tp_src`/`tp_dst`. The VLAN field is the outer TCI
/// with 0x1000 set when a tag is present (OVS's CFI convention), so "no tag"
/// and "VID 0" differ. Pipeline words (metadata, registers) start at zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub words: Words,
    pub malformed: Option<Malformation>,
}

fn mac_word(mac: &Mac) -> u64 {
    u64::from_be_bytes([0, 0, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]])
}

impl FlowKey {
    /// Extracts the key; fails only when the L2 header cannot be read.
    pub fn extract(frame: &[u8], in_port: u16) -> Result<(FlowKey, L2Header), DropReason> {
        let mut key = FlowKey::default();
        let l2 = key.extract_into(frame, in_port)?;
        Ok((key, l2))
    }

    /// One field of the key.
    pub fn get(&self, field: Field) -> u64 {
        field.get(&self.words)
    }

    /// Fills this key from `frame`, overwriting every field. The per-packet
    /// path keeps one key and refills it, so nothing large moves per frame.
    /// Inlined: returned out of line, the header is copied through the
    /// stack with wide loads over narrow stores, which stalled store
    /// forwarding and cost a sixth of the cached path. Always: as the
    /// caller grew, a plain hint stopped being followed and the stall came
    /// back (a 15-25% loss on L2 forwarding).
    #[inline(always)]
    pub fn extract_into(&mut self, frame: &[u8], in_port: u16) -> Result<L2Header, DropReason> {
        let l2 = L2Header::parse(frame)?;
        let dl_type = if l2.ether_type < 0x0600 { ETHERTYPE_NONE } else { l2.ether_type };
        let tci = l2.vlans[0].map_or(0, |t| u64::from(t.tci) | 0x1000);
        // Word by word, in Field::place's layout (a test checks the two agree).
        self.words = [0; WORDS];
        self.words[0] = u64::from(in_port) << 48 | u64::from(dl_type) << 32 | tci << 16;
        self.words[1] = mac_word(&l2.dst) << 16;
        self.words[2] = mac_word(&l2.src) << 16;
        self.malformed = None;
        let payload = &frame[l2.payload_offset..];
        // Stacks of three or more tags: the rest is payload, as in OVS with vlan-limit=2.
        match l2.ether_type {
            0x0800 => self.extract_ipv4(payload),
            0x86dd => self.extract_ipv6(payload),
            0x0806 => self.extract_arp(payload),
            _ => {}
        }
        Ok(l2)
    }

    /// Sets the IP fields shared by IPv4 and IPv6 (and ARP's opcode).
    fn set_nw(&mut self, proto: u8, tos: u8, ttl: u8) {
        self.words[0] |= u64::from(proto) << 8 | u64::from(tos);
        self.words[1] |= u64::from(ttl) << 8;
    }

    fn extract_ipv4(&mut self, payload: &[u8]) {
        let Ok(ip) = Ipv4HeaderSlice::from_slice(payload) else {
            self.malformed = Some(Malformation::Ipv4);
            return;
        };
        let proto = ip.protocol().0;
        self.set_nw(proto, ip.slice()[1], ip.ttl());
        self.words[3] = u64::from(u32::from_be_bytes(ip.source())) << 32
            | u64::from(u32::from_be_bytes(ip.destination()));
        // Only the first fragment carries the transport header.
        if ip.fragments_offset().value() != 0 {
            return;
        }
        let end = usize::from(ip.total_len()).min(payload.len());
        let l4 = payload.get(ip.slice().len()..end).unwrap_or(&[]);
        self.extract_l4(proto, l4);
    }

    fn extract_ipv6(&mut self, payload: &[u8]) {
        let Ok(ip) = Ipv6HeaderSlice::from_slice(payload) else {
            self.malformed = Some(Malformation::Ipv6);
            return;
        };
        let half = |a: [u8; 16], at: usize| u64::from_be_bytes(a[at..at + 8].try_into().expect("8 bytes"));
        let (src, dst) = (ip.source(), ip.destination());
        self.words[5] = half(src, 0);
        self.words[6] = half(src, 8);
        self.words[7] = half(dst, 0);
        self.words[8] = half(dst, 8);
        let rest = &payload[ip.slice().len()..];
        // A zero payload length is a jumbogram's: the frame says how long it is.
        let rest = match usize::from(ip.payload_length()) {
            0 => rest,
            n => &rest[..n.min(rest.len())],
        };
        match Ipv6ExtensionsSlice::from_slice(ip.next_header(), rest) {
            Ok((exts, proto, l4)) => {
                self.set_nw(proto.0, ip.traffic_class(), ip.hop_limit());
                if !exts.is_fragmenting_payload() {
                    self.extract_l4(proto.0, l4);
                }
            }
            Err(_) => {
                self.set_nw(ip.next_header().0, ip.traffic_class(), ip.hop_limit());
                self.malformed = Some(Malformation::Ipv6Extension);
            }
        }
    }

    fn extract_arp(&mut self, payload: &[u8]) {
        let Ok(arp) = ArpPacketSlice::from_slice(payload) else {
            self.malformed = Some(Malformation::Arp);
            return;
        };
        // Only Ethernet/IPv4 ARP has the fields flows match on.
        if arp.hw_addr_size() == 6 && arp.proto_addr_size() == 4 {
            let mac = |b: &[u8]| mac_word(&b.try_into().unwrap_or_default());
            let ip = |b: &[u8]| u64::from(u32::from_be_bytes(b.try_into().unwrap_or_default()));
            self.set_nw(arp.operation().0 as u8, 0, 0);
            self.words[9] = mac(arp.sender_hw_addr()) << 16;
            self.words[10] = mac(arp.target_hw_addr()) << 16;
            self.words[3] = ip(arp.sender_protocol_addr()) << 32 | ip(arp.target_protocol_addr());
        }
    }

    fn set_ports(&mut self, src: u16, dst: u16) {
        self.words[4] = u64::from(src) << 48 | u64::from(dst) << 32;
    }

    fn extract_l4(&mut self, proto: u8, l4: &[u8]) {
        const TCP: u8 = 6;
        const UDP: u8 = 17;
        const UDPLITE: u8 = 136;
        const ICMP: u8 = 1;
        const ICMPV6: u8 = 58;
        match proto {
            TCP => match TcpHeaderSlice::from_slice(l4) {
                Ok(tcp) => {
                    self.set_ports(tcp.source_port(), tcp.destination_port());
                    self.words[2] |= u64::from(u16::from_be_bytes([l4[12], l4[13]]) & 0x0fff);
                }
                Err(_) => self.malformed = Some(Malformation::Transport),
            },
            UDP | UDPLITE => match UdpHeaderSlice::from_slice(l4) {
                Ok(udp) => self.set_ports(udp.source_port(), udp.destination_port()),
                Err(_) => self.malformed = Some(Malformation::Transport),
            },
            ICMP | ICMPV6 => match l4 {
                [icmp_type, code, _, _, ..] => self.set_ports((*icmp_type).into(), (*code).into()),
                _ => self.malformed = Some(Malformation::Transport),
            },
            _ => {}
        }
    }
}

/// Writes `frame` into `out` with its outer VLAN tag replaced by `vid` (and
/// the original priority kept), or removed when `vid` is `None`. Frames that
/// already carry what is wanted are not rewritten: callers check with
/// [`needs_retag`] and send the original bytes.
pub fn retag(frame: &[u8], l2: &L2Header, vid: Option<u16>, out: &mut Vec<u8>) {
    out.clear();
    let outer = l2.outer_vlan();
    let rest = if outer.is_some() { L2Header::TAG_OFFSET + VLAN_TAG_LEN } else { L2Header::TAG_OFFSET };
    out.extend_from_slice(&frame[..L2Header::TAG_OFFSET]);
    if let Some(vid) = vid {
        let pcp_dei = outer.map_or(0, |t| t.tci & 0xf000);
        let tpid = outer.map_or(ETHERTYPE_VLAN, |t| t.tpid);
        out.extend_from_slice(&tpid.to_be_bytes());
        out.extend_from_slice(&(pcp_dei | vid).to_be_bytes());
    }
    out.extend_from_slice(&frame[rest..]);
}

/// Whether sending the frame with outer VLAN `vid` (`None`: untagged)
/// changes its bytes.
pub fn needs_retag(l2: &L2Header, vid: Option<u16>) -> bool {
    match (l2.outer_vlan(), vid) {
        (None, None) => false,
        (Some(tag), Some(vid)) => tag.vid() != vid,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(dst: Mac, src: Mac, rest: &[u8]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(rest);
        f
    }

    const A: Mac = [0x02, 0, 0, 0, 0, 0xa];
    const B: Mac = [0x02, 0, 0, 0, 0, 0xb];

    #[test]
    fn runts_and_cut_tags_are_drops() {
        assert_eq!(FlowKey::extract(&[0; 13], 1).unwrap_err(), DropReason::Runt);
        let cut = eth(B, A, &[0x81, 0x00, 0x00]);
        assert_eq!(FlowKey::extract(&cut, 1).unwrap_err(), DropReason::TruncatedVlan);
    }

    #[test]
    fn extracts_udp_over_double_tag() {
        let mut rest = vec![0x88, 0xa8, 0x20, 0x64, 0x81, 0x00, 0x00, 0x0a, 0x08, 0x00];
        let ip = [
            0x45, 0x10, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2, // IPv4
            0x30, 0x39, 0x00, 0x35, 0, 8, 0, 0, // UDP 12345 -> 53
        ];
        rest.extend_from_slice(&ip);
        let (key, l2) = FlowKey::extract(&eth(B, A, &rest), 3).unwrap();
        assert_eq!(l2.vlans[0], Some(VlanTag { tpid: 0x88a8, tci: 0x2064 }));
        assert_eq!(l2.vlans[1].unwrap().vid(), 10);
        assert_eq!(l2.outer_vlan().unwrap().pcp(), 1);
        let get = |fields: &[Field]| fields.iter().map(|f| key.get(*f)).collect::<Vec<_>>();
        assert_eq!(
            get(&[Field::InPort, Field::VlanTci, Field::DlDst, Field::DlSrc]),
            [3, 0x3064, 0x0200_0000_000b, 0x0200_0000_000a]
        );
        assert_eq!(get(&[Field::DlType, Field::NwProto, Field::NwTos, Field::NwTtl]), [0x0800, 17, 0x10, 64]);
        assert_eq!(
            get(&[Field::NwSrc, Field::NwDst, Field::TpSrc, Field::TpDst]),
            [0xc612_0001, 0xc612_0002, 12345, 53]
        );
        assert_eq!(key.malformed, None);
    }

    #[test]
    fn arp_fields_reuse_nw_fields() {
        let mut rest = vec![0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1];
        rest.extend_from_slice(&A);
        rest.extend_from_slice(&[198, 18, 0, 1]);
        rest.extend_from_slice(&[0; 6]);
        rest.extend_from_slice(&[198, 18, 0, 2]);
        let (key, _) = FlowKey::extract(&eth([0xff; 6], A, &rest), 1).unwrap();
        let fields = [Field::NwProto, Field::NwSrc, Field::NwDst, Field::ArpSha, Field::ArpTha];
        assert_eq!(fields.map(|f| key.get(f)), [1, 0xc612_0001, 0xc612_0002, 0x0200_0000_000a, 0]);
    }

    #[test]
    fn malformed_ip_is_kept_as_l2() {
        let (key, _) = FlowKey::extract(&eth(B, A, &[0x08, 0x00, 0x45, 0x00]), 1).unwrap();
        assert_eq!(key.get(Field::DlType), 0x0800);
        assert_eq!(key.malformed, Some(Malformation::Ipv4));
    }

    #[test]
    fn tcp_flags_ipv6_and_an_untagged_frame() {
        let mut frame = Vec::new();
        etherparse::PacketBuilder::ethernet2(A, B)
            .ipv6([0x20; 16], [0x30; 16], 9)
            .tcp(1000, 80, 1, 100)
            .syn()
            .write(&mut frame, b"")
            .unwrap();
        let (key, _) = FlowKey::extract(&frame, 2).unwrap();
        let fields =
            [Field::VlanTci, Field::DlType, Field::NwProto, Field::NwTtl, Field::TcpFlags, Field::TpDst];
        assert_eq!(fields.map(|f| key.get(f)), [0, 0x86dd, 6, 9, 0x002, 80]);
        assert_eq!(
            (key.get(Field::Ipv6SrcHi), key.get(Field::Ipv6DstLo)),
            (0x2020_2020_2020_2020, 0x3030_3030_3030_3030)
        );
        assert_eq!(key.get(Field::NwSrc), 0, "IPv4 fields stay zero");
        // Refilling the key leaves nothing of the previous frame.
        let mut reused = key;
        reused.extract_into(&eth(B, A, &[0x88, 0xcc]), 1).unwrap();
        assert_eq!(reused, FlowKey::extract(&eth(B, A, &[0x88, 0xcc]), 1).unwrap().0);
    }

    #[test]
    fn retag_pushes_rewrites_and_pops() {
        let untagged = eth(B, A, &[0x08, 0x00, 1, 2, 3]);
        let l2 = L2Header::parse(&untagged).unwrap();
        let mut out = Vec::new();
        retag(&untagged, &l2, Some(10), &mut out);
        assert_eq!(out, eth(B, A, &[0x81, 0x00, 0x00, 0x0a, 0x08, 0x00, 1, 2, 3]));
        let tagged = out.clone();
        let l2 = L2Header::parse(&tagged).unwrap();
        assert!(!needs_retag(&l2, Some(10)));
        retag(&tagged, &l2, None, &mut out);
        assert_eq!(out, untagged);
    }

    #[test]
    fn reserved_multicast_range() {
        assert!(is_reserved_multicast(&[0x01, 0x80, 0xc2, 0, 0, 0x0e]));
        assert!(!is_reserved_multicast(&[0x01, 0x80, 0xc2, 0, 0, 0x10]));
        assert_eq!(parse_mac("02:00:00:00:00:0a"), Some(A));
        assert_eq!(parse_mac("02:00:00:00:00"), None);
        assert_eq!(format_mac(&A), "02:00:00:00:00:0a");
    }
}
