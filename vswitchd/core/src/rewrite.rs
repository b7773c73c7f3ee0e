//! Field rewrites on a frame (the `mod_*` and `set_field` actions), with
//! checksums kept right by incremental update (RFC 1624) rather than
//! recomputation, so the cost does not grow with the payload.
//!
//! A frame whose transport checksum is still to be computed by offload
//! ([`Offload::needs_csum`]) holds, in its checksum field, the sum of the
//! pseudo-header, not inverted. Changing an address changes that sum the
//! other way round, and changing a port needs nothing (the port is in the
//! range the offload engine will sum). Both cases are handled here.
//!
//! Threads: pure functions over a frame the caller owns; no state.

use super::checksum::adjust;
use super::offload::Offload;
use super::packet::{retag, L2Header, Mac, VLAN_TAG_LEN};
use super::wire::{
    self, ip_protocol, ipv4, ipv6, tcp, udp, ArpPacket, EthernetFrame, Ipv4Packet, Ipv6Packet, TcpPacket,
    UdpPacket,
};
use crate::ofproto::flow::Field;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewriteError {
    /// The frame lacks the header the field belongs to.
    NotApplicable,
    /// The field cannot be rewritten on frames.
    Unsupported,
}

/// Where the IPv4 and transport headers of a frame are.
struct Ipv4At {
    l3: usize,
    /// The transport header and protocol, if it is TCP or UDP, its fixed
    /// header is in the frame, and this is the first fragment.
    l4: Option<(usize, u8)>,
}

fn ipv4(frame: &[u8], l2: &L2Header) -> Option<Ipv4At> {
    if l2.ether_type != 0x0800 {
        return None;
    }
    let l3 = l2.payload_offset;
    let ip = Ipv4Packet::new_checked_header(&frame[l3..]).ok()?;
    let first_fragment = ip.frag_offset() == 0;
    let proto = ip.protocol();
    let l4 = l3 + ip.header_len();
    let l4_ok = match proto {
        ip_protocol::TCP => frame.len() >= l4 + tcp::HEADER_LEN,
        ip_protocol::UDP => frame.len() >= l4 + udp::HEADER_LEN,
        _ => false,
    };
    Some(Ipv4At { l3, l4: (first_fragment && l4_ok).then_some((l4, proto)) })
}

/// A TCP or UDP header's checksum; [`ipv4`] checked its fixed header.
fn l4_checksum(segment: &[u8], proto: u8) -> u16 {
    match proto {
        ip_protocol::TCP => TcpPacket::new_unchecked(segment).checksum(),
        _ => UdpPacket::new_unchecked(segment).checksum(),
    }
}

fn set_l4_checksum(segment: &mut [u8], proto: u8, checksum: u16) {
    match proto {
        ip_protocol::TCP => TcpPacket::new_unchecked(segment).set_checksum(checksum),
        _ => UdpPacket::new_unchecked(segment).set_checksum(checksum),
    }
}

/// Where TCP and UDP alike keep the port `field` names.
fn port_at(field: Field) -> wire::Field {
    debug_assert_eq!(
        (tcp::field::SRC_PORT, tcp::field::DST_PORT),
        (udp::field::SRC_PORT, udp::field::DST_PORT)
    );
    if field == Field::TpSrc {
        udp::field::SRC_PORT
    } else {
        udp::field::DST_PORT
    }
}

fn fix_l4(
    frame: &mut [u8],
    l4: usize,
    proto: u8,
    old: &[u8],
    new: &[u8],
    offload: &Offload,
    in_pseudo: bool,
) {
    let segment = &mut frame[l4..];
    // Zero means "no checksum" in UDP over IPv4.
    let zero_means_none = proto == ip_protocol::UDP;
    let current = l4_checksum(segment, proto);
    if offload.needs_csum {
        // The partial sum covers only the pseudo-header; ports are summed later.
        if in_pseudo {
            set_l4_checksum(segment, proto, adjust(current, old, new, true));
        }
        return;
    }
    if zero_means_none && current == 0 {
        return;
    }
    let mut updated = adjust(current, old, new, false);
    if zero_means_none && updated == 0 {
        updated = 0xffff;
    }
    set_l4_checksum(segment, proto, updated);
}

fn mac(value: u64) -> Mac {
    value.to_be_bytes()[2..8].try_into().expect("six bytes")
}

