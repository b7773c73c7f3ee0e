//! Tunnels without I/O: VXLAN (RFC 7348) and GRE carrying Ethernet
//! (RFC 2784 with the RFC 2890 key, protocol 0x6558 "transparent Ethernet
//! bridging", what Linux calls `gretap`), as OVS's tunnel ports carry them.
//!
//! The outer IPv4 header, and VXLAN's UDP header, are the kernel's: the
//! shell sends through a UDP socket or a raw IP socket, so the host's
//! routes and ARP reach the remote end, and the kernel fragments an outer
//! packet that is too big for the path (the sockets say IP_PMTUDISC_DONT)
//! instead of dropping it. So a tunnel port adds only the VXLAN or GRE
//! header ([`encap`]), and takes off what its socket hands it: a UDP
//! payload ([`decap_vxlan`]) or a whole IPv4 packet ([`decap_gre_packet`]).
//! [`decap_frame`] does the same for a captured Ethernet frame, which is
//! how golden tests read tcpdump's captures.
//!
//! Which port a received packet belongs to ([`TunnelMap::find`]) follows
//! OVS (`ofproto/tunnel.c`): ports are keyed by (remote IP, key); a port
//! with `remote_ip=flow` accepts any source and one with `key=flow` any
//! key, and the most specific port wins. A packet no port accepts is a
//! counted drop: `unknown_key` if a port knows its source, `wrong_source`
//! if none does.
//!
//! The tunnel metadata of a packet ([`TunnelMeta`]: key, outer source and
//! destination) is part of its flow key (`tun_id`, `tun_src`, `tun_dst`).
//! On output it picks the key of a `key=flow` port and the remote end of a
//! `remote_ip=flow` port; ports with a fixed key or remote ignore it.
//!
//! Threads: [`TunnelConfig`] and [`TunnelMap`] are plain data (`Send` and
//! `Sync`), built by the control plane, read by the forwarding thread.

pub mod gro;
pub mod receive;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::ofproto::flow::{Field, Words};
use crate::wire::{gre, vxlan, GrePacket, VxlanPacket};

/// IANA's VXLAN port; Linux's old default, 8472, is `options:dst_port=8472`.
pub const VXLAN_PORT: u16 = 4789;
pub const VXLAN_HEADER_LEN: usize = vxlan::HEADER_LEN;
/// GRE's protocol number for an Ethernet frame.
pub const ETHERTYPE_TEB: u16 = 0x6558;
pub const IPPROTO_GRE: u8 = crate::wire::ip_protocol::GRE;
/// What VXLAN adds to an inner frame on the wire: IPv4, UDP and VXLAN
/// headers. The inner MTU that avoids fragmentation on a 1500-byte
/// underlay is 1500 - 14 (inner Ethernet) - 36 = 1450, Docker's overlay MTU.
pub const VXLAN_OVERHEAD: usize = 20 + 8 + VXLAN_HEADER_LEN;
/// IPv4 and a GRE header with a key: an inner MTU of 1500 - 14 - 28 = 1458.
pub const GRE_OVERHEAD: usize = 20 + 8;

const ETH_HEADER_LEN: usize = crate::wire::ethernet::HEADER_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TunnelKind {
    Vxlan,
    Gre,
}

impl TunnelKind {
    pub fn parse(kind: &str) -> Option<TunnelKind> {
        match kind {
            "vxlan" => Some(TunnelKind::Vxlan),
            "gre" => Some(TunnelKind::Gre),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TunnelKind::Vxlan => "vxlan",
            TunnelKind::Gre => "gre",
        }
    }

    /// The widest key the header carries: a 24-bit VNI, a 32-bit GRE key.
    pub fn max_key(self) -> u64 {
        match self {
            TunnelKind::Vxlan => 0xff_ffff,
            TunnelKind::Gre => u64::from(u32::MAX),
        }
    }
}

/// The remote end: fixed, or `flow` (from `tun_dst` when sending, any
/// source when receiving).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Remote {
    Ip(Ipv4Addr),
    Flow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TunnelKey {
    /// GRE without a key field (VXLAN always has a VNI; its default is 0).
    Absent,
    Fixed(u32),
    /// From `tun_id` when sending; any key when receiving.
    Flow,
}

