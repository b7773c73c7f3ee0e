//! Checksum and segmentation offload metadata, and doing the work in
//! software where a port cannot take it.
//!
//! Linux hands a frame to a port with offloads on (a veth's default) before
//! its TCP checksum is computed and possibly as one 64 KiB "GSO" frame that
//! a NIC would cut into MSS-sized segments. AF_PACKET with PACKET_VNET_HDR
//! and TAP with IFF_VNET_HDR say so in a virtio-net header in front of the
//! frame. [`Offload`] is that header. It travels with the frame through the
//! switch: an output port that takes offloads (AF_PACKET, TAP) gets it back
//! and the kernel finishes the job; one that does not (a pcap file) gets the
//! frame finished here by [`finish`], with every checksum correct and every
//! segment no larger than the MSS. Dropping the header instead would send
//! frames with wrong checksums, or larger than the MTU: the classic reason
//! TCP stalls through userspace switches with offloads on.
//!
//! Invariant: `csum_start` and `hdr_len` count from the first byte of the
//! frame, so re-tagging shifts them ([`Offload::shift`]).

use super::checksum::checksum;
use super::packet::L2Header;
use super::wire::{ip_protocol, ipv6, tcp, udp, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket};

/// The virtio-net header's length without `num_buffers`.
pub const VNET_HDR_LEN: usize = 10;