/// Applies `field := value` to `frame` (a private copy), keeping the
/// offload metadata right when the frame's length changes.
pub fn set_field(
    frame: &mut Vec<u8>,
    offload: &mut Offload,
    field: Field,
    value: u64,
) -> Result<(), RewriteError> {
    let l2 = L2Header::parse(frame).map_err(|_| RewriteError::NotApplicable)?;
    let arp_field =
        matches!(field, Field::NwProto | Field::NwSrc | Field::NwDst | Field::ArpSha | Field::ArpTha);
    if l2.ether_type == 0x0806 && arp_field {
        return set_arp_field(frame, &l2, field, value);
    }
    match field {
        // L2Header::parse found the Ethernet header.
        Field::DlDst => EthernetFrame::new_unchecked(&mut frame[..]).set_dst_addr(mac(value)),
        Field::DlSrc => EthernetFrame::new_unchecked(&mut frame[..]).set_src_addr(mac(value)),
        Field::VlanTci => {
            let present = value & 0x1000 != 0;
            let vid = present.then_some((value & 0x0fff) as u16);
            let before = frame.len();
            let mut out = Vec::with_capacity(frame.len() + 4);
            retag(frame, &l2, vid, &mut out);
            // A new tag takes the priority given, a rewritten one keeps its own.
            if present && l2.outer_vlan().is_none() {
                let pcp = ((value >> 13) & 0x7) as u8;
                out[14] = (out[14] & 0x1f) | (pcp << 5);
            }
            *frame = out;
            offload.shift(frame.len() as i32 - before as i32);
        }
        Field::NwSrc | Field::NwDst => {
            let ip = ipv4(frame, &l2).ok_or(RewriteError::NotApplicable)?;
            // ipv4() checked the header.
            let mut packet = Ipv4Packet::new_unchecked(&mut frame[ip.l3..]);
            let address = Ipv4Addr::from(value as u32);
            let old = if field == Field::NwSrc {
                let old = packet.src_addr();
                packet.set_src_addr(address);
                old
            } else {
                let old = packet.dst_addr();
                packet.set_dst_addr(address);
                old
            };
            let (old, new) = (old.octets(), address.octets());
            packet.set_checksum(adjust(packet.checksum(), &old, &new, false));
            if let Some((l4, proto)) = ip.l4 {
                fix_l4(frame, l4, proto, &old, &new, offload, true);
            }
        }
        Field::TpSrc | Field::TpDst => {
            let ip = ipv4(frame, &l2).ok_or(RewriteError::NotApplicable)?;
            let (l4, proto) = ip.l4.ok_or(RewriteError::NotApplicable)?;
            let at = port_at(field);
            let port = &mut frame[l4..][at];
            let old: [u8; 2] = (*port).try_into().expect("two bytes");
            let new = (value as u16).to_be_bytes();
            port.copy_from_slice(&new);
            fix_l4(frame, l4, proto, &old, &new, offload, false);
        }
        Field::NwTos | Field::NwTtl => set_tos_or_ttl(frame, &l2, field, value as u8)?,
        // Pipeline metadata lives outside the frame.
        Field::Metadata => {}
        _ => return Err(RewriteError::Unsupported),
    }
    Ok(())
}

/// `nw_tos` (the whole IPv4 TOS or IPv6 traffic class byte: `mod_nw_tos`
/// keeps the ECN bits by loading only the DSCP ones) or `nw_ttl` (the TTL
/// or hop limit). Transport checksums do not cover either; the IPv4 header
/// checksum is updated. A frame that is not IP (by its EtherType and its
/// header's version), or too short for the fixed header, is left alone.
fn set_tos_or_ttl(frame: &mut [u8], l2: &L2Header, field: Field, value: u8) -> Result<(), RewriteError> {
    let ip = &mut frame[l2.payload_offset..];
    let version = ip.first().map(|b| b >> 4);
    match l2.ether_type {
        0x0800 if ip.len() >= ipv4::HEADER_LEN && version == Some(4) => {
            // TOS shares a 16-bit word with version and IHL, the TTL with
            // the protocol: the checksum is adjusted by those words.
            let (first, protocol) = (ip[0], ip[9]);
            let mut ip = Ipv4Packet::new_unchecked(ip);
            let (old, new) = if field == Field::NwTos {
                let old = [first, ip.tos()];
                ip.set_tos(value);
                (old, [first, value])
            } else {
                let old = [ip.ttl(), protocol];
                ip.set_ttl(value);
                (old, [value, protocol])
            };
            ip.set_checksum(adjust(ip.checksum(), &old, &new, false));
            Ok(())
        }
        0x86dd if ip.len() >= ipv6::HEADER_LEN && version == Some(6) => {
            let mut ip = Ipv6Packet::new_unchecked(ip);
            if field == Field::NwTos {
                ip.set_traffic_class(value);
            } else {
                ip.set_hop_limit(value);
            }
            Ok(())
        }
        _ => Err(RewriteError::NotApplicable),
    }
}