/// A tunnel port's options, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TunnelConfig {
    pub kind: TunnelKind,
    pub remote: Remote,
    pub local: Option<Ipv4Addr>,
    pub key: TunnelKey,
    /// VXLAN's UDP port (0 for GRE).
    pub dst_port: u16,
}

/// The socket a tunnel port sends and receives through; ports with the
/// same endpoint share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub kind: TunnelKind,
    /// 0.0.0.0 unless `options:local_ip` names an address.
    pub local: Ipv4Addr,
    pub port: u16,
}

impl TunnelConfig {
    /// Reads `options:remote_ip`, `local_ip`, `key` and (VXLAN) `dst_port`,
    /// as OVS's `vswitch.xml` defines them; anything else is refused so a
    /// misspelt option does not go unnoticed.
    pub fn from_options(
        kind: TunnelKind,
        options: &BTreeMap<String, String>,
    ) -> Result<TunnelConfig, String> {
        let ip = |name: &str, v: &str| {
            v.parse::<Ipv4Addr>().map_err(|_| {
                format!("options:{name}={v:?} is not an IPv4 address (IPv6 underlays are not supported)")
            })
        };
        let mut config = TunnelConfig {
            kind,
            remote: Remote::Flow,
            local: None,
            key: if kind == TunnelKind::Vxlan { TunnelKey::Fixed(0) } else { TunnelKey::Absent },
            dst_port: if kind == TunnelKind::Vxlan { VXLAN_PORT } else { 0 },
        };
        let mut has_remote = false;
        for (name, value) in options {
            match name.as_str() {
                "remote_ip" => {
                    has_remote = true;
                    config.remote = if value == "flow" { Remote::Flow } else { Remote::Ip(ip(name, value)?) };
                }
                "local_ip" => config.local = Some(ip(name, value)?),
                "key" | "in_key" | "out_key" if value == "flow" => config.key = TunnelKey::Flow,
                "key" => {
                    let key = crate::ofproto::ofctl::parse_num(value)
                        .filter(|k| *k <= kind.max_key())
                        .ok_or_else(|| {
                            format!(
                                "options:key={value:?} is not a {} key: use 0 to {:#x}, or flow",
                                kind.name(),
                                kind.max_key()
                            )
                        })?;
                    config.key = TunnelKey::Fixed(key as u32);
                }
                "dst_port" if kind == TunnelKind::Vxlan => {
                    config.dst_port = value.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
                        format!("options:dst_port={value:?} is not a UDP port (1 to 65535)")
                    })?;
                }
                _ => {
                    return Err(format!(
                        "type={} interfaces take options remote_ip, local_ip, key{}; not {name}",
                        kind.name(),
                        if kind == TunnelKind::Vxlan { ", dst_port" } else { "" }
                    ))
                }
            }
        }
        if !has_remote {
            return Err(format!(
                "a type={} interface needs options:remote_ip (an IPv4 address, or flow)",
                kind.name()
            ));
        }
        Ok(config)
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint { kind: self.kind, local: self.local.unwrap_or(Ipv4Addr::UNSPECIFIED), port: self.dst_port }
    }

    /// What goes on the wire beyond the inner frame.
    pub fn overhead(&self) -> usize {
        match self.kind {
            TunnelKind::Vxlan => VXLAN_OVERHEAD,
            TunnelKind::Gre => GRE_OVERHEAD,
        }
    }
}

/// A packet's tunnel: key, outer source and destination (0 when it came
/// from no tunnel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TunnelMeta {
    pub id: u64,
    pub src: u32,
    pub dst: u32,
}

impl TunnelMeta {
    pub fn from_words(words: &Words) -> TunnelMeta {
        TunnelMeta {
            id: Field::TunId.get(words),
            src: Field::TunSrc.get(words) as u32,
            dst: Field::TunDst.get(words) as u32,
        }
    }

    pub fn store(&self, words: &mut Words) {
        Field::TunId.set(words, self.id);
        Field::TunSrc.set(words, u64::from(self.src));
        Field::TunDst.set(words, u64::from(self.dst));
    }
}