const F_NEEDS_CSUM: u8 = 1;
const F_DATA_VALID: u8 = 2;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_UDP: u8 = 3;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;
const GSO_ECN: u8 = 0x80;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gso {
    None,
    TcpV4,
    TcpV6,
    /// UDP segmentation (UDP_SEGMENT): each segment its own datagram.
    UdpL4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offload {
    /// The transport checksum from `csum_start` to the end is still to be
    /// computed and stored at `csum_start + csum_offset`; the field holds
    /// the pseudo-header sum.
    pub needs_csum: bool,
    /// The checksums were verified by whoever sent the frame.
    pub data_valid: bool,
    pub csum_start: u16,
    pub csum_offset: u16,
    pub gso: Gso,
    pub gso_size: u16,
    pub hdr_len: u16,
    pub ecn: bool,
}

impl Offload {
    pub const NONE: Offload = Offload {
        needs_csum: false,
        data_valid: false,
        csum_start: 0,
        csum_offset: 0,
        gso: Gso::None,
        gso_size: 0,
        hdr_len: 0,
        ecn: false,
    };

    /// Whether the frame is complete as it stands.
    pub fn is_done(&self) -> bool {
        !self.needs_csum && self.gso == Gso::None
    }

    /// Reads a little-endian virtio-net header (what AF_PACKET and TAP use
    /// on little-endian hosts). Kinds of GSO it cannot express are refused.
    pub fn from_virtio(h: &[u8; VNET_HDR_LEN]) -> Result<Offload, OffloadError> {
        let u16_at = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
        let gso = match h[1] & !GSO_ECN {
            GSO_NONE => Gso::None,
            GSO_TCPV4 => Gso::TcpV4,
            GSO_TCPV6 => Gso::TcpV6,
            GSO_UDP_L4 => Gso::UdpL4,
            GSO_UDP => return Err(OffloadError::Unsupported),
            _ => return Err(OffloadError::Unsupported),
        };
        Ok(Offload {
            needs_csum: h[0] & F_NEEDS_CSUM != 0,
            data_valid: h[0] & F_DATA_VALID != 0,
            gso,
            ecn: h[1] & GSO_ECN != 0,
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    pub fn to_virtio(&self) -> [u8; VNET_HDR_LEN] {
        let mut h = [0u8; VNET_HDR_LEN];
        h[0] =
            if self.needs_csum { F_NEEDS_CSUM } else { 0 } | if self.data_valid { F_DATA_VALID } else { 0 };
        h[1] = match self.gso {
            Gso::None => GSO_NONE,
            Gso::TcpV4 => GSO_TCPV4,
            Gso::TcpV6 => GSO_TCPV6,
            Gso::UdpL4 => GSO_UDP_L4,
        } | if self.ecn { GSO_ECN } else { 0 };
        h[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        h[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        h[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        h[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        h
    }

    /// Moves the offsets after bytes were inserted (positive) or removed
    /// (negative) in front of the L3 header, as re-tagging does.
    pub fn shift(&mut self, delta: i32) {
        let move_by = |v: u16| (i32::from(v) + delta).clamp(0, i32::from(u16::MAX)) as u16;
        if self.needs_csum {
            self.csum_start = move_by(self.csum_start);
        }
        if self.hdr_len != 0 {
            self.hdr_len = move_by(self.hdr_len);
        }
    }
}

impl Default for Offload {
    fn default() -> Self {
        Offload::NONE
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadError {
    /// A kind of GSO this switch cannot do in software (UFO).
    Unsupported,
    /// The offsets or headers do not describe the frame.
    Malformed,
}

/// Completes a partial checksum in place.
fn complete_csum(frame: &mut [u8], start: usize, offset: usize) -> Result<(), OffloadError> {
    let at = start + offset;
    if start > frame.len() || at + 2 > frame.len() {
        return Err(OffloadError::Malformed);
    }
    let mut csum = checksum(&frame[start..], 0);
    // A zero UDP checksum means "none"; offload engines send 0xffff.
    if csum == 0 && offset == 6 {
        csum = 0xffff;
    }
    // Wherever the header said: not a field of a header known here.
    frame[at..at + 2].copy_from_slice(&csum.to_be_bytes());
    Ok(())
}

/// Where the headers of a TCP or UDP frame are.
struct Layout {
    l3: usize,
    ipv4: bool,
    l4: usize,
    payload: usize,
}

fn layout(frame: &[u8], tcp: bool) -> Result<Layout, OffloadError> {
    let l2 = L2Header::parse(frame).map_err(|_| OffloadError::Malformed)?;
    let l3 = l2.payload_offset;
    let proto = if tcp { ip_protocol::TCP } else { ip_protocol::UDP };
    // The IP length fields are the super-frame's, rewritten per segment:
    // only the headers are checked.
    let (ipv4, l4) = match l2.ether_type {
        0x0800 => {
            // The header is at least 20 bytes; the fuzzer found a GSO
            // frame claiming less, which read past the frame.
            let ip = Ipv4Packet::new_checked_header(&frame[l3..]).map_err(|_| OffloadError::Malformed)?;
            (true, l3 + ip.header_len())
        }
        // Extension headers between IPv6 and TCP are not segmented here.
        0x86dd => {
            let ip = Ipv6Packet::new_checked_header(&frame[l3..]).map_err(|_| OffloadError::Malformed)?;
            if ip.next_header() != proto {
                return Err(OffloadError::Malformed);
            }
            (false, l3 + ipv6::HEADER_LEN)
        }
        _ => return Err(OffloadError::Malformed),
    };
    let segment = frame.get(l4..).ok_or(OffloadError::Malformed)?;
    // A TCP header is at least 20 bytes (its checksum is at 16) and holds
    // its options; UDP's length field is the super-frame's.
    let l4_len = if tcp {
        TcpPacket::new_checked(segment).map_err(|_| OffloadError::Malformed)?.header_len()
    } else if segment.len() >= udp::HEADER_LEN {
        udp::HEADER_LEN
    } else {
        return Err(OffloadError::Malformed);
    };
    Ok(Layout { l3, ipv4, l4, payload: l4 + l4_len })
}

/// The pseudo-header sum for a transport segment of `l4_len` bytes.
fn pseudo_sum(seg: &[u8], lay: &Layout, proto: u8, l4_len: usize) -> u64 {
    // layout() checked the IP header.
    if lay.ipv4 {
        Ipv4Packet::new_unchecked(&seg[lay.l3..]).pseudo_header(proto, l4_len)
    } else {
        Ipv6Packet::new_unchecked(&seg[lay.l3..]).pseudo_header(proto, l4_len)
    }
}

/// Fixes the IP header of a segment whose transport part is `l4_len` long.
fn fix_ip(seg: &mut [u8], lay: &Layout, l4_len: usize, index: u16) {
    if lay.ipv4 {
        let mut ip = Ipv4Packet::new_unchecked(&mut seg[lay.l3..]);
        ip.set_total_len((lay.l4 - lay.l3 + l4_len) as u16);
        ip.set_ident(ip.ident().wrapping_add(index));
        ip.fill_checksum();
    } else {
        Ipv6Packet::new_unchecked(&mut seg[lay.l3..]).set_payload_len(l4_len as u16);
    }
}

/// Hands `emit` the frame as a port without offloads must see it: whole,
/// checksummed, and cut into segments no larger than the MSS.
pub fn finish(frame: &[u8], offload: &Offload, emit: &mut dyn FnMut(&[u8])) -> Result<(), OffloadError> {
    if offload.is_done() {
        emit(frame);
        return Ok(());
    }
    let mut piece = Vec::new();
    finish_into(frame, offload, &[], &mut piece, &mut |piece| {
        emit(piece);
        piece.clear();
    })
}

/// [`finish`] without a copy in between: each piece (the whole frame, or
/// a segment) is appended to `out` behind `prefix` (a tunnel header, say),
/// and `piece` is called with `out` once it is there.
pub fn finish_into(
    frame: &[u8],
    offload: &Offload,
    prefix: &[u8],
    out: &mut Vec<u8>,
    piece: &mut dyn FnMut(&mut Vec<u8>),
) -> Result<(), OffloadError> {
    match offload.gso {
        Gso::None => {
            out.extend_from_slice(prefix);
            let start = out.len();
            out.extend_from_slice(frame);
            if offload.needs_csum {
                let done =
                    complete_csum(&mut out[start..], offload.csum_start.into(), offload.csum_offset.into());
                if let Err(e) = done {
                    out.truncate(start - prefix.len());
                    return Err(e);
                }
            }
            piece(out);
            Ok(())
        }
        Gso::TcpV4 | Gso::TcpV6 => segment(frame, offload, true, prefix, out, piece),
        Gso::UdpL4 => segment(frame, offload, false, prefix, out, piece),
    }
}

fn segment(
    frame: &[u8],
    offload: &Offload,
    tcp: bool,
    prefix: &[u8],
    out: &mut Vec<u8>,
    piece: &mut dyn FnMut(&mut Vec<u8>),
) -> Result<(), OffloadError> {
    let lay = layout(frame, tcp)?;
    let mss = usize::from(offload.gso_size);
    if mss == 0 {
        return Err(OffloadError::Malformed);
    }
    let payload = &frame[lay.payload..];
    let count = payload.len().div_ceil(mss).max(1);
    for (i, chunk) in payload.chunks(mss).chain((payload.is_empty()).then_some(&[][..])).enumerate() {
        out.extend_from_slice(prefix);
        let base = out.len();
        out.extend_from_slice(&frame[..lay.payload]);
        out.extend_from_slice(chunk);
        let seg = &mut out[base..];
        let l4_len = seg.len() - lay.l4;
        fix_ip(seg, &lay, l4_len, i as u16);
        let proto = if tcp { ip_protocol::TCP } else { ip_protocol::UDP };
        let pseudo = pseudo_sum(seg, &lay, proto, l4_len);
        // layout() checked the transport header.
        if tcp {
            let mut tcp = TcpPacket::new_unchecked(&mut seg[lay.l4..]);
            tcp.set_seq_number(tcp.seq_number().wrapping_add((i * mss) as u32));
            let mut flags = tcp.flags();
            if i + 1 < count {
                flags &= !(tcp::FIN | tcp::PSH); // last segment only
            }
            if i > 0 {
                flags &= !tcp::CWR; // first segment only
            }
            tcp.set_flags(flags);
            tcp.fill_checksum(pseudo);
        } else {
            let mut udp = UdpPacket::new_unchecked(&mut seg[lay.l4..]);
            udp.set_length(l4_len as u16);
            udp.fill_checksum(pseudo);
        }
        piece(out);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::fold;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    // The tests poke bytes at offsets of their own making.
    fn put_u16(buf: &mut [u8], at: usize, v: u16) {
        buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    fn tcp_frame(payload: &[u8], v6: bool) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let ip = if v6 {
            eth.ipv6(
                [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                64,
            )
        } else {
            eth.ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
        };
        let builder = ip.tcp(40000, 5201, 1000, 65535).psh().ack(77);
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    /// Zeroes the TCP checksum and puts the pseudo-header sum there, as
    /// the kernel hands a CHECKSUM_PARTIAL frame over.
    fn make_partial(frame: &mut [u8], v6: bool) -> Offload {
        let lay = layout(frame, true).unwrap();
        let l4_len = frame.len() - lay.l4;
        put_u16(frame, lay.l4 + 16, 0);
        let pseudo = fold(pseudo_sum(frame, &lay, 6, l4_len));
        put_u16(frame, lay.l4 + 16, pseudo);
        Offload {
            needs_csum: true,
            csum_start: lay.l4 as u16,
            csum_offset: 16,
            gso: if v6 { Gso::TcpV6 } else { Gso::TcpV4 },
            ..Offload::NONE
        }
    }

    fn checksums_ok(seg: &[u8]) -> bool {
        let p = SlicedPacket::from_ethernet(seg).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = &p.transport else { return false };
        let ip_ok = match &p.net {
            Some(etherparse::NetSlice::Ipv4(ip)) => {
                let h = ip.header();
                h.to_header().calc_header_checksum() == h.header_checksum()
                    && tcp.to_header().calc_checksum_ipv4(&h.to_header(), tcp.payload()).unwrap()
                        == tcp.checksum()
            }
            Some(etherparse::NetSlice::Ipv6(ip)) => {
                tcp.to_header().calc_checksum_ipv6(&ip.header().to_header(), tcp.payload()).unwrap()
                    == tcp.checksum()
            }
            _ => false,
        };
        ip_ok
    }

    #[test]
    fn virtio_header_round_trips() {
        let o = Offload {
            needs_csum: true,
            csum_start: 34,
            csum_offset: 16,
            gso: Gso::TcpV4,
            gso_size: 1448,
            hdr_len: 66,
            ecn: true,
            data_valid: false,
        };
        assert_eq!(Offload::from_virtio(&o.to_virtio()).unwrap(), o);
        let mut ufo = o.to_virtio();
        ufo[1] = GSO_UDP;
        assert_eq!(Offload::from_virtio(&ufo), Err(OffloadError::Unsupported));
    }

    #[test]
    fn partial_checksum_is_completed() {
        let good = tcp_frame(b"hello, checksum", false);
        let mut partial = good.clone();
        let mut o = make_partial(&mut partial, false);
        o.gso = Gso::None;
        let mut out = Vec::new();
        finish(&partial, &o, &mut |f| out.push(f.to_vec())).unwrap();
        assert_eq!(out, vec![good]);
    }

    #[test]
    fn tcp_super_frame_is_cut_into_valid_segments() {
        for v6 in [false, true] {
            let payload: Vec<u8> = (0..4000u32).map(|i| i as u8).collect();
            let mut frame = tcp_frame(&payload, v6);
            let mut o = make_partial(&mut frame, v6);
            o.gso_size = 1448;
            let mut segs = Vec::new();
            finish(&frame, &o, &mut |f| segs.push(f.to_vec())).unwrap();
            assert_eq!(segs.len(), 3);
            let mut joined = Vec::new();
            for (i, seg) in segs.iter().enumerate() {
                assert!(checksums_ok(seg), "segment {i} (v6={v6}) has a bad checksum");
                let p = SlicedPacket::from_ethernet(seg).unwrap();
                let Some(TransportSlice::Tcp(tcp)) = &p.transport else { panic!() };
                assert_eq!(tcp.sequence_number(), 1000 + (i as u32) * 1448);
                assert_eq!(tcp.psh(), i == 2, "PSH only on the last segment");
                joined.extend_from_slice(tcp.payload());
            }
            assert_eq!(joined, payload);
        }
    }

    #[test]
    fn bad_offsets_are_errors_not_panics() {
        let frame = tcp_frame(b"x", false);
        let o = Offload { needs_csum: true, csum_start: 9000, csum_offset: 16, ..Offload::NONE };
        assert_eq!(finish(&frame, &o, &mut |_| {}), Err(OffloadError::Malformed));
        let o = Offload { gso: Gso::TcpV4, gso_size: 0, ..Offload::NONE };
        assert_eq!(finish(&frame, &o, &mut |_| {}), Err(OffloadError::Malformed));
        let o = Offload { gso: Gso::TcpV4, gso_size: 100, ..Offload::NONE };
        assert!(finish(&[0u8; 20], &o, &mut |_| {}).is_err());
        // Found by the frame_pipeline fuzzer: a GSO frame (as a TAP user
        // may write one) whose IPv4 header claims fewer than 20 bytes, and
        // one whose TCP header does. Both read past the frame before.
        let one_byte_mss = Offload { gso_size: 1, ..o };
        let mut short_ip = frame[..30].to_vec();
        short_ip[14] = 0x40; // IHL 0: the "TCP header" starts at 14...
        short_ip[26] = 0x30; // ...and claims 12 bytes, so its payload starts at 26.
        assert_eq!(finish(&short_ip, &one_byte_mss, &mut |_| {}), Err(OffloadError::Malformed));
        let mut short_tcp = frame.clone();
        short_tcp[34 + 12] = 0x20; // a TCP data offset of 8 bytes, before the checksum
        assert_eq!(finish(&short_tcp, &one_byte_mss, &mut |_| {}), Err(OffloadError::Malformed));
    }

    #[test]
    fn shift_follows_retagging() {
        let mut o =
            Offload { needs_csum: true, csum_start: 34, csum_offset: 16, hdr_len: 66, ..Offload::NONE };
        o.shift(4);
        assert_eq!((o.csum_start, o.hdr_len), (38, 70));
        o.shift(-4);
        assert_eq!((o.csum_start, o.hdr_len), (34, 66));
    }
}