/// An ARP frame's fields, as the flow key names them: `nw_proto` is the
/// opcode, `nw_src`/`nw_dst` the sender's and target's protocol addresses
/// (`arp_spa`, `arp_tpa`), `arp_sha`/`arp_tha` their hardware addresses.
/// What an ARP responder flow rewrites; only Ethernet/IPv4 ARP is.
fn set_arp_field(frame: &mut [u8], l2: &L2Header, field: Field, value: u64) -> Result<(), RewriteError> {
    let Ok(mut arp) = ArpPacket::new_checked(&mut frame[l2.payload_offset..]) else {
        return Err(RewriteError::NotApplicable);
    };
    if !arp.is_ethernet_ipv4() {
        return Err(RewriteError::NotApplicable);
    }
    match field {
        Field::NwProto => arp.set_operation(value as u16),
        Field::ArpSha => arp.set_sender_hardware_addr(mac(value)),
        Field::NwSrc => arp.set_sender_protocol_addr(Ipv4Addr::from(value as u32)),
        Field::ArpTha => arp.set_target_hardware_addr(mac(value)),
        Field::NwDst => arp.set_target_protocol_addr(Ipv4Addr::from(value as u32)),
        _ => return Err(RewriteError::NotApplicable),
    }
    Ok(())
}

/// Pushes an outer VLAN tag with `tpid` whose TCI copies the current
/// outer tag's (zero when the frame is untagged), as OpenFlow's push_vlan.
pub fn push_vlan(frame: &mut Vec<u8>, offload: &mut Offload, tpid: u16) -> Result<(), RewriteError> {
    let l2 = L2Header::parse(frame).map_err(|_| RewriteError::NotApplicable)?;
    let tci = l2.outer_vlan().map_or(0, |t| t.tci);
    let mut tag = [0u8; VLAN_TAG_LEN];
    tag[..2].copy_from_slice(&tpid.to_be_bytes());
    tag[2..].copy_from_slice(&tci.to_be_bytes());
    frame.splice(L2Header::TAG_OFFSET..L2Header::TAG_OFFSET, tag);
    offload.shift(VLAN_TAG_LEN as i32);
    Ok(())
}