/// Why a tunnel packet was dropped, counted per reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TunnelDrop {
    /// Shorter than its headers say.
    Truncated,
    /// Flags or a version this switch does not speak (VXLAN without the
    /// VNI flag, GRE with routing or version 1), or a fragment.
    BadHeader,
    /// A GRE packet carrying something other than Ethernet.
    NotEthernet,
    /// From a known remote end, with a key no port has.
    UnknownKey,
    /// From an address no port has as its remote.
    WrongSource,
    /// Sent to a `remote_ip=flow` port without a `tun_dst`.
    NoRemote,
    /// Outgoing, with a `tun_id` wider than the header's key.
    KeyTooWide,
}

impl TunnelDrop {
    pub const ALL: [TunnelDrop; 7] = [
        TunnelDrop::Truncated,
        TunnelDrop::BadHeader,
        TunnelDrop::NotEthernet,
        TunnelDrop::UnknownKey,
        TunnelDrop::WrongSource,
        TunnelDrop::NoRemote,
        TunnelDrop::KeyTooWide,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TunnelDrop::Truncated => "tunnel_truncated",
            TunnelDrop::BadHeader => "tunnel_bad_header",
            TunnelDrop::NotEthernet => "tunnel_not_ethernet",
            TunnelDrop::UnknownKey => "tunnel_unknown_key",
            TunnelDrop::WrongSource => "tunnel_wrong_source",
            TunnelDrop::NoRemote => "tx_tunnel_no_remote",
            TunnelDrop::KeyTooWide => "tx_tunnel_key_too_wide",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A VXLAN or GRE header, ready to go in front of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    bytes: [u8; 8],
    len: u8,
}

impl Header {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Where a frame sent out of a port with `config` goes, and the header
/// it gets, given the packet's tunnel metadata.
pub fn encap(config: &TunnelConfig, meta: &TunnelMeta) -> Result<(Ipv4Addr, Header), TunnelDrop> {
    let remote = match config.remote {
        Remote::Ip(ip) => ip,
        Remote::Flow if meta.dst != 0 => Ipv4Addr::from(meta.dst),
        Remote::Flow => return Err(TunnelDrop::NoRemote),
    };
    let key = match config.key {
        TunnelKey::Absent => None,
        TunnelKey::Fixed(k) => Some(k),
        TunnelKey::Flow if meta.id <= config.kind.max_key() => Some(meta.id as u32),
        TunnelKey::Flow => return Err(TunnelDrop::KeyTooWide),
    };
    let mut bytes = [0u8; 8];
    let len = match config.kind {
        TunnelKind::Vxlan => {
            let mut vxlan = VxlanPacket::new_unchecked(&mut bytes[..]);
            vxlan.set_flags(vxlan::FLAG_VNI);
            vxlan.set_vni(key.unwrap_or(0));
            vxlan::HEADER_LEN
        }
        TunnelKind::Gre => {
            let mut gre = GrePacket::new_unchecked(&mut bytes[..]);
            gre.set_flags(if key.is_some() { gre::FLAG_KEY } else { 0 });
            gre.set_protocol(ETHERTYPE_TEB);
            if let Some(k) = key {
                gre.set_key(k);
            }
            gre.header_len()
        }
    } as u8;
    Ok((remote, Header { bytes, len }))
}

/// The VNI and inner frame of a VXLAN UDP payload.
pub fn decap_vxlan(payload: &[u8]) -> Result<(u32, &[u8]), TunnelDrop> {
    let vxlan = VxlanPacket::new_checked(payload).map_err(|_| TunnelDrop::Truncated)?;
    // RFC 7348: the I flag must be set; reserved bits are ignored.
    if !vxlan.has_vni() {
        return Err(TunnelDrop::BadHeader);
    }
    let inner = &payload[vxlan::HEADER_LEN..];
    if inner.len() < ETH_HEADER_LEN {
        return Err(TunnelDrop::Truncated);
    }
    Ok((vxlan.vni(), inner))
}

/// The key and inner frame of a GRE header and what follows it.
pub fn decap_gre(gre: &[u8]) -> Result<(Option<u32>, &[u8]), TunnelDrop> {
    // The fixed header first, so that what is refused for its flags or
    // protocol is counted so even when its optional words are cut short.
    let Some(fixed) = gre.get(..gre::HEADER_LEN).map(GrePacket::new_unchecked) else {
        return Err(TunnelDrop::Truncated);
    };
    if fixed.flags() & (gre::FLAG_ROUTING | gre::VERSION) != 0 {
        return Err(TunnelDrop::BadHeader);
    }
    if fixed.protocol() != ETHERTYPE_TEB {
        return Err(TunnelDrop::NotEthernet);
    }
    // Checksum and sequence number words are skipped over.
    let header = GrePacket::new_checked(gre).map_err(|_| TunnelDrop::Truncated)?;
    let inner = &gre[header.header_len()..];
    if inner.len() < ETH_HEADER_LEN {
        return Err(TunnelDrop::Truncated);
    }
    Ok((header.key(), inner))
}

/// A tunnel packet taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decapsulated<'a> {
    pub kind: TunnelKind,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// The VNI or GRE key; `None` for GRE without one.
    pub key: Option<u32>,
    pub inner: &'a [u8],
}

impl Decapsulated<'_> {
    pub fn meta(&self) -> TunnelMeta {
        TunnelMeta { id: u64::from(self.key.unwrap_or(0)), src: self.src.into(), dst: self.dst.into() }
    }
}

/// A GRE packet as a raw IPv4 socket delivers it (IP header first).
pub fn decap_gre_packet(packet: &[u8]) -> Result<Decapsulated<'_>, TunnelDrop> {
    let ip = etherparse::Ipv4Slice::from_slice(packet).map_err(|_| TunnelDrop::Truncated)?;
    if ip.payload().fragmented {
        return Err(TunnelDrop::BadHeader);
    }
    if ip.payload().ip_number.0 != IPPROTO_GRE {
        return Err(TunnelDrop::BadHeader);
    }
    let (key, inner) = decap_gre(ip.payload().payload)?;
    let h = ip.header();
    Ok(Decapsulated { kind: TunnelKind::Gre, src: h.source_addr(), dst: h.destination_addr(), key, inner })
}

/// A captured Ethernet frame carrying VXLAN (UDP to `vxlan_port`) or GRE
/// over IPv4 or IPv6, taken apart. An IPv6 underlay's addresses are not
/// kept (the switch's tunnels are IPv4): they read as 0.0.0.0.
pub fn decap_frame(frame: &[u8], vxlan_port: u16) -> Result<Decapsulated<'_>, TunnelDrop> {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let packet = SlicedPacket::from_ethernet(frame).map_err(|_| TunnelDrop::Truncated)?;
    let (src, dst, payload) = match &packet.net {
        Some(NetSlice::Ipv4(ip)) => (ip.header().source_addr(), ip.header().destination_addr(), ip.payload()),
        Some(NetSlice::Ipv6(ip)) => (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, ip.payload()),
        _ => return Err(TunnelDrop::BadHeader),
    };
    if payload.fragmented {
        return Err(TunnelDrop::BadHeader);
    }
    match (&packet.transport, payload.ip_number.0) {
        (Some(TransportSlice::Udp(udp)), _) if udp.destination_port() == vxlan_port => {
            let (vni, inner) = decap_vxlan(udp.payload())?;
            Ok(Decapsulated { kind: TunnelKind::Vxlan, src, dst, key: Some(vni), inner })
        }
        (_, IPPROTO_GRE) => {
            let (key, inner) = decap_gre(payload.payload)?;
            Ok(Decapsulated { kind: TunnelKind::Gre, src, dst, key, inner })
        }
        _ => Err(TunnelDrop::BadHeader),
    }
}

/// The tunnel ports of one endpoint, to find which one a received packet
/// belongs to. `P` is whatever names a port to the caller.
#[derive(Debug, Clone)]
pub struct TunnelMap<P> {
    ports: Vec<(TunnelConfig, P)>,
}

impl<P> Default for TunnelMap<P> {
    fn default() -> Self {
        TunnelMap { ports: Vec::new() }
    }
}