/// Decrements the IPv4 TTL (fixing the header checksum) or the IPv6 hop
/// limit. `Ok(false)`: the TTL ran out and the packet must be dropped.
/// Frames that are not IP are left alone.
pub fn dec_ttl(frame: &mut [u8]) -> Result<bool, RewriteError> {
    let l2 = L2Header::parse(frame).map_err(|_| RewriteError::NotApplicable)?;
    let ip = &mut frame[l2.payload_offset..];
    // Only the fixed header is needed: IPv4 options are not looked at.
    match l2.ether_type {
        0x0800 if ip.len() >= ipv4::HEADER_LEN => {
            let mut ip = Ipv4Packet::new_unchecked(ip);
            let ttl = ip.ttl();
            if ttl <= 1 {
                return Ok(false);
            }
            // TTL shares a 16-bit word with the protocol.
            let (old, new) = ([ttl, ip.protocol()], [ttl - 1, ip.protocol()]);
            ip.set_ttl(ttl - 1);
            ip.set_checksum(adjust(ip.checksum(), &old, &new, false));
        }
        0x86dd if ip.len() >= ipv6::HEADER_LEN => {
            let mut ip = Ipv6Packet::new_unchecked(ip);
            let hops = ip.hop_limit();
            if hops <= 1 {
                return Ok(false);
            }
            ip.set_hop_limit(hops - 1);
        }
        0x0800 | 0x86dd => return Err(RewriteError::NotApplicable),
        _ => {}
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::fold;
    use crate::offload::{finish, Gso};
    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

    // The tests poke bytes at offsets of their own making.
    fn get16(b: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    fn put16(b: &mut [u8], at: usize, v: u16) {
        b[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    fn udp_frame(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
            .udp(4000, 53)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    fn tcp_frame(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
            .tcp(40000, 80, 7, 1000)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    /// Whether every checksum of the frame is right, by etherparse.
    fn checksums_ok(frame: &[u8]) -> bool {
        let p = SlicedPacket::from_ethernet(frame).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &p.net else { return false };
        let h = ip.header().to_header();
        if h.calc_header_checksum() != h.header_checksum {
            return false;
        }
        match &p.transport {
            Some(TransportSlice::Tcp(t)) => {
                t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap() == t.checksum()
            }
            Some(TransportSlice::Udp(u)) => {
                u.checksum() == 0
                    || u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap() == u.checksum()
            }
            _ => true,
        }
    }

    #[test]
    fn address_and_port_rewrites_keep_checksums_right() {
        for original in [udp_frame(b"payload of odd len"), tcp_frame(b"GET / HTTP/1.0\r\n\r\n")] {
            let mut f = original.clone();
            let mut o = Offload::NONE;
            set_field(&mut f, &mut o, Field::NwSrc, 0xc613_0a0b).unwrap();
            set_field(&mut f, &mut o, Field::NwDst, 0x0a00_0001).unwrap();
            set_field(&mut f, &mut o, Field::TpDst, 8080).unwrap();
            set_field(&mut f, &mut o, Field::TpSrc, 1).unwrap();
            assert!(checksums_ok(&f), "{f:02x?}");
            let p = SlicedPacket::from_ethernet(&f).unwrap();
            let Some(NetSlice::Ipv4(ip)) = &p.net else { panic!() };
            assert_eq!(ip.header().source(), [198, 19, 10, 11]);
            assert_eq!(ip.header().destination(), [10, 0, 0, 1]);
        }
    }

    #[test]
    fn tos_and_ttl_rewrites_keep_the_header_checksum_right() {
        for mut f in [udp_frame(b"odd"), tcp_frame(b"even")] {
            let mut o = Offload::NONE;
            set_field(&mut f, &mut o, Field::NwTos, 0xb9).unwrap();
            set_field(&mut f, &mut o, Field::NwTtl, 9).unwrap();
            assert!(checksums_ok(&f), "{f:02x?}");
            let p = SlicedPacket::from_ethernet(&f).unwrap();
            let Some(NetSlice::Ipv4(ip)) = &p.net else { panic!() };
            assert_eq!((ip.header().dcp().value(), ip.header().ecn().value(), ip.header().ttl()), (46, 1, 9));
        }
        let mut v6 = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv6([0x20; 16], [0x21; 16], 64)
            .udp(4000, 53)
            .write(&mut v6, b"six")
            .unwrap();
        let mut o = Offload::NONE;
        set_field(&mut v6, &mut o, Field::NwTos, 0xb8).unwrap();
        set_field(&mut v6, &mut o, Field::NwTtl, 3).unwrap();
        let p = SlicedPacket::from_ethernet(&v6).unwrap();
        let Some(NetSlice::Ipv6(ip)) = &p.net else { panic!() };
        assert_eq!((ip.header().traffic_class(), ip.header().hop_limit()), (0xb8, 3));
        assert_eq!(ip.header().flow_label().value(), 0, "the flow label is left alone");
        // Not IP, or an IPv4 EtherType over something that is not IPv4:
        // the rewrite does not apply and the frame is unchanged.
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let mut not_v4 = vec![0x77u8; 42];
        not_v4[12..14].copy_from_slice(&[0x08, 0x00]);
        for mut f in [arp, not_v4] {
            let before = f.clone();
            assert_eq!(set_field(&mut f, &mut o, Field::NwTtl, 1), Err(RewriteError::NotApplicable));
            assert_eq!(f, before);
        }
    }

    #[test]
    fn rewrites_of_partial_checksums_finish_right() {
        // A CHECKSUM_PARTIAL frame as the kernel hands it over: the TCP
        // field holds the pseudo-header sum, not inverted.
        let good = tcp_frame(b"offloaded data");
        let mut partial = good.clone();
        let l4 = 34;
        put16(&mut partial, l4 + 16, 0);
        let mut pseudo: u32 = 6 + (partial.len() - l4) as u32;
        for c in partial[26..34].chunks(2) {
            pseudo += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        put16(&mut partial, l4 + 16, fold(u64::from(pseudo)));
        let mut o = Offload {
            needs_csum: true,
            csum_start: l4 as u16,
            csum_offset: 16,
            gso: Gso::None,
            ..Offload::NONE
        };
        set_field(&mut partial, &mut o, Field::NwDst, 0xc612_0063).unwrap();
        set_field(&mut partial, &mut o, Field::TpDst, 443).unwrap();
        let mut out = Vec::new();
        finish(&partial, &o, &mut |f| out.push(f.to_vec())).unwrap();
        assert!(checksums_ok(&out[0]), "the finished frame's checksum is wrong");
    }

    #[test]
    fn macs_and_vlans() {
        let mut f = udp_frame(b"x");
        let mut o = Offload { needs_csum: true, csum_start: 34, csum_offset: 6, ..Offload::NONE };
        set_field(&mut f, &mut o, Field::DlSrc, 0x0200_0000_00aa).unwrap();
        assert_eq!(&f[6..12], &[2, 0, 0, 0, 0, 0xaa]);
        set_field(&mut f, &mut o, Field::VlanTci, 0x1000 | (5 << 13) | 10).unwrap();
        assert_eq!(&f[12..16], &[0x81, 0x00, 0xa0, 0x0a]);
        assert_eq!(o.csum_start, 38, "offsets follow the pushed tag");
        set_field(&mut f, &mut o, Field::VlanTci, 0x1000 | 20).unwrap();
        assert_eq!(&f[12..16], &[0x81, 0x00, 0xa0, 0x14], "a rewritten tag keeps its priority");
        set_field(&mut f, &mut o, Field::VlanTci, 0).unwrap();
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(o.csum_start, 34);
    }

    #[test]
    fn arp_fields_are_rewritten_in_place() {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 0xa, 0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
        f.extend_from_slice(&[2, 0, 0, 0, 0, 0xa, 198, 18, 0, 2, 0, 0, 0, 0, 0, 0, 198, 18, 0, 3]);
        let mut o = Offload::NONE;
        set_field(&mut f, &mut o, Field::NwProto, 2).unwrap();
        set_field(&mut f, &mut o, Field::ArpSha, 0x0242_c612_0003).unwrap();
        set_field(&mut f, &mut o, Field::NwSrc, 0xc612_0003).unwrap();
        set_field(&mut f, &mut o, Field::ArpTha, 0x0200_0000_000a).unwrap();
        set_field(&mut f, &mut o, Field::NwDst, 0xc612_0002).unwrap();
        assert_eq!(&f[20..22], &[0, 2]);
        assert_eq!(&f[22..32], &[2, 0x42, 198, 18, 0, 3, 198, 18, 0, 3]);
        assert_eq!(&f[32..42], &[2, 0, 0, 0, 0, 0xa, 198, 18, 0, 2]);
        // Not Ethernet/IPv4 ARP, or cut short: skipped, never a panic.
        f[14] = 9;
        assert_eq!(set_field(&mut f, &mut o, Field::NwSrc, 1), Err(RewriteError::NotApplicable));
        f.truncate(30);
        assert_eq!(set_field(&mut f, &mut o, Field::NwDst, 1), Err(RewriteError::NotApplicable));
    }

    #[test]
    fn dec_ttl_counts_down_and_stops_at_one() {
        let mut f = udp_frame(b"ttl");
        f[22] = 2;
        let csum = get16(&f, 24);
        put16(&mut f, 24, adjust(csum, &[64, 17], &[2, 17], false));
        assert!(checksums_ok(&f));
        assert_eq!(dec_ttl(&mut f), Ok(true));
        assert_eq!(f[22], 1);
        assert!(checksums_ok(&f), "the header checksum follows the TTL");
        assert_eq!(dec_ttl(&mut f), Ok(false), "TTL 1 expires");
        let mut arp = vec![0xff; 12];
        arp.extend_from_slice(&[0x08, 0x06]);
        arp.resize(60, 0);
        assert_eq!(dec_ttl(&mut arp), Ok(true), "not IP: left alone");
        let mut cut = udp_frame(b"");
        cut.truncate(20);
        assert_eq!(dec_ttl(&mut cut), Err(RewriteError::NotApplicable));
    }

    #[test]
    fn inapplicable_rewrites_are_errors_not_panics() {
        let mut arp = vec![0xff; 6];
        arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        arp.resize(60, 0);
        let mut o = Offload::NONE;
        assert_eq!(set_field(&mut arp, &mut o, Field::NwSrc, 1), Err(RewriteError::NotApplicable));
        assert_eq!(set_field(&mut arp, &mut o, Field::TpDst, 1), Err(RewriteError::NotApplicable));
        assert_eq!(set_field(&mut vec![0; 10], &mut o, Field::DlSrc, 1), Err(RewriteError::NotApplicable));
        let mut cut = udp_frame(b"");
        cut.truncate(30);
        assert_eq!(set_field(&mut cut, &mut o, Field::NwDst, 1), Err(RewriteError::NotApplicable));
        assert_eq!(set_field(&mut udp_frame(b""), &mut o, Field::ArpSha, 1), Err(RewriteError::Unsupported));
    }
}