impl<P> TunnelMap<P> {
    pub fn insert(&mut self, config: TunnelConfig, port: P) {
        self.ports.push((config, port));
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    pub fn ports(&self) -> impl Iterator<Item = &(TunnelConfig, P)> {
        self.ports.iter()
    }

    /// The port a packet from `src` with `key` belongs to: exact remote and
    /// key first, then a flow remote, then a flow key, then both flow.
    pub fn find(&self, src: Ipv4Addr, key: Option<u32>) -> Result<&(TunnelConfig, P), TunnelDrop> {
        let remote_is = |c: &TunnelConfig, exact: bool| match c.remote {
            Remote::Ip(ip) => exact && ip == src,
            Remote::Flow => !exact,
        };
        let key_is = |c: &TunnelConfig, exact: bool| match (c.key, key) {
            (TunnelKey::Fixed(k), Some(got)) => exact && k == got,
            (TunnelKey::Absent, None) => exact,
            (TunnelKey::Flow, _) => !exact,
            _ => false,
        };
        for (exact_remote, exact_key) in [(true, true), (false, true), (true, false), (false, false)] {
            if let Some(found) =
                self.ports.iter().find(|(c, _)| remote_is(c, exact_remote) && key_is(c, exact_key))
            {
                return Ok(found);
            }
        }
        let knows_source = self.ports.iter().any(|(c, _)| matches!(c.remote, Remote::Ip(ip) if ip == src));
        Err(if knows_source { TunnelDrop::UnknownKey } else { TunnelDrop::WrongSource })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn vxlan(pairs: &[(&str, &str)]) -> TunnelConfig {
        TunnelConfig::from_options(TunnelKind::Vxlan, &options(pairs)).unwrap()
    }

    const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
    const OTHER: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 3);

    #[test]
    fn options_are_checked_with_errors_that_say_what_to_use() {
        let c = vxlan(&[("remote_ip", "198.19.0.2"), ("key", "42")]);
        assert_eq!(
            c,
            TunnelConfig {
                kind: TunnelKind::Vxlan,
                remote: Remote::Ip(REMOTE),
                local: None,
                key: TunnelKey::Fixed(42),
                dst_port: 4789,
            }
        );
        let gre = TunnelConfig::from_options(TunnelKind::Gre, &options(&[("remote_ip", "flow")])).unwrap();
        assert_eq!((gre.remote, gre.key, gre.dst_port), (Remote::Flow, TunnelKey::Absent, 0));
        let refused =
            |kind, pairs: &[(&str, &str)]| TunnelConfig::from_options(kind, &options(pairs)).unwrap_err();
        assert!(refused(TunnelKind::Vxlan, &[]).contains("needs options:remote_ip"));
        assert!(refused(TunnelKind::Vxlan, &[("remote_ip", "host")]).contains("not an IPv4 address"));
        assert!(refused(TunnelKind::Vxlan, &[("remote_ip", "flow"), ("key", "0x1000000")])
            .contains("0 to 0xffffff"));
        assert!(refused(TunnelKind::Vxlan, &[("remote_ip", "flow"), ("dst_port", "0")]).contains("UDP port"));
        assert!(
            refused(TunnelKind::Gre, &[("remote_ip", "flow"), ("dst_port", "1")]).contains("not dst_port")
        );
        assert!(refused(TunnelKind::Gre, &[("remote_ip", "flow"), ("remot_ip", "1")]).contains("remot_ip"));
    }

    #[test]
    fn vxlan_header_round_trips_with_the_vni() {
        let c = vxlan(&[("remote_ip", "198.19.0.2"), ("key", "0xabcdef")]);
        let (remote, header) = encap(&c, &TunnelMeta::default()).unwrap();
        assert_eq!(remote, REMOTE);
        assert_eq!(header.as_bytes(), [0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0]);
        let inner = [0x5a; 60];
        let payload = [header.as_bytes(), &inner].concat();
        assert_eq!(decap_vxlan(&payload), Ok((0xab_cdef, &inner[..])));
        assert_eq!(decap_vxlan(&payload[..7]), Err(TunnelDrop::Truncated));
        assert_eq!(decap_vxlan(&payload[..20]), Err(TunnelDrop::Truncated));
        let mut no_flag = payload.clone();
        no_flag[0] = 0;
        assert_eq!(decap_vxlan(&no_flag), Err(TunnelDrop::BadHeader));
    }

    #[test]
    fn gre_header_has_a_key_only_when_configured() {
        let gre =
            |pairs: &[(&str, &str)]| TunnelConfig::from_options(TunnelKind::Gre, &options(pairs)).unwrap();
        let (_, keyless) = encap(&gre(&[("remote_ip", "198.19.0.2")]), &TunnelMeta::default()).unwrap();
        assert_eq!(keyless.as_bytes(), [0, 0, 0x65, 0x58]);
        let (_, keyed) =
            encap(&gre(&[("remote_ip", "198.19.0.2"), ("key", "7")]), &TunnelMeta::default()).unwrap();
        assert_eq!(keyed.as_bytes(), [0x20, 0, 0x65, 0x58, 0, 0, 0, 7]);
        let inner = [0x5a; 60];
        assert_eq!(decap_gre(&[keyed.as_bytes(), &inner].concat()), Ok((Some(7), &inner[..])));
        assert_eq!(decap_gre(&[keyless.as_bytes(), &inner].concat()), Ok((None, &inner[..])));
        // Checksum and sequence number are skipped over.
        let full = [&[0xb0, 0, 0x65, 0x58, 0xaa, 0xbb, 0, 0, 0, 0, 0, 9, 0, 0, 0, 1][..], &inner].concat();
        assert_eq!(decap_gre(&full), Ok((Some(9), &inner[..])));
        assert_eq!(decap_gre(&[&[0, 0, 0x08, 0][..], &inner].concat()), Err(TunnelDrop::NotEthernet));
        assert_eq!(decap_gre(&[&[0x40, 0, 0x65, 0x58][..], &inner].concat()), Err(TunnelDrop::BadHeader));
        assert_eq!(decap_gre(&[&[0, 1, 0x65, 0x58][..], &inner].concat()), Err(TunnelDrop::BadHeader));
        assert_eq!(decap_gre(&keyed.as_bytes()[..6]), Err(TunnelDrop::Truncated));
    }

    #[test]
    fn flow_based_ports_take_key_and_remote_from_the_metadata() {
        let c = vxlan(&[("remote_ip", "flow"), ("key", "flow")]);
        assert_eq!(encap(&c, &TunnelMeta { id: 5, src: 0, dst: 0 }), Err(TunnelDrop::NoRemote));
        let meta = TunnelMeta { id: 0x77, src: 0, dst: u32::from(OTHER) };
        let (remote, header) = encap(&c, &meta).unwrap();
        assert_eq!((remote, &header.as_bytes()[4..]), (OTHER, &[0, 0, 0x77, 0][..]));
        let wide = TunnelMeta { id: 0x100_0000, ..meta };
        assert_eq!(encap(&c, &wide), Err(TunnelDrop::KeyTooWide));
        let mut words = [0; crate::ofproto::flow::WORDS];
        meta.store(&mut words);
        assert_eq!(TunnelMeta::from_words(&words), meta);
    }

    #[test]
    fn the_most_specific_port_takes_a_packet_and_the_rest_are_counted() {
        let mut map = TunnelMap::default();
        map.insert(vxlan(&[("remote_ip", "198.19.0.2"), ("key", "10")]), "exact");
        map.insert(vxlan(&[("remote_ip", "flow"), ("key", "10")]), "any-remote");
        map.insert(vxlan(&[("remote_ip", "198.19.0.2"), ("key", "flow")]), "any-key");
        let find = |map: &TunnelMap<&'static str>, src, key| map.find(src, key).map(|(_, p)| *p);
        assert_eq!(find(&map, REMOTE, Some(10)), Ok("exact"));
        assert_eq!(find(&map, OTHER, Some(10)), Ok("any-remote"));
        assert_eq!(find(&map, REMOTE, Some(11)), Ok("any-key"));
        assert_eq!(find(&map, OTHER, Some(11)), Err(TunnelDrop::WrongSource));
        let mut fixed = TunnelMap::default();
        fixed.insert(vxlan(&[("remote_ip", "198.19.0.2"), ("key", "10")]), "exact");
        assert_eq!(find(&fixed, REMOTE, Some(11)), Err(TunnelDrop::UnknownKey));
        let mut keyless = TunnelMap::default();
        keyless.insert(
            TunnelConfig::from_options(TunnelKind::Gre, &options(&[("remote_ip", "198.19.0.2")])).unwrap(),
            "gre",
        );
        assert_eq!(find(&keyless, REMOTE, None), Ok("gre"));
        assert_eq!(find(&keyless, REMOTE, Some(1)), Err(TunnelDrop::UnknownKey));
    }
}
